//! The project's tasks, as a library so that tests can run them at tiny sizes:
//!
//! - [`download`]: fetch a data set from its official address and check its SHA-256;
//! - [`classifier`]: the domain classifier whose features give the domain FID;
//! - [`scenes`]: generated scenes written as PNG files with their labels;
//! - [`reproduce`]: run a paper's experiments and write a report (tables, sample grids,
//!   curves, checkpoints, `.npy` samples) under `results/<experiment>/`.
//!
//! The command-line front end is `src/main.rs` (`cargo xtask --help`).

pub mod bench;
pub mod classifier;
pub mod download;
pub mod interrupt;
pub mod progress;
pub mod report;
pub mod reproduce;
pub mod scenes;

/// The compute device named on the command line.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => Ok(candle_core::Device::new_cuda(0)?),
        "metal" => Ok(candle_core::Device::new_metal(0)?),
        other => anyhow::bail!("unknown device `{other}`: use cpu, cuda or metal"),
    }
}
