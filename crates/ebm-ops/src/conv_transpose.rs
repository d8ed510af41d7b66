//! [`conv_transpose2d`]: 2-D transposed convolution with stride, padding and optional fused
//! bias, the upsampling layer of DCGAN-style generators (PyTorch's `ConvTranspose2d`).
//!
//! On the CPU (f32, f64) it is a custom op. The batch is split into one group of images per
//! thread; for each group the forward is one matrix product, `cols = W^T · x` (the packed
//! AVX-512 kernel of [`crate::packed_gemm`] where it runs, else the `gemm` crate), scattered
//! into the output (col2im). The input gradient is the strided convolution of the output
//! gradient with the same kernel (im2col plus a product); the kernel and bias gradients are
//! computed only when those tensors take part in autograd.
//! Elsewhere it is candle's `conv_transpose2d` plus a broadcast add
//! ([`conv_transpose2d_candle`]), whose gradients the tests also check on the CPU.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

use crate::kernels::Real;
use crate::packed_gemm::PackedWeights;

/// Transposed convolution: `x [B, Cin, H, W]`, `w [Cin, Cout, K, K]` (PyTorch's layout for
/// `ConvTranspose2d`), optional `bias [Cout]`, result `[B, Cout, OH, OW]` with
/// `OH = (H - 1) * stride - 2 * padding + K` (no output padding, no dilation, one group).
///
/// It is the gradient of a stride-`stride` convolution with respect to its input: each input
/// pixel adds `x[b, ci, iy, ix] * w[ci, co, ky, kx]` to the output pixel
/// `(iy * stride - padding + ky, ix * stride - padding + kx)` when that pixel exists.
/// Needs a square kernel, `stride >= 1` and `padding < K`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> candle_core::Result<()> {
/// // DCGAN's upsampling: kernel 4, stride 2, padding 1 doubles the size.
/// let x = Tensor::ones((1, 3, 7, 7), DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((3, 2, 4, 4), DType::F32, &Device::Cpu)?;
/// let y = ebm_ops::conv_transpose2d(&x, &w, None, 2, 1)?;
/// assert_eq!(y.dims(), &[1, 2, 14, 14]);
/// // An interior output pixel receives 2x2 kernel taps from each of the 3 channels.
/// assert_eq!(y.get(0)?.get(0)?.to_vec2::<f32>()?[5][5], 12.0);
/// # Ok(())
/// # }
/// ```
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    geometry(x, w, bias, stride, padding)?;
    let same_dtype = x.dtype() == w.dtype() && bias.is_none_or(|b| b.dtype() == x.dtype());
    if !(crate::cpu_fast_path(x) && same_dtype) {
        return conv_transpose2d_candle(x, w, bias, stride, padding);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = ConvTranspose { stride, padding };
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// The same transposed convolution with candle's own ops (`Tensor::conv_transpose2d` and a
/// broadcast add): what [`conv_transpose2d`] runs on CUDA and Metal. Public so that tests can
/// hold its forward and its gradients to the definition on the CPU too.
pub fn conv_transpose2d_candle(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = geometry(x, w, bias, stride, padding)?;
    let y = x.conv_transpose2d(w, padding, 0, stride, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, g.cout, 1, 1))?),
        None => Ok(y),
    }
}

/// The gradient of [`conv_transpose2d`] with respect to its input, given the gradient of its
/// output `grad [B, Cout, OH, OW]` and the kernel `w [Cin, Cout, K, K]`: the stride-`stride`
/// convolution of `grad` with `w`, shape `[B, Cin, H, W]`. Not itself differentiable.
///
/// For hand-written backward passes (a sampler's gradient with respect to a generator's
/// input) that skip autograd's bookkeeping. On the CPU it is the custom op's own input
/// gradient; elsewhere candle's strided `conv2d`, as candle's own backward computes it.
pub fn conv_transpose2d_input_grad(
    grad: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (batch, cout, oh, ow) = grad.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "conv_transpose2d_input_grad: the output gradient must be [B, Cout, OH, OW], got {:?}",
            grad.dims()
        ))
    })?;
    let (_, w_out, k, kw) = w.dims4()?;
    if w_out != cout || k != kw || k == 0 || stride == 0 || padding >= k {
        candle_core::bail!(
            "conv_transpose2d_input_grad: the kernel {:?} does not fit an output gradient {:?} with stride {stride} and padding {padding}",
            w.dims(),
            grad.dims()
        );
    }
    let fits = |o: usize| o + 2 * padding >= k && (o + 2 * padding - k).is_multiple_of(stride);
    if batch == 0 || !fits(oh) || !fits(ow) {
        candle_core::bail!(
            "conv_transpose2d_input_grad: an output of {oh}x{ow} is not made by kernel {k}, stride {stride}, padding {padding} from any input"
        );
    }
    if crate::cpu_fast_path(grad) && grad.dtype() == w.dtype() {
        grad.contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &InputGrad { stride, padding })
    } else {
        grad.conv2d(w, padding, stride, 1, 1)
    }
}

/// The sizes of one transposed convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Geom {
    fn oh(&self) -> usize {
        (self.h - 1) * self.stride + self.k - 2 * self.padding
    }
    fn ow(&self) -> usize {
        (self.w - 1) * self.stride + self.k - 2 * self.padding
    }
    /// Rows of the column matrix: one per (output channel, kernel row, kernel column).
    fn rows(&self) -> usize {
        self.cout * self.k * self.k
    }
    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.oh() * self.ow()
    }
    /// How to split the batch over the rayon pool: images per task (each task builds its own
    /// column matrix, kept near 8 Mi values), and whether each product should itself run in
    /// parallel (when there are fewer images than threads).
    fn split(&self) -> (usize, bool) {
        const BUDGET: usize = 8 << 20;
        let threads = rayon::current_num_threads().max(1);
        let budget = (BUDGET / (self.rows().max(self.cin) * self.in_plane()).max(1)).max(1);
        if self.batch >= threads {
            (self.batch.div_ceil(threads).min(budget), false)
        } else {
            (1, true)
        }
    }
    /// The input pixels `lo..hi` (along one axis of length `len`) that land inside an output
    /// of length `out_len` for kernel offset `kk`: `i * stride + kk - padding` in `0..out_len`.
    fn valid(&self, kk: usize, len: usize, out_len: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        let lo = if p > kk { (p - kk).div_ceil(s) } else { 0 };
        let hi = if out_len + p > kk {
            (out_len + p - kk).div_ceil(s).min(len)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

fn geometry(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Geom> {
    let (batch, cin, h, width) = x.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "conv_transpose2d: the input must be [B, Cin, H, W], got {:?}",
            x.dims()
        ))
    })?;
    let (w_in, cout, kh, kw) = w.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "conv_transpose2d: the kernel must be [Cin, Cout, K, K], got {:?}",
            w.dims()
        ))
    })?;
    if w_in != cin {
        candle_core::bail!(
            "conv_transpose2d: the kernel {:?} takes {w_in} input channels, the input {:?} has {cin}",
            w.dims(),
            x.dims()
        );
    }
    if kh != kw || kh == 0 || stride == 0 || padding >= kh {
        candle_core::bail!(
            "conv_transpose2d: needs a square kernel, stride >= 1 and padding < kernel size, got kernel {kh}x{kw}, stride {stride}, padding {padding}"
        );
    }
    if batch == 0 || cin == 0 || cout == 0 || h == 0 || width == 0 {
        candle_core::bail!(
            "conv_transpose2d: empty input {:?} or kernel {:?}",
            x.dims(),
            w.dims()
        );
    }
    if (h.min(width) - 1) * stride + kh <= 2 * padding {
        candle_core::bail!(
            "conv_transpose2d: a {h}x{width} input with kernel {kh}, stride {stride} and padding {padding} has no output pixels"
        );
    }
    if let Some(b) = bias {
        if b.dims() != [cout] {
            candle_core::bail!(
                "conv_transpose2d: the bias has shape {:?}, the kernel has {cout} output channels",
                b.dims()
            );
        }
    }
    Ok(Geom {
        batch,
        cin,
        h,
        w: width,
        cout,
        k: kh,
        stride,
        padding,
    })
}

fn geometry_from_layouts(lx: &Layout, lw: &Layout, stride: usize, padding: usize) -> Result<Geom> {
    let (batch, cin, h, w) = lx.shape().dims4()?;
    let (_, cout, k, _) = lw.shape().dims4()?;
    Ok(Geom {
        batch,
        cin,
        h,
        w,
        cout,
        k,
        stride,
        padding,
    })
}

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("ebm-ops conv_transpose2d: expected a contiguous tensor"),
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`: `dst` row-major with row stride `n`, `lhs` and
/// `rhs` given by their (row, column) strides; `parallel` lets the product use the rayon pool.
#[allow(clippy::too_many_arguments)]
fn gemm_strided<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // The bounds the unsafe call relies on; a failure here is a bug in this file.
    assert!(dst.len() >= m * n, "gemm_strided: dst too short");
    assert!(
        lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs,
        "gemm_strided: lhs too short"
    );
    assert!(
        rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs,
        "gemm_strided: rhs too short"
    );
    let parallelism = if parallel && m * n * k >= 1 << 16 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assertions above show that every element addressed through the given sizes
    // and strides lies inside its slice; `dst` is a unique borrow, so it aliases neither input.
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
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `[nb, C, P]` (the images of a task) to `[C, nb * P]`: channels first, so that one product
/// covers every image of the task.
fn channels_major<T: Real>(x: &[T], nb: usize, c: usize, p: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    for ci in 0..c {
        for b in 0..nb {
            out[(ci * nb + b) * p..(ci * nb + b + 1) * p]
                .copy_from_slice(&x[(b * c + ci) * p..(b * c + ci + 1) * p]);
        }
    }
    out
}

/// `out [m, n] = W [m, k] · rhs [k, n]`, all row-major: the packed AVX-512 kernel when `packed`
/// is given and runs, else the `gemm` crate (in parallel when asked).
#[allow(clippy::too_many_arguments)]
fn product<T: Real>(
    w: &[T],
    packed: Option<&PackedWeights>,
    (m, k): (usize, usize),
    rhs: &[T],
    n: usize,
    out: &mut [T],
    parallel: bool,
) {
    if let Some(pw) = packed {
        if T::packed_gemm(pw, rhs, n, None, out, n) {
            return;
        }
    }
    gemm_strided((m, n, k), out, false, w, (k, 1), rhs, (n, 1), parallel);
}

/// The forward pass: `out [B, Cout, OH, OW]`.
fn forward<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let (p_in, p_out, rows) = (g.in_plane(), g.out_plane(), g.rows());
    let (group, parallel) = g.split();
    // W^T [rows, Cin], packed once for the AVX-512 kernel where it runs.
    let mut wt = vec![T::ZERO; w.len()];
    for c in 0..g.cin {
        for r in 0..rows {
            wt[r * g.cin + c] = w[c * rows + r];
        }
    }
    let packed = if parallel {
        None
    } else {
        T::pack(&wt, rows, g.cin)
    };
    let mut out = vec![T::ZERO; g.batch * g.cout * p_out];
    out.par_chunks_mut(group * g.cout * p_out)
        .zip(x.par_chunks(group * g.cin * p_in))
        .for_each(|(out, x)| {
            let nb = x.len() / (g.cin * p_in);
            let n = nb * p_in;
            let xt = channels_major(x, nb, g.cin, p_in);
            let mut cols = vec![T::ZERO; rows * n];
            product(
                &wt,
                packed.as_ref(),
                (rows, g.cin),
                &xt,
                n,
                &mut cols,
                parallel,
            );
            col2im(&cols, nb, bias, g, out);
        });
    out
}

/// Scatters the column matrix `cols [rows, nb * H * W]` of `nb` images into their outputs
/// `out [nb, Cout, OH, OW]` (overwritten, starting from the bias).
fn col2im<T: Real>(cols: &[T], nb: usize, bias: Option<&[T]>, g: &Geom, out: &mut [T]) {
    let (p_in, p_out, k) = (g.in_plane(), g.out_plane(), g.k);
    let (oh, ow) = (g.oh(), g.ow());
    let n = nb * p_in;
    for (plane, o) in out.chunks_mut(p_out).enumerate() {
        let (bi, co) = (plane / g.cout, plane % g.cout);
        o.fill(bias.map_or(T::ZERO, |b| b[co]));
        for ky in 0..k {
            let (y_lo, y_hi) = g.valid(ky, g.h, oh);
            for kx in 0..k {
                let (x_lo, x_hi) = g.valid(kx, g.w, ow);
                let row = (co * k + ky) * k + kx;
                let src = &cols[row * n + bi * p_in..row * n + (bi + 1) * p_in];
                if x_lo >= x_hi {
                    continue;
                }
                let first = x_lo * g.stride + kx - g.padding;
                for iy in y_lo..y_hi {
                    let oy = iy * g.stride + ky - g.padding;
                    let dst = &mut o[oy * ow + first..(oy + 1) * ow];
                    let src_row = &src[iy * g.w + x_lo..iy * g.w + x_hi];
                    for (d, &v) in dst.iter_mut().step_by(g.stride).zip(src_row) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// im2col of the output gradient of `nb` images: `col [rows, nb * H * W]`, row
/// `(co, ky, kx)`, column `(b, iy, ix)` holding `gy[b, co, iy * s - p + ky, ix * s - p + kx]`
/// (zero outside the output).
fn im2col<T: Real>(gy: &[T], nb: usize, g: &Geom) -> Vec<T> {
    let (p_in, p_out, k) = (g.in_plane(), g.out_plane(), g.k);
    let (oh, ow) = (g.oh(), g.ow());
    let n = nb * p_in;
    let mut col = vec![T::ZERO; g.rows() * n];
    col.chunks_mut(n).enumerate().for_each(|(row, dst)| {
        let co = row / (k * k);
        let (ky, kx) = ((row / k) % k, row % k);
        let (y_lo, y_hi) = g.valid(ky, g.h, oh);
        let (x_lo, x_hi) = g.valid(kx, g.w, ow);
        if x_lo >= x_hi {
            return;
        }
        let first = x_lo * g.stride + kx - g.padding;
        for b in 0..nb {
            let plane = &gy[(b * g.cout + co) * p_out..(b * g.cout + co + 1) * p_out];
            for iy in y_lo..y_hi {
                let oy = iy * g.stride + ky - g.padding;
                let src = &plane[oy * ow + first..(oy + 1) * ow];
                let d = &mut dst[b * p_in + iy * g.w + x_lo..b * p_in + iy * g.w + x_hi];
                for (d, &v) in d.iter_mut().zip(src.iter().step_by(g.stride)) {
                    *d = v;
                }
            }
        }
    });
    col
}

/// The input gradient `[B, Cin, H, W]`: `gx_b = W [Cin, rows] · col(gy_b)`.
fn input_grad<T: Real>(gy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (p_in, p_out, rows) = (g.in_plane(), g.out_plane(), g.rows());
    let (group, parallel) = g.split();
    let packed = if parallel {
        None
    } else {
        T::pack(w, g.cin, rows)
    };
    let mut gx = vec![T::ZERO; g.batch * g.cin * p_in];
    gx.par_chunks_mut(group * g.cin * p_in)
        .zip(gy.par_chunks(group * g.cout * p_out))
        .for_each(|(gx, gy)| {
            let nb = gx.len() / (g.cin * p_in);
            let n = nb * p_in;
            let col = im2col(gy, nb, g);
            if nb == 1 {
                // One image: [Cin, P] is already its layout.
                product(w, packed.as_ref(), (g.cin, rows), &col, n, gx, parallel);
                return;
            }
            let mut gxt = vec![T::ZERO; g.cin * n];
            product(
                w,
                packed.as_ref(),
                (g.cin, rows),
                &col,
                n,
                &mut gxt,
                parallel,
            );
            // [Cin, nb * P] back to [nb, Cin, P].
            for (plane, dst) in gx.chunks_mut(p_in).enumerate() {
                let (bi, ci) = (plane / g.cin, plane % g.cin);
                dst.copy_from_slice(&gxt[ci * n + bi * p_in..ci * n + (bi + 1) * p_in]);
            }
        });
    gx
}

/// The kernel gradient `[Cin, Cout, K, K]`: `sum_b x_b [Cin, P] · col(gy_b)^T [P, rows]`,
/// summed over the tasks' partial sums in a fixed order.
fn kernel_grad<T: Real>(x: &[T], gy: &[T], g: &Geom) -> Vec<T> {
    let (p_in, p_out, rows) = (g.in_plane(), g.out_plane(), g.rows());
    let (group, parallel) = g.split();
    let partials: Vec<Vec<T>> = x
        .par_chunks(group * g.cin * p_in)
        .zip(gy.par_chunks(group * g.cout * p_out))
        .map(|(x, gy)| {
            let nb = x.len() / (g.cin * p_in);
            let n = nb * p_in;
            let xt = channels_major(x, nb, g.cin, p_in);
            let col = im2col(gy, nb, g);
            let mut dw = vec![T::ZERO; g.cin * rows];
            // rhs = col^T: element (j over n, r over rows) at col[r * n + j].
            gemm_strided(
                (g.cin, rows, n),
                &mut dw,
                false,
                &xt,
                (n, 1),
                &col,
                (1, n),
                parallel,
            );
            dw
        })
        .collect();
    let mut total = vec![T::ZERO; g.cin * rows];
    for part in partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

/// The bias gradient `[Cout]`: the output gradient summed over images and pixels.
fn bias_grad<T: Real>(gy: &[T], cout: usize, plane: usize) -> Vec<T> {
    let mut db = vec![T::ZERO; cout];
    for img in gy.chunks(cout * plane) {
        for (d, p) in db.iter_mut().zip(img.chunks(plane)) {
            let mut s = T::ZERO;
            for &v in p {
                s += v;
            }
            *d += s;
        }
    }
    db
}

/// Runs `f` on the f32 or f64 slices of a storage, wrapping the result back.
macro_rules! typed {
    ($dtype:expr, $what:literal, |$t:ident| $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                CpuStorage::F32($body)
            }
            DType::F64 => {
                type $t = f64;
                CpuStorage::F64($body)
            }
            dt => candle_core::bail!("ebm-ops {}: no CPU kernel for {dt:?}", $what),
        }
    };
}

fn forward_storage(
    (sx, lx): (&CpuStorage, &Layout),
    (sw, lw): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
    stride: usize,
    padding: usize,
) -> Result<(CpuStorage, Shape)> {
    let g = geometry_from_layouts(lx, lw, stride, padding)?;
    let storage = typed!(sx.dtype(), "conv_transpose2d", |T| {
        let b = match bias {
            Some((sb, lb)) => Some(slice::<T>(sb, lb)?),
            None => None,
        };
        forward(slice::<T>(sx, lx)?, slice::<T>(sw, lw)?, b, &g)
    });
    Ok((storage, Shape::from((g.batch, g.cout, g.oh(), g.ow()))))
}

/// The op, with or without bias.
struct ConvTranspose {
    stride: usize,
    padding: usize,
}

impl ConvTranspose {
    /// The input and kernel gradients, each only when its tensor takes part in autograd.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (stride, padding) = (self.stride, self.padding);
        let grad_x = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &InputGrad { stride, padding })?)
        } else {
            None
        };
        let grad_w = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &grad,
                &KernelGrad {
                    stride,
                    padding,
                    kernel: w.shape().clone(),
                },
            )?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

impl CustomOp2 for ConvTranspose {
    fn name(&self) -> &'static str {
        "ebm-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward_storage((sx, lx), (sw, lw), None, self.stride, self.padding)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.backward(x, w, grad)
    }
}

impl CustomOp3 for ConvTranspose {
    fn name(&self) -> &'static str {
        "ebm-conv-transpose2d-bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward_storage(
            (sx, lx),
            (sw, lw),
            Some((sb, lb)),
            self.stride,
            self.padding,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_w) = self.backward(x, w, grad)?;
        let grad_b = if b.track_op() {
            Some(grad.contiguous()?.apply_op1_no_bwd(&BiasGrad)?)
        } else {
            None
        };
        Ok((grad_x, grad_w, grad_b))
    }
}

/// `(grad_y, w) -> grad_x`. Not itself differentiable: double backward through it is an error.
struct InputGrad {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "ebm-conv-transpose2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, cout, oh, _) = lg.shape().dims4()?;
        let (cin, _, k, _) = lw.shape().dims4()?;
        // Invert OH = (H - 1) s + K - 2p; the forward checked the geometry.
        let h = (oh + 2 * self.padding - k) / self.stride + 1;
        let w_len = (lg.shape().dims()[3] + 2 * self.padding - k) / self.stride + 1;
        let g = Geom {
            batch,
            cin,
            h,
            w: w_len,
            cout,
            k,
            stride: self.stride,
            padding: self.padding,
        };
        let storage = typed!(sg.dtype(), "conv_transpose2d", |T| input_grad(
            slice::<T>(sg, lg)?,
            slice::<T>(sw, lw)?,
            &g
        ));
        Ok((storage, Shape::from((batch, cin, h, w_len))))
    }
}

/// `(x, grad_y) -> grad_w`. Not itself differentiable.
struct KernelGrad {
    stride: usize,
    padding: usize,
    kernel: Shape,
}

impl CustomOp2 for KernelGrad {
    fn name(&self) -> &'static str {
        "ebm-conv-transpose2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, cin, h, w) = lx.shape().dims4()?;
        let (_, cout, k, _) = self.kernel.dims4()?;
        let g = Geom {
            batch,
            cin,
            h,
            w,
            cout,
            k,
            stride: self.stride,
            padding: self.padding,
        };
        let storage = typed!(sx.dtype(), "conv_transpose2d", |T| kernel_grad(
            slice::<T>(sx, lx)?,
            slice::<T>(sg, lg)?,
            &g
        ));
        Ok((storage, self.kernel.clone()))
    }
}

/// `grad_y [B, Cout, OH, OW] -> grad_b [Cout]`. Not itself differentiable.
struct BiasGrad;

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "ebm-conv-transpose2d-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, cout, h, w) = l.shape().dims4()?;
        let storage = typed!(s.dtype(), "conv_transpose2d", |T| bias_grad(
            slice::<T>(s, l)?,
            cout,
            h * w
        ));
        Ok((storage, Shape::from(cout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges_cover_exactly_the_pixels_inside() {
        for (h, k, s, p) in [
            (7, 4, 2, 1),
            (1, 7, 1, 0),
            (5, 3, 1, 2),
            (4, 5, 3, 2),
            (3, 4, 2, 3),
        ] {
            let g = Geom {
                batch: 1,
                cin: 1,
                h,
                w: h,
                cout: 1,
                k,
                stride: s,
                padding: p,
            };
            let out = g.oh();
            for kk in 0..k {
                let (lo, hi) = g.valid(kk, h, out);
                for i in 0..h {
                    let o = (i * s + kk) as isize - p as isize;
                    let inside = o >= 0 && (o as usize) < out;
                    assert_eq!(
                        inside,
                        (lo..hi).contains(&i),
                        "h {h} k {k} s {s} p {p} kk {kk} i {i}"
                    );
                }
            }
        }
    }
}
