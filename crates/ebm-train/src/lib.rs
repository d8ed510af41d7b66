//! Contrastive-divergence training of energy models (Du & Mordatch 2019):
//!
//! ```text
//! x-  = Langevin(frozen model, start = replay buffer or noise)
//! loss = mean E(x+) - mean E(x-) + l2 * (mean E(x+)^2 + mean E(x-)^2)
//! ```
//!
//! minimised with [`Adam`] (lr 3e-4, betas (0, 0.999) and the reference implementation's
//! element-wise gradient bound), with an optional [`Ema`] of the weights. [`CdTrainer::step`]
//! returns a [`StepLog`]: loss, mean energies, gradient norm, seconds per sampler step.
//!
//! [`hybrid::HybridTrainer`] adds a classification term (the cross-entropy of `softmax(-E(x, .))`
//! over the step's classes) for energy classifiers and class-incremental learning.
//!
//! The trainer drives any [`EnergyModel`]; the sampler it uses sees only `ebm_core::Energy`.
//! [`CdTrainer::save_state`] and [`CdTrainer::load_state`] put everything it needs to continue
//! (weights, optimiser moments, EMA, replay buffer, log) into a [`Snapshot`], which a
//! [`SnapshotDir`] writes atomically with checksums.

mod adam;
mod cd;
mod ema;
mod error;
pub mod hybrid;
mod model;
pub mod snapshot;

pub use adam::{Adam, AdamConfig};
pub use cd::{CdConfig, CdTrainer, StepLog};
pub use ema::Ema;
pub use error::{Error, Result};
pub use model::{Conditioned, EnergyModel};
pub use snapshot::{Snapshot, SnapshotDir};
