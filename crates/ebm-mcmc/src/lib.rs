//! MCMC samplers that see nothing but [`ebm_core::Energy`]: they know neither networks nor
//! compositions nor training.
//!
//! - [`Sampler`]: the one trait every sampler implements (`run(energy, x0, rng) ->
//!   SamplerRun`), object safe, so `Box<dyn Sampler>` can be chosen at run time. One chain per
//!   batch row; each chain takes its own accept/reject decision.
//! - [`Langevin`]: `x <- clamp(x - step_size * clip(dE/dx) + noise_scale * N(0, I))`, K steps,
//!   with the step size and the noise scale set separately as in IGEBM (Du & Mordatch 2019), or
//!   matched (`noise_scale = sqrt(2 step_size)`) for the unadjusted Langevin algorithm.
//! - [`Mala`]: Metropolis-adjusted Langevin with the exact proposal density.
//! - [`Hmc`]: Hamiltonian Monte Carlo (leapfrog, unit mass), Metropolis-adjusted or not.
//! - [`Annealed`]: an inner sampler over a [`Schedule`] of temperatures `E / T_k` or of
//!   interpolations `(1 - b_k) E_0 + b_k E` (Du et al. 2023, "Reduce, Reuse, Recycle").
//! - [`DualAveraging`]: step-size adaptation to a target acceptance probability during
//!   warm-up (Hoffman & Gelman 2014), frozen after.
//! - [`diagnostics`]: effective sample size, split R-hat, Wasserstein distance; [`Diagnostics`]
//!   of a run as plain serialisable data. [`targets::Banana`]: a curved test target with exact
//!   samples.
//! - [`ReplayBuffer`]: persistent chains; each batch restarts a fraction (5% by default) from
//!   uniform noise and continues the rest from past samples.
//!
//! Every sampler takes the caller's seeded generator: the same seed gives the same samples.
//! Metropolis-adjusted samplers reject proposals whose energy is NaN or infinite (and count
//! them as divergences); unadjusted ones fail with a `Diverged` error: samples are never NaN.
//!
//! ```
//! use candle_core::{DType, Device};
//! use ebm_core::{analytic::Gaussian, noise, seeded_rng};
//! use ebm_mcmc::{Langevin, LangevinConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target = Gaussian::isotropic(vec![2.0, -1.0], 0.25)?;
//! let sampler = Langevin::new(LangevinConfig::matched(0.01, 500))?;
//! let mut rng = seeded_rng(0);
//! let x0 = noise::normal(&mut rng, (1000, 2), DType::F32, &Device::Cpu)?;
//! let run = sampler.run(&target, &x0, &mut rng)?;
//! let mean = run.samples.mean(0)?.to_vec1::<f32>()?;
//! assert!((mean[0] - 2.0).abs() < 0.1 && (mean[1] + 1.0).abs() < 0.1);
//! # Ok(())
//! # }
//! ```
//!
//! MALA with warm-up adaptation, and its diagnostics:
//!
//! ```
//! use candle_core::{DType, Device};
//! use ebm_core::{noise, seeded_rng};
//! use ebm_mcmc::{targets::Banana, Mala, MalaConfig, Sampler};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let banana = Banana::new(1.0, 0.5)?;
//! let mala = Mala::new(MalaConfig::new(0.1, 200).with_adaptation(100, 0.574).with_trace(2, 1))?;
//! let mut rng = seeded_rng(0);
//! let x0 = noise::normal(&mut rng, (64, 2), DType::F64, &Device::Cpu)?;
//! let run = mala.run(&banana, &x0, &mut rng)?;
//! let d = run.diagnostics()?;
//! assert!((d.mean_accept_prob - 0.574).abs() < 0.1);
//! assert!(d.rhat.iter().all(|r| *r < 1.1));
//! println!("{}", serde_json::to_string(&d)?);
//! # Ok(())
//! # }
//! ```

mod adapt;
mod anneal;
pub mod diagnostics;
mod error;
mod hmc;
mod langevin;
mod mala;
mod replay;
mod sampler;
pub mod targets;

pub use adapt::{DualAveraging, DualAveragingConfig};
pub use anneal::{Annealed, Interpolated, Schedule, Tempered};
pub use diagnostics::Diagnostics;
pub use error::{Error, Result};
pub use hmc::{leapfrog, Hmc, HmcConfig, Trajectory};
pub use langevin::{Langevin, LangevinConfig, LangevinRun};
pub use mala::{mala_log_acceptance, mala_log_proposal, Mala, MalaConfig};
pub use replay::{ReplayBatch, ReplayBuffer};
pub use sampler::{Draws, RunStats, Sampler, SamplerRun, StageStats, TraceConfig};
