//! Training snapshots: everything a run needs to continue (tensors in safetensors, the rest as
//! JSON), written atomically with SHA-256 checksums into a folder, and read back by taking the
//! newest snapshot that verifies, skipping (and naming) corrupt or truncated ones.
//!
//! A snapshot of step `s` is two files, `step-<s>.safetensors` and then its manifest
//! `step-<s>.json`; the manifest is written last, so a snapshot exists only once both are
//! complete. The manifest holds the tensors file's checksum and its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ebm_nn::checkpoint::write_atomic;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const FORMAT_VERSION: u64 = 1;

/// The state of a run at the end of a step: named tensors and JSON values.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The number of completed steps.
    pub step: usize,
    /// Weights, optimiser moments, replay buffers, data orders...
    pub tensors: HashMap<String, Tensor>,
    /// Counters, generator states, logs, configs.
    pub meta: Map<String, Value>,
}

impl Snapshot {
    /// An empty snapshot of `step` completed steps.
    pub fn new(step: usize) -> Self {
        Self {
            step,
            ..Self::default()
        }
    }

    /// The tensor called `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::Snapshot(format!("the snapshot has no tensor `{name}`")))
    }

    /// The JSON value called `name`, decoded as `T`, or an error naming it.
    pub fn value<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let v = self
            .meta
            .get(name)
            .ok_or_else(|| Error::Snapshot(format!("the snapshot has no value `{name}`")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| Error::Snapshot(format!("the snapshot's value `{name}`: {e}")))
    }

    /// Stores a copy of a model's parameters and buffers under `prefix` (a copy: candle
    /// updates variables in place, and a snapshot kept in memory must not follow them).
    pub fn put_model<M: ebm_nn::Trainable + ?Sized>(
        &mut self,
        prefix: &str,
        model: &M,
    ) -> Result<()> {
        for (name, var) in model.params().iter() {
            self.tensors
                .insert(format!("{prefix}.param.{name}"), var.as_tensor().copy()?);
        }
        for (name, t) in model.buffers() {
            self.tensors
                .insert(format!("{prefix}.buffer.{name}"), t.copy()?);
        }
        Ok(())
    }

    /// Loads what [`Snapshot::put_model`] stored under `prefix` into `model` (names and shapes
    /// checked).
    pub fn restore_model<M: ebm_nn::Trainable + ?Sized>(
        &self,
        prefix: &str,
        model: &mut M,
    ) -> Result<()> {
        let strip = |kind: &str| -> HashMap<String, Tensor> {
            let p = format!("{prefix}.{kind}.");
            self.tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(&p).map(|n| (n.to_string(), t.clone())))
                .collect()
        };
        let origin = Path::new("<snapshot>");
        model.params().load(&strip("param"), origin)?;
        model.set_buffers(&strip("buffer"))?;
        Ok(())
    }

    /// Stores a list of tensors as `prefix.0`, `prefix.1`, ... and its length.
    pub fn put_list(&mut self, prefix: &str, list: &[Tensor]) -> Result<()> {
        for (i, t) in list.iter().enumerate() {
            self.tensors.insert(format!("{prefix}.{i}"), t.clone());
        }
        self.set_value(&format!("{prefix}.len"), &list.len())
    }

    /// The list stored by [`Snapshot::put_list`].
    pub fn list(&self, prefix: &str) -> Result<Vec<Tensor>> {
        let n: usize = self.value(&format!("{prefix}.len"))?;
        (0..n)
            .map(|i| self.tensor(&format!("{prefix}.{i}")).cloned())
            .collect()
    }

    /// Stores an optimiser's step count and moments under `prefix`.
    pub fn put_adam(&mut self, prefix: &str, adam: &crate::Adam) -> Result<()> {
        let (m, v) = adam.moments();
        self.put_list(&format!("{prefix}.m"), m)?;
        self.put_list(&format!("{prefix}.v"), v)?;
        self.set_value(&format!("{prefix}.lr"), &adam.config().lr)?;
        self.set_value(&format!("{prefix}.steps"), &adam.steps())
    }

    /// Restores what [`Snapshot::put_adam`] stored: the moments, the step count and the
    /// learning rate (which [`crate::Adam::set_lr`] may have changed since the optimiser was
    /// made). A snapshot written before the learning rate was stored leaves it as it is.
    pub fn restore_adam(&self, prefix: &str, adam: &mut crate::Adam) -> Result<()> {
        let lr_key = format!("{prefix}.lr");
        let lr: Option<f64> = self
            .meta
            .contains_key(&lr_key)
            .then(|| self.value(&lr_key))
            .transpose()?;
        adam.set_state(
            self.value(&format!("{prefix}.steps"))?,
            self.list(&format!("{prefix}.m"))?,
            self.list(&format!("{prefix}.v"))?,
        )?;
        lr.map_or(Ok(()), |lr| adam.set_lr(lr))
    }

    /// Stores a replay buffer's contents under `prefix`.
    pub fn put_replay(&mut self, prefix: &str, buffer: &ebm_mcmc::ReplayBuffer) -> Result<()> {
        let (data, labels, next) = buffer.contents();
        let cpu = Device::Cpu;
        self.tensors.insert(
            format!("{prefix}.data"),
            Tensor::from_slice(data, data.len(), &cpu)?,
        );
        self.tensors.insert(
            format!("{prefix}.labels"),
            Tensor::from_slice(labels, labels.len(), &cpu)?,
        );
        self.set_value(&format!("{prefix}.next"), &next)
    }

    /// Refills `buffer` with what [`Snapshot::put_replay`] stored.
    pub fn restore_replay(&self, prefix: &str, buffer: &mut ebm_mcmc::ReplayBuffer) -> Result<()> {
        let data = self.tensor(&format!("{prefix}.data"))?.to_vec1::<f32>()?;
        let labels = self.tensor(&format!("{prefix}.labels"))?.to_vec1::<u32>()?;
        buffer.restore(data, labels, self.value(&format!("{prefix}.next"))?)?;
        Ok(())
    }

    /// Stores `value` under `name`.
    pub fn set_value<T: serde::Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let v = serde_json::to_value(value)
            .map_err(|e| Error::Snapshot(format!("cannot encode `{name}`: {e}")))?;
        self.meta.insert(name.to_string(), v);
        Ok(())
    }
}

/// A snapshot that failed to verify and was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its manifest.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// What [`SnapshotDir::latest`] found.
#[derive(Debug)]
pub struct Latest {
    /// The newest snapshot that verified, with its manifest's path.
    pub found: Option<(Snapshot, PathBuf)>,
    /// Newer snapshots that did not verify, newest first.
    pub skipped: Vec<Skipped>,
}

/// A folder of snapshots of one run, keeping the newest few.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    keep: usize,
}

impl SnapshotDir {
    /// Snapshots in `dir` (created on the first save), keeping the newest two.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keep: 2,
        }
    }

    /// Keeps the newest `keep` snapshots (at least 1) and deletes older ones after each save.
    pub fn keeping(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stem(step: usize) -> String {
        format!("step-{step:09}")
    }

    /// Writes `snapshot` atomically (tensors, then the manifest), then deletes snapshots beyond
    /// the newest `keep`. Returns the manifest's path.
    pub fn save(&self, snapshot: &Snapshot) -> Result<PathBuf> {
        let stem = Self::stem(snapshot.step);
        let tensors_path = self.dir.join(format!("{stem}.safetensors"));
        write_atomic(&tensors_path, |tmp| {
            Ok(candle_core::safetensors::save(&snapshot.tensors, tmp)?)
        })?;
        let bytes = std::fs::read(&tensors_path).map_err(|e| io_error(&tensors_path, e))?;
        let mut manifest = Map::new();
        manifest.insert("format_version".into(), FORMAT_VERSION.into());
        manifest.insert("step".into(), snapshot.step.into());
        manifest.insert("tensors".into(), format!("{stem}.safetensors").into());
        manifest.insert("tensors_bytes".into(), bytes.len().into());
        manifest.insert("tensors_sha256".into(), hex_sha256(&bytes).into());
        manifest.insert("meta".into(), Value::Object(snapshot.meta.clone()));
        let own = hex_sha256(Value::Object(manifest.clone()).to_string().as_bytes());
        manifest.insert("manifest_sha256".into(), own.into());
        let text = serde_json::to_string_pretty(&Value::Object(manifest))
            .map_err(|e| Error::Snapshot(format!("cannot encode the manifest: {e}")))?;
        let manifest_path = self.dir.join(format!("{stem}.json"));
        write_atomic(&manifest_path, |tmp| {
            std::fs::write(tmp, &text).map_err(|source| ebm_nn::Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })?;
        self.prune()?;
        Ok(manifest_path)
    }

    /// The steps of the manifests in the folder, newest first (none when it does not exist).
    fn steps(&self) -> Result<Vec<usize>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir, e)),
        };
        let mut steps = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| io_error(&self.dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(step) = name
                .strip_prefix("step-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<usize>().ok())
            {
                steps.push(step);
            }
        }
        steps.sort_unstable_by(|a, b| b.cmp(a));
        Ok(steps)
    }

    fn prune(&self) -> Result<()> {
        for step in self.steps()?.into_iter().skip(self.keep) {
            for ext in ["json", "safetensors"] {
                let p = self.dir.join(format!("{}.{ext}", Self::stem(step)));
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&p, e)),
                }
            }
        }
        Ok(())
    }

    /// Deletes every snapshot in the folder (a fresh run over an old results folder).
    pub fn clear(&self) -> Result<()> {
        for step in self.steps()? {
            for ext in ["json", "safetensors"] {
                let p = self.dir.join(format!("{}.{ext}", Self::stem(step)));
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| io_error(&p, e))?;
                }
            }
        }
        Ok(())
    }

    /// The newest snapshot whose manifest and tensors verify, loaded onto `device`; the newer
    /// ones that fail (truncated, corrupt, missing tensors file) are listed in `skipped`.
    pub fn latest(&self, device: &Device) -> Result<Latest> {
        let mut skipped = Vec::new();
        for step in self.steps()? {
            let path = self.dir.join(format!("{}.json", Self::stem(step)));
            match self.read(&path, device) {
                Ok(snapshot) => {
                    return Ok(Latest {
                        found: Some((snapshot, path)),
                        skipped,
                    })
                }
                Err(problem) => skipped.push(Skipped { path, problem }),
            }
        }
        Ok(Latest {
            found: None,
            skipped,
        })
    }

    /// Reads and verifies one snapshot; the error says what is wrong.
    fn read(&self, manifest_path: &Path, device: &Device) -> std::result::Result<Snapshot, String> {
        let text =
            std::fs::read_to_string(manifest_path).map_err(|e| format!("unreadable: {e}"))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("the manifest is not valid JSON ({e})"))?;
        let Value::Object(mut manifest) = value else {
            return Err("the manifest is not a JSON object".into());
        };
        let own = manifest
            .remove("manifest_sha256")
            .and_then(|v| v.as_str().map(String::from))
            .ok_or("the manifest has no checksum")?;
        if hex_sha256(Value::Object(manifest.clone()).to_string().as_bytes()) != own {
            return Err("the manifest's checksum does not match its contents".into());
        }
        let version = manifest.get("format_version").and_then(Value::as_u64);
        if version != Some(FORMAT_VERSION) {
            return Err(format!(
                "format version {version:?} is not supported (this build reads {FORMAT_VERSION})"
            ));
        }
        let field = |k: &str| manifest.get(k).ok_or(format!("the manifest has no `{k}`"));
        let step = field("step")?.as_u64().ok_or("`step` is not a number")? as usize;
        let tensors_name = field("tensors")?
            .as_str()
            .ok_or("`tensors` is not a name")?;
        if tensors_name.contains('/') || tensors_name.contains('\\') {
            return Err(format!("`tensors` names a file elsewhere: {tensors_name}"));
        }
        let tensors_path = self.dir.join(tensors_name);
        let bytes = std::fs::read(&tensors_path)
            .map_err(|e| format!("its tensors file {}: {e}", tensors_path.display()))?;
        let expected_len = field("tensors_bytes")?
            .as_u64()
            .ok_or("`tensors_bytes` is not a number")?;
        if bytes.len() as u64 != expected_len {
            return Err(format!(
                "its tensors file {} has {} bytes, the manifest says {expected_len} (truncated?)",
                tensors_path.display(),
                bytes.len()
            ));
        }
        if Some(hex_sha256(&bytes).as_str()) != field("tensors_sha256")?.as_str() {
            return Err(format!(
                "its tensors file {} does not match its SHA-256 checksum (corrupt)",
                tensors_path.display()
            ));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| format!("its tensors file {}: {e}", tensors_path.display()))?;
        let meta = match manifest.remove("meta") {
            Some(Value::Object(m)) => m,
            _ => return Err("the manifest has no `meta` object".into()),
        };
        Ok(Snapshot {
            step,
            tensors,
            meta,
        })
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Nn(ebm_nn::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
