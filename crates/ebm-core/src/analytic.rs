//! Energies with closed-form answers, for testing samplers and trainers against known means,
//! variances and mixture weights. Samples are `[B, D]` (or `[B, ...]`, flattened to `D`).

use candle_core::{DType, Device, Tensor, D};

use crate::{Energy, Error, Result};

fn flatten_batch(x: &Tensor, dim: usize, what: &str) -> Result<Tensor> {
    let dims = x.dims();
    let features: usize = dims.iter().skip(1).product();
    if dims.len() < 2 || features != dim || dims[0] == 0 {
        return Err(Error::Shape {
            what: what.into(),
            expected: format!("[batch >= 1, {dim}] (or any shape with {dim} values per sample)"),
            got: dims.to_vec(),
        });
    }
    Ok(x.reshape((dims[0], dim))?)
}

/// A Gaussian with diagonal covariance: `E(x) = sum_d (x_d - mean_d)^2 / (2 var_d)`, so that
/// `exp(-E)` is the normal density up to its constant.
#[derive(Debug, Clone)]
pub struct Gaussian {
    mean: Vec<f64>,
    variance: Vec<f64>,
}

impl Gaussian {
    /// A Gaussian with the given mean and per-dimension variances.
    pub fn new(mean: Vec<f64>, variance: Vec<f64>) -> Result<Self> {
        if mean.is_empty() || mean.len() != variance.len() {
            return Err(Error::invalid(
                "Gaussian",
                format!(
                    "mean and variance need the same non-zero length, got {} and {}",
                    mean.len(),
                    variance.len()
                ),
            ));
        }
        if let Some(v) = variance.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(Error::invalid(
                "Gaussian variance",
                format!("every variance must be finite and > 0, got {v}"),
            ));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::invalid("Gaussian mean", "must be finite"));
        }
        Ok(Self { mean, variance })
    }

    /// A Gaussian with the same variance in every dimension.
    pub fn isotropic(mean: Vec<f64>, variance: f64) -> Result<Self> {
        let variance = vec![variance; mean.len()];
        Self::new(mean, variance)
    }

    /// The mean.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The per-dimension variances.
    pub fn variance(&self) -> &[f64] {
        &self.variance
    }

    fn constants(&self, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let d = self.mean.len();
        let mean = Tensor::from_vec(self.mean.clone(), (1, d), device)?.to_dtype(dtype)?;
        let precision: Vec<f64> = self.variance.iter().map(|v| 1.0 / v).collect();
        let precision = Tensor::from_vec(precision, (1, d), device)?.to_dtype(dtype)?;
        Ok((mean, precision))
    }
}

impl Energy for Gaussian {
    fn energy(&self, x: &Tensor) -> Result<Tensor> {
        let flat = flatten_batch(x, self.mean.len(), "Gaussian energy input")?;
        let (mean, precision) = self.constants(x.dtype(), x.device())?;
        let diff = flat.broadcast_sub(&mean)?;
        Ok((diff.sqr()?.broadcast_mul(&precision)?.sum(1)? * 0.5)?)
    }

    fn energy_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let flat = flatten_batch(x, self.mean.len(), "Gaussian energy input")?;
        let (mean, precision) = self.constants(x.dtype(), x.device())?;
        let diff = flat.broadcast_sub(&mean)?;
        let scaled = diff.broadcast_mul(&precision)?;
        let energy = ((&diff * &scaled)?.sum(1)? * 0.5)?;
        Ok((energy, scaled.reshape(x.shape())?))
    }
}

/// A mixture of isotropic Gaussians: `E(x) = -log sum_k w_k N(x; mean_k, var_k I)`.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    variances: Vec<f64>,
}

impl GaussianMixture {
    /// A mixture from its weights (positive, normalised here), component means (all of one
    /// length) and component variances.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, variances: Vec<f64>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || variances.len() != k {
            return Err(Error::invalid(
                "GaussianMixture",
                format!(
                    "needs as many weights, means and variances (at least one), got {k}, {}, {}",
                    means.len(),
                    variances.len()
                ),
            ));
        }
        let dim = means[0].len();
        if dim == 0
            || means
                .iter()
                .any(|m| m.len() != dim || m.iter().any(|v| !v.is_finite()))
        {
            return Err(Error::invalid(
                "GaussianMixture means",
                "every mean must be finite and of the same non-zero length",
            ));
        }
        if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::invalid(
                "GaussianMixture weights",
                "every weight must be finite and > 0",
            ));
        }
        if variances.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::invalid(
                "GaussianMixture variances",
                "every variance must be finite and > 0",
            ));
        }
        let total: f64 = weights.iter().sum();
        let weights = weights.iter().map(|w| w / total).collect();
        Ok(Self {
            weights,
            means,
            variances,
        })
    }

    /// The normalised mixture weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The component means.
    pub fn means(&self) -> &[Vec<f64>] {
        &self.means
    }

    /// Per-component log-densities plus log-weights, shape `[B, K]`.
    fn component_logits(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.means[0].len();
        let k = self.weights.len();
        let flat = flatten_batch(x, dim, "GaussianMixture energy input")?;
        let (dtype, device) = (x.dtype(), x.device());
        let means: Vec<f64> = self.means.iter().flatten().copied().collect();
        let means = Tensor::from_vec(means, (1, k, dim), device)?.to_dtype(dtype)?;
        let sq_dist = flat
            .unsqueeze(1)?
            .broadcast_sub(&means)?
            .sqr()?
            .sum(D::Minus1)?;
        let inv_two_var: Vec<f64> = self.variances.iter().map(|v| -0.5 / v).collect();
        let inv_two_var = Tensor::from_vec(inv_two_var, (1, k), device)?.to_dtype(dtype)?;
        let log_norm: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.variances)
            .map(|(w, v)| w.ln() - 0.5 * dim as f64 * (2.0 * std::f64::consts::PI * v).ln())
            .collect();
        let log_norm = Tensor::from_vec(log_norm, (1, k), device)?.to_dtype(dtype)?;
        Ok(sq_dist
            .broadcast_mul(&inv_two_var)?
            .broadcast_add(&log_norm)?)
    }

    /// The posterior probability of each component for each sample, shape `[B, K]`.
    pub fn responsibilities(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.component_logits(x)?;
        let max = logits.max_keepdim(1)?;
        let p = logits.broadcast_sub(&max)?.exp()?;
        Ok(p.broadcast_div(&p.sum_keepdim(1)?)?)
    }
}

impl Energy for GaussianMixture {
    fn energy(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.component_logits(x)?;
        // A detached maximum keeps exp() in range; it cancels from the value and the gradient.
        let max = logits.max_keepdim(1)?.detach();
        let lse = logits
            .broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(1)?
            .log()?
            .add(&max)?;
        Ok(lse.squeeze(1)?.neg()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_energy_and_gradient_are_analytic() -> Result<()> {
        let g = Gaussian::new(vec![1.0, -2.0], vec![4.0, 0.5])?;
        let x = Tensor::new(&[[3f64, -2.0], [1.0, 0.0]], &Device::Cpu)?;
        let (e, grad) = g.energy_and_grad(&x)?;
        // (2^2)/(2*4) = 0.5 ; (2^2)/(2*0.5) = 4
        assert_eq!(e.to_vec1::<f64>()?, vec![0.5, 4.0]);
        assert_eq!(grad.to_vec2::<f64>()?, vec![vec![0.5, 0.0], vec![0.0, 4.0]]);
        // The autograd path (trait default) agrees with the analytic override.
        let var = candle_core::Var::from_tensor(&x)?;
        let grads = g.energy(var.as_tensor())?.sum_all()?.backward()?;
        let auto = grads.get(var.as_tensor()).unwrap().to_vec2::<f64>()?;
        assert_eq!(auto, grad.to_vec2::<f64>()?);
        Ok(())
    }

    #[test]
    fn mixture_of_one_component_is_the_gaussian_plus_its_log_normaliser() -> Result<()> {
        let var = 2.0;
        let mix = GaussianMixture::new(vec![3.0], vec![vec![0.5, 0.5]], vec![var])?;
        let gauss = Gaussian::isotropic(vec![0.5, 0.5], var)?;
        let x = Tensor::new(&[[0f64, 1.0], [2.0, -1.0]], &Device::Cpu)?;
        let log_z = (2.0 * std::f64::consts::PI * var).ln(); // D/2 * log(2 pi var), D = 2
        let a = mix.energy(&x)?.to_vec1::<f64>()?;
        let b = gauss.energy(&x)?.to_vec1::<f64>()?;
        for (a, b) in a.iter().zip(&b) {
            assert!((a - (b + log_z)).abs() < 1e-12, "{a} vs {b} + {log_z}");
        }
        Ok(())
    }

    #[test]
    fn mixture_energy_matches_direct_density() -> Result<()> {
        let mix = GaussianMixture::new(
            vec![0.25, 0.75],
            vec![vec![-1.0], vec![2.0]],
            vec![0.5, 1.5],
        )?;
        let xs = [-1.0f64, 0.3, 2.0, 40.0];
        let x = Tensor::from_vec(xs.to_vec(), (4, 1), &Device::Cpu)?;
        let e = mix.energy(&x)?.to_vec1::<f64>()?;
        let pdf = |x: f64, m: f64, v: f64| {
            (-(x - m).powi(2) / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v).sqrt()
        };
        for (i, &xi) in xs.iter().take(3).enumerate() {
            let p = 0.25 * pdf(xi, -1.0, 0.5) + 0.75 * pdf(xi, 2.0, 1.5);
            assert!(
                (e[i] + p.ln()).abs() < 1e-10,
                "x={xi}: {} vs {}",
                e[i],
                -p.ln()
            );
        }
        // Far in the tail the density underflows, the energy does not.
        assert!(e[3].is_finite() && e[3] > 400.0);
        let r = mix.responsibilities(&x)?.to_vec2::<f64>()?;
        assert!((r[0][0] + r[0][1] - 1.0).abs() < 1e-12 && r[0][0] > 0.9);
        Ok(())
    }

    #[test]
    fn bad_parameters_and_shapes_are_errors() -> Result<()> {
        assert!(Gaussian::new(vec![0.0], vec![0.0]).is_err());
        assert!(Gaussian::new(vec![0.0, 1.0], vec![1.0]).is_err());
        assert!(GaussianMixture::new(vec![1.0, -1.0], vec![vec![0.0]; 2], vec![1.0; 2]).is_err());
        let g = Gaussian::isotropic(vec![0.0; 3], 1.0)?;
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        let err = g.energy(&x).unwrap_err().to_string();
        assert!(err.contains("Gaussian energy input"), "{err}");
        Ok(())
    }
}
