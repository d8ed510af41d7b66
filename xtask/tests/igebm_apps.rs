//! Smoke runs of `reproduce igebm-apps` at a tiny size on synthetic images: every report key a
//! reader or a program relies on is written, finite and in range; bad recipes are errors that
//! name the problem; the full recipe is consistent.

use candle_core::Device;
use ebm_data::ImageSet;
use xtask::reproduce::igebm_apps::{run, run_recipe, AppData, Recipe};
use xtask::reproduce::{Mode, Options};

/// Random 8-bit images with labels cycling through the classes.
fn synthetic(n: usize, seed: u64) -> ImageSet {
    use rand::Rng;
    let mut rng = ebm_core::seeded_rng(seed);
    let images = (0..n * 784).map(|_| rng.random::<u8>()).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    ImageSet::new(images, labels, [1, 28, 28], 10).unwrap()
}

fn options(out: &std::path::Path) -> Options {
    Options {
        mode: Mode::Quick,
        out: out.to_path_buf(),
        seed: 1,
        device: Device::Cpu,
        classifier_dir: out.join("classifiers"),
        quiet: true,
        ..Options::default()
    }
}

/// The quick recipe shrunk to seconds.
fn tiny() -> Recipe {
    let mut r = Recipe::quick();
    r.set_iterations(2);
    for ebm in [&mut r.classify.ebm, &mut r.continual.ebm] {
        ebm.model.stem_channels = 4;
        for b in &mut ebm.model.blocks {
            b.channels = 4;
        }
        ebm.batch_size = 4;
        ebm.train.clf_images = 4;
        ebm.train.cd.langevin.steps = 2;
        ebm.train.cd.replay_capacity = Some(16);
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

#[test]
fn tiny_run_writes_every_key_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = AppData {
        train: synthetic(60, 1),
        test: synthetic(30, 2),
        digits_train: synthetic(60, 3),
        digits_test: synthetic(30, 4),
    };
    let report = run_recipe(&tiny(), &data, &options(dir.path())).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let accuracies = [
        "clf_accuracy",
        "baseline_clf_accuracy",
        "robust_accuracy_linf_0.05",
        "robust_accuracy_linf_0.1",
        "robust_accuracy_l2_1",
        "baseline_robust_accuracy_linf_0.05",
        "baseline_robust_accuracy_linf_0.1",
        "baseline_robust_accuracy_l2_1",
        "continual_accuracy_ebm",
        "continual_accuracy_baseline",
        "continual_accuracy_ebm_after_task_1",
        "continual_task_2_final_accuracy_baseline",
    ];
    for key in accuracies {
        let v = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("report.json lacks {key}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    for h in [3, 5] {
        for model in ["ebm", "baseline", "still"] {
            for metric in ["frechet", "rmse"] {
                let key = format!("traj_{metric}_{model}_{h}");
                let v = json[&key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("report.json lacks {key}"));
                assert!(v.is_finite() && v >= -1e-9, "{key} = {v}");
            }
        }
    }
    assert!(json["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(json["config"]["recipe"]["attack"]["linf_eps"].is_array());
    assert_eq!(report.metrics.len(), json.as_object().unwrap().len() - 1);
    for file in [
        "report.md",
        "robust_accuracy_linf.png",
        "robust_accuracy_l2.png",
        "adversarial_linf.png",
        "classify_ebm_training.png",
        "continual_accuracy.png",
        "trajectory_frechet.png",
        "trajectory_example.png",
        "trajectory_ebm_training.png",
        "checkpoints/classify_ebm.safetensors",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for text in [
        "## Summary",
        "49.6%",
        "64.99%",
        "5.96",
        "What differs from the paper",
        "Adversarial robustness",
        "Split MNIST",
        "double pendulum",
    ] {
        assert!(md.contains(text), "report.md lacks {text}");
    }
}

#[test]
fn one_part_alone_writes_only_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut recipe = tiny();
    recipe.parts = vec!["trajectories".into()];
    // The image sets are not read when their parts do not run.
    let empty = || synthetic(1, 0);
    let data = AppData {
        train: empty(),
        test: empty(),
        digits_train: empty(),
        digits_test: empty(),
    };
    let report = run_recipe(&recipe, &data, &options(dir.path())).unwrap();
    assert!(report.metrics.contains_key("traj_frechet_ebm_5"));
    assert!(!report.metrics.contains_key("clf_accuracy"));
    assert!(!report.metrics.contains_key("continual_accuracy_ebm"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let with = |overrides: &[&str]| {
        let mut o = options(dir.path());
        o.overrides = overrides.iter().map(|s| s.to_string()).collect();
        run(&o).unwrap_err().to_string()
    };
    // All caught before any data set is looked for.
    let e = with(&["classify.nope=1"]);
    assert!(e.contains("classify.nope"), "{e}");
    let e = with(&["parts=[\"classify\",\"sampling\"]"]);
    assert!(e.contains("unknown part `sampling`"), "{e}");
    let e = with(&["attack.linf_eps=[0.1,-0.2]"]);
    assert!(e.contains("radius") && e.contains("-0.2"), "{e}");
    let e = with(&["continual.tasks=[[0,1],[1,2]]"]);
    assert!(e.contains("class 1"), "{e}");
    let e = with(&["trajectories.horizons=[10,200]"]);
    assert!(e.contains("horizon of 200"), "{e}");
    let e = with(&["trajectories.system.dt=-0.1"]);
    assert!(e.contains("dt"), "{e}");

    // Data of the wrong shape for the model.
    let mut recipe = tiny();
    recipe.parts = vec!["classify".into()];
    let small = ImageSet::new(
        vec![0; 20 * 64],
        (0..20).map(|i| i % 10).collect(),
        [1, 8, 8],
        10,
    )
    .unwrap();
    let data = AppData {
        train: small.clone(),
        test: small.clone(),
        digits_train: small.clone(),
        digits_test: small,
    };
    let e = run_recipe(&recipe, &data, &options(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("[1, 8, 8]"), "{e}");
}

#[test]
fn full_recipe_is_consistent() {
    let full = Recipe::full();
    full.validate().unwrap();
    assert_eq!(full.parts.len(), 3);
    assert!(full.classify.ebm.iterations > Recipe::quick().classify.ebm.iterations);
    // Every field can be reached by an override and the recipe survives the round trip.
    let same: Recipe = xtask::reproduce::apply_overrides(&full, &[]).unwrap();
    assert_eq!(
        serde_json::to_value(&same).unwrap(),
        serde_json::to_value(&full).unwrap()
    );
}
