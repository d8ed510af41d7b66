//! The hand-written input gradient of a frozen IGEBM (the path of every device but the CPU),
//! forced on the CPU: against candle's autograd to 1e-5 for the canonical architectures
//! (unconditional and conditional, 28x28x1 and 32x32x3, spectral norm on and off, a 1x1
//! shortcut, leaky ReLU), and against finite differences in f64.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng};
use ebm_nn::{Activation, BlockConfig, Igebm, IgebmConfig, Trainable};

/// Draws every per-class table afresh (the initial biases are 0 and gains 1, which would hide a
/// wrong conditioning): biases from N(0, 0.5^2), gains from 1 + N(0, 0.3^2).
fn randomise_class_tables(model: &Igebm, rng: &mut ebm_core::noise::Rng) {
    for (name, var) in model.params().iter() {
        if !name.contains(".class_") {
            continue;
        }
        let n = noise::normal(&mut *rng, var.shape(), var.dtype(), var.device()).unwrap();
        let value = if name.ends_with("class_gain") {
            (n * 0.3).unwrap().affine(1.0, 1.0).unwrap()
        } else {
            (n * 0.5).unwrap()
        };
        var.set(&value).unwrap();
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `max |a - b| / max |b|`.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (flat(a), flat(b));
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (u, v)| m.max((u - v).abs()));
    diff / scale
}

/// Builds `cfg` in f32 on the CPU, freezes it, and compares the manual path with autograd (of
/// the frozen copy and of the trainable model) on `batch` images.
fn compare_with_autograd(name: &str, cfg: &IgebmConfig, batch: usize, seed: u64) {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(seed);
    let mut model = Igebm::new(cfg, &dev, &mut rng).unwrap();
    randomise_class_tables(&model, &mut rng);
    model.update_spectral_norm().unwrap();
    let frozen = model.frozen().unwrap();
    let shape = [batch, cfg.in_channels, cfg.image_size, cfg.image_size];
    let x = noise::uniform(&mut rng, &shape[..], 0.0, 1.0, DType::F32, &dev).unwrap();
    let labels = cfg.num_classes.map(|k| {
        let l: Vec<u32> = (0..batch).map(|i| ((i * 7 + 3) % k) as u32).collect();
        Tensor::new(l.as_slice(), &dev).unwrap()
    });
    let (e_man, g_man) = frozen
        .manual_energy_and_input_grad(&x, labels.as_ref())
        .unwrap();
    assert_eq!(e_man.dims(), [batch]);
    assert_eq!(g_man.dims(), x.dims());
    let (e_ref, g_ref) = frozen
        .autograd_energy_and_input_grad(&x, labels.as_ref())
        .unwrap();
    let (e_tr, g_tr) = model
        .autograd_energy_and_input_grad(&x, labels.as_ref())
        .unwrap();
    // The manual path on the trainable model (weights normalised and flipped per call).
    let (e_man2, g_man2) = model
        .manual_energy_and_input_grad(&x, labels.as_ref())
        .unwrap();
    for (what, err) in [
        ("energy vs frozen autograd", rel_err(&e_man, &e_ref)),
        ("input gradient vs frozen autograd", rel_err(&g_man, &g_ref)),
        ("energy vs trainable autograd", rel_err(&e_man, &e_tr)),
        (
            "input gradient vs trainable autograd",
            rel_err(&g_man, &g_tr),
        ),
        ("energy, trainable model", rel_err(&e_man2, &e_tr)),
        ("input gradient, trainable model", rel_err(&g_man2, &g_tr)),
    ] {
        eprintln!("{name}: {what}: {err:.2e}");
        assert!(err <= 1e-5, "{name}: {what}: relative error {err:e}");
    }
    // Not vacuous: the gradient is far from zero.
    assert!(
        flat(&g_ref).iter().any(|v| v.abs() > 1e-4),
        "{name}: zero gradient"
    );
}

#[test]
fn manual_path_equals_autograd_on_the_canonical_architectures() {
    for (channels, size) in [(1, 28), (3, 32)] {
        for classes in [None, Some(10)] {
            for sn in [true, false] {
                let mut cfg = IgebmConfig::small(channels, size, 16);
                cfg.num_classes = classes;
                cfg.spectral_norm = sn;
                let name = format!("{channels}x{size}x{size}, classes {classes:?}, sn {sn}");
                compare_with_autograd(&name, &cfg, 4, 11 + channels as u64);
            }
        }
    }
}

/// Widths that change (1x1 shortcuts), and the other activation.
fn mixed(classes: Option<usize>, activation: Activation) -> IgebmConfig {
    IgebmConfig {
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
                channels: 6,
                downsample: true,
            },
        ],
        num_classes: classes,
        spectral_norm: true,
        activation,
    }
}

#[test]
fn manual_path_equals_autograd_with_shortcuts_and_leaky_relu() {
    for classes in [None, Some(4)] {
        for act in [Activation::Swish, Activation::LeakyRelu] {
            compare_with_autograd(
                &format!("mixed widths, classes {classes:?}, {act:?}"),
                &mixed(classes, act),
                5,
                21,
            );
        }
    }
}

/// The manual gradient of the summed energies against central differences of the manual
/// energies, in f64 on a tiny model with a shortcut.
#[test]
fn manual_path_matches_finite_differences_in_f64() {
    let dev = Device::Cpu;
    for classes in [None, Some(3)] {
        let cfg = IgebmConfig {
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
            activation: Activation::Swish,
        };
        let mut rng = seeded_rng(5);
        let model = Igebm::with_dtype(&cfg, &dev, DType::F64, &mut rng).unwrap();
        randomise_class_tables(&model, &mut rng);
        let frozen = model.frozen().unwrap();
        let x = noise::normal(&mut rng, (3, 2, 4, 4), DType::F64, &dev).unwrap();
        let labels = classes.map(|_| Tensor::new(&[0u32, 2, 1], &dev).unwrap());
        let (_, grad) = frozen
            .manual_energy_and_input_grad(&x, labels.as_ref())
            .unwrap();
        let grad = flat(&grad);
        let base = flat(&x);
        let total = |v: &[f64]| -> f64 {
            let t = Tensor::from_slice(v, x.shape(), &dev).unwrap();
            let (e, _) = frozen
                .manual_energy_and_input_grad(&t, labels.as_ref())
                .unwrap();
            e.sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let eps = 1e-6;
        for j in 0..base.len() {
            let mut v = base.clone();
            v[j] = base[j] + eps;
            let up = total(&v);
            v[j] = base[j] - eps;
            let down = total(&v);
            let numeric = (up - down) / (2.0 * eps);
            let err = (grad[j] - numeric).abs() / numeric.abs().max(1.0);
            assert!(
                err < 1e-6,
                "classes {classes:?}, x[{j}]: manual {} vs finite differences {numeric}",
                grad[j]
            );
        }
    }
}

#[test]
fn manual_path_checks_its_input() {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(1);
    let cfg = mixed(Some(4), Activation::Swish);
    let frozen = Igebm::new(&cfg, &dev, &mut rng).unwrap().frozen().unwrap();
    let x = Tensor::zeros((2, 3, 12, 12), DType::F32, &dev).unwrap();
    let err = |r: ebm_core::Result<(Tensor, Tensor)>| r.unwrap_err().to_string();
    assert!(err(frozen.manual_energy_and_input_grad(&x, None)).contains("label"));
    let bad = Tensor::new(&[0u32, 4], &dev).unwrap();
    assert!(err(frozen.manual_energy_and_input_grad(&x, Some(&bad))).contains("out of range"));
    let wrong = Tensor::zeros((2, 3, 10, 10), DType::F32, &dev).unwrap();
    let labels = Tensor::new(&[0u32, 1], &dev).unwrap();
    assert!(frozen
        .manual_energy_and_input_grad(&wrong, Some(&labels))
        .is_err());
}

/// On CUDA (built with `--features cuda`, run on a GPU machine): the manual path against
/// autograd on the device itself, for the canonical architectures.
#[cfg(feature = "cuda")]
#[test]
fn manual_path_equals_autograd_on_cuda() {
    let dev = Device::new_cuda(0).expect("a CUDA device");
    for (channels, size) in [(1, 28), (3, 32)] {
        for classes in [None, Some(10)] {
            let mut cfg = IgebmConfig::small(channels, size, 16);
            cfg.num_classes = classes;
            let mut rng = seeded_rng(7);
            let mut model = Igebm::new(&cfg, &dev, &mut rng).unwrap();
            randomise_class_tables(&model, &mut rng);
            model.update_spectral_norm().unwrap();
            let frozen = model.frozen().unwrap();
            let x = noise::uniform(
                &mut rng,
                (6, channels, size, size),
                0.0,
                1.0,
                DType::F32,
                &dev,
            )
            .unwrap();
            let labels = classes.map(|_| Tensor::new(&[0u32, 9, 3, 1, 4, 4], &dev).unwrap());
            // The routed path of a frozen model off the CPU is the manual one.
            let (e_man, g_man) = frozen.energy_and_input_grad(&x, labels.as_ref()).unwrap();
            let (e_ref, g_ref) = model
                .autograd_energy_and_input_grad(&x, labels.as_ref())
                .unwrap();
            let (ee, ge) = (rel_err(&e_man, &e_ref), rel_err(&g_man, &g_ref));
            eprintln!("CUDA {channels}x{size}x{size} classes {classes:?}: energy {ee:.2e}, input gradient {ge:.2e}");
            assert!(ee <= 1e-5 && ge <= 1e-5);
        }
    }
}

/// A timing breakdown on CUDA of one Langevin step's parts (not a check; it prints only with
/// `EBM_CUDA_TIMING=1`, run with `--nocapture`): the manual and the autograd input gradient, the forward alone,
/// single convolutions and element-wise ops, the host noise and the host read of the energy.
#[cfg(feature = "cuda")]
#[test]
fn timing_breakdown_on_cuda() {
    if std::env::var("EBM_CUDA_TIMING").as_deref() != Ok("1") {
        eprintln!("timing_breakdown_on_cuda: set EBM_CUDA_TIMING=1 to measure");
        return;
    }
    use std::time::Instant;
    let dev = Device::new_cuda(0).expect("a CUDA device");
    let time = |what: &str, reps: usize, f: &mut dyn FnMut()| {
        for _ in 0..3 {
            f();
        }
        dev.synchronize().unwrap();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        dev.synchronize().unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        eprintln!("  {what}: {ms:.3} ms");
    };
    for (batch, channels, size, width) in [(128, 3, 32, 64), (64, 1, 28, 32)] {
        eprintln!("B{batch} {channels}x{size}x{size} width {width}:");
        let mut rng = seeded_rng(0);
        let model = Igebm::new(&IgebmConfig::small(channels, size, width), &dev, &mut rng).unwrap();
        let frozen = model.frozen().unwrap();
        let x = noise::uniform(
            &mut rng,
            (batch, channels, size, size),
            0.0,
            1.0,
            DType::F32,
            &dev,
        )
        .unwrap();
        let n = 20;
        time("energy_and_grad, manual (routed)", n, &mut || {
            frozen.energy_and_input_grad(&x, None).unwrap();
        });
        time("energy_and_grad, autograd", n, &mut || {
            frozen.autograd_energy_and_input_grad(&x, None).unwrap();
        });
        time("forward only", n, &mut || {
            frozen.forward(&x, None).unwrap();
        });
        time("manual + host read of the mean energy", n, &mut || {
            let (e, _) = frozen.energy_and_input_grad(&x, None).unwrap();
            e.mean_all().unwrap().to_scalar::<f32>().unwrap();
        });
        time("host noise normal_like (draw + upload)", n, &mut || {
            noise::normal_like(&mut rng, &x).unwrap();
        });
        let h = noise::uniform(
            &mut rng,
            (batch, width, size, size),
            -1.0,
            1.0,
            DType::F32,
            &dev,
        )
        .unwrap();
        let w = noise::normal(&mut rng, (width, width, 3, 3), DType::F32, &dev).unwrap();
        let w_in = noise::normal(&mut rng, (channels, width, 3, 3), DType::F32, &dev).unwrap();
        time(
            "conv2d width->width 3x3 (candle, im2col + cuBLAS)",
            n,
            &mut || {
                h.conv2d(&w, 1, 1, 1, 1).unwrap();
            },
        );
        time(
            "conv2d width->in_channels 3x3 (stem input grad)",
            n,
            &mut || {
                h.conv2d(&w_in, 1, 1, 1, 1).unwrap();
            },
        );
        time(
            "conv_transpose2d width->width 3x3 (autograd's input grad)",
            n,
            &mut || {
                h.conv_transpose2d(&w, 1, 0, 1, 1).unwrap();
            },
        );
        let m =
            noise::normal(&mut rng, (batch * size * size, width * 9), DType::F32, &dev).unwrap();
        let k = noise::normal(&mut rng, (width * 9, width), DType::F32, &dev).unwrap();
        time("matmul [B*H*W, 9C] x [9C, C] alone", n, &mut || {
            m.matmul(&k).unwrap();
        });
        time("silu", n, &mut || {
            h.silu().unwrap();
        });
        time("binary mul", n, &mut || {
            (&h * &h).unwrap();
        });
        time("affine", n, &mut || {
            h.affine(0.5, 0.5).unwrap();
        });
        let small = Tensor::zeros(4, DType::F32, &dev).unwrap();
        time("affine on 4 elements (launch overhead)", 200, &mut || {
            small.affine(0.5, 0.5).unwrap();
        });
    }
}
