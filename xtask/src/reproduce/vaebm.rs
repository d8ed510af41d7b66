//! VAEBM (Xiao, Kreis, Kautz, Vahdat; ICLR 2021): a VAE trained by its ELBO, then an IGEBM
//! energy on data space trained with the VAE frozen, its negatives sampled by Langevin in the
//! VAE's reparameterised space (`ebm_vaebm`). The report sets the VAE's samples beside the
//! VAEBM's from the same `eps`, measures both by the domain FID, and scores out-of-distribution
//! images by `-E_VAEBM(x) = ELBO(x) - E(x)`.
//!
//! Both training stages (the VAE, then the energy) write training checkpoints into
//! `checkpoints/vae/` and `checkpoints/ebm/`; `--resume` continues each from its newest valid
//! one and ends as the uninterrupted run would have.
//!
//! `--quick` runs on Fashion-MNIST 28x28 on a CPU; `--full` holds a CIFAR-10 recipe for a GPU
//! (and lists a CelebA-64 one, [`Recipe::celeba64`], which `ebm-data` cannot read yet).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use ebm_core::{noise, seeded_rng, Rng};
use ebm_data::{DataSet, ImageSet, ShuffledBatches, Split};
use ebm_eval::roc_auc;
use ebm_nn::{BlockConfig, Igebm, IgebmConfig, Trainable};
use ebm_vaebm::{
    checkpoint as vaebm_checkpoint, BufferConfig, DivergenceGuard, EpsLangevin, Negatives,
    Rollback, StepOutcome, Vae, VaeConfig, VaeStepLog, VaeTrainConfig, VaeTrainer, Vaebm,
    VaebmStepLog, VaebmTrainConfig, VaebmTrainer,
};
use ebm_viz::{save_grid, GridOptions, LinePlot, Series};
use serde::{Deserialize, Serialize};

use super::igebm_eval::fit_shape;
use super::resume::{self, Checkpoints};
use super::{load_digits, save_npy, Mode, Options};
use crate::classifier::{load_or_train, ClassifierRecipe, DomainFid};
use crate::report::{table, Report};

/// The VAEBM paper's CIFAR-10 FIDs (Inception features, 50k samples; Table 1 of Xiao et al.
/// 2021): NVAE alone, and NVAE with the energy.
pub const PAPER_FID_CIFAR10: (f64, f64) = (51.71, 12.19);

/// The relative reduction of the domain FID that counts as "clearly lower" in the report.
pub const CLEAR_FID_REDUCTION: f64 = 0.10;

/// Everything that defines a VAEBM run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The data set's name.
    pub dataset: String,
    /// The VAE (the paper's is NVAE).
    pub vae: VaeConfig,
    /// The VAE's optimiser and KL warm-up.
    pub vae_train: VaeTrainConfig,
    /// VAE training iterations.
    pub vae_iterations: usize,
    /// Images per VAE batch.
    pub vae_batch_size: usize,
    /// The energy network: an unconditional IGEBM ResNet on data space.
    pub ebm: IgebmConfig,
    /// The energy's training: Langevin in eps-space, Adam, the spectral regulariser, the
    /// divergence guard.
    pub ebm_train: VaebmTrainConfig,
    /// Energy training iterations.
    pub ebm_iterations: usize,
    /// Images per energy batch.
    pub ebm_batch_size: usize,
    /// The sampler of the pictures and of the FID samples (the paper: 16 steps at test time).
    pub eval_langevin: EpsLangevin,
    /// Pairs shown in the side-by-side grid (a multiple of 10; at most `fid_samples`).
    pub grid_samples: usize,
    /// Chains run at a time when sampling.
    pub sample_chunk: usize,
    /// Samples per domain FID.
    pub fid_samples: usize,
    /// Test images forming the FID reference (the held-out real baseline is the next
    /// `fid_samples`).
    pub fid_reference: usize,
    /// Test images scored for OOD detection, and as many images of each OOD set.
    pub ood_images: usize,
    /// Posterior draws per ELBO estimate (the estimate of `log p_VAE`).
    pub elbo_samples: usize,
    /// The domain classifier whose features the FID uses.
    pub classifier: ClassifierRecipe,
}

impl Recipe {
    /// Fashion-MNIST on a 2-core CPU in about 6 minutes (measured on 2 cores shared with other
    /// jobs: VAE about 45 ms per iteration, energy about 700 ms per iteration; up to about 10
    /// minutes when the machine is heavily loaded): a single-level VAE (widths 16, 32; 128
    /// hidden; 16 latents; learned per-pixel sigma) for 1,500 iterations of 64; an IGEBM of
    /// width 16 without spectral normalisation, regularised by the paper's `alpha_s = 0.2`, for
    /// 400 iterations of 32 with 10 Langevin steps of 2e-3 in eps-space (16 at test time), an
    /// eps_z buffer, Adam lr 1e-4, and the decoder mean as the negative in the loss. (The
    /// paper's step of 8e-5 would move the chains 25 times less per step by the gradient and 5
    /// times less by the noise, for 16 latents instead of NVAE's thousands; lr 5e-5 lowered the
    /// FID about half as fast in a 500-iteration probe; IGEBM's energy regulariser at 0.1 kept
    /// the energy gap below 1 and left the FID unchanged.)
    pub fn quick() -> Self {
        let mut ebm = IgebmConfig::small(1, 28, 16);
        ebm.spectral_norm = false;
        Self {
            dataset: DataSet::FashionMnist.name().into(),
            vae: VaeConfig::mnist_like(16, 128, 16),
            vae_train: VaeTrainConfig::default(),
            vae_iterations: 1500,
            vae_batch_size: 64,
            ebm,
            ebm_train: VaebmTrainConfig {
                adam: ebm_train::AdamConfig {
                    lr: 1e-4,
                    ..VaebmTrainConfig::default().adam
                },
                langevin: EpsLangevin {
                    step_size: 2e-3,
                    steps: 10,
                },
                negatives: Negatives::Mean,
                buffer: Some(BufferConfig {
                    capacity: 5000,
                    max_probability: 0.6,
                    anneal_iterations: 200,
                }),
                guard: DivergenceGuard {
                    max_abs_energy: 1e4,
                    max_grad_norm: 1e5,
                    ..DivergenceGuard::default()
                },
                ..VaebmTrainConfig::default()
            },
            ebm_iterations: 400,
            ebm_batch_size: 32,
            eval_langevin: EpsLangevin {
                step_size: 2e-3,
                steps: 16,
            },
            grid_samples: 50,
            sample_chunk: 100,
            fid_samples: 500,
            fid_reference: 2000,
            ood_images: 1000,
            elbo_samples: 1,
            classifier: ClassifierRecipe::mnist_like(),
        }
    }

    /// CIFAR-10 for a GPU: a hierarchical VAE (4 groups) standing in for NVAE, the IGEBM
    /// CIFAR-10 ResNet without spectral normalisation, and the paper's energy training: Adam
    /// lr 5e-5, betas (0.99, 0.999), alpha_s 0.2, weight decay 3e-5, 10 Langevin steps of 8e-5
    /// in eps-space (16 at test time), batch 32, 30,000 iterations, `T(eps)` as the negative.
    pub fn full() -> Self {
        let mut ebm = IgebmConfig::cifar10();
        ebm.spectral_norm = false;
        Self {
            dataset: DataSet::Cifar10.name().into(),
            vae: VaeConfig::cifar10(),
            vae_train: VaeTrainConfig {
                kl_warmup: 10_000,
                ..VaeTrainConfig::default()
            },
            vae_iterations: 100_000,
            vae_batch_size: 64,
            ebm,
            ebm_train: VaebmTrainConfig::default(),
            ebm_iterations: 30_000,
            ebm_batch_size: 32,
            eval_langevin: EpsLangevin::cifar10_test(),
            grid_samples: 50,
            sample_chunk: 100,
            fid_samples: 5000,
            fid_reference: 5000,
            ood_images: 1000,
            elbo_samples: 4,
            classifier: ClassifierRecipe::cifar_like(),
        }
    }

    /// CelebA-64 as in the paper (lr 4e-5 and 5e-6 step size per the official defaults), for
    /// reference: listed in `--full` reports, not runnable until `ebm-data` reads CelebA.
    pub fn celeba64() -> Self {
        let block = |channels, downsample| BlockConfig {
            channels,
            downsample,
        };
        let ebm = IgebmConfig {
            in_channels: 3,
            image_size: 64,
            stem_channels: 64,
            blocks: vec![
                block(64, true),
                block(128, true),
                block(128, false),
                block(256, true),
                block(256, true),
            ],
            num_classes: None,
            spectral_norm: false,
            activation: ebm_nn::Activation::Swish,
        };
        let mut recipe = Self::full();
        recipe.dataset = "celeba-64".into();
        recipe.vae = VaeConfig::celeba64();
        recipe.ebm = ebm;
        recipe.ebm_train.adam.lr = 4e-5;
        recipe.ebm_train.langevin = EpsLangevin {
            step_size: 5e-6,
            steps: 10,
        };
        recipe.eval_langevin = EpsLangevin {
            step_size: 5e-6,
            steps: 20,
        };
        recipe
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
        recipe.vae_iterations = n;
        recipe.ebm_iterations = n;
    }
    let set = DataSet::from_name(&recipe.dataset)?;
    let explicit = options.data_dir.as_ref().map(|d| d.join(set.name()));
    let train = ebm_data::load(set, Split::Train, explicit.as_deref())?;
    let test = ebm_data::load(set, Split::Test, explicit.as_deref())?;
    let digits = load_digits(options)?;
    let report = run_recipe(&recipe, &train, &test, &digits, options)?;
    println!("{}", summary_line(&report));
    Ok(())
}

/// The last line printed: the headline numbers.
pub fn summary_line(report: &Report) -> String {
    let m = |k: &str| report.metrics.get(k).copied().unwrap_or(f64::NAN);
    format!(
        "vaebm: domain FID VAE {:.2} VAEBM {:.2} (real {:.2}); OOD AUROC (ELBO - E) mnist {:.3} uniform {:.3}; test ELBO {:.1} nats; {} roll-backs; {:.0} s",
        m("fid_domain_vae"),
        m("fid_domain_vaebm"),
        m("fid_domain_real"),
        m("ood_auroc_mnist_vaebm"),
        m("ood_auroc_uniform_vaebm"),
        m("vae_test_elbo"),
        m("ebm_rollbacks"),
        m("wall_seconds"),
    )
}

fn mean_of(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// AUROC of `score` with the in-distribution images as the positive class.
fn auroc(in_scores: &[f64], out_scores: &[f64]) -> anyhow::Result<f64> {
    let labels: Vec<bool> = in_scores
        .iter()
        .map(|_| true)
        .chain(out_scores.iter().map(|_| false))
        .collect();
    let scores: Vec<f64> = in_scores.iter().chain(out_scores).copied().collect();
    Ok(roc_auc(&labels, &scores, true)?)
}

/// Rows of VAE samples alternating with rows of VAEBM samples from the same `eps`.
fn interleave_rows(vae: &Tensor, vaebm: &Tensor, columns: usize) -> anyhow::Result<Tensor> {
    let n = vae.dim(0)?;
    let mut rows = Vec::new();
    for start in (0..n).step_by(columns) {
        let k = columns.min(n - start);
        rows.push(vae.narrow(0, start, k)?);
        rows.push(vaebm.narrow(0, start, k)?);
    }
    Ok(Tensor::cat(&rows, 0)?)
}

/// Trains the VAE and the energy on `train`, samples and scores them, and writes the report
/// into `options.out`. `digits` are the OOD digits (MNIST).
pub fn run_recipe(
    recipe: &Recipe,
    train: &ImageSet,
    test: &ImageSet,
    digits: &ImageSet,
    options: &Options,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let out = &options.out;
    let device = &options.device;
    std::fs::create_dir_all(out.join("checkpoints"))
        .with_context(|| format!("creating {}", out.display()))?;
    let shape = train.shape();
    if shape.to_vec() != recipe.vae.sample_shape() || test.shape() != shape {
        anyhow::bail!(
            "the data set's images are {:?} (test {:?}), the VAE makes {:?}",
            shape,
            test.shape(),
            recipe.vae.sample_shape()
        );
    }
    if recipe.fid_reference + recipe.fid_samples > test.len() || recipe.fid_samples < 2 {
        anyhow::bail!(
            "the domain FID needs fid_reference + fid_samples = {} test images (fid_samples >= 2), the test set has {}",
            recipe.fid_reference + recipe.fid_samples,
            test.len()
        );
    }
    if recipe.grid_samples == 0
        || !recipe.grid_samples.is_multiple_of(10)
        || recipe.grid_samples > recipe.fid_samples
    {
        anyhow::bail!(
            "grid_samples must be a positive multiple of 10 and at most fid_samples ({}), got {}",
            recipe.fid_samples,
            recipe.grid_samples
        );
    }
    if recipe.sample_chunk == 0 || recipe.ood_images == 0 {
        anyhow::bail!("sample_chunk and ood_images must be at least 1");
    }
    // Every config is checked before any training, so a bad override fails at once.
    recipe.vae.validate()?;
    recipe.ebm.validate()?;
    if recipe.ebm.sample_shape() != recipe.vae.sample_shape() {
        anyhow::bail!(
            "the energy takes images of shape {:?}, the VAE makes {:?}: give both the same image size and channels",
            recipe.ebm.sample_shape(),
            recipe.vae.sample_shape()
        );
    }
    recipe.ebm_train.langevin.validate()?;
    recipe.eval_langevin.validate()?;
    // The OOD digits must fit the images (grey to colour, centred on a larger canvas).
    let [dc, dh, dw] = digits.shape();
    if (dc != shape[0] && dc != 1) || dh > shape[1] || dw > shape[2] || digits.is_empty() {
        anyhow::bail!(
            "the OOD digits ({:?}) cannot be brought to the data set's image shape {:?}",
            digits.shape(),
            shape
        );
    }

    // The domain classifier (cached), the FID reference and the held-out real baseline.
    let classifier = load_or_train(
        &recipe.classifier,
        &recipe.dataset,
        train,
        test,
        &options.classifier_dir,
        device,
        options.quiet,
    )?;
    let reference = test.tensor(&(0..recipe.fid_reference).collect::<Vec<_>>(), device)?;
    let fid = DomainFid::new(&classifier.model, &reference)?;
    let held_out: Vec<usize> =
        (recipe.fid_reference..recipe.fid_reference + recipe.fid_samples).collect();
    let fid_real = fid.distance(&test.tensor(&held_out, device)?)?;

    let sampling_units = (recipe.fid_samples.div_ceil(recipe.sample_chunk)) as u64;
    let total = (recipe.vae_iterations + recipe.ebm_iterations) as u64 + sampling_units;
    let bar = crate::progress::bar(total, options.quiet);
    let mut report = Report::default();
    report.setting("recipe", recipe);
    report.setting("mode", options.mode);
    report.setting("seed", options.seed);
    report.setting("device", format!("{device:?}"));
    report.setting("threads", threads());
    if options.mode == Mode::Full {
        report.setting("listed_recipe_celeba64", Recipe::celeba64());
    }
    let mut rng: Rng = seeded_rng(options.seed);

    // Stage 1: the VAE. Each stage checkpoints into `checkpoints/<vae|ebm>/`; with `--resume`
    // it continues from its newest valid checkpoint (a finished stage is restored, not
    // retrained, and leaves `rng` where the uninterrupted run had it).
    let run_key = (recipe, options.seed);
    let vae = Vae::new(&recipe.vae, device, &mut rng)?;
    let mut vae_trainer = VaeTrainer::new(vae, recipe.vae_train.clone())?;
    let mut batches = ShuffledBatches::new(train.len(), recipe.vae_batch_size)?;
    let checkpoints = Checkpoints::new(
        options,
        out.join("checkpoints").join("vae"),
        "vaebm vae",
        &run_key,
    )?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(options, device)? {
        vae_trainer
            .load_state(&snapshot)
            .context("vaebm vae: cannot resume")?;
        resume::restore_loop(&snapshot, &mut rng, &mut batches)?;
        done = snapshot.step.min(recipe.vae_iterations);
        bar.inc(done as u64);
    }
    let vae_start = Instant::now();
    for step in done + 1..=recipe.vae_iterations {
        let idx = batches.next_batch(&mut rng).to_vec();
        let x = train.dequantized(&idx, &mut rng, device)?;
        let log = vae_trainer.step(&x, &mut rng)?;
        if log.iteration % 10 == 0 {
            bar.set_message(format!(
                "VAE step {} ELBO {:.1} KL {:.1}",
                log.iteration, log.elbo, log.kl
            ));
        }
        bar.inc(1);
        checkpoints.after_step(step, recipe.vae_iterations, |snapshot| {
            vae_trainer.save_state(snapshot)?;
            resume::put_loop(snapshot, &rng, &batches)
        })?;
    }
    let vae_seconds = vae_start.elapsed().as_secs_f64();
    let vae_history = vae_trainer.history().to_vec();
    let vae = vae_trainer.into_vae();
    vaebm_checkpoint::save_vae(&vae, &out.join("checkpoints/vae.safetensors"))?;
    plot_vae(&vae_history, out)?;
    std::fs::write(
        out.join("vae_log.json"),
        serde_json::to_string(&vae_history)?,
    )?;

    // Stage 2: the energy, with the VAE frozen.
    let ebm = Igebm::new(&recipe.ebm, device, &mut rng)?;
    let model = Vaebm::new(vae, ebm)?;
    let mut trainer = VaebmTrainer::new(model, recipe.ebm_train.clone(), &mut rng)?;
    let mut batches = ShuffledBatches::new(train.len(), recipe.ebm_batch_size)?;
    let checkpoints = Checkpoints::new(
        options,
        out.join("checkpoints").join("ebm"),
        "vaebm ebm",
        &run_key,
    )?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(options, device)? {
        trainer
            .load_state(&snapshot)
            .context("vaebm ebm: cannot resume")?;
        resume::restore_loop(&snapshot, &mut rng, &mut batches)?;
        done = snapshot.step.min(recipe.ebm_iterations);
        bar.inc(done as u64);
    }
    let ebm_start = Instant::now();
    for step in done + 1..=recipe.ebm_iterations {
        let idx = batches.next_batch(&mut rng).to_vec();
        let x = train.dequantized(&idx, &mut rng, device)?;
        match trainer.step(&x, &mut rng)? {
            StepOutcome::Trained(log) => bar.set_message(format!(
                "EBM step {} E+ {:.3} E- {:.3} lr {:.1e}",
                log.iteration, log.energy_pos, log.energy_neg, log.lr
            )),
            StepOutcome::RolledBack(r) => bar.println(format!(
                "vaebm: iteration {}: {}; rolled back to iteration {}, learning rate {:.2e} -> {:.2e}",
                r.iteration, r.reason, r.restored_iteration, r.lr_before, r.lr_after
            )),
        }
        bar.inc(1);
        checkpoints.after_step(step, recipe.ebm_iterations, |snapshot| {
            trainer.save_state(snapshot)?;
            resume::put_loop(snapshot, &rng, &batches)
        })?;
    }
    let ebm_seconds = ebm_start.elapsed().as_secs_f64();
    let ebm_history = trainer.history().to_vec();
    let rollbacks = trainer.rollbacks().to_vec();
    let final_lr = trainer.lr();
    let model = trainer.into_model();
    vaebm_checkpoint::save_vaebm(&model, &out.join("checkpoints"))?;
    plot_ebm(&ebm_history, out)?;
    std::fs::write(
        out.join("ebm_log.json"),
        serde_json::to_string(&ebm_history)?,
    )?;
    std::fs::write(
        out.join("rollbacks.json"),
        serde_json::to_string_pretty(&rollbacks)?,
    )?;

    // Samples: the VAE's and the VAEBM's from the same eps.
    let sample_start = Instant::now();
    let mut parts: Vec<ebm_vaebm::SameEps> = Vec::new();
    let mut remaining = recipe.fid_samples;
    while remaining > 0 {
        let n = remaining.min(recipe.sample_chunk);
        let eps = model.initial_eps(n, device, &mut rng)?;
        parts.push(model.sample(&eps, &recipe.eval_langevin, &mut rng)?);
        remaining -= n;
        bar.set_message(format!("sampling: {} left", remaining));
        bar.inc(1);
    }
    let sample_seconds = sample_start.elapsed().as_secs_f64();
    let cat = |f: fn(&ebm_vaebm::SameEps) -> &Tensor| -> anyhow::Result<Tensor> {
        Ok(Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)?)
    };
    let vae_mean = cat(|p| &p.vae_mean)?;
    let vaebm_mean = cat(|p| &p.vaebm_mean)?;
    let vae_noisy = cat(|p| &p.vae_sample)?;
    let vaebm_noisy = cat(|p| &p.vaebm_sample)?;
    let sampler_step = mean_of(parts.iter().map(|p| p.seconds_per_step));
    let trace_start = mean_of(parts.iter().map(|p| p.energy_trace[0]));
    let trace_end = mean_of(
        parts
            .iter()
            .map(|p| p.energy_trace[p.energy_trace.len() - 1]),
    );
    // How far the chains moved in eps-space: all of eps, and the latent part eps_z alone.
    let latent = model.layout().latent;
    let distance = |p: &ebm_vaebm::SameEps, width: Option<usize>| -> f64 {
        let d = match width {
            Some(w) => p
                .eps_end
                .narrow(1, 0, w)
                .and_then(|e| e - p.eps_start.narrow(1, 0, w)?),
            None => &p.eps_end - &p.eps_start,
        };
        d.and_then(|d| {
            d.sqr()?
                .sum(1)?
                .sqrt()?
                .mean_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()
        })
        .unwrap_or(f64::NAN)
    };
    let moved = mean_of(parts.iter().map(|p| distance(p, None)));
    let moved_z = mean_of(parts.iter().map(|p| distance(p, Some(latent))));
    let fid_vae = fid.distance(&vae_mean)?;
    let fid_vaebm = fid.distance(&vaebm_mean)?;
    let fid_vae_noisy = fid.distance(&vae_noisy.clamp(0.0, 1.0)?)?;
    let fid_vaebm_noisy = fid.distance(&vaebm_noisy.clamp(0.0, 1.0)?)?;
    let g = recipe.grid_samples;
    let grid = GridOptions {
        columns: 10,
        scale: 2,
        padding: 2,
    };
    save_grid(
        &interleave_rows(&vae_mean.narrow(0, 0, g)?, &vaebm_mean.narrow(0, 0, g)?, 10)?,
        &out.join("samples_side_by_side.png"),
        grid,
    )?;
    save_grid(
        &interleave_rows(
            &vae_noisy.narrow(0, 0, g)?.clamp(0.0, 1.0)?,
            &vaebm_noisy.narrow(0, 0, g)?.clamp(0.0, 1.0)?,
            10,
        )?,
        &out.join("samples_side_by_side_with_pixel_noise.png"),
        grid,
    )?;
    let first = |t: &Tensor| t.narrow(0, 0, g.max(100).min(recipe.fid_samples));
    save_grid(&first(&vae_mean)?, &out.join("vae_samples.png"), grid)?;
    save_grid(&first(&vaebm_mean)?, &out.join("vaebm_samples.png"), grid)?;
    save_npy(&vae_mean, &out.join("vae_samples.npy"))?;
    save_npy(&vaebm_mean, &out.join("vaebm_samples.npy"))?;
    save_npy(&vae_noisy, &out.join("vae_samples_with_pixel_noise.npy"))?;
    save_npy(
        &vaebm_noisy,
        &out.join("vaebm_samples_with_pixel_noise.npy"),
    )?;

    // Reconstructions of test images: originals above, reconstructions below.
    let originals = test.tensor(&(0..20).collect::<Vec<_>>(), device)?;
    let recon = model.vae().reconstruct(&originals)?;
    save_grid(
        &interleave_rows(&originals, &recon, 10)?,
        &out.join("reconstructions.png"),
        grid,
    )?;
    let recon_fid = {
        let x = test.tensor(&held_out, device)?;
        let mut r = Vec::new();
        for s in (0..x.dim(0)?).step_by(recipe.sample_chunk) {
            let k = recipe.sample_chunk.min(x.dim(0)? - s);
            r.push(model.vae().reconstruct(&x.narrow(0, s, k)?)?);
        }
        fid.distance(&Tensor::cat(&r, 0)?)?
    };

    // Out-of-distribution scores: test images against MNIST digits and uniform noise.
    bar.set_message("OOD scores");
    let n_ood = recipe.ood_images.min(test.len());
    let x_in = test.tensor(&(0..n_ood).collect::<Vec<_>>(), device)?;
    let chunk = recipe.sample_chunk.max(1);
    let s_in = model.scores(&x_in, recipe.elbo_samples, chunk, &mut rng)?;
    let n_digits = n_ood.min(digits.len());
    let x_digits = fit_shape(
        &digits.tensor(&(0..n_digits).collect::<Vec<_>>(), device)?,
        shape,
    )?;
    let s_digits = model.scores(&x_digits, recipe.elbo_samples, chunk, &mut rng)?;
    let mut uniform_shape = vec![n_ood];
    uniform_shape.extend(shape);
    let x_uniform = noise::uniform(&mut rng, uniform_shape, 0.0, 1.0, DType::F32, device)?;
    let s_uniform = model.scores(&x_uniform, recipe.elbo_samples, chunk, &mut rng)?;
    let mut ood_rows = Vec::new();
    for (key, title, scores) in [
        ("mnist", "MNIST digits", &s_digits),
        ("uniform", "uniform noise", &s_uniform),
    ] {
        let vaebm = auroc(&s_in.vaebm(), &scores.vaebm())?;
        let vae_only = auroc(&s_in.elbo, &scores.elbo)?;
        let ebm_only = auroc(&s_in.energy_only(), &scores.energy_only())?;
        report.metric(format!("ood_auroc_{key}_vaebm"), vaebm);
        report.metric(format!("ood_auroc_{key}_vae"), vae_only);
        report.metric(format!("ood_auroc_{key}_ebm"), ebm_only);
        ood_rows.push(vec![
            format!("{} vs {title}", recipe.dataset),
            format!("{vaebm:.3}"),
            format!("{vae_only:.3}"),
            format!("{ebm_only:.3}"),
        ]);
    }
    let test_elbo = mean_of(s_in.elbo.iter().copied());
    let dims = shape.iter().product::<usize>() as f64;
    let test_bpd = -test_elbo / (dims * std::f64::consts::LN_2) + 8.0;
    bar.finish_and_clear();

    // Metrics.
    let wall = start.elapsed().as_secs_f64();
    let vae_tail = &vae_history[vae_history.len().saturating_sub(100)..];
    let ebm_tail_n = (ebm_history.len() / 10).max(1);
    let ebm_tail = &ebm_history[ebm_history.len().saturating_sub(ebm_tail_n)..];
    let vae_step_s = vae_seconds / recipe.vae_iterations.max(1) as f64;
    let ebm_step_s = ebm_seconds / recipe.ebm_iterations.max(1) as f64;
    report.metric("fid_domain_vae", fid_vae);
    report.metric("fid_domain_vaebm", fid_vaebm);
    report.metric("fid_domain_vae_with_pixel_noise", fid_vae_noisy);
    report.metric("fid_domain_vaebm_with_pixel_noise", fid_vaebm_noisy);
    report.metric("fid_domain_reconstructions", recon_fid);
    report.metric("fid_domain_real", fid_real);
    report.metric(
        "fid_domain_relative_reduction",
        (fid_vae - fid_vaebm) / fid_vae,
    );
    report.metric("vae_test_elbo", test_elbo);
    report.metric("vae_test_bits_per_dim", test_bpd);
    report.metric("vae_train_elbo", mean_of(vae_tail.iter().map(|l| l.elbo)));
    report.metric("vae_train_kl", mean_of(vae_tail.iter().map(|l| l.kl)));
    report.metric(
        "ebm_energy_pos",
        mean_of(ebm_tail.iter().map(|l| l.energy_pos)),
    );
    report.metric(
        "ebm_energy_neg",
        mean_of(ebm_tail.iter().map(|l| l.energy_neg)),
    );
    report.metric("ebm_loss", mean_of(ebm_tail.iter().map(|l| l.loss)));
    report.metric(
        "ebm_spectral_sum",
        mean_of(ebm_tail.iter().map(|l| l.spectral_sum)),
    );
    report.metric("ebm_rollbacks", rollbacks.len() as f64);
    report.metric("ebm_final_lr", final_lr);
    report.metric("ebm_successful_iterations", ebm_history.len() as f64);
    report.metric("sample_chain_energy_start", trace_start);
    report.metric("sample_chain_energy_end", trace_end);
    report.metric("sample_eps_distance", moved);
    report.metric("sample_eps_z_distance", moved_z);
    report.metric("vae_seconds", vae_seconds);
    report.metric("vae_seconds_per_iteration", vae_step_s);
    report.metric("ebm_seconds", ebm_seconds);
    report.metric("ebm_seconds_per_iteration", ebm_step_s);
    report.metric(
        "ebm_seconds_per_sampler_step",
        mean_of(ebm_history.iter().map(|l| l.seconds_per_sampler_step)),
    );
    report.metric("sample_seconds", sample_seconds);
    report.metric("sample_seconds_per_sampler_step", sampler_step);
    report.metric("classifier_test_accuracy", classifier.record.test_accuracy);
    report.metric(
        "vae_parameters",
        model.vae_weights().params().num_scalars() as f64,
    );
    report.metric("ebm_parameters", model.ebm().params().num_scalars() as f64);
    report.metric("wall_seconds", wall);

    // The report.
    let mode = serde_json::to_value(options.mode)?
        .as_str()
        .unwrap_or("?")
        .to_string();
    let t = &recipe.ebm_train;
    let reduction = (fid_vae - fid_vaebm) / fid_vae;
    let verdict = if reduction >= CLEAR_FID_REDUCTION {
        "holds in this run"
    } else if reduction > 0.0 {
        "holds only weakly in this run (lower, but by less than the threshold)"
    } else {
        "does not hold in this run"
    };
    report.section(format!(
        "VAEBM (Xiao, Kreis, Kautz & Vahdat, ICLR 2021) on {}, {mode} mode, seed {}, {} thread(s), {wall:.0} s in all \
         (VAE {vae_seconds:.0} s = {:.0} ms per iteration; energy {ebm_seconds:.0} s = {:.0} ms per iteration; sampling {sample_seconds:.0} s).",
        recipe.dataset,
        options.seed,
        threads(),
        1e3 * vae_step_s,
        1e3 * ebm_step_s
    ));
    report.section(format!(
        "## Headline\n\nThe claim tested: **the energy lowers the FID of the VAE's samples clearly** (here: by at least {:.0}% of the domain FID, same eps, same number of samples). \
         Domain FID of the VAE's samples {fid_vae:.2}, of the VAEBM's {fid_vaebm:.2} ({:+.1}%): the claim {verdict}. \
         The paper, on CIFAR-10 with NVAE and Inception features: NVAE {:.2}, VAEBM **{:.2}**.",
        100.0 * CLEAR_FID_REDUCTION,
        -100.0 * reduction,
        PAPER_FID_CIFAR10.0,
        PAPER_FID_CIFAR10.1
    ));
    report.section(format!(
        "## Domain FID\n\nFrechet distance between {} images and {} test images in the {}-d feature space of a classifier trained on {} itself (test accuracy {:.4}; `{}`). \
         **This is a domain FID, not the Inception FID of the literature**: compare it only with the rows beside it. \
         Samples are the decoder means at the chains' eps_z, as the paper scores them; the rows with pixel noise add `sigma_x eps_x` (clamped to [0, 1]).\n\n{}",
        recipe.fid_samples,
        recipe.fid_reference,
        recipe.classifier.model.feature_dim,
        recipe.dataset,
        classifier.record.test_accuracy,
        classifier.path.display(),
        table(
            &["images", "domain FID"],
            &[
                vec!["VAE samples (eps ~ N(0, I))".into(), format!("{fid_vae:.2}")],
                vec![
                    format!("VAEBM samples ({} Langevin steps of {:e} in eps-space from the same eps)", recipe.eval_langevin.steps, recipe.eval_langevin.step_size),
                    format!("{fid_vaebm:.2}"),
                ],
                vec!["VAE samples with pixel noise".into(), format!("{fid_vae_noisy:.2}")],
                vec!["VAEBM samples with pixel noise".into(), format!("{fid_vaebm_noisy:.2}")],
                vec!["VAE reconstructions of held-out test images".into(), format!("{recon_fid:.2}")],
                vec!["held-out real test images".into(), format!("{fid_real:.2}")],
                vec!["paper, CIFAR-10, Inception FID: NVAE / VAEBM".into(), format!("{:.2} / {:.2}", PAPER_FID_CIFAR10.0, PAPER_FID_CIFAR10.1)],
            ]
        )
    ));
    report.section(format!(
        "## Samples from the same eps\n\nOdd rows: the VAE's samples (decoder means at eps ~ N(0, I)); the row below each: the VAEBM's, after {} Langevin steps on `E(T(eps)) + ||eps||^2 / 2` from the same eps. \
         The mean of that energy went from {trace_start:.2} to {trace_end:.2} along the chains. \
         On average (Euclidean distances) eps moved by {moved:.3} over its {} values, mostly the random walk of eps_x (the noise alone gives about {:.2}), and eps_z by {moved_z:.3} over its {latent} (noise alone: about {:.2}).\n\n\
         ![](samples_side_by_side.png)\n\nThe same with pixel noise `sigma_x eps_x`: ![](samples_side_by_side_with_pixel_noise.png)\n\n\
         Grids of the first 100: ![](vae_samples.png) ![](vaebm_samples.png). Reconstructions (test images above, reconstructions below): ![](reconstructions.png)\n\n\
         Samples as `.npy` (N x C x H x W in [0, 1]): `vae_samples.npy`, `vaebm_samples.npy` (means), `*_with_pixel_noise.npy`.",
        recipe.eval_langevin.steps,
        latent + shape.iter().product::<usize>(),
        (recipe.eval_langevin.steps as f64
            * recipe.eval_langevin.step_size
            * (latent + shape.iter().product::<usize>()) as f64)
            .sqrt(),
        (recipe.eval_langevin.steps as f64 * recipe.eval_langevin.step_size * latent as f64)
            .sqrt()
    ));
    report.section(format!(
        "## Out-of-distribution detection\n\nAUROC with {n_ood} test images as positives against {n_digits} MNIST digits and {n_ood} uniform-noise images; 0.5 is chance. \
         The VAEBM score is `-E_VAEBM(x) = log p_VAE(x) - E(x)` with `log p_VAE(x)`, which is intractable, **estimated by the ELBO** ({} posterior draw(s)); the other columns are the ELBO alone and `-E(x)` alone. \
         The ELBO is in nats per image ({:.0} on average on the test images, {test_bpd:.3} bits per dimension on the 8-bit scale) and the energy is of order {:.2}, so the VAEBM column mostly follows the ELBO.\n\n{}",
        recipe.elbo_samples,
        test_elbo,
        mean_of(s_in.energy.iter().map(|e| e.abs())),
        table(&["in vs out", "VAEBM (ELBO - E)", "VAE (ELBO)", "energy (-E)"], &ood_rows)
    ));
    let rollback_text = if rollbacks.is_empty() {
        "No divergence was detected.".to_string()
    } else {
        format!(
            "Roll-backs (also in `rollbacks.json`):\n\n{}",
            table(
                &[
                    "iteration",
                    "what was detected",
                    "restored iteration",
                    "learning rate"
                ],
                &rollbacks
                    .iter()
                    .map(|r: &Rollback| vec![
                        r.iteration.to_string(),
                        r.reason.clone(),
                        r.restored_iteration.to_string(),
                        format!("{:.2e} -> {:.2e}", r.lr_before, r.lr_after),
                    ])
                    .collect::<Vec<_>>()
            )
        )
    };
    report.section(format!(
        "## Training\n\nThe VAE: {} iterations of {} images; over the last 100, ELBO {:.1} nats, KL {:.1} nats (curves: `vae_elbo.png`). \
         The energy: {} iterations of {} images ({} applied, {} rolled back); over the last 10%, E(data) {:.4}, E(negatives) {:.4}, sum of spectral norms {:.2} (curves: `ebm_energies.png`, `ebm_loss.png`). \
         Divergence guard: |E| > {:e}, gradient norm > {:e}, non-finite values; each roll-back restores the last in-memory snapshot (every {} iterations), multiplies the learning rate by {} and restarts Adam. {}\n\n\
         ![](vae_elbo.png) ![](ebm_energies.png) ![](ebm_loss.png)\n\nCheckpoints: `checkpoints/vae.safetensors` and `checkpoints/ebm.safetensors` with their JSON configs; logs: `vae_log.json`, `ebm_log.json`.",
        recipe.vae_iterations,
        recipe.vae_batch_size,
        mean_of(vae_tail.iter().map(|l| l.elbo)),
        mean_of(vae_tail.iter().map(|l| l.kl)),
        recipe.ebm_iterations,
        recipe.ebm_batch_size,
        ebm_history.len(),
        rollbacks.len(),
        mean_of(ebm_tail.iter().map(|l| l.energy_pos)),
        mean_of(ebm_tail.iter().map(|l| l.energy_neg)),
        mean_of(ebm_tail.iter().map(|l| l.spectral_sum)),
        t.guard.max_abs_energy,
        t.guard.max_grad_norm,
        t.guard.snapshot_every,
        t.guard.lr_factor,
        rollback_text
    ));
    let likelihood = match &recipe.vae.likelihood {
        ebm_vaebm::Likelihood::FixedGaussian { sigma } => {
            format!("a Gaussian likelihood with fixed sigma {sigma}")
        }
        ebm_vaebm::Likelihood::LearnedGaussian {
            init_sigma,
            min_sigma,
        } => format!(
            "a Gaussian likelihood with a learned per-pixel sigma (from {init_sigma}, floor {min_sigma})"
        ),
    };
    let hierarchy = match &recipe.vae.hierarchy {
        ebm_vaebm::Hierarchy::Single => "a single-level VAE".to_string(),
        ebm_vaebm::Hierarchy::TopDown { groups } => {
            format!("a top-down hierarchical VAE of {groups} groups")
        }
    };
    report.section(format!(
        "## What differs from the paper\n\n\
         - **The VAE.** The paper uses NVAE (many groups of spatial latents at several resolutions, residual cells, batch norm, a discretised logistic mixture, hundreds of GPU-hours). \
         This run: {hierarchy} with {} latents per group as a vector code, convolution widths {:?}, {} hidden units, {likelihood}, trained {} iterations.\n\
         - **The data.** {} ({}x{}x{}) instead of CIFAR-10 32x32 / CelebA-64; the FID is a domain FID (see above), not Inception's.\n\
         - **The energy.** An IGEBM ResNet of stem width {} ({} blocks), {}; the paper's EBM is a larger ResNet with weight normalisation. \
         The spectral regulariser is the paper's (`alpha_s` = {} times the sum of the largest singular values of every weight, by power iteration), not spectral normalisation; weight decay {}; Adam lr {:e}, betas ({}, {}), IGEBM's element-wise gradient bound {}.\n\
         - **The sampler.** {} Langevin steps of {:e} in eps-space in training and {} at test time (the paper's CIFAR-10: 10 steps of 8e-5, 16 at test time); \
         a persistent eps_z buffer: {}. Negatives in the loss: {} (the paper's default is `T(eps)`; the decoder mean is the official code's `--use_mu_cd`).\n\
         - **The size.** {} energy iterations of batch {} (the paper: about 25,000-30,000 of batch 32 on GPUs); {} FID samples (the paper: 50,000).\n\
         - **OOD.** MNIST digits and uniform noise against Fashion-MNIST test images; the paper tests CIFAR-10 against SVHN, interpolations, CIFAR-100 and CelebA.",
        recipe.vae.latent_dim,
        recipe.vae.widths,
        recipe.vae.hidden,
        recipe.vae_iterations,
        recipe.dataset,
        shape[0],
        shape[1],
        shape[2],
        recipe.ebm.stem_channels,
        recipe.ebm.blocks.len(),
        if recipe.ebm.spectral_norm { "with spectral normalisation" } else { "without spectral normalisation" },
        t.alpha_s,
        t.weight_decay,
        t.adam.lr,
        t.adam.beta1,
        t.adam.beta2,
        if t.adam.bound_by_second_moment { "on" } else { "off" },
        t.langevin.steps,
        t.langevin.step_size,
        recipe.eval_langevin.steps,
        match &t.buffer {
            Some(b) => format!("{} rows, restart probability up to {} over {} iterations", b.capacity, b.max_probability, b.anneal_iterations),
            None => "none".into(),
        },
        match t.negatives {
            Negatives::Sample => "`T(eps)` (decoder mean plus pixel noise)",
            Negatives::Mean => "the decoder mean at the chain's eps_z",
        },
        recipe.ebm_iterations,
        recipe.ebm_batch_size,
        recipe.fid_samples
    ));
    if options.mode == Mode::Full {
        report.section(
            "## Listed recipe: CelebA-64\n\n`Recipe::celeba64()` (in `report.json` under `config.listed_recipe_celeba64`): a 4-level hierarchical VAE for 64x64 colour images and a 64x64 IGEBM, lr 4e-5, 10 Langevin steps of 5e-6 in training and 20 at test time. \
             It is not run: `ebm-data` has no CelebA reader yet.",
        );
    }
    report.write(out, "VAEBM reproduction")?;
    Ok(report)
}

fn plot_vae(history: &[VaeStepLog], out: &Path) -> anyhow::Result<()> {
    let series = |name: &str, f: fn(&VaeStepLog) -> f64| Series {
        name: name.into(),
        points: history.iter().map(|l| (l.iteration as f64, f(l))).collect(),
    };
    LinePlot::new(
        "VAE: ELBO terms per image (nats)",
        "training step",
        "nats",
        vec![
            series("ELBO", |l| l.elbo),
            series("log p(x|z)", |l| l.log_likelihood),
            series("KL", |l| l.kl),
        ],
    )
    .save(&out.join("vae_elbo.png"))?;
    Ok(())
}

fn plot_ebm(history: &[VaebmStepLog], out: &Path) -> anyhow::Result<()> {
    let series = |name: &str, f: fn(&VaebmStepLog) -> f64| Series {
        name: name.into(),
        points: history.iter().map(|l| (l.iteration as f64, f(l))).collect(),
    };
    LinePlot::new(
        "VAEBM energy: mean energies",
        "training iteration",
        "energy",
        vec![
            series("E+ (data)", |l| l.energy_pos),
            series("E- (negatives)", |l| l.energy_neg),
        ],
    )
    .save(&out.join("ebm_energies.png"))?;
    LinePlot::new(
        "VAEBM energy: loss, gradient norm, spectral norms",
        "training iteration",
        "value",
        vec![
            series("E+ - E-", |l| l.loss),
            series("grad norm", |l| l.grad_norm),
            series("sum of sigma(W)", |l| l.spectral_sum),
        ],
    )
    .save(&out.join("ebm_loss.png"))?;
    Ok(())
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
