//! The Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996), with the exact proposal
//! density and one accept/reject decision per chain.
//!
//! Proposal: `x' = x - eta grad E(x) + sqrt(2 eta) N(0, I)`, whose density is
//! `q(x' | x) ∝ exp(-||x' - x + eta grad E(x)||^2 / (4 eta))`. Each chain (batch row) accepts its
//! own proposal with probability `min(1, exp(E(x) - E(x')) q(x | x') / q(x' | x))`, so the chain
//! leaves `exp(-E)` invariant at any step size; the unadjusted chain ([`crate::Langevin`] with
//! [`crate::LangevinConfig::matched`]) is biased by O(eta).

use candle_core::Tensor;
use ebm_core::{noise, validate, Energy};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::adapt::DualAveragingConfig;
use crate::sampler::{
    drive, metropolis, row_sq_norms, to_host, ChainState, Kernel, Plan, SamplerRun, TraceConfig,
    Transition,
};
use crate::{Result, Sampler};

/// Hyper-parameters of MALA. Checked by [`Mala::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MalaConfig {
    /// `eta` (> 0): the gradient multiplier; the proposal noise is `sqrt(2 eta)`. With
    /// adaptation, the starting point of the warm-up.
    pub step_size: f64,
    /// Sampling iterations after warm-up (>= 1).
    pub steps: usize,
    /// Warm-up iterations: the step size adapts during them when `adapt` is set; either way
    /// they are left out of the acceptance statistics and the recorded draws.
    #[serde(default)]
    pub warmup: usize,
    /// Dual-averaging step-size adaptation during warm-up (needs `warmup >= 1`).
    #[serde(default)]
    pub adapt: Option<DualAveragingConfig>,
    /// What to record per chain after warm-up.
    #[serde(default)]
    pub trace: TraceConfig,
}

impl MalaConfig {
    /// `steps` iterations at a fixed step size, no warm-up, energies recorded.
    pub fn new(step_size: f64, steps: usize) -> Self {
        Self {
            step_size,
            steps,
            warmup: 0,
            adapt: None,
            trace: TraceConfig::default(),
        }
    }

    /// `warmup` iterations of dual averaging towards `target_accept` (0.574 is optimal for
    /// MALA in high dimension, Roberts & Rosenthal 1998) before sampling.
    pub fn with_adaptation(mut self, warmup: usize, target_accept: f64) -> Self {
        self.warmup = warmup;
        self.adapt = Some(DualAveragingConfig::new(target_accept));
        self
    }

    /// `warmup` burn-in iterations at the fixed step size before sampling.
    pub fn with_warmup(mut self, warmup: usize) -> Self {
        self.warmup = warmup;
        self
    }

    /// Records each chain's first `coords` coordinates (and its energy) every `every`-th
    /// sampling iteration.
    pub fn with_trace(mut self, coords: usize, every: usize) -> Self {
        self.trace = TraceConfig { coords, every };
        self
    }
}

/// A validated MALA sampler.
#[derive(Debug, Clone)]
pub struct Mala {
    config: MalaConfig,
}

impl Mala {
    /// Checks the hyper-parameters: step size > 0, at least one step, adaptation settings
    /// (target acceptance in (0, 1)) with at least one warm-up iteration, `trace.every >= 1`.
    pub fn new(config: MalaConfig) -> Result<Self> {
        validate::positive("step_size", config.step_size)?;
        validate::at_least_one("steps", config.steps)?;
        if let Some(a) = &config.adapt {
            a.check()?;
            if config.warmup == 0 {
                return Err(ebm_core::Error::invalid(
                    "warmup",
                    "step-size adaptation needs at least 1 warm-up iteration, got 0",
                )
                .into());
            }
        }
        config.trace.check()?;
        Ok(Self { config })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &MalaConfig {
        &self.config
    }

    fn plan(&self) -> Plan {
        let c = &self.config;
        Plan {
            step_size: c.step_size,
            warmup: c.warmup,
            steps: c.steps,
            adapt: c.adapt.clone(),
            trace: c.trace,
        }
    }
}

impl Sampler for Mala {
    fn name(&self) -> String {
        "MALA".into()
    }

    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        drive(self, &self.plan(), energy, x0, rng)
    }
}

impl Kernel for Mala {
    fn kernel_name(&self) -> String {
        self.name()
    }

    fn transition(
        &self,
        energy: &dyn Energy,
        state: &mut ChainState,
        eta: f64,
        rng: &mut dyn RngCore,
    ) -> Result<Transition> {
        let xi = noise::normal_like(rng, &state.x)?;
        let y = ((&state.x - (&state.grad * eta)?)? + (xi * (2.0 * eta).sqrt())?)?;
        let (e_y, g_y) = energy.energy_and_grad(&y)?;
        let e_y_host = to_host(&e_y)?;
        let log_ratio = log_ratio(
            (&state.x, &state.energy_host, &state.grad),
            (&y, &e_y_host, &g_y),
            eta,
        )?;
        let mut t = metropolis(&log_ratio, rng);
        t.grad_evals = 1;
        state.accept(&t.accepted, &y, &e_y, &e_y_host, &g_y)?;
        Ok(t)
    }
}

/// `log q(to | from)` of the MALA proposal up to its constant, per chain:
/// `-||to - from + eta grad_from||^2 / (4 eta)`, with `grad_from = grad E(from)`.
pub fn mala_log_proposal(
    to: &Tensor,
    from: &Tensor,
    grad_from: &Tensor,
    step_size: f64,
) -> Result<Vec<f64>> {
    let r = ((to - from)? + (grad_from * step_size)?)?;
    Ok(row_sq_norms(&r)?
        .into_iter()
        .map(|s| -s / (4.0 * step_size))
        .collect())
}

/// The log Metropolis-Hastings ratio of moving each chain from `x` to `y`,
/// `E(x) - E(y) + log q(x | y) - log q(y | x)`: what [`Mala`] compares with `ln u`. Public for
/// checks of detailed balance.
pub fn mala_log_acceptance(
    energy: &dyn Energy,
    x: &Tensor,
    y: &Tensor,
    step_size: f64,
) -> Result<Vec<f64>> {
    let (e_x, g_x) = energy.energy_and_grad(x)?;
    let (e_y, g_y) = energy.energy_and_grad(y)?;
    log_ratio(
        (x, &to_host(&e_x)?, &g_x),
        (y, &to_host(&e_y)?, &g_y),
        step_size,
    )
}

/// The log ratio from a point `(x, E(x), grad E(x))` to a proposal `(y, E(y), grad E(y))`.
fn log_ratio(
    (x, e_x, g_x): (&Tensor, &[f64], &Tensor),
    (y, e_y, g_y): (&Tensor, &[f64], &Tensor),
    eta: f64,
) -> Result<Vec<f64>> {
    let forward = mala_log_proposal(y, x, g_x, eta)?;
    let backward = mala_log_proposal(x, y, g_y, eta)?;
    Ok((0..e_x.len())
        .map(|c| (e_x[c] - e_y[c]) + backward[c] - forward[c])
        .collect())
}
