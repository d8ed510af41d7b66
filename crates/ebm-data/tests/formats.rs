//! IDX and CIFAR-10 readers on synthetic files: round trips, and every kind of damage.

use std::io::Write;

use candle_core::Device;
use ebm_data::{cifar, idx, DataSet, ImageSet, ShuffledBatches, Split};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn sample_idx() -> (Vec<usize>, Vec<u8>) {
    let dims = vec![3, 4, 5];
    let data: Vec<u8> = (0..60).map(|i| (i * 7 % 256) as u8).collect();
    (dims, data)
}

#[test]
fn idx_round_trips_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (dims, data) = sample_idx();
    let plain = dir.path().join("x-idx3-ubyte");
    std::fs::write(&plain, idx::encode(&dims, &data)).unwrap();
    let gz = dir.path().join("x-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&idx::encode(&dims, &data))).unwrap();
    for path in [plain, gz] {
        let a = idx::read(&path).unwrap();
        assert_eq!((a.dims, a.data), (dims.clone(), data.clone()));
    }
}

#[test]
fn damaged_idx_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (dims, data) = sample_idx();
    let bytes = idx::encode(&dims, &data);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.gz", gzip(&bytes)[..40].to_vec(), "corrupt or truncated gzip stream"),
        ("short-data", bytes[..bytes.len() - 5].to_vec(), "truncated IDX data: dimensions [3, 4, 5] need 60 bytes after the header, the file has 55"),
        ("long-data", [bytes.clone(), vec![0]].concat(), "oversized IDX data"),
        ("magic", [vec![1, 0], bytes[2..].to_vec()].concat(), "not an IDX file: the magic number starts 01 00"),
        ("float", [vec![0, 0, 0x0d], bytes[3..].to_vec()].concat(), "IDX type code 0x0d is not supported"),
        ("header", bytes[..9].to_vec(), "truncated IDX header"),
        ("tiny", vec![0, 0], "shorter than the 4-byte header"),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = idx::read(&path).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(expected),
            "{name}: {err}"
        );
    }
    let missing = dir.path().join("absent.gz");
    let err = idx::read(&missing).unwrap_err().to_string();
    assert!(
        err.contains("absent.gz") && err.contains("No such file"),
        "{err}"
    );
}

/// A problem of the labels file is reported under the labels file's name, a problem of the
/// images file under the images file's, whichever of the pair has it.
#[test]
fn a_damaged_pair_names_the_file_at_fault() {
    let images = "t10k-images-idx3-ubyte.gz";
    let labels = "t10k-labels-idx1-ubyte.gz";
    let (dims, data) = sample_idx();
    // (image dims, image bytes, label dims, label bytes, the file at fault, the problem)
    type Case<'a> = (Vec<usize>, Vec<u8>, Vec<usize>, Vec<u8>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            dims.clone(),
            data.clone(),
            vec![3],
            vec![1, 12, 2],
            labels,
            "label 1 is 12, out of range for 10 classes",
        ),
        (
            dims.clone(),
            data.clone(),
            vec![2],
            vec![1, 2],
            labels,
            "2 labels for the 3 images of",
        ),
        (
            dims.clone(),
            data.clone(),
            vec![3, 1],
            vec![1, 2, 3],
            labels,
            "expected labels of dimensions [N], got [3, 1]",
        ),
        (
            vec![60],
            data.clone(),
            vec![3],
            vec![1, 2, 3],
            images,
            "expected images of dimensions [N, H, W], got [60]",
        ),
    ];
    for (image_dims, image_data, label_dims, label_data, culprit, problem) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(images),
            gzip(&idx::encode(&image_dims, &image_data)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(labels),
            gzip(&idx::encode(&label_dims, &label_data)),
        )
        .unwrap();
        let err = DataSet::FashionMnist
            .load_from(dir.path(), Split::Test)
            .unwrap_err()
            .to_string();
        let expected = format!("{}: {problem}", dir.path().join(culprit).display());
        assert!(
            err.starts_with(&expected),
            "{err}\nshould start with {expected}"
        );
    }
    // The intact pair loads.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(images), gzip(&idx::encode(&dims, &data))).unwrap();
    std::fs::write(
        dir.path().join(labels),
        gzip(&idx::encode(&[3], &[0, 9, 4])),
    )
    .unwrap();
    let set = DataSet::FashionMnist
        .load_from(dir.path(), Split::Test)
        .unwrap();
    assert_eq!((set.len(), set.labels()), (3, &[0u8, 9, 4][..]));
}

#[test]
fn cifar_batches_parse_and_reject_damage() {
    let mut bytes = Vec::new();
    for label in [3u8, 9] {
        bytes.push(label);
        bytes.extend((0..3072).map(|i| (i % 256) as u8));
    }
    let set = cifar::parse_batch(&bytes).unwrap();
    assert_eq!(
        (set.len(), set.shape(), set.labels()),
        (2, [3, 32, 32], &[3u8, 9][..])
    );
    assert_eq!(set.image(1)[1024], 0, "the green plane starts at byte 1024");
    let err = cifar::parse_batch(&bytes[..5000]).unwrap_err();
    assert!(
        err.contains("not a whole number of 3073-byte records"),
        "{err}"
    );
    bytes[0] = 10;
    let err = cifar::parse_batch(&bytes).unwrap_err();
    assert!(err.contains("record 0 has label 10"), "{err}");
}

#[test]
fn tensors_scale_and_dequantise_bytes() {
    let set = ImageSet::new(vec![0, 255, 128, 7], vec![1, 2], [1, 1, 2], 3).unwrap();
    let t = set.tensor(&[1, 0], &Device::Cpu).unwrap();
    assert_eq!(
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![128.0 / 255.0, 7.0 / 255.0, 0.0, 1.0]
    );
    let mut rng = ebm_core::seeded_rng(1);
    let d = set.dequantized(&[0, 1], &mut rng, &Device::Cpu).unwrap();
    let bytes = [0u8, 255, 128, 7];
    for (v, b) in d
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .zip(bytes)
    {
        assert!(
            (0.0..1.0).contains(v) && (v * 256.0).floor() as u8 == b,
            "{v} from byte {b}"
        );
    }
    assert_eq!(
        set.labels_tensor(&[1], &Device::Cpu)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        vec![2]
    );
    assert!(set.tensor(&[2], &Device::Cpu).is_err());
    assert!(ImageSet::new(vec![0; 3], vec![0, 1], [1, 1, 2], 3).is_err());
    assert!(ImageSet::new(vec![0; 4], vec![0, 5], [1, 1, 2], 3).is_err());
}

#[test]
fn shuffled_batches_cover_each_epoch_once_and_repeat_by_seed() {
    let epoch = |seed| {
        let mut b = ShuffledBatches::new(10, 3).unwrap();
        let mut rng = ebm_core::seeded_rng(seed);
        let mut seen: Vec<usize> = (0..3)
            .flat_map(|_| b.next_batch(&mut rng).to_vec())
            .collect();
        let order = seen.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            9,
            "three batches of one epoch never repeat an index"
        );
        let _ = b.next_batch(&mut rng);
        assert_eq!(b.epoch(), 2);
        order
    };
    assert_eq!(epoch(3), epoch(3));
    assert_ne!(epoch(3), epoch(4));
    assert!(ShuffledBatches::new(2, 3).is_err());
}

#[test]
fn shuffled_batches_continue_from_a_saved_state() {
    let mut a = ShuffledBatches::new(10, 3).unwrap();
    let mut rng = ebm_core::seeded_rng(5);
    for _ in 0..4 {
        a.next_batch(&mut rng);
    }
    let (order, position, epoch) = a.state();
    let mut b = ShuffledBatches::new(10, 3).unwrap();
    b.restore(order.to_vec(), position, epoch).unwrap();
    let mut rng_b = rng.clone();
    for _ in 0..7 {
        assert_eq!(a.next_batch(&mut rng), b.next_batch(&mut rng_b));
    }
    assert_eq!(a.epoch(), b.epoch());
    for (order, position) in [
        (vec![0, 1, 2], 0),
        (vec![0; 10], 0),
        ((0..10).collect(), 11),
    ] {
        let err = b.restore(order, position, 1).unwrap_err().to_string();
        assert!(err.contains("not a permutation"), "{err}");
    }
}
