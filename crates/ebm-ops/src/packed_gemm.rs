//! An AVX-512 matrix product for convolutions, `out [O, P] = bias + W [O, K] · col [K, P]`, with
//! `W` packed once into panels of 8 rows (so that a frozen network packs its weights a single
//! time). Register tile: 8 rows of `W` by 48 columns of `col` (24 accumulators), masked at the
//! right edge. The `gemm` crate's stable build has no AVX-512 kernels; this one is used where the
//! CPU has AVX-512F and f32 data, and the `gemm` crate everywhere else.

/// Rows of `W` per panel.
const MR: usize = 8;
/// Columns of `col` per tile (three 16-lane vectors).
const NR: usize = 48;

/// `W [O, K]` repacked as panels of [`MR`] rows stored column by column (zero-padded rows).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    rows: usize,
    depth: usize,
    data: Vec<f32>,
}

impl PackedWeights {
    /// Packs a row-major `w [rows, depth]`.
    pub fn new(w: &[f32], rows: usize, depth: usize) -> Self {
        assert_eq!(
            w.len(),
            rows * depth,
            "PackedWeights: w must be rows x depth"
        );
        let panels = rows.div_ceil(MR);
        let mut data = vec![0f32; panels * depth * MR];
        for panel in 0..panels {
            for k in 0..depth {
                for r in 0..MR {
                    let row = panel * MR + r;
                    if row < rows {
                        data[(panel * depth + k) * MR + r] = w[row * depth + k];
                    }
                }
            }
        }
        Self { rows, depth, data }
    }

    /// Rows `O`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Depth `K`.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// True when this CPU runs the AVX-512 kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out [O, n] = bias + W · col [K, n]` (`bias` broadcast along rows, zero when absent), `col`
/// row-major with rows of `n`, `out` with rows `out_stride` apart (`>= n`). Returns false,
/// touching nothing, when the CPU lacks AVX-512.
pub fn conv_gemm(
    w: &PackedWeights,
    col: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) -> bool {
    assert!(
        out_stride >= n
            && col.len() >= w.depth * n
            && out.len() >= (w.rows.max(1) - 1) * out_stride + n,
        "conv_gemm: slices too short"
    );
    if let Some(b) = bias {
        assert!(b.len() >= w.rows, "conv_gemm: bias too short");
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above) and the slices cover every index the
        // kernel touches (asserted above: K x P of col, O x P of out, O of bias).
        unsafe { kernel(w, col, n, bias, out, out_stride) };
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel(
    w: &PackedWeights,
    col: &[f32],
    p: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    let (col, out) = (col.as_ptr(), out.as_mut_ptr());
    let mut j = 0;
    while j < p {
        let width = (p - j).min(NR);
        // SAFETY: see conv_gemm; tiles stay inside the asserted lengths. A narrow last tile
        // uses as many 16-lane vectors as it needs, not three, and a last tile of a few
        // columns goes down the rows instead (a 16-lane tile would be mostly padding).
        unsafe {
            match width {
                1 => few_columns::<1>(w, col, p, j, bias, out, out_stride),
                2 => few_columns::<2>(w, col, p, j, bias, out, out_stride),
                3 => few_columns::<3>(w, col, p, j, bias, out, out_stride),
                4 => few_columns::<4>(w, col, p, j, bias, out, out_stride),
                5 => few_columns::<5>(w, col, p, j, bias, out, out_stride),
                6 => few_columns::<6>(w, col, p, j, bias, out, out_stride),
                _ => match width.div_ceil(16) {
                    1 => tile::<1, _>(w, col, p, j, width, bias, out, out_stride),
                    2 => tile::<2, _>(w, col, p, j, width, bias, out, out_stride),
                    _ => tile::<3, _>(w, col, p, j, width, bias, out, out_stride),
                },
            }
        }
        j += NR;
    }
}

/// Panels handled together by [`few_columns`]: enough independent accumulators to hide the
/// latency of the multiply-adds.
const GROUP: usize = 4;

/// The last `C <= 6` columns starting at `j`: each panel's 8 rows as one 8-lane vector, times
/// each column's element broadcast, [`GROUP`] panels at a time. Where a 16-lane tile of `tile`
/// would spend a whole row of multiply-adds per broadcast on a column or two, this spends one
/// per column.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn few_columns<const C: usize>(
    w: &PackedWeights,
    col: *const f32,
    p: usize,
    j: usize,
    bias: Option<&[f32]>,
    out: *mut f32,
    out_stride: usize,
) {
    let panels = w.rows.div_ceil(MR);
    let mut first = 0;
    // SAFETY: see `panel_group`; every group lies inside the panels.
    unsafe {
        while first + GROUP <= panels {
            panel_group::<C, GROUP>(w, col, p, j, bias, out, out_stride, first);
            first += GROUP;
        }
        match panels - first {
            1 => panel_group::<C, 1>(w, col, p, j, bias, out, out_stride, first),
            2 => panel_group::<C, 2>(w, col, p, j, bias, out, out_stride, first),
            3 => panel_group::<C, 3>(w, col, p, j, bias, out, out_stride, first),
            _ => {}
        }
    }
}

/// Panels `first .. first + G` of [`few_columns`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_group<const C: usize, const G: usize>(
    w: &PackedWeights,
    col: *const f32,
    p: usize,
    j: usize,
    bias: Option<&[f32]>,
    out: *mut f32,
    out_stride: usize,
    first: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: as for `tile`: K rows of `p` columns of `col` from column `j` over `C` columns
    // are readable, `rows` rows of `out` writable there; packed panels hold `MR * depth`
    // values each (zero rows past `rows`), and only rows below `rows` are stored.
    unsafe {
        let (rows, depth) = (w.rows, w.depth);
        let mut acc = [[_mm256_setzero_ps(); C]; G];
        if let Some(b) = bias {
            for (g, a) in acc.iter_mut().enumerate() {
                let mut lanes = [0f32; MR];
                for (r, lane) in lanes.iter_mut().enumerate() {
                    let row = (first + g) * MR + r;
                    if row < rows {
                        *lane = *b.get_unchecked(row);
                    }
                }
                *a = [_mm256_loadu_ps(lanes.as_ptr()); C];
            }
        }
        let wp = w.data.as_ptr().add(first * depth * MR);
        for k in 0..depth {
            let c = col.add(k * p + j);
            let mut x = [_mm256_setzero_ps(); C];
            for (i, v) in x.iter_mut().enumerate() {
                *v = _mm256_set1_ps(*c.add(i));
            }
            for (g, a) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(wp.add((g * depth + k) * MR));
                for i in 0..C {
                    a[i] = _mm256_fmadd_ps(wv, x[i], a[i]);
                }
            }
        }
        for (g, a) in acc.iter().enumerate() {
            for (i, v) in a.iter().enumerate() {
                let mut lanes = [0f32; MR];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
                for (r, &lane) in lanes.iter().enumerate() {
                    let row = (first + g) * MR + r;
                    if row < rows {
                        *out.add(row * out_stride + j + i) = lane;
                    }
                }
            }
        }
    }
}

/// Where [`tile`] reads `W [rows, depth]`: for row panel `panel`, a base pointer, each of its
/// [`MR`] rows' offset from it, and the step between consecutive depths.
trait WeightRows {
    fn rows(&self) -> usize;
    fn depth(&self) -> usize;
    /// # Safety
    /// `panel < rows.div_ceil(MR)`; every address `base + offset[r] + k * step` for `k < depth`
    /// must be readable.
    unsafe fn panel(&self, panel: usize) -> (*const f32, [usize; MR], usize);
}

impl WeightRows for PackedWeights {
    fn rows(&self) -> usize {
        self.rows
    }
    fn depth(&self) -> usize {
        self.depth
    }
    #[inline(always)]
    unsafe fn panel(&self, panel: usize) -> (*const f32, [usize; MR], usize) {
        // SAFETY: the panel lies inside `data` (panels x depth x MR values, zero-padded rows).
        let base = unsafe { self.data.as_ptr().add(panel * self.depth * MR) };
        (base, [0, 1, 2, 3, 4, 5, 6, 7], MR)
    }
}

/// A row-major `W [rows, depth]` read in place, rows `stride` apart (no packing): the rows past
/// the last in the last panel read the last row again, and their results are not stored.
struct StridedRows<'a> {
    w: &'a [f32],
    rows: usize,
    depth: usize,
    stride: usize,
}

impl WeightRows for StridedRows<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn depth(&self) -> usize {
        self.depth
    }
    #[inline(always)]
    unsafe fn panel(&self, panel: usize) -> (*const f32, [usize; MR], usize) {
        let mut offsets = [0; MR];
        for (r, o) in offsets.iter_mut().enumerate() {
            *o = (panel * MR + r).min(self.rows - 1) * self.stride;
        }
        (self.w.as_ptr(), offsets, 1)
    }
}

/// `out [rows, n] = W [rows, depth] · x [depth, n]` with `W` read in place, its rows `w_stride`
/// apart, and `x` and `out` row-major with rows of `n`: for a `W` used once, such as the
/// unfolded image in a kernel gradient (`dwᵀ = col · gyᵀ`), where packing it would cost as
/// much as the product. Returns false, touching nothing, when the CPU lacks AVX-512.
pub fn gemm_strided_w(
    w: &[f32],
    rows: usize,
    depth: usize,
    w_stride: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> bool {
    assert!(
        rows >= 1
            && w_stride >= depth
            && w.len() >= (rows - 1) * w_stride + depth
            && x.len() >= depth * n
            && out.len() >= rows * n,
        "gemm_strided_w: slices too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        let w = StridedRows {
            w,
            rows,
            depth,
            stride: w_stride,
        };
        // SAFETY: the CPU has AVX-512F; the asserts above cover every row (clamped to the
        // last), depth and column the tiles touch.
        unsafe { strided_kernel(&w, x.as_ptr(), n, out.as_mut_ptr()) };
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn strided_kernel(w: &StridedRows<'_>, x: *const f32, n: usize, out: *mut f32) {
    let mut j = 0;
    while j < n {
        let width = (n - j).min(NR);
        // SAFETY: see gemm_strided_w.
        unsafe {
            match width.div_ceil(16) {
                1 => tile::<1, _>(w, x, n, j, width, None, out, n),
                2 => tile::<2, _>(w, x, n, j, width, None, out, n),
                _ => tile::<3, _>(w, x, n, j, width, None, out, n),
            }
        }
        j += NR;
    }
}

/// One column tile of `width <= 16 V` columns starting at `j`, every row panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const V: usize, W: WeightRows>(
    w: &W,
    col: *const f32,
    p: usize,
    j: usize,
    width: usize,
    bias: Option<&[f32]>,
    out: *mut f32,
    out_stride: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees that K rows of `p` columns of `col`, and `rows` rows of
    // `out_stride` of `out`, are readable and writable from column `j` over `width` columns;
    // masked loads and stores touch nothing past `width`.
    unsafe {
        let (rows, depth) = (w.rows(), w.depth());
        let mut masks = [0 as __mmask16; V];
        for (v, m) in masks.iter_mut().enumerate() {
            let n = width.saturating_sub(16 * v).min(16);
            *m = ((1u32 << n) - 1) as __mmask16;
        }
        for panel in 0..rows.div_ceil(MR) {
            let (wp, row_step, k_step) = w.panel(panel);
            let mut acc = [[_mm512_setzero_ps(); V]; MR];
            if let Some(b) = bias {
                for (r, a) in acc.iter_mut().enumerate() {
                    let row = panel * MR + r;
                    if row < rows {
                        *a = [_mm512_set1_ps(*b.get_unchecked(row)); V];
                    }
                }
            }
            for k in 0..depth {
                let c = col.add(k * p + j);
                let mut v = [_mm512_setzero_ps(); V];
                for (i, x) in v.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[i], c.add(16 * i));
                }
                let wk = wp.add(k * k_step);
                for (r, a) in acc.iter_mut().enumerate() {
                    let s = _mm512_set1_ps(*wk.add(row_step[r]));
                    for i in 0..V {
                        a[i] = _mm512_fmadd_ps(s, v[i], a[i]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let row = panel * MR + r;
                if row < rows {
                    let o = out.add(row * out_stride + j);
                    for i in 0..V {
                        _mm512_mask_storeu_ps(o.add(16 * i), masks[i], a[i]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_kernel_equals_naive_product() {
        if !available() {
            eprintln!("skipping: no AVX-512 on this CPU");
            return;
        }
        for (rows, depth, stride, n) in [
            (9, 784, 790, 32),
            (288, 196, 196, 16),
            (17, 33, 40, 50),
            (1, 5, 5, 7),
            (8, 9, 9, 64),
        ] {
            let w: Vec<f32> = (0..(rows - 1) * stride + depth)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let x: Vec<f32> = (0..depth * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let mut out = vec![f32::NAN; rows * n];
            assert!(gemm_strided_w(&w, rows, depth, stride, &x, n, &mut out));
            for r in 0..rows {
                for c in 0..n {
                    let expect: f64 = (0..depth)
                        .map(|k| w[r * stride + k] as f64 * x[k * n + c] as f64)
                        .sum();
                    let got = out[r * n + c] as f64;
                    assert!(
                        (got - expect).abs() < 1e-4 * (1.0 + expect.abs()),
                        "({rows},{depth},{stride},{n}) [{r},{c}]: {got} vs {expect}"
                    );
                }
            }
        }
    }

    #[test]
    fn packed_kernel_equals_naive_product() {
        if !available() {
            eprintln!("skipping: no AVX-512 on this CPU");
            return;
        }
        for (o, k, p) in [
            (8, 9, 48),
            (3, 20, 50),
            (17, 33, 100),
            (64, 576, 196),
            (1, 5, 7),
            (200, 100, 50),
            (33, 17, 49),
            (41, 30, 52),
            (9, 4, 3),
            (25, 7, 101),
            (12, 3, 54),
        ] {
            let w: Vec<f32> = (0..o * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let col: Vec<f32> = (0..k * p)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let bias: Vec<f32> = (0..o).map(|i| i as f32 * 0.1).collect();
            let mut out = vec![f32::NAN; o * p];
            assert!(conv_gemm(
                &PackedWeights::new(&w, o, k),
                &col,
                p,
                Some(&bias),
                &mut out,
                p
            ));
            for r in 0..o {
                for c in 0..p {
                    let expect: f64 = bias[r] as f64
                        + (0..k)
                            .map(|i| w[r * k + i] as f64 * col[i * p + c] as f64)
                            .sum::<f64>();
                    let got = out[r * p + c] as f64;
                    assert!(
                        (got - expect).abs() < 1e-4 * (1.0 + expect.abs()),
                        "({o},{k},{p}) [{r},{c}]: {got} vs {expect}"
                    );
                }
            }
        }
    }
}
