//! The error type of `ebm-latent`.

use std::path::PathBuf;

/// What can go wrong building, sampling, training, saving or loading a latent-prior model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An energy evaluation failed, or an input or hyper-parameter was rejected (bad shapes,
    /// non-finite values, a step size <= 0, ...).
    #[error(transparent)]
    Core(#[from] ebm_core::Error),
    /// The prior's network failed.
    #[error(transparent)]
    Nn(#[from] ebm_nn::Error),
    /// The optimiser failed or rejected its settings.
    #[error(transparent)]
    Train(#[from] ebm_train::Error),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A model config is invalid (e.g. an image size the generator cannot make).
    #[error("invalid latent model config: {0}")]
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
    /// A chain or a training step produced NaN or infinite values.
    #[error("{what} became NaN or infinite{}", step.map(|s| format!(" at training step {s}")).unwrap_or_default())]
    Diverged {
        /// The training step, when it happened in training.
        step: Option<usize>,
        /// What diverged.
        what: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
