//! Smoke runs of `cargo xtask reproduce compose` at a tiny size, and the scenes writer.

use candle_core::Device;
use xtask::reproduce::compose::{cell_centre, cell_of, run_recipe, Recipe};
use xtask::reproduce::{apply_overrides, Mode, Options};

fn options(out: &std::path::Path) -> Options {
    Options {
        mode: Mode::Quick,
        out: out.to_path_buf(),
        seed: 5,
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
    let mut r = Recipe::quick();
    r.model.stem_channels = 4;
    for b in &mut r.model.blocks {
        b.channels = 4;
    }
    r.batch_size = 4;
    r.iterations = 2;
    r.train.langevin.steps = 2;
    r.train.replay_capacity = Some(16);
    r.eval_langevin.steps = 2;
    r.samples_per_condition = 2;
    r.conditions = 2;
    r.infer_images = 6;
    r.judge.iterations = 3;
    r.judge.shape_iterations = 3;
    r.judge.batch_size = 8;
    r.judge.widths = vec![4, 4];
    r.judge.feature_dim = 4;
    r
}

#[test]
fn quick_recipe_writes_every_experiment_and_metric() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_recipe(&tiny(), &options(dir.path())).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    for key in [
        "single_shape_accuracy",
        "single_color_accuracy",
        "single_size_accuracy",
        "single_position_accuracy",
        "and_position_accuracy",
        "and_color_accuracy",
        "and_three_accuracy",
        "or_accuracy",
        "not_accuracy",
        "continual_accuracy",
        "heldout_and_accuracy",
        "heldout_joint_baseline_accuracy",
        "sampler_langevin_accuracy",
        "sampler_mala_accuracy",
        "sampler_hmc_accuracy",
    ] {
        let v = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("report.json lacks {key}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // MALA and HMC get at least two iterations each (warm-up included) in Langevin's time.
    assert!(
        report.metrics["sampler_mala_iterations"] >= 2.0
            && report.metrics["sampler_hmc_iterations"] >= 2.0
    );
    let e = report.metrics["infer_position_error"];
    assert!((0.0..=2f64.sqrt()).contains(&e), "{e}");
    // Each experiment's samples, with one request per sample.
    for name in [
        "single_shape",
        "and_position_color",
        "or",
        "not",
        "continual",
        "heldout_and",
        "heldout_joint_baseline",
    ] {
        let samples =
            candle_core::Tensor::read_npy(dir.path().join(format!("{name}.npy"))).unwrap();
        assert_eq!(&samples.dims()[1..], &[3, 32, 32]);
        let records: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(records.len(), samples.dims()[0], "{name}");
        assert!(records[0]["expression"].is_string() && records[0]["request"].is_object());
        assert!(dir.path().join(format!("{name}.png")).is_file());
    }
    let held: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("heldout_and.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(held[0]["request"]["shape"], "square");
    assert_eq!(held[0]["request"]["color"], "red");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("What differs from the paper") && md.contains("0.872"));
    assert!(dir.path().join("checkpoints/size.safetensors").is_file());
    assert!(dir.path().join("sampler_energy_traces.png").is_file());
    let diag: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("sampler_diagnostics.json")).unwrap(),
    )
    .unwrap();
    for name in ["langevin", "mala", "hmc"] {
        assert!(diag[name]["stats"]["energy_trace"].is_array(), "{name}");
    }
}

#[test]
fn grid_cells_and_centres_agree() {
    for grid in [1, 3, 4] {
        for cell in 0..(grid * grid) as u32 {
            let [x, y] = cell_centre(cell, grid);
            assert_eq!(cell_of(x, y, grid), cell);
        }
    }
    assert_eq!(
        cell_of(1.0, 1.0, 4),
        15,
        "the upper edge belongs to the last cell"
    );
    assert_eq!(cell_of(0.0, 0.3, 4), 4);
}

#[test]
fn bad_recipes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = apply_overrides(
        &tiny(),
        &["heldout_pairs=[[\"square\", \"purple\"]]".into()],
    )
    .and_then(|r| run_recipe(&r, &options(dir.path())))
    .unwrap_err()
    .to_string();
    assert!(err.contains("purple") && err.contains("red"), "{err}");
    let mut r = tiny();
    r.continual_shapes = vec![
        "square".into(),
        "circle".into(),
        "triangle".into(),
        "diamond".into(),
    ];
    let err = run_recipe(&r, &options(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("continual_shapes"), "{err}");
    let mut r = tiny();
    r.image_size = 64;
    let err = run_recipe(&r, &options(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the scenes are 3-channel 64x64"), "{err}");
}

#[test]
fn the_scenes_command_writes_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let labels = xtask::scenes::write(3, 5, 32, 2, dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(labels).unwrap()).unwrap();
    let scenes = json["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 5);
    assert_eq!(scenes[4]["file"], "00004.png");
    assert_eq!(scenes[0]["objects"].as_array().unwrap().len(), 2);
    for i in 0..5 {
        assert!(dir.path().join(format!("{i:05}.png")).is_file());
    }
    // The same seed gives the same labels.
    let again = tempfile::tempdir().unwrap();
    let labels2 = xtask::scenes::write(3, 5, 32, 2, again.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("labels.json")).unwrap(),
        std::fs::read_to_string(labels2).unwrap()
    );
    let a = std::fs::read(dir.path().join("00002.png")).unwrap();
    let b = std::fs::read(again.path().join("00002.png")).unwrap();
    assert_eq!(a, b);
    assert!(xtask::scenes::write(3, 0, 32, 1, dir.path())
        .unwrap_err()
        .to_string()
        .contains("--count"));
}
