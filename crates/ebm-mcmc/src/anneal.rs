//! Annealed sampling (as in Du et al. 2023, "Reduce, Reuse, Recycle", for composed energies):
//! an inner [`Sampler`] runs once per stage of a schedule, each stage starting where the last
//! ended, over either tempered energies `E / T_k` (temperatures falling towards 1) or
//! interpolations `(1 - b_k) E_0 + b_k E` from a base energy `E_0` that is easy to sample (a
//! broad Gaussian, say) to the target `E` (`b_k` rising towards 1).
//!
//! Without importance weights the final samples are exact only insofar as the last stage mixes;
//! annealing's job is to place chains in every mode before the barriers between them rise.

use candle_core::Tensor;
use ebm_core::Energy;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::sampler::{RunStats, SamplerRun, StageStats};
use crate::{Draws, Error, Result, Sampler};

/// The stages of an annealed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// Stage `k` samples `exp(-E / T_k)`: finite, > 0, non-increasing (annealing cools); end at
    /// 1 to sample the target itself.
    Temperatures(Vec<f64>),
    /// Stage `k` samples `exp(-((1 - b_k) E_0 + b_k E))`: `b_k` in [0, 1], non-decreasing; end
    /// at 1 to sample the target itself.
    Interpolation(Vec<f64>),
}

impl Schedule {
    /// `stages` temperatures falling geometrically from `t_max` to 1.
    pub fn geometric(t_max: f64, stages: usize) -> Result<Self> {
        ebm_core::validate::at_least_one("stages", stages)?;
        if !(t_max.is_finite() && t_max >= 1.0) {
            return Err(ebm_core::Error::invalid(
                "t_max",
                format!("must be finite and >= 1, got {t_max}"),
            )
            .into());
        }
        let last = (stages - 1).max(1) as f64;
        let ts = (0..stages)
            .map(|k| t_max.powf(1.0 - k as f64 / last))
            .collect::<Vec<_>>();
        let mut ts = if stages == 1 { vec![1.0] } else { ts };
        *ts.last_mut().expect("at least one stage") = 1.0;
        Ok(Schedule::Temperatures(ts))
    }

    /// `stages` interpolation weights rising linearly to 1: `1/stages, 2/stages, ..., 1`.
    pub fn linear(stages: usize) -> Result<Self> {
        ebm_core::validate::at_least_one("stages", stages)?;
        Ok(Schedule::Interpolation(
            (1..=stages).map(|k| k as f64 / stages as f64).collect(),
        ))
    }

    /// The schedule's values.
    pub fn values(&self) -> &[f64] {
        match self {
            Schedule::Temperatures(v) | Schedule::Interpolation(v) => v,
        }
    }

    /// Checks the schedule, naming it ("temperatures" or "betas") and the offending stage.
    pub fn check(&self) -> Result<()> {
        let (name, values) = match self {
            Schedule::Temperatures(v) => ("temperatures", v),
            Schedule::Interpolation(v) => ("betas", v),
        };
        let invalid = |problem: String| -> Error { ebm_core::Error::invalid(name, problem).into() };
        if values.is_empty() {
            return Err(invalid(
                "the schedule is empty; give at least one stage".into(),
            ));
        }
        for (k, &v) in values.iter().enumerate() {
            let ok = match self {
                Schedule::Temperatures(_) => v.is_finite() && v > 0.0,
                Schedule::Interpolation(_) => v.is_finite() && (0.0..=1.0).contains(&v),
            };
            if !ok {
                let range = match self {
                    Schedule::Temperatures(_) => "finite and > 0",
                    Schedule::Interpolation(_) => "in [0, 1]",
                };
                return Err(invalid(format!(
                    "stage {} is {v}; every value must be {range}",
                    k + 1
                )));
            }
        }
        for (k, w) in values.windows(2).enumerate() {
            match self {
                Schedule::Temperatures(_) if w[1] > w[0] => {
                    return Err(invalid(format!(
                        "must be non-increasing (annealing cools), got {} at stage {} then {} at stage {}",
                        w[0],
                        k + 1,
                        w[1],
                        k + 2
                    )))
                }
                Schedule::Interpolation(_) if w[1] < w[0] => {
                    return Err(invalid(format!(
                        "must be non-decreasing (towards the target), got {} at stage {} then {} at stage {}",
                        w[0],
                        k + 1,
                        w[1],
                        k + 2
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `E(x) / T`: the energy at temperature `T`.
pub struct Tempered<'e> {
    energy: &'e dyn Energy,
    inv_temperature: f64,
}

impl<'e> Tempered<'e> {
    /// `energy / temperature` (temperature finite and > 0).
    pub fn new(energy: &'e dyn Energy, temperature: f64) -> Result<Self> {
        ebm_core::validate::positive("temperature", temperature)?;
        Ok(Self {
            energy,
            inv_temperature: 1.0 / temperature,
        })
    }
}

impl Energy for Tempered<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        Ok((self.energy.energy(x)? * self.inv_temperature)?)
    }
    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        let (e, g) = self.energy.energy_and_grad(x)?;
        if self.inv_temperature == 1.0 {
            return Ok((e, g));
        }
        Ok(((e * self.inv_temperature)?, (g * self.inv_temperature)?))
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.energy.sample_shape()
    }
}

/// `(1 - b) E_0(x) + b E_1(x)`: a point on the geometric path from `exp(-E_0)` to `exp(-E_1)`.
pub struct Interpolated<'e> {
    base: &'e dyn Energy,
    target: &'e dyn Energy,
    beta: f64,
}

impl<'e> Interpolated<'e> {
    /// `(1 - beta) base + beta target`, `beta` in [0, 1].
    pub fn new(base: &'e dyn Energy, target: &'e dyn Energy, beta: f64) -> Result<Self> {
        ebm_core::validate::in_unit_range("beta", beta, 0.0, 1.0)?;
        Ok(Self { base, target, beta })
    }
}

impl Energy for Interpolated<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        if self.beta == 0.0 {
            return self.base.energy(x);
        }
        if self.beta == 1.0 {
            return self.target.energy(x);
        }
        let e0 = self.base.energy(x)?;
        let e1 = self.target.energy(x)?;
        Ok(((e0 * (1.0 - self.beta))? + (e1 * self.beta)?)?)
    }
    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        if self.beta == 0.0 {
            return self.base.energy_and_grad(x);
        }
        if self.beta == 1.0 {
            return self.target.energy_and_grad(x);
        }
        let (e0, g0) = self.base.energy_and_grad(x)?;
        let (e1, g1) = self.target.energy_and_grad(x)?;
        let b = self.beta;
        Ok((
            ((e0 * (1.0 - b))? + (e1 * b)?)?,
            ((g0 * (1.0 - b))? + (g1 * b)?)?,
        ))
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.target
            .sample_shape()
            .or_else(|| self.base.sample_shape())
    }
}

/// An inner sampler run once per stage of a [`Schedule`]. Each stage is a full run of the
/// inner sampler (its warm-up and adaptation included, so the step size re-adapts to each
/// stage's energy).
pub struct Annealed<'a, S> {
    inner: S,
    schedule: Schedule,
    base: Option<&'a dyn Energy>,
}

impl<S: Sampler> Annealed<'static, S> {
    /// Tempering: stage `k` runs `inner` on `E / temperatures[k]`.
    pub fn tempered(inner: S, temperatures: Vec<f64>) -> Result<Self> {
        let schedule = Schedule::Temperatures(temperatures);
        schedule.check()?;
        Ok(Self {
            inner,
            schedule,
            base: None,
        })
    }
}

impl<'a, S: Sampler> Annealed<'a, S> {
    /// Interpolation: stage `k` runs `inner` on `(1 - betas[k]) base + betas[k] E`.
    pub fn interpolated(inner: S, base: &'a dyn Energy, betas: Vec<f64>) -> Result<Self> {
        let schedule = Schedule::Interpolation(betas);
        schedule.check()?;
        Ok(Self {
            inner,
            schedule,
            base: Some(base),
        })
    }

    /// From a [`Schedule`]; `base` is required for [`Schedule::Interpolation`] and ignored
    /// otherwise.
    pub fn new(inner: S, schedule: Schedule, base: Option<&'a dyn Energy>) -> Result<Self> {
        schedule.check()?;
        if matches!(schedule, Schedule::Interpolation(_)) && base.is_none() {
            return Err(ebm_core::Error::invalid(
                "base",
                "an interpolation schedule needs a base energy E_0",
            )
            .into());
        }
        Ok(Self {
            inner,
            schedule,
            base,
        })
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The inner sampler.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Sampler> Sampler for Annealed<'_, S> {
    fn name(&self) -> String {
        format!("annealed {}", self.inner.name())
    }

    /// Runs every stage in turn. The result's samples, energies (under `energy` itself) and
    /// draws are the last stage's; its statistics cover all stages (traces concatenated,
    /// acceptance averaged over all sampling iterations), with one [`StageStats`] per stage.
    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        let values = self.schedule.values();
        let stages = values.len();
        let mut x = x0.clone();
        let mut total: Option<RunStats> = None;
        let mut last: Option<(Tensor, Draws, bool)> = None;
        for (k, &v) in values.iter().enumerate() {
            let tempered;
            let interpolated;
            let (stage_energy, exact): (&dyn Energy, bool) = match (&self.schedule, self.base) {
                (Schedule::Temperatures(_), _) => {
                    tempered = Tempered::new(energy, v)?;
                    (&tempered, v == 1.0)
                }
                (Schedule::Interpolation(_), Some(base)) => {
                    interpolated = Interpolated::new(base, energy, v)?;
                    (&interpolated, v == 1.0)
                }
                (Schedule::Interpolation(_), None) => unreachable!("checked by the constructors"),
            };
            let run = self.inner.run(stage_energy, &x, rng).map_err(|e| match e {
                Error::SamplerDiverged {
                    sampler,
                    iteration,
                    iterations,
                    what,
                } => Error::SamplerDiverged {
                    sampler: format!("annealed {sampler}, stage {} of {stages} ({v})", k + 1),
                    iteration,
                    iterations,
                    what,
                },
                other => other,
            })?;
            let s = run.stats;
            let stage = StageStats {
                value: v,
                step_size: s.step_size,
                mean_accept_prob: s.mean_accept_prob(),
                final_energy: s.energy_trace.last().copied().unwrap_or(f64::NAN),
            };
            total = Some(match total {
                None => RunStats {
                    sampler: self.name(),
                    stages: vec![stage],
                    accept_prob: s.accept_prob.iter().map(|a| a * s.steps as f64).collect(),
                    accept_rate: s.accept_rate.iter().map(|a| a * s.steps as f64).collect(),
                    ..s
                },
                Some(mut t) => {
                    for c in 0..t.chains {
                        t.accept_prob[c] += s.accept_prob[c] * s.steps as f64;
                        t.accept_rate[c] += s.accept_rate[c] * s.steps as f64;
                        t.divergences[c] += s.divergences[c];
                    }
                    t.warmup += s.warmup;
                    t.steps += s.steps;
                    t.step_size = s.step_size;
                    t.step_size_trace.extend(s.step_size_trace);
                    t.energy_trace.extend(s.energy_trace);
                    // Each stage evaluates its start once more.
                    t.grad_evals += s.grad_evals;
                    t.seconds += s.seconds;
                    t.stages.push(stage);
                    t
                }
            });
            x = run.samples;
            last = Some((run.energies, run.draws, exact));
        }
        let mut stats = total.expect("at least one stage");
        let n = stats.steps as f64;
        stats.accept_prob.iter_mut().for_each(|a| *a /= n);
        stats.accept_rate.iter_mut().for_each(|a| *a /= n);
        let (stage_energies, draws, exact) = last.expect("at least one stage");
        let energies = if exact {
            stage_energies
        } else {
            energy.energy(&x)?.detach()
        };
        Ok(SamplerRun {
            samples: x,
            energies,
            stats,
            draws,
        })
    }
}
