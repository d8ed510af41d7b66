//! Training snapshots: a trainer restored from a snapshot (in memory, or written to disk and
//! read back) continues exactly as the trainer that took it, bit for bit; a snapshot that
//! misses state gives a different run (the comparison can fail); a snapshot taken with another
//! config is refused.

use candle_core::{DType, Device, Tensor};
use ebm_core::{seeded_rng, Rng};
use ebm_latent::{GeneratorConfig, LatentConfig, LatentModel, LatentTrainer, TrainConfig};
use ebm_nn::Trainable;
use ebm_train::{Snapshot, SnapshotDir};
use serde_json::Value;

fn config(ebm: bool) -> LatentConfig {
    let g = GeneratorConfig::mnist_like(4, 2);
    let mut c = if ebm {
        LatentConfig::ebm_prior(g)
    } else {
        LatentConfig::gaussian_prior(g)
    };
    if let Some(p) = &mut c.prior {
        p.hidden = vec![8];
    }
    c
}

fn train_config() -> TrainConfig {
    let mut t = TrainConfig::default();
    t.prior_langevin.steps = 3;
    t.posterior_langevin.steps = 3;
    t
}

fn trainer(config: &LatentConfig, train: TrainConfig, seed: u64) -> LatentTrainer {
    let model = LatentModel::new(config, &Device::Cpu, &mut seeded_rng(seed)).unwrap();
    LatentTrainer::new(model, train).unwrap()
}

/// A batch of images in [-1, 1] from `rng`.
fn batch(rng: &mut Rng) -> Tensor {
    ebm_core::noise::uniform(rng, (4, 1, 28, 28), -1.0, 1.0, DType::F32, &Device::Cpu).unwrap()
}

fn steps(t: &mut LatentTrainer, n: usize, rng: &mut Rng) {
    for _ in 0..n {
        let x = batch(rng);
        t.step(&x, rng).unwrap();
    }
}

/// Every number of a tensor, as bits.
fn bits(t: &Tensor) -> Vec<u64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .map(f64::to_bits)
        .collect()
}

/// JSON without the timings (keys containing "seconds").
fn without_timings(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.contains("seconds"))
                .map(|(k, v)| (k.clone(), without_timings(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timings).collect()),
        other => other.clone(),
    }
}

/// Everything `save_state` holds (weights, Adam moments and step counts, the log without its
/// timings, configs), for comparisons.
fn state(t: &LatentTrainer) -> (Vec<(String, Vec<u64>)>, Value) {
    let mut s = Snapshot::new(0);
    t.save_state(&mut s).unwrap();
    let mut tensors: Vec<(String, Vec<u64>)> = s
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), bits(v)))
        .collect();
    tensors.sort();
    (tensors, without_timings(&Value::Object(s.meta)))
}

fn weights(t: &LatentTrainer) -> Vec<Vec<u64>> {
    let m = t.model();
    let mut w: Vec<Vec<u64>> = m
        .generator()
        .params()
        .iter()
        .map(|(_, v)| bits(v.as_tensor()))
        .collect();
    if let Some(p) = m.prior() {
        w.extend(p.params().iter().map(|(_, v)| bits(v.as_tensor())));
    }
    w
}

fn adam(t: &LatentTrainer) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    for a in std::iter::once(t.generator_optimizer()).chain(t.prior_optimizer()) {
        let (m, v) = a.moments();
        out.push(vec![a.steps() as u64]);
        out.extend(m.iter().chain(v).map(bits));
    }
    out
}

fn continue_like_the_original(ebm: bool, through_disk: bool) {
    let cfg = config(ebm);
    let mut original = trainer(&cfg, train_config(), 1);
    let mut rng = seeded_rng(7);
    steps(&mut original, 3, &mut rng);
    let mut snapshot = Snapshot::new(3);
    original.save_state(&mut snapshot).unwrap();
    let rng_at_snapshot = rng.clone();
    steps(&mut original, 3, &mut rng);

    let snapshot = if through_disk {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotDir::new(dir.path());
        store.save(&snapshot).unwrap();
        store.latest(&Device::Cpu).unwrap().found.unwrap().0
    } else {
        snapshot
    };
    // A fresh trainer, initialised from another seed, restored from the snapshot.
    let mut restored = trainer(&cfg, train_config(), 99);
    assert_ne!(weights(&restored), weights(&original));
    restored.load_state(&snapshot).unwrap();
    let mut rng = rng_at_snapshot;
    steps(&mut restored, 3, &mut rng);

    assert_eq!(restored.history().len(), 6);
    assert!(weights(&restored) == weights(&original), "weights differ");
    assert!(adam(&restored) == adam(&original), "Adam states differ");
    assert_eq!(
        without_timings(&serde_json::to_value(restored.history()).unwrap()),
        without_timings(&serde_json::to_value(original.history()).unwrap()),
    );
    assert!(state(&restored) == state(&original), "snapshots differ");
}

#[test]
fn a_restored_ebm_prior_trainer_continues_bit_for_bit() {
    continue_like_the_original(true, false);
}

#[test]
fn a_restored_gaussian_prior_trainer_continues_bit_for_bit() {
    continue_like_the_original(false, false);
}

#[test]
fn a_snapshot_written_to_disk_and_read_back_continues_bit_for_bit() {
    continue_like_the_original(true, true);
}

#[test]
fn a_snapshot_missing_the_optimiser_state_gives_another_run() {
    // The negative control: the same comparison fails when state is lost.
    let cfg = config(true);
    let mut original = trainer(&cfg, train_config(), 1);
    let mut rng = seeded_rng(7);
    steps(&mut original, 3, &mut rng);
    let mut snapshot = Snapshot::new(3);
    original.save_state(&mut snapshot).unwrap();
    let rng_at_snapshot = rng.clone();
    steps(&mut original, 3, &mut rng);

    // Adam's moments zeroed, as if they had not been saved.
    let mut damaged = snapshot.clone();
    for (k, t) in damaged.tensors.iter_mut() {
        if k.contains("adam") {
            *t = t.zeros_like().unwrap();
        }
    }
    let mut restored = trainer(&cfg, train_config(), 99);
    restored.load_state(&damaged).unwrap();
    steps(&mut restored, 3, &mut rng_at_snapshot.clone());
    assert!(weights(&restored) != weights(&original));
    assert!(state(&restored) != state(&original));

    // The random generator not restored: another run too.
    let mut restored = trainer(&cfg, train_config(), 1);
    restored.load_state(&snapshot).unwrap();
    steps(&mut restored, 3, &mut seeded_rng(8));
    assert!(weights(&restored) != weights(&original));
}

#[test]
fn a_snapshot_of_another_config_is_refused() {
    let mut original = trainer(&config(true), train_config(), 1);
    steps(&mut original, 1, &mut seeded_rng(3));
    let mut snapshot = Snapshot::new(1);
    original.save_state(&mut snapshot).unwrap();

    let mut other_train = train_config();
    other_train.generator_adam.lr *= 2.0;
    let mut t = trainer(&config(true), other_train, 1);
    let before = weights(&t);
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("another training config"), "{err}");
    assert!(err.contains("generator_adam"), "{err}");
    assert!(weights(&t) == before, "a refused snapshot changes nothing");

    let mut t = trainer(&config(false), train_config(), 1);
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("another model config"), "{err}");
    assert!(err.contains("prior"), "{err}");

    let mut t = trainer(&config(true), train_config(), 1);
    let err = t.load_state(&Snapshot::new(0)).unwrap_err().to_string();
    assert!(err.contains("no latent-prior trainer"), "{err}");
    let mut foreign = Snapshot::new(0);
    foreign.set_value("trainer", &"vae").unwrap();
    let err = t.load_state(&foreign).unwrap_err().to_string();
    assert!(err.contains("`vae` trainer"), "{err}");
}
