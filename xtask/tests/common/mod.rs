//! Helpers shared by the xtask integration tests: tiny synthetic data sets in the real file
//! layout, the tiny IGEBM recipe, and recipes as `--set` arguments.
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng as _;

/// `dims`/`data` as a gzip-compressed IDX file.
pub fn write_idx_gz(path: &Path, dims: &[usize], data: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&ebm_data::idx::encode(dims, data)).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

/// `n` random 28x28 images with labels cycling through 0..10, as `(images, labels)`.
pub fn synthetic(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = ebm_core::seeded_rng(seed);
    let images = (0..n * 28 * 28).map(|_| rng.random::<u8>()).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    (images, labels)
}

/// A data folder `dir` with a Fashion-MNIST stand-in of `train` and `test` random images and
/// `mnist-10k` of 100 digits (80 `Train`, 20 `Test`), as gzip IDX files. Returns `dir`.
pub fn write_data(dir: &Path, train: usize, test: usize) -> PathBuf {
    let fashion = dir.join("fashion-mnist");
    std::fs::create_dir_all(&fashion).unwrap();
    for (prefix, n, seed) in [("train", train, 1), ("t10k", test, 2)] {
        let (images, labels) = synthetic(n, seed);
        let file = |kind: &str| fashion.join(format!("{prefix}-{kind}.gz"));
        write_idx_gz(&file("images-idx3-ubyte"), &[n, 28, 28], &images);
        write_idx_gz(&file("labels-idx1-ubyte"), &[n], &labels);
    }
    let digits = dir.join("mnist-10k");
    std::fs::create_dir_all(&digits).unwrap();
    let (images, labels) = synthetic(100, 3);
    write_idx_gz(
        &digits.join("images-idx3-ubyte.gz"),
        &[100, 28, 28],
        &images,
    );
    write_idx_gz(&digits.join("labels-idx1-ubyte.gz"), &[100], &labels);
    dir.to_path_buf()
}

/// A recipe as `--set field=<json>` arguments, one per top-level field.
pub fn set_args<R: serde::Serialize>(recipe: &R) -> Vec<String> {
    let serde_json::Value::Object(fields) = serde_json::to_value(recipe).unwrap() else {
        panic!("a recipe serialises to an object")
    };
    fields
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// The IGEBM recipe's training and evaluation cut to a size that runs in seconds (the model is
/// left as it is).
pub fn shrink_igebm_run(recipe: &mut xtask::reproduce::igebm::Recipe) {
    recipe.batch_size = 4;
    recipe.iterations = 2;
    recipe.train.langevin.steps = 2;
    recipe.eval_langevin.steps = 2;
    recipe.samples = 20;
    let ev = &mut recipe.eval;
    ev.ood_images = 12;
    ev.restore_images = 4;
    ev.restore_langevin.steps = 2;
    ev.fid_samples = 4;
    ev.fid_reference = 8;
    ev.classifier.iterations = 3;
    ev.classifier.batch_size = 8;
    ev.classifier.model.widths = vec![4, 4];
    ev.classifier.model.feature_dim = 6;
}

/// The IGEBM quick recipe with 4 channels everywhere and [`shrink_igebm_run`]'s run.
pub fn tiny_igebm() -> xtask::reproduce::igebm::Recipe {
    let mut recipe = xtask::reproduce::igebm::Recipe::quick();
    recipe.model.stem_channels = 4;
    for b in &mut recipe.model.blocks {
        b.channels = 4;
    }
    shrink_igebm_run(&mut recipe);
    recipe
}
