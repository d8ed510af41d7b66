//! pytorch-fid's FID Inception-v3 (pool3 features and logits), ported to candle.
//!
//! The network of pytorch-fid's `InceptionV3(use_fid_inception=True)` (`fid_inception_v3()`:
//! torchvision's Inception-v3 with the blocks `FIDInceptionA`, `FIDInceptionC`,
//! `FIDInceptionE_1` and `FIDInceptionE_2` that reproduce the TensorFlow graph of Heusel et al.
//! 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium"),
//! for inference:
//!
//! - input `[N, 3, H, W]` in [0, 1], resized to 299x299 by bilinear interpolation with
//!   `align_corners=False` (as `F.interpolate`) and scaled to [-1, 1] by `2x - 1`;
//! - `BasicConv2d` = convolution without bias, `BatchNorm2d(eps=0.001)` in eval mode and ReLU,
//!   with the batch norm folded into the convolution's weights and bias when the weights load;
//! - the pools of the FID blocks: 3x3 average pools that do not count the padding
//!   (`count_include_pad=False`) in A, C and E_1, a 3x3 max pool in E_2;
//! - pool3: the 2048 channels averaged over the 8x8 map ([`FidInception::features`]), and the
//!   1008 logits of the `fc` layer ([`FidInception::logits`]).
//!
//! Weights load from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` or from a safetensors
//! file with the same names (`fid_inception_v3().state_dict()`: `Conv2d_1a_3x3.conv.weight`,
//! `Mixed_5b.branch1x1.bn.running_mean`, `fc.weight`, ...); every name and shape is checked, so
//! mismatched weights never load silently. [`inception_score`] is the Inception Score of
//! Salimans et al. 2016 from logits.
//!
//! ```no_run
//! use candle_core::Device;
//! use ebm_eval::images::ImageFolder;
//! use ebm_eval::inception::FidInception;
//!
//! let net = FidInception::load("pt_inception-2015-12-05-6726825d.pth", &Device::Cpu)?;
//! let out = net.run_folder(&ImageFolder::open("samples/")?, 50, |_, _| {})?;
//! assert_eq!(out.features.dims()[1], 2048);
//! # Ok::<(), ebm_eval::Error>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::images::ImageFolder;
use crate::{Error, Result};

/// The width of pool3, the features of the Frechet Inception Distance.
pub const FEATURE_DIM: usize = 2048;
/// The number of classes of the FID Inception's `fc` layer (the TensorFlow graph's 1008).
pub const NUM_CLASSES: usize = 1008;
/// The side of the square the input is resized to.
pub const INPUT_SIZE: usize = 299;
/// The `eps` of torchvision's `BasicConv2d` batch norm.
const BN_EPS: f64 = 1e-3;

/// One tensor of the state dict of pytorch-fid's `fid_inception_v3()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSpec {
    /// Its name, e.g. `Mixed_5b.branch1x1.conv.weight`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// `true` for `*.bn.num_batches_tracked` (an int64 scalar that may be present and is
    /// ignored); `false` for a tensor the network needs.
    pub optional: bool,
}

/// One `BasicConv2d` of the network, as declared in torchvision.
#[derive(Debug, Clone)]
struct ConvSpec {
    name: String,
    c_in: usize,
    c_out: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: (usize, usize),
}

/// The `BasicConv2d` layers of `fid_inception_v3()` in the order of its state dict.
struct Specs(Vec<ConvSpec>);

impl Specs {
    fn conv(
        &mut self,
        name: String,
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) {
        self.0.push(ConvSpec {
            name,
            c_in,
            c_out,
            kernel,
            stride,
            padding,
        });
    }

    fn one(&mut self, block: &str, name: &str, c_in: usize, c_out: usize) {
        self.conv(format!("{block}.{name}"), c_in, c_out, (1, 1), 1, (0, 0));
    }

    fn square(
        &mut self,
        block: &str,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) {
        self.conv(
            format!("{block}.{name}"),
            c_in,
            c_out,
            (k, k),
            stride,
            (pad, pad),
        );
    }

    fn rect(
        &mut self,
        block: &str,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        padding: (usize, usize),
    ) {
        self.conv(format!("{block}.{name}"), c_in, c_out, kernel, 1, padding);
    }

    /// torchvision's `InceptionA.__init__`.
    fn a(&mut self, b: &str, c_in: usize, pool_features: usize) {
        self.one(b, "branch1x1", c_in, 64);
        self.one(b, "branch5x5_1", c_in, 48);
        self.square(b, "branch5x5_2", 48, 64, 5, 1, 2);
        self.one(b, "branch3x3dbl_1", c_in, 64);
        self.square(b, "branch3x3dbl_2", 64, 96, 3, 1, 1);
        self.square(b, "branch3x3dbl_3", 96, 96, 3, 1, 1);
        self.one(b, "branch_pool", c_in, pool_features);
    }

    /// torchvision's `InceptionB.__init__`.
    fn b(&mut self, b: &str, c_in: usize) {
        self.square(b, "branch3x3", c_in, 384, 3, 2, 0);
        self.one(b, "branch3x3dbl_1", c_in, 64);
        self.square(b, "branch3x3dbl_2", 64, 96, 3, 1, 1);
        self.square(b, "branch3x3dbl_3", 96, 96, 3, 2, 0);
    }

    /// torchvision's `InceptionC.__init__`.
    fn c(&mut self, b: &str, c_in: usize, c7: usize) {
        self.one(b, "branch1x1", c_in, 192);
        self.one(b, "branch7x7_1", c_in, c7);
        self.rect(b, "branch7x7_2", c7, c7, (1, 7), (0, 3));
        self.rect(b, "branch7x7_3", c7, 192, (7, 1), (3, 0));
        self.one(b, "branch7x7dbl_1", c_in, c7);
        self.rect(b, "branch7x7dbl_2", c7, c7, (7, 1), (3, 0));
        self.rect(b, "branch7x7dbl_3", c7, c7, (1, 7), (0, 3));
        self.rect(b, "branch7x7dbl_4", c7, c7, (7, 1), (3, 0));
        self.rect(b, "branch7x7dbl_5", c7, 192, (1, 7), (0, 3));
        self.one(b, "branch_pool", c_in, 192);
    }

    /// torchvision's `InceptionD.__init__`.
    fn d(&mut self, b: &str, c_in: usize) {
        self.one(b, "branch3x3_1", c_in, 192);
        self.square(b, "branch3x3_2", 192, 320, 3, 2, 0);
        self.one(b, "branch7x7x3_1", c_in, 192);
        self.rect(b, "branch7x7x3_2", 192, 192, (1, 7), (0, 3));
        self.rect(b, "branch7x7x3_3", 192, 192, (7, 1), (3, 0));
        self.square(b, "branch7x7x3_4", 192, 192, 3, 2, 0);
    }

    /// torchvision's `InceptionE.__init__`.
    fn e(&mut self, b: &str, c_in: usize) {
        self.one(b, "branch1x1", c_in, 320);
        self.one(b, "branch3x3_1", c_in, 384);
        self.rect(b, "branch3x3_2a", 384, 384, (1, 3), (0, 1));
        self.rect(b, "branch3x3_2b", 384, 384, (3, 1), (1, 0));
        self.one(b, "branch3x3dbl_1", c_in, 448);
        self.square(b, "branch3x3dbl_2", 448, 384, 3, 1, 1);
        self.rect(b, "branch3x3dbl_3a", 384, 384, (1, 3), (0, 1));
        self.rect(b, "branch3x3dbl_3b", 384, 384, (3, 1), (1, 0));
        self.one(b, "branch_pool", c_in, 192);
    }

    /// torchvision's `Inception3.__init__` with pytorch-fid's `fid_inception_v3()` blocks
    /// (`aux_logits=False`, `num_classes=1008`).
    fn network() -> Self {
        let mut s = Specs(Vec::new());
        s.conv("Conv2d_1a_3x3".into(), 3, 32, (3, 3), 2, (0, 0));
        s.conv("Conv2d_2a_3x3".into(), 32, 32, (3, 3), 1, (0, 0));
        s.conv("Conv2d_2b_3x3".into(), 32, 64, (3, 3), 1, (1, 1));
        s.conv("Conv2d_3b_1x1".into(), 64, 80, (1, 1), 1, (0, 0));
        s.conv("Conv2d_4a_3x3".into(), 80, 192, (3, 3), 1, (0, 0));
        s.a("Mixed_5b", 192, 32);
        s.a("Mixed_5c", 256, 64);
        s.a("Mixed_5d", 288, 64);
        s.b("Mixed_6a", 288);
        s.c("Mixed_6b", 768, 128);
        s.c("Mixed_6c", 768, 160);
        s.c("Mixed_6d", 768, 160);
        s.c("Mixed_6e", 768, 192);
        s.d("Mixed_7a", 768);
        s.e("Mixed_7b", 1280);
        s.e("Mixed_7c", 2048);
        s
    }
}

/// Every tensor of pytorch-fid's `fid_inception_v3().state_dict()`, in its order: for each
/// `BasicConv2d` `P`, `P.conv.weight`, `P.bn.weight`, `P.bn.bias`, `P.bn.running_mean`,
/// `P.bn.running_var` and the optional `P.bn.num_batches_tracked`; then `fc.weight` and
/// `fc.bias`.
pub fn expected_weights() -> Vec<WeightSpec> {
    let mut out = Vec::new();
    for c in Specs::network().0 {
        let spec = |suffix: &str, shape: Vec<usize>, optional: bool| WeightSpec {
            name: format!("{}.{suffix}", c.name),
            shape,
            optional,
        };
        out.push(spec(
            "conv.weight",
            vec![c.c_out, c.c_in, c.kernel.0, c.kernel.1],
            false,
        ));
        for suffix in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
            out.push(spec(suffix, vec![c.c_out], false));
        }
        out.push(spec("bn.num_batches_tracked", vec![], true));
    }
    out.push(WeightSpec {
        name: "fc.weight".into(),
        shape: vec![NUM_CLASSES, FEATURE_DIM],
        optional: false,
    });
    out.push(WeightSpec {
        name: "fc.bias".into(),
        shape: vec![NUM_CLASSES],
        optional: false,
    });
    out
}

/// A `BasicConv2d` with its batch norm folded in: `relu(conv(x, w) + b)`.
#[derive(Debug, Clone)]
struct BasicConv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: (usize, usize),
}

impl BasicConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's conv2d takes one padding for both dimensions: the common part goes to the
        // convolution, the rest (the (1, 7)/(7, 1) kernels' (0, 3)/(3, 0)) is padded here.
        let (ph, pw) = self.padding;
        let common = ph.min(pw);
        let mut x = x.clone();
        if ph > common {
            x = x.pad_with_zeros(2, ph - common, ph - common)?;
        }
        if pw > common {
            x = x.pad_with_zeros(3, pw - common, pw - common)?;
        }
        Ok(x.conv2d(&self.weight, common, self.stride, 1, 1)?
            .broadcast_add(&self.bias)?
            .relu()?)
    }
}

/// `F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`: the sum over the window
/// divided by the number of positions inside the image (4 in a corner, 6 on an edge, 9 inside).
fn avg_pool_3x3_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let inside = |i: usize, n: usize| (i.saturating_sub(1)..=(i + 1).min(n - 1)).count();
    let mut factor = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            // candle's avg_pool2d divides the sum by 9; this turns that into a division by the count.
            factor.push(9.0 / (inside(i, h) * inside(j, w)) as f32);
        }
    }
    let factor = Tensor::from_vec(factor, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    Ok(padded
        .avg_pool2d_with_stride(3, 1)?
        .broadcast_mul(&factor)?)
}

/// `F.max_pool2d(x, 3, stride=1, padding=1)`: the padding is minus infinity, as in PyTorch.
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let mut border = vec![0f32; (h + 2) * (w + 2)];
    for i in 0..h + 2 {
        for j in 0..w + 2 {
            if i == 0 || j == 0 || i == h + 1 || j == w + 1 {
                border[i * (w + 2) + j] = f32::NEG_INFINITY;
            }
        }
    }
    let border = Tensor::from_vec(border, (1, 1, h + 2, w + 2), x.device())?.to_dtype(x.dtype())?;
    let padded = x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .broadcast_add(&border)?;
    Ok(padded.max_pool2d_with_stride(3, 1)?)
}

/// `nn.MaxPool2d(kernel_size=3, stride=2)`.
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

/// The pool branch of an Inception block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// FIDInceptionA, FIDInceptionC, FIDInceptionE_1.
    AvgExcludePad,
    /// FIDInceptionE_2.
    Max,
}

#[derive(Debug, Clone)]
struct BlockA {
    branch1x1: BasicConv,
    branch5x5: [BasicConv; 2],
    branch3x3dbl: [BasicConv; 3],
    branch_pool: BasicConv,
}

#[derive(Debug, Clone)]
struct BlockB {
    branch3x3: BasicConv,
    branch3x3dbl: [BasicConv; 3],
}

#[derive(Debug, Clone)]
struct BlockC {
    branch1x1: BasicConv,
    branch7x7: [BasicConv; 3],
    branch7x7dbl: [BasicConv; 5],
    branch_pool: BasicConv,
}

#[derive(Debug, Clone)]
struct BlockD {
    branch3x3: [BasicConv; 2],
    branch7x7x3: [BasicConv; 4],
}

#[derive(Debug, Clone)]
struct BlockE {
    branch1x1: BasicConv,
    branch3x3_1: BasicConv,
    branch3x3_2: [BasicConv; 2],
    branch3x3dbl_12: [BasicConv; 2],
    branch3x3dbl_3: [BasicConv; 2],
    branch_pool: BasicConv,
    pool: Pool,
}

fn chain(x: &Tensor, convs: &[BasicConv]) -> Result<Tensor> {
    let mut x = x.clone();
    for c in convs {
        x = c.forward(&x)?;
    }
    Ok(x)
}

impl BlockA {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b5 = chain(x, &self.branch5x5)?;
        let b3 = chain(x, &self.branch3x3dbl)?;
        let bp = self.branch_pool.forward(&avg_pool_3x3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[b1, b5, b3, bp], 1)?)
    }
}

impl BlockB {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3.forward(x)?;
        let b3d = chain(x, &self.branch3x3dbl)?;
        let bp = max_pool_3x3_s2(x)?;
        Ok(Tensor::cat(&[b3, b3d, bp], 1)?)
    }
}

impl BlockC {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b7 = chain(x, &self.branch7x7)?;
        let b7d = chain(x, &self.branch7x7dbl)?;
        let bp = self.branch_pool.forward(&avg_pool_3x3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[b1, b7, b7d, bp], 1)?)
    }
}

impl BlockD {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = chain(x, &self.branch3x3)?;
        let b7 = chain(x, &self.branch7x7x3)?;
        let bp = max_pool_3x3_s2(x)?;
        Ok(Tensor::cat(&[b3, b7, bp], 1)?)
    }
}

impl BlockE {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b3 = self.branch3x3_1.forward(x)?;
        let b3 = Tensor::cat(
            &[
                self.branch3x3_2[0].forward(&b3)?,
                self.branch3x3_2[1].forward(&b3)?,
            ],
            1,
        )?;
        let b3d = chain(x, &self.branch3x3dbl_12)?;
        let b3d = Tensor::cat(
            &[
                self.branch3x3dbl_3[0].forward(&b3d)?,
                self.branch3x3dbl_3[1].forward(&b3d)?,
            ],
            1,
        )?;
        let pooled = match self.pool {
            Pool::AvgExcludePad => avg_pool_3x3_exclude_pad(x)?,
            Pool::Max => max_pool_3x3_same(x)?,
        };
        let bp = self.branch_pool.forward(&pooled)?;
        Ok(Tensor::cat(&[b1, b3, b3d, bp], 1)?)
    }
}

/// What one pass of the network gives for a batch of images.
#[derive(Debug, Clone)]
pub struct InceptionOutputs {
    /// pool3, `[N, 2048]`: the features of the Frechet Inception Distance.
    pub features: Tensor,
    /// The `fc` layer, `[N, 1008]`: `features W^T + b` (torchvision's `Inception3.forward`).
    pub logits: Tensor,
    /// `features W^T` without the bias, `[N, 1008]`: the logits of the original Inception Score
    /// code (Salimans et al. take the graph's `softmax/logits/MatMul`) and of torch-fidelity's
    /// `logits_unbiased`.
    pub logits_unbiased: Tensor,
}

/// pytorch-fid's FID Inception-v3 with loaded weights (see the module documentation).
#[derive(Debug, Clone)]
pub struct FidInception {
    stem: [BasicConv; 5],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7: [BlockE; 2],
    fc_weight_t: Tensor,
    fc_bias: Tensor,
    device: Device,
}

/// The tensors of a state dict, checked against [`expected_weights`] and folded, on the CPU.
struct Checked {
    origin: String,
    tensors: HashMap<String, Tensor>,
}

impl Checked {
    fn problem(&self, problem: impl Into<String>) -> Error {
        Error::Weights {
            origin: self.origin.clone(),
            problem: problem.into(),
        }
    }

    /// A tensor by name, f64 on the CPU, with every value finite.
    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.problem(format!("missing tensor `{name}`")))?;
        let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let values = t.flatten_all()?.to_vec1::<f64>()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.problem(format!(
                "tensor `{name}` has a non-finite value ({}) at flat index {i}",
                values[i]
            )));
        }
        Ok(t)
    }

    /// A `BasicConv2d` with its batch norm folded in: `w' = w gamma / sqrt(var + eps)`,
    /// `b' = beta - mean gamma / sqrt(var + eps)` (in f64, then f32 on `device`).
    fn conv(&self, spec: &ConvSpec, device: &Device) -> Result<BasicConv> {
        let p = &spec.name;
        let w = self.get(&format!("{p}.conv.weight"))?;
        let gamma = self.get(&format!("{p}.bn.weight"))?;
        let beta = self.get(&format!("{p}.bn.bias"))?;
        let mean = self.get(&format!("{p}.bn.running_mean"))?;
        let var = self.get(&format!("{p}.bn.running_var"))?;
        if let Some(v) = var.to_vec1::<f64>()?.into_iter().find(|v| *v < 0.0) {
            return Err(self.problem(format!(
                "tensor `{p}.bn.running_var` has a negative variance ({v})"
            )));
        }
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let weight = w.broadcast_mul(&scale.reshape((spec.c_out, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?;
        Ok(BasicConv {
            weight: weight.to_dtype(DType::F32)?.to_device(device)?,
            bias: bias
                .reshape((1, spec.c_out, 1, 1))?
                .to_dtype(DType::F32)?
                .to_device(device)?,
            stride: spec.stride,
            padding: spec.padding,
        })
    }
}

/// Checks `tensors` against [`expected_weights`]: every required tensor present with its shape
/// and a floating-point dtype, no unknown names. Every kind of problem is reported, the first few named.
fn check_names(origin: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let expected = expected_weights();
    let (mut wrong, mut missing) = (Vec::new(), Vec::new());
    let known: HashMap<&str, &WeightSpec> = expected.iter().map(|s| (s.name.as_str(), s)).collect();
    for spec in expected.iter().filter(|s| !s.optional) {
        match tensors.get(&spec.name) {
            None => missing.push(format!(
                "missing tensor `{}` (expected shape {:?})",
                spec.name, spec.shape
            )),
            Some(t) if t.dims() != spec.shape.as_slice() => wrong.push(format!(
                "tensor `{}` has shape {:?}, expected {:?}",
                spec.name,
                t.dims(),
                spec.shape
            )),
            Some(t) if !t.dtype().is_float() => wrong.push(format!(
                "tensor `{}` has dtype {:?}, expected a floating-point dtype",
                spec.name,
                t.dtype()
            )),
            Some(_) => {}
        }
    }
    let unknown: BTreeSet<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|n| !known.contains_key(n))
        .collect();
    if wrong.is_empty() && missing.is_empty() && unknown.is_empty() {
        return Ok(());
    }
    // Wrong shapes first, then unknown names, then missing tensors (a file of another network
    // misses them all), each list cut short.
    let mut parts = Vec::new();
    let mut list = |items: Vec<String>, keep: usize, what: &str| {
        let n = items.len();
        parts.extend(items.into_iter().take(keep));
        if n > keep {
            parts.push(format!("and {} more {what}", n - keep));
        }
    };
    list(wrong, 10, "tensors of the wrong shape or dtype");
    list(
        unknown
            .iter()
            .map(|n| format!("unknown tensor `{n}`"))
            .collect(),
        10,
        "unknown tensors",
    );
    list(missing, 5, "missing tensors");
    let mut text = parts.join("; ");
    if unknown.iter().any(|n| n.starts_with("blocks.")) {
        text.push_str(
            " (names like `blocks.0.0.conv.weight` are those of pytorch-fid's InceptionV3 wrapper; \
             save `fid_inception_v3().state_dict()` instead, as pytorch-fid's weights file holds)",
        );
    } else if unknown.iter().any(|n| n.starts_with("AuxLogits.")) {
        text.push_str(" (`AuxLogits` tensors belong to torchvision's ImageNet Inception-v3, not to pytorch-fid's FID Inception)");
    }
    Err(Error::Weights {
        origin: origin.to_string(),
        problem: format!("these weights are not pytorch-fid's FID Inception-v3: {text}"),
    })
}

fn take<const N: usize>(it: &mut impl Iterator<Item = BasicConv>) -> Result<[BasicConv; N]> {
    let v: Vec<BasicConv> = it.by_ref().take(N).collect();
    v.try_into().map_err(|v: Vec<BasicConv>| {
        Error::Input(format!(
            "internal error: the network needs {N} more convolutions, got {}",
            v.len()
        ))
    })
}

fn one(it: &mut impl Iterator<Item = BasicConv>) -> Result<BasicConv> {
    let [c] = take::<1>(it)?;
    Ok(c)
}

impl FidInception {
    /// Loads weights from pytorch-fid's `.pth` (either `torch.save` format; `.pt` is taken too)
    /// or from a `.safetensors` file with the names of `fid_inception_v3().state_dict()`, onto
    /// `device`. Errors name the file, and the tensors that are missing, misshapen or unknown.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let file_error = |problem: String| Error::File {
            path: path.to_path_buf(),
            problem,
        };
        let tensors: HashMap<String, Tensor> = match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| file_error(format!("cannot read the safetensors file: {e}")))?,
            Some("pth") | Some("pt") => read_pth(path)?.into_iter().collect(),
            _ => {
                return Err(file_error(
                    "unknown weights format: expected pytorch-fid's .pth (pt_inception-2015-12-05-6726825d.pth) or a .safetensors file".into(),
                ))
            }
        };
        Self::build(path.display().to_string(), tensors, device)
    }

    /// Builds the network from a state dict with the names of pytorch-fid's
    /// `fid_inception_v3().state_dict()` (any floating-point dtype, any device; the
    /// `*.bn.num_batches_tracked` entries may be present and are ignored), onto `device`.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        Self::build("the given tensors".to_string(), tensors, device)
    }

    fn build(origin: String, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        check_names(&origin, &tensors)?;
        let checked = Checked { origin, tensors };
        let convs = Specs::network()
            .0
            .iter()
            .map(|s| checked.conv(s, device))
            .collect::<Result<Vec<_>>>()?;
        let mut it = convs.into_iter();
        let it = &mut it;
        let stem = take::<5>(it)?;
        let mut block_a = || -> Result<BlockA> {
            Ok(BlockA {
                branch1x1: one(it)?,
                branch5x5: take(it)?,
                branch3x3dbl: take(it)?,
                branch_pool: one(it)?,
            })
        };
        let mixed_5 = [block_a()?, block_a()?, block_a()?];
        let mixed_6a = BlockB {
            branch3x3: one(it)?,
            branch3x3dbl: take(it)?,
        };
        let mut block_c = || -> Result<BlockC> {
            Ok(BlockC {
                branch1x1: one(it)?,
                branch7x7: take(it)?,
                branch7x7dbl: take(it)?,
                branch_pool: one(it)?,
            })
        };
        let mixed_6 = [block_c()?, block_c()?, block_c()?, block_c()?];
        let mixed_7a = BlockD {
            branch3x3: take(it)?,
            branch7x7x3: take(it)?,
        };
        let mut block_e = |pool: Pool| -> Result<BlockE> {
            Ok(BlockE {
                branch1x1: one(it)?,
                branch3x3_1: one(it)?,
                branch3x3_2: take(it)?,
                branch3x3dbl_12: take(it)?,
                branch3x3dbl_3: take(it)?,
                branch_pool: one(it)?,
                pool,
            })
        };
        let mixed_7 = [block_e(Pool::AvgExcludePad)?, block_e(Pool::Max)?];
        let fc_weight_t = checked
            .get("fc.weight")?
            .t()?
            .to_dtype(DType::F32)?
            .to_device(device)?
            .contiguous()?;
        let fc_bias = checked
            .get("fc.bias")?
            .reshape((1, NUM_CLASSES))?
            .to_dtype(DType::F32)?
            .to_device(device)?;
        Ok(Self {
            stem,
            mixed_5,
            mixed_6a,
            mixed_6,
            mixed_7a,
            mixed_7,
            fc_weight_t,
            fc_bias,
            device: device.clone(),
        })
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// pytorch-fid's `InceptionV3` input transform: bilinear resize to 299x299
    /// (`align_corners=False`) and `2x - 1`, as f32 on the network's device.
    pub fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        let dims = images.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[0] == 0 || dims[2] == 0 || dims[3] == 0 {
            return Err(Error::Input(format!(
                "FID Inception takes images [N, 3, H, W] with N, H, W >= 1 and values in [0, 1], got shape {dims:?} (repeat grey images to 3 channels)"
            )));
        }
        let x = images.to_device(&self.device)?.to_dtype(DType::F32)?;
        // A NaN or an infinity anywhere makes the sum non-finite.
        if !x.sum_all()?.to_scalar::<f32>()?.is_finite() {
            return Err(Error::Input(
                "the images contain NaN or infinite values".into(),
            ));
        }
        Ok(resize_bilinear(&x, INPUT_SIZE, INPUT_SIZE)?.affine(2.0, -1.0)?)
    }

    /// pool3 features `[N, 2048]` of images `[N, 3, H, W]` in [0, 1] (resized and scaled as
    /// pytorch-fid's `InceptionV3` does).
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let mut x = self.preprocess(images)?;
        for (i, conv) in self.stem.iter().enumerate() {
            x = conv.forward(&x)?;
            if i == 2 || i == 4 {
                x = max_pool_3x3_s2(&x)?;
            }
        }
        for block in &self.mixed_5 {
            x = block.forward(&x)?;
        }
        x = self.mixed_6a.forward(&x)?;
        for block in &self.mixed_6 {
            x = block.forward(&x)?;
        }
        x = self.mixed_7a.forward(&x)?;
        for block in &self.mixed_7 {
            x = block.forward(&x)?;
        }
        Ok(x.mean((2, 3))?)
    }

    /// The `fc` layer's logits `[N, 1008]` of images `[N, 3, H, W]` in [0, 1].
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        self.logits_from_features(&self.features(images)?)
    }

    /// `features W^T + b`: the `fc` layer on pool3 features `[N, 2048]`.
    pub fn logits_from_features(&self, features: &Tensor) -> Result<Tensor> {
        Ok(self
            .logits_unbiased_from_features(features)?
            .broadcast_add(&self.fc_bias)?)
    }

    /// `features W^T`: the `fc` layer without its bias (the logits of the original Inception
    /// Score code and of torch-fidelity).
    pub fn logits_unbiased_from_features(&self, features: &Tensor) -> Result<Tensor> {
        let features = features.to_device(&self.device)?.to_dtype(DType::F32)?;
        match features.dims() {
            [_, d] if *d == FEATURE_DIM => Ok(features.matmul(&self.fc_weight_t)?),
            dims => Err(Error::Input(format!(
                "features must be [N, {FEATURE_DIM}], got {dims:?}"
            ))),
        }
    }

    /// Features and both kinds of logits of images `[N, 3, H, W]` in one pass.
    pub fn outputs(&self, images: &Tensor) -> Result<InceptionOutputs> {
        let features = self.features(images)?;
        let logits_unbiased = self.logits_unbiased_from_features(&features)?;
        let logits = logits_unbiased.broadcast_add(&self.fc_bias)?;
        Ok(InceptionOutputs {
            features,
            logits,
            logits_unbiased,
        })
    }

    /// [`FidInception::outputs`] of images `[N, 3, H, W]`, `batch_size` at a time; the results
    /// are on the CPU.
    pub fn outputs_batched(&self, images: &Tensor, batch_size: usize) -> Result<InceptionOutputs> {
        let n = images.dims().first().copied().unwrap_or(0);
        self.batched(
            n,
            batch_size,
            |start, len| Ok(images.narrow(0, start, len)?),
            |_, _| {},
        )
    }

    /// The outputs for every image of a folder, in its order, reading and running `batch_size`
    /// images at a time (pytorch-fid's default is 50); `progress(done, total)` is called after
    /// each batch. The results are on the CPU.
    pub fn run_folder(
        &self,
        folder: &ImageFolder,
        batch_size: usize,
        progress: impl FnMut(usize, usize),
    ) -> Result<InceptionOutputs> {
        self.batched(
            folder.len(),
            batch_size,
            |start, len| folder.load(start..start + len, &self.device),
            progress,
        )
    }

    fn batched(
        &self,
        n: usize,
        batch_size: usize,
        mut batch: impl FnMut(usize, usize) -> Result<Tensor>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<InceptionOutputs> {
        if batch_size == 0 {
            return Err(Error::Input("the batch size must be at least 1".into()));
        }
        if n == 0 {
            return Err(Error::Input("no images".into()));
        }
        let (mut features, mut logits, mut unbiased) = (Vec::new(), Vec::new(), Vec::new());
        let mut start = 0;
        while start < n {
            let len = batch_size.min(n - start);
            let out = self.outputs(&batch(start, len)?)?;
            features.push(out.features.to_device(&Device::Cpu)?);
            logits.push(out.logits.to_device(&Device::Cpu)?);
            unbiased.push(out.logits_unbiased.to_device(&Device::Cpu)?);
            start += len;
            progress(start, n);
        }
        Ok(InceptionOutputs {
            features: Tensor::cat(&features, 0)?,
            logits: Tensor::cat(&logits, 0)?,
            logits_unbiased: Tensor::cat(&unbiased, 0)?,
        })
    }
}

/// `F.interpolate(x, size=(height, width), mode='bilinear', align_corners=False)` (no
/// antialiasing) of `[N, C, H, W]`: candle's `upsample_bilinear2d`, which follows PyTorch's
/// source-index rule `(dst + 0.5) * in / out - 0.5` clamped at 0, for both up- and
/// down-sampling (the tests hold it to PyTorch). The same size is a copy, as in PyTorch.
pub fn resize_bilinear(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (height, width) {
        return Ok(x.clone());
    }
    if height == 0 || width == 0 || h == 0 || w == 0 {
        return Err(Error::Input(format!(
            "cannot resize {h}x{w} to {height}x{width}"
        )));
    }
    Ok(x.upsample_bilinear2d(height, width, false)?)
}

/// The Inception Score of Salimans et al. 2016 (`exp E_x KL(p(y|x) || p(y))`) from logits
/// `[N, C]`, as their code and torch-fidelity compute it: softmax over each row (in f64),
/// `splits` consecutive parts of `N / splits` rows (part `i` is rows `i N / splits` to
/// `(i + 1) N / splits`), for each part `exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y)))` with
/// `p(y)` the part's mean, then the mean and the population standard deviation (`np.std`) over
/// the parts. A probability that underflows to 0 adds 0 (the limit of `p log p`), where NumPy
/// would give NaN. The usual choice is `splits = 10`; torch-fidelity shuffles the rows first
/// (seeded), the original code does not, and neither does this function.
pub fn inception_score(logits: &Tensor, splits: usize) -> Result<(f64, f64)> {
    let (n, c) = logits.dims2().map_err(|_| {
        Error::Input(format!(
            "Inception Score: logits must be [N, C], got shape {:?}",
            logits.dims()
        ))
    })?;
    if splits == 0 || n < splits || c == 0 {
        return Err(Error::Input(format!(
            "Inception Score: need at least one split, one class and as many images as splits; got {n} images, {c} classes, {splits} splits"
        )));
    }
    let values = logits
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Input(format!(
            "Inception Score: logit {} of image {} is {}",
            i % c,
            i / c,
            values[i]
        )));
    }
    // Softmax rows and their logarithms (log p = l - max - log sum exp, exact where p underflows).
    let mut p = vec![0f64; n * c];
    let mut log_p = vec![0f64; n * c];
    for r in 0..n {
        let row = &values[r * c..(r + 1) * c];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for k in 0..c {
            log_p[r * c + k] = row[k] - m - log_sum;
            p[r * c + k] = log_p[r * c + k].exp();
        }
    }
    let mut scores = Vec::with_capacity(splits);
    for i in 0..splits {
        let (lo, hi) = (i * n / splits, (i + 1) * n / splits);
        let rows = (hi - lo) as f64;
        let mut q = vec![0f64; c];
        for r in lo..hi {
            for k in 0..c {
                q[k] += p[r * c + k];
            }
        }
        q.iter_mut().for_each(|v| *v /= rows);
        let mut kl_sum = 0.0;
        for r in lo..hi {
            for k in 0..c {
                let pk = p[r * c + k];
                if pk > 0.0 {
                    kl_sum += pk * (log_p[r * c + k] - q[k].ln());
                }
            }
        }
        scores.push((kl_sum / rows).exp());
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / splits as f64;
    Ok((mean, var.sqrt()))
}

// ---------------------------------------------------------------------------------------------
// Reading PyTorch's .pth files.

/// The first pickle of a legacy (pre-zip, PyTorch < 1.6) `torch.save` file: protocol 2, the
/// magic number 0x1950a86a20f9469cfc6c as a 10-byte long, stop.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// The tensors of a state dict saved by `torch.save`, in either format: the zip archive of
/// PyTorch >= 1.6 (read by candle's `pickle` module) or the legacy stream of pickles of older
/// versions (pytorch-fid's weights file was written in 2019), read here with candle's unpickler.
/// Entries that are not tensors are skipped; the tensors are on the CPU in their stored dtype.
pub fn read_pth(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let file_error = |problem: String| Error::File {
        path: path.to_path_buf(),
        problem,
    };
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| file_error(format!("cannot read: {e}")))?;
    let tensors = if head == *b"PK\x03\x04" {
        candle_core::pickle::read_all(path)
            .map_err(|e| file_error(format!("cannot read the PyTorch zip file: {e}")))?
    } else if head == LEGACY_MAGIC[..4] {
        let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
        read_legacy_pth(&bytes)
            .map_err(|e| file_error(format!("cannot read the legacy PyTorch file: {e}")))?
    } else {
        return Err(file_error(
            "not a PyTorch file (neither a torch.save zip archive nor the legacy format)".into(),
        ));
    };
    if tensors.is_empty() {
        return Err(file_error(
            "no tensors found (expected a state dict saved with torch.save)".into(),
        ));
    }
    Ok(tensors)
}

fn unpickle(r: &mut impl BufRead) -> std::result::Result<Object, String> {
    let mut stack = Stack::empty();
    stack.read_loop(r).map_err(|e| e.to_string())?;
    stack.finalize().map_err(|e| e.to_string())
}

/// The legacy format (torch/serialization.py `_legacy_save`): pickles of the magic number, the
/// protocol version and system information, the object itself (storages as persistent ids
/// `('storage', type, key, location, numel, view)`), the list of storage keys, then for each key
/// in that order the element count as a little-endian int64 followed by the raw elements.
fn read_legacy_pth(bytes: &[u8]) -> std::result::Result<Vec<(String, Tensor)>, String> {
    if cfg!(target_endian = "big") {
        return Err("reading PyTorch files needs a little-endian machine".into());
    }
    if !bytes.starts_with(&LEGACY_MAGIC) {
        return Err("bad magic number".into());
    }
    let mut r = std::io::Cursor::new(&bytes[LEGACY_MAGIC.len()..]);
    match unpickle(&mut r)? {
        Object::Int(1001) => {}
        other => {
            return Err(format!(
                "unsupported protocol version {other:?} (expected 1001)"
            ))
        }
    }
    if let Object::Dict(info) = unpickle(&mut r)? {
        let big_endian = info.iter().any(|(k, v)| {
            *k == Object::Unicode("little_endian".into()) && *v == Object::Bool(false)
        });
        if big_endian {
            return Err("the file was written on a big-endian machine".into());
        }
    }
    let Object::Dict(entries) = unpickle(&mut r)? else {
        return Err("the saved object is not a dict (expected a state dict)".into());
    };
    let mut infos = Vec::new();
    for (name, value) in entries {
        let label = match &name {
            Object::Unicode(s) => s.clone(),
            other => format!("{other:?}"),
        };
        match value.into_tensor_info(name, Path::new("legacy")) {
            Ok(Some(info)) => infos.push(info),
            Ok(None) => {}
            Err(e) => return Err(format!("tensor `{label}`: {e}")),
        }
    }
    let keys = match unpickle(&mut r)? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                Object::Unicode(s) => Ok(s),
                other => Err(format!("bad storage key {other:?}")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        other => return Err(format!("expected the list of storage keys, got {other:?}")),
    };
    let storage_dtype: HashMap<String, DType> = infos
        .iter()
        .map(|i| (i.path.trim_start_matches("legacy/").to_string(), i.dtype))
        .collect();
    let mut pos = r.position() as usize + LEGACY_MAGIC.len();
    let mut storages: HashMap<String, (&[u8], usize)> = HashMap::new();
    for key in keys {
        let dtype = *storage_dtype
            .get(&key)
            .ok_or_else(|| format!("storage `{key}` is used by no tensor"))?;
        let count = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| format!("the file ends before storage `{key}`"))?;
        let numel =
            u64::from_le_bytes(count.try_into().map_err(|_| "truncated".to_string())?) as usize;
        pos += 8;
        let len = numel
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| format!("storage `{key}` is too large"))?;
        let data = bytes.get(pos..pos.saturating_add(len)).ok_or_else(|| {
            format!("the file ends inside storage `{key}` ({numel} elements of {dtype:?})")
        })?;
        storages.insert(key, (data, numel));
        pos += len;
    }
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        let key = info.path.trim_start_matches("legacy/");
        let (data, numel) = storages
            .get(key)
            .ok_or_else(|| format!("tensor `{}`: storage `{key}` is not in the file", info.name))?;
        let elem = info.dtype.size_in_bytes();
        let dims = info.layout.dims().to_vec();
        let strides = info.layout.stride().to_vec();
        let start = info.layout.start_offset() / elem;
        let count = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{}` has an impossible shape {dims:?}", info.name))?;
        let mut raw = Vec::new();
        if count > 0 {
            // The largest element offset the tensor reaches must lie inside its storage.
            let last = dims.iter().zip(&strides).fold(start, |acc, (d, s)| {
                acc.saturating_add((d - 1).saturating_mul(*s))
            });
            if last >= *numel {
                return Err(format!(
                    "tensor `{}` reaches element {last} of a storage of {numel}",
                    info.name
                ));
            }
            raw.reserve(count * elem);
            if info.layout.is_contiguous() {
                raw.extend_from_slice(&data[start * elem..(start + count) * elem]);
            } else {
                let mut index = vec![0usize; dims.len()];
                for _ in 0..count {
                    let offset = start
                        + index
                            .iter()
                            .zip(&strides)
                            .map(|(i, s)| i * s)
                            .sum::<usize>();
                    raw.extend_from_slice(&data[offset * elem..(offset + 1) * elem]);
                    for d in (0..dims.len()).rev() {
                        index[d] += 1;
                        if index[d] < dims[d] {
                            break;
                        }
                        index[d] = 0;
                    }
                }
            }
        }
        let tensor = Tensor::from_raw_buffer(&raw, info.dtype, &dims, &Device::Cpu)
            .map_err(|e| format!("tensor `{}`: {e}", info.name))?;
        out.push((info.name, tensor));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Seeded weights for tests.

/// Seeded weights that `scripts/fid_inception_reference.py` builds identically in PyTorch, so
/// that the port can be tested against PyTorch without the real weights file. Not a stable API.
#[doc(hidden)]
pub mod seeded {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use super::{expected_weights, FEATURE_DIM};
    use crate::Result;

    /// 64-bit FNV-1a of a name's UTF-8 bytes.
    pub fn fnv1a64(name: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// The splitmix64 output for state `x` (the state is advanced by the golden gamma first).
    pub fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `u(name, i) = (splitmix64(fnv1a64(name) + i) >> 11) * 2^-53`, uniform in [0, 1).
    pub fn uniform(name: &str, n: usize) -> Vec<f64> {
        let seed = fnv1a64(name);
        (0..n as u64)
            .map(|i| (splitmix64(seed.wrapping_add(i)) >> 11) as f64 * (-53f64).exp2())
            .collect()
    }

    /// The seeded values of one float tensor of the state dict (the script's `seeded_tensor`),
    /// or `None` for a name without a rule.
    pub fn values(name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let n: usize = shape.iter().product();
        let u = uniform(name, n);
        let map = |f: &dyn Fn(f64) -> f64| u.iter().map(|&u| f(u) as f32).collect();
        if name.ends_with(".conv.weight") {
            let fan_in: usize = shape[1..].iter().product();
            let a = (6.0 / fan_in as f64).sqrt();
            Some(map(&|u| a * (2.0 * u - 1.0)))
        } else if name.ends_with(".bn.weight") {
            Some(map(&|u| 0.8 + 0.4 * u))
        } else if name.ends_with(".bn.bias") || name.ends_with(".bn.running_mean") {
            Some(map(&|u| 0.1 * (2.0 * u - 1.0)))
        } else if name.ends_with(".bn.running_var") {
            Some(map(&|u| 0.5 + u))
        } else if name == "fc.weight" || name == "fc.bias" {
            let a = 1.0 / (FEATURE_DIM as f64).sqrt();
            Some(map(&|u| a * (2.0 * u - 1.0)))
        } else {
            None
        }
    }

    /// The whole seeded state dict on the CPU: every required tensor in f32, and the
    /// `num_batches_tracked` int64 scalars (`floor(1000 u)`) when asked for.
    pub fn state_dict(with_num_batches_tracked: bool) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for spec in expected_weights() {
            if spec.optional {
                if with_num_batches_tracked {
                    let v = (1000.0 * uniform(&spec.name, 1)[0]).floor() as i64;
                    out.insert(spec.name, Tensor::new(v, &Device::Cpu)?);
                }
                continue;
            }
            let values = values(&spec.name, &spec.shape).ok_or_else(|| {
                crate::Error::Input(format!("no seeding rule for `{}`", spec.name))
            })?;
            out.insert(
                spec.name,
                Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)?,
            );
        }
        Ok(out)
    }
}
