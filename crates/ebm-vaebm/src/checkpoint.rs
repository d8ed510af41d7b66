//! Checkpoints in the format of `ebm_nn::checkpoint`: weights in a safetensors file and the
//! model's kind and config as JSON beside it (`vae.safetensors` + `vae.json`). A VAEBM is a
//! folder with the VAE (`vae.*`) and the energy (`ebm.*`, an `ebm_nn` IGEBM checkpoint).
//!
//! Loading a VAE for a given config checks that the saved config is that config, and names the
//! fields that differ; loading a VAEBM checks that the energy was built for the VAE's image
//! shape. Missing, extra or misshapen tensors and unknown JSON keys are errors that name the file.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ebm_nn::checkpoint as nn_checkpoint;
use ebm_nn::Igebm;

use crate::{Error, Result, Vae, VaeConfig, Vaebm};

/// The VAE's weights inside a VAEBM folder.
pub const VAE_FILE: &str = "vae.safetensors";
/// The energy's weights inside a VAEBM folder.
pub const EBM_FILE: &str = "ebm.safetensors";

/// The JSON file that goes with a safetensors file: same stem, `.json`.
pub fn config_path(weights: &Path) -> PathBuf {
    nn_checkpoint::config_path(weights)
}

/// Writes the VAE's weights to `weights` and its config beside it. Fails for a frozen copy
/// (it has no parameters).
pub fn save_vae(vae: &Vae, weights: &Path) -> Result<()> {
    if vae.is_frozen() {
        return Err(Error::Checkpoint {
            path: weights.to_path_buf(),
            problem: "the VAE is a frozen copy without parameters; save the trained VAE".into(),
        });
    }
    nn_checkpoint::save(vae, weights)?;
    Ok(())
}

/// The top-level fields in which two configs differ, each as `field: saved A, expected B`.
fn differing_fields(saved: &VaeConfig, expected: &VaeConfig) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(saved), serde_json::to_value(expected)) else {
        return vec!["(configs could not be compared)".into()];
    };
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["(configs could not be compared)".into()];
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: saved {v}, expected {}",
                b.get(k).map(|x| x.to_string()).unwrap_or_default()
            )
        })
        .collect()
}

/// Reads the VAE config saved beside `weights`.
pub fn load_vae_config(weights: &Path) -> Result<VaeConfig> {
    let config = nn_checkpoint::load_config::<Vae>(weights)?;
    config.validate().map_err(|e| Error::Checkpoint {
        path: config_path(weights),
        problem: e.to_string(),
    })?;
    Ok(config)
}

/// Loads a VAE from `weights` and its JSON config. With `expected`, fails unless the saved
/// config equals it, naming every field that differs.
pub fn load_vae(weights: &Path, expected: Option<&VaeConfig>, device: &Device) -> Result<Vae> {
    let saved = load_vae_config(weights)?;
    if let Some(expected) = expected {
        if saved != *expected {
            return Err(Error::Checkpoint {
                path: weights.to_path_buf(),
                problem: format!(
                    "holds a VAE for another config than the one asked for ({})",
                    differing_fields(&saved, expected).join("; ")
                ),
            });
        }
    }
    Ok(nn_checkpoint::load::<Vae>(weights, device)?)
}

/// Writes a VAEBM into the folder `dir`: [`VAE_FILE`] and [`EBM_FILE`], each with its JSON.
pub fn save_vaebm(model: &Vaebm, dir: &Path) -> Result<()> {
    save_vae(model.vae_weights(), &dir.join(VAE_FILE))?;
    nn_checkpoint::save(model.ebm(), &dir.join(EBM_FILE))?;
    Ok(())
}

/// Loads a VAEBM from the folder `dir` (see [`save_vaebm`]), the VAE checked against
/// `expected_vae` when given. Fails when the energy was trained on another image size or
/// channel count than the VAE makes.
pub fn load_vaebm(dir: &Path, expected_vae: Option<&VaeConfig>, device: &Device) -> Result<Vaebm> {
    let vae = load_vae(&dir.join(VAE_FILE), expected_vae, device)?;
    let ebm_path = dir.join(EBM_FILE);
    let ebm: Igebm = nn_checkpoint::load(&ebm_path, device)?;
    Vaebm::new(vae, ebm).map_err(|e| Error::Checkpoint {
        path: ebm_path,
        problem: e.to_string(),
    })
}
