//! The latent samplers against closed-form answers: the prior chain with `f = 0` samples
//! `N(0, sigma^2 I)`, with a Gaussian energy it samples the product of the two Gaussians (which
//! pins the sign convention `E = -f`), and the posterior chain on a linear generator samples the
//! Gaussian posterior of factor analysis. Then seeds, and bad settings and inputs.

use candle_core::{DType, Device, Tensor};
use ebm_core::analytic::Gaussian;
use ebm_core::{noise::normal, seeded_rng, Energy};
use ebm_latent::{
    posterior_langevin, prior_langevin, Generator, GeneratorConfig, LatentLangevin, LinearDecoder,
};

/// Per-dimension means and the covariance matrix of samples `[N, D]`.
fn moments(z: &Tensor) -> (Vec<f64>, Vec<Vec<f64>>) {
    let rows = z.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let (n, d) = (rows.len() as f64, rows[0].len());
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let cov = (0..d)
        .map(|a| {
            (0..d)
                .map(|b| {
                    rows.iter()
                        .map(|r| (r[a] - mean[a]) * (r[b] - mean[b]))
                        .sum::<f64>()
                        / (n - 1.0)
                })
                .collect()
        })
        .collect();
    (mean, cov)
}

fn start(n: usize, d: usize, seed: u64) -> Tensor {
    normal(&mut seeded_rng(seed), (n, d), DType::F64, &Device::Cpu).unwrap()
}

fn chain(steps: usize, step_size: f64) -> LatentLangevin {
    LatentLangevin {
        steps,
        step_size,
        noise: true,
    }
}

#[test]
fn prior_chain_without_energy_samples_the_reference_gaussian() {
    // z <- (1 - s^2 / (2 sigma^2)) z + s eps: stationary variance sigma^2 / (1 - s^2 / (4 sigma^2))
    // = 2.26 for sigma = 1.5, s = 0.2; 800 steps shrink the start's influence by 0.991^800 < 1e-3.
    let sigma = 1.5;
    let z = prior_langevin(
        None,
        &start(4000, 2, 1),
        sigma,
        &chain(800, 0.2),
        &mut seeded_rng(2),
    )
    .unwrap();
    let (mean, cov) = moments(&z);
    // Standard errors: 0.024 for the means, 0.036 for the variances (8,000 values).
    for j in 0..2 {
        assert!(mean[j].abs() < 0.08, "mean {mean:?}");
        assert!((cov[j][j] - 2.26).abs() < 0.12, "variance {cov:?}");
    }
    assert!(cov[0][1].abs() < 0.12, "covariance {cov:?}");
}

#[test]
fn prior_chain_with_a_gaussian_energy_samples_the_product() {
    // exp(-E) with E = (z - m)^2 / (2 v), times N(0, 1): precision 1/v + 1, mean (m/v) / (1/v + 1).
    // For m = (1, -2), v = (0.5, 2): variances (1/3, 2/3), means (2/3, -2/3). A sign error in
    // the energy's gradient would push the chains away from m instead.
    let energy = Gaussian::new(vec![1.0, -2.0], vec![0.5, 2.0]).unwrap();
    let z = prior_langevin(
        Some(&energy as &dyn Energy),
        &start(4000, 2, 3),
        1.0,
        &chain(600, 0.1),
        &mut seeded_rng(4),
    )
    .unwrap();
    let (mean, cov) = moments(&z);
    let (want_mean, want_var) = ([2.0 / 3.0, -2.0 / 3.0], [1.0 / 3.0, 2.0 / 3.0]);
    for j in 0..2 {
        assert!((mean[j] - want_mean[j]).abs() < 0.05, "mean {mean:?}");
        assert!(
            (cov[j][j] - want_var[j]).abs() < 0.06 * want_var[j] + 0.01,
            "variance {cov:?}"
        );
    }
}

/// Inverse of a symmetric 2x2 matrix.
fn inv2(a: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    [
        [a[1][1] / det, -a[0][1] / det],
        [-a[1][0] / det, a[0][0] / det],
    ]
}

#[test]
fn posterior_chain_on_a_linear_generator_samples_the_gaussian_posterior() {
    // x = W z + b + N(0, sx^2 I), z ~ N(0, I) (times exp(-E) for a Gaussian energy): the
    // posterior precision is W^T W / sx^2 + I (+ diag(1/v)), its mean
    // cov (W^T (x - b) / sx^2 (+ m / v)).
    let w = [[1.0, 0.5], [-0.3, 0.8], [0.2, -0.6]];
    let b = [0.1, -0.2, 0.3];
    let x = [0.7, 0.4, -0.5];
    let sx: f64 = 0.5;
    let n = 4000;
    let decoder = LinearDecoder::new(
        Tensor::new(&w, &Device::Cpu).unwrap(),
        Tensor::new(&b, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let xs = Tensor::new(&x, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .repeat((n, 1))
        .unwrap();
    let energy = Gaussian::new(vec![0.5, -1.0], vec![0.8, 1.5]).unwrap();
    for with_energy in [false, true] {
        let mut precision = [[0.0; 2]; 2];
        let mut rhs = [0.0; 2];
        for a in 0..2 {
            for c in 0..2 {
                precision[a][c] = (0..3).map(|i| w[i][a] * w[i][c]).sum::<f64>() / sx.powi(2)
                    + (a == c) as u8 as f64;
            }
            rhs[a] = (0..3).map(|i| w[i][a] * (x[i] - b[i])).sum::<f64>() / sx.powi(2);
            if with_energy {
                precision[a][a] += 1.0 / energy.variance()[a];
                rhs[a] += energy.mean()[a] / energy.variance()[a];
            }
        }
        let cov = inv2(precision);
        let mean = [
            cov[0][0] * rhs[0] + cov[0][1] * rhs[1],
            cov[1][0] * rhs[0] + cov[1][1] * rhs[1],
        ];
        let e = with_energy.then_some(&energy as &dyn Energy);
        let z = posterior_langevin(
            e,
            &decoder,
            &xs,
            &start(n, 2, 5),
            1.0,
            sx,
            &chain(800, 0.07),
            &mut seeded_rng(6),
        )
        .unwrap();
        let (got_mean, got_cov) = moments(&z);
        for a in 0..2 {
            assert!(
                (got_mean[a] - mean[a]).abs() < 0.03,
                "energy {with_energy}: mean {got_mean:?}, expected {mean:?}"
            );
            for c in 0..2 {
                assert!(
                    (got_cov[a][c] - cov[a][c]).abs() < 0.08 * cov[a][a].max(cov[c][c]),
                    "energy {with_energy}: covariance {got_cov:?}, expected {cov:?}"
                );
            }
        }
    }
}

fn tiny_generator() -> Generator {
    Generator::new(
        &GeneratorConfig::mnist_like(4, 2),
        &Device::Cpu,
        &mut seeded_rng(0),
    )
    .unwrap()
    .frozen()
}

#[test]
fn same_seed_same_chains() {
    let g = tiny_generator();
    let x = normal(&mut seeded_rng(9), (3, 1, 28, 28), DType::F32, &Device::Cpu)
        .unwrap()
        .tanh()
        .unwrap();
    let z0 = normal(&mut seeded_rng(10), (3, 4), DType::F32, &Device::Cpu).unwrap();
    let energy = Gaussian::isotropic(vec![0.0; 4], 2.0).unwrap();
    let run = |seed: u64| {
        let mut rng = seeded_rng(seed);
        let a = prior_langevin(Some(&energy), &z0, 1.0, &chain(5, 0.4), &mut rng).unwrap();
        let b = posterior_langevin(
            Some(&energy),
            &g,
            &x,
            &z0,
            1.0,
            0.3,
            &chain(5, 0.1),
            &mut rng,
        )
        .unwrap();
        (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        )
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn bad_settings_and_inputs_are_errors() {
    let g = tiny_generator();
    let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let z0 = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    let mut rng = seeded_rng(0);
    for bad in [0.0, -0.1, f64::NAN] {
        let err = prior_langevin(None, &z0, 1.0, &chain(3, bad), &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid prior_langevin.step_size: must be a finite number > 0"),
            "{err}"
        );
        let err = posterior_langevin(None, &g, &x, &z0, 1.0, 0.3, &chain(3, bad), &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid posterior_langevin.step_size"),
            "{err}"
        );
    }
    let err = prior_langevin(None, &z0, 1.0, &chain(0, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prior_langevin.steps"), "{err}");
    let err = prior_langevin(None, &z0, -1.0, &chain(3, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid prior_sigma"), "{err}");
    let err = posterior_langevin(None, &g, &x, &z0, 1.0, 0.0, &chain(3, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid likelihood_sigma"), "{err}");
    // Images that do not fit the generator.
    let big = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = posterior_langevin(None, &g, &big, &z0, 1.0, 0.3, &chain(3, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "images x: expected shape [batch >= 1, 1, 28, 28], got [2, 1, 32, 32]"
    );
    // Latents of the wrong size, or too few of them.
    let z_bad = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
    let err = posterior_langevin(None, &g, &x, &z_bad, 1.0, 0.3, &chain(3, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("posterior chain start z0: expected shape [batch >= 1, 4]"),
        "{err}"
    );
    let z_few = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
    let err = posterior_langevin(None, &g, &x, &z_few, 1.0, 0.3, &chain(3, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has 1 latents for 2 images"), "{err}");
    // A NaN start.
    let z_nan = Tensor::new(&[[f32::NAN, 0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let err = prior_langevin(None, &z_nan, 1.0, &chain(3, 0.1), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("NaN"), "{err}");
}
