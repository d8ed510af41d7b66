//! Crash safety of `cargo xtask reproduce igebm-apps`: a tiny run killed with SIGKILL (and once
//! with Ctrl-C) at random moments, over and over, and resumed each time with `--resume`, ends
//! in exactly the state of an uninterrupted run with the same seed: the same final snapshot of
//! every training loop (classifier, Split MNIST tasks, trajectory models), the same saved
//! weights and the same report metrics (timings aside), bit for bit. A snapshot written under
//! another recipe is refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::Rng as _;
use xtask::reproduce::igebm_apps::Recipe;

/// Steps of every training loop (per model, per task).
const ITERATIONS: usize = 24;
/// Checkpoint interval.
const EVERY: usize = 3;
/// Runs killed (or interrupted) before one is let finish.
const ROUNDS: usize = 30;
/// The training loops' checkpoint folders, in training order.
const LOOPS: &[&str] = &[
    "classify-ebm",
    "classify-baseline",
    "continual-ebm-task-1",
    "continual-baseline-task-1",
    "continual-ebm-task-2",
    "continual-baseline-task-2",
    "trajectory-ebm",
    "trajectory-regressor",
];

/// The quick recipe shrunk to seconds: tiny networks, two continual tasks, `ITERATIONS` steps
/// of each loop.
fn tiny() -> Recipe {
    let mut r = Recipe::quick();
    r.set_iterations(ITERATIONS);
    for ebm in [&mut r.classify.ebm, &mut r.continual.ebm] {
        ebm.model.stem_channels = 4;
        for b in &mut ebm.model.blocks {
            b.channels = 4;
        }
        ebm.batch_size = 4;
        ebm.train.clf_images = 4;
        ebm.train.cd.langevin.steps = 2;
        ebm.train.cd.replay_capacity = Some(16);
        ebm.train.cd.ema_decay = Some(0.9);
    }
    for base in [&mut r.classify.baseline, &mut r.continual.baseline] {
        base.model.widths = vec![4, 4];
        base.model.feature_dim = 6;
        base.batch_size = 4;
    }
    r.classify.test_images = 20;
    r.attack.images = 6;
    r.attack.steps = 2;
    r.attack.batch = 4;
    r.attack.linf_eps = vec![0.05, 0.1];
    r.attack.l2_eps = vec![1.0];
    r.continual.tasks = vec![vec![0, 1], vec![2, 3]];
    let t = &mut r.trajectories;
    t.train_trajectories = 4;
    t.test_trajectories = 3;
    t.system.steps = 30;
    t.history = 2;
    t.horizons = vec![3, 5];
    t.batch_size = 8;
    t.ebm.hidden = vec![8];
    t.ebm.train_langevin.steps = 2;
    t.ebm.predict_langevin.steps = 2;
    t.regressor.hidden = vec![8];
    t.regressor.batch_size = 8;
    r
}

fn command(data: &Path, out: &Path, resume: bool, seed: u64, sets: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["reproduce", "igebm-apps", "--seed", &seed.to_string()])
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .args(["--checkpoint-every", &EVERY.to_string()])
        .args(common::set_args(&tiny()))
        .args(sets);
    if resume {
        c.arg("--resume");
    }
    c.env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs to completion; returns stdout, panicking with both streams on failure.
fn run_to_end(data: &Path, out: &Path, resume: bool, seed: u64) -> String {
    let output = command(data, out, resume, seed, &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run failed:\n{stdout}\n{stderr}");
    stdout
}

/// The newest checkpoint step of each loop (0 when it has none yet), in `LOOPS` order.
fn newest(out: &Path) -> Vec<usize> {
    LOOPS
        .iter()
        .map(|name| {
            std::fs::read_dir(out.join("igebm-apps/checkpoints").join(name))
                .map(|d| {
                    d.filter_map(|e| {
                        let name = e.ok()?.file_name().to_string_lossy().into_owned();
                        name.strip_prefix("step-")?
                            .strip_suffix(".json")?
                            .parse::<usize>()
                            .ok()
                    })
                    .max()
                    .unwrap_or(0)
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Every "`<loop>`: resuming from step S" line of a run's output, as (loop, S).
fn resumed(stdout: &str) -> Vec<(String, usize)> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("igebm-apps ")?;
            let (name, rest) = rest.split_once(": resuming from step ")?;
            Some((
                name.to_string(),
                rest.split_whitespace().next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The state of a finished run that must not depend on interruptions.
#[derive(PartialEq)]
struct Outcome {
    /// Per loop, its final snapshot's tensors (weights, Adam moments, replay buffer, EMA, data
    /// order, loss curves) as raw bytes by name, and its values (generator state, step log...)
    /// but the timings.
    snapshots: Vec<(String, BTreeMap<String, Vec<u8>>, String)>,
    /// `checkpoints/*.safetensors`: the saved classifiers.
    weights: Vec<(String, Vec<u8>)>,
    /// The report's metrics other than timings.
    metrics: Vec<(String, String)>,
}

fn outcome(out: &Path) -> Outcome {
    let dir = out.join("igebm-apps");
    let checkpoints = dir.join("checkpoints");
    let final_step = format!("step-{ITERATIONS:09}");
    let snapshots = LOOPS
        .iter()
        .map(|name| {
            let stem = checkpoints.join(name).join(&final_step);
            let tensors =
                candle_core::safetensors::load(stem.with_extension("safetensors"), &Device::Cpu)
                    .unwrap_or_else(|e| panic!("{name}'s final snapshot: {e}"));
            let tensors = tensors
                .into_iter()
                .map(|(k, t)| {
                    let bytes = t
                        .flatten_all()
                        .unwrap()
                        .to_dtype(candle_core::DType::F64)
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect();
                    (k, bytes)
                })
                .collect();
            let manifest: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(stem.with_extension("json")).unwrap(),
            )
            .unwrap();
            let mut meta = manifest["meta"].clone();
            drop_timings(&mut meta);
            (name.to_string(), tensors, meta.to_string())
        })
        .collect();
    let mut weights: Vec<PathBuf> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    assert_eq!(weights.len(), 2, "{weights:?}");
    let weights = weights
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let metrics = report
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.contains("seconds"))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    Outcome {
        snapshots,
        weights,
        metrics,
    }
}

/// Removes every `*seconds*` key, at any depth.
fn drop_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.contains("seconds"));
            m.values_mut().for_each(drop_timings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_timings),
        _ => {}
    }
}

/// Sends SIGINT (Ctrl-C) to the child.
fn ctrl_c(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn killed_at_random_moments_then_resumed_ends_like_an_uninterrupted_run() {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_data(&data, 60, 30);
    let reference = tmp.path().join("reference");
    run_to_end(&data, &reference, false, 3);
    let expected = outcome(&reference);
    let reference_seconds = start.elapsed().as_secs_f64();

    let killed = tmp.path().join("killed");
    let mut rng = ebm_core::seeded_rng(2025);
    let total = ITERATIONS * LOOPS.len();
    let mut all_resumed = Vec::new();
    let mut finished = false;
    // Steps a checkpoint may have besides multiples of EVERY: the one Ctrl-C wrote.
    let mut interrupted_at = None;
    for round in 0..ROUNDS {
        let mut child = command(&data, &killed, true, 3, &[]).spawn().unwrap();
        let done = || newest(&killed).iter().sum::<usize>();
        // A fifth of the kills anywhere in the first 200 ms (start-up, resuming, evaluation);
        // the rest once 1-6 more checkpoints of any loop have appeared, plus 0-20 ms: during
        // training steps and checkpoint writes. Round 2 is a Ctrl-C instead of a SIGKILL.
        if rng.random_bool(0.2) {
            let until = Instant::now() + Duration::from_millis(rng.random_range(0..200));
            while Instant::now() < until && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            let target = (done() + EVERY * rng.random_range(1..=6)).min(total);
            let deadline = Instant::now() + Duration::from_secs(60);
            while done() < target && child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "round {round}: no progress");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..20)));
        }
        let ended_by_itself = child.try_wait().unwrap().is_some();
        if !ended_by_itself {
            if round == 2 {
                ctrl_c(&child);
            } else {
                child.kill().unwrap(); // SIGKILL
            }
        }
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stdout.contains("skipping checkpoint"),
            "round {round}: an atomic checkpoint was found corrupt:\n{stdout}"
        );
        assert!(!stderr.contains("panicked"), "round {round}: {stderr}");
        if round == 2 && !ended_by_itself && !output.status.success() {
            // Ctrl-C: the loop finished its step, wrote a checkpoint, and said how to go on.
            assert!(stderr.contains("--resume"), "round {round}: {stderr}");
            let step: usize = stderr
                .split("interrupted after step ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("round {round}: {stderr}"));
            interrupted_at = Some(step);
        }
        for (name, step) in resumed(&stdout) {
            assert!(LOOPS.contains(&name.as_str()), "unknown loop {name}");
            assert!(
                step % EVERY == 0 || step == ITERATIONS || Some(step) == interrupted_at,
                "round {round}: {name} resumed from step {step}, not a checkpoint step"
            );
            all_resumed.push((round, name, step));
        }
        if ended_by_itself {
            assert!(
                output.status.success(),
                "round {round} failed:\n{stdout}\n{stderr}"
            );
            finished = true;
            break;
        }
    }
    if !finished {
        let stdout = run_to_end(&data, &killed, true, 3);
        for (name, step) in resumed(&stdout) {
            all_resumed.push((ROUNDS, name, step));
        }
    }
    // Resumptions in the middle of a loop's training (the others restore finished loops).
    let mid_training: Vec<_> = all_resumed
        .iter()
        .filter(|(_, _, step)| (1..ITERATIONS).contains(step))
        .collect();
    assert!(
        mid_training.len() >= 3,
        "too few kills landed during training to test anything: {all_resumed:?}"
    );
    let got = outcome(&killed);
    for (g, e) in got.snapshots.iter().zip(&expected.snapshots) {
        assert!(g.1 == e.1, "{}: the final snapshot's tensors differ", g.0);
        assert_eq!(g.2, e.2, "{}: the final snapshot's values differ", g.0);
    }
    assert!(got.weights == expected.weights, "the saved weights differ");
    assert_eq!(got.metrics, expected.metrics, "the metrics differ");
    eprintln!(
        "reference run {reference_seconds:.1} s, all {:.1} s; resumed mid-training (round, loop, step): {mid_training:?}",
        start.elapsed().as_secs_f64()
    );

    // The negative control: another seed changes the outcome, so the comparison can fail.
    let other = tmp.path().join("other");
    run_to_end(&data, &other, false, 4);
    let changed = outcome(&other);
    assert!(changed.weights != expected.weights);
    assert!(changed
        .snapshots
        .iter()
        .zip(&expected.snapshots)
        .all(|(c, e)| c.1 != e.1));
}

/// A snapshot written under another recipe (or seed) is refused with an error that says so,
/// names the loop and says how to start over, before any training.
#[test]
fn resuming_under_another_recipe_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_data(&data, 60, 30);
    let reference = tmp.path().join("reference");
    run_to_end(&data, &reference, false, 3);
    let before = newest(&reference);
    // Resuming under another recipe is refused with a clear error, before any training.
    let output = command(
        &data,
        &reference,
        true,
        3,
        &["--set".into(), "continual.ebm.train.clf_weight=5.0".into()],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("igebm-apps classify-ebm") && stderr.contains("another recipe"),
        "{stderr}"
    );
    assert!(stderr.contains("without --resume"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // So is one of another seed.
    let output = command(&data, &reference, true, 4, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another recipe"), "{stderr}");
    // The refused runs left the checkpoints as they were.
    assert_eq!(newest(&reference), before);
    assert_eq!(before, vec![ITERATIONS; LOOPS.len()]);
    // And the same recipe and seed resume fine: every loop restored at its last step.
    let stdout = run_to_end(&data, &reference, true, 3);
    let steps = resumed(&stdout);
    assert_eq!(steps.len(), LOOPS.len(), "{stdout}");
    assert!(steps.iter().all(|(_, s)| *s == ITERATIONS), "{steps:?}");
}
