//! `cargo xtask bench langevin`: the canonical Langevin workload (`docs/ARCHITECTURE.md`,
//! "Performance") on the project's own energy network and sampler.

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
