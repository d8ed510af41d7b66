//! [`Ema`]: an exponential moving average of a model's weights, for sampling and evaluation.

use candle_core::Tensor;
use ebm_core::validate;
use ebm_nn::ParamStore;

use crate::Result;

/// `shadow <- decay * shadow + (1 - decay) * weights`, after each optimiser step.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at the current weights.
    pub fn new(params: &ParamStore, decay: f64) -> Result<Self> {
        validate::in_unit_range("ema decay", decay, 0.0, 1.0)?;
        let shadow = params
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    /// Folds the current weights into the average.
    pub fn update(&mut self, params: &ParamStore) -> Result<()> {
        for (s, (_, v)) in self.shadow.iter_mut().zip(params.iter()) {
            *s = ((&*s * self.decay)? + (v.as_tensor() * (1.0 - self.decay))?)?;
        }
        Ok(())
    }

    /// The averaged weights, in the store's order.
    pub fn weights(&self) -> &[Tensor] {
        &self.shadow
    }

    /// Replaces the averaged weights (a restored snapshot); count and shapes must match.
    pub fn set_weights(&mut self, weights: Vec<Tensor>) -> Result<()> {
        if weights.len() != self.shadow.len()
            || weights
                .iter()
                .zip(&self.shadow)
                .any(|(w, s)| w.shape() != s.shape())
        {
            return Err(crate::Error::Snapshot(format!(
                "EMA weights: {} tensors do not match the model's {} (count or shape)",
                weights.len(),
                self.shadow.len()
            )));
        }
        self.shadow = weights
            .into_iter()
            .zip(&self.shadow)
            .map(|(w, s)| w.to_device(s.device()))
            .collect::<candle_core::Result<_>>()?;
        Ok(())
    }

    /// Writes the averaged weights into `params` and returns the weights they replaced, so
    /// that [`Ema::restore`] can put them back.
    pub fn swap_in(&self, params: &ParamStore) -> Result<Vec<Tensor>> {
        let mut old = Vec::with_capacity(self.shadow.len());
        for (s, (_, v)) in self.shadow.iter().zip(params.iter()) {
            old.push(v.as_tensor().copy()?);
            v.set(s)?;
        }
        Ok(old)
    }

    /// Puts back weights returned by [`Ema::swap_in`].
    pub fn restore(params: &ParamStore, old: &[Tensor]) -> Result<()> {
        for (o, (_, v)) in old.iter().zip(params.iter()) {
            v.set(o)?;
        }
        Ok(())
    }
}
