//! The `ebm-eval` command: results as the last line, `--json`, and clear errors.

use std::path::Path;
use std::process::Command;

fn ebm_eval(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ebm-eval"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn auroc_and_auprc_print_scikit_learns_numbers_last() {
    // Values from tests/ranking.rs (scikit-learn on the same file).
    let csv = data("scores_random_rounded.csv");
    let (ok, out, err) = ebm_eval(&["auroc", "--scores", &csv]);
    assert!(ok, "{err}");
    let last = out.lines().last().unwrap();
    let value: f64 = last.strip_prefix("auroc: ").unwrap().parse().unwrap();
    assert!((value - 0.7222771898918477).abs() < 1e-12, "{last}");
    let (ok, out, err) = ebm_eval(&["auprc", "--scores", &csv, "--json"]);
    assert!(ok, "{err}");
    let record: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(record["metric"], "auprc");
    assert_eq!(record["rows"], 1000);
    assert!((record["value"].as_f64().unwrap() - 0.7250205599544858).abs() < 1e-12);
}

#[test]
fn the_positive_label_can_be_changed() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("s.csv");
    std::fs::write(&csv, "score,label\n0.9,in\n0.2,out\n0.7,in\n0.8,out\n").unwrap();
    let csv = csv.display().to_string();
    let (ok, out, err) = ebm_eval(&["auroc", "--scores", &csv, "--positive-label", "in"]);
    assert!(ok, "{err}");
    // Positives 0.9, 0.7 against negatives 0.2, 0.8: 3 of 4 pairs ordered.
    assert_eq!(out.lines().last().unwrap(), "auroc: 0.75");
}

#[test]
fn fid_of_feature_matrices_and_saved_statistics() {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    // Diagonal covariances with known square roots: the closed form |dmu|^2 + sum (sqrt s1 - sqrt s2)^2.
    // Two points per axis at mu +- 1 give variance 2 (unbiased), and +- 2 give 8.
    let a = Tensor::new(
        &[[1f64, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]],
        &Device::Cpu,
    )
    .unwrap();
    let b = Tensor::new(
        &[[5f64, 3.0], [1.0, 3.0], [3.0, 5.0], [3.0, 1.0]],
        &Device::Cpu,
    )
    .unwrap();
    let (pa, pb) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    a.write_npy(&pa).unwrap();
    b.write_npy(&pb).unwrap();
    let stats = dir.path().join("a_stats.npz");
    let (ok, out, err) = ebm_eval(&[
        "fid",
        pa.to_str().unwrap(),
        pb.to_str().unwrap(),
        "--save-stats",
        stats.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // np.cov of a: diag(2/3, 2/3); of b: diag(8/3, 8/3); means (0,0) and (3,3).
    let s1: f64 = 2.0 / 3.0;
    let s2: f64 = 8.0 / 3.0;
    let want = 18.0 + 2.0 * (s1.sqrt() - s2.sqrt()).powi(2);
    let value: f64 = out
        .lines()
        .last()
        .unwrap()
        .strip_prefix("fid: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!((value - want).abs() < 1e-9, "{value} vs {want}");
    // The saved statistics give the same distance.
    let (ok, out, err) = ebm_eval(&["fid", stats.to_str().unwrap(), pb.to_str().unwrap()]);
    assert!(ok, "{err}");
    let again: f64 = out
        .lines()
        .last()
        .unwrap()
        .strip_prefix("fid: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!((again - want).abs() < 1e-9, "{again} vs {want}");
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cases = [
        (
            write("one_class.csv", "label,score\n1,0.3\n1,0.5\n"),
            "only one class",
        ),
        (
            write("no_score.csv", "label,value\n1,0.3\n0,0.5\n"),
            "no `score` column",
        ),
        (
            write("bad_number.csv", "label,score\n1,abc\n0,0.5\n"),
            "line 2: score `abc` is not a number",
        ),
        (
            write("short.csv", "label,score\n1\n"),
            "line 2 has 1 fields",
        ),
        (write("empty.csv", ""), "empty file"),
        (write("nan.csv", "label,score\n1,NaN\n0,0.5\n"), "NaN"),
    ];
    for (path, expected) in cases {
        let (ok, _, err) = ebm_eval(&["auroc", "--scores", &path]);
        assert!(!ok, "{path} should fail");
        assert!(err.contains(expected), "{path}: {err}");
        assert!(err.contains(&path), "the error names the file: {err}");
    }
    let (ok, _, err) = ebm_eval(&["auprc", "--scores", "/nonexistent/scores.csv"]);
    assert!(!ok && err.contains("/nonexistent/scores.csv"), "{err}");
    let txt = write("stats.txt", "1 2 3");
    let (ok, _, err) = ebm_eval(&["fid", &txt, &txt]);
    assert!(!ok && err.contains("stats.txt"), "{err}");
}
