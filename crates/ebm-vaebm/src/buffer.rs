//! [`EpsBuffer`]: the optional persistent buffer of `eps_z` of the VAEBM paper. Each chain of a
//! training batch restarts, with probability `p`, from an `eps_z` of an earlier batch and
//! otherwise from `N(0, I)`; `p` grows linearly from 0 to `max_probability` over
//! `anneal_iterations`, as in the official code. `eps_x` always starts fresh.

use std::collections::VecDeque;

use candle_core::{DType, Device, Tensor};
use ebm_core::validate;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of an [`EpsBuffer`]. The official code's defaults: 10,000 rows, `p` up to 0.6,
/// reached after 5,000 iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Rows kept (the oldest leave first); >= 1.
    pub capacity: usize,
    /// The largest probability of restarting a chain from the buffer, in [0, 1].
    pub max_probability: f64,
    /// Iterations over which the probability grows from 0 to `max_probability` (0: at once).
    pub anneal_iterations: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_probability: 0.6,
            anneal_iterations: 5_000,
        }
    }
}

impl BufferConfig {
    /// Fails on a zero capacity or a probability outside [0, 1].
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::config(
                "buffer capacity",
                "must be at least 1, got 0",
            ));
        }
        validate::in_unit_range("buffer max_probability", self.max_probability, 0.0, 1.0)?;
        Ok(())
    }
}

/// A FIFO of past `eps_z` rows.
#[derive(Debug, Clone)]
pub struct EpsBuffer {
    config: BufferConfig,
    dim: usize,
    rows: VecDeque<Vec<f32>>,
}

impl EpsBuffer {
    /// An empty buffer of rows of length `dim`.
    pub fn new(config: BufferConfig, dim: usize) -> Result<Self> {
        config.validate()?;
        validate::at_least_one("eps_z length", dim)?;
        Ok(Self {
            config,
            dim,
            rows: VecDeque::new(),
        })
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The length of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The settings.
    pub fn config(&self) -> &BufferConfig {
        &self.config
    }

    /// Every row, oldest first, one after the other: `len() * dim()` values (for snapshots).
    pub fn contents(&self) -> Vec<f32> {
        self.rows.iter().flatten().copied().collect()
    }

    /// Replaces the rows with `values` as [`EpsBuffer::contents`] returns them: whole rows of
    /// `dim()` values, oldest first, no more than the capacity, all finite.
    pub fn restore(&mut self, values: Vec<f32>) -> Result<()> {
        if !values.len().is_multiple_of(self.dim) {
            return Err(Error::Mismatch {
                what: "eps_z buffer contents".into(),
                problem: format!("{} values are not whole rows of {}", values.len(), self.dim),
            });
        }
        let n = values.len() / self.dim;
        if n > self.config.capacity {
            return Err(Error::Mismatch {
                what: "eps_z buffer contents".into(),
                problem: format!("{n} rows exceed the capacity of {}", self.config.capacity),
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Mismatch {
                what: "eps_z buffer contents".into(),
                problem: "a value is NaN or infinite".into(),
            });
        }
        self.rows = values.chunks(self.dim).map(<[f32]>::to_vec).collect();
        Ok(())
    }

    /// Forgets every row (after a roll-back, when the rows may come from a diverging model).
    pub fn clear(&mut self) {
        self.rows.clear();
    }

    /// The probability of restarting from the buffer at 1-based `iteration`.
    pub fn probability(&self, iteration: usize) -> f64 {
        let c = &self.config;
        if c.anneal_iterations == 0 {
            c.max_probability
        } else {
            (c.max_probability * iteration as f64 / c.anneal_iterations as f64)
                .min(c.max_probability)
        }
    }

    /// `batch` starting rows `[batch, dim]`: each from the buffer with the probability of
    /// `iteration`, else standard normal. Returns the rows and how many came from the buffer.
    pub fn sample<R: rand::Rng + ?Sized>(
        &self,
        batch: usize,
        iteration: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<(Tensor, usize)> {
        let p = self.probability(iteration);
        let mut values = Vec::with_capacity(batch * self.dim);
        let mut replayed = 0;
        for _ in 0..batch {
            if !self.rows.is_empty() && rng.random::<f64>() < p {
                let i = rng.random_range(0..self.rows.len());
                values.extend_from_slice(&self.rows[i]);
                replayed += 1;
            } else {
                values.extend((0..self.dim).map(|_| -> f32 { StandardNormal.sample(rng) }));
            }
        }
        let t = Tensor::from_vec(values, (batch, self.dim), device)?.to_dtype(dtype)?;
        Ok((t, replayed))
    }

    /// Appends the rows of `eps_z [B, dim]`, dropping the oldest beyond the capacity.
    pub fn push(&mut self, eps_z: &Tensor) -> Result<()> {
        let b = validate::check_batch_shape(eps_z, &[self.dim], "buffer rows")?;
        let values = eps_z
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for r in 0..b {
            self.rows
                .push_back(values[r * self.dim..(r + 1) * self.dim].to_vec());
            if self.rows.len() > self.config.capacity {
                self.rows.pop_front();
            }
        }
        Ok(())
    }
}
