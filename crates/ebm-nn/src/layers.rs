//! Layers: convolutions and dense layers with optional spectral normalisation, per-class
//! embeddings, and activations.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{ParamStore, Result};

/// Element-wise non-linearities an energy network can use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(x)`, the IGEBM activation.
    Swish,
    /// `max(x, slope * x)` with slope 0.2, the latent-prior MLP's activation.
    LeakyRelu,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Swish => ebm_ops::swish(x),
            Activation::LeakyRelu => x.maximum(&(x * 0.2)?),
        }
    }
}

fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?;
    x.broadcast_div(&(norm + 1e-12)?)
}

/// Spectral normalisation (Miyato et al. 2018) by power iteration, with persistent vectors:
/// the weight, reshaped to `[out, rest]`, is divided by `sigma = u^T W v`, an estimate of its
/// largest singular value. `u` and `v` are state, not parameters: they are updated by
/// [`SpectralNorm::power_iteration`] and carry no gradient, while `sigma` does depend on `W`.
#[derive(Debug, Clone)]
pub struct SpectralNorm {
    u: Tensor,
    v: Tensor,
}

impl SpectralNorm {
    /// State for `weight`, starting from a random unit `u`, refined by `iterations` steps.
    pub fn new<R: rand::Rng + ?Sized>(
        weight: &Tensor,
        iterations: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let out = weight.dim(0)?;
        let rest = weight.elem_count() / out;
        let u = l2_normalize(&ebm_core::noise::normal(
            rng,
            out,
            weight.dtype(),
            weight.device(),
        )?)?;
        let v = Tensor::zeros(rest, weight.dtype(), weight.device())?;
        let mut sn = Self { u, v };
        sn.power_iteration(weight, iterations.max(1))?;
        Ok(sn)
    }

    fn matrix(weight: &Tensor) -> candle_core::Result<Tensor> {
        let out = weight.dim(0)?;
        weight.reshape((out, weight.elem_count() / out))
    }

    /// `iterations` steps of `v = W^T u / |W^T u|, u = W v / |W v|` on the detached weight.
    pub fn power_iteration(&mut self, weight: &Tensor, iterations: usize) -> Result<()> {
        let w = Self::matrix(&weight.detach())?;
        for _ in 0..iterations {
            self.v = l2_normalize(&self.u.unsqueeze(0)?.matmul(&w)?.squeeze(0)?)?;
            self.u = l2_normalize(&w.matmul(&self.v.unsqueeze(1)?)?.squeeze(1)?)?;
        }
        Ok(())
    }

    /// `sigma = u^T W v`, differentiable with respect to `weight`.
    pub fn sigma(&self, weight: &Tensor) -> Result<Tensor> {
        let w = Self::matrix(weight)?;
        Ok(self
            .u
            .unsqueeze(0)?
            .matmul(&w)?
            .matmul(&self.v.unsqueeze(1)?)?
            .reshape(())?)
    }

    /// `weight / sigma`.
    pub fn normalize(&self, weight: &Tensor) -> Result<Tensor> {
        Ok(weight.broadcast_div(&self.sigma(weight)?)?)
    }

    /// The persistent vectors `(u, v)`, for checkpoints.
    pub fn vectors(&self) -> (&Tensor, &Tensor) {
        (&self.u, &self.v)
    }

    /// Restores the persistent vectors.
    pub fn set_vectors(&mut self, u: Tensor, v: Tensor) -> Result<()> {
        if u.dims() != self.u.dims() || v.dims() != self.v.dims() {
            return Err(crate::Error::Config(format!(
                "spectral-norm vectors have shapes {:?} and {:?}, expected {:?} and {:?}",
                u.dims(),
                v.dims(),
                self.u.dims(),
                self.v.dims()
            )));
        }
        self.u = u;
        self.v = v;
        Ok(())
    }
}

/// What a layer constructor needs: the store its parameters go into, the generator that
/// initialises them, and their device and dtype.
pub struct Init<'a> {
    /// Where parameters are registered.
    pub params: &'a mut ParamStore,
    /// The seeded generator for initial values and spectral-norm vectors.
    pub rng: &'a mut dyn rand::RngCore,
    /// The device of every parameter.
    pub device: &'a Device,
    /// The dtype of every parameter (f32 for training; f64 for gradient checks).
    pub dtype: DType,
}

impl Init<'_> {
    /// A weight drawn from `N(0, 1/fan_in)`, fan_in being the product of all but the first dim.
    pub fn weight(&mut self, shape: &[usize]) -> Result<Tensor> {
        let fan_in: usize = shape[1..].iter().product();
        let w = ebm_core::noise::normal(&mut *self.rng, shape, self.dtype, self.device)?;
        Ok((w * (1.0 / (fan_in as f64).sqrt()))?)
    }

    /// A zero vector of length `n`.
    pub fn zeros(&self, n: usize) -> Result<Tensor> {
        Ok(Tensor::zeros(n, self.dtype, self.device)?)
    }
}

/// A stride-1 convolution with "same" padding, bias, and optional spectral normalisation.
#[derive(Debug, Clone)]
pub struct Conv {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
    spectral: Option<SpectralNorm>,
    padding: usize,
}

impl Conv {
    /// Registers `{name}.weight` `[out, in, k, k]` and `{name}.bias` `[out]` in `params`.
    pub fn new(
        init: &mut Init<'_>,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        spectral_norm: bool,
    ) -> Result<Self> {
        let w0 = init.weight(&[out_channels, in_channels, kernel, kernel])?;
        let weight = init.params.add(format!("{name}.weight"), &w0)?;
        let bias = init
            .params
            .add(format!("{name}.bias"), &init.zeros(out_channels)?)?;
        let spectral = if spectral_norm {
            Some(SpectralNorm::new(&weight, 1, &mut *init.rng)?)
        } else {
            None
        };
        Ok(Self {
            name: name.into(),
            weight,
            bias: Some(bias),
            spectral,
            padding: kernel / 2,
        })
    }

    /// The weight used in the forward pass: spectrally normalised if enabled.
    pub fn effective_weight(&self) -> Result<Tensor> {
        match &self.spectral {
            Some(sn) => sn.normalize(&self.weight),
            None => Ok(self.weight.clone()),
        }
    }

    /// Applies the convolution to `x [B, in, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ebm_ops::conv2d(
            x,
            &self.effective_weight()?,
            self.bias.as_ref(),
            self.padding,
        )?)
    }

    /// A copy with the effective weight computed once and detached: for sampling.
    pub fn frozen(&self) -> Result<Self> {
        Ok(Self {
            name: self.name.clone(),
            weight: self.effective_weight()?.detach(),
            bias: self.bias.as_ref().map(|b| b.detach()),
            spectral: None,
            padding: self.padding,
        })
    }

    /// The spectral-norm state, if any.
    pub fn spectral_norm(&self) -> Option<&SpectralNorm> {
        self.spectral.as_ref()
    }

    pub(crate) fn spectral_norm_mut(&mut self) -> Option<(&Tensor, &mut SpectralNorm)> {
        self.spectral.as_mut().map(|sn| (&self.weight, sn))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The weight before normalisation.
    pub fn raw_weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias.
    pub(crate) fn raw_bias(&self) -> &Tensor {
        self.bias.as_ref().expect("every Conv has a bias")
    }

    /// Zeros added on every side.
    pub(crate) fn padding(&self) -> usize {
        self.padding
    }
}

/// A fully connected layer `x W^T + b` with optional spectral normalisation.
#[derive(Debug, Clone)]
pub struct Dense {
    name: String,
    weight: Tensor,
    bias: Tensor,
    spectral: Option<SpectralNorm>,
}

impl Dense {
    /// Registers `{name}.weight` `[out, in]` and `{name}.bias` `[out]` in `params`.
    pub fn new(
        init: &mut Init<'_>,
        name: &str,
        in_features: usize,
        out_features: usize,
        spectral_norm: bool,
    ) -> Result<Self> {
        let w0 = init.weight(&[out_features, in_features])?;
        let weight = init.params.add(format!("{name}.weight"), &w0)?;
        let bias = init
            .params
            .add(format!("{name}.bias"), &init.zeros(out_features)?)?;
        let spectral = if spectral_norm {
            Some(SpectralNorm::new(&weight, 1, &mut *init.rng)?)
        } else {
            None
        };
        Ok(Self {
            name: name.into(),
            weight,
            bias,
            spectral,
        })
    }

    /// The weight used in the forward pass.
    pub fn effective_weight(&self) -> Result<Tensor> {
        match &self.spectral {
            Some(sn) => sn.normalize(&self.weight),
            None => Ok(self.weight.clone()),
        }
    }

    /// Applies the layer to `x [B, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ebm_ops::linear(
            x,
            &self.effective_weight()?,
            Some(&self.bias),
        )?)
    }

    /// A copy with the effective weight computed once and detached.
    pub fn frozen(&self) -> Result<Self> {
        Ok(Self {
            name: self.name.clone(),
            weight: self.effective_weight()?.detach(),
            bias: self.bias.detach(),
            spectral: None,
        })
    }

    /// The spectral-norm state, if any.
    pub fn spectral_norm(&self) -> Option<&SpectralNorm> {
        self.spectral.as_ref()
    }

    pub(crate) fn spectral_norm_mut(&mut self) -> Option<(&Tensor, &mut SpectralNorm)> {
        self.spectral.as_mut().map(|sn| (&self.weight, sn))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The weight before normalisation.
    pub fn raw_weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias.
    pub(crate) fn raw_bias(&self) -> &Tensor {
        &self.bias
    }
}

/// A table of one vector per class, looked up by a one-hot product (whose gradient is plain
/// matrix multiplication): the per-class gains and biases of a conditional IGEBM.
#[derive(Debug, Clone)]
pub struct ClassTable {
    table: Tensor,
}

impl ClassTable {
    /// Registers `name` `[classes, dim]` filled with `fill`.
    pub fn new(
        init: &mut Init<'_>,
        name: &str,
        classes: usize,
        dim: usize,
        fill: f64,
    ) -> Result<Self> {
        let t0 = (Tensor::ones((classes, dim), init.dtype, init.device)? * fill)?;
        Ok(Self {
            table: init.params.add(name, &t0)?,
        })
    }

    /// Rows for each one-hot label, shaped `[B, dim, 1, 1]` to broadcast over images.
    pub fn lookup(&self, one_hot: &Tensor) -> Result<Tensor> {
        let rows = one_hot.matmul(&self.table)?;
        let (b, d) = rows.dims2()?;
        Ok(rows.reshape((b, d, 1, 1))?)
    }

    /// The table.
    pub(crate) fn raw(&self) -> &Tensor {
        &self.table
    }

    /// A copy detached from autograd.
    pub fn frozen(&self) -> Self {
        Self {
            table: self.table.detach(),
        }
    }
}

/// One-hot rows `[B, classes]` for u32 `labels [B]`, with a clear error for an out-of-range label.
pub fn one_hot(labels: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    let values = labels
        .to_dtype(DType::U32)
        .and_then(|l| l.flatten_all()?.to_vec1::<u32>())?;
    if let Some(&bad) = values.iter().find(|&&l| l as usize >= classes) {
        return Err(ebm_core::Error::invalid(
            "labels",
            format!("label {bad} is out of range for a model of {classes} classes"),
        )
        .into());
    }
    let mut data = vec![0f32; values.len() * classes];
    for (i, &l) in values.iter().enumerate() {
        data[i * classes + l as usize] = 1.0;
    }
    Ok(Tensor::from_vec(data, (values.len(), classes), labels.device())?.to_dtype(dtype)?)
}
