//! Training checkpoints for the experiments: a snapshot of each model's run every N steps, at
//! the end, and on Ctrl-C, and `--resume` to continue from the newest one that verifies.
//!
//! Each training loop owns a [`Checkpoints`] for its model; the loop's own state (the data
//! order and the random generator) goes into the snapshot beside the trainer's, so a resumed
//! run draws exactly the numbers the uninterrupted run would have.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, Tensor};
use ebm_core::{Rng, RngState};
use ebm_data::ShuffledBatches;
use ebm_train::{Snapshot, SnapshotDir};

use super::Options;

/// The checkpoints of one model's training run.
pub struct Checkpoints {
    store: SnapshotDir,
    every: usize,
    label: String,
    recipe: serde_json::Value,
    /// A cache's checkpoints: always resumed, and cleared when the recipe changed.
    automatic: bool,
}

impl Checkpoints {
    /// Checkpoints of `label` (e.g. `igebm unconditional`) in `dir`, of a run of `recipe` (saved
    /// with each snapshot; resuming under another recipe is refused). Without `--resume` the
    /// folder's old snapshots are deleted: a fresh run must never continue a stale one.
    pub fn new(
        options: &Options,
        dir: PathBuf,
        label: impl Into<String>,
        recipe: &impl serde::Serialize,
    ) -> anyhow::Result<Self> {
        if options.checkpoint_every == 0 {
            anyhow::bail!("--checkpoint-every must be at least 1");
        }
        let store = SnapshotDir::new(dir);
        if !options.resume {
            store.clear().with_context(|| {
                format!("clearing old checkpoints in {}", store.dir().display())
            })?;
        }
        Ok(Self {
            store,
            every: options.checkpoint_every,
            label: label.into(),
            recipe: serde_json::to_value(recipe)?,
            automatic: false,
        })
    }

    /// Checkpoints of a cached computation (the domain classifiers): [`Checkpoints::restore`]
    /// continues from them whenever they match `recipe`, with or without `--resume`, and
    /// starts over when they do not.
    pub fn automatic(
        dir: PathBuf,
        label: impl Into<String>,
        recipe: &impl serde::Serialize,
        every: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store: SnapshotDir::new(dir),
            every: every.max(1),
            label: label.into(),
            recipe: serde_json::to_value(recipe)?,
            automatic: true,
        })
    }

    /// With `--resume`, the newest snapshot that verifies (saying which, and naming the corrupt
    /// ones passed over); `None` for a fresh run or when there is none.
    pub fn resume(&self, options: &Options, device: &Device) -> anyhow::Result<Option<Snapshot>> {
        if !options.resume {
            return Ok(None);
        }
        self.restore(device)
    }

    /// The newest snapshot that verifies, whatever the options say (see [`Checkpoints::resume`]).
    pub fn restore(&self, device: &Device) -> anyhow::Result<Option<Snapshot>> {
        let latest = self.store.latest(device)?;
        for skipped in &latest.skipped {
            println!(
                "{}: skipping checkpoint {}: {}",
                self.label,
                skipped.path.display(),
                skipped.problem
            );
        }
        Ok(match latest.found {
            Some((snapshot, path)) => {
                let saved: serde_json::Value = snapshot.value("recipe")?;
                if saved != self.recipe && self.automatic {
                    println!(
                        "{}: the checkpoints in {} are of another recipe; starting from step 0",
                        self.label,
                        self.store.dir().display()
                    );
                    self.store.clear()?;
                    return Ok(None);
                }
                if saved != self.recipe {
                    anyhow::bail!(
                        "{}: the checkpoint {} was written by a run with another recipe (seed, --iterations or --set differ); run again without --resume to start over",
                        self.label,
                        path.display()
                    );
                }
                println!(
                    "{}: resuming from step {} ({})",
                    self.label,
                    snapshot.step,
                    path.display()
                );
                Some(snapshot)
            }
            None => {
                println!(
                    "{}: no complete checkpoint in {}; starting from step 0",
                    self.label,
                    self.store.dir().display()
                );
                None
            }
        })
    }

    /// After step `step` of `total`: writes a snapshot filled by `fill` when one is due (every
    /// N steps, the last step, or an interrupt), and stops the run with an error that says how
    /// to continue when Ctrl-C was pressed.
    pub fn after_step(
        &self,
        step: usize,
        total: usize,
        fill: impl FnOnce(&mut Snapshot) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let interrupted = crate::interrupt::requested();
        if !step.is_multiple_of(self.every) && step != total && !interrupted {
            return Ok(());
        }
        let mut snapshot = Snapshot::new(step);
        snapshot.set_value("recipe", &self.recipe)?;
        fill(&mut snapshot)?;
        let path = self
            .store
            .save(&snapshot)
            .with_context(|| format!("{}: writing the checkpoint of step {step}", self.label))?;
        if interrupted {
            return Err(crate::interrupt::stopped(&self.label, step, &path));
        }
        Ok(())
    }
}

/// Saves a training loop's generator and data order.
pub fn put_loop(
    snapshot: &mut Snapshot,
    rng: &Rng,
    batches: &ShuffledBatches,
) -> anyhow::Result<()> {
    snapshot.set_value("loop.rng", &RngState::of(rng).to_string())?;
    let (order, position, epoch) = batches.state();
    let order: Vec<u32> = order.iter().map(|&i| i as u32).collect();
    let n = order.len();
    snapshot.tensors.insert(
        "loop.batch_order".into(),
        Tensor::from_vec(order, n, &Device::Cpu)?,
    );
    snapshot.set_value("loop.batch_position", &position)?;
    snapshot.set_value("loop.batch_epoch", &epoch)?;
    Ok(())
}

/// Restores what [`put_loop`] saved.
pub fn restore_loop(
    snapshot: &Snapshot,
    rng: &mut Rng,
    batches: &mut ShuffledBatches,
) -> anyhow::Result<()> {
    let state: String = snapshot.value("loop.rng")?;
    *rng = state.parse::<RngState>()?.restore();
    let order = snapshot
        .tensor("loop.batch_order")?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|i| i as usize)
        .collect();
    batches.restore(
        order,
        snapshot.value("loop.batch_position")?,
        snapshot.value("loop.batch_epoch")?,
    )?;
    Ok(())
}
