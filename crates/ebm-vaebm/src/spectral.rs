//! [`SpectralRegularizer`]: the paper's spectral regulariser, `alpha_s * sum_l sigma(W_l)`, with
//! `sigma(W_l)` the largest singular value of each weight (reshaped to `[out, rest]`), estimated
//! by power iteration with persistent vectors (one step per training iteration, as NVAE's
//! `spectral_norm_parallel`). It penalises the weights of an unnormalised energy network; it
//! does not normalise them.

use candle_core::Tensor;
use ebm_nn::{ParamStore, SpectralNorm};

use crate::Result;

/// Power-iteration state for every weight matrix of a network, and the penalty
/// `sum_l sigma(W_l)`, differentiable with respect to the weights.
#[derive(Debug, Clone)]
pub struct SpectralRegularizer {
    layers: Vec<(String, SpectralNorm)>,
}

impl SpectralRegularizer {
    /// State for every parameter of `params` whose name ends in `weight` and that has at least
    /// two dimensions (convolution kernels and dense matrices; biases and gains are left
    /// alone), each started with `warmup` power iterations from a random vector drawn from `rng`.
    pub fn new<R: rand::Rng + ?Sized>(
        params: &ParamStore,
        warmup: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        for (name, var) in params.iter() {
            if name.ends_with("weight") && var.rank() >= 2 {
                layers.push((
                    name.to_string(),
                    SpectralNorm::new(var.as_tensor(), warmup.max(1), rng)?,
                ));
            }
        }
        Ok(Self { layers })
    }

    /// The names of the regularised weights.
    pub fn names(&self) -> Vec<&str> {
        self.layers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The persistent power-iteration vectors `(name, u, v)` of every regularised weight, in
    /// order (for snapshots).
    pub fn vectors(&self) -> Vec<(&str, &Tensor, &Tensor)> {
        self.layers
            .iter()
            .map(|(n, sn)| {
                let (u, v) = sn.vectors();
                (n.as_str(), u, v)
            })
            .collect()
    }

    /// Restores vectors as [`SpectralRegularizer::vectors`] returns them: the same weights in
    /// the same order, each `u` and `v` of its shape (moved to the device of the current ones).
    pub fn set_vectors(&mut self, vectors: Vec<(String, Tensor, Tensor)>) -> Result<()> {
        let mismatch = |problem: String| crate::Error::Mismatch {
            what: "spectral regulariser state".into(),
            problem,
        };
        if vectors.len() != self.layers.len()
            || vectors
                .iter()
                .zip(&self.layers)
                .any(|((a, _, _), (b, _))| a != b)
        {
            return Err(mismatch(format!(
                "vectors for the weights [{}], the network has [{}]",
                vectors
                    .iter()
                    .map(|(n, _, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.names().join(", ")
            )));
        }
        // Checked in full before any layer changes.
        for ((name, u, v), (_, sn)) in vectors.iter().zip(&self.layers) {
            let (cu, cv) = sn.vectors();
            if u.dims() != cu.dims() || v.dims() != cv.dims() {
                return Err(mismatch(format!(
                    "{name}: vectors of shapes {:?} and {:?}, expected {:?} and {:?}",
                    u.dims(),
                    v.dims(),
                    cu.dims(),
                    cv.dims()
                )));
            }
        }
        for ((_, u, v), (_, sn)) in vectors.into_iter().zip(&mut self.layers) {
            let (cu, cv) = sn.vectors();
            let (u, v) = (
                u.to_dtype(cu.dtype())?.to_device(cu.device())?,
                v.to_dtype(cv.dtype())?.to_device(cv.device())?,
            );
            sn.set_vectors(u, v)?;
        }
        Ok(())
    }

    /// One power iteration per weight, then `sum_l sigma(W_l)` (a scalar tensor connected to
    /// the weights of `params` for autograd). `params` must be the store the regulariser was
    /// built from.
    pub fn penalty(&mut self, params: &ParamStore) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (name, sn) in &mut self.layers {
            let Some(var) = params.get(name) else {
                return Err(crate::Error::Mismatch {
                    what: "spectral regulariser and network".into(),
                    problem: format!("the network has no parameter {name}"),
                });
            };
            sn.power_iteration(var.as_tensor(), 1)?;
            let sigma = sn.sigma(var.as_tensor())?;
            total = Some(match total {
                None => sigma,
                Some(t) => (t + sigma)?,
            });
        }
        Ok(total)
    }

    /// The current estimates `sigma(W_l)` by name (no power iteration), for logs.
    pub fn sigmas(&self, params: &ParamStore) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (name, sn) in &self.layers {
            if let Some(var) = params.get(name) {
                let s = sn
                    .sigma(var.as_tensor())?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                out.push((name.clone(), s));
            }
        }
        Ok(out)
    }
}
