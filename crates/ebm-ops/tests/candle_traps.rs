//! Regression guards for gradients that candle 0.11 gets wrong, which the project's ops avoid.
//! If one of these starts failing, candle has fixed the trap: the workaround can be revisited.

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::{noise::normal, seeded_rng};
use ebm_ops::gradcheck::gradient_errors;

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    normal(&mut seeded_rng(seed), shape, DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn candle_max_pool_gradient_is_wrong() {
    let x = randn(1, &[1, 1, 4, 4]);
    let errors = gradient_errors(|t| t[0].max_pool2d(2)?.sum_all(), &[x], 1e-6).unwrap();
    assert!(
        errors[0].max_abs > 0.1,
        "candle's max_pool2d gradient now matches finite differences: {errors:?}"
    );
}

#[test]
fn candle_nn_softmax_and_layer_norm_return_no_gradient() -> candle_core::Result<()> {
    let x = Var::from_tensor(&randn(2, &[2, 3]).to_dtype(DType::F32)?)?;
    let w = randn(3, &[2, 3]).to_dtype(DType::F32)?;
    let ones = Tensor::ones(3, DType::F32, &Device::Cpu)?;
    let zeros = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
    let softmax = candle_nn::ops::softmax_last_dim(x.as_tensor())?;
    let layer_norm = candle_nn::ops::layer_norm(x.as_tensor(), &ones, &zeros, 1e-5)?;
    for (name, y) in [("softmax_last_dim", softmax), ("layer_norm", layer_norm)] {
        let g = (y * &w)?.sum_all()?.backward()?;
        assert!(
            g.get(x.as_tensor()).is_none(),
            "candle-nn's {name} now has a gradient"
        );
    }
    Ok(())
}
