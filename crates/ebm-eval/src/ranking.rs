//! AUROC and average precision with scikit-learn's conventions.

use crate::{Error, Result};

/// Rows as `(is_positive, score)` sorted by decreasing score, with the class counts.
struct Ranked {
    pairs: Vec<(bool, f64)>,
    positives: usize,
    negatives: usize,
}

/// Checks the input and ranks it.
fn sorted<L: PartialEq + Copy>(labels: &[L], scores: &[f64], positive: L) -> Result<Ranked> {
    if labels.len() != scores.len() {
        return Err(Error::Input(format!(
            "{} labels but {} scores",
            labels.len(),
            scores.len()
        )));
    }
    if labels.is_empty() {
        return Err(Error::Input(
            "no rows: the metric needs at least one positive and one negative".into(),
        ));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Input(format!("score {i} is NaN")));
    }
    let mut pairs: Vec<(bool, f64)> = labels
        .iter()
        .zip(scores)
        .map(|(&l, &s)| (l == positive, s))
        .collect();
    let pos = pairs.iter().filter(|(p, _)| *p).count();
    let neg = pairs.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::Input(format!(
            "only one class is present ({pos} positive, {neg} negative rows): the metric is undefined"
        )));
    }
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Ranked {
        pairs,
        positives: pos,
        negatives: neg,
    })
}

/// Runs of equal scores in a descending-sorted list: `(true positives, false positives)` added
/// by each distinct threshold.
fn groups(pairs: &[(bool, f64)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        let (mut tp, mut fp) = (0, 0);
        while j < pairs.len() && pairs[j].1 == pairs[i].1 {
            if pairs[j].0 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        out.push((tp, fp));
        i = j;
    }
    out
}

/// Area under the ROC curve, `labels[i] == positive` marking the positive class; higher
/// scores mean "more positive". Equal to scikit-learn's `roc_auc_score`.
pub fn roc_auc<L: PartialEq + Copy>(labels: &[L], scores: &[f64], positive: L) -> Result<f64> {
    let Ranked {
        pairs,
        positives: pos,
        negatives: neg,
    } = sorted(labels, scores, positive)?;
    // Trapezoids between successive distinct thresholds, in counts; normalised at the end.
    let (mut tp, mut fp, mut area) = (0usize, 0usize, 0f64);
    for (dtp, dfp) in groups(&pairs) {
        area += dfp as f64 * (2 * tp + dtp) as f64 / 2.0;
        tp += dtp;
        fp += dfp;
    }
    debug_assert_eq!((tp, fp), (pos, neg));
    Ok(area / (pos as f64 * neg as f64))
}

/// Average precision, `sum_n (R_n - R_{n-1}) P_n` over distinct thresholds in decreasing order,
/// no interpolation. Equal to scikit-learn's `average_precision_score`.
pub fn average_precision<L: PartialEq + Copy>(
    labels: &[L],
    scores: &[f64],
    positive: L,
) -> Result<f64> {
    let Ranked {
        pairs,
        positives: pos,
        ..
    } = sorted(labels, scores, positive)?;
    let (mut tp, mut fp, mut ap) = (0usize, 0usize, 0f64);
    for (dtp, dfp) in groups(&pairs) {
        tp += dtp;
        fp += dfp;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (dtp as f64 / pos as f64) * precision;
    }
    Ok(ap)
}
