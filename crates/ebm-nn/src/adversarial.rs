//! Projected gradient descent attacks (Madry et al. 2018) in the L-infinity and L2 balls: the
//! robustness evaluation of Du & Mordatch 2019, section 4.
//!
//! [`pgd`] is model-agnostic: it takes a function returning the gradient, with respect to the
//! inputs, of the summed per-input loss to *increase* (the cross-entropy of a classifier, e.g.
//! [`crate::energy_classifier::EnergyClassifier::loss_and_input_grad`] or autograd through
//! [`crate::Classifier::loss`]), and keeps every adversarial input within `eps` of its clean
//! input and inside the data range.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ebm_nn::adversarial::{pgd, Norm, PgdConfig};
//!
//! # fn main() -> ebm_nn::Result<()> {
//! let x = Tensor::new(&[[0.5f32, 0.5]], &Device::Cpu)?;
//! let cfg = PgdConfig::standard(Norm::Linf, 0.1, 5);
//! // The loss x0 - x1 increases along (+1, -1).
//! let grad = |x: &Tensor| Ok(Tensor::new(&[[1f32, -1.0]], x.device())?);
//! let adv = pgd(&cfg, &x, grad, &mut ebm_core::seeded_rng(0))?;
//! let a = adv.to_vec2::<f32>()?[0].clone();
//! assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.4).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The ball the perturbation lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// `max_i |delta_i| <= eps`; steps follow the sign of the gradient.
    Linf,
    /// `||delta||_2 <= eps` per input; steps follow the normalised gradient.
    L2,
}

/// One PGD attack's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgdConfig {
    /// The ball.
    pub norm: Norm,
    /// Its radius (>= 0; 0 returns the clean inputs).
    pub eps: f64,
    /// The length of each step (in the norm of the ball).
    pub step_size: f64,
    /// Gradient steps (>= 1).
    pub steps: usize,
    /// Start from a uniform point of the L-infinity ball, or from a random direction at a
    /// uniform radius in `[0, eps]` for L2, instead of the clean input.
    pub random_start: bool,
    /// The data range every adversarial input is clamped to.
    pub range: (f64, f64),
}

impl PgdConfig {
    /// Madry et al.'s usual schedule: step `2.5 eps / steps`, a random start, data in [0, 1].
    pub fn standard(norm: Norm, eps: f64, steps: usize) -> Self {
        Self {
            norm,
            eps,
            step_size: 2.5 * eps / steps.max(1) as f64,
            steps,
            random_start: true,
            range: (0.0, 1.0),
        }
    }

    /// Checks radius, step, step count and range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("PGD: {what}")));
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("eps must be finite and >= 0, got {}", self.eps));
        }
        if !(self.step_size.is_finite() && self.step_size >= 0.0) {
            return bad(format!(
                "step_size must be finite and >= 0, got {}",
                self.step_size
            ));
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        let (lo, hi) = self.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return bad(format!(
                "range needs finite low < high, got {:?}",
                self.range
            ));
        }
        Ok(())
    }
}

/// Per-input L2 norms of `t [B, ...]`, shaped `[B, 1, ...]` to broadcast against it.
fn norms(t: &Tensor) -> Result<Tensor> {
    let b = t.dim(0)?;
    let mut shape = vec![b];
    shape.extend(std::iter::repeat_n(1, t.rank() - 1));
    Ok(t.flatten_from(1)?.sqr()?.sum(1)?.sqrt()?.reshape(shape)?)
}

/// Moves `x_adv` back into the `eps`-ball of `norm` around `x` and then into `range`. Clamping
/// to the range after the projection never leaves the ball, since `x` is in the range.
pub fn project(
    x_adv: &Tensor,
    x: &Tensor,
    norm: Norm,
    eps: f64,
    range: (f64, f64),
) -> Result<Tensor> {
    let delta = (x_adv - x)?;
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps)?,
        Norm::L2 => {
            let n = norms(&delta)?;
            // min(1, eps / ||delta||), safe at delta = 0.
            let scale = (n.maximum(eps)?.recip()? * eps)?;
            delta.broadcast_mul(&scale)?
        }
    };
    Ok((x + delta)?.clamp(range.0, range.1)?)
}

/// Runs PGD from `x` (inputs in `config.range`): `steps` ascent steps on the loss whose input
/// gradient `grad_fn` returns (shape of its argument), each followed by [`project`]. The random
/// start draws from `rng`. Returns the adversarial inputs, detached.
pub fn pgd<F, R>(config: &PgdConfig, x: &Tensor, mut grad_fn: F, rng: &mut R) -> Result<Tensor>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
    R: rand::Rng + ?Sized,
{
    config.validate()?;
    let x = x.detach();
    if config.eps == 0.0 {
        return Ok(x);
    }
    let (eps, range) = (config.eps, config.range);
    let mut adv = if config.random_start {
        let start = match config.norm {
            Norm::Linf => {
                ebm_core::noise::uniform(rng, x.shape(), -eps, eps, DType::F32, x.device())?
            }
            Norm::L2 => {
                let dir = ebm_core::noise::normal(rng, x.shape(), DType::F32, x.device())?;
                let b = x.dim(0)?;
                let mut shape = vec![b];
                shape.extend(std::iter::repeat_n(1, x.rank() - 1));
                let radius =
                    ebm_core::noise::uniform(rng, shape, 0.0, eps, DType::F32, x.device())?;
                dir.broadcast_div(&(norms(&dir)? + 1e-12)?)?
                    .broadcast_mul(&radius)?
            }
        };
        project(
            &(&x + start.to_dtype(x.dtype())?)?,
            &x,
            config.norm,
            eps,
            range,
        )?
    } else {
        x.clone()
    };
    for _ in 0..config.steps {
        let g = grad_fn(&adv)?.detach();
        if g.dims() != x.dims() {
            return Err(Error::Config(format!(
                "PGD: the gradient has shape {:?}, the inputs {:?}",
                g.dims(),
                x.dims()
            )));
        }
        let step = match config.norm {
            Norm::Linf => g.sign()?,
            Norm::L2 => g.broadcast_div(&(norms(&g)? + 1e-12)?)?,
        };
        adv = project(
            &(adv + (step * config.step_size)?)?,
            &x,
            config.norm,
            eps,
            range,
        )?;
    }
    Ok(adv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ebm_core::seeded_rng;

    fn within(adv: &Tensor, x: &Tensor, norm: Norm, eps: f64) -> Result<()> {
        let a = adv.to_vec2::<f32>()?;
        let c = x.to_vec2::<f32>()?;
        for (ra, rc) in a.iter().zip(&c) {
            assert!(ra.iter().all(|v| (0.0..=1.0).contains(v)), "outside [0, 1]");
            let d: Vec<f64> = ra.iter().zip(rc).map(|(p, q)| (p - q) as f64).collect();
            let size = match norm {
                Norm::Linf => d.iter().fold(0.0f64, |m, v| m.max(v.abs())),
                Norm::L2 => d.iter().map(|v| v * v).sum::<f64>().sqrt(),
            };
            assert!(
                size <= eps * (1.0 + 1e-5) + 1e-6,
                "{norm:?} size {size} > {eps}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_step_stays_in_the_ball_and_the_data_range() -> Result<()> {
        let mut rng = seeded_rng(0);
        // Inputs at and near the edges of [0, 1], a gradient that pushes hard both ways.
        let x = ebm_core::noise::uniform(&mut rng, (6, 20), 0.0, 1.0, DType::F32, &Device::Cpu)?;
        let x = x.clamp(0.05, 0.95)?.affine(1.2, -0.1)?.clamp(0.0, 1.0)?;
        for (norm, eps) in [
            (Norm::Linf, 0.03),
            (Norm::Linf, 0.3),
            (Norm::L2, 0.5),
            (Norm::L2, 3.0),
        ] {
            let cfg = PgdConfig::standard(norm, eps, 7);
            let mut calls = 0;
            let adv = pgd(
                &cfg,
                &x,
                |a| {
                    calls += 1;
                    within(a, &x, norm, eps)?;
                    let g = ebm_core::noise::normal(
                        &mut seeded_rng(calls),
                        a.shape(),
                        DType::F32,
                        a.device(),
                    )?;
                    Ok((g * 100.0)?)
                },
                &mut rng,
            )?;
            assert_eq!(calls, 7);
            within(&adv, &x, norm, eps)?;
        }
        // eps 0: the clean inputs, no gradient asked for.
        let adv = pgd(
            &PgdConfig::standard(Norm::L2, 0.0, 3),
            &x,
            |_| unreachable!(),
            &mut rng,
        )?;
        assert_eq!(adv.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn finds_the_worst_case_of_a_linear_loss() -> Result<()> {
        // Loss w . x: the L-inf maximiser is x + eps sign(w) (reached from any random start, as
        // the steps add up to more than 2 eps), the L2 one x + eps w / ||w|| (both inside
        // [0, 1] for these inputs).
        let w = [0.5f32, -2.0, 1.0, -0.1];
        let x = Tensor::new(
            &[[0.5f32, 0.5, 0.5, 0.5], [0.4, 0.6, 0.5, 0.3]],
            &Device::Cpu,
        )?;
        let grad = |a: &Tensor| {
            Ok(Tensor::new(&w, a.device())?
                .unsqueeze(0)?
                .broadcast_as(a.shape())?
                .contiguous()?)
        };
        let wn = w.iter().map(|v| v * v).sum::<f32>().sqrt();
        let mut rng = seeded_rng(3);
        let linf = pgd(
            &PgdConfig::standard(Norm::Linf, 0.1, 10),
            &x,
            grad,
            &mut rng,
        )?;
        let l2_cfg = PgdConfig {
            random_start: false,
            ..PgdConfig::standard(Norm::L2, 0.2, 20)
        };
        let l2 = pgd(&l2_cfg, &x, grad, &mut rng)?;
        let (xv, lv, l2v) = (
            x.to_vec2::<f32>()?,
            linf.to_vec2::<f32>()?,
            l2.to_vec2::<f32>()?,
        );
        for b in 0..2 {
            for i in 0..4 {
                let e_inf = xv[b][i] + 0.1 * w[i].signum();
                let e_2 = xv[b][i] + 0.2 * w[i] / wn;
                assert!(
                    (lv[b][i] - e_inf).abs() < 1e-5,
                    "linf {b} {i}: {} vs {e_inf}",
                    lv[b][i]
                );
                assert!(
                    (l2v[b][i] - e_2).abs() < 1e-5,
                    "l2 {b} {i}: {} vs {e_2}",
                    l2v[b][i]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn bad_settings_are_errors() {
        let x = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
        let g = |a: &Tensor| Ok(a.zeros_like()?);
        let mut rng = seeded_rng(0);
        let mut cfg = PgdConfig::standard(Norm::Linf, -0.1, 3);
        assert!(pgd(&cfg, &x, g, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("eps"));
        cfg = PgdConfig::standard(Norm::Linf, 0.1, 0);
        assert!(pgd(&cfg, &x, g, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("steps"));
        cfg = PgdConfig::standard(Norm::L2, 0.1, 2);
        let wrong = |_: &Tensor| Ok(Tensor::zeros(3, DType::F32, &Device::Cpu)?);
        assert!(pgd(&cfg, &x, wrong, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("shape"));
    }
}
