//! VAEBM (Xiao, Kreis, Kautz, Vahdat; ICLR 2021), "VAEBM: A Symbiosis between Variational
//! Autoencoders and Energy-based Models": `p(x) ∝ p_VAE(x) exp(-E(x))`, a VAE whose samples an
//! energy on data space corrects.
//!
//! - [`Vae`] ([`VaeConfig`]): a convolutional encoder and decoder (`ebm_ops::conv2d`,
//!   `avg_pool2x2`, stride-2 `conv_transpose2d`, Swish or leaky ReLU), a vector latent code in
//!   one group ([`Hierarchy::Single`]) or several top-down groups ([`Hierarchy::TopDown`], NVAE's
//!   structure at one resolution), and a Gaussian likelihood with a fixed or a learned per-pixel
//!   standard deviation ([`Likelihood`]); trained by its ELBO ([`VaeTrainer`]).
//! - [`ReparamEnergy`]: the VAEBM energy in the VAE's reparameterised space,
//!   `E(T(eps)) + ||eps||^2 / 2` with `x = T(eps_z, eps_x) = mean(z(eps_z)) + sigma_x eps_x`, an
//!   ordinary [`ebm_core::Energy`] that `ebm_mcmc::Langevin` samples ([`EpsLangevin`]: the
//!   paper's `eps <- eps - (step / 2) grad + sqrt(step) N(0, I)`), so chains start at the
//!   VAE's own samples.
//! - [`Vaebm`]: the frozen VAE and an IGEBM energy ([`ebm_nn::Igebm`]) of the same image shape;
//!   [`sample_same_eps`] shows the VAE's and the VAEBM's samples from the same `eps`;
//!   [`Scores`] for out-of-distribution detection (the ELBO standing in for `log p_VAE`).
//! - [`VaebmTrainer`] ([`VaebmTrainConfig`]): contrastive divergence with the VAE frozen, the
//!   paper's spectral regulariser ([`SpectralRegularizer`], `alpha_s * sum sigma(W)`), Adam
//!   with betas (0.99, 0.999), an optional persistent `eps_z` buffer ([`EpsBuffer`]), and
//!   divergence detection with roll-back to the last good weights at a lower learning rate
//!   ([`DivergenceGuard`], [`Rollback`]).
//! - [`checkpoint`]: safetensors weights with JSON configs beside them.
//!
//! ```
//! use candle_core::Device;
//! use ebm_core::seeded_rng;
//! use ebm_nn::{Igebm, IgebmConfig};
//! use ebm_vaebm::{EpsLangevin, Vae, VaeConfig, Vaebm};
//!
//! # fn main() -> ebm_vaebm::Result<()> {
//! let mut rng = seeded_rng(0);
//! let vae = Vae::new(&VaeConfig::mnist_like(4, 16, 4), &Device::Cpu, &mut rng)?;
//! let ebm = Igebm::new(&IgebmConfig::small(1, 28, 4), &Device::Cpu, &mut rng)?;
//! let model = Vaebm::new(vae, ebm)?;
//! let eps = model.initial_eps(2, &Device::Cpu, &mut rng)?;
//! let sampler = EpsLangevin { step_size: 1e-3, steps: 2 };
//! let out = model.sample(&eps, &sampler, &mut rng)?;
//! assert_eq!(out.vae_mean.dims(), &[2, 1, 28, 28]);
//! assert_eq!(out.vaebm_mean.dims(), &[2, 1, 28, 28]);
//! # Ok(())
//! # }
//! ```

mod buffer;
pub mod checkpoint;
mod error;
mod model;
mod reparam;
mod spectral;
mod train;
mod vae;

pub use buffer::{BufferConfig, EpsBuffer};
pub use error::{Error, Result};
pub use model::{sample_same_eps, SameEps, Scores, Vaebm};
pub use reparam::{EpsLangevin, EpsLayout, ReparamEnergy};
pub use spectral::SpectralRegularizer;
pub use train::{
    DivergenceGuard, Negatives, Rollback, StepOutcome, VaeStepLog, VaeTrainConfig, VaeTrainer,
    VaebmStepLog, VaebmTrainConfig, VaebmTrainer,
};
pub use vae::{
    gaussian_log_likelihood, kl_normal, kl_standard_normal, Elbo, Hierarchy, Likelihood, Vae,
    VaeConfig,
};
