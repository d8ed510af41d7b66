//! Criterion bench of the samplers' own cost: Langevin, MALA and HMC steps on an analytic
//! Gaussian, so that the energy costs next to nothing and the bench measures the sampler.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use ebm_core::{analytic::Gaussian, noise, seeded_rng};
use ebm_mcmc::{Hmc, HmcConfig, Langevin, LangevinConfig, Mala, MalaConfig, Sampler};

fn langevin(c: &mut Criterion) {
    let target = Gaussian::isotropic(vec![0.5; 784], 0.1).unwrap();
    let sampler = Langevin::new(LangevinConfig::igebm().with_steps(10)).unwrap();
    let mut rng = seeded_rng(0);
    let x0 = noise::uniform(&mut rng, (64, 784), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    c.bench_function("10 Langevin steps, B 64 x 784, Gaussian energy", |b| {
        b.iter(|| sampler.run(&target, &x0, &mut rng).unwrap())
    });
}

/// Ten energy-and-gradient evaluations each: 10 MALA steps, 2 HMC iterations of 5 leapfrog
/// steps (the per-chain accept/reject costs one host round trip per iteration).
fn mala_and_hmc(c: &mut Criterion) {
    let target = Gaussian::isotropic(vec![0.5; 784], 0.1).unwrap();
    let mala = Mala::new(MalaConfig::new(0.01, 10)).unwrap();
    let hmc = Hmc::new(HmcConfig::new(0.05, 5, 2)).unwrap();
    let mut rng = seeded_rng(0);
    let x0 = noise::uniform(&mut rng, (64, 784), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    c.bench_function("10 MALA steps, B 64 x 784, Gaussian energy", |b| {
        b.iter(|| mala.run(&target, &x0, &mut rng).unwrap())
    });
    c.bench_function(
        "2 HMC iterations x 5 leapfrog steps, B 64 x 784, Gaussian energy",
        |b| b.iter(|| hmc.run(&target, &x0, &mut rng).unwrap()),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = langevin, mala_and_hmc
}
criterion_main!(benches);
