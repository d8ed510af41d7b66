//! The error type of `ebm-data`.

use std::path::PathBuf;

/// What can go wrong finding or reading a data set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not in the expected format, or is truncated or corrupt.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The data set is not on this machine; the message says where it looked and how to get it.
    #[error("{0}")]
    NotFound(String),
    /// A file's SHA-256 sum is not the published one.
    #[error("{path}: SHA-256 {actual} matches none of the known sums for this file ({expected})")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The sum found.
        actual: String,
        /// The sums accepted.
        expected: String,
    },
    /// A request the data cannot satisfy (an unknown name, an empty selection).
    #[error("{0}")]
    Invalid(String),
    /// A tensor could not be built.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
