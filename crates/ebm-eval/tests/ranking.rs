//! AUROC and average precision against scikit-learn's numbers.
//!
//! Expected values from scikit-learn 1.x (`/work/venv-ref` in the session that wrote them):
//!
//! ```python
//! from sklearn.metrics import roc_auc_score, average_precision_score
//! cases = {
//!     "mixed": ([1,0,1,1,0,0,1,0,1,0], [0.9,0.1,0.8,0.35,0.4,0.2,0.7,0.65,0.3,0.05]),
//!     "heavy_ties": ([1,1,0,0,1,0,1,0,0,1,1,0], [0.5,0.5,0.5,0.2,0.2,0.9,0.9,0.5,0.1,0.1,0.7,0.7]),
//!     "all_equal": ([1,0,1,0,0], [0.3]*5),
//!     "reversed": ([1,1,1,0,0,0], [0.1,0.2,0.3,0.7,0.8,0.9]),
//!     "perfect": ([0,0,1,1], [-2,-1,3,4]),
//! }
//! for name, (y, s) in cases.items():
//!     print(name, repr(roc_auc_score(y, s)), repr(average_precision_score(y, s)))
//! # tests/data/scores_random_rounded.csv:
//! import numpy as np
//! rng = np.random.default_rng(0)
//! y = rng.integers(0, 2, 1000); s = np.round(rng.normal(size=1000) + 0.7 * y, 1)
//! np.savetxt("scores_random_rounded.csv", np.c_[y, s], fmt=["%d", "%.1f"], delimiter=",",
//!            header="label,score", comments="")
//! print(repr(roc_auc_score(y, s)), repr(average_precision_score(y, s)))
//! ```

use ebm_eval::{average_precision, roc_auc};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

fn check(name: &str, labels: &[u8], scores: &[f64], auroc: f64, ap: f64) {
    let got_auroc = roc_auc(labels, scores, 1).unwrap();
    let got_ap = average_precision(labels, scores, 1).unwrap();
    assert!(
        close(got_auroc, auroc),
        "{name}: AUROC {got_auroc}, scikit-learn {auroc}"
    );
    assert!(close(got_ap, ap), "{name}: AP {got_ap}, scikit-learn {ap}");
}

#[test]
fn mixed_scores() {
    check(
        "mixed",
        &[1, 0, 1, 1, 0, 0, 1, 0, 1, 0],
        &[0.9, 0.1, 0.8, 0.35, 0.4, 0.2, 0.7, 0.65, 0.3, 0.05],
        0.84,
        0.8761904761904762,
    );
}

#[test]
fn heavy_ties_count_one_half() {
    check(
        "heavy_ties",
        &[1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0],
        &[0.5, 0.5, 0.5, 0.2, 0.2, 0.9, 0.9, 0.5, 0.1, 0.1, 0.7, 0.7],
        0.5,
        0.5,
    );
}

#[test]
fn all_equal_scores() {
    // One threshold: AUROC one half, AP the positive rate.
    check("all_equal", &[1, 0, 1, 0, 0], &[0.3; 5], 0.5, 0.4);
}

#[test]
fn reversed_order() {
    check(
        "reversed",
        &[1, 1, 1, 0, 0, 0],
        &[0.1, 0.2, 0.3, 0.7, 0.8, 0.9],
        0.0,
        0.38333333333333336,
    );
}

#[test]
fn perfect_separation() {
    check("perfect", &[0, 0, 1, 1], &[-2.0, -1.0, 3.0, 4.0], 1.0, 1.0);
}

#[test]
fn thousand_rounded_scores_from_a_file() {
    let text = include_str!("data/scores_random_rounded.csv");
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    for line in text.lines().skip(1) {
        let (l, s) = line.split_once(',').unwrap();
        labels.push(l.trim().parse::<u8>().unwrap());
        scores.push(s.trim().parse::<f64>().unwrap());
    }
    assert_eq!(labels.len(), 1000);
    check(
        "random_rounded",
        &labels,
        &scores,
        0.7222771898918477,
        0.7250205599544858,
    );
}

#[test]
fn the_positive_class_is_explicit() {
    // Swapping which label is positive and negating scores leaves AUROC unchanged.
    let labels = ["in", "out", "in", "in", "out", "out"];
    let scores = [0.9, 0.4, 0.6, 0.3, 0.5, 0.1];
    let a = roc_auc(&labels, &scores, "in").unwrap();
    let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
    let b = roc_auc(&labels, &neg, "out").unwrap();
    assert!(close(a, b), "{a} vs {b}");
    // And choosing the other class flips it to 1 - AUROC.
    let c = roc_auc(&labels, &scores, "out").unwrap();
    assert!(close(a + c, 1.0), "{a} + {c}");
}

#[test]
fn undefined_input_is_an_error() {
    let err = |r: ebm_eval::Result<f64>| r.unwrap_err().to_string();
    let e = err(roc_auc(&[1u8, 1, 1], &[0.1, 0.2, 0.3], 1));
    assert!(e.contains("only one class"), "{e}");
    let e = err(average_precision(&[0u8, 0], &[0.1, 0.2], 1));
    assert!(e.contains("only one class"), "{e}");
    let e = err(roc_auc::<u8>(&[], &[], 1));
    assert!(e.contains("no rows"), "{e}");
    let e = err(roc_auc(&[1u8, 0, 1], &[0.1, f64::NAN, 0.3], 1));
    assert!(e.contains("score 1 is NaN"), "{e}");
    let e = err(average_precision(&[1u8, 0], &[0.1], 1));
    assert!(e.contains("2 labels but 1 scores"), "{e}");
}
