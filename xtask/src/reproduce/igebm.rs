//! IGEBM (Du & Mordatch 2019): an unconditional and a class-conditional ResNet energy trained
//! by contrastive divergence with a replay buffer, then sampled by short-run Langevin from noise
//! and shown from the buffer.
//!
//! Then the evaluation tables (see [`super::igebm_eval`]): out-of-distribution AUROCs,
//! inpainting and denoising, and the domain FID of samples with its baselines.
//!
//! `--quick` trains small models on Fashion-MNIST 28x28 on a CPU; `--full` holds the paper's
//! CIFAR-10 recipe (ResNet32, 60 steps of size 10, noise 0.005, clip 0.01, batch 128).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;
use ebm_core::{noise, seeded_rng, Rng};
use ebm_data::{DataSet, ImageSet, ShuffledBatches, Split};
use ebm_mcmc::{Langevin, LangevinConfig};
use ebm_nn::{checkpoint, Igebm, IgebmConfig, Trainable};
use ebm_train::{CdConfig, CdTrainer, Conditioned, StepLog};
use ebm_viz::{save_grid, GridOptions, LinePlot, Series};
use serde::{Deserialize, Serialize};

use super::igebm_eval::{self, EvalData, EvalRecipe, OOD_SETS, PAPER_OOD};
use super::resume::{self, Checkpoints};
use super::{load_digits, save_npy, Mode, Options};
use crate::classifier::{load_or_train, DomainFid};
use crate::report::{table, Report};

/// Everything that defines an IGEBM run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The data set's name.
    pub dataset: String,
    /// The unconditional architecture (the conditional model adds per-class gains and biases).
    pub model: IgebmConfig,
    /// Contrastive-divergence settings, including the training sampler.
    pub train: CdConfig,
    /// Images per training batch.
    pub batch_size: usize,
    /// Training iterations per model.
    pub iterations: usize,
    /// The sampler for pictures from noise.
    pub eval_langevin: LangevinConfig,
    /// Samples drawn from noise per model (a multiple of 10: one row per class).
    pub samples: usize,
    /// Which models to train: `unconditional`, `conditional` or both.
    pub models: Vec<String>,
    /// The evaluation tables.
    pub eval: EvalRecipe,
}

impl Recipe {
    /// Minutes on a 2-core CPU: Fashion-MNIST 28x28, a 4-block ResNet of width 16 that halves
    /// the resolution after blocks 1 and 3 (one block at 28x28, two at 14x14, one at 7x7: a
    /// third cheaper per step than halving after blocks 2 and 4, so more iterations fit).
    /// Spectral norm is off: with it, energies and their gradients are so small that a few
    /// hundred CPU iterations learn next to nothing (measured; see docs/RESULTS.md). Adam's
    /// learning rate is 1e-3 and the energy regulariser's weight 0.1, which let the energies
    /// (and so the sampler's gradients) grow within the budget; both were chosen by a sweep whose
    /// arms docs/RESULTS.md lists. Chains persist in the replay buffer, so 10 steps per
    /// iteration suffice in training; pictures from noise take 100, about as many as a chain
    /// in the buffer has taken by the end of training.
    pub fn quick() -> Self {
        let mut model = IgebmConfig::small(1, 28, 16);
        model.spectral_norm = false;
        for (block, downsample) in model.blocks.iter_mut().zip([true, false, true, false]) {
            block.downsample = downsample;
        }
        Self {
            dataset: DataSet::FashionMnist.name().into(),
            model,
            train: CdConfig {
                l2_coeff: 0.1,
                langevin: LangevinConfig {
                    steps: 10,
                    ..LangevinConfig::igebm()
                },
                adam: ebm_train::AdamConfig {
                    lr: 1e-3,
                    ..Default::default()
                },
                ..CdConfig::default()
            },
            batch_size: 64,
            iterations: 1600,
            eval_langevin: LangevinConfig {
                steps: 100,
                ..LangevinConfig::igebm()
            },
            samples: 100,
            models: vec!["unconditional".into(), "conditional".into()],
            eval: EvalRecipe::mnist_like(),
        }
    }

    /// The paper's CIFAR-10 recipe, for a GPU machine.
    pub fn full() -> Self {
        Self {
            dataset: DataSet::Cifar10.name().into(),
            model: IgebmConfig::cifar10(),
            train: CdConfig {
                langevin: LangevinConfig::igebm(),
                ..CdConfig::default()
            },
            batch_size: 128,
            iterations: 100_000,
            eval_langevin: LangevinConfig::igebm(),
            samples: 100,
            models: vec!["unconditional".into(), "conditional".into()],
            eval: EvalRecipe::cifar_like(),
        }
    }

    /// The recipe for a mode.
    pub fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self::quick(),
            Mode::Full => Self::full(),
        }
    }
}

/// Runs the experiment with the mode's recipe on the data set found by the resolver.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let mut recipe: Recipe =
        super::apply_overrides(&Recipe::for_mode(options.mode), &options.overrides)?;
    if let Some(n) = options.iterations {
        recipe.iterations = n;
    }
    let set = DataSet::from_name(&recipe.dataset)?;
    let explicit = options.data_dir.as_ref().map(|d| d.join(set.name()));
    let train = ebm_data::load(set, Split::Train, explicit.as_deref())?;
    let test = ebm_data::load(set, Split::Test, explicit.as_deref())?;
    let digits = load_digits(options)?;
    let report = run_recipe(
        &recipe,
        &train,
        &test,
        &digits,
        set.class_names().map(String::from).to_vec(),
        options,
    )?;
    println!("{}", summary_line(&report));
    Ok(())
}

/// The last line printed: the headline numbers.
pub fn summary_line(report: &Report) -> String {
    let m = |k: &str| report.metrics.get(k).copied().unwrap_or(f64::NAN);
    format!(
        "igebm: unconditional E+ {:.4} E- {:.4} loss {:.4}; conditional E+ {:.4} E- {:.4} loss {:.4}; OOD AUROC mnist {:.3} uniform {:.3} constant {:.3} vflip {:.3}; domain FID samples {:.2} noise {:.2} real {:.2}; {:.0} s",
        m("unconditional_energy_pos"),
        m("unconditional_energy_neg"),
        m("unconditional_loss"),
        m("conditional_energy_pos"),
        m("conditional_energy_neg"),
        m("conditional_loss"),
        m("ood_auroc_mnist"),
        m("ood_auroc_uniform"),
        m("ood_auroc_constant"),
        m("ood_auroc_vflip"),
        m("fid_domain_samples"),
        m("fid_domain_noise"),
        m("fid_domain_real"),
        m("wall_seconds"),
    )
}

/// Mean of the last `n` values of a field of the log.
fn tail_mean(history: &[StepLog], n: usize, field: impl Fn(&StepLog) -> f64) -> f64 {
    let tail = &history[history.len().saturating_sub(n)..];
    tail.iter().map(field).sum::<f64>() / tail.len() as f64
}

/// Trains both models on `train`, samples them, and writes the report into `options.out`.
pub fn run_recipe(
    recipe: &Recipe,
    train: &ImageSet,
    test: &ImageSet,
    digits: &ImageSet,
    class_names: Vec<String>,
    options: &Options,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let out = &options.out;
    std::fs::create_dir_all(out.join("checkpoints"))
        .with_context(|| format!("creating {}", out.display()))?;
    let shape = train.shape();
    if shape.to_vec() != recipe.model.sample_shape() {
        anyhow::bail!(
            "the data set's images are {:?}, the model takes {:?}",
            shape,
            recipe.model.sample_shape()
        );
    }
    let device = &options.device;
    let classes = train.classes();
    let rows = recipe.samples / classes.max(1);
    for m in &recipe.models {
        if m != "unconditional" && m != "conditional" {
            anyhow::bail!(
                "unknown model `{m}` in the recipe: use unconditional and/or conditional"
            );
        }
    }
    let ev = &recipe.eval;
    if ev.fid_reference + ev.fid_samples > test.len() || ev.fid_samples < 2 {
        anyhow::bail!(
            "the domain FID needs fid_reference + fid_samples = {} test images (fid_samples >= 2), the test set has {}",
            ev.fid_reference + ev.fid_samples,
            test.len()
        );
    }
    // The domain classifier (cached), and the FID reference and held-out real baseline.
    let classifier = load_or_train(
        &ev.classifier,
        &recipe.dataset,
        train,
        test,
        &options.classifier_dir,
        device,
        options.quiet,
    )?;
    let reference = test.tensor(&(0..ev.fid_reference).collect::<Vec<_>>(), device)?;
    let fid = DomainFid::new(&classifier.model, &reference)?;
    let held_out: Vec<usize> = (ev.fid_reference..ev.fid_reference + ev.fid_samples).collect();
    let fid_real = fid.distance(&test.tensor(&held_out, device)?)?;
    let eval_data = EvalData {
        recipe: ev,
        test,
        digits,
        fid: &fid,
        device,
    };

    let total =
        recipe.models.len() as u64 * (recipe.iterations + recipe.eval_langevin.steps) as u64;
    let bar = crate::progress::bar(total, options.quiet);
    let mut report = Report::default();
    report.setting("recipe", recipe);
    report.setting("mode", options.mode);
    report.setting("seed", options.seed);
    report.setting("device", format!("{device:?}"));
    report.setting("threads", rayon_threads());

    let mut md_rows = Vec::new();
    let mut evals: Vec<(&str, igebm_eval::ModelEval)> = Vec::new();
    for (name, conditional) in [("unconditional", false), ("conditional", true)] {
        if !recipe.models.iter().any(|m| m == name) {
            continue;
        }
        let mut rng: Rng = seeded_rng(options.seed + conditional as u64);
        let mut cfg = recipe.model.clone();
        cfg.num_classes = conditional.then_some(classes);
        let model = Igebm::new(&cfg, device, &mut rng)?;
        let mut trainer = CdTrainer::new(model, recipe.train.clone())?;
        let mut batches = ShuffledBatches::new(train.len(), recipe.batch_size)?;
        let checkpoints = Checkpoints::new(
            options,
            out.join("checkpoints").join(name),
            format!("igebm {name}"),
            &(recipe, options.seed),
        )?;
        let mut done = 0;
        if let Some(snapshot) = checkpoints.resume(options, device)? {
            trainer
                .load_state(&snapshot)
                .with_context(|| format!("igebm {name}: cannot resume"))?;
            resume::restore_loop(&snapshot, &mut rng, &mut batches)?;
            done = snapshot.step.min(recipe.iterations);
            bar.inc(done as u64);
        }
        let train_start = Instant::now();
        for step in done + 1..=recipe.iterations {
            let idx = batches.next_batch(&mut rng).to_vec();
            let x = train.dequantized(&idx, &mut rng, device)?;
            let y = if conditional {
                Some(train.labels_tensor(&idx, device)?)
            } else {
                None
            };
            let log = trainer.step(&x, y.as_ref(), &mut rng)?;
            bar.set_message(format!(
                "{name} step {} loss {:.3} E+ {:.3} E- {:.3}",
                log.step, log.loss, log.energy_pos, log.energy_neg
            ));
            bar.inc(1);
            checkpoints.after_step(step, recipe.iterations, |snapshot| {
                trainer.save_state(snapshot)?;
                resume::put_loop(snapshot, &rng, &batches)
            })?;
        }
        let train_seconds = train_start.elapsed().as_secs_f64();
        let history = trainer.history().to_vec();
        checkpoint::save(
            trainer.model(),
            &out.join(format!("checkpoints/{name}.safetensors")),
        )?;
        plot_curves(&history, name, out)?;

        // Pictures: short-run chains from uniform noise, and the replay buffer.
        let frozen = trainer.model().frozen()?;
        let sampler = Langevin::new(recipe.eval_langevin.clone())?;
        let n = rows * classes;
        let labels: Option<Tensor> = if conditional {
            let l: Vec<u32> = (0..n).map(|i| (i / rows) as u32).collect();
            Some(Tensor::from_vec(l, n, device)?)
        } else {
            None
        };
        let mut x0_shape = vec![n];
        x0_shape.extend(shape);
        let x0 = noise::uniform(
            &mut rng,
            x0_shape,
            0.0,
            1.0,
            candle_core::DType::F32,
            device,
        )?;
        let run = sampler.run(&Conditioned::new(&frozen, labels.as_ref()), &x0, &mut rng)?;
        bar.inc(recipe.eval_langevin.steps as u64);
        let grid = GridOptions {
            columns: rows.max(1),
            scale: 2,
            padding: 2,
        };
        save_grid(
            &run.samples,
            &out.join(format!("{name}_samples_noise.png")),
            grid,
        )?;
        save_npy(&run.samples, &out.join(format!("{name}_samples_noise.npy")))?;
        if let Some(l) = &labels {
            std::fs::write(
                out.join(format!("{name}_samples_noise_labels.json")),
                serde_json::to_string(&l.to_vec1::<u32>()?)?,
            )?;
        }
        let buffer = trainer
            .buffer()
            .context("the recipe trains with a replay buffer")?;
        let (buffered, buffered_labels) = if conditional {
            let per_class = (0..classes as u32)
                .map(|c| Ok(buffer.recent_of_label(c, rows, device)?.map(|x| (c, x))))
                .collect::<ebm_mcmc::Result<Vec<_>>>()?;
            let mut parts = Vec::new();
            let mut asked = Vec::new();
            for (c, x) in per_class.into_iter().flatten() {
                asked.extend(std::iter::repeat_n(c, x.dim(0)?));
                parts.push(x);
            }
            let n_asked = asked.len();
            (
                Tensor::cat(&parts, 0)?,
                Some(Tensor::from_vec(asked, n_asked, device)?),
            )
        } else {
            (buffer.recent(n, device)?.0, None)
        };
        // How often the domain classifier (test accuracy in `classifier_test_accuracy`) sees
        // the class a conditional sample was asked for: 0.1 is chance, an independent check
        // that the pictures show the right kind of clothing.
        if let (Some(asked_noise), Some(asked_buffer)) = (&labels, &buffered_labels) {
            report.metric(
                format!("{name}_class_accuracy_noise"),
                classifier.model.accuracy(&run.samples, asked_noise, 100)?,
            );
            report.metric(
                format!("{name}_class_accuracy_buffer"),
                classifier.model.accuracy(&buffered, asked_buffer, 100)?,
            );
        }
        save_grid(
            &buffered,
            &out.join(format!("{name}_samples_buffer.png")),
            grid,
        )?;
        save_npy(&buffered, &out.join(format!("{name}_samples_buffer.npy")))?;

        // Energies of held-out data against uniform noise: the model should prefer data.
        let probe: Vec<usize> = (0..test.len().min(500)).collect();
        let x_test = test.tensor(&probe, device)?;
        let y_test = if conditional {
            Some(test.labels_tensor(&probe, device)?)
        } else {
            None
        };
        let mut noise_shape = vec![probe.len()];
        noise_shape.extend(shape);
        let x_noise = noise::uniform(
            &mut rng,
            noise_shape,
            0.0,
            1.0,
            candle_core::DType::F32,
            device,
        )?;
        let mean_energy = |x: &Tensor, y: Option<&Tensor>| -> anyhow::Result<f64> {
            Ok(frozen.forward(x, y)?.mean_all()?.to_scalar::<f32>()? as f64)
        };
        let e_test = mean_energy(&x_test, y_test.as_ref())?;
        let e_noise = mean_energy(&x_noise, y_test.as_ref())?;

        bar.set_message(format!("{name}: evaluation tables"));
        let evaluation = igebm_eval::evaluate(
            name,
            &frozen,
            &eval_data,
            &recipe.eval_langevin,
            out,
            &mut rng,
        )?;
        for (key, auroc) in &evaluation.ood_auroc {
            report.metric(format!("{name}_ood_auroc_{key}"), *auroc);
        }
        report.metric(
            format!("{name}_inpaint_mse_corrupted"),
            evaluation.inpaint_mse.0,
        );
        report.metric(
            format!("{name}_inpaint_mse_restored"),
            evaluation.inpaint_mse.1,
        );
        report.metric(
            format!("{name}_denoise_mse_corrupted"),
            evaluation.denoise_mse.0,
        );
        report.metric(
            format!("{name}_denoise_mse_restored"),
            evaluation.denoise_mse.1,
        );
        report.metric(format!("{name}_fid_domain_samples"), evaluation.fid_samples);
        report.metric(format!("{name}_fid_domain_noise"), evaluation.fid_noise);
        evals.push((name, evaluation));

        let tail = (recipe.iterations / 10).max(1);
        let loss = tail_mean(&history, tail, |l| l.loss);
        let e_pos = tail_mean(&history, tail, |l| l.energy_pos);
        let e_neg = tail_mean(&history, tail, |l| l.energy_neg);
        let sps = tail_mean(&history, history.len(), |l| l.seconds_per_sampler_step);
        report.metric(format!("{name}_loss"), loss);
        report.metric(format!("{name}_energy_pos"), e_pos);
        report.metric(format!("{name}_energy_neg"), e_neg);
        report.metric(format!("{name}_energy_test"), e_test);
        report.metric(format!("{name}_energy_uniform_noise"), e_noise);
        report.metric(format!("{name}_train_seconds"), train_seconds);
        report.metric(format!("{name}_seconds_per_sampler_step"), sps);
        report.metric(
            format!("{name}_parameters"),
            trainer.model().params().num_scalars() as f64,
        );
        md_rows.push(vec![
            name.to_string(),
            format!("{loss:.4}"),
            format!("{e_pos:.4}"),
            format!("{e_neg:.4}"),
            format!("{e_test:.4}"),
            format!("{e_noise:.4}"),
            format!("{train_seconds:.0}"),
            format!("{:.1}", 1e3 * sps),
        ]);
    }
    bar.finish_and_clear();
    // The headline keys come from the unconditional model when it was trained.
    let (_, headline) = evals.first().context("the recipe trains no model")?;
    for (key, auroc) in &headline.ood_auroc {
        report.metric(format!("ood_auroc_{key}"), *auroc);
    }
    report.metric("inpaint_mse_corrupted", headline.inpaint_mse.0);
    report.metric("inpaint_mse_restored", headline.inpaint_mse.1);
    report.metric("denoise_mse_corrupted", headline.denoise_mse.0);
    report.metric("denoise_mse_restored", headline.denoise_mse.1);
    report.metric("fid_domain_samples", headline.fid_samples);
    report.metric("fid_domain_noise", headline.fid_noise);
    report.metric("fid_domain_real", fid_real);
    report.metric("classifier_test_accuracy", classifier.record.test_accuracy);
    let wall = start.elapsed().as_secs_f64();
    report.metric("wall_seconds", wall);

    report.section(format!(
        "IGEBM (Du & Mordatch 2019) on {}, {} mode, seed {}, {} thread(s), {wall:.0} s in all.",
        recipe.dataset,
        serde_json::to_value(options.mode)?.as_str().unwrap_or("?"),
        options.seed,
        rayon_threads()
    ));
    report.section(format!(
        "## Training\n\nMeans over the last 10% of steps (E+ on data, E- on samples), and mean energies of 500 test images and of uniform noise under the final model.\n\n{}",
        table(
            &["model", "loss", "E+", "E-", "E(test)", "E(noise)", "train s", "ms / sampler step"],
            &md_rows
        )
    ));
    let class_accuracy = match (
        report.metrics.get("conditional_class_accuracy_noise"),
        report.metrics.get("conditional_class_accuracy_buffer"),
    ) {
        (Some(noise), Some(buffer)) => format!(
            "\n\nThe domain classifier (test accuracy {:.3}) puts a conditional sample in the class it was asked for {noise:.3} of the time from noise and {buffer:.3} from the replay buffer (chance 0.1).",
            classifier.record.test_accuracy
        ),
        _ => String::new(),
    };
    report.section(format!(
        "## Samples\n\nFrom uniform noise by {} Langevin steps (step {}, noise {}, clip {:?}); the conditional grids have one row per class ({}).\n\n\
         | | from noise | from the replay buffer |\n| --- | --- | --- |\n\
         | unconditional | ![](unconditional_samples_noise.png) | ![](unconditional_samples_buffer.png) |\n\
         | conditional | ![](conditional_samples_noise.png) | ![](conditional_samples_buffer.png) |{class_accuracy}\n\n\
         Training curves: `*_energies.png`, `*_loss.png`. Samples as `.npy` (N x C x H x W in [0, 1]); checkpoints in `checkpoints/`.",
        recipe.eval_langevin.steps,
        recipe.eval_langevin.step_size,
        recipe.eval_langevin.noise_scale,
        recipe.eval_langevin.grad_clip,
        class_names.join(", ")
    ));
    let ood_rows: Vec<Vec<String>> = OOD_SETS
        .iter()
        .enumerate()
        .map(|(i, (_, title))| {
            let mut row = vec![format!("{} vs {title}", recipe.dataset)];
            row.extend(
                evals
                    .iter()
                    .map(|(_, e)| format!("{:.3}", e.ood_auroc[i].1)),
            );
            row
        })
        .collect();
    let mut ood_header = vec!["in vs out"];
    ood_header.extend(evals.iter().map(|(n, _)| *n));
    report.section(format!(
        "## Out-of-distribution detection\n\nAUROC of the score -E (the conditional model: -min over classes of E(x, y)), {} test images against {} of each other set; 0.5 is chance.\n\n{}\n\
         The paper's CIFAR-10 values (Du & Mordatch 2019, table 3), for comparison of the pattern only (another data set and a far larger model): {}. \
         MNIST digits play the part of SVHN (another data set); constant images and uniform noise are the same tests.",
        ev.ood_images.min(test.len()),
        ev.ood_images,
        table(&ood_header, &ood_rows),
        PAPER_OOD
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let restore_rows: Vec<Vec<String>> = evals
        .iter()
        .map(|(n, e)| {
            vec![
                n.to_string(),
                format!("{:.4}", e.inpaint_mse.0),
                format!("{:.4}", e.inpaint_mse.1),
                format!("{:.4}", e.denoise_mse.0),
                format!("{:.4}", e.denoise_mse.1),
            ]
        })
        .collect();
    report.section(format!(
        "## Inpainting and denoising\n\n{} test images. Inpainting: the lower half replaced by uniform noise and restored by {} Langevin steps over the masked pixels only (MSE over the masked half). Denoising: {:.0}% of the pixels set to 0 or 1 (salt and pepper), restored by the same sampler over all pixels (MSE over all pixels). The conditional model is given the true labels.\n\n{}\n\
         Rows: original, corrupted, restored. Inpainting: {}; denoising: {}.",
        ev.restore_images.min(test.len()),
        ev.restore_langevin.steps,
        100.0 * ev.salt_pepper,
        table(
            &["model", "inpaint MSE corrupted", "inpaint MSE restored", "denoise MSE corrupted", "denoise MSE restored"],
            &restore_rows
        ),
        evals.iter().map(|(n, _)| format!("![]({n}_inpaint.png)")).collect::<Vec<_>>().join(" "),
        evals.iter().map(|(n, _)| format!("![]({n}_denoise.png)")).collect::<Vec<_>>().join(" "),
    ));
    let mut fid_rows: Vec<Vec<String>> = evals
        .iter()
        .map(|(n, e)| {
            vec![
                format!(
                    "{n} samples ({} Langevin steps from noise)",
                    recipe.eval_langevin.steps
                ),
                format!("{:.2}", e.fid_samples),
            ]
        })
        .collect();
    fid_rows.push(vec![
        "uniform noise (where the chains start)".into(),
        format!("{:.2}", headline.fid_noise),
    ]);
    fid_rows.push(vec![
        "held-out real test images".into(),
        format!("{fid_real:.2}"),
    ]);
    report.section(format!(
        "## Domain FID\n\nFrechet distance between {} images and {} test images in the {}-d feature space of a classifier trained on {} itself ({} test accuracy {:.4}; `{}`). **This is a domain FID, not the Inception FID of the literature**: compare it only with the baselines beside it.\n\n{}",
        ev.fid_samples,
        ev.fid_reference,
        ev.classifier.model.feature_dim,
        recipe.dataset,
        recipe.dataset,
        classifier.record.test_accuracy,
        classifier.path.display(),
        table(&["images", "domain FID"], &fid_rows)
    ));
    report.section(format!(
        "## What differs from the paper\n\nThe paper trains ResNet energies on CIFAR-10 (32x32 colour), 60 Langevin steps per iteration, batch 128, for many GPU-days. \
         This run: {} ({}x{}x{}), a {}-block ResNet of stem width {} ({} downsamplings), {} Langevin steps in training and {} for the pictures, batch {}, {} iterations per model.",
        recipe.dataset,
        shape[0],
        shape[1],
        shape[2],
        recipe.model.blocks.len(),
        recipe.model.stem_channels,
        recipe.model.blocks.iter().filter(|b| b.downsample).count(),
        recipe.train.langevin.steps,
        recipe.eval_langevin.steps,
        recipe.batch_size,
        recipe.iterations
    ));
    report.write(out, "IGEBM reproduction")?;
    Ok(report)
}

fn plot_curves(history: &[StepLog], name: &str, out: &Path) -> anyhow::Result<()> {
    let field = |f: fn(&StepLog) -> f64| history.iter().map(f).collect::<Vec<_>>();
    LinePlot::new(
        format!("IGEBM {name}: mean energies"),
        "training step",
        "energy",
        vec![
            Series::from_values("E+ (data)", &field(|l| l.energy_pos)),
            Series::from_values("E- (samples)", &field(|l| l.energy_neg)),
        ],
    )
    .save(&out.join(format!("{name}_energies.png")))?;
    LinePlot::new(
        format!("IGEBM {name}: loss and gradient norm"),
        "training step",
        "value",
        vec![
            Series::from_values("loss", &field(|l| l.loss)),
            Series::from_values("grad norm", &field(|l| l.grad_norm)),
        ],
    )
    .save(&out.join(format!("{name}_loss.png")))?;
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
