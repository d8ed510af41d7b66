//! MCMC samplers that see nothing but [`ebm_core::Energy`]: they know neither networks nor
//! compositions nor training.
//!
//! - [`Langevin`]: `x <- clamp(x - step_size * clip(dE/dx) + noise_scale * N(0, I))`, K steps,
//!   with the step size and the noise scale set separately as in IGEBM (Du & Mordatch 2019), or
//!   matched (`noise_scale = sqrt(2 step_size)`) for the unadjusted Langevin algorithm.
//! - [`ReplayBuffer`]: persistent chains; each batch restarts a fraction (5% by default) from
//!   uniform noise and continues the rest from past samples.
//!
//! Every sampler takes the caller's seeded generator: the same seed gives the same samples.
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

mod error;
mod langevin;
mod replay;

pub use error::{Error, Result};
pub use langevin::{Langevin, LangevinConfig, LangevinRun};
pub use replay::{ReplayBatch, ReplayBuffer};
