//! Central finite differences in f64 against candle's autograd: the test every differentiable
//! op and layer of the workspace has to pass.

use candle_core::{DType, Result, Tensor, Var};

/// The largest disagreement between autograd and finite differences for one input.
#[derive(Debug, Clone, Copy)]
pub struct GradError {
    /// `max |analytic - numeric|`.
    pub max_abs: f64,
    /// `max |analytic - numeric| / max(1, |numeric|)`.
    pub max_rel: f64,
}

/// Compares the autograd gradient of the scalar `f(inputs)` with central differences of step
/// `eps`, for every element of every input (inputs are converted to f64 first, so keep them
/// small). Returns one [`GradError`] per input.
pub fn gradient_errors<F>(f: F, inputs: &[Tensor], eps: f64) -> Result<Vec<GradError>>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(DType::F64)?.detach()))
        .collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let value = f(&tensors)?;
    if value.elem_count() != 1 {
        candle_core::bail!(
            "gradcheck: f must return a scalar, got shape {:?}",
            value.dims()
        );
    }
    let grads = value.sum_all()?.backward()?;

    let mut errors = Vec::with_capacity(inputs.len());
    for (i, var) in vars.iter().enumerate() {
        let analytic: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; var.elem_count()],
        };
        let base: Vec<f64> = var.as_tensor().flatten_all()?.to_vec1()?;
        let shape = var.shape().clone();
        let device = var.device().clone();
        let mut max_abs = 0f64;
        let mut max_rel = 0f64;
        for j in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut shifted = base.clone();
                shifted[j] += delta;
                let mut args: Vec<Tensor> = tensors.iter().map(|t| t.detach()).collect();
                args[i] = Tensor::from_vec(shifted, shape.clone(), &device)?;
                f(&args)?.sum_all()?.to_scalar::<f64>()
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            let abs = (analytic[j] - numeric).abs();
            max_abs = max_abs.max(abs);
            max_rel = max_rel.max(abs / numeric.abs().max(1.0));
        }
        errors.push(GradError { max_abs, max_rel });
    }
    Ok(errors)
}

/// Panics with a readable message unless every input's gradient agrees with finite
/// differences to `tol` (relative, floored at absolute for small gradients). For tests.
pub fn assert_gradients<F>(name: &str, f: F, inputs: &[Tensor], tol: f64)
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let errors = gradient_errors(f, inputs, 1e-6).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (i, e) in errors.iter().enumerate() {
        assert!(
            e.max_rel <= tol,
            "{name}: input {i}: autograd and finite differences disagree: {e:?} (tolerance {tol})"
        );
    }
}
