//! Differentiable ops for energy networks, on top of candle.
//!
//! Energy-based models spend their time in Langevin steps: a forward pass of a convolutional
//! energy and its gradient with respect to the input. candle 0.11 computes a convolution's input
//! gradient through a slow direct-loop transposed convolution, always computes the kernel
//! gradient too, and has several gradients that are wrong or missing (see `docs/ARCHITECTURE.md`).
//! The ops here are what the project's networks use instead:
//!
//! - [`conv2d`]: stride-1 convolution with optional fused bias. On the CPU, a custom op built on
//!   im2col and the `gemm` crate whose backward computes only the gradients that are asked for
//!   (the input gradient as a convolution with the flipped kernel). On CUDA and Metal it is
//!   candle's own `conv2d`.
//! - [`conv_transpose2d`]: transposed convolution with stride, padding and optional bias (the
//!   upsampling layer of DCGAN-style generators); on the CPU a custom op (one product per chunk
//!   of images and col2im; gradients only for the tensors that take part in autograd), elsewhere
//!   candle's `conv_transpose2d` ([`conv_transpose2d_candle`]).
//! - [`swish`]: `x * sigmoid(x)` in one pass forward and one pass backward on the CPU.
//! - [`avg_pool2x2`]: 2x2 average pooling with stride 2.
//! - [`linear`]: `x W^T + b`.
//!
//! Every op's gradient is checked against central finite differences in f64 (`tests/`), with
//! the [`gradcheck`] helper that other crates use for their own layers.
//!
//! Errors are candle's: these are tensor-level ops, like those of `candle-nn`.

mod conv;
mod conv_transpose;
pub mod gradcheck;
pub mod kernels;
pub mod packed_gemm;
mod pool;
pub mod simd;
mod swish;

pub use conv::conv2d;
pub use conv_transpose::{conv_transpose2d, conv_transpose2d_candle, conv_transpose2d_input_grad};
pub use pool::avg_pool2x2;
pub use swish::swish;

use candle_core::{Result, Tensor};

/// A fully connected layer: `x [B, in] · w [out, in]^T + b [out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// True when the fast CPU kernels of this crate handle `t` (a CPU tensor of f32 or f64).
pub(crate) fn cpu_fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}
