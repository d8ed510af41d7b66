//! The generator's element-wise non-linearities as single-pass ops: leaky ReLU (slope 0.2) and
//! tanh. On the CPU (f32, f64) each is a candle custom op whose forward and backward are one
//! pass over memory each (candle's composition of the leaky ReLU costs two ops forward and about
//! ten backward, each a full pass with its own thread hand-off). Elsewhere they are candle's
//! `maximum(x, 0.2 x)` and `tanh`, with the same gradients. The tests below hold both paths
//! to finite differences or to each other; the generator's tests cover the ops in place.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::generator::LEAKY_SLOPE;

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

fn cpu_fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

fn contiguous<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("ebm-latent ops: expected a contiguous tensor"),
    }
}

/// `y[i] = f(x[i])` in parallel chunks.
fn map<T: Copy + Send + Sync + Default>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = f(x);
            }
        });
    y
}

/// `z[i] = f(a[i], b[i])` in parallel chunks.
fn map2<T: Copy + Send + Sync + Default>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut z = vec![T::default(); a.len()];
    z.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(z, (a, b))| {
            for ((z, &a), &b) in z.iter_mut().zip(a).zip(b) {
                *z = f(a, b);
            }
        });
    z
}

/// Leaky ReLU, `max(x, 0.2 x)`, with the gradient 1 for `x > 0` and 0.2 otherwise.
pub(crate) fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    if cpu_fast_path(x) {
        x.contiguous()?.apply_op1(LeakyRelu)
    } else {
        x.maximum(&(x * LEAKY_SLOPE)?)
    }
}

/// `tanh(x)`, with the gradient `1 - tanh(x)^2` from the saved output.
pub(crate) fn tanh(x: &Tensor) -> Result<Tensor> {
    if cpu_fast_path(x) {
        x.contiguous()?.apply_op1(Tanh)
    } else {
        x.tanh()
    }
}

/// The leaky ReLU's input gradient from its input `x` and output gradient `grad`, outside
/// autograd (for the generator's hand-written backward pass).
pub(crate) fn leaky_relu_backward(x: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if cpu_fast_path(x) && x.dtype() == grad.dtype() {
        x.contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &LeakyReluGrad)
    } else {
        x.gt(0.0)?.where_cond(grad, &(grad * LEAKY_SLOPE)?)
    }
}

/// tanh's input gradient from its output `y` and output gradient `grad`, outside autograd.
pub(crate) fn tanh_backward(y: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if cpu_fast_path(y) && y.dtype() == grad.dtype() {
        y.contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &TanhGrad)
    } else {
        grad * (1.0 - y.sqr()?)?
    }
}

struct LeakyRelu;

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "ebm-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => {
                let x = contiguous::<f32>(s, l)?;
                let mut y = vec![0f32; x.len()];
                y.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .for_each(|(y, x)| ebm_ops::simd::leaky_relu(x, y));
                CpuStorage::F32(y)
            }
            DType::F64 => {
                CpuStorage::F64(map(contiguous::<f64>(s, l)?, |v| v.max(LEAKY_SLOPE * v)))
            }
            dt => candle_core::bail!("ebm-latent leaky_relu: no CPU kernel for {dt:?}"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &LeakyReluGrad)?,
        ))
    }
}

/// `(x, grad_y) -> grad_x`. Not itself differentiable.
struct LeakyReluGrad;

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "ebm-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match sx.dtype() {
            DType::F32 => {
                let x = contiguous::<f32>(sx, lx)?;
                let mut g = contiguous::<f32>(sg, lg)?.to_vec();
                g.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .for_each(|(g, x)| ebm_ops::simd::mul_leaky_relu_grad(g, x));
                CpuStorage::F32(g)
            }
            DType::F64 => CpuStorage::F64(map2(
                contiguous::<f64>(sx, lx)?,
                contiguous::<f64>(sg, lg)?,
                |x, g| if x > 0.0 { g } else { LEAKY_SLOPE * g },
            )),
            dt => candle_core::bail!("ebm-latent leaky_relu: no CPU kernel for {dt:?}"),
        };
        Ok((out, lx.shape().clone()))
    }
}

struct Tanh;

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "ebm-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => CpuStorage::F32(map(contiguous::<f32>(s, l)?, f32::tanh)),
            DType::F64 => CpuStorage::F64(map(contiguous::<f64>(s, l)?, f64::tanh)),
            dt => candle_core::bail!("ebm-latent tanh: no CPU kernel for {dt:?}"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &TanhGrad)?,
        ))
    }
}

/// `(y = tanh(x), grad_y) -> grad_x = grad_y (1 - y^2)`. Not itself differentiable.
struct TanhGrad;

impl CustomOp2 for TanhGrad {
    fn name(&self) -> &'static str {
        "ebm-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        sy: &CpuStorage,
        ly: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match sy.dtype() {
            DType::F32 => CpuStorage::F32(map2(
                contiguous::<f32>(sy, ly)?,
                contiguous::<f32>(sg, lg)?,
                |y, g| g * (1.0 - y * y),
            )),
            DType::F64 => CpuStorage::F64(map2(
                contiguous::<f64>(sy, ly)?,
                contiguous::<f64>(sg, lg)?,
                |y, g| g * (1.0 - y * y),
            )),
            dt => candle_core::bail!("ebm-latent tanh: no CPU kernel for {dt:?}"),
        };
        Ok((out, ly.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ebm_ops::gradcheck::assert_gradients;

    fn sample() -> Tensor {
        let v: Vec<f64> = (0..200).map(|i| (i as f64 - 99.5) * 0.037).collect();
        Tensor::from_vec(v, (4, 50), &Device::Cpu).unwrap()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let w = ebm_core::noise::normal(
            &mut ebm_core::seeded_rng(1),
            (4, 50),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
        assert_gradients(
            "leaky_relu",
            |t| (leaky_relu(&t[0])? * &w)?.sum_all(),
            &[sample()],
            1e-6,
        );
        assert_gradients(
            "tanh",
            |t| (tanh(&t[0])? * &w)?.sum_all(),
            &[sample()],
            1e-6,
        );
    }

    #[test]
    fn backward_helpers_equal_autograd() {
        let x = candle_core::Var::from_tensor(&sample()).unwrap();
        let g = ebm_core::noise::normal(
            &mut ebm_core::seeded_rng(2),
            (4, 50),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
        for tanh_op in [false, true] {
            let y = if tanh_op {
                tanh(&x).unwrap()
            } else {
                leaky_relu(&x).unwrap()
            };
            let auto = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let auto = auto.get(x.as_tensor()).unwrap();
            let by_hand = if tanh_op {
                tanh_backward(&y, &g).unwrap()
            } else {
                leaky_relu_backward(x.as_tensor(), &g).unwrap()
            };
            // candle's ops, as other devices run them.
            let candle = if tanh_op {
                (&g * (1.0 - y.sqr().unwrap()).unwrap()).unwrap()
            } else {
                x.gt(0.0)
                    .unwrap()
                    .where_cond(&g, &(&g * 0.2).unwrap())
                    .unwrap()
            };
            for other in [by_hand, candle] {
                let d = (auto - &other).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f64>().unwrap() < 1e-12, "tanh {tanh_op}");
            }
        }
    }

    #[test]
    fn f32_and_f64_agree_with_candle() {
        let x = sample();
        for dtype in [DType::F32, DType::F64] {
            let x = x.to_dtype(dtype).unwrap();
            for (ours, theirs) in [
                (
                    leaky_relu(&x).unwrap(),
                    x.maximum(&(&x * 0.2).unwrap()).unwrap(),
                ),
                (tanh(&x).unwrap(), x.tanh().unwrap()),
            ] {
                let d = (ours - theirs)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(d < 1e-6, "{dtype:?}: {d}");
            }
        }
    }
}
