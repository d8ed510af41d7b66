//! The energy classifier on a real network: the input gradient of its cross-entropy against
//! central finite differences of the loss (f64), and the f32 fused path against autograd.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng};
use ebm_nn::energy_classifier::EnergyClassifier;
use ebm_nn::{Igebm, IgebmConfig};

fn tiny(dtype: DType, seed: u64) -> Igebm {
    let mut cfg = IgebmConfig::small(1, 8, 4).conditional(4);
    cfg.spectral_norm = false;
    Igebm::with_dtype(&cfg, &Device::Cpu, dtype, &mut seeded_rng(seed)).unwrap()
}

#[test]
fn cross_entropy_input_gradient_matches_finite_differences() {
    let model = tiny(DType::F64, 1);
    let mut rng = seeded_rng(2);
    let x = noise::uniform(&mut rng, (3, 1, 8, 8), 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
    let labels = [0u32, 3, 1];
    // Over a subset of the classes too: the soft minimum runs over those alone.
    for classes in [vec![0u32, 1, 2, 3], vec![3, 1, 0]] {
        let clf = EnergyClassifier::over(&model, &classes).unwrap();
        let (_, grad) = clf.loss_and_input_grad(&x, &labels).unwrap();
        let grad = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let total = |v: &[f64]| -> f64 {
            let t = Tensor::from_slice(v, (3, 1, 8, 8), &Device::Cpu).unwrap();
            clf.loss_and_input_grad(&t, &labels).unwrap().0.iter().sum()
        };
        let h = 1e-5;
        let mut worst = 0f64;
        for i in (0..base.len()).step_by(7) {
            let mut up = base.clone();
            up[i] += h;
            let mut down = base.clone();
            down[i] -= h;
            let fd = (total(&up) - total(&down)) / (2.0 * h);
            worst = worst.max((fd - grad[i]).abs() / (fd.abs() + grad[i].abs() + 1e-6));
        }
        assert!(
            worst < 1e-5,
            "classes {classes:?}: worst relative error {worst}"
        );
    }
}

#[test]
fn fused_f32_path_matches_autograd() {
    // A frozen f32 IGEBM computes input gradients in its fused CPU pass; the unfrozen model
    // goes through autograd. Both must give the same cross-entropy gradient.
    let model = tiny(DType::F32, 5);
    let frozen = model.frozen().unwrap();
    let mut rng = seeded_rng(6);
    let x = noise::uniform(&mut rng, (5, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let labels = [0u32, 1, 2, 3, 0];
    let (la, ga) = EnergyClassifier::new(&model)
        .unwrap()
        .loss_and_input_grad(&x, &labels)
        .unwrap();
    let (lf, gf) = EnergyClassifier::new(&frozen)
        .unwrap()
        .loss_and_input_grad(&x, &labels)
        .unwrap();
    for (a, f) in la.iter().zip(&lf) {
        assert!((a - f).abs() < 1e-4, "loss {a} vs {f}");
    }
    let diff = (ga - &gf)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = gf
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff <= 1e-4 * scale.max(1e-3),
        "max difference {diff} (scale {scale})"
    );
    // Predictions agree with the argmin of the energies computed one class at a time.
    let pred = EnergyClassifier::new(&frozen).unwrap().predict(&x).unwrap();
    for (b, p) in pred.iter().enumerate() {
        let xb = x.narrow(0, b, 1).unwrap();
        let e: Vec<f32> = (0..4u32)
            .map(|c| {
                let l = Tensor::new(&[c], &Device::Cpu).unwrap();
                frozen
                    .forward(&xb, Some(&l))
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()[0]
            })
            .collect();
        let best = (0..4).min_by(|&i, &j| e[i].total_cmp(&e[j])).unwrap() as u32;
        assert_eq!(*p, best, "input {b}: energies {e:?}");
    }
}
