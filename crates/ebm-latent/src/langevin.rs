//! Short-run Langevin dynamics in latent space (Pang et al. 2020, eq. 9 and 12).
//!
//! The prior is `p(z) ∝ exp(f(z)) N(z; 0, sigma^2 I)`. In this workspace an [`Energy`] is low on
//! likely samples, so the prior's network is the energy `E(z) = -f(z)` and
//! `p(z) ∝ exp(-E(z) - |z|^2 / (2 sigma^2))`. With step size `s`:
//!
//! ```text
//! prior:      z <- z - s^2/2 (grad E(z) + z / sigma^2)                                    + s N(0, I)
//! posterior:  z <- z - s^2/2 (grad E(z) + z / sigma^2 + grad_z |x - g(z)|^2 / (2 sigma_x^2)) + s N(0, I)
//! ```
//!
//! `None` for the energy is `f = 0`: the Gaussian prior `N(0, sigma^2 I)` of alternating
//! back-propagation (Han et al. 2017). Each step takes its gradients at a detached `z` (through a
//! fresh `Var` where autograd is used), so no graph grows across steps. Every chain takes the
//! caller's random generator.

use candle_core::{DType, Tensor};
use ebm_core::{noise, validate, Energy};
use serde::{Deserialize, Serialize};

use crate::generator::{check_latent, Decoder};
use crate::{Error, Result};

/// One short-run chain's settings. Unknown keys are rejected when read from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentLangevin {
    /// Langevin steps (>= 1).
    pub steps: usize,
    /// The step size `s` (> 0): the drift is `s^2 / 2` times the gradient, the noise `s`.
    pub step_size: f64,
    /// Add the `s N(0, I)` term (the paper's default); without it the chain is gradient
    /// descent on `-log p`.
    pub noise: bool,
}

impl LatentLangevin {
    /// The paper's prior sampler: 60 steps of size 0.4.
    pub fn prior() -> Self {
        Self {
            steps: 60,
            step_size: 0.4,
            noise: true,
        }
    }

    /// The paper's posterior sampler: 20 steps of size 0.1.
    pub fn posterior() -> Self {
        Self {
            steps: 20,
            step_size: 0.1,
            noise: true,
        }
    }

    /// The same settings with another number of steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Checks the settings; `name` is how errors call the sampler (e.g. `prior_langevin`),
    /// so a bad step size reads `invalid prior_langevin.step_size: ...`.
    pub fn validate(&self, name: &str) -> Result<()> {
        validate::positive(&format!("{name}.step_size"), self.step_size)?;
        validate::at_least_one(&format!("{name}.steps"), self.steps)?;
        Ok(())
    }
}

/// Fails unless `value` is a finite number > 0; `name` names it in the error.
pub(crate) fn check_sigma(name: &str, value: f64) -> Result<f64> {
    Ok(validate::positive(name, value)?)
}

fn check_chain_end(z: &Tensor, what: &str) -> Result<()> {
    validate::check_finite(z, what).map_err(|_| Error::Diverged {
        step: None,
        what: what.to_string(),
    })
}

/// The drift-and-noise update `z - s^2/2 grad + s eps`.
fn langevin_update<R: rand::Rng + ?Sized>(
    z: &Tensor,
    grad: &Tensor,
    settings: &LatentLangevin,
    rng: &mut R,
) -> Result<Tensor> {
    let s = settings.step_size;
    let mut next = (z - (grad * (0.5 * s * s))?)?;
    if settings.noise {
        next = (next + (noise::normal_like(rng, z)? * s)?)?;
    }
    Ok(next)
}

/// The gradient of `E(z) + |z|^2 / (2 sigma^2)`.
fn prior_grad(energy: Option<&dyn Energy>, z: &Tensor, prior_sigma: f64) -> Result<Tensor> {
    let gaussian = (z * (1.0 / (prior_sigma * prior_sigma)))?;
    Ok(match energy {
        Some(e) => (e.energy_and_grad(z)?.1 + gaussian)?,
        None => gaussian,
    })
}

/// Samples the prior `p(z) ∝ exp(-E(z)) N(z; 0, prior_sigma^2 I)` by short-run Langevin from
/// `z0 [B, latent_dim]` (the paper starts from `N(0, I)`). `energy: None` is the Gaussian prior.
pub fn prior_langevin<R: rand::Rng + Send + ?Sized>(
    energy: Option<&dyn Energy>,
    z0: &Tensor,
    prior_sigma: f64,
    settings: &LatentLangevin,
    rng: &mut R,
) -> Result<Tensor> {
    settings.validate("prior_langevin")?;
    check_sigma("prior_sigma", prior_sigma)?;
    if z0.rank() != 2 || z0.dim(0)? == 0 {
        return Err(ebm_core::Error::Shape {
            what: "prior chain start z0".into(),
            expected: "[batch >= 1, latent_dim]".into(),
            got: z0.dims().to_vec(),
        }
        .into());
    }
    validate::check_finite(z0, "prior chain start z0")?;
    let z = if z0.device().is_cpu() && z0.dtype() == DType::F32 {
        prior_chain_host(energy, z0, prior_sigma, settings, rng)?
    } else {
        prior_chain_tensors(energy, z0, prior_sigma, settings, rng)?
    };
    check_chain_end(&z, "the prior Langevin chain")?;
    Ok(z)
}

/// The prior chain on tensor operations, for any device and dtype.
fn prior_chain_tensors<R: rand::Rng + ?Sized>(
    energy: Option<&dyn Energy>,
    z0: &Tensor,
    prior_sigma: f64,
    settings: &LatentLangevin,
    rng: &mut R,
) -> Result<Tensor> {
    let mut z = z0.detach();
    for _ in 0..settings.steps {
        let grad = prior_grad(energy, &z, prior_sigma)?;
        z = langevin_update(&z, &grad, settings, rng)?;
    }
    Ok(z)
}

/// `dE/dz` at the host values `z`, checked to have their shape.
fn energy_grad_host(
    energy: &dyn Energy,
    z: &[f32],
    shape: &candle_core::Shape,
    device: &candle_core::Device,
) -> Result<Vec<f32>> {
    let current = Tensor::from_slice(z, shape, device)?;
    let grad = energy.energy_and_grad(&current)?.1;
    if grad.dims() != shape.dims() {
        return Err(ebm_core::Error::Shape {
            what: "prior energy gradient".into(),
            expected: format!("{:?}", shape.dims()),
            got: grad.dims().to_vec(),
        }
        .into());
    }
    Ok(grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

/// The prior chain for f32 on the CPU: the Gaussian term, the drift and the noise in one loop
/// over host memory instead of six tensor operations per step, each allocating (a step of the
/// paper's batch of 100 lasts about 100 us, of which those took a fifth). Every element goes
/// through the f32 operations of [`prior_chain_tensors`] in the same order, with the noise
/// drawn in the same order, so the two give the same bits (a test checks).
fn prior_chain_host<R: rand::Rng + Send + ?Sized>(
    energy: Option<&dyn Energy>,
    z0: &Tensor,
    prior_sigma: f64,
    settings: &LatentLangevin,
    rng: &mut R,
) -> Result<Tensor> {
    let shape = z0.shape().clone();
    let device = z0.device().clone();
    let mut z: Vec<f32> = z0.flatten_all()?.to_vec1()?;
    let per_step = if settings.noise { z.len() } else { 0 };
    let segment_steps = (NOISE_SEGMENT_BYTES / (4 * z.len().max(1))).clamp(1, NOISE_SEGMENT);
    // The noise does not depend on the chain, so it is drawn a segment of steps ahead, on
    // another thread, while this one runs the current segment (the same numbers in the same
    // order from the one generator, and not one more).
    let mut eps = vec![0f32; segment_steps * per_step];
    let mut eps_next = eps.clone();
    noise::fill_normal(
        rng,
        &mut eps[..settings.steps.min(segment_steps) * per_step],
    );
    // The scalars as candle converts them (`T::from_f64`, i.e. `as f32`).
    let s = settings.step_size;
    let inv_var = (1.0 / (prior_sigma * prior_sigma)) as f32;
    let drift = (0.5 * s * s) as f32;
    let noise_scale = s as f32;
    let mut done = 0;
    while done < settings.steps {
        let segment = (settings.steps - done).min(segment_steps);
        let following = (settings.steps - done - segment).min(segment_steps);
        rayon::in_place_scope(|scope| -> Result<()> {
            if following > 0 && per_step > 0 {
                let (rng, next) = (&mut *rng, &mut eps_next[..following * per_step]);
                scope.spawn(move |_| noise::fill_normal(rng, next));
            }
            for k in 0..segment {
                let energy_grad = energy
                    .map(|e| energy_grad_host(e, &z, &shape, &device))
                    .transpose()?;
                let step_eps = &eps[k * per_step..(k + 1) * per_step];
                prior_update(
                    &mut z,
                    energy_grad.as_deref(),
                    step_eps,
                    [inv_var, drift, noise_scale],
                );
            }
            Ok(())
        })?;
        std::mem::swap(&mut eps, &mut eps_next);
        done += segment;
    }
    Ok(Tensor::from_vec(z, shape, &device)?)
}

/// One step of [`prior_chain_host`] on every element: `z <- z - drift (g + z inv_var) +
/// noise_scale eps`, in the f32 operations of the tensor path (`t * c` is candle's
/// `affine(c, 0)`, i.e. `v * c + 0`). `eps` is empty without noise. One loop per case, so
/// that each vectorises.
fn prior_update(z: &mut [f32], energy_grad: Option<&[f32]>, eps: &[f32], scalars: [f32; 3]) {
    let [inv_var, drift, noise_scale] = scalars;
    let drifted = |z: f32, g: f32| z - ((g + (z * inv_var + 0.0)) * drift + 0.0);
    let gaussian_only = |z: f32| z - ((z * inv_var + 0.0) * drift + 0.0);
    match (energy_grad, eps.is_empty()) {
        (Some(grad), false) => {
            for ((zi, &g), &e) in z.iter_mut().zip(grad).zip(eps) {
                *zi = drifted(*zi, g) + (e * noise_scale + 0.0);
            }
        }
        (Some(grad), true) => {
            for (zi, &g) in z.iter_mut().zip(grad) {
                *zi = drifted(*zi, g);
            }
        }
        (None, false) => {
            for (zi, &e) in z.iter_mut().zip(eps) {
                *zi = gaussian_only(*zi) + (e * noise_scale + 0.0);
            }
        }
        (None, true) => {
            for zi in z.iter_mut() {
                *zi = gaussian_only(*zi);
            }
        }
    }
}

/// Steps of noise drawn ahead by [`prior_chain_host`] at most (8 gave 5% fewer steps per second
/// than 16 on the paper's batch, 32 no more), and at most [`NOISE_SEGMENT_BYTES`] of them.
const NOISE_SEGMENT: usize = 16;
/// The most memory one segment of noise may take.
const NOISE_SEGMENT_BYTES: usize = 8 << 20;

/// Checks that `x` is a batch of the decoder's outputs and `z0` a matching batch of latents.
pub(crate) fn check_images(decoder: &dyn Decoder, x: &Tensor, what: &str) -> Result<usize> {
    let shape = decoder.output_shape();
    let batch = validate::check_batch_shape(x, &shape, what)?;
    validate::check_finite(x, what)?;
    Ok(batch)
}

/// Samples the posterior `p(z | x) ∝ p(z) N(x; g(z), sigma_x^2 I)` by short-run Langevin from
/// `z0 [B, latent_dim]` (the paper starts each iteration from `N(0, I)`), for images
/// `x [B, output_shape...]` in the decoder's range. `energy: None` is the Gaussian prior.
///
/// The likelihood gradient is [`Decoder::reconstruction_energy_and_grad`]: a hand-written
/// backward pass for [`crate::Generator`], autograd on a fresh `Var` each step otherwise (pass
/// a frozen decoder then, so that no parameter gradient is computed).
#[allow(clippy::too_many_arguments)]
pub fn posterior_langevin<R: rand::Rng + ?Sized>(
    energy: Option<&dyn Energy>,
    decoder: &dyn Decoder,
    x: &Tensor,
    z0: &Tensor,
    prior_sigma: f64,
    likelihood_sigma: f64,
    settings: &LatentLangevin,
    rng: &mut R,
) -> Result<Tensor> {
    settings.validate("posterior_langevin")?;
    check_sigma("prior_sigma", prior_sigma)?;
    check_sigma("likelihood_sigma", likelihood_sigma)?;
    let batch = check_images(decoder, x, "images x")?;
    let zb = check_latent(z0, decoder.latent_dim(), "posterior chain start z0")?;
    if zb != batch {
        return Err(ebm_core::Error::invalid(
            "posterior chain start z0",
            format!("has {zb} latents for {batch} images"),
        )
        .into());
    }
    validate::check_finite(z0, "posterior chain start z0")?;
    let x = x.detach();
    let mut z = z0.detach();
    for _ in 0..settings.steps {
        let (_, lik_grad) = decoder.reconstruction_energy_and_grad(&x, &z, likelihood_sigma)?;
        let grad = (prior_grad(energy, &z, prior_sigma)? + lik_grad)?;
        z = langevin_update(&z, &grad, settings, rng)?;
    }
    check_chain_end(&z, "the posterior Langevin chain")?;
    Ok(z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ebm_nn::{Mlp, MlpConfig};

    /// The host loop and the tensor operations give the same chain, bit for bit, with and
    /// without the energy and the noise, and leave the generator in the same state.
    #[test]
    fn host_prior_chain_equals_tensor_chain_bit_for_bit() {
        let mut rng = noise::seeded_rng(4);
        let mlp = Mlp::new(&MlpConfig::latent_prior(7), &Device::Cpu, &mut rng)
            .unwrap()
            .frozen()
            .unwrap();
        let z0 = noise::normal(&mut rng, (5, 7), DType::F32, &Device::Cpu).unwrap();
        for (with_energy, noise_on, sigma, steps) in [
            (true, true, 1.0, 9),
            (false, true, 0.7, 3),
            (true, false, 1.3, 8),
            (true, true, 0.9, 21),
            (false, false, 1.0, 2),
        ] {
            let energy: Option<&dyn Energy> = with_energy.then_some(&mlp as &dyn Energy);
            let settings = LatentLangevin {
                steps,
                step_size: 0.4,
                noise: noise_on,
            };
            let (mut r1, mut r2) = (noise::seeded_rng(11), noise::seeded_rng(11));
            let host = prior_chain_host(energy, &z0, sigma, &settings, &mut r1).unwrap();
            let tensors = prior_chain_tensors(energy, &z0, sigma, &settings, &mut r2).unwrap();
            let bits = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                bits(&host),
                bits(&tensors),
                "energy {with_energy} noise {noise_on}"
            );
            assert_ne!(bits(&host), bits(&z0));
            assert_eq!(
                rand::Rng::random::<u64>(&mut r1),
                rand::Rng::random::<u64>(&mut r2)
            );
        }
    }
}
