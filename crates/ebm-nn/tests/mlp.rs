//! The MLP energy's fused CPU pass against autograd.

use candle_core::{DType, Device};
use ebm_core::{noise, seeded_rng, Energy};
use ebm_nn::{Activation, Mlp, MlpConfig};

#[test]
fn fused_mlp_equals_autograd() {
    let dev = Device::Cpu;
    for (activation, dims) in [
        (Activation::LeakyRelu, (100, vec![200, 200])),
        (Activation::Swish, (7, vec![5, 9])),
    ] {
        let cfg = MlpConfig {
            input_dim: dims.0,
            hidden: dims.1,
            activation,
            spectral_norm: true,
        };
        let mut rng = seeded_rng(41);
        let model = Mlp::new(&cfg, &dev, &mut rng).unwrap();
        let frozen = model.frozen().unwrap();
        for batch in [1, 3, 100] {
            let x = noise::normal(&mut rng, (batch, cfg.input_dim), DType::F32, &dev).unwrap();
            let (e_fast, g_fast) = frozen.energy_and_grad(&x).unwrap();
            let (e_ref, g_ref) =
                ebm_core::autograd_energy_and_grad(|x| model.energy(x), &x).unwrap();
            let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (what, a, b) in [
                ("energy", flat(&e_fast), flat(&e_ref)),
                ("gradient", flat(&g_fast), flat(&g_ref)),
            ] {
                let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (u, v) in a.iter().zip(&b) {
                    assert!(
                        (u - v).abs() <= 1e-5 * scale,
                        "{activation:?} batch {batch} {what}: {u} vs {v}"
                    );
                }
            }
        }
    }
}
