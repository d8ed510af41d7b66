//! Trajectory prediction: a damped double pendulum (`ebm_data::trajectories`) stands in for the
//! paper's robot-hand trajectories. An MLP energy `E(history, next)` over windows of states is
//! trained by contrastive divergence (negatives: the data's history with the next state sampled
//! by Langevin dynamics from noise) and predicts by sampling each next state given the previous
//! ones; a feed-forward regressor trained on the same windows predicts it directly. Both are
//! rolled out from the first states of held-out trajectories, and at several horizons the
//! Frechet distance between the predicted and the true states (Gaussians fitted over the test
//! trajectories) is reported.

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng, Energy, Rng};
use ebm_data::trajectories::{DoublePendulum, Trajectories, TrajectoryConfig, STATE_DIM};
use ebm_eval::{frechet_distance, FeatureStats};
use ebm_mcmc::{Langevin, LangevinConfig};
use ebm_nn::{Activation, Dense, Init, Mlp, MlpConfig, ParamStore, Trainable};
use ebm_train::{Adam, AdamConfig};
use ebm_viz::{LinePlot, Series};
use serde::{Deserialize, Serialize};

use super::resume;
use super::{numbers, put_numbers, Recipe, Run};
use crate::report::table;

/// The simulated system and its time grid (see [`TrajectoryConfig`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRecipe {
    /// Bob masses (kg).
    pub masses: (f64, f64),
    /// Rod lengths (m).
    pub lengths: (f64, f64),
    /// Gravity (m/s^2).
    pub gravity: f64,
    /// Viscous damping rate (1/s).
    pub damping: f64,
    /// Seconds between recorded states.
    pub dt: f64,
    /// RK4 substeps per recorded interval.
    pub substeps: usize,
    /// States per trajectory.
    pub steps: usize,
    /// Initial angles uniform in `[-max_angle, max_angle]`.
    pub max_angle: f64,
    /// Initial angular velocities uniform in `[-max_speed, max_speed]`.
    pub max_speed: f64,
}

impl SystemRecipe {
    fn config(&self) -> TrajectoryConfig {
        TrajectoryConfig {
            system: DoublePendulum {
                mass1: self.masses.0,
                mass2: self.masses.1,
                length1: self.lengths.0,
                length2: self.lengths.1,
                gravity: self.gravity,
                damping: self.damping,
            },
            dt: self.dt,
            substeps: self.substeps,
            steps: self.steps,
            max_angle: self.max_angle,
            max_speed: self.max_speed,
        }
    }
}

/// The energy model over windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryEbmRecipe {
    /// Hidden widths of the MLP energy.
    pub hidden: Vec<usize>,
    /// Its non-linearity.
    pub activation: Activation,
    /// Weight of the energy regulariser `mean E+^2 + mean E-^2`.
    pub l2_coeff: f64,
    /// The optimiser.
    pub adam: AdamConfig,
    /// The sampler of negatives in training (over the next state only).
    pub train_langevin: LangevinConfig,
    /// The sampler of predictions.
    pub predict_langevin: LangevinConfig,
    /// Chains start from `N(0, init_std^2)` in normalised increment units.
    pub init_std: f64,
}

/// The feed-forward baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressorRecipe {
    /// Hidden widths (Swish between layers).
    pub hidden: Vec<usize>,
    /// Adam's learning rate (betas 0.9, 0.999).
    pub lr: f64,
    /// Adam steps.
    pub iterations: usize,
    /// Windows per step.
    pub batch_size: usize,
}

/// The trajectory part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryRecipe {
    /// The simulated system.
    pub system: SystemRecipe,
    /// Training trajectories.
    pub train_trajectories: usize,
    /// Held-out trajectories the rollouts start from.
    pub test_trajectories: usize,
    /// States given to a model to predict the next one.
    pub history: usize,
    /// Horizons (steps after the last given state) at which predictions are scored.
    pub horizons: Vec<usize>,
    /// The energy model.
    pub ebm: TrajectoryEbmRecipe,
    /// Windows per EBM step.
    pub batch_size: usize,
    /// EBM training steps.
    pub iterations: usize,
    /// The regressor.
    pub regressor: RegressorRecipe,
}

impl TrajectoryRecipe {
    /// Minutes on a CPU: 200 training and 100 test trajectories of 100 states (5 s).
    pub fn quick() -> Self {
        Self {
            system: SystemRecipe {
                masses: (1.0, 1.0),
                lengths: (1.0, 1.0),
                gravity: 9.81,
                damping: 0.1,
                dt: 0.05,
                substeps: 5,
                steps: 100,
                max_angle: 1.0,
                max_speed: 1.0,
            },
            train_trajectories: 200,
            test_trajectories: 100,
            history: 3,
            horizons: vec![10, 20, 40, 80],
            ebm: TrajectoryEbmRecipe {
                hidden: vec![128, 128],
                activation: Activation::Swish,
                l2_coeff: 0.1,
                adam: AdamConfig {
                    lr: 1e-3,
                    ..Default::default()
                },
                train_langevin: LangevinConfig {
                    step_size: 0.1,
                    noise_scale: 0.01,
                    steps: 30,
                    grad_clip: None,
                    clamp: None,
                },
                predict_langevin: LangevinConfig {
                    step_size: 0.1,
                    noise_scale: 0.01,
                    steps: 30,
                    grad_clip: None,
                    clamp: None,
                },
                init_std: 1.0,
            },
            batch_size: 128,
            iterations: 1000,
            regressor: RegressorRecipe {
                hidden: vec![128, 128],
                lr: 1e-3,
                iterations: 1000,
                batch_size: 128,
            },
        }
    }

    /// More data, wider networks, longer training.
    pub fn full() -> Self {
        let mut r = Self::quick();
        r.train_trajectories = 2000;
        r.test_trajectories = 500;
        r.system.steps = 200;
        r.horizons = vec![10, 20, 40, 80, 160];
        r.ebm.hidden = vec![256, 256, 256];
        r.regressor.hidden = vec![256, 256, 256];
        r.iterations = 20_000;
        r.regressor.iterations = 20_000;
        r
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.system.config().validate()?;
        let longest = self.horizons.iter().copied().max().unwrap_or(0);
        if self.horizons.is_empty() || self.horizons.contains(&0) {
            anyhow::bail!("trajectories: give at least one horizon, each at least 1");
        }
        if self.history == 0 || self.history + longest > self.system.steps {
            anyhow::bail!(
                "trajectories: a history of {} states and a horizon of {longest} need at least {} states per trajectory, the recipe has {}",
                self.history,
                self.history + longest,
                self.system.steps
            );
        }
        if self.train_trajectories == 0 || self.test_trajectories < 2 {
            anyhow::bail!("trajectories: need at least 1 training and 2 test trajectories");
        }
        if self.batch_size == 0 || self.regressor.batch_size == 0 {
            anyhow::bail!("trajectories: batch sizes must be at least 1");
        }
        if !(self.ebm.init_std.is_finite() && self.ebm.init_std > 0.0) {
            anyhow::bail!(
                "trajectories: init_std must be positive, got {}",
                self.ebm.init_std
            );
        }
        Langevin::new(self.ebm.train_langevin.clone())?;
        Langevin::new(self.ebm.predict_langevin.clone())?;
        Ok(())
    }
}

/// The paper's numbers, as the issue quotes them.
const PAPER_EBM: &str = "5.96 (robot hand)";
const PAPER_BASELINE: &str = "33.28 (fully connected)";

/// Per-dimension standardisation of states and of one-step increments, from training data.
struct Scales {
    state_mean: [f32; STATE_DIM],
    state_std: [f32; STATE_DIM],
    delta_mean: [f32; STATE_DIM],
    delta_std: [f32; STATE_DIM],
}

impl Scales {
    fn fit(set: &Trajectories) -> Self {
        let mean_std = |values: &mut dyn Iterator<Item = [f32; STATE_DIM]>| {
            let (mut n, mut s, mut s2) = (0f64, [0f64; STATE_DIM], [0f64; STATE_DIM]);
            for v in values {
                n += 1.0;
                for d in 0..STATE_DIM {
                    s[d] += v[d] as f64;
                    s2[d] += (v[d] as f64).powi(2);
                }
            }
            let mean: [f32; STATE_DIM] = std::array::from_fn(|d| (s[d] / n) as f32);
            let std: [f32; STATE_DIM] = std::array::from_fn(|d| {
                ((s2[d] / n - (s[d] / n).powi(2)).max(0.0).sqrt() as f32).max(1e-6)
            });
            (mean, std)
        };
        let state = |i: usize, t: usize| -> [f32; STATE_DIM] {
            std::array::from_fn(|d| set.state(i, t)[d])
        };
        let (state_mean, state_std) = mean_std(
            &mut (0..set.count())
                .flat_map(|i| (0..set.steps()).map(move |t| (i, t)))
                .map(|(i, t)| state(i, t)),
        );
        let (delta_mean, delta_std) = mean_std(
            &mut (0..set.count())
                .flat_map(|i| (1..set.steps()).map(move |t| (i, t)))
                .map(|(i, t)| {
                    let (a, b) = (state(i, t - 1), state(i, t));
                    std::array::from_fn(|d| b[d] - a[d])
                }),
        );
        Self {
            state_mean,
            state_std,
            delta_mean,
            delta_std,
        }
    }

    /// Normalised features of a window of states (`history * STATE_DIM` values).
    fn features(&self, window: &[f32]) -> Vec<f32> {
        window
            .iter()
            .enumerate()
            .map(|(i, v)| (v - self.state_mean[i % STATE_DIM]) / self.state_std[i % STATE_DIM])
            .collect()
    }

    fn delta_to_norm(&self, d: usize, delta: f32) -> f32 {
        (delta - self.delta_mean[d]) / self.delta_std[d]
    }

    fn norm_to_delta(&self, d: usize, z: f32) -> f32 {
        z * self.delta_std[d] + self.delta_mean[d]
    }
}

/// A fully connected regressor `[history * 4] -> hidden -> [4]`, Swish between layers.
struct Regressor {
    params: ParamStore,
    layers: Vec<Dense>,
}

impl Regressor {
    fn new(input: usize, hidden: &[usize], device: &Device, rng: &mut Rng) -> anyhow::Result<Self> {
        let mut params = ParamStore::new();
        let mut init = Init {
            params: &mut params,
            rng,
            device,
            dtype: DType::F32,
        };
        let mut widths = vec![input];
        widths.extend(hidden);
        widths.push(STATE_DIM);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Dense::new(&mut init, &format!("layers.{i}"), w[0], w[1], false))
            .collect::<ebm_nn::Result<Vec<_>>>()?;
        Ok(Self { params, layers })
    }

    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = Activation::Swish.apply(&h)?;
            }
        }
        Ok(h)
    }
}

/// For the checkpoints ([`ebm_train::Snapshot::put_model`]): plain dense layers, no buffers.
impl Trainable for Regressor {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn update_spectral_norm(&mut self) -> ebm_nn::Result<()> {
        Ok(())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_buffers(
        &mut self,
        _buffers: &std::collections::HashMap<String, Tensor>,
    ) -> ebm_nn::Result<()> {
        Ok(())
    }
}

/// Windows as normalised (features, next-increment) rows.
struct WindowData {
    features: Vec<f32>,
    targets: Vec<f32>,
    n: usize,
    width: usize,
}

impl WindowData {
    fn build(set: &Trajectories, history: usize, scales: &Scales) -> anyhow::Result<Self> {
        let (inputs, targets) = set.windows(history)?;
        let width = history * STATE_DIM;
        let n = targets.len() / STATE_DIM;
        let mut features = Vec::with_capacity(n * width);
        let mut norm_targets = Vec::with_capacity(n * STATE_DIM);
        for w in 0..n {
            let window = &inputs[w * width..(w + 1) * width];
            features.extend(scales.features(window));
            let last = &window[width - STATE_DIM..];
            for d in 0..STATE_DIM {
                norm_targets.push(scales.delta_to_norm(d, targets[w * STATE_DIM + d] - last[d]));
            }
        }
        Ok(Self {
            features,
            targets: norm_targets,
            n,
            width,
        })
    }

    fn batch(&self, idx: &[usize], device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
        let mut f = Vec::with_capacity(idx.len() * self.width);
        let mut t = Vec::with_capacity(idx.len() * STATE_DIM);
        for &i in idx {
            f.extend_from_slice(&self.features[i * self.width..(i + 1) * self.width]);
            t.extend_from_slice(&self.targets[i * STATE_DIM..(i + 1) * STATE_DIM]);
        }
        Ok((
            Tensor::from_vec(f, (idx.len(), self.width), device)?,
            Tensor::from_vec(t, (idx.len(), STATE_DIM), device)?,
        ))
    }
}

/// Samples next increments `[N, 4]` given features `[N, width]` by Langevin dynamics over the
/// last four inputs of the energy, from `N(0, init_std^2)`.
fn sample_next(
    energy: &Mlp,
    features: &Tensor,
    sampler: &Langevin,
    init_std: f64,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let (n, width) = features.dims2()?;
    let device = features.device();
    let z0 = (noise::normal(rng, (n, STATE_DIM), DType::F32, device)? * init_std)?;
    let x0 = Tensor::cat(&[features, &z0], 1)?;
    let mut mask = vec![0f32; width];
    mask.extend([1.0; STATE_DIM]);
    let mask = Tensor::from_vec(mask, (1, width + STATE_DIM), device)?;
    let run = sampler.run_masked(energy, &x0, Some(&mask), rng)?;
    Ok(run.samples.narrow(1, width, STATE_DIM)?)
}

/// Rolls `predict` out from the first `history` states of every test trajectory for `horizon`
/// steps; returns the predicted states `[count][horizon][4]`.
fn rollout(
    test: &Trajectories,
    history: usize,
    horizon: usize,
    scales: &Scales,
    device: &Device,
    mut predict: impl FnMut(&Tensor) -> anyhow::Result<Tensor>,
    mut tick: impl FnMut(),
) -> anyhow::Result<Vec<Vec<[f32; STATE_DIM]>>> {
    let n = test.count();
    let mut states: Vec<Vec<[f32; STATE_DIM]>> = (0..n)
        .map(|i| {
            (0..history)
                .map(|t| std::array::from_fn(|d| test.state(i, t)[d]))
                .collect()
        })
        .collect();
    for _ in 0..horizon {
        let mut f = Vec::with_capacity(n * history * STATE_DIM);
        for s in &states {
            let window: Vec<f32> = s[s.len() - history..].iter().flatten().copied().collect();
            f.extend(scales.features(&window));
        }
        let feats = Tensor::from_vec(f, (n, history * STATE_DIM), device)?;
        let z = predict(&feats)?.to_vec2::<f32>()?;
        for (s, zi) in states.iter_mut().zip(&z) {
            let last = s[s.len() - 1];
            let next: [f32; STATE_DIM] =
                std::array::from_fn(|d| last[d] + scales.norm_to_delta(d, zi[d]));
            if next.iter().any(|v| !v.is_finite()) {
                anyhow::bail!("trajectories: a rollout produced a non-finite state");
            }
            s.push(next);
        }
        tick();
    }
    Ok(states.into_iter().map(|s| s[history..].to_vec()).collect())
}

/// The Frechet distance and the root-mean-square error (paired) between predicted and true
/// states `horizon` steps after the last given state, in units of the training states' std.
fn score(
    predicted: &[Vec<[f32; STATE_DIM]>],
    test: &Trajectories,
    history: usize,
    horizon: usize,
    scales: &Scales,
) -> anyhow::Result<(f64, f64)> {
    let n = predicted.len();
    let t = history - 1 + horizon;
    let norm = |d: usize, v: f32| ((v - scales.state_mean[d]) / scales.state_std[d]) as f64;
    let mut p = Vec::with_capacity(n * STATE_DIM);
    let mut q = Vec::with_capacity(n * STATE_DIM);
    let mut sq = 0f64;
    for (i, pred) in predicted.iter().enumerate() {
        for d in 0..STATE_DIM {
            let a = norm(d, pred[horizon - 1][d]);
            let b = norm(d, test.state(i, t)[d]);
            p.push(a);
            q.push(b);
            sq += (a - b).powi(2);
        }
    }
    let fd = frechet_distance(
        &FeatureStats::from_features(&p, n, STATE_DIM)?,
        &FeatureStats::from_features(&q, n, STATE_DIM)?,
    )?;
    Ok((fd, (sq / (n * STATE_DIM) as f64).sqrt()))
}

/// Generates the data, trains both models, rolls them out and writes the section.
pub(crate) fn run(recipe: &Recipe, run: &mut Run<'_>) -> anyhow::Result<()> {
    let r = &recipe.trajectories;
    let device = run.options.device.clone();
    let seed = run.options.seed;
    let config = r.system.config();
    let mut data_rng = seeded_rng(seed + 5);
    let train = Trajectories::generate(&config, r.train_trajectories, &mut data_rng)?;
    let test = Trajectories::generate(&config, r.test_trajectories, &mut data_rng)?;
    let scales = Scales::fit(&train);
    let windows = WindowData::build(&train, r.history, &scales)?;
    let width = windows.width;
    if windows.n < r.batch_size.max(r.regressor.batch_size) {
        anyhow::bail!(
            "trajectories: {} training windows, fewer than a batch",
            windows.n
        );
    }

    // The energy model.
    let t0 = std::time::Instant::now();
    let mut rng = seeded_rng(seed + 6);
    let mut model = Mlp::new(
        &MlpConfig {
            input_dim: width + STATE_DIM,
            hidden: r.ebm.hidden.clone(),
            activation: r.ebm.activation,
            spectral_norm: false,
        },
        &device,
        &mut rng,
    )?;
    let mut adam = Adam::new(model.params().vars(), r.ebm.adam.clone())?;
    let train_sampler = Langevin::new(r.ebm.train_langevin.clone())?;
    let mut batches = ebm_data::ShuffledBatches::new(windows.n, r.batch_size)?;
    let mut curve = (Vec::new(), Vec::new(), Vec::new());
    let what = "trajectory EBM";
    let checkpoints = run.checkpoints(what)?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(run.options, &device)? {
        let mut restore = || -> anyhow::Result<()> {
            snapshot.restore_model("model", &mut model)?;
            snapshot.restore_adam("adam", &mut adam)?;
            resume::restore_loop(&snapshot, &mut rng, &mut batches)?;
            curve = (
                numbers(&snapshot, "curve.loss")?,
                numbers(&snapshot, "curve.energy_pos")?,
                numbers(&snapshot, "curve.energy_neg")?,
            );
            Ok(())
        };
        restore().with_context(|| format!("{what}: cannot resume"))?;
        done = snapshot.step.min(r.iterations);
        run.bar.inc(done as u64);
    }
    for step in done..r.iterations {
        let idx = batches.next_batch(&mut rng).to_vec();
        let (f, z) = windows.batch(&idx, &device)?;
        let frozen = model.frozen()?;
        let z_neg = sample_next(&frozen, &f, &train_sampler, r.ebm.init_std, &mut rng)?;
        let pos = Tensor::cat(&[&f, &z], 1)?;
        let neg = Tensor::cat(&[&f, &z_neg], 1)?;
        let b = idx.len();
        let e = model.energy(&Tensor::cat(&[&pos, &neg], 0)?)?;
        let (e_pos, e_neg) = (e.narrow(0, 0, b)?, e.narrow(0, b, b)?);
        let loss = ((e_pos.mean_all()? - e_neg.mean_all()?)?
            + ((e_pos.sqr()?.mean_all()? + e_neg.sqr()?.mean_all()?)? * r.ebm.l2_coeff)?)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            anyhow::bail!("trajectories: the EBM's loss diverged at step {step}");
        }
        adam.step(&loss.backward()?)?;
        let mean =
            |t: &Tensor| -> anyhow::Result<f64> { Ok(t.mean_all()?.to_scalar::<f32>()? as f64) };
        curve.0.push(l);
        curve.1.push(mean(&e_pos)?);
        curve.2.push(mean(&e_neg)?);
        if step % 20 == 0 {
            run.bar.set_message(format!(
                "trajectory EBM step {step} loss {l:.3} E+ {:.3} E- {:.3}",
                curve.1[step], curve.2[step]
            ));
        }
        run.bar.inc(1);
        checkpoints.after_step(step + 1, r.iterations, |snapshot| {
            snapshot.put_model("model", &model)?;
            snapshot.put_adam("adam", &adam)?;
            resume::put_loop(snapshot, &rng, &batches)?;
            put_numbers(snapshot, "curve.loss", &curve.0)?;
            put_numbers(snapshot, "curve.energy_pos", &curve.1)?;
            put_numbers(snapshot, "curve.energy_neg", &curve.2)
        })?;
    }
    let ebm_seconds = t0.elapsed().as_secs_f64();
    let frozen = model.frozen()?;
    LinePlot::new(
        "trajectory EBM: training",
        "training step",
        "value",
        vec![
            Series::from_values("loss", &curve.0),
            Series::from_values("E+ (data)", &curve.1),
            Series::from_values("E- (samples)", &curve.2),
        ],
    )
    .save(&run.options.out.join("trajectory_ebm_training.png"))?;

    // The regressor.
    let t0 = std::time::Instant::now();
    let mut reg_rng = seeded_rng(seed + 7);
    let mut regressor = Regressor::new(width, &r.regressor.hidden, &device, &mut reg_rng)?;
    let mut reg_adam = Adam::new(
        regressor.params.vars(),
        AdamConfig::kingma_ba(r.regressor.lr),
    )?;
    let mut batches = ebm_data::ShuffledBatches::new(windows.n, r.regressor.batch_size)?;
    let mut reg_loss = Vec::new();
    let what = "trajectory regressor";
    let checkpoints = run.checkpoints(what)?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(run.options, &device)? {
        let mut restore = || -> anyhow::Result<()> {
            snapshot.restore_model("model", &mut regressor)?;
            snapshot.restore_adam("adam", &mut reg_adam)?;
            resume::restore_loop(&snapshot, &mut reg_rng, &mut batches)?;
            reg_loss = numbers(&snapshot, "loss")?;
            Ok(())
        };
        restore().with_context(|| format!("{what}: cannot resume"))?;
        done = snapshot.step.min(r.regressor.iterations);
        run.bar.inc(done as u64);
    }
    for step in done..r.regressor.iterations {
        let idx = batches.next_batch(&mut reg_rng).to_vec();
        let (f, z) = windows.batch(&idx, &device)?;
        let loss = (regressor.forward(&f)? - z)?.sqr()?.mean_all()?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            anyhow::bail!("trajectories: the regressor's loss diverged at step {step}");
        }
        reg_adam.step(&loss.backward()?)?;
        reg_loss.push(l);
        run.bar.inc(1);
        checkpoints.after_step(step + 1, r.regressor.iterations, |snapshot| {
            snapshot.put_model("model", &regressor)?;
            snapshot.put_adam("adam", &reg_adam)?;
            resume::put_loop(snapshot, &reg_rng, &batches)?;
            put_numbers(snapshot, "loss", &reg_loss)
        })?;
    }
    let reg_seconds = t0.elapsed().as_secs_f64();
    let tail = |v: &[f64]| {
        let t = &v[v.len() - v.len().div_ceil(10)..];
        t.iter().sum::<f64>() / t.len().max(1) as f64
    };

    // Rollouts from the first `history` states of each test trajectory.
    let longest = r.horizons.iter().copied().max().unwrap_or(1);
    let predict_sampler = Langevin::new(r.ebm.predict_langevin.clone())?;
    let mut roll_rng = seeded_rng(seed + 8);
    let bar = run.bar.clone();
    run.bar.set_message("trajectory rollouts");
    let ebm_pred = rollout(
        &test,
        r.history,
        longest,
        &scales,
        &device,
        |f| sample_next(&frozen, f, &predict_sampler, r.ebm.init_std, &mut roll_rng),
        || bar.inc(1),
    )?;
    let reg_pred = rollout(
        &test,
        r.history,
        longest,
        &scales,
        &device,
        |f| Ok(regressor.forward(f)?.detach()),
        || {},
    )?;
    let still: Vec<Vec<[f32; STATE_DIM]>> = (0..test.count())
        .map(|i| {
            let last: [f32; STATE_DIM] = std::array::from_fn(|d| test.state(i, r.history - 1)[d]);
            vec![last; longest]
        })
        .collect();

    let mut rows = Vec::new();
    let mut curves = (Vec::new(), Vec::new(), Vec::new());
    let mut horizons = r.horizons.clone();
    horizons.sort_unstable();
    horizons.dedup();
    for &h in &horizons {
        let (fe, re) = score(&ebm_pred, &test, r.history, h, &scales)?;
        let (fb, rb) = score(&reg_pred, &test, r.history, h, &scales)?;
        let (fs, rs) = score(&still, &test, r.history, h, &scales)?;
        let report = &mut run.report;
        report.metric(format!("traj_frechet_ebm_{h}"), fe);
        report.metric(format!("traj_frechet_baseline_{h}"), fb);
        report.metric(format!("traj_frechet_still_{h}"), fs);
        report.metric(format!("traj_rmse_ebm_{h}"), re);
        report.metric(format!("traj_rmse_baseline_{h}"), rb);
        report.metric(format!("traj_rmse_still_{h}"), rs);
        rows.push(vec![
            h.to_string(),
            format!("{:.2}", h as f64 * r.system.dt),
            format!("{fe:.4}"),
            format!("{fb:.4}"),
            format!("{fs:.4}"),
            format!("{re:.3}"),
            format!("{rb:.3}"),
            format!("{rs:.3}"),
        ]);
        curves.0.push((h as f64, fe));
        curves.1.push((h as f64, fb));
        curves.2.push((h as f64, fs));
        run.summary.push(vec![
            "double-pendulum trajectories".into(),
            format!(
                "Frechet distance at horizon {h} ({} test trajectories)",
                test.count()
            ),
            format!("{fe:.3}"),
            format!("{fb:.3}"),
            PAPER_EBM.into(),
            PAPER_BASELINE.into(),
        ]);
    }
    let report = &mut run.report;
    report.metric("traj_ebm_train_seconds", ebm_seconds);
    report.metric("traj_baseline_train_seconds", reg_seconds);
    report.metric("traj_ebm_loss", tail(&curve.0));
    report.metric("traj_baseline_train_mse", tail(&reg_loss));
    report.metric("traj_ebm_parameters", model.params().num_scalars() as f64);
    report.metric(
        "traj_baseline_parameters",
        regressor.params.num_scalars() as f64,
    );
    let out = &run.options.out;
    LinePlot::new(
        "double pendulum: Frechet distance of predicted states",
        "horizon (steps)",
        "Frechet distance",
        vec![
            Series {
                name: "EBM".into(),
                points: curves.0,
            },
            Series {
                name: "regressor".into(),
                points: curves.1,
            },
            Series {
                name: "last state held".into(),
                points: curves.2,
            },
        ],
    )
    .save(&out.join("trajectory_frechet.png"))?;
    // One test trajectory: its two angles, true and predicted.
    let given = r.history;
    let angle = |d: usize| -> [Vec<(f64, f64)>; 3] {
        let truth = (0..given + longest)
            .map(|t| (t as f64, test.state(0, t)[d] as f64))
            .collect();
        let pred = |p: &[Vec<[f32; STATE_DIM]>]| {
            (0..longest)
                .map(|h| ((given + h) as f64, p[0][h][d] as f64))
                .collect()
        };
        [truth, pred(&ebm_pred), pred(&reg_pred)]
    };
    let [t1, e1, r1] = angle(0);
    let [t2, e2, r2] = angle(1);
    LinePlot::new(
        "double pendulum, test trajectory 0: angles (rad)",
        "time step",
        "angle",
        vec![
            Series {
                name: "theta1 true".into(),
                points: t1,
            },
            Series {
                name: "theta1 EBM".into(),
                points: e1,
            },
            Series {
                name: "theta1 regressor".into(),
                points: r1,
            },
            Series {
                name: "theta2 true".into(),
                points: t2,
            },
            Series {
                name: "theta2 EBM".into(),
                points: e2,
            },
            Series {
                name: "theta2 regressor".into(),
                points: r2,
            },
        ],
    )
    .save(&out.join("trajectory_example.png"))?;
    report.section(format!(
        "## Trajectory prediction: a damped double pendulum\n\n\
         {} training and {} test trajectories of {} states (every {} s, RK4 with {} substeps; masses {:?}, rods {:?}, damping {} / s, initial angles within {} rad and speeds within {} rad/s), drawn from the seed. \
         Both models see the last {} states (standardised) and give the next state's increment (standardised). \
         The EBM: an MLP energy (hidden {:?}, {:?}, {} parameters) over (history, increment), trained for {} steps of {} windows by contrastive divergence (loss over the last tenth {:.4}; negatives by {} Langevin steps of size {} with noise {} from N(0, {}^2) over the increment only; l2 {}; {ebm_seconds:.0} s), predicting by the same kind of chain ({} steps of size {}, noise {}). \
         The regressor: an MLP (hidden {:?}, Swish, {} parameters) trained for {} Adam steps on the squared error (final {:.5}; {reg_seconds:.0} s). \
         \"Last state held\" repeats the last given state: a reference, not a model.\n\n\
         Each model is rolled out from the first {} states of every test trajectory, feeding its predictions back. Frechet distance (and paired RMSE) between the predicted and the true states `h` steps after the last given state, over the {} test trajectories: Gaussians fitted to the 4-d states (two angles, two angular velocities), each dimension divided by its standard deviation over the training states.\n\n{}\n\
         ![Frechet distance](trajectory_frechet.png) ![example](trajectory_example.png)",
        r.train_trajectories,
        r.test_trajectories,
        r.system.steps,
        r.system.dt,
        r.system.substeps,
        r.system.masses,
        r.system.lengths,
        r.system.damping,
        r.system.max_angle,
        r.system.max_speed,
        r.history,
        r.ebm.hidden,
        r.ebm.activation,
        model.params().num_scalars(),
        r.iterations,
        r.batch_size,
        tail(&curve.0),
        r.ebm.train_langevin.steps,
        r.ebm.train_langevin.step_size,
        r.ebm.train_langevin.noise_scale,
        r.ebm.init_std,
        r.ebm.l2_coeff,
        r.ebm.predict_langevin.steps,
        r.ebm.predict_langevin.step_size,
        r.ebm.predict_langevin.noise_scale,
        r.regressor.hidden,
        regressor.params.num_scalars(),
        r.regressor.iterations,
        tail(&reg_loss),
        r.history,
        test.count(),
        table(
            &["horizon h", "seconds", "FD EBM", "FD regressor", "FD last state held", "RMSE EBM", "RMSE regressor", "RMSE held"],
            &rows
        ),
    ));
    run.differences.push(format!(
        "Trajectories: the paper predicts simulated robot-hand trajectories (more degrees of freedom, its own networks and horizon) and reports one Frechet distance per model; here a simulated damped double pendulum (4-d state), {} states of history, Frechet distances of the 4-d states at horizons {:?} (Gaussians over {} test trajectories), and a regressor of the same width as the EBM as the fully connected baseline.",
        r.history,
        horizons,
        test.count()
    ));
    Ok(())
}
