//! Determinism on the CPU: `cargo xtask reproduce <experiment>` run twice with the same seed and
//! recipe gives byte-identical `.npy` samples and equal `report.json` metrics and settings
//! (timing keys, those whose name contains `seconds`, left out); a third run with another seed
//! gives other samples, so the comparison can fail. Each experiment runs at a tiny size through
//! the real command line, on a small synthetic Fashion-MNIST and MNIST-10k written as
//! gzip-compressed IDX files into a temporary `--data-dir`.
//!
//! Not covered: `reproduce compose`, whose sampler comparison sizes MALA and HMC runs by the
//! wall-clock time of the Langevin runs, so its numbers depend on the machine's speed by design.

use std::collections::BTreeMap;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use xtask::reproduce::{apply_overrides, latent, vaebm};

/// Runs `xtask reproduce <experiment>` into `out` and returns the experiment's folder.
fn reproduce(experiment: &str, seed: u64, data: &Path, out: &Path, sets: &[String]) -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "reproduce",
            experiment,
            "--quick",
            "--seed",
            &seed.to_string(),
        ])
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .args(sets)
        .env_remove("EBM_DATA_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "xtask reproduce {experiment} --seed {seed} failed:\n{stderr}"
    );
    out.join(experiment)
}

/// Every `.npy` file under `dir`, by path relative to `dir`.
fn npy_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "npy") {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `report.json` with every key that names a duration (`..._seconds...`) removed, at any depth.
fn report_without_timings(dir: &Path) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| !k.contains("seconds"));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    strip(&mut v);
    v
}

/// The names of the values that differ between two reports.
fn differing_keys(a: &Value, b: &Value) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return vec!["<root>".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.to_string())
        .collect()
}

/// Two runs with `seed`, one with `seed + 1`: the first two agree, the third differs.
fn check(experiment: &str, sets: &[String], seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::write_data(&tmp.path().join("data"), 64, 48);
    let a = reproduce(experiment, seed, &data, &tmp.path().join("a"), sets);
    let b = reproduce(experiment, seed, &data, &tmp.path().join("b"), sets);
    let c = reproduce(experiment, seed + 1, &data, &tmp.path().join("c"), sets);

    let (na, nb, nc) = (npy_files(&a), npy_files(&b), npy_files(&c));
    assert!(!na.is_empty(), "{experiment}: no .npy samples written");
    assert_eq!(
        na.keys().collect::<Vec<_>>(),
        nb.keys().collect::<Vec<_>>(),
        "{experiment}: the two runs wrote different .npy files"
    );
    for (name, bytes) in &na {
        assert!(
            *bytes == nb[name],
            "{experiment}: {} differs between two runs with seed {seed}",
            name.display()
        );
    }
    let same_in_c: Vec<_> = na
        .iter()
        .filter(|(name, bytes)| nc.get(*name) == Some(*bytes))
        .map(|(name, _)| name.display().to_string())
        .collect();
    // Files that do not depend on the model's seed (e.g. the raw test images) may agree.
    assert!(
        same_in_c.len() < na.len(),
        "{experiment}: seeds {seed} and {} gave identical samples in every file",
        seed + 1
    );
    for sample in na
        .keys()
        .filter(|n| n.to_string_lossy().contains("samples"))
    {
        assert!(
            nc.get(sample) != na.get(sample),
            "{experiment}: {} is the same with seeds {seed} and {}",
            sample.display(),
            seed + 1
        );
    }

    let (ra, rb, rc) = (
        report_without_timings(&a),
        report_without_timings(&b),
        report_without_timings(&c),
    );
    let metrics = ra.as_object().unwrap().len();
    assert!(metrics > 5, "{experiment}: report.json has {metrics} keys");
    assert!(
        ra == rb,
        "{experiment}: report.json differs between two runs with seed {seed}: {:?}",
        differing_keys(&ra, &rb)
    );
    let changed = differing_keys(&ra, &rc);
    println!(
        "{experiment}: {} .npy files byte-identical and {metrics} report.json keys equal over two runs with seed {seed}; seed {} changed {} of the files and {} keys",
        na.len(),
        seed + 1,
        na.len() - same_in_c.len(),
        changed.len()
    );
    assert!(
        changed.iter().any(|k| k != "config"),
        "{experiment}: seeds {seed} and {} gave identical metrics",
        seed + 1
    );
}

#[test]
fn igebm_is_deterministic_on_the_cpu() {
    let mut r = common::tiny_igebm();
    r.iterations = 3;
    check("igebm", &common::set_args(&r), 5);
}

#[test]
fn latent_is_deterministic_on_the_cpu() {
    check("latent", &common::set_args(&latent::Recipe::smoke()), 7);
}

#[test]
fn vaebm_is_deterministic_on_the_cpu() {
    let r = apply_overrides(
        &vaebm::Recipe::quick(),
        &[
            "vae_iterations=3".into(),
            "ebm_iterations=3".into(),
            "fid_samples=20".into(),
            "grid_samples=10".into(),
            "fid_reference=20".into(),
            "ood_images=10".into(),
            "sample_chunk=10".into(),
            "eval_langevin.steps=2".into(),
            "ebm_train.langevin.steps=2".into(),
            "classifier.iterations=3".into(),
            "classifier.batch_size=8".into(),
            "classifier.model.widths=[4, 4]".into(),
            "classifier.model.feature_dim=4".into(),
            "ebm.stem_channels=4".into(),
            "vae_batch_size=8".into(),
            "ebm_batch_size=8".into(),
        ],
    )
    .unwrap();
    check("vaebm", &common::set_args(&r), 9);
}
