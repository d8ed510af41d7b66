//! Fuzz target `idx`: arbitrary bytes through `ebm_data`'s IDX reader, both as plain IDX
//! (`idx::parse`, and `idx::read` of a file holding the bytes, which takes the gzip path when
//! they start with the gzip magic) and gzip-compressed (`idx::read` of a file holding the
//! bytes gzipped), then pairs of arrays through `ImageSet::from_idx`. Nothing may panic; the
//! plain and the gzip paths must agree.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use ebm_data::{idx, ImageSet};
use libfuzzer_sys::fuzz_target;

/// A scratch folder of this process, removed by nobody: the fuzzer's runs are short-lived.
fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ebm-fuzz-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
    .join(name)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let plain = idx::parse(data);

    // The file reader on the raw bytes: a gzip stream when they start with 1f 8b, else IDX.
    let raw = scratch("raw-idx3-ubyte.gz");
    std::fs::write(&raw, data).unwrap();
    let read_raw = idx::read(&raw);
    if !data.starts_with(&[0x1f, 0x8b]) {
        match (&plain, &read_raw) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!("idx::parse and idx::read disagree: {plain:?} vs {read_raw:?}"),
        }
    }
    if let Err(e) = &read_raw {
        // Every error names the file.
        assert!(e.to_string().contains("raw-idx3-ubyte.gz"), "{e}");
    }

    // The same bytes gzipped: the reader must gunzip them and give the parser's answer.
    let zipped = scratch("zipped-idx3-ubyte.gz");
    std::fs::write(&zipped, gzip(data)).unwrap();
    let read_zipped = idx::read(&zipped);
    match (&plain, &read_zipped) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("plain and gzipped IDX disagree: {plain:?} vs {read_zipped:?}"),
    }

    // Two arrays (split at a position given by the first two bytes) as images and labels.
    if data.len() >= 2 {
        let rest = &data[2..];
        let cut = (u16::from_le_bytes([data[0], data[1]]) as usize).min(rest.len());
        if let (Ok(images), Ok(labels)) = (idx::parse(&rest[..cut]), idx::parse(&rest[cut..])) {
            if let Ok(set) = ImageSet::from_idx(images, labels, 10) {
                assert_eq!(set.labels().len(), set.len());
                if !set.is_empty() {
                    let last = set.len() - 1;
                    let t = set.tensor(&[0, last], &Device::Cpu).unwrap();
                    let [c, h, w] = set.shape();
                    assert_eq!(t.dims(), &[2, c, h, w]);
                    set.labels_tensor(&[last], &Device::Cpu).unwrap();
                    set.subset(&[last, 0]).unwrap();
                }
                // Out-of-range and empty selections are errors.
                assert!(set.tensor(&[set.len()], &Device::Cpu).is_err());
                assert!(set.tensor(&[], &Device::Cpu).is_err());
            }
        }
    }
});
