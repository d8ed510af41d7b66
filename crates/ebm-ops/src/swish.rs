//! [`swish`]: `x * sigmoid(x)` (also called SiLU), one pass forward and one pass backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::kernels::{swish_backward, swish_forward};

/// `x * sigmoid(x)`, element-wise. On the CPU (f32, f64) the forward and the backward are each
/// a single pass over memory; elsewhere this is candle's `silu`, whose gradient is the same.
pub fn swish(x: &Tensor) -> Result<Tensor> {
    if crate::cpu_fast_path(x) {
        x.contiguous()?.apply_op1(Swish)
    } else {
        x.silu()
    }
}

fn contiguous<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("ebm-ops swish: expected a contiguous tensor"),
    }
}

struct Swish;

impl CustomOp1 for Swish {
    fn name(&self) -> &'static str {
        "ebm-swish"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => CpuStorage::F32(swish_forward(contiguous::<f32>(s, l)?)),
            DType::F64 => CpuStorage::F64(swish_forward(contiguous::<f64>(s, l)?)),
            dt => candle_core::bail!("ebm-ops swish: no CPU kernel for {dt:?}"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &SwishGrad)?))
    }
}

/// `(x, grad_y) -> grad_x`. Not itself differentiable.
struct SwishGrad;

impl CustomOp2 for SwishGrad {
    fn name(&self) -> &'static str {
        "ebm-swish-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match sx.dtype() {
            DType::F32 => CpuStorage::F32(swish_backward(
                contiguous::<f32>(sx, lx)?,
                contiguous(sg, lg)?,
            )),
            DType::F64 => CpuStorage::F64(swish_backward(
                contiguous::<f64>(sx, lx)?,
                contiguous(sg, lg)?,
            )),
            dt => candle_core::bail!("ebm-ops swish: no CPU kernel for {dt:?}"),
        };
        Ok((out, lx.shape().clone()))
    }
}
