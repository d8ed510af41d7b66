//! Smoke runs of the experiments at tiny sizes: every output a reader or a program relies on is
//! written, checkpoints load back, and the paper's full recipe builds and trains one iteration.

use candle_core::Device;
use ebm_data::ImageSet;
use ebm_nn::{checkpoint, Igebm};
use xtask::reproduce::igebm::{run_recipe, Recipe};
use xtask::reproduce::{apply_overrides, Mode, Options};

mod common;

/// Random 8-bit images with labels cycling through the classes.
fn synthetic(n: usize, shape: [usize; 3], seed: u64) -> ImageSet {
    use rand::Rng;
    let mut rng = ebm_core::seeded_rng(seed);
    let len = n * shape.iter().product::<usize>();
    let images = (0..len).map(|_| rng.random::<u8>()).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    ImageSet::new(images, labels, shape, 10).unwrap()
}

fn options(out: &std::path::Path, mode: Mode) -> Options {
    Options {
        mode,
        out: out.to_path_buf(),
        seed: 3,
        device: Device::Cpu,
        data_dir: None,
        iterations: None,
        overrides: vec![],
        classifier_dir: out.join("classifiers"),
        quiet: true,
        ..Options::default()
    }
}

fn shrink(mut recipe: Recipe, width: usize) -> Recipe {
    recipe.model.stem_channels = width;
    for b in &mut recipe.model.blocks {
        b.channels = (width * b.channels / 128).max(1);
    }
    common::shrink_igebm_run(&mut recipe);
    recipe.train.replay_capacity = Some(16);
    recipe
}

#[test]
fn quick_recipe_writes_the_whole_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut recipe = common::tiny_igebm();
    recipe.iterations = 3;
    let train = synthetic(40, [1, 28, 28], 1);
    let test = synthetic(20, [1, 28, 28], 2);
    let digits = synthetic(10, [1, 28, 28], 3);
    let names = (0..10).map(|i| format!("class {i}")).collect();
    let report = run_recipe(
        &recipe,
        &train,
        &test,
        &digits,
        names,
        &options(dir.path(), Mode::Quick),
    )
    .unwrap();

    for name in ["unconditional", "conditional"] {
        for file in [
            "samples_noise.png",
            "samples_buffer.png",
            "energies.png",
            "loss.png",
            "inpaint.png",
            "denoise.png",
        ] {
            assert!(
                dir.path().join(format!("{name}_{file}")).is_file(),
                "{name}_{file} missing"
            );
        }
        let samples =
            candle_core::Tensor::read_npy(dir.path().join(format!("{name}_samples_noise.npy")))
                .unwrap();
        assert_eq!(samples.dims(), &[20, 1, 28, 28]);
        let values = samples.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            values.iter().all(|v| (0.0..=1.0).contains(v)),
            "samples stay in the data range"
        );
        let model: Igebm = checkpoint::load(
            &dir.path().join(format!("checkpoints/{name}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            model.config().num_classes,
            (name == "conditional").then_some(10)
        );
        for metric in [
            "loss",
            "energy_pos",
            "energy_neg",
            "energy_test",
            "energy_uniform_noise",
            "train_seconds",
        ] {
            let v = report.metrics[&format!("{name}_{metric}")];
            assert!(v.is_finite(), "{name}_{metric} = {v}");
        }
    }
    let labels: Vec<u32> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("conditional_samples_noise_labels.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        &labels[..4],
        &[0, 0, 1, 1],
        "two samples per class, one row per class"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert!(
        json["unconditional_loss"].is_number() && json["config"]["recipe"]["model"].is_object()
    );
    // The class accuracy of the conditional samples is what the saved domain classifier says
    // of the saved samples and the classes they were asked for; the unconditional model has none.
    let classifier: ebm_nn::Classifier = checkpoint::load(
        &xtask::classifier::weights_path(&dir.path().join("classifiers"), &recipe.dataset),
        &Device::Cpu,
    )
    .unwrap();
    let samples =
        candle_core::Tensor::read_npy(dir.path().join("conditional_samples_noise.npy")).unwrap();
    let predicted: Vec<u32> = classifier
        .logits(&samples)
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let agree = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    let accuracy = json["conditional_class_accuracy_noise"].as_f64().unwrap();
    assert!(
        (accuracy - agree as f64 / labels.len() as f64).abs() < 1e-12,
        "{accuracy} vs {agree} of {}",
        labels.len()
    );
    let buffer = json["conditional_class_accuracy_buffer"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&buffer), "{buffer}");
    assert!(json.get("unconditional_class_accuracy_noise").is_none());
    for key in [
        "ood_auroc_mnist",
        "ood_auroc_uniform",
        "ood_auroc_constant",
        "ood_auroc_vflip",
        "inpaint_mse_corrupted",
        "inpaint_mse_restored",
        "denoise_mse_corrupted",
        "denoise_mse_restored",
        "fid_domain_samples",
        "fid_domain_noise",
        "fid_domain_real",
    ] {
        let v = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("report.json lacks {key}"));
        assert!(v.is_finite(), "{key} = {v}");
        if key.starts_with("ood_auroc") {
            assert!((0.0..=1.0).contains(&v), "{key} = {v}");
        } else {
            assert!(v >= -1e-9, "{key} = {v}");
        }
    }
    // The masked half is uniform noise against images of uniform bytes: MSE about 1/6.
    let corrupted = json["inpaint_mse_corrupted"].as_f64().unwrap();
    assert!((corrupted - 1.0 / 6.0).abs() < 0.03, "{corrupted}");
    // The classifier is cached for the next experiment.
    assert!(dir
        .path()
        .join("classifiers/fashion-mnist.safetensors")
        .is_file());
    assert!(dir
        .path()
        .join("classifiers/fashion-mnist.training.json")
        .is_file());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for section in [
        "What differs from the paper",
        "Out-of-distribution detection",
        "Inpainting and denoising",
        "Domain FID",
        "not the Inception FID",
    ] {
        assert!(md.contains(section), "report.md lacks {section}");
    }
}

/// The paper's CIFAR-10 recipe (ResNet32 shape, 60-step sampler settings, replay buffer) built
/// at a tiny width and trained for one iteration on random 32x32 colour images.
#[test]
fn full_recipe_builds_at_tiny_size_and_trains_one_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let full = Recipe::full();
    assert_eq!(
        (
            full.batch_size,
            full.train.langevin.steps,
            full.train.langevin.step_size
        ),
        (128, 60, 10.0)
    );
    assert_eq!(
        (
            full.train.langevin.noise_scale,
            full.train.langevin.grad_clip
        ),
        (0.005, Some(0.01))
    );
    let mut recipe = shrink(full, 8);
    recipe.iterations = 1;
    recipe.models = vec!["unconditional".into()];
    let train = synthetic(16, [3, 32, 32], 5);
    let test = synthetic(12, [3, 32, 32], 6);
    // Grey 28x28 digits are fitted to the colour 32x32 model for the OOD table.
    let digits = synthetic(6, [1, 28, 28], 7);
    let names = (0..10).map(|i| i.to_string()).collect();
    let report = run_recipe(
        &recipe,
        &train,
        &test,
        &digits,
        names,
        &options(dir.path(), Mode::Full),
    )
    .unwrap();
    assert!(report.metrics["unconditional_loss"].is_finite());
    assert!(report.metrics["ood_auroc_mnist"].is_finite());
    let model: Igebm = checkpoint::load(
        &dir.path().join("checkpoints/unconditional.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(model.config().blocks.len(), 6);
}

#[test]
fn overrides_change_fields_and_reject_unknown_ones() {
    let r: Recipe = apply_overrides(
        &Recipe::quick(),
        &[
            "train.adam.lr=0.0005".into(),
            "models=[\"conditional\"]".into(),
        ],
    )
    .unwrap();
    assert_eq!(
        (r.train.adam.lr, r.models.clone()),
        (0.0005, vec!["conditional".to_string()])
    );
    let err = apply_overrides(&Recipe::quick(), &["train.adam.learning_rate=1".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no field `train.adam.learning_rate`"), "{err}");
    let err = apply_overrides(&Recipe::quick(), &["batch_size=big".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("override rejected"), "{err}");
    let err = apply_overrides(&Recipe::quick(), &["batch_size".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("path.to.field=value"), "{err}");
}

#[test]
fn a_data_set_the_model_does_not_take_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = shrink(Recipe::quick(), 4);
    let wrong = synthetic(8, [3, 32, 32], 1);
    let err = run_recipe(
        &recipe,
        &wrong,
        &wrong,
        &wrong,
        vec![],
        &options(dir.path(), Mode::Quick),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("the data set's images are [3, 32, 32], the model takes [1, 28, 28]"),
        "{err}"
    );
}
