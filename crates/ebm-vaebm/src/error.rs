//! The error type of `ebm-vaebm`.

use std::path::PathBuf;

/// What can go wrong building, training, sampling, saving or loading a VAE or a VAEBM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An energy evaluation failed, or an input or hyper-parameter was rejected (bad shapes,
    /// non-finite values, a step size <= 0, ...).
    #[error(transparent)]
    Core(#[from] ebm_core::Error),
    /// A network of `ebm-nn` (the IGEBM energy, a layer, a checkpoint) failed.
    #[error(transparent)]
    Nn(#[from] ebm_nn::Error),
    /// The optimiser failed or rejected its settings.
    #[error(transparent)]
    Train(#[from] ebm_train::Error),
    /// The Langevin sampler failed or rejected its settings.
    #[error(transparent)]
    Mcmc(#[from] ebm_mcmc::Error),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A config is invalid; `what` names it (e.g. "VAE config"), `problem` says why.
    #[error("invalid {what}: {problem}")]
    Config {
        /// The config or field, as the user spells it.
        what: String,
        /// What is wrong with it, with the offending value.
        problem: String,
    },
    /// Two parts that must agree do not (e.g. an energy trained on 32x32 images and a VAE
    /// that makes 28x28 ones).
    #[error("{what}: {problem}")]
    Mismatch {
        /// The pair that disagrees.
        what: String,
        /// How.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint does not match the model or config it is loaded for, or is malformed.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Training diverged and could not be recovered (too many roll-backs, or a learning rate
    /// lowered below its floor), or a VAE training step produced NaN or infinite values.
    #[error("training diverged at iteration {iteration}: {reason}")]
    Diverged {
        /// The 1-based training iteration.
        iteration: usize,
        /// What happened.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(what: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Config {
            what: what.into(),
            problem: problem.into(),
        }
    }
}
