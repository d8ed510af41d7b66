//! Latent-space energy-based prior models: Pang, Han, Nijkamp, Zhu & Wu (NeurIPS 2020),
//! "Learning Latent Space Energy-Based Prior Model".
//!
//! A top-down generator `x = g(z) + N(0, sigma_x^2 I)` whose latent prior is an energy-based
//! correction of a Gaussian, `p(z) ∝ exp(f(z)) N(z; 0, sigma^2 I)`, `f` a small MLP.
//!
//! **Sign convention.** In the paper `f` is a *negative* energy (high on likely latents). In this
//! workspace an [`ebm_core::Energy`] is low on likely samples, so the prior's MLP is the energy
//! `E(z) = -f(z)` and `p(z) ∝ exp(-E(z)) N(z; 0, sigma^2 I)` everywhere in this crate: the prior
//! loss is `mean E(z+) - mean E(z-)` (the paper's `mean f(z-) - mean f(z+)`).
//!
//! - [`Generator`] ([`GeneratorConfig`]): DCGAN-style transposed convolutions
//!   (`ebm_ops::conv_transpose2d`), leaky ReLU 0.2, tanh output, for 28x28, 32x32 and 64x64
//!   images in [-1, 1]; [`LinearDecoder`], a linear generator with a closed-form posterior.
//!   The posterior sampler's likelihood gradient ([`Decoder::reconstruction_energy_and_grad`])
//!   is a hand-written backward pass through the generator (no autograd bookkeeping; tests hold
//!   it to autograd, and autograd to finite differences).
//! - [`prior_langevin`] and [`posterior_langevin`]: short-run Langevin in latent space, with
//!   the caller's seeded generator; [`LatentLangevin`] holds a chain's settings (the paper's 60
//!   steps of 0.4 for the prior, 20 steps of 0.1 for the posterior).
//! - [`LatentModel`] ([`LatentConfig`]): the prior MLP (`nz -> 200 -> 200 -> 1`, leaky ReLU,
//!   `ebm_nn::MlpConfig::latent_prior`) or the Gaussian prior (`f = 0`, alternating
//!   back-propagation, Han et al. 2017) with a generator; sampling, inference, reconstruction
//!   and the anomaly score `-log p(x, z)` at posterior samples.
//! - [`LatentTrainer`] ([`TrainConfig`]): maximum-likelihood learning, one Adam per network;
//!   `save_state` / `load_state` snapshot and restore all of it (`ebm_train::Snapshot`).
//! - [`checkpoint`]: safetensors weights with the JSON config beside them.
//!
//! ```
//! use candle_core::Device;
//! use ebm_core::seeded_rng;
//! use ebm_latent::{GeneratorConfig, LatentConfig, LatentLangevin, LatentModel};
//!
//! # fn main() -> ebm_latent::Result<()> {
//! let mut rng = seeded_rng(0);
//! let config = LatentConfig::ebm_prior(GeneratorConfig::mnist_like(8, 4));
//! let model = LatentModel::new(&config, &Device::Cpu, &mut rng)?.frozen()?;
//! let z = model.sample_prior(3, &LatentLangevin::prior().with_steps(5), &Device::Cpu, &mut rng)?;
//! let images = model.generate(&z)?;
//! assert_eq!(images.dims(), &[3, 1, 28, 28]);
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
mod error;
mod generator;
mod langevin;
mod model;
mod ops;
mod train;

pub use error::{Error, Result};
pub use generator::{Decoder, Generator, GeneratorConfig, LayerSpec, LinearDecoder, LEAKY_SLOPE};
pub use langevin::{posterior_langevin, prior_langevin, LatentLangevin};
pub use model::{to_signed, to_unit, AnomalyScores, LatentConfig, LatentModel};
pub use train::{LatentTrainer, StepLog, TrainConfig};
