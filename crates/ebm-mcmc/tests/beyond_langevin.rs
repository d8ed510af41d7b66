//! MALA, HMC, annealing and step-size adaptation against targets with known answers
//! (anisotropic Gaussian, Gaussian mixture, banana, truncated Gaussian), detailed balance,
//! the leapfrog's order, determinism, bad parameters and non-finite energies (issue 8).

use candle_core::{DType, Device, Tensor};
use ebm_core::{
    analytic::{Gaussian, GaussianMixture},
    noise, seeded_rng, Energy,
};
use ebm_mcmc::{
    diagnostics, leapfrog, mala_log_acceptance, mala_log_proposal, targets::Banana, Annealed,
    Error, Hmc, HmcConfig, Langevin, LangevinConfig, Mala, MalaConfig, RunStats, Sampler, Schedule,
};

const CPU: Device = Device::Cpu;

fn rows(x: &Tensor) -> Vec<Vec<f64>> {
    x.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

/// Per-dimension sample means and variances (n - 1 denominator) of `[n, d]` samples.
fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = rows(x);
    let (n, d) = (v.len() as f64, v[0].len());
    let mean: Vec<f64> = (0..d)
        .map(|j| v.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let var = (0..d)
        .map(|j| v.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n - 1.0))
        .collect();
    (mean, var)
}

/// Means within `k` standard errors and variances within `k` standard errors of the normal
/// approximation `var * sqrt(2 / (n - 1))` (times `kurt_factor` for heavier tails).
fn assert_moments(what: &str, x: &Tensor, mean: &[f64], var: &[f64], k: f64, kurt_factor: f64) {
    let n = x.dims()[0] as f64;
    let (m, v) = moments(x);
    for d in 0..mean.len() {
        let se_m = (var[d] / n).sqrt();
        let se_v = var[d] * (2.0 / (n - 1.0)).sqrt() * kurt_factor;
        assert!(
            (m[d] - mean[d]).abs() < k * se_m,
            "{what}, dim {d}: mean {} vs {} (se {se_m})",
            m[d],
            mean[d]
        );
        assert!(
            (v[d] - var[d]).abs() < k * se_v,
            "{what}, dim {d}: variance {} vs {} (se {se_v})",
            v[d],
            var[d]
        );
    }
}

fn anisotropic() -> Gaussian {
    Gaussian::new(vec![1.0, -2.0, 0.5], vec![0.25, 4.0, 1.0]).unwrap()
}

#[test]
fn mala_recovers_an_anisotropic_gaussian_and_meets_its_target_acceptance() {
    let target = anisotropic();
    let mala = Mala::new(MalaConfig::new(0.05, 300).with_adaptation(150, 0.574)).unwrap();
    let mut rng = seeded_rng(1);
    let x0 = noise::normal(&mut rng, (2000, 3), DType::F64, &CPU).unwrap();
    let run = mala.run(&target, &x0, &mut rng).unwrap();
    assert_moments(
        "MALA",
        &run.samples,
        target.mean(),
        target.variance(),
        4.0,
        1.0,
    );
    let acc = run.stats.mean_accept_prob();
    assert!((acc - 0.574).abs() < 0.04, "acceptance {acc}");
    assert_eq!(run.stats.step_size_trace.len(), 450);
    assert_eq!(run.stats.grad_evals, 451);
    assert_eq!(run.stats.total_divergences(), 0);
}

/// Ten dimensions, variances from 0.25 to 4. (In very few dimensions the acceptance of HMC
/// falls off a cliff where `eps` reaches the leapfrog's stability limit `2 sd_min`, and no step
/// size has a mean acceptance in between: dual averaging then hovers at the cliff's edge. See
/// `HmcConfig::with_adaptation` for why the HMC tests target 0.8.)
fn ten_dimensional() -> Gaussian {
    let mean: Vec<f64> = (0..10).map(|d| d as f64 * 0.3 - 1.0).collect();
    let var: Vec<f64> = (0..10).map(|d| 0.25 * 16f64.powf(d as f64 / 9.0)).collect();
    Gaussian::new(mean, var).unwrap()
}

#[test]
fn hmc_recovers_an_anisotropic_gaussian_and_meets_its_target_acceptance() {
    let target = ten_dimensional();
    let hmc = Hmc::new(HmcConfig::new(0.1, 10, 100).with_adaptation(150, 0.8)).unwrap();
    let mut rng = seeded_rng(2);
    let x0 = noise::normal(&mut rng, (2000, 10), DType::F64, &CPU).unwrap();
    let run = hmc.run(&target, &x0, &mut rng).unwrap();
    assert_moments(
        "HMC",
        &run.samples,
        target.mean(),
        target.variance(),
        4.0,
        1.0,
    );
    let acc = run.stats.mean_accept_prob();
    assert!((acc - 0.8).abs() < 0.05, "acceptance {acc}");
    assert_eq!(run.stats.grad_evals, 1 + 250 * 10);
}

/// The banana's moments (`E x = 0`, `Var x1 = s^2`, `Var x2 = 1 + 2 b^2 s^4`) and the
/// Wasserstein distance of each coordinate to exact samples.
#[test]
fn mala_and_hmc_sample_the_banana() {
    let banana = Banana::new(1.0, 0.5).unwrap();
    let exact = banana
        .exact_samples(20_000, DType::F64, &CPU, &mut seeded_rng(30))
        .unwrap();
    let exact_cols: Vec<Vec<f64>> = (0..2)
        .map(|d| rows(&exact).iter().map(|r| r[d]).collect())
        .collect();
    let samplers: Vec<Box<dyn Sampler>> = vec![
        Box::new(Mala::new(MalaConfig::new(0.1, 200).with_adaptation(150, 0.574)).unwrap()),
        Box::new(Hmc::new(HmcConfig::new(0.2, 8, 60).with_adaptation(60, 0.65)).unwrap()),
    ];
    for (i, sampler) in samplers.iter().enumerate() {
        let mut rng = seeded_rng(31 + i as u64);
        let x0 = noise::normal(&mut rng, (1500, 2), DType::F64, &CPU).unwrap();
        let run = sampler.run(&banana, &x0, &mut rng).unwrap();
        // x2 has heavier tails than a normal (kurtosis ~ 5): widen its variance bound.
        assert_moments(
            &sampler.name(),
            &run.samples,
            &banana.mean(),
            &banana.variance(),
            4.0,
            1.6,
        );
        let got = rows(&run.samples);
        for d in 0..2 {
            let col: Vec<f64> = got.iter().map(|r| r[d]).collect();
            let w = diagnostics::wasserstein1(&col, &exact_cols[d]).unwrap();
            // Two independent sets of 1500 and 20,000 exact draws are about 0.03 apart.
            assert!(w < 0.08, "{}: W1 of x{} = {w}", sampler.name(), d + 1);
        }
    }
}

/// The mixture `0.25 N(-1.5, 0.5) + 0.75 N(1.5, 0.5)` with every chain started in the light
/// mode: annealed MALA (temperatures 6 -> 1) and a longer HMC run both recover the weights,
/// estimated without bias by the mean posterior responsibility of each component.
#[test]
fn mixture_weights_are_recovered_by_annealed_mala_and_by_hmc() {
    let mix = GaussianMixture::new(
        vec![0.25, 0.75],
        vec![vec![-1.5], vec![1.5]],
        vec![0.5, 0.5],
    )
    .unwrap();
    let chains = 1000;
    let start = || {
        let mut rng = seeded_rng(40);
        let x0 = noise::normal(&mut rng, (chains, 1), DType::F64, &CPU)
            .unwrap()
            .affine(0.1, -1.5)
            .unwrap();
        (x0, rng)
    };
    let weight_of_heavy_mode = |x: &Tensor| {
        let r = mix.responsibilities(x).unwrap().to_vec2::<f64>().unwrap();
        r.iter().map(|r| r[1]).sum::<f64>() / r.len() as f64
    };

    let annealed = Annealed::tempered(
        Mala::new(MalaConfig::new(0.3, 120).with_adaptation(40, 0.574)).unwrap(),
        vec![6.0, 3.0, 1.8, 1.3, 1.0],
    )
    .unwrap();
    let (x0, mut rng) = start();
    let run = annealed.run(&mix, &x0, &mut rng).unwrap();
    let w = weight_of_heavy_mode(&run.samples);
    assert!((w - 0.75).abs() < 0.05, "annealed MALA: weight {w}");
    assert_eq!(run.stats.stages.len(), 5);
    assert_eq!(run.stats.steps, 5 * 120);
    assert_eq!(run.stats.sampler, "annealed MALA");

    let hmc = Hmc::new(HmcConfig::new(0.3, 6, 250).with_adaptation(50, 0.65)).unwrap();
    let (x0, mut rng) = start();
    let run = hmc.run(&mix, &x0, &mut rng).unwrap();
    let w = weight_of_heavy_mode(&run.samples);
    assert!((w - 0.75).abs() < 0.05, "HMC: weight {w}");
}

/// Detailed balance of the MALA kernel, exactly, for pairs `(x, y)` on the banana:
/// `pi(x) q(y | x) a(x, y) = pi(y) q(x | y) a(y, x)` in logs. With the proposal density's
/// variance wrong (`/ (2 eta)` for `/ (4 eta)`), or without the proposal ratio at all, the same
/// identity fails.
#[test]
fn mala_satisfies_detailed_balance_exactly_and_a_wrong_proposal_density_does_not() {
    let banana = Banana::new(1.0, 0.8).unwrap();
    let eta = 0.3;
    let mut rng = seeded_rng(50);
    let x = banana
        .exact_samples(64, DType::F64, &CPU, &mut rng)
        .unwrap();
    let (e_x, g_x) = banana.energy_and_grad(&x).unwrap();
    let y = ((&x - (&g_x * eta).unwrap()).unwrap()
        + (noise::normal_like(&mut rng, &x).unwrap() * (2.0 * eta).sqrt()).unwrap())
    .unwrap();
    let (e_y, g_y) = banana.energy_and_grad(&y).unwrap();
    let (e_x, e_y) = (e_x.to_vec1::<f64>().unwrap(), e_y.to_vec1::<f64>().unwrap());
    let a_xy = mala_log_acceptance(&banana, &x, &y, eta).unwrap();
    let a_yx = mala_log_acceptance(&banana, &y, &x, eta).unwrap();
    let q_yx = mala_log_proposal(&y, &x, &g_x, eta).unwrap(); // log q(y | x)
    let q_xy = mala_log_proposal(&x, &y, &g_y, eta).unwrap(); // log q(x | y)
    let mut worst_wrong: f64 = 0.0;
    let mut worst_uncorrected: f64 = 0.0;
    for c in 0..64 {
        let forward = -e_x[c] + q_yx[c] + a_xy[c].min(0.0);
        let backward = -e_y[c] + q_xy[c] + a_yx[c].min(0.0);
        assert!(
            (forward - backward).abs() < 1e-9,
            "pair {c}: {forward} vs {backward}"
        );
        assert!((a_xy[c] + a_yx[c]).abs() < 1e-9);
        // The same kernel with a proposal density of the wrong variance in the ratio.
        let wrong = |q: f64| q * 2.0; // -||.||^2 / (2 eta) instead of / (4 eta)
        let wa_xy = e_x[c] - e_y[c] + wrong(q_xy[c]) - wrong(q_yx[c]);
        let wa_yx = -wa_xy;
        let wf = -e_x[c] + q_yx[c] + wa_xy.min(0.0);
        let wb = -e_y[c] + q_xy[c] + wa_yx.min(0.0);
        worst_wrong = worst_wrong.max((wf - wb).abs());
        // Metropolis with the energy ratio alone, as if the proposal were symmetric.
        let ua = e_x[c] - e_y[c];
        let uf = -e_x[c] + q_yx[c] + ua.min(0.0);
        let ub = -e_y[c] + q_xy[c] + (-ua).min(0.0);
        worst_uncorrected = worst_uncorrected.max((uf - ub).abs());
    }
    assert!(worst_wrong > 0.1, "wrong density: {worst_wrong}");
    assert!(
        worst_uncorrected > 0.1,
        "no proposal ratio: {worst_uncorrected}"
    );
}

fn det(mut a: Vec<Vec<f64>>) -> f64 {
    let n = a.len();
    let mut det = 1.0;
    for i in 0..n {
        let p = (i..n)
            .max_by(|&r, &s| a[r][i].abs().total_cmp(&a[s][i].abs()))
            .unwrap();
        if p != i {
            a.swap(p, i);
            det = -det;
        }
        det *= a[i][i];
        for r in i + 1..n {
            let f = a[r][i] / a[i][i];
            for c in i..n {
                a[r][c] -= f * a[i][c];
            }
        }
    }
    det
}

/// What makes HMC's Metropolis test with the Hamiltonian exact: the leapfrog map is reversible
/// (flip the end momentum and it returns to the start) and preserves volume (|det J| = 1, here
/// by central differences on the banana).
#[test]
fn leapfrog_is_reversible_and_volume_preserving() {
    let banana = Banana::new(1.0, 0.8).unwrap();
    let mut rng = seeded_rng(60);
    let x = banana
        .exact_samples(16, DType::F64, &CPU, &mut rng)
        .unwrap();
    let p = noise::normal(&mut rng, (16, 2), DType::F64, &CPU).unwrap();
    let (_, g) = banana.energy_and_grad(&x).unwrap();
    let (eps, l) = (0.05, 20);
    let end = leapfrog(&banana, &x, &p, &g, eps, l).unwrap();
    let back = leapfrog(
        &banana,
        &end.x,
        &end.momentum.neg().unwrap(),
        &end.grad,
        eps,
        l,
    )
    .unwrap();
    for (a, b) in rows(&back.x)
        .iter()
        .flatten()
        .zip(rows(&x).iter().flatten())
    {
        assert!((a - b).abs() < 1e-10, "position {a} vs {b}");
    }
    for (a, b) in rows(&back.momentum)
        .iter()
        .flatten()
        .zip(rows(&p).iter().flatten())
    {
        assert!((a + b).abs() < 1e-10, "momentum {a} vs {}", -b);
    }

    // The Jacobian of (x1, x2, p1, p2) -> leapfrog end, at the first start point.
    let z0: Vec<f64> = rows(&x)[0].iter().chain(&rows(&p)[0]).copied().collect();
    let h = 1e-5;
    let mut starts = Vec::new();
    for j in 0..4 {
        for sign in [1.0, -1.0] {
            let mut z = z0.clone();
            z[j] += sign * h;
            starts.push(z);
        }
    }
    let xs: Vec<f64> = starts.iter().flat_map(|z| [z[0], z[1]]).collect();
    let ps: Vec<f64> = starts.iter().flat_map(|z| [z[2], z[3]]).collect();
    let xs = Tensor::from_vec(xs, (8, 2), &CPU).unwrap();
    let ps = Tensor::from_vec(ps, (8, 2), &CPU).unwrap();
    let (_, gs) = banana.energy_and_grad(&xs).unwrap();
    let ends = leapfrog(&banana, &xs, &ps, &gs, eps, l).unwrap();
    let ex = rows(&ends.x);
    let ep = rows(&ends.momentum);
    let out = |k: usize| [ex[k][0], ex[k][1], ep[k][0], ep[k][1]];
    let mut jac = vec![vec![0.0; 4]; 4];
    for j in 0..4 {
        let (plus, minus) = (out(2 * j), out(2 * j + 1));
        for i in 0..4 {
            jac[i][j] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    let d = det(jac);
    assert!((d - 1.0).abs() < 1e-6, "det J = {d}");
}

/// The energy error of a leapfrog trajectory of fixed length `L eps = 1` is O(eps^2): halving
/// the step quarters the mean |H(x', p') - H(x, p)|.
#[test]
fn leapfrog_energy_error_is_second_order_in_the_step_size() {
    let target = Gaussian::new(vec![0.5, -1.0], vec![1.0, 0.4]).unwrap();
    let mut rng = seeded_rng(70);
    let z = noise::normal(&mut rng, (256, 2), DType::F64, &CPU).unwrap();
    let sd = Tensor::new(&[[1.0f64, 0.4f64.sqrt()]], &CPU).unwrap();
    let mean = Tensor::new(&[[0.5f64, -1.0]], &CPU).unwrap();
    let x = z.broadcast_mul(&sd).unwrap().broadcast_add(&mean).unwrap();
    let p = noise::normal(&mut rng, (256, 2), DType::F64, &CPU).unwrap();
    let (e0, g0) = target.energy_and_grad(&x).unwrap();
    let h = |e: &Tensor, p: &Tensor| -> Vec<f64> {
        let k = (p.sqr().unwrap().sum(1).unwrap() * 0.5).unwrap();
        (e + k).unwrap().to_vec1::<f64>().unwrap()
    };
    let h0 = h(&e0, &p);
    let error = |eps: f64, steps: usize| {
        let end = leapfrog(&target, &x, &p, &g0, eps, steps).unwrap();
        let h1 = h(&end.energy, &end.momentum);
        h1.iter().zip(&h0).map(|(a, b)| (a - b).abs()).sum::<f64>() / 256.0
    };
    let errs = [
        error(0.2, 5),
        error(0.1, 10),
        error(0.05, 20),
        error(0.025, 40),
    ];
    for w in errs.windows(2) {
        let ratio = w[0] / w[1];
        assert!((ratio - 4.0).abs() < 0.25, "errors {errs:?}: ratio {ratio}");
    }
}

/// Chains started at exact samples stay at the target under MALA and HMC at large step sizes:
/// on the banana, moments unchanged within 4 standard errors. The unadjusted versions of the
/// same moves drift away on a Gaussian (where they cannot blow up): the unadjusted Langevin
/// chain to its own stationary variance `s^2 / (1 - eta / (2 s^2))`, unadjusted HMC by O(eps^2).
#[test]
fn adjusted_chains_started_at_the_target_stay_there_and_unadjusted_ones_drift() {
    let n = 10_000;
    let (eta, eps, l) = (0.25, 0.6, 4);
    let banana = Banana::new(1.0, 0.3).unwrap();
    let x0 = banana
        .exact_samples(n, DType::F64, &CPU, &mut seeded_rng(80))
        .unwrap();
    let adjusted: Vec<Box<dyn Sampler>> = vec![
        Box::new(Mala::new(MalaConfig::new(eta, 30)).unwrap()),
        Box::new(Hmc::new(HmcConfig::new(eps, l, 15)).unwrap()),
    ];
    for sampler in &adjusted {
        let run = sampler.run(&banana, &x0, &mut seeded_rng(81)).unwrap();
        assert!(
            run.stats.mean_accept_prob() < 0.97,
            "{}: a real test",
            sampler.name()
        );
        assert_moments(
            &sampler.name(),
            &run.samples,
            &banana.mean(),
            &banana.variance(),
            4.0,
            1.6,
        );
    }

    let gauss = Gaussian::new(vec![0.5, -1.0], vec![1.0, 0.5]).unwrap();
    let z = noise::normal(&mut seeded_rng(82), (n, 2), DType::F64, &CPU).unwrap();
    let x0 = z
        .broadcast_mul(&Tensor::new(&[[1.0f64, 0.5f64.sqrt()]], &CPU).unwrap())
        .unwrap()
        .broadcast_add(&Tensor::new(&[[0.5f64, -1.0]], &CPU).unwrap())
        .unwrap();
    let se = (2.0 / (n as f64 - 1.0)).sqrt(); // relative standard error of a variance
    let ula = Langevin::new(LangevinConfig::matched(eta, 30)).unwrap();
    let run = Sampler::run(&ula, &gauss, &x0, &mut seeded_rng(83)).unwrap();
    let (_, v) = moments(&run.samples);
    for d in 0..2 {
        let s2 = gauss.variance()[d];
        let biased = s2 / (1.0 - eta / (2.0 * s2));
        assert!(
            (v[d] / biased - 1.0).abs() < 4.0 * se && v[d] / s2 - 1.0 > 8.0 * se,
            "ULA dim {d}: variance {v:?}, its own stationary {biased}, target {s2}"
        );
    }
    let uhmc = Hmc::new(HmcConfig::new(eps, l, 15).unadjusted()).unwrap();
    let run = uhmc.run(&gauss, &x0, &mut seeded_rng(84)).unwrap();
    let (_, v) = moments(&run.samples);
    let rel = v[1] / gauss.variance()[1] - 1.0;
    assert!(rel > 4.0 * se, "unadjusted HMC: Var x2 off by only {rel}");
    for sampler in &adjusted {
        let run = sampler.run(&gauss, &x0, &mut seeded_rng(85)).unwrap();
        assert_moments(
            &sampler.name(),
            &run.samples,
            gauss.mean(),
            gauss.variance(),
            4.0,
            1.0,
        );
    }
}

/// Dual averaging follows the target: a lower target gives a larger step size, and after
/// warm-up the mean acceptance is within 0.05 of each target.
#[test]
fn dual_averaging_reaches_each_target_acceptance() {
    let target = anisotropic();
    let mut steps = Vec::new();
    for goal in [0.3, 0.6, 0.9] {
        let mala = Mala::new(MalaConfig::new(1.0, 400).with_adaptation(300, goal)).unwrap();
        let mut rng = seeded_rng(90);
        let x0 = noise::normal(&mut rng, (200, 3), DType::F64, &CPU).unwrap();
        let run = mala.run(&target, &x0, &mut rng).unwrap();
        let acc = run.stats.mean_accept_prob();
        assert!((acc - goal).abs() < 0.05, "MALA target {goal}: {acc}");
        // Frozen after warm-up.
        let after = &run.stats.step_size_trace[300..];
        assert!(after.iter().all(|&s| s == run.stats.step_size));
        steps.push(run.stats.step_size);
    }
    assert!(steps[0] > steps[1] && steps[1] > steps[2], "{steps:?}");

    let hmc = Hmc::new(HmcConfig::new(0.1, 10, 100).with_adaptation(400, 0.8)).unwrap();
    let mut rng = seeded_rng(91);
    let x0 = noise::normal(&mut rng, (200, 10), DType::F64, &CPU).unwrap();
    let acc = hmc
        .run(&ten_dimensional(), &x0, &mut rng)
        .unwrap()
        .stats
        .mean_accept_prob();
    assert!((acc - 0.8).abs() < 0.03, "HMC target 0.8: {acc}");
}

/// On N(0, 1) a leapfrog trajectory of length `L eps = 2 pi` is (nearly) one period of the
/// oscillator: every chain returns close to where it started and the chains barely move (ESS a
/// small fraction of the draws). Step-size jitter spreads the trajectory lengths and the chains
/// mix.
#[test]
fn jitter_breaks_the_resonance_of_a_trajectory_of_one_period() {
    let target = Gaussian::isotropic(vec![0.0], 1.0).unwrap();
    let x0 = noise::normal(&mut seeded_rng(130), (50, 1), DType::F64, &CPU).unwrap();
    let l = 20;
    let eps = 2.0 * std::f64::consts::PI / l as f64;
    let ess = |jitter: f64| {
        let hmc = Hmc::new(
            HmcConfig::new(eps, l, 100)
                .with_jitter(jitter)
                .with_trace(1, 1),
        )
        .unwrap();
        let run = hmc.run(&target, &x0, &mut seeded_rng(131)).unwrap();
        diagnostics::ess(&run.draws.coords[0]).unwrap()
    };
    let (still, mixing) = (ess(0.0), ess(0.5));
    assert!(still < 200.0, "without jitter: ESS {still} of 5000 draws");
    assert!(mixing > 2000.0, "with jitter: ESS {mixing} of 5000 draws");
}

/// Each chain accepts or rejects on its own: after one MALA step at a large step size some
/// chains moved and some did not, each row entirely or not at all, as its own accept rate says.
#[test]
fn each_chain_takes_its_own_accept_reject_decision() {
    let banana = Banana::new(1.0, 0.5).unwrap();
    let x0 = banana
        .exact_samples(400, DType::F64, &CPU, &mut seeded_rng(100))
        .unwrap();
    let run = Mala::new(MalaConfig::new(1.0, 1))
        .unwrap()
        .run(&banana, &x0, &mut seeded_rng(101))
        .unwrap();
    let (a, b) = (rows(&x0), rows(&run.samples));
    let mut moved = 0;
    for c in 0..400 {
        let same = [a[c][0] == b[c][0], a[c][1] == b[c][1]];
        assert_eq!(same[0], same[1], "chain {c} moved in one coordinate only");
        let accepted = run.stats.accept_rate[c] == 1.0;
        assert_eq!(accepted, !same[0], "chain {c}");
        moved += accepted as usize;
    }
    assert!((40..360).contains(&moved), "{moved} of 400 chains moved");
}

#[test]
fn same_seed_gives_the_same_samples_for_every_sampler() {
    let banana = Banana::new(1.0, 0.5).unwrap();
    let samplers: Vec<Box<dyn Sampler>> = vec![
        Box::new(Langevin::new(LangevinConfig::matched(0.05, 10)).unwrap()),
        Box::new(Mala::new(MalaConfig::new(0.2, 10).with_adaptation(5, 0.6)).unwrap()),
        Box::new(
            Hmc::new(
                HmcConfig::new(0.2, 3, 10)
                    .with_adaptation(5, 0.6)
                    .with_jitter(0.2),
            )
            .unwrap(),
        ),
        Box::new(Hmc::new(HmcConfig::new(0.2, 3, 10).unadjusted()).unwrap()),
        Box::new(
            Annealed::tempered(
                Mala::new(MalaConfig::new(0.2, 5)).unwrap(),
                vec![4.0, 2.0, 1.0],
            )
            .unwrap(),
        ),
    ];
    for sampler in &samplers {
        let go = |seed| {
            let mut rng = seeded_rng(seed);
            let x0 = noise::normal(&mut rng, (8, 2), DType::F32, &CPU).unwrap();
            let run = sampler.run(&banana, &x0, &mut rng).unwrap();
            let stats = RunStats {
                seconds: 0.0,
                ..run.stats
            };
            (run.samples.to_vec2::<f32>().unwrap(), stats, run.draws)
        };
        assert_eq!(go(5), go(5), "{}", sampler.name());
        assert_ne!(go(5).0, go(6).0, "{}", sampler.name());
    }
}

/// Langevin through the trait makes the same moves as its own `run`, so a trainer can switch
/// to the trait without changing its samples.
#[test]
fn langevin_through_the_trait_matches_its_own_run() {
    let target = Gaussian::isotropic(vec![0.3; 4], 0.1).unwrap();
    let sampler = Langevin::new(LangevinConfig {
        step_size: 0.05,
        noise_scale: 0.1,
        steps: 20,
        grad_clip: Some(0.5),
        clamp: Some((0.0, 1.0)),
    })
    .unwrap();
    let x0 = noise::uniform(&mut seeded_rng(0), (16, 4), 0.0, 1.0, DType::F32, &CPU).unwrap();
    let own = sampler.run(&target, &x0, &mut seeded_rng(7)).unwrap();
    let via: &dyn Sampler = &sampler;
    let trait_run = via.run(&target, &x0, &mut seeded_rng(7)).unwrap();
    assert_eq!(
        own.samples.to_vec2::<f32>().unwrap(),
        trait_run.samples.to_vec2::<f32>().unwrap()
    );
    assert_eq!(trait_run.stats.accept_prob, vec![1.0; 16]);
    assert_eq!(trait_run.stats.energy_trace.len(), 20);
}

/// How a generic caller (a trainer with `R: Rng + ?Sized`, `E: Energy`) calls the trait.
fn generic_caller<E: Energy, R: rand::Rng + ?Sized>(
    sampler: &dyn Sampler,
    energy: &E,
    x0: &Tensor,
    mut rng: &mut R,
) -> ebm_mcmc::Result<Tensor> {
    Ok(sampler.run(&energy, x0, &mut rng)?.samples)
}

/// An AND of two concepts, as a composition would build it: the sum of two energies.
struct Sum(Vec<Box<dyn Energy>>);

impl Energy for Sum {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let mut e = self.0[0].energy(x)?;
        for t in &self.0[1..] {
            e = (e + t.energy(x)?)?;
        }
        Ok(e)
    }
}

/// The product of N(m1, v1) and N(m2, v2) is N((m1 v2 + m2 v1) / (v1 + v2), v1 v2 / (v1 + v2)):
/// annealed HMC from a broad base, interpolating to the composed energy (autograd gradient),
/// recovers it; the statistics serialise to JSON and the diagnostics say the chains agree.
#[test]
fn annealed_hmc_samples_a_composed_energy() {
    let (m1, v1, m2, v2) = ([2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [1.0, 2.0]);
    let and = Sum(vec![
        Box::new(Gaussian::new(m1.to_vec(), v1.to_vec()).unwrap()),
        Box::new(Gaussian::new(m2.to_vec(), v2.to_vec()).unwrap()),
    ]);
    let mean: Vec<f64> = (0..2)
        .map(|d| (m1[d] * v2[d] + m2[d] * v1[d]) / (v1[d] + v2[d]))
        .collect();
    let var: Vec<f64> = (0..2).map(|d| v1[d] * v2[d] / (v1[d] + v2[d])).collect();
    let base = Gaussian::isotropic(vec![0.0, 0.0], 9.0).unwrap();
    let inner = Hmc::new(
        HmcConfig::new(0.3, 5, 40)
            .with_adaptation(20, 0.65)
            .with_trace(2, 1),
    )
    .unwrap();
    let Schedule::Interpolation(betas) = Schedule::linear(4).unwrap() else {
        unreachable!()
    };
    let annealed = Annealed::interpolated(inner, &base, betas).unwrap();
    let mut rng = seeded_rng(110);
    let x0 = (noise::normal(&mut rng, (1000, 2), DType::F64, &CPU).unwrap() * 3.0).unwrap();
    let samples = generic_caller(&annealed, &and, &x0, &mut rng).unwrap();
    assert_moments("annealed HMC", &samples, &mean, &var, 4.0, 1.0);

    // Longer chains (200 draws each) for the statistics and diagnostics, with step-size jitter:
    // without it an adapted `L eps` near a period of the Gaussian leaves chains nearly still
    // (see `jitter_breaks_the_resonance_of_a_trajectory_of_one_period`).
    let inner = Hmc::new(
        HmcConfig::new(0.3, 5, 200)
            .with_adaptation(20, 0.65)
            .with_jitter(0.3)
            .with_trace(2, 1),
    )
    .unwrap();
    let annealed = Annealed::new(inner, Schedule::linear(4).unwrap(), Some(&base)).unwrap();
    let x0 = x0.narrow(0, 0, 100).unwrap();
    let run = annealed.run(&and, &x0, &mut seeded_rng(111)).unwrap();
    let json = serde_json::to_string(&run.stats).unwrap();
    // serde_json parses floats to within an ulp (exactly only with its float_roundtrip feature).
    let back: RunStats = serde_json::from_str(&json).unwrap();
    assert_eq!(back.sampler, run.stats.sampler);
    assert_eq!(back.divergences, run.stats.divergences);
    assert_eq!(back.grad_evals, run.stats.grad_evals);
    for (a, b) in back.energy_trace.iter().zip(&run.stats.energy_trace) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0));
    }
    assert_eq!(run.stats.stages.len(), 4);
    assert_eq!(run.stats.grad_evals, 4 * (1 + 220 * 5));
    assert_eq!(run.draws.len(), 200);
    let d = run.diagnostics().unwrap();
    let (rhat, ess) = (&d.rhat, &d.ess);
    assert!(
        rhat.iter().chain([&d.rhat_energy]).all(|r| *r < 1.03),
        "R-hat {rhat:?}, energy {}",
        d.rhat_energy
    );
    assert!(
        ess.iter().chain([&d.ess_energy]).all(|e| *e > 2000.0),
        "ESS {ess:?}, energy {}",
        d.ess_energy
    );
    assert!(serde_json::to_string(&d)
        .unwrap()
        .contains("\"ess_energy\""));
}

#[test]
fn bad_parameters_are_errors_naming_the_parameter() {
    let msg = |r: ebm_mcmc::Result<()>| r.unwrap_err().to_string();
    let mala = |c: MalaConfig| msg(Mala::new(c).map(|_| ()));
    let hmc = |c: HmcConfig| msg(Hmc::new(c).map(|_| ()));
    assert_eq!(
        mala(MalaConfig::new(0.0, 10)),
        "invalid step_size: must be a finite number > 0, got 0"
    );
    assert_eq!(
        mala(MalaConfig::new(0.1, 0)),
        "invalid steps: must be at least 1, got 0"
    );
    assert!(mala(MalaConfig::new(0.1, 10).with_adaptation(0, 0.5)).starts_with("invalid warmup"));
    for bad in [0.0, 1.0, 1.5] {
        assert!(mala(MalaConfig::new(0.1, 10).with_adaptation(10, bad))
            .starts_with("invalid target_accept: must lie strictly between 0 and 1"),);
    }
    assert!(mala(MalaConfig::new(0.1, 10).with_trace(1, 0)).starts_with("invalid trace.every"));
    assert_eq!(
        hmc(HmcConfig::new(0.1, 0, 10)),
        "invalid leapfrog_steps: must be at least 1, got 0"
    );
    assert!(hmc(HmcConfig::new(-1.0, 5, 10)).starts_with("invalid step_size"));
    assert_eq!(
        hmc(HmcConfig::new(0.1, 5, 10).with_jitter(1.0)),
        "invalid jitter: must lie in [0, 1), got 1"
    );
    assert!(hmc(HmcConfig::new(0.1, 5, 10).with_adaptation(5, f64::NAN))
        .starts_with("invalid target_accept"));

    let inner = || Mala::new(MalaConfig::new(0.1, 5)).unwrap();
    let tempered = |t: Vec<f64>| msg(Annealed::tempered(inner(), t).map(|_| ()));
    assert_eq!(
        tempered(vec![]),
        "invalid temperatures: the schedule is empty; give at least one stage"
    );
    assert_eq!(
        tempered(vec![4.0, 2.0, 3.0]),
        "invalid temperatures: must be non-increasing (annealing cools), got 2 at stage 2 then 3 at stage 3"
    );
    assert!(tempered(vec![2.0, 0.0]).starts_with("invalid temperatures: stage 2 is 0"));
    let base = Gaussian::isotropic(vec![0.0], 1.0).unwrap();
    let interp = |b: Vec<f64>| msg(Annealed::interpolated(inner(), &base, b).map(|_| ()));
    assert!(interp(vec![0.5, 0.2]).starts_with("invalid betas: must be non-decreasing"));
    assert!(interp(vec![0.5, 1.2]).starts_with("invalid betas: stage 2 is 1.2"));
    assert_eq!(
        msg(Annealed::new(inner(), Schedule::Interpolation(vec![1.0]), None).map(|_| ())),
        "invalid base: an interpolation schedule needs a base energy E_0"
    );

    // Bad starting points.
    let banana = Banana::new(1.0, 0.5).unwrap();
    let x = Tensor::zeros((4, 3), DType::F32, &CPU).unwrap();
    let err = inner()
        .run(&banana, &x, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "MALA start: expected shape [batch >= 1, 2], got [4, 3]"
    );
    let nan = Tensor::new(&[[0f32, f32::NAN]], &CPU).unwrap();
    let err = inner()
        .run(&banana, &nan, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "MALA start contains NaN or infinite values");
}

/// `E(x) = ||x||^2 / 2` below a wall at x_d = 1 and infinite beyond: a truncated normal.
struct Walled;

impl Energy for Walled {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let quad = (x.sqr()?.sum(1)? * 0.5)?;
        let beyond = x.ge(1.0)?.to_dtype(x.dtype())?.sum(1)?;
        let inf = Tensor::full(f64::INFINITY, beyond.shape(), x.device())?.to_dtype(x.dtype())?;
        let zeros = beyond.zeros_like()?;
        Ok((quad + beyond.gt(0.0)?.where_cond(&inf, &zeros)?)?)
    }
    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        Ok((self.energy(x)?, x.clone()))
    }
}

/// An energy that is infinite everywhere but at 0.
struct Exploding;

impl Energy for Exploding {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        Ok((x.sqr()?.sum(1)? * 1e30)?.exp()?)
    }
}

/// Adjusted samplers reject non-finite proposals (counted as divergences) and stay exact: on
/// the normal truncated at 1, the mean is -phi(1) / Phi(1) = -0.287600. Unadjusted samplers
/// fail with a `SamplerDiverged` error naming the sampler and the iteration.
#[test]
fn non_finite_energies_are_rejected_or_errors_never_nan_samples() {
    let chains = 1000;
    let x0 = (Tensor::ones((chains, 1), DType::F64, &CPU).unwrap() * 0.5).unwrap();
    for sampler in [
        Box::new(Mala::new(MalaConfig::new(0.8, 40)).unwrap()) as Box<dyn Sampler>,
        Box::new(Hmc::new(HmcConfig::new(0.5, 4, 20)).unwrap()),
    ] {
        let run = sampler.run(&Walled, &x0, &mut seeded_rng(120)).unwrap();
        let v: Vec<f64> = rows(&run.samples).into_iter().flatten().collect();
        assert!(
            v.iter().all(|x| x.is_finite() && *x < 1.0),
            "{}",
            sampler.name()
        );
        assert!(run.stats.total_divergences() > 0);
        let mean = v.iter().sum::<f64>() / chains as f64;
        // Truncated-normal variance 1 - 0.2876 - 0.2876^2 = 0.6297: se 0.025.
        assert!(
            (mean + 0.287600).abs() < 0.1,
            "{}: mean {mean}",
            sampler.name()
        );
    }

    let x0 = Tensor::zeros((3, 2), DType::F32, &CPU).unwrap();
    let run = Hmc::new(HmcConfig::new(0.1, 2, 5))
        .unwrap()
        .run(&Exploding, &x0, &mut seeded_rng(0))
        .unwrap();
    assert_eq!(run.samples.to_vec2::<f32>().unwrap(), vec![vec![0.0; 2]; 3]);
    assert_eq!(run.stats.divergences, vec![5; 3]);

    let err = Hmc::new(HmcConfig::new(0.1, 2, 5).unadjusted())
        .unwrap()
        .run(&Exploding, &x0, &mut seeded_rng(0))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SamplerDiverged {
                iteration: 1,
                iterations: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("unadjusted HMC, iteration 1 of 5: the Hamiltonian of chain 0"),
        "{err}"
    );
    let err = (&Langevin::new(LangevinConfig::matched(1.0, 5)).unwrap() as &dyn Sampler)
        .run(&Exploding, &x0, &mut seeded_rng(0))
        .unwrap_err();
    assert!(matches!(err, Error::SamplerDiverged { .. }), "{err}");
    let err = Annealed::tempered(
        Hmc::new(HmcConfig::new(0.1, 2, 5).unadjusted()).unwrap(),
        vec![2.0, 1.0],
    )
    .unwrap()
    .run(&Exploding, &x0, &mut seeded_rng(0))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("annealed unadjusted HMC, stage 1 of 2 (2)"),
        "{err}"
    );

    let at_wall = Tensor::new(&[[2.0f64]], &CPU).unwrap();
    let err = Mala::new(MalaConfig::new(0.1, 5))
        .unwrap()
        .run(&Walled, &at_wall, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "the energy of the MALA start contains NaN or infinite values"
    );
}
