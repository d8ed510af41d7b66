//! Training snapshots: a VAE trainer and a VAEBM trainer restored from a snapshot (in memory,
//! or written to disk and read back) continue exactly as the trainers that took it, bit for
//! bit, roll-backs, the eps_z buffer and the regulariser's state included; a snapshot that
//! misses state gives a different run (the comparison can fail); a snapshot taken with another
//! config is refused.

mod common;

use candle_core::{DType, Device, Tensor};
use ebm_core::{seeded_rng, Rng};
use ebm_nn::{Igebm, IgebmConfig, Trainable};
use ebm_train::{AdamConfig, Snapshot, SnapshotDir};
use ebm_vaebm::{
    BufferConfig, DivergenceGuard, EpsLangevin, Hierarchy, Vae, VaeTrainConfig, VaeTrainer, Vaebm,
    VaebmTrainConfig, VaebmTrainer,
};
use serde_json::Value;

use common::{squares, tiny_vae};

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

type State = (Vec<(String, Vec<u64>)>, Value);

/// Everything a snapshot holds, timings left out, for comparisons.
fn contents(s: Snapshot) -> State {
    let mut tensors: Vec<(String, Vec<u64>)> = s
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), bits(v)))
        .collect();
    tensors.sort();
    (tensors, without_timings(&Value::Object(s.meta)))
}

fn params<M: Trainable>(m: &M) -> Vec<Vec<u64>> {
    m.params()
        .iter()
        .map(|(_, v)| bits(v.as_tensor()))
        .collect()
}

fn adam(a: &ebm_train::Adam) -> Vec<Vec<u64>> {
    let (m, v) = a.moments();
    let mut out = vec![vec![a.steps() as u64, a.config().lr.to_bits()]];
    out.extend(m.iter().chain(v).map(bits));
    out
}

fn through_disk(snapshot: &Snapshot) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotDir::new(dir.path());
    store.save(snapshot).unwrap();
    store.latest(&Device::Cpu).unwrap().found.unwrap().0
}

// ---------------------------------------------------------------------------------------------
// The VAE.

fn vae_config() -> VaeTrainConfig {
    VaeTrainConfig {
        kl_warmup: 5,
        ..VaeTrainConfig::default()
    }
}

fn vae_trainer(seed: u64, config: VaeTrainConfig) -> VaeTrainer {
    VaeTrainer::new(
        tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F32, seed),
        config,
    )
    .unwrap()
}

fn vae_steps(t: &mut VaeTrainer, n: usize, rng: &mut Rng) {
    for _ in 0..n {
        let x = squares(8, rng);
        t.step(&x, rng).unwrap();
    }
}

fn vae_state(t: &VaeTrainer) -> State {
    let mut s = Snapshot::new(0);
    t.save_state(&mut s).unwrap();
    contents(s)
}

/// Trains 3 steps, snapshots, trains 3 more; returns the trainer, the snapshot and the
/// generator at the snapshot.
fn vae_reference() -> (VaeTrainer, Snapshot, Rng) {
    let mut original = vae_trainer(1, vae_config());
    let mut rng = seeded_rng(7);
    vae_steps(&mut original, 3, &mut rng);
    let mut snapshot = Snapshot::new(3);
    original.save_state(&mut snapshot).unwrap();
    let at_snapshot = rng.clone();
    vae_steps(&mut original, 3, &mut rng);
    (original, snapshot, at_snapshot)
}

#[test]
fn a_restored_vae_trainer_continues_bit_for_bit() {
    let (original, snapshot, at_snapshot) = vae_reference();
    for snapshot in [snapshot.clone(), through_disk(&snapshot)] {
        let mut restored = vae_trainer(99, vae_config());
        assert!(params(restored.vae()) != params(original.vae()));
        restored.load_state(&snapshot).unwrap();
        vae_steps(&mut restored, 3, &mut at_snapshot.clone());
        assert_eq!(restored.history().len(), 6);
        assert!(params(restored.vae()) == params(original.vae()), "weights");
        assert!(
            adam(restored.optimizer()) == adam(original.optimizer()),
            "Adam"
        );
        assert_eq!(
            without_timings(&serde_json::to_value(restored.history()).unwrap()),
            without_timings(&serde_json::to_value(original.history()).unwrap())
        );
        assert!(vae_state(&restored) == vae_state(&original));
    }
}

#[test]
fn a_vae_snapshot_without_the_optimiser_state_gives_another_run() {
    let (original, snapshot, at_snapshot) = vae_reference();
    let mut damaged = snapshot.clone();
    for (k, t) in damaged.tensors.iter_mut() {
        if k.contains("adam") {
            *t = t.zeros_like().unwrap();
        }
    }
    let mut restored = vae_trainer(99, vae_config());
    restored.load_state(&damaged).unwrap();
    vae_steps(&mut restored, 3, &mut at_snapshot.clone());
    assert!(params(restored.vae()) != params(original.vae()));
    assert!(vae_state(&restored) != vae_state(&original));
}

#[test]
fn a_vae_snapshot_of_another_config_is_refused() {
    let (_, snapshot, _) = vae_reference();
    let mut t = vae_trainer(1, VaeTrainConfig::default());
    let before = params(t.vae());
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("another VAE training config"), "{err}");
    assert!(err.contains("kl_warmup"), "{err}");
    assert!(
        params(t.vae()) == before,
        "a refused snapshot changes nothing"
    );

    let mut t = VaeTrainer::new(tiny_vae(Hierarchy::Single, DType::F32, 1), vae_config()).unwrap();
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("another VAE config"), "{err}");
    assert!(err.contains("hierarchy"), "{err}");

    let err = t.load_state(&Snapshot::new(0)).unwrap_err().to_string();
    assert!(err.contains("no VAE trainer"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The VAEBM energy.

fn ebm_config() -> IgebmConfig {
    let mut c = IgebmConfig::small(1, 8, 4);
    c.blocks.truncate(2);
    c.spectral_norm = true;
    c
}

fn vaebm_config() -> VaebmTrainConfig {
    VaebmTrainConfig {
        adam: AdamConfig {
            lr: 1e-3,
            ..VaebmTrainConfig::default().adam
        },
        langevin: EpsLangevin {
            step_size: 1e-2,
            steps: 3,
        },
        buffer: Some(BufferConfig {
            capacity: 12,
            max_probability: 0.5,
            anneal_iterations: 0,
        }),
        guard: DivergenceGuard {
            max_abs_energy: 1e3,
            snapshot_every: 2,
            ..DivergenceGuard::default()
        },
        ..VaebmTrainConfig::default()
    }
}

/// A VAEBM of a VAE and an energy initialised from `seed`, its trainer's regulariser too.
fn vaebm_trainer(seed: u64, config: VaebmTrainConfig) -> VaebmTrainer {
    let vae: Vae = tiny_vae(Hierarchy::Single, DType::F32, seed);
    let mut rng = seeded_rng(seed + 1);
    let ebm = Igebm::new(&ebm_config(), &Device::Cpu, &mut rng).unwrap();
    VaebmTrainer::new(Vaebm::new(vae, ebm).unwrap(), config, &mut rng).unwrap()
}

/// Iterations 5 and 6 (1-based) get a poisoned batch: two roll-backs, the second to an older
/// snapshot.
const POISONED: [usize; 2] = [5, 6];
const TOTAL: usize = 9;

fn vaebm_steps(t: &mut VaebmTrainer, until: usize, rng: &mut Rng) {
    while t.iterations() < until {
        let mut x = squares(8, rng);
        if POISONED.contains(&(t.iterations() + 1)) {
            x = (x * 1e6).unwrap();
        }
        t.step(&x, rng).unwrap();
    }
}

fn vaebm_state(t: &VaebmTrainer) -> State {
    let mut s = Snapshot::new(0);
    t.save_state(&mut s).unwrap();
    contents(s)
}

fn vaebm_reference(at: usize) -> (VaebmTrainer, Snapshot, Rng) {
    let mut original = vaebm_trainer(1, vaebm_config());
    let mut rng = seeded_rng(7);
    vaebm_steps(&mut original, at, &mut rng);
    let mut snapshot = Snapshot::new(at);
    original.save_state(&mut snapshot).unwrap();
    let at_snapshot = rng.clone();
    vaebm_steps(&mut original, TOTAL, &mut rng);
    (original, snapshot, at_snapshot)
}

#[test]
fn a_restored_vaebm_trainer_continues_bit_for_bit() {
    // At 4: a full buffer and no roll-back yet; at 5: just after a roll-back (empty buffer,
    // a lowered learning rate, a failure counted, the next roll-back to an older snapshot).
    for at in [4, 5] {
        let (original, snapshot, at_snapshot) = vaebm_reference(at);
        assert_eq!(
            original.rollbacks().len(),
            2,
            "the schedule rolls back twice"
        );
        assert!(
            original.rollbacks()[1].restored_iteration < original.rollbacks()[0].restored_iteration
        );
        assert!(
            original.history().iter().any(|l| l.replayed > 0),
            "the buffer was used"
        );
        for snapshot in [snapshot.clone(), through_disk(&snapshot)] {
            // Another VAE, energy and regulariser state: all of it must come from the snapshot.
            let mut restored = vaebm_trainer(50, vaebm_config());
            assert!(params(restored.model().ebm()) != params(original.model().ebm()));
            restored.load_state(&snapshot).unwrap();
            assert_eq!(restored.iterations(), at);
            vaebm_steps(&mut restored, TOTAL, &mut at_snapshot.clone());
            let (r, o) = (&restored, &original);
            assert!(
                params(r.model().ebm()) == params(o.model().ebm()),
                "at {at}: energy"
            );
            assert!(
                params(r.model().vae_weights()) == params(o.model().vae_weights()),
                "at {at}: VAE"
            );
            assert!(adam(r.optimizer()) == adam(o.optimizer()), "at {at}: Adam");
            assert_eq!(r.lr(), o.lr());
            assert_eq!(r.rollbacks(), o.rollbacks());
            assert_eq!(
                without_timings(&serde_json::to_value(r.history()).unwrap()),
                without_timings(&serde_json::to_value(o.history()).unwrap())
            );
            assert_eq!(
                r.buffer().unwrap().contents(),
                o.buffer().unwrap().contents()
            );
            assert!(
                vaebm_state(r) == vaebm_state(o),
                "at {at}: snapshots differ"
            );
        }
    }
}

/// What is damaged, and which tensors.
type Damage = (&'static str, fn(&str) -> bool);

#[test]
fn a_vaebm_snapshot_without_the_buffer_or_regulariser_state_gives_another_run() {
    // At 7, after the roll-backs (each empties the buffer): the rows of iteration 7 feed 8 and 9.
    let (original, snapshot, at_snapshot) = vaebm_reference(7);
    let damages: [Damage; 2] = [
        ("the eps_z buffer", |k| k == "vaebm.eps_buffer"),
        ("the power-iteration vectors", |k| {
            k.starts_with("vaebm.spectral.u")
        }),
    ];
    for (what, hit) in damages {
        let mut damaged = snapshot.clone();
        let mut n = 0;
        for (k, t) in damaged.tensors.iter_mut() {
            if hit(k) {
                *t = (t.ones_like().unwrap() * 0.1).unwrap();
                n += 1;
            }
        }
        assert!(n > 0, "{what}: nothing to damage");
        let mut restored = vaebm_trainer(50, vaebm_config());
        restored.load_state(&damaged).unwrap();
        vaebm_steps(&mut restored, TOTAL, &mut at_snapshot.clone());
        assert!(
            vaebm_state(&restored) != vaebm_state(&original),
            "{what}: the run did not change"
        );
    }
}

#[test]
fn a_vaebm_snapshot_of_another_config_is_refused() {
    let (_, snapshot, _) = vaebm_reference(3);
    let mut other = vaebm_config();
    other.alpha_s = 0.1;
    let mut t = vaebm_trainer(1, other);
    let before = params(t.model().ebm());
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("another training config"), "{err}");
    assert!(err.contains("alpha_s"), "{err}");
    assert!(
        params(t.model().ebm()) == before,
        "a refused snapshot changes nothing"
    );

    // Another energy.
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 1);
    let mut cfg = ebm_config();
    cfg.stem_channels = 2;
    let ebm = Igebm::new(&cfg, &Device::Cpu, &mut seeded_rng(0)).unwrap();
    let mut t = VaebmTrainer::new(
        Vaebm::new(vae.clone(), ebm).unwrap(),
        vaebm_config(),
        &mut seeded_rng(0),
    )
    .unwrap();
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("another energy config"), "{err}");
    assert!(err.contains("stem_channels"), "{err}");

    // A VAEBM on a frozen VAE copy cannot take the VAE's weights.
    let ebm = Igebm::new(&ebm_config(), &Device::Cpu, &mut seeded_rng(0)).unwrap();
    let mut t = VaebmTrainer::new(
        Vaebm::new(vae.frozen().unwrap(), ebm).unwrap(),
        vaebm_config(),
        &mut seeded_rng(0),
    )
    .unwrap();
    let err = t.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("frozen VAE copy"), "{err}");

    // A VAE trainer's snapshot.
    let (_, vae_snapshot, _) = vae_reference();
    let mut t = vaebm_trainer(1, vaebm_config());
    let err = t.load_state(&vae_snapshot).unwrap_err().to_string();
    assert!(err.contains("`vae` trainer"), "{err}");
}

#[test]
fn the_eps_buffer_round_trips_and_rejects_bad_contents() {
    let mut b = ebm_vaebm::EpsBuffer::new(
        BufferConfig {
            capacity: 3,
            max_probability: 1.0,
            anneal_iterations: 0,
        },
        2,
    )
    .unwrap();
    b.push(&Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(b.contents(), vec![1., 2., 3., 4.]);
    let mut c = b.clone();
    c.clear();
    c.restore(b.contents()).unwrap();
    assert_eq!(c.contents(), b.contents());
    assert!(c
        .restore(vec![1., 2., 3.])
        .unwrap_err()
        .to_string()
        .contains("whole rows"));
    assert!(c
        .restore(vec![0.; 8])
        .unwrap_err()
        .to_string()
        .contains("capacity"));
    assert!(c
        .restore(vec![f32::NAN, 0.])
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    assert_eq!(
        c.contents(),
        b.contents(),
        "a refused restore changes nothing"
    );
}
