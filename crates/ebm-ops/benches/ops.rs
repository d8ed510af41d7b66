//! Criterion benches of the CPU kernels: a 3x3 convolution's forward and input gradient, and the
//! packed AVX-512 product against the `gemm` crate's.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use ebm_ops::kernels::{conv_forward, conv_input_grad, ConvGeom};

fn geometry() -> ConvGeom {
    ConvGeom {
        batch: 16,
        in_channels: 32,
        height: 28,
        width: 28,
        out_channels: 32,
        kernel_h: 3,
        kernel_w: 3,
        padding: 1,
    }
}

fn convolution(c: &mut Criterion) {
    let g = geometry();
    let x: Vec<f32> = (0..g.batch * g.in_image_len())
        .map(|i| (i % 17) as f32 * 0.01)
        .collect();
    let w: Vec<f32> = (0..g.out_channels * g.col_rows())
        .map(|i| (i % 13) as f32 * 0.01)
        .collect();
    let gy: Vec<f32> = (0..g.batch * g.out_image_len())
        .map(|i| (i % 7) as f32 * 0.01)
        .collect();
    c.bench_function("conv3x3 forward, 16 x 32 x 28 x 28", |b| {
        b.iter(|| conv_forward(&x, &w, None, &g))
    });
    c.bench_function("conv3x3 input gradient, 16 x 32 x 28 x 28", |b| {
        b.iter(|| conv_input_grad(&gy, &w, &g))
    });
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    c.bench_function("conv3x3 forward f64 (gemm crate), 16 x 32 x 28 x 28", |b| {
        b.iter(|| conv_forward(&x64, &w64, None, &g))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = convolution
}
criterion_main!(benches);
