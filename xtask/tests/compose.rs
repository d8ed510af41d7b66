//! Smoke runs of `cargo xtask reproduce compose` at a tiny size, and the scenes writer.

use candle_core::Device;
use xtask::reproduce::compose::latent::ConceptIterations;
use xtask::reproduce::compose::{run_recipe, JudgeIterations, Recipe};
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
    r.autoencoder.encoder_widths = vec![4, 4];
    r.autoencoder.encoder_features = 8;
    r.autoencoder.decoder_width = 2;
    r.autoencoder.iterations = 2;
    r.autoencoder.batch_size = 4;
    r.concept.hidden = vec![8];
    r.concept.batch_size = 4;
    r.concept.code_pool = 64;
    r.concept.iterations = ConceptIterations::all(2);
    r.concept.langevin.steps = 2;
    r.eval_langevin.steps = 2;
    r.samples_per_condition = 2;
    r.conditions = 2;
    r.infer_images = 6;
    r.judge.iterations = JudgeIterations::all(3);
    r.judge.batch_size = 8;
    r.judge.widths = vec![4, 4];
    r.judge.feature_dim = 4;
    r
}

#[test]
fn quick_recipe_writes_every_experiment_and_metric() {
    let dir = tempfile::tempdir().unwrap();
    let mut recipe = tiny();
    recipe.concept.iterations = ConceptIterations {
        shape: 3,
        color: 1,
        size: 2,
        position: 2,
        joint: 1,
    };
    let report = run_recipe(&recipe, &options(dir.path())).unwrap();
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
        "shape_code_accuracy",
        "color_code_accuracy",
        "size_code_accuracy",
        "joint_code_accuracy",
        "template_shape_accuracy",
        "reconstruction_template_shape_accuracy",
        "single_shape_template_shape_accuracy",
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
    // Each concept trains for its own number of steps: its last checkpoint is that step.
    for (name, steps) in [
        ("shape", 3),
        ("color", 1),
        ("size", 2),
        ("position", 2),
        ("joint", 1),
    ] {
        let step = |n: usize| {
            dir.path()
                .join(format!("checkpoints/{name}/step-{n:09}.json"))
                .is_file()
        };
        assert!(step(steps) && !step(steps + 1), "{name}");
    }
    // Every shape judge of the recipe trained, each under its own name, and no more.
    let shape_judges = tiny().judge.shape_judges;
    assert!(
        shape_judges >= 2,
        "the tiny recipe votes with several shape judges"
    );
    for m in 2..=shape_judges + 1 {
        let trained = dir
            .path()
            .join(format!("checkpoints/judge-shape-{m}/step-000000003.json"))
            .is_file();
        assert_eq!(trained, m <= shape_judges, "shape judge {m}");
    }
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
    // The error of the tiny recipe after `edit`.
    let error_after = |edit: &dyn Fn(&mut Recipe)| -> String {
        let mut r = tiny();
        edit(&mut r);
        run_recipe(&r, &options(dir.path()))
            .unwrap_err()
            .to_string()
    };
    let err = error_after(&|r| {
        r.continual_shapes = vec![
            "square".into(),
            "circle".into(),
            "triangle".into(),
            "diamond".into(),
        ]
    });
    assert!(err.contains("continual_shapes"), "{err}");
    let err = error_after(&|r| r.image_size = 48);
    assert!(err.contains("image_size must be 32 or 64"), "{err}");
    let err = error_after(&|r| r.autoencoder.lr = -1.0);
    assert!(
        err.contains("autoencoder lr") && err.contains("-1"),
        "{err}"
    );
    let err = error_after(&|r| r.concept.prior_weight = f64::NAN);
    assert!(err.contains("concept prior_weight"), "{err}");
    let err = error_after(&|r| r.concept.adam_beta1 = 1.0);
    assert!(err.contains("adam_beta1"), "{err}");
    let err = error_after(&|r| r.concept.conditional_weight = -0.5);
    assert!(
        err.contains("concept conditional_weight") && err.contains("-0.5"),
        "{err}"
    );
    let err = error_after(&|r| r.concept.conditional_candidates = 1);
    assert!(err.contains("conditional_candidates"), "{err}");
    let err = error_after(&|r| r.concept.code_pool = 3);
    assert!(
        err.contains("code_pool") && err.contains("4 codes") && err.contains('3'),
        "{err}"
    );
    let err = error_after(&|r| r.autoencoder.min_posterior_std = f64::INFINITY);
    assert!(
        err.contains("min_posterior_std") && err.contains("inf"),
        "{err}"
    );
    let err = error_after(&|r| r.guidance = -1.0);
    assert!(err.contains("guidance") && err.contains("-1"), "{err}");
    error_after(&|r| r.concept.langevin.steps = 0);
    let err = error_after(&|r| r.judge.shape_judges = 0);
    assert!(err.contains("shape_judges"), "{err}");
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

mod latent_space {
    //! The pieces of `reproduce::compose::latent` against independent expectations.

    use candle_core::{DType, Device, Tensor};
    use ebm_compose::VectorConditioned;
    use ebm_core::{seeded_rng, LabelledEnergy};
    use xtask::reproduce::compose::latent::{conditional_nll, ConditionKind, LatentConcept};
    use xtask::reproduce::compose::Recipe;

    fn concept(kind: ConditionKind) -> LatentConcept {
        let mut recipe = Recipe::quick().concept;
        recipe.hidden = vec![12, 12];
        recipe.prior_weight = 0.7;
        LatentConcept::new(kind, 3, &recipe, &Device::Cpu, &mut seeded_rng(1)).unwrap()
    }

    #[test]
    fn position_features_are_the_coordinates_with_their_sines_and_cosines() {
        let c = concept(ConditionKind::Position { frequencies: 2 });
        let p = Tensor::new(&[[0.25f32, 0.5], [1.0, 0.0]], &Device::Cpu).unwrap();
        let f = c.position_features(&p).unwrap().to_vec2::<f32>().unwrap();
        let pi = std::f64::consts::PI;
        for (row, (x, y)) in f.iter().zip([(0.25f64, 0.5f64), (1.0, 0.0)]) {
            let mut expected = vec![x, y];
            for k in 0..2 {
                let w = pi * 2f64.powi(k);
                expected.extend([(w * x).sin(), (w * x).cos(), (w * y).sin(), (w * y).cos()]);
            }
            assert_eq!(row.len(), expected.len());
            for (a, b) in row.iter().zip(&expected) {
                assert!((*a as f64 - b).abs() < 1e-6, "{row:?} vs {expected:?}");
            }
        }
    }

    /// The hybrid term against a softmax computed in f64 from one energy per (code, class)
    /// pair: the candidates are the classes present in the batch (0, 2 and 3 of 4), so class 1
    /// takes no part.
    #[test]
    fn conditional_nll_is_the_softmax_over_the_batch_classes() {
        let c = concept(ConditionKind::Classes(4));
        let labels = [2u32, 0, 2, 3, 0];
        let z = Tensor::new(
            &[
                [0.3f32, -1.0, 0.5],
                [1.2, 0.1, -0.4],
                [-0.7, 0.9, 0.2],
                [0.0, 0.4, -1.3],
                [0.8, -0.2, 0.6],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let features = c
            .class_features(&Tensor::new(&labels, &Device::Cpu).unwrap())
            .unwrap();
        let energy = |i: usize, class: u32| -> f64 {
            let zi = z.narrow(0, i, 1).unwrap();
            let f = c
                .class_features(&Tensor::new(&[class], &Device::Cpu).unwrap())
                .unwrap();
            c.energy(&zi, &f).unwrap().to_vec1::<f32>().unwrap()[0] as f64
        };
        // The mean over the codes whose class is a candidate of -log softmax(-E) at the label.
        let expected = |candidates: &[u32]| -> f64 {
            let mut total = 0.0;
            let mut n = 0;
            for (i, &label) in labels.iter().enumerate() {
                if !candidates.contains(&label) {
                    continue;
                }
                let log_sum = candidates
                    .iter()
                    .map(|&k| (-energy(i, k)).exp())
                    .sum::<f64>()
                    .ln();
                total += log_sum + energy(i, label);
                n += 1;
            }
            total / n as f64
        };
        let nll = |max: usize| -> f64 {
            conditional_nll(&c, &z, &features, max)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let (got, want) = (nll(8), expected(&[0, 2, 3]));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // At most two candidates: the first two distinct classes (2, then 0); the code of
        // class 3 is left out.
        let (got, want) = (nll(2), expected(&[2, 0]));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // With a single condition in the batch there is nothing to tell apart.
        let same = c
            .class_features(&Tensor::new(&[1u32, 1], &Device::Cpu).unwrap())
            .unwrap();
        let zero = conditional_nll(&c, &z.narrow(0, 0, 2).unwrap(), &same, 8)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(zero.abs() < 1e-6, "{zero}");
    }

    /// The energy's own reading of codes: each code's lowest-energy class, found here one
    /// class at a time, against its label.
    #[test]
    fn code_accuracy_is_the_share_read_as_labelled() {
        let c = concept(ConditionKind::Classes(3));
        let z =
            ebm_core::noise::normal(&mut seeded_rng(4), (12, 3), DType::F32, &Device::Cpu).unwrap();
        let lowest: Vec<u32> = (0..12)
            .map(|i| {
                let zi = z.narrow(0, i, 1).unwrap();
                (0..3u32)
                    .map(|k| {
                        let f = c
                            .class_features(&Tensor::new(&[k], &Device::Cpu).unwrap())
                            .unwrap();
                        (k, c.energy(&zi, &f).unwrap().to_vec1::<f32>().unwrap()[0])
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(c.code_accuracy(&z, &lowest).unwrap(), 1.0);
        // Half the labels moved to another class: half right.
        let half: Vec<u32> = lowest
            .iter()
            .enumerate()
            .map(|(i, &k)| if i % 2 == 0 { k } else { (k + 1) % 3 })
            .collect();
        assert_eq!(c.code_accuracy(&z, &half).unwrap(), 0.5);
        assert!(c.code_accuracy(&z, &half[..5]).is_err());
        let position = concept(ConditionKind::Position { frequencies: 1 });
        assert!(position.code_accuracy(&z, &lowest).is_err());
    }

    #[test]
    fn class_features_are_one_hot_and_reject_unknown_classes() {
        let c = concept(ConditionKind::Classes(4));
        let f = c
            .class_features(&Tensor::new(&[2u32, 0], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(f, vec![vec![0.0, 0.0, 1.0, 0.0], vec![1.0, 0.0, 0.0, 0.0]]);
        let err = c
            .class_features(&Tensor::new(&[4u32], &Device::Cpu).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("class 4") && err.contains("4 classes"),
            "{err}"
        );
        // A class concept given a position, and the reverse, are errors, not panics.
        let p = Tensor::new(&[[0.5f32, 0.5]], &Device::Cpu).unwrap();
        assert!(c.position_features(&p).is_err());
        let pos = concept(ConditionKind::Position { frequencies: 1 });
        assert!(pos
            .class_features(&Tensor::new(&[0u32], &Device::Cpu).unwrap())
            .is_err());
    }

    #[test]
    fn the_energy_gradient_matches_finite_differences() {
        let c = concept(ConditionKind::Classes(4));
        let z = Tensor::new(&[[0.3f32, -1.2, 0.8], [-0.4, 0.1, 2.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[1u32, 3], &Device::Cpu).unwrap();
        let (_, grad) = c.energy_and_grad_given(&z, &labels).unwrap();
        let grad = grad.to_vec2::<f32>().unwrap();
        let zv = z.to_vec2::<f32>().unwrap();
        let h = 1e-2f32;
        for b in 0..2 {
            for d in 0..3 {
                let at = |delta: f32| {
                    let mut v = zv.clone();
                    v[b][d] += delta;
                    let t = Tensor::new(v, &Device::Cpu).unwrap();
                    c.energy_given(&t, &labels)
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()[b] as f64
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
                assert!(
                    (numeric - grad[b][d] as f64).abs() < 2e-3 * (1.0 + numeric.abs()),
                    "sample {b} dim {d}: {numeric} vs {}",
                    grad[b][d]
                );
            }
        }
        // The Gaussian reference term: far from the origin the energy grows as 0.7 |z|^2 / 2.
        let far = (z.clone() * 1e3).unwrap();
        let e = c
            .energy_given(&far, &labels)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let sq = far.sqr().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
        for (e, sq) in e.iter().zip(sq) {
            assert!(
                (*e as f64 / (0.35 * sq as f64) - 1.0).abs() < 0.05,
                "{e} vs {sq}"
            );
        }
    }

    /// A frozen concept's energies and code gradients come from the MLP's fused CPU pass, the
    /// trainable one's from autograd: both agree, for class and position conditions, through
    /// the methods the compose crate and the training chains call.
    #[test]
    fn the_frozen_concept_gradient_matches_autograd() {
        let z =
            ebm_core::noise::normal(&mut seeded_rng(9), (5, 3), DType::F32, &Device::Cpu).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let (a, b) = (
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{a:?} vs {b:?}");
            }
        };
        let classes = concept(ConditionKind::Classes(4));
        let labels = Tensor::new(&[0u32, 3, 1, 1, 2], &Device::Cpu).unwrap();
        let features = classes.class_features(&labels).unwrap();
        let (e, g) =
            ebm_core::autograd_energy_and_grad(|z| classes.energy(z, &features), &z).unwrap();
        let frozen = classes.frozen().unwrap();
        let (fe, fg) = frozen.energy_and_grad_given(&z, &labels).unwrap();
        close(&fe, &e);
        close(&fg, &g);
        // The gradient is not the prior's alone: the MLP's part is in it.
        let prior = (z.clone() * 0.7).unwrap();
        let apart = (fg - prior).unwrap().abs().unwrap().max_all().unwrap();
        assert!(apart.to_scalar::<f32>().unwrap() > 1e-3);

        let position = concept(ConditionKind::Position { frequencies: 2 });
        let p = ebm_core::noise::uniform(
            &mut seeded_rng(10),
            (5, 2),
            0.0,
            1.0,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let features = position.position_features(&p).unwrap();
        let (e, g) =
            ebm_core::autograd_energy_and_grad(|z| position.energy(z, &features), &z).unwrap();
        let (fe, fg) = position
            .frozen()
            .unwrap()
            .energy_and_grad_given_vector(&z, &p)
            .unwrap();
        close(&fe, &e);
        close(&fg, &g);
        let wrong = Tensor::zeros((5, 4), DType::F32, &Device::Cpu).unwrap();
        let err = frozen
            .energy_and_grad_given(&wrong, &labels)
            .unwrap_err()
            .to_string();
        assert!(err.contains("latent codes"), "{err}");
    }

    #[test]
    fn a_position_concept_takes_two_numbers_per_sample() {
        let c = concept(ConditionKind::Position { frequencies: 1 });
        assert_eq!(c.condition_dim(), 2);
        let z = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let p = Tensor::new(&[[0.1f32, 0.9], [0.5, 0.5]], &Device::Cpu).unwrap();
        assert_eq!(c.energy_given_vector(&z, &p).unwrap().dims(), &[2]);
        let wrong = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let err = c.energy_given_vector(&wrong, &p).unwrap_err().to_string();
        assert!(err.contains("latent codes"), "{err}");
    }

    #[test]
    fn the_autoencoder_learning_rate_holds_then_falls_to_a_tenth() {
        let mut r = Recipe::quick().autoencoder;
        r.iterations = 100;
        r.lr = 2e-3;
        assert_eq!(r.lr_at(1), 2e-3);
        assert_eq!(r.lr_at(50), 2e-3);
        assert!((r.lr_at(75) - 2e-3 * 0.55).abs() < 1e-12);
        assert!((r.lr_at(100) - 2e-4).abs() < 1e-12);
        for s in 1..100 {
            assert!(r.lr_at(s + 1) <= r.lr_at(s));
        }
    }
}

mod judges_and_codes {
    //! The judges' soft renders and the standardised latent codes, against analytic values.

    use candle_core::{DType, Device, Tensor};
    use ebm_core::{noise::uniform, seeded_rng};
    use xtask::reproduce::compose::latent::SceneAutoencoder;
    use xtask::reproduce::compose::{binomial_blur, round_corners, soften, tint, Recipe};

    /// A single bright pixel spreads into the kernel `[1, 2, 1]^T [1, 2, 1] / 16` itself.
    #[test]
    fn binomial_blur_of_a_point_is_the_kernel() {
        let mut v = vec![0f32; 5 * 5];
        v[2 * 5 + 2] = 1.0;
        let x = Tensor::from_vec(v, (1, 1, 5, 5), &Device::Cpu).unwrap();
        let y = binomial_blur(&x).unwrap().flatten_all().unwrap();
        let y = y.to_vec1::<f32>().unwrap();
        let k = [1.0f32, 2.0, 1.0];
        for r in 0..5 {
            for c in 0..5 {
                let expected = if (1..4).contains(&r) && (1..4).contains(&c) {
                    k[r - 1] * k[c - 1] / 16.0
                } else {
                    0.0
                };
                assert!((y[r * 5 + c] - expected).abs() < 1e-7, "({r}, {c})");
            }
        }
    }

    /// Softened renders stay in [0, 1], keep the picture (the mean changes by little), and
    /// depend on the seed alone.
    #[test]
    fn soften_is_seeded_and_stays_in_range() {
        let x = uniform(
            &mut seeded_rng(4),
            (4, 3, 8, 8),
            0.0,
            1.0,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let a = soften(&x, &mut seeded_rng(5)).unwrap();
        let b = soften(&x, &mut seeded_rng(5)).unwrap();
        let c = soften(&x, &mut seeded_rng(6)).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
        let values = flat(&a);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&values) - mean(&flat(&x))).abs() < 0.05);
    }

    /// `n` copies of a crisp magenta 8x8 square in the middle of a black 16x16 scene.
    fn magenta_squares(n: usize) -> Tensor {
        let mut v = vec![0f32; n * 3 * 16 * 16];
        for i in 0..n {
            for c in [0, 2] {
                for y in 4..12 {
                    for x in 4..12 {
                        v[((i * 3 + c) * 16 + y) * 16 + x] = 1.0;
                    }
                }
            }
        }
        Tensor::from_vec(v, (n, 3, 16, 16), &Device::Cpu).unwrap()
    }

    /// Rounding leaves a crisp square as it is (not chosen, or no blur) or darkens its
    /// corners, never the middle of the square or of its edges, never the hue (green stays
    /// 0), nor the far background; both happen among 32 scenes; the same seed gives the same
    /// scenes.
    #[test]
    fn rounded_corners_keep_edges_and_hue() {
        let x = magenta_squares(32);
        let y = round_corners(&x, &mut seeded_rng(1)).unwrap();
        let again = round_corners(&x, &mut seeded_rng(1)).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&y), flat(&again));
        let v = flat(&y);
        let at =
            |i: usize, c: usize, row: usize, col: usize| v[((i * 3 + c) * 16 + row) * 16 + col];
        let (mut unchanged, mut rounded) = (0, 0);
        for i in 0..32 {
            assert!((at(i, 0, 8, 8) - 1.0).abs() < 1e-6, "middle of scene {i}");
            assert!(at(i, 0, 4, 8) > 0.9, "middle of the top edge of scene {i}");
            assert_eq!(at(i, 0, 0, 0), 0.0, "background of scene {i}");
            for row in 0..16 {
                for col in 0..16 {
                    assert_eq!(
                        at(i, 1, row, col),
                        0.0,
                        "green at ({row}, {col}) of scene {i}"
                    );
                    assert!((at(i, 0, row, col) - at(i, 2, row, col)).abs() < 1e-6);
                }
            }
            let corner = at(i, 0, 4, 4);
            if corner == 1.0 {
                unchanged += 1;
            } else {
                assert!(corner < 0.9, "corner {corner} of scene {i}");
                rounded += 1;
            }
        }
        assert!(
            unchanged > 0 && rounded > 0,
            "{unchanged} unchanged, {rounded} rounded"
        );
    }

    /// Tinting leaves some scenes exactly as they were and multiplies the others by gains
    /// within [0.4, 1.2] that vary smoothly from pixel to pixel (along rows).
    #[test]
    fn tint_multiplies_some_scenes_by_a_smooth_field() {
        let x = (Tensor::ones((16, 3, 16, 16), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
        let y = tint(&x, &mut seeded_rng(2)).unwrap();
        let again = tint(&x, &mut seeded_rng(2)).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&y), flat(&again));
        let gains: Vec<Vec<f32>> = (0..16)
            .map(|i| flat(&(y.get(i).unwrap() / 0.5).unwrap()))
            .collect();
        let mut tinted = 0;
        for scene in &gains {
            if scene.iter().all(|v| (v - 1.0).abs() < 1e-6) {
                continue;
            }
            tinted += 1;
            assert!(scene.iter().all(|v| (0.4 - 1e-5..=1.2 + 1e-5).contains(v)));
            for c in 0..3 {
                for row in 0..16 {
                    for col in 1..16 {
                        let i = (c * 16 + row) * 16 + col;
                        // Six blurs spread a jump between grid cells (at most 0.8) over
                        // several pixels: at most 0.8 C(12, 6) / 2^12 = 0.18 per pixel away
                        // from the borders; the enlarged grid alone would jump by 0.8.
                        let step = (scene[i] - scene[i - 1]).abs();
                        assert!(step < 0.25, "step {step} at ({row}, {col})");
                    }
                }
            }
        }
        assert!((2..=14).contains(&tinted), "{tinted} of 16 tinted");
    }

    /// Standardised codes have mean 0 and standard deviation 1 per dimension over the images
    /// they were fitted on, and decode to the same images as the raw codes.
    #[test]
    fn standardised_codes_are_centred_unit_and_decode_the_same() {
        let (ae, x) = tiny_vae(0.2, 40);
        let st = ae.standardised(&x).unwrap();
        let u = st.encode_mean(&x).unwrap();
        let mean = u.mean(0).unwrap().to_vec1::<f32>().unwrap();
        let var = u.sqr().unwrap().mean(0).unwrap().to_vec1::<f32>().unwrap();
        for (m, v) in mean.iter().zip(&var) {
            assert!(m.abs() < 1e-4, "mean {m}");
            assert!((v - 1.0).abs() < 1e-3, "variance {v}");
        }
        let raw = ae.decode(&ae.encode_mean(&x).unwrap()).unwrap();
        let via = st.decode(&u).unwrap();
        let diff = (raw - via).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
        assert!(ae.standardised(&x.narrow(0, 0, 1).unwrap()).is_err());
    }

    /// A tiny VAE with the posterior floor `min_posterior_std`, and `n` random images.
    fn tiny_vae(min_posterior_std: f64, n: usize) -> (SceneAutoencoder, Tensor) {
        let mut recipe = Recipe::quick().autoencoder;
        recipe.encoder_widths = vec![4, 4];
        recipe.encoder_features = 8;
        recipe.decoder_width = 2;
        recipe.latent_dim = 3;
        recipe.min_posterior_std = min_posterior_std;
        let ae = SceneAutoencoder::new(&recipe, 32, &Device::Cpu, &mut seeded_rng(2)).unwrap();
        let x = uniform(
            &mut seeded_rng(3),
            (n, 3, 32, 32),
            0.0,
            1.0,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        (ae, x)
    }

    /// The posterior's standard deviation never falls below the recipe's floor, one far above
    /// what the untrained encoder gives (so that the floor is what holds it there).
    #[test]
    fn the_posterior_std_keeps_its_floor() {
        let least_std = |floor: f64| {
            let (ae, x) = tiny_vae(floor, 4);
            let (_, logvar) = ae.encode(&x).unwrap();
            let std = logvar.affine(0.5, 0.0).unwrap().exp().unwrap();
            std.min_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        assert!(least_std(0.0) < 3.0);
        assert!(least_std(3.0) >= 3.0 * (1.0 - 1e-5));
    }
}

/// The training-free shape reader reads the generator's own scenes (any colour, size and
/// position, also blurred) as their labels say, and refuses images of the wrong shape.
#[test]
fn the_template_reader_reads_fresh_scenes_right() {
    use ebm_data::scenes::{SceneConfig, SceneGenerator, Shape};
    use xtask::reproduce::compose::{binomial_blur, template::TemplateReader};
    let reader = TemplateReader::new(32).unwrap();
    let scenes = SceneGenerator::new(SceneConfig::new(32))
        .unwrap()
        .sample(40, &mut ebm_core::seeded_rng(9))
        .unwrap();
    let x = scenes.tensor(&Device::Cpu).unwrap();
    let truth: Vec<Shape> = scenes.labels().iter().map(|l| l.objects[0].shape).collect();
    assert_eq!(reader.read(&x).unwrap(), truth);
    let soft = binomial_blur(&binomial_blur(&x).unwrap()).unwrap();
    assert_eq!(reader.read(&soft).unwrap(), truth);
    let err = reader
        .read(&x.narrow(1, 0, 1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("template reader") && err.contains("[40, 1, 32, 32]"),
        "{err}"
    );
}
