//! Checkpoints of a [`LatentModel`]: every weight in one safetensors file (`prior.*` and
//! `generator.*`), and the kind and [`LatentConfig`] as JSON beside it (`model.safetensors` +
//! `model.json`), in the style of `ebm_nn::checkpoint`: unknown JSON keys, other model kinds,
//! missing, extra or misshapen tensors and a latent size that differs from the config are all
//! errors that name the file and the problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ebm_nn::{ParamStore, Trainable};
use serde::{Deserialize, Serialize};

use crate::{Error, LatentConfig, LatentModel, Result};

/// The model kind recorded in the JSON.
pub const KIND: &str = "latent-ebm";

const FORMAT_VERSION: u32 = 1;
const PRIOR: &str = "prior.";
const GENERATOR: &str = "generator.";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format_version: u32,
    model: String,
    config: LatentConfig,
}

/// The JSON file that goes with a safetensors file: same stem, `.json`.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

fn problem(path: &Path, problem: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the weights to `weights` (safetensors) and the config beside it.
pub fn save(model: &LatentModel, weights: &Path) -> Result<()> {
    if let Some(dir) = weights.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    if let Some(p) = model.prior() {
        if p.params().is_empty() {
            return Err(problem(
                weights,
                "the model is a frozen copy without parameters; save the trained model",
            ));
        }
        for (n, v) in p.params().iter() {
            tensors.insert(format!("{PRIOR}{n}"), v.as_tensor().clone());
        }
        for (n, t) in p.buffers() {
            tensors.insert(format!("{PRIOR}{n}"), t);
        }
    }
    if model.generator().params().is_empty() {
        return Err(problem(
            weights,
            "the model is a frozen copy without parameters; save the trained model",
        ));
    }
    for (n, v) in model.generator().params().iter() {
        tensors.insert(format!("{GENERATOR}{n}"), v.as_tensor().clone());
    }
    candle_core::safetensors::save(&tensors, weights)?;
    let meta = Meta {
        format_version: FORMAT_VERSION,
        model: KIND.to_string(),
        config: model.config().clone(),
    };
    let json = serde_json::to_string_pretty(&meta)
        .map_err(|e| problem(weights, format!("config does not serialise: {e}")))?;
    let cfg = config_path(weights);
    std::fs::write(&cfg, json).map_err(io(&cfg))?;
    Ok(())
}

/// Reads the config from the JSON beside `weights`, rejecting unknown keys, other model kinds,
/// other format versions and configs that cannot be built.
pub fn load_config(weights: &Path) -> Result<LatentConfig> {
    let path = config_path(weights);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| problem(&path, format!("not valid JSON: {e}")))?;
    match value.get("model").and_then(|k| k.as_str()) {
        Some(k) if k != KIND => {
            return Err(problem(&path, format!("holds a {k} model, not {KIND}")));
        }
        _ => {}
    }
    let meta: Meta =
        serde_json::from_value(value).map_err(|e| problem(&path, format!("bad config: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(problem(
            &path,
            format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                meta.format_version
            ),
        ));
    }
    meta.config
        .validate()
        .map_err(|e| problem(&path, e.to_string()))?;
    Ok(meta.config)
}

/// Rebuilds a model from `weights` and its JSON config.
pub fn load(weights: &Path, device: &Device) -> Result<LatentModel> {
    let config = load_config(weights)?;
    let mut model = LatentModel::new(&config, device, &mut ebm_core::seeded_rng(0))?;
    load_tensors(&mut model, weights, device)?;
    Ok(model)
}

/// Overwrites `model`'s weights with those in `weights`. The checkpoint's config (when its JSON
/// is there) must have the model's latent size and prior kind; every tensor must be present
/// with the model's shape, and no other tensor may be in the file.
pub fn load_weights_into(model: &mut LatentModel, weights: &Path) -> Result<()> {
    let cfg_path = config_path(weights);
    if cfg_path.is_file() {
        let saved = load_config(weights)?;
        if saved.latent_dim() != model.latent_dim() {
            return Err(problem(
                &cfg_path,
                format!(
                    "has latent size {}, the model {}",
                    saved.latent_dim(),
                    model.latent_dim()
                ),
            ));
        }
        if saved.prior.is_some() != model.prior().is_some() {
            let kind = |ebm: bool| {
                if ebm {
                    "an EBM prior"
                } else {
                    "the Gaussian prior"
                }
            };
            return Err(problem(
                &cfg_path,
                format!(
                    "holds a model with {}, the model has {}",
                    kind(saved.prior.is_some()),
                    kind(model.prior().is_some())
                ),
            ));
        }
    }
    let device = model
        .generator()
        .params()
        .iter()
        .next()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    load_tensors(model, weights, &device)
}

fn load_tensors(model: &mut LatentModel, weights: &Path, device: &Device) -> Result<()> {
    if !weights.is_file() {
        return Err(Error::Io {
            path: weights.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let tensors = candle_core::safetensors::load(weights, device)
        .map_err(|e| problem(weights, format!("not a readable safetensors file: {e}")))?;
    // The latent size, stated plainly before the tensor-by-tensor checks.
    let latent = model.latent_dim();
    if let Some(w) = tensors.get(&format!("{GENERATOR}layers.0.weight")) {
        if w.dims().first() != Some(&latent) {
            return Err(problem(
                weights,
                format!(
                    "its generator takes a latent of size {}, the config says {latent}",
                    w.dims().first().copied().unwrap_or(0)
                ),
            ));
        }
    }
    if let Some(w) = tensors.get(&format!("{PRIOR}layers.0.weight")) {
        if w.dims().get(1) != Some(&latent) {
            return Err(problem(
                weights,
                format!(
                    "its prior takes a latent of size {}, the config says {latent}",
                    w.dims().get(1).copied().unwrap_or(0)
                ),
            ));
        }
    }
    let split = |prefix: &str| -> HashMap<String, Tensor> {
        tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    };
    let (prior_tensors, generator_tensors) = (split(PRIOR), split(GENERATOR));
    let (prior, generator) = model.parts_mut();
    let known = |store: &ParamStore, prefix: &str, extra: Vec<String>| -> Vec<String> {
        store
            .iter()
            .map(|(n, _)| format!("{prefix}{n}"))
            .chain(extra.into_iter().map(|n| format!("{prefix}{n}")))
            .collect()
    };
    let mut names = known(generator.params(), GENERATOR, Vec::new());
    if let Some(p) = &prior {
        names.extend(known(
            p.params(),
            PRIOR,
            p.buffers().into_iter().map(|(n, _)| n).collect(),
        ));
    }
    if let Some(extra) = tensors.keys().find(|k| !names.contains(k)) {
        return Err(problem(
            weights,
            format!("tensor {extra} does not belong to this model's architecture"),
        ));
    }
    let prefixed = |e: ebm_nn::Error, prefix: &str| match e {
        ebm_nn::Error::Checkpoint { problem: p, .. } => problem(
            weights,
            p.replacen("tensor ", &format!("tensor {prefix}"), 1),
        ),
        other => other.into(),
    };
    generator
        .params()
        .load(&generator_tensors, weights)
        .map_err(|e| prefixed(e, GENERATOR))?;
    if let Some(p) = prior {
        p.params()
            .load(&prior_tensors, weights)
            .map_err(|e| prefixed(e, PRIOR))?;
        p.set_buffers(&prior_tensors)
            .map_err(|e| problem(weights, e.to_string()))?;
    }
    Ok(())
}
