//! Langevin dynamics with separately set step size and noise scale, per-element gradient
//! clipping and clamping to the data range.

use std::time::Instant;

use candle_core::Tensor;
use ebm_core::{noise, validate, Energy};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::sampler::{drive, to_host, ChainState, Kernel, Plan, TraceConfig, Transition};
use crate::{Error, Result, Sampler, SamplerRun};

/// Hyper-parameters of a Langevin chain. Checked by [`Langevin::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangevinConfig {
    /// The multiplier of the gradient in each step (> 0).
    pub step_size: f64,
    /// The standard deviation of the Gaussian noise added in each step (>= 0).
    pub noise_scale: f64,
    /// The number of steps K (>= 1).
    pub steps: usize,
    /// Clip each element of the gradient to `[-c, c]` before the step.
    pub grad_clip: Option<f64>,
    /// Clamp the samples to `[low, high]` after each step (the data range).
    pub clamp: Option<(f64, f64)>,
}

impl LangevinConfig {
    /// The IGEBM paper's CIFAR-10 sampler: step 10, noise 0.005, gradient clip 0.01, samples
    /// clamped to [0, 1], 60 steps.
    pub fn igebm() -> Self {
        Self {
            step_size: 10.0,
            noise_scale: 0.005,
            steps: 60,
            grad_clip: Some(0.01),
            clamp: Some((0.0, 1.0)),
        }
    }

    /// The unadjusted Langevin algorithm, `x <- x - eps grad E + sqrt(2 eps) N(0, I)`, whose
    /// stationary law approaches `exp(-E)` as `eps -> 0`. No clipping, no clamping.
    pub fn matched(step_size: f64, steps: usize) -> Self {
        Self {
            step_size,
            noise_scale: (2.0 * step_size.max(0.0)).sqrt(),
            steps,
            grad_clip: None,
            clamp: None,
        }
    }

    /// This config with another number of steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }
}

/// A validated Langevin sampler.
#[derive(Debug, Clone)]
pub struct Langevin {
    config: LangevinConfig,
}

/// What a chain returns.
#[derive(Debug, Clone)]
pub struct LangevinRun {
    /// The final samples, detached, shape of the start.
    pub samples: Tensor,
    /// Energies of the samples before the last step's move, `[B]`.
    pub energies: Tensor,
    /// Mean energy before each step.
    pub energy_trace: Vec<f64>,
    /// Wall-clock seconds per step.
    pub seconds_per_step: f64,
}

impl Langevin {
    /// Checks the hyper-parameters: step size > 0, noise >= 0, at least one step, a positive
    /// clip, a clamp range with low < high.
    pub fn new(config: LangevinConfig) -> Result<Self> {
        validate::positive("step_size", config.step_size)?;
        validate::non_negative("noise_scale", config.noise_scale)?;
        validate::at_least_one("steps", config.steps)?;
        if let Some(c) = config.grad_clip {
            validate::positive("grad_clip", c)?;
        }
        if let Some((lo, hi)) = config.clamp {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(ebm_core::Error::invalid(
                    "clamp",
                    format!("needs finite low < high, got ({lo}, {hi})"),
                )
                .into());
            }
        }
        Ok(Self { config })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LangevinConfig {
        &self.config
    }

    /// Runs `config.steps` steps from `x0`, drawing noise from `rng`.
    pub fn run<E, R>(&self, energy: &E, x0: &Tensor, rng: &mut R) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        self.run_masked(energy, x0, None, rng)
    }

    /// Like [`Langevin::run`], but only elements where `mask` is 1 move (`mask` broadcasts
    /// against `x0`; 0 keeps the start value): inpainting and denoising.
    pub fn run_masked<E, R>(
        &self,
        energy: &E,
        x0: &Tensor,
        mask: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        let c = &self.config;
        if let Some(shape) = energy.sample_shape() {
            validate::check_batch_shape(x0, &shape, "Langevin start")?;
        }
        validate::check_finite(x0, "Langevin start")?;
        let mask = match mask {
            Some(m) => Some(m.to_dtype(x0.dtype())?.broadcast_as(x0.shape())?),
            None => None,
        };
        let mut x = x0.detach();
        let mut trace = Vec::with_capacity(c.steps);
        let mut energies = None;
        let start = Instant::now();
        for step in 1..=c.steps {
            let (e, grad) = energy.energy_and_grad(&x)?;
            let mean = e
                .mean_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            if !mean.is_finite() {
                return Err(Error::Diverged {
                    step,
                    steps: c.steps,
                });
            }
            trace.push(mean);
            energies = Some(e);
            let grad = match c.grad_clip {
                Some(clip) => grad.clamp(-clip, clip)?,
                None => grad,
            };
            let mut delta = (grad * (-c.step_size))?;
            if c.noise_scale > 0.0 {
                delta = (delta + (noise::normal_like(rng, &x)? * c.noise_scale)?)?;
            }
            if let Some(m) = &mask {
                delta = (delta * m)?;
            }
            x = (x + delta)?;
            if let Some((lo, hi)) = c.clamp {
                x = x.clamp(lo, hi)?;
            }
        }
        let seconds_per_step = start.elapsed().as_secs_f64() / c.steps as f64;
        Ok(LangevinRun {
            samples: x,
            energies: energies.expect("at least one step"),
            energy_trace: trace,
            seconds_per_step,
        })
    }

    /// Short-run sampling from noise: `batch` chains started from the uniform distribution
    /// on the clamp range (or [0, 1]), each of shape `sample_shape`.
    pub fn sample_from_noise<E, R>(
        &self,
        energy: &E,
        batch: usize,
        sample_shape: &[usize],
        device: &candle_core::Device,
        rng: &mut R,
    ) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        validate::at_least_one("batch", batch)?;
        let (lo, hi) = self.config.clamp.unwrap_or((0.0, 1.0));
        let mut shape = vec![batch];
        shape.extend_from_slice(sample_shape);
        let x0 = noise::uniform(rng, shape, lo, hi, candle_core::DType::F32, device)?;
        self.run(energy, &x0, rng)
    }
}

/// Through the trait, a Langevin chain records per-chain energies like every other sampler:
/// no warm-up, `config.steps` iterations, acceptance 1, and the same samples as
/// [`Langevin::run`] for the same generator state (the same noise, drawn in the same order).
/// Unlike [`LangevinRun::energies`], [`SamplerRun::energies`] are those of the final samples,
/// and a NaN or infinite energy is [`Error::SamplerDiverged`].
impl Sampler for Langevin {
    fn name(&self) -> String {
        "Langevin".into()
    }

    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        let plan = Plan {
            step_size: self.config.step_size,
            warmup: 0,
            steps: self.config.steps,
            adapt: None,
            trace: TraceConfig::default(),
        };
        drive(self, &plan, energy, x0, rng)
    }
}

impl Kernel for Langevin {
    fn kernel_name(&self) -> String {
        Sampler::name(self)
    }

    fn transition(
        &self,
        energy: &dyn Energy,
        state: &mut ChainState,
        step_size: f64,
        rng: &mut dyn RngCore,
    ) -> Result<Transition> {
        let c = &self.config;
        // The same operations, in the same order, as `run_masked`.
        let grad = match c.grad_clip {
            Some(clip) => state.grad.clamp(-clip, clip)?,
            None => state.grad.clone(),
        };
        let mut delta = (grad * (-step_size))?;
        if c.noise_scale > 0.0 {
            delta = (delta + (noise::normal_like(rng, &state.x)? * c.noise_scale)?)?;
        }
        let mut x = (&state.x + delta)?;
        if let Some((lo, hi)) = c.clamp {
            x = x.clamp(lo, hi)?;
        }
        let (e, g) = energy.energy_and_grad(&x)?;
        let e_host = to_host(&e)?;
        let chains = e_host.len();
        let diverged = e_host
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| format!("the energy of chain {i}"));
        let all = vec![true; chains];
        if diverged.is_none() {
            state.accept(&all, &x, &e, &e_host, &g)?;
        }
        Ok(Transition {
            accept_prob: vec![1.0; chains],
            accepted: all,
            divergent: vec![false; chains],
            grad_evals: 1,
            diverged,
        })
    }
}
