//! Sampling in eps-space: the step-size check, invariance of N(0, I) when the energy is zero,
//! the reparameterised energy's gradient against finite differences (autograd path in f64, the
//! fused IGEBM pass in f32), same-eps sampling, and mismatched shapes.

mod common;

use candle_core::{DType, Device, Tensor};
use ebm_core::{seeded_rng, Energy};
use ebm_nn::{Igebm, IgebmConfig};
use ebm_vaebm::{sample_same_eps, EpsLangevin, EpsLayout, Hierarchy, ReparamEnergy, Vaebm};

use common::{tiny_ebm, tiny_vae, values};

/// `E(x) = 0` for every image.
struct Zero;

impl Energy for Zero {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let b = x.dim(0)?;
        // Connected to x (so autograd has a graph), always zero.
        Ok((x.reshape((b, ()))?.sum(1)? * 0.0)?)
    }
}

#[test]
fn step_size_must_be_positive() {
    for bad in [0.0, -1e-4, f64::NAN, f64::INFINITY] {
        let err = EpsLangevin {
            step_size: bad,
            steps: 5,
        }
        .sampler()
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("invalid eps-space Langevin step_size: must be a finite number > 0"),
            "{err}"
        );
    }
    let err = EpsLangevin {
        step_size: 1e-3,
        steps: 0,
    }
    .sampler()
    .unwrap_err()
    .to_string();
    assert!(err.contains("steps"), "{err}");
    // The model's sampler refuses it too, before any work.
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 0);
    let model = Vaebm::new(vae, tiny_ebm(DType::F32, 0)).unwrap();
    let eps = model
        .initial_eps(2, &Device::Cpu, &mut seeded_rng(0))
        .unwrap();
    let err = model
        .sample(
            &eps,
            &EpsLangevin {
                step_size: -1.0,
                steps: 3,
            },
            &mut seeded_rng(0),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("step_size"), "{err}");
}

/// Mean and variance of every value of a tensor.
fn moments(t: &Tensor) -> (f64, f64) {
    let v = values(t);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

#[test]
fn zero_energy_leaves_the_standard_normal_invariant() {
    // With E = 0 the eps-space energy is ||eps||^2 / 2, whose Langevin chain (step h) has the
    // stationary law N(0, 1 / (1 - h / 4)) per coordinate: 1.0256 for h = 0.1.
    let vae = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F32, 1)
        .frozen()
        .unwrap();
    let sampler = EpsLangevin {
        step_size: 0.1,
        steps: 30,
    };
    let layout = EpsLayout::of(&vae);
    let mut rng = seeded_rng(2);
    let chains = 1000;
    let eps0 = layout
        .standard_normal(chains, DType::F32, &Device::Cpu, &mut rng)
        .unwrap();
    let out = sample_same_eps(&vae, &Zero, &eps0, &sampler, &mut rng).unwrap();
    let stationary = 1.0 / (1.0 - 0.1 / 4.0);
    // 1000 x 68 values: standard errors about 0.004 (mean) and 0.006 (variance).
    let (mean, var) = moments(&out.eps_end);
    assert!(mean.abs() < 0.015, "mean {mean}");
    assert!((var - stationary).abs() < 0.025, "variance {var}");
    // The latent part alone, too (it is what the decoder sees).
    let (mz, vz) = moments(&out.eps_end.narrow(1, 0, layout.latent).unwrap());
    assert!(
        mz.abs() < 0.05 && (vz - stationary).abs() < 0.08,
        "eps_z: {mz}, {vz}"
    );
    // The chain moved: it is not the start.
    assert_ne!(values(&out.eps_end), values(&eps0));

    // From a start far away it reaches the same law: mean decays as (1 - h / 2)^steps.
    let far =
        (Tensor::ones((chains, layout.total()), DType::F32, &Device::Cpu).unwrap() * 3.0).unwrap();
    let long = EpsLangevin {
        step_size: 0.1,
        steps: 100,
    };
    let out = sample_same_eps(&vae, &Zero, &far, &long, &mut rng).unwrap();
    let (mean, var) = moments(&out.eps_end);
    assert!(
        (mean - 3.0 * 0.95f64.powi(100)).abs() < 0.015,
        "mean {mean}"
    );
    assert!((var - stationary).abs() < 0.03, "variance {var}");
}

#[test]
fn reparameterised_energy_gradient_matches_finite_differences() {
    let vae = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F64, 3)
        .frozen()
        .unwrap();
    let ebm = tiny_ebm(DType::F64, 4).frozen().unwrap();
    let target = ReparamEnergy::new(&vae, &ebm).unwrap();
    let layout = target.layout().clone();
    let mut rng = seeded_rng(5);
    let eps = layout
        .standard_normal(2, DType::F64, &Device::Cpu, &mut rng)
        .unwrap();
    let (e, grad) = target.energy_and_grad(&eps).unwrap();
    // The energies agree with the plain evaluation.
    let direct = values(&target.energy(&eps).unwrap());
    for (a, b) in values(&e).iter().zip(&direct) {
        assert!((a - b).abs() < 1e-10, "{a} vs {b}");
    }
    // Central differences on every latent and on a spread of eps_x entries, in both rows.
    let base = values(&eps);
    let grad = values(&grad);
    let total = layout.total();
    let h = 1e-6;
    let mut checked = 0;
    for row in 0..2 {
        for j in (0..layout.latent).chain((layout.latent..total).step_by(7)) {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[row * total + j] += delta;
                let t = Tensor::from_vec(v, (2, total), &Device::Cpu).unwrap();
                values(&target.energy(&t).unwrap()).iter().sum::<f64>()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let analytic = grad[row * total + j];
            let err = (analytic - numeric).abs() / numeric.abs().max(1.0);
            assert!(err < 1e-6, "row {row}, entry {j}: {analytic} vs {numeric}");
            checked += 1;
        }
    }
    assert!(checked > 20);
}

#[test]
fn fused_f32_gradient_agrees_with_the_f64_autograd_one() {
    // Same seeds give the same weights in both dtypes; the f32 frozen IGEBM takes the fused
    // CPU pass for dE/dx, the f64 one autograd.
    let vae32 = tiny_vae(Hierarchy::Single, DType::F32, 6).frozen().unwrap();
    let vae64 = tiny_vae(Hierarchy::Single, DType::F64, 6).frozen().unwrap();
    let ebm32 = tiny_ebm(DType::F32, 7).frozen().unwrap();
    let ebm64 = tiny_ebm(DType::F64, 7).frozen().unwrap();
    let t32 = ReparamEnergy::new(&vae32, &ebm32).unwrap();
    let t64 = ReparamEnergy::new(&vae64, &ebm64).unwrap();
    let eps = t64
        .layout()
        .standard_normal(3, DType::F64, &Device::Cpu, &mut seeded_rng(8))
        .unwrap();
    let (e32, g32) = t32
        .energy_and_grad(&eps.to_dtype(DType::F32).unwrap())
        .unwrap();
    let (e64, g64) = t64.energy_and_grad(&eps).unwrap();
    for (a, b) in values(&e32).iter().zip(values(&e64)) {
        assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
    }
    let (g32, g64) = (values(&g32), values(&g64));
    let scale = g64.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (a, b) in g32.iter().zip(&g64) {
        assert!((a - b).abs() < 1e-4 * scale.max(1.0), "{a} vs {b}");
    }
}

#[test]
fn vae_and_vaebm_samples_start_from_the_same_eps() {
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 9);
    let model = Vaebm::new(vae, tiny_ebm(DType::F32, 10)).unwrap();
    let mut rng = seeded_rng(11);
    let eps = model.initial_eps(5, &Device::Cpu, &mut rng).unwrap();
    let sampler = EpsLangevin {
        step_size: 1e-2,
        steps: 4,
    };
    let out = model.sample(&eps, &sampler, &mut rng).unwrap();
    assert_eq!(out.energy_trace.len(), 4);
    assert_eq!(values(&out.eps_start), values(&eps));
    // The VAE's samples are exactly the decoder at the starting eps.
    let layout = model.layout();
    let (eps_z, eps_x) = layout.split(&eps).unwrap();
    assert_eq!(
        values(&out.vae_mean),
        values(&model.vae().decode_eps(&eps_z).unwrap())
    );
    assert_eq!(
        values(&out.vae_sample),
        values(&model.vae().transform(&eps_z, &eps_x).unwrap())
    );
    for t in [
        &out.vae_mean,
        &out.vaebm_mean,
        &out.vae_sample,
        &out.vaebm_sample,
    ] {
        assert_eq!(t.dims(), &[5, 1, 8, 8]);
    }
    assert_ne!(values(&out.vaebm_mean), values(&out.vae_mean));
    // Same seed, same chains.
    let again = model.sample(&eps, &sampler, &mut seeded_rng(11)).unwrap();
    let first = model.sample(&eps, &sampler, &mut seeded_rng(11)).unwrap();
    assert_eq!(values(&again.eps_end), values(&first.eps_end));
}

#[test]
fn energies_of_another_image_size_are_rejected() {
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 0);
    let big = Igebm::new(
        &IgebmConfig::small(1, 16, 4),
        &Device::Cpu,
        &mut seeded_rng(0),
    )
    .unwrap();
    let err = ReparamEnergy::new(&vae, &big).err().unwrap().to_string();
    assert!(
        err.contains("[1, 16, 16]") && err.contains("[1, 8, 8]"),
        "{err}"
    );
    let err = Vaebm::new(vae.clone(), big).unwrap_err().to_string();
    assert!(
        err.starts_with("EBM and VAE: the EBM takes images of shape [1, 16, 16] (image_size 16), the VAE makes [1, 8, 8]"),
        "{err}"
    );
    let colour = Igebm::new(
        &IgebmConfig::small(3, 8, 4),
        &Device::Cpu,
        &mut seeded_rng(0),
    )
    .unwrap();
    assert!(Vaebm::new(vae.clone(), colour).is_err());
    let conditional = Igebm::new(
        &IgebmConfig::small(1, 8, 4).conditional(3),
        &Device::Cpu,
        &mut seeded_rng(0),
    )
    .unwrap();
    let err = Vaebm::new(vae, conditional).unwrap_err().to_string();
    assert!(err.contains("unconditional"), "{err}");
}
