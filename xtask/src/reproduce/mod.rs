//! `cargo xtask reproduce [experiment] [--quick|--full]`: each paper's experiments, turned into
//! a report under `results/<experiment>/` (or `--out`).

pub mod compose;
pub mod igebm;
pub mod igebm_apps;
pub mod igebm_eval;
pub mod latent;
pub mod resume;
pub mod vaebm;

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
    /// Overrides of recipe fields, `path.to.field=value` (value as JSON, else a string).
    pub overrides: Vec<String>,
    /// Where domain classifiers are cached (`results/classifiers`).
    pub classifier_dir: PathBuf,
    /// Hide the progress bar (tests).
    pub quiet: bool,
    /// Continue each model from the last complete training checkpoint in `out`.
    pub resume: bool,
    /// Write a training checkpoint every this many steps (and at the end, and on Ctrl-C).
    pub checkpoint_every: usize,
}

impl Default for Options {
    /// A quick CPU run into `results/`, seed 0, checkpoints every 100 steps.
    fn default() -> Self {
        Self {
            mode: Mode::Quick,
            out: PathBuf::from("results"),
            seed: 0,
            device: candle_core::Device::Cpu,
            data_dir: None,
            iterations: None,
            overrides: Vec::new(),
            classifier_dir: PathBuf::from("results/classifiers"),
            quiet: false,
            resume: false,
            checkpoint_every: 100,
        }
    }
}

/// The experiments that exist, in the order a bare `cargo xtask reproduce` runs them.
pub const EXPERIMENTS: &[&str] = &["igebm", "igebm-apps", "compose", "latent", "vaebm"];

/// Applies `path.to.field=value` overrides to a recipe through its JSON form; an unknown
/// field or a value of the wrong type is an error that names it.
pub fn apply_overrides<R>(recipe: &R, overrides: &[String]) -> anyhow::Result<R>
where
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut value = serde_json::to_value(recipe)?;
    for o in overrides {
        let (path, raw) = o.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("override `{o}` is not of the form path.to.field=value")
        })?;
        let new: serde_json::Value = serde_json::from_str(raw)
            .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
        let mut slot = &mut value;
        for key in path.split('.') {
            slot = slot.get_mut(key).ok_or_else(|| {
                anyhow::anyhow!("override `{o}`: the recipe has no field `{path}`")
            })?;
        }
        *slot = new;
    }
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("override rejected: {e}"))
}

/// Runs the experiment called `name`.
pub fn run(name: &str, options: &Options) -> anyhow::Result<()> {
    match name {
        "igebm" => igebm::run(options),
        "igebm-apps" => igebm_apps::run(options),
        "compose" => compose::run(options),
        "latent" => latent::run(options),
        "vaebm" => vaebm::run(options),
        other => anyhow::bail!(
            "unknown experiment `{other}`; known: {}",
            EXPERIMENTS.join(", ")
        ),
    }
}

/// Writes `t` as `.npy`, naming the file in the error.
pub(crate) fn save_npy(t: &candle_core::Tensor, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    t.write_npy(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// The out-of-distribution digits: `mnist-10k`'s test split, else MNIST's test split.
pub(crate) fn load_digits(options: &Options) -> anyhow::Result<ebm_data::ImageSet> {
    use anyhow::Context;
    use ebm_data::{DataSet, Split};
    let explicit = |set: DataSet| options.data_dir.as_ref().map(|d| d.join(set.name()));
    match ebm_data::load(
        DataSet::Mnist10k,
        Split::Test,
        explicit(DataSet::Mnist10k).as_deref(),
    ) {
        Ok(set) => Ok(set),
        Err(first) => ebm_data::load(
            DataSet::Mnist,
            Split::Test,
            explicit(DataSet::Mnist).as_deref(),
        )
        .with_context(|| {
            format!("the OOD table needs MNIST digits (mnist-10k or mnist); mnist-10k: {first}")
        }),
    }
}
