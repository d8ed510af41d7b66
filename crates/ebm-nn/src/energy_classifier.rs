//! Classification by energy (Du & Mordatch 2019, section 4): a class-conditional energy
//! `E(x, y)` is a classifier whose logits are `-E(x, y)`; it predicts the class of lowest
//! energy, and `softmax(-E(x, .))` over a set of classes is its posterior.
//!
//! [`EnergyClassifier::loss_and_input_grad`] gives the cross-entropy of that posterior and its
//! gradient with respect to the input,
//!
//! ```text
//! d CE / dx = grad_x E(x, y) - sum_c p(c | x) grad_x E(x, c),
//! ```
//!
//! which differentiates through the soft minimum over classes: what a PGD attack on the
//! energy classifier ascends ([`crate::adversarial`]).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ebm_core::LabelledEnergy;
//! use ebm_nn::energy_classifier::EnergyClassifier;
//!
//! /// E(x, c) = (x - c)^2 / 2 on one number: the class nearest to x wins.
//! struct Nearest;
//! impl LabelledEnergy for Nearest {
//!     fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
//!         let c = labels.to_dtype(x.dtype())?;
//!         Ok((x.flatten_all()? - c)?.sqr()?.affine(0.5, 0.0)?)
//!     }
//!     fn num_classes(&self) -> usize { 3 }
//! }
//!
//! # fn main() -> ebm_nn::Result<()> {
//! let x = Tensor::new(&[[0.1f32], [1.8], [1.2]], &Device::Cpu)?;
//! let clf = EnergyClassifier::new(&Nearest)?;
//! assert_eq!(clf.predict(&x)?, vec![0, 2, 1]);
//! # Ok(())
//! # }
//! ```

use candle_core::{DType, Tensor};
use ebm_core::LabelledEnergy;

use crate::{Error, Result};

/// A class-conditional energy read as a classifier over a set of its classes (all of them, or
/// a subset such as the classes of one task in class-incremental learning).
pub struct EnergyClassifier<'a, M: ?Sized> {
    model: &'a M,
    classes: Vec<u32>,
}

impl<'a, M: LabelledEnergy + ?Sized> EnergyClassifier<'a, M> {
    /// A classifier over every class of `model`.
    pub fn new(model: &'a M) -> Result<Self> {
        let k = model.num_classes() as u32;
        Self::over(model, &(0..k).collect::<Vec<_>>())
    }

    /// A classifier over `classes` only (distinct, each below `model.num_classes()`).
    pub fn over(model: &'a M, classes: &[u32]) -> Result<Self> {
        let k = model.num_classes();
        if classes.is_empty() {
            return Err(Error::Config(
                "energy classifier: give at least one class".into(),
            ));
        }
        for (i, &c) in classes.iter().enumerate() {
            if c as usize >= k {
                return Err(Error::Config(format!(
                    "energy classifier: class {c} is out of range for a model of {k} classes"
                )));
            }
            if classes[..i].contains(&c) {
                return Err(Error::Config(format!(
                    "energy classifier: class {c} is listed twice"
                )));
            }
        }
        Ok(Self {
            model,
            classes: classes.to_vec(),
        })
    }

    /// The classes it chooses among, in logit order.
    pub fn classes(&self) -> &[u32] {
        &self.classes
    }

    /// `x` repeated once per class (class-major: rows `k * B .. (k + 1) * B` are class `k`) and
    /// the matching labels.
    fn tile(&self, x: &Tensor) -> Result<(Tensor, Tensor, usize)> {
        let b = x.dim(0)?;
        if b == 0 {
            return Err(
                ebm_core::Error::invalid("energy classifier input", "the batch is empty").into(),
            );
        }
        let k = self.classes.len();
        let tiled = Tensor::cat(&vec![x.detach(); k], 0)?;
        let labels: Vec<u32> = self
            .classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, b))
            .collect();
        Ok((tiled, Tensor::from_vec(labels, k * b, x.device())?, b))
    }

    /// Energies of every input under every class, `[B, K]`, detached, in the model's dtype:
    /// row `b`, column `k` is `E(x_b, classes[k])`.
    pub fn energies(&self, x: &Tensor) -> Result<Tensor> {
        let (tiled, labels, b) = self.tile(x)?;
        let e = self.model.energy_given(&tiled, &labels)?.detach();
        Ok(e.reshape((self.classes.len(), b))?.t()?.contiguous()?)
    }

    /// Logits `-E(x, c)`, `[B, K]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.energies(x)?.neg()?)
    }

    /// The class of lowest energy for each input (the class ids, not logit positions).
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        let idx = self.energies(x)?.argmin(1)?.to_vec1::<u32>()?;
        Ok(idx.into_iter().map(|i| self.classes[i as usize]).collect())
    }

    /// The fraction of `x` whose lowest-energy class is its label, `batch` inputs at a time.
    pub fn accuracy(&self, x: &Tensor, labels: &[u32], batch: usize) -> Result<f64> {
        let n = x.dim(0)?;
        if n == 0 || batch == 0 || labels.len() != n {
            return Err(Error::Config(format!(
                "energy classifier accuracy: {n} inputs, {} labels, batch {batch} (need n >= 1 labels, one per input, batch >= 1)",
                labels.len()
            )));
        }
        let mut correct = 0usize;
        for s in (0..n).step_by(batch) {
            let len = batch.min(n - s);
            let pred = self.predict(&x.narrow(0, s, len)?)?;
            correct += pred
                .iter()
                .zip(&labels[s..s + len])
                .filter(|(p, y)| p == y)
                .count();
        }
        Ok(correct as f64 / n as f64)
    }

    /// Positions of `labels` in [`EnergyClassifier::classes`], or an error naming a label the
    /// classifier does not choose among.
    fn positions(&self, labels: &[u32]) -> Result<Vec<usize>> {
        labels
            .iter()
            .map(|y| {
                self.classes.iter().position(|c| c == y).ok_or_else(|| {
                    Error::Config(format!(
                        "energy classifier: label {y} is not among its classes {:?}",
                        self.classes
                    ))
                })
            })
            .collect()
    }

    /// Per-input cross-entropy `CE_b = E(x_b, y_b) + log sum_c exp(-E(x_b, c))` of the
    /// posterior `softmax(-E)` over the classifier's classes, and the gradient of `sum_b CE_b`
    /// with respect to `x` (shape of `x`): `grad E(x, y) - sum_c p(c | x) grad E(x, c)`.
    /// One call of [`LabelledEnergy::energy_and_grad_given`] on the batch tiled over classes,
    /// so a model's fused input-gradient path is used where it has one.
    pub fn loss_and_input_grad(&self, x: &Tensor, labels: &[u32]) -> Result<(Vec<f64>, Tensor)> {
        let b = x.dim(0)?;
        if labels.len() != b {
            return Err(Error::Config(format!(
                "energy classifier: {b} inputs but {} labels",
                labels.len()
            )));
        }
        let pos = self.positions(labels)?;
        let (tiled, tiled_labels, _) = self.tile(x)?;
        let (e, g) = self.model.energy_and_grad_given(&tiled, &tiled_labels)?;
        let k = self.classes.len();
        let e = e.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let mut losses = Vec::with_capacity(b);
        let mut weights = vec![0f64; k * b];
        for (i, &yi) in pos.iter().enumerate() {
            let neg: Vec<f64> = (0..k).map(|c| -e[c * b + i]).collect();
            let max = neg.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = neg.iter().map(|v| (v - max).exp()).sum();
            let lse = max + sum.ln();
            losses.push(lse - neg[yi]);
            for c in 0..k {
                let p = (neg[c] - lse).exp();
                weights[c * b + i] = f64::from(c == yi) - p;
            }
        }
        let mut wshape = vec![k, b];
        wshape.extend(std::iter::repeat_n(1, x.rank() - 1));
        let w = Tensor::from_vec(weights, wshape, x.device())?.to_dtype(g.dtype())?;
        let mut gshape = vec![k];
        gshape.extend_from_slice(x.dims());
        let grad = g.reshape(gshape)?.broadcast_mul(&w)?.sum(0)?;
        Ok((losses, grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `E(x, c) = ||x - mu_c||^2 / 2` with fixed class means, `x` of shape `[B, 2]`.
    struct Means(Vec<[f64; 2]>);

    impl LabelledEnergy for Means {
        fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
            let l = labels.to_vec1::<u32>()?;
            let mu: Vec<f64> = l.iter().flat_map(|&c| self.0[c as usize]).collect();
            let mu = Tensor::from_vec(mu, (l.len(), 2), x.device())?.to_dtype(x.dtype())?;
            Ok((x - mu)?.sqr()?.sum(1)?.affine(0.5, 0.0)?)
        }
        fn num_classes(&self) -> usize {
            self.0.len()
        }
    }

    fn means() -> Means {
        Means(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    }

    #[test]
    fn predicts_the_nearest_mean_and_respects_a_class_subset() -> Result<()> {
        let m = means();
        let x = Tensor::new(
            &[[0.1f64, 0.2], [0.9, -0.3], [0.2, 1.7], [0.6, 0.9]],
            &Device::Cpu,
        )?;
        assert_eq!(EnergyClassifier::new(&m)?.predict(&x)?, vec![0, 1, 2, 1]);
        let sub = EnergyClassifier::over(&m, &[2, 0])?;
        assert_eq!(sub.predict(&x)?, vec![0, 0, 2, 0]);
        assert_eq!(sub.accuracy(&x, &[0, 1, 2, 0], 3)?, 0.75);
        let e = EnergyClassifier::new(&m)?.energies(&x)?.to_vec2::<f64>()?;
        assert!((e[3][2] - 0.5 * (0.36 + 1.21)).abs() < 1e-12);
        assert!(EnergyClassifier::over(&m, &[3]).is_err());
        assert!(EnergyClassifier::over(&m, &[1, 1]).is_err());
        let err = sub.loss_and_input_grad(&x, &[1, 0, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("label 1"), "{err}");
        Ok(())
    }

    #[test]
    fn cross_entropy_gradient_matches_the_closed_form() -> Result<()> {
        // grad_x E(x, c) = x - mu_c, so grad CE = sum_c p_c mu_c - mu_y.
        let m = means();
        let xs = [[0.3f64, 0.4], [-0.5, 1.1]];
        let labels = [2u32, 1];
        let x = Tensor::new(&xs, &Device::Cpu)?;
        let (loss, grad) = EnergyClassifier::new(&m)?.loss_and_input_grad(&x, &labels)?;
        let grad = grad.to_vec2::<f64>()?;
        for (b, xb) in xs.iter().enumerate() {
            let e: Vec<f64> =
                m.0.iter()
                    .map(|mu| 0.5 * ((xb[0] - mu[0]).powi(2) + (xb[1] - mu[1]).powi(2)))
                    .collect();
            let z: f64 = e.iter().map(|v| (-v).exp()).sum();
            let p: Vec<f64> = e.iter().map(|v| (-v).exp() / z).collect();
            let y = labels[b] as usize;
            assert!((loss[b] - (e[y] + z.ln())).abs() < 1e-12);
            for d in 0..2 {
                let expected = (0..3).map(|c| p[c] * m.0[c][d]).sum::<f64>() - m.0[y][d];
                assert!((grad[b][d] - expected).abs() < 1e-12, "{b} {d}");
            }
        }
        Ok(())
    }
}
