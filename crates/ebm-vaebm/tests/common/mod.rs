//! Tiny models and synthetic data shared by the integration tests.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use ebm_core::Rng;
use ebm_nn::{Activation, Igebm, IgebmConfig};
use ebm_vaebm::{Hierarchy, Likelihood, Vae, VaeConfig};

/// An 8x8 grey VAE: two levels (8 -> 4 -> 2), widths 2 and 3, 5 hidden units, 2 latents per group.
pub fn tiny_vae_config(hierarchy: Hierarchy, likelihood: Likelihood) -> VaeConfig {
    VaeConfig {
        channels: 1,
        image_size: 8,
        widths: vec![2, 3],
        hidden: 5,
        latent_dim: 2,
        hierarchy,
        activation: Activation::Swish,
        likelihood,
    }
}

/// A learned per-pixel likelihood starting well above its floor (so the floor has no effect).
pub fn learned() -> Likelihood {
    Likelihood::LearnedGaussian {
        init_sigma: 0.3,
        min_sigma: 0.01,
    }
}

/// A tiny VAE of the given dtype.
pub fn tiny_vae(hierarchy: Hierarchy, dtype: DType, seed: u64) -> Vae {
    let mut rng = ebm_core::seeded_rng(seed);
    Vae::with_dtype(
        &tiny_vae_config(hierarchy, learned()),
        &Device::Cpu,
        dtype,
        &mut rng,
    )
    .expect("tiny VAE")
}

/// A tiny 8x8 IGEBM energy (width 4, no spectral norm).
pub fn tiny_ebm_config() -> IgebmConfig {
    let mut c = IgebmConfig::small(1, 8, 4);
    c.spectral_norm = false;
    c
}

/// A tiny IGEBM of the given dtype.
pub fn tiny_ebm(dtype: DType, seed: u64) -> Igebm {
    let mut rng = ebm_core::seeded_rng(seed);
    Igebm::with_dtype(&tiny_ebm_config(), &Device::Cpu, dtype, &mut rng).expect("tiny IGEBM")
}

/// `n` 8x8 "images" in [0, 1]: a bright square at a random place on a dark background, with a
/// little noise.
pub fn squares(n: usize, rng: &mut Rng) -> Tensor {
    use rand::Rng as _;
    let mut v = vec![0f32; n * 64];
    for i in 0..n {
        let (r, c) = (rng.random_range(0..5), rng.random_range(0..5));
        for y in 0..8 {
            for x in 0..8 {
                let inside = (r..r + 3).contains(&y) && (c..c + 3).contains(&x);
                let base = if inside { 0.9 } else { 0.05 };
                v[i * 64 + y * 8 + x] = base + 0.05 * rng.random::<f32>();
            }
        }
    }
    Tensor::from_vec(v, (n, 1, 8, 8), &Device::Cpu).expect("squares")
}

/// Every value of a tensor as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}
