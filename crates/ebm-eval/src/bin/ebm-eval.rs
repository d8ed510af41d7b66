//! `ebm-eval`: metrics from the command line, in pytorch-fid's habits (the result is the last
//! line printed; `--json` prints the full record instead).
//!
//! ```text
//! ebm-eval auroc --scores scores.csv [--positive-label 1]   # CSV with a header: label,score
//! ebm-eval auprc --scores scores.csv [--positive-label 1]
//! ebm-eval fid A B [--save-stats OUT.npz]                   # A, B: .npz (mu, sigma) or .npy features
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ebm_eval::{average_precision, frechet_distance, roc_auc, FeatureStats};
use nalgebra::{DMatrix, DVector};

#[derive(Parser)]
#[command(name = "ebm-eval", about = "Evaluation metrics with the numbers of scikit-learn and pytorch-fid")]
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
    /// Frechet distance between two sets of statistics or features (pytorch-fid's formula).
    Fid {
        /// `.npz` with `mu` and `sigma` (as pytorch-fid saves them) or `.npy` features [N, D].
        a: PathBuf,
        /// The same for the second set.
        b: PathBuf,
        /// Also write the first input's statistics to this `.npz`.
        #[arg(long)]
        save_stats: Option<PathBuf>,
    },
}

fn read_scores(path: &Path) -> anyhow::Result<(Vec<String>, Vec<f64>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().with_context(|| format!("{}: empty file", path.display()))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| {
        names.iter().position(|n| *n == name).with_context(|| {
            format!("{}: the header `{header}` has no `{name}` column (expected `label,score`)", path.display())
        })
    };
    let (li, si) = (col("label")?, col("score")?);
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            bail!("{}: line {} has {} fields, the header has {}", path.display(), n + 1, fields.len(), names.len());
        }
        let score: f64 = fields[si]
            .parse()
            .with_context(|| format!("{}: line {}: score `{}` is not a number", path.display(), n + 1, fields[si]))?;
        labels.push(fields[li].to_string());
        scores.push(score);
    }
    Ok((labels, scores))
}

fn read_stats(path: &Path) -> anyhow::Result<FeatureStats> {
    if path.is_dir() {
        bail!(
            "{}: folders of images need Inception-v3 features, which this build does not compute yet; pass pytorch-fid statistics (.npz) or a feature matrix (.npy)",
            path.display()
        );
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => {
            let tensors = candle_core::Tensor::read_npz(path).with_context(|| format!("reading {}", path.display()))?;
            let get = |name: &str| {
                tensors
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.to_dtype(candle_core::DType::F64))
                    .with_context(|| format!("{}: no `{name}` array (pytorch-fid saves `mu` and `sigma`)", path.display()))
            };
            let mu = get("mu")??.flatten_all()?.to_vec1::<f64>()?;
            let sigma = get("sigma")??;
            let (r, c) = sigma.dims2().with_context(|| format!("{}: sigma is not a matrix", path.display()))?;
            let values = sigma.flatten_all()?.to_vec1::<f64>()?;
            Ok(FeatureStats::new(DVector::from_vec(mu), DMatrix::from_row_slice(r, c, &values))?)
        }
        Some("npy") => {
            let t = candle_core::Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?;
            let (n, d) = t.dims2().with_context(|| format!("{}: features must be a matrix [N, D], got {:?}", path.display(), t.dims()))?;
            let values = t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok(FeatureStats::from_features(&values, n, d)?)
        }
        _ => bail!("{}: expected a .npz of statistics or a .npy of features", path.display()),
    }
}

fn write_stats(stats: &FeatureStats, path: &Path) -> anyhow::Result<()> {
    let d = stats.mu.len();
    let mu = candle_core::Tensor::from_slice(stats.mu.as_slice(), d, &candle_core::Device::Cpu)?;
    let sigma = stats.sigma.transpose(); // column-major storage of the transpose is row-major
    let sigma = candle_core::Tensor::from_slice(sigma.as_slice(), (d, d), &candle_core::Device::Cpu)?;
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
    let (metric, value, extra) = match &cli.command {
        Command::Auroc { scores, positive_label } | Command::Auprc { scores, positive_label } => {
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
                value,
                serde_json::json!({"rows": refs.len(), "positives": positives, "positive_label": positive}),
            )
        }
        Command::Fid { a, b, save_stats } => {
            let sa = read_stats(a)?;
            let sb = read_stats(b)?;
            if let Some(out) = save_stats {
                write_stats(&sa, out)?;
            }
            let value = frechet_distance(&sa, &sb)?;
            ("fid", value, serde_json::json!({"dims": sa.mu.len(), "a": a, "b": b}))
        }
    };
    if cli.json {
        let mut record = serde_json::json!({"metric": metric, "value": value});
        record.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        println!("{record}");
    } else {
        println!("{metric}: {value}");
    }
    Ok(())
}
