//! Training: the VAE learns, VAEBM training runs and repeats bit for bit, the eps_z buffer is
//! used, and divergence (an absurd learning rate, a poisoned batch) is detected and rolled back
//! to finite weights at a lower learning rate while training continues.

mod common;

use candle_core::{DType, Device, Tensor};
use ebm_core::seeded_rng;
use ebm_nn::Trainable;
use ebm_train::AdamConfig;
use ebm_vaebm::{
    BufferConfig, DivergenceGuard, EpsLangevin, Error, Hierarchy, Negatives, StepOutcome,
    VaeTrainConfig, VaeTrainer, Vaebm, VaebmTrainConfig, VaebmTrainer,
};

use common::{squares, tiny_ebm, tiny_vae, values};

fn trained_vae(steps: usize) -> ebm_vaebm::Vae {
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 1);
    let mut trainer = VaeTrainer::new(vae, VaeTrainConfig::default()).unwrap();
    let mut rng = seeded_rng(2);
    for _ in 0..steps {
        let x = squares(16, &mut rng);
        trainer.step(&x, &mut rng).unwrap();
    }
    trainer.into_vae()
}

/// The numbers of a step log, without its timings.
type Numbers = (f64, f64, f64, f64, (f64, f64));

fn config(lr: f64) -> VaebmTrainConfig {
    VaebmTrainConfig {
        adam: AdamConfig {
            lr,
            ..VaebmTrainConfig::default().adam
        },
        langevin: EpsLangevin {
            step_size: 1e-2,
            steps: 3,
        },
        guard: DivergenceGuard {
            max_abs_energy: 1e3,
            max_grad_norm: 1e6,
            lr_factor: 0.5,
            min_lr: 1e-9,
            snapshot_every: 4,
            max_rollbacks: 40,
        },
        ..VaebmTrainConfig::default()
    }
}

fn all_finite(model: &Vaebm) -> bool {
    model
        .ebm()
        .params()
        .iter()
        .all(|(_, v)| values(v.as_tensor()).iter().all(|x| x.is_finite()))
}

#[test]
fn the_vae_learns_and_training_repeats_exactly() {
    let run = || {
        let vae = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F32, 1);
        let mut trainer = VaeTrainer::new(
            vae,
            VaeTrainConfig {
                kl_warmup: 10,
                ..VaeTrainConfig::default()
            },
        )
        .unwrap();
        let mut rng = seeded_rng(2);
        for _ in 0..60 {
            let x = squares(16, &mut rng);
            trainer.step(&x, &mut rng).unwrap();
        }
        trainer
    };
    let a = run();
    let h = a.history();
    assert_eq!(h.len(), 60);
    assert!((h[4].kl_weight - 0.5).abs() < 1e-12 && h[59].kl_weight == 1.0);
    let early: f64 = h[..5].iter().map(|l| l.elbo).sum::<f64>() / 5.0;
    let late: f64 = h[55..].iter().map(|l| l.elbo).sum::<f64>() / 5.0;
    assert!(
        late > early + 5.0,
        "the ELBO did not improve: {early} -> {late}"
    );
    let b = run();
    assert_eq!(
        a.history().iter().map(|l| l.elbo).collect::<Vec<_>>(),
        b.history().iter().map(|l| l.elbo).collect::<Vec<_>>()
    );
    for ((_, va), (_, vb)) in a.vae().params().iter().zip(b.vae().params().iter()) {
        assert_eq!(values(va.as_tensor()), values(vb.as_tensor()));
    }
    // A frozen VAE cannot be trained.
    let frozen = a.vae().frozen().unwrap();
    assert!(VaeTrainer::new(frozen, VaeTrainConfig::default()).is_err());
}

#[test]
fn vaebm_training_runs_and_repeats_bit_for_bit() {
    let vae = trained_vae(20);
    let run = |negatives: Negatives| {
        let model = Vaebm::new(vae.clone(), tiny_ebm(DType::F32, 3)).unwrap();
        let mut rng = seeded_rng(4);
        let cfg = VaebmTrainConfig {
            negatives,
            ..config(1e-3)
        };
        let mut trainer = VaebmTrainer::new(model, cfg, &mut rng).unwrap();
        for _ in 0..6 {
            let x = squares(8, &mut rng);
            match trainer.step(&x, &mut rng).unwrap() {
                StepOutcome::Trained(_) => {}
                StepOutcome::RolledBack(r) => panic!("unexpected roll-back: {r:?}"),
            }
        }
        trainer
    };
    for negatives in [Negatives::Sample, Negatives::Mean] {
        let a = run(negatives);
        let b = run(negatives);
        assert_eq!(a.history().len(), 6);
        assert!(a.rollbacks().is_empty());
        let log = &a.history()[5];
        assert!(log.loss.is_finite() && log.spectral_sum > 0.0 && log.grad_norm > 0.0);
        assert_eq!(log.lr, 1e-3);
        let numbers = |t: &VaebmTrainer| -> Vec<Numbers> {
            t.history()
                .iter()
                .map(|l| {
                    (
                        l.loss,
                        l.total_loss,
                        l.spectral_sum,
                        l.grad_norm,
                        l.chain_energy,
                    )
                })
                .collect()
        };
        assert_eq!(numbers(&a), numbers(&b), "{negatives:?}: not repeatable");
        for ((_, va), (_, vb)) in a
            .model()
            .ebm()
            .params()
            .iter()
            .zip(b.model().ebm().params().iter())
        {
            assert_eq!(values(va.as_tensor()), values(vb.as_tensor()));
        }
    }
}

#[test]
fn the_eps_buffer_feeds_later_chains() {
    let vae = trained_vae(5);
    let model = Vaebm::new(vae, tiny_ebm(DType::F32, 3)).unwrap();
    let mut rng = seeded_rng(4);
    let cfg = VaebmTrainConfig {
        buffer: Some(BufferConfig {
            capacity: 12,
            max_probability: 1.0,
            anneal_iterations: 0,
        }),
        ..config(1e-4)
    };
    let mut trainer = VaebmTrainer::new(model, cfg, &mut rng).unwrap();
    let mut replayed = Vec::new();
    for _ in 0..3 {
        if let StepOutcome::Trained(log) = trainer.step(&squares(8, &mut rng), &mut rng).unwrap() {
            replayed.push(log.replayed);
        }
    }
    assert_eq!(replayed, vec![0, 8, 8]);
    assert_eq!(trainer.buffer().unwrap().len(), 12);
}

#[test]
fn an_absurd_learning_rate_is_rolled_back_and_training_continues() {
    let vae = trained_vae(5);
    let model = Vaebm::new(vae, tiny_ebm(DType::F32, 3)).unwrap();
    let mut rng = seeded_rng(4);
    let initial_lr = 50.0;
    let mut trainer = VaebmTrainer::new(model, config(initial_lr), &mut rng).unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..40 {
        outcomes.push(trainer.step(&squares(8, &mut rng), &mut rng).unwrap());
    }
    let rollbacks = trainer.rollbacks().to_vec();
    assert!(!rollbacks.is_empty(), "nothing was detected");
    for r in &rollbacks {
        assert!((r.lr_after - r.lr_before * 0.5).abs() < 1e-15, "{r:?}");
        assert!(!r.reason.is_empty());
        assert!(r.restored_iteration < r.iteration);
    }
    assert!(trainer.lr() < initial_lr);
    assert_eq!(trainer.lr(), rollbacks.last().unwrap().lr_after);
    assert!(all_finite(trainer.model()));
    // Training went on after the last roll-back, at the lowered rate.
    let last = rollbacks.last().unwrap().iteration;
    let after: Vec<_> = trainer
        .history()
        .iter()
        .filter(|l| l.iteration > last)
        .collect();
    assert!(
        !after.is_empty(),
        "no successful step after the last roll-back at {last}"
    );
    assert!(after.iter().all(|l| l.lr == trainer.lr()));
    assert!(matches!(outcomes.last(), Some(StepOutcome::Trained(_))));
    assert_eq!(trainer.iterations(), 40);
}

#[test]
fn a_poisoned_batch_is_rolled_back_to_the_last_snapshot() {
    let vae = trained_vae(5);
    let model = Vaebm::new(vae, tiny_ebm(DType::F32, 3)).unwrap();
    let mut rng = seeded_rng(4);
    let mut trainer = VaebmTrainer::new(model, config(1e-3), &mut rng).unwrap();
    for _ in 0..4 {
        trainer.step(&squares(8, &mut rng), &mut rng).unwrap();
    }
    // Iteration 4 took a snapshot (snapshot_every = 4): the weights to come back to.
    let snapshot: Vec<Vec<f64>> = trainer
        .model()
        .ebm()
        .params()
        .iter()
        .map(|(_, v)| values(v.as_tensor()))
        .collect();
    trainer.step(&squares(8, &mut rng), &mut rng).unwrap();
    let poisoned = (squares(8, &mut rng) * 1e6).unwrap();
    match trainer.step(&poisoned, &mut rng).unwrap() {
        StepOutcome::RolledBack(r) => {
            assert_eq!(r.iteration, 6);
            assert_eq!(r.restored_iteration, 4);
            assert!(r.reason.contains("max_abs_energy"), "{}", r.reason);
            assert_eq!((r.lr_before, r.lr_after), (1e-3, 5e-4));
        }
        other => panic!("the poisoned batch was not detected: {other:?}"),
    }
    let restored: Vec<Vec<f64>> = trainer
        .model()
        .ebm()
        .params()
        .iter()
        .map(|(_, v)| values(v.as_tensor()))
        .collect();
    assert_eq!(restored, snapshot);
    assert_eq!(trainer.rollbacks().len(), 1);
    match trainer.step(&squares(8, &mut rng), &mut rng).unwrap() {
        StepOutcome::Trained(log) => assert_eq!(log.lr, 5e-4),
        other => panic!("training did not continue: {other:?}"),
    }
}

#[test]
fn repeated_divergence_gives_up_with_a_clear_error() {
    let vae = trained_vae(5);
    let model = Vaebm::new(vae, tiny_ebm(DType::F32, 3)).unwrap();
    let mut rng = seeded_rng(4);
    let mut cfg = config(1e-3);
    cfg.guard.max_rollbacks = 2;
    let mut trainer = VaebmTrainer::new(model, cfg, &mut rng).unwrap();
    let poisoned = (squares(8, &mut rng) * 1e6).unwrap();
    assert!(matches!(
        trainer.step(&poisoned, &mut rng).unwrap(),
        StepOutcome::RolledBack(_)
    ));
    assert!(matches!(
        trainer.step(&poisoned, &mut rng).unwrap(),
        StepOutcome::RolledBack(_)
    ));
    let err = trainer.step(&poisoned, &mut rng).unwrap_err();
    assert!(matches!(err, Error::Diverged { iteration: 3, .. }), "{err}");
    assert!(
        err.to_string().contains("giving up after 2 roll-backs"),
        "{err}"
    );
}

#[test]
fn bad_inputs_and_settings_are_errors_not_roll_backs() {
    let vae = trained_vae(2);
    let model = Vaebm::new(vae.clone(), tiny_ebm(DType::F32, 3)).unwrap();
    let mut rng = seeded_rng(4);
    let mut trainer = VaebmTrainer::new(model.clone(), config(1e-3), &mut rng).unwrap();
    let nan = Tensor::full(f32::NAN, (4, 1, 8, 8), &Device::Cpu).unwrap();
    let err = trainer.step(&nan, &mut rng).unwrap_err().to_string();
    assert!(err.contains("training batch contains NaN"), "{err}");
    let wrong = Tensor::zeros((4, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let err = trainer.step(&wrong, &mut rng).unwrap_err().to_string();
    assert!(err.contains("training batch: expected shape"), "{err}");
    assert!(trainer.rollbacks().is_empty());

    let mut bad = config(1e-3);
    bad.langevin.step_size = 0.0;
    let err = VaebmTrainer::new(model.clone(), bad, &mut rng)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("step_size: must be a finite number > 0, got 0"),
        "{err}"
    );
    let mut bad = config(1e-3);
    bad.guard.lr_factor = 1.5;
    let err = VaebmTrainer::new(model.clone(), bad, &mut rng)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("lr_factor"), "{err}");
    let mut bad = config(1e-3);
    bad.alpha_s = -1.0;
    assert!(VaebmTrainer::new(model, bad, &mut rng).is_err());
}
