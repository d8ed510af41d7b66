//! The Frechet distance against pytorch-fid's `calculate_frechet_distance`.
//!
//! Expected values from pytorch-fid 0.3 with numpy/scipy (the snippet that printed them):
//!
//! ```python
//! import numpy as np
//! from pytorch_fid.fid_score import calculate_frechet_distance
//! def feats(n, d, a, b):
//!     i = np.arange(n)[:, None]; j = np.arange(d)[None, :]
//!     return np.sin(a * i + b * j) + 0.1 * np.cos(3 * i * j + a)
//! def fid(x, y):
//!     return calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False),
//!                                       y.mean(0), np.cov(y, rowvar=False))
//! print(repr(fid(feats(50, 8, 0.37, 1.1), feats(60, 8, 0.53, 0.7))))  # 3.002782946802178
//! print(repr(fid(feats(5, 10, 0.37, 1.1), feats(7, 10, 0.53, 0.7))))  # 7.990539518889686
//! print(repr(fid(feats(40, 6, 0.3, 0.9), feats(40, 6, 0.3, 0.9))))   # -6.75e-14
//! ```

use ebm_eval::{frechet_distance, FeatureStats};
use nalgebra::{DMatrix, DVector};

fn feats(n: usize, d: usize, a: f64, b: f64) -> FeatureStats {
    let mut v = Vec::with_capacity(n * d);
    for i in 0..n {
        for j in 0..d {
            let (i, j) = (i as f64, j as f64);
            v.push((a * i + b * j).sin() + 0.1 * (3.0 * i * j + a).cos());
        }
    }
    FeatureStats::from_features(&v, n, d).unwrap()
}

fn assert_rel(got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs(),
        "got {got}, pytorch-fid {want}"
    );
}

#[test]
fn well_conditioned_covariances() {
    let d = frechet_distance(&feats(50, 8, 0.37, 1.1), &feats(60, 8, 0.53, 0.7)).unwrap();
    assert_rel(d, 3.002782946802178, 1e-9);
}

#[test]
fn rank_deficient_covariances() {
    // 5 and 7 samples in 10 dimensions: both covariances are singular.
    let d = frechet_distance(&feats(5, 10, 0.37, 1.1), &feats(7, 10, 0.53, 0.7)).unwrap();
    assert_rel(d, 7.990539518889686, 1e-6);
}

#[test]
fn identical_sets_are_at_distance_zero() {
    let a = feats(40, 6, 0.3, 0.9);
    let d = frechet_distance(&a, &a).unwrap();
    assert!(d.abs() < 1e-9, "{d}");
}

#[test]
fn gaussians_with_commuting_covariances_match_the_closed_form() {
    // Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    let s1 = [1.0, 4.0, 0.25];
    let s2 = [9.0, 1.0, 0.25];
    let a = FeatureStats::new(
        DVector::from_vec(vec![0.0, 1.0, 2.0]),
        DMatrix::from_diagonal(&DVector::from_vec(s1.to_vec())),
    )
    .unwrap();
    let b = FeatureStats::new(
        DVector::from_vec(vec![1.0, 1.0, 0.0]),
        DMatrix::from_diagonal(&DVector::from_vec(s2.to_vec())),
    )
    .unwrap();
    let want = 1.0
        + 4.0
        + s1.iter()
            .zip(&s2)
            .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
            .sum::<f64>();
    assert_rel(frechet_distance(&a, &b).unwrap(), want, 1e-12);
}

#[test]
fn statistics_are_numpy_mean_and_unbiased_covariance() {
    // Rows (1, 2), (3, 6), (5, 4): mean (3, 4); np.cov gives [[4, 2], [2, 4]].
    let s = FeatureStats::from_features(&[1.0, 2.0, 3.0, 6.0, 5.0, 4.0], 3, 2).unwrap();
    assert_eq!(s.mu.as_slice(), &[3.0, 4.0]);
    assert_eq!(
        s.sigma,
        DMatrix::from_row_slice(2, 2, &[4.0, 2.0, 2.0, 4.0])
    );
}

#[test]
fn bad_input_is_an_error() {
    let e = FeatureStats::from_features(&[1.0, 2.0], 1, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2"), "{e}");
    let e = FeatureStats::from_features(&[1.0, f64::NAN, 3.0, 4.0], 2, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN") || e.contains("finite"), "{e}");
    let e = frechet_distance(&feats(10, 3, 0.1, 0.2), &feats(10, 4, 0.1, 0.2))
        .unwrap_err()
        .to_string();
    assert!(e.contains('3') && e.contains('4'), "{e}");
}
