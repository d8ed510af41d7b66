//! Criterion bench of the sampler's own cost: Langevin steps on an analytic Gaussian, so that
//! the energy costs next to nothing.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use ebm_core::{analytic::Gaussian, noise, seeded_rng};
use ebm_mcmc::{Langevin, LangevinConfig};

fn langevin(c: &mut Criterion) {
    let target = Gaussian::isotropic(vec![0.5; 784], 0.1).unwrap();
    let sampler = Langevin::new(LangevinConfig::igebm().with_steps(10)).unwrap();
    let mut rng = seeded_rng(0);
    let x0 = noise::uniform(&mut rng, (64, 784), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    c.bench_function("10 Langevin steps, B 64 x 784, Gaussian energy", |b| {
        b.iter(|| sampler.run(&target, &x0, &mut rng).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = langevin
}
criterion_main!(benches);
