//! The error type of `ebm-core`, which every energy evaluation returns.

/// What can go wrong when an energy is evaluated or its input checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A tensor does not have the shape the receiver expects.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// The tensor, named for the reader (e.g. "IGEBM input").
        what: String,
        /// The shape that was expected, in words (e.g. "[batch, 1, 28, 28]").
        expected: String,
        /// The shape that arrived.
        got: Vec<usize>,
    },
    /// A tensor holds NaN or infinite values where finite ones are required.
    #[error("{what} contains NaN or infinite values")]
    NonFinite {
        /// The tensor, named for the reader.
        what: String,
    },
    /// A hyper-parameter or argument is outside its valid range.
    #[error("invalid {name}: {problem}")]
    InvalidParameter {
        /// The parameter's name as the user spells it (e.g. "step_size").
        name: String,
        /// What is wrong with it, with the offending value.
        problem: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn invalid(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name: name.into(),
            problem: problem.into(),
        }
    }
}
