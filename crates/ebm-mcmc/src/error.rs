//! The error type of `ebm-mcmc`.

/// What can go wrong setting up or running a sampler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The energy failed, or a parameter or input was rejected.
    #[error(transparent)]
    Core(#[from] ebm_core::Error),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The chain produced a NaN or infinite energy.
    #[error("Langevin step {step} of {steps}: the energy became NaN or infinite; lower the step size or check the model")]
    Diverged {
        /// The 1-based step at which it happened.
        step: usize,
        /// The chain's length.
        steps: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
