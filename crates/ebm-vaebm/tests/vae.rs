//! The VAE: closed-form KL and likelihood terms (against Monte Carlo and the formulas), gradients
//! of every layer and of the ELBO against finite differences, shapes, determinism, bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng};
use ebm_nn::Trainable;
use ebm_ops::gradcheck::gradient_errors;
use ebm_vaebm::{
    gaussian_log_likelihood, kl_normal, kl_standard_normal, Hierarchy, Likelihood, Vae, VaeConfig,
};

use common::{learned, squares, tiny_vae, tiny_vae_config, values};

#[test]
fn kl_terms_match_the_closed_form_and_monte_carlo() {
    let dev = Device::Cpu;
    let mu = Tensor::new(&[[0.5f64, -1.0, 0.0]], &dev).unwrap();
    let lv = Tensor::new(&[[0.2f64, -0.7, 1.1]], &dev).unwrap();
    // By hand: 0.5 * sum(exp(lv) + mu^2 - 1 - lv).
    let by_hand: f64 = [(0.5f64, 0.2f64), (-1.0, -0.7), (0.0, 1.1)]
        .iter()
        .map(|(m, l)| 0.5 * (l.exp() + m * m - 1.0 - l))
        .sum();
    let kl = values(&kl_standard_normal(&mu, &lv).unwrap())[0];
    assert!((kl - by_hand).abs() < 1e-12, "{kl} vs {by_hand}");
    // The general form with a standard prior is the same number; KL(q || q) = 0.
    let zeros = mu.zeros_like().unwrap();
    let general = values(&kl_normal(&mu, &lv, &zeros, &zeros).unwrap())[0];
    assert!((general - by_hand).abs() < 1e-12);
    assert!(values(&kl_normal(&mu, &lv, &mu, &lv).unwrap())[0].abs() < 1e-12);

    // Monte Carlo: mean of log q(z) - log p(z) over z ~ q.
    let mu_p = Tensor::new(&[[0.3f64, 0.2, -0.4]], &dev).unwrap();
    let lv_p = Tensor::new(&[[-0.3f64, 0.4, 0.0]], &dev).unwrap();
    let analytic = values(&kl_normal(&mu, &lv, &mu_p, &lv_p).unwrap())[0];
    let n = 200_000;
    let eps = noise::normal(&mut seeded_rng(3), (n, 3), DType::F64, &dev).unwrap();
    let z = eps
        .broadcast_mul(&(&lv * 0.5).unwrap().exp().unwrap())
        .unwrap()
        .broadcast_add(&mu)
        .unwrap();
    let half_lv = |lv: &Tensor| (lv * 0.5).unwrap();
    let log_q =
        gaussian_log_likelihood(&z, &mu.broadcast_as((n, 3)).unwrap(), &half_lv(&lv)).unwrap();
    let log_p =
        gaussian_log_likelihood(&z, &mu_p.broadcast_as((n, 3)).unwrap(), &half_lv(&lv_p)).unwrap();
    let mc = values(&(log_q - log_p).unwrap().mean_all().unwrap())[0];
    // The standard error of the estimate is about 0.003 here.
    assert!(
        (mc - analytic).abs() < 0.015,
        "Monte Carlo {mc} vs closed form {analytic}"
    );
}

#[test]
fn gaussian_log_likelihood_is_the_normal_density() {
    let dev = Device::Cpu;
    let x = Tensor::new(&[[1.0f64, 2.0], [0.0, -1.0]], &dev).unwrap();
    let mean = Tensor::new(&[[0.5f64, 2.0], [0.0, 1.0]], &dev).unwrap();
    let log_sigma = Tensor::new(&[0.1f64, -0.5], &dev).unwrap();
    let ll = values(&gaussian_log_likelihood(&x, &mean, &log_sigma).unwrap());
    let density = |x: f64, m: f64, s: f64| {
        (-(x - m).powi(2) / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
    };
    let (s0, s1) = (0.1f64.exp(), (-0.5f64).exp());
    let expected = [
        density(1.0, 0.5, s0).ln() + density(2.0, 2.0, s1).ln(),
        density(0.0, 0.0, s0).ln() + density(-1.0, 1.0, s1).ln(),
    ];
    for (a, b) in ll.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

#[test]
fn kl_and_likelihood_gradients_match_finite_differences() {
    let mut rng = seeded_rng(1);
    let t = |rng: &mut ebm_core::Rng| noise::normal(rng, (2, 3), DType::F64, &Device::Cpu).unwrap();
    let inputs = [t(&mut rng), t(&mut rng), t(&mut rng), t(&mut rng)];
    let errors = gradient_errors(
        |v| {
            kl_normal(&v[0], &v[1], &v[2], &v[3])
                .map_err(msg)?
                .sum_all()
        },
        &inputs,
        1e-6,
    )
    .unwrap();
    for e in errors {
        assert!(e.max_rel < 1e-6, "{e:?}");
    }
    let errors = gradient_errors(
        |v| {
            gaussian_log_likelihood(&v[0], &v[1], &v[2])
                .map_err(msg)?
                .sum_all()
        },
        &[
            inputs[0].clone(),
            inputs[1].clone(),
            inputs[2].narrow(0, 0, 1).unwrap(),
        ],
        1e-6,
    )
    .unwrap();
    for e in errors {
        assert!(e.max_rel < 1e-6, "{e:?}");
    }
}

fn msg(e: ebm_vaebm::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

#[test]
fn elbo_gradients_with_respect_to_images_and_noise_match_finite_differences() {
    for hierarchy in [Hierarchy::Single, Hierarchy::TopDown { groups: 2 }] {
        let vae = tiny_vae(hierarchy.clone(), DType::F64, 7);
        let mut rng = seeded_rng(2);
        let x = squares(2, &mut rng).to_dtype(DType::F64).unwrap();
        let d = vae.config().total_latent_dim();
        let eps = noise::normal(&mut rng, (2, d), DType::F64, &Device::Cpu).unwrap();
        let errors = gradient_errors(
            |v| vae.elbo_with_eps(&v[0], &v[1]).map_err(msg)?.elbo.sum_all(),
            &[x, eps],
            1e-6,
        )
        .unwrap();
        for (i, e) in errors.iter().enumerate() {
            assert!(e.max_rel < 1e-5, "{hierarchy:?} input {i}: {e:?}");
        }
    }
}

#[test]
fn reparameterised_sample_gradients_match_finite_differences() {
    // T(eps_z, eps_x) = mean(z(eps_z)) + sigma_x eps_x, through the prior hierarchy, the dense
    // layers, the stride-2 transposed convolutions and the sigmoid output.
    let vae = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F64, 8);
    let mut rng = seeded_rng(5);
    let d = vae.config().total_latent_dim();
    let eps_z = noise::normal(&mut rng, (2, d), DType::F64, &Device::Cpu).unwrap();
    let eps_x = noise::normal(&mut rng, (2, 1, 8, 8), DType::F64, &Device::Cpu).unwrap();
    let weights = noise::normal(&mut rng, (2, 1, 8, 8), DType::F64, &Device::Cpu).unwrap();
    let errors = gradient_errors(
        |v| (vae.transform(&v[0], &v[1]).map_err(msg)? * &weights)?.sum_all(),
        &[eps_z, eps_x],
        1e-6,
    )
    .unwrap();
    for (i, e) in errors.iter().enumerate() {
        assert!(e.max_rel < 1e-5, "input {i}: {e:?}");
    }
}

/// Central differences on a few elements of every parameter, against autograd.
fn check_parameter_gradients(vae: &Vae, objective: &dyn Fn() -> Tensor, tol: f64) {
    let grads = objective().backward().unwrap();
    let h = 1e-6;
    for (name, var) in vae.params().iter() {
        let base = values(var.as_tensor());
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => values(g),
            None => vec![0.0; base.len()],
        };
        let picks = [0, base.len() / 2, base.len() - 1];
        for &j in &picks {
            let eval = |delta: f64| {
                let mut shifted = base.clone();
                shifted[j] += delta;
                var.set(&Tensor::from_vec(shifted, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let v = objective().to_scalar::<f64>().unwrap();
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                v
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let err = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
            assert!(
                err < tol,
                "{name}[{j}]: autograd {} vs finite differences {numeric}",
                analytic[j]
            );
        }
    }
}

#[test]
fn elbo_parameter_gradients_match_finite_differences() {
    for (hierarchy, likelihood) in [
        (Hierarchy::Single, learned()),
        (
            Hierarchy::TopDown { groups: 2 },
            Likelihood::FixedGaussian { sigma: 0.2 },
        ),
    ] {
        let cfg = tiny_vae_config(hierarchy, likelihood);
        let vae = Vae::with_dtype(&cfg, &Device::Cpu, DType::F64, &mut seeded_rng(4)).unwrap();
        let mut rng = seeded_rng(9);
        let x = squares(3, &mut rng).to_dtype(DType::F64).unwrap();
        let eps = noise::normal(
            &mut rng,
            (3, cfg.total_latent_dim()),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
        let objective = || vae.elbo_with_eps(&x, &eps).unwrap().elbo.sum_all().unwrap();
        check_parameter_gradients(&vae, &objective, 1e-5);
    }
}

#[test]
fn elbo_terms_are_consistent() {
    let vae = tiny_vae(Hierarchy::TopDown { groups: 3 }, DType::F64, 3);
    let mut rng = seeded_rng(6);
    let x = squares(4, &mut rng).to_dtype(DType::F64).unwrap();
    let terms = vae.elbo(&x, &mut rng).unwrap();
    assert_eq!(terms.elbo.dims(), &[4]);
    assert_eq!(terms.kl_groups.len(), 3);
    assert_eq!(terms.mean.dims(), &[4, 1, 8, 8]);
    let (elbo, ll, kl) = (
        values(&terms.elbo),
        values(&terms.log_likelihood),
        values(&terms.kl),
    );
    let groups: Vec<Vec<f64>> = terms.kl_groups.iter().map(values).collect();
    for i in 0..4 {
        assert!((elbo[i] - (ll[i] - kl[i])).abs() < 1e-9);
        let sum: f64 = groups.iter().map(|g| g[i]).sum();
        assert!((kl[i] - sum).abs() < 1e-9);
        assert!(groups.iter().all(|g| g[i] >= -1e-12), "a KL is negative");
    }
    // The likelihood is the Gaussian density at the returned mean.
    let direct =
        values(&gaussian_log_likelihood(&x, &terms.mean, &vae.log_sigma_x().unwrap()).unwrap());
    for (a, b) in ll.iter().zip(direct) {
        assert!((a - b).abs() < 1e-9);
    }
    // Single level: the KL is analytic given x, so it does not depend on the posterior noise.
    let single = tiny_vae(Hierarchy::Single, DType::F64, 3);
    let a = values(&single.elbo(&x, &mut seeded_rng(1)).unwrap().kl);
    let b = values(&single.elbo(&x, &mut seeded_rng(2)).unwrap().kl);
    assert_eq!(a, b);
    // Decoder means are probabilities; reconstructions have the image shape.
    let m = values(
        &single
            .decode_eps(&Tensor::zeros((2, 2), DType::F64, &Device::Cpu).unwrap())
            .unwrap(),
    );
    assert!(m.iter().all(|v| *v > 0.0 && *v < 1.0));
    assert_eq!(single.reconstruct(&x).unwrap().dims(), &[4, 1, 8, 8]);
}

#[test]
fn fixed_and_learned_sigma() {
    let fixed = Vae::new(
        &tiny_vae_config(Hierarchy::Single, Likelihood::FixedGaussian { sigma: 0.25 }),
        &Device::Cpu,
        &mut seeded_rng(0),
    )
    .unwrap();
    let s = values(&fixed.sigma_x().unwrap());
    assert_eq!(s.len(), 64);
    assert!(s.iter().all(|v| (v - 0.25).abs() < 1e-6));
    assert!(fixed.params().iter().all(|(n, _)| !n.contains("log_sigma")));
    // A learned sigma never goes below its floor.
    let cfg = tiny_vae_config(
        Hierarchy::Single,
        Likelihood::LearnedGaussian {
            init_sigma: 0.1,
            min_sigma: 0.05,
        },
    );
    let learned = Vae::new(&cfg, &Device::Cpu, &mut seeded_rng(0)).unwrap();
    let var = learned.params().get("decoder.log_sigma").unwrap();
    var.set(&(var.as_tensor().ones_like().unwrap() * -10.0).unwrap())
        .unwrap();
    let s = values(&learned.sigma_x().unwrap());
    assert!(s.iter().all(|v| (v - 0.05).abs() < 1e-6), "{s:?}");
}

#[test]
fn same_seed_same_model_and_same_elbo() {
    let a = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F32, 11);
    let b = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F32, 11);
    let x = squares(3, &mut seeded_rng(0));
    let ea = values(&a.elbo(&x, &mut seeded_rng(5)).unwrap().elbo);
    let eb = values(&b.elbo(&x, &mut seeded_rng(5)).unwrap().elbo);
    assert_eq!(ea, eb);
    let est_a = values(&a.elbo_estimate(&x, 3, 2, &mut seeded_rng(5)).unwrap());
    let est_b = values(&b.elbo_estimate(&x, 3, 2, &mut seeded_rng(5)).unwrap());
    assert_eq!(est_a, est_b);
    // The frozen copy computes the same numbers and holds no parameters.
    let frozen = a.frozen().unwrap();
    assert!(frozen.is_frozen() && frozen.params().is_empty());
    let ef = values(&frozen.elbo(&x, &mut seeded_rng(5)).unwrap().elbo);
    assert_eq!(ea, ef);
}

#[test]
fn bad_configs_and_inputs_are_clear_errors() {
    let base = tiny_vae_config(Hierarchy::Single, learned());
    let check = |cfg: VaeConfig, needle: &str| {
        let err = Vae::new(&cfg, &Device::Cpu, &mut seeded_rng(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "`{err}` lacks `{needle}`");
        assert!(err.starts_with("invalid VAE config"), "{err}");
    };
    check(
        VaeConfig {
            image_size: 10,
            ..base.clone()
        },
        "not divisible by 2^2",
    );
    check(
        VaeConfig {
            widths: vec![],
            ..base.clone()
        },
        "widths",
    );
    check(
        VaeConfig {
            widths: vec![2, 0],
            ..base.clone()
        },
        "widths",
    );
    check(
        VaeConfig {
            latent_dim: 0,
            ..base.clone()
        },
        "latent_dim",
    );
    check(
        VaeConfig {
            hierarchy: Hierarchy::TopDown { groups: 0 },
            ..base.clone()
        },
        "at least 1 group",
    );
    check(
        VaeConfig {
            likelihood: Likelihood::FixedGaussian { sigma: 0.0 },
            ..base.clone()
        },
        "sigma must be a finite number > 0",
    );
    check(
        VaeConfig {
            likelihood: Likelihood::LearnedGaussian {
                init_sigma: 0.01,
                min_sigma: 0.1,
            },
            ..base.clone()
        },
        "init_sigma",
    );

    let vae = Vae::new(&base, &Device::Cpu, &mut seeded_rng(0)).unwrap();
    let wrong = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let err = vae.encode(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("VAE input: expected shape [batch >= 1, 1, 8, 8]"),
        "{err}"
    );
    let nan = Tensor::new(&[f32::NAN], &Device::Cpu)
        .unwrap()
        .broadcast_as((2, 1, 8, 8))
        .unwrap()
        .contiguous()
        .unwrap();
    let err = vae
        .elbo_estimate(&nan, 1, 4, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("NaN"), "{err}");
    let err = vae
        .elbo_estimate(&squares(2, &mut seeded_rng(0)), 0, 4, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ELBO samples"), "{err}");
    let eps_z = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
    let eps_x = Tensor::zeros((2, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let err = vae.transform(&eps_z, &eps_x).unwrap_err().to_string();
    assert!(err.contains("eps_z: expected shape [2, 2]"), "{err}");
    let err = vae
        .decode_eps(&Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("eps_z"), "{err}");
}
