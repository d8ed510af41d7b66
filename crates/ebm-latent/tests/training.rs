//! The learning step: it lowers both losses at fixed samples, a few iterations fit a toy batch,
//! the Gaussian-prior baseline trains its generator alone, runs repeat bit for bit from a seed,
//! the log-density score is the formula, and bad input is an error.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng};
use ebm_latent::{
    GeneratorConfig, LatentConfig, LatentLangevin, LatentModel, LatentTrainer, TrainConfig,
};
use ebm_nn::Trainable;

fn config(ebm: bool, latent_dim: usize) -> LatentConfig {
    let g = GeneratorConfig::mnist_like(latent_dim, 4);
    let mut c = if ebm {
        LatentConfig::ebm_prior(g)
    } else {
        LatentConfig::gaussian_prior(g)
    };
    if let Some(p) = &mut c.prior {
        p.hidden = vec![16, 16];
    }
    c
}

/// Smooth toy images in [-1, 1]: blobs at a few positions.
fn toy_images(n: usize, dtype: DType) -> Tensor {
    let mut v = Vec::with_capacity(n * 784);
    for i in 0..n {
        let (cy, cx) = (8.0 + 4.0 * (i % 3) as f32, 8.0 + 5.0 * (i % 4) as f32);
        for y in 0..28 {
            for x in 0..28 {
                let d2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                v.push(2.0 * (-d2 / 18.0).exp() - 1.0);
            }
        }
    }
    Tensor::from_vec(v, (n, 1, 28, 28), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn short(train: &mut TrainConfig) {
    train.prior_langevin.steps = 10;
    train.posterior_langevin.steps = 5;
}

#[test]
fn one_update_lowers_both_losses_at_fixed_samples() {
    let mut rng = seeded_rng(0);
    let model =
        LatentModel::with_dtype(&config(true, 4), &Device::Cpu, DType::F64, &mut rng).unwrap();
    let mut trainer = LatentTrainer::new(model, TrainConfig::default()).unwrap();
    let x = toy_images(8, DType::F64);
    let z_pos = noise::normal(&mut rng, (8, 4), DType::F64, &Device::Cpu).unwrap();
    let z_neg = (noise::normal(&mut rng, (8, 4), DType::F64, &Device::Cpu).unwrap() * 2.0).unwrap();
    let (g0, p0) = trainer.losses(&x, &z_pos, Some(&z_neg)).unwrap();
    let log = trainer.update(&x, &z_pos, Some(&z_neg)).unwrap();
    let (g1, p1) = trainer.losses(&x, &z_pos, Some(&z_neg)).unwrap();
    assert_eq!(log.generator_loss, g0);
    assert_eq!(log.prior_loss, p0);
    assert!(g1 < g0, "generator loss {g0} -> {g1}");
    let (p0, p1) = (p0.unwrap(), p1.unwrap());
    assert!(p1 < p0, "prior loss {p0} -> {p1}");
    // The prior loss is mean E(z+) - mean E(z-).
    let e = |z: &Tensor| {
        trainer
            .model()
            .prior_energy(z)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    assert!((p1 - (e(&z_pos) - e(&z_neg))).abs() < 1e-12);
}

#[test]
fn a_few_iterations_fit_a_toy_batch() {
    for ebm in [true, false] {
        let mut rng = seeded_rng(1);
        let model = LatentModel::new(&config(ebm, 4), &Device::Cpu, &mut rng).unwrap();
        let mut train = TrainConfig::default();
        short(&mut train);
        train.generator_adam.lr = 2e-3;
        let mut trainer = LatentTrainer::new(model, train).unwrap();
        let x = toy_images(12, DType::F32);
        for _ in 0..25 {
            trainer.step(&x, &mut rng).unwrap();
        }
        let h = trainer.history();
        let first = h[..3].iter().map(|l| l.mse).sum::<f64>() / 3.0;
        let last = h[h.len() - 3..].iter().map(|l| l.mse).sum::<f64>() / 3.0;
        assert!(last < 0.6 * first, "ebm {ebm}: mse {first} -> {last}");
        assert_eq!(h.len(), 25);
        assert!(h
            .iter()
            .all(|l| l.seconds > 0.0 && l.seconds_posterior > 0.0));
        // The Gaussian baseline has no prior to train or sample.
        assert_eq!(h[0].prior_loss.is_some(), ebm);
        assert_eq!(h[0].seconds_prior > 0.0, ebm);
    }
}

#[test]
fn same_seed_same_training() {
    let run = |seed: u64| {
        let mut rng = seeded_rng(seed);
        let model = LatentModel::new(&config(true, 4), &Device::Cpu, &mut rng).unwrap();
        let mut train = TrainConfig::default();
        short(&mut train);
        let mut trainer = LatentTrainer::new(model, train).unwrap();
        let x = toy_images(6, DType::F32);
        let logs: Vec<(f64, Option<f64>)> = (0..3)
            .map(|_| {
                let l = trainer.step(&x, &mut rng).unwrap();
                (l.generator_loss, l.prior_loss)
            })
            .collect();
        let model = trainer.into_model();
        let mut weights: Vec<f32> = Vec::new();
        for (_, v) in model.generator().params().iter() {
            weights.extend(
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        for (_, v) in model.prior().unwrap().params().iter() {
            weights.extend(
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        (logs, weights)
    };
    let (a, b) = (run(5), run(5));
    assert_eq!(a, b);
    assert_ne!(a.0, run(6).0);
}

#[test]
fn log_joint_is_the_formula_and_scores_rank_noise_above_generated_images() {
    let mut rng = seeded_rng(2);
    let model = LatentModel::with_dtype(&config(true, 4), &Device::Cpu, DType::F64, &mut rng)
        .unwrap()
        .frozen()
        .unwrap();
    let z = noise::normal(&mut rng, (3, 4), DType::F64, &Device::Cpu).unwrap();
    let x = toy_images(3, DType::F64);
    let lj = model.log_joint(&x, &z).unwrap().to_vec1::<f64>().unwrap();
    let g = model.generate(&z).unwrap();
    let sq = (&x - &g)
        .unwrap()
        .sqr()
        .unwrap()
        .reshape((3, 784))
        .unwrap()
        .sum(1)
        .unwrap();
    let sq = sq.to_vec1::<f64>().unwrap();
    let zz = z.sqr().unwrap().sum(1).unwrap().to_vec1::<f64>().unwrap();
    let e = model.prior_energy(&z).unwrap().to_vec1::<f64>().unwrap();
    for i in 0..3 {
        let want = -sq[i] / (2.0 * 0.09) - e[i] - zz[i] / 2.0;
        assert!(
            (lj[i] - want).abs() < 1e-9 * want.abs().max(1.0),
            "{} vs {want}",
            lj[i]
        );
    }
    // Images the generator makes score as less anomalous than uniform noise.
    let z = noise::normal(&mut rng, (8, 4), DType::F64, &Device::Cpu).unwrap();
    let made = model.generate(&z).unwrap();
    let noise = noise::uniform(
        &mut rng,
        (8, 1, 28, 28),
        -1.0,
        1.0,
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let settings = LatentLangevin::posterior();
    let a = model.anomaly_scores(&made, &settings, 2, &mut rng).unwrap();
    let b = model
        .anomaly_scores(&noise, &settings, 2, &mut rng)
        .unwrap();
    for s in [&a, &b] {
        for i in 0..8 {
            assert!(
                (s.score[i] - s.reconstruction[i] - s.prior[i]).abs() < 1e-9 * s.score[i].abs()
            );
        }
    }
    let (a, b) = (a.score, b.score);
    let worst_made = a.iter().cloned().fold(f64::MIN, f64::max);
    let best_noise = b.iter().cloned().fold(f64::MAX, f64::min);
    assert!(worst_made < best_noise, "{a:?} vs {b:?}");
}

#[test]
fn bad_input_and_settings_are_errors() {
    let mut rng = seeded_rng(3);
    let model = LatentModel::new(&config(true, 4), &Device::Cpu, &mut rng).unwrap();
    let mut train = TrainConfig::default();
    train.posterior_langevin.step_size = 0.0;
    let err = LatentTrainer::new(model.clone(), train)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid posterior_langevin.step_size"),
        "{err}"
    );
    let mut train = TrainConfig::default();
    train.prior_langevin.step_size = -0.4;
    let err = LatentTrainer::new(model.clone(), train)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid prior_langevin.step_size"), "{err}");
    let mut train = TrainConfig::default();
    train.prior_adam.lr = 0.0;
    let err = LatentTrainer::new(model.clone(), train)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid lr"), "{err}");

    let mut trainer = LatentTrainer::new(model, TrainConfig::default()).unwrap();
    let cifar_like = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = trainer.step(&cifar_like, &mut rng).unwrap_err().to_string();
    assert_eq!(
        err,
        "training images x: expected shape [batch >= 1, 1, 28, 28], got [2, 3, 32, 32]"
    );
    let nan = Tensor::full(f32::NAN, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let err = trainer.step(&nan, &mut rng).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
    let x = toy_images(2, DType::F32);
    let z = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    let err = trainer.update(&x, &z, None).unwrap_err().to_string();
    assert!(err.contains("prior samples z-"), "{err}");

    // A config whose prior and generator disagree on the latent size.
    let mut c = config(true, 4);
    c.generator.latent_dim = 6;
    let err = LatentModel::new(&c, &Device::Cpu, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the prior takes a latent of size 4, the generator 6"),
        "{err}"
    );
    let err = model_sample_zero(&mut rng);
    assert!(err.contains("number of samples"), "{err}");
}

fn model_sample_zero(rng: &mut ebm_core::Rng) -> String {
    let model = LatentModel::new(&config(true, 4), &Device::Cpu, rng).unwrap();
    model
        .sample_prior(0, &LatentLangevin::prior(), &Device::Cpu, rng)
        .unwrap_err()
        .to_string()
}

/// The EBM-prior model and its Gaussian-prior baseline built from one seed start from the same
/// generator, so that the comparison measures the prior alone.
#[test]
fn both_priors_start_from_the_same_generator() {
    let ebm = LatentModel::new(&config(true, 4), &Device::Cpu, &mut seeded_rng(7)).unwrap();
    let gauss = LatentModel::new(&config(false, 4), &Device::Cpu, &mut seeded_rng(7)).unwrap();
    for ((na, a), (nb, b)) in ebm
        .generator()
        .params()
        .iter()
        .zip(gauss.generator().params().iter())
    {
        assert_eq!(na, nb);
        assert_eq!(
            a.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            b.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }
    assert!(gauss.prior().is_none());
    // The Gaussian prior's samples are exact draws from N(0, sigma^2 I): no chain.
    let z = gauss
        .sample_prior(
            5000,
            &LatentLangevin::prior(),
            &Device::Cpu,
            &mut seeded_rng(8),
        )
        .unwrap();
    let v = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
    assert!((var - 1.0).abs() < 0.03, "variance {var}");
}
