//! [`conv2d`]: stride-1 2-D convolution with optional fused bias, whose backward computes only
//! the gradients that are asked for.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};

use crate::kernels::{
    conv_bias_grad, conv_forward, conv_input_grad, conv_kernel_grad, ConvGeom, Real,
};

/// 2-D convolution, stride 1, `padding` zeros on every side:
/// `x [B, C, H, W]`, `w [O, C, KH, KW]`, optional `bias [O]`, result `[B, O, H', W']`.
///
/// On the CPU (f32, f64) this is a custom op on im2col and `gemm`. Its backward computes the
/// input gradient as a convolution with the flipped kernel, and the kernel and bias gradients
/// only when those tensors take part in autograd (they are variables or results of ops): a
/// sampler that holds detached weights pays for the input gradient alone. Elsewhere it is
/// candle's `conv2d` plus a broadcast add.
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let b = Tensor::new(&[0f32, 10.0], &Device::Cpu)?;
/// let y = ebm_ops::conv2d(&x, &w, Some(&b), 1)?;
/// // The centre pixel sees all nine ones; a corner sees four.
/// assert_eq!(y.get(0)?.get(0)?.to_vec2::<f32>()?[1][1], 9.0);
/// assert_eq!(y.get(0)?.get(1)?.to_vec2::<f32>()?[0][0], 14.0);
/// # Ok(())
/// # }
/// ```
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let geom = geometry(x, w, bias, padding)?;
    if !(crate::cpu_fast_path(x) && x.dtype() == w.dtype()) {
        let y = x.conv2d(w, padding, 1, 1, 1)?;
        return match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, geom.out_channels, 1, 1))?),
            None => Ok(y),
        };
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, Conv2dBias { padding }),
        None => x.apply_op2(&w, Conv2d { padding }),
    }
}

fn geometry(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<ConvGeom> {
    let (batch, in_channels, height, width) = x.dims4()?;
    let (out_channels, w_in, kernel_h, kernel_w) = w.dims4()?;
    if w_in != in_channels {
        candle_core::bail!(
            "conv2d: the kernel {:?} takes {w_in} input channels, the input {:?} has {in_channels}",
            w.dims(),
            x.dims()
        );
    }
    if kernel_h != kernel_w || padding >= kernel_h {
        candle_core::bail!(
            "conv2d: needs a square kernel and padding < kernel size, got kernel {kernel_h}x{kernel_w}, padding {padding}"
        );
    }
    if height + 2 * padding < kernel_h || width + 2 * padding < kernel_w {
        candle_core::bail!(
            "conv2d: a {height}x{width} input with padding {padding} is smaller than the {kernel_h}x{kernel_w} kernel"
        );
    }
    if let Some(b) = bias {
        if b.dims() != [out_channels] {
            candle_core::bail!(
                "conv2d: the bias has shape {:?}, the kernel has {out_channels} output channels",
                b.dims()
            );
        }
    }
    Ok(ConvGeom {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel_h,
        kernel_w,
        padding,
    })
}

fn out_shape(g: &ConvGeom) -> Shape {
    Shape::from((g.batch, g.out_channels, g.out_h(), g.out_w()))
}

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("ebm-ops: expected a contiguous tensor"),
    }
}

fn geometry_from_layouts(lx: &Layout, lw: &Layout, padding: usize) -> Result<ConvGeom> {
    let (batch, in_channels, height, width) = lx.shape().dims4()?;
    let (out_channels, _, kernel_h, kernel_w) = lw.shape().dims4()?;
    Ok(ConvGeom {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel_h,
        kernel_w,
        padding,
    })
}

fn forward_typed<T: Real + WithDType>(
    sx: &CpuStorage,
    lx: &Layout,
    sw: &CpuStorage,
    lw: &Layout,
    bias: Option<(&CpuStorage, &Layout)>,
    padding: usize,
) -> Result<(Vec<T>, Shape)> {
    let g = geometry_from_layouts(lx, lw, padding)?;
    let bias = match bias {
        Some((s, l)) => Some(slice::<T>(s, l)?),
        None => None,
    };
    let out = conv_forward(slice::<T>(sx, lx)?, slice::<T>(sw, lw)?, bias, &g);
    Ok((out, out_shape(&g)))
}

fn forward(
    sx: &CpuStorage,
    lx: &Layout,
    sw: &CpuStorage,
    lw: &Layout,
    bias: Option<(&CpuStorage, &Layout)>,
    padding: usize,
) -> Result<(CpuStorage, Shape)> {
    match sx.dtype() {
        DType::F32 => {
            let (v, s) = forward_typed::<f32>(sx, lx, sw, lw, bias, padding)?;
            Ok((CpuStorage::F32(v), s))
        }
        DType::F64 => {
            let (v, s) = forward_typed::<f64>(sx, lx, sw, lw, bias, padding)?;
            Ok((CpuStorage::F64(v), s))
        }
        dt => candle_core::bail!("ebm-ops conv2d: no CPU kernel for {dt:?}"),
    }
}

/// The input and kernel gradients, each computed only when its tensor takes part in autograd.
fn backward(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    padding: usize,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let grad_x = if x.track_op() {
        Some(grad.apply_op2_no_bwd(w, &InputGrad { padding })?)
    } else {
        None
    };
    let grad_w = if w.track_op() {
        Some(x.apply_op2_no_bwd(
            &grad,
            &KernelGrad {
                padding,
                kernel: w.shape().clone(),
            },
        )?)
    } else {
        None
    };
    Ok((grad_x, grad_w))
}

struct Conv2d {
    padding: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "ebm-conv2d"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(sx, lx, sw, lw, None, self.padding)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        backward(x, w, grad, self.padding)
    }
}

struct Conv2dBias {
    padding: usize,
}

impl CustomOp3 for Conv2dBias {
    fn name(&self) -> &'static str {
        "ebm-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(sx, lx, sw, lw, Some((sb, lb)), self.padding)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_w) = backward(x, w, grad, self.padding)?;
        let grad_b = if b.track_op() {
            Some(grad.contiguous()?.apply_op1_no_bwd(&BiasGrad)?)
        } else {
            None
        };
        Ok((grad_x, grad_w, grad_b))
    }
}

/// `(grad_y, w) -> grad_x`. Not itself differentiable: double backward through it is an error.
struct InputGrad {
    padding: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "ebm-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, out_channels, out_h, out_w) = lg.shape().dims4()?;
        let (_, in_channels, kernel_h, kernel_w) = lw.shape().dims4()?;
        let g = ConvGeom {
            batch,
            in_channels,
            height: out_h + kernel_h - 1 - 2 * self.padding,
            width: out_w + kernel_w - 1 - 2 * self.padding,
            out_channels,
            kernel_h,
            kernel_w,
            padding: self.padding,
        };
        let shape = Shape::from((batch, in_channels, g.height, g.width));
        match sg.dtype() {
            DType::F32 => Ok((
                CpuStorage::F32(conv_input_grad(slice::<f32>(sg, lg)?, slice(sw, lw)?, &g)),
                shape,
            )),
            DType::F64 => Ok((
                CpuStorage::F64(conv_input_grad(slice::<f64>(sg, lg)?, slice(sw, lw)?, &g)),
                shape,
            )),
            dt => candle_core::bail!("ebm-ops conv2d: no CPU kernel for {dt:?}"),
        }
    }
}

/// `(x, grad_y) -> grad_w`. Not itself differentiable.
struct KernelGrad {
    padding: usize,
    kernel: Shape,
}

impl CustomOp2 for KernelGrad {
    fn name(&self) -> &'static str {
        "ebm-conv2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, in_channels, height, width) = lx.shape().dims4()?;
        let (out_channels, _, kernel_h, kernel_w) = self.kernel.dims4()?;
        let g = ConvGeom {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel_h,
            kernel_w,
            padding: self.padding,
        };
        match sx.dtype() {
            DType::F32 => Ok((
                CpuStorage::F32(conv_kernel_grad(slice::<f32>(sx, lx)?, slice(sg, lg)?, &g)),
                self.kernel.clone(),
            )),
            DType::F64 => Ok((
                CpuStorage::F64(conv_kernel_grad(slice::<f64>(sx, lx)?, slice(sg, lg)?, &g)),
                self.kernel.clone(),
            )),
            dt => candle_core::bail!("ebm-ops conv2d: no CPU kernel for {dt:?}"),
        }
    }
}

/// `grad_y [B, O, H, W] -> grad_b [O]`. Not itself differentiable.
struct BiasGrad;

impl candle_core::CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "ebm-conv2d-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, out_channels, h, w) = l.shape().dims4()?;
        let g = ConvGeom {
            batch,
            in_channels: out_channels,
            height: h,
            width: w,
            out_channels,
            kernel_h: 1,
            kernel_w: 1,
            padding: 0,
        };
        let shape = Shape::from(out_channels);
        match s.dtype() {
            DType::F32 => Ok((
                CpuStorage::F32(conv_bias_grad(slice::<f32>(s, l)?, &g)),
                shape,
            )),
            DType::F64 => Ok((
                CpuStorage::F64(conv_bias_grad(slice::<f64>(s, l)?, &g)),
                shape,
            )),
            dt => candle_core::bail!("ebm-ops conv2d: no CPU kernel for {dt:?}"),
        }
    }
}
