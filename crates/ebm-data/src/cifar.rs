//! CIFAR-10's binary format: records of one label byte and 3,072 pixel bytes (1,024 red, then
//! green, then blue, each 32x32 row-major).

use std::path::Path;

use crate::error::io;
use crate::{Error, ImageSet, Result};

/// Bytes per record: a label and a 3x32x32 image.
pub const RECORD: usize = 1 + 3 * 32 * 32;

/// Reads one binary batch file (`data_batch_1.bin` ... `test_batch.bin`).
pub fn read_batch(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    parse_batch(&bytes).map_err(|problem| Error::Corrupt {
        path: path.to_path_buf(),
        problem,
    })
}

/// Parses the bytes of one batch file.
pub fn parse_batch(bytes: &[u8]) -> std::result::Result<ImageSet, String> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(format!(
            "not a CIFAR-10 batch: {} bytes is not a whole number of {RECORD}-byte records",
            bytes.len()
        ));
    }
    let n = bytes.len() / RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut images = Vec::with_capacity(n * (RECORD - 1));
    for (i, record) in bytes.chunks(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(format!(
                "record {i} has label {}, CIFAR-10 labels are 0-9",
                record[0]
            ));
        }
        labels.push(record[0]);
        images.extend_from_slice(&record[1..]);
    }
    ImageSet::new(images, labels, [3, 32, 32], 10).map_err(|e| e.to_string())
}
