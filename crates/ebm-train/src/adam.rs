//! [`Adam`] over a model's variables, with the IGEBM reference implementation's element-wise
//! gradient bound, and state that can be inspected and saved.

use candle_core::{backprop::GradStore, Tensor, Var};
use ebm_core::validate;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Adam's hyper-parameters. Defaults are the IGEBM settings: lr 3e-4, betas (0, 0.999).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (> 0).
    pub lr: f64,
    /// First-moment decay, in [0, 1).
    pub beta1: f64,
    /// Second-moment decay, in [0, 1).
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Clip each gradient element to `±(3 sqrt(v_hat) + 0.1)` before the update, `v_hat` being
    /// the bias-corrected second moment of the previous step, as the reference code does.
    pub bound_by_second_moment: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            beta1: 0.0,
            beta2: 0.999,
            eps: 1e-8,
            bound_by_second_moment: true,
        }
    }
}

impl AdamConfig {
    /// Adam as Kingma & Ba propose it, with learning rate `lr`: beta1 0.9, beta2 0.999,
    /// eps 1e-8, steps not bounded by the second moment (what classifiers and VAEs train with).
    pub fn kingma_ba(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            bound_by_second_moment: false,
        }
    }

    fn check(&self) -> Result<()> {
        validate::positive("lr", self.lr)?;
        validate::positive("eps", self.eps)?;
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(
                    ebm_core::Error::invalid(name, format!("must lie in [0, 1), got {b}")).into(),
                );
            }
        }
        Ok(())
    }
}

/// Adam (Kingma & Ba 2015) over a fixed list of variables.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
}

impl Adam {
    /// An optimiser for `vars`, its moments at zero.
    pub fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        config.check()?;
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            config,
            vars,
            m,
            v,
            t: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Changes the learning rate (e.g. after a roll-back).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        validate::positive("lr", lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.t
    }

    /// The first and second moments, one tensor per variable, in the variables' order.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Restores a saved state: `steps` taken and the moments (shapes checked per variable).
    pub fn set_state(&mut self, steps: usize, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        if m.len() != self.vars.len() || v.len() != self.vars.len() {
            return Err(crate::Error::Snapshot(format!(
                "Adam state for {} and {} variables, the optimiser has {}",
                m.len(),
                v.len(),
                self.vars.len()
            )));
        }
        for (i, ((var, m), v)) in self.vars.iter().zip(&m).zip(&v).enumerate() {
            if m.shape() != var.shape() || v.shape() != var.shape() {
                return Err(crate::Error::Snapshot(format!(
                    "Adam moments of variable {i} have shapes {:?} and {:?}, the variable {:?}",
                    m.dims(),
                    v.dims(),
                    var.dims()
                )));
            }
        }
        let device = self.vars.first().map(|v| v.device().clone());
        let to = |t: Vec<Tensor>| -> Result<Vec<Tensor>> {
            match &device {
                Some(d) => Ok(t
                    .into_iter()
                    .map(|t| t.to_device(d))
                    .collect::<candle_core::Result<_>>()?),
                None => Ok(t),
            }
        };
        self.m = to(m)?;
        self.v = to(v)?;
        self.t = steps;
        Ok(())
    }

    /// One update from the gradients in `grads` (variables without a gradient are left alone).
    /// Returns the global L2 norm of the raw gradient.
    pub fn step(&mut self, grads: &GradStore) -> Result<f64> {
        let c = self.config.clone();
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let bc2_prev = 1.0 - c.beta2.powi(t - 1);
        let mut sq_norm = 0f64;
        for ((var, m), v) in self.vars.iter().zip(&mut self.m).zip(&mut self.v) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            sq_norm += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            let g = if c.bound_by_second_moment {
                // v_hat of the previous step; zero at the first step, giving a bound of 0.1.
                let v_hat = if t > 1 { (&*v / bc2_prev)? } else { v.clone() };
                let bound = ((v_hat.sqrt()? * 3.0)? + 0.1)?;
                g.minimum(&bound)?.maximum(&bound.neg()?)?
            } else {
                g.clone()
            };
            *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&*m / bc1)?;
            let v_hat = (&*v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            var.set(&(var.as_tensor() - (update * c.lr)?)?)?;
        }
        Ok(sq_norm.sqrt())
    }
}
