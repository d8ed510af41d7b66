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

use candle_core::Tensor;
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
pub fn prior_langevin<R: rand::Rng + ?Sized>(
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
    let mut z = z0.detach();
    for _ in 0..settings.steps {
        let grad = prior_grad(energy, &z, prior_sigma)?;
        z = langevin_update(&z, &grad, settings, rng)?;
    }
    check_chain_end(&z, "the prior Langevin chain")?;
    Ok(z)
}

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
