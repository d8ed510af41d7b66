//! The Frechet distance between Gaussians fitted to features, as pytorch-fid computes it.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::{Error, Result};

/// Mean and covariance of a feature matrix (rows are samples), as pytorch-fid's
/// `np.mean(axis=0)` and `np.cov(rowvar=False)` (unbiased, divided by N - 1).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// The mean, `[D]`.
    pub mu: DVector<f64>,
    /// The covariance, `[D, D]`.
    pub sigma: DMatrix<f64>,
}

impl FeatureStats {
    /// Statistics of `features` (`n` rows of `d` values, row-major).
    pub fn from_features(features: &[f64], n: usize, d: usize) -> Result<Self> {
        if n < 2 || d == 0 || features.len() != n * d {
            return Err(Error::Input(format!(
                "need at least 2 feature rows of equal length, got {} values for {n} rows of {d}",
                features.len()
            )));
        }
        if features.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(
                "the features contain NaN or infinite values".into(),
            ));
        }
        let x = DMatrix::from_row_slice(n, d, features);
        let mu = x.row_mean().transpose();
        let centred = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mu[j]);
        let sigma = centred.transpose() * &centred / (n as f64 - 1.0);
        Ok(Self { mu, sigma })
    }

    /// Statistics given directly (e.g. read from pytorch-fid's `.npz`).
    pub fn new(mu: DVector<f64>, sigma: DMatrix<f64>) -> Result<Self> {
        if sigma.nrows() != mu.len() || sigma.ncols() != mu.len() {
            return Err(Error::Input(format!(
                "mu has {} values but sigma is {}x{}",
                mu.len(),
                sigma.nrows(),
                sigma.ncols()
            )));
        }
        Ok(Self { mu, sigma })
    }
}

/// `tr sqrtm(A B)` for symmetric positive semi-definite `A`, `B`: the eigenvalues of `A B` are
/// those of the symmetric `A^1/2 B A^1/2`, so the trace of the square root is the sum of their
/// square roots. Returns the sum and the most negative eigenvalue (round-off makes tiny negative
/// ones; scipy's `sqrtm` turns them into imaginary parts that pytorch-fid then drops).
fn trace_sqrt_product(a: &DMatrix<f64>, b: &DMatrix<f64>) -> (f64, f64) {
    let eig = SymmetricEigen::new(a.clone());
    let root: DVector<f64> = eig.eigenvalues.map(|v| v.max(0.0).sqrt());
    let a_half = &eig.eigenvectors * DMatrix::from_diagonal(&root) * eig.eigenvectors.transpose();
    let m = &a_half * b * &a_half;
    let m = (&m + m.transpose()) * 0.5;
    let values = m.symmetric_eigenvalues();
    let most_negative = values.iter().copied().fold(0.0, f64::min);
    (
        values.iter().map(|v| v.max(0.0).sqrt()).sum(),
        most_negative,
    )
}

/// `||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrtm(S1 S2)`, in f64, as pytorch-fid's
/// `calculate_frechet_distance`: when the square root is not finite, `1e-6` is added to both
/// diagonals and it is tried again; a product whose square root is far from real (an
/// eigenvalue below `-1e-3` of the largest) is an error rather than a number.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.mu.len() != b.mu.len() {
        return Err(Error::Input(format!(
            "the two sets of statistics have different dimensions: {} and {}",
            a.mu.len(),
            b.mu.len()
        )));
    }
    for (name, s) in [("first", a), ("second", b)] {
        if s.mu.iter().chain(s.sigma.iter()).any(|v| !v.is_finite()) {
            return Err(Error::Input(format!(
                "the {name} statistics contain NaN or infinite values"
            )));
        }
    }
    let diff = &a.mu - &b.mu;
    let (mut tr_covmean, mut most_negative) = trace_sqrt_product(&a.sigma, &b.sigma);
    if !tr_covmean.is_finite() {
        let eye = DMatrix::<f64>::identity(a.mu.len(), a.mu.len()) * 1e-6;
        (tr_covmean, most_negative) = trace_sqrt_product(&(&a.sigma + &eye), &(&b.sigma + &eye));
        if !tr_covmean.is_finite() {
            return Err(Error::Numerical("the square root of the covariance product is not finite, even with 1e-6 added to the diagonals".into()));
        }
    }
    let scale = a
        .sigma
        .diagonal()
        .amax()
        .max(b.sigma.diagonal().amax())
        .max(1e-300);
    if most_negative < -1e-3 * scale * scale {
        return Err(Error::Numerical(format!(
            "the covariance product has an eigenvalue of {most_negative:e}: its square root has a large imaginary component"
        )));
    }
    Ok(diff.dot(&diff) + a.sigma.trace() + b.sigma.trace() - 2.0 * tr_covmean)
}
