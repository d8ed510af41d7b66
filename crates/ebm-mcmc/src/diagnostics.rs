//! Convergence and efficiency diagnostics as plain numbers: effective sample size, split R-hat
//! (classic and rank-normalised), and a one-dimensional Wasserstein distance for comparing
//! samples with exact draws. Chains are given as `&[Vec<f64>]`, one `Vec` per chain, all of one
//! length (the layout of [`crate::Draws`]).
//!
//! - [`ess`]: the multi-chain effective sample size of Vehtari, Gelman, Simpson, Carpenter &
//!   Bürkner (2021), as Stan and ArviZ compute it (ArviZ `ess(method="mean")`): chains split in
//!   halves, autocorrelations combined across chains through the within- and between-chain
//!   variances, truncated by Geyer's initial positive sequence and made monotone by Geyer's
//!   initial monotone sequence, `tau` floored at `1 / log10(M N)`.
//! - [`split_rhat`]: Gelman & Rubin's potential scale reduction on split chains (Gelman et al.,
//!   BDA3 eq. 11.4); [`rank_normalized_split_rhat`]: Vehtari et al.'s version, the larger of the
//!   split R-hats of the rank-normalised draws and of the rank-normalised folded draws.
//!
//! ```
//! use ebm_mcmc::diagnostics::{ess, split_rhat};
//!
//! # fn main() -> ebm_mcmc::Result<()> {
//! // Two chains stuck at different levels: R-hat far above 1.
//! let a: Vec<f64> = (0..100).map(|i| (i % 7) as f64 * 0.1).collect();
//! let b: Vec<f64> = a.iter().map(|v| v + 5.0).collect();
//! assert!(split_rhat(&[a.clone(), b])? > 2.0);
//! assert!(ess(&[a])? > 0.0);
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};

use crate::sampler::mean;
use crate::{Result, SamplerRun};

fn invalid(problem: String) -> crate::Error {
    ebm_core::Error::invalid("draws", problem).into()
}

/// Checks `chains` (at least one, all of one length >= `min_len`, finite) and returns `(m, n)`.
fn check(chains: &[Vec<f64>], min_len: usize, what: &str) -> Result<(usize, usize)> {
    let m = chains.len();
    if m == 0 {
        return Err(invalid(format!(
            "{what} needs at least one chain, got none"
        )));
    }
    let n = chains[0].len();
    if let Some((c, ch)) = chains.iter().enumerate().find(|(_, c)| c.len() != n) {
        return Err(invalid(format!(
            "{what} needs chains of one length; chain 0 has {n} draws, chain {c} has {}",
            ch.len()
        )));
    }
    if n < min_len {
        return Err(invalid(format!(
            "{what} needs at least {min_len} draws per chain, got {n}"
        )));
    }
    if chains.iter().flatten().any(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "{what}: the draws hold NaN or infinite values"
        )));
    }
    Ok((m, n))
}

/// Each chain cut in two halves (the middle draw dropped when the length is odd).
fn split(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(2 * chains.len());
    for c in chains {
        let half = c.len() / 2;
        out.push(c[..half].to_vec());
        out.push(c[c.len() - half..].to_vec());
    }
    out
}

fn sample_variance(x: &[f64]) -> f64 {
    let mu = mean(x);
    x.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// The effective sample size of the mean of a quantity traced by `chains` (see the module
/// documentation for the estimator). Needs at least 8 draws per chain (4 per half). A constant
/// quantity has no defined ESS: NaN.
pub fn ess(chains: &[Vec<f64>]) -> Result<f64> {
    check(chains, 8, "ESS")?;
    Ok(ess_unsplit(&split(chains)))
}

/// Stan's / ArviZ's `_ess` on chains that are already split.
fn ess_unsplit(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let nf = n as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    // The biased (1/N) autocovariance of chain c at lag t.
    let acov = |c: usize, t: usize| -> f64 {
        let x = &chains[c];
        let mu = means[c];
        (0..n - t)
            .map(|i| (x[i] - mu) * (x[i + t] - mu))
            .sum::<f64>()
            / nf
    };
    let mean_acov = |t: usize| (0..m).map(|c| acov(c, t)).sum::<f64>() / m as f64;
    let mean_var = mean_acov(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += sample_variance(&means);
    }
    if !(var_plus > 0.0 && var_plus.is_finite()) {
        return f64::NAN;
    }
    let rho_at = |t: usize| 1.0 - (mean_var - mean_acov(t)) / var_plus;
    let mut rho = vec![0.0; n];
    let mut even = 1.0;
    rho[0] = even;
    let mut odd = rho_at(1);
    rho[1] = odd;
    // Geyer's initial positive sequence: sums of adjacent pairs stay positive.
    let mut t = 1usize;
    while t + 3 < n && even + odd > 0.0 {
        even = rho_at(t + 1);
        odd = rho_at(t + 2);
        if even + odd >= 0.0 {
            rho[t + 1] = even;
            rho[t + 2] = odd;
        }
        t += 2;
    }
    let max_t = t as isize - 2;
    if even > 0.0 && max_t + 1 >= 0 {
        rho[(max_t + 1) as usize] = even;
    }
    // Geyer's initial monotone sequence: pair sums never increase.
    let mut t = 1isize;
    while t <= max_t - 2 {
        let u = t as usize;
        if rho[u + 1] + rho[u + 2] > rho[u - 1] + rho[u] {
            rho[u + 1] = (rho[u - 1] + rho[u]) / 2.0;
            rho[u + 2] = rho[u + 1];
        }
        t += 2;
    }
    let total = (m * n) as f64;
    let head: f64 = if max_t >= 0 {
        rho[..=(max_t as usize)].iter().sum()
    } else {
        0.0
    };
    let tail = if max_t + 1 >= 0 && ((max_t + 1) as usize) < n {
        rho[(max_t + 1) as usize]
    } else {
        0.0
    };
    let tau = (-1.0 + 2.0 * head + tail).max(1.0 / total.log10());
    total / tau
}

/// R-hat of chains that are already split: `sqrt(((n - 1) / n W + B / n) / W)`.
fn rhat_unsplit(chains: &[Vec<f64>]) -> f64 {
    let n = chains[0].len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let w = mean(
        &chains
            .iter()
            .map(|c| sample_variance(c))
            .collect::<Vec<_>>(),
    );
    let b_over_n = sample_variance(&means);
    (b_over_n / w + (n - 1.0) / n).sqrt()
}

/// Split R-hat (Gelman et al. 2013): each chain cut in halves, then the classic potential
/// scale reduction `sqrt(((n - 1) / n W + B / n) / W)` over the `2M` half-chains of `n` draws,
/// with `W` the mean within-half variance and `B / n` the variance of the half means. About 1
/// when the chains agree; Vehtari et al. 2021 advise 1.01 as the bound. Needs at least 4 draws
/// per chain; NaN (or infinite) for constant draws.
pub fn split_rhat(chains: &[Vec<f64>]) -> Result<f64> {
    check(chains, 4, "R-hat")?;
    Ok(rhat_unsplit(&split(chains)))
}

/// Rank-normalised split R-hat (Vehtari et al. 2021): the larger of the split R-hat of the
/// rank-normalised draws (bulk) and of the rank-normalised draws folded about their median
/// (tails). Robust to heavy tails and sensitive to differences in scale. Needs at least 4 draws
/// per chain.
pub fn rank_normalized_split_rhat(chains: &[Vec<f64>]) -> Result<f64> {
    check(chains, 4, "R-hat")?;
    let halves = split(chains);
    let bulk = rhat_unsplit(&rank_normalize(&halves));
    let pooled: Vec<f64> = halves.iter().flatten().copied().collect();
    let median = quantile_sorted(&sorted(&pooled), 0.5);
    let folded: Vec<Vec<f64>> = halves
        .iter()
        .map(|c| c.iter().map(|v| (v - median).abs()).collect())
        .collect();
    let tail = rhat_unsplit(&rank_normalize(&folded));
    Ok(match (bulk.is_nan(), tail.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => tail,
        (false, true) => bulk,
        (false, false) => bulk.max(tail),
    })
}

/// `Phi^-1((r - 3/8) / (S + 1/4))` of the pooled average ranks `r` (1-based), chain layout
/// kept (Blom's normal scores).
fn rank_normalize(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let pooled: Vec<f64> = chains.iter().flatten().copied().collect();
    let s = pooled.len();
    let mut order: Vec<usize> = (0..s).collect();
    order.sort_by(|&a, &b| pooled[a].total_cmp(&pooled[b]));
    let mut ranks = vec![0.0; s];
    let mut i = 0;
    while i < s {
        let mut j = i;
        while j + 1 < s && pooled[order[j + 1]] == pooled[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = avg;
        }
        i = j + 1;
    }
    let z: Vec<f64> = ranks
        .iter()
        .map(|r| normal_quantile((r - 0.375) / (s as f64 + 0.25)))
        .collect();
    let n = chains[0].len();
    z.chunks(n).map(|c| c.to_vec()).collect()
}

/// The standard normal quantile function (Acklam's rational approximation, relative error
/// below 1.2e-9), for `p` in (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    if !(p > 0.0 && p < 1.0) {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else if p == 1.0 {
            f64::INFINITY
        } else {
            f64::NAN
        };
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    const P_LOW: f64 = 0.02425;
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

fn sorted(x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The `q`-quantile of sorted values by linear interpolation (numpy's default).
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The Wasserstein-1 distance between the empirical distributions of `a` and `b` (of any
/// sizes): `integral |F_a(t) - F_b(t)| dt` (scipy's `wasserstein_distance`). For comparing one
/// coordinate of a sampler's output with exact draws; 0 for identical sets.
pub fn wasserstein1(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.is_empty() || b.is_empty() {
        return Err(invalid(format!(
            "Wasserstein distance needs two non-empty sets, got {} and {} values",
            a.len(),
            b.len()
        )));
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return Err(invalid(
            "Wasserstein distance: the values hold NaN or infinite values".into(),
        ));
    }
    let (a, b) = (sorted(a), sorted(b));
    let all = sorted(&[a.clone(), b.clone()].concat());
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    for w in all.windows(2) {
        while i < a.len() && a[i] <= w[0] {
            i += 1;
        }
        while j < b.len() && b[j] <= w[0] {
            j += 1;
        }
        let fa = i as f64 / a.len() as f64;
        let fb = j as f64 / b.len() as f64;
        total += (fa - fb).abs() * (w[1] - w[0]);
    }
    Ok(total)
}

/// A run's diagnostics, ready for a JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// The sampler's name.
    pub sampler: String,
    /// The number of chains.
    pub chains: usize,
    /// Recorded draws per chain (after warm-up and thinning).
    pub draws: usize,
    /// The step size after warm-up.
    pub step_size: f64,
    /// The mean acceptance probability over chains and sampling iterations.
    pub mean_accept_prob: f64,
    /// Per chain, the mean acceptance probability.
    pub accept_prob: Vec<f64>,
    /// Per chain, the fraction of accepted proposals.
    pub accept_rate: Vec<f64>,
    /// All chains' divergent (rejected non-finite) proposals.
    pub divergences: usize,
    /// [`ess`] of the per-chain energy traces.
    pub ess_energy: f64,
    /// [`rank_normalized_split_rhat`] of the energy traces.
    pub rhat_energy: f64,
    /// [`ess`] of each recorded coordinate.
    pub ess: Vec<f64>,
    /// [`rank_normalized_split_rhat`] of each recorded coordinate.
    pub rhat: Vec<f64>,
    /// The smallest ESS (energy and recorded coordinates) per energy-and-gradient evaluation
    /// of all chains, warm-up included: the efficiency to compare samplers by.
    pub min_ess_per_grad_eval: f64,
    /// The smallest ESS per second of the whole run.
    pub min_ess_per_second: f64,
}

impl Diagnostics {
    /// Computes everything from a run's statistics and draws (needs at least 8 recorded draws
    /// per chain).
    pub fn of(run: &SamplerRun) -> Result<Self> {
        let s = &run.stats;
        let d = &run.draws;
        let ess_energy = ess(&d.energy)?;
        let rhat_energy = rank_normalized_split_rhat(&d.energy)?;
        let ess_coords = d
            .coords
            .iter()
            .map(|c| ess(c))
            .collect::<Result<Vec<_>>>()?;
        let rhat_coords = d
            .coords
            .iter()
            .map(|c| rank_normalized_split_rhat(c))
            .collect::<Result<Vec<_>>>()?;
        let min_ess = ess_coords
            .iter()
            .copied()
            .chain([ess_energy])
            .fold(f64::INFINITY, f64::min);
        Ok(Self {
            sampler: s.sampler.clone(),
            chains: s.chains,
            draws: d.len(),
            step_size: s.step_size,
            mean_accept_prob: s.mean_accept_prob(),
            accept_prob: s.accept_prob.clone(),
            accept_rate: s.accept_rate.clone(),
            divergences: s.total_divergences(),
            ess_energy,
            rhat_energy,
            ess: ess_coords,
            rhat: rhat_coords,
            min_ess_per_grad_eval: min_ess / (s.grad_evals * s.chains) as f64,
            min_ess_per_second: min_ess / s.seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn ar1(rho: f64, chains: usize, n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = ebm_core::seeded_rng(seed);
        let sd = (1.0 - rho * rho).sqrt();
        (0..chains)
            .map(|_| {
                // Start in the stationary law N(0, 1).
                let mut x: f64 = StandardNormal.sample(&mut rng);
                (0..n)
                    .map(|_| {
                        let v = x;
                        let z: f64 = StandardNormal.sample(&mut rng);
                        x = rho * x + sd * z;
                        v
                    })
                    .collect()
            })
            .collect()
    }

    /// Independent draws: ESS about M N. The estimator's relative spread at M N = 20,000 is a
    /// few percent.
    #[test]
    fn ess_of_independent_draws_is_about_their_number() -> Result<()> {
        let chains = ar1(0.0, 4, 5000, 1);
        let e = ess(&chains)?;
        assert!((e / 20_000.0 - 1.0).abs() < 0.08, "ESS {e}");
        Ok(())
    }

    /// An AR(1) chain with coefficient rho has integrated autocorrelation time
    /// `(1 + rho) / (1 - rho)`: ESS = N (1 - rho) / (1 + rho).
    #[test]
    fn ess_of_an_ar1_chain_matches_its_autocorrelation_time() -> Result<()> {
        for (rho, seed) in [(0.5, 2), (0.9, 3), (-0.5, 4)] {
            let chains = ar1(rho, 4, 10_000, seed);
            let exact = 40_000.0 * (1.0 - rho) / (1.0 + rho);
            let e = ess(&chains)?;
            assert!(
                (e / exact - 1.0).abs() < 0.12,
                "rho {rho}: ESS {e} vs {exact}"
            );
        }
        Ok(())
    }

    /// By hand: chains [1, 2, 3, 4] and [5, 6, 7, 8] split into [1, 2], [3, 4], [5, 6], [7, 8]
    /// (n = 2). Half means 1.5, 3.5, 5.5, 7.5; within variances 0.5 each, so W = 0.5; variance
    /// of the means (9 + 1 + 1 + 9) / 3 = 20/3 = B/n. R-hat = sqrt((1/2 * 0.5 + 20/3) / 0.5)
    /// = sqrt(83/6) = 3.719318934...
    #[test]
    fn split_rhat_matches_a_hand_computation() -> Result<()> {
        let r = split_rhat(&[vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0, 7.0, 8.0]])?;
        assert!((r - (83.0f64 / 6.0).sqrt()).abs() < 1e-12, "{r}");
        Ok(())
    }

    #[test]
    fn rhat_is_one_for_agreeing_chains_and_large_for_chains_in_different_modes() -> Result<()> {
        let same = ar1(0.3, 4, 2000, 5);
        for r in [split_rhat(&same)?, rank_normalized_split_rhat(&same)?] {
            assert!((r - 1.0).abs() < 0.01, "agreeing chains: {r}");
        }
        // Two chains in a mode at 0, two in a mode at 3 (unit spread).
        let mut stuck = ar1(0.3, 4, 2000, 6);
        for c in &mut stuck[2..] {
            c.iter_mut().for_each(|v| *v += 3.0);
        }
        for r in [split_rhat(&stuck)?, rank_normalized_split_rhat(&stuck)?] {
            assert!(r > 1.5, "stuck chains: {r}");
        }
        // Same location, different scales: the folded (tail) R-hat sees it.
        let mut scaled = ar1(0.3, 4, 2000, 7);
        for c in &mut scaled[2..] {
            c.iter_mut().for_each(|v| *v *= 4.0);
        }
        let r = rank_normalized_split_rhat(&scaled)?;
        assert!(r > 1.1, "chains of different scales: {r}");
        Ok(())
    }

    /// Reference values: scipy.stats.norm.ppf(0.975) = 1.959963984540054,
    /// norm.ppf(0.01) = -2.3263478740408408, norm.ppf(1e-6) = -4.753424308822899.
    #[test]
    fn normal_quantile_matches_scipy() {
        for (p, z) in [
            (0.975, 1.959963984540054),
            (0.01, -2.3263478740408408),
            (1e-6, -4.753424308822899),
            (0.5, 0.0),
            (0.3, -0.5244005127080407),
        ] {
            let got = normal_quantile(p);
            assert!(
                (got - z).abs() < 1e-8 * z.abs().max(1.0),
                "{p}: {got} vs {z}"
            );
        }
    }

    /// A shift by 5 moves every unit of mass by 5; the second pair is worked out by hand.
    #[test]
    fn wasserstein_distance_by_hand() -> Result<()> {
        assert!((wasserstein1(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0])? - 5.0).abs() < 1e-12);
        // [0, 1] vs [0, 0, 3]: on [0, 1) |1/2 - 2/3| = 1/6; on [1, 3) |1 - 2/3| = 1/3 over a
        // length of 2: total 1/6 + 2/3 = 5/6.
        let w = wasserstein1(&[0.0, 1.0], &[0.0, 0.0, 3.0])?;
        assert!((w - 5.0 / 6.0).abs() < 1e-12, "{w}");
        assert_eq!(wasserstein1(&[2.0, 1.0], &[1.0, 2.0])?, 0.0);
        assert!(wasserstein1(&[], &[1.0]).is_err());
        Ok(())
    }

    #[test]
    fn bad_draws_are_errors_naming_the_problem() {
        let err = ess(&[vec![1.0; 5]]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid draws: ESS needs at least 8 draws per chain, got 5"
        );
        let err = split_rhat(&[vec![1.0; 6], vec![1.0; 5]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("chains of one length"), "{err}");
        assert!(split_rhat(&[]).is_err());
        assert!(ess(&[vec![f64::NAN; 10]]).is_err());
        assert!(ess(&[vec![2.0; 10]]).unwrap().is_nan(), "constant draws");
    }
}
