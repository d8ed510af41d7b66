//! Crash safety of `cargo xtask reproduce latent` and `cargo xtask reproduce vaebm`: a run
//! killed with SIGKILL during training (twice: in the first trained model and in a later one)
//! and resumed with `--resume` ends in exactly the state of an uninterrupted run with the same
//! seed: the same final weights, `.npy` samples and report metrics (timings aside), bit for bit.
//! A finished model is restored from its last checkpoint, not retrained.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ebm_nn::IgebmConfig;
use ebm_vaebm::VaeConfig;
use rand::Rng as _;
use serde_json::Value;

/// Training iterations of every model.
const ITERATIONS: usize = 100;
/// Checkpoint interval.
const EVERY: usize = 2;
/// A kill waits for a checkpoint of at least this step.
const KILL_AT: usize = 10;

/// The latent experiment at the smoke recipe's sizes, every model trained for `ITERATIONS`.
fn latent_sets() -> Vec<String> {
    let mut r = xtask::reproduce::latent::Recipe::smoke();
    r.iterations = ITERATIONS;
    r.anomaly.iterations = ITERATIONS;
    common::set_args(&r)
}

/// The VAEBM experiment with a tiny VAE and energy (spectral norm on, an eps_z buffer that is
/// used from the first iterations), `ITERATIONS` of each.
fn vaebm_sets() -> Vec<String> {
    let mut r = xtask::reproduce::vaebm::Recipe::quick();
    r.vae = VaeConfig::mnist_like(4, 16, 4);
    r.vae_iterations = ITERATIONS;
    r.vae_batch_size = 8;
    let mut ebm = IgebmConfig::small(1, 28, 4);
    ebm.blocks.truncate(2);
    r.ebm = ebm;
    r.ebm_iterations = ITERATIONS;
    r.ebm_batch_size = 8;
    r.ebm_train.langevin.steps = 2;
    if let Some(b) = &mut r.ebm_train.buffer {
        b.anneal_iterations = 10;
    }
    r.eval_langevin.steps = 2;
    r.grid_samples = 10;
    r.sample_chunk = 10;
    r.fid_samples = 20;
    r.fid_reference = 20;
    r.ood_images = 10;
    r.classifier.iterations = 3;
    r.classifier.batch_size = 8;
    r.classifier.model.widths = vec![4, 4];
    r.classifier.model.feature_dim = 4;
    common::set_args(&r)
}

struct Experiment {
    name: &'static str,
    sets: Vec<String>,
    /// The checkpoint folders of the trained models, in training order.
    models: &'static [&'static str],
}

fn command(e: &Experiment, data: &Path, out: &Path, resume: bool) -> Command {
    command_with_seed(e, data, out, resume, 3)
}

fn command_with_seed(e: &Experiment, data: &Path, out: &Path, resume: bool, seed: u64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["reproduce", e.name, "--seed", &seed.to_string()])
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .args(["--checkpoint-every", &EVERY.to_string()]);
    c.args(&e.sets);
    if resume {
        c.arg("--resume");
    }
    c.env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs to completion; returns stdout, panicking with stderr on failure.
fn run_to_end(e: &Experiment, data: &Path, out: &Path, resume: bool) -> String {
    let output = command(e, data, out, resume).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} run failed:\n{stdout}\n{stderr}",
        e.name
    );
    stdout
}

/// The newest checkpoint step in `dir` (0 when there is none).
fn newest(dir: &Path) -> usize {
    std::fs::read_dir(dir)
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
}

/// Waits until `dir` holds a checkpoint of step `step` or later, then SIGKILLs the child
/// after 0-5 ms. Returns its stdout (the child may have ended first).
fn kill_after_checkpoint(
    mut child: Child,
    dir: &Path,
    step: usize,
    rng: &mut ebm_core::Rng,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    while newest(dir) < step && child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint {step} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(0..=5)));
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap(); // SIGKILL
    }
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The step each model resumed from, by its checkpoint folder's name, from a run's output.
fn resumed(stdout: &str, e: &Experiment) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for model in e.models {
        let label = format!("{} {model}: resuming from step ", e.name);
        if let Some(rest) = stdout.split(&label).nth(1) {
            let step = rest.split_whitespace().next().unwrap().parse().unwrap();
            out.push((model.to_string(), step));
        }
    }
    out
}

type Outcome = (
    Vec<(String, Vec<u8>)>,
    Vec<(String, Vec<u8>)>,
    Vec<(String, String)>,
);

/// What must not depend on interruptions: the final weights (`checkpoints/*.safetensors`),
/// the `.npy` samples, and the metrics other than timings.
fn outcome(dir: &Path) -> Outcome {
    let files = |dir: &Path, ext: &str| -> Vec<(String, Vec<u8>)> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(p).unwrap())
            })
            .collect()
    };
    let weights = files(&dir.join("checkpoints"), "safetensors");
    let samples = files(dir, "npy");
    assert!(!weights.is_empty() && !samples.is_empty());
    let report: Value =
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

/// An uninterrupted run; then a run killed in the first model's training, resumed and killed
/// in the last model's training, and resumed to the end: the same outcome.
fn killed_twice_then_resumed_ends_like_an_uninterrupted_run(e: Experiment) {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_data(&data, 80, 60);
    let reference = tmp.path().join("reference");
    run_to_end(&e, &data, &reference, false);
    let expected = outcome(&reference.join(e.name));
    let after_reference = start.elapsed();

    let killed = tmp.path().join("killed");
    let checkpoints = killed.join(e.name).join("checkpoints");
    let (first, last) = (e.models[0], e.models[e.models.len() - 1]);
    let mut rng = ebm_core::seeded_rng(5);
    // Round 1: a fresh start, killed once the first model has a checkpoint of KILL_AT.
    let child = command(&e, &data, &killed, true).spawn().unwrap();
    let out1 = kill_after_checkpoint(child, &checkpoints.join(first), KILL_AT, &mut rng);
    assert!(out1.contains("no complete checkpoint"), "{out1}");
    // Round 2: resumes the first model mid-training, killed in the last model's training.
    let child = command(&e, &data, &killed, true).spawn().unwrap();
    let out2 = kill_after_checkpoint(child, &checkpoints.join(last), KILL_AT, &mut rng);
    let r2 = resumed(&out2, &e);
    assert_eq!(r2.first().map(|(m, _)| m.as_str()), Some(first), "{out2}");
    let step = r2[0].1;
    assert!(
        (KILL_AT..ITERATIONS).contains(&step) && step.is_multiple_of(EVERY),
        "round 2 resumed {first} from step {step}: not mid-training"
    );
    // Round 3: to the end. Every model before the last is restored from its final checkpoint;
    // the last resumes mid-training.
    let out3 = run_to_end(&e, &data, &killed, true);
    let r3 = resumed(&out3, &e);
    assert_eq!(r3.len(), e.models.len(), "{out3}");
    for (model, step) in &r3[..r3.len() - 1] {
        assert_eq!(
            *step, ITERATIONS,
            "{model} was not restored from its last checkpoint"
        );
    }
    let (_, step) = &r3[r3.len() - 1];
    assert!(
        (KILL_AT..ITERATIONS).contains(step),
        "round 3 resumed {last} from step {step}: not mid-training"
    );
    let got = outcome(&killed.join(e.name));
    assert!(got.0 == expected.0, "{}: the final weights differ", e.name);
    assert!(got.1 == expected.1, "{}: the samples differ", e.name);
    assert_eq!(got.2, expected.2, "{}: the metrics differ", e.name);
    eprintln!(
        "{}: reference run {:.1} s, all {:.1} s; resumed {r2:?} then {r3:?}",
        e.name,
        after_reference.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );

    // The negative control: another seed changes the outcome, so the comparison can fail.
    let other = tmp.path().join("other");
    let output = command_with_seed(&e, &data, &other, false, 4)
        .output()
        .unwrap();
    assert!(output.status.success());
    let changed = outcome(&other.join(e.name));
    assert!(changed.0 != expected.0 && changed.1 != expected.1);
}

#[test]
fn latent_killed_during_training_resumes_to_the_same_end() {
    killed_twice_then_resumed_ends_like_an_uninterrupted_run(Experiment {
        name: "latent",
        sets: latent_sets(),
        models: &["ebm_prior", "gaussian_prior", "anomaly_digit1"],
    });
}

#[test]
fn vaebm_killed_during_training_resumes_to_the_same_end() {
    killed_twice_then_resumed_ends_like_an_uninterrupted_run(Experiment {
        name: "vaebm",
        sets: vaebm_sets(),
        models: &["vae", "ebm"],
    });
}
