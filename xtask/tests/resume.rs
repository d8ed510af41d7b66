//! Crash safety of training: `cargo xtask reproduce igebm` killed with SIGKILL at random moments,
//! many times over, resumes each time from a complete checkpoint and ends in exactly the state
//! of an uninterrupted run with the same seed (weights, samples and metrics, bit for bit);
//! Ctrl-C writes a checkpoint and stops; a corrupt checkpoint is named and passed over.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use rand::Rng as _;

const ITERATIONS: usize = 150;
const EVERY: usize = 7;

/// The command of a tiny IGEBM run into `out`.
fn command(data: &Path, out: &Path, resume: bool) -> Command {
    command_with(data, out, resume, 5, EVERY)
}

fn command_with(data: &Path, out: &Path, resume: bool, seed: u64, every: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["reproduce", "igebm", "--seed", &seed.to_string()])
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .args(["--iterations", &ITERATIONS.to_string()])
        .args(["--checkpoint-every", &every.to_string()]);
    for set in [
        "model.stem_channels=4",
        r#"model.blocks=[{"channels":4,"downsample":true},{"channels":4,"downsample":true}]"#,
        "batch_size=8",
        "train.langevin.steps=3",
        "train.replay_capacity=64",
        "eval_langevin.steps=3",
        "samples=20",
        r#"models=["unconditional"]"#,
        "eval.ood_images=16",
        "eval.restore_images=4",
        "eval.restore_langevin.steps=2",
        "eval.fid_samples=8",
        "eval.fid_reference=16",
        "eval.classifier.iterations=3",
        "eval.classifier.batch_size=8",
        "eval.classifier.model.widths=[4,4]",
        "eval.classifier.model.feature_dim=6",
    ] {
        c.args(["--set", set]);
    }
    if resume {
        c.arg("--resume");
    }
    c.env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs to completion; returns stdout, panicking with stderr on failure.
fn run_to_end(data: &Path, out: &Path, resume: bool) -> String {
    let output = command(data, out, resume).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run failed:\n{stdout}\n{stderr}");
    stdout
}

/// The step a run resumed from, from its output: `Some(0)` for "starting from step 0".
fn resumed_step(stdout: &str) -> Option<usize> {
    if stdout.contains("no complete checkpoint") {
        return Some(0);
    }
    let rest = stdout.split("resuming from step ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Everything a finished run leaves that must not depend on interruptions: the final weights,
/// the samples, and the metrics other than timings.
type Outcome = (Vec<u8>, Vec<Vec<u8>>, Vec<(String, String)>);

fn outcome(out: &Path) -> Outcome {
    let dir = out.join("igebm");
    let weights = std::fs::read(dir.join("checkpoints/unconditional.safetensors")).unwrap();
    let mut npys: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .collect();
    npys.sort();
    assert!(npys.len() >= 2, "samples were written");
    let samples = npys.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let metrics = report
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.contains("seconds"))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    (weights, samples, metrics)
}

#[test]
fn sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_data(&data, 400, 100);
    let reference = tmp.path().join("reference");
    run_to_end(&data, &reference, false);
    let expected = outcome(&reference);

    let killed = tmp.path().join("killed");
    let mut rng = ebm_core::seeded_rng(2024);
    let mut last = 0;
    let mut resumed_mid_training = 0;
    let mut finished = false;
    let mut seen = Vec::new();
    for round in 0..40 {
        let mut child = command(&data, &killed, true).spawn().unwrap();
        // A quarter of the kills anywhere in the first 300 ms (start-up, loading, resuming);
        // the rest once 1-3 more checkpoints have appeared, plus 0-25 ms: during training
        // steps and checkpoint writes.
        let snapshots = killed.join("igebm/checkpoints/unconditional");
        let newest = || {
            std::fs::read_dir(&snapshots)
                .map(|d| {
                    d.filter_map(|e| {
                        let name = e.unwrap().file_name().to_string_lossy().into_owned();
                        name.strip_prefix("step-")?
                            .strip_suffix(".json")?
                            .parse::<usize>()
                            .ok()
                    })
                    .max()
                    .unwrap_or(0)
                })
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        if rng.random_bool(0.25) {
            let until = Instant::now() + Duration::from_millis(rng.random_range(0..300));
            while Instant::now() < until && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            let target = newest() + EVERY * rng.random_range(1..=3);
            while newest() < target.min(ITERATIONS - ITERATIONS % EVERY)
                && child.try_wait().unwrap().is_none()
            {
                assert!(Instant::now() < deadline, "round {round}: no progress");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..25)));
        }
        let ended_by_itself = child.try_wait().unwrap().is_some();
        if !ended_by_itself {
            child.kill().unwrap(); // SIGKILL
        }
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !stdout.contains("skipping checkpoint"),
            "round {round}: an atomic checkpoint was found corrupt:\n{stdout}"
        );
        seen.push(resumed_step(&stdout));
        if let Some(step) = resumed_step(&stdout) {
            assert!(
                step >= last,
                "round {round}: resumed from step {step} after reaching {last}"
            );
            assert!(
                step % EVERY == 0 || step == ITERATIONS,
                "round {round}: step {step} is not a checkpoint step"
            );
            if step > 0 && step < ITERATIONS && step > last {
                resumed_mid_training += 1;
            }
            last = step;
        }
        if ended_by_itself {
            assert!(output.status.success(), "round {round} failed: {stdout}");
            finished = true;
            break;
        }
        // Killed twice after training ended (during the evaluation): enough of those.
        if seen.iter().filter(|s| **s == Some(ITERATIONS)).count() >= 2 {
            break;
        }
    }
    if !finished {
        run_to_end(&data, &killed, true);
    }
    assert!(
        resumed_mid_training >= 3,
        "too few kills landed during training ({resumed_mid_training}) to test anything; resumed from {seen:?}"
    );
    assert!(outcome(&killed) == expected, "the resumed run differs");
    eprintln!("SIGKILL rounds resumed from steps {seen:?} (None: killed before it said)");

    // A different seed changes the outcome: the comparison above can fail.
    let other = tmp.path().join("other");
    let output = command_with(&data, &other, false, 6, EVERY)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(outcome(&other).0 != expected.0);
}

#[test]
fn ctrl_c_checkpoints_and_stops_and_a_corrupt_checkpoint_is_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_data(&data, 400, 100);
    let reference = tmp.path().join("reference");
    run_to_end(&data, &reference, false);
    let expected = outcome(&reference);

    // Ctrl-C (SIGINT) once training is under way: a checkpoint of the current step, then exit.
    let out = tmp.path().join("interrupted");
    let snapshots = out.join("igebm/checkpoints/unconditional");
    let mut child = command(&data, &out, false).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !snapshots
        .join(format!("step-{:09}.json", 2 * EVERY))
        .exists()
    {
        assert!(
            Instant::now() < deadline,
            "training never reached step {}",
            2 * EVERY
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        // The signal came after the last step: nothing left to interrupt.
        assert_eq!(outcome(&out), expected);
        return;
    }
    assert!(stderr.contains("interrupted after step"), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let step: usize = stderr
        .split("interrupted after step ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(snapshots.join(format!("step-{step:09}.json")).exists());

    // Damage that newest checkpoint: the resumed run names it and takes the one before.
    let tensors = snapshots.join(format!("step-{step:09}.safetensors"));
    let mut bytes = std::fs::read(&tensors).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&tensors, bytes).unwrap();
    let stdout = run_to_end(&data, &out, true);
    assert!(
        stdout.contains(&format!(
            "skipping checkpoint {}",
            snapshots.join(format!("step-{step:09}.json")).display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("SHA-256"), "{stdout}");
    let resumed = resumed_step(&stdout).unwrap();
    assert!(
        resumed < step,
        "resumed from {resumed}, the damaged one was {step}"
    );
    assert!(outcome(&out) == expected, "the resumed run differs");
}

#[test]
fn resuming_under_another_recipe_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_data(&data, 400, 100);
    let out = tmp.path().join("run");
    run_to_end(&data, &out, false);
    let output = command(&data, &out, true)
        .args(["--set", "train.adam.lr=0.0005"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another recipe"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let output = command_with(&data, &out, false, 5, 0).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--checkpoint-every") || stderr.contains("checkpoint-every"),
        "{stderr}"
    );
}

/// A tiny `reproduce compose` run into `out`.
fn compose_command(out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["reproduce", "compose", "--seed", "3", "--iterations", "30"])
        .args(["--checkpoint-every", "4"])
        .arg("--out")
        .arg(out);
    for set in [
        "autoencoder.encoder_widths=[4,4]",
        "autoencoder.encoder_features=8",
        "autoencoder.decoder_width=2",
        "autoencoder.iterations=10",
        "autoencoder.batch_size=4",
        "concept.hidden=[8]",
        "concept.batch_size=4",
        "concept.code_pool=64",
        "concept.langevin.steps=2",
        "eval_langevin.steps=2",
        "samples_per_condition=2",
        "conditions=2",
        "infer_images=6",
        "judge.iterations.shape=30",
        "judge.iterations.color=30",
        "judge.iterations.size=30",
        "judge.iterations.position=30",
        "judge.batch_size=8",
        "judge.widths=[4,4]",
        "judge.feature_dim=4",
    ] {
        c.args(["--set", set]);
    }
    if resume {
        c.arg("--resume");
    }
    c.env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The final concept models and the timing-free metrics of a compose run (the sampler
/// comparison gives each sampler a time budget, so its numbers depend on the clock).
fn compose_outcome(out: &Path) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let dir = out.join("compose");
    let mut models: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    models.sort();
    assert!(models.len() >= 5, "{models:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let metrics = report
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.contains("seconds") && !k.starts_with("sampler_"))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    (
        models.iter().map(|p| std::fs::read(p).unwrap()).collect(),
        metrics,
    )
}

/// Compose trains judges and concept models (one after another on the one worker of this
/// test), each from a generator seeded from the run's: killed while training a judge and again
/// while training a concept, it resumes each and ends where the uninterrupted run does.
#[test]
fn compose_killed_twice_resumes_to_the_same_models() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let output = compose_command(&reference, false).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = compose_outcome(&reference);

    let out = tmp.path().join("killed");
    let checkpoints = out.join("compose/checkpoints");
    let mut resumed = Vec::new();
    for (round, wait_for) in [
        "judge-color/step-000000012.json",
        "color/step-000000008.json",
    ]
    .into_iter()
    .enumerate()
    {
        let mut child = compose_command(&out, round > 0).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while !checkpoints.join(wait_for).exists() {
            assert!(Instant::now() < deadline, "never reached {wait_for}");
            assert!(
                child.try_wait().unwrap().is_none(),
                "ended before {wait_for}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        resumed.push(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let output = compose_command(&out, true).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    // The second round resumed the colour judge; the last one the colour concept model.
    assert!(
        resumed[1].contains("compose color judge: resuming from step"),
        "{}",
        resumed[1]
    );
    assert!(
        stdout.contains("compose color: resuming from step"),
        "{stdout}"
    );
    let got = compose_outcome(&out);
    for (i, (a, b)) in got.0.iter().zip(&expected.0).enumerate() {
        assert!(a == b, "model {i} differs");
    }
    let differing: Vec<_> = got
        .1
        .iter()
        .zip(&expected.1)
        .filter(|(a, b)| a != b)
        .collect();
    assert!(differing.is_empty(), "metrics differ: {differing:?}");
}
