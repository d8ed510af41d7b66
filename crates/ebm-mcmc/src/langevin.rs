//! Langevin dynamics with separately set step size and noise scale, per-element gradient
//! clipping and clamping to the data range.

use std::time::Instant;

use candle_core::{DType, Tensor};
use ebm_core::{noise, validate, Energy};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::sampler::{drive, to_host, ChainState, Kernel, Plan, TraceConfig, Transition};
use crate::{Error, Result, Sampler, SamplerRun};

/// Hyper-parameters of a Langevin chain. Checked by [`Langevin::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangevinConfig {
    /// The multiplier of the gradient in each step (> 0).
    pub step_size: f64,
    /// The standard deviation of the Gaussian noise added in each step (>= 0).
    pub noise_scale: f64,
    /// The number of steps K (>= 1).
    pub steps: usize,
    /// Clip each element of the gradient to `[-c, c]` before the step.
    pub grad_clip: Option<f64>,
    /// Clamp the samples to `[low, high]` after each step (the data range).
    pub clamp: Option<(f64, f64)>,
}

impl LangevinConfig {
    /// The IGEBM paper's CIFAR-10 sampler: step 10, noise 0.005, gradient clip 0.01, samples
    /// clamped to [0, 1], 60 steps.
    pub fn igebm() -> Self {
        Self {
            step_size: 10.0,
            noise_scale: 0.005,
            steps: 60,
            grad_clip: Some(0.01),
            clamp: Some((0.0, 1.0)),
        }
    }

    /// The unadjusted Langevin algorithm, `x <- x - eps grad E + sqrt(2 eps) N(0, I)`, whose
    /// stationary law approaches `exp(-E)` as `eps -> 0`. No clipping, no clamping.
    pub fn matched(step_size: f64, steps: usize) -> Self {
        Self {
            step_size,
            noise_scale: (2.0 * step_size.max(0.0)).sqrt(),
            steps,
            grad_clip: None,
            clamp: None,
        }
    }

    /// This config with another number of steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }
}

/// A validated Langevin sampler.
#[derive(Debug, Clone)]
pub struct Langevin {
    config: LangevinConfig,
}

/// What a chain returns.
#[derive(Debug, Clone)]
pub struct LangevinRun {
    /// The final samples, detached, shape of the start.
    pub samples: Tensor,
    /// Energies of the samples before the last step's move, `[B]`.
    pub energies: Tensor,
    /// Mean energy before each step.
    pub energy_trace: Vec<f64>,
    /// Wall-clock seconds per step.
    pub seconds_per_step: f64,
}

impl Langevin {
    /// Checks the hyper-parameters: step size > 0, noise >= 0, at least one step, a positive
    /// clip, a clamp range with low < high.
    pub fn new(config: LangevinConfig) -> Result<Self> {
        validate::positive("step_size", config.step_size)?;
        validate::non_negative("noise_scale", config.noise_scale)?;
        validate::at_least_one("steps", config.steps)?;
        if let Some(c) = config.grad_clip {
            validate::positive("grad_clip", c)?;
        }
        if let Some((lo, hi)) = config.clamp {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(ebm_core::Error::invalid(
                    "clamp",
                    format!("needs finite low < high, got ({lo}, {hi})"),
                )
                .into());
            }
        }
        Ok(Self { config })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LangevinConfig {
        &self.config
    }

    /// Runs `config.steps` steps from `x0`, drawing noise from `rng`.
    pub fn run<E, R>(&self, energy: &E, x0: &Tensor, rng: &mut R) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        self.run_masked(energy, x0, None, rng)
    }

    /// Like [`Langevin::run`], but only elements where `mask` is 1 move (`mask` broadcasts
    /// against `x0`; 0 keeps the start value): inpainting and denoising.
    pub fn run_masked<E, R>(
        &self,
        energy: &E,
        x0: &Tensor,
        mask: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        if let Some(shape) = energy.sample_shape() {
            validate::check_batch_shape(x0, &shape, "Langevin start")?;
        }
        validate::check_finite(x0, "Langevin start")?;
        let mask = match mask {
            Some(m) => Some(m.to_dtype(x0.dtype())?.broadcast_as(x0.shape())?),
            None => None,
        };
        if x0.device().is_cpu() && x0.dtype() == DType::F32 {
            return self.run_host(energy, x0, mask.as_ref(), rng);
        }
        self.run_tensors(energy, x0, mask.as_ref(), rng)
    }

    /// The chain on tensor operations, for any device and dtype.
    fn run_tensors<E, R>(
        &self,
        energy: &E,
        x0: &Tensor,
        mask: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        let c = &self.config;
        let mut x = x0.detach();
        let mut trace = Vec::with_capacity(c.steps);
        let mut energies = None;
        let start = Instant::now();
        for step in 1..=c.steps {
            let (e, grad) = energy.energy_and_grad(&x)?;
            let mean = e
                .mean_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            if !mean.is_finite() {
                return Err(Error::Diverged {
                    step,
                    steps: c.steps,
                });
            }
            trace.push(mean);
            energies = Some(e);
            let grad = match c.grad_clip {
                Some(clip) => grad.clamp(-clip, clip)?,
                None => grad,
            };
            let mut delta = (grad * (-c.step_size))?;
            if c.noise_scale > 0.0 {
                delta = (delta + (noise::normal_like(rng, &x)? * c.noise_scale)?)?;
            }
            if let Some(m) = mask {
                delta = (delta * m)?;
            }
            x = (x + delta)?;
            if let Some((lo, hi)) = c.clamp {
                x = x.clamp(lo, hi)?;
            }
        }
        let seconds_per_step = start.elapsed().as_secs_f64() / c.steps as f64;
        Ok(LangevinRun {
            samples: x,
            energies: energies.expect("at least one step"),
            energy_trace: trace,
            seconds_per_step,
        })
    }

    /// The chain for f32 on the CPU: the update (clip, step, noise, mask, clamp) in one loop
    /// over host memory instead of five tensor operations, each allocating. Every element goes
    /// through the same f32 operations in the same order as in [`Langevin::run_tensors`], with
    /// the noise drawn in the same order, so the two give the same bits (a test checks).
    fn run_host<E, R>(
        &self,
        energy: &E,
        x0: &Tensor,
        mask: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        let c = &self.config;
        let shape = x0.shape().clone();
        let device = x0.device().clone();
        let mut x: Vec<f32> = x0.flatten_all()?.to_vec1()?;
        let mask: Option<Vec<f32>> = match mask {
            Some(m) => Some(m.contiguous()?.flatten_all()?.to_vec1()?),
            None => None,
        };
        let mut noise_buf = vec![0f32; if c.noise_scale > 0.0 { x.len() } else { 0 }];
        // As candle converts scalar operands: `T::from_f64`, i.e. `as f32`.
        let step_mul = (-c.step_size) as f32;
        let noise_mul = c.noise_scale as f32;
        let clip = c.grad_clip.map(|v| ((-v) as f32, v as f32));
        let clamp = c.clamp.map(|(lo, hi)| (lo as f32, hi as f32));
        let mut trace = Vec::with_capacity(c.steps);
        let mut energies = None;
        let start = Instant::now();
        for step in 1..=c.steps {
            let current = Tensor::from_slice(&x, &shape, &device)?;
            let (e, grad) = energy.energy_and_grad(&current)?;
            let mean = e.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !mean.is_finite() {
                return Err(Error::Diverged {
                    step,
                    steps: c.steps,
                });
            }
            trace.push(mean);
            energies = Some(e);
            if grad.dims() != shape.dims() {
                return Err(Error::Core(ebm_core::Error::Shape {
                    what: "energy gradient".into(),
                    expected: format!("{:?}", shape.dims()),
                    got: grad.dims().to_vec(),
                }));
            }
            let grad: Vec<f32> = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            noise::fill_normal(rng, &mut noise_buf);
            for (i, (xi, &g)) in x.iter_mut().zip(&grad).enumerate() {
                // candle's `clamp` is `maximum(lo)` then `minimum(hi)`; `t * s` is
                // `affine(s, 0)`, i.e. `v * s + 0`.
                let g = match clip {
                    Some((lo, hi)) => minimum(maximum(g, lo), hi),
                    None => g,
                };
                let mut delta = g * step_mul + 0.0;
                if let Some(&n) = noise_buf.get(i) {
                    delta += n * noise_mul + 0.0;
                }
                if let Some(m) = &mask {
                    delta *= m[i];
                }
                let mut v = *xi + delta;
                if let Some((lo, hi)) = clamp {
                    v = minimum(maximum(v, lo), hi);
                }
                *xi = v;
            }
        }
        let seconds_per_step = start.elapsed().as_secs_f64() / c.steps as f64;
        Ok(LangevinRun {
            samples: Tensor::from_vec(x, shape, &device)?,
            energies: energies.expect("at least one step"),
            energy_trace: trace,
            seconds_per_step,
        })
    }

    /// Short-run sampling from noise: `batch` chains started from the uniform distribution
    /// on the clamp range (or [0, 1]), each of shape `sample_shape`.
    pub fn sample_from_noise<E, R>(
        &self,
        energy: &E,
        batch: usize,
        sample_shape: &[usize],
        device: &candle_core::Device,
        rng: &mut R,
    ) -> Result<LangevinRun>
    where
        E: Energy + ?Sized,
        R: rand::Rng + ?Sized,
    {
        validate::at_least_one("batch", batch)?;
        let (lo, hi) = self.config.clamp.unwrap_or((0.0, 1.0));
        let mut shape = vec![batch];
        shape.extend_from_slice(sample_shape);
        let x0 = noise::uniform(rng, shape, lo, hi, candle_core::DType::F32, device)?;
        self.run(energy, &x0, rng)
    }
}

/// candle's elementwise `maximum` (`if a < b { b } else { a }`), kept bit for bit.
fn maximum(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// candle's elementwise `minimum` (`if a > b { b } else { a }`), kept bit for bit.
fn minimum(a: f32, b: f32) -> f32 {
    if a > b {
        b
    } else {
        a
    }
}

/// Through the trait, a Langevin chain records per-chain energies like every other sampler:
/// no warm-up, `config.steps` iterations, acceptance 1, and the same samples as
/// [`Langevin::run`] for the same generator state (the same noise, drawn in the same order).
/// Unlike [`LangevinRun::energies`], [`SamplerRun::energies`] are those of the final samples,
/// and a NaN or infinite energy is [`Error::SamplerDiverged`].
impl Sampler for Langevin {
    fn name(&self) -> String {
        "Langevin".into()
    }

    fn run(&self, energy: &dyn Energy, x0: &Tensor, rng: &mut dyn RngCore) -> Result<SamplerRun> {
        let plan = Plan {
            step_size: self.config.step_size,
            warmup: 0,
            steps: self.config.steps,
            adapt: None,
            trace: TraceConfig::default(),
        };
        drive(self, &plan, energy, x0, rng)
    }
}

impl Kernel for Langevin {
    fn kernel_name(&self) -> String {
        Sampler::name(self)
    }

    fn transition(
        &self,
        energy: &dyn Energy,
        state: &mut ChainState,
        step_size: f64,
        rng: &mut dyn RngCore,
    ) -> Result<Transition> {
        let c = &self.config;
        // The same operations, in the same order, as `run_masked`.
        let grad = match c.grad_clip {
            Some(clip) => state.grad.clamp(-clip, clip)?,
            None => state.grad.clone(),
        };
        let mut delta = (grad * (-step_size))?;
        if c.noise_scale > 0.0 {
            delta = (delta + (noise::normal_like(rng, &state.x)? * c.noise_scale)?)?;
        }
        let mut x = (&state.x + delta)?;
        if let Some((lo, hi)) = c.clamp {
            x = x.clamp(lo, hi)?;
        }
        let (e, g) = energy.energy_and_grad(&x)?;
        let e_host = to_host(&e)?;
        let chains = e_host.len();
        let diverged = e_host
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| format!("the energy of chain {i}"));
        let all = vec![true; chains];
        if diverged.is_none() {
            state.accept(&all, &x, &e, &e_host, &g)?;
        }
        Ok(Transition {
            accept_prob: vec![1.0; chains],
            accepted: all,
            divergent: vec![false; chains],
            grad_evals: 1,
            diverged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ebm_core::analytic::GaussianMixture;

    /// The host loop and the tensor operations give the same samples, bit for bit, with every
    /// option on (clipping that bites, noise, a mask, clamping that bites), and the same
    /// generator state afterwards.
    #[test]
    fn host_update_equals_tensor_update_bit_for_bit() {
        let energy = GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![0.2; 6], vec![0.9; 6]],
            vec![0.05, 0.02],
        )
        .unwrap();
        let mut rng = noise::seeded_rng(3);
        let x0 = noise::uniform(&mut rng, (5, 6), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(vec![1f32, 0., 1., 1., 0., 1.], 6, &Device::Cpu).unwrap();
        for (clip, noise_scale, masked) in [
            (Some(0.05), 0.01, true),
            (None, 0.3, false),
            (Some(1.0), 0.0, false),
        ] {
            let sampler = Langevin::new(LangevinConfig {
                step_size: 0.01,
                noise_scale,
                steps: 7,
                grad_clip: clip,
                clamp: Some((0.0, 1.0)),
            })
            .unwrap();
            let mask = masked.then(|| mask.broadcast_as((5, 6)).unwrap());
            let (mut r1, mut r2) = (noise::seeded_rng(9), noise::seeded_rng(9));
            let host = sampler
                .run_host(&energy, &x0, mask.as_ref(), &mut r1)
                .unwrap();
            let tensors = sampler
                .run_tensors(&energy, &x0, mask.as_ref(), &mut r2)
                .unwrap();
            let a: Vec<f32> = host.samples.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = tensors.samples.flatten_all().unwrap().to_vec1().unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a),
                bits(&b),
                "clip {clip:?} noise {noise_scale} mask {masked}"
            );
            assert_ne!(a, x0.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            assert_eq!(host.energy_trace, tensors.energy_trace);
            assert_eq!(
                rand::Rng::random::<u64>(&mut r1),
                rand::Rng::random::<u64>(&mut r2)
            );
            if clip == Some(0.05) {
                // The clip bites: some gradient elements exceed it at the start.
                let (_, g) = energy.energy_and_grad(&x0).unwrap();
                let gmax = g
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(gmax > 0.05, "max |grad| {gmax}");
            }
        }
    }
}
