//! Criterion bench of the paper's prior sampler: 60 short-run Langevin steps of size 0.4 on the
//! MLP prior `100 -> 200 -> 200 -> 1`, batch 100, and the same chain under the Gaussian prior
//! alone (the sampler's own cost: noise and update).

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use ebm_core::{noise, seeded_rng, Energy};
use ebm_latent::{prior_langevin, LatentLangevin};
use ebm_nn::{Mlp, MlpConfig};

fn prior_chain(c: &mut Criterion) {
    let mut rng = seeded_rng(0);
    let mlp = Mlp::new(&MlpConfig::latent_prior(100), &Device::Cpu, &mut rng)
        .unwrap()
        .frozen()
        .unwrap();
    let energy: &dyn Energy = &mlp;
    let z0 = noise::normal(&mut rng, (100, 100), DType::F32, &Device::Cpu).unwrap();
    let settings = LatentLangevin::prior();
    c.bench_function("60 prior Langevin steps, B 100, MLP 100-200-200-1", |b| {
        b.iter(|| prior_langevin(Some(energy), &z0, 1.0, &settings, &mut rng).unwrap())
    });
    c.bench_function("60 prior Langevin steps, B 100, Gaussian prior only", |b| {
        b.iter(|| prior_langevin(None, &z0, 1.0, &settings, &mut rng).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = prior_chain
}
criterion_main!(benches);
