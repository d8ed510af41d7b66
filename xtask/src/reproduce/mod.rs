//! `cargo xtask reproduce [experiment] [--quick|--full]`: each paper's experiments, turned into
//! a report under `results/<experiment>/` (or `--out`).

pub mod igebm;

use std::path::PathBuf;

/// How big a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Small models and short training: minutes on a 2-core CPU.
    Quick,
    /// The paper's recipe, for a GPU machine.
    Full,
}

/// Settings shared by every experiment.
#[derive(Debug, Clone)]
pub struct Options {
    /// Quick or full.
    pub mode: Mode,
    /// The results folder of this experiment.
    pub out: PathBuf,
    /// The seed of every random choice.
    pub seed: u64,
    /// Where the models run.
    pub device: candle_core::Device,
    /// An explicit data folder, searched before the usual places.
    pub data_dir: Option<PathBuf>,
    /// Overrides the recipe's training iterations per model.
    pub iterations: Option<usize>,
    /// Hide the progress bar (tests).
    pub quiet: bool,
}

/// The experiments that exist, in the order a bare `cargo xtask reproduce` runs them.
pub const EXPERIMENTS: &[&str] = &["igebm"];

/// Runs the experiment called `name`.
pub fn run(name: &str, options: &Options) -> anyhow::Result<()> {
    match name {
        "igebm" => igebm::run(options),
        other => anyhow::bail!(
            "unknown experiment `{other}`; known: {}",
            EXPERIMENTS.join(", ")
        ),
    }
}
