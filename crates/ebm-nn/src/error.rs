//! The error type of `ebm-nn`.

use std::path::PathBuf;

/// What can go wrong building, running, saving or loading a network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An energy evaluation or input check failed.
    #[error(transparent)]
    Core(#[from] ebm_core::Error),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A model config is invalid (e.g. an image size the architecture cannot take).
    #[error("invalid model config: {0}")]
    Config(String),
    /// A checkpoint file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint does not match the model it is loaded into, or is malformed.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
