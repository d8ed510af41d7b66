//! Maximum-likelihood learning of a [`LatentModel`] (Pang et al. 2020, algorithm 1).
//!
//! Per batch `x` (in [-1, 1]):
//!
//! ```text
//! z+ = posterior Langevin from N(0, I)    (short-run, not persistent: a fresh start each batch)
//! z- = prior Langevin from N(0, I)        (the EBM prior only)
//! generator loss = mean_b |x_b - g(z+_b)|^2 / (2 sigma_x^2)
//! prior loss     = mean E(z+) - mean E(z-)        (= mean f(z-) - mean f(z+))
//! ```
//!
//! Both samples come from the model before the update (as in the reference code); then one Adam
//! step for the generator and one for the prior, each with its own settings (the reference
//! code's: lr 1e-4 and 2e-5, betas (0.5, 0.999), no gradient bound). With the Gaussian prior
//! only the generator learns: alternating back-propagation (Han et al. 2017).
//!
//! [`LatentTrainer::save_state`] and [`LatentTrainer::load_state`] put everything the trainer
//! needs to continue (weights, both Adams, the log, the configs) into an
//! [`ebm_train::Snapshot`]; the caller adds its random generator and data order.

use std::time::Instant;

use candle_core::Tensor;
use ebm_core::validate;
use ebm_nn::Trainable;
use ebm_train::{Adam, AdamConfig, Snapshot};
use serde::{Deserialize, Serialize};

use crate::langevin::{check_images, LatentLangevin};
use crate::{Error, LatentConfig, LatentModel, Result};

/// How a [`LatentModel`] is trained. Unknown keys are rejected when read from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The prior sampler for `z-` (the paper's 60 steps of size 0.4).
    pub prior_langevin: LatentLangevin,
    /// The posterior sampler for `z+` (the paper's 20 steps of size 0.1).
    pub posterior_langevin: LatentLangevin,
    /// Adam for the prior's energy (lr 2e-5, betas (0.5, 0.999)).
    pub prior_adam: AdamConfig,
    /// Adam for the generator (lr 1e-4, betas (0.5, 0.999)).
    pub generator_adam: AdamConfig,
}

impl Default for TrainConfig {
    /// The reference code's settings.
    fn default() -> Self {
        let adam = |lr| AdamConfig {
            beta1: 0.5,
            ..AdamConfig::kingma_ba(lr)
        };
        Self {
            prior_langevin: LatentLangevin::prior(),
            posterior_langevin: LatentLangevin::posterior(),
            prior_adam: adam(2e-5),
            generator_adam: adam(1e-4),
        }
    }
}

impl TrainConfig {
    /// Checks both samplers (Adam checks its own settings when built).
    pub fn validate(&self) -> Result<()> {
        self.prior_langevin.validate("prior_langevin")?;
        self.posterior_langevin.validate("posterior_langevin")?;
        Ok(())
    }
}

/// What one training step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step, from 1.
    pub step: usize,
    /// `mean_b |x_b - g(z+_b)|^2 / (2 sigma_x^2)`, before the update.
    pub generator_loss: f64,
    /// Mean squared error per pixel of `g(z+)` against `x` (in [-1, 1] units).
    pub mse: f64,
    /// `mean E(z+) - mean E(z-)`; `None` for the Gaussian prior.
    pub prior_loss: Option<f64>,
    /// `mean E(z+)` (posterior samples).
    pub energy_pos: Option<f64>,
    /// `mean E(z-)` (prior samples).
    pub energy_neg: Option<f64>,
    /// L2 norm of the generator's gradient.
    pub generator_grad_norm: f64,
    /// L2 norm of the prior's gradient.
    pub prior_grad_norm: Option<f64>,
    /// Seconds in the posterior chains.
    pub seconds_posterior: f64,
    /// Seconds in the prior chains.
    pub seconds_prior: f64,
    /// Seconds for the whole step.
    pub seconds: f64,
}

/// Trains a [`LatentModel`]: samplers, losses, two Adams and a log.
#[derive(Debug)]
pub struct LatentTrainer {
    model: LatentModel,
    config: TrainConfig,
    generator_adam: Adam,
    prior_adam: Option<Adam>,
    history: Vec<StepLog>,
}

fn finite(value: f64, step: usize, what: &str) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::Diverged {
            step: Some(step),
            what: what.to_string(),
        })
    }
}

/// The snapshot value that names the trainer that wrote it.
const KIND_KEY: &str = "trainer";
/// This trainer's name in snapshots.
const KIND: &str = "latent";

fn snapshot_error(problem: String) -> Error {
    ebm_train::Error::Snapshot(problem).into()
}

/// The top-level fields in which two configs differ, for an error message.
fn differing_fields<T: Serialize>(saved: &T, expected: &T) -> String {
    let (Ok(a), Ok(b)) = (serde_json::to_value(saved), serde_json::to_value(expected)) else {
        return "the configs could not be compared".into();
    };
    match (a.as_object(), b.as_object()) {
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
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

impl LatentTrainer {
    /// A trainer for `model`; fails on bad sampler or optimiser settings.
    pub fn new(model: LatentModel, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let generator_adam = Adam::new(
            model.generator().params().vars(),
            config.generator_adam.clone(),
        )?;
        let prior_adam = match model.prior() {
            Some(p) => Some(Adam::new(p.params().vars(), config.prior_adam.clone())?),
            None => None,
        };
        Ok(Self {
            model,
            config,
            generator_adam,
            prior_adam,
            history: Vec::new(),
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &LatentModel {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> LatentModel {
        self.model
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The generator's optimiser.
    pub fn generator_optimizer(&self) -> &Adam {
        &self.generator_adam
    }

    /// The prior's optimiser (`None` for the Gaussian prior).
    pub fn prior_optimizer(&self) -> Option<&Adam> {
        self.prior_adam.as_ref()
    }

    /// Every step's log so far.
    pub fn history(&self) -> &[StepLog] {
        &self.history
    }

    /// Puts everything the trainer needs to continue into `snapshot`: the generator's and the
    /// prior's weights (copied, so later steps do not change the snapshot), both optimisers'
    /// moments and step counts, the log, and the model and training configs. The caller adds
    /// its own state (random generator, data order) and writes it.
    pub fn save_state(&self, snapshot: &mut Snapshot) -> Result<()> {
        snapshot.set_value(KIND_KEY, &KIND)?;
        snapshot.set_value("latent.model_config", self.model.config())?;
        snapshot.set_value("latent.train_config", &self.config)?;
        snapshot.put_model("latent.generator", self.model.generator())?;
        if let Some(prior) = self.model.prior() {
            snapshot.put_model("latent.prior", prior)?;
        }
        snapshot.put_adam("latent.generator_adam", &self.generator_adam)?;
        if let Some(adam) = &self.prior_adam {
            snapshot.put_adam("latent.prior_adam", adam)?;
        }
        snapshot.set_value("latent.history", &self.history)?;
        Ok(())
    }

    /// Continues from a snapshot written by [`LatentTrainer::save_state`]: afterwards the
    /// trainer is in exactly the state it was saved in. Fails, saying so, when the snapshot
    /// is not a latent trainer's or was taken with another model or training config (checked
    /// before anything is changed).
    pub fn load_state(&mut self, snapshot: &Snapshot) -> Result<()> {
        let kind: String = snapshot.value(KIND_KEY).map_err(|_| {
            snapshot_error("it holds no latent-prior trainer (no `trainer` value)".into())
        })?;
        if kind != KIND {
            return Err(snapshot_error(format!(
                "it holds the state of a `{kind}` trainer, not of a latent-prior (`{KIND}`) trainer"
            )));
        }
        let model: LatentConfig = snapshot.value("latent.model_config")?;
        if &model != self.model.config() {
            return Err(snapshot_error(format!(
                "it was taken with another model config ({}); resume with the same recipe",
                differing_fields(&model, self.model.config())
            )));
        }
        let train: TrainConfig = snapshot.value("latent.train_config")?;
        if train != self.config {
            return Err(snapshot_error(format!(
                "it was taken with another training config ({}); resume with the same recipe",
                differing_fields(&train, &self.config)
            )));
        }
        let history: Vec<StepLog> = snapshot.value("latent.history")?;
        let (prior, generator) = self.model.parts_mut();
        snapshot.restore_model("latent.generator", generator)?;
        if let Some(prior) = prior {
            snapshot.restore_model("latent.prior", prior)?;
        }
        snapshot.restore_adam("latent.generator_adam", &mut self.generator_adam)?;
        if let Some(adam) = &mut self.prior_adam {
            snapshot.restore_adam("latent.prior_adam", adam)?;
        }
        self.history = history;
        Ok(())
    }

    /// One iteration on images `x [B, C, H, W]` in [-1, 1]: posterior samples, prior samples
    /// (EBM prior only), then [`LatentTrainer::update`].
    pub fn step<R: rand::Rng + Send + ?Sized>(
        &mut self,
        x: &Tensor,
        rng: &mut R,
    ) -> Result<StepLog> {
        let start = Instant::now();
        let batch = check_images(self.model.generator(), x, "training images x")?;
        let frozen = self.model.frozen()?;
        let z_pos = frozen.infer(x, &self.config.posterior_langevin, rng)?;
        let seconds_posterior = start.elapsed().as_secs_f64();
        let (z_neg, seconds_prior) = match frozen.prior() {
            Some(_) => {
                let prior_start = Instant::now();
                let z = frozen.sample_prior(batch, &self.config.prior_langevin, x.device(), rng)?;
                (Some(z), prior_start.elapsed().as_secs_f64())
            }
            None => (None, 0.0),
        };
        let mut log = self.update(x, &z_pos, z_neg.as_ref())?;
        log.seconds_posterior = seconds_posterior;
        log.seconds_prior = seconds_prior;
        log.seconds = start.elapsed().as_secs_f64();
        if let Some(last) = self.history.last_mut() {
            *last = log.clone();
        }
        Ok(log)
    }

    /// The losses `(generator loss, prior loss)` at given samples, without updating anything:
    /// what [`LatentTrainer::update`] minimises. The prior loss is `None` for the Gaussian prior.
    pub fn losses(
        &self,
        x: &Tensor,
        z_pos: &Tensor,
        z_neg: Option<&Tensor>,
    ) -> Result<(f64, Option<f64>)> {
        let (gen_loss, _, _) = self.generator_loss(x, z_pos)?;
        let prior = match self.model.prior() {
            Some(_) => Some(scalar(&self.prior_loss(z_pos, z_neg)?.0)?),
            None => None,
        };
        Ok((scalar(&gen_loss)?, prior))
    }

    fn generator_loss(&self, x: &Tensor, z_pos: &Tensor) -> Result<(Tensor, f64, usize)> {
        let batch = check_images(self.model.generator(), x, "training images x")?;
        if z_pos.dims() != [batch, self.model.latent_dim()] {
            return Err(ebm_core::Error::Shape {
                what: "posterior samples z+".into(),
                expected: format!("[{batch}, {}]", self.model.latent_dim()),
                got: z_pos.dims().to_vec(),
            }
            .into());
        }
        let x_hat = self.model.generate(&z_pos.detach())?;
        let sq = ((x_hat - x)?.sqr()?.sum_all()? / batch as f64)?;
        let pixels: usize = self.model.image_shape().iter().product();
        let mse = scalar(&sq)? / pixels as f64;
        let sigma = self.model.config().likelihood_sigma;
        Ok(((sq * (0.5 / (sigma * sigma)))?, mse, batch))
    }

    fn prior_loss(&self, z_pos: &Tensor, z_neg: Option<&Tensor>) -> Result<(Tensor, f64, f64)> {
        let z_neg = z_neg.ok_or_else(|| {
            ebm_core::Error::invalid("prior samples z-", "the EBM prior needs them, got none")
        })?;
        validate::check_batch_shape(z_neg, &[self.model.latent_dim()], "prior samples z-")?;
        let e_pos = self.model.prior_energy(&z_pos.detach())?.mean_all()?;
        let e_neg = self.model.prior_energy(&z_neg.detach())?.mean_all()?;
        let (p, n) = (scalar(&e_pos)?, scalar(&e_neg)?);
        Ok(((e_pos - e_neg)?, p, n))
    }

    /// The learning step at given samples: one Adam step on the generator loss at `z+`, and
    /// (EBM prior) one on the prior loss at `z+` and `z-`. `z_neg` is ignored by the Gaussian
    /// prior. Appends and returns the step's log (timings zero).
    pub fn update(
        &mut self,
        x: &Tensor,
        z_pos: &Tensor,
        z_neg: Option<&Tensor>,
    ) -> Result<StepLog> {
        let step = self.history.len() + 1;
        let (gen_loss, mse, _) = self.generator_loss(x, z_pos)?;
        let generator_loss = finite(scalar(&gen_loss)?, step, "the generator loss")?;
        let prior_part = match self.model.prior() {
            Some(_) => Some(self.prior_loss(z_pos, z_neg)?),
            None => None,
        };
        let generator_grad_norm = finite(
            self.generator_adam.step(&gen_loss.backward()?)?,
            step,
            "the generator's gradient",
        )?;
        let (mut prior_loss, mut energy_pos, mut energy_neg, mut prior_grad_norm) =
            (None, None, None, None);
        if let (Some((loss, p, n)), Some(adam)) = (prior_part, self.prior_adam.as_mut()) {
            prior_loss = Some(finite(scalar(&loss)?, step, "the prior loss")?);
            energy_pos = Some(p);
            energy_neg = Some(n);
            prior_grad_norm = Some(finite(
                adam.step(&loss.backward()?)?,
                step,
                "the prior's gradient",
            )?);
        }
        let log = StepLog {
            step,
            generator_loss,
            mse,
            prior_loss,
            energy_pos,
            energy_neg,
            generator_grad_norm,
            prior_grad_norm,
            seconds_posterior: 0.0,
            seconds_prior: 0.0,
            seconds: 0.0,
        };
        self.history.push(log.clone());
        Ok(log)
    }
}
