//! Sampling a VAEBM in the VAE's reparameterised space.
//!
//! With `x = T(eps_z, eps_x) = mean(z(eps_z)) + sigma_x eps_x` ([`Vae::transform`]) and
//! `eps = (eps_z, eps_x)` standard normal under the VAE, the VAEBM density
//! `p(x) ∝ p_VAE(x) exp(-E(x))` becomes, in `eps`-space,
//!
//! ```text
//! h(eps) ∝ exp(-E(T(eps)) - ||eps||^2 / 2)
//! ```
//!
//! so that chains start at the VAE's own samples (`eps ~ N(0, I)`) and the energy only has to
//! correct them. [`ReparamEnergy`] is that energy, an ordinary [`Energy`] over `eps` packed into
//! one row per chain (`[B, total_latent_dim + C * H * W]`, [`EpsLayout`]), so the sampler of
//! `ebm-mcmc` runs it without knowing about VAEs. [`EpsLangevin`] is the paper's update,
//! `eps <- eps - (step / 2) grad + sqrt(step) N(0, I)`.

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::{validate, Energy};
use ebm_mcmc::{Langevin, LangevinConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Vae};

/// How `eps = (eps_z, eps_x)` is packed into one row per chain: the `latent` values of
/// `eps_z`, then the `C * H * W` values of `eps_x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpsLayout {
    /// The length of `eps_z` (every latent group).
    pub latent: usize,
    /// The image shape `[C, H, W]` of `eps_x`.
    pub image: [usize; 3],
}

impl EpsLayout {
    /// The layout of `vae`'s reparameterisation.
    pub fn of(vae: &Vae) -> Self {
        let c = vae.config();
        Self {
            latent: c.total_latent_dim(),
            image: [c.channels, c.image_size, c.image_size],
        }
    }

    /// Values of `eps_x` per chain.
    pub fn pixels(&self) -> usize {
        self.image.iter().product()
    }

    /// Values per packed row.
    pub fn total(&self) -> usize {
        self.latent + self.pixels()
    }

    /// Packs `eps_z [B, latent]` and `eps_x [B, C, H, W]` into `[B, total]`.
    pub fn pack(&self, eps_z: &Tensor, eps_x: &Tensor) -> Result<Tensor> {
        let b = validate::check_batch_shape(eps_z, &[self.latent], "eps_z")?;
        let bx = validate::check_batch_shape(eps_x, &self.image, "eps_x")?;
        if b != bx {
            return Err(Error::Mismatch {
                what: "eps_z and eps_x".into(),
                problem: format!("{b} rows of eps_z, {bx} of eps_x"),
            });
        }
        Ok(Tensor::cat(
            &[eps_z, &eps_x.reshape((b, self.pixels()))?],
            1,
        )?)
    }

    /// Splits a packed `[B, total]` into `eps_z [B, latent]` and `eps_x [B, C, H, W]`.
    pub fn split(&self, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = validate::check_batch_shape(eps, &[self.total()], "packed eps")?;
        let eps_z = eps.narrow(1, 0, self.latent)?;
        let [c, h, w] = self.image;
        let eps_x = eps
            .narrow(1, self.latent, self.pixels())?
            .reshape((b, c, h, w))?;
        Ok((eps_z, eps_x))
    }

    /// `batch` packed rows of independent standard normal draws.
    pub fn standard_normal<R: rand::Rng + ?Sized>(
        &self,
        batch: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        validate::at_least_one("batch", batch)?;
        Ok(ebm_core::noise::normal(
            rng,
            (batch, self.total()),
            dtype,
            device,
        )?)
    }
}

/// The paper's Langevin update in `eps`-space, `eps <- eps - (step_size / 2) grad +
/// sqrt(step_size) N(0, I)`, for `steps` steps (no clipping, no clamping). The paper uses 10
/// steps of 8e-5 in training and 16 at test time on CIFAR-10.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpsLangevin {
    /// The step size (> 0).
    pub step_size: f64,
    /// The number of steps (>= 1).
    pub steps: usize,
}

impl EpsLangevin {
    /// The paper's CIFAR-10 training sampler: 10 steps of 8e-5.
    pub fn cifar10_training() -> Self {
        Self {
            step_size: 8e-5,
            steps: 10,
        }
    }

    /// The paper's CIFAR-10 test sampler: 16 steps of 8e-5.
    pub fn cifar10_test() -> Self {
        Self {
            step_size: 8e-5,
            steps: 16,
        }
    }

    /// Fails unless the step size is a finite number > 0 and there is at least one step.
    pub fn validate(&self) -> Result<()> {
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::config(
                "eps-space Langevin step_size",
                format!("must be a finite number > 0, got {}", self.step_size),
            ));
        }
        if self.steps == 0 {
            return Err(Error::config(
                "eps-space Langevin steps",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }

    /// The `ebm-mcmc` sampler that performs this update: gradient multiplier `step_size / 2`,
    /// noise scale `sqrt(step_size)`.
    pub fn sampler(&self) -> Result<Langevin> {
        self.validate()?;
        Ok(Langevin::new(LangevinConfig {
            step_size: self.step_size / 2.0,
            noise_scale: self.step_size.sqrt(),
            steps: self.steps,
            grad_clip: None,
            clamp: None,
        })?)
    }
}

/// `E(T(eps)) + ||eps||^2 / 2` over packed `eps` ([`EpsLayout`]): the VAEBM energy in the
/// VAE's reparameterised space, for any data-space energy `E` (an IGEBM network, or zero).
///
/// [`Energy::energy_and_grad`] wraps `eps` in a fresh `Var` at every call (so graphs never
/// grow along a chain), asks the data-space energy for its own input gradient `g = dE/dx` at
/// `x = T(eps)` (the fused CPU pass of a frozen IGEBM), and pulls `g` back through the decoder
/// by autograd (`d(sum(x * g))/d eps = J_T^T g`), then adds `eps`. The VAE should be frozen
/// ([`Vae::frozen`]) so that no parameter gradient is computed.
pub struct ReparamEnergy<'a, E: ?Sized> {
    vae: &'a Vae,
    energy: &'a E,
    layout: EpsLayout,
}

impl<'a, E: Energy + ?Sized> ReparamEnergy<'a, E> {
    /// The energy of `energy` (on images) seen through `vae`. Fails when the energy takes
    /// images of another shape than the VAE makes.
    pub fn new(vae: &'a Vae, energy: &'a E) -> Result<Self> {
        let made = vae.config().sample_shape();
        if let Some(taken) = energy.sample_shape() {
            if taken != made {
                return Err(Error::Mismatch {
                    what: "energy and VAE".into(),
                    problem: format!(
                        "the energy takes images of shape {taken:?}, the VAE makes {made:?}: train the energy on the VAE's image size"
                    ),
                });
            }
        }
        Ok(Self {
            vae,
            energy,
            layout: EpsLayout::of(vae),
        })
    }

    /// How `eps` is packed.
    pub fn layout(&self) -> &EpsLayout {
        &self.layout
    }

    /// `T(eps)` for packed `eps` (detached images).
    pub fn images(&self, eps: &Tensor) -> Result<Tensor> {
        let (eps_z, eps_x) = self.layout.split(eps)?;
        Ok(self.vae.transform(&eps_z, &eps_x)?.detach())
    }

    /// The decoder means `mean(z(eps_z))` for packed `eps` (detached): the samples without
    /// pixel noise.
    pub fn means(&self, eps: &Tensor) -> Result<Tensor> {
        let (eps_z, _) = self.layout.split(eps)?;
        Ok(self.vae.decode_eps(&eps_z)?.detach())
    }

    fn energy_impl(&self, eps: &Tensor) -> Result<Tensor> {
        let (eps_z, eps_x) = self.layout.split(eps)?;
        let x = self.vae.transform(&eps_z, &eps_x)?;
        let e = self.energy.energy(&x)?;
        Ok((e + (eps.sqr()?.sum(1)? * 0.5)?)?)
    }

    fn energy_and_grad_impl(&self, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let var = Var::from_tensor(&eps.detach())?;
        let (eps_z, eps_x) = self.layout.split(var.as_tensor())?;
        let x = self.vae.transform(&eps_z, &eps_x)?;
        let (e, g) = self.energy.energy_and_grad(&x.detach())?;
        let pullback = (&x * g.detach())?.sum_all()?;
        let grads = pullback.backward()?;
        let eps_now = var.as_tensor().detach();
        let grad = match grads.get(var.as_tensor()) {
            Some(g) => (g + &eps_now)?,
            None => eps_now.clone(),
        };
        let prior = (eps_now.sqr()?.sum(1)? * 0.5)?;
        Ok(((e.detach() + prior)?, grad))
    }
}

/// An error of this crate as the `ebm-core` error that [`Energy`] returns.
pub(crate) fn to_core(e: Error) -> ebm_core::Error {
    match e {
        Error::Core(c) => c,
        Error::Candle(c) => ebm_core::Error::Candle(c),
        other => ebm_core::Error::invalid("VAEBM energy", other.to_string()),
    }
}

impl<E: Energy + ?Sized> Energy for ReparamEnergy<'_, E> {
    fn energy(&self, eps: &Tensor) -> ebm_core::Result<Tensor> {
        self.energy_impl(eps).map_err(to_core)
    }

    fn energy_and_grad(&self, eps: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        self.energy_and_grad_impl(eps).map_err(to_core)
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(vec![self.layout.total()])
    }
}
