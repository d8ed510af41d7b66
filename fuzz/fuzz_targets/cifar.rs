//! Fuzz target `cifar`: arbitrary bytes through `ebm_data`'s CIFAR-10 binary batch reader
//! (`cifar::parse_batch`, and `cifar::read_batch` of a file holding the bytes). Nothing may
//! panic; both must agree, and an accepted batch must give tensors of the right shape.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use ebm_data::{cifar, ImageSet};
use libfuzzer_sys::fuzz_target;

fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ebm-fuzz-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
    .join(name)
}

fuzz_target!(|data: &[u8]| {
    let parsed = cifar::parse_batch(data);
    let path = scratch("data_batch_1.bin");
    std::fs::write(&path, data).unwrap();
    let read = cifar::read_batch(&path);
    match (&parsed, &read) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), b.len());
            assert_eq!(a.labels(), b.labels());
        }
        (Err(_), Err(e)) => assert!(e.to_string().contains("data_batch_1.bin"), "{e}"),
        _ => panic!("parse_batch and read_batch disagree"),
    }
    if let Ok(set) = parsed {
        assert_eq!(set.len() * cifar::RECORD, data.len());
        assert_eq!(set.shape(), [3, 32, 32]);
        let last = set.len() - 1;
        let t = set.tensor(&[last], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 32, 32]);
        let both = ImageSet::concat(&[set.clone(), set]).unwrap();
        assert_eq!(both.len(), 2 * (last + 1));
    }
});
