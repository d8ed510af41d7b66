//! The error type of `ebm-compose`: bad concepts, bad expressions (with the column where the
//! text goes wrong), incompatible models, and failures of the energies underneath.

/// What can go wrong defining concepts, parsing or building a composition, or evaluating it.
///
/// Errors from the text parser come wrapped in [`Error::Parse`], which adds the input and the
/// column; [`Error::problem`] unwraps them for matching, [`Error::column`] gives the column.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An energy failed, or rejected its input.
    #[error(transparent)]
    Core(#[from] ebm_core::Error),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A term names a concept the [`ConceptSet`](crate::ConceptSet) does not hold.
    #[error("unknown concept `{name}` (known concepts: {})", list(known))]
    UnknownConcept {
        /// The name as written.
        name: String,
        /// The concepts that exist, in registration order.
        known: Vec<String>,
    },
    /// A term names a value its concept does not have.
    #[error(
        "unknown value `{value}` for concept `{concept}` (its values: {})",
        list(known)
    )]
    UnknownValue {
        /// The concept.
        concept: String,
        /// The value as written.
        value: String,
        /// The concept's named values, in registration order.
        known: Vec<String>,
    },
    /// A literal vector (or a named vector at registration) has the wrong number of components.
    #[error("concept `{concept}` is conditioned on {expected} number(s), got {got}")]
    ConditionLength {
        /// The continuous concept.
        concept: String,
        /// The model's [`condition_dim`](crate::VectorConditioned::condition_dim).
        expected: usize,
        /// The number of components given.
        got: usize,
    },
    /// A literal vector was given to a discrete concept, whose values are names.
    #[error(
        "concept `{concept}` is discrete: its values are names ({}), not numbers",
        list(known)
    )]
    VectorForDiscrete {
        /// The discrete concept.
        concept: String,
        /// Its named values.
        known: Vec<String>,
    },
    /// A weight, NOT weight, temperature or vector component is out of its range.
    #[error("{what} must be {requirement}, got {value}")]
    InvalidNumber {
        /// The number's role, e.g. "weight", "NOT weight", "OR temperature".
        what: &'static str,
        /// Its valid range in words, e.g. "a finite number > 0".
        requirement: &'static str,
        /// The value given.
        value: f64,
    },
    /// An AND or OR with no children.
    #[error("{what} has no terms")]
    EmptyGroup {
        /// "AND" or "OR".
        what: &'static str,
    },
    /// Two energies of one composition take samples of different shapes (e.g. one trained on
    /// 32x32 images, the other on 64x64).
    #[error(
        "cannot compose energies with different sample shapes: `{first}` takes {first_shape:?}, \
         `{second}` takes {second_shape:?}"
    )]
    SampleShapeMismatch {
        /// The first energy (a concept name, or the child's position).
        first: String,
        /// Its sample shape.
        first_shape: Vec<usize>,
        /// The first energy that disagrees with it.
        second: String,
        /// Its sample shape.
        second_shape: Vec<usize>,
    },
    /// A concept cannot be registered as given.
    #[error("concept `{name}`: {problem}")]
    InvalidConcept {
        /// The concept's name.
        name: String,
        /// What is wrong, with the offending value.
        problem: String,
    },

    /// The text is empty or only white space.
    #[error("empty expression: expected a term like concept=value")]
    EmptyInput,
    /// A parenthesis without its partner.
    #[error("unbalanced parenthesis: {problem}")]
    UnbalancedParenthesis {
        /// Which parenthesis, e.g. "`(` is never closed".
        problem: String,
    },
    /// A complete expression is followed by more text.
    #[error("trailing input {found} after a complete expression")]
    TrailingInput {
        /// The first token after the expression, quoted.
        found: String,
    },
    /// A token that the grammar does not allow where it stands.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows here.
        expected: String,
        /// What the text has, quoted, or "end of input".
        found: String,
    },
    /// A temperature `@T` after something that is not a parenthesised OR.
    #[error("a temperature `@T` applies only to a parenthesised OR, like `(a=x | a=y)@0.5`")]
    TemperatureWithoutOr,
    /// Parentheses or `!` nested deeper than the parser allows.
    #[error("expression nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A problem in a text expression, at a column of the input.
    #[error("column {column}: {problem}\n{}", caret(input, *column))]
    Parse {
        /// The whole input.
        input: String,
        /// The 1-based column (in characters) where the problem starts.
        column: usize,
        /// The problem, one of the other variants.
        problem: Box<Error>,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The underlying problem: the error itself, or the one inside an [`Error::Parse`].
    pub fn problem(&self) -> &Error {
        match self {
            Error::Parse { problem, .. } => problem,
            other => other,
        }
    }

    /// The 1-based column of a parse error, `None` for errors not tied to a text position.
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Parse { column, .. } => Some(*column),
            _ => None,
        }
    }

    pub(crate) fn at(input: &str, column: usize, problem: Error) -> Error {
        Error::Parse {
            input: input.to_string(),
            column,
            problem: Box::new(problem),
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The input indented by two spaces, and a caret under `column` (tabs kept, so that the caret
/// lines up).
fn caret(input: &str, column: usize) -> String {
    let line: String = input
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let pad: String = line
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let missing = column.saturating_sub(1).saturating_sub(pad.chars().count());
    format!("  {line}\n  {pad}{}^", " ".repeat(missing))
}
