//! Step-size adaptation by dual averaging (Hoffman & Gelman 2014, "The No-U-Turn Sampler",
//! section 3.2 and algorithm 5): during warm-up the step size is driven so that the mean
//! acceptance probability approaches a target; after warm-up it is frozen at the averaged
//! iterate `eps_bar`.
//!
//! With `H_m = (1 - 1/(m + t0)) H_{m-1} + (delta - alpha_m) / (m + t0)`:
//!
//! ```text
//! log eps_m     = mu - sqrt(m) / gamma * H_m,           mu = log(10 eps_0)
//! log eps_bar_m = m^-kappa log eps_m + (1 - m^-kappa) log eps_bar_{m-1}
//! ```
//!
//! ```
//! use ebm_mcmc::{DualAveraging, DualAveragingConfig};
//!
//! # fn main() -> ebm_mcmc::Result<()> {
//! // A made-up acceptance curve alpha(eps) = exp(-eps): the target 0.65 is met at eps = 0.431.
//! let mut da = DualAveraging::new(&DualAveragingConfig::new(0.65), 1.0)?;
//! for _ in 0..2000 {
//!     let alpha = (-da.step_size()).exp();
//!     da.update(alpha);
//! }
//! assert!((da.final_step_size() - 0.65f64.ln().abs()).abs() < 0.01);
//! # Ok(())
//! # }
//! ```

use ebm_core::validate;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Settings of dual-averaging step-size adaptation. The defaults of [`DualAveragingConfig::new`]
/// are the paper's: `gamma = 0.05`, `t0 = 10`, `kappa = 0.75`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DualAveragingConfig {
    /// The target mean acceptance probability `delta`, in (0, 1).
    pub target_accept: f64,
    /// How strongly the step size is pulled towards `mu = log(10 eps_0)` (> 0).
    pub gamma: f64,
    /// Damps the first iterations (>= 0).
    pub t0: f64,
    /// The decay of the averaging weights, in (0.5, 1].
    pub kappa: f64,
}

impl DualAveragingConfig {
    /// The paper's settings with the given target acceptance probability.
    pub fn new(target_accept: f64) -> Self {
        Self {
            target_accept,
            gamma: 0.05,
            t0: 10.0,
            kappa: 0.75,
        }
    }

    /// Checks every field, naming the one that is wrong.
    pub fn check(&self) -> Result<()> {
        if !(self.target_accept.is_finite() && self.target_accept > 0.0 && self.target_accept < 1.0)
        {
            return Err(ebm_core::Error::invalid(
                "target_accept",
                format!(
                    "must lie strictly between 0 and 1, got {}",
                    self.target_accept
                ),
            )
            .into());
        }
        validate::positive("gamma", self.gamma)?;
        validate::non_negative("t0", self.t0)?;
        if !(self.kappa.is_finite() && self.kappa > 0.5 && self.kappa <= 1.0) {
            return Err(ebm_core::Error::invalid(
                "kappa",
                format!("must lie in (0.5, 1], got {}", self.kappa),
            )
            .into());
        }
        Ok(())
    }
}

/// The state of a dual-averaging adaptation: one step size for all chains, updated once per
/// iteration from their mean acceptance probability.
#[derive(Debug, Clone)]
pub struct DualAveraging {
    config: DualAveragingConfig,
    mu: f64,
    h_bar: f64,
    log_eps: f64,
    log_eps_bar: f64,
    iterations: usize,
}

impl DualAveraging {
    /// Starts adapting from `initial_step_size` (> 0).
    pub fn new(config: &DualAveragingConfig, initial_step_size: f64) -> Result<Self> {
        config.check()?;
        validate::positive("step_size", initial_step_size)?;
        Ok(Self {
            config: config.clone(),
            mu: (10.0 * initial_step_size).ln(),
            h_bar: 0.0,
            log_eps: initial_step_size.ln(),
            log_eps_bar: initial_step_size.ln(),
            iterations: 0,
        })
    }

    /// The step size to use for the next warm-up iteration.
    pub fn step_size(&self) -> f64 {
        self.log_eps.exp()
    }

    /// The averaged step size `eps_bar`: what sampling uses once warm-up ends (the initial step
    /// size before the first update).
    pub fn final_step_size(&self) -> f64 {
        self.log_eps_bar.exp()
    }

    /// The number of updates so far.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Feeds the mean acceptance probability of the iteration just run with
    /// [`DualAveraging::step_size`]. NaN counts as 0; values are clamped to [0, 1].
    pub fn update(&mut self, accept_prob: f64) {
        let alpha = if accept_prob.is_nan() {
            0.0
        } else {
            accept_prob.clamp(0.0, 1.0)
        };
        let c = &self.config;
        self.iterations += 1;
        let m = self.iterations as f64;
        let w = 1.0 / (m + c.t0);
        self.h_bar = (1.0 - w) * self.h_bar + w * (c.target_accept - alpha);
        self.log_eps = self.mu - m.sqrt() / c.gamma * self.h_bar;
        let eta = m.powf(-c.kappa);
        self.log_eps_bar = eta * self.log_eps + (1.0 - eta) * self.log_eps_bar;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a deterministic, decreasing acceptance curve `alpha(eps) = exp(-eps / 0.3)`, the
    /// target 0.8 is met at `eps* = -0.3 ln 0.8 = 0.066943`.
    #[test]
    fn dual_averaging_finds_the_step_size_of_the_target_acceptance() -> Result<()> {
        for initial in [1e-4, 0.05, 10.0] {
            let mut da = DualAveraging::new(&DualAveragingConfig::new(0.8), initial)?;
            for _ in 0..20_000 {
                let alpha = (-da.step_size() / 0.3).exp();
                da.update(alpha);
            }
            let exact = -0.3 * 0.8f64.ln();
            let got = da.final_step_size();
            assert!(
                (got / exact - 1.0).abs() < 0.01,
                "from {initial}: {got} vs {exact}"
            );
        }
        Ok(())
    }

    #[test]
    fn bad_settings_name_the_setting() {
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let err = DualAveragingConfig::new(bad)
                .check()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid target_accept"), "{err}");
        }
        let err = DualAveragingConfig {
            kappa: 0.5,
            ..DualAveragingConfig::new(0.6)
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("invalid kappa"), "{err}");
        let err = DualAveraging::new(&DualAveragingConfig::new(0.6), 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid step_size"), "{err}");
    }
}
