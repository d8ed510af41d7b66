//! The domain classifier behind every "domain FID": a small CNN trained on the data set itself
//! (Inception weights are not always at hand), cached under `results/classifiers/`, and
//! [`DomainFid`], the Frechet distance in its feature space.
//!
//! `cargo xtask train-classifier --dataset fashion-mnist` trains and saves one; the experiments
//! load it, or train it first when it is missing or was trained with another recipe.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use ebm_core::seeded_rng;
use ebm_data::{ImageSet, ShuffledBatches};
use ebm_eval::{frechet_distance, FeatureStats};
use ebm_nn::{checkpoint, Classifier, ClassifierConfig, Trainable};
use ebm_train::{Adam, AdamConfig};

use crate::reproduce::resume::{self, Checkpoints};
use serde::{Deserialize, Serialize};

/// How a domain classifier is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRecipe {
    /// The network.
    pub model: ClassifierConfig,
    /// Adam steps.
    pub iterations: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam's learning rate (betas 0.9, 0.999).
    pub lr: f64,
    /// The seed of the initial weights and of the batch order.
    pub seed: u64,
}

impl ClassifierRecipe {
    /// For 28x28 grey images of 10 classes: about two epochs of Fashion-MNIST in batches of 128.
    pub fn mnist_like() -> Self {
        Self {
            model: ClassifierConfig::mnist_like(),
            iterations: 1000,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
        }
    }
}

impl ClassifierRecipe {
    /// For 32x32 colour images of 10 classes (CIFAR-10): wider, and about 13 epochs.
    pub fn cifar_like() -> Self {
        Self {
            model: ClassifierConfig {
                channels: 3,
                image_size: 32,
                widths: vec![64, 128],
                feature_dim: 256,
                num_classes: 10,
                global_pool: false,
            },
            iterations: 5000,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// What is saved beside the weights, so that a cached classifier is only reused for the recipe
/// and data it was trained with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// The data set's name.
    pub dataset: String,
    /// The recipe.
    pub recipe: ClassifierRecipe,
    /// Training images.
    pub train_images: usize,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Test images the accuracy was measured on.
    pub test_images: usize,
    /// Wall-clock seconds of training.
    pub train_seconds: f64,
}

/// A trained classifier and how it was made.
pub struct DomainClassifier {
    /// The network.
    pub model: Classifier,
    /// Its training record.
    pub record: TrainingRecord,
    /// The weights file.
    pub path: PathBuf,
}

/// The weights file of `dataset`'s classifier in `dir`.
pub fn weights_path(dir: &Path, dataset: &str) -> PathBuf {
    dir.join(format!("{dataset}.safetensors"))
}

fn record_path(dir: &Path, dataset: &str) -> PathBuf {
    dir.join(format!("{dataset}.training.json"))
}

/// Trains a classifier on `train` and measures its accuracy on `test`.
pub fn train(
    recipe: &ClassifierRecipe,
    dataset: &str,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<(Classifier, TrainingRecord)> {
    train_with_checkpoints(recipe, dataset, train, test, device, quiet, None)
}

/// [`train`], continuing from and writing to `checkpoints` when given.
fn train_with_checkpoints(
    recipe: &ClassifierRecipe,
    dataset: &str,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
    quiet: bool,
    checkpoints: Option<&Checkpoints>,
) -> anyhow::Result<(Classifier, TrainingRecord)> {
    let cfg = &recipe.model;
    let expected = [cfg.channels, cfg.image_size, cfg.image_size];
    if train.shape() != expected || train.classes() != cfg.num_classes {
        anyhow::bail!(
            "the classifier takes {:?} images of {} classes, the data set {dataset} has {:?} images of {} classes",
            expected,
            cfg.num_classes,
            train.shape(),
            train.classes()
        );
    }
    let mut rng = seeded_rng(recipe.seed);
    let mut model = Classifier::new(cfg, device, &mut rng)?;
    let mut adam = Adam::new(model.params().vars(), AdamConfig::kingma_ba(recipe.lr))?;
    let mut batches = ShuffledBatches::new(train.len(), recipe.batch_size)?;
    let bar = crate::progress::bar(recipe.iterations as u64, quiet);
    let mut done = 0;
    if let Some(snapshot) = checkpoints
        .map(|c| c.restore(device))
        .transpose()?
        .flatten()
    {
        snapshot.restore_model("model", &mut model)?;
        snapshot.restore_adam("adam", &mut adam)?;
        resume::restore_loop(&snapshot, &mut rng, &mut batches)?;
        done = snapshot.step.min(recipe.iterations);
        bar.inc(done as u64);
    }
    let start = Instant::now();
    for step in done..recipe.iterations {
        let idx = batches.next_batch(&mut rng).to_vec();
        let x = train.tensor(&idx, device)?;
        let y = train.labels_tensor(&idx, device)?;
        let loss = model.loss(&x, &y)?;
        adam.step(&loss.backward()?)?;
        if step % 20 == 0 {
            let l = loss.to_scalar::<f32>()?;
            if !l.is_finite() {
                anyhow::bail!("classifier training diverged at step {step} (loss {l})");
            }
            bar.set_message(format!("classifier step {step} loss {l:.3}"));
        }
        bar.inc(1);
        if let Some(c) = checkpoints {
            c.after_step(step + 1, recipe.iterations, |snapshot| {
                snapshot.put_model("model", &model)?;
                snapshot.put_adam("adam", &adam)?;
                resume::put_loop(snapshot, &rng, &batches)
            })?;
        }
    }
    bar.finish_and_clear();
    let train_seconds = start.elapsed().as_secs_f64();
    let all: Vec<usize> = (0..test.len()).collect();
    let accuracy = model.accuracy(
        &test.tensor(&all, device)?,
        &test.labels_tensor(&all, device)?,
        500,
    )?;
    let record = TrainingRecord {
        dataset: dataset.to_string(),
        recipe: recipe.clone(),
        train_images: train.len(),
        test_accuracy: accuracy,
        test_images: test.len(),
        train_seconds,
    };
    Ok((model, record))
}

/// The cached classifier of `dataset` in `dir` when it was trained with `recipe` on as many
/// images as `train` holds; otherwise trains one and saves it there.
pub fn load_or_train(
    recipe: &ClassifierRecipe,
    dataset: &str,
    train_set: &ImageSet,
    test_set: &ImageSet,
    dir: &Path,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<DomainClassifier> {
    let path = weights_path(dir, dataset);
    let record_file = record_path(dir, dataset);
    if path.is_file() && record_file.is_file() {
        let text = std::fs::read_to_string(&record_file)
            .with_context(|| format!("reading {}", record_file.display()))?;
        if let Ok(record) = serde_json::from_str::<TrainingRecord>(&text) {
            if record.recipe == *recipe
                && record.dataset == dataset
                && record.train_images == train_set.len()
            {
                // A cache that does not load (corrupt, another format) is trained again.
                match checkpoint::load::<Classifier>(&path, device) {
                    Ok(model) => {
                        return Ok(DomainClassifier {
                            model,
                            record,
                            path,
                        })
                    }
                    Err(e) => println!(
                        "{dataset} classifier: the cached {} does not load ({e}); training it again",
                        path.display()
                    ),
                }
            }
        }
    }
    // Training checkpoints beside the cache: a killed run continues where it stopped.
    let checkpoints = Checkpoints::automatic(
        dir.join(format!("{dataset}.checkpoints")),
        format!("{dataset} classifier"),
        &(recipe, dataset, train_set.len()),
        100,
    )?;
    let (model, record) = train_with_checkpoints(
        recipe,
        dataset,
        train_set,
        test_set,
        device,
        quiet,
        Some(&checkpoints),
    )?;
    save(&model, &record, dir)?;
    Ok(DomainClassifier {
        model,
        record,
        path,
    })
}

/// Saves the weights, their config and the training record into `dir`; returns the weights file.
pub fn save(model: &Classifier, record: &TrainingRecord, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = weights_path(dir, &record.dataset);
    checkpoint::save(model, &path)?;
    let record_file = record_path(dir, &record.dataset);
    let text = serde_json::to_string_pretty(record)?;
    checkpoint::write_atomic(&record_file, |tmp| {
        std::fs::write(tmp, &text).map_err(|source| ebm_nn::Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
    .with_context(|| format!("writing {}", record_file.display()))?;
    Ok(path)
}

/// Statistics of classifier features, as [`FeatureStats`].
pub fn feature_stats(model: &Classifier, images: &Tensor) -> anyhow::Result<FeatureStats> {
    let f = model.features_batched(images, 250)?;
    let (n, d) = f.dims2()?;
    let values = f
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(FeatureStats::from_features(&values, n, d)?)
}

/// The Frechet distance to a reference set in a domain classifier's feature space.
pub struct DomainFid<'a> {
    model: &'a Classifier,
    reference: FeatureStats,
}

impl<'a> DomainFid<'a> {
    /// Computes the reference statistics once.
    pub fn new(model: &'a Classifier, reference: &Tensor) -> anyhow::Result<Self> {
        Ok(Self {
            model,
            reference: feature_stats(model, reference)?,
        })
    }

    /// The distance of `images` to the reference.
    pub fn distance(&self, images: &Tensor) -> anyhow::Result<f64> {
        Ok(frechet_distance(
            &feature_stats(self.model, images)?,
            &self.reference,
        )?)
    }
}
