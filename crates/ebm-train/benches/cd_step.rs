//! Criterion bench of one contrastive-divergence step (10 Langevin steps from the replay
//! buffer, the fused training pass, Adam) on the quick recipe's network.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use ebm_core::{noise, seeded_rng};
use ebm_mcmc::LangevinConfig;
use ebm_nn::{Igebm, IgebmConfig};
use ebm_train::{CdConfig, CdTrainer};

fn cd_step(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut rng = seeded_rng(0);
    let mut cfg = IgebmConfig::small(1, 28, 16);
    cfg.spectral_norm = false;
    let model = Igebm::new(&cfg, &dev, &mut rng).unwrap();
    let config = CdConfig {
        langevin: LangevinConfig::igebm().with_steps(10),
        ..CdConfig::default()
    };
    let mut trainer = CdTrainer::new(model, config).unwrap();
    let data = noise::uniform(&mut rng, (64, 1, 28, 28), 0.0, 1.0, DType::F32, &dev).unwrap();
    c.bench_function("CD step, IGEBM width 16, B 64, 10 Langevin steps", |b| {
        b.iter(|| trainer.step(&data, None, &mut rng).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = cd_step
}
criterion_main!(benches);
