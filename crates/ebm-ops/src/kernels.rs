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
    /// `out [rows, n] = W [rows, depth] · x [depth, n]` with `W`'s rows `w_stride` apart, read
    /// in place by the AVX-512 kernel; false when it cannot run.
    fn strided_gemm(
        _w: &[Self],
        _rows: usize,
        _depth: usize,
        _w_stride: usize,
        _x: &[Self],
        _n: usize,
        _out: &mut [Self],
    ) -> bool {
        false
    }
    /// `out = bias + W · col` with the packed AVX-512 kernel; false when it cannot run.
    fn packed_gemm(
        _w: &PackedWeights,
        _col: &[Self],
        _n: usize,
        _bias: Option<&[Self]>,
        _out: &mut [Self],
        _out_stride: usize,
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
        n: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        out_stride: usize,
    ) -> bool {
        crate::packed_gemm::conv_gemm(w, col, n, bias, out, out_stride)
    }
    fn strided_gemm(
        w: &[f32],
        rows: usize,
        depth: usize,
        w_stride: usize,
        x: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> bool {
        crate::packed_gemm::gemm_strided_w(w, rows, depth, w_stride, x, n, out)
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
    im2col_rows(image, g, 0, g.out_h(), col)
}

/// Unfolds output rows `y0..y1` of one image: `col [C*KH*KW, (y1 - y0) * OW]`.
fn im2col_rows<T: Real>(image: &[T], g: &ConvGeom, y0: usize, y1: usize, col: &mut [T]) {
    let ow = g.out_w();
    let p = (y1 - y0) * ow;
    let pad = g.padding as isize;
    for c in 0..g.in_channels {
        let plane = &image[c * g.height * g.width..(c + 1) * g.height * g.width];
        for i in 0..g.kernel_h {
            // Output rows (within y0..y1) whose input row lies inside the image.
            let row_shift = i as isize - pad;
            let y_lo = ((-row_shift).max(0) as usize).clamp(y0, y1);
            let y_hi = ((g.height as isize - row_shift).max(0) as usize).clamp(y_lo, y1);
            for j in 0..g.kernel_w {
                let row = ((c * g.kernel_h + i) * g.kernel_w + j) * p;
                let dst_rows = &mut col[row..row + p];
                // Output columns whose input column lies inside the image.
                let shift = j as isize - pad;
                let lo = (-shift).clamp(0, ow as isize) as usize;
                let hi = (g.width as isize - shift).clamp(lo as isize, ow as isize) as usize;
                dst_rows[..(y_lo - y0) * ow].fill(T::ZERO);
                dst_rows[(y_hi - y0) * ow..].fill(T::ZERO);
                if y_lo >= y_hi {
                    continue;
                }
                if ow == g.width && hi > lo {
                    // "Same" convolution: the valid block is one contiguous run of the input
                    // shifted by `shift`; copy it at once, then zero the columns that wrapped
                    // around from the neighbouring rows.
                    let start = (y_lo - y0) * ow + lo;
                    let end = (y_hi - 1 - y0) * ow + hi;
                    let src0 = ((y_lo as isize + row_shift) as usize * g.width) as isize
                        + lo as isize
                        + shift;
                    dst_rows[start..end]
                        .copy_from_slice(&plane[src0 as usize..src0 as usize + (end - start)]);
                    for y in y_lo - y0..y_hi - y0 {
                        dst_rows[y * ow..y * ow + lo].fill(T::ZERO);
                        dst_rows[y * ow + hi..(y + 1) * ow].fill(T::ZERO);
                    }
                    continue;
                }
                for y in y_lo..y_hi {
                    let dst = &mut dst_rows[(y - y0) * ow..(y - y0 + 1) * ow];
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
    dst_rs: usize,
    accumulate: bool,
    lhs: &[T],
    rhs: &[T],
    rhs_rs: isize,
    rhs_cs: isize,
    parallel: bool,
) {
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n && lhs.len() >= m * k);
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
            dst_rs as isize,
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
    let (k, p, ow) = (g.col_rows(), g.col_cols(), g.out_w());
    let pointwise = g.kernel_h == 1 && g.kernel_w == 1 && g.padding == 0;
    // Unfold a band of output rows at a time, so that the unfolded band stays in cache while
    // the product reads it (one band when the whole image fits).
    let rows_per_band = if pointwise {
        g.out_h()
    } else {
        (COL_BLOCK_BYTES / (k * ow * std::mem::size_of::<T>()).max(1)).clamp(1, g.out_h())
    };
    let mut y0 = 0;
    while y0 < g.out_h() {
        let y1 = (y0 + rows_per_band).min(g.out_h());
        let n = (y1 - y0) * ow;
        let rhs: &[T] = if pointwise {
            x
        } else {
            if col.len() < k * n {
                col.resize(k * n, T::ZERO);
            }
            im2col_rows(x, g, y0, y1, &mut col[..k * n]);
            &col[..k * n]
        };
        let dst = &mut out[y0 * ow..];
        let done = match packed {
            Some(pw) => T::packed_gemm(pw, rhs, n, bias, dst, p),
            None => false,
        };
        if !done {
            if let Some(bias) = bias {
                for (o, &b) in bias.iter().enumerate() {
                    dst[o * p..o * p + n].fill(b);
                }
            }
            matmul(
                g.out_channels,
                n,
                k,
                dst,
                p,
                bias.is_some(),
                w,
                rhs,
                n as isize,
                1,
                parallel,
            );
        }
        y0 = y1;
    }
}

/// `dst [cols, rows] = src [rows, cols]ᵀ`, both row-major, in tiles of 16 x 16 so that reads and
/// writes both stay within a few cache lines at a time.
pub fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose: slices shorter than rows x cols"
    );
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let row = &src[r * cols + c0..r * cols + c1];
                for (c, &v) in (c0..c1).zip(row) {
                    dst[c * rows + r] = v;
                }
            }
        }
    }
}

/// `out [rows, n] = bias + W [rows, depth] · x [depth, n]`, all row-major: a dense layer on
/// activations stored feature-major (one column per sample). `packed` is `W` packed by
/// [`Real::pack`] when available.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wx<T: Real>(
    w: &[T],
    packed: Option<&PackedWeights>,
    bias: Option<&[T]>,
    rows: usize,
    depth: usize,
    x: &[T],
    n: usize,
    out: &mut [T],
) {
    if let Some(pw) = packed {
        if T::packed_gemm(pw, x, n, bias, out, n) {
            return;
        }
    }
    if let Some(bias) = bias {
        for (o, &b) in bias.iter().enumerate() {
            out[o * n..(o + 1) * n].fill(b);
        }
    }
    matmul(
        rows,
        n,
        depth,
        out,
        n,
        bias.is_some(),
        w,
        x,
        n as isize,
        1,
        false,
    );
}

/// The unfolded band of a convolution is kept under this size (the core's L2 holds it).
const COL_BLOCK_BYTES: usize = 384 * 1024;

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
    // Scratch: the unfolded image [K, P], then gyᵀ [P, O] and dwᵀ [K, O] for the AVX-512 path.
    let need = k * p + p * o + k * o;
    if col.len() < need {
        col.resize(need, T::ZERO);
    }
    let (unfolded, rest) = col.split_at_mut(k * p);
    let rhs: &[T] = if g.kernel_h == 1 && g.kernel_w == 1 && g.padding == 0 {
        x
    } else {
        im2col(x, g, unfolded);
        unfolded
    };
    // dwᵀ [K, O] = col [K, P] · gyᵀ [P, O], reading col in place: the `gemm` crate packs
    // col (as large as the product's work) on every call.
    let (gy_t, dw_t) = rest.split_at_mut(p * o);
    transpose(&gy[..o * p], o, p, gy_t);
    if T::strided_gemm(rhs, k, p, p, gy_t, o, &mut dw_t[..k * o]) {
        for (r, row) in dw.chunks_exact_mut(k).enumerate().take(o) {
            for (c, d) in row.iter_mut().enumerate() {
                *d += dw_t[c * o + r];
            }
        }
        return;
    }
    // rhs is col^T: row index p (stride 1), column index k (stride P).
    matmul(o, k, p, dw, k, true, gy, rhs, 1, p as isize, parallel);
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

    #[test]
    fn transpose_moves_every_element_to_its_mirror() {
        for (rows, cols) in [(1, 1), (3, 5), (16, 16), (17, 33), (100, 100), (50, 100)] {
            let src: Vec<u32> = (0..(rows * cols) as u32).collect();
            let mut dst = vec![u32::MAX; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "({rows}x{cols}) [{r},{c}]"
                    );
                }
            }
        }
    }

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

    /// Large images are unfolded a band of rows at a time; f32 (packed AVX-512 kernel where the
    /// CPU has it) and f64 (the `gemm` crate) both match the direct definition.
    #[test]
    fn banded_unfolding_equals_direct_convolution() {
        let g = ConvGeom {
            batch: 2,
            in_channels: 64,
            height: 37,
            width: 40,
            out_channels: 10,
            kernel_h: 3,
            kernel_w: 3,
            padding: 1,
        };
        assert!(
            g.col_rows() * g.out_w() * 4 * 2 < COL_BLOCK_BYTES * 2
                && g.col_rows() * g.col_cols() * 4 > COL_BLOCK_BYTES
        );
        let x = pseudo(g.batch * g.in_image_len(), 3);
        let wt = pseudo(g.out_channels * g.col_rows(), 4);
        let bias = pseudo(g.out_channels, 5);
        let mut slow = conv_direct(&x, &wt, &g);
        for (i, v) in slow.iter_mut().enumerate() {
            *v += bias[(i / g.col_cols()) % g.out_channels];
        }
        let fast64 = conv_forward(&x, &wt, Some(&bias), &g);
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let fast32 = conv_forward(&to32(&x), &to32(&wt), Some(&to32(&bias)), &g);
        for i in 0..slow.len() {
            assert!(
                (fast64[i] - slow[i]).abs() < 1e-10,
                "f64 [{i}]: {} vs {}",
                fast64[i],
                slow[i]
            );
            assert!(
                (fast32[i] as f64 - slow[i]).abs() < 1e-3,
                "f32 [{i}]: {} vs {}",
                fast32[i],
                slow[i]
            );
        }
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

    /// The f32 kernel gradient (the in-place AVX-512 product where the CPU has it, the `gemm`
    /// crate otherwise) against its definition in f64.
    #[test]
    fn f32_kernel_gradient_equals_its_definition() {
        for (c, o, h, k, pad) in [
            (3, 20, 9, 3, 1),
            (2, 5, 4, 1, 0),
            (1, 16, 28, 3, 1),
            (4, 50, 6, 3, 0),
        ] {
            let g = ConvGeom {
                batch: 3,
                in_channels: c,
                height: h,
                width: h,
                out_channels: o,
                kernel_h: k,
                kernel_w: k,
                padding: pad,
            };
            let x = pseudo(g.batch * g.in_image_len(), 3);
            let gy = pseudo(g.batch * g.out_image_len(), 4);
            let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let fast = conv_kernel_grad(&to32(&x), &to32(&gy), &g);
            let (oh, ow) = (g.out_h(), g.out_w());
            for oc in 0..o {
                for ic in 0..c {
                    for i in 0..k {
                        for j in 0..k {
                            let mut expect = 0.0f64;
                            for b in 0..g.batch {
                                for y in 0..oh {
                                    for xx in 0..ow {
                                        let (yy, xi) = (y + i, xx + j);
                                        if yy < pad || xi < pad || yy - pad >= h || xi - pad >= h {
                                            continue;
                                        }
                                        let xv = x[((b * c + ic) * h + yy - pad) * h + xi - pad]
                                            as f32
                                            as f64;
                                        let gv =
                                            gy[((b * o + oc) * oh + y) * ow + xx] as f32 as f64;
                                        expect += xv * gv;
                                    }
                                }
                            }
                            let got = fast[((oc * c + ic) * k + i) * k + j] as f64;
                            assert!(
                                (got - expect).abs() < 1e-4 * (1.0 + expect.abs()),
                                "c{c} o{o} h{h} k{k}: [{oc},{ic},{i},{j}] {got} vs {expect}"
                            );
                        }
                    }
                }
            }
        }
    }
}
