//! IGEBM beyond sampling (Du & Mordatch 2019, sections 4.3-4.6), each row of the paper's
//! table on data this project has, beside the paper's number:
//!
//! - [`classify`]: a class-conditional IGEBM on Fashion-MNIST as a classifier (the class of
//!   lowest energy), and PGD attacks on it (L-infinity and L2, through the soft minimum over
//!   classes) against a plain convolutional classifier of similar size trained in the same run;
//! - [`continual`]: class-incremental Split MNIST (`mnist-10k`), five two-digit tasks learned
//!   one after another, the EBM against a classifier fine-tuned the same sequential way;
//! - [`trajectories`]: a damped double pendulum (`ebm_data::trajectories`, the stand-in for the
//!   robot-hand trajectories), an MLP energy over windows of states rolled out by Langevin
//!   sampling of each next state, against a feed-forward regressor; Frechet distances of
//!   predicted against true states at several horizons.
//!
//! `cargo xtask reproduce igebm-apps --quick` runs all three on a CPU in minutes;
//! `--full` holds larger recipes for a GPU. `--set parts=["trajectories"]` runs a subset.
//!
//! Every training loop (each model, each continual task) checkpoints its whole state into
//! `checkpoints/<loop>/` (`classify-ebm`, `continual-ebm-task-2`, `trajectory-regressor`...)
//! every `--checkpoint-every` steps, at its last step and on Ctrl-C; with `--resume` each loop
//! continues from its newest snapshot that verifies, and a finished loop is restored at its
//! last step, so the evaluations that follow are those of the uninterrupted run.

pub mod classify;
pub mod continual;
pub mod trajectories;

use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use ebm_core::{seeded_rng, Rng};
use ebm_data::{DataSet, ImageSet, ShuffledBatches, Split};
use ebm_mcmc::LangevinConfig;
use ebm_nn::adversarial::Norm;
use ebm_nn::energy_classifier::EnergyClassifier;
use ebm_nn::{Classifier, ClassifierConfig, Igebm, IgebmConfig, Trainable};
use ebm_train::hybrid::{HybridConfig, HybridTrainer};
use ebm_train::{Adam, AdamConfig, CdConfig, Snapshot};
use serde::{Deserialize, Serialize};

use super::resume::{self, Checkpoints};
use super::{Mode, Options};
use crate::report::Report;

/// The parts of the experiment, in the order they run.
pub const PARTS: &[&str] = &["classify", "continual", "trajectories"];

/// Everything that defines a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Which parts to run: `classify` (classification and robustness), `continual`,
    /// `trajectories`.
    pub parts: Vec<String>,
    /// Classification by energy, and the baseline classifier.
    pub classify: classify::ClassifyRecipe,
    /// The PGD attacks on both classifiers.
    pub attack: classify::AttackRecipe,
    /// Split MNIST.
    pub continual: continual::ContinualRecipe,
    /// Trajectory prediction.
    pub trajectories: trajectories::TrajectoryRecipe,
}

/// A class-conditional IGEBM and how it is trained (contrastive divergence plus an optional
/// classification term, [`ebm_train::hybrid`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbmRecipe {
    /// The architecture; the experiment makes it conditional on the data set's classes.
    pub model: IgebmConfig,
    /// The loss, sampler, buffer and optimiser.
    pub train: HybridConfig,
    /// Data images per step.
    pub batch_size: usize,
    /// Training steps (per task in the continual part).
    pub iterations: usize,
}

/// A plain convolutional classifier and its training.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineRecipe {
    /// The network.
    pub model: ClassifierConfig,
    /// Adam steps (per task in the continual part).
    pub iterations: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam's learning rate (betas 0.9, 0.999).
    pub lr: f64,
}

impl EbmRecipe {
    /// The quick model: the IGEBM quick recipe's 4-block ResNet of width 16 without spectral
    /// norm, 10 Langevin steps from a replay buffer, and the classification term with weight
    /// 10 on `clf_images` images of each batch; Adam lr 1e-3 with beta1 0.9, energy
    /// regulariser 0.1. Chosen in a sweep of 300-600-step runs on Fashion-MNIST (weights 1-20,
    /// lr 3e-4 to 3e-3, beta1 0 or 0.9, l2 0.1 or 1, 5 or 10 Langevin steps, 16 or 32
    /// classified images): with the IGEBM optimiser settings (lr 3e-4, beta1 0) and weight 1
    /// the classifier was near 20% test accuracy after 400 steps; with these, about 57% after 300.
    fn quick(iterations: usize, clf_images: usize) -> Self {
        let mut model = IgebmConfig::small(1, 28, 16);
        model.spectral_norm = false;
        Self {
            model,
            train: HybridConfig {
                cd: CdConfig {
                    langevin: LangevinConfig::igebm().with_steps(10),
                    adam: AdamConfig {
                        lr: 1e-3,
                        beta1: 0.9,
                        ..Default::default()
                    },
                    l2_coeff: 0.1,
                    ..CdConfig::default()
                },
                clf_weight: 10.0,
                clf_images,
            },
            batch_size: 32,
            iterations,
        }
    }

    /// A bigger model for a GPU: width 64 with spectral norm, 60 Langevin steps, batch 128.
    fn full(iterations: usize) -> Self {
        Self {
            model: IgebmConfig::small(1, 28, 64),
            train: HybridConfig {
                cd: CdConfig::default(),
                clf_weight: 1.0,
                clf_images: 128,
            },
            batch_size: 128,
            iterations,
        }
    }
}

impl BaselineRecipe {
    /// Widths 16 and 32, 16 features: about 30k parameters, as many as the quick EBM's 21k.
    fn quick(iterations: usize) -> Self {
        Self {
            model: ClassifierConfig {
                widths: vec![16, 32],
                feature_dim: 16,
                ..ClassifierConfig::mnist_like()
            },
            iterations,
            batch_size: 32,
            lr: 1e-3,
        }
    }

    fn full(iterations: usize) -> Self {
        Self {
            model: ClassifierConfig {
                widths: vec![64, 128],
                feature_dim: 64,
                ..ClassifierConfig::mnist_like()
            },
            iterations,
            batch_size: 128,
            lr: 1e-3,
        }
    }
}

impl Recipe {
    /// Minutes on a 2-core CPU.
    pub fn quick() -> Self {
        Self {
            parts: PARTS.iter().map(|s| s.to_string()).collect(),
            classify: classify::ClassifyRecipe {
                dataset: DataSet::FashionMnist.name().into(),
                ebm: EbmRecipe::quick(300, 32),
                baseline: BaselineRecipe::quick(600),
                test_images: 2000,
            },
            attack: classify::AttackRecipe {
                images: 200,
                steps: 7,
                linf_eps: vec![0.01, 0.03, 0.05, 0.1],
                l2_eps: vec![0.5, 1.0, 2.0],
                step_factor: 2.5,
                random_start: true,
                batch: 50,
            },
            continual: continual::ContinualRecipe {
                dataset: DataSet::Mnist10k.name().into(),
                tasks: (0..5).map(|t| vec![2 * t, 2 * t + 1]).collect(),
                ebm: EbmRecipe::quick(80, 32),
                baseline: BaselineRecipe::quick(80),
            },
            trajectories: trajectories::TrajectoryRecipe::quick(),
        }
    }

    /// Larger models and longer training, for a GPU machine (not run here).
    pub fn full() -> Self {
        Self {
            parts: PARTS.iter().map(|s| s.to_string()).collect(),
            classify: classify::ClassifyRecipe {
                dataset: DataSet::FashionMnist.name().into(),
                ebm: EbmRecipe::full(20_000),
                baseline: BaselineRecipe::full(10_000),
                test_images: 10_000,
            },
            attack: classify::AttackRecipe {
                images: 1000,
                steps: 20,
                linf_eps: vec![0.01, 0.03, 0.05, 0.1, 0.2],
                l2_eps: vec![0.5, 1.0, 2.0, 3.0],
                step_factor: 2.5,
                random_start: true,
                batch: 100,
            },
            continual: continual::ContinualRecipe {
                dataset: DataSet::Mnist10k.name().into(),
                tasks: (0..5).map(|t| vec![2 * t, 2 * t + 1]).collect(),
                ebm: EbmRecipe::full(2000),
                baseline: BaselineRecipe::full(1000),
            },
            trajectories: trajectories::TrajectoryRecipe::full(),
        }
    }

    /// The recipe for a mode.
    pub fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self::quick(),
            Mode::Full => Self::full(),
        }
    }

    /// Every training loop's steps (per model, per task) set to `n`.
    pub fn set_iterations(&mut self, n: usize) {
        self.classify.ebm.iterations = n;
        self.classify.baseline.iterations = n;
        self.continual.ebm.iterations = n;
        self.continual.baseline.iterations = n;
        self.trajectories.iterations = n;
        self.trajectories.regressor.iterations = n;
    }

    /// Checks what can be checked before any data is read.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.parts.is_empty() {
            anyhow::bail!("the recipe runs no part: list some of {}", PARTS.join(", "));
        }
        for p in &self.parts {
            if !PARTS.contains(&p.as_str()) {
                anyhow::bail!(
                    "unknown part `{p}` in the recipe; known: {}",
                    PARTS.join(", ")
                );
            }
        }
        if self.runs("classify") {
            self.classify.validate()?;
            self.attack.validate()?;
        }
        if self.runs("continual") {
            self.continual.validate()?;
        }
        if self.runs("trajectories") {
            self.trajectories.validate()?;
        }
        Ok(())
    }

    /// Whether the part `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p == name)
    }
}

/// The image data the experiment reads.
pub struct AppData {
    /// The classification data set's training split.
    pub train: ImageSet,
    /// Its test split.
    pub test: ImageSet,
    /// The continual-learning digits' training split.
    pub digits_train: ImageSet,
    /// Their test split.
    pub digits_test: ImageSet,
}

/// Runs the experiment with the mode's recipe on the data sets found by the resolver.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let mut recipe: Recipe =
        super::apply_overrides(&Recipe::for_mode(options.mode), &options.overrides)?;
    if let Some(n) = options.iterations {
        recipe.set_iterations(n);
    }
    recipe.validate()?;
    let load = |name: &str, split: Split, needed: bool| -> anyhow::Result<ImageSet> {
        if !needed {
            // A placeholder: this part does not run.
            return Ok(ImageSet::new(vec![0; 784], vec![0], [1, 28, 28], 10)?);
        }
        let set = DataSet::from_name(name)?;
        let explicit = options.data_dir.as_ref().map(|d| d.join(set.name()));
        ebm_data::load(set, split, explicit.as_deref())
            .with_context(|| format!("igebm-apps needs {name} ({split:?} split)"))
    };
    let (c, d) = (recipe.runs("classify"), recipe.runs("continual"));
    let data = AppData {
        train: load(&recipe.classify.dataset, Split::Train, c)?,
        test: load(&recipe.classify.dataset, Split::Test, c)?,
        digits_train: load(&recipe.continual.dataset, Split::Train, d)?,
        digits_test: load(&recipe.continual.dataset, Split::Test, d)?,
    };
    let report = run_recipe(&recipe, &data, options)?;
    println!("{}", summary_line(&report));
    Ok(())
}

/// The last line printed: the headline numbers.
pub fn summary_line(report: &Report) -> String {
    let m = |k: &str| report.metrics.get(k).copied().unwrap_or(f64::NAN);
    // The metric `prefix<x>` of the largest number x (epsilon or horizon).
    let largest = |prefix: &str| {
        report
            .metrics
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.parse::<f64>().ok()?, *v)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(x, v)| format!("{v:.3} ({x})"))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "igebm-apps: clf accuracy EBM {:.3} baseline {:.3}; L-inf robust accuracy (largest eps) EBM {} baseline {}; continual EBM {:.3} baseline {:.3}; trajectory Frechet (longest horizon) EBM {} regressor {}; {:.0} s",
        m("clf_accuracy"),
        m("baseline_clf_accuracy"),
        largest("robust_accuracy_linf_"),
        largest("baseline_robust_accuracy_linf_"),
        m("continual_accuracy_ebm"),
        m("continual_accuracy_baseline"),
        largest("traj_frechet_ebm_"),
        largest("traj_frechet_baseline_"),
        m("wall_seconds"),
    )
}

/// Runs the recipe's parts on `data` and writes the report into `options.out`.
pub fn run_recipe(recipe: &Recipe, data: &AppData, options: &Options) -> anyhow::Result<Report> {
    let start = Instant::now();
    recipe.validate()?;
    let out = &options.out;
    std::fs::create_dir_all(out.join("checkpoints"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut run = Run {
        options,
        recipe,
        bar: crate::progress::bar(progress_units(recipe), options.quiet),
        report: Report::default(),
        summary: Vec::new(),
        differences: Vec::new(),
    };
    let report = &mut run.report;
    report.setting("recipe", recipe);
    report.setting("mode", options.mode);
    report.setting("seed", options.seed);
    report.setting("device", format!("{:?}", options.device));
    report.setting("threads", rayon::current_num_threads());
    report.section(format!(
        "IGEBM beyond sampling (Du & Mordatch 2019), {} mode, seed {}, {} thread(s). Parts: {}.",
        serde_json::to_value(options.mode)?.as_str().unwrap_or("?"),
        options.seed,
        rayon::current_num_threads(),
        recipe.parts.join(", ")
    ));
    if recipe.runs("classify") {
        let t = Instant::now();
        classify::run(recipe, data, &mut run)?;
        run.report
            .metric("classify_seconds", t.elapsed().as_secs_f64());
    }
    if recipe.runs("continual") {
        let t = Instant::now();
        continual::run(recipe, data, &mut run)?;
        run.report
            .metric("continual_seconds", t.elapsed().as_secs_f64());
    }
    if recipe.runs("trajectories") {
        let t = Instant::now();
        trajectories::run(recipe, &mut run)?;
        run.report
            .metric("trajectories_seconds", t.elapsed().as_secs_f64());
    }
    let Run {
        bar,
        mut report,
        summary,
        differences,
        ..
    } = run;
    bar.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    report.metric("wall_seconds", wall);
    // The summary table goes first, after the one-line header.
    report.markdown.insert(
        1,
        format!(
            "## Summary\n\nOurs beside the paper's numbers (the paper's settings differ: see the last section). {wall:.0} s in all.\n\n{}",
            crate::report::table(
                &["task", "metric", "EBM (ours)", "baseline (ours)", "paper: EBM", "paper: baselines"],
                &summary
            )
        ),
    );
    report.section(format!(
        "## What differs from the paper\n\n{}",
        differences
            .iter()
            .map(|d| format!("- {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    report.write(
        out,
        "IGEBM beyond sampling: classification, robustness, continual learning, trajectories",
    )?;
    Ok(report)
}

/// The state every part writes into.
pub(crate) struct Run<'a> {
    /// The run's options.
    pub options: &'a Options,
    /// The recipe, saved with every training checkpoint (a snapshot of another recipe is
    /// refused).
    pub recipe: &'a Recipe,
    /// The progress bar over the whole run.
    pub bar: indicatif::ProgressBar,
    /// Metrics, settings and sections.
    pub report: Report,
    /// Rows of the summary table: task, metric, ours (EBM), ours (baseline), paper EBM, paper
    /// baselines.
    pub summary: Vec<Vec<String>>,
    /// Lines of "what differs from the paper".
    pub differences: Vec<String>,
}

/// A plain classifier with its optimiser.
pub(crate) struct Baseline {
    /// The network.
    pub model: Classifier,
    /// Its Adam (betas 0.9, 0.999, no gradient bound).
    pub adam: Adam,
}

impl Run<'_> {
    /// The checkpoints of the training loop `what` (`classify EBM`, `continual EBM task 2`):
    /// in `<out>/checkpoints/<what in lower case, dashes for spaces>/`, under the label
    /// `igebm-apps <that name>`, each snapshot carrying the recipe and the seed.
    pub(crate) fn checkpoints(&self, what: &str) -> anyhow::Result<Checkpoints> {
        let name = what.to_lowercase().replace(' ', "-");
        Checkpoints::new(
            self.options,
            self.options.out.join("checkpoints").join(&name),
            format!("igebm-apps {name}"),
            &(self.recipe, self.options.seed),
        )
    }
}

/// Stores `values` (a loss curve) as an f64 tensor called `name`: exact, whatever the values.
pub(crate) fn put_numbers(
    snapshot: &mut Snapshot,
    name: &str,
    values: &[f64],
) -> anyhow::Result<()> {
    let t = Tensor::from_slice(values, values.len(), &Device::Cpu)?;
    snapshot.tensors.insert(name.to_string(), t);
    Ok(())
}

/// The numbers [`put_numbers`] stored under `name`.
pub(crate) fn numbers(snapshot: &Snapshot, name: &str) -> anyhow::Result<Vec<f64>> {
    Ok(snapshot.tensor(name)?.to_vec1::<f64>()?)
}

/// Units of the progress bar: training steps, attack steps and rollout steps.
fn progress_units(recipe: &Recipe) -> u64 {
    let mut n = 0usize;
    if recipe.runs("classify") {
        let a = &recipe.attack;
        n += recipe.classify.ebm.iterations + recipe.classify.baseline.iterations;
        n += 2 * a.steps * (a.linf_eps.len() + a.l2_eps.len());
    }
    if recipe.runs("continual") {
        let c = &recipe.continual;
        n += c.tasks.len() * (c.ebm.iterations + c.baseline.iterations);
    }
    if recipe.runs("trajectories") {
        let t = &recipe.trajectories;
        n += t.iterations + t.regressor.iterations;
        n += t.horizons.iter().copied().max().unwrap_or(0);
    }
    n as u64
}

/// Formats an epsilon for a metric key: `0.03`, `1`, `0.5`.
pub(crate) fn eps_key(eps: f64) -> String {
    format!("{eps}")
}

/// The name of a norm in metric keys.
pub(crate) fn norm_key(norm: Norm) -> &'static str {
    match norm {
        Norm::Linf => "linf",
        Norm::L2 => "l2",
    }
}

/// Trains `baseline` on `set`'s images at `indices` for `recipe.iterations` Adam steps,
/// continuing from wherever it is (the continual part fine-tunes it task after task). Returns
/// the mean loss of the last tenth of the steps. Checkpoints as [`Run::checkpoints`] says
/// (weights, Adam, `rng`, the data order and the losses of the last tenth); with `--resume`
/// it continues from the newest one, or is restored at its last step if it had finished.
pub(crate) fn train_classifier(
    baseline: &mut Baseline,
    recipe: &BaselineRecipe,
    set: &ImageSet,
    indices: &[usize],
    rng: &mut Rng,
    run: &Run<'_>,
    what: &str,
) -> anyhow::Result<f64> {
    let device = &run.options.device;
    let mut batches = ShuffledBatches::new(indices.len(), recipe.batch_size)
        .with_context(|| format!("{what}: batches"))?;
    let mut tail = Vec::new();
    let checkpoints = run.checkpoints(what)?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(run.options, device)? {
        tail = baseline
            .restore(&snapshot, rng, &mut batches)
            .with_context(|| format!("{what}: cannot resume"))?;
        done = snapshot.step.min(recipe.iterations);
        run.bar.inc(done as u64);
    }
    for step in done..recipe.iterations {
        let idx: Vec<usize> = batches
            .next_batch(rng)
            .iter()
            .map(|&i| indices[i])
            .collect();
        let x = set.tensor(&idx, device)?;
        let y = set.labels_tensor(&idx, device)?;
        let loss = baseline.model.loss(&x, &y)?;
        baseline.adam.step(&loss.backward()?)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            anyhow::bail!("{what}: training diverged at step {step} (loss {l})");
        }
        if step >= recipe.iterations - recipe.iterations.div_ceil(10) {
            tail.push(l);
        }
        if step % 20 == 0 {
            run.bar
                .set_message(format!("{what} step {step} loss {l:.3}"));
        }
        run.bar.inc(1);
        checkpoints.after_step(step + 1, recipe.iterations, |snapshot| {
            snapshot.put_model("model", &baseline.model)?;
            snapshot.put_adam("adam", &baseline.adam)?;
            resume::put_loop(snapshot, rng, &batches)?;
            put_numbers(snapshot, "loss_tail", &tail)
        })?;
    }
    Ok(tail.iter().sum::<f64>() / tail.len().max(1) as f64)
}

impl Baseline {
    /// Restores what [`train_classifier`] checkpointed: the weights, Adam, the loop's generator
    /// and data order; returns the losses of the last tenth of the steps so far.
    fn restore(
        &mut self,
        snapshot: &Snapshot,
        rng: &mut Rng,
        batches: &mut ShuffledBatches,
    ) -> anyhow::Result<Vec<f64>> {
        snapshot.restore_model("model", &mut self.model)?;
        snapshot.restore_adam("adam", &mut self.adam)?;
        resume::restore_loop(snapshot, rng, batches)?;
        numbers(snapshot, "loss_tail")
    }

    /// A freshly initialised classifier of `recipe` and its optimiser.
    pub(crate) fn new(recipe: &BaselineRecipe, device: &Device, seed: u64) -> anyhow::Result<Self> {
        let model = Classifier::new(&recipe.model, device, &mut seeded_rng(seed))?;
        let adam = Adam::new(model.params().vars(), AdamConfig::kingma_ba(recipe.lr))?;
        Ok(Self { model, adam })
    }
}

/// Which images of a set a model trains on, and the classes of the step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subset<'a> {
    /// Image indices.
    pub indices: &'a [usize],
    /// The classes (the labels of those images are among them).
    pub classes: &'a [u32],
}

/// Runs `recipe.iterations` hybrid steps of `trainer` on `set`'s images at `subset.indices`
/// (uniformly dequantised, as IGEBM trains), the soft minimum and the negatives' labels over
/// `subset.classes`. Checkpoints as [`Run::checkpoints`] says (the trainer's state, `rng` and
/// the data order); with `--resume` it continues from the newest one, or is restored at its
/// last step if it had finished.
pub(crate) fn train_ebm(
    trainer: &mut HybridTrainer<Igebm>,
    recipe: &EbmRecipe,
    set: &ImageSet,
    subset: Subset<'_>,
    rng: &mut Rng,
    run: &Run<'_>,
    what: &str,
) -> anyhow::Result<()> {
    let device = &run.options.device;
    let mut batches = ShuffledBatches::new(subset.indices.len(), recipe.batch_size)
        .with_context(|| format!("{what}: batches"))?;
    let checkpoints = run.checkpoints(what)?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(run.options, device)? {
        trainer
            .load_state(&snapshot)
            .map_err(anyhow::Error::from)
            .and_then(|()| resume::restore_loop(&snapshot, rng, &mut batches))
            .with_context(|| format!("{what}: cannot resume"))?;
        done = snapshot.step.min(recipe.iterations);
        run.bar.inc(done as u64);
    }
    for step in done + 1..=recipe.iterations {
        let idx: Vec<usize> = batches
            .next_batch(rng)
            .iter()
            .map(|&i| subset.indices[i])
            .collect();
        let x = set.dequantized(&idx, rng, device)?;
        let labels: Vec<u32> = idx.iter().map(|&i| set.labels()[i] as u32).collect();
        let log = trainer
            .step(&x, &labels, subset.classes, rng)
            .with_context(|| format!("{what}: training step"))?;
        run.bar.set_message(format!(
            "{what} step {} E+ {:.3} E- {:.3} CE {:.3}",
            log.cd.step, log.cd.energy_pos, log.cd.energy_neg, log.clf_loss
        ));
        run.bar.inc(1);
        checkpoints.after_step(step, recipe.iterations, |snapshot| {
            trainer.save_state(snapshot)?;
            resume::put_loop(snapshot, rng, &batches)
        })?;
    }
    Ok(())
}

/// A conditional IGEBM of `recipe` for `classes` classes and its hybrid trainer.
pub(crate) fn new_ebm(
    recipe: &EbmRecipe,
    classes: usize,
    device: &Device,
    seed: u64,
) -> anyhow::Result<HybridTrainer<Igebm>> {
    let cfg = recipe.model.clone().conditional(classes);
    let model = Igebm::new(&cfg, device, &mut seeded_rng(seed))?;
    Ok(HybridTrainer::new(model, recipe.train.clone())?)
}

/// The energy classifier's accuracy on `set`'s images at `indices`, choosing among `classes`.
pub(crate) fn ebm_accuracy(
    model: &Igebm,
    set: &ImageSet,
    indices: &[usize],
    classes: &[u32],
    device: &Device,
) -> anyhow::Result<f64> {
    let clf = EnergyClassifier::over(model, classes)?;
    let mut correct = 0usize;
    for chunk in indices.chunks(100) {
        let pred = clf.predict(&set.tensor(chunk, device)?)?;
        correct += pred
            .iter()
            .zip(chunk)
            .filter(|(p, &i)| **p == set.labels()[i] as u32)
            .count();
    }
    Ok(correct as f64 / indices.len().max(1) as f64)
}

/// Indices of `set`'s images whose label is in `classes`.
pub(crate) fn indices_of(set: &ImageSet, classes: &[u32]) -> Vec<usize> {
    set.labels()
        .iter()
        .enumerate()
        .filter(|(_, &y)| classes.contains(&(y as u32)))
        .map(|(i, _)| i)
        .collect()
}

/// The plain classifier's accuracy on `set`'s images at `indices`, predicting among `classes`
/// (the largest logit among them).
pub(crate) fn classifier_accuracy(
    model: &Classifier,
    set: &ImageSet,
    indices: &[usize],
    classes: &[u32],
    device: &Device,
) -> anyhow::Result<f64> {
    let mut correct = 0usize;
    for chunk in indices.chunks(250) {
        let logits = model.logits(&set.tensor(chunk, device)?)?.detach();
        let cols = Tensor::from_slice(classes, classes.len(), device)?;
        let pick = logits.index_select(&cols, 1)?.argmax(1)?.to_vec1::<u32>()?;
        correct += pick
            .iter()
            .zip(chunk)
            .filter(|(p, &i)| classes[**p as usize] == set.labels()[i] as u32)
            .count();
    }
    Ok(correct as f64 / indices.len().max(1) as f64)
}
