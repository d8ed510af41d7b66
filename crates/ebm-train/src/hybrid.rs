//! [`HybridTrainer`]: contrastive divergence on a class-conditional energy plus a
//! classification term, optionally restricted to a subset of the classes (one task of a
//! class-incremental sequence):
//!
//! ```text
//! loss = mean E(x+, y+) - mean E(x-, y-) + l2 (mean E(x+, y+)^2 + mean E(x-, y-)^2)
//!      + w * mean_i [ E(x_i, y_i) + log sum_{c in S} exp(-E(x_i, c)) ]
//! ```
//!
//! `S` is the set of classes of the step: the negatives' labels are drawn from it too, so the
//! energies of classes outside `S` are neither pushed up by samples nor contrasted with data.
//! With `w = 0` and `S` every class this is the IGEBM loss of [`crate::CdTrainer`]; `w > 0`
//! is a hybrid in the manner of JEM (Grathwohl et al. 2020), not the IGEBM paper's recipe.
//!
//! [`hybrid_loss_grads`] computes the loss and its parameter gradients in one pass over data,
//! samples and the classification inputs tiled over `S` (the fused CPU pass of an IGEBM where
//! it applies, autograd otherwise): the cross-entropy's derivative with respect to each energy,
//! `1[c = y] - p(c | x)`, is computed first from the energies of a frozen copy.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use ebm_core::validate;
use ebm_mcmc::{Langevin, ReplayBuffer};
use serde::{Deserialize, Serialize};

use crate::{Adam, CdConfig, Conditioned, Ema, EnergyModel, Error, Result, Snapshot, StepLog};

/// Settings of [`HybridTrainer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridConfig {
    /// The contrastive-divergence part (sampler, buffer, optimiser, regulariser, EMA). A
    /// custom sampler is not supported here.
    pub cd: CdConfig,
    /// Weight `w` of the classification cross-entropy (0: contrastive divergence alone).
    pub clf_weight: f64,
    /// How many of each batch's data images (the first ones) get the classification term.
    pub clf_images: usize,
}

/// One batch of [`hybrid_loss_grads`].
#[derive(Debug, Clone, Copy)]
pub struct HybridBatch<'a> {
    /// Data `[B, ...]`.
    pub positives: &'a Tensor,
    /// Their labels `[B]` (u32), each in `classes`.
    pub labels: &'a [u32],
    /// Samples `[B, ...]`.
    pub negatives: &'a Tensor,
    /// Their labels `[B]`.
    pub negative_labels: &'a [u32],
    /// The classes `S` of the soft minimum.
    pub classes: &'a [u32],
    /// How many of the positives (the first ones) get the classification term.
    pub clf_images: usize,
}

/// The numbers of one loss evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HybridLosses {
    /// `mean E+ - mean E- + l2 (mean E+^2 + mean E-^2)`.
    pub cd_loss: f64,
    /// Mean energy of the data.
    pub energy_pos: f64,
    /// Mean energy of the samples.
    pub energy_neg: f64,
    /// Mean cross-entropy of the classification inputs (0 when there are none).
    pub clf_loss: f64,
    /// The fraction of the classification inputs whose lowest-energy class in `S` is their
    /// label (0 when there are none).
    pub clf_accuracy: f64,
}

/// What one [`HybridTrainer::step`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HybridStepLog {
    /// The contrastive-divergence numbers (`loss` is the CD part alone).
    pub cd: StepLog,
    /// Mean cross-entropy of the classification term.
    pub clf_loss: f64,
    /// Training-batch accuracy of the classification inputs.
    pub clf_accuracy: f64,
}

fn check_labels(labels: &[u32], classes: &[u32], what: &str) -> Result<()> {
    if let Some(bad) = labels.iter().find(|y| !classes.contains(y)) {
        return Err(ebm_core::Error::invalid(
            what,
            format!("label {bad} is not among the step's classes {classes:?}"),
        )
        .into());
    }
    Ok(())
}

/// The hybrid loss of `batch` under `model` and its gradients with respect to the model's
/// parameters. `l2` is the energy regulariser's weight, `clf_weight` the classification term's.
pub fn hybrid_loss_grads<M: EnergyModel>(
    model: &M,
    batch: &HybridBatch<'_>,
    l2: f64,
    clf_weight: f64,
) -> Result<(HybridLosses, GradStore)> {
    let shape = model.sample_shape();
    let b = validate::check_batch_shape(batch.positives, &shape, "data batch")?;
    let bn = validate::check_batch_shape(batch.negatives, &shape, "sample batch")?;
    if bn != b || batch.labels.len() != b || batch.negative_labels.len() != b {
        return Err(ebm_core::Error::invalid(
            "hybrid batch",
            format!(
                "{b} data images, {bn} samples, {} data labels and {} sample labels: all must match",
                batch.labels.len(),
                batch.negative_labels.len()
            ),
        )
        .into());
    }
    let classes = batch.classes;
    if classes.is_empty() {
        return Err(ebm_core::Error::invalid("classes", "give at least one class").into());
    }
    check_labels(batch.labels, classes, "data labels")?;
    check_labels(batch.negative_labels, classes, "sample labels")?;
    validate::non_negative("clf_weight", clf_weight)?;
    let device = batch.positives.device();
    let k = classes.len();
    let n = if clf_weight > 0.0 && k >= 2 {
        batch.clf_images.min(b)
    } else {
        0
    };

    // The classification inputs tiled over the classes (class-major), and dCE/dE.
    let mut coeff: Vec<f32> = (0..2 * b)
        .map(|i| if i < b { 1.0 } else { -1.0 } / b as f32)
        .collect();
    let (mut clf_loss, mut clf_correct) = (0f64, 0usize);
    let mut xs = vec![batch.positives.clone(), batch.negatives.clone()];
    let mut labels: Vec<u32> = batch.labels.to_vec();
    labels.extend_from_slice(batch.negative_labels);
    if n > 0 {
        let xc = batch.positives.narrow(0, 0, n)?;
        let tiled = Tensor::cat(&vec![xc; k], 0)?;
        let tile_labels: Vec<u32> = classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, n))
            .collect();
        let lt = Tensor::from_slice(&tile_labels, k * n, device)?;
        let (e, _) = model.frozen()?.energies_and_grad(&tiled, Some(&lt))?;
        let e = e.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let mut tile_coeff = vec![0f32; k * n];
        for i in 0..n {
            let y = classes
                .iter()
                .position(|&c| c == batch.labels[i])
                .expect("labels checked");
            let neg: Vec<f64> = (0..k).map(|c| -e[c * n + i]).collect();
            let max = neg.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + neg.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            clf_loss += lse - neg[y];
            clf_correct += usize::from(neg[y] >= max);
            for c in 0..k {
                let p = (neg[c] - lse).exp();
                tile_coeff[c * n + i] = (clf_weight * (f64::from(c == y) - p) / n as f64) as f32;
            }
        }
        coeff.extend(tile_coeff);
        xs.push(tiled);
        labels.extend(tile_labels);
    }
    let x = Tensor::cat(&xs, 0)?;
    let total = x.dim(0)?;
    let lt = Tensor::from_vec(labels, total, device)?;
    let l2f = l2 as f32;
    let inv_b = 1.0 / b as f32;
    let two_b = 2 * b;
    let dloss = |i: usize, e: f32| {
        if i < two_b {
            coeff[i] + 2.0 * l2f * e * inv_b
        } else {
            coeff[i]
        }
    };
    let (energies, grads) = match model.fused_loss_grads(&x, Some(&lt), &dloss)? {
        Some(fused) => fused,
        None => {
            let energies = model.energies(&x, Some(&lt))?;
            let c = Tensor::from_slice(&coeff, total, device)?.to_dtype(energies.dtype())?;
            let linear = (&energies * c)?.sum_all()?;
            let e_pos = energies.narrow(0, 0, b)?;
            let e_neg = energies.narrow(0, b, b)?;
            let reg = (e_pos.sqr()?.mean_all()? + e_neg.sqr()?.mean_all()?)?;
            let loss = (linear + (reg * l2)?)?;
            let grads = loss.backward()?;
            (energies.detach(), grads)
        }
    };
    let e = energies.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mean_sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
    let (pos, neg) = (&e[..b], &e[b..2 * b]);
    let losses = HybridLosses {
        cd_loss: mean(pos) - mean(neg) + l2 * (mean_sq(pos) + mean_sq(neg)),
        energy_pos: mean(pos),
        energy_neg: mean(neg),
        clf_loss: if n > 0 { clf_loss / n as f64 } else { 0.0 },
        clf_accuracy: if n > 0 {
            clf_correct as f64 / n as f64
        } else {
            0.0
        },
    };
    Ok((losses, grads))
}

/// Trains a class-conditional [`EnergyModel`] with the hybrid loss, one step at a time.
pub struct HybridTrainer<M: EnergyModel> {
    model: M,
    config: HybridConfig,
    sampler: Langevin,
    adam: Adam,
    ema: Option<Ema>,
    buffer: Option<ReplayBuffer>,
    history: Vec<HybridStepLog>,
}

impl<M: EnergyModel> HybridTrainer<M> {
    /// Validates the config (a conditional model, a non-negative weight) and sets up the
    /// sampler, optimiser, buffer and EMA.
    pub fn new(model: M, config: HybridConfig) -> Result<Self> {
        if model.num_classes().is_none() {
            return Err(ebm_core::Error::invalid(
                "model",
                "the hybrid trainer needs a class-conditional model",
            )
            .into());
        }
        validate::non_negative("l2_coeff", config.cd.l2_coeff)?;
        validate::non_negative("clf_weight", config.clf_weight)?;
        let sampler = Langevin::new(config.cd.langevin.clone())?;
        let adam = Adam::new(model.params().vars(), config.cd.adam.clone())?;
        let ema = match config.cd.ema_decay {
            Some(d) => Some(Ema::new(model.params(), d)?),
            None => None,
        };
        let mut trainer = Self {
            model,
            config,
            sampler,
            adam,
            ema,
            buffer: None,
            history: Vec::new(),
        };
        trainer.clear_buffer()?;
        Ok(trainer)
    }

    /// Empties the replay buffer (e.g. at the start of a new task), if the config has one.
    pub fn clear_buffer(&mut self) -> Result<()> {
        let c = &self.config.cd;
        self.buffer = match c.replay_capacity {
            Some(cap) => Some(ReplayBuffer::new(
                cap,
                &self.model.sample_shape(),
                c.restart_probability,
                c.data_range,
            )?),
            None => None,
        };
        Ok(())
    }

    /// One step on data `positives [B, ...]` with labels (each in `classes`): negatives by
    /// Langevin from the buffer (or noise), their labels those stored in the buffer when in
    /// `classes`, else drawn uniformly from `classes`; then one optimiser update of the
    /// hybrid loss.
    pub fn step<R: rand::Rng + ?Sized>(
        &mut self,
        positives: &Tensor,
        labels: &[u32],
        classes: &[u32],
        rng: &mut R,
    ) -> Result<HybridStepLog> {
        let start = Instant::now();
        let step = self.history.len() + 1;
        let shape = self.model.sample_shape();
        let batch = validate::check_batch_shape(positives, &shape, "training batch")?;
        validate::check_finite(positives, "training batch")?;
        let k_all = self.model.num_classes().expect("checked in new");
        if classes.is_empty() || classes.iter().any(|&c| c as usize >= k_all) {
            return Err(ebm_core::Error::invalid(
                "classes",
                format!("need at least one class, each below {k_all}, got {classes:?}"),
            )
            .into());
        }
        check_labels(labels, classes, "training labels")?;
        let device = positives.device().clone();
        let (x0, neg_labels) = match &self.buffer {
            Some(buffer) => {
                let s = buffer.sample(batch, Some(k_all), &device, rng)?;
                let stored = s.labels.expect("asked for labels").to_vec1::<u32>()?;
                let l: Vec<u32> = stored
                    .iter()
                    .zip(&s.restarted)
                    .map(|(&y, &restarted)| {
                        if restarted || !classes.contains(&y) {
                            classes[rng.random_range(0..classes.len())]
                        } else {
                            y
                        }
                    })
                    .collect();
                (s.x, l)
            }
            None => {
                let mut dims = vec![batch];
                dims.extend(&shape);
                let (lo, hi) = self.config.cd.data_range;
                let x = ebm_core::noise::uniform(rng, dims, lo, hi, DType::F32, &device)?;
                let l = (0..batch)
                    .map(|_| classes[rng.random_range(0..classes.len())])
                    .collect();
                (x, l)
            }
        };
        self.model.update_spectral_norm()?;
        let frozen = self.model.frozen()?;
        let lt = Tensor::from_slice(&neg_labels, batch, &device)?;
        let run = self.sampler.run(
            &Conditioned::new(&frozen, Some(&lt)),
            &x0.to_dtype(positives.dtype())?,
            rng,
        )?;
        let negatives = run.samples;
        if let Some(buffer) = &mut self.buffer {
            buffer.push(&negatives, Some(&lt))?;
        }
        let (losses, grads) = hybrid_loss_grads(
            &self.model,
            &HybridBatch {
                positives,
                labels,
                negatives: &negatives,
                negative_labels: &neg_labels,
                classes,
                clf_images: self.config.clf_images,
            },
            self.config.cd.l2_coeff,
            self.config.clf_weight,
        )?;
        if !(losses.cd_loss.is_finite() && losses.clf_loss.is_finite()) {
            return Err(Error::Diverged {
                step,
                what: "the loss".into(),
            });
        }
        let grad_norm = self.adam.step(&grads)?;
        if !grad_norm.is_finite() {
            return Err(Error::Diverged {
                step,
                what: "the gradient norm".into(),
            });
        }
        if let Some(ema) = &mut self.ema {
            ema.update(self.model.params())?;
        }
        let log = HybridStepLog {
            cd: StepLog {
                step,
                loss: losses.cd_loss,
                energy_pos: losses.energy_pos,
                energy_neg: losses.energy_neg,
                grad_norm,
                seconds_per_sampler_step: run.seconds_per_step,
                seconds: start.elapsed().as_secs_f64(),
            },
            clf_loss: losses.clf_loss,
            clf_accuracy: losses.clf_accuracy,
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// Puts everything the trainer needs to continue into `snapshot`, as
    /// [`crate::CdTrainer::save_state`] does: weights and spectral-norm vectors, Adam's moments
    /// and step count, the EMA, the replay buffer, the config and the log. The caller adds its
    /// own state (data order, generator) and writes it.
    pub fn save_state(&self, snapshot: &mut Snapshot) -> Result<()> {
        snapshot.put_model("model", &self.model)?;
        snapshot.put_adam("adam", &self.adam)?;
        if let Some(ema) = &self.ema {
            snapshot.put_list("ema", ema.weights())?;
        }
        if let Some(buffer) = &self.buffer {
            snapshot.put_replay("replay", buffer)?;
        }
        snapshot.set_value("hybrid_config", &self.config)?;
        snapshot.set_value("history", &self.history)
    }

    /// Continues from a snapshot written by [`HybridTrainer::save_state`]; fails, saying so,
    /// when it was taken with another config or model.
    pub fn load_state(&mut self, snapshot: &Snapshot) -> Result<()> {
        let config: HybridConfig = snapshot.value("hybrid_config")?;
        if config != self.config {
            return Err(Error::Snapshot(
                "it was taken with another training config (hybrid_config differs); resume with the same recipe".into(),
            ));
        }
        snapshot.restore_model("model", &mut self.model)?;
        snapshot.restore_adam("adam", &mut self.adam)?;
        if let Some(ema) = &mut self.ema {
            ema.set_weights(snapshot.list("ema")?)?;
        }
        if let Some(buffer) = &mut self.buffer {
            snapshot.restore_replay("replay", buffer)?;
        }
        self.history = snapshot.value("history")?;
        Ok(())
    }

    /// The model being trained.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The config.
    pub fn config(&self) -> &HybridConfig {
        &self.config
    }

    /// The replay buffer, if the config has one.
    pub fn buffer(&self) -> Option<&ReplayBuffer> {
        self.buffer.as_ref()
    }

    /// The moving average of the weights, if the config has one.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// The log of every step so far.
    pub fn history(&self) -> &[HybridStepLog] {
        &self.history
    }
}
