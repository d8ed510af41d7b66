//! The hybrid (contrastive divergence + classification) loss: its gradients against autograd of
//! the loss written out with `ebm_nn::cross_entropy`, the class restriction of a step, a
//! tiny model that learns to classify, and a trainer restored from a snapshot that continues
//! bit for bit.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng};
use ebm_mcmc::LangevinConfig;
use ebm_nn::energy_classifier::EnergyClassifier;
use ebm_nn::{Igebm, IgebmConfig, Trainable};
use ebm_train::hybrid::{hybrid_loss_grads, HybridBatch, HybridConfig, HybridTrainer};
use ebm_train::CdConfig;

fn tiny(seed: u64) -> Igebm {
    let mut cfg = IgebmConfig::small(1, 8, 4).conditional(5);
    cfg.spectral_norm = false;
    Igebm::new(&cfg, &Device::Cpu, &mut seeded_rng(seed)).unwrap()
}

#[test]
fn gradients_match_autograd_of_the_written_out_loss() {
    let model = tiny(1);
    let mut rng = seeded_rng(2);
    let pos = noise::uniform(&mut rng, (6, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let neg = noise::uniform(&mut rng, (6, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let classes = [4u32, 1, 2];
    let labels = [1u32, 2, 4, 4, 1, 2];
    let neg_labels = [2u32, 2, 1, 4, 4, 1];
    let (l2, w, n) = (0.7, 1.3, 4);
    let (losses, fused) = hybrid_loss_grads(
        &model,
        &HybridBatch {
            positives: &pos,
            labels: &labels,
            negatives: &neg,
            negative_labels: &neg_labels,
            classes: &classes,
            clf_images: n,
        },
        l2,
        w,
    )
    .unwrap();

    // The same loss through autograd: logits -E(x, c) over the classes, then cross-entropy.
    let t = |v: &[u32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
    let e_pos = model.forward(&pos, Some(&t(&labels))).unwrap();
    let e_neg = model.forward(&neg, Some(&t(&neg_labels))).unwrap();
    let xc = pos.narrow(0, 0, n).unwrap();
    let columns: Vec<Tensor> = classes
        .iter()
        .map(|&c| {
            model
                .forward(&xc, Some(&t(&vec![c; n])))
                .unwrap()
                .neg()
                .unwrap()
        })
        .collect();
    let logits = Tensor::stack(&columns, 1).unwrap();
    let targets: Vec<u32> = labels[..n]
        .iter()
        .map(|y| classes.iter().position(|c| c == y).unwrap() as u32)
        .collect();
    let ce = ebm_nn::cross_entropy(&logits, &t(&targets)).unwrap();
    let cd = ((e_pos.mean_all().unwrap() - e_neg.mean_all().unwrap()).unwrap()
        + ((e_pos.sqr().unwrap().mean_all().unwrap() + e_neg.sqr().unwrap().mean_all().unwrap())
            .unwrap()
            * l2)
            .unwrap())
    .unwrap();
    let loss = (&cd + (&ce * w).unwrap()).unwrap();
    let reference = loss.backward().unwrap();
    let cd_value = cd.to_scalar::<f32>().unwrap() as f64;
    let ce_value = ce.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (losses.cd_loss - cd_value).abs() < 1e-4,
        "{} vs {cd_value}",
        losses.cd_loss
    );
    assert!(
        (losses.clf_loss - ce_value).abs() < 1e-4,
        "{} vs {ce_value}",
        losses.clf_loss
    );

    let mut compared = 0;
    for (name, var) in model.params().iter() {
        let a = reference.get(var.as_tensor());
        let b = fused.get(var.as_tensor());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("{name}: a gradient is missing");
        };
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = a
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff <= 1e-4 * scale.max(1e-3),
            "{name}: difference {diff}, scale {scale}"
        );
        compared += 1;
    }
    assert_eq!(compared, model.params().len());
}

fn config(clf_weight: f64) -> HybridConfig {
    HybridConfig {
        cd: CdConfig {
            langevin: LangevinConfig::igebm().with_steps(4),
            replay_capacity: Some(64),
            adam: ebm_train::AdamConfig {
                lr: 3e-3,
                ..Default::default()
            },
            ..CdConfig::default()
        },
        clf_weight,
        clf_images: 8,
    }
}

#[test]
fn a_step_keeps_its_negatives_in_the_step_classes() {
    let mut trainer = HybridTrainer::new(tiny(3), config(1.0)).unwrap();
    let mut rng = seeded_rng(4);
    let x = noise::uniform(&mut rng, (8, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let labels = [3u32, 0, 3, 0, 3, 0, 3, 0];
    for _ in 0..3 {
        trainer.step(&x, &labels, &[0, 3], &mut rng).unwrap();
    }
    let (_, stored) = trainer.buffer().unwrap().recent(24, &Device::Cpu).unwrap();
    assert!(stored.iter().all(|y| *y == 0 || *y == 3), "{stored:?}");
    // A new task: after clearing, only its classes appear.
    trainer.clear_buffer().unwrap();
    trainer.step(&x, &[1; 8], &[1, 2], &mut rng).unwrap();
    let (_, stored) = trainer.buffer().unwrap().recent(8, &Device::Cpu).unwrap();
    assert!(stored.iter().all(|y| *y == 1 || *y == 2), "{stored:?}");
    let err = trainer.step(&x, &labels, &[0, 1], &mut rng).unwrap_err();
    assert!(err.to_string().contains("label 3"), "{err}");
    let err = HybridTrainer::new(
        {
            let mut cfg = IgebmConfig::small(1, 8, 4);
            cfg.spectral_norm = false;
            Igebm::new(&cfg, &Device::Cpu, &mut seeded_rng(0)).unwrap()
        },
        config(1.0),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("class-conditional"), "{err}");
}

#[test]
fn a_tiny_model_learns_dark_against_bright() {
    // Class 1: dark images (values near 0.2); class 3: bright ones (near 0.8).
    let images = |rng: &mut ebm_core::Rng, n: usize| {
        let labels: Vec<u32> = (0..n).map(|i| if i % 2 == 0 { 1 } else { 3 }).collect();
        let base: Vec<f32> = labels
            .iter()
            .flat_map(|&y| std::iter::repeat_n(if y == 1 { 0.2f32 } else { 0.8 }, 64))
            .collect();
        let base = Tensor::from_vec(base, (n, 1, 8, 8), &Device::Cpu).unwrap();
        let jitter =
            noise::uniform(rng, (n, 1, 8, 8), -0.15, 0.15, DType::F32, &Device::Cpu).unwrap();
        ((base + jitter).unwrap(), labels)
    };
    let mut rng = seeded_rng(7);
    let mut trainer = HybridTrainer::new(tiny(8), config(1.0)).unwrap();
    for _ in 0..40 {
        let (x, y) = images(&mut rng, 16);
        trainer.step(&x, &y, &[1, 3], &mut rng).unwrap();
    }
    let (x, y) = images(&mut rng, 64);
    let frozen = trainer.model().frozen().unwrap();
    let acc = EnergyClassifier::over(&frozen, &[1, 3])
        .unwrap()
        .accuracy(&x, &y, 32)
        .unwrap();
    assert!(acc >= 0.95, "accuracy {acc}");
    let last = trainer.history().last().unwrap();
    assert!(
        last.clf_loss < 0.5,
        "final classification loss {}",
        last.clf_loss
    );
}

/// Everything observable about a hybrid trainer: weights, EMA, buffer contents and labels,
/// Adam's moments, and the logged losses.
type Fingerprint = (
    Vec<Vec<f32>>,
    Vec<Vec<f32>>,
    (Vec<f32>, Vec<u32>),
    Vec<(f64, f64)>,
);

fn fingerprint(t: &HybridTrainer<Igebm>) -> Fingerprint {
    let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let weights = t.model().params().iter().map(|(_, v)| flat(v)).collect();
    let ema = t.ema().unwrap().weights().iter().map(flat).collect();
    let (data, labels, _) = t.buffer().unwrap().contents();
    let losses = t
        .history()
        .iter()
        .map(|l| (l.cd.loss, l.clf_loss))
        .collect();
    (weights, ema, (data.to_vec(), labels.to_vec()), losses)
}

/// `steps` training steps on random images labelled 3 and 0, the step's classes `[0, 3]`.
fn hybrid_steps(t: &mut HybridTrainer<Igebm>, rng: &mut ebm_core::Rng, steps: usize) {
    for _ in 0..steps {
        let x = noise::uniform(rng, (8, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        t.step(&x, &[3, 0, 3, 0, 3, 0, 3, 0], &[0, 3], rng).unwrap();
    }
}

#[test]
fn a_restored_hybrid_trainer_continues_bit_for_bit() {
    use ebm_core::RngState;
    use ebm_train::{Snapshot, SnapshotDir};
    let cfg = HybridConfig {
        cd: CdConfig {
            ema_decay: Some(0.9),
            ..config(1.0).cd
        },
        ..config(1.0)
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotDir::new(dir.path());
    // Uninterrupted: 6 steps, with a snapshot (through the files) after step 3.
    let mut a = HybridTrainer::new(tiny(3), cfg.clone()).unwrap();
    let mut rng = seeded_rng(4);
    hybrid_steps(&mut a, &mut rng, 3);
    let mut snap = Snapshot::new(3);
    a.save_state(&mut snap).unwrap();
    snap.set_value("rng", &RngState::of(&rng).to_string())
        .unwrap();
    store.save(&snap).unwrap();
    hybrid_steps(&mut a, &mut rng, 3);

    // Resumed: a trainer of other initial weights, restored from the file.
    let snap = store.latest(&Device::Cpu).unwrap().found.unwrap().0;
    let state: String = snap.value("rng").unwrap();
    let mut b = HybridTrainer::new(tiny(11), cfg.clone()).unwrap();
    b.load_state(&snap).unwrap();
    let mut rng = state.parse::<RngState>().unwrap().restore();
    hybrid_steps(&mut b, &mut rng, 3);
    assert_eq!(b.history().len(), 6);
    assert_eq!(fingerprint(&a), fingerprint(&b));

    // Negative control: the same generator but no restored trainer state ends elsewhere.
    let mut c = HybridTrainer::new(tiny(3), cfg.clone()).unwrap();
    let mut rng = state.parse::<RngState>().unwrap().restore();
    hybrid_steps(&mut c, &mut rng, 3);
    assert_ne!(fingerprint(&a).0, fingerprint(&c).0);

    // A snapshot of another config is refused, saying why.
    let mut other = HybridTrainer::new(tiny(3), config(2.0)).unwrap();
    let err = other.load_state(&snap).unwrap_err().to_string();
    assert!(err.contains("another training config"), "{err}");
}
