//! Checkpoints: the weights (and spectral-norm vectors) in a safetensors file, and the model's
//! kind and config as JSON beside it (`model.safetensors` + `model.json`), each written
//! atomically ([`write_atomic`]): a crash leaves the old file or the new one, never half of one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{
    Classifier, ClassifierConfig, Error, Igebm, IgebmConfig, Mlp, MlpConfig, Result, Trainable,
};

/// A model that can be saved and rebuilt from its config.
pub trait Checkpoint: Trainable + Sized {
    /// The config type, saved as JSON.
    type Config: Serialize + DeserializeOwned;
    /// The model kind recorded in the JSON, checked on load.
    const KIND: &'static str;
    /// The model's config.
    fn checkpoint_config(&self) -> &Self::Config;
    /// A model built from a config (its weights are then overwritten by the checkpoint's).
    fn build(config: &Self::Config, device: &Device) -> Result<Self>;
}

impl Checkpoint for Igebm {
    type Config = IgebmConfig;
    const KIND: &'static str = "igebm";
    fn checkpoint_config(&self) -> &IgebmConfig {
        self.config()
    }
    fn build(config: &IgebmConfig, device: &Device) -> Result<Self> {
        Igebm::new(config, device, &mut ebm_core::seeded_rng(0))
    }
}

impl Checkpoint for Mlp {
    type Config = MlpConfig;
    const KIND: &'static str = "mlp";
    fn checkpoint_config(&self) -> &MlpConfig {
        self.config()
    }
    fn build(config: &MlpConfig, device: &Device) -> Result<Self> {
        Mlp::new(config, device, &mut ebm_core::seeded_rng(0))
    }
}

impl Checkpoint for Classifier {
    type Config = ClassifierConfig;
    const KIND: &'static str = "classifier";
    fn checkpoint_config(&self) -> &ClassifierConfig {
        self.config()
    }
    fn build(config: &ClassifierConfig, device: &Device) -> Result<Self> {
        Classifier::new(config, device, &mut ebm_core::seeded_rng(0))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta<C> {
    format_version: u32,
    model: String,
    config: C,
}

const FORMAT_VERSION: u32 = 1;

/// The JSON file that goes with a safetensors file: same stem, `.json`.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Writes a file atomically: `write` fills a temporary file beside `path`, which is flushed to
/// disk and renamed over `path`, and the folder is synced. Readers see the old file or the
/// complete new one; a crash at any moment leaves at most a stray `.tmp` file.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().ok_or_else(|| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable once the folder's entry is on disk.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Writes `weights` (safetensors) and the JSON config beside it, each atomically.
pub fn save<M: Checkpoint>(model: &M, weights: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = model
        .params()
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
        .collect();
    tensors.extend(model.buffers());
    write_atomic(weights, |tmp| {
        Ok(candle_core::safetensors::save(&tensors, tmp)?)
    })?;
    let meta = Meta {
        format_version: FORMAT_VERSION,
        model: M::KIND.to_string(),
        config: model.checkpoint_config(),
    };
    let json = serde_json::to_string_pretty(&meta).expect("configs serialise");
    write_atomic(&config_path(weights), |tmp| {
        std::fs::write(tmp, &json).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
}

/// Reads a model's config from the JSON beside `weights`, rejecting unknown keys and other
/// model kinds.
pub fn load_config<M: Checkpoint>(weights: &Path) -> Result<M::Config> {
    let path = config_path(weights);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let kind: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        problem: format!("not valid JSON: {e}"),
    })?;
    if let Some(k) = kind.get("model").and_then(|k| k.as_str()) {
        if k != M::KIND {
            return Err(Error::Checkpoint {
                path,
                problem: format!("holds a {k} model, not {}", M::KIND),
            });
        }
    }
    let meta: Meta<M::Config> = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        problem: format!("bad config: {e}"),
    })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(Error::Checkpoint {
            path,
            problem: format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                meta.format_version
            ),
        });
    }
    Ok(meta.config)
}

/// Rebuilds a model from `weights` and its JSON config.
pub fn load<M: Checkpoint>(weights: &Path, device: &Device) -> Result<M> {
    let config = load_config::<M>(weights)?;
    let mut model = M::build(&config, device)?;
    load_weights_into(&mut model, weights)?;
    Ok(model)
}

/// Overwrites a model's parameters and buffers with those in `weights`. Fails, naming the
/// tensor, when one is missing or has another shape, or the file holds tensors the model lacks.
pub fn load_weights_into<M: Trainable>(model: &mut M, weights: &Path) -> Result<()> {
    if !weights.exists() {
        return Err(Error::Io {
            path: weights.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let device = model
        .params()
        .iter()
        .next()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let tensors =
        candle_core::safetensors::load(weights, &device).map_err(|e| Error::Checkpoint {
            path: weights.to_path_buf(),
            problem: format!("not a readable safetensors file: {e}"),
        })?;
    let known: Vec<String> = model
        .params()
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(model.buffers().into_iter().map(|(n, _)| n))
        .collect();
    if let Some(extra) = tensors.keys().find(|k| !known.contains(k)) {
        return Err(Error::Checkpoint {
            path: weights.to_path_buf(),
            problem: format!("tensor {extra} does not belong to this model's architecture"),
        });
    }
    model.params().load(&tensors, weights)?;
    model.set_buffers(&tensors).map_err(|e| Error::Checkpoint {
        path: weights.to_path_buf(),
        problem: e.to_string(),
    })?;
    Ok(())
}
