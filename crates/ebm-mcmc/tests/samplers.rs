//! Langevin against analytic targets, the replay buffer's restart rate, determinism, and bad
//! input.

use candle_core::{DType, Device, Tensor};
use ebm_core::{analytic::Gaussian, noise, seeded_rng, Energy};
use ebm_mcmc::{Error, Langevin, LangevinConfig, ReplayBuffer};

fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = x.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let (n, d) = (v.len() as f64, v[0].len());
    let mean: Vec<f64> = (0..d)
        .map(|j| v.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let var = (0..d)
        .map(|j| v.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n - 1.0))
        .collect();
    (mean, var)
}

/// With noise matched to the step size, the unadjusted chain on `E = (x-m)^2 / (2 s^2)` is
/// the autoregression `x' - m = (1 - eps/s^2)(x - m) + sqrt(2 eps) z`, whose stationary
/// variance is exactly `s^2 / (1 - eps / (2 s^2))`: the test checks mean and variance against
/// that, per dimension, within four standard errors.
#[test]
fn langevin_reaches_the_gaussian_mean_and_variance() {
    let target = Gaussian::new(vec![1.0, -2.0, 0.5], vec![0.5, 2.0, 1.0]).unwrap();
    let eps = 0.02;
    let steps = 1500; // 1500 * eps / s^2 >= 15 relaxation times for the widest dimension
    let chains = 4000;
    let sampler = Langevin::new(LangevinConfig::matched(eps, steps)).unwrap();
    let mut rng = seeded_rng(11);
    let x0 = noise::normal(&mut rng, (chains, 3), DType::F64, &Device::Cpu).unwrap();
    let run = sampler.run(&target, &x0, &mut rng).unwrap();
    let (mean, var) = moments(&run.samples);
    for d in 0..3 {
        let s2 = target.variance()[d];
        let exact_var = s2 / (1.0 - eps / (2.0 * s2));
        let se_mean = (exact_var / chains as f64).sqrt();
        let se_var = exact_var * (2.0 / (chains as f64 - 1.0)).sqrt();
        assert!(
            (mean[d] - target.mean()[d]).abs() < 4.0 * se_mean,
            "dim {d}: mean {} vs {}",
            mean[d],
            target.mean()[d]
        );
        assert!(
            (var[d] - exact_var).abs() < 4.0 * se_var,
            "dim {d}: variance {} vs {exact_var}",
            var[d]
        );
    }
    assert_eq!(run.energy_trace.len(), steps);
}

#[test]
fn same_seed_gives_the_same_chain_bit_for_bit() {
    let target = Gaussian::isotropic(vec![0.3; 4], 0.1).unwrap();
    let sampler = Langevin::new(LangevinConfig {
        step_size: 0.05,
        noise_scale: 0.1,
        steps: 20,
        grad_clip: Some(0.5),
        clamp: Some((0.0, 1.0)),
    })
    .unwrap();
    let run = |seed| {
        let mut rng = seeded_rng(seed);
        sampler
            .sample_from_noise(&target, 16, &[4], &Device::Cpu, &mut rng)
            .unwrap()
            .samples
            .to_vec2::<f32>()
            .unwrap()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn clipping_bounds_each_move_and_clamping_the_range() {
    // A steep energy: the raw gradient is 1000 x far from the mean.
    let target = Gaussian::isotropic(vec![5.0; 3], 0.001).unwrap();
    let cfg = LangevinConfig {
        step_size: 1.0,
        noise_scale: 0.0,
        steps: 1,
        grad_clip: Some(0.01),
        clamp: None,
    };
    let x0 = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let one = Langevin::new(cfg.clone())
        .unwrap()
        .run(&target, &x0, &mut seeded_rng(0))
        .unwrap();
    for v in one.samples.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
        assert!(
            (v - 0.01).abs() < 1e-7,
            "one clipped step moves by step * clip, got {v}"
        );
    }
    let clamped = Langevin::new(LangevinConfig {
        steps: 1000,
        clamp: Some((0.0, 1.0)),
        ..cfg
    })
    .unwrap()
    .run(&target, &x0, &mut seeded_rng(0))
    .unwrap();
    for v in clamped
        .samples
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
    {
        assert_eq!(v, 1.0, "the chain is held at the top of the data range");
    }
}

#[test]
fn masked_chain_moves_only_masked_elements() {
    let target = Gaussian::isotropic(vec![3.0; 4], 1.0).unwrap();
    let sampler = Langevin::new(LangevinConfig::matched(0.1, 50)).unwrap();
    let x0 = Tensor::zeros((5, 4), DType::F32, &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1f32, 0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let run = sampler
        .run_masked(&target, &x0, Some(&mask), &mut seeded_rng(1))
        .unwrap();
    for row in run.samples.to_vec2::<f32>().unwrap() {
        assert_eq!((row[1], row[3]), (0.0, 0.0));
        assert!(row[0] != 0.0 && row[2] != 0.0);
    }
}

/// Each chain restarts with probability 0.05: over 20,000 chains the count is Binomial
/// (mean 1000, sd 30.8); the test allows four standard deviations.
#[test]
fn replay_buffer_restarts_five_percent_of_chains() {
    let mut buffer = ReplayBuffer::igebm(&[1, 2, 2]).unwrap();
    let dev = Device::Cpu;
    let mut rng = seeded_rng(12);
    let first = buffer.sample(100, None, &dev, &mut rng).unwrap();
    assert!(
        first.restarted.iter().all(|&r| r),
        "an empty buffer restarts every chain"
    );
    buffer.push(&first.x, None).unwrap();
    let mut restarts = 0;
    for _ in 0..200 {
        let batch = buffer.sample(100, None, &dev, &mut rng).unwrap();
        restarts += batch.restarted.iter().filter(|&&r| r).count();
        buffer.push(&batch.x, None).unwrap();
    }
    assert!(
        (restarts as f64 - 1000.0).abs() < 4.0 * 30.8,
        "restarts: {restarts} of 20000"
    );
    assert_eq!(
        buffer.len(),
        10_000,
        "the buffer fills up to its capacity and stays there"
    );
}

#[test]
fn replay_buffer_keeps_labels_and_replays_stored_samples() {
    let dev = Device::Cpu;
    let mut buffer = ReplayBuffer::new(4, &[2], 0.0, (0.0, 1.0)).unwrap();
    let x = Tensor::new(
        &[
            [0.1f32, 0.1],
            [0.2, 0.2],
            [0.3, 0.3],
            [0.4, 0.4],
            [0.5, 0.5],
        ],
        &dev,
    )
    .unwrap();
    let y = Tensor::new(&[1u32, 2, 3, 4, 5], &dev).unwrap();
    buffer.push(&x, Some(&y)).unwrap();
    assert_eq!(buffer.len(), 4);
    // The oldest sample (0.1, label 1) was overwritten by the fifth.
    let (recent, labels) = buffer.recent(4, &dev).unwrap();
    assert_eq!(labels, vec![5, 4, 3, 2]);
    assert_eq!(recent.to_vec2::<f32>().unwrap()[0], vec![0.5, 0.5]);
    let batch = buffer
        .sample(50, Some(6), &dev, &mut seeded_rng(3))
        .unwrap();
    let xs = batch.x.to_vec2::<f32>().unwrap();
    let ls = batch.labels.unwrap().to_vec1::<u32>().unwrap();
    for (row, l) in xs.iter().zip(ls) {
        assert!(
            (row[0] * 10.0 - l as f32).abs() < 1e-5,
            "sample {row:?} paired with label {l}"
        );
    }
    let of_three = buffer.recent_of_label(3, 10, &dev).unwrap().unwrap();
    assert_eq!(of_three.to_vec2::<f32>().unwrap(), vec![vec![0.3, 0.3]]);
    assert!(buffer.recent_of_label(9, 10, &dev).unwrap().is_none());
}

#[test]
fn bad_parameters_and_inputs_are_clear_errors() {
    let err = Langevin::new(LangevinConfig::igebm().with_steps(0))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "invalid steps: must be at least 1, got 0");
    for bad in [0.0, -1.0, f64::NAN] {
        let err = Langevin::new(LangevinConfig {
            step_size: bad,
            ..LangevinConfig::igebm()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("invalid step_size: must be a finite number > 0"),
            "{err}"
        );
    }
    let err = Langevin::new(LangevinConfig {
        clamp: Some((1.0, 0.0)),
        ..LangevinConfig::igebm()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("clamp"), "{err}");
    assert!(ReplayBuffer::new(10, &[1], 1.5, (0.0, 1.0)).is_err());

    let target = Gaussian::isotropic(vec![0.0; 2], 1.0).unwrap();
    let sampler = Langevin::new(LangevinConfig::matched(0.1, 3)).unwrap();
    let nan = Tensor::new(&[[0f32, f32::NAN]], &Device::Cpu).unwrap();
    let err = sampler
        .run(&target, &nan, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Langevin start contains NaN or infinite values");

    /// An energy that blows up after the first step.
    struct Exploding;
    impl Energy for Exploding {
        fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
            Ok((x.sqr()?.sum(1)? * 1e30)?.exp()?)
        }
    }
    let x0 = Tensor::new(&[[0f32, 0.0]], &Device::Cpu).unwrap();
    let err = Langevin::new(LangevinConfig::matched(1.0, 5))
        .unwrap()
        .run(&Exploding, &x0, &mut seeded_rng(0))
        .unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err}");
}
