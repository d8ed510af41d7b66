//! Class-incremental Split MNIST: the digits in five two-class tasks, learned one after another
//! with no data of earlier tasks kept, then tested on all ten digits. The EBM's steps only
//! contrast the current task's classes (the soft minimum and the negatives' labels are
//! restricted to them), so they leave the energies of earlier classes alone; the baseline is a
//! plain classifier fine-tuned task after task with its usual 10-way cross-entropy.

use serde::{Deserialize, Serialize};

use ebm_core::seeded_rng;
use ebm_nn::Trainable;
use ebm_viz::{LinePlot, Series};

use super::{
    classifier_accuracy, ebm_accuracy, indices_of, new_ebm, train_classifier, train_ebm, AppData,
    Baseline, BaselineRecipe, EbmRecipe, Recipe, Run, Subset,
};
use crate::report::table;

/// The continual-learning part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinualRecipe {
    /// The digits' data set (`mnist-10k`: 8,000 training and 2,000 test images).
    pub dataset: String,
    /// The tasks, in training order: the classes of each.
    pub tasks: Vec<Vec<u32>>,
    /// The EBM (`iterations` per task).
    pub ebm: EbmRecipe,
    /// The baseline (`iterations` per task).
    pub baseline: BaselineRecipe,
}

impl ContinualRecipe {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.tasks.is_empty() || self.tasks.iter().any(|t| t.is_empty()) {
            anyhow::bail!("continual: give at least one task, each with at least one class");
        }
        let mut seen: Vec<u32> = Vec::new();
        for t in &self.tasks {
            for c in t {
                if seen.contains(c) {
                    anyhow::bail!("continual: class {c} appears in two tasks (or twice in one)");
                }
                seen.push(*c);
            }
        }
        Ok(())
    }
}

/// The paper's Split MNIST numbers, as the issue quotes them.
const PAPER_EBM: &str = "64.99%";
const PAPER_BASELINES: &str = "VAE 40.04%, EWC 19.8%";

/// Trains both models task after task, measures them after each task, writes the section.
pub(crate) fn run(recipe: &Recipe, data: &AppData, run: &mut Run<'_>) -> anyhow::Result<()> {
    let r = &recipe.continual;
    let device = run.options.device.clone();
    let seed = run.options.seed;
    let (train, test) = (&data.digits_train, &data.digits_test);
    let k = train.classes();
    if train.shape().to_vec() != r.ebm.model.sample_shape() {
        anyhow::bail!(
            "continual: {}'s images are {:?}, the model takes {:?}",
            r.dataset,
            train.shape(),
            r.ebm.model.sample_shape()
        );
    }
    if let Some(bad) = r.tasks.iter().flatten().find(|&&c| c as usize >= k) {
        anyhow::bail!(
            "continual: class {bad} does not exist in {} ({k} classes)",
            r.dataset
        );
    }
    if r.baseline.model.num_classes != k {
        anyhow::bail!(
            "continual: the baseline has {} classes, {} has {k}",
            r.baseline.model.num_classes,
            r.dataset
        );
    }
    let mut trainer = new_ebm(&r.ebm, k, &device, seed + 3)?;
    let mut ebm_rng = seeded_rng(seed + 3);
    let mut baseline = Baseline::new(&r.baseline, &device, seed + 4)?;
    let mut base_rng = seeded_rng(seed + 4);
    let mut seen: Vec<u32> = Vec::new();
    let mut rows = Vec::new();
    let (mut ebm_curve, mut base_curve) = (Vec::new(), Vec::new());
    for (t, task) in r.tasks.iter().enumerate() {
        let idx = indices_of(train, task);
        if idx.len() < r.ebm.batch_size.max(r.baseline.batch_size) {
            anyhow::bail!(
                "continual: task {t} ({task:?}) has {} training images, fewer than a batch",
                idx.len()
            );
        }
        trainer.clear_buffer()?;
        let subset = Subset {
            indices: &idx,
            classes: task,
        };
        train_ebm(
            &mut trainer,
            &r.ebm,
            train,
            subset,
            &mut ebm_rng,
            run,
            &format!("continual EBM task {}", t + 1),
        )?;
        train_classifier(
            &mut baseline,
            &r.baseline,
            train,
            &idx,
            &mut base_rng,
            run,
            &format!("continual baseline task {}", t + 1),
        )?;
        seen.extend(task);
        let test_idx = indices_of(test, &seen);
        if test_idx.is_empty() {
            anyhow::bail!("continual: the test split has no image of classes {seen:?}");
        }
        let frozen = trainer.model().frozen()?;
        let e = ebm_accuracy(&frozen, test, &test_idx, &seen, &device)?;
        let b = classifier_accuracy(&baseline.model, test, &test_idx, &seen, &device)?;
        run.report
            .metric(format!("continual_accuracy_ebm_after_task_{}", t + 1), e);
        run.report.metric(
            format!("continual_accuracy_baseline_after_task_{}", t + 1),
            b,
        );
        ebm_curve.push(((t + 1) as f64, e));
        base_curve.push(((t + 1) as f64, b));
        rows.push(vec![
            format!("{} ({:?})", t + 1, task),
            format!("{:?}", seen),
            test_idx.len().to_string(),
            format!("{e:.3}"),
            format!("{b:.3}"),
        ]);
    }
    // After the last task: accuracy on every task's test images, among all seen classes.
    let frozen = trainer.model().frozen()?;
    let mut per_task = Vec::new();
    for (t, task) in r.tasks.iter().enumerate() {
        let idx = indices_of(test, task);
        let e = ebm_accuracy(&frozen, test, &idx, &seen, &device)?;
        let b = classifier_accuracy(&baseline.model, test, &idx, &seen, &device)?;
        run.report
            .metric(format!("continual_task_{}_final_accuracy_ebm", t + 1), e);
        run.report.metric(
            format!("continual_task_{}_final_accuracy_baseline", t + 1),
            b,
        );
        per_task.push(vec![
            format!("{} ({:?})", t + 1, task),
            idx.len().to_string(),
            format!("{e:.3}"),
            format!("{b:.3}"),
        ]);
    }
    let (final_ebm, final_base) = (
        ebm_curve[ebm_curve.len() - 1].1,
        base_curve[base_curve.len() - 1].1,
    );
    run.report.metric("continual_accuracy_ebm", final_ebm);
    run.report.metric("continual_accuracy_baseline", final_base);
    run.report.metric(
        "continual_ebm_parameters",
        trainer.model().params().num_scalars() as f64,
    );
    run.report.metric(
        "continual_baseline_parameters",
        baseline.model.params().num_scalars() as f64,
    );
    LinePlot::new(
        format!("Split {}: class-incremental accuracy", r.dataset),
        "tasks learned",
        "accuracy (seen classes)",
        vec![
            Series {
                name: "EBM".into(),
                points: ebm_curve,
            },
            Series {
                name: "conv classifier".into(),
                points: base_curve,
            },
        ],
    )
    .save(&run.options.out.join("continual_accuracy.png"))?;
    run.report.section(format!(
        "## Continual learning: class-incremental Split MNIST\n\n\
         {} ({} training and {} test images), tasks {:?} learned one after another, {} steps each, no data of earlier tasks kept. \
         The EBM (the classification part's architecture, {} Langevin steps, classification weight {}) contrasts only the current task's classes: its negatives are labelled with them and its cross-entropy runs over them; its replay buffer is emptied at each new task. \
         The baseline (a conv classifier of the same recipe as above) is fine-tuned on each task with the usual cross-entropy over all 10 classes. \
         Accuracy after each task on the test images of every class seen so far, predicting among those classes:\n\n{}\n\
         After the last task, on each task's test images (predicting among all classes seen):\n\n{}\n\
         ![continual accuracy](continual_accuracy.png)",
        r.dataset,
        train.len(),
        test.len(),
        r.tasks,
        r.ebm.iterations,
        r.ebm.train.cd.langevin.steps,
        r.ebm.train.clf_weight,
        table(&["after task", "classes seen", "test images", "EBM", "classifier"], &rows),
        table(&["task", "test images", "EBM", "classifier"], &per_task),
    ));
    run.summary.push(vec![
        format!("Split {} (class-incremental)", r.dataset),
        format!(
            "accuracy over {} classes after {} tasks",
            seen.len(),
            r.tasks.len()
        ),
        format!("{final_ebm:.3}"),
        format!("{final_base:.3}"),
        PAPER_EBM.into(),
        PAPER_BASELINES.into(),
    ]);
    run.differences.push(format!(
        "Continual learning: the paper's Split MNIST uses the MNIST data set with its own architecture and compares with numbers of other methods (VAE, EWC among them); here {} ({} training images, about {} per task), {} steps per task of batch {}, the EBM trained with the hybrid loss restricted to each task's classes, and one baseline run in the same process: a plain classifier fine-tuned sequentially (no EWC or replay), which is the setting where such a classifier forgets earlier tasks.",
        r.dataset,
        train.len(),
        train.len() / r.tasks.len().max(1),
        r.ebm.iterations,
        r.ebm.batch_size
    ));
    Ok(())
}
