//! The bottom layer of the workspace: the [`Energy`] trait that every model implements and every
//! sampler consumes, the seeded random noise they share, and analytic energies whose answers are
//! known in closed form (for tests of samplers and trainers).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ebm_core::{analytic::Gaussian, Energy};
//!
//! # fn main() -> ebm_core::Result<()> {
//! let gaussian = Gaussian::isotropic(vec![0.0; 2], 1.0)?;
//! let x = Tensor::new(&[[1f32, 1.0], [0.0, 2.0]], &Device::Cpu)?;
//! let e = gaussian.energy(&x)?.to_vec1::<f32>()?;
//! assert_eq!(e, vec![1.0, 2.0]); // ||x||^2 / 2
//! # Ok(())
//! # }
//! ```

pub mod analytic;
mod energy;
mod error;
pub mod noise;
pub mod validate;

pub use energy::{autograd_energy_and_grad, Energy, LabelledEnergy, WithLabels};
pub use error::{Error, Result};
pub use noise::{seeded_rng, Rng, RngState};
