//! `cargo xtask bench`: the canonical workloads (`docs/ARCHITECTURE.md`, "Performance") on the
//! project's own network, sampler and trainer, and side by side with the PyTorch script
//! `xtask/bench/pytorch_workload.py` (`--vs-pytorch`), each side in its own process so that
//! peak memory is its own.

use std::time::Instant;

use candle_core::{DType, Device};
use ebm_core::{noise, seeded_rng};
use ebm_mcmc::{Langevin, LangevinConfig};
use ebm_nn::{Igebm, IgebmConfig};

/// One size of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Images per batch.
    pub batch: usize,
    /// Image channels.
    pub channels: usize,
    /// Image height and width.
    pub size: usize,
    /// Network width.
    pub width: usize,
    /// Timed steps (after 2 untimed ones).
    pub steps: usize,
}

impl Workload {
    /// B 128, 3x32x32, width 64, 20 steps.
    pub const CANONICAL: Workload = Workload {
        batch: 128,
        channels: 3,
        size: 32,
        width: 64,
        steps: 20,
    };
    /// B 64, 1x28x28, width 32, 20 steps.
    pub const SMALL: Workload = Workload {
        batch: 64,
        channels: 1,
        size: 28,
        width: 32,
        steps: 20,
    };
}

/// Floating-point operations of one image-step: every convolution's forward and input gradient.
pub fn flops_per_image_step(w: Workload) -> f64 {
    let cfg = IgebmConfig::small(w.channels, w.size, w.width);
    let mut size = w.size as f64;
    let mut total = 2.0 * 9.0 * (w.channels * w.width) as f64 * size * size;
    for b in &cfg.blocks {
        total += 2.0 * 2.0 * 9.0 * (w.width * w.width) as f64 * size * size;
        if b.downsample {
            size /= 2.0;
        }
    }
    2.0 * total
}

/// The process's peak resident memory in MiB (Linux; `None` elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the workload and returns image-steps per second.
pub fn langevin(w: Workload, device: &Device) -> anyhow::Result<f64> {
    let mut rng = seeded_rng(0);
    let model = Igebm::new(
        &IgebmConfig::small(w.channels, w.size, w.width),
        device,
        &mut rng,
    )?;
    let energy = model.frozen()?;
    let config = LangevinConfig {
        step_size: 10.0,
        noise_scale: 0.005,
        steps: 2,
        grad_clip: None,
        clamp: Some((0.0, 1.0)),
    };
    let x0 = noise::uniform(
        &mut rng,
        (w.batch, w.channels, w.size, w.size),
        0.0,
        1.0,
        DType::F32,
        device,
    )?;
    let warm = Langevin::new(config.clone())?.run(&energy, &x0, &mut rng)?;
    let timed = Langevin::new(config.with_steps(w.steps))?;
    device.synchronize()?;
    let start = Instant::now();
    let run = timed.run(&energy, &warm.samples, &mut rng)?;
    run.samples.sum_all()?.to_scalar::<f32>()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((w.batch * w.steps) as f64 / seconds)
}

/// One contrastive-divergence iteration (20 Langevin steps from a replay-buffer batch, one
/// forward of data and samples, backward, one Adam step) on the workload's network without
/// spectral norm; returns iterations per second over 3 iterations after 1 untimed one.
pub fn train(w: Workload, device: &Device) -> anyhow::Result<f64> {
    use ebm_train::{CdConfig, CdTrainer};
    let mut rng = seeded_rng(0);
    let mut cfg = IgebmConfig::small(w.channels, w.size, w.width);
    cfg.spectral_norm = false;
    let model = Igebm::new(&cfg, device, &mut rng)?;
    let config = CdConfig {
        langevin: LangevinConfig {
            step_size: 10.0,
            noise_scale: 0.005,
            steps: w.steps,
            grad_clip: None,
            clamp: Some((0.0, 1.0)),
        },
        ..CdConfig::default()
    };
    let mut trainer = CdTrainer::new(model, config)?;
    let data = noise::uniform(
        &mut rng,
        (w.batch, w.channels, w.size, w.size),
        0.0,
        1.0,
        DType::F32,
        device,
    )?;
    trainer.step(&data, None, &mut rng)?;
    let iterations = 3;
    let start = Instant::now();
    for _ in 0..iterations {
        trainer.step(&data, None, &mut rng)?;
    }
    Ok(iterations as f64 / start.elapsed().as_secs_f64())
}

/// The latent-prior step of Pang et al. on an MLP energy `100 -> 200 -> 200 -> 1` (leaky ReLU
/// 0.2), batch 100, through the library's sampler [`ebm_latent::prior_langevin`] with the
/// paper's step size 0.4 and prior sigma 1: `z <- z - 0.08 (dE/dz + z) + 0.4 N(0, I)`; returns
/// steps per second over `steps` steps.
pub fn latent(steps: usize, device: &Device) -> anyhow::Result<f64> {
    use ebm_latent::{prior_langevin, LatentLangevin};
    use ebm_nn::{Mlp, MlpConfig};
    let mut rng = seeded_rng(0);
    let mlp = Mlp::new(&MlpConfig::latent_prior(100), device, &mut rng)?.frozen()?;
    let energy: &dyn ebm_core::Energy = &mlp;
    let z0 = noise::normal(&mut rng, (100, 100), DType::F32, device)?;
    let warm = prior_langevin(
        Some(energy),
        &z0,
        1.0,
        &LatentLangevin::prior().with_steps(2),
        &mut rng,
    )?;
    let timed = LatentLangevin::prior().with_steps(steps);
    let start = Instant::now();
    let z = prior_langevin(Some(energy), &warm, 1.0, &timed, &mut rng)?;
    z.sum_all()?.to_scalar::<f32>()?;
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// One measured side of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// The figure (image-steps/s, iterations/s or steps/s).
    pub rate: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_mib: Option<f64>,
}

fn parse(output: &std::process::Output, what: &str) -> anyhow::Result<Measured> {
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "{what} failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let value = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    };
    let rate = ["image-steps/s:", "iterations/s:", "steps/s:"]
        .iter()
        .find_map(|k| value(k))
        .ok_or_else(|| anyhow::anyhow!("{what} printed no rate:\n{text}"))?;
    Ok(Measured {
        rate,
        peak_mib: value("peak-rss-mib:"),
    })
}

/// The Python that runs the PyTorch side: `--python`, else `$EBM_PYTHON`, else the venv made by
/// `--setup-python`, else `python3`, whichever imports torch.
pub fn find_python(explicit: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let venv = bench_venv().join("bin/python");
    let candidates: Vec<std::path::PathBuf> = explicit
        .map(|p| p.to_path_buf())
        .into_iter()
        .chain(std::env::var_os("EBM_PYTHON").map(Into::into))
        .chain(std::iter::once(venv))
        .chain(std::iter::once("python3".into()))
        .collect();
    candidates.into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import torch"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn bench_venv() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-venv")
}

/// Creates `target/bench-venv` with PyTorch (CPU wheels) from PyPI.
pub fn setup_python() -> anyhow::Result<std::path::PathBuf> {
    let venv = bench_venv();
    let status = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let pip = venv.join("bin/pip");
    let status = std::process::Command::new(&pip)
        .args(["install", "--quiet", "torch", "numpy"])
        .status()?;
    anyhow::ensure!(
        status.success(),
        "{} install torch failed (needs PyPI)",
        pip.display()
    );
    Ok(venv.join("bin/python"))
}

/// `cargo xtask bench --vs-pytorch`: both sides of every workload, one after the other, each in
/// its own process; prints a table and, last, the canonical ratio.
pub fn vs_pytorch(python: Option<&std::path::Path>, setup: bool) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let python = if setup {
        Some(setup_python()?)
    } else {
        find_python(python)
    };
    if python.is_none() {
        println!(
            "PyTorch is absent (no Python that can `import torch`): only this project's side is measured. \
             Run `cargo xtask bench --vs-pytorch --setup-python` to create target/bench-venv with torch from PyPI, \
             or pass --python PATH."
        );
    }
    let exe = std::env::current_exe()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pytorch_workload.py");
    let ours = |args: &[&str]| -> anyhow::Result<Measured> {
        let out = std::process::Command::new(&exe)
            .arg("bench")
            .args(args)
            .output()?;
        parse(&out, &format!("xtask bench {}", args.join(" ")))
    };
    let torch = |args: &[&str]| -> anyhow::Result<Option<Measured>> {
        let Some(py) = &python else { return Ok(None) };
        let out = std::process::Command::new(py)
            .arg(&script)
            .args(args)
            .args(["--threads", &threads.to_string()])
            .output()?;
        parse(&out, &format!("pytorch_workload.py {}", args.join(" "))).map(Some)
    };
    let sized = |w: Workload| {
        vec![
            "--batch".to_string(),
            w.batch.to_string(),
            "--channels".into(),
            w.channels.to_string(),
            "--size".into(),
            w.size.to_string(),
            "--width".into(),
            w.width.to_string(),
            "--steps".into(),
            w.steps.to_string(),
        ]
    };
    let strs = |v: &[String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut rows = Vec::new();
    let mut canonical_ratio = None;
    for (name, what, w) in [
        (
            "Langevin, canonical (B 128, 3x32x32, width 64)",
            "langevin",
            Workload::CANONICAL,
        ),
        (
            "Langevin, small (B 64, 1x28x28, width 32)",
            "langevin",
            Workload::SMALL,
        ),
        (
            "CD iteration, small (20 steps + update)",
            "train",
            Workload::SMALL,
        ),
    ] {
        let args = strs(&sized(w));
        let mut a: Vec<&str> = vec![what];
        a.extend(args.iter().map(|s| s.as_str()));
        let o = ours(&a)?;
        let t = torch(&a)?;
        let gflops = (what == "langevin").then(|| o.rate * flops_per_image_step(w) / 1e9);
        if w.batch == Workload::CANONICAL.batch && what == "langevin" {
            canonical_ratio = t.map(|t| o.rate / t.rate);
        }
        rows.push((name, o, t, gflops));
    }
    // 2,000 steps (a third of a second on our side): 200 left the figure to scheduling noise.
    let o = ours(&["latent", "--steps", "2000"])?;
    let t = torch(&["latent", "--steps", "2000"])?;
    rows.push(("latent-prior MLP step (B 100)", o, t, None));

    println!("threads: {threads}");
    println!("| workload | this project | PyTorch | ratio | GFLOP/s (of ~300) | peak MiB (ours / PyTorch) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mib = |m: Option<f64>| m.map_or("?".into(), |v| format!("{v:.0}"));
    let rate = |r: f64| {
        if r < 10.0 {
            format!("{r:.3}")
        } else {
            format!("{r:.1}")
        }
    };
    for (name, o, t, gflops) in &rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} / {} |",
            rate(o.rate),
            t.map_or("-".into(), |t| rate(t.rate)),
            t.map_or("-".into(), |t| format!("{:.2}", o.rate / t.rate)),
            gflops.map_or("-".into(), |g| format!("{g:.0} ({:.0}%)", g / 3.0)),
            mib(o.peak_mib),
            t.map_or("-".into(), |t| mib(t.peak_mib)),
        );
    }
    match canonical_ratio {
        Some(r) => println!("canonical ratio: {r:.2}"),
        None => println!("canonical ratio: n/a (PyTorch absent)"),
    }
    Ok(())
}
