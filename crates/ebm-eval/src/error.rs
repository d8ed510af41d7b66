//! The error type of `ebm-eval`.

/// What can go wrong computing a metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input cannot give a meaningful number (one class, no rows, NaN, mismatched lengths).
    #[error("{0}")]
    Input(String),
    /// The covariance product has no usable real square root.
    #[error("Frechet distance: {0}")]
    Numerical(String),
    /// A file could not be read or parsed.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A set of weights does not fit the network it is loaded into (a missing tensor, a wrong
    /// shape, an unknown name, a non-finite value).
    #[error("{origin}: {problem}")]
    Weights {
        /// Where the weights came from (a file name, or "the given tensors").
        origin: String,
        /// What is wrong, naming the tensors.
        problem: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
