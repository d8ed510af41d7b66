//! `ebm-eval fid|features|is` on folders of images, through the FID Inception with the seeded
//! weights of `scripts/fid_inception_reference.py`, held to pytorch-fid's numbers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Tensor;
use ebm_eval::inception::seeded;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inception")
}

fn ebm_eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebm-eval"))
        .args(args)
        .output()
        .expect("running ebm-eval")
}

fn stdout_last_line(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ebm-eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn stderr(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "ebm-eval should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn features_is_and_fid_of_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("seeded.safetensors");
    candle_core::safetensors::save(&seeded::state_dict(true).unwrap(), &weights).unwrap();
    let weights = weights.to_str().unwrap();
    let grey = data().join("grey");
    let rgb = data().join("rgb");
    let (grey, rgb) = (grey.to_str().unwrap(), rgb.to_str().unwrap());

    // pool3 rows in sorted file-name order; expected: rgb_pool3.npy (pytorch-fid's
    // get_activations in scripts/fid_inception_reference.py).
    let out_npy = dir.path().join("rgb.npy");
    let out = ebm_eval(&[
        "features",
        rgb,
        "--weights",
        weights,
        "--out",
        out_npy.to_str().unwrap(),
        "--batch-size",
        "2",
    ]);
    let last = stdout_last_line(&out);
    assert!(last.starts_with("features: 3 x 2048 written to"), "{last}");
    let e = common::rel_err(
        &Tensor::read_npy(&out_npy).unwrap(),
        &Tensor::read_npy(data().join("rgb_pool3.npy")).unwrap(),
    );
    println!("features: relative error {e:.2e}");
    assert!(e <= 1e-4, "{e:e}");

    // scripts/fid_inception_reference.py, reference_scores: the code of Salimans et al. on the
    // unbiased logits of the rgb folder, one split:
    // IS(rgb, 1 split) from the unbiased logits: 1.03187676484706 +- 0.0
    let out = ebm_eval(&["is", rgb, "--weights", weights, "--splits", "1", "--json"]);
    let record: serde_json::Value = serde_json::from_str(&stdout_last_line(&out)).unwrap();
    println!("is: {record}");
    assert_eq!(record["metric"], "is");
    assert_eq!(record["images"], 3);
    assert_eq!(record["splits"], 1);
    assert!(
        (record["value"].as_f64().unwrap() - 1.03187676484706).abs() < 1e-6,
        "{record}"
    );
    assert!(record["std"].as_f64().unwrap().abs() < 1e-12, "{record}");

    // scripts/fid_inception_reference.py, reference_scores: pytorch-fid's
    // calculate_activation_statistics + calculate_frechet_distance on the two folders:
    // FID(grey, rgb) by pytorch-fid: 651.4785807675216
    // (three images per folder make the covariances singular: scipy's sqrtm and our
    // eigendecomposition agree to ~1e-6 there, not to round-off).
    let out = ebm_eval(&["fid", grey, rgb, "--weights", weights, "--batch-size", "3"]);
    let last = stdout_last_line(&out);
    let value: f64 = last
        .strip_prefix("fid: ")
        .unwrap_or_else(|| panic!("{last}"))
        .parse()
        .unwrap();
    println!("fid: {value} (pytorch-fid 651.4785807675216)");
    assert!(
        (value - 651.4785807675216).abs() / 651.4785807675216 < 1e-5,
        "{value}"
    );
}

#[test]
fn folders_without_weights_or_device_support_are_clear_errors() {
    let grey = data().join("grey");
    let grey = grey.to_str().unwrap();
    let npy = data().join("rgb_pool3.npy");

    let e = stderr(&ebm_eval(&["fid", grey, npy.to_str().unwrap()]));
    assert!(
        e.contains("grey")
            && e.contains("--weights")
            && e.contains("pt_inception-2015-12-05-6726825d.pth"),
        "{e}"
    );
    let e = stderr(&ebm_eval(&["is", grey]));
    assert!(e.contains("--weights"), "{e}");

    let e = stderr(&ebm_eval(&[
        "features",
        grey,
        "--weights",
        "/nonexistent/w.pth",
        "--out",
        "/nonexistent/f.npy",
    ]));
    assert!(e.contains("/nonexistent/w.pth"), "{e}");

    if !cfg!(feature = "cuda") {
        let e = stderr(&ebm_eval(&[
            "is",
            grey,
            "--weights",
            "w.safetensors",
            "--device",
            "cuda",
        ]));
        assert!(
            e.contains("--device cuda") && e.contains("--features cuda"),
            "{e}"
        );
    }
    if !cfg!(feature = "metal") {
        let e = stderr(&ebm_eval(&[
            "is",
            grey,
            "--weights",
            "w.safetensors",
            "--device",
            "metal",
        ]));
        assert!(e.contains("--features metal"), "{e}");
    }

    let e = stderr(&ebm_eval(&[
        "is",
        grey,
        "--weights",
        "w.safetensors",
        "--batch-size",
        "0",
    ]));
    assert!(e.contains("batch-size"), "{e}");

    let not_a_folder = data().join("state_dict.txt");
    let e = stderr(&ebm_eval(&[
        "features",
        not_a_folder.to_str().unwrap(),
        "--weights",
        "w.pth",
        "--out",
        "f.npy",
    ]));
    assert!(
        e.contains("state_dict.txt") && e.contains("not a folder"),
        "{e}"
    );
}
