//! Training: the VAE by its ELBO ([`VaeTrainer`]), then the energy with the VAE frozen
//! ([`VaebmTrainer`]):
//!
//! ```text
//! eps-   = Langevin on E(T(eps)) + ||eps||^2 / 2 from eps ~ N(0, I) (or the eps_z buffer)
//! x-     = T(eps-)  (or the decoder mean at eps-_z, the official code's --use_mu_cd)
//! loss   = mean E(x+) - mean E(x-) + alpha_s * sum_l sigma(W_l) [+ l2 (mean E(x+)^2 + mean E(x-)^2)]
//! ```
//!
//! minimised by Adam with betas (0.99, 0.999), weight decay, and IGEBM's element-wise gradient
//! bound (the official code's `clip_grad`).
//!
//! **Divergence.** Every iteration is checked before its update is applied: a Langevin chain
//! that produced NaN or infinity, a non-finite loss, an energy beyond
//! [`DivergenceGuard::max_abs_energy`], a gradient norm beyond
//! [`DivergenceGuard::max_grad_norm`], or non-finite weights after the update. Any of them
//! restores the last good in-memory snapshot of the weights (taken every
//! [`DivergenceGuard::snapshot_every`] iterations; an older one when the newest has already
//! failed since), multiplies the learning rate by [`DivergenceGuard::lr_factor`], restarts
//! Adam's moments, empties the `eps_z` buffer and records a [`Rollback`]. Training gives up with
//! [`Error::Diverged`] after [`DivergenceGuard::max_rollbacks`] roll-backs or when the learning
//! rate would fall below [`DivergenceGuard::min_lr`].
//!
//! **Snapshots.** Both trainers' `save_state` put everything they need to continue into an
//! [`ebm_train::Snapshot`] (weights, optimiser moments, logs; for the energy also the learning
//! rate, the roll-back snapshots, counters, the regulariser's power-iteration vectors and the
//! `eps_z` buffer), and `load_state` continues from one bit for bit, refusing a snapshot taken
//! with another config. The caller adds its random generator and data order.

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Tensor, Var};
use ebm_core::{noise, validate};
use ebm_mcmc::Langevin;
use ebm_nn::Trainable;
use ebm_train::{Adam, AdamConfig, Snapshot};
use serde::{Deserialize, Serialize};

use crate::buffer::{BufferConfig, EpsBuffer};
use crate::reparam::{EpsLangevin, ReparamEnergy};
use crate::spectral::SpectralRegularizer;
use crate::{Error, Result, Vae, Vaebm};

/// Hyper-parameters of VAE training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeTrainConfig {
    /// The optimiser (lr 1e-3, betas (0.9, 0.999), no element-wise bound by default).
    pub adam: AdamConfig,
    /// Iterations over which the weight of the KL term grows linearly from 0 to 1 (0: the
    /// full ELBO from the start).
    pub kl_warmup: usize,
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        Self {
            adam: AdamConfig::kingma_ba(1e-3),
            kl_warmup: 0,
        }
    }
}

/// What one VAE training step did. Nats are per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeStepLog {
    /// 1-based iteration.
    pub iteration: usize,
    /// The minimised loss: `-(log p(x|z) - kl_weight * KL)` per image, divided by the number
    /// of pixel values.
    pub loss: f64,
    /// The mean single-sample ELBO, nats.
    pub elbo: f64,
    /// The mean `log p(x | z)`, nats.
    pub log_likelihood: f64,
    /// The mean KL divergence, nats.
    pub kl: f64,
    /// The weight of the KL term in the loss.
    pub kl_weight: f64,
    /// `-ELBO` in bits per dimension on the 8-bit scale (`-ELBO / (D ln 2) + 8`, data in [0, 1]).
    pub bits_per_dim: f64,
    /// Global L2 norm of the gradient.
    pub grad_norm: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Trains a [`Vae`] by maximising its ELBO.
pub struct VaeTrainer {
    vae: Vae,
    config: VaeTrainConfig,
    adam: Adam,
    history: Vec<VaeStepLog>,
}

impl VaeTrainer {
    /// Sets up the optimiser. Fails for a frozen VAE (it has nothing to train).
    pub fn new(vae: Vae, config: VaeTrainConfig) -> Result<Self> {
        if vae.is_frozen() {
            return Err(Error::config(
                "VAE trainer",
                "the VAE is a frozen copy without parameters",
            ));
        }
        let adam = Adam::new(vae.params().vars(), config.adam.clone())?;
        Ok(Self {
            vae,
            config,
            adam,
            history: Vec::new(),
        })
    }

    /// One Adam step on the batch `x [B, C, H, W]` (values in [0, 1]), posterior noise from
    /// `rng`. A non-finite loss or gradient is [`Error::Diverged`].
    pub fn step<R: rand::Rng + ?Sized>(&mut self, x: &Tensor, rng: &mut R) -> Result<VaeStepLog> {
        let start = Instant::now();
        let iteration = self.history.len() + 1;
        validate::check_batch_shape(x, &self.vae.config().sample_shape(), "VAE training batch")?;
        validate::check_finite(x, "VAE training batch")?;
        let terms = self.vae.elbo(x, rng)?;
        let kl_weight = if self.config.kl_warmup == 0 {
            1.0
        } else {
            (iteration as f64 / self.config.kl_warmup as f64).min(1.0)
        };
        let dims = self.vae.config().sample_shape().iter().product::<usize>() as f64;
        let objective = (&terms.log_likelihood - (&terms.kl * kl_weight)?)?;
        let loss = (objective.mean_all()? * (-1.0 / dims))?;
        let scalar = |t: &Tensor| -> Result<f64> {
            Ok(t.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
        };
        let loss_value = scalar(&loss)?;
        if !loss_value.is_finite() {
            return Err(Error::Diverged {
                iteration,
                reason: "the VAE loss became NaN or infinite".into(),
            });
        }
        let grad_norm = self.adam.step(&loss.backward()?)?;
        if !grad_norm.is_finite() {
            return Err(Error::Diverged {
                iteration,
                reason: "the VAE gradient became NaN or infinite".into(),
            });
        }
        let elbo = scalar(&terms.elbo)?;
        let log = VaeStepLog {
            iteration,
            loss: loss_value,
            elbo,
            log_likelihood: scalar(&terms.log_likelihood)?,
            kl: scalar(&terms.kl)?,
            kl_weight,
            bits_per_dim: -elbo / (dims * std::f64::consts::LN_2) + 8.0,
            grad_norm,
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// Puts everything the trainer needs to continue into `snapshot`: the VAE's weights
    /// (copied), Adam's moments and step count, the log, and the VAE and training configs. The
    /// caller adds its own state (random generator, data order) and writes it.
    pub fn save_state(&self, snapshot: &mut Snapshot) -> Result<()> {
        snapshot.set_value(KIND_KEY, &"vae")?;
        snapshot.set_value("vae.model_config", self.vae.config())?;
        snapshot.set_value("vae.train_config", &self.config)?;
        snapshot.put_model("vae.model", &self.vae)?;
        snapshot.put_adam("vae.adam", &self.adam)?;
        snapshot.set_value("vae.history", &self.history)?;
        Ok(())
    }

    /// Continues from a snapshot written by [`VaeTrainer::save_state`]. Fails, saying so,
    /// when it is not a VAE trainer's or was taken with another VAE or training config
    /// (checked before anything is changed).
    pub fn load_state(&mut self, snapshot: &Snapshot) -> Result<()> {
        check_kind(snapshot, "vae", "VAE")?;
        check_config(
            snapshot,
            "vae.model_config",
            "VAE config",
            self.vae.config(),
        )?;
        check_config(
            snapshot,
            "vae.train_config",
            "VAE training config",
            &self.config,
        )?;
        let history: Vec<VaeStepLog> = snapshot.value("vae.history")?;
        snapshot.restore_model("vae.model", &mut self.vae)?;
        snapshot.restore_adam("vae.adam", &mut self.adam)?;
        self.history = history;
        Ok(())
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &Adam {
        &self.adam
    }

    /// The VAE being trained.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// The trained VAE.
    pub fn into_vae(self) -> Vae {
        self.vae
    }

    /// The log of every step so far.
    pub fn history(&self) -> &[VaeStepLog] {
        &self.history
    }
}

/// Which images stand for the model in the contrastive loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Negatives {
    /// `T(eps)`: the decoder mean plus `sigma_x eps_x` (the paper's default).
    Sample,
    /// The decoder mean at the chain's `eps_z` (the official code's `--use_mu_cd`).
    Mean,
}

/// When a training iteration counts as diverged, and what a roll-back does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceGuard {
    /// An energy of data or negatives beyond this magnitude is a divergence (> 0).
    pub max_abs_energy: f64,
    /// A global gradient norm (after the regulariser and weight decay) beyond this is a
    /// divergence (> 0).
    pub max_grad_norm: f64,
    /// The learning rate is multiplied by this at every roll-back, in (0, 1).
    pub lr_factor: f64,
    /// Training gives up when the learning rate would fall below this (>= 0).
    pub min_lr: f64,
    /// Iterations between in-memory snapshots of the weights (>= 1).
    pub snapshot_every: usize,
    /// Training gives up after this many roll-backs.
    pub max_rollbacks: usize,
}

impl Default for DivergenceGuard {
    fn default() -> Self {
        Self {
            max_abs_energy: 1e4,
            max_grad_norm: 1e6,
            lr_factor: 0.5,
            min_lr: 1e-9,
            snapshot_every: 25,
            max_rollbacks: 20,
        }
    }
}

impl DivergenceGuard {
    fn validate(&self) -> Result<()> {
        validate::positive("guard max_abs_energy", self.max_abs_energy)?;
        validate::positive("guard max_grad_norm", self.max_grad_norm)?;
        validate::non_negative("guard min_lr", self.min_lr)?;
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0) {
            return Err(Error::config(
                "guard lr_factor",
                format!("must lie in (0, 1), got {}", self.lr_factor),
            ));
        }
        validate::at_least_one("guard snapshot_every", self.snapshot_every)?;
        Ok(())
    }
}

/// Hyper-parameters of the energy's training. Defaults are the official code's (Adam lr 5e-5,
/// betas (0.99, 0.999), `alpha_s` 0.2, weight decay 3e-5, Du et al.'s gradient clip, `T(eps)` as
/// the negative, no buffer) with the paper's CIFAR-10 training sampler (10 steps of 8e-5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaebmTrainConfig {
    /// The optimiser: lr 5e-5, betas (0.99, 0.999), the element-wise gradient bound on.
    pub adam: AdamConfig,
    /// Weight of the spectral regulariser `sum_l sigma(W_l)` (>= 0; the paper's 0.2).
    pub alpha_s: f64,
    /// L2 weight decay added to the gradient, as PyTorch's Adam does (>= 0; the paper's 3e-5).
    pub weight_decay: f64,
    /// Weight of IGEBM's energy regulariser `mean E(x+)^2 + mean E(x-)^2` (>= 0; 0 in VAEBM).
    pub energy_l2: f64,
    /// The Langevin sampler of negatives in `eps`-space.
    pub langevin: EpsLangevin,
    /// What the loss sees of the negatives.
    pub negatives: Negatives,
    /// The persistent `eps_z` buffer, if any.
    pub buffer: Option<BufferConfig>,
    /// Divergence detection and roll-back.
    pub guard: DivergenceGuard,
}

impl Default for VaebmTrainConfig {
    fn default() -> Self {
        Self {
            adam: AdamConfig {
                lr: 5e-5,
                beta1: 0.99,
                beta2: 0.999,
                eps: 1e-8,
                bound_by_second_moment: true,
            },
            alpha_s: 0.2,
            weight_decay: 3e-5,
            energy_l2: 0.0,
            langevin: EpsLangevin::cifar10_training(),
            negatives: Negatives::Sample,
            buffer: None,
            guard: DivergenceGuard::default(),
        }
    }
}

/// What one successful energy training iteration did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaebmStepLog {
    /// 1-based iteration (roll-backs count as iterations).
    pub iteration: usize,
    /// `mean E(x+) - mean E(x-)`.
    pub loss: f64,
    /// The minimised total: the loss plus the regularisers.
    pub total_loss: f64,
    /// Mean energy of the data batch.
    pub energy_pos: f64,
    /// Mean energy of the negatives.
    pub energy_neg: f64,
    /// `sum_l sigma(W_l)` (0 when `alpha_s` is 0).
    pub spectral_sum: f64,
    /// Global L2 norm of the gradient.
    pub grad_norm: f64,
    /// The learning rate of the update.
    pub lr: f64,
    /// Chains restarted from the `eps_z` buffer.
    pub replayed: usize,
    /// Mean `E(T(eps)) + ||eps||^2 / 2` before the first and the last Langevin step.
    pub chain_energy: (f64, f64),
    /// Wall-clock seconds per Langevin step.
    pub seconds_per_sampler_step: f64,
    /// Wall-clock seconds of the iteration.
    pub seconds: f64,
}

/// A roll-back after a divergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// The iteration that diverged.
    pub iteration: usize,
    /// What was detected.
    pub reason: String,
    /// The iteration whose weights were restored (0: the initial weights).
    pub restored_iteration: usize,
    /// The learning rate before.
    pub lr_before: f64,
    /// The learning rate after.
    pub lr_after: f64,
}

/// What [`VaebmTrainer::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// An update was applied.
    Trained(VaebmStepLog),
    /// A divergence was detected, nothing was applied, and the weights were rolled back.
    RolledBack(Rollback),
}

/// The last good weights, kept in memory for a roll-back.
#[derive(Debug, Clone)]
struct GoodState {
    iteration: usize,
    params: Vec<Tensor>,
    buffers: std::collections::HashMap<String, Tensor>,
    spectral: SpectralRegularizer,
}

/// At most this many snapshots are kept (the newest first in line for a roll-back).
const SNAPSHOTS: usize = 3;

/// Trains the energy of a [`Vaebm`] with its VAE frozen; see the module documentation.
pub struct VaebmTrainer {
    model: Vaebm,
    config: VaebmTrainConfig,
    sampler: Langevin,
    adam: Adam,
    lr: f64,
    spectral: SpectralRegularizer,
    buffer: Option<EpsBuffer>,
    snapshots: VecDeque<GoodState>,
    failed_since_success: usize,
    iteration: usize,
    history: Vec<VaebmStepLog>,
    rollbacks: Vec<Rollback>,
}

impl VaebmTrainer {
    /// Validates the config and sets up the optimiser, the regulariser's power-iteration state
    /// (drawn from `rng`), the buffer and the first snapshot.
    pub fn new<R: rand::Rng + ?Sized>(
        model: Vaebm,
        config: VaebmTrainConfig,
        rng: &mut R,
    ) -> Result<Self> {
        validate::non_negative("alpha_s", config.alpha_s)?;
        validate::non_negative("weight_decay", config.weight_decay)?;
        validate::non_negative("energy_l2", config.energy_l2)?;
        config.guard.validate()?;
        let sampler = config.langevin.sampler()?;
        if model.ebm().params().is_empty() {
            return Err(Error::config(
                "VAEBM trainer",
                "the energy network is a frozen copy without parameters",
            ));
        }
        let adam = Adam::new(model.ebm().params().vars(), config.adam.clone())?;
        let spectral = SpectralRegularizer::new(model.ebm().params(), 5, rng)?;
        let buffer = match &config.buffer {
            Some(b) => Some(EpsBuffer::new(b.clone(), model.layout().latent)?),
            None => None,
        };
        let mut trainer = Self {
            lr: config.adam.lr,
            model,
            config,
            sampler,
            adam,
            spectral,
            buffer,
            snapshots: VecDeque::new(),
            failed_since_success: 0,
            iteration: 0,
            history: Vec::new(),
            rollbacks: Vec::new(),
        };
        trainer.snapshot()?;
        Ok(trainer)
    }

    fn snapshot(&mut self) -> Result<()> {
        let params = self
            .model
            .ebm()
            .params()
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let buffers = self
            .model
            .ebm()
            .buffers()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<_>>()?;
        self.snapshots.push_back(GoodState {
            iteration: self.iteration,
            params,
            buffers,
            spectral: self.spectral.clone(),
        });
        while self.snapshots.len() > SNAPSHOTS {
            self.snapshots.pop_front();
        }
        Ok(())
    }

    fn roll_back(&mut self, iteration: usize, reason: String) -> Result<StepOutcome> {
        let guard = &self.config.guard;
        let lr_before = self.lr;
        let lr_after = lr_before * guard.lr_factor;
        if self.rollbacks.len() >= guard.max_rollbacks {
            return Err(Error::Diverged {
                iteration,
                reason: format!(
                    "{reason}; giving up after {} roll-backs (learning rate {lr_before:e})",
                    self.rollbacks.len()
                ),
            });
        }
        if lr_after < guard.min_lr {
            return Err(Error::Diverged {
                iteration,
                reason: format!(
                    "{reason}; the learning rate would fall to {lr_after:e}, below min_lr {:e}",
                    guard.min_lr
                ),
            });
        }
        // The newest snapshot already failed once since the last good step: use an older one.
        if self.failed_since_success > 0 && self.snapshots.len() > 1 {
            self.snapshots.pop_back();
        }
        let snap = self
            .snapshots
            .back()
            .cloned()
            .expect("the trainer always holds a snapshot");
        for ((_, var), t) in self.model.ebm().params().iter().zip(&snap.params) {
            var.set(t)?;
        }
        if !snap.buffers.is_empty() {
            self.model.ebm_mut().set_buffers(&snap.buffers)?;
        }
        self.spectral = snap.spectral.clone();
        self.lr = lr_after;
        self.adam = Adam::new(
            self.model.ebm().params().vars(),
            AdamConfig {
                lr: lr_after,
                ..self.config.adam.clone()
            },
        )?;
        if let Some(b) = &mut self.buffer {
            b.clear();
        }
        self.failed_since_success += 1;
        let rollback = Rollback {
            iteration,
            reason,
            restored_iteration: snap.iteration,
            lr_before,
            lr_after,
        };
        self.rollbacks.push(rollback.clone());
        Ok(StepOutcome::RolledBack(rollback))
    }

    /// One iteration on the data batch `positives [B, C, H, W]`: negatives by Langevin in
    /// `eps`-space, then one checked update, or a roll-back (see the module documentation).
    /// Bad input (a wrong shape, NaN in the batch) is an error, not a divergence.
    pub fn step<R: rand::Rng + ?Sized>(
        &mut self,
        positives: &Tensor,
        rng: &mut R,
    ) -> Result<StepOutcome> {
        let start = Instant::now();
        let shape = self.model.vae().config().sample_shape();
        let batch = validate::check_batch_shape(positives, &shape, "training batch")?;
        validate::check_finite(positives, "training batch")?;
        self.iteration += 1;
        let iteration = self.iteration;
        let device = positives.device().clone();
        let dtype = positives.dtype();

        // Starting points: eps_z from the buffer or N(0, I), eps_x from N(0, I).
        let layout = self.model.layout();
        let (eps_z, replayed) = match &self.buffer {
            Some(b) => b.sample(batch, iteration, dtype, &device, rng)?,
            None => (
                noise::normal(rng, (batch, layout.latent), dtype, &device)?,
                0,
            ),
        };
        let mut x_shape = vec![batch];
        x_shape.extend(&shape);
        let eps_x = noise::normal(rng, x_shape, dtype, &device)?;
        let eps0 = layout.pack(&eps_z, &eps_x)?;

        // Negatives by Langevin on the frozen energy.
        self.model.ebm_mut().update_spectral_norm()?;
        let frozen = self.model.ebm().frozen()?;
        let target = ReparamEnergy::new(self.model.vae(), &frozen)?;
        let run = match self.sampler.run(&target, &eps0, rng) {
            Ok(run) => run,
            Err(ebm_mcmc::Error::Diverged { step, steps }) => {
                return self.roll_back(
                    iteration,
                    format!(
                    "the Langevin chain's energy became NaN or infinite at step {step} of {steps}"
                ),
                )
            }
            Err(e) => return Err(e.into()),
        };
        let eps = run.samples;
        let negatives = match self.config.negatives {
            Negatives::Sample => target.images(&eps)?,
            Negatives::Mean => target.means(&eps)?,
        };
        if validate::check_finite(&negatives, "negatives").is_err() {
            return self.roll_back(iteration, "the negatives became NaN or infinite".into());
        }

        // Energies and the gradient of the contrastive loss.
        let x = Tensor::cat(&[positives, &negatives.to_dtype(dtype)?], 0)?;
        let l2 = self.config.energy_l2;
        let (energies, grads) = self.loss_grads(&x, batch, l2)?;
        let e = energies.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let (pos, neg) = e.split_at(batch);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let mean_sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        let (energy_pos, energy_neg) = (mean(pos), mean(neg));
        let loss = energy_pos - energy_neg;
        if !loss.is_finite() || e.iter().any(|v| !v.is_finite()) {
            return self.roll_back(iteration, "an energy became NaN or infinite".into());
        }
        let max_abs = e.iter().fold(0f64, |m, v| m.max(v.abs()));
        if max_abs > self.config.guard.max_abs_energy {
            return self.roll_back(
                iteration,
                format!(
                    "an energy reached magnitude {max_abs:.4e}, beyond max_abs_energy {:e}",
                    self.config.guard.max_abs_energy
                ),
            );
        }

        // The spectral regulariser and weight decay, added to the loss's gradient.
        let (grads, spectral_sum) = self.regularise(grads)?;
        let grad_norm = global_norm(&self.model.ebm().params().vars(), &grads)?;
        if !grad_norm.is_finite() || grad_norm > self.config.guard.max_grad_norm {
            return self.roll_back(
                iteration,
                format!(
                    "the gradient norm reached {grad_norm:.4e}, beyond max_grad_norm {:e}",
                    self.config.guard.max_grad_norm
                ),
            );
        }
        self.adam.step(&grads)?;
        let bad_weight = self
            .model
            .ebm()
            .params()
            .iter()
            .find(|(name, var)| validate::check_finite(var.as_tensor(), name).is_err())
            .map(|(name, _)| name.to_string());
        if let Some(name) = bad_weight {
            return self.roll_back(
                iteration,
                format!("the weight {name} became NaN or infinite after the update"),
            );
        }

        if let Some(b) = &mut self.buffer {
            b.push(&layout.split(&eps)?.0)?;
        }
        self.failed_since_success = 0;
        if iteration.is_multiple_of(self.config.guard.snapshot_every) {
            self.snapshot()?;
        }
        let total_loss =
            loss + self.config.alpha_s * spectral_sum + l2 * (mean_sq(pos) + mean_sq(neg));
        let trace = &run.energy_trace;
        let log = VaebmStepLog {
            iteration,
            loss,
            total_loss,
            energy_pos,
            energy_neg,
            spectral_sum,
            grad_norm,
            lr: self.lr,
            replayed,
            chain_energy: (trace[0], trace[trace.len() - 1]),
            seconds_per_sampler_step: run.seconds_per_step,
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(log.clone());
        Ok(StepOutcome::Trained(log))
    }

    /// Energies `[2B]` of `x = [data; negatives]` and the parameter gradients of
    /// `mean E(x+) - mean E(x-) + l2 (mean E(x+)^2 + mean E(x-)^2)`: the fused CPU pass where it
    /// applies, autograd elsewhere.
    fn loss_grads(&self, x: &Tensor, batch: usize, l2: f64) -> Result<(Tensor, GradStore)> {
        let ebm = self.model.ebm();
        let l2f = l2 as f32;
        let inv_b = 1.0 / batch as f32;
        let dloss = move |i: usize, e: f32| {
            let sign = if i < batch { 1.0 } else { -1.0 };
            (sign + 2.0 * l2f * e) * inv_b
        };
        if let Some(fused) = ebm.fused_loss_grads(x, None, &dloss)? {
            return Ok(fused);
        }
        let energies = ebm.forward(x, None)?;
        let e_pos = energies.narrow(0, 0, batch)?;
        let e_neg = energies.narrow(0, batch, batch)?;
        let mut loss = (e_pos.mean_all()? - e_neg.mean_all()?)?;
        if l2 > 0.0 {
            let reg = (e_pos.sqr()?.mean_all()? + e_neg.sqr()?.mean_all()?)?;
            loss = (loss + (reg * l2)?)?;
        }
        let grads = loss.backward()?;
        Ok((energies.detach(), grads))
    }

    /// Adds `alpha_s * d(sum sigma)/dW` and `weight_decay * W` to the gradients; returns them
    /// with `sum sigma`.
    fn regularise(&mut self, mut grads: GradStore) -> Result<(GradStore, f64)> {
        let alpha = self.config.alpha_s;
        let wd = self.config.weight_decay;
        let params = self.model.ebm().params().clone();
        let (reg_grads, spectral_sum) = if alpha > 0.0 {
            match self.spectral.penalty(&params)? {
                Some(p) => {
                    let value = p.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    (Some((p * alpha)?.backward()?), value)
                }
                None => (None, 0.0),
            }
        } else {
            (None, 0.0)
        };
        for (_, var) in params.iter() {
            let t = var.as_tensor();
            let mut g = grads.get(t).cloned();
            if let Some(r) = reg_grads.as_ref().and_then(|r| r.get(t)) {
                g = Some(match g {
                    Some(g) => (g + r)?,
                    None => r.clone(),
                });
            }
            if wd > 0.0 {
                let decay = (t.detach() * wd)?;
                g = Some(match g {
                    Some(g) => (g + decay)?,
                    None => decay,
                });
            }
            if let Some(g) = g {
                grads.insert(t, g);
            }
        }
        Ok((grads, spectral_sum))
    }

    /// Puts everything the trainer needs to continue into `snapshot`: the energy's weights and
    /// spectral-norm vectors and the VAE's weights (copied), Adam's moments and step count, the
    /// learning rate, the in-memory roll-back snapshots, the failure counter and iteration, the
    /// log and the roll-backs, the regulariser's power-iteration vectors, the `eps_z` buffer,
    /// and the configs. The caller adds its own state (random generator, data order) and
    /// writes it.
    pub fn save_state(&self, snapshot: &mut Snapshot) -> Result<()> {
        snapshot.set_value(KIND_KEY, &"vaebm")?;
        snapshot.set_value("vaebm.train_config", &self.config)?;
        snapshot.set_value("vaebm.ebm_config", self.model.ebm().config())?;
        snapshot.set_value("vaebm.vae_config", self.model.vae().config())?;
        snapshot.put_model("vaebm.ebm", self.model.ebm())?;
        snapshot.put_model("vaebm.vae", self.model.vae_weights())?;
        snapshot.put_adam("vaebm.adam", &self.adam)?;
        snapshot.set_value("vaebm.lr", &self.lr)?;
        put_spectral(snapshot, "vaebm.spectral", &self.spectral)?;
        if let Some(b) = &self.buffer {
            let values = b.contents();
            snapshot.set_value("vaebm.eps_buffer.values", &values.len())?;
            if !values.is_empty() {
                let n = values.len();
                snapshot.tensors.insert(
                    "vaebm.eps_buffer".into(),
                    Tensor::from_vec(values, n, &candle_core::Device::Cpu)?,
                );
            }
        }
        snapshot.set_value("vaebm.good_states", &self.snapshots.len())?;
        for (i, good) in self.snapshots.iter().enumerate() {
            let p = format!("vaebm.good.{i}");
            snapshot.set_value(&format!("{p}.iteration"), &good.iteration)?;
            snapshot.put_list(&format!("{p}.params"), &good.params)?;
            let mut names: Vec<&String> = good.buffers.keys().collect();
            names.sort();
            snapshot.set_value(&format!("{p}.buffer_names"), &names)?;
            for name in names {
                snapshot
                    .tensors
                    .insert(format!("{p}.buffer.{name}"), good.buffers[name].clone());
            }
            put_spectral(snapshot, &format!("{p}.spectral"), &good.spectral)?;
        }
        snapshot.set_value("vaebm.failed_since_success", &self.failed_since_success)?;
        snapshot.set_value("vaebm.iteration", &self.iteration)?;
        snapshot.set_value("vaebm.history", &self.history)?;
        snapshot.set_value("vaebm.rollbacks", &self.rollbacks)?;
        Ok(())
    }

    /// Continues from a snapshot written by [`VaebmTrainer::save_state`]: afterwards the
    /// trainer is in exactly the state it was saved in, the VAE's weights included. Fails,
    /// saying so, when it is not a VAEBM trainer's or was taken with another training config,
    /// energy or VAE config (checked before anything is changed).
    pub fn load_state(&mut self, snapshot: &Snapshot) -> Result<()> {
        check_kind(snapshot, "vaebm", "VAEBM energy")?;
        check_config(
            snapshot,
            "vaebm.train_config",
            "training config",
            &self.config,
        )?;
        check_config(
            snapshot,
            "vaebm.ebm_config",
            "energy config",
            self.model.ebm().config(),
        )?;
        check_config(
            snapshot,
            "vaebm.vae_config",
            "VAE config",
            self.model.vae().config(),
        )?;
        let has_vae = snapshot.tensors.keys().any(|k| k.starts_with("vaebm.vae."));
        let vae_trainable = !self.model.vae_weights().is_frozen();
        if has_vae != vae_trainable {
            return Err(snapshot_error(if has_vae {
                "it holds the VAE's weights, but this VAEBM was built from a frozen VAE copy that cannot take them; build it from the VAE itself".into()
            } else {
                "it holds no VAE weights (taken from a VAEBM built on a frozen VAE copy), this VAEBM's VAE has weights".into()
            }));
        }
        let device = self.model.vae().device().clone();

        // Read everything first.
        let lr: f64 = snapshot.value("vaebm.lr")?;
        let spectral = read_spectral(snapshot, "vaebm.spectral", &self.spectral)?;
        let buffer_values = match &self.buffer {
            Some(_) => {
                let n: usize = snapshot.value("vaebm.eps_buffer.values")?;
                Some(if n == 0 {
                    Vec::new()
                } else {
                    snapshot.tensor("vaebm.eps_buffer")?.to_vec1::<f32>()?
                })
            }
            None => None,
        };
        let count: usize = snapshot.value("vaebm.good_states")?;
        if count == 0 {
            return Err(snapshot_error(
                "it holds no roll-back snapshot (the trainer always keeps one)".into(),
            ));
        }
        let n_params = self.model.ebm().params().len();
        let mut goods = VecDeque::with_capacity(count);
        for i in 0..count {
            let p = format!("vaebm.good.{i}");
            let params = snapshot
                .list(&format!("{p}.params"))?
                .into_iter()
                .map(|t| t.to_device(&device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            if params.len() != n_params {
                return Err(snapshot_error(format!(
                    "roll-back snapshot {i} holds {} weights, the energy has {n_params}",
                    params.len()
                )));
            }
            let names: Vec<String> = snapshot.value(&format!("{p}.buffer_names"))?;
            let mut buffers = std::collections::HashMap::new();
            for name in names {
                let t = snapshot.tensor(&format!("{p}.buffer.{name}"))?;
                buffers.insert(name, t.to_device(&device)?);
            }
            goods.push_back(GoodState {
                iteration: snapshot.value(&format!("{p}.iteration"))?,
                params,
                buffers,
                spectral: read_spectral(snapshot, &format!("{p}.spectral"), &self.spectral)?,
            });
        }
        let failed_since_success: usize = snapshot.value("vaebm.failed_since_success")?;
        let iteration: usize = snapshot.value("vaebm.iteration")?;
        let history: Vec<VaebmStepLog> = snapshot.value("vaebm.history")?;
        let rollbacks: Vec<Rollback> = snapshot.value("vaebm.rollbacks")?;

        // Then apply it.
        snapshot.restore_model("vaebm.ebm", self.model.ebm_mut())?;
        if has_vae {
            self.model
                .reload_vae(|vae| Ok(snapshot.restore_model("vaebm.vae", vae)?))?;
        }
        snapshot.restore_adam("vaebm.adam", &mut self.adam)?;
        self.adam.set_lr(lr)?;
        self.lr = lr;
        self.spectral = spectral;
        if let (Some(b), Some(values)) = (&mut self.buffer, buffer_values) {
            b.restore(values)?;
        }
        self.snapshots = goods;
        self.failed_since_success = failed_since_success;
        self.iteration = iteration;
        self.history = history;
        self.rollbacks = rollbacks;
        Ok(())
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &Adam {
        &self.adam
    }

    /// The model being trained.
    pub fn model(&self) -> &Vaebm {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> Vaebm {
        self.model
    }

    /// The config.
    pub fn config(&self) -> &VaebmTrainConfig {
        &self.config
    }

    /// The current learning rate (lowered by every roll-back).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Iterations so far, roll-backs included.
    pub fn iterations(&self) -> usize {
        self.iteration
    }

    /// The log of every successful iteration.
    pub fn history(&self) -> &[VaebmStepLog] {
        &self.history
    }

    /// Every roll-back so far.
    pub fn rollbacks(&self) -> &[Rollback] {
        &self.rollbacks
    }

    /// The `eps_z` buffer, if the config has one.
    pub fn buffer(&self) -> Option<&EpsBuffer> {
        self.buffer.as_ref()
    }

    /// The spectral regulariser's state.
    pub fn spectral(&self) -> &SpectralRegularizer {
        &self.spectral
    }
}

/// The snapshot value that names the trainer that wrote it.
const KIND_KEY: &str = "trainer";

fn snapshot_error(problem: String) -> Error {
    ebm_train::Error::Snapshot(problem).into()
}

/// Fails unless `snapshot` was written by the trainer called `kind` (`what` in messages).
fn check_kind(snapshot: &Snapshot, kind: &str, what: &str) -> Result<()> {
    let saved: String = snapshot
        .value(KIND_KEY)
        .map_err(|_| snapshot_error(format!("it holds no {what} trainer (no `trainer` value)")))?;
    if saved != kind {
        return Err(snapshot_error(format!(
            "it holds the state of a `{saved}` trainer, not of a {what} (`{kind}`) trainer"
        )));
    }
    Ok(())
}

/// Fails, naming the fields that differ, unless the config saved as `key` is `current`.
fn check_config<T>(snapshot: &Snapshot, key: &str, what: &str, current: &T) -> Result<()>
where
    T: PartialEq + Serialize + serde::de::DeserializeOwned,
{
    let saved: T = snapshot.value(key)?;
    if &saved == current {
        return Ok(());
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(&saved), serde_json::to_value(current)) else {
        return Err(snapshot_error(format!("it was taken with another {what}")));
    };
    let fields = match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k}: saved {v}, now {}",
                    b.get(k).map(|x| x.to_string()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => format!("saved {a}, now {b}"),
    };
    Err(snapshot_error(format!(
        "it was taken with another {what} ({fields}); resume with the same recipe"
    )))
}

/// Stores a regulariser's power-iteration vectors (and the names of their weights).
fn put_spectral(
    snapshot: &mut Snapshot,
    prefix: &str,
    spectral: &SpectralRegularizer,
) -> Result<()> {
    let vectors = spectral.vectors();
    let names: Vec<&str> = vectors.iter().map(|(n, _, _)| *n).collect();
    snapshot.set_value(&format!("{prefix}.names"), &names)?;
    let us: Vec<Tensor> = vectors.iter().map(|(_, u, _)| (*u).clone()).collect();
    let vs: Vec<Tensor> = vectors.iter().map(|(_, _, v)| (*v).clone()).collect();
    snapshot.put_list(&format!("{prefix}.u"), &us)?;
    snapshot.put_list(&format!("{prefix}.v"), &vs)?;
    Ok(())
}

/// A copy of `template` with the vectors [`put_spectral`] stored under `prefix`.
fn read_spectral(
    snapshot: &Snapshot,
    prefix: &str,
    template: &SpectralRegularizer,
) -> Result<SpectralRegularizer> {
    let names: Vec<String> = snapshot.value(&format!("{prefix}.names"))?;
    let us = snapshot.list(&format!("{prefix}.u"))?;
    let vs = snapshot.list(&format!("{prefix}.v"))?;
    if us.len() != names.len() || vs.len() != names.len() {
        return Err(snapshot_error(format!(
            "`{prefix}`: {} names, {} u and {} v vectors",
            names.len(),
            us.len(),
            vs.len()
        )));
    }
    let mut spectral = template.clone();
    spectral.set_vectors(
        names
            .into_iter()
            .zip(us)
            .zip(vs)
            .map(|((n, u), v)| (n, u, v))
            .collect(),
    )?;
    Ok(spectral)
}

/// The global L2 norm of the gradients of `vars` in `grads`.
fn global_norm(vars: &[Var], grads: &GradStore) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sq.sqrt())
}
