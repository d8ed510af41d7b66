//! `conv_transpose2d` against its definition: the forward against a direct loop, the gradients
//! with respect to input, kernel and bias against central finite differences in f64, for the
//! CPU custom op and for candle's own op (what CUDA and Metal run).

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::noise::normal;
use ebm_core::seeded_rng;
use ebm_ops::gradcheck::assert_gradients;
use ebm_ops::{conv_transpose2d, conv_transpose2d_candle};

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    normal(&mut seeded_rng(seed), shape, DType::F64, &Device::Cpu).unwrap()
}

/// A fixed random projection to a scalar, so that every output element gets its own weight.
fn project(y: &Tensor, seed: u64) -> candle_core::Result<Tensor> {
    let r = randn(seed, y.dims());
    (y * r)?.sum_all()
}

/// The definition: every input pixel adds `x * w` to output pixel `i * s - p + k`.
fn direct(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    bias: Option<&[f64]>,
    s: usize,
    p: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [b, cin, h, wd] = xs;
    let [_, cout, k, _] = ws;
    let oh = (h - 1) * s + k - 2 * p;
    let ow = (wd - 1) * s + k - 2 * p;
    let mut out = vec![0.0; b * cout * oh * ow];
    for bi in 0..b {
        for co in 0..cout {
            for y in 0..oh {
                for xx in 0..ow {
                    out[((bi * cout + co) * oh + y) * ow + xx] = bias.map_or(0.0, |b| b[co]);
                }
            }
            for ci in 0..cin {
                for iy in 0..h {
                    for ix in 0..wd {
                        for ky in 0..k {
                            for kx in 0..k {
                                let oy = (iy * s + ky) as isize - p as isize;
                                let ox = (ix * s + kx) as isize - p as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                out[((bi * cout + co) * oh + oy as usize) * ow + ox as usize] += x
                                    [((bi * cin + ci) * h + iy) * wd + ix]
                                    * w[((ci * cout + co) * k + ky) * k + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    (out, [b, cout, oh, ow])
}

fn dims4(t: &Tensor) -> [usize; 4] {
    let (a, b, c, d) = t.dims4().unwrap();
    [a, b, c, d]
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// (batch, in channels, size, out channels, kernel, stride, padding): DCGAN's k4 s2 p1
/// upsampling, the 1x1-to-KxK first layer, odd strides and paddings, one image.
const GEOMETRIES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (2, 3, 4, 2, 4, 2, 1),
    (3, 4, 1, 3, 4, 1, 0),
    (2, 2, 1, 2, 7, 1, 0),
    (2, 2, 3, 3, 3, 1, 1),
    (2, 3, 3, 2, 5, 3, 2),
    (1, 2, 5, 2, 3, 2, 0),
    (2, 1, 3, 1, 4, 2, 3),
];

#[test]
fn forward_matches_the_direct_definition() {
    for &(b, cin, h, cout, k, s, p) in GEOMETRIES {
        let x = randn(1, &[b, cin, h, h + 1]);
        let w = randn(2, &[cin, cout, k, k]);
        let bias = randn(3, &[cout]);
        for with_bias in [false, true] {
            let bv = values(&bias);
            let (expected, shape) = direct(
                &values(&x),
                dims4(&x),
                &values(&w),
                dims4(&w),
                with_bias.then_some(&bv[..]),
                s,
                p,
            );
            let bias_arg = with_bias.then_some(&bias);
            for (name, y) in [
                (
                    "custom op",
                    conv_transpose2d(&x, &w, bias_arg, s, p).unwrap(),
                ),
                (
                    "candle",
                    conv_transpose2d_candle(&x, &w, bias_arg, s, p).unwrap(),
                ),
            ] {
                assert_eq!(
                    dims4(&y),
                    shape,
                    "{name} shape, geometry {b} {cin} {h} {cout} {k} {s} {p}"
                );
                for (a, e) in values(&y).iter().zip(&expected) {
                    assert!(
                        (a - e).abs() < 1e-12,
                        "{name}, geometry {b} {cin} {h} {cout} {k} {s} {p}, bias {with_bias}: {a} vs {e}"
                    );
                }
            }
            // f32 through the same custom op.
            let y32 = conv_transpose2d(
                &x.to_dtype(DType::F32).unwrap(),
                &w.to_dtype(DType::F32).unwrap(),
                bias_arg.map(|b| b.to_dtype(DType::F32).unwrap()).as_ref(),
                s,
                p,
            )
            .unwrap();
            assert_eq!(y32.dtype(), DType::F32);
            for (a, e) in values(&y32).iter().zip(&expected) {
                assert!((a - e).abs() < 1e-4, "f32: {a} vs {e}");
            }
        }
    }
}

#[test]
fn custom_op_gradients_match_finite_differences() {
    for &(b, cin, h, cout, k, s, p) in GEOMETRIES {
        let x = randn(4, &[b, cin, h, h + 1]);
        let w = randn(5, &[cin, cout, k, k]);
        let bias = randn(6, &[cout]);
        let name = format!("conv_transpose2d b{b} cin{cin} h{h} cout{cout} k{k} s{s} p{p}");
        assert_gradients(
            &format!("{name} with bias"),
            |t| project(&conv_transpose2d(&t[0], &t[1], Some(&t[2]), s, p)?, 9),
            &[x.clone(), w.clone(), bias],
            1e-6,
        );
        assert_gradients(
            &format!("{name} without bias"),
            |t| project(&conv_transpose2d(&t[0], &t[1], None, s, p)?, 9),
            &[x, w],
            1e-6,
        );
    }
}

#[test]
fn candle_op_gradients_match_finite_differences() {
    for &(b, cin, h, cout, k, s, p) in GEOMETRIES {
        let x = randn(7, &[b, cin, h, h + 1]);
        let w = randn(8, &[cin, cout, k, k]);
        let bias = randn(9, &[cout]);
        assert_gradients(
            &format!("candle conv_transpose2d b{b} cin{cin} h{h} cout{cout} k{k} s{s} p{p}"),
            |t| {
                project(
                    &conv_transpose2d_candle(&t[0], &t[1], Some(&t[2]), s, p)?,
                    9,
                )
            },
            &[x, w, bias],
            1e-6,
        );
    }
}

/// Enough images that the custom op splits the batch into chunks: forward, input and kernel
/// gradients still equal candle's (itself held to finite differences above).
#[test]
fn chunked_batches_agree_with_candle() -> candle_core::Result<()> {
    let x = Var::from_tensor(&randn(10, &[40, 2, 16, 16]))?;
    let w = Var::from_tensor(&randn(11, &[2, 64, 4, 4]))?;
    let bias = Var::from_tensor(&randn(12, &[64]))?;
    let ours = conv_transpose2d(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), 2, 1)?;
    let theirs =
        conv_transpose2d_candle(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), 2, 1)?;
    assert_eq!(ours.dims(), &[40, 64, 32, 32]);
    let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(diff < 1e-10, "forward differs by {diff}");
    let r = randn(13, ours.dims());
    let g_ours = (ours * &r)?.sum_all()?.backward()?;
    let g_theirs = (theirs * &r)?.sum_all()?.backward()?;
    for (name, v) in [("input", &x), ("kernel", &w), ("bias", &bias)] {
        let a = g_ours.get(v.as_tensor()).unwrap();
        let b = g_theirs.get(v.as_tensor()).unwrap();
        let scale = b.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0);
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff / scale < 1e-10, "{name} gradient differs by {diff}");
    }
    Ok(())
}

/// A sampler holds detached weights: only the input gradient is computed, and it is the same.
#[test]
fn detached_kernel_gives_the_input_gradient_alone() -> candle_core::Result<()> {
    let x = Var::from_tensor(&randn(14, &[3, 4, 5, 5]))?;
    let w = randn(15, &[4, 2, 4, 4]);
    let b = randn(16, &[2]);
    let y = conv_transpose2d(x.as_tensor(), &w, Some(&b), 2, 1)?;
    let grads = project(&y, 17)?.backward()?;
    assert!(grads.get(&w).is_none() && grads.get(&b).is_none());
    let wv = Var::from_tensor(&w)?;
    let full = project(
        &conv_transpose2d(x.as_tensor(), wv.as_tensor(), Some(&b), 2, 1)?,
        17,
    )?
    .backward()?;
    let a = grads.get(x.as_tensor()).unwrap();
    let c = full.get(x.as_tensor()).unwrap();
    assert_eq!(values(a), values(c));
    Ok(())
}

#[test]
fn bad_shapes_and_settings_are_errors() {
    let x = randn(1, &[2, 3, 4, 4]);
    let w = randn(2, &[3, 2, 4, 4]);
    let cases: Vec<(&str, candle_core::Result<Tensor>)> = vec![
        (
            "takes 2 input channels",
            conv_transpose2d(&x, &randn(2, &[2, 2, 4, 4]), None, 2, 1),
        ),
        (
            "padding < kernel size",
            conv_transpose2d(&x, &w, None, 2, 4),
        ),
        ("stride >= 1", conv_transpose2d(&x, &w, None, 0, 1)),
        (
            "square kernel",
            conv_transpose2d(&x, &randn(2, &[3, 2, 4, 3]), None, 2, 1),
        ),
        (
            "the bias has shape [3]",
            conv_transpose2d(&x, &w, Some(&randn(3, &[3])), 2, 1),
        ),
        (
            "must be [B, Cin, H, W]",
            conv_transpose2d(&randn(1, &[3, 4, 4]), &w, None, 2, 1),
        ),
        (
            "has no output pixels",
            conv_transpose2d(&randn(1, &[1, 3, 1, 1]), &w, None, 2, 3),
        ),
    ];
    for (expected, result) in cases {
        let err = result.unwrap_err().to_string();
        assert!(err.contains(expected), "expected `{expected}` in `{err}`");
    }
}

/// The input gradient as a plain function (for hand-written backward passes) equals autograd's,
/// on the custom op's path and on candle's strided convolution.
#[test]
fn input_gradient_function_equals_autograd() -> candle_core::Result<()> {
    for &(b, cin, h, cout, k, s, p) in GEOMETRIES {
        let x = Var::from_tensor(&randn(18, &[b, cin, h, h + 1]))?;
        let w = randn(19, &[cin, cout, k, k]);
        let y = conv_transpose2d(x.as_tensor(), &w, None, s, p)?;
        let r = randn(20, y.dims());
        let auto = (y * &r)?.sum_all()?.backward()?;
        let auto = values(auto.get(x.as_tensor()).unwrap());
        let fast = ebm_ops::conv_transpose2d_input_grad(&r, &w, s, p)?;
        assert_eq!(fast.dims(), x.dims());
        // candle's path, as CUDA and Metal run it.
        let candle = r.conv2d(&w, p, s, 1, 1)?;
        for (name, got) in [("custom", values(&fast)), ("candle", values(&candle))] {
            for (a, e) in got.iter().zip(&auto) {
                assert!(
                    (a - e).abs() < 1e-10,
                    "{name}, geometry {b} {cin} {h} {cout} {k} {s} {p}: {a} vs {e}"
                );
            }
        }
    }
    let r = randn(1, &[2, 2, 9, 9]);
    let err = ebm_ops::conv_transpose2d_input_grad(&r, &randn(2, &[3, 2, 4, 4]), 2, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not made by kernel 4"), "{err}");
    Ok(())
}
