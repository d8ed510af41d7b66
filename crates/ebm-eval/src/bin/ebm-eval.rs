//! `ebm-eval`: metrics from the command line, in pytorch-fid's habits (the result is the last
//! line printed; `--json` prints the full record instead).
//!
//! ```text
//! ebm-eval auroc --scores scores.csv [--positive-label 1]   # CSV with a header: label,score
//! ebm-eval auprc --scores scores.csv [--positive-label 1]
//! ebm-eval fid A B [--save-stats OUT.npz]                   # A, B: .npz (mu, sigma) or .npy features
//! ebm-eval fid A B --weights pt_inception-2015-12-05-6726825d.pth   # A or B a folder of images
//! ebm-eval features DIR --weights FILE --out FEATURES.npy    # pool3, one row per image
//! ebm-eval is DIR --weights FILE [--splits 10]               # Inception Score
//! ```
//!
//! Folders of images go through pytorch-fid's FID Inception-v3 ([`ebm_eval::FidInception`]):
//! `--weights` is pytorch-fid's weights file (`pt_inception-2015-12-05-6726825d.pth`) or a
//! safetensors file with its names; `--batch-size` (50, as pytorch-fid) and `--device cpu|cuda|metal`
//! (GPUs need a build with `--features cuda` or `--features metal`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ebm_eval::{
    average_precision, frechet_distance, inception_score, roc_auc, FeatureStats, FidInception,
    ImageFolder,
};
use nalgebra::{DMatrix, DVector};

/// Where pytorch-fid downloads its weights from, for the error that asks for them.
const FID_WEIGHTS_URL: &str =
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";

#[derive(Parser)]
#[command(
    name = "ebm-eval",
    about = "Evaluation metrics with the numbers of scikit-learn and pytorch-fid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the full record as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Area under the ROC curve (scikit-learn's roc_auc_score).
    Auroc {
        /// CSV with a header and columns `label,score`.
        #[arg(long)]
        scores: PathBuf,
        /// The label of the positive class.
        #[arg(long, default_value = "1")]
        positive_label: String,
    },
    /// Average precision (scikit-learn's average_precision_score).
    Auprc {
        /// CSV with a header and columns `label,score`.
        #[arg(long)]
        scores: PathBuf,
        /// The label of the positive class.
        #[arg(long, default_value = "1")]
        positive_label: String,
    },
    /// Frechet distance between two folders of images, sets of statistics or features (pytorch-fid).
    Fid {
        /// A folder of images (needs --weights), a `.npz` with `mu` and `sigma` (as pytorch-fid
        /// saves them) or `.npy` features [N, D].
        a: PathBuf,
        /// The same for the second set.
        b: PathBuf,
        /// Also write the first input's statistics to this `.npz`.
        #[arg(long)]
        save_stats: Option<PathBuf>,
        #[command(flatten)]
        inception: InceptionArgs,
    },
    /// pool3 features (2048 per image) of a folder of images, through pytorch-fid's FID Inception.
    Features {
        /// A folder of images (pytorch-fid's extensions; sorted by file name).
        dir: PathBuf,
        /// The `.npy` to write: f32 [N, 2048], one row per image in sorted file-name order.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        inception: InceptionArgs,
    },
    /// Inception Score of a folder of images (Salimans et al. 2016; the logits of the FID Inception's
    /// fc layer without its bias, as their code and torch-fidelity take them).
    Is {
        /// A folder of images.
        dir: PathBuf,
        /// Number of splits (consecutive parts of the sorted images).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        splits: u64,
        #[command(flatten)]
        inception: InceptionArgs,
    },
}

/// How to run pytorch-fid's FID Inception on folders of images.
#[derive(Args)]
struct InceptionArgs {
    /// FID Inception weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` or a `.safetensors`
    /// file with the same tensor names.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Where the network runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

impl InceptionArgs {
    fn device(&self) -> anyhow::Result<Device> {
        match self.device {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda if cfg!(feature = "cuda") => {
                Device::new_cuda(0).context("--device cuda")
            }
            DeviceKind::Metal if cfg!(feature = "metal") => {
                Device::new_metal(0).context("--device metal")
            }
            DeviceKind::Cuda => {
                bail!("--device cuda: this ebm-eval was built without CUDA; rebuild it with `--features cuda`")
            }
            DeviceKind::Metal => {
                bail!("--device metal: this ebm-eval was built without Metal; rebuild it with `--features metal`")
            }
        }
    }

    /// The network, loaded on first use (`what` says what needs it, for the error without weights).
    fn network<'a>(
        &self,
        slot: &'a mut Option<FidInception>,
        what: &Path,
    ) -> anyhow::Result<&'a FidInception> {
        if let Some(net) = slot {
            return Ok(net);
        }
        let Some(weights) = &self.weights else {
            bail!(
                "{}: a folder of images needs pytorch-fid's FID Inception weights: pass --weights FILE \
                 (pt_inception-2015-12-05-6726825d.pth, from {FID_WEIGHTS_URL}, or a .safetensors file with the same names)",
                what.display()
            );
        };
        let device = self.device()?;
        Ok(slot.insert(FidInception::load(weights, &device)?))
    }

    /// Features and logits of the images of `dir`, with a progress line on a terminal.
    fn run(
        &self,
        slot: &mut Option<FidInception>,
        dir: &Path,
    ) -> anyhow::Result<ebm_eval::InceptionOutputs> {
        let folder = ImageFolder::open(dir)?;
        let net = self.network(slot, dir)?;
        let tty = std::io::stderr().is_terminal();
        let out = net.run_folder(&folder, self.batch_size as usize, |done, total| {
            if tty {
                eprint!("\r{}: {done}/{total} images", dir.display());
                if done == total {
                    eprintln!();
                }
            }
        })?;
        Ok(out)
    }
}

fn read_scores(path: &Path) -> anyhow::Result<(Vec<String>, Vec<f64>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        names.iter().position(|n| *n == name).with_context(|| {
            format!(
                "{}: the header `{header}` has no `{name}` column (expected `label,score`)",
                path.display()
            )
        })
    };
    let (li, si) = (col("label")?, col("score")?);
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            bail!(
                "{}: line {} has {} fields, the header has {}",
                path.display(),
                n + 1,
                fields.len(),
                names.len()
            );
        }
        let score: f64 = fields[si].parse().with_context(|| {
            format!(
                "{}: line {}: score `{}` is not a number",
                path.display(),
                n + 1,
                fields[si]
            )
        })?;
        labels.push(fields[li].to_string());
        scores.push(score);
    }
    Ok((labels, scores))
}

fn stats_of_features(features: &Tensor) -> anyhow::Result<FeatureStats> {
    let (n, d) = features.dims2()?;
    let values = features
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(FeatureStats::from_features(&values, n, d)?)
}

fn read_stats(
    path: &Path,
    inception: &InceptionArgs,
    net: &mut Option<FidInception>,
) -> anyhow::Result<FeatureStats> {
    if path.is_dir() {
        let out = inception.run(net, path)?;
        return stats_of_features(&out.features).with_context(|| format!("{}", path.display()));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => {
            let tensors = candle_core::Tensor::read_npz(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let get = |name: &str| {
                tensors
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.to_dtype(candle_core::DType::F64))
                    .with_context(|| {
                        format!(
                            "{}: no `{name}` array (pytorch-fid saves `mu` and `sigma`)",
                            path.display()
                        )
                    })
            };
            let mu = get("mu")??.flatten_all()?.to_vec1::<f64>()?;
            let sigma = get("sigma")??;
            let (r, c) = sigma
                .dims2()
                .with_context(|| format!("{}: sigma is not a matrix", path.display()))?;
            let values = sigma.flatten_all()?.to_vec1::<f64>()?;
            Ok(FeatureStats::new(
                DVector::from_vec(mu),
                DMatrix::from_row_slice(r, c, &values),
            )?)
        }
        Some("npy") => {
            let t = candle_core::Tensor::read_npy(path)
                .with_context(|| format!("reading {}", path.display()))?;
            t.dims2().with_context(|| {
                format!(
                    "{}: features must be a matrix [N, D], got {:?}",
                    path.display(),
                    t.dims()
                )
            })?;
            stats_of_features(&t)
        }
        _ => bail!(
            "{}: expected a folder of images, a .npz of statistics or a .npy of features",
            path.display()
        ),
    }
}

fn write_stats(stats: &FeatureStats, path: &Path) -> anyhow::Result<()> {
    let d = stats.mu.len();
    let mu = candle_core::Tensor::from_slice(stats.mu.as_slice(), d, &candle_core::Device::Cpu)?;
    let sigma = stats.sigma.transpose(); // column-major storage of the transpose is row-major
    let sigma =
        candle_core::Tensor::from_slice(sigma.as_slice(), (d, d), &candle_core::Device::Cpu)?;
    candle_core::Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], path)?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut net = None;
    // (metric, the value's text on the last line, the JSON record's fields beyond `metric`)
    let (metric, text, record) = match &cli.command {
        Command::Auroc {
            scores,
            positive_label,
        }
        | Command::Auprc {
            scores,
            positive_label,
        } => {
            let (labels, values) = read_scores(scores)?;
            let positive = positive_label.as_str();
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            let is_auroc = matches!(cli.command, Command::Auroc { .. });
            let value = if is_auroc {
                roc_auc(&refs, &values, positive)
            } else {
                average_precision(&refs, &values, positive)
            }
            .with_context(|| format!("{}", scores.display()))?;
            let positives = refs.iter().filter(|l| **l == positive).count();
            (
                if is_auroc { "auroc" } else { "auprc" },
                value.to_string(),
                serde_json::json!({"value": value, "rows": refs.len(), "positives": positives, "positive_label": positive}),
            )
        }
        Command::Fid {
            a,
            b,
            save_stats,
            inception,
        } => {
            let sa = read_stats(a, inception, &mut net)?;
            let sb = read_stats(b, inception, &mut net)?;
            if let Some(out) = save_stats {
                write_stats(&sa, out)?;
            }
            let value = frechet_distance(&sa, &sb)?;
            let mut record =
                serde_json::json!({"value": value, "dims": sa.mu.len(), "a": a, "b": b});
            if net.is_some() {
                record["weights"] = serde_json::json!(inception.weights);
            }
            ("fid", value.to_string(), record)
        }
        Command::Features {
            dir,
            out,
            inception,
        } => {
            let outputs = inception.run(&mut net, dir)?;
            outputs
                .features
                .write_npy(out)
                .with_context(|| format!("writing {}", out.display()))?;
            let (n, d) = outputs.features.dims2()?;
            (
                "features",
                format!("{n} x {d} written to {}", out.display()),
                serde_json::json!({"rows": n, "dims": d, "dir": dir, "out": out, "weights": inception.weights}),
            )
        }
        Command::Is {
            dir,
            splits,
            inception,
        } => {
            let outputs = inception.run(&mut net, dir)?;
            let n = outputs.logits_unbiased.dims()[0];
            let (mean, std) = inception_score(&outputs.logits_unbiased, *splits as usize)
                .with_context(|| format!("{}", dir.display()))?;
            (
                "is",
                format!("{mean} +- {std}"),
                serde_json::json!({"value": mean, "std": std, "splits": splits, "images": n, "logits": "fc without bias", "dir": dir, "weights": inception.weights}),
            )
        }
    };
    if cli.json {
        let mut full = serde_json::json!({"metric": metric});
        full.as_object_mut()
            .expect("object")
            .extend(record.as_object().expect("object").clone());
        println!("{full}");
    } else {
        println!("{metric}: {text}");
    }
    Ok(())
}
