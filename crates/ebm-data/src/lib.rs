//! Image data sets for energy models, read from local files:
//!
//! - [`idx`]: the IDX format of MNIST and Fashion-MNIST, gzip-compressed or plain;
//! - [`cifar`]: CIFAR-10's binary batches;
//! - [`catalog`]: what each data set is, its files, official addresses and SHA-256 sums;
//! - [`resolve`]: where a data set lives on this machine (an explicit path, then
//!   `EBM_DATA_DIR`, then `/usr/share/datasets`, then the download cache), with an error that
//!   says how to get it when it is nowhere;
//! - [`ImageSet`]: images and labels in memory, turned into `[B, C, H, W]` tensors in [0, 1],
//!   in seeded shuffled batches;
//! - [`scenes`]: procedurally generated scenes of coloured shapes with labelled attributes, drawn
//!   from a seed (a stand-in for the MuJoCo scenes of Du, Li & Mordatch 2020);
//! - [`trajectories`]: a damped double pendulum integrated by RK4 from seeded initial states
//!   (a stand-in for the robot-hand trajectories of Du & Mordatch 2019).
//!
//! This crate reads files and generates scenes; downloading is `cargo xtask download`'s job.

pub mod catalog;
pub mod cifar;
mod error;
pub mod idx;
mod images;
pub mod resolve;
pub mod scenes;
pub mod trajectories;

pub use catalog::{DataSet, Split};
pub use error::{Error, Result};
pub use images::{ImageSet, ShuffledBatches};

/// Loads a split of a data set from wherever [`resolve::locate`] finds it.
pub fn load(set: DataSet, split: Split, explicit: Option<&std::path::Path>) -> Result<ImageSet> {
    let dir = resolve::locate(set, explicit)?;
    set.load_from(&dir, split)
}
