//! The IGEBM evaluation tables: out-of-distribution detection (AUROC of -E), inpainting and
//! salt-and-pepper denoising by Langevin (MSE before and after), and the domain FID of samples
//! with its two baselines (the initial noise, and held-out real images).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, Rng};
use ebm_data::ImageSet;
use ebm_eval::roc_auc;
use ebm_mcmc::{Langevin, LangevinConfig};
use ebm_nn::Igebm;
use ebm_train::Conditioned;
use ebm_viz::{save_grid, GridOptions};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::classifier::{ClassifierRecipe, DomainFid};

/// Sizes and samplers of the evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRecipe {
    /// Images per set in the OOD comparison (test images against each OOD set).
    pub ood_images: usize,
    /// Test images restored by inpainting and by denoising.
    pub restore_images: usize,
    /// The Langevin sampler that restores them (moving masked pixels only, for inpainting).
    pub restore_langevin: LangevinConfig,
    /// The fraction of pixels salt-and-pepper noise sets to 0 or 1.
    pub salt_pepper: f64,
    /// Samples (and baseline images) per domain FID.
    pub fid_samples: usize,
    /// Test images forming the FID reference; the held-out real baseline is the next
    /// `fid_samples` test images.
    pub fid_reference: usize,
    /// The domain classifier whose features the FID uses.
    pub classifier: ClassifierRecipe,
}

impl EvalRecipe {
    /// For 28x28 grey data sets: 1,000 images per OOD set, 100 restorations by 40 IGEBM steps,
    /// 10% salt and pepper, FID of 500 samples against 2,000 test images.
    pub fn mnist_like() -> Self {
        Self {
            ood_images: 1000,
            restore_images: 100,
            restore_langevin: LangevinConfig::igebm().with_steps(40),
            salt_pepper: 0.1,
            fid_samples: 500,
            fid_reference: 2000,
            classifier: ClassifierRecipe::mnist_like(),
        }
    }
}

impl EvalRecipe {
    /// For CIFAR-10: as [`EvalRecipe::mnist_like`] with the paper's 60-step sampler and a
    /// colour classifier.
    pub fn cifar_like() -> Self {
        Self {
            restore_langevin: LangevinConfig::igebm(),
            classifier: ClassifierRecipe::cifar_like(),
            ..Self::mnist_like()
        }
    }
}

/// The paper's CIFAR-10 AUROCs (Du & Mordatch 2019, table 3), for the report.
pub const PAPER_OOD: &[(&str, f64)] = &[
    ("SVHN", 0.63),
    ("Textures", 0.48),
    ("uniform noise", 1.0),
    ("constant", 0.30),
    ("interpolation", 0.70),
];

/// The OOD sets, by report key, with a description.
pub const OOD_SETS: &[(&str, &str)] = &[
    ("mnist", "MNIST digits"),
    ("uniform", "uniform noise"),
    ("constant", "constant images"),
    ("vflip", "test images upside down"),
];

/// Everything the evaluation of one model needs besides the model.
pub struct EvalData<'a> {
    /// The recipe.
    pub recipe: &'a EvalRecipe,
    /// The in-distribution test set.
    pub test: &'a ImageSet,
    /// The OOD digits (MNIST).
    pub digits: &'a ImageSet,
    /// The domain FID against the test reference.
    pub fid: &'a DomainFid<'a>,
    /// The device.
    pub device: &'a Device,
}

/// The numbers of one model.
#[derive(Debug, Clone, Default)]
pub struct ModelEval {
    /// AUROC per OOD set key, in [`OOD_SETS`] order.
    pub ood_auroc: Vec<(String, f64)>,
    /// Inpainting MSE over the masked half before and after Langevin.
    pub inpaint_mse: (f64, f64),
    /// Denoising MSE over all pixels before and after Langevin.
    pub denoise_mse: (f64, f64),
    /// Domain FID of samples from noise, and of the noise they started from.
    pub fid_samples: f64,
    /// Domain FID of the uniform noise the chains start from.
    pub fid_noise: f64,
}

/// Energies of `x` in batches; for a conditional model, the minimum over classes.
fn energies(model: &Igebm, x: &Tensor, device: &Device) -> anyhow::Result<Vec<f64>> {
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for s in (0..n).step_by(250) {
        let xb = x.narrow(0, s, 250.min(n - s))?;
        let e = match model.config().num_classes {
            None => model.forward(&xb, None)?,
            Some(k) => {
                let b = xb.dim(0)?;
                let mut min: Option<Tensor> = None;
                for c in 0..k as u32 {
                    let labels = Tensor::from_vec(vec![c; b], b, device)?;
                    let e = model.forward(&xb, Some(&labels))?;
                    min = Some(match min {
                        None => e,
                        Some(m) => m.minimum(&e)?,
                    });
                }
                min.expect("at least one class")
            }
        };
        out.extend(e.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(out)
}

/// AUROC of `-E` with the in-distribution images as the positive class.
fn ood_auroc(in_energy: &[f64], out_energy: &[f64]) -> anyhow::Result<f64> {
    let labels: Vec<bool> = in_energy
        .iter()
        .map(|_| true)
        .chain(out_energy.iter().map(|_| false))
        .collect();
    let scores: Vec<f64> = in_energy.iter().chain(out_energy).map(|e| -e).collect();
    Ok(roc_auc(&labels, &scores, true)?)
}

/// The OOD images of `key` (see [`OOD_SETS`]), `n` of them like the first `n` test images.
pub fn ood_images(
    key: &str,
    data: &EvalData<'_>,
    n: usize,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let shape = data.test.shape();
    let dims = [n, shape[0], shape[1], shape[2]];
    let device = data.device;
    Ok(match key {
        "mnist" => {
            let m = n.min(data.digits.len());
            let digits = data.digits.tensor(&(0..m).collect::<Vec<_>>(), device)?;
            fit_shape(&digits, shape)?
        }
        "uniform" => noise::uniform(rng, dims.to_vec(), 0.0, 1.0, DType::F32, device)?,
        "constant" => {
            let levels: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
            Tensor::from_vec(levels, (n, 1, 1, 1), device)?
                .broadcast_as(dims.to_vec())?
                .contiguous()?
        }
        "vflip" => {
            let x = data.test.tensor(&(0..n).collect::<Vec<_>>(), device)?;
            let rows: Vec<u32> = (0..shape[1] as u32).rev().collect();
            x.index_select(&Tensor::from_vec(rows, shape[1], device)?, 2)?
        }
        other => anyhow::bail!("unknown OOD set `{other}`"),
    })
}

/// Images brought to `shape`: grey repeated to colour, and smaller images centred on a black
/// background (MNIST's 28x28 digits against a 32x32 colour data set).
pub(crate) fn fit_shape(x: &Tensor, shape: [usize; 3]) -> anyhow::Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let mut x = x.clone();
    if c != shape[0] {
        if c != 1 {
            anyhow::bail!(
                "cannot turn {c}-channel OOD images into {}-channel ones",
                shape[0]
            );
        }
        x = x.repeat((1, shape[0], 1, 1))?;
    }
    if (h, w) != (shape[1], shape[2]) {
        if h > shape[1] || w > shape[2] {
            anyhow::bail!(
                "OOD images of {h}x{w} are larger than the model's {}x{}",
                shape[1],
                shape[2]
            );
        }
        let (top, left) = ((shape[1] - h) / 2, (shape[2] - w) / 2);
        x = x
            .pad_with_zeros(2, top, shape[1] - h - top)?
            .pad_with_zeros(3, left, shape[2] - w - left)?;
    }
    Ok(x)
}

fn mse(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> anyhow::Result<f64> {
    let sq = (a - b)?.sqr()?;
    Ok(match mask {
        None => sq.mean_all()?.to_scalar::<f32>()? as f64,
        Some(m) => {
            let m = m.broadcast_as(sq.shape())?;
            let total = (sq * &m)?.sum_all()?.to_scalar::<f32>()? as f64;
            total / m.sum_all()?.to_scalar::<f32>()? as f64
        }
    })
}

/// Saves rows of originals, corrupted and restored images (up to 10 columns).
fn save_restoration(
    original: &Tensor,
    corrupted: &Tensor,
    restored: &Tensor,
    path: &Path,
) -> anyhow::Result<()> {
    let k = original.dim(0)?.min(10);
    let rows = [original, corrupted, restored]
        .iter()
        .map(|t| t.narrow(0, 0, k))
        .collect::<candle_core::Result<Vec<_>>>()?;
    save_grid(
        &Tensor::cat(&rows, 0)?,
        path,
        GridOptions {
            columns: k,
            scale: 2,
            padding: 2,
        },
    )?;
    Ok(())
}

/// Evaluates one frozen model; writes `{name}_inpaint.png` and `{name}_denoise.png` into `out`.
pub fn evaluate(
    name: &str,
    model: &Igebm,
    data: &EvalData<'_>,
    sampler: &LangevinConfig,
    out: &Path,
    rng: &mut Rng,
) -> anyhow::Result<ModelEval> {
    let r = data.recipe;
    let device = data.device;
    let shape = data.test.shape();
    let conditional = model.config().num_classes.is_some();
    let mut result = ModelEval::default();

    // Out-of-distribution detection.
    let n_ood = r.ood_images.min(data.test.len());
    let test_x = data.test.tensor(&(0..n_ood).collect::<Vec<_>>(), device)?;
    let e_in = energies(model, &test_x, device)?;
    for (key, _) in OOD_SETS {
        let x = ood_images(key, data, n_ood, rng)?;
        let e_out = energies(model, &x, device)?;
        result
            .ood_auroc
            .push((key.to_string(), ood_auroc(&e_in, &e_out)?));
    }

    // Restoration: the lower half masked and refilled with noise, and salt and pepper.
    let n = r.restore_images.min(data.test.len());
    let idx: Vec<usize> = (0..n).collect();
    let x = data.test.tensor(&idx, device)?;
    let labels = if conditional {
        Some(data.test.labels_tensor(&idx, device)?)
    } else {
        None
    };
    let energy = Conditioned::new(model, labels.as_ref());
    let restorer = Langevin::new(r.restore_langevin.clone())?;
    let (h, w) = (shape[1], shape[2]);
    let mask: Vec<f32> = (0..h * w)
        .map(|i| if i / w >= h / 2 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (1, 1, h, w), device)?;
    let filler = noise::uniform(rng, x.dims().to_vec(), 0.0, 1.0, DType::F32, device)?;
    let keep = (1.0 - &mask)?;
    let corrupted = (x.broadcast_mul(&keep)? + filler.broadcast_mul(&mask)?)?;
    let restored = restorer
        .run_masked(&energy, &corrupted, Some(&mask), rng)?
        .samples;
    result.inpaint_mse = (
        mse(&corrupted, &x, Some(&mask))?,
        mse(&restored, &x, Some(&mask))?,
    );
    save_restoration(
        &x,
        &corrupted,
        &restored,
        &out.join(format!("{name}_inpaint.png")),
    )?;

    let p = r.salt_pepper;
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let noisy: Vec<f32> = values
        .iter()
        .map(|&v| {
            if rng.random::<f64>() < p {
                if rng.random::<bool>() {
                    1.0
                } else {
                    0.0
                }
            } else {
                v
            }
        })
        .collect();
    let noisy = Tensor::from_vec(noisy, x.shape(), device)?;
    let denoised = restorer.run(&energy, &noisy, rng)?.samples;
    result.denoise_mse = (mse(&noisy, &x, None)?, mse(&denoised, &x, None)?);
    save_restoration(
        &x,
        &noisy,
        &denoised,
        &out.join(format!("{name}_denoise.png")),
    )?;

    // Domain FID of samples from uniform noise, and of that noise itself.
    let m = r.fid_samples;
    let x0 = noise::uniform(
        rng,
        vec![m, shape[0], shape[1], shape[2]],
        0.0,
        1.0,
        DType::F32,
        device,
    )?;
    let sample_labels = match model.config().num_classes {
        Some(k) => Some(Tensor::from_vec(
            (0..m).map(|i| (i % k) as u32).collect::<Vec<_>>(),
            m,
            device,
        )?),
        None => None,
    };
    let samples = Langevin::new(sampler.clone())?
        .run(&Conditioned::new(model, sample_labels.as_ref()), &x0, rng)?
        .samples;
    result.fid_samples = data.fid.distance(&samples)?;
    result.fid_noise = data.fid.distance(&x0)?;
    Ok(result)
}
