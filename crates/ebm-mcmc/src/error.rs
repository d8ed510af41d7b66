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
    /// The chain produced a NaN or infinite energy ([`crate::Langevin::run`]).
    #[error("Langevin step {step} of {steps}: the energy became NaN or infinite; lower the step size or check the model")]
    Diverged {
        /// The 1-based step at which it happened.
        step: usize,
        /// The chain's length.
        steps: usize,
    },
    /// A sampler run through [`crate::Sampler`] met a NaN or infinite value that it cannot
    /// reject: the energy of an unadjusted move (Langevin through the trait, unadjusted HMC).
    /// Metropolis-adjusted samplers (MALA, HMC) reject such proposals instead and count them
    /// in [`crate::RunStats::divergences`], so their samples stay finite.
    #[error("{sampler}, iteration {iteration} of {iterations}: {what} became NaN or infinite; lower the step size or check the model")]
    SamplerDiverged {
        /// The sampler, as [`crate::Sampler::name`] spells it (with the stage when annealed).
        sampler: String,
        /// The 1-based iteration at which it happened, warm-up included.
        iteration: usize,
        /// Warm-up plus sampling iterations.
        iterations: usize,
        /// What became non-finite, in words (e.g. "the energy of chain 3").
        what: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
