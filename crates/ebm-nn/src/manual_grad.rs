//! The frozen IGEBM's energy and input gradient by a hand-written backward over candle tensor
//! ops: the path of a frozen model on every device but the CPU (which has its fused host pass).
//!
//! candle's autograd takes a convolution's input gradient with `conv_transpose2d`, on CUDA a
//! direct kernel much slower than its forward convolution (im2col and cuBLAS). For a stride-1
//! convolution with kernel `k` and padding `p`, the input gradient is itself a convolution:
//! `conv2d(grad_out, W', padding k - 1 - p)` with `W'[i][o][a][b] = W[o][i][k-1-a][k-1-b]` (in and
//! out channels swapped, the kernel flipped in space), so this pass runs every convolution,
//! forward and backward, as candle's `conv2d`. The flipped kernels are made once, when the model
//! is frozen; no kernel gradient is computed. The rest of the backward, by hand:
//!
//! - Swish: `d/dx x s(x) = s(x) + x s(x) (1 - s(x)) = s(x) (1 - y) + y` with `y = x s(x)`;
//!   leaky ReLU: 1 where `x >= 0`, 0.2 elsewhere;
//! - 2x2 average pooling: nearest upsampling by 2 of a quarter of the gradient;
//! - per-class bias: passes the gradient unchanged; per-class gain: multiplies it;
//! - residual add: the sum of both branches' gradients; 1x1 shortcut: its flipped kernel;
//! - head: `dE/dfeatures = W[y]` (the row of the label), then the sum over space broadcasts it.
//!
//! Only candle ops, so the same maths runs on any device; the tests hold it to autograd on the CPU.

use candle_core::{DType, Device, Tensor};

use crate::layers::{Activation, ClassTable, Conv, Dense};
use crate::Result;

/// A frozen convolution: its (effective, detached) weight and bias, and the kernel of its input
/// gradient.
#[derive(Debug, Clone)]
struct ManualConv {
    weight: Tensor,
    bias: Tensor,
    /// `[in, out, k, k]`: channels swapped, the kernel flipped in both spatial dims.
    flipped: Tensor,
    padding: usize,
    /// `k - 1 - padding`: the padding of the input-gradient convolution.
    grad_padding: usize,
}

impl ManualConv {
    fn new(c: &Conv) -> Result<Self> {
        let weight = c.effective_weight()?.detach().contiguous()?;
        let (_, _, kh, kw) = weight.dims4()?;
        let padding = c.padding();
        if kh != kw || padding >= kh {
            return Err(crate::Error::Config(format!(
                "manual input gradient: needs a square kernel and padding < kernel size, got {kh}x{kw}, padding {padding}"
            )));
        }
        let reversed = |n: usize| -> Result<Tensor> {
            let idx: Vec<u32> = (0..n as u32).rev().collect();
            Ok(Tensor::from_vec(idx, n, weight.device())?)
        };
        let flipped = weight
            .transpose(0, 1)?
            .contiguous()?
            .index_select(&reversed(kh)?, 2)?
            .index_select(&reversed(kw)?, 3)?
            .contiguous()?;
        Ok(Self {
            bias: c.raw_bias().detach().contiguous()?,
            weight,
            flipped,
            padding,
            grad_padding: kh - 1 - padding,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ebm_ops::conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.padding,
        )?)
    }

    /// The gradient with respect to the input, given the gradient `g` of the output.
    fn input_grad(&self, g: &Tensor) -> Result<Tensor> {
        Ok(ebm_ops::conv2d(g, &self.flipped, None, self.grad_padding)?)
    }
}

/// One residual block, frozen; class tables `[classes, channels]`.
#[derive(Debug, Clone)]
struct ManualBlock {
    conv1: ManualConv,
    conv2: ManualConv,
    shortcut: Option<ManualConv>,
    bias1: Option<Tensor>,
    bias2: Option<Tensor>,
    gain: Option<Tensor>,
    downsample: bool,
}

/// The layers of one block, borrowed from the model, to build a [`ManualIgebm`].
pub(crate) struct BlockParts<'a> {
    pub conv1: &'a Conv,
    pub conv2: &'a Conv,
    pub shortcut: Option<&'a Conv>,
    /// `(bias1, bias2, gain)` of a conditional model.
    pub tables: Option<(&'a ClassTable, &'a ClassTable, &'a ClassTable)>,
    pub downsample: bool,
}

/// The IGEBM network prepared for the hand-written input gradient: weights detached, flipped
/// kernels made. Built once per frozen model.
#[derive(Debug, Clone)]
pub(crate) struct ManualIgebm {
    activation: Activation,
    stem: ManualConv,
    blocks: Vec<ManualBlock>,
    /// `[classes, C]` (one row when unconditional).
    head_weight: Tensor,
    /// `[classes]`.
    head_bias: Tensor,
}

/// What the backward needs of one block's forward.
struct BlockSaved {
    /// The block's input, and its activation (before the class bias).
    h: Tensor,
    act_h: Tensor,
    /// conv1's output, and its activation.
    r1: Tensor,
    act_r1: Tensor,
    /// `(height, width)` before the pooling.
    size: (usize, usize),
    /// The rows of the class gain, `[B, C, 1, 1]`.
    gain: Option<Tensor>,
}

impl ManualIgebm {
    pub(crate) fn new<'a>(
        activation: Activation,
        stem: &Conv,
        blocks: impl IntoIterator<Item = BlockParts<'a>>,
        head: &Dense,
    ) -> Result<Self> {
        let table = |t: &ClassTable| -> Result<Tensor> { Ok(t.raw().detach().contiguous()?) };
        let blocks = blocks
            .into_iter()
            .map(|b| {
                let (bias1, bias2, gain) = match b.tables {
                    Some((b1, b2, g)) => (Some(table(b1)?), Some(table(b2)?), Some(table(g)?)),
                    None => (None, None, None),
                };
                Ok(ManualBlock {
                    conv1: ManualConv::new(b.conv1)?,
                    conv2: ManualConv::new(b.conv2)?,
                    shortcut: b.shortcut.map(ManualConv::new).transpose()?,
                    bias1,
                    bias2,
                    gain,
                    downsample: b.downsample,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            activation,
            stem: ManualConv::new(stem)?,
            blocks,
            head_weight: head.effective_weight()?.detach().contiguous()?,
            head_bias: head.raw_bias().detach().contiguous()?,
        })
    }

    /// Energies `[B]` of `x [B, C, H, W]` and their gradient with respect to `x`, given one-hot
    /// labels `[B, classes]` (in `x`'s dtype, on its device) when the model is conditional. The
    /// caller has checked the shapes and labels.
    pub(crate) fn energy_and_grad(
        &self,
        x: &Tensor,
        one_hot: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let x = x.detach();
        let act = self.activation;
        let rows = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            match (t, one_hot) {
                (Some(t), Some(y)) => {
                    let r = y.matmul(t)?;
                    let (b, c) = r.dims2()?;
                    Ok(Some(r.reshape((b, c, 1, 1))?))
                }
                _ => Ok(None),
            }
        };

        // Forward, keeping what the backward needs.
        let mut h = self.stem.forward(&x)?;
        let mut saved = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let act_h = act.apply(&h)?;
            let a1 = match rows(&block.bias1)? {
                Some(b) => act_h.broadcast_add(&b)?,
                None => act_h.clone(),
            };
            let r1 = block.conv1.forward(&a1)?;
            let act_r1 = act.apply(&r1)?;
            let a2 = match rows(&block.bias2)? {
                Some(b) => act_r1.broadcast_add(&b)?,
                None => act_r1.clone(),
            };
            let mut r2 = block.conv2.forward(&a2)?;
            let gain = rows(&block.gain)?;
            if let Some(g) = &gain {
                r2 = r2.broadcast_mul(g)?;
            }
            let skip = match &block.shortcut {
                Some(s) => s.forward(&h)?,
                None => h.clone(),
            };
            let (_, _, height, width) = h.dims4()?;
            let out = (skip + r2)?;
            saved.push(BlockSaved {
                h,
                act_h,
                r1,
                act_r1,
                size: (height, width),
                gain,
            });
            h = if block.downsample {
                ebm_ops::avg_pool2x2(&out)?
            } else {
                out
            };
        }
        let act_last = act.apply(&h)?;
        let features = act_last.sum((2, 3))?;
        let out = ebm_ops::linear(&features, &self.head_weight, Some(&self.head_bias))?;
        let energies = match one_hot {
            Some(y) => (&out * y)?.sum(1)?,
            None => out.squeeze(1)?,
        };

        // Backward. dE/dfeatures: the head's row of each label, [B, C] (or [1, C]).
        let d_features = match one_hot {
            Some(y) => y.matmul(&self.head_weight)?,
            None => self.head_weight.clone(),
        };
        let (rows_f, c) = d_features.dims2()?;
        let d_features = d_features.reshape((rows_f, c, 1, 1))?;
        let mut g = act_grad(act, &h, &act_last, &d_features)?;
        for (block, s) in self.blocks.iter().zip(saved).rev() {
            // The gradient at `skip + r2`.
            if block.downsample {
                g = (g * 0.25)?.upsample_nearest2d(s.size.0, s.size.1)?;
            }
            let g_r2 = match &s.gain {
                Some(gain) => g.broadcast_mul(gain)?,
                None => g.clone(),
            };
            let g_a2 = block.conv2.input_grad(&g_r2)?;
            let g_r1 = act_grad(act, &s.r1, &s.act_r1, &g_a2)?;
            let g_a1 = block.conv1.input_grad(&g_r1)?;
            let g_h = act_grad(act, &s.h, &s.act_h, &g_a1)?;
            let g_skip = match &block.shortcut {
                Some(sc) => sc.input_grad(&g)?,
                None => g,
            };
            g = (g_h + g_skip)?;
        }
        let grad = self.stem.input_grad(&g)?;
        Ok((energies.detach(), grad.detach()))
    }
}

/// `g * act'(x)`, given `y = act(x)`; `g` broadcasts to `x`'s shape.
fn act_grad(act: Activation, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let d = match act {
        Activation::Swish => {
            // s(x) = (1 + tanh(x / 2)) / 2; act'(x) = s (1 - y) + y.
            let s = (x * 0.5)?.tanh()?.affine(0.5, 0.5)?;
            ((s * y.affine(-1.0, 1.0)?)? + y)?
        }
        Activation::LeakyRelu => x.ge(0.0)?.to_dtype(x.dtype())?.affine(0.8, 0.2)?,
    };
    Ok(d.broadcast_mul(g)?)
}

/// One-hot rows `[B, classes]` of labels already checked to be below `classes`.
pub(crate) fn one_hot_rows(
    labels: &[usize],
    classes: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut data = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        data[i * classes + l] = 1.0;
    }
    Ok(Tensor::from_vec(data, (labels.len(), classes), device)?.to_dtype(dtype)?)
}
