//! Element-wise f32 loops of energy networks (Swish and its gradient), written so that the
//! compiler vectorises them, and compiled twice: for AVX-512 or AVX2+FMA when the CPU has them
//! (checked once at run time), and for the baseline target otherwise. The exponential is a
//! polynomial (relative error about 2e-7), since libm's `expf` does not vectorise.

/// `e^x` for f32, Cody-Waite range reduction and a degree-6 polynomial; branch-free.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // max/min rather than clamp, and no float-to-int cast: both keep the loop vectorisable.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 split in two so that n * ln2 is exact enough.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // 2^n: adding 1.5 * 2^23 puts the integer n in the low mantissa bits.
    let bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    f32::from_bits(bits.wrapping_add(127) << 23) * p
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `x * sigmoid(x)`.
#[inline(always)]
pub fn swish(x: f32) -> f32 {
    x * sigmoid(x)
}

/// `d swish / dx = s (1 + x (1 - s))`.
#[inline(always)]
pub fn swish_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Avx512,
    Avx2,
    Base,
}

fn level() -> Level {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Level::Avx2;
            }
        }
        Level::Base
    })
}

/// Defines a public function that runs `$body` compiled for the best available instruction set.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            match level() {
                // SAFETY: level() checked at run time that the CPU has these features.
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

multiversion! {
    /// `out[i] = swish(x[i]) + add`.
    pub fn swish_add(x: &[f32], add: f32, out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = swish(v) + add;
        }
    }
}

multiversion! {
    /// `g[i] *= swish'(x[i])`.
    pub fn mul_swish_grad(g: &mut [f32], x: &[f32]) {
        for (o, &v) in g.iter_mut().zip(x) {
            *o *= swish_grad(v);
        }
    }
}

multiversion! {
    /// `out[i] = scale * swish'(x[i])`.
    pub fn scaled_swish_grad(x: &[f32], scale: f32, out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = scale * swish_grad(v);
        }
    }
}

multiversion! {
    /// `sum_i swish(x[i])`, in eight interleaved partial sums.
    pub fn swish_sum(x: &[f32]) -> f32 {
        let mut acc = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += swish(v);
            }
        }
        acc.iter().sum::<f32>() + rest.iter().map(|&v| swish(v)).sum::<f32>()
    }
}

multiversion! {
    /// `out[i] = max(x[i], 0.2 x[i])`, leaky ReLU with slope 0.2.
    pub fn leaky_relu(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v.max(0.2 * v);
        }
    }
}

multiversion! {
    /// `g[i] *= 1` where `x[i] > 0`, else `0.2`: the leaky ReLU's gradient.
    pub fn mul_leaky_relu_grad(g: &mut [f32], x: &[f32]) {
        for (o, &v) in g.iter_mut().zip(x) {
            *o *= if v > 0.0 { 1.0 } else { 0.2 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(-200.0), exp(-87.0));
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn vector_loops_match_scalar_definitions() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let mut out = vec![0f32; x.len()];
        swish_add(&x, 0.5, &mut out);
        let mut g = vec![2f32; x.len()];
        mul_swish_grad(&mut g, &x);
        for i in 0..x.len() {
            let v = x[i] as f64;
            let s = 1.0 / (1.0 + (-v).exp());
            assert!((out[i] as f64 - (v * s + 0.5)).abs() < 1e-5);
            assert!((g[i] as f64 - 2.0 * s * (1.0 + v * (1.0 - s))).abs() < 1e-5);
        }
        let total: f64 = x
            .iter()
            .map(|&v| v as f64 / (1.0 + (-v as f64).exp()))
            .sum();
        assert!((swish_sum(&x) as f64 - total).abs() < 1e-3 * total.abs().max(1.0));
    }
}
