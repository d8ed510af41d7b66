//! Adam against PyTorch, EMA against its definition, and contrastive-divergence steps: they
//! lower E(data) relative to E(samples), repeat bit for bit, and reject bad input.

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::{noise, seeded_rng};
use ebm_mcmc::LangevinConfig;
use ebm_nn::{Igebm, IgebmConfig, ParamStore, Trainable};
use ebm_train::{Adam, AdamConfig, CdConfig, CdTrainer, Ema, EnergyModel};

/// Expected values from PyTorch 2.x (float64):
/// ```python
/// import torch
/// torch.set_default_dtype(torch.float64)
/// w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
/// opt = torch.optim.Adam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
/// target = torch.tensor([0.3, 0.2, -0.1])
/// for _ in range(5):
///     opt.zero_grad()
///     loss = ((w - target) ** 2 * torch.tensor([1.0, 10.0, 0.1])).sum()
///     loss.backward()
///     opt.step()
/// print(w.tolist())
/// ```
#[test]
fn adam_matches_pytorch() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::new(&[1f64, -2.0, 0.5], &dev).unwrap()).unwrap();
    let target = Tensor::new(&[0.3f64, 0.2, -0.1], &dev).unwrap();
    let scale = Tensor::new(&[1f64, 10.0, 0.1], &dev).unwrap();
    let cfg = AdamConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        bound_by_second_moment: false,
    };
    let mut adam = Adam::new(vec![w.clone()], cfg).unwrap();
    for _ in 0..5 {
        let loss = ((w.as_tensor() - &target).unwrap().sqr().unwrap() * &scale)
            .unwrap()
            .sum_all()
            .unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
    }
    let expected = [
        5.145516422825562e-01,
        -1.502613732098442e+00,
        1.938153472783996e-02,
    ];
    for (a, b) in w.as_tensor().to_vec1::<f64>().unwrap().iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{a} vs PyTorch {b}");
    }
}

/// With beta1 = 0 and the second-moment bound, the first step clips the gradient to ±0.1 and
/// then moves every parameter by lr * sign(g) (up to eps).
#[test]
fn bounded_adam_first_step_is_a_sign_step() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::new(&[0f64, 0.0, 0.0], &dev).unwrap()).unwrap();
    let g = Tensor::new(&[50f64, -0.01, 3.0], &dev).unwrap();
    let mut adam = Adam::new(
        vec![w.clone()],
        AdamConfig {
            lr: 0.01,
            ..AdamConfig::default()
        },
    )
    .unwrap();
    let norm = adam
        .step(
            &(w.as_tensor() * &g)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap(),
        )
        .unwrap();
    assert!(
        (norm - (2500.0f64 + 1e-4 + 9.0).sqrt()).abs() < 1e-9,
        "reports the raw gradient norm"
    );
    for (v, s) in w
        .as_tensor()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .zip([-1.0, 1.0, -1.0])
    {
        assert!((v - 0.01 * s).abs() < 1e-7, "{v}");
    }
    assert!(Adam::new(
        vec![w],
        AdamConfig {
            beta1: 1.0,
            ..AdamConfig::default()
        }
    )
    .is_err());
}

#[test]
fn ema_follows_its_definition() {
    let dev = Device::Cpu;
    let mut params = ParamStore::new();
    params
        .add("w", &Tensor::new(&[1f32, 2.0], &dev).unwrap())
        .unwrap();
    let mut ema = Ema::new(&params, 0.9).unwrap();
    params
        .get("w")
        .unwrap()
        .set(&Tensor::new(&[3f32, 0.0], &dev).unwrap())
        .unwrap();
    ema.update(&params).unwrap();
    let avg = ema.weights()[0].to_vec1::<f32>().unwrap();
    assert!(
        (avg[0] - 1.2).abs() < 1e-6 && (avg[1] - 1.8).abs() < 1e-6,
        "{avg:?}"
    );
    let old = ema.swap_in(&params).unwrap();
    assert_eq!(params.get("w").unwrap().to_vec1::<f32>().unwrap(), avg);
    Ema::restore(&params, &old).unwrap();
    assert_eq!(
        params.get("w").unwrap().to_vec1::<f32>().unwrap(),
        vec![3.0, 0.0]
    );
}

fn small_config(steps: usize) -> CdConfig {
    CdConfig {
        langevin: LangevinConfig {
            steps,
            ..LangevinConfig::igebm()
        },
        replay_capacity: Some(64),
        ..CdConfig::default()
    }
}

/// Data: bright blocks in the top half of 8x8 images.
fn data(batch: usize, seed: u64) -> Tensor {
    let mut rng = seeded_rng(seed);
    let dev = Device::Cpu;
    let top = (noise::uniform(&mut rng, (batch, 1, 4, 8), 0.0, 0.1, DType::F32, &dev).unwrap()
        + 0.9)
        .unwrap();
    let bottom = noise::uniform(&mut rng, (batch, 1, 4, 8), 0.0, 0.1, DType::F32, &dev).unwrap();
    Tensor::cat(&[top, bottom], 2).unwrap()
}

fn energies(model: &Igebm, x: &Tensor, y: Option<&Tensor>) -> f32 {
    model
        .energies(x, y)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// One step lowers mean E(x+) - mean E(x-) on the very batches it used.
#[test]
fn a_training_step_lowers_data_energy_relative_to_samples() {
    for classes in [None, Some(3)] {
        let dev = Device::Cpu;
        let mut cfg = IgebmConfig::small(1, 8, 8);
        cfg.num_classes = classes;
        let model = Igebm::new(&cfg, &dev, &mut seeded_rng(1)).unwrap();
        let mut trainer = CdTrainer::new(model, small_config(5)).unwrap();
        let x = data(16, 2);
        let y = classes.map(|_| {
            Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0], &dev).unwrap()
        });
        let log = trainer.step(&x, y.as_ref(), &mut seeded_rng(3)).unwrap();
        let before = log.energy_pos - log.energy_neg;
        let (negatives, neg_labels) = trainer.buffer().unwrap().recent(16, &dev).unwrap();
        let neg_labels = classes.map(|_| Tensor::new(neg_labels.as_slice(), &dev).unwrap());
        // The buffer holds exactly the step's negatives, each paired with its label.
        let after = energies(trainer.model(), &x, y.as_ref())
            - energies(trainer.model(), &negatives, neg_labels.as_ref());
        assert!(
            after < before as f32,
            "classes {classes:?}: gap {before} -> {after}"
        );
        assert!(log.grad_norm > 0.0 && log.seconds_per_sampler_step > 0.0);
    }
}

#[test]
fn training_repeats_bit_for_bit_with_the_same_seed() {
    let run = |seed: u64| {
        let model = Igebm::new(
            &IgebmConfig::small(1, 8, 8),
            &Device::Cpu,
            &mut seeded_rng(seed),
        )
        .unwrap();
        let mut trainer = CdTrainer::new(model, small_config(3)).unwrap();
        let mut rng = seeded_rng(seed + 100);
        for i in 0..3 {
            trainer.step(&data(8, i), None, &mut rng).unwrap();
        }
        let weights: Vec<Vec<f32>> = trainer
            .model()
            .params()
            .iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        (
            weights,
            trainer.history().iter().map(|l| l.loss).collect::<Vec<_>>(),
        )
    };
    let a = run(4);
    assert_eq!(a, run(4));
    assert_ne!(a.1, run(5).1);
}

/// Any `ebm_mcmc::Sampler` can draw the negatives: MALA and HMC through the same step, in the
/// data range, repeatable with the same seed, and lowering the energy gap on their batch.
#[test]
fn other_samplers_draw_the_negatives() {
    use ebm_mcmc::{Hmc, HmcConfig, Mala, MalaConfig, Sampler};
    type MakeSampler = fn() -> Box<dyn Sampler>;
    let make: [(&str, MakeSampler); 2] = [
        ("mala", || {
            Box::new(Mala::new(MalaConfig::new(1e-3, 5)).unwrap())
        }),
        ("hmc", || {
            Box::new(Hmc::new(HmcConfig::new(0.02, 3, 2)).unwrap())
        }),
    ];
    for (name, sampler) in make {
        let run = |seed: u64| {
            let model = Igebm::new(
                &IgebmConfig::small(1, 8, 8),
                &Device::Cpu,
                &mut seeded_rng(seed),
            )
            .unwrap();
            let mut trainer = CdTrainer::new(model, small_config(3))
                .unwrap()
                .with_sampler(sampler());
            let mut rng = seeded_rng(seed + 100);
            let x = data(16, 7);
            let log = trainer.step(&x, None, &mut rng).unwrap();
            let (negatives, _) = trainer.buffer().unwrap().recent(16, &Device::Cpu).unwrap();
            let values = negatives.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                values.iter().all(|v| (0.0..=1.0).contains(v)),
                "{name}: negatives in the data range"
            );
            let after =
                energies(trainer.model(), &x, None) - energies(trainer.model(), &negatives, None);
            assert!(
                after < (log.energy_pos - log.energy_neg) as f32,
                "{name}: the gap did not shrink"
            );
            assert!(log.seconds_per_sampler_step > 0.0);
            log.loss
        };
        assert_eq!(run(1), run(1), "{name}: same seed, same step");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dev = Device::Cpu;
    let model = Igebm::new(&IgebmConfig::small(1, 8, 8), &dev, &mut seeded_rng(1)).unwrap();
    let mut trainer = CdTrainer::new(model.clone(), small_config(2)).unwrap();
    let mut rng = seeded_rng(0);
    let nan = Tensor::full(f32::NAN, (2, 1, 8, 8), &dev).unwrap();
    let err = trainer.step(&nan, None, &mut rng).unwrap_err().to_string();
    assert_eq!(err, "training batch contains NaN or infinite values");
    let wrong = Tensor::zeros((2, 1, 28, 28), DType::F32, &dev).unwrap();
    let err = trainer
        .step(&wrong, None, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("training batch: expected shape [batch >= 1, 1, 8, 8]"),
        "{err}"
    );
    let labels = Tensor::new(&[0u32, 1], &dev).unwrap();
    let err = trainer
        .step(&data(2, 0), Some(&labels), &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unconditional model takes no labels"), "{err}");

    let bad_step = CdConfig {
        langevin: LangevinConfig {
            step_size: 0.0,
            ..LangevinConfig::igebm()
        },
        ..CdConfig::default()
    };
    let err = CdTrainer::new(model.clone(), bad_step)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("invalid step_size"), "{err}");
    let bad_l2 = CdConfig {
        l2_coeff: -1.0,
        ..CdConfig::default()
    };
    assert!(CdTrainer::new(model, bad_l2).is_err());
}
