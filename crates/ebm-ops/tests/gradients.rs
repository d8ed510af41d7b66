//! Finite-difference checks (f64) of every op an energy network uses, and agreement of the fast
//! CPU path with candle's plain ops.

use candle_core::{DType, Device, Tensor, Var};
use ebm_core::noise::normal;
use ebm_core::seeded_rng;
use ebm_ops::gradcheck::assert_gradients;
use ebm_ops::{avg_pool2x2, conv2d, linear, swish};

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    normal(&mut seeded_rng(seed), shape, DType::F64, &Device::Cpu).unwrap()
}

/// A fixed random projection to a scalar, so that every output element gets its own weight.
fn project(y: &Tensor, seed: u64) -> candle_core::Result<Tensor> {
    let r = randn(seed, y.dims());
    (y * r)?.sum_all()
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    for (k, pad, h, w) in [(3, 1, 5, 6), (3, 0, 5, 5), (1, 0, 4, 3), (5, 2, 4, 4)] {
        let x = randn(1, &[2, 3, h, w]);
        let wt = randn(2, &[4, 3, k, k]);
        let b = randn(3, &[4]);
        assert_gradients(
            &format!("conv2d k={k} pad={pad} with bias"),
            |t| project(&conv2d(&t[0], &t[1], Some(&t[2]), pad)?, 9),
            &[x.clone(), wt.clone(), b],
            1e-6,
        );
        assert_gradients(
            &format!("conv2d k={k} pad={pad} without bias"),
            |t| project(&conv2d(&t[0], &t[1], None, pad)?, 9),
            &[x, wt],
            1e-6,
        );
    }
}

#[test]
fn conv2d_batch_smaller_than_thread_pool() {
    // One image: the gemm itself runs in parallel instead of the batch.
    let x = randn(4, &[1, 2, 6, 6]);
    let wt = randn(5, &[3, 2, 3, 3]);
    assert_gradients(
        "conv2d batch 1",
        |t| project(&conv2d(&t[0], &t[1], None, 1)?, 9),
        &[x, wt],
        1e-6,
    );
}

#[test]
fn swish_gradient_matches_finite_differences() {
    let x = (randn(6, &[3, 7]) * 4.0).unwrap();
    assert_gradients("swish", |t| project(&swish(&t[0])?, 1), &[x], 1e-6);
}

#[test]
fn avg_pool_gradient_matches_finite_differences() {
    let x = randn(7, &[2, 3, 4, 6]);
    assert_gradients(
        "avg_pool2x2",
        |t| project(&avg_pool2x2(&t[0])?, 2),
        &[x],
        1e-6,
    );
}

#[test]
fn avg_pool_rejects_odd_sizes() {
    let x = randn(7, &[1, 1, 7, 6]);
    let err = avg_pool2x2(&x).unwrap_err().to_string();
    assert!(err.contains("must be even, got 7x6"), "{err}");
}

#[test]
fn linear_and_reductions_match_finite_differences() {
    let x = randn(8, &[4, 5]);
    let w = randn(9, &[3, 5]);
    let b = randn(10, &[3]);
    assert_gradients(
        "linear",
        |t| project(&linear(&t[0], &t[1], Some(&t[2]))?, 3),
        &[x, w, b],
        1e-6,
    );
    // Sum over the spatial dimensions, as the energy head does.
    let h = randn(11, &[2, 3, 4, 4]);
    assert_gradients(
        "sum over H, W",
        |t| project(&t[0].sum((2, 3))?, 4),
        &[h],
        1e-6,
    );
}

#[test]
fn residual_block_composition_matches_finite_differences() {
    // The shape of an IGEBM residual block: h + conv(swish(conv(swish(h)))), then pooling.
    let h = randn(12, &[2, 2, 4, 4]);
    let w1 = (randn(13, &[2, 2, 3, 3]) * 0.5).unwrap();
    let w2 = (randn(14, &[2, 2, 3, 3]) * 0.5).unwrap();
    assert_gradients(
        "residual block",
        |t| {
            let r = conv2d(&swish(&t[0])?, &t[1], None, 1)?;
            let r = conv2d(&swish(&r)?, &t[2], None, 1)?;
            project(&avg_pool2x2(&(&t[0] + r)?)?, 5)
        },
        &[h, w1, w2],
        1e-6,
    );
}

/// The fast CPU path gives candle's plain results in f32 to 1e-5, values and gradients.
#[test]
fn fast_path_equals_plain_candle() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(20);
    let x = normal(&mut rng, (8, 16, 12, 12), DType::F32, &dev).unwrap();
    let w = (normal(&mut rng, (24, 16, 3, 3), DType::F32, &dev).unwrap() * 0.1)?;
    let b = normal(&mut rng, 24, DType::F32, &dev).unwrap();

    type Flat = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    let grads_of = |fast: bool| -> candle_core::Result<Flat> {
        let (xv, wv, bv) = (
            Var::from_tensor(&x)?,
            Var::from_tensor(&w)?,
            Var::from_tensor(&b)?,
        );
        let y = if fast {
            swish(&conv2d(
                xv.as_tensor(),
                wv.as_tensor(),
                Some(bv.as_tensor()),
                1,
            )?)?
        } else {
            xv.as_tensor()
                .conv2d(wv.as_tensor(), 1, 1, 1, 1)?
                .broadcast_add(&bv.as_tensor().reshape((1, 24, 1, 1))?)?
                .silu()?
        };
        let loss = (y.sqr()?.sum_all()? * 0.5)?;
        let g = loss.backward()?;
        let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        Ok((
            flat(&y)?,
            flat(g.get(xv.as_tensor()).unwrap())?,
            flat(g.get(wv.as_tensor()).unwrap())?,
            flat(g.get(bv.as_tensor()).unwrap())?,
        ))
    };
    let fast = grads_of(true)?;
    let plain = grads_of(false)?;
    let close = |a: &[f32], b: &[f32], what: &str| {
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (u, v) in a.iter().zip(b) {
            assert!(
                (u - v).abs() <= 1e-5 * scale,
                "{what}: {u} vs {v} (scale {scale})"
            );
        }
    };
    close(&fast.0, &plain.0, "output");
    close(&fast.1, &plain.1, "input gradient");
    close(&fast.2, &plain.2, "kernel gradient");
    close(&fast.3, &plain.3, "bias gradient");
    Ok(())
}

/// A detached kernel gets no gradient: the sampler's backward computes the input gradient only.
#[test]
fn detached_weights_get_no_gradient() -> candle_core::Result<()> {
    let x = Var::from_tensor(&randn(30, &[2, 3, 5, 5]))?;
    let w = randn(31, &[4, 3, 3, 3]);
    let b = randn(32, &[4]);
    let g = conv2d(x.as_tensor(), &w, Some(&b), 1)?
        .sum_all()?
        .backward()?;
    assert!(g.get(x.as_tensor()).is_some());
    assert!(g.get(&w).is_none() && g.get(&b).is_none());
    Ok(())
}

#[test]
fn shape_errors_are_clear() {
    let x = randn(40, &[1, 3, 5, 5]);
    let w = randn(41, &[4, 2, 3, 3]);
    let err = conv2d(&x, &w, None, 1).unwrap_err().to_string();
    assert!(
        err.contains("takes 2 input channels") && err.contains("has 3"),
        "{err}"
    );
    let w = randn(41, &[4, 3, 3, 3]);
    let b = randn(42, &[5]);
    let err = conv2d(&x, &w, Some(&b), 1).unwrap_err().to_string();
    assert!(err.contains("bias has shape [5]"), "{err}");
}
