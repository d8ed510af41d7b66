//! The IGEBM network's energy and input gradient in one hand-written CPU pass: image by image,
//! every layer's activations kept in per-thread scratch that stays in cache, no autograd graph,
//! no allocation per op. This is what a frozen [`crate::Igebm`] uses for Langevin steps on the
//! CPU in f32; the tests check it against candle's autograd to 1e-5.

use candle_core::Tensor;
use ebm_ops::kernels::{conv_image, flip_kernel, ConvGeom, Real};
use ebm_ops::packed_gemm::PackedWeights;
use ebm_ops::simd;
use rayon::prelude::*;

use crate::Result;

/// A convolution's weights on the host, with the flipped kernel of its input gradient.
#[derive(Debug, Clone)]
pub(crate) struct HostConv {
    weight: Vec<f32>,
    flipped: Vec<f32>,
    packed: Option<PackedWeights>,
    packed_flipped: Option<PackedWeights>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    padding: usize,
}

impl HostConv {
    pub(crate) fn new(weight: &Tensor, bias: &Tensor, padding: usize) -> Result<Self> {
        let (out_channels, in_channels, kernel, _) = weight.dims4()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let g = Self::geom_of(in_channels, out_channels, kernel, padding, 1, 1);
        let flipped = flip_kernel(&w, &g);
        let depth = in_channels * kernel * kernel;
        Ok(Self {
            packed: f32::pack(&w, out_channels, depth),
            packed_flipped: f32::pack(&flipped, in_channels, out_channels * kernel * kernel),
            flipped,
            weight: w,
            bias: bias.to_vec1::<f32>()?,
            in_channels,
            out_channels,
            kernel,
            padding,
        })
    }

    fn geom_of(cin: usize, cout: usize, k: usize, pad: usize, h: usize, w: usize) -> ConvGeom {
        ConvGeom {
            batch: 1,
            in_channels: cin,
            height: h,
            width: w,
            out_channels: cout,
            kernel_h: k,
            kernel_w: k,
            padding: pad,
        }
    }

    fn geom(&self, h: usize, w: usize) -> ConvGeom {
        Self::geom_of(self.in_channels, self.out_channels, self.kernel, self.padding, h, w)
    }

    fn forward(&self, x: &[f32], h: usize, w: usize, col: &mut Vec<f32>, out: &mut [f32]) {
        let g = self.geom(h, w);
        conv_image(x, &self.weight, self.packed.as_ref(), Some(&self.bias), &g, col, out, false);
    }

    fn input_grad(&self, gy: &[f32], h: usize, w: usize, col: &mut Vec<f32>, out: &mut [f32]) {
        let g = self.geom(h, w).input_grad();
        conv_image(gy, &self.flipped, self.packed_flipped.as_ref(), None, &g, col, out, false);
    }
}

/// One residual block on the host, with its class tables (rows of `[classes, channels]`).
#[derive(Debug, Clone)]
pub(crate) struct HostBlock {
    pub conv1: HostConv,
    pub conv2: HostConv,
    pub shortcut: Option<HostConv>,
    pub bias1: Option<Vec<f32>>,
    pub bias2: Option<Vec<f32>>,
    pub gain: Option<Vec<f32>>,
    pub downsample: bool,
}

/// The whole network on the host.
#[derive(Debug, Clone)]
pub(crate) struct HostIgebm {
    pub in_channels: usize,
    pub size: usize,
    pub stem: HostConv,
    pub blocks: Vec<HostBlock>,
    pub head_weight: Vec<f32>,
    pub head_bias: f32,
}


/// Per-thread buffers, reused across the images of a task.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    inputs: Vec<Vec<f32>>, // block inputs h
    pre1: Vec<Vec<f32>>,   // conv1 outputs (pre-activation)
    act: Vec<f32>,
    tmp: Vec<f32>,
    grad: Vec<f32>,
    grad2: Vec<f32>,
    grad3: Vec<f32>,
}

fn resize(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl HostIgebm {
    /// Energies `[B]` and input gradients `[B, C, H, W]` of a batch, labels given per image for
    /// a conditional network.
    pub(crate) fn energy_and_grad(&self, x: &[f32], labels: Option<&[usize]>) -> (Vec<f32>, Vec<f32>) {
        let per = self.in_channels * self.size * self.size;
        let batch = x.len() / per;
        let threads = rayon::current_num_threads().max(1);
        let chunk = batch.div_ceil(threads).max(1);
        let mut energies = vec![0f32; batch];
        let mut grads = vec![0f32; x.len()];
        energies
            .par_chunks_mut(chunk)
            .zip(grads.par_chunks_mut(chunk * per))
            .enumerate()
            .for_each(|(t, (e_chunk, g_chunk))| {
                let mut s = Scratch::default();
                for (i, (e, g)) in e_chunk.iter_mut().zip(g_chunk.chunks_mut(per)).enumerate() {
                    let b = t * chunk + i;
                    let label = labels.map(|l| l[b]);
                    *e = self.image(&x[b * per..(b + 1) * per], label, &mut s, g);
                }
            });
        (energies, grads)
    }

    fn image(&self, x: &[f32], label: Option<usize>, s: &mut Scratch, dx: &mut [f32]) -> f32 {
        let nb = self.blocks.len();
        if s.inputs.len() < nb + 1 {
            s.inputs.resize_with(nb + 1, Vec::new);
            s.pre1.resize_with(nb, Vec::new);
        }
        // Forward.
        let (mut h, mut w) = (self.size, self.size);
        let c0 = self.stem.out_channels;
        {
            let out = resize(&mut s.inputs[0], c0 * h * w);
            self.stem.forward(x, h, w, &mut s.col, out);
        }
        let mut sizes = Vec::with_capacity(nb);
        for (i, blk) in self.blocks.iter().enumerate() {
            let (cin, cout, p) = (blk.conv1.in_channels, blk.conv1.out_channels, h * w);
            sizes.push((h, w));
            let (before, after) = s.inputs.split_at_mut(i + 1);
            let input = &before[i][..cin * p];
            // a = swish(h) (+ bias1[y])
            let act = resize(&mut s.act, cin * p);
            for c in 0..cin {
                let b1 = match (&blk.bias1, label) {
                    (Some(t), Some(y)) => t[y * cin + c],
                    _ => 0.0,
                };
                simd::swish_add(&input[c * p..(c + 1) * p], b1, &mut act[c * p..(c + 1) * p]);
            }
            let r1 = resize(&mut s.pre1[i], cout * p);
            blk.conv1.forward(act, h, w, &mut s.col, r1);
            let act2 = resize(&mut s.tmp, cout * p);
            for c in 0..cout {
                let b2 = match (&blk.bias2, label) {
                    (Some(t), Some(y)) => t[y * cout + c],
                    _ => 0.0,
                };
                simd::swish_add(&r1[c * p..(c + 1) * p], b2, &mut act2[c * p..(c + 1) * p]);
            }
            let r2 = resize(&mut s.grad, cout * p);
            blk.conv2.forward(act2, h, w, &mut s.col, r2);
            if let (Some(t), Some(y)) = (&blk.gain, label) {
                for c in 0..cout {
                    let gn = t[y * cout + c];
                    r2[c * p..(c + 1) * p].iter_mut().for_each(|v| *v *= gn);
                }
            }
            match &blk.shortcut {
                Some(sc) => {
                    let skip = resize(&mut s.grad2, cout * p);
                    sc.forward(input, h, w, &mut s.col, skip);
                    r2.iter_mut().zip(skip.iter()).for_each(|(r, k)| *r += k);
                }
                None => r2.iter_mut().zip(input).for_each(|(r, k)| *r += k),
            }
            let next = &mut after[0];
            if blk.downsample {
                let (h2, w2) = (h / 2, w / 2);
                let out = resize(next, cout * h2 * w2);
                for c in 0..cout {
                    for y in 0..h2 {
                        for xx in 0..w2 {
                            let at = |dy: usize, dx: usize| r2[c * p + (2 * y + dy) * w + 2 * xx + dx];
                            out[(c * h2 + y) * w2 + xx] = 0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
                        }
                    }
                }
                h = h2;
                w = w2;
            } else {
                resize(next, cout * p).copy_from_slice(r2);
            }
        }
        let c_last = self.head_weight.len();
        let p = h * w;
        let last = &s.inputs[nb][..c_last * p];
        let mut energy = self.head_bias;
        for c in 0..c_last {
            let sum = simd::swish_sum(&last[c * p..(c + 1) * p]);
            energy += self.head_weight[c] * sum;
        }

        // Backward, input gradient only. `grad` holds dE/d(block output, after pooling).
        let g = resize(&mut s.grad, c_last * p);
        for c in 0..c_last {
            simd::scaled_swish_grad(&last[c * p..(c + 1) * p], self.head_weight[c], &mut g[c * p..(c + 1) * p]);
        }
        for (i, blk) in self.blocks.iter().enumerate().rev() {
            let (bh, bw) = sizes[i];
            let (cin, cout, bp) = (blk.conv1.in_channels, blk.conv1.out_channels, bh * bw);
            // g_o: gradient at the residual sum, before pooling.
            let g_o = resize(&mut s.grad2, cout * bp);
            if blk.downsample {
                let (h2, w2) = (bh / 2, bw / 2);
                for c in 0..cout {
                    for y in 0..bh {
                        for xx in 0..bw {
                            g_o[c * bp + y * bw + xx] = 0.25 * s.grad[(c * h2 + y / 2) * w2 + xx / 2];
                        }
                    }
                }
            } else {
                g_o.copy_from_slice(&s.grad[..cout * bp]);
            }
            // g_r2 = g_o * gain
            let g_r2 = resize(&mut s.act, cout * bp);
            g_r2.copy_from_slice(g_o);
            if let (Some(t), Some(y)) = (&blk.gain, label) {
                for c in 0..cout {
                    let gn = t[y * cout + c];
                    g_r2[c * bp..(c + 1) * bp].iter_mut().for_each(|v| *v *= gn);
                }
            }
            // g_a2 = conv2^T(g_r2); g_r1 = g_a2 * swish'(r1)
            let g_a2 = resize(&mut s.tmp, cout * bp);
            blk.conv2.input_grad(g_r2, bh, bw, &mut s.col, g_a2);
            let r1 = &s.pre1[i][..cout * bp];
            simd::mul_swish_grad(g_a2, r1);
            // g_a = conv1^T(g_r1)
            let g_a = resize(&mut s.grad3, cin * bp);
            blk.conv1.input_grad(g_a2, bh, bw, &mut s.col, g_a);
            let input = &s.inputs[i][..cin * bp];
            simd::mul_swish_grad(g_a, input);
            // + the skip path
            match &blk.shortcut {
                Some(sc) => {
                    let g_skip = resize(&mut s.act, cin * bp);
                    sc.input_grad(g_o, bh, bw, &mut s.col, g_skip);
                    g_a.iter_mut().zip(g_skip.iter()).for_each(|(a, b)| *a += b);
                }
                None => g_a.iter_mut().zip(g_o.iter()).for_each(|(a, b)| *a += b),
            }
            resize(&mut s.grad, cin * bp).copy_from_slice(&s.grad3[..cin * bp]);
        }
        self.stem.input_grad(&s.grad[..c0 * self.size * self.size], self.size, self.size, &mut s.col, dx);
        energy
    }
}
