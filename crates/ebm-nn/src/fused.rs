//! The IGEBM network's energy, input gradient and parameter gradients in one hand-written CPU
//! pass: image by image, every layer's activations kept in per-thread scratch that stays in
//! cache, no autograd graph, no allocation per op. A frozen [`crate::Igebm`] uses it for
//! Langevin steps on the CPU in f32, and the trainer for the gradient of its loss; the tests
//! check both against candle's autograd to 1e-5.

use candle_core::Tensor;
use ebm_ops::kernels::{conv_image, flip_kernel, kernel_grad_image, ConvGeom, Real};
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
        Self::geom_of(
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.padding,
            h,
            w,
        )
    }

    fn forward(&self, x: &[f32], h: usize, w: usize, col: &mut Vec<f32>, out: &mut [f32]) {
        let g = self.geom(h, w);
        conv_image(
            x,
            &self.weight,
            self.packed.as_ref(),
            Some(&self.bias),
            &g,
            col,
            out,
            false,
        );
    }

    fn kernel_grad(
        &self,
        x: &[f32],
        gy: &[f32],
        h: usize,
        w: usize,
        col: &mut Vec<f32>,
        grad: &mut ConvGrad,
    ) {
        kernel_grad_image(x, gy, &self.geom(h, w), col, &mut grad.weight, false);
        let p = h * w;
        for (d, row) in grad.bias.iter_mut().zip(gy.chunks(p)) {
            *d += row.iter().sum::<f32>();
        }
    }

    fn input_grad(&self, gy: &[f32], h: usize, w: usize, col: &mut Vec<f32>, out: &mut [f32]) {
        let g = self.geom(h, w).input_grad();
        conv_image(
            gy,
            &self.flipped,
            self.packed_flipped.as_ref(),
            None,
            &g,
            col,
            out,
            false,
        );
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
    /// `[classes, C]` (one row when unconditional).
    pub head_weight: Vec<f32>,
    /// `[classes]`.
    pub head_bias: Vec<f32>,
}

/// Gradients of one convolution's (effective) weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct ConvGrad {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvGrad {
    fn zeros(c: &HostConv) -> Self {
        Self {
            weight: vec![0.0; c.weight.len()],
            bias: vec![0.0; c.bias.len()],
        }
    }
    fn add(&mut self, o: &Self) {
        add(&mut self.weight, &o.weight);
        add(&mut self.bias, &o.bias);
    }
}

/// Gradients of one block's parameters.
#[derive(Debug, Clone)]
pub(crate) struct BlockGrad {
    pub conv1: ConvGrad,
    pub conv2: ConvGrad,
    pub shortcut: Option<ConvGrad>,
    pub bias1: Option<Vec<f32>>,
    pub bias2: Option<Vec<f32>>,
    pub gain: Option<Vec<f32>>,
}

/// Gradients of every parameter of a [`HostIgebm`], in its layout.
#[derive(Debug, Clone)]
pub(crate) struct HostGrads {
    pub stem: ConvGrad,
    pub blocks: Vec<BlockGrad>,
    pub head_weight: Vec<f32>,
    pub head_bias: Vec<f32>,
}

fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

fn add_opt(a: &mut Option<Vec<f32>>, b: &Option<Vec<f32>>) {
    if let (Some(a), Some(b)) = (a, b) {
        add(a, b);
    }
}

impl HostGrads {
    fn zeros(net: &HostIgebm) -> Self {
        let zeros = |v: &Option<Vec<f32>>| v.as_ref().map(|t| vec![0.0; t.len()]);
        Self {
            stem: ConvGrad::zeros(&net.stem),
            blocks: net
                .blocks
                .iter()
                .map(|b| BlockGrad {
                    conv1: ConvGrad::zeros(&b.conv1),
                    conv2: ConvGrad::zeros(&b.conv2),
                    shortcut: b.shortcut.as_ref().map(ConvGrad::zeros),
                    bias1: zeros(&b.bias1),
                    bias2: zeros(&b.bias2),
                    gain: zeros(&b.gain),
                })
                .collect(),
            head_weight: vec![0.0; net.head_weight.len()],
            head_bias: vec![0.0; net.head_bias.len()],
        }
    }

    fn add(&mut self, o: &Self) {
        self.stem.add(&o.stem);
        for (a, b) in self.blocks.iter_mut().zip(&o.blocks) {
            a.conv1.add(&b.conv1);
            a.conv2.add(&b.conv2);
            if let (Some(x), Some(y)) = (&mut a.shortcut, &b.shortcut) {
                x.add(y);
            }
            add_opt(&mut a.bias1, &b.bias1);
            add_opt(&mut a.bias2, &b.bias2);
            add_opt(&mut a.gain, &b.gain);
        }
        add(&mut self.head_weight, &o.head_weight);
        add(&mut self.head_bias, &o.head_bias);
    }
}

/// Per-thread buffers, reused across the images of a task.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    inputs: Vec<Vec<f32>>, // block inputs h
    pre1: Vec<Vec<f32>>,   // conv1 outputs (pre-activation)
    pre2: Vec<Vec<f32>>,   // conv2 outputs before the class gain (parameter gradients only)
    act: Vec<f32>,
    tmp: Vec<f32>,
    grad: Vec<f32>,
    grad2: Vec<f32>,
    grad3: Vec<f32>,
    feat: Vec<f32>,
}

fn resize(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `out[c, :] = swish(x[c, :]) + table[y, c]` (no table: + 0).
fn activate(
    x: &[f32],
    table: Option<&Vec<f32>>,
    label: Option<usize>,
    channels: usize,
    p: usize,
    out: &mut [f32],
) {
    for c in 0..channels {
        let add = match (table, label) {
            (Some(t), Some(y)) => t[y * channels + c],
            _ => 0.0,
        };
        simd::swish_add(&x[c * p..(c + 1) * p], add, &mut out[c * p..(c + 1) * p]);
    }
}

/// `table_grad[y, c] += sum_p g[c, p]`.
fn table_grad(
    g: &[f32],
    label: Option<usize>,
    channels: usize,
    p: usize,
    grad: &mut Option<Vec<f32>>,
) {
    if let (Some(t), Some(y)) = (grad, label) {
        for c in 0..channels {
            t[y * channels + c] += g[c * p..(c + 1) * p].iter().sum::<f32>();
        }
    }
}

/// What one pass computes besides energies.
struct Want<'a> {
    /// Input gradients, one image after another.
    input: Option<&'a mut [f32]>,
    /// `dloss/dE_i` for image `i` given its energy: parameter gradients weighted by it.
    params: Option<&'a (dyn Fn(usize, f32) -> f32 + Sync)>,
}

impl HostIgebm {
    /// Energies `[B]` and input gradients `[B, C, H, W]` of a batch, labels given per image for
    /// a conditional network.
    pub(crate) fn energy_and_grad(
        &self,
        x: &[f32],
        labels: Option<&[usize]>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut grads = vec![0f32; x.len()];
        let (energies, _) = self.run(
            x,
            labels,
            Want {
                input: Some(&mut grads),
                params: None,
            },
        );
        (energies, grads)
    }

    /// Energies `[B]` and the gradient of `loss = sum_i l_i(E_i)` with respect to every
    /// (effective) parameter, `dloss(i, E_i)` giving `dl_i/dE_i`.
    pub(crate) fn energy_and_param_grads(
        &self,
        x: &[f32],
        labels: Option<&[usize]>,
        dloss: &(dyn Fn(usize, f32) -> f32 + Sync),
    ) -> (Vec<f32>, HostGrads) {
        let (energies, grads) = self.run(
            x,
            labels,
            Want {
                input: None,
                params: Some(dloss),
            },
        );
        (energies, grads.expect("parameter gradients were asked for"))
    }

    fn run(
        &self,
        x: &[f32],
        labels: Option<&[usize]>,
        want: Want<'_>,
    ) -> (Vec<f32>, Option<HostGrads>) {
        let per = self.in_channels * self.size * self.size;
        let batch = x.len() / per;
        let threads = rayon::current_num_threads().max(1);
        let chunk = batch.div_ceil(threads).max(1);
        let mut energies = vec![0f32; batch];
        let dloss = want.params;
        let mut dummy = Vec::new();
        let (inputs, with_input) = match want.input {
            Some(g) => (g, true),
            None => (&mut dummy[..], false),
        };
        let input_chunks: Vec<Option<&mut [f32]>> = if with_input {
            inputs.chunks_mut(chunk * per).map(Some).collect()
        } else {
            (0..batch.div_ceil(chunk)).map(|_| None).collect()
        };
        let partials: Vec<Option<HostGrads>> = energies
            .par_chunks_mut(chunk)
            .zip(input_chunks.into_par_iter())
            .enumerate()
            .map(|(t, (e_chunk, mut g_chunk))| {
                let mut s = Scratch::default();
                let mut grads = dloss.map(|_| HostGrads::zeros(self));
                for (i, e) in e_chunk.iter_mut().enumerate() {
                    let b = t * chunk + i;
                    let dx = g_chunk
                        .as_deref_mut()
                        .map(|g| &mut g[i * per..(i + 1) * per]);
                    let seed = dloss.map(|f| move |energy: f32| f(b, energy));
                    *e = self.image(
                        &x[b * per..(b + 1) * per],
                        labels.map(|l| l[b]),
                        &mut s,
                        dx,
                        grads
                            .as_mut()
                            .zip(seed.as_ref().map(|f| f as &dyn Fn(f32) -> f32)),
                    );
                }
                grads
            })
            .collect();
        let mut total: Option<HostGrads> = None;
        for part in partials.into_iter().flatten() {
            match &mut total {
                Some(t) => t.add(&part),
                None => total = Some(part),
            }
        }
        (energies, total)
    }

    /// One image: forward, then the backward the caller asked for. Returns the energy.
    fn image(
        &self,
        x: &[f32],
        label: Option<usize>,
        s: &mut Scratch,
        dx: Option<&mut [f32]>,
        params: Option<(&mut HostGrads, &dyn Fn(f32) -> f32)>,
    ) -> f32 {
        let nb = self.blocks.len();
        let keep_pre2 = params.is_some();
        if s.inputs.len() < nb + 1 {
            s.inputs.resize_with(nb + 1, Vec::new);
            s.pre1.resize_with(nb, Vec::new);
            s.pre2.resize_with(nb, Vec::new);
        }
        // Forward.
        let (mut h, mut w) = (self.size, self.size);
        let c0 = self.stem.out_channels;
        self.stem
            .forward(x, h, w, &mut s.col, resize(&mut s.inputs[0], c0 * h * w));
        let mut sizes = Vec::with_capacity(nb);
        for (i, blk) in self.blocks.iter().enumerate() {
            let (cin, cout, p) = (blk.conv1.in_channels, blk.conv1.out_channels, h * w);
            sizes.push((h, w));
            let (before, after) = s.inputs.split_at_mut(i + 1);
            let input = &before[i][..cin * p];
            let act = resize(&mut s.act, cin * p);
            activate(input, blk.bias1.as_ref(), label, cin, p, act);
            let r1 = resize(&mut s.pre1[i], cout * p);
            blk.conv1.forward(act, h, w, &mut s.col, r1);
            let act2 = resize(&mut s.tmp, cout * p);
            activate(r1, blk.bias2.as_ref(), label, cout, p, act2);
            let r2 = resize(&mut s.grad, cout * p);
            blk.conv2.forward(act2, h, w, &mut s.col, r2);
            if keep_pre2 {
                resize(&mut s.pre2[i], cout * p).copy_from_slice(r2);
            }
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
                    add(r2, skip);
                }
                None => add(r2, input),
            }
            let next = &mut after[0];
            if blk.downsample {
                let (h2, w2) = (h / 2, w / 2);
                let out = resize(next, cout * h2 * w2);
                for c in 0..cout {
                    for y in 0..h2 {
                        for xx in 0..w2 {
                            let at =
                                |dy: usize, dx: usize| r2[c * p + (2 * y + dy) * w + 2 * xx + dx];
                            out[(c * h2 + y) * w2 + xx] =
                                0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
                        }
                    }
                }
                h = h2;
                w = w2;
            } else {
                resize(next, cout * p).copy_from_slice(r2);
            }
        }
        let c_last = self.head_weight.len() / self.head_bias.len();
        let row = label.unwrap_or(0);
        let head = &self.head_weight[row * c_last..(row + 1) * c_last];
        let p = h * w;
        let last = &s.inputs[nb][..c_last * p];
        let feat = resize(&mut s.feat, c_last);
        let mut energy = self.head_bias[row];
        for c in 0..c_last {
            feat[c] = simd::swish_sum(&last[c * p..(c + 1) * p]);
            energy += head[c] * feat[c];
        }

        // Backward. `seed` is dloss/dE for parameter gradients, 1 for an input gradient.
        let (mut grads, seed) = match params {
            Some((g, f)) => (Some(g), f(energy)),
            None => (None, 1.0),
        };
        if let Some(g) = grads.as_deref_mut() {
            for c in 0..c_last {
                g.head_weight[row * c_last + c] += seed * feat[c];
            }
            g.head_bias[row] += seed;
        }
        // `grad` holds dE/d(block output, after pooling).
        let g = resize(&mut s.grad, c_last * p);
        for c in 0..c_last {
            simd::scaled_swish_grad(
                &last[c * p..(c + 1) * p],
                seed * head[c],
                &mut g[c * p..(c + 1) * p],
            );
        }
        for (i, blk) in self.blocks.iter().enumerate().rev() {
            let (bh, bw) = sizes[i];
            let (cin, cout, bp) = (blk.conv1.in_channels, blk.conv1.out_channels, bh * bw);
            let mut bgrad = grads.as_deref_mut().map(|g| &mut g.blocks[i]);
            // g_o: gradient at the residual sum, before pooling.
            let g_o = resize(&mut s.grad2, cout * bp);
            if blk.downsample {
                let (h2, w2) = (bh / 2, bw / 2);
                for c in 0..cout {
                    for y in 0..bh {
                        for xx in 0..bw {
                            g_o[c * bp + y * bw + xx] =
                                0.25 * s.grad[(c * h2 + y / 2) * w2 + xx / 2];
                        }
                    }
                }
            } else {
                g_o.copy_from_slice(&s.grad[..cout * bp]);
            }
            // g_r2 = g_o * gain; the gain's gradient is sum_p g_o * r2.
            let g_r2 = resize(&mut s.act, cout * bp);
            g_r2.copy_from_slice(g_o);
            if let (Some(t), Some(y)) = (&blk.gain, label) {
                if let Some(gain_grad) = bgrad.as_deref_mut().and_then(|b| b.gain.as_mut()) {
                    let r2 = &s.pre2[i][..cout * bp];
                    for c in 0..cout {
                        let dot: f32 = g_o[c * bp..(c + 1) * bp]
                            .iter()
                            .zip(&r2[c * bp..(c + 1) * bp])
                            .map(|(a, b)| a * b)
                            .sum();
                        gain_grad[y * cout + c] += dot;
                    }
                }
                for c in 0..cout {
                    let gn = t[y * cout + c];
                    g_r2[c * bp..(c + 1) * bp].iter_mut().for_each(|v| *v *= gn);
                }
            }
            let r1 = &s.pre1[i][..cout * bp];
            if let Some(b) = bgrad.as_deref_mut() {
                // conv2's input, recomputed: swish(r1) + bias2[y].
                let act2 = resize(&mut s.grad3, cout * bp);
                activate(r1, blk.bias2.as_ref(), label, cout, bp, act2);
                blk.conv2
                    .kernel_grad(act2, g_r2, bh, bw, &mut s.col, &mut b.conv2);
            }
            // g_a2 = conv2^T(g_r2); bias2's gradient; g_r1 = g_a2 * swish'(r1)
            let g_a2 = resize(&mut s.tmp, cout * bp);
            blk.conv2.input_grad(g_r2, bh, bw, &mut s.col, g_a2);
            if let Some(b) = bgrad.as_deref_mut() {
                table_grad(g_a2, label, cout, bp, &mut b.bias2);
            }
            simd::mul_swish_grad(g_a2, r1);
            let input = &s.inputs[i][..cin * bp];
            if let Some(b) = bgrad.as_deref_mut() {
                let act = resize(&mut s.act, cin * bp);
                activate(input, blk.bias1.as_ref(), label, cin, bp, act);
                blk.conv1
                    .kernel_grad(act, g_a2, bh, bw, &mut s.col, &mut b.conv1);
            }
            // g_a = conv1^T(g_r1); bias1's gradient; g_h = g_a * swish'(h) + the skip path
            let g_a = resize(&mut s.grad3, cin * bp);
            blk.conv1.input_grad(g_a2, bh, bw, &mut s.col, g_a);
            if let Some(b) = bgrad.as_deref_mut() {
                table_grad(g_a, label, cin, bp, &mut b.bias1);
            }
            simd::mul_swish_grad(g_a, input);
            match &blk.shortcut {
                Some(sc) => {
                    if let Some(b) = bgrad {
                        sc.kernel_grad(
                            input,
                            g_o,
                            bh,
                            bw,
                            &mut s.col,
                            b.shortcut.as_mut().expect("shortcut grads"),
                        );
                    }
                    let g_skip = resize(&mut s.act, cin * bp);
                    sc.input_grad(g_o, bh, bw, &mut s.col, g_skip);
                    add(g_a, g_skip);
                }
                None => add(g_a, g_o),
            }
            resize(&mut s.grad, cin * bp).copy_from_slice(&s.grad3[..cin * bp]);
        }
        let g0 = &s.grad[..c0 * self.size * self.size];
        if let Some(g) = grads {
            self.stem
                .kernel_grad(x, g0, self.size, self.size, &mut s.col, &mut g.stem);
        }
        if let Some(dx) = dx {
            self.stem
                .input_grad(g0, self.size, self.size, &mut s.col, dx);
        }
        energy
    }
}
