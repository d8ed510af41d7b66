//! Training snapshots: a trainer restored from a snapshot continues bit for bit as if never
//! stopped; corrupt, truncated and half-written snapshots are detected, named and skipped.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng, RngState};
use ebm_mcmc::LangevinConfig;
use ebm_nn::{Igebm, IgebmConfig};
use ebm_train::{CdConfig, CdTrainer, Snapshot, SnapshotDir};

fn config() -> CdConfig {
    CdConfig {
        langevin: LangevinConfig {
            steps: 3,
            ..LangevinConfig::igebm()
        },
        replay_capacity: Some(20),
        ema_decay: Some(0.9),
        ..CdConfig::default()
    }
}

fn trainer(classes: Option<usize>) -> CdTrainer<Igebm> {
    let mut cfg = IgebmConfig::small(1, 8, 8);
    cfg.num_classes = classes;
    let model = Igebm::new(&cfg, &Device::Cpu, &mut seeded_rng(1)).unwrap();
    CdTrainer::new(model, config()).unwrap()
}

fn batch(rng: &mut ebm_core::Rng, classes: Option<usize>) -> (Tensor, Option<Tensor>) {
    let x = noise::uniform(rng, (6, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let y = classes.map(|k| noise::random_labels(rng, 6, k, &Device::Cpu).unwrap());
    (x, y)
}

/// Everything observable about a trainer: weights, EMA, buffer, Adam steps, losses.
type Fingerprint = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<f32>, usize, Vec<f64>);

fn fingerprint(t: &CdTrainer<Igebm>) -> Fingerprint {
    use ebm_nn::Trainable;
    let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let weights = t.model().params().iter().map(|(_, v)| flat(v)).collect();
    let ema = t.ema().unwrap().weights().iter().map(flat).collect();
    let buffer = t.buffer().unwrap().contents().0.to_vec();
    let losses = t.history().iter().map(|l| l.loss).collect();
    (weights, ema, buffer, t.optimizer().steps(), losses)
}

#[test]
fn a_restored_trainer_continues_bit_for_bit() {
    for classes in [None, Some(3)] {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotDir::new(dir.path());
        // Uninterrupted: 7 steps, with a snapshot after step 4.
        let mut a = trainer(classes);
        let mut rng = seeded_rng(9);
        for step in 1..=7 {
            let (x, y) = batch(&mut rng, classes);
            a.step(&x, y.as_ref(), &mut rng).unwrap();
            if step == 4 {
                let mut snap = Snapshot::new(step);
                a.save_state(&mut snap).unwrap();
                snap.set_value("rng", &RngState::of(&rng).to_string())
                    .unwrap();
                store.save(&snap).unwrap();
            }
        }
        // Resumed: a fresh trainer (other initial weights would do too), restored at step 4.
        let latest = store.latest(&Device::Cpu).unwrap();
        assert!(latest.skipped.is_empty(), "{:?}", latest.skipped);
        let (snap, path) = latest.found.unwrap();
        assert_eq!(snap.step, 4);
        assert!(path.ends_with("step-000000004.json"), "{}", path.display());
        let mut b = trainer(classes);
        b.load_state(&snap).unwrap();
        let state: String = snap.value("rng").unwrap();
        let mut rng = state.parse::<RngState>().unwrap().restore();
        for _ in 5..=7 {
            let (x, y) = batch(&mut rng, classes);
            b.step(&x, y.as_ref(), &mut rng).unwrap();
        }
        assert_eq!(fingerprint(&a), fingerprint(&b), "classes {classes:?}");
        // Without the restore the run differs: the comparison can fail.
        let mut c = trainer(classes);
        let mut rng = state.parse::<RngState>().unwrap().restore();
        for _ in 5..=7 {
            let (x, y) = batch(&mut rng, classes);
            c.step(&x, y.as_ref(), &mut rng).unwrap();
        }
        assert_ne!(fingerprint(&a).0, fingerprint(&c).0);
    }
}

#[test]
fn a_snapshot_of_another_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotDir::new(dir.path());
    let mut a = trainer(None);
    let (x, _) = batch(&mut seeded_rng(1), None);
    a.step(&x, None, &mut seeded_rng(2)).unwrap();
    let mut snap = Snapshot::new(1);
    a.save_state(&mut snap).unwrap();
    store.save(&snap).unwrap();
    let snap = store.latest(&Device::Cpu).unwrap().found.unwrap().0;
    let model = Igebm::new(
        &IgebmConfig::small(1, 8, 8),
        &Device::Cpu,
        &mut seeded_rng(1),
    )
    .unwrap();
    let mut other = CdTrainer::new(
        model,
        CdConfig {
            l2_coeff: 0.5,
            ..config()
        },
    )
    .unwrap();
    let err = other.load_state(&snap).unwrap_err().to_string();
    assert!(err.contains("another training config"), "{err}");
    // Another architecture: the tensor names or shapes do not match.
    let mut wide = IgebmConfig::small(1, 8, 16);
    wide.num_classes = None;
    let model = Igebm::new(&wide, &Device::Cpu, &mut seeded_rng(1)).unwrap();
    let mut other = CdTrainer::new(model, config()).unwrap();
    let err = other.load_state(&snap).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
}

fn small_snapshot(step: usize) -> Snapshot {
    let mut s = Snapshot::new(step);
    s.tensors.insert(
        "w".into(),
        Tensor::new(&[step as f32, 1.5, -2.0], &Device::Cpu).unwrap(),
    );
    s.set_value("note", &format!("step {step}")).unwrap();
    s
}

#[test]
fn snapshots_round_trip_and_only_the_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotDir::new(dir.path()).keeping(2);
    for step in [10, 20, 30] {
        store.save(&small_snapshot(step)).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "step-000000020.json",
            "step-000000020.safetensors",
            "step-000000030.json",
            "step-000000030.safetensors"
        ]
    );
    let (snap, _) = store.latest(&Device::Cpu).unwrap().found.unwrap();
    assert_eq!(snap.step, 30);
    assert_eq!(
        snap.tensor("w").unwrap().to_vec1::<f32>().unwrap(),
        [30.0, 1.5, -2.0]
    );
    assert_eq!(snap.value::<String>("note").unwrap(), "step 30");
    let err = snap.value::<String>("absent").unwrap_err().to_string();
    assert!(err.contains("no value `absent`"), "{err}");
    store.clear().unwrap();
    assert!(store.latest(&Device::Cpu).unwrap().found.is_none());
    // A folder that does not exist holds no snapshot, and that is not an error.
    let none = SnapshotDir::new(dir.path().join("never-written"));
    assert!(none.latest(&Device::Cpu).unwrap().found.is_none());
}

/// Each kind of damage to the newest snapshot: it is named with its problem, and the previous
/// good snapshot is used.
#[test]
fn a_damaged_snapshot_is_named_and_the_previous_one_used() {
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage, &str); 6] = [
        (
            "flipped byte in the tensors",
            |d| flip_last_byte(&d.join("step-000000020.safetensors")),
            "SHA-256",
        ),
        (
            "truncated tensors",
            |d| truncate(&d.join("step-000000020.safetensors"), 10),
            "truncated",
        ),
        (
            "missing tensors",
            |d| std::fs::remove_file(d.join("step-000000020.safetensors")).unwrap(),
            "step-000000020.safetensors",
        ),
        (
            "truncated manifest",
            |d| truncate(&d.join("step-000000020.json"), 30),
            "not valid JSON",
        ),
        (
            "edited manifest",
            |d| {
                let p = d.join("step-000000020.json");
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, text.replace("\"step\": 20", "\"step\": 21")).unwrap();
            },
            "checksum does not match",
        ),
        (
            "empty manifest",
            |d| std::fs::write(d.join("step-000000020.json"), b"").unwrap(),
            "not valid JSON",
        ),
    ];
    for (what, damage, phrase) in damages {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotDir::new(dir.path());
        store.save(&small_snapshot(10)).unwrap();
        store.save(&small_snapshot(20)).unwrap();
        damage(dir.path());
        let latest = store.latest(&Device::Cpu).unwrap();
        assert_eq!(latest.skipped.len(), 1, "{what}");
        let skipped = &latest.skipped[0];
        assert!(
            skipped.path.ends_with("step-000000020.json"),
            "{what}: {}",
            skipped.path.display()
        );
        assert!(
            skipped.problem.contains(phrase),
            "{what}: {}",
            skipped.problem
        );
        let (snap, _) = latest
            .found
            .unwrap_or_else(|| panic!("{what}: no fallback"));
        assert_eq!(snap.step, 10, "{what}");
        assert_eq!(snap.tensor("w").unwrap().to_vec1::<f32>().unwrap()[0], 10.0);
    }
}

/// A crash between the tensors file and its manifest leaves a snapshot that does not exist yet;
/// stray temporary files are ignored.
#[test]
fn a_half_written_snapshot_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotDir::new(dir.path());
    store.save(&small_snapshot(10)).unwrap();
    std::fs::write(dir.path().join("step-000000020.safetensors"), b"partial").unwrap();
    std::fs::write(dir.path().join(".step-000000030.json.123.tmp"), b"{").unwrap();
    let latest = store.latest(&Device::Cpu).unwrap();
    assert!(latest.skipped.is_empty());
    assert_eq!(latest.found.unwrap().0.step, 10);
}

fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &std::path::Path, keep: usize) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..keep.min(bytes.len())]).unwrap();
}

/// The learning rate travels with the optimiser state: one changed by `set_lr` comes back on
/// restore, and a snapshot without it (written before it was stored) leaves the rate alone.
#[test]
fn the_learning_rate_is_restored_with_the_optimiser() {
    let var =
        candle_core::Var::from_tensor(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let made = ebm_train::AdamConfig {
        lr: 1e-3,
        ..Default::default()
    };
    let mut adam = ebm_train::Adam::new(vec![var.clone()], made.clone()).unwrap();
    adam.set_lr(2.5e-4).unwrap();
    let mut snapshot = Snapshot::new(1);
    snapshot.put_adam("opt", &adam).unwrap();

    let mut restored = ebm_train::Adam::new(vec![var.clone()], made.clone()).unwrap();
    assert_eq!(restored.config().lr, 1e-3);
    snapshot.restore_adam("opt", &mut restored).unwrap();
    assert_eq!(restored.config().lr, 2.5e-4);

    snapshot.meta.remove("opt.lr");
    let mut old = ebm_train::Adam::new(vec![var], made).unwrap();
    snapshot.restore_adam("opt", &mut old).unwrap();
    assert_eq!(old.config().lr, 1e-3);
}
