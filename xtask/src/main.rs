//! `cargo xtask`: the project's tasks.
//!
//! ```text
//! cargo xtask download <data set>...        fetch official files, check SHA-256
//! cargo xtask scenes --seed S --count N --out DIR   generated scenes as PNGs + labels.json
//! cargo xtask train-classifier              the domain classifier of a data set (domain FID)
//!                       [--dataset fashion-mnist] [--out results/classifiers] [--iterations N]
//! cargo xtask reproduce [experiment]        run experiments (all when none is named)
//!                       [--quick|--full] [--out DIR] [--seed N] [--device cpu|cuda|metal]
//!                       [--resume] [--checkpoint-every N]
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ebm_data::DataSet;
use xtask::reproduce::{self, Mode, Options};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tasks of the ebm-rs workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Benchmarks: `bench --vs-pytorch` for the comparison table, or one workload.
    Bench {
        /// Every workload on both sides, a table, and the canonical ratio last.
        #[arg(long)]
        vs_pytorch: bool,
        /// The Python with torch for the PyTorch side.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Create target/bench-venv with torch from PyPI first.
        #[arg(long)]
        setup_python: bool,
        #[command(subcommand)]
        which: Option<BenchTask>,
    },
    /// Download data sets from their official addresses into the cache, checking SHA-256.
    Download {
        /// Data sets: fashion-mnist, mnist, cifar-10.
        #[arg(required = true)]
        datasets: Vec<String>,
        /// Download into this folder instead of the cache.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write generated scenes (the compose experiment's data) as PNG files and a labels file.
    Scenes {
        /// Seed of the generator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many scenes.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Objects per scene (1 or 2).
        #[arg(long, default_value_t = 1)]
        objects: usize,
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the domain classifier of a data set (its features give the domain FID) and save it.
    TrainClassifier {
        /// fashion-mnist, mnist or mnist-10k.
        #[arg(long, default_value = "fashion-mnist")]
        dataset: String,
        /// Where classifiers are kept (the experiments look in results/classifiers).
        #[arg(long, default_value = "results/classifiers")]
        out: PathBuf,
        /// Adam steps (default: the recipe's 1000).
        #[arg(long)]
        iterations: Option<usize>,
        /// Seed of the initial weights and the batch order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Read data sets from this folder before the usual places.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Reproduce a paper's experiments and write a report.
    Reproduce {
        /// The experiment (igebm); all of them when omitted.
        experiment: Option<String>,
        /// Small models, minutes on a CPU (the default).
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The paper's recipe, for a GPU machine.
        #[arg(long)]
        full: bool,
        /// The results folder (default results/); each experiment writes into its own subfolder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Read data sets from this folder (holding e.g. fashion-mnist/) before the usual places.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override the recipe's number of training iterations per model.
        #[arg(long)]
        iterations: Option<usize>,
        /// Override a recipe field, e.g. `--set train.adam.lr=0.001` (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        overrides: Vec<String>,
        /// Continue each model from the last complete checkpoint in the results folder.
        #[arg(long)]
        resume: bool,
        /// Write a training checkpoint every N steps (also at the end and on Ctrl-C).
        #[arg(long, default_value_t = 100, value_name = "N")]
        checkpoint_every: usize,
    },
}

#[derive(Subcommand)]
enum BenchTask {
    /// The Langevin workload on the project's network: prints `image-steps/s: N` last.
    Langevin {
        /// Images per batch.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed steps (after 2 untimed).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Network width.
        #[arg(long, default_value_t = 64)]
        width: usize,
        /// Image height and width.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Image channels.
        #[arg(long, default_value_t = 3)]
        channels: usize,
        /// cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// One contrastive-divergence iteration: prints `iterations/s: N` last.
    Train {
        /// Images per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Langevin steps per iteration.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Network width.
        #[arg(long, default_value_t = 32)]
        width: usize,
        /// Image height and width.
        #[arg(long, default_value_t = 28)]
        size: usize,
        /// Image channels.
        #[arg(long, default_value_t = 1)]
        channels: usize,
    },
    /// The latent-prior MLP Langevin step, batch 100: prints `steps/s: N` last.
    Latent {
        /// Timed steps.
        #[arg(long, default_value_t = 200)]
        steps: usize,
    },
}

fn main() -> std::process::ExitCode {
    keep_elementwise_ops_on_the_calling_thread();
    let cli = Cli::parse();
    match on_pool_worker(move || run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `task` on a thread of rayon's global pool (with a generous stack: candle's backward
/// pass recurses through the graph), so that the thread driving the computation is one of the
/// pool's workers: a parallel section then runs on this thread and the others, instead of
/// waking every worker and putting this thread to sleep until they are done. For the short
/// parallel sections of small workloads (a Langevin step of the latent prior lasts about 100 us)
/// those hand-offs cost as much as the work.
fn on_pool_worker<T: Send>(task: impl FnOnce() -> T + Send) -> T {
    // Fails only when the global pool was already built, which is fine.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(256 << 20)
        .build_global();
    rayon::join(task, || ()).0
}

/// Sets `CANDLE_NUM_THREADS=1` unless the caller chose a value. candle 0.11 runs element-wise
/// ops of 64K elements or more on a pool of its own (`CANDLE_NUM_THREADS - 1` workers that spin
/// between ops), shared behind one lock by every thread of the process; matrix products and
/// this project's convolutions use rayon and are not affected. Two training jobs side by side,
/// one per core (the compose experiment), then wait on each other and on the spinning worker:
/// a step of the scene VAE took 71.5 ms in each of two jobs by default against 32-36 ms with
/// the variable set, and 39 ms against 32 ms alone; the Langevin benchmark is the same within
/// its noise (measured on 2 cores). Called first thing, before any thread starts.
fn keep_elementwise_ops_on_the_calling_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message before
/// it already ends with (errors that print their source and also expose it as the cause).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.task {
        Task::Bench {
            vs_pytorch,
            python,
            setup_python,
            which,
        } => {
            use xtask::bench;
            let peak = || bench::peak_rss_mib().map(|m| println!("peak-rss-mib: {m:.0}"));
            match which {
                _ if vs_pytorch => bench::vs_pytorch(python.as_deref(), setup_python)?,
                Some(BenchTask::Langevin {
                    batch,
                    steps,
                    width,
                    size,
                    channels,
                    device,
                }) => {
                    let w = bench::Workload {
                        batch,
                        channels,
                        size,
                        width,
                        steps,
                    };
                    let rate = bench::langevin(w, &xtask::device(&device)?)?;
                    println!(
                        "gflop/s: {:.1}",
                        rate * bench::flops_per_image_step(w) / 1e9
                    );
                    peak();
                    println!("image-steps/s: {rate:.1}");
                }
                Some(BenchTask::Train {
                    batch,
                    steps,
                    width,
                    size,
                    channels,
                }) => {
                    let w = bench::Workload {
                        batch,
                        channels,
                        size,
                        width,
                        steps,
                    };
                    let rate = bench::train(w, &candle_core::Device::Cpu)?;
                    peak();
                    println!("iterations/s: {rate:.3}");
                }
                Some(BenchTask::Latent { steps }) => {
                    let rate = bench::latent(steps, &candle_core::Device::Cpu)?;
                    peak();
                    println!("steps/s: {rate:.1}");
                }
                None => {
                    anyhow::bail!("name a workload (langevin, train, latent) or pass --vs-pytorch")
                }
            }
        }
        Task::Download { datasets, dir } => {
            for name in datasets {
                let set = DataSet::from_name(&name)?;
                let dir = xtask::download::download(set, dir.as_deref())?;
                println!("{}: {}", set.name(), dir.display());
            }
        }
        Task::Scenes {
            seed,
            count,
            size,
            objects,
            out,
        } => {
            let written = xtask::scenes::write(seed, count, size, objects, &out)?;
            println!("{count} scenes: {}", written.display());
        }
        Task::TrainClassifier {
            dataset,
            out,
            iterations,
            seed,
            data_dir,
            device,
        } => {
            use xtask::classifier::{save, train, ClassifierRecipe};
            let set = DataSet::from_name(&dataset)?;
            let explicit = data_dir.as_ref().map(|d| d.join(set.name()));
            let train_set = ebm_data::load(set, ebm_data::Split::Train, explicit.as_deref())?;
            let test_set = ebm_data::load(set, ebm_data::Split::Test, explicit.as_deref())?;
            let mut recipe = ClassifierRecipe::mnist_like();
            recipe.seed = seed;
            if let Some(n) = iterations {
                recipe.iterations = n;
            }
            let device = xtask::device(&device)?;
            let (model, record) =
                train(&recipe, set.name(), &train_set, &test_set, &device, false)?;
            let path = save(&model, &record, &out)?;
            println!("saved: {}", path.display());
            println!("train seconds: {:.1}", record.train_seconds);
            println!("test accuracy: {:.4}", record.test_accuracy);
        }
        Task::Reproduce {
            experiment,
            quick: _,
            full,
            out,
            seed,
            device,
            data_dir,
            iterations,
            overrides,
            resume,
            checkpoint_every,
        } => {
            xtask::interrupt::install()?;
            let mode = if full { Mode::Full } else { Mode::Quick };
            let names: Vec<String> = match experiment {
                Some(e) => vec![e],
                None => reproduce::EXPERIMENTS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            for name in names {
                let options = Options {
                    mode,
                    out: out.join(&name),
                    seed,
                    device: xtask::device(&device)?,
                    data_dir: data_dir.clone(),
                    iterations,
                    overrides: overrides.clone(),
                    classifier_dir: out.join("classifiers"),
                    quiet: false,
                    resume,
                    checkpoint_every,
                };
                reproduce::run(&name, &options)?;
            }
        }
    }
    Ok(())
}
