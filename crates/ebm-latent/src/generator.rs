//! Top-down generators `x = g(z)`: the DCGAN-style [`Generator`] of transposed convolutions
//! with leaky ReLU and a tanh output (images in [-1, 1]), a [`LinearDecoder`] (with a Gaussian
//! prior, factor analysis: the posterior is Gaussian in closed form, which the tests use), and
//! the [`Decoder`] trait the posterior sampler sees.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ebm_nn::{ParamStore, Trainable};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The slope of the leaky ReLU between generator layers (the paper's 0.2).
pub const LEAKY_SLOPE: f64 = 0.2;

/// A generator `z [B, latent_dim] -> x [B, ...]`: what the posterior sampler and the training
/// step need of it.
pub trait Decoder {
    /// The size of `z`.
    fn latent_dim(&self) -> usize;
    /// The shape of one output (without the batch dimension).
    fn output_shape(&self) -> Vec<usize>;
    /// `g(z)` for a batch `z [B, latent_dim]`, shape `[B, output_shape...]`; differentiable
    /// with respect to `z` (and to the parameters of a trainable generator).
    fn decode(&self, z: &Tensor) -> Result<Tensor>;

    /// `|x - g(z)|^2 / (2 sigma_x^2)` per sample (detached, `[B]`) and its gradient with
    /// respect to `z` (`[B, latent_dim]`): what the posterior sampler needs at every step.
    ///
    /// The default runs autograd on a fresh `Var`, so the graph never grows across calls;
    /// generators with a hand-written backward pass override it.
    fn reconstruction_energy_and_grad(
        &self,
        x: &Tensor,
        z: &Tensor,
        likelihood_sigma: f64,
    ) -> Result<(Tensor, Tensor)> {
        let var = candle_core::Var::from_tensor(&z.detach())?;
        let energy = reconstruction_energy(self, x, var.as_tensor(), likelihood_sigma)?;
        let grads = energy.sum_all()?.backward()?;
        let grad = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => z.zeros_like()?,
        };
        Ok((energy.detach(), grad))
    }
}

/// `|x - g(z)|^2 / (2 sigma_x^2)` per sample, `[B]`, differentiable.
pub(crate) fn reconstruction_energy<D: Decoder + ?Sized>(
    decoder: &D,
    x: &Tensor,
    z: &Tensor,
    likelihood_sigma: f64,
) -> Result<Tensor> {
    let batch = x.dim(0)?;
    let diff = (decoder.decode(z)? - x)?;
    Ok(
        (diff.sqr()?.reshape((batch, ()))?.sum(1)?
            * (0.5 / (likelihood_sigma * likelihood_sigma)))?,
    )
}

/// Fails unless `z` is `[B >= 1, latent_dim]`.
pub(crate) fn check_latent(z: &Tensor, latent_dim: usize, what: &str) -> Result<usize> {
    Ok(ebm_core::validate::check_batch_shape(
        z,
        &[latent_dim],
        what,
    )?)
}

/// The architecture of a [`Generator`]. Unknown keys are rejected when read from JSON.
///
/// The latent vector is a 1x1 image; the first transposed convolution (stride 1, no padding)
/// makes a small square, and kernel-4, stride-2, padding-1 layers double it:
///
/// - 28x28: `nz -> 2w` (k7, 7x7), `2w -> w` (14x14), `w -> C` (28x28);
/// - 32x32 (the paper's SVHN and CIFAR-10 generator): `nz -> 8w` (k4, 4x4), `8w -> 4w` (8x8),
///   `4w -> 2w` (16x16), `2w -> C` (32x32);
/// - 64x64 (CelebA): as 32x32 with one more layer, `8w -> 4w -> 2w -> w -> C`.
///
/// Leaky ReLU 0.2 between layers, tanh at the end, no batch norm. Hidden layers have no bias
/// (as the paper's `ConvTranspose2d(..., bias=False)`), the output layer has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// The size of `z`.
    pub latent_dim: usize,
    /// Image channels (1 grey, 3 colour).
    pub channels: usize,
    /// Image height and width: 28, 32 or 64.
    pub image_size: usize,
    /// The base width `w` (the paper's `ngf`).
    pub width: usize,
}

/// One transposed convolution of a generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: usize,
    /// Height and width of the layer's input.
    pub input_size: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl GeneratorConfig {
    /// 28x28 grey images (MNIST, Fashion-MNIST).
    pub fn mnist_like(latent_dim: usize, width: usize) -> Self {
        Self {
            latent_dim,
            channels: 1,
            image_size: 28,
            width,
        }
    }

    /// The paper's SVHN generator: 32x32 colour, `nz = 100`, `ngf = 64`.
    pub fn svhn() -> Self {
        Self {
            latent_dim: 100,
            channels: 3,
            image_size: 32,
            width: 64,
        }
    }

    /// A 64x64 colour generator (CelebA), `nz = 100`, `ngf = 64`.
    pub fn celeba64() -> Self {
        Self {
            latent_dim: 100,
            channels: 3,
            image_size: 64,
            width: 64,
        }
    }

    /// Checks that the generator can be built.
    pub fn validate(&self) -> Result<()> {
        if self.latent_dim == 0 || self.channels == 0 || self.width == 0 {
            return Err(Error::Config(format!(
                "generator latent_dim, channels and width must be at least 1, got {}, {}, {}",
                self.latent_dim, self.channels, self.width
            )));
        }
        if ![28, 32, 64].contains(&self.image_size) {
            return Err(Error::Config(format!(
                "generator image_size must be 28, 32 or 64, got {}",
                self.image_size
            )));
        }
        Ok(())
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn output_shape(&self) -> [usize; 3] {
        [self.channels, self.image_size, self.image_size]
    }

    /// The layers, first to last.
    pub fn layers(&self) -> Result<Vec<LayerSpec>> {
        self.validate()?;
        let w = self.width;
        let (first_kernel, widths): (usize, Vec<usize>) = match self.image_size {
            28 => (7, vec![2 * w, w]),
            32 => (4, vec![8 * w, 4 * w, 2 * w]),
            _ => (4, vec![8 * w, 4 * w, 2 * w, w]),
        };
        let mut layers = Vec::with_capacity(widths.len() + 1);
        let mut size = 1;
        let mut in_channels = self.latent_dim;
        for (i, &out_channels) in widths.iter().chain([&self.channels]).enumerate() {
            let (kernel, stride, padding) = if i == 0 {
                (first_kernel, 1, 0)
            } else {
                (4, 2, 1)
            };
            layers.push(LayerSpec {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                input_size: size,
                bias: i == widths.len(),
            });
            size = (size - 1) * stride + kernel - 2 * padding;
            in_channels = out_channels;
        }
        debug_assert_eq!(size, self.image_size);
        Ok(layers)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    spec: LayerSpec,
    weight: Tensor,
    bias: Option<Tensor>,
}

/// A DCGAN-style generator (see [`GeneratorConfig`]) with outputs in (-1, 1).
#[derive(Debug, Clone)]
pub struct Generator {
    config: GeneratorConfig,
    params: ParamStore,
    layers: Vec<Layer>,
}

impl Generator {
    /// A freshly initialised f32 generator.
    pub fn new(
        config: &GeneratorConfig,
        device: &Device,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32, rng)
    }

    /// A freshly initialised generator of the given dtype (f64 for gradient checks).
    ///
    /// Weights are drawn from `N(0, gain^2 / fan_in)`, `fan_in` being the number of input
    /// values that reach one interior output pixel (`Cin * ceil(K / stride)^2`, or `Cin` for
    /// the first layer, whose input is 1x1), with He's gain `sqrt(2 / (1 + 0.2^2))` before a
    /// leaky ReLU and 1 before the tanh; biases start at zero.
    pub fn with_dtype(
        config: &GeneratorConfig,
        device: &Device,
        dtype: DType,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        let specs = config.layers()?;
        let mut params = ParamStore::new();
        let last = specs.len() - 1;
        let mut layers = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let taps = spec.kernel.div_ceil(spec.stride).min(spec.input_size);
            let fan_in = (spec.in_channels * taps * taps) as f64;
            let gain = if i == last {
                1.0
            } else {
                (2.0 / (1.0 + LEAKY_SLOPE * LEAKY_SLOPE)).sqrt()
            };
            let shape = [
                spec.in_channels,
                spec.out_channels,
                spec.kernel,
                spec.kernel,
            ];
            let w0 = (ebm_core::noise::normal(&mut *rng, &shape[..], dtype, device)?
                * (gain / fan_in.sqrt()))?;
            let weight = params.add(format!("layers.{i}.weight"), &w0)?;
            let bias = if spec.bias {
                let b0 = Tensor::zeros(spec.out_channels, dtype, device)?;
                Some(params.add(format!("layers.{i}.bias"), &b0)?)
            } else {
                None
            };
            layers.push(Layer { spec, weight, bias });
        }
        Ok(Self {
            config: config.clone(),
            params,
            layers,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.layers[0].weight.dtype()
    }

    /// A copy with detached weights and no parameters, for sampling: the backward of a
    /// posterior chain then computes the gradient with respect to `z` alone.
    pub fn frozen(&self) -> Self {
        Self {
            config: self.config.clone(),
            params: ParamStore::new(),
            layers: self
                .layers
                .iter()
                .map(|l| Layer {
                    spec: l.spec,
                    weight: l.weight.detach(),
                    bias: l.bias.as_ref().map(|b| b.detach()),
                })
                .collect(),
        }
    }

    /// The images `g(z)` of a batch `z [B, latent_dim]`: `[B, C, H, W]` in (-1, 1).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let batch = check_latent(z, self.config.latent_dim, "generator input z")?;
        let mut h = z.reshape((batch, self.config.latent_dim, 1, 1))?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = ebm_ops::conv_transpose2d(
                &h,
                &layer.weight,
                layer.bias.as_ref(),
                layer.spec.stride,
                layer.spec.padding,
            )?;
            h = if i == last {
                crate::ops::tanh(&h)?
            } else {
                crate::ops::leaky_relu(&h)?
            };
        }
        Ok(h)
    }
}

impl Decoder for Generator {
    fn latent_dim(&self) -> usize {
        self.config.latent_dim
    }
    fn output_shape(&self) -> Vec<usize> {
        self.config.output_shape().to_vec()
    }
    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.forward(z)
    }

    /// A hand-written backward pass through the layers (no autograd graph): the tanh's and
    /// leaky ReLUs' gradients from the saved activations, each transposed convolution's input
    /// gradient by `ebm_ops::conv_transpose2d_input_grad`. Tests hold it to autograd.
    fn reconstruction_energy_and_grad(
        &self,
        x: &Tensor,
        z: &Tensor,
        likelihood_sigma: f64,
    ) -> Result<(Tensor, Tensor)> {
        let batch = check_latent(z, self.config.latent_dim, "generator input z")?;
        let z = z.detach();
        let mut h = z.reshape((batch, self.config.latent_dim, 1, 1))?;
        let last = self.layers.len() - 1;
        let mut pre = Vec::with_capacity(last);
        for (i, layer) in self.layers.iter().enumerate() {
            let a = ebm_ops::conv_transpose2d(
                &h,
                &layer.weight.detach(),
                layer.bias.as_ref().map(|b| b.detach()).as_ref(),
                layer.spec.stride,
                layer.spec.padding,
            )?;
            h = if i == last {
                crate::ops::tanh(&a)?
            } else {
                let out = crate::ops::leaky_relu(&a)?;
                pre.push(a);
                out
            };
        }
        if h.dims() != x.dims() {
            return Err(ebm_core::Error::Shape {
                what: "images x".into(),
                expected: format!("{:?}", h.dims()),
                got: x.dims().to_vec(),
            }
            .into());
        }
        let inv_var = 1.0 / (likelihood_sigma * likelihood_sigma);
        let diff = (&h - x)?;
        let energy = (diff.sqr()?.reshape((batch, ()))?.sum(1)? * (0.5 * inv_var))?;
        let mut g = crate::ops::tanh_backward(&h, &(diff * inv_var)?)?;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            g = ebm_ops::conv_transpose2d_input_grad(
                &g,
                &layer.weight.detach(),
                layer.spec.stride,
                layer.spec.padding,
            )?;
            if i > 0 {
                g = crate::ops::leaky_relu_backward(&pre[i - 1], &g)?;
            }
        }
        Ok((energy, g.reshape((batch, self.config.latent_dim))?))
    }
}

impl Trainable for Generator {
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }
    fn update_spectral_norm(&mut self) -> ebm_nn::Result<()> {
        Ok(())
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    fn set_buffers(&mut self, _buffers: &HashMap<String, Tensor>) -> ebm_nn::Result<()> {
        Ok(())
    }
}

/// A linear generator `g(z) = W z + b`, `W [D, latent_dim]`, `b [D]`. With the Gaussian prior
/// this is factor analysis, whose posterior `p(z | x)` is Gaussian with covariance
/// `(W^T W / sigma_x^2 + I / sigma^2)^-1` and mean `cov W^T (x - b) / sigma_x^2`: a known
/// answer for the posterior sampler.
#[derive(Debug, Clone)]
pub struct LinearDecoder {
    weight: Tensor,
    bias: Tensor,
}

impl LinearDecoder {
    /// A decoder from `weight [D, latent_dim]` and `bias [D]`.
    pub fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        let (d, k) = weight.dims2().map_err(|_| {
            Error::Config(format!(
                "a linear decoder's weight must be [D, latent_dim], got {:?}",
                weight.dims()
            ))
        })?;
        if d == 0 || k == 0 || bias.dims() != [d] {
            return Err(Error::Config(format!(
                "a linear decoder needs weight [D >= 1, latent_dim >= 1] and bias [D], got {:?} and {:?}",
                weight.dims(),
                bias.dims()
            )));
        }
        Ok(Self { weight, bias })
    }

    /// `W`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `b`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Decoder for LinearDecoder {
    fn latent_dim(&self) -> usize {
        self.weight.dims()[1]
    }
    fn output_shape(&self) -> Vec<usize> {
        vec![self.weight.dims()[0]]
    }
    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        check_latent(z, self.latent_dim(), "linear decoder input z")?;
        Ok(ebm_ops::linear(z, &self.weight, Some(&self.bias))?)
    }
}
