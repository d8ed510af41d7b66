//! Smoke run of `cargo xtask reproduce latent` at a tiny size: every output a reader or a
//! program relies on is written, and the checkpoints load back.

use candle_core::Device;
use ebm_data::ImageSet;
use xtask::reproduce::latent::{run_recipe, Recipe};
use xtask::reproduce::{apply_overrides, Mode, Options};

/// Random 8-bit images with labels cycling through the classes.
fn synthetic(n: usize, seed: u64) -> ImageSet {
    use rand::Rng;
    let mut rng = ebm_core::seeded_rng(seed);
    let images = (0..n * 28 * 28).map(|_| rng.random::<u8>()).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    ImageSet::new(images, labels, [1, 28, 28], 10).unwrap()
}

fn options(out: &std::path::Path) -> Options {
    Options {
        mode: Mode::Quick,
        out: out.to_path_buf(),
        seed: 2,
        device: Device::Cpu,
        data_dir: None,
        iterations: None,
        overrides: vec![],
        classifier_dir: out.join("classifiers"),
        quiet: true,
        ..Options::default()
    }
}

#[test]
fn smoke_recipe_writes_every_key_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (synthetic(40, 1), synthetic(20, 2));
    let (digits_train, digits_test) = (synthetic(40, 3), synthetic(20, 4));
    let report = run_recipe(
        &Recipe::smoke(),
        &train,
        &test,
        &digits_train,
        &digits_test,
        &options(dir.path()),
    )
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    for key in [
        "fid_domain_ebm_prior",
        "fid_domain_gaussian_prior",
        "mse_ebm_prior",
        "mse_gaussian_prior",
        "fid_domain_longrun",
        "anomaly_auprc_mean",
    ] {
        let v = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("report.json lacks {key}"));
        assert!(v.is_finite() && v >= -1e-9, "{key} = {v}");
    }
    let digits: Vec<&String> = report
        .metrics
        .keys()
        .filter(|k| k.starts_with("anomaly_auprc_") && k.len() == "anomaly_auprc_1".len())
        .collect();
    assert!(!digits.is_empty(), "at least one held-out digit");
    for k in digits {
        assert!((0.0..=1.0).contains(&report.metrics[k]), "{k}");
    }
    let samples = candle_core::Tensor::read_npy(dir.path().join("ebm_prior_samples.npy")).unwrap();
    let values = samples.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        values.iter().all(|v| (0.0..=1.0).contains(v)),
        "samples in [0, 1]"
    );
    assert!(dir.path().join("ebm_prior_samples.png").is_file());
    assert!(dir.path().join("gaussian_prior_samples.png").is_file());
    assert!(dir.path().join("longrun_samples.png").is_file());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("29.44") && md.contains("differs from the paper"),
        "{md}"
    );
}

#[test]
fn bad_overrides_are_clear_errors() {
    let err = apply_overrides(
        &Recipe::quick(),
        &["train.prior_langevin.step_size=-1".into()],
    )
    .map(|r| {
        let dir = tempfile::tempdir().unwrap();
        run_recipe(
            &r,
            &synthetic(40, 1),
            &synthetic(20, 2),
            &synthetic(40, 3),
            &synthetic(20, 4),
            &options(dir.path()),
        )
    });
    let msg = match err {
        Ok(run) => run.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("step_size"), "{msg}");
}
