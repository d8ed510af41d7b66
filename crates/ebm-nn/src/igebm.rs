//! The IGEBM ResNet energy (Du & Mordatch 2019), unconditional or class-conditional.
//!
//! ```text
//! h = conv3x3(in -> stem)(x)
//! for each block:   a = swish(h) [+ bias1[y]]
//!                   r = conv3x3(a);  r = conv3x3(swish(r) [+ bias2[y]]) [* gain[y]]
//!                   h = shortcut(h) + r        (shortcut: 1x1 conv when widths differ)
//!                   h = avg_pool2x2(h)         (blocks marked `downsample`)
//! E(x) = linear(C -> 1)(sum over H, W of swish(h))          unconditional
//! E(x, y) = linear(C -> K)(sum over H, W of swish(h))[y]    conditional on K classes
//! ```
//! The per-class bias before each convolution and gain after the second follow the reference
//! implementation's conditional ResNet; the conditional head has one output per class (its rows
//! start random, so that classes separate within a few hundred steps, where per-class gains
//! starting at 1 move by at most the learning rate per step). Every convolution and the head are
//! spectrally normalised when `spectral_norm` is on.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::fused::{HostBlock, HostConv, HostIgebm};
use crate::layers::{one_hot, Activation, ClassTable, Conv, Dense, Init, SpectralNorm};
use crate::manual_grad::{one_hot_rows, BlockParts, ManualIgebm};
use crate::{Error, ParamStore, Result, Trainable};

/// One residual block: its output width and whether it halves the resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// Output channels.
    pub channels: usize,
    /// Average-pool 2x2 after the block.
    #[serde(default)]
    pub downsample: bool,
}

/// The architecture of an [`Igebm`] network. Saved as JSON beside every checkpoint; unknown keys
/// are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgebmConfig {
    /// Image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Image height and width.
    pub image_size: usize,
    /// Channels of the first convolution.
    pub stem_channels: usize,
    /// The residual blocks, in order.
    pub blocks: Vec<BlockConfig>,
    /// `Some(k)` for a class-conditional model over `k` classes.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Spectral normalisation of every convolution and of the head.
    #[serde(default = "yes")]
    pub spectral_norm: bool,
    /// The non-linearity.
    #[serde(default = "swish")]
    pub activation: Activation,
}

fn yes() -> bool {
    true
}

fn swish() -> Activation {
    Activation::Swish
}

impl IgebmConfig {
    /// Four blocks of constant width, downsampling after the second and the fourth: the
    /// network of the canonical Langevin workload, sized for 28x28 or 32x32 images.
    pub fn small(in_channels: usize, image_size: usize, width: usize) -> Self {
        let block = |downsample| BlockConfig {
            channels: width,
            downsample,
        };
        Self {
            in_channels,
            image_size,
            stem_channels: width,
            blocks: vec![block(false), block(true), block(false), block(true)],
            num_classes: None,
            spectral_norm: true,
            activation: Activation::Swish,
        }
    }

    /// The reference implementation's CIFAR-10 ResNet32: a 128-channel stem, then blocks of
    /// 128 (down), 128, 256 (down), 256, 256 (down), 256 channels at 32x32.
    pub fn cifar10() -> Self {
        let block = |channels, downsample| BlockConfig {
            channels,
            downsample,
        };
        Self {
            in_channels: 3,
            image_size: 32,
            stem_channels: 128,
            blocks: vec![
                block(128, true),
                block(128, false),
                block(256, true),
                block(256, false),
                block(256, true),
                block(256, false),
            ],
            num_classes: None,
            spectral_norm: true,
            activation: Activation::Swish,
        }
    }

    /// The same architecture, conditional on `classes` classes.
    pub fn conditional(mut self, classes: usize) -> Self {
        self.num_classes = Some(classes);
        self
    }

    /// Checks that the architecture can be built and take its images.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.in_channels == 0 || self.image_size == 0 || self.stem_channels == 0 {
            return bad(format!(
                "in_channels, image_size and stem_channels must be at least 1, got {}, {}, {}",
                self.in_channels, self.image_size, self.stem_channels
            ));
        }
        if let Some(i) = self.blocks.iter().position(|b| b.channels == 0) {
            return bad(format!("block {i} has 0 channels"));
        }
        if self.num_classes == Some(0) {
            return bad("num_classes must be at least 1".into());
        }
        let mut size = self.image_size;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.downsample {
                if !size.is_multiple_of(2) {
                    return bad(format!(
                        "image size {} cannot be halved by block {i}: the resolution there is {size}, which is odd",
                        self.image_size
                    ));
                }
                size /= 2;
            }
        }
        Ok(())
    }

    /// The shape of one sample, `[channels, size, size]`.
    pub fn sample_shape(&self) -> Vec<usize> {
        vec![self.in_channels, self.image_size, self.image_size]
    }
}

#[derive(Debug, Clone)]
struct Conditioning {
    bias1: ClassTable,
    bias2: ClassTable,
    gain: ClassTable,
}

#[derive(Debug, Clone)]
struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
    conditioning: Option<Conditioning>,
    downsample: bool,
}

/// The IGEBM ResNet energy. See the module documentation for the architecture.
#[derive(Debug, Clone)]
pub struct Igebm {
    config: IgebmConfig,
    params: ParamStore,
    stem: Conv,
    blocks: Vec<ResBlock>,
    head: Dense,
    /// The fused CPU path of a frozen f32 model on the CPU.
    host: Option<std::sync::Arc<HostIgebm>>,
    /// The hand-written input gradient of a frozen model on any other device.
    manual: Option<std::sync::Arc<ManualIgebm>>,
}

impl Igebm {
    /// A freshly initialised f32 network, its weights drawn from `rng`.
    pub fn new(config: &IgebmConfig, device: &Device, rng: &mut dyn rand::RngCore) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32, rng)
    }

    /// A freshly initialised network of the given dtype (f64 for gradient checks).
    pub fn with_dtype(
        config: &IgebmConfig,
        device: &Device,
        dtype: DType,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        config.validate()?;
        let sn = config.spectral_norm;
        let mut params = ParamStore::new();
        let mut init = Init {
            params: &mut params,
            rng,
            device,
            dtype,
        };
        let stem = Conv::new(
            &mut init,
            "stem",
            config.in_channels,
            config.stem_channels,
            3,
            sn,
        )?;
        let mut blocks = Vec::with_capacity(config.blocks.len());
        let mut width = config.stem_channels;
        for (i, b) in config.blocks.iter().enumerate() {
            let name = format!("blocks.{i}");
            let conv1 = Conv::new(
                &mut init,
                &format!("{name}.conv1"),
                width,
                b.channels,
                3,
                sn,
            )?;
            let conv2 = Conv::new(
                &mut init,
                &format!("{name}.conv2"),
                b.channels,
                b.channels,
                3,
                sn,
            )?;
            let shortcut = if width != b.channels {
                Some(Conv::new(
                    &mut init,
                    &format!("{name}.shortcut"),
                    width,
                    b.channels,
                    1,
                    sn,
                )?)
            } else {
                None
            };
            let conditioning = match config.num_classes {
                Some(k) => Some(Conditioning {
                    bias1: ClassTable::new(
                        &mut init,
                        &format!("{name}.class_bias1"),
                        k,
                        width,
                        0.0,
                    )?,
                    bias2: ClassTable::new(
                        &mut init,
                        &format!("{name}.class_bias2"),
                        k,
                        b.channels,
                        0.0,
                    )?,
                    gain: ClassTable::new(
                        &mut init,
                        &format!("{name}.class_gain"),
                        k,
                        b.channels,
                        1.0,
                    )?,
                }),
                None => None,
            };
            blocks.push(ResBlock {
                conv1,
                conv2,
                shortcut,
                conditioning,
                downsample: b.downsample,
            });
            width = b.channels;
        }
        let head = Dense::new(
            &mut init,
            "head",
            width,
            config.num_classes.unwrap_or(1),
            sn,
        )?;
        Ok(Self {
            config: config.clone(),
            params,
            stem,
            blocks,
            head,
            host: None,
            manual: None,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &IgebmConfig {
        &self.config
    }

    /// A copy for sampling: every spectrally normalised weight computed once and detached, so
    /// that a chain's backward computes the input gradient alone. It holds no parameters.
    pub fn frozen(&self) -> Result<Self> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(ResBlock {
                    conv1: b.conv1.frozen()?,
                    conv2: b.conv2.frozen()?,
                    shortcut: b.shortcut.as_ref().map(|s| s.frozen()).transpose()?,
                    conditioning: b.conditioning.as_ref().map(|c| Conditioning {
                        bias1: c.bias1.frozen(),
                        bias2: c.bias2.frozen(),
                        gain: c.gain.frozen(),
                    }),
                    downsample: b.downsample,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut frozen = Self {
            config: self.config.clone(),
            params: ParamStore::new(),
            stem: self.stem.frozen()?,
            blocks,
            head: self.head.frozen()?,
            host: None,
            manual: None,
        };
        let w = frozen.stem.raw_weight();
        if w.device().is_cpu() && w.dtype() == DType::F32 {
            frozen.host = Some(std::sync::Arc::new(frozen.host_copy()?));
        } else if !w.device().is_cpu() {
            frozen.manual = Some(std::sync::Arc::new(frozen.manual_copy()?));
        }
        Ok(frozen)
    }

    /// The network prepared for the hand-written input gradient (flipped kernels made here).
    fn manual_copy(&self) -> Result<ManualIgebm> {
        let blocks = self.blocks.iter().map(|b| BlockParts {
            conv1: &b.conv1,
            conv2: &b.conv2,
            shortcut: b.shortcut.as_ref(),
            tables: b
                .conditioning
                .as_ref()
                .map(|c| (&c.bias1, &c.bias2, &c.gain)),
            downsample: b.downsample,
        });
        ManualIgebm::new(self.config.activation, &self.stem, blocks, &self.head)
    }

    /// Energies and input gradient by the hand-written backward over candle ops, the path of a
    /// frozen model off the CPU, forced on any device (for tests; on a model that is not frozen
    /// it uses the current effective weights, detached).
    #[doc(hidden)]
    pub fn manual_energy_and_input_grad(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        let batch =
            ebm_core::validate::check_batch_shape(x, &self.config.sample_shape(), "IGEBM input")?;
        let labels = self.host_labels(batch, labels)?;
        let one_hot = match (&labels, self.config.num_classes) {
            (Some(l), Some(k)) => {
                Some(one_hot_rows(l, k, x.dtype(), x.device()).map_err(into_core)?)
            }
            _ => None,
        };
        let built;
        let manual = match &self.manual {
            Some(m) => m.as_ref(),
            None => {
                built = self.manual_copy().map_err(into_core)?;
                &built
            }
        };
        manual
            .energy_and_grad(x, one_hot.as_ref())
            .map_err(into_core)
    }

    /// Energies and input gradient through candle's autograd, whatever the model and device.
    #[doc(hidden)]
    pub fn autograd_energy_and_input_grad(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        ebm_core::autograd_energy_and_grad(|x| self.forward(x, labels), x)
    }

    /// The network's effective (spectrally normalised) weights on the host, for the fused pass.
    fn host_copy(&self) -> Result<HostIgebm> {
        let conv =
            |c: &Conv| HostConv::new(&c.effective_weight()?.detach(), c.raw_bias(), c.padding());
        let table =
            |t: &ClassTable| -> Result<Vec<f32>> { Ok(t.raw().flatten_all()?.to_vec1::<f32>()?) };
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(HostBlock {
                    conv1: conv(&b.conv1)?,
                    conv2: conv(&b.conv2)?,
                    shortcut: b.shortcut.as_ref().map(conv).transpose()?,
                    bias1: b
                        .conditioning
                        .as_ref()
                        .map(|c| table(&c.bias1))
                        .transpose()?,
                    bias2: b
                        .conditioning
                        .as_ref()
                        .map(|c| table(&c.bias2))
                        .transpose()?,
                    gain: b
                        .conditioning
                        .as_ref()
                        .map(|c| table(&c.gain))
                        .transpose()?,
                    downsample: b.downsample,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HostIgebm {
            in_channels: self.config.in_channels,
            size: self.config.image_size,
            stem: conv(&self.stem)?,
            blocks,
            head_weight: self
                .head
                .effective_weight()?
                .detach()
                .flatten_all()?
                .to_vec1::<f32>()?,
            head_bias: self.head.raw_bias().flatten_all()?.to_vec1::<f32>()?,
        })
    }

    /// Energies `[B]` (detached) and their gradient with respect to `x`, for a sampler. A frozen
    /// f32 model on the CPU runs the fused CPU pass; a frozen model on another device the
    /// hand-written backward of `manual_grad`; otherwise candle's autograd.
    pub fn energy_and_input_grad(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        match &self.host {
            Some(host) if x.device().is_cpu() && x.dtype() == DType::F32 => {
                let batch = ebm_core::validate::check_batch_shape(
                    x,
                    &self.config.sample_shape(),
                    "IGEBM input",
                )?;
                let labels = self.host_labels(batch, labels)?;
                let values = x.flatten_all()?.to_vec1::<f32>()?;
                let (e, g) = host.energy_and_grad(&values, labels.as_deref());
                Ok((
                    Tensor::from_vec(e, batch, x.device())?,
                    Tensor::from_vec(g, x.shape(), x.device())?,
                ))
            }
            _ if self.manual.is_some() && !x.device().is_cpu() => {
                self.manual_energy_and_input_grad(x, labels)
            }
            _ => self.autograd_energy_and_input_grad(x, labels),
        }
    }

    /// For a training step on the CPU in f32: energies `[B]` of `x` and the gradients, with
    /// respect to every parameter, of `loss = sum_i l_i(E_i)`, where `dloss(i, E_i)` is
    /// `dl_i / dE_i`. The network's part runs in the fused CPU pass; only the spectral
    /// normalisation of the weights goes through autograd. `None` where the fused pass does not
    /// apply (another device or dtype): use autograd instead.
    pub fn fused_loss_grads(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        dloss: &(dyn Fn(usize, f32) -> f32 + Sync),
    ) -> Result<Option<(Tensor, candle_core::backprop::GradStore)>> {
        if !(x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.stem.raw_weight().dtype() == DType::F32)
        {
            return Ok(None);
        }
        let batch =
            ebm_core::validate::check_batch_shape(x, &self.config.sample_shape(), "IGEBM input")?;
        let host_labels = self.host_labels(batch, labels)?;
        let host = self.host_copy()?;
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let (energies, g) = host.energy_and_param_grads(&values, host_labels.as_deref(), dloss);
        // sum(W_eff * G) over every parameter: its autograd gradient is G pulled back through
        // the spectral normalisation (or G itself where there is none).
        let dev = x.device();
        let term = |t: &Tensor, grad: &[f32]| -> Result<Tensor> {
            Ok((t * Tensor::from_slice(grad, t.shape(), dev)?)?.sum_all()?)
        };
        let conv = |c: &Conv, grad: &crate::fused::ConvGrad| -> Result<Tensor> {
            Ok((term(&c.effective_weight()?, &grad.weight)? + term(c.raw_bias(), &grad.bias)?)?)
        };
        let mut total = conv(&self.stem, &g.stem)?;
        for (b, bg) in self.blocks.iter().zip(&g.blocks) {
            total = (total + conv(&b.conv1, &bg.conv1)?)?;
            total = (total + conv(&b.conv2, &bg.conv2)?)?;
            if let (Some(sc), Some(sg)) = (&b.shortcut, &bg.shortcut) {
                total = (total + conv(sc, sg)?)?;
            }
            if let Some(c) = &b.conditioning {
                for (table, grad) in [
                    (&c.bias1, &bg.bias1),
                    (&c.bias2, &bg.bias2),
                    (&c.gain, &bg.gain),
                ] {
                    if let Some(grad) = grad {
                        total = (total + term(table.raw(), grad)?)?;
                    }
                }
            }
        }
        total = (total + term(&self.head.effective_weight()?, &g.head_weight)?)?;
        total = (total + term(self.head.raw_bias(), &g.head_bias)?)?;
        let grads = total.backward()?;
        Ok(Some((Tensor::from_vec(energies, batch, dev)?, grads)))
    }

    fn host_labels(
        &self,
        batch: usize,
        labels: Option<&Tensor>,
    ) -> ebm_core::Result<Option<Vec<usize>>> {
        match (self.config.num_classes, labels) {
            (Some(k), Some(l)) => {
                if l.dims() != [batch] {
                    return Err(ebm_core::Error::Shape {
                        what: "IGEBM labels".into(),
                        expected: format!("[{batch}] (one label per image)"),
                        got: l.dims().to_vec(),
                    });
                }
                let v = l.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                if let Some(&bad) = v.iter().find(|&&y| y as usize >= k) {
                    return Err(ebm_core::Error::invalid(
                        "labels",
                        format!("label {bad} is out of range for a model of {k} classes"),
                    ));
                }
                Ok(Some(v.into_iter().map(|y| y as usize).collect()))
            }
            (Some(k), None) => Err(ebm_core::Error::invalid(
                "labels",
                format!("this IGEBM is conditional on {k} classes: give one label per image"),
            )),
            (None, Some(_)) => Err(ebm_core::Error::invalid(
                "labels",
                "this IGEBM is unconditional and takes no labels",
            )),
            (None, None) => Ok(None),
        }
    }

    /// Energies `[B]` of images `x [B, C, H, W]`, given labels `[B]` (u32) when the model is
    /// conditional. Differentiable with respect to `x` and the parameters.
    pub fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> ebm_core::Result<Tensor> {
        let batch =
            ebm_core::validate::check_batch_shape(x, &self.config.sample_shape(), "IGEBM input")?;
        let one_hot = match (self.config.num_classes, labels) {
            (Some(k), Some(l)) => {
                if l.dims() != [batch] {
                    return Err(ebm_core::Error::Shape {
                        what: "IGEBM labels".into(),
                        expected: format!("[{batch}] (one label per image)"),
                        got: l.dims().to_vec(),
                    });
                }
                Some(one_hot(l, k, x.dtype()).map_err(into_core)?)
            }
            (Some(k), None) => {
                return Err(ebm_core::Error::invalid(
                    "labels",
                    format!("this IGEBM is conditional on {k} classes: give one label per image"),
                ))
            }
            (None, Some(_)) => {
                return Err(ebm_core::Error::invalid(
                    "labels",
                    "this IGEBM is unconditional and takes no labels",
                ))
            }
            (None, None) => None,
        };
        self.forward_unchecked(x, one_hot.as_ref())
            .map_err(into_core)
    }

    fn forward_unchecked(&self, x: &Tensor, one_hot: Option<&Tensor>) -> Result<Tensor> {
        let act = self.config.activation;
        let mut h = self.stem.forward(x)?;
        for block in &self.blocks {
            let mut a = act.apply(&h)?;
            if let (Some(c), Some(y)) = (&block.conditioning, one_hot) {
                a = a.broadcast_add(&c.bias1.lookup(y)?)?;
            }
            let r = block.conv1.forward(&a)?;
            let mut a = act.apply(&r)?;
            if let (Some(c), Some(y)) = (&block.conditioning, one_hot) {
                a = a.broadcast_add(&c.bias2.lookup(y)?)?;
            }
            let mut r = block.conv2.forward(&a)?;
            if let (Some(c), Some(y)) = (&block.conditioning, one_hot) {
                r = r.broadcast_mul(&c.gain.lookup(y)?)?;
            }
            let skip = match &block.shortcut {
                Some(s) => s.forward(&h)?,
                None => h,
            };
            h = (skip + r)?;
            if block.downsample {
                h = ebm_ops::avg_pool2x2(&h)?;
            }
        }
        let features = act.apply(&h)?.sum((2, 3))?;
        let out = self.head.forward(&features)?;
        match one_hot {
            Some(y) => Ok((out * y)?.sum(1)?),
            None => Ok(out.squeeze(1)?),
        }
    }

    fn spectral_layers(&mut self) -> Vec<(String, &Tensor, &mut SpectralNorm)> {
        let mut convs: Vec<&mut Conv> = vec![&mut self.stem];
        for b in &mut self.blocks {
            convs.push(&mut b.conv1);
            convs.push(&mut b.conv2);
            if let Some(s) = &mut b.shortcut {
                convs.push(s);
            }
        }
        let mut out = Vec::new();
        for c in convs {
            let name = c.name().to_string();
            if let Some((w, sn)) = c.spectral_norm_mut() {
                out.push((name, w, sn));
            }
        }
        let name = self.head.name().to_string();
        if let Some((w, sn)) = self.head.spectral_norm_mut() {
            out.push((name, w, sn));
        }
        out
    }

    /// The spectral-norm state of every normalised layer, by layer name.
    pub fn spectral_norms(&self) -> Vec<(&str, &Tensor, &SpectralNorm)> {
        let mut out = Vec::new();
        if let Some(sn) = self.stem.spectral_norm() {
            out.push((self.stem.name(), self.stem_weight(), sn));
        }
        for b in &self.blocks {
            for c in [Some(&b.conv1), Some(&b.conv2), b.shortcut.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Some(sn) = c.spectral_norm() {
                    out.push((c.name(), c.raw_weight(), sn));
                }
            }
        }
        if let Some(sn) = self.head.spectral_norm() {
            out.push((self.head.name(), self.head.raw_weight(), sn));
        }
        out
    }

    fn stem_weight(&self) -> &Tensor {
        self.stem.raw_weight()
    }
}

fn into_core(e: Error) -> ebm_core::Error {
    match e {
        Error::Core(c) => c,
        Error::Candle(c) => ebm_core::Error::Candle(c),
        other => ebm_core::Error::invalid("IGEBM", other.to_string()),
    }
}

impl ebm_core::Energy for Igebm {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        ebm_core::validate::check_finite(x, "IGEBM input")?;
        self.forward(x, None)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        self.energy_and_input_grad(x, None)
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(self.config.sample_shape())
    }
}

impl ebm_core::LabelledEnergy for Igebm {
    fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
        ebm_core::validate::check_finite(x, "IGEBM input")?;
        self.forward(x, Some(labels))
    }

    fn energy_and_grad_given(
        &self,
        x: &Tensor,
        labels: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        self.energy_and_input_grad(x, Some(labels))
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes.unwrap_or(0)
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(self.config.sample_shape())
    }
}

impl Trainable for Igebm {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn update_spectral_norm(&mut self) -> Result<()> {
        for (_, w, sn) in self.spectral_layers() {
            sn.power_iteration(w, 1)?;
        }
        Ok(())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.spectral_norms()
            .into_iter()
            .flat_map(|(name, _, sn)| {
                let (u, v) = sn.vectors();
                [
                    (format!("{name}.weight_u"), u.clone()),
                    (format!("{name}.weight_v"), v.clone()),
                ]
            })
            .collect()
    }

    fn set_buffers(&mut self, buffers: &HashMap<String, Tensor>) -> Result<()> {
        for (name, _, sn) in self.spectral_layers() {
            let get = |suffix: &str| {
                buffers
                    .get(&format!("{name}.{suffix}"))
                    .cloned()
                    .ok_or_else(|| {
                        Error::Config(format!("spectral-norm vector {name}.{suffix} is missing"))
                    })
            };
            sn.set_vectors(get("weight_u")?, get("weight_v")?)?;
        }
        Ok(())
    }
}
