//! CPU against CUDA: the same networks (weights written on the CPU, read back onto the GPU
//! through a checkpoint) must give the same energies, input gradients, Langevin chains and
//! contrastive-divergence steps on both devices. On the CPU a frozen f32 model takes the fused
//! host pass and the trainer the fused parameter gradients; on CUDA both go through candle's
//! autograd, so this also holds the two paths to each other.
//!
//! Compiled only with `--features cuda`; it needs a GPU (`Device::new_cuda(0)`) and fails
//! loudly without one. Run with `--nocapture` to see every measured error.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng, Energy, LabelledEnergy};
use ebm_mcmc::{Langevin, LangevinConfig};
use ebm_nn::{checkpoint, Igebm, IgebmConfig, Mlp, MlpConfig, Trainable};
use ebm_train::{AdamConfig, CdConfig, CdTrainer, Conditioned};

/// The tolerance on every relative error of a single pass.
const TOL: f64 = 1e-4;

fn cuda() -> Device {
    Device::new_cuda(0).expect("this test needs a CUDA device (Device::new_cuda(0) failed)")
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b| / max |a|`, both moved to the host in f64.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (host(a), host(b));
    assert_eq!(a.len(), b.len(), "shapes differ");
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn check(what: &str, err: f64, tol: f64) {
    println!("{what}: rel err {err:.3e}");
    assert!(
        err.is_finite() && err < tol,
        "{what}: rel err {err:.3e} >= {tol:e}"
    );
}

/// `model` (built on the CPU) saved and loaded onto `device`.
fn copy_to<M: checkpoint::Checkpoint>(model: &M, device: &Device) -> M {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(model, &path).unwrap();
    let copy: M = checkpoint::load(&path, device).unwrap();
    for ((n, a), (m, b)) in model.params().iter().zip(copy.params().iter()) {
        assert_eq!(n, m);
        assert!(b.device().is_cuda(), "{n} is not on the GPU");
        assert_eq!(
            rel_err(a.as_tensor(), b.as_tensor()),
            0.0,
            "{n} changed on the way"
        );
    }
    copy
}

fn igebm_configs() -> Vec<(&'static str, IgebmConfig)> {
    vec![
        ("28x28x1 unconditional", IgebmConfig::small(1, 28, 16)),
        (
            "28x28x1 conditional",
            IgebmConfig::small(1, 28, 16).conditional(10),
        ),
        ("32x32x3 unconditional", IgebmConfig::small(3, 32, 16)),
        (
            "32x32x3 conditional",
            IgebmConfig::small(3, 32, 16).conditional(10),
        ),
    ]
}

#[test]
fn igebm_energies_and_input_gradients_match() {
    let gpu = cuda();
    for (name, cfg) in igebm_configs() {
        let mut rng = seeded_rng(11);
        let cpu_model = Igebm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let gpu_model = copy_to(&cpu_model, &gpu);
        let mut shape = vec![6];
        shape.extend(cfg.sample_shape());
        let x = noise::uniform(&mut rng, shape, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let xg = x.to_device(&gpu).unwrap();
        let labels = cfg
            .num_classes
            .map(|k| noise::random_labels(&mut rng, 6, k, &Device::Cpu).unwrap());
        let labels_g = labels.as_ref().map(|l| l.to_device(&gpu).unwrap());

        // The trainable model: spectral norm from the stored u/v, autograd on both devices.
        let e_cpu = cpu_model.forward(&x, labels.as_ref()).unwrap();
        let e_gpu = gpu_model.forward(&xg, labels_g.as_ref()).unwrap();
        assert!(e_gpu.device().is_cuda());
        check(
            &format!("{name}: energy (trainable)"),
            rel_err(&e_cpu, &e_gpu),
            TOL,
        );

        // The frozen model: the fused CPU pass against CUDA autograd.
        let f_cpu = cpu_model.frozen().unwrap();
        let f_gpu = gpu_model.frozen().unwrap();
        let (ec, gc) = f_cpu.energy_and_input_grad(&x, labels.as_ref()).unwrap();
        let (eg, gg) = f_gpu.energy_and_input_grad(&xg, labels_g.as_ref()).unwrap();
        assert!(eg.device().is_cuda() && gg.device().is_cuda());
        check(&format!("{name}: energy (frozen)"), rel_err(&ec, &eg), TOL);
        check(
            &format!("{name}: input gradient (frozen)"),
            rel_err(&gc, &gg),
            TOL,
        );
        check(
            &format!("{name}: frozen vs trainable on CUDA"),
            rel_err(&e_gpu, &eg),
            TOL,
        );

        // The trait entry points a sampler uses.
        let (e2, g2) = match &labels_g {
            Some(l) => f_gpu.energy_and_grad_given(&xg, l).unwrap(),
            None => f_gpu.energy_and_grad(&xg).unwrap(),
        };
        check(
            &format!("{name}: Energy trait on CUDA"),
            rel_err(&gc, &g2),
            TOL,
        );
        check(
            &format!("{name}: Energy trait energies on CUDA"),
            rel_err(&ec, &e2),
            TOL,
        );

        // One power iteration of every spectral norm on each device.
        let (mut cpu_model, mut gpu_model) = (cpu_model, gpu_model);
        cpu_model.update_spectral_norm().unwrap();
        gpu_model.update_spectral_norm().unwrap();
        let worst = cpu_model
            .buffers()
            .iter()
            .zip(gpu_model.buffers().iter())
            .map(|((n, a), (m, b))| {
                assert_eq!(n, m);
                rel_err(a, b)
            })
            .fold(0f64, f64::max);
        check(
            &format!("{name}: spectral-norm u/v after a power iteration"),
            worst,
            TOL,
        );
        let e_cpu = cpu_model.forward(&x, labels.as_ref()).unwrap();
        let e_gpu = gpu_model.forward(&xg, labels_g.as_ref()).unwrap();
        check(
            &format!("{name}: energy after the power iteration"),
            rel_err(&e_cpu, &e_gpu),
            TOL,
        );
    }
}

/// IGEBM-style chains: step 10, noise 0.005, gradient clip 0.01, clamp [0, 1]. The noise is
/// drawn on the host from the seeded generator on both devices, so the chains are the same.
#[test]
fn langevin_chains_match() {
    let gpu = cuda();
    let config = LangevinConfig::igebm().with_steps(5);
    let sampler = Langevin::new(config).unwrap();
    for (name, cfg) in igebm_configs() {
        let mut rng = seeded_rng(5);
        let cpu_model = Igebm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let gpu_model = copy_to(&cpu_model, &gpu);
        let (f_cpu, f_gpu) = (cpu_model.frozen().unwrap(), gpu_model.frozen().unwrap());
        let mut shape = vec![8];
        shape.extend(cfg.sample_shape());
        let x0 = noise::uniform(&mut rng, shape, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let labels = cfg
            .num_classes
            .map(|k| noise::random_labels(&mut rng, 8, k, &Device::Cpu).unwrap());
        let labels_g = labels.as_ref().map(|l| l.to_device(&gpu).unwrap());
        let on_cpu = Conditioned::new(&f_cpu, labels.as_ref());
        let on_gpu = Conditioned::new(&f_gpu, labels_g.as_ref());
        let run_c = sampler.run(&on_cpu, &x0, &mut seeded_rng(99)).unwrap();
        let run_g = sampler
            .run(&on_gpu, &x0.to_device(&gpu).unwrap(), &mut seeded_rng(99))
            .unwrap();
        assert!(run_g.samples.device().is_cuda());
        check(
            &format!("{name}: Langevin samples after 5 steps"),
            rel_err(&run_c.samples, &run_g.samples),
            TOL,
        );
        check(
            &format!("{name}: Langevin energies"),
            rel_err(&run_c.energies, &run_g.energies),
            TOL,
        );
        let trace_c = Tensor::new(run_c.energy_trace.as_slice(), &Device::Cpu).unwrap();
        let trace_g = Tensor::new(run_g.energy_trace.as_slice(), &Device::Cpu).unwrap();
        check(
            &format!("{name}: Langevin energy trace"),
            rel_err(&trace_c, &trace_g),
            TOL,
        );
    }
}

#[test]
fn mlp_energy_gradient_and_chain_match() {
    let gpu = cuda();
    for spectral_norm in [false, true] {
        let name = format!("MLP 16-64-64-1 (spectral norm {spectral_norm})");
        let cfg = MlpConfig {
            input_dim: 16,
            hidden: vec![64, 64],
            spectral_norm,
            ..MlpConfig::latent_prior(16)
        };
        let mut rng = seeded_rng(2);
        let cpu_model = Mlp::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let gpu_model = copy_to(&cpu_model, &gpu);
        let z = noise::normal(&mut rng, (32, 16), DType::F32, &Device::Cpu).unwrap();
        let zg = z.to_device(&gpu).unwrap();
        check(
            &format!("{name}: energy (trainable)"),
            rel_err(
                &cpu_model.energy(&z).unwrap(),
                &gpu_model.energy(&zg).unwrap(),
            ),
            TOL,
        );
        let (f_cpu, f_gpu) = (cpu_model.frozen().unwrap(), gpu_model.frozen().unwrap());
        let (ec, gc) = f_cpu.energy_and_grad(&z).unwrap();
        let (eg, gg) = f_gpu.energy_and_grad(&zg).unwrap();
        assert!(gg.device().is_cuda());
        check(&format!("{name}: energy (frozen)"), rel_err(&ec, &eg), TOL);
        check(
            &format!("{name}: input gradient (frozen)"),
            rel_err(&gc, &gg),
            TOL,
        );
        let sampler = Langevin::new(LangevinConfig::matched(0.01, 5)).unwrap();
        let run_c = sampler.run(&f_cpu, &z, &mut seeded_rng(4)).unwrap();
        let run_g = sampler.run(&f_gpu, &zg, &mut seeded_rng(4)).unwrap();
        check(
            &format!("{name}: Langevin samples after 5 steps"),
            rel_err(&run_c.samples, &run_g.samples),
            TOL,
        );
    }
}

/// Two contrastive-divergence steps of the same model on each device: replay buffer, Langevin
/// negatives, loss, gradients (fused on the CPU, autograd on CUDA) and Adam.
fn cd_steps<M: ebm_train::EnergyModel + checkpoint::Checkpoint>(
    name: &str,
    cpu_model: M,
    data: &Tensor,
    labels: Option<&Tensor>,
) {
    let gpu = cuda();
    let gpu_model = copy_to(&cpu_model, &gpu);
    let config = CdConfig {
        langevin: LangevinConfig::igebm().with_steps(5),
        replay_capacity: Some(64),
        adam: AdamConfig::default(),
        ..CdConfig::default()
    };
    let mut cpu_trainer = CdTrainer::new(cpu_model, config.clone()).unwrap();
    let mut gpu_trainer = CdTrainer::new(gpu_model, config).unwrap();
    let data_g = data.to_device(&gpu).unwrap();
    let labels_g = labels.map(|l| l.to_device(&gpu).unwrap());
    let (mut rng_c, mut rng_g) = (seeded_rng(21), seeded_rng(21));
    for step in 1..=2 {
        let lc = cpu_trainer.step(data, labels, &mut rng_c).unwrap();
        let lg = gpu_trainer
            .step(&data_g, labels_g.as_ref(), &mut rng_g)
            .unwrap();
        println!("{name}: step {step}: CPU {lc:?}");
        println!("{name}: step {step}: CUDA {lg:?}");
        // The loss is a difference of means: measure it against the energies' scale.
        let scale = lc.energy_pos.abs().max(lc.energy_neg.abs()).max(1e-6);
        // After one Adam step (betas (0, 0.999): the first update is lr * sign(g)), parameters
        // whose gradient is near zero may move either way, so step 2 gets a looser bound.
        let tol = if step == 1 { TOL } else { 1e-3 };
        check(
            &format!("{name}: step {step} loss"),
            (lc.loss - lg.loss).abs() / scale,
            tol,
        );
        check(
            &format!("{name}: step {step} E+"),
            (lc.energy_pos - lg.energy_pos).abs() / scale,
            tol,
        );
        check(
            &format!("{name}: step {step} E-"),
            (lc.energy_neg - lg.energy_neg).abs() / scale,
            tol,
        );
        check(
            &format!("{name}: step {step} gradient norm"),
            (lc.grad_norm - lg.grad_norm).abs() / lc.grad_norm.abs().max(1e-12),
            tol,
        );
    }
    let worst = cpu_trainer
        .model()
        .params()
        .iter()
        .zip(gpu_trainer.model().params().iter())
        .map(|((n, a), (_, b))| {
            let err = rel_err(a.as_tensor(), b.as_tensor());
            (err, n.to_string())
        })
        .fold((0f64, String::new()), |m, e| if e.0 > m.0 { e } else { m });
    println!(
        "{name}: parameters after 2 steps: worst rel err {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 < 1e-2, "{name}: parameters diverged: {worst:?}");
}

#[test]
fn cd_training_steps_match() {
    let mut rng = seeded_rng(8);
    for (name, cfg) in [
        (
            "CD IGEBM 28x28x1 unconditional",
            IgebmConfig::small(1, 28, 8),
        ),
        (
            "CD IGEBM 32x32x3 conditional",
            IgebmConfig::small(3, 32, 8).conditional(10),
        ),
    ] {
        let model = Igebm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let mut shape = vec![8];
        shape.extend(cfg.sample_shape());
        let data = noise::uniform(&mut rng, shape, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let labels = cfg
            .num_classes
            .map(|k| noise::random_labels(&mut rng, 8, k, &Device::Cpu).unwrap());
        cd_steps(name, model, &data, labels.as_ref());
    }
    let cfg = MlpConfig {
        input_dim: 16,
        hidden: vec![32, 32],
        ..MlpConfig::latent_prior(16)
    };
    let model = Mlp::new(&cfg, &Device::Cpu, &mut rng).unwrap();
    let data = noise::uniform(&mut rng, (8, 16), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    cd_steps("CD MLP 16-32-32-1", model, &data, None);
}
