//! CPU kernels behind the custom ops: im2col + `gemm` convolutions and element-wise loops,
//! generic over f32 and f64, on contiguous NCHW slices. Public so that fused network kernels
//! (e.g. `ebm-nn`'s IGEBM input gradient) can run them image by image on scratch buffers.

use rayon::prelude::*;

use crate::packed_gemm::PackedWeights;

/// The float types the CPU kernels support.
pub trait Real:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::AddAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// `e^self`.
    fn exp(self) -> Self;
    /// `1 / self`.
    fn recip(self) -> Self;
    /// Packs a kernel `[O, K]` for [`crate::packed_gemm`] when this type and CPU can use it.
    fn pack(_w: &[Self], _rows: usize, _depth: usize) -> Option<PackedWeights> {
        None
    }
    /// `out = bias + W · col` with the packed AVX-512 kernel; false when it cannot run.
    fn packed_gemm(
        _w: &PackedWeights,
        _col: &[Self],
        _p: usize,
        _bias: Option<&[Self]>,
        _out: &mut [Self],
    ) -> bool {
        false
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn recip(self) -> Self {
        1.0 / self
    }
    fn pack(w: &[f32], rows: usize, depth: usize) -> Option<PackedWeights> {
        crate::packed_gemm::available().then(|| PackedWeights::new(w, rows, depth))
    }
    fn packed_gemm(
        w: &PackedWeights,
        col: &[f32],
        p: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> bool {
        crate::packed_gemm::conv_gemm(w, col, p, bias, out)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn recip(self) -> Self {
        1.0 / self
    }
}

/// The geometry of a stride-1 convolution with the same zero padding on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Images.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Zeros added on every side.
    pub padding: usize,
}

impl ConvGeom {
    /// Output height.
    pub fn out_h(&self) -> usize {
        self.height + 2 * self.padding + 1 - self.kernel_h
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        self.width + 2 * self.padding + 1 - self.kernel_w
    }
    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }
    /// Columns of the im2col matrix: one per output pixel.
    pub fn col_cols(&self) -> usize {
        self.out_h() * self.out_w()
    }
    /// Values in one input image.
    pub fn in_image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }
    /// Values in one output image.
    pub fn out_image_len(&self) -> usize {
        self.out_channels * self.col_cols()
    }
    /// The geometry of the input gradient: a convolution of the output gradient with the
    /// flipped kernel, channels swapped, padded so the result has the input's size.
    pub fn input_grad(&self) -> ConvGeom {
        ConvGeom {
            batch: self.batch,
            in_channels: self.out_channels,
            height: self.out_h(),
            width: self.out_w(),
            out_channels: self.in_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            padding: self.kernel_h - 1 - self.padding,
        }
    }
}

/// Unfolds one image `[C, H, W]` into `col [C*KH*KW, OH*OW]`.
fn im2col<T: Real>(image: &[T], g: &ConvGeom, col: &mut [T]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let p = oh * ow;
    let pad = g.padding as isize;
    for c in 0..g.in_channels {
        let plane = &image[c * g.height * g.width..(c + 1) * g.height * g.width];
        for i in 0..g.kernel_h {
            // Output rows whose input row lies inside the image.
            let row_shift = i as isize - pad;
            let y_lo = (-row_shift).clamp(0, oh as isize) as usize;
            let y_hi = (g.height as isize - row_shift).clamp(y_lo as isize, oh as isize) as usize;
            for j in 0..g.kernel_w {
                let row = ((c * g.kernel_h + i) * g.kernel_w + j) * p;
                let dst_rows = &mut col[row..row + p];
                // Output columns whose input column lies inside the image.
                let shift = j as isize - pad;
                let lo = (-shift).clamp(0, ow as isize) as usize;
                let hi = (g.width as isize - shift).clamp(lo as isize, ow as isize) as usize;
                dst_rows[..y_lo * ow].fill(T::ZERO);
                dst_rows[y_hi * ow..].fill(T::ZERO);
                if y_lo >= y_hi {
                    continue;
                }
                if ow == g.width && hi > lo {
                    // "Same" convolution: the valid block is one contiguous run of the input
                    // shifted by `shift`; copy it at once, then zero the columns that wrapped
                    // around from the neighbouring rows.
                    let start = y_lo * ow + lo;
                    let end = (y_hi - 1) * ow + hi;
                    let src0 = ((y_lo as isize + row_shift) as usize * g.width) as isize
                        + lo as isize
                        + shift;
                    dst_rows[start..end]
                        .copy_from_slice(&plane[src0 as usize..src0 as usize + (end - start)]);
                    for y in y_lo..y_hi {
                        dst_rows[y * ow..y * ow + lo].fill(T::ZERO);
                        dst_rows[y * ow + hi..(y + 1) * ow].fill(T::ZERO);
                    }
                    continue;
                }
                for y in y_lo..y_hi {
                    let dst = &mut dst_rows[y * ow..(y + 1) * ow];
                    let iy = (y as isize + row_shift) as usize;
                    let src = &plane[iy * g.width..(iy + 1) * g.width];
                    dst[..lo].fill(T::ZERO);
                    let s0 = (lo as isize + shift) as usize;
                    dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                    dst[hi..].fill(T::ZERO);
                }
            }
        }
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs`, row-major `dst` and `lhs`; `rhs` given by its strides
/// (`rhs_rs` between rows of k, `rhs_cs` between columns of n).
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    lhs: &[T],
    rhs: &[T],
    rhs_rs: isize,
    rhs_cs: isize,
    parallel: bool,
) {
    debug_assert!(dst.len() >= m * n && lhs.len() >= m * k);
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices cover every element addressed by the given sizes and strides (the
    // callers size them from one ConvGeom), and dst does not alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// How to split `batch` images over the rayon pool: images per task, and whether each gemm
/// should itself be parallel (when there are fewer images than threads).
fn batch_split(batch: usize) -> (usize, bool) {
    let threads = rayon::current_num_threads().max(1);
    if batch >= threads {
        (batch.div_ceil(threads), false)
    } else {
        (1, true)
    }
}

/// Convolves one image `x [C, H, W]` into `out [O, OH, OW]` (overwritten), using `col` as
/// scratch (resized as needed). `packed` is `w` packed by [`Real::pack`], when available, for
/// the AVX-512 kernel; `parallel` lets the `gemm` crate's product use the rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn conv_image<T: Real>(
    x: &[T],
    w: &[T],
    packed: Option<&PackedWeights>,
    bias: Option<&[T]>,
    g: &ConvGeom,
    col: &mut Vec<T>,
    out: &mut [T],
    parallel: bool,
) {
    let (k, p) = (g.col_rows(), g.col_cols());
    let rhs: &[T] = if g.kernel_h == 1 && g.kernel_w == 1 && g.padding == 0 {
        x
    } else {
        if col.len() < k * p {
            col.resize(k * p, T::ZERO);
        }
        im2col(x, g, &mut col[..k * p]);
        &col[..k * p]
    };
    if let Some(pw) = packed {
        if T::packed_gemm(pw, rhs, p, bias, out) {
            return;
        }
    }
    if let Some(bias) = bias {
        for (row, &b) in out.chunks_mut(p).zip(bias) {
            row.fill(b);
        }
    }
    matmul(
        g.out_channels,
        p,
        k,
        out,
        bias.is_some(),
        w,
        rhs,
        p as isize,
        1,
        parallel,
    );
}

/// Forward convolution: `out [B, O, OH, OW] = x [B, C, H, W] ⋆ w [O, C, KH, KW] (+ bias [O])`.
pub fn conv_forward<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let mut out = vec![T::ZERO; g.batch * g.out_image_len()];
    let (per_task, parallel_gemm) = batch_split(g.batch);
    let packed = T::pack(w, g.out_channels, g.col_rows());
    out.par_chunks_mut(per_task * g.out_image_len())
        .zip(x.par_chunks(per_task * g.in_image_len()))
        .for_each(|(out_chunk, x_chunk)| {
            let mut col = Vec::new();
            for (out_img, x_img) in out_chunk
                .chunks_mut(g.out_image_len())
                .zip(x_chunk.chunks(g.in_image_len()))
            {
                conv_image(
                    x_img,
                    w,
                    packed.as_ref(),
                    bias,
                    g,
                    &mut col,
                    out_img,
                    parallel_gemm,
                );
            }
        });
    out
}

/// The kernel `w [O, C, KH, KW]` flipped in space with its channels swapped: `[C, O, KH, KW]`.
/// Convolving an output gradient with it (geometry [`ConvGeom::input_grad`]) gives the input
/// gradient.
pub fn flip_kernel<T: Real>(w: &[T], g: &ConvGeom) -> Vec<T> {
    let (o, c, kh, kw) = (g.out_channels, g.in_channels, g.kernel_h, g.kernel_w);
    let mut flipped = vec![T::ZERO; w.len()];
    for oi in 0..o {
        for ci in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    flipped[((ci * o + oi) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                        w[((oi * c + ci) * kh + i) * kw + j];
                }
            }
        }
    }
    flipped
}

/// Gradient with respect to the input, given the output gradient `gy`.
pub fn conv_input_grad<T: Real>(gy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    conv_forward(gy, &flip_kernel(w, g), None, &g.input_grad())
}

/// Adds one image's kernel gradient, `gy [O, P] · col(x)^T`, to `dw [O, C*KH*KW]`, using `col`
/// as scratch.
pub fn kernel_grad_image<T: Real>(
    x: &[T],
    gy: &[T],
    g: &ConvGeom,
    col: &mut Vec<T>,
    dw: &mut [T],
    parallel: bool,
) {
    let (k, p, o) = (g.col_rows(), g.col_cols(), g.out_channels);
    let rhs: &[T] = if g.kernel_h == 1 && g.kernel_w == 1 && g.padding == 0 {
        x
    } else {
        if col.len() < k * p {
            col.resize(k * p, T::ZERO);
        }
        im2col(x, g, &mut col[..k * p]);
        &col[..k * p]
    };
    // rhs is col^T: row index p (stride 1), column index k (stride P).
    matmul(o, k, p, dw, true, gy, rhs, 1, p as isize, parallel);
}

/// Gradient with respect to the kernel: `dw [O, C*KH*KW] = sum_b gy_b [O, P] · col_b^T`.
pub fn conv_kernel_grad<T: Real>(x: &[T], gy: &[T], g: &ConvGeom) -> Vec<T> {
    let (k, o) = (g.col_rows(), g.out_channels);
    let (per_task, parallel_gemm) = batch_split(g.batch);
    let partials: Vec<Vec<T>> = x
        .par_chunks(per_task * g.in_image_len())
        .zip(gy.par_chunks(per_task * g.out_image_len()))
        .map(|(x_chunk, gy_chunk)| {
            let mut col = Vec::new();
            let mut dw = vec![T::ZERO; o * k];
            for (x_img, gy_img) in x_chunk
                .chunks(g.in_image_len())
                .zip(gy_chunk.chunks(g.out_image_len()))
            {
                kernel_grad_image(x_img, gy_img, g, &mut col, &mut dw, parallel_gemm);
            }
            dw
        })
        .collect();
    let mut total = vec![T::ZERO; o * k];
    for part in partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

/// Gradient with respect to the bias: the output gradient summed over batch and pixels.
pub fn conv_bias_grad<T: Real>(gy: &[T], g: &ConvGeom) -> Vec<T> {
    let p = g.col_cols();
    let mut db = vec![T::ZERO; g.out_channels];
    for img in gy.chunks(g.out_image_len()) {
        for (d, row) in db.iter_mut().zip(img.chunks(p)) {
            let mut s = T::ZERO;
            for &v in row {
                s += v;
            }
            *d += s;
        }
    }
    db
}

const PAR_CHUNK: usize = 1 << 14;

/// `y = x * sigmoid(x)`.
pub fn swish_forward<T: Real>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * (T::ONE + (T::ZERO - x).exp()).recip();
            }
        });
    y
}

/// `dx = gy * d swish / dx = gy * s * (1 + x (1 - s))`, `s = sigmoid(x)`.
pub fn swish_backward<T: Real>(x: &[T], gy: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; x.len()];
    dx.par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK).zip(gy.par_chunks(PAR_CHUNK)))
        .for_each(|(dx, (x, gy))| {
            for ((d, &x), &g) in dx.iter_mut().zip(x).zip(gy) {
                let s = (T::ONE + (T::ZERO - x).exp()).recip();
                *d = g * s * (T::ONE + x * (T::ONE - s));
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct six-loop convolution, the definition itself.
    fn conv_direct(x: &[f64], w: &[f64], g: &ConvGeom) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut out = vec![0.0; g.batch * g.out_channels * oh * ow];
        for b in 0..g.batch {
            for o in 0..g.out_channels {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = 0.0;
                        for c in 0..g.in_channels {
                            for i in 0..g.kernel_h {
                                for j in 0..g.kernel_w {
                                    let iy = (y + i) as isize - g.padding as isize;
                                    let ix = (xx + j) as isize - g.padding as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.height as isize
                                        || ix >= g.width as isize
                                    {
                                        continue;
                                    }
                                    s += x[((b * g.in_channels + c) * g.height + iy as usize)
                                        * g.width
                                        + ix as usize]
                                        * w[((o * g.in_channels + c) * g.kernel_h + i)
                                            * g.kernel_w
                                            + j];
                                }
                            }
                        }
                        out[((b * g.out_channels + o) * oh + y) * ow + xx] = s;
                    }
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u64) -> Vec<f64> {
        // A small deterministic generator is enough for kernel-level tests.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn im2col_gemm_equals_direct_convolution() {
        for (kh, pad, h, w) in [
            (3, 1, 5, 7),
            (3, 0, 6, 4),
            (1, 0, 3, 3),
            (5, 2, 4, 6),
            (3, 2, 3, 3),
        ] {
            let g = ConvGeom {
                batch: 3,
                in_channels: 2,
                height: h,
                width: w,
                out_channels: 4,
                kernel_h: kh,
                kernel_w: kh,
                padding: pad,
            };
            let x = pseudo(g.batch * g.in_image_len(), 1);
            let wt = pseudo(g.out_channels * g.col_rows(), 2);
            let fast = conv_forward(&x, &wt, None, &g);
            let slow = conv_direct(&x, &wt, &g);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-12, "k={kh} pad={pad}: {a} vs {b}");
            }
        }
    }
}
