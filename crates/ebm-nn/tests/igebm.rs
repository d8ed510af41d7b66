//! The IGEBM network: gradients against finite differences (input and every parameter),
//! spectral norm against an SVD, frozen copies, checkpoints, and bad input.

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::{noise, seeded_rng, Energy, LabelledEnergy};
use ebm_nn::{checkpoint, BlockConfig, Igebm, IgebmConfig, Mlp, MlpConfig, Trainable};

fn tiny(classes: Option<usize>) -> IgebmConfig {
    IgebmConfig {
        in_channels: 2,
        image_size: 4,
        stem_channels: 3,
        blocks: vec![
            BlockConfig {
                channels: 3,
                downsample: true,
            },
            BlockConfig {
                channels: 4,
                downsample: false,
            },
        ],
        num_classes: classes,
        spectral_norm: true,
        activation: ebm_nn::Activation::Swish,
    }
}

/// Central differences of `f` with respect to every element of `var`, against `analytic`.
fn check_var(name: &str, var: &Var, analytic: &Tensor, f: &dyn Fn() -> f64) {
    let analytic: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-6;
    for j in 0..base.len() {
        let at = |d: f64| {
            let mut v = base.clone();
            v[j] += d;
            var.set(&Tensor::from_vec(v, var.shape(), var.device()).unwrap())
                .unwrap();
            f()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        let err = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
        assert!(
            err < 1e-6,
            "{name}[{j}]: autograd {} vs finite differences {numeric}",
            analytic[j]
        );
    }
    var.set(&Tensor::from_vec(base, var.shape(), var.device()).unwrap())
        .unwrap();
}

fn gradient_check(classes: Option<usize>) {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(3);
    let model = Igebm::with_dtype(&tiny(classes), &dev, DType::F64, &mut rng).unwrap();
    let x = Var::from_tensor(&noise::normal(&mut rng, (3, 2, 4, 4), DType::F64, &dev).unwrap())
        .unwrap();
    let labels = Tensor::new(&[0u32, 2, 1], &dev).unwrap();
    let weights = noise::normal(&mut rng, 3, DType::F64, &dev).unwrap();
    let eval = |x: &Tensor| -> Tensor {
        let e = match classes {
            Some(_) => model.energy_given(x, &labels).unwrap(),
            None => model.energy(x).unwrap(),
        };
        (e * &weights).unwrap().sum_all().unwrap()
    };
    let grads = eval(x.as_tensor()).backward().unwrap();
    let f = || eval(x.as_tensor()).to_scalar::<f64>().unwrap();
    check_var("input", &x, grads.get(x.as_tensor()).unwrap(), &f);
    let mut checked = 0;
    for (name, var) in model.params().iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        check_var(name, var, g, &f);
        checked += 1;
    }
    assert_eq!(checked, model.params().len());
}

#[test]
fn unconditional_gradients_match_finite_differences() {
    gradient_check(None);
}

#[test]
fn conditional_gradients_match_finite_differences() {
    gradient_check(Some(3));
}

#[test]
fn mlp_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(4);
    let cfg = MlpConfig {
        input_dim: 3,
        hidden: vec![5, 4],
        activation: ebm_nn::Activation::LeakyRelu,
        spectral_norm: true,
    };
    let model = Mlp::with_dtype(&cfg, &dev, DType::F64, &mut rng).unwrap();
    let x = Var::from_tensor(&noise::normal(&mut rng, (4, 3), DType::F64, &dev).unwrap()).unwrap();
    let eval = |x: &Tensor| model.energy(x).unwrap().sum_all().unwrap();
    let grads = eval(x.as_tensor()).backward().unwrap();
    let f = || eval(x.as_tensor()).to_scalar::<f64>().unwrap();
    check_var("input", &x, grads.get(x.as_tensor()).unwrap(), &f);
    for (name, var) in model.params().iter() {
        check_var(name, var, grads.get(var.as_tensor()).unwrap(), &f);
    }
}

/// After enough power iterations every normalised weight has largest singular value 1.
#[test]
fn spectral_norm_matches_svd() {
    let dev = Device::Cpu;
    let mut model = Igebm::new(&IgebmConfig::small(3, 8, 16), &dev, &mut seeded_rng(5)).unwrap();
    for _ in 0..100 {
        model.update_spectral_norm().unwrap();
    }
    let layers = model.spectral_norms();
    assert_eq!(layers.len(), 1 + 2 * 4 + 1);
    for (name, weight, sn) in layers {
        let out = weight.dim(0).unwrap();
        let rest = weight.elem_count() / out;
        let w: Vec<f32> = weight.flatten_all().unwrap().to_vec1().unwrap();
        let m = nalgebra::DMatrix::from_row_slice(
            out,
            rest,
            &w.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        let top = m.singular_values().max();
        let sigma = sn
            .sigma(weight)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (sigma / top - 1.0).abs() < 1e-3,
            "{name}: power iteration {sigma} vs SVD {top}"
        );
        let normalised = sn
            .normalize(weight)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = nalgebra::DMatrix::from_row_slice(
            out,
            rest,
            &normalised.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        let top_normalised = n.singular_values().max();
        assert!(
            (top_normalised - 1.0).abs() < 1e-3,
            "{name}: normalised weight has top singular value {top_normalised}"
        );
    }
}

#[test]
fn frozen_copy_gives_the_same_energies_and_no_parameter_gradients() {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(6);
    let model = Igebm::new(&IgebmConfig::small(1, 8, 8).conditional(4), &dev, &mut rng).unwrap();
    let frozen = model.frozen().unwrap();
    let x = noise::uniform(&mut rng, (5, 1, 8, 8), 0.0, 1.0, DType::F32, &dev).unwrap();
    let y = Tensor::new(&[0u32, 1, 2, 3, 0], &dev).unwrap();
    let a = model
        .energy_given(&x, &y)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = frozen
        .energy_given(&x, &y)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
    assert!(frozen.params().is_empty());
    let (_, grad) = frozen.with_labels(&y).energy_and_grad(&x).unwrap();
    assert_eq!(grad.dims(), x.dims());
}

#[test]
fn checkpoint_round_trip_gives_identical_energies() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let mut rng = seeded_rng(7);
    let mut model =
        Igebm::new(&IgebmConfig::small(1, 8, 8).conditional(3), &dev, &mut rng).unwrap();
    model.update_spectral_norm().unwrap();
    let path = dir.path().join("nested/model.safetensors");
    checkpoint::save(&model, &path).unwrap();
    assert!(checkpoint::config_path(&path).exists());
    let loaded: Igebm = checkpoint::load(&path, &dev).unwrap();
    assert_eq!(loaded.config(), model.config());
    let x = noise::uniform(&mut rng, (4, 1, 8, 8), 0.0, 1.0, DType::F32, &dev).unwrap();
    let y = Tensor::new(&[0u32, 1, 2, 1], &dev).unwrap();
    assert_eq!(
        model
            .energy_given(&x, &y)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        loaded
            .energy_given(&x, &y)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
}

#[test]
fn checkpoint_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let model = Igebm::new(&IgebmConfig::small(1, 8, 8), &dev, &mut seeded_rng(8)).unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(&model, &path).unwrap();

    // An unknown config key.
    let cfg_path = checkpoint::config_path(&path);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        text.replace("\"stem_channels\"", "\"stem_width\""),
    )
    .unwrap();
    let err = checkpoint::load::<Igebm>(&path, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `stem_width`"), "{err}");

    // Weights that do not fit the config.
    std::fs::write(
        &cfg_path,
        text.replace("\"stem_channels\": 8", "\"stem_channels\": 16"),
    )
    .unwrap();
    let err = checkpoint::load::<Igebm>(&path, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stem.weight has shape [8, 1, 3, 3], the model expects [16, 1, 3, 3]"),
        "{err}"
    );

    // Another model kind.
    std::fs::write(&cfg_path, text.replace("\"igebm\"", "\"mlp\"")).unwrap();
    let err = checkpoint::load::<Igebm>(&path, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds a mlp model, not igebm"), "{err}");

    // A missing file.
    let err = checkpoint::load::<Igebm>(&dir.path().join("absent.safetensors"), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.json"), "{err}");

    // A corrupt weights file.
    std::fs::write(&cfg_path, &text).unwrap();
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = checkpoint::load::<Igebm>(&path, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dev = Device::Cpu;
    let model = Igebm::new(&IgebmConfig::small(1, 28, 8), &dev, &mut seeded_rng(9)).unwrap();
    let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &dev).unwrap();
    let err = model.energy(&x).unwrap_err().to_string();
    assert_eq!(
        err,
        "IGEBM input: expected shape [batch >= 1, 1, 28, 28], got [2, 3, 32, 32]"
    );

    let cond = Igebm::new(
        &IgebmConfig::small(1, 8, 8).conditional(10),
        &dev,
        &mut seeded_rng(9),
    )
    .unwrap();
    let x = Tensor::zeros((2, 1, 8, 8), DType::F32, &dev).unwrap();
    let err = cond.energy(&x).unwrap_err().to_string();
    assert!(err.contains("conditional on 10 classes"), "{err}");
    let err = cond
        .energy_given(&x, &Tensor::new(&[1u32, 10], &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label 10 is out of range for a model of 10 classes"),
        "{err}"
    );
    let err = cond
        .energy_given(&x, &Tensor::new(&[1u32], &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("IGEBM labels"), "{err}");

    let mut odd = IgebmConfig::small(1, 30, 8);
    odd.image_size = 30;
    let err = Igebm::new(&odd, &dev, &mut seeded_rng(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be halved by block 3"), "{err}");
}

/// The fused CPU pass of a frozen model gives autograd's energies and input gradients to 1e-5.
#[test]
fn fused_cpu_path_equals_autograd() {
    let dev = Device::Cpu;
    for classes in [None, Some(4)] {
        let cfg = IgebmConfig {
            in_channels: 3,
            image_size: 12,
            stem_channels: 8,
            blocks: vec![
                BlockConfig {
                    channels: 8,
                    downsample: true,
                },
                BlockConfig {
                    channels: 12,
                    downsample: false,
                },
                BlockConfig {
                    channels: 12,
                    downsample: true,
                },
            ],
            num_classes: classes,
            spectral_norm: true,
            activation: ebm_nn::Activation::Swish,
        };
        let mut rng = seeded_rng(21);
        let mut model = Igebm::new(&cfg, &dev, &mut rng).unwrap();
        model.update_spectral_norm().unwrap();
        let frozen = model.frozen().unwrap();
        let x = noise::uniform(&mut rng, (5, 3, 12, 12), 0.0, 1.0, DType::F32, &dev).unwrap();
        let labels = classes.map(|_| Tensor::new(&[0u32, 3, 1, 2, 3], &dev).unwrap());
        let (e_fast, g_fast) = frozen.energy_and_input_grad(&x, labels.as_ref()).unwrap();
        let (e_ref, g_ref) =
            ebm_core::autograd_energy_and_grad(|x| model.forward(x, labels.as_ref()), &x).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (what, a, b) in [
            ("energy", flat(&e_fast), flat(&e_ref)),
            ("gradient", flat(&g_fast), flat(&g_ref)),
        ] {
            let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (u - v).abs() <= 1e-5 * scale,
                    "{classes:?} {what}: fused {u} vs autograd {v}"
                );
            }
        }
    }
}

/// The fused training pass gives autograd's parameter gradients (through spectral norm) to 1e-5.
#[test]
fn fused_loss_gradients_equal_autograd() {
    let dev = Device::Cpu;
    for classes in [None, Some(3)] {
        let cfg = IgebmConfig {
            in_channels: 2,
            image_size: 8,
            stem_channels: 4,
            blocks: vec![
                BlockConfig {
                    channels: 4,
                    downsample: true,
                },
                BlockConfig {
                    channels: 6,
                    downsample: false,
                },
            ],
            num_classes: classes,
            spectral_norm: true,
            activation: ebm_nn::Activation::Swish,
        };
        let mut rng = seeded_rng(31);
        let mut model = Igebm::new(&cfg, &dev, &mut rng).unwrap();
        model.update_spectral_norm().unwrap();
        let x = noise::uniform(&mut rng, (6, 2, 8, 8), 0.0, 1.0, DType::F32, &dev).unwrap();
        let labels = classes.map(|_| Tensor::new(&[0u32, 2, 1, 1, 0, 2], &dev).unwrap());
        // loss = sum_i a_i E_i + 0.3 E_i^2, a_i = +1/3 for the first three, -1/3 for the rest.
        let a = [
            1.0f32 / 3.0,
            1.0 / 3.0,
            1.0 / 3.0,
            -1.0 / 3.0,
            -1.0 / 3.0,
            -1.0 / 3.0,
        ];
        let dloss = |i: usize, e: f32| a[i] + 0.6 * e;
        let (e_fast, g_fast) = model
            .fused_loss_grads(&x, labels.as_ref(), &dloss)
            .unwrap()
            .unwrap();
        let e = model.forward(&x, labels.as_ref()).unwrap();
        let a_t = Tensor::new(&a, &dev).unwrap();
        let loss = ((&e * &a_t).unwrap().sum_all().unwrap()
            + (e.sqr().unwrap().sum_all().unwrap() * 0.3).unwrap())
        .unwrap();
        let g_ref = loss.backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (ef, er) = (flat(&e_fast), flat(&e));
        for (u, v) in ef.iter().zip(&er) {
            assert!((u - v).abs() < 1e-5 * v.abs().max(1.0), "energy {u} vs {v}");
        }
        for (name, var) in model.params().iter() {
            let want = flat(g_ref.get(var.as_tensor()).unwrap());
            let got = flat(
                g_fast
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no fused gradient")),
            );
            let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (u, v) in got.iter().zip(&want) {
                assert!(
                    (u - v).abs() <= 1e-5 * scale,
                    "{classes:?} {name}: fused {u} vs autograd {v} (scale {scale})"
                );
            }
        }
    }
}
