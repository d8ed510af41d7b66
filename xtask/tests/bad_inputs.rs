//! Bad inputs and the errors they get (the table in docs/BAD_INPUTS.md): every case reachable
//! from the `xtask` command line is run through the real binary, which must exit with status 1,
//! print `error: ...` with the expected phrase, and never panic; a few library-level cases
//! (NaN inputs, samplers, the composition parser, image folders) are called directly.
//!
//! `cargo test -p xtask --test bad_inputs -- --nocapture --test-threads 1` prints each case's
//! first error line as a Markdown table row, the rows of docs/BAD_INPUTS.md.

use std::io::Write;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use ebm_core::Energy;

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn idx_bytes(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8, 0, 0x08, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A complete data folder: Fashion-MNIST (64 training, 48 test images) and MNIST-10k (100
/// digits), random bytes in the real file layout.
fn good_data(dir: &Path) -> PathBuf {
    common::write_data(dir, 64, 48)
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

/// Runs `xtask` with `args` in the folder `scratch`, without `EBM_DATA_DIR` and with an empty
/// download cache unless `env` says otherwise.
fn xtask(args: &[String], env: &[(&str, &Path)], scratch: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .current_dir(scratch)
        .env_remove("EBM_DATA_DIR")
        .env("EBM_CACHE_DIR", scratch.join("empty-cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Asserts that the run failed cleanly with `phrase` in its error, and prints a table row.
fn assert_clean_failure(
    case: &str,
    args: &[String],
    out: &std::process::Output,
    phrase: &str,
    tmp: &Path,
) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{case}: xtask panicked:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{case}: exit status {:?}, stderr:\n{stderr}",
        out.status
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{case}: no `error:` line in:\n{stderr}"));
    assert!(
        stderr.contains(phrase),
        "{case}: expected `{phrase}` in:\n{stderr}"
    );
    println!(
        "| {case} | {} | {} |",
        code(&format!("xtask {}", shorten(&args.join(" ")))),
        code(&hide_tmp(&line.replace(&tmp.display().to_string(), "$TMP")))
    );
}

/// `text` as a Markdown code span (double backticks when it holds one), `|` escaped.
fn code(text: &str) -> String {
    let text = text.replace('|', "\\|");
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// Temporary folders (`<temp dir>/.tmpXXXXXX`) in a message shown as `$TMP`.
fn hide_tmp(text: &str) -> String {
    let prefix = std::env::temp_dir().join(".tmp").display().to_string();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(&prefix) {
        out.push_str(&rest[..i]);
        out.push_str("$TMP");
        let after = &rest[i + prefix.len()..];
        rest = &after[after.find('/').unwrap_or(after.len())..];
    }
    out.push_str(rest);
    out
}

/// The command for the table (`--set-case` marks the case's own overrides).
fn shorten(cmd: &str) -> String {
    cmd.replace("--set-case", "--set")
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `reproduce igebm` on `data` into `out` with the tiny recipe and the extra `sets`.
fn igebm_args(data: &Path, out: &Path, sets: &[&str]) -> Vec<String> {
    let mut args = strs(&["reproduce", "igebm", "--quick"]);
    args.extend(["--data-dir".into(), data.display().to_string()]);
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(common::set_args(&common::tiny_igebm()));
    for s in sets {
        // Spelled `--set-case` for the table only; passed as `--set`, after the tiny recipe so
        // that it wins.
        args.extend(["--set".into(), s.to_string()]);
    }
    args
}

/// `igebm_args` as printed in the table: the case's own overrides shown.
fn igebm_case(case: &str, data: &Path, out: &Path, sets: &[&str], scratch: &Path, phrase: &str) {
    let args = igebm_args(data, out, sets);
    let output = xtask(&args, &[], scratch);
    let mut shown = strs(&["reproduce", "igebm", "--data-dir"]);
    shown.push(data.file_name().unwrap().to_string_lossy().into_owned());
    for s in sets {
        shown.extend(["--set-case".into(), s.to_string()]);
    }
    assert_clean_failure(case, &shown, &output, phrase, scratch);
}

// ---------------------------------------------------------------------------------------------
// Command-line cases.

#[test]
fn command_line_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let known = format!(
        "unknown experiment `nope`; known: {}",
        xtask::reproduce::EXPERIMENTS.join(", ")
    );
    let cases: &[(&str, &[&str], &str)] = &[
        ("unknown experiment name", &["reproduce", "nope"], &known),
        (
            "unknown data set name (download)",
            &["download", "nope"],
            "unknown data set `nope`; known: fashion-mnist, mnist, mnist-10k, cifar-10",
        ),
        (
            "unknown data set name (train-classifier)",
            &["train-classifier", "--dataset", "svhn"],
            "unknown data set `svhn`",
        ),
        (
            "unknown data set name (recipe)",
            &["reproduce", "igebm", "--set", "dataset=svhn"],
            "unknown data set `svhn`",
        ),
        (
            "unknown override key",
            &["reproduce", "igebm", "--set", "train.adam.learning_rate=1"],
            "override `train.adam.learning_rate=1`: the recipe has no field `train.adam.learning_rate`",
        ),
        (
            "override of the wrong type",
            &["reproduce", "latent", "--set", "batch_size=big"],
            "override rejected: invalid type: string \"big\", expected usize",
        ),
        (
            "override without a value",
            &["reproduce", "vaebm", "--set", "ebm_iterations"],
            "is not of the form path.to.field=value",
        ),
        (
            "unknown device",
            &["reproduce", "igebm", "--device", "tpu"],
            "unknown device `tpu`: use cpu, cuda or metal",
        ),
        (
            "no scenes asked for",
            &["scenes", "--count", "0", "--out", "scenes-out"],
            "--count must be at least 1",
        ),
        (
            "bench without a workload",
            &["bench"],
            "name a workload (langevin, train, latent) or pass --vs-pytorch",
        ),
    ];
    for (case, args, phrase) in cases {
        let args = strs(args);
        let out = xtask(&args, &[], s);
        assert_clean_failure(case, &args, &out, phrase, s);
    }
    assert!(!s.join("scenes-out").exists());
    assert!(
        !s.join("results").exists(),
        "a failed run left a results folder"
    );
}

#[test]
fn missing_data_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let empty = s.join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    // An explicit folder without the files.
    igebm_case(
        "missing data set (explicit --data-dir)",
        &empty,
        &s.join("out"),
        &[],
        s,
        "is not complete in",
    );

    // Nowhere: an empty $EBM_DATA_DIR and download cache (and no Debian package of CIFAR-10).
    if !Path::new("/usr/share/datasets/cifar-10").exists() {
        let args = strs(&["train-classifier", "--dataset", "cifar-10"]);
        let out = xtask(&args, &[("EBM_DATA_DIR", &empty)], s);
        assert_clean_failure(
            "missing data set (searched everywhere)",
            &args,
            &out,
            "CIFAR-10 (cifar-10) is not on this machine. Looked in:",
            s,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cargo xtask download cifar-10"), "{stderr}");
    }

    // Fashion-MNIST present, the OOD digits not.
    let data = good_data(&s.join("no-digits"));
    std::fs::remove_dir_all(data.join("mnist-10k")).unwrap();
    igebm_case(
        "missing OOD digits (mnist-10k and mnist)",
        &data,
        &s.join("out"),
        &[],
        s,
        "the OOD table needs MNIST digits (mnist-10k or mnist)",
    );
}

#[test]
fn damaged_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    fn train_images(d: &Path) -> PathBuf {
        d.join("fashion-mnist/train-images-idx3-ubyte.gz")
    }
    fn train_labels(d: &Path) -> PathBuf {
        d.join("fashion-mnist/train-labels-idx1-ubyte.gz")
    }
    let (images, labels) = common::synthetic(64, 1);
    let full = gzip(&idx_bytes(&[64, 28, 28], &images));

    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &str, Damage, &str)> = vec![
        (
            "truncated gzip",
            "truncated-gzip",
            Box::new({
                let full = full.clone();
                move |d| std::fs::write(train_images(d), &full[..full.len() / 2]).unwrap()
            }),
            "corrupt or truncated gzip stream",
        ),
        (
            "gzip with a corrupt body",
            "corrupt-gzip",
            Box::new({
                let mut bad = full.clone();
                for b in &mut bad[20..60] {
                    *b ^= 0x5a;
                }
                move |d| std::fs::write(train_images(d), &bad).unwrap()
            }),
            "corrupt or truncated gzip stream",
        ),
        (
            "empty file",
            "empty-file",
            Box::new(|d| std::fs::write(train_images(d), b"").unwrap()),
            "not an IDX file: 0 bytes, shorter than the 4-byte header",
        ),
        (
            "corrupt IDX magic (not gzip, not IDX)",
            "bad-magic",
            Box::new(|d| std::fs::write(train_images(d), b"<html>404 Not Found</html>").unwrap()),
            "not an IDX file: the magic number starts 3c 68, not 00 00",
        ),
        (
            "unsupported IDX type (float32, 0x0d)",
            "float-idx",
            Box::new(|d| {
                let mut b = idx_bytes(&[1, 2, 2], &[0; 16]);
                b[2] = 0x0d;
                std::fs::write(train_images(d), gzip(&b)).unwrap()
            }),
            "IDX type code 0x0d is not supported (only 0x08, unsigned bytes)",
        ),
        (
            "wrong IDX dimensions (data shorter)",
            "short-idx",
            Box::new({
                let images = images.clone();
                move |d| {
                    let b = idx_bytes(&[64, 28, 28], &images[..1000]);
                    std::fs::write(train_images(d), gzip(&b)).unwrap()
                }
            }),
            "truncated IDX data: dimensions [64, 28, 28] need 50176 bytes after the header, the file has 1000",
        ),
        (
            "wrong IDX dimensions (data longer)",
            "long-idx",
            Box::new({
                let images = images.clone();
                move |d| {
                    let b = idx_bytes(&[60, 28, 28], &images);
                    std::fs::write(train_images(d), gzip(&b)).unwrap()
                }
            }),
            "oversized IDX data: dimensions [60, 28, 28] need 47040 bytes after the header, the file has 50176",
        ),
        (
            "truncated IDX header",
            "short-header",
            Box::new(|d| {
                std::fs::write(train_images(d), gzip(&[0, 0, 8, 3, 0, 0, 0, 64])).unwrap()
            }),
            "truncated IDX header: 3 dimensions need 16 bytes, the file has 8",
        ),
        (
            "IDX dimensions that overflow",
            "overflow-idx",
            Box::new(|d| {
                let b = idx_bytes(&[u32::MAX as usize; 3], &[]);
                std::fs::write(train_images(d), gzip(&b)).unwrap()
            }),
            "IDX dimensions [4294967295, 4294967295, 4294967295] overflow",
        ),
        (
            "images and labels of different counts",
            "count-mismatch",
            Box::new({
                let labels = labels.clone();
                move |d| {
                    let b = idx_bytes(&[63], &labels[..63]);
                    std::fs::write(train_labels(d), gzip(&b)).unwrap()
                }
            }),
            "train-labels-idx1-ubyte.gz: 63 labels for the 64 images of",
        ),
        (
            "label out of range",
            "bad-label",
            Box::new({
                let mut labels = labels.clone();
                labels[5] = 10;
                move |d| {
                    let b = idx_bytes(&[64], &labels);
                    std::fs::write(train_labels(d), gzip(&b)).unwrap()
                }
            }),
            "train-labels-idx1-ubyte.gz: label 5 is 10, out of range for 10 classes",
        ),
        (
            "labels file holding images (wrong rank)",
            "labels-rank",
            Box::new({
                let full = full.clone();
                move |d| std::fs::write(train_labels(d), &full).unwrap()
            }),
            "train-labels-idx1-ubyte.gz: expected labels of dimensions [N], got [64, 28, 28]",
        ),
    ];
    for (case, folder, damage, phrase) in cases {
        let data = good_data(&s.join(folder));
        damage(&data);
        igebm_case(case, &data, &s.join("out"), &[], s, phrase);
        // Every data error names the damaged file's folder.
        let out = xtask(&igebm_args(&data, &s.join("out"), &[]), &[], s);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(folder), "{case}: {stderr}");
    }

    // CIFAR-10: a batch of the wrong length, and a record with label 10.
    for (case, folder, bytes, phrase) in [
        (
            "CIFAR-10 batch of the wrong length",
            "cifar-short",
            vec![0u8; 100],
            "not a CIFAR-10 batch: 100 bytes is not a whole number of 3073-byte records",
        ),
        (
            "CIFAR-10 record with label 10",
            "cifar-label",
            [vec![10u8], vec![0u8; 3072]].concat(),
            "record 0 has label 10, CIFAR-10 labels are 0-9",
        ),
    ] {
        let dir = s.join(folder).join("cifar-10/cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ] {
            std::fs::write(dir.join(f), &bytes).unwrap();
        }
        igebm_case(
            case,
            &s.join(folder),
            &s.join("out"),
            &["dataset=\"cifar-10\""],
            s,
            phrase,
        );
        let out = xtask(
            &igebm_args(&s.join(folder), &s.join("out"), &["dataset=\"cifar-10\""]),
            &[],
            s,
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("data_batch_1.bin"));
    }
}

#[test]
fn recipes_the_data_or_the_sampler_cannot_take() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let data = good_data(&s.join("data"));
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "wrong image size for the model",
            &["model.image_size=32"],
            "the data set's images are [1, 28, 28], the model takes [1, 32, 32]",
        ),
        (
            "step size 0",
            &["train.langevin.step_size=0"],
            "invalid step_size: must be a finite number > 0, got 0",
        ),
        (
            "negative step size",
            &["train.langevin.step_size=-0.5"],
            "invalid step_size: must be a finite number > 0, got -0.5",
        ),
        (
            "unknown model in the recipe",
            &["models=[\"both\"]"],
            "unknown model `both` in the recipe: use unconditional and/or conditional",
        ),
        (
            "more FID images than the test set has",
            &["eval.fid_reference=1000"],
            "the domain FID needs fid_reference + fid_samples = 1004 test images (fid_samples >= 2), the test set has 48",
        ),
        (
            "batch size 0",
            &["batch_size=0"],
            "batch",
        ),
    ];
    for (case, sets, phrase) in cases {
        igebm_case(case, &data, &s.join("out"), sets, s, phrase);
    }
}

/// The cached domain classifier is a checkpoint the experiments load: damaged, it is an error
/// that names the file (not a silent retraining).
#[test]
fn damaged_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let data = good_data(&s.join("data"));
    let out = s.join("results");
    let args = igebm_args(&data, &out, &[]);
    let ok = xtask(&args, &[], s);
    assert!(
        ok.status.success(),
        "the tiny run should pass: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let weights = out.join("classifiers/fashion-mnist.safetensors");
    let config = out.join("classifiers/fashion-mnist.json");
    let good_weights = std::fs::read(&weights).unwrap();
    let good_config = std::fs::read_to_string(&config).unwrap();

    let restore = || {
        std::fs::write(&weights, &good_weights).unwrap();
        std::fs::write(&config, &good_config).unwrap();
    };
    type Edit<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "corrupt checkpoint (weights)",
            Box::new(|| std::fs::write(&weights, b"not a safetensors file").unwrap()),
            "not a readable safetensors file",
        ),
        (
            "truncated checkpoint (weights)",
            Box::new(|| std::fs::write(&weights, &good_weights[..good_weights.len() / 2]).unwrap()),
            "not a readable safetensors file",
        ),
        (
            "unknown key in a checkpoint config",
            Box::new(|| {
                std::fs::write(
                    &config,
                    good_config.replace("\"feature_dim\"", "\"feature_width\""),
                )
                .unwrap()
            }),
            "bad config: unknown field `feature_width`",
        ),
        (
            "checkpoint config of another model kind",
            Box::new(|| {
                std::fs::write(&config, good_config.replace("\"classifier\"", "\"igebm\"")).unwrap()
            }),
            "holds a igebm model, not classifier",
        ),
        (
            "checkpoint config that is not JSON",
            Box::new(|| std::fs::write(&config, "{ \"format_version\": 1,").unwrap()),
            "not valid JSON",
        ),
        (
            "checkpoint config missing",
            Box::new(|| std::fs::remove_file(&config).unwrap()),
            "fashion-mnist.json",
        ),
        (
            "weights of another shape than the config",
            Box::new(|| {
                std::fs::write(
                    &config,
                    good_config.replace("\"feature_dim\": 6", "\"feature_dim\": 7"),
                )
                .unwrap()
            }),
            "has shape",
        ),
    ];
    for (case, damage, phrase) in cases {
        restore();
        damage();
        let output = xtask(&args, &[], s);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A damaged cache is reported by name and trained again; the run goes on.
        assert!(!stderr.contains("panicked"), "{case}: {stderr}");
        assert!(output.status.success(), "{case}: {stdout}\n{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.contains("does not load"))
            .unwrap_or_else(|| panic!("{case}: no `does not load` line in:\n{stdout}"));
        assert!(
            line.contains(phrase),
            "{case}: expected `{phrase}` in: {line}"
        );
        assert!(
            line.contains("fashion-mnist."),
            "{case}: names the file: {line}"
        );
        println!(
            "| {case} | {} | {} |",
            code("xtask reproduce igebm --data-dir data --out results"),
            code(&hide_tmp(&line.replace(&s.display().to_string(), "$TMP")))
        );
        // The retrained cache loads again.
        assert!(ebm_nn::checkpoint::load::<ebm_nn::Classifier>(&weights, &Device::Cpu).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Library-level cases.

fn row(case: &str, call: &str, err: impl std::fmt::Display) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("").to_string();
    println!("| {case} | {} | {} |", code(call), code(&hide_tmp(&first)));
    text
}

#[test]
fn non_finite_inputs() {
    use ebm_mcmc::{Langevin, LangevinConfig};
    use ebm_nn::{Igebm, IgebmConfig};
    let dev = Device::Cpu;
    let mut rng = ebm_core::seeded_rng(0);
    let model = Igebm::new(&IgebmConfig::small(1, 8, 4), &dev, &mut rng).unwrap();
    let frozen = model.frozen().unwrap();
    let mut v = vec![0.5f32; 2 * 64];
    v[3] = f32::NAN;
    let nan = Tensor::from_vec(v, (2, 1, 8, 8), &dev).unwrap();

    // The energy checks its input: a NaN is an error naming it, not a NaN energy.
    let err = frozen.energy(&nan).unwrap_err().to_string();
    println!("| NaN in the input to an energy | `Igebm::energy(x with a NaN)` | `{err}` |");
    assert!(err.contains("IGEBM input contains NaN"), "{err}");

    let sampler = Langevin::new(LangevinConfig::igebm().with_steps(2)).unwrap();
    let err = sampler.run(&frozen, &nan, &mut rng).unwrap_err();
    let text = row(
        "NaN in a Langevin start",
        "Langevin::run(x0 with a NaN)",
        err,
    );
    assert_eq!(text, "Langevin start contains NaN or infinite values");

    let mut trainer = ebm_train::CdTrainer::new(
        model,
        ebm_train::CdConfig {
            langevin: LangevinConfig::igebm().with_steps(2),
            ..Default::default()
        },
    )
    .unwrap();
    let err = trainer.step(&nan, None, &mut rng).unwrap_err();
    let text = row(
        "NaN in a training batch",
        "CdTrainer::step(x with a NaN)",
        err,
    );
    assert_eq!(text, "training batch contains NaN or infinite values");

    let bad = LangevinConfig {
        step_size: 0.0,
        ..LangevinConfig::igebm()
    };
    let text = row(
        "step size <= 0 (library)",
        "Langevin::new(step_size: 0.0)",
        Langevin::new(bad).err().unwrap(),
    );
    assert!(text.contains("invalid step_size: must be a finite number > 0, got 0"));

    let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &dev).unwrap();
    let text = row(
        "wrong image size for a model (library)",
        "Igebm::energy(x of [2, 3, 32, 32]) on a 1x8x8 model",
        frozen.energy(&x).unwrap_err(),
    );
    assert!(text.contains("expected shape [batch >= 1, 1, 8, 8], got [2, 3, 32, 32]"));
}

#[test]
fn composition_parser_errors() {
    use ebm_compose::Expr;
    let cases = [
        (
            "unbalanced parenthesis (unclosed)",
            "(shape=square & color=red",
            "`(` at column 1 is never closed",
        ),
        (
            "unbalanced parenthesis (extra `)`)",
            "shape=square)",
            "`)` has no matching `(`",
        ),
        (
            "bad weight (0)",
            "0*shape=square",
            "weight must be a finite number > 0, got 0",
        ),
        (
            "bad weight (negative)",
            "-2*shape=square",
            "weight must be a finite number > 0, got -2",
        ),
        (
            "bad NOT weight",
            "!-1*shape=square",
            "must be a finite number >= 0, got -1",
        ),
        (
            "bad temperature",
            "(a=b | c=d)@0",
            "temperature must be a finite number > 0, got 0",
        ),
        ("temperature without OR", "(a=b & c=d)@2", "column 12"),
        (
            "number too large",
            "1e999*a=b",
            "weight must be a finite number > 0, got inf",
        ),
        ("empty expression", "   ", "empty"),
        ("trailing input", "a=b c=d", "column 5"),
        ("unexpected character", "a=b & #", "`#`"),
        ("missing value", "shape=", "a value for `shape`"),
        (
            "nesting too deep",
            &"(".repeat(300),
            "nested deeper than 200 levels",
        ),
    ];
    for (case, text, phrase) in cases {
        let err = Expr::parse(text).unwrap_err();
        let call = if text.len() > 40 {
            "Expr::parse(\"(\" repeated 300 times)".to_string()
        } else {
            format!("Expr::parse({text:?})")
        };
        let msg = row(case, &call, &err);
        assert!(msg.contains(phrase), "{case}: `{phrase}` not in {msg}");
        assert!(err.column().is_some(), "{case}: no column");
    }

    // Unknown concept and value: against a set of concepts.
    struct Two;
    impl ebm_core::LabelledEnergy for Two {
        fn energy_given(&self, x: &Tensor, _labels: &Tensor) -> ebm_core::Result<Tensor> {
            Ok(x.sum(1)?)
        }
        fn num_classes(&self) -> usize {
            2
        }
    }
    let mut set = ebm_compose::ConceptSet::new();
    set.add_discrete("shape", Two, [("square", 0), ("circle", 1)])
        .unwrap();
    for (case, text, phrase) in [
        (
            "unknown concept",
            "shape=square & colour=red",
            "column 16: unknown concept `colour` (known concepts: shape)",
        ),
        (
            "unknown value",
            "shape=cube",
            "column 7: unknown value `cube` for concept `shape` (its values: square, circle)",
        ),
        ("vector for a discrete concept", "shape=(0.5, 0.5)", "shape"),
    ] {
        let err = set.parse_expr(text).unwrap_err();
        let msg = row(case, &format!("ConceptSet::parse_expr({text:?})"), &err);
        assert!(msg.contains(phrase), "{case}: `{phrase}` not in {msg}");
    }
}

#[test]
fn image_folders_for_the_fid() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let msg = row(
        "FID on an empty folder",
        "ebm_eval::ImageFolder::open(empty/)",
        ebm_eval::ImageFolder::open(&empty).err().unwrap(),
    );
    assert!(msg.contains("no image files in the folder"), "{msg}");

    std::fs::write(empty.join("A.PNG"), b"x").unwrap();
    let msg = row(
        "FID on a folder of upper-case .PNG files",
        "ebm_eval::ImageFolder::open(dir/ with A.PNG)",
        ebm_eval::ImageFolder::open(&empty).err().unwrap(),
    );
    assert!(msg.contains("upper-case extension"), "{msg}");

    std::fs::write(tmp.path().join("bad.png"), b"not a png").unwrap();
    let one = tmp.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::rename(tmp.path().join("bad.png"), one.join("bad.png")).unwrap();
    let msg = row(
        "FID on a folder with a corrupt PNG",
        "ebm_eval::ImageFolder::open(dir/ with bad.png)",
        ebm_eval::ImageFolder::open(&one).err().unwrap(),
    );
    assert!(msg.contains("bad.png"), "{msg}");

    let msg = row(
        "FID on a folder that does not exist",
        "ebm_eval::ImageFolder::open(/nonexistent)",
        ebm_eval::ImageFolder::open("/nonexistent").err().unwrap(),
    );
    assert!(msg.contains("/nonexistent"), "{msg}");
}
