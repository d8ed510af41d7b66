//! Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) with unit mass: each iteration draws a
//! fresh momentum `p ~ N(0, I)`, integrates `H(x, p) = E(x) + ||p||^2 / 2` with `L` leapfrog
//! steps of size `eps`, and each chain accepts the end point with probability
//! `min(1, exp(H(x, p) - H(x', p')))`. The unadjusted variant keeps every end point.
//!
//! The leapfrog map is reversible (flip the momentum and it returns) and preserves volume, so
//! the Metropolis test makes each chain leave `exp(-E)` invariant; its energy error
//! `H(x', p') - H(x, p)` is O(eps^2) over a fixed trajectory length `L eps`.

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

fn adjusted_default() -> bool {
    true
}

/// Hyper-parameters of HMC. Checked by [`Hmc::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmcConfig {
    /// The leapfrog step size `eps` (> 0); with adaptation, the warm-up's starting point.
    pub step_size: f64,
    /// Leapfrog steps `L` per iteration (>= 1): each costs one energy-and-gradient evaluation.
    pub leapfrog_steps: usize,
    /// Sampling iterations after warm-up (>= 1).
    pub steps: usize,
    /// Warm-up iterations (adapting the step size when `adapt` is set).
    #[serde(default)]
    pub warmup: usize,
    /// Dual-averaging step-size adaptation during warm-up (needs `warmup >= 1`). For
    /// unadjusted HMC it adapts on the acceptance probability of the skipped Metropolis test.
    #[serde(default)]
    pub adapt: Option<DualAveragingConfig>,
    /// Metropolis correction with the Hamiltonian (true), or unadjusted HMC (false).
    #[serde(default = "adjusted_default")]
    pub adjusted: bool,
    /// Step-size jitter `j` in [0, 1): each iteration uses `eps (1 + j u)` with `u ~ U(-1, 1)`
    /// drawn once for all chains (Neal 2011, "MCMC using Hamiltonian dynamics", 5.4.2.2). With a
    /// fixed `L eps`, near-Gaussian targets can have trajectories that return close to their
    /// start (a whole period) and chains that barely move; jitter breaks that resonance.
    /// 0 (the default) keeps every step at `eps`. Reversibility is kept: the step of an
    /// iteration does not depend on the state. Adaptation and the step-size trace see the
    /// un-jittered `eps`.
    #[serde(default)]
    pub jitter: f64,
    /// What to record per chain after warm-up.
    #[serde(default)]
    pub trace: TraceConfig,
}

impl HmcConfig {
    /// Metropolis-adjusted HMC with `leapfrog_steps` steps of `step_size` per iteration,
    /// `steps` iterations, no warm-up, energies recorded.
    pub fn new(step_size: f64, leapfrog_steps: usize, steps: usize) -> Self {
        Self {
            step_size,
            leapfrog_steps,
            steps,
            warmup: 0,
            adapt: None,
            adjusted: true,
            jitter: 0.0,
            trace: TraceConfig::default(),
        }
    }

    /// With step-size jitter in [0, 1) (see [`HmcConfig::jitter`]).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Without the Metropolis correction.
    pub fn unadjusted(mut self) -> Self {
        self.adjusted = false;
        self
    }

    /// `warmup` iterations of dual averaging towards `target_accept` (0.65 in the NUTS paper;
    /// about optimal for HMC in high dimension, Beskos et al. 2013) before sampling.
    ///
    /// With a fixed `L` the acceptance of HMC is not monotone in `eps` on near-Gaussian targets
    /// (some trajectory lengths nearly return to their start, and `eps` near the leapfrog's
    /// stability limit `2 / sqrt(largest curvature)` is a cliff), so in few dimensions or with
    /// a short warm-up the realised acceptance can miss a mid-range target by 0.1 or more
    /// (measured on a 10-D Gaussian, L = 10, 150 warm-up iterations: target 0.65, realised
    /// 0.63 to 0.82 over seeds; target 0.8 or 0.9, within 0.03). Check
    /// [`crate::RunStats::mean_accept_prob`]; MALA does not have this problem.
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

/// A validated HMC sampler.
#[derive(Debug, Clone)]
pub struct Hmc {
    config: HmcConfig,
}

impl Hmc {
    /// Checks the hyper-parameters: step size > 0, `leapfrog_steps >= 1`, `steps >= 1`,
    /// jitter in [0, 1), adaptation settings with at least one warm-up iteration, `trace.every >= 1`.
    pub fn new(config: HmcConfig) -> Result<Self> {
        validate::positive("step_size", config.step_size)?;
        validate::at_least_one("leapfrog_steps", config.leapfrog_steps)?;
        validate::at_least_one("steps", config.steps)?;
        if !(config.jitter.is_finite() && (0.0..1.0).contains(&config.jitter)) {
            return Err(ebm_core::Error::invalid(
                "jitter",
                format!("must lie in [0, 1), got {}", config.jitter),
            )
            .into());
        }
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
    pub fn config(&self) -> &HmcConfig {
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

impl Sampler for Hmc {
    fn name(&self) -> String {
        if self.config.adjusted {
            "HMC".into()
        } else {
            "unadjusted HMC".into()
        }
    }

    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        drive(self, &self.plan(), energy, x0, rng)
    }
}

impl Kernel for Hmc {
    fn kernel_name(&self) -> String {
        self.name()
    }

    fn transition(
        &self,
        energy: &dyn Energy,
        state: &mut ChainState,
        eps: f64,
        rng: &mut dyn RngCore,
    ) -> Result<Transition> {
        let l = self.config.leapfrog_steps;
        let eps = if self.config.jitter > 0.0 {
            let u: f64 = rand::Rng::random(rng);
            eps * (1.0 + self.config.jitter * (2.0 * u - 1.0))
        } else {
            eps
        };
        let p0 = noise::normal_like(rng, &state.x)?;
        let k0 = row_sq_norms(&p0)?;
        let end = leapfrog(energy, &state.x, &p0, &state.grad, eps, l)?;
        let e1 = to_host(&end.energy)?;
        let k1 = row_sq_norms(&end.momentum)?;
        // log ratio = H(x, p) - H(x', p').
        let log_ratio: Vec<f64> = (0..e1.len())
            .map(|c| (state.energy_host[c] + 0.5 * k0[c]) - (e1[c] + 0.5 * k1[c]))
            .collect();
        let mut t = metropolis(&log_ratio, rng);
        t.grad_evals = l;
        if !self.config.adjusted {
            if let Some(c) = log_ratio.iter().position(|r| !r.is_finite()) {
                t.diverged = Some(format!(
                    "the Hamiltonian of chain {c} (energy {}) after {l} leapfrog steps of {eps}",
                    e1[c]
                ));
                return Ok(t);
            }
            t.accepted.iter_mut().for_each(|a| *a = true);
        }
        state.accept(&t.accepted, &end.x, &end.energy, &e1, &end.grad)?;
        Ok(t)
    }
}

/// The end of a leapfrog trajectory, with the energy and gradient there.
#[derive(Debug, Clone)]
pub struct Trajectory {
    /// The positions, shape of the start.
    pub x: Tensor,
    /// The momenta.
    pub momentum: Tensor,
    /// `E(x)`, `[B]`, detached.
    pub energy: Tensor,
    /// `grad E(x)`.
    pub grad: Tensor,
}

/// `steps` leapfrog steps of size `step_size` for `H(x, p) = E(x) + ||p||^2 / 2` (unit mass),
/// from `(x, momentum)` with `grad = grad E(x)` already known: a half step in momentum, then
/// alternating full steps in position and momentum, then a half step in momentum. Costs
/// `steps` energy-and-gradient evaluations.
pub fn leapfrog(
    energy: &dyn Energy,
    x: &Tensor,
    momentum: &Tensor,
    grad: &Tensor,
    step_size: f64,
    steps: usize,
) -> Result<Trajectory> {
    validate::positive("step_size", step_size)?;
    validate::at_least_one("leapfrog_steps", steps)?;
    let mut x = x.clone();
    let mut p = (momentum - (grad * (0.5 * step_size))?)?;
    let mut e = None;
    let mut g = grad.clone();
    for l in 0..steps {
        x = (x + (&p * step_size)?)?;
        let (e_l, g_l) = energy.energy_and_grad(&x)?;
        let scale = if l + 1 == steps {
            0.5 * step_size
        } else {
            step_size
        };
        p = (p - (&g_l * scale)?)?;
        e = Some(e_l);
        g = g_l;
    }
    Ok(Trajectory {
        x,
        momentum: p,
        energy: e.expect("at least one leapfrog step").detach(),
        grad: g,
    })
}
