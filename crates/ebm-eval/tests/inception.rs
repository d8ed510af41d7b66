//! pytorch-fid's FID Inception-v3 on candle, held to PyTorch.
//!
//! Every expected number comes from `scripts/fid_inception_reference.py` (PyTorch, pytorch-fid,
//! torchvision, PIL), which builds the network with seeded weights that
//! `ebm_eval::inception::seeded` reproduces bit for bit, runs it the way pytorch-fid does on the
//! PNGs of `tests/data/inception/` and saves the outputs beside them. Refresh with
//! `/work/venv-ref/bin/python crates/ebm-eval/scripts/fid_inception_reference.py`.
//! With `EBM_FID_INCEPTION_EXPORT=DIR` (after running the script with `--export DIR`) the
//! loaders are also checked against the whole network written by PyTorch.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ebm_eval::inception::{
    expected_weights, read_pth, resize_bilinear, seeded, FEATURE_DIM, NUM_CLASSES,
};
use ebm_eval::{inception_score, Error, FidInception, ImageFolder};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inception")
}

fn npy(name: &str) -> Tensor {
    let path = data().join(name);
    Tensor::read_npy(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seeded network (built once; building folds ~24M weights).
fn model() -> &'static FidInception {
    static MODEL: OnceLock<FidInception> = OnceLock::new();
    MODEL.get_or_init(|| {
        let t = Instant::now();
        let net =
            FidInception::from_tensors(seeded::state_dict(true).unwrap(), &Device::Cpu).unwrap();
        println!(
            "seeded FID Inception built in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        net
    })
}

fn message(e: Error) -> String {
    e.to_string()
}

// The seeded weights, pool3 features and logits: scripts/fid_inception_reference.py
// (`build_seeded`, `reference_outputs`: pytorch_fid.fid_score.get_activations on the sorted
// files, and torchvision's Inception3.forward on the same preprocessed batch).
#[test]
fn pool3_and_logits_match_pytorch_fid() {
    let net = model();
    for prefix in ["grey", "rgb"] {
        let folder = ImageFolder::open(data().join(prefix)).unwrap();
        assert_eq!(folder.len(), 3);
        let t = Instant::now();
        // Batches of 2 and 1: batching must not change anything.
        let out = net.run_folder(&folder, 2, |_, _| {}).unwrap();
        let per_image = t.elapsed().as_secs_f64() / folder.len() as f64;
        assert_eq!(out.features.dims(), &[3, FEATURE_DIM]);
        assert_eq!(out.logits.dims(), &[3, NUM_CLASSES]);
        let e_features = common::rel_err(&out.features, &npy(&format!("{prefix}_pool3.npy")));
        let e_logits = common::rel_err(&out.logits, &npy(&format!("{prefix}_logits.npy")));
        let e_unbiased = common::rel_err(
            &out.logits_unbiased,
            &npy(&format!("{prefix}_logits_unbiased.npy")),
        );
        println!(
            "{prefix}: relative error pool3 {e_features:.2e}, logits {e_logits:.2e}, unbiased logits {e_unbiased:.2e}; {per_image:.2}s per image ({}x{} input)",
            folder.size().0,
            folder.size().1
        );
        assert!(
            e_features <= 1e-4,
            "{prefix} pool3: relative error {e_features:e}"
        );
        assert!(
            e_logits <= 1e-4,
            "{prefix} logits: relative error {e_logits:e}"
        );
        assert!(
            e_unbiased <= 1e-4,
            "{prefix} unbiased logits: relative error {e_unbiased:e}"
        );
    }
}

// tests/data/inception/state_dict.txt: `fid_inception_v3().state_dict()` of pytorch-fid, written
// by scripts/fid_inception_reference.py (`name dtype dims...` per line).
#[test]
fn expected_weights_are_pytorch_fids_state_dict() {
    let text = std::fs::read_to_string(data().join("state_dict.txt")).unwrap();
    let torch: Vec<(String, String, Vec<usize>)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap().to_string();
            let dtype = it.next().unwrap().to_string();
            (name, dtype, it.map(|d| d.parse().unwrap()).collect())
        })
        .collect();
    let ours = expected_weights();
    assert_eq!(ours.len(), torch.len(), "number of tensors");
    for (spec, (name, dtype, shape)) in ours.iter().zip(&torch) {
        assert_eq!(&spec.name, name);
        assert_eq!(&spec.shape, shape, "{name}");
        let want = if spec.optional { "int64" } else { "float32" };
        assert_eq!(dtype, want, "{name}");
        assert_eq!(
            spec.optional,
            name.ends_with(".bn.num_batches_tracked"),
            "{name}"
        );
    }
}

// resize_input.npy and resize_HxW.npy: F.interpolate(x, size=(H, W), mode='bilinear',
// align_corners=False) in scripts/fid_inception_reference.py (`write_resize_cases`).
#[test]
fn resize_matches_f_interpolate_up_and_down() {
    let x = npy("resize_input.npy");
    for (h, w) in [(5, 7), (31, 29), (4, 20), (13, 11)] {
        let ours = resize_bilinear(&x, h, w).unwrap();
        let theirs = npy(&format!("resize_{h}x{w}.npy"));
        let e = common::rel_err(&ours, &theirs);
        assert!(e <= 1e-6, "13x11 -> {h}x{w}: relative error {e:e}");
    }
}

#[test]
fn grey_images_are_repeated_to_three_channels_in_sorted_order() {
    let folder = ImageFolder::open(data().join("grey")).unwrap();
    let names: Vec<_> = folder
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // pytorch-fid's sorted(): byte order, so "digit_10" comes before "digit_2".
    assert_eq!(names, ["digit_10.png", "digit_2.png", "digit_a.png"]);
    let x = folder.load_all(&Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[3, 3, 28, 28]);
    let r = x.narrow(1, 0, 1).unwrap();
    for c in 1..3 {
        assert_eq!(common::rel_err(&x.narrow(1, c, 1).unwrap(), &r), 0.0);
    }
    // digit_2 is a checkerboard of bytes 30 and 220 (the script's `checker`); ToTensor divides by 255.
    let v = x
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(v.iter().all(|&p| p == 30.0 / 255.0 || p == 220.0 / 255.0));
}

// ---------------------------------------------------------------------------------------------
// Weights: the loaders and their errors.

fn expect_weights_error(tensors: HashMap<String, Tensor>, needles: &[&str]) {
    let err = message(FidInception::from_tensors(tensors, &Device::Cpu).unwrap_err());
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` not in the error: {err}");
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let mut t = seeded::state_dict(false).unwrap();
    t.remove("Mixed_6c.branch7x7dbl_3.bn.running_var");
    expect_weights_error(
        t,
        &[
            "missing tensor `Mixed_6c.branch7x7dbl_3.bn.running_var`",
            "[160]",
        ],
    );
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let mut t = seeded::state_dict(false).unwrap();
    t.insert(
        "Mixed_7b.branch3x3_2a.conv.weight".into(),
        Tensor::zeros((384, 384, 3, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    expect_weights_error(t, &["`Mixed_7b.branch3x3_2a.conv.weight` has shape [384, 384, 3, 1], expected [384, 384, 1, 3]"]);
    let mut t = seeded::state_dict(false).unwrap();
    t.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 2048), DType::F32, &Device::Cpu).unwrap(),
    );
    expect_weights_error(
        t,
        &["`fc.weight` has shape [1000, 2048], expected [1008, 2048]"],
    );
}

#[test]
fn an_unknown_name_is_named() {
    let mut t = seeded::state_dict(false).unwrap();
    t.insert(
        "Mixed_5b.branch1x1.conv.bias".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    );
    expect_weights_error(t, &["unknown tensor `Mixed_5b.branch1x1.conv.bias`"]);
    let mut t = seeded::state_dict(false).unwrap();
    t.insert(
        "AuxLogits.fc.weight".into(),
        Tensor::zeros((1008, 768), DType::F32, &Device::Cpu).unwrap(),
    );
    expect_weights_error(t, &["unknown tensor `AuxLogits.fc.weight`", "torchvision"]);
}

#[test]
fn the_wrapper_module_names_get_a_hint() {
    // pytorch-fid's InceptionV3 wrapper calls Conv2d_1a_3x3 `blocks.0.0`.
    let t: HashMap<String, Tensor> = seeded::state_dict(false)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace("Conv2d_1a_3x3", "blocks.0.0")
                    .replace("Conv2d_2a_3x3", "blocks.0.1"),
                v,
            )
        })
        .collect();
    expect_weights_error(
        t,
        &[
            "missing tensor `Conv2d_1a_3x3.conv.weight`",
            "unknown tensor `blocks.0.0.bn.bias`",
            "and 5 more missing tensors",
            "InceptionV3 wrapper",
        ],
    );
}

#[test]
fn non_finite_weights_and_negative_variances_are_refused() {
    let mut t = seeded::state_dict(false).unwrap();
    let mut v = vec![1f32; 192];
    v[7] = f32::NAN;
    t.insert(
        "Conv2d_4a_3x3.bn.weight".into(),
        Tensor::from_vec(v, 192, &Device::Cpu).unwrap(),
    );
    expect_weights_error(
        t,
        &[
            "`Conv2d_4a_3x3.bn.weight` has a non-finite value",
            "index 7",
        ],
    );
    let mut t = seeded::state_dict(false).unwrap();
    t.insert(
        "Conv2d_1a_3x3.bn.running_var".into(),
        Tensor::full(-0.5f32, 32, &Device::Cpu).unwrap(),
    );
    expect_weights_error(
        t,
        &["`Conv2d_1a_3x3.bn.running_var` has a negative variance"],
    );
    let mut t = seeded::state_dict(false).unwrap();
    t.insert(
        "fc.bias".into(),
        Tensor::zeros(1008, DType::I64, &Device::Cpu).unwrap(),
    );
    expect_weights_error(t, &["`fc.bias` has dtype I64"]);
}

#[test]
fn a_file_that_is_not_weights_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("weights.bin");
    std::fs::write(&bad, b"hello").unwrap();
    let e = message(FidInception::load(&bad, &Device::Cpu).unwrap_err());
    assert!(
        e.contains("weights.bin") && e.contains(".safetensors"),
        "{e}"
    );
    let pth = dir.path().join("weights.pth");
    std::fs::write(&pth, b"hello, not a pickle").unwrap();
    let e = message(FidInception::load(&pth, &Device::Cpu).unwrap_err());
    assert!(
        e.contains("weights.pth") && e.contains("not a PyTorch file"),
        "{e}"
    );
    let missing = dir.path().join("absent.safetensors");
    let e = message(FidInception::load(&missing, &Device::Cpu).unwrap_err());
    assert!(e.contains("absent.safetensors"), "{e}");
    // A safetensors file with the wrong tensors names the file and the tensor.
    let small = dir.path().join("small.safetensors");
    let x = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("fc.bias".to_string(), x)]), &small).unwrap();
    let e = message(FidInception::load(&small, &Device::Cpu).unwrap_err());
    assert!(
        e.contains("small.safetensors") && e.contains("`fc.bias` has shape [3], expected [1008]"),
        "{e}"
    );
}

/// The values `write_tiny_pth` in scripts/fid_inception_reference.py saves (see its docstring).
fn check_tiny(tensors: Vec<(String, Tensor)>) {
    let t: HashMap<String, Tensor> = tensors.into_iter().collect();
    let f32s = |n: &str| t[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(t["w"].dims(), &[2, 3]);
    assert_eq!(f32s("w"), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    assert_eq!(t["view"].dims(), &[3]);
    assert_eq!(f32s("view"), [0.5, 0.75, 1.0]);
    assert_eq!(t["t"].dims(), &[3, 2]);
    assert_eq!(f32s("t"), [0.0, 1.5, 0.5, 2.0, 1.0, 2.5]);
    assert_eq!(t["long"].to_vec1::<i64>().unwrap(), [-3, 0, 5]);
    assert_eq!(t["scalar"].dims(), &[] as &[usize]);
    assert_eq!(t["scalar"].to_scalar::<i64>().unwrap(), 7);
    assert_eq!(t["double"].to_vec1::<f64>().unwrap(), [1.0 / 3.0, -2.5]);
    assert_eq!(t.len(), 6);
}

// tiny_zip.pth / tiny_legacy.pth: torch.save of the same small state dict in the zip format and
// with _use_new_zipfile_serialization=False (scripts/fid_inception_reference.py, write_tiny_pth).
#[test]
fn pth_reader_reads_both_torch_save_formats() {
    check_tiny(read_pth(data().join("tiny_zip.pth")).unwrap());
    check_tiny(read_pth(data().join("tiny_legacy.pth")).unwrap());
}

#[test]
fn a_truncated_legacy_pth_is_an_error() {
    let bytes = std::fs::read(data().join("tiny_legacy.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [20, bytes.len() / 2, bytes.len() - 3] {
        let path = dir.path().join(format!("cut{cut}.pth"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = message(read_pth(&path).unwrap_err());
        assert!(e.contains(&format!("cut{cut}.pth")), "{e}");
    }
}

/// The seeded state dict must equal, bit for bit, what PyTorch wrote with `--export DIR`.
#[test]
fn loaders_read_the_network_pytorch_wrote() {
    let Some(dir) = std::env::var_os("EBM_FID_INCEPTION_EXPORT") else {
        println!(
            "skipped: set EBM_FID_INCEPTION_EXPORT=DIR after `/work/venv-ref/bin/python crates/ebm-eval/scripts/fid_inception_reference.py --export DIR`"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    let ours = seeded::state_dict(true).unwrap();
    for file in [
        "fid_inception_seeded.safetensors",
        "fid_inception_seeded.pth",
        "fid_inception_seeded_legacy.pth",
    ] {
        let path = dir.join(file);
        let t = Instant::now();
        let theirs: HashMap<String, Tensor> = if file.ends_with(".safetensors") {
            candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
        } else {
            read_pth(&path).unwrap().into_iter().collect()
        };
        println!(
            "{file}: {} tensors read in {:.2}s",
            theirs.len(),
            t.elapsed().as_secs_f64()
        );
        assert_eq!(theirs.len(), ours.len(), "{file}");
        for (name, a) in &ours {
            let b = theirs
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no {name}"));
            assert_eq!(a.dims(), b.dims(), "{file}: {name}");
            assert_eq!(a.dtype(), b.dtype(), "{file}: {name}");
            let same = a
                .eq(b)
                .unwrap()
                .to_dtype(DType::U32)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            assert_eq!(
                same as usize,
                a.elem_count(),
                "{file}: {name} differs from the seeded formula"
            );
        }
    }
    // The whole path through FidInception::load, on the format of pytorch-fid's weights file.
    let net =
        FidInception::load(dir.join("fid_inception_seeded_legacy.pth"), &Device::Cpu).unwrap();
    let x = ImageFolder::open(data().join("grey"))
        .unwrap()
        .load(0..1, &Device::Cpu)
        .unwrap();
    let e = common::rel_err(
        &net.features(&x).unwrap(),
        &npy("grey_pool3.npy").narrow(0, 0, 1).unwrap(),
    );
    println!("legacy .pth: pool3 relative error {e:.2e}");
    assert!(e <= 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Input errors.

#[test]
fn images_of_the_wrong_shape_or_with_nan_are_errors() {
    let net = model();
    let grey = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let e = message(net.features(&grey).unwrap_err());
    assert!(
        e.contains("[2, 1, 28, 28]") && e.contains("3 channels"),
        "{e}"
    );
    let flat = Tensor::zeros((2, 3 * 28 * 28), DType::F32, &Device::Cpu).unwrap();
    assert!(net.features(&flat).is_err());
    let mut v = vec![0.5f32; 3 * 8 * 8];
    v[5] = f32::NAN;
    let nan = Tensor::from_vec(v, (1, 3, 8, 8), &Device::Cpu).unwrap();
    let e = message(net.features(&nan).unwrap_err());
    assert!(e.contains("NaN"), "{e}");
    let e = message(
        net.logits_from_features(&Tensor::zeros((2, 100), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err(),
    );
    assert!(e.contains("[2, 100]"), "{e}");
    let x = Tensor::zeros((3, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(message(net.outputs_batched(&x, 0).unwrap_err()).contains("batch size"));
}

// ---------------------------------------------------------------------------------------------
// Image folders.

fn write_png(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 7 + y * 3) as u8]))
        .save(path)
        .unwrap();
}

#[test]
fn folder_errors_name_the_folder_or_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    let missing = root.join("nowhere");
    let e = message(ImageFolder::open(&missing).unwrap_err());
    assert!(e.contains("nowhere"), "{e}");

    let file = root.join("single.png");
    write_png(&file, 4, 4);
    let e = message(ImageFolder::open(&file).unwrap_err());
    assert!(
        e.contains("single.png") && e.contains("not a folder"),
        "{e}"
    );

    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    write_png(&empty.join(".hidden.png"), 4, 4); // glob('*.png') skips hidden files
    write_png(&empty.join("UPPER.PNG"), 4, 4); // and is case-sensitive
    let e = message(ImageFolder::open(&empty).unwrap_err());
    assert!(
        e.contains("empty") && e.contains("no image files") && e.contains("upper-case"),
        "{e}"
    );

    let mixed = root.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    write_png(&mixed.join("a.png"), 32, 32);
    write_png(&mixed.join("b.png"), 32, 32);
    write_png(&mixed.join("c.png"), 28, 30);
    let e = message(ImageFolder::open(&mixed).unwrap_err());
    assert!(
        e.contains("a.png is 32x32")
            && e.contains("c.png is 28x30")
            && e.contains("different sizes"),
        "{e}"
    );

    let broken = root.join("broken");
    std::fs::create_dir(&broken).unwrap();
    write_png(&broken.join("a.png"), 8, 8);
    std::fs::write(broken.join("b.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let e = message(ImageFolder::open(&broken).unwrap_err());
    assert!(e.contains("b.png"), "{e}");

    let jpeg = root.join("jpeg");
    std::fs::create_dir(&jpeg).unwrap();
    write_png(&jpeg.join("a.png"), 8, 8);
    // The first bytes of a JPEG file: pytorch-fid would read it, this build cannot.
    std::fs::write(
        jpeg.join("b.jpg"),
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    )
    .unwrap();
    let e = message(ImageFolder::open(&jpeg).unwrap_err());
    assert!(e.contains("b.jpg") && e.contains("PNG only"), "{e}");

    let good = root.join("good");
    std::fs::create_dir(&good).unwrap();
    write_png(&good.join("b.png"), 5, 3);
    write_png(&good.join("a.png"), 5, 3);
    std::fs::write(good.join("readme.txt"), "ignored, as by pytorch-fid").unwrap();
    let f = ImageFolder::open(&good).unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f.size(), (3, 5));
    assert!(f.files()[0].ends_with("a.png"));
    assert_eq!(f.load_all(&Device::Cpu).unwrap().dims(), &[2, 3, 3, 5]);
    assert!(f.load(1..3, &Device::Cpu).is_err());
}

// ---------------------------------------------------------------------------------------------
// Inception Score.

#[test]
fn identical_predictions_score_one() {
    let row: Vec<f32> = (0..10).map(|k| (k as f32 * 0.37).sin() * 4.0).collect();
    let logits = Tensor::from_vec(row.repeat(50), (50, 10), &Device::Cpu).unwrap();
    let (mean, std) = inception_score(&logits, 10).unwrap();
    assert!((mean - 1.0).abs() < 1e-12 && std < 1e-12, "{mean} {std}");
}

#[test]
fn confident_predictions_spread_over_k_classes_score_k() {
    // Each split of 4 images holds one image of each of 4 classes, predicted with certainty
    // (softmax underflows to exactly 0 elsewhere): p(y) is uniform, KL = log 4, IS = 4.
    let (n, k) = (40, 4);
    let mut v = vec![0f32; n * 6];
    for i in 0..n {
        v[i * 6 + i % k] = 1000.0;
    }
    let logits = Tensor::from_vec(v, (n, 6), &Device::Cpu).unwrap();
    let (mean, std) = inception_score(&logits, 10).unwrap();
    assert!((mean - 4.0).abs() < 1e-12 && std < 1e-12, "{mean} {std}");
}

#[test]
fn inception_score_matches_the_original_numpy_code() {
    // The Inception Score of Salimans et al. (openai/improved-gan, inception_score.py), on
    // softmax probabilities, 23 images in 10 uneven splits:
    //
    // import numpy as np
    // i, j = np.mgrid[0:23, 0:7].astype(np.float64)
    // logits = 3.0 * np.sin(1.3 * i + 0.7 * j * j) + 0.5 * j
    // p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    // scores = []
    // for k in range(10):
    //     part = p[k * 23 // 10:(k + 1) * 23 // 10]
    //     kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    //     scores.append(np.exp(np.mean(np.sum(kl, 1))))
    // print(repr(np.mean(scores)), repr(np.std(scores)))
    // -> 1.4347751715820452 0.23091701689197675
    let mut v = Vec::new();
    for i in 0..23 {
        for j in 0..7 {
            let (i, j) = (i as f64, j as f64);
            v.push(3.0 * (1.3 * i + 0.7 * j * j).sin() + 0.5 * j);
        }
    }
    let logits = Tensor::from_vec(v, (23, 7), &Device::Cpu).unwrap();
    let (mean, std) = inception_score(&logits, 10).unwrap();
    assert!((mean - 1.4347751715820452).abs() < 1e-12, "{mean}");
    assert!((std - 0.23091701689197675).abs() < 1e-12, "{std}");
}

#[test]
fn inception_score_refuses_bad_input() {
    let ok = Tensor::zeros((5, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(message(inception_score(&ok, 0).unwrap_err()).contains("0 splits"));
    assert!(message(inception_score(&ok, 10).unwrap_err()).contains("5 images"));
    let flat = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
    assert!(message(inception_score(&flat, 1).unwrap_err()).contains("[N, C]"));
    let nan = Tensor::from_vec(vec![0.0, f32::NAN, 1.0, 2.0], (2, 2), &Device::Cpu).unwrap();
    assert!(message(inception_score(&nan, 1).unwrap_err()).contains("logit 1 of image 0 is NaN"));
}
