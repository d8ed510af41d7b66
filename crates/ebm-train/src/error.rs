//! The error type of `ebm-train`.

/// What can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An energy evaluation failed, or an input or parameter was rejected.
    #[error(transparent)]
    Core(#[from] ebm_core::Error),
    /// The sampler failed.
    #[error(transparent)]
    Mcmc(#[from] ebm_mcmc::Error),
    /// The model failed.
    #[error(transparent)]
    Nn(#[from] ebm_nn::Error),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A training snapshot could not be written, read or applied.
    #[error("training snapshot: {0}")]
    Snapshot(String),
    /// The loss or the gradients became NaN or infinite.
    #[error("training step {step}: {what} became NaN or infinite")]
    Diverged {
        /// The step.
        step: usize,
        /// What diverged.
        what: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
