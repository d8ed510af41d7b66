//! Criterion bench of scene generation: batches of 256 scenes (labels drawn and images rendered)
//! at 32x32 and 64x64 with one and two objects, reported in scenes per second.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ebm_core::seeded_rng;
use ebm_data::scenes::{SceneConfig, SceneGenerator};

const BATCH: usize = 256;

fn scenes(c: &mut Criterion) {
    let mut group = c.benchmark_group("scenes");
    group.throughput(Throughput::Elements(BATCH as u64));
    for size in [32, 64] {
        for objects in [1, 2] {
            let generator =
                SceneGenerator::new(SceneConfig::new(size).with_objects(objects)).unwrap();
            let mut rng = seeded_rng(0);
            group.bench_function(
                format!("{BATCH} scenes {size}x{size}, {objects} object(s)"),
                |b| b.iter(|| generator.sample(BATCH, &mut rng).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = scenes
}
criterion_main!(benches);
