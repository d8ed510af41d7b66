//! Criterion benches of energies and input gradients: the IGEBM network (fused CPU pass and
//! autograd) and the latent-prior MLP.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use ebm_core::{noise, seeded_rng, Energy};
use ebm_nn::{Igebm, IgebmConfig, Mlp, MlpConfig};

fn energies(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(0);
    let model = Igebm::new(&IgebmConfig::small(1, 28, 32), &dev, &mut rng).unwrap();
    let frozen = model.frozen().unwrap();
    let x = noise::uniform(&mut rng, (64, 1, 28, 28), 0.0, 1.0, DType::F32, &dev).unwrap();
    c.bench_function(
        "IGEBM width 32, B 64, 28x28: fused energy and input gradient",
        |b| b.iter(|| frozen.energy_and_grad(&x).unwrap()),
    );
    c.bench_function(
        "IGEBM width 32, B 64, 28x28: autograd energy and input gradient",
        |b| b.iter(|| ebm_core::autograd_energy_and_grad(|x| frozen.energy(x), &x).unwrap()),
    );
    let mlp = Mlp::new(&MlpConfig::latent_prior(100), &dev, &mut rng)
        .unwrap()
        .frozen()
        .unwrap();
    let z = noise::normal(&mut rng, (100, 100), DType::F32, &dev).unwrap();
    c.bench_function(
        "MLP 100-200-200-1, B 100: fused energy and input gradient",
        |b| b.iter(|| mlp.energy_and_grad(&z).unwrap()),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = energies
}
criterion_main!(benches);
