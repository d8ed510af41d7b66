//! Smoke run of `cargo xtask reproduce vaebm` at a tiny size: every key and output is written
//! and the checkpoints exist.

use candle_core::Device;
use ebm_data::ImageSet;
use xtask::reproduce::vaebm::{run_recipe, Recipe};
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
        seed: 4,
        device: Device::Cpu,
        data_dir: None,
        iterations: None,
        overrides: vec![],
        classifier_dir: out.join("classifiers"),
        quiet: true,
        ..Options::default()
    }
}

fn tiny() -> Recipe {
    apply_overrides(
        &Recipe::quick(),
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
    .unwrap()
}

#[test]
fn tiny_recipe_writes_every_key_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_recipe(
        &tiny(),
        &synthetic(60, 1),
        &synthetic(40, 2),
        &synthetic(20, 3),
        &options(dir.path()),
    )
    .unwrap();
    for key in [
        "fid_domain_vae",
        "fid_domain_vaebm",
        "ood_auroc_mnist_vaebm",
        "ood_auroc_uniform_vaebm",
    ] {
        let v = report
            .metrics
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("no {key}"));
        assert!(v.is_finite(), "{key} = {v}");
        if key.starts_with("ood") {
            assert!((0.0..=1.0).contains(&v), "{key} = {v}");
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert!(json["fid_domain_vaebm"].is_number());
    for file in [
        "samples_side_by_side.png",
        "vae_samples.png",
        "vaebm_samples.png",
        "reconstructions.png",
        "vae_elbo.png",
        "ebm_energies.png",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("12.19"), "the paper's number is beside ours");
}

#[test]
fn a_bad_step_size_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = apply_overrides(&tiny(), &["eval_langevin.step_size=0".into()]).unwrap();
    let err = run_recipe(
        &r,
        &synthetic(60, 1),
        &synthetic(40, 2),
        &synthetic(20, 3),
        &options(dir.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("step_size") || err.contains("step size"),
        "{err}"
    );
}
