//! The domain classifier: gradients against finite differences, the loss against its closed
//! form, checkpoints, and bad input.

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::{noise, seeded_rng};
use ebm_nn::{checkpoint, cross_entropy, log_softmax, Classifier, ClassifierConfig, Trainable};

fn tiny() -> ClassifierConfig {
    ClassifierConfig {
        channels: 2,
        image_size: 4,
        widths: vec![3, 2],
        feature_dim: 5,
        num_classes: 3,
        global_pool: false,
    }
}

#[test]
fn loss_gradients_match_finite_differences() {
    gradient_check(tiny());
}

#[test]
fn loss_gradients_with_global_pooling_match_finite_differences() {
    let mut cfg = tiny();
    cfg.global_pool = true;
    gradient_check(cfg);
}

fn gradient_check(cfg: ClassifierConfig) {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(11);
    let model = Classifier::with_dtype(&cfg, &dev, DType::F64, &mut rng).unwrap();
    let x = Var::from_tensor(&noise::normal(&mut rng, (3, 2, 4, 4), DType::F64, &dev).unwrap())
        .unwrap();
    let labels = Tensor::new(&[2u32, 0, 1], &dev).unwrap();
    let eval = |x: &Tensor| model.loss(x, &labels).unwrap();
    let grads = eval(x.as_tensor()).backward().unwrap();
    let mut vars: Vec<(String, Var)> = vec![("input".into(), x.clone())];
    vars.extend(
        model
            .params()
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone())),
    );
    assert_eq!(
        vars.len(),
        1 + 2 * 4,
        "2 convs + 2 dense layers, weight and bias each"
    );
    for (name, var) in vars {
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for j in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                    .unwrap();
                eval(x.as_tensor()).to_scalar::<f64>().unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            let err = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
            assert!(
                err < 1e-6,
                "{name}[{j}]: autograd {} vs finite differences {numeric}",
                analytic[j]
            );
        }
        var.set(&Tensor::from_vec(base, var.shape(), &dev).unwrap())
            .unwrap();
    }
}

#[test]
fn cross_entropy_matches_its_closed_form() {
    let dev = Device::Cpu;
    // Equal logits over K classes: loss ln K whatever the label.
    let equal = Tensor::zeros((2, 4), DType::F64, &dev).unwrap();
    let labels = Tensor::new(&[3u32, 0], &dev).unwrap();
    let loss = cross_entropy(&equal, &labels)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((loss - 4f64.ln()).abs() < 1e-12, "{loss}");
    // Large logits stay finite: log softmax of [1000, 0] is [0, -1000].
    let big = Tensor::new(&[[1000f64, 0.0]], &dev).unwrap();
    let ls = log_softmax(&big)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(
        ls[0].abs() < 1e-12 && (ls[1] + 1000.0).abs() < 1e-9,
        "{ls:?}"
    );
    // Two classes, logits [a, b], label 1: ln(1 + e^(a - b)).
    let (a, b) = (0.3f64, -1.2f64);
    let l = Tensor::new(&[[a, b]], &dev).unwrap();
    let loss = cross_entropy(&l, &Tensor::new(&[1u32], &dev).unwrap())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((loss - (1.0 + (a - b).exp()).ln()).abs() < 1e-12);
}

#[test]
fn checkpoint_round_trip_gives_identical_features() {
    let dev = Device::Cpu;
    let model = Classifier::new(&tiny(), &dev, &mut seeded_rng(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classifier.safetensors");
    checkpoint::save(&model, &path).unwrap();
    let loaded: Classifier = checkpoint::load(&path, &dev).unwrap();
    assert_eq!(loaded.config(), model.config());
    let x = noise::uniform(&mut seeded_rng(6), (4, 2, 4, 4), 0.0, 1.0, DType::F32, &dev).unwrap();
    let a = model
        .features(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = loaded
        .features_batched(&x, 3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
    // An IGEBM checkpoint is not a classifier.
    let err = checkpoint::load::<ebm_nn::Mlp>(&path, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("classifier model, not mlp"), "{err}");
}

#[test]
fn bad_configs_and_inputs_are_clear_errors() {
    let dev = Device::Cpu;
    let mut cfg = tiny();
    cfg.image_size = 6; // two poolings need a multiple of 4
    let err = Classifier::new(&cfg, &dev, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image_size 6 is not divisible by 2^2"),
        "{err}"
    );
    let model = Classifier::new(&tiny(), &dev, &mut seeded_rng(0)).unwrap();
    let wrong = Tensor::zeros((2, 1, 4, 4), DType::F32, &dev).unwrap();
    let err = model.features(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("classifier input") && err.contains("[2, 1, 4, 4]"),
        "{err}"
    );
    let x = Tensor::zeros((2, 2, 4, 4), DType::F32, &dev).unwrap();
    let err = model
        .loss(&x, &Tensor::new(&[0u32, 7], &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 7 is out of range"), "{err}");
    let err = model
        .loss(&x, &Tensor::new(&[0u32], &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cross-entropy labels"), "{err}");
}
