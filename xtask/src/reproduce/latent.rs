//! Pang, Han, Nijkamp, Zhu & Wu (NeurIPS 2020), "Learning Latent Space Energy-Based Prior
//! Model": a generator whose latent prior is an energy-based correction of a Gaussian, learned by
//! maximum likelihood with short-run Langevin on the prior and on the posterior, against the
//! same generator with the Gaussian prior (alternating back-propagation, Han et al. 2017).
//!
//! The report: the domain FID of samples and the test reconstruction MSE of both priors (the
//! paper's claim, tested relatively: the EBM prior beats the Gaussian prior on both), long-run
//! prior chains (stable samples after thousands of steps), and unsupervised anomaly detection on
//! MNIST with one digit held out (AUPRC), with grids, training curves, checkpoints and `.npy`
//! samples.
//!
//! Every trained model (the EBM prior, the Gaussian prior, one per held-out digit) writes
//! training checkpoints into `checkpoints/<model>/`; `--resume` continues each from its newest
//! valid one and ends as the uninterrupted run would have.
//!
//! `--quick` trains small models on Fashion-MNIST 28x28 on a CPU; `--full` holds the paper's
//! recipes (CIFAR-10 runs; SVHN and CelebA are listed, for when `ebm-data` reads them).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use ebm_core::{seeded_rng, Rng};
use ebm_data::{DataSet, ImageSet, ShuffledBatches, Split};
use ebm_eval::average_precision;
use ebm_latent::{
    checkpoint, to_signed, to_unit, GeneratorConfig, LatentConfig, LatentLangevin, LatentModel,
    LatentTrainer, StepLog, TrainConfig,
};
use ebm_nn::Trainable;
use ebm_viz::{save_grid, GridOptions, LinePlot, Series};
use serde::{Deserialize, Serialize};

use super::resume::{self, Checkpoints};
use super::{save_npy, Mode, Options};
use crate::classifier::{load_or_train, ClassifierRecipe, DomainFid};
use crate::report::{table, Report};

/// The paper's SVHN numbers (Pang et al. 2020, table 1): FID and reconstruction MSE of the
/// latent EBM prior model.
pub const PAPER_SVHN: (f64, f64) = (29.44, 0.008);

/// The paper's MNIST anomaly-detection AUPRCs of the latent EBM prior (table 4), by held-out
/// digit, as recalled when this module was written: not checked against the paper here (it
/// could not be fetched), and the report says so.
pub const PAPER_ANOMALY_AUPRC: &[(u8, f64)] =
    &[(1, 0.336), (4, 0.630), (5, 0.619), (7, 0.463), (9, 0.413)];

/// The two models trained by every run, by report key.
pub const MODELS: &[(&str, &str)] = &[
    ("ebm_prior", "EBM prior"),
    ("gaussian_prior", "Gaussian prior (ABP)"),
];

/// Everything that defines a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The data set's name.
    pub dataset: String,
    /// The EBM-prior model; the Gaussian-prior baseline is the same with `prior: null`.
    pub model: LatentConfig,
    /// Samplers and optimisers (shared by both models).
    pub train: TrainConfig,
    /// Images per training batch.
    pub batch_size: usize,
    /// Training iterations per model.
    pub iterations: usize,
    /// Evaluation sizes and samplers.
    pub eval: EvalRecipe,
    /// The anomaly-detection experiment.
    pub anomaly: AnomalyRecipe,
}

/// Evaluation sizes and samplers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRecipe {
    /// Samples in each picture grid (a multiple of 10 reads best).
    pub samples: usize,
    /// Generated images per domain FID.
    pub fid_samples: usize,
    /// Test images forming the FID reference; the held-out real baseline is the next
    /// `fid_samples` test images.
    pub fid_reference: usize,
    /// Test images whose reconstruction MSE is measured.
    pub mse_images: usize,
    /// The prior sampler for pictures and the FID (the training sampler in the paper).
    pub sample_langevin: LatentLangevin,
    /// The posterior sampler that infers test latents for reconstructions.
    pub inference_langevin: LatentLangevin,
    /// Steps of the long-run prior chains.
    pub longrun_steps: usize,
    /// Steps at which the long-run chains' domain FID is measured (the last is `longrun_steps`).
    pub longrun_fid_at: Vec<usize>,
    /// Images per evaluation batch.
    pub batch: usize,
    /// The domain classifier whose features the FID uses.
    pub classifier: ClassifierRecipe,
}

/// Unsupervised anomaly detection (the paper's MNIST experiment): train on every digit but one,
/// score test images by `-log p(x, z)` at posterior samples, anomalies (the held-out digit) as
/// the positive class of the AUPRC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyRecipe {
    /// The digits' data set (`mnist-10k` or `mnist`).
    pub dataset: String,
    /// The digits held out in turn, one model each.
    pub held_out: Vec<u8>,
    /// The model (EBM prior).
    pub model: LatentConfig,
    /// Its training.
    pub train: TrainConfig,
    /// Images per training batch.
    pub batch_size: usize,
    /// Training iterations per held-out digit.
    pub iterations: usize,
    /// Test images scored (at most the test split).
    pub test_images: usize,
    /// Posterior chains per scored image.
    pub chains: usize,
    /// The posterior sampler of the score.
    pub inference_langevin: LatentLangevin,
}

impl EvalRecipe {
    /// For 28x28 grey data: 1,000 samples against 2,000 test images, MSE of 1,000 test images,
    /// long-run chains of 2,500 steps.
    pub fn mnist_like() -> Self {
        Self {
            samples: 100,
            fid_samples: 1000,
            fid_reference: 2000,
            mse_images: 1000,
            sample_langevin: LatentLangevin::prior(),
            inference_langevin: LatentLangevin::posterior(),
            longrun_steps: 2500,
            longrun_fid_at: vec![60, 500, 1000, 2500],
            batch: 250,
            classifier: ClassifierRecipe::mnist_like(),
        }
    }

    /// For 32x32 colour data: as [`EvalRecipe::mnist_like`] with 5,000 samples and the colour
    /// classifier.
    pub fn cifar_like() -> Self {
        Self {
            fid_samples: 5000,
            fid_reference: 5000,
            classifier: ClassifierRecipe::cifar_like(),
            ..Self::mnist_like()
        }
    }
}

impl AnomalyRecipe {
    /// Minutes on a CPU: `mnist-10k` (8,000 training digits, 2,000 test digits), the paper's
    /// held-out digits (1, 4, 5, 7, 9) in turn, a small model (`nz = 16`, generator width 16,
    /// prior MLP `16 -> 100 -> 100 -> 1`) and 200 iterations each.
    pub fn quick() -> Self {
        let mut model = LatentConfig::ebm_prior(GeneratorConfig::mnist_like(16, 16));
        if let Some(p) = &mut model.prior {
            p.hidden = vec![100, 100];
        }
        Self {
            dataset: DataSet::Mnist10k.name().into(),
            held_out: vec![1, 4, 5, 7, 9],
            model,
            train: TrainConfig::default(),
            batch_size: 64,
            iterations: 200,
            test_images: 2000,
            chains: 1,
            inference_langevin: LatentLangevin::posterior(),
        }
    }

    /// The paper's protocol: MNIST, digits 1, 4, 5, 7 and 9 held out in turn. The paper's
    /// architecture for MNIST is not restated here: `nz = 16`, width 64, 20,000 iterations.
    pub fn full() -> Self {
        Self {
            dataset: DataSet::Mnist.name().into(),
            held_out: vec![1, 4, 5, 7, 9],
            model: LatentConfig::ebm_prior(GeneratorConfig::mnist_like(16, 64)),
            batch_size: 100,
            iterations: 20_000,
            test_images: 10_000,
            chains: 10,
            train: TrainConfig::default(),
            inference_langevin: LatentLangevin::posterior(),
        }
    }
}

impl Recipe {
    /// Minutes on a 2-core CPU: Fashion-MNIST 28x28, `nz = 32`, generator width 32, the prior
    /// MLP `32 -> 200 -> 200 -> 1`, the paper's samplers (prior 60 steps of 0.4, posterior 20
    /// of 0.1), batch 64, 500 iterations per model (half an epoch), and five held-out digits
    /// for anomaly detection ([`AnomalyRecipe::quick`]). The learning rates are 5x the paper's
    /// (5e-4 for the generator, 1e-4 for the prior) to make up for a run some 100x shorter;
    /// `--set train.generator_adam.lr=0.0001 --set train.prior_adam.lr=0.00002` restores them.
    pub fn quick() -> Self {
        let mut train = TrainConfig::default();
        train.generator_adam.lr = 5e-4;
        train.prior_adam.lr = 1e-4;
        Self {
            dataset: DataSet::FashionMnist.name().into(),
            model: LatentConfig::ebm_prior(GeneratorConfig::mnist_like(32, 32)),
            train,
            batch_size: 64,
            iterations: 500,
            eval: EvalRecipe::mnist_like(),
            anomaly: AnomalyRecipe::quick(),
        }
    }

    /// The paper's SVHN recipe: 32x32, `nz = 100`, `ngf = 64`, batch 100, 70 epochs (about
    /// 51,000 iterations), the paper's samplers and learning rates. `ebm-data` does not read
    /// SVHN yet.
    pub fn svhn() -> Self {
        Self {
            dataset: "svhn".into(),
            model: LatentConfig::ebm_prior(GeneratorConfig::svhn()),
            train: TrainConfig::default(),
            batch_size: 100,
            iterations: 51_000,
            eval: EvalRecipe::cifar_like(),
            anomaly: AnomalyRecipe::full(),
        }
    }

    /// CIFAR-10 with the SVHN recipe's sampler and optimiser and a wider generator
    /// (`nz = 128`, `ngf = 128`), batch 100, 100 epochs (50,000 iterations).
    pub fn cifar10() -> Self {
        let generator = GeneratorConfig {
            latent_dim: 128,
            width: 128,
            ..GeneratorConfig::svhn()
        };
        Self {
            dataset: DataSet::Cifar10.name().into(),
            model: LatentConfig::ebm_prior(generator),
            iterations: 50_000,
            ..Self::svhn()
        }
    }

    /// CelebA 64x64: `nz = 100`, `ngf = 64`, the SVHN recipe's sampler and optimiser.
    /// `ebm-data` does not read CelebA yet.
    pub fn celeba64() -> Self {
        let mut eval = EvalRecipe::cifar_like();
        eval.classifier.model.image_size = 64;
        Self {
            dataset: "celeba-64".into(),
            model: LatentConfig::ebm_prior(GeneratorConfig::celeba64()),
            iterations: 50_000,
            eval,
            ..Self::svhn()
        }
    }

    /// The full recipe that runs with the data sets `ebm-data` reads: CIFAR-10.
    pub fn full() -> Self {
        Self::cifar10()
    }

    /// A recipe that runs in seconds, for smoke tests of the whole pipeline on small synthetic
    /// sets (e.g. 40 training and 20 test images of 1x28x28 with labels cycling through 0..10,
    /// for both the main and the digit sets): every size shrunk to a few images, chains of two
    /// steps, a tiny classifier, one held-out digit. It measures nothing.
    pub fn smoke() -> Self {
        let tiny_model = |latent_dim: usize| {
            let mut m = LatentConfig::ebm_prior(GeneratorConfig::mnist_like(latent_dim, 2));
            if let Some(p) = &mut m.prior {
                p.hidden = vec![8];
            }
            m
        };
        let mut train = TrainConfig::default();
        train.prior_langevin.steps = 2;
        train.posterior_langevin.steps = 2;
        let mut classifier = ClassifierRecipe::mnist_like();
        classifier.iterations = 3;
        classifier.batch_size = 8;
        classifier.model.widths = vec![4, 4];
        classifier.model.feature_dim = 6;
        Self {
            dataset: DataSet::FashionMnist.name().into(),
            model: tiny_model(4),
            train: train.clone(),
            batch_size: 4,
            iterations: 2,
            eval: EvalRecipe {
                samples: 20,
                fid_samples: 4,
                fid_reference: 8,
                mse_images: 10,
                sample_langevin: LatentLangevin::prior().with_steps(2),
                inference_langevin: LatentLangevin::posterior().with_steps(2),
                longrun_steps: 5,
                longrun_fid_at: vec![2],
                batch: 8,
                classifier,
            },
            anomaly: AnomalyRecipe {
                dataset: DataSet::Mnist10k.name().into(),
                held_out: vec![1],
                model: tiny_model(3),
                train,
                batch_size: 4,
                iterations: 2,
                test_images: 20,
                chains: 1,
                inference_langevin: LatentLangevin::posterior().with_steps(2),
            },
        }
    }

    /// The recipe for a mode.
    pub fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self::quick(),
            Mode::Full => Self::full(),
        }
    }

    /// The paper's data sets and their recipes, as the full report lists them.
    pub fn paper_recipes() -> Vec<(&'static str, Recipe)> {
        vec![
            ("SVHN", Self::svhn()),
            ("CIFAR-10", Self::cifar10()),
            ("CelebA 64x64", Self::celeba64()),
        ]
    }

    /// The Gaussian-prior baseline's config: the same generator with `f = 0`.
    pub fn baseline(&self) -> LatentConfig {
        LatentConfig {
            prior: None,
            ..self.model.clone()
        }
    }
}

/// Runs the experiment with the mode's recipe on the data sets found by the resolver.
/// `options.iterations` caps the iterations of every model (main and anomaly).
pub fn run(options: &Options) -> anyhow::Result<()> {
    let mut recipe: Recipe =
        super::apply_overrides(&Recipe::for_mode(options.mode), &options.overrides)?;
    if let Some(n) = options.iterations {
        recipe.iterations = n;
        recipe.anomaly.iterations = recipe.anomaly.iterations.min(n);
    }
    let load = |name: &str, split: Split| -> anyhow::Result<ImageSet> {
        let set = DataSet::from_name(name)?;
        let explicit = options.data_dir.as_ref().map(|d| d.join(set.name()));
        Ok(ebm_data::load(set, split, explicit.as_deref())?)
    };
    let train = load(&recipe.dataset, Split::Train)?;
    let test = load(&recipe.dataset, Split::Test)?;
    let digits_train = load(&recipe.anomaly.dataset, Split::Train)
        .context("the anomaly experiment needs MNIST digits")?;
    let digits_test = load(&recipe.anomaly.dataset, Split::Test)?;
    let report = run_recipe(&recipe, &train, &test, &digits_train, &digits_test, options)?;
    println!("{}", summary_line(&report));
    Ok(())
}

/// The last line printed: the headline numbers.
pub fn summary_line(report: &Report) -> String {
    let m = |k: &str| report.metrics.get(k).copied().unwrap_or(f64::NAN);
    format!(
        "latent: domain FID EBM prior {:.2} Gaussian prior {:.2} long-run {:.2} real {:.2}; MSE EBM prior {:.4} Gaussian prior {:.4}; anomaly AUPRC mean {:.3}; {:.0} s",
        m("fid_domain_ebm_prior"),
        m("fid_domain_gaussian_prior"),
        m("fid_domain_longrun"),
        m("fid_domain_real"),
        m("mse_ebm_prior"),
        m("mse_gaussian_prior"),
        m("anomaly_auprc_mean"),
        m("wall_seconds"),
    )
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Mean of the last `n` values of a field of the log.
fn tail_mean(history: &[StepLog], n: usize, field: impl Fn(&StepLog) -> f64) -> f64 {
    let tail = &history[history.len().saturating_sub(n)..];
    mean_of(&tail.iter().map(field).collect::<Vec<_>>())
}

/// Test-set images `[N, C, H, W]` in [0, 1] at `indices`.
fn images(set: &ImageSet, indices: &[usize], device: &Device) -> anyhow::Result<Tensor> {
    Ok(set.tensor(indices, device)?)
}

/// `n` generated images in [0, 1] from the prior, in batches.
fn generate(
    model: &LatentModel,
    n: usize,
    sampler: &LatentLangevin,
    batch: usize,
    device: &Device,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor, Tensor)> {
    let mut zs = Vec::new();
    let mut xs = Vec::new();
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let z = model.sample_prior(b, sampler, device, rng)?;
        xs.push(to_unit(&model.generate(&z)?)?);
        zs.push(z);
    }
    Ok((Tensor::cat(&zs, 0)?, Tensor::cat(&xs, 0)?))
}

/// Reconstructions in [0, 1] of `x` (in [0, 1]) by posterior inference, in batches.
fn reconstruct(
    model: &LatentModel,
    x: &Tensor,
    sampler: &LatentLangevin,
    batch: usize,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let n = x.dim(0)?;
    let mut out = Vec::new();
    for start in (0..n).step_by(batch) {
        let xb = to_signed(&x.narrow(0, start, batch.min(n - start))?)?;
        out.push(to_unit(&model.reconstruct(&xb, sampler, rng)?)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

fn mse(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    Ok((a - b)?
        .sqr()?
        .mean_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?)
}

/// Interleaves rows of originals and reconstructions (10 per row) for a grid.
fn pairs(originals: &Tensor, reconstructions: &Tensor, rows: usize) -> anyhow::Result<Tensor> {
    let mut parts = Vec::new();
    for r in 0..rows {
        parts.push(originals.narrow(0, r * 10, 10)?);
        parts.push(reconstructions.narrow(0, r * 10, 10)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Checks the recipe against the data before anything is trained.
fn check(
    recipe: &Recipe,
    train: &ImageSet,
    test: &ImageSet,
    digits_train: &ImageSet,
    digits_test: &ImageSet,
) -> anyhow::Result<()> {
    let shape = recipe.model.generator.output_shape();
    if train.shape() != shape || test.shape() != shape {
        anyhow::bail!(
            "the data set's images are {:?}, the generator makes {:?}",
            train.shape(),
            shape
        );
    }
    recipe.model.validate()?;
    recipe.train.validate()?;
    let ev = &recipe.eval;
    if ev.fid_reference + ev.fid_samples > test.len() || ev.fid_samples < 2 {
        anyhow::bail!(
            "the domain FID needs fid_reference + fid_samples = {} test images (fid_samples >= 2), the test set has {}",
            ev.fid_reference + ev.fid_samples,
            test.len()
        );
    }
    if ev.mse_images == 0 || ev.mse_images > test.len() || ev.batch == 0 || ev.samples == 0 {
        anyhow::bail!(
            "eval: mse_images must lie in 1..={}, and batch and samples must be at least 1",
            test.len()
        );
    }
    ev.sample_langevin.validate("eval.sample_langevin")?;
    ev.inference_langevin.validate("eval.inference_langevin")?;
    if ev.longrun_steps == 0
        || ev
            .longrun_fid_at
            .iter()
            .any(|&s| s == 0 || s > ev.longrun_steps)
    {
        anyhow::bail!(
            "eval: longrun_steps must be at least 1 and every longrun_fid_at step in 1..={}",
            ev.longrun_steps
        );
    }
    if recipe.batch_size == 0 || recipe.batch_size > train.len() {
        anyhow::bail!(
            "batch_size must lie in 1..={} (the training set), got {}",
            train.len(),
            recipe.batch_size
        );
    }
    let an = &recipe.anomaly;
    an.model.validate()?;
    an.train.validate()?;
    an.inference_langevin
        .validate("anomaly.inference_langevin")?;
    let digit_shape = an.model.generator.output_shape();
    if digits_train.shape() != digit_shape || digits_test.shape() != digit_shape {
        anyhow::bail!(
            "the anomaly data set's images are {:?}, its generator makes {:?}",
            digits_train.shape(),
            digit_shape
        );
    }
    if an.chains == 0 || an.test_images == 0 || an.batch_size == 0 {
        anyhow::bail!("anomaly: chains, test_images and batch_size must be at least 1");
    }
    for &d in &an.held_out {
        let in_train = digits_train.labels().iter().filter(|&&l| l != d).count();
        let n = an.test_images.min(digits_test.len());
        let positives = digits_test.labels()[..n]
            .iter()
            .filter(|&&l| l == d)
            .count();
        if in_train < an.batch_size || positives == 0 || positives == n {
            anyhow::bail!(
                "anomaly: held-out digit {d} leaves {in_train} training images (batch {}) and {positives} of {n} test images as anomalies; both classes must be present",
                an.batch_size
            );
        }
    }
    Ok(())
}

/// What the evaluation of one main model measured.
struct ModelResult {
    key: &'static str,
    title: &'static str,
    fid: f64,
    mse: f64,
    train_seconds: f64,
    seconds_per_iteration: f64,
    generator_loss: f64,
    prior_loss: Option<f64>,
    parameters: usize,
}

/// One model's training run: what it trains on, and where its checkpoints go.
struct Run<'a> {
    config: &'a LatentConfig,
    train_config: &'a TrainConfig,
    set: &'a ImageSet,
    indices: &'a [usize],
    batch_size: usize,
    iterations: usize,
    /// For the progress bar and errors.
    label: &'a str,
    /// The checkpoints' folder, `<out>/checkpoints/<name>/`.
    name: &'a str,
}

/// Trains `run.config` on images of `run.set` at `run.indices` for `run.iterations`, advancing
/// `bar`, with a checkpoint every `--checkpoint-every` steps; with `--resume`, continues from
/// the model's newest valid checkpoint (a finished model is restored, not retrained, and leaves
/// `rng` where the uninterrupted run had it). `recipe` is saved with each checkpoint.
fn train_model(
    run: Run<'_>,
    recipe: &impl Serialize,
    options: &Options,
    bar: &indicatif::ProgressBar,
    rng: &mut Rng,
) -> anyhow::Result<LatentTrainer> {
    let device = &options.device;
    let label = run.label;
    let model = LatentModel::new(run.config, device, rng)?;
    let mut trainer = LatentTrainer::new(model, run.train_config.clone())?;
    let mut batches = ShuffledBatches::new(run.indices.len(), run.batch_size)?;
    let checkpoints = Checkpoints::new(
        options,
        options.out.join("checkpoints").join(run.name),
        format!("latent {}", run.name),
        recipe,
    )?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(options, device)? {
        trainer
            .load_state(&snapshot)
            .with_context(|| format!("latent {}: cannot resume", run.name))?;
        resume::restore_loop(&snapshot, rng, &mut batches)?;
        done = snapshot.step.min(run.iterations);
        bar.inc(done as u64);
    }
    for step in done + 1..=run.iterations {
        let idx: Vec<usize> = batches
            .next_batch(rng)
            .iter()
            .map(|&i| run.indices[i])
            .collect();
        let x = to_signed(&run.set.tensor(&idx, device)?)?;
        let log = trainer
            .step(&x, rng)
            .with_context(|| format!("training {label}"))?;
        bar.set_message(format!(
            "{label} step {} mse {:.4}{}",
            log.step,
            log.mse,
            log.prior_loss
                .map(|l| format!(" prior loss {l:.3}"))
                .unwrap_or_default()
        ));
        bar.inc(1);
        checkpoints.after_step(step, run.iterations, |snapshot| {
            trainer.save_state(snapshot)?;
            resume::put_loop(snapshot, rng, &batches)
        })?;
    }
    Ok(trainer)
}

fn plot_curves(history: &[StepLog], key: &str, title: &str, out: &Path) -> anyhow::Result<()> {
    let field = |f: fn(&StepLog) -> f64| history.iter().map(f).collect::<Vec<_>>();
    LinePlot::new(
        format!("{title}: reconstruction MSE of posterior samples"),
        "training step",
        "MSE per pixel ([-1, 1] units)",
        vec![Series::from_values("MSE", &field(|l| l.mse))],
    )
    .save(&out.join(format!("{key}_mse.png")))?;
    if history.iter().any(|l| l.prior_loss.is_some()) {
        let opt = |f: fn(&StepLog) -> Option<f64>| {
            history
                .iter()
                .map(|l| f(l).unwrap_or(f64::NAN))
                .collect::<Vec<_>>()
        };
        LinePlot::new(
            format!("{title}: prior energies (E = -f)"),
            "training step",
            "mean energy",
            vec![
                Series::from_values("E(z+) posterior", &opt(|l| l.energy_pos)),
                Series::from_values("E(z-) prior", &opt(|l| l.energy_neg)),
                Series::from_values("prior loss", &opt(|l| l.prior_loss)),
            ],
        )
        .save(&out.join(format!("{key}_prior.png")))?;
    }
    Ok(())
}

/// Trains both priors on `train`, evaluates them on `test`, runs the anomaly experiment on the
/// digits, and writes the report into `options.out`.
pub fn run_recipe(
    recipe: &Recipe,
    train: &ImageSet,
    test: &ImageSet,
    digits_train: &ImageSet,
    digits_test: &ImageSet,
    options: &Options,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let out = &options.out;
    std::fs::create_dir_all(out.join("checkpoints"))
        .with_context(|| format!("creating {}", out.display()))?;
    check(recipe, train, test, digits_train, digits_test)?;
    let device = &options.device;
    let ev = &recipe.eval;

    // The domain classifier (cached), the FID reference and the held-out real baseline.
    let classifier = load_or_train(
        &ev.classifier,
        &recipe.dataset,
        train,
        test,
        &options.classifier_dir,
        device,
        options.quiet,
    )?;
    let reference = images(test, &(0..ev.fid_reference).collect::<Vec<_>>(), device)?;
    let fid = DomainFid::new(&classifier.model, &reference)?;
    let held_out: Vec<usize> = (ev.fid_reference..ev.fid_reference + ev.fid_samples).collect();
    let fid_real = fid.distance(&images(test, &held_out, device)?)?;

    let an = &recipe.anomaly;
    let total = 2 * recipe.iterations + an.held_out.len() * an.iterations;
    let bar = crate::progress::bar(total as u64, options.quiet);
    let mut report = Report::default();
    report.setting("recipe", recipe);
    report.setting("mode", options.mode);
    report.setting("seed", options.seed);
    report.setting("device", format!("{device:?}"));
    report.setting("threads", rayon::current_num_threads());

    let all_train: Vec<usize> = (0..train.len()).collect();
    let mse_idx: Vec<usize> = (0..ev.mse_images).collect();
    let mse_x = images(test, &mse_idx, device)?;
    let grid = GridOptions {
        columns: 10,
        scale: 2,
        padding: 2,
    };
    let mut results: Vec<ModelResult> = Vec::new();
    let mut longrun_rows: Vec<Vec<String>> = Vec::new();
    let mut fid_longrun = f64::NAN;
    for (i, &(key, title)) in MODELS.iter().enumerate() {
        let config = if i == 0 {
            recipe.model.clone()
        } else {
            recipe.baseline()
        };
        // The same seed for both: the same generator at initialisation, the same batches.
        let mut rng: Rng = seeded_rng(options.seed);
        let train_start = Instant::now();
        let trainer = train_model(
            Run {
                config: &config,
                train_config: &recipe.train,
                set: train,
                indices: &all_train,
                batch_size: recipe.batch_size,
                iterations: recipe.iterations,
                label: title,
                name: key,
            },
            &(recipe, options.seed),
            options,
            &bar,
            &mut rng,
        )?;
        let train_seconds = train_start.elapsed().as_secs_f64();
        let history = trainer.history().to_vec();
        checkpoint::save(
            trainer.model(),
            &out.join(format!("checkpoints/{key}.safetensors")),
        )?;
        plot_curves(&history, key, title, out)?;
        let model = trainer.model().frozen()?;

        bar.set_message(format!("{title}: samples and FID"));
        let (z, samples) = generate(
            &model,
            ev.fid_samples.max(ev.samples),
            &ev.sample_langevin,
            ev.batch,
            device,
            &mut rng,
        )?;
        let fid_samples = fid.distance(&samples.narrow(0, 0, ev.fid_samples)?)?;
        let shown = samples.narrow(0, 0, ev.samples)?;
        save_grid(&shown, &out.join(format!("{key}_samples.png")), grid)?;
        save_npy(&shown, &out.join(format!("{key}_samples.npy")))?;
        save_npy(
            &z.narrow(0, 0, ev.samples)?,
            &out.join(format!("{key}_latents.npy")),
        )?;

        bar.set_message(format!("{title}: reconstructions"));
        let rec = reconstruct(&model, &mse_x, &ev.inference_langevin, ev.batch, &mut rng)?;
        // MSE per pixel in the model's units ([-1, 1]): four times the [0, 1] value.
        let mse_unit = mse(&rec, &mse_x)?;
        let mse_signed = 4.0 * mse_unit;
        let rows = (ev.mse_images / 10).min(4);
        if rows > 0 {
            save_grid(
                &pairs(&mse_x, &rec, rows)?,
                &out.join(format!("{key}_reconstructions.png")),
                grid,
            )?;
        }

        if model.prior().is_some() {
            // Long-run chains from the noise the short-run chains start from.
            bar.set_message(format!("{title}: long-run chains"));
            let n = ev.fid_samples;
            let mut steps_done = 0;
            let mut z_chunks: Vec<Tensor> = Vec::new();
            for s in (0..n).step_by(ev.batch) {
                z_chunks.push(model.initial_latents(ev.batch.min(n - s), device, &mut rng)?);
            }
            let mut marks = ev.longrun_fid_at.clone();
            marks.push(ev.longrun_steps);
            marks.sort_unstable();
            marks.dedup();
            for mark in marks {
                let settings = ev.sample_langevin.clone().with_steps(mark - steps_done);
                for zc in &mut z_chunks {
                    *zc = model.continue_prior(zc, &settings, &mut rng)?;
                }
                steps_done = mark;
                let z_all = Tensor::cat(&z_chunks, 0)?;
                let mut xs = Vec::new();
                for zc in &z_chunks {
                    xs.push(to_unit(&model.generate(zc)?)?);
                }
                let x_all = Tensor::cat(&xs, 0)?;
                let f = fid.distance(&x_all)?;
                let norm = z_all
                    .sqr()?
                    .sum(1)?
                    .sqrt()?
                    .mean_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                let energy = model
                    .prior_energy(&z_all)?
                    .mean_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                report.metric(format!("longrun_fid_at_{mark}"), f);
                longrun_rows.push(vec![
                    mark.to_string(),
                    format!("{f:.2}"),
                    format!("{norm:.3}"),
                    format!("{energy:.4}"),
                ]);
                if mark == ev.longrun_steps {
                    fid_longrun = f;
                    let shown = x_all.narrow(0, 0, ev.samples.min(n))?;
                    save_grid(&shown, &out.join("longrun_samples.png"), grid)?;
                    save_npy(&shown, &out.join("longrun_samples.npy"))?;
                }
            }
        }

        let tail = (recipe.iterations / 10).max(1);
        results.push(ModelResult {
            key,
            title,
            fid: fid_samples,
            mse: mse_signed,
            train_seconds,
            seconds_per_iteration: tail_mean(&history, history.len(), |l| l.seconds),
            generator_loss: tail_mean(&history, tail, |l| l.generator_loss),
            prior_loss: config
                .prior
                .is_some()
                .then(|| tail_mean(&history, tail, |l| l.prior_loss.unwrap_or(f64::NAN))),
            parameters: trainer.model().generator().params().num_scalars()
                + trainer
                    .model()
                    .prior()
                    .map_or(0, |p| p.params().num_scalars()),
        });
        report.metric(format!("fid_domain_{key}"), fid_samples);
        report.metric(format!("mse_{key}"), mse_signed);
        report.metric(format!("mse_{key}_unit_range"), mse_unit);
        report.metric(format!("{key}_train_seconds"), train_seconds);
        report.metric(
            format!("{key}_seconds_per_iteration"),
            results.last().map_or(f64::NAN, |r| r.seconds_per_iteration),
        );
    }

    // Anomaly detection: one EBM-prior model per held-out digit.
    let mut anomaly_rows: Vec<Vec<String>> = Vec::new();
    let (mut auprcs, mut prior_auprcs) = (Vec::new(), Vec::new());
    let n_test = an.test_images.min(digits_test.len());
    let test_idx: Vec<usize> = (0..n_test).collect();
    let test_x = images(digits_test, &test_idx, device)?;
    let test_labels = &digits_test.labels()[..n_test];
    let anomaly_start = Instant::now();
    for &digit in &an.held_out {
        let mut rng: Rng = seeded_rng(options.seed + 100 + digit as u64);
        let normal: Vec<usize> = (0..digits_train.len())
            .filter(|&i| digits_train.labels()[i] != digit)
            .collect();
        let label = format!("anomaly (digit {digit} held out)");
        let trainer = train_model(
            Run {
                config: &an.model,
                train_config: &an.train,
                set: digits_train,
                indices: &normal,
                batch_size: an.batch_size,
                iterations: an.iterations,
                label: &label,
                name: &format!("anomaly_digit{digit}"),
            },
            &(recipe, options.seed),
            options,
            &bar,
            &mut rng,
        )?;
        checkpoint::save(
            trainer.model(),
            &out.join(format!("checkpoints/anomaly_digit{digit}.safetensors")),
        )?;
        let model = trainer.model().frozen()?;
        bar.set_message(format!("{label}: scoring {n_test} test digits"));
        let (mut scores, mut prior_part) = (Vec::with_capacity(n_test), Vec::with_capacity(n_test));
        for s in (0..n_test).step_by(ev.batch) {
            let xb = to_signed(&test_x.narrow(0, s, ev.batch.min(n_test - s))?)?;
            let parts = model.anomaly_scores(&xb, &an.inference_langevin, an.chains, &mut rng)?;
            scores.extend(parts.score);
            prior_part.extend(parts.prior);
        }
        let is_anomaly: Vec<bool> = test_labels.iter().map(|&l| l == digit).collect();
        let auprc = average_precision(&is_anomaly, &scores, true)?;
        let auprc_prior = average_precision(&is_anomaly, &prior_part, true)?;
        let base_rate = is_anomaly.iter().filter(|&&a| a).count() as f64 / n_test as f64;
        report.metric(format!("anomaly_auprc_{digit}"), auprc);
        report.metric(format!("anomaly_auprc_prior_term_{digit}"), auprc_prior);
        auprcs.push(auprc);
        prior_auprcs.push(auprc_prior);
        let paper = PAPER_ANOMALY_AUPRC
            .iter()
            .find(|(d, _)| *d == digit)
            .map_or("-".to_string(), |(_, v)| format!("{v:.3}"));
        anomaly_rows.push(vec![
            digit.to_string(),
            format!("{auprc:.3}"),
            format!("{auprc_prior:.3}"),
            format!("{base_rate:.3}"),
            paper,
        ]);
    }
    let anomaly_seconds = anomaly_start.elapsed().as_secs_f64();
    if !auprcs.is_empty() {
        report.metric("anomaly_auprc_mean", mean_of(&auprcs));
        report.metric("anomaly_auprc_prior_term_mean", mean_of(&prior_auprcs));
    }
    report.metric("anomaly_seconds", anomaly_seconds);
    bar.finish_and_clear();

    report.metric("fid_domain_longrun", fid_longrun);
    report.metric("fid_domain_real", fid_real);
    report.metric("classifier_test_accuracy", classifier.record.test_accuracy);
    let (ebm, gauss) = (&results[0], &results[1]);
    report.metric(
        "claim_fid_ebm_prior_better",
        (ebm.fid < gauss.fid) as u8 as f64,
    );
    report.metric(
        "claim_mse_ebm_prior_better",
        (ebm.mse < gauss.mse) as u8 as f64,
    );
    let wall = start.elapsed().as_secs_f64();
    report.metric("wall_seconds", wall);

    write_markdown(
        &mut report,
        recipe,
        options,
        &results,
        &longrun_rows,
        &anomaly_rows,
        (fid_real, classifier.record.test_accuracy, &classifier.path),
        (train.len(), wall),
    )?;
    report.write(out, "Latent-space EBM prior reproduction")?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn write_markdown(
    report: &mut Report,
    recipe: &Recipe,
    options: &Options,
    results: &[ModelResult],
    longrun_rows: &[Vec<String>],
    anomaly_rows: &[Vec<String>],
    (fid_real, accuracy, classifier_path): (f64, f64, &Path),
    (train_len, wall): (usize, f64),
) -> anyhow::Result<()> {
    let ev = &recipe.eval;
    let an = &recipe.anomaly;
    let g = &recipe.model.generator;
    let mode = serde_json::to_value(options.mode)?
        .as_str()
        .unwrap_or("?")
        .to_string();
    report.section(format!(
        "Pang, Han, Nijkamp, Zhu & Wu (NeurIPS 2020), \"Learning Latent Space Energy-Based Prior Model\", on {}, {mode} mode, seed {}, {} thread(s), {wall:.0} s in all.\n\n\
         The prior is `p(z) ∝ exp(f(z)) N(z; 0, sigma^2 I)` with sigma = {}; in this workspace energies are low on likely samples, so the MLP is the energy `E(z) = -f(z)` and the prior loss is `mean E(z+) - mean E(z-)`. \
         Both models share the generator architecture, its initialisation (same seed), the batches and the posterior sampler; the Gaussian prior (`f = 0`, alternating back-propagation) is sampled exactly, the EBM prior by {} Langevin steps of size {} from N(0, I).",
        recipe.dataset,
        options.seed,
        rayon::current_num_threads(),
        recipe.model.prior_sigma,
        ev.sample_langevin.steps,
        ev.sample_langevin.step_size,
    ));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.title.to_string(),
                format!("{:.2}", r.fid),
                format!("{:.4}", r.mse),
                format!("{:.4}", r.mse / 4.0),
                if r.key == "ebm_prior" {
                    format!("{} / {}", PAPER_SVHN.0, PAPER_SVHN.1)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    // "yes" or "no", with the EBM prior's value relative to the Gaussian prior's.
    let verdict = |ebm: f64, gauss: f64| {
        format!(
            "{} ({:+.1}%)",
            if ebm < gauss { "yes" } else { "no" },
            100.0 * (ebm - gauss) / gauss
        )
    };
    report.section(format!(
        "## EBM prior against Gaussian prior\n\n\
         Domain FID of {} generated images against {} test images, and test reconstruction MSE per pixel of {} test images (latents inferred by {} posterior Langevin steps of size {} from N(0, I); MSE in the model's [-1, 1] units and in [0, 1] units).\n\n{}\n\
         The paper's numbers are for SVHN (32x32 colour, the Inception FID), beside ours for the pattern only. \
         The claim tested is relative: the EBM prior beats the Gaussian prior on FID: **{}**; on MSE: **{}**.\n\n\
         | | EBM prior | Gaussian prior |\n| --- | --- | --- |\n\
         | samples | ![](ebm_prior_samples.png) | ![](gaussian_prior_samples.png) |\n\
         | reconstructions (rows: test image, reconstruction) | ![](ebm_prior_reconstructions.png) | ![](gaussian_prior_reconstructions.png) |",
        ev.fid_samples,
        ev.fid_reference,
        ev.mse_images,
        ev.inference_langevin.steps,
        ev.inference_langevin.step_size,
        table(
            &["prior", "domain FID", "MSE [-1, 1]", "MSE [0, 1]", "paper (SVHN): FID / MSE"],
            &rows
        ),
        verdict(results[0].fid, results[1].fid),
        verdict(results[0].mse, results[1].mse),
    ));
    let train_rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.title.to_string(),
                format!("{:.1}", r.generator_loss),
                r.prior_loss.map_or("-".into(), |l| format!("{l:.4}")),
                r.parameters.to_string(),
                format!("{:.0}", r.train_seconds),
                format!("{:.3}", r.seconds_per_iteration),
            ]
        })
        .collect();
    report.section(format!(
        "## Training\n\nMeans over the last 10% of iterations. Curves: `*_mse.png` (reconstruction MSE of the posterior samples during training), `ebm_prior_prior.png` (E(z+), E(z-), prior loss). Checkpoints in `checkpoints/` (safetensors + JSON config), samples and latents as `.npy` (N x C x H x W in [0, 1]).\n\n{}",
        table(
            &["prior", "generator loss", "prior loss", "parameters", "train s", "s / iteration"],
            &train_rows
        )
    ));
    report.section(format!(
        "## Long-run prior chains\n\n\
         {} chains of the EBM prior from N(0, I), continued to {} Langevin steps of size {} (the short-run sampler has {}). A stable prior keeps the samples (and the FID) where the short-run chains put them, without drifting to large ‖z‖ or saturated images.\n\n{}\n\
         Samples after {} steps: ![](longrun_samples.png)",
        ev.fid_samples,
        ev.longrun_steps,
        ev.sample_langevin.step_size,
        ev.sample_langevin.steps,
        table(&["steps", "domain FID", "mean ‖z‖", "mean E(z)"], longrun_rows),
        ev.longrun_steps,
    ));
    report.section(format!(
        "## Domain FID baselines\n\nHeld-out real test images: {fid_real:.2}. The FID is measured in the {}-d feature space of a classifier trained on {} (test accuracy {accuracy:.4}; `{}`). **This is a domain FID, not the Inception FID of the literature**: compare it only with the numbers beside it.",
        ev.classifier.model.feature_dim,
        recipe.dataset,
        classifier_path.display(),
    ));
    report.section(format!(
        "## Anomaly detection\n\n\
         As the paper's MNIST experiment: for each held-out digit an EBM-prior model (`nz = {}`, width {}) is trained on the other digits of {} ({} iterations, batch {}); {} test digits are scored by `-log p(x, z) = |x - g(z)|^2 / (2 sigma_x^2) + E(z) + |z|^2 / (2 sigma^2)` at posterior samples ({} chain(s) of {} steps of size {} from N(0, I), averaged), and the held-out digit is the positive class of the AUPRC (scikit-learn's average precision). The base rate is the AUPRC of a random score. \
         Beside the score, the AUPRC of its prior term alone, `E(z) + |z|^2 / (2 sigma^2)` at the same `z`: what the learned prior says about the inferred latents (the reconstruction term, which favours images with little ink such as 1s, dominates the sum).\n\n{}\n\
         Mean AUPRC: {:.3} (prior term alone: {:.3}). The paper's values (table 4) are for full MNIST and the paper's model, and were copied from memory, not checked against the paper.",
        an.model.generator.latent_dim,
        an.model.generator.width,
        an.dataset,
        an.iterations,
        an.batch_size,
        an.test_images,
        an.chains,
        an.inference_langevin.steps,
        an.inference_langevin.step_size,
        table(
            &["held-out digit", "AUPRC", "AUPRC of the prior term", "base rate", "paper (unverified)"],
            anomaly_rows
        ),
        report.metrics.get("anomaly_auprc_mean").copied().unwrap_or(f64::NAN),
        report
            .metrics
            .get("anomaly_auprc_prior_term_mean")
            .copied()
            .unwrap_or(f64::NAN),
    ));
    let paper_train = TrainConfig::default();
    report.section(format!(
        "## What differs from the paper\n\n\
         - Data: {} ({}x{}x{}) instead of SVHN, CIFAR-10 and CelebA; the FID is a domain FID (see above), not Inception's.\n\
         - Size: `nz = {}`, generator width {} ({} for SVHN), batch {}, {} iterations per model (about {:.1} epochs; the paper trains for 70 epochs).\n\
         - Learning rates: generator {}, prior {} (the paper's {} and {}); betas ({}, {}) as the paper.\n\
         - Samplers: prior {} steps of size {}, posterior {} steps of size {} (the paper: 60 of 0.4 and 20 of 0.1), short-run from N(0, I) at every iteration (not persistent), as the paper.\n\
         - `sigma = {}`, `sigma_x = {}` (the paper's 1 and 0.3). The generator has no batch norm; no learning-rate decay.\n\
         - Anomaly detection: {} held-out digit(s) ({}) on {}; the paper holds out 1, 4, 5, 7 and 9 on MNIST.",
        recipe.dataset,
        g.channels,
        g.image_size,
        g.image_size,
        g.latent_dim,
        g.width,
        GeneratorConfig::svhn().width,
        recipe.batch_size,
        recipe.iterations,
        (recipe.iterations * recipe.batch_size) as f64 / train_len.max(1) as f64,
        recipe.train.generator_adam.lr,
        recipe.train.prior_adam.lr,
        paper_train.generator_adam.lr,
        paper_train.prior_adam.lr,
        recipe.train.generator_adam.beta1,
        recipe.train.generator_adam.beta2,
        recipe.train.prior_langevin.steps,
        recipe.train.prior_langevin.step_size,
        recipe.train.posterior_langevin.steps,
        recipe.train.posterior_langevin.step_size,
        recipe.model.prior_sigma,
        recipe.model.likelihood_sigma,
        an.held_out.len(),
        an.held_out
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        an.dataset,
    ));
    if options.mode == Mode::Full {
        let rows: Vec<Vec<String>> = Recipe::paper_recipes()
            .into_iter()
            .map(|(name, r)| {
                let g = &r.model.generator;
                vec![
                    name.to_string(),
                    format!("`{}`", r.dataset),
                    format!("{}x{}x{}", g.channels, g.image_size, g.image_size),
                    g.latent_dim.to_string(),
                    g.width.to_string(),
                    r.batch_size.to_string(),
                    r.iterations.to_string(),
                ]
            })
            .collect();
        report.section(format!(
            "## The paper's recipes\n\n{}\nEach is `Recipe::svhn()`, `Recipe::cifar10()` or `Recipe::celeba64()` in `xtask/src/reproduce/latent.rs`; `--full` runs CIFAR-10 (the one `ebm-data` reads). SVHN and CelebA need readers in `ebm-data`; then `--set dataset=svhn` etc.",
            table(
                &["data set", "name", "images", "nz", "ngf", "batch", "iterations"],
                &rows
            )
        ));
    }
    Ok(())
}
