//! [`CdTrainer`]: one contrastive-divergence step at a time, with persistent chains.

use std::time::Instant;

use candle_core::{DType, Tensor};
use ebm_core::{noise, validate};
use ebm_mcmc::{Langevin, LangevinConfig, ReplayBuffer, Sampler};
use serde::{Deserialize, Serialize};

use crate::{Adam, AdamConfig, Conditioned, Ema, EnergyModel, Error, Result, Snapshot};

/// Hyper-parameters of contrastive-divergence training. Defaults are the IGEBM paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdConfig {
    /// Weight of the energy regulariser `mean E(x+)^2 + mean E(x-)^2` (>= 0).
    pub l2_coeff: f64,
    /// The optimiser.
    pub adam: AdamConfig,
    /// The sampler of negatives.
    pub langevin: LangevinConfig,
    /// Capacity of the replay buffer; `None` starts every chain from noise (short-run).
    pub replay_capacity: Option<usize>,
    /// Probability that a chain restarts from noise instead of the buffer.
    pub restart_probability: f64,
    /// Decay of an exponential moving average of the weights, if wanted.
    pub ema_decay: Option<f64>,
    /// The data range, where fresh chains start uniformly.
    pub data_range: (f64, f64),
}

impl Default for CdConfig {
    fn default() -> Self {
        Self {
            l2_coeff: 1.0,
            adam: AdamConfig::default(),
            langevin: LangevinConfig::igebm(),
            replay_capacity: Some(10_000),
            restart_probability: 0.05,
            ema_decay: None,
            data_range: (0.0, 1.0),
        }
    }
}

/// What one training step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based step number.
    pub step: usize,
    /// The total loss.
    pub loss: f64,
    /// Mean energy of the data batch, E+.
    pub energy_pos: f64,
    /// Mean energy of the sampled batch, E-.
    pub energy_neg: f64,
    /// Global L2 norm of the parameter gradient.
    pub grad_norm: f64,
    /// Wall-clock seconds per Langevin step.
    pub seconds_per_sampler_step: f64,
    /// Wall-clock seconds of the whole step.
    pub seconds: f64,
}

/// Trains an [`EnergyModel`] by contrastive divergence.
pub struct CdTrainer<M: EnergyModel> {
    model: M,
    config: CdConfig,
    sampler: Langevin,
    /// Another sampler of negatives (MALA, HMC, annealed...), used instead of `sampler`.
    custom_sampler: Option<Box<dyn Sampler>>,
    adam: Adam,
    ema: Option<Ema>,
    buffer: Option<ReplayBuffer>,
    history: Vec<StepLog>,
}

impl<M: EnergyModel> CdTrainer<M> {
    /// Validates the config and sets up the optimiser, buffer and EMA.
    pub fn new(model: M, config: CdConfig) -> Result<Self> {
        validate::non_negative("l2_coeff", config.l2_coeff)?;
        let sampler = Langevin::new(config.langevin.clone())?;
        let adam = Adam::new(model.params().vars(), config.adam.clone())?;
        let ema = match config.ema_decay {
            Some(d) => Some(Ema::new(model.params(), d)?),
            None => None,
        };
        let buffer = match config.replay_capacity {
            Some(cap) => Some(ReplayBuffer::new(
                cap,
                &model.sample_shape(),
                config.restart_probability,
                config.data_range,
            )?),
            None => None,
        };
        Ok(Self {
            model,
            config,
            sampler,
            custom_sampler: None,
            adam,
            ema,
            buffer,
            history: Vec::new(),
        })
    }

    /// Draws negatives with `sampler` (any [`Sampler`]: MALA, HMC, annealed chains) instead of
    /// the config's Langevin chain. Its samples are clamped to `data_range` before they enter
    /// the replay buffer and the loss, since MALA and HMC do not clamp.
    pub fn with_sampler(mut self, sampler: Box<dyn Sampler>) -> Self {
        self.custom_sampler = Some(sampler);
        self
    }

    /// One step on a batch of data `positives [B, ...]` (with labels `[B]` for a conditional
    /// model): sample negatives, then one optimiser update.
    pub fn step<R: rand::Rng + ?Sized>(
        &mut self,
        positives: &Tensor,
        labels: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<StepLog> {
        let start = Instant::now();
        let step = self.history.len() + 1;
        let shape = self.model.sample_shape();
        let batch = validate::check_batch_shape(positives, &shape, "training batch")?;
        validate::check_finite(positives, "training batch")?;
        let classes = self.model.num_classes();
        match (classes, labels) {
            (Some(_), None) => {
                return Err(ebm_core::Error::invalid(
                    "labels",
                    "a conditional model needs one label per training image",
                )
                .into())
            }
            (None, Some(_)) => {
                return Err(ebm_core::Error::invalid(
                    "labels",
                    "an unconditional model takes no labels",
                )
                .into())
            }
            _ => {}
        }
        let device = positives.device().clone();

        // Negatives: persistent chains from the buffer, or short-run from noise.
        let (x0, neg_labels) = match &self.buffer {
            Some(buffer) => {
                let b = buffer.sample(batch, classes, &device, rng)?;
                (b.x, b.labels)
            }
            None => {
                let mut dims = vec![batch];
                dims.extend(&shape);
                let (lo, hi) = self.config.data_range;
                let x = noise::uniform(rng, dims, lo, hi, DType::F32, &device)?;
                let l = match classes {
                    Some(k) => Some(noise::random_labels(rng, batch, k, &device)?),
                    None => None,
                };
                (x, l)
            }
        };
        self.model.update_spectral_norm()?;
        let frozen = self.model.frozen()?;
        let energy = Conditioned::new(&frozen, neg_labels.as_ref());
        let x0 = x0.to_dtype(positives.dtype())?;
        let (negatives, seconds_per_sampler_step) = match &self.custom_sampler {
            None => {
                let run = self.sampler.run(&energy, &x0, rng)?;
                (run.samples, run.seconds_per_step)
            }
            Some(sampler) => {
                let mut rng = rng;
                let run = sampler.run(&energy, &x0, &mut rng)?;
                let (lo, hi) = self.config.data_range;
                (run.samples.clamp(lo, hi)?, run.stats.seconds_per_step())
            }
        };
        if let Some(buffer) = &mut self.buffer {
            buffer.push(&negatives, neg_labels.as_ref())?;
        }

        // One forward of data and samples together, then the loss and the update.
        let x = Tensor::cat(&[positives, &negatives], 0)?;
        let all_labels = match (labels, &neg_labels) {
            (Some(p), Some(n)) => Some(Tensor::cat(&[&p.to_dtype(DType::U32)?, n], 0)?),
            _ => None,
        };
        // dL/dE_i: (1 + 2 l2 E_i) / B for data, (-1 + 2 l2 E_i) / B for samples.
        let l2 = self.config.l2_coeff as f32;
        let inv_b = 1.0 / batch as f32;
        let dloss = move |i: usize, e: f32| {
            let sign = if i < batch { 1.0 } else { -1.0 };
            (sign + 2.0 * l2 * e) * inv_b
        };
        let (energies, grads) =
            match self
                .model
                .fused_loss_grads(&x, all_labels.as_ref(), &dloss)?
            {
                Some(fused) => fused,
                None => {
                    let energies = self.model.energies(&x, all_labels.as_ref())?;
                    let e_pos = energies.narrow(0, 0, batch)?;
                    let e_neg = energies.narrow(0, batch, batch)?;
                    let ml = (e_pos.mean_all()? - e_neg.mean_all()?)?;
                    let reg = (e_pos.sqr()?.mean_all()? + e_neg.sqr()?.mean_all()?)?;
                    let loss = (ml + (reg * self.config.l2_coeff)?)?;
                    let grads = loss.backward()?;
                    (energies.detach(), grads)
                }
            };
        let e = energies.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let (pos, neg) = e.split_at(batch);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let mean_sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        let (energy_pos, energy_neg) = (mean(pos), mean(neg));
        let loss_value =
            energy_pos - energy_neg + self.config.l2_coeff * (mean_sq(pos) + mean_sq(neg));
        if !loss_value.is_finite() {
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
        let log = StepLog {
            step,
            loss: loss_value,
            energy_pos,
            energy_neg,
            grad_norm,
            seconds_per_sampler_step,
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// Puts everything the trainer needs to continue into `snapshot`: weights and spectral-norm
    /// vectors, Adam's moments and step count, the EMA, the replay buffer, the config and the
    /// log. The caller adds its own state (data order, generator) and writes it.
    pub fn save_state(&self, snapshot: &mut Snapshot) -> Result<()> {
        snapshot.put_model("model", &self.model)?;
        snapshot.put_adam("adam", &self.adam)?;
        if let Some(ema) = &self.ema {
            snapshot.put_list("ema", ema.weights())?;
        }
        if let Some(buffer) = &self.buffer {
            snapshot.put_replay("replay", buffer)?;
        }
        snapshot.set_value("cd_config", &self.config)?;
        snapshot.set_value("history", &self.history)
    }

    /// Continues from a snapshot written by [`CdTrainer::save_state`]; fails, saying so, when
    /// it was taken with another config or model.
    pub fn load_state(&mut self, snapshot: &Snapshot) -> Result<()> {
        let config: CdConfig = snapshot.value("cd_config")?;
        if config != self.config {
            return Err(Error::Snapshot(
                "it was taken with another training config (cd_config differs); resume with the same recipe".into(),
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

    /// Mutable access to the model.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The trained model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The config.
    pub fn config(&self) -> &CdConfig {
        &self.config
    }

    /// The sampler of negatives.
    pub fn sampler(&self) -> &Langevin {
        &self.sampler
    }

    /// The replay buffer, if the config has one.
    pub fn buffer(&self) -> Option<&ReplayBuffer> {
        self.buffer.as_ref()
    }

    /// The moving average of the weights, if the config has one.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &Adam {
        &self.adam
    }

    /// The log of every step so far.
    pub fn history(&self) -> &[StepLog] {
        &self.history
    }
}
