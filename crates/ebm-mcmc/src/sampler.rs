//! The [`Sampler`] trait that every sampler implements, what a run returns ([`SamplerRun`],
//! [`RunStats`], [`Draws`]), and the chain driver that MALA, HMC and Langevin share: warm-up,
//! step-size adaptation, per-chain acceptance, traces.
//!
//! A batch `[B, ...]` is `B` independent chains. Each chain (batch row) takes its own
//! accept/reject decision; the step size is one number shared by the chains.

use std::time::Instant;

use candle_core::{DType, Tensor};
use ebm_core::{validate, Energy};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::adapt::{DualAveraging, DualAveragingConfig};
use crate::{Error, Result};

/// A Markov chain Monte Carlo sampler of `p(x) ∝ exp(-E(x))` over any [`Energy`].
///
/// The trait is object safe: `Box<dyn Sampler>` and `&dyn Sampler` work, so a trainer can hold
/// whichever sampler its config names. The energy and the generator are trait objects too; a
/// caller with a generic `rng: &mut R` (`R: rand::Rng + ?Sized`) passes `&mut rng` (a
/// `&mut &mut R`, which is a sized `RngCore`), and a caller with a generic energy `e: &E`
/// passes `&e`.
///
/// ```
/// use candle_core::{DType, Device};
/// use ebm_core::{analytic::Gaussian, noise, seeded_rng};
/// use ebm_mcmc::{Hmc, HmcConfig, Langevin, LangevinConfig, Mala, MalaConfig, Sampler};
///
/// # fn main() -> ebm_mcmc::Result<()> {
/// let target = Gaussian::new(vec![1.0, -1.0], vec![0.5, 2.0])?;
/// let samplers: Vec<Box<dyn Sampler>> = vec![
///     Box::new(Langevin::new(LangevinConfig::matched(0.05, 200))?),
///     Box::new(Mala::new(MalaConfig::new(0.1, 150).with_adaptation(50, 0.574))?),
///     Box::new(Hmc::new(HmcConfig::new(0.2, 8, 40).with_adaptation(20, 0.65))?),
/// ];
/// let mut rng = seeded_rng(0);
/// let x0 = noise::normal(&mut rng, (500, 2), DType::F64, &Device::Cpu)?;
/// for sampler in &samplers {
///     let run = sampler.run(&target, &x0, &mut rng)?;
///     let mean = run.samples.mean(0)?.to_vec1::<f64>()?;
///     assert!((mean[0] - 1.0).abs() < 0.15, "{}: {mean:?}", sampler.name());
/// }
/// # Ok(())
/// # }
/// ```
pub trait Sampler {
    /// A short name for reports and errors, e.g. `"MALA"` or `"annealed HMC"`.
    fn name(&self) -> String;

    /// Runs the chains from `x0 [B, ...]` (one chain per row), drawing every random number from
    /// `rng`: the same seed gives the same samples.
    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun>;
}

impl<S: Sampler + ?Sized> Sampler for &S {
    fn name(&self) -> String {
        (**self).name()
    }
    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        (**self).run(energy, x0, rng)
    }
}

impl<S: Sampler + ?Sized> Sampler for Box<S> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        (**self).run(energy, x0, rng)
    }
}

/// What a run returns: the final samples, their energies, the statistics and the recorded
/// per-chain draws.
#[derive(Debug, Clone)]
pub struct SamplerRun {
    /// The final state of every chain, detached, shape and dtype of the start.
    pub samples: Tensor,
    /// The energies of `samples` under the energy passed to [`Sampler::run`], `[B]`.
    pub energies: Tensor,
    /// Acceptance, step size, traces, cost.
    pub stats: RunStats,
    /// Per-chain traces after warm-up, for [`crate::diagnostics`].
    pub draws: Draws,
}

impl SamplerRun {
    /// ESS, R-hat and acceptance of this run (see [`crate::Diagnostics`]).
    pub fn diagnostics(&self) -> Result<crate::Diagnostics> {
        crate::Diagnostics::of(self)
    }
}

/// Statistics of a run, as plain data (serialise with serde for reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// [`Sampler::name`].
    pub sampler: String,
    /// The number of chains `B`.
    pub chains: usize,
    /// Warm-up iterations (over all stages when annealed).
    pub warmup: usize,
    /// Sampling iterations after warm-up (over all stages when annealed).
    pub steps: usize,
    /// The step size used after warm-up (the adapted one when adapting; of the last stage when
    /// annealed).
    pub step_size: f64,
    /// The step size of every iteration, warm-up included.
    pub step_size_trace: Vec<f64>,
    /// The mean energy of the chains after every iteration, warm-up included (when annealed,
    /// under each stage's energy).
    pub energy_trace: Vec<f64>,
    /// Per chain: the mean acceptance probability `min(1, ratio)` over the sampling
    /// iterations (1 for unadjusted samplers; for unadjusted HMC, that of the Metropolis test
    /// it skips, a measure of its integration error).
    pub accept_prob: Vec<f64>,
    /// Per chain: the fraction of sampling iterations whose proposal was accepted.
    pub accept_rate: Vec<f64>,
    /// Per chain: proposals rejected because their energy, gradient or acceptance ratio was NaN
    /// or infinite, warm-up included.
    pub divergences: Vec<usize>,
    /// Energy-and-gradient evaluations per chain, the start's included: the cost in model
    /// calls, comparable across samplers (Langevin and MALA 1 per iteration, HMC L).
    pub grad_evals: usize,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// One entry per annealing stage (empty when not annealed).
    pub stages: Vec<StageStats>,
}

impl RunStats {
    /// The mean over chains of [`RunStats::accept_prob`].
    pub fn mean_accept_prob(&self) -> f64 {
        mean(&self.accept_prob)
    }

    /// The mean over chains of [`RunStats::accept_rate`].
    pub fn mean_accept_rate(&self) -> f64 {
        mean(&self.accept_rate)
    }

    /// All chains' divergences.
    pub fn total_divergences(&self) -> usize {
        self.divergences.iter().sum()
    }

    /// Wall-clock seconds per iteration, warm-up included.
    pub fn seconds_per_step(&self) -> f64 {
        self.seconds / (self.warmup + self.steps).max(1) as f64
    }
}

/// One annealing stage's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    /// The temperature `T_k` or the interpolation weight `b_k` of the stage.
    pub value: f64,
    /// The step size after the stage's warm-up.
    pub step_size: f64,
    /// The stage's mean acceptance probability over its sampling iterations.
    pub mean_accept_prob: f64,
    /// The mean energy (under the stage's energy) at the end of the stage.
    pub final_energy: f64,
}

/// What a run records per chain after warm-up, besides the statistics. Every `every`-th
/// sampling iteration it keeps each chain's energy and its first `coords` coordinates
/// (flattened sample order), e.g. a few pixels of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Leading coordinates to record per chain (0: energies only).
    pub coords: usize,
    /// Thinning: record every `every`-th sampling iteration (>= 1).
    pub every: usize,
}

impl Default for TraceConfig {
    /// Energies only, every iteration.
    fn default() -> Self {
        Self {
            coords: 0,
            every: 1,
        }
    }
}

impl TraceConfig {
    /// Checks `every >= 1`.
    pub fn check(&self) -> Result<()> {
        validate::at_least_one("trace.every", self.every)?;
        Ok(())
    }
}

/// Per-chain traces recorded after warm-up (see [`TraceConfig`]), in the layout that
/// [`crate::diagnostics`] takes: `[chain][draw]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Draws {
    /// The thinning used.
    pub every: usize,
    /// `energy[chain][draw]`.
    pub energy: Vec<Vec<f64>>,
    /// `coords[coordinate][chain][draw]`.
    pub coords: Vec<Vec<Vec<f64>>>,
}

impl Draws {
    /// The number of draws per chain.
    pub fn len(&self) -> usize {
        self.energy.first().map_or(0, |c| c.len())
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn new(chains: usize, coords: usize, every: usize) -> Self {
        Self {
            every,
            energy: vec![Vec::new(); chains],
            coords: vec![vec![Vec::new(); chains]; coords],
        }
    }

    fn record(&mut self, state: &ChainState) -> Result<()> {
        for (c, e) in state.energy_host.iter().enumerate() {
            self.energy[c].push(*e);
        }
        let k = self.coords.len();
        if k > 0 {
            let rows = state
                .x
                .flatten_from(1)?
                .narrow(1, 0, k)?
                .to_dtype(DType::F64)?
                .to_vec2::<f64>()?;
            for (c, row) in rows.iter().enumerate() {
                for (d, v) in row.iter().enumerate() {
                    self.coords[d][c].push(*v);
                }
            }
        }
        Ok(())
    }
}

/// The current state of a batch of chains, with the energy and gradient at it cached so that
/// each transition evaluates the energy only at new points.
#[derive(Debug, Clone)]
pub(crate) struct ChainState {
    pub x: Tensor,
    pub energy: Tensor,
    pub energy_host: Vec<f64>,
    pub grad: Tensor,
}

impl ChainState {
    /// Checks the start (shape against the energy's sample shape, finite values, finite
    /// energies) and evaluates the energy and gradient there.
    pub fn new(energy: &dyn Energy, x0: &Tensor, sampler: &str) -> Result<Self> {
        let what = format!("{sampler} start");
        if let Some(shape) = energy.sample_shape() {
            validate::check_batch_shape(x0, &shape, &what)?;
        } else if x0.rank() < 2 || x0.dims()[0] == 0 {
            return Err(ebm_core::Error::Shape {
                what,
                expected: "[batch >= 1, ...] (one chain per row)".into(),
                got: x0.dims().to_vec(),
            }
            .into());
        }
        validate::check_finite(x0, &what)?;
        let x = x0.detach();
        let (e, grad) = energy.energy_and_grad(&x)?;
        let energy_host = to_host(&e)?;
        if energy_host.iter().any(|v| !v.is_finite()) {
            return Err(ebm_core::Error::NonFinite {
                what: format!("the energy of the {sampler} start"),
            }
            .into());
        }
        Ok(Self {
            x,
            energy: e.detach(),
            energy_host,
            grad,
        })
    }

    pub fn chains(&self) -> usize {
        self.energy_host.len()
    }

    /// Moves the chains where `accept` is true to the proposal.
    pub fn accept(
        &mut self,
        accept: &[bool],
        x: &Tensor,
        energy: &Tensor,
        energy_host: &[f64],
        grad: &Tensor,
    ) -> Result<()> {
        self.x = select_rows(accept, x, &self.x)?;
        self.grad = select_rows(accept, grad, &self.grad)?;
        self.energy = select_rows(accept, &energy.detach(), &self.energy)?;
        for (c, &a) in accept.iter().enumerate() {
            if a {
                self.energy_host[c] = energy_host[c];
            }
        }
        Ok(())
    }
}

/// What one transition of every chain did.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    /// Per chain, `min(1, ratio)` (0 for a non-finite proposal).
    pub accept_prob: Vec<f64>,
    /// Per chain, whether it moved.
    pub accepted: Vec<bool>,
    /// Per chain, whether the proposal was non-finite (and rejected).
    pub divergent: Vec<bool>,
    /// Energy-and-gradient evaluations per chain.
    pub grad_evals: usize,
    /// For unadjusted kernels: what became non-finite (the run fails).
    pub diverged: Option<String>,
}

/// One Markov transition of a batch of chains at a given step size.
pub(crate) trait Kernel {
    fn kernel_name(&self) -> String;
    fn transition(
        &self,
        energy: &dyn Energy,
        state: &mut ChainState,
        step_size: f64,
        rng: &mut dyn RngCore,
    ) -> Result<Transition>;
}

/// How many iterations a kernel runs and how its step size is chosen.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub step_size: f64,
    pub warmup: usize,
    pub steps: usize,
    pub adapt: Option<DualAveragingConfig>,
    pub trace: TraceConfig,
}

/// Runs `plan.warmup + plan.steps` transitions of `kernel` from `x0`.
pub(crate) fn drive<K: Kernel + ?Sized>(
    kernel: &K,
    plan: &Plan,
    energy: &dyn Energy,
    x0: &Tensor,
    rng: &mut dyn RngCore,
) -> Result<SamplerRun> {
    let name = kernel.kernel_name();
    let start = Instant::now();
    let mut state = ChainState::new(energy, x0, &name)?;
    let chains = state.chains();
    let total = plan.warmup + plan.steps;
    let mut adapt = match &plan.adapt {
        Some(cfg) => Some(DualAveraging::new(cfg, plan.step_size)?),
        None => None,
    };
    let mut step_size = plan.step_size;
    let coords = plan.trace.coords.min(state.x.elem_count() / chains.max(1));
    let mut draws = Draws::new(chains, coords, plan.trace.every);
    let mut step_size_trace = Vec::with_capacity(total);
    let mut energy_trace = Vec::with_capacity(total);
    let mut accept_prob = vec![0.0; chains];
    let mut accepted = vec![0usize; chains];
    let mut divergences = vec![0usize; chains];
    let mut grad_evals = 1;
    for it in 0..total {
        let warm = it < plan.warmup;
        if it == plan.warmup {
            if let Some(da) = &adapt {
                step_size = da.final_step_size();
            }
        }
        let eps = match (&adapt, warm) {
            (Some(da), true) => da.step_size(),
            _ => step_size,
        };
        let t = kernel.transition(energy, &mut state, eps, rng)?;
        if let Some(what) = t.diverged {
            return Err(Error::SamplerDiverged {
                sampler: name,
                iteration: it + 1,
                iterations: total,
                what,
            });
        }
        grad_evals += t.grad_evals;
        step_size_trace.push(eps);
        energy_trace.push(mean(&state.energy_host));
        for (d, &bad) in divergences.iter_mut().zip(&t.divergent) {
            *d += bad as usize;
        }
        if warm {
            if let Some(da) = adapt.as_mut() {
                da.update(mean(&t.accept_prob));
            }
        } else {
            for c in 0..chains {
                accept_prob[c] += t.accept_prob[c];
                accepted[c] += t.accepted[c] as usize;
            }
            if (it - plan.warmup).is_multiple_of(plan.trace.every) {
                draws.record(&state)?;
            }
        }
    }
    let n = plan.steps as f64;
    Ok(SamplerRun {
        samples: state.x,
        energies: state.energy,
        stats: RunStats {
            sampler: name,
            chains,
            warmup: plan.warmup,
            steps: plan.steps,
            step_size,
            step_size_trace,
            energy_trace,
            accept_prob: accept_prob.iter().map(|a| a / n).collect(),
            accept_rate: accepted.iter().map(|&a| a as f64 / n).collect(),
            divergences,
            grad_evals,
            seconds: start.elapsed().as_secs_f64(),
            stages: Vec::new(),
        },
        draws,
    })
}

/// The Metropolis decision of every chain from its log acceptance ratio: accept when
/// `ln u < log_ratio` with `u ~ U[0, 1)` drawn per chain (always drawn, so that the random
/// stream does not depend on the outcomes). A NaN or infinite ratio is a divergent, rejected
/// proposal.
pub(crate) fn metropolis(log_ratio: &[f64], rng: &mut dyn RngCore) -> Transition {
    let mut accept_prob = Vec::with_capacity(log_ratio.len());
    let mut accepted = Vec::with_capacity(log_ratio.len());
    let mut divergent = Vec::with_capacity(log_ratio.len());
    for &r in log_ratio {
        let u: f64 = rand::Rng::random(rng);
        let finite = r.is_finite();
        accept_prob.push(if finite { r.min(0.0).exp() } else { 0.0 });
        accepted.push(finite && u.ln() < r);
        divergent.push(!finite);
    }
    Transition {
        accept_prob,
        accepted,
        divergent,
        grad_evals: 0,
        diverged: None,
    }
}

/// Rows of `a` where `mask` is true, rows of `b` elsewhere.
pub(crate) fn select_rows(mask: &[bool], a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if mask.iter().all(|&m| m) {
        return Ok(a.clone());
    }
    if mask.iter().all(|&m| !m) {
        return Ok(b.clone());
    }
    let mut shape = vec![1usize; a.rank()];
    shape[0] = mask.len();
    let m: Vec<u8> = mask.iter().map(|&m| m as u8).collect();
    let m = Tensor::from_vec(m, shape, a.device())?.broadcast_as(a.shape())?;
    Ok(m.where_cond(a, b)?)
}

/// A `[B]` tensor on the host as f64.
pub(crate) fn to_host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// `sum` over each row of `t^2`, `[B, ...] -> B` values on the host.
pub(crate) fn row_sq_norms(t: &Tensor) -> Result<Vec<f64>> {
    to_host(&t.flatten_from(1)?.sqr()?.sum(1)?)
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}
