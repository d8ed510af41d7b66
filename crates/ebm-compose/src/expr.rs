//! Composition expressions over named concepts, before they are bound to models: built in code
//! (constructors and the operators `&`, `|`, `!`, `f64 * expr`) or parsed from text, and printed
//! back in the text syntax by [`Display`](std::fmt::Display).

use std::fmt;

use crate::algebra::{check_alpha, check_temperature, check_weight};
use crate::{Error, Result};

/// The value of one concept in a term: a name the concept defines (`color=red`), or a literal
/// vector for a continuous concept (`pos=(0.3, 0.7)`; a single number `size=0.5` is a vector of
/// length 1).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A named value, e.g. `red`.
    Named(String),
    /// A literal condition vector, e.g. `(0.3, 0.7)`.
    Vector(Vec<f64>),
}

/// One concept at one value, e.g. `color=red`: a leaf of an expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The concept's name, e.g. `color`.
    pub concept: String,
    /// Its value.
    pub value: Value,
}

/// A composition of concept terms. Energies:
///
/// - `Term`: the concept's model at that value, `E_c(x | v)`;
/// - `And`: `sum_i E_i`;
/// - `Or`: `-T log sum_i exp(-E_i / T)`;
/// - `Not { alpha, expr }`: `-alpha E` (inside an AND: the AND's energy gains `-alpha E`);
/// - `Scale { weight, expr }`: `weight * E` (so `And` of `Scale`d children is a weighted AND).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// One concept at one value.
    Term(Term),
    /// A weighted expression, `weight * E`, weight finite and > 0.
    Scale {
        /// The weight.
        weight: f64,
        /// The weighted expression.
        expr: Box<Expr>,
    },
    /// A negation, `-alpha * E`, alpha finite and >= 0.
    Not {
        /// The NOT weight (1 by default).
        alpha: f64,
        /// The negated expression.
        expr: Box<Expr>,
    },
    /// A conjunction, the sum of the children's energies.
    And(Vec<Expr>),
    /// A disjunction, the soft minimum of the children's energies at a temperature.
    Or {
        /// The temperature, finite and > 0 (1 by default).
        temperature: f64,
        /// The alternatives.
        children: Vec<Expr>,
    },
}

impl Expr {
    /// The term `concept=value` with a named value.
    pub fn term(concept: impl Into<String>, value: impl Into<String>) -> Self {
        Expr::Term(Term {
            concept: concept.into(),
            value: Value::Named(value.into()),
        })
    }

    /// The term `concept=(v_1, ..., v_d)` with a literal condition vector.
    pub fn term_vector(concept: impl Into<String>, vector: impl Into<Vec<f64>>) -> Self {
        Expr::Term(Term {
            concept: concept.into(),
            value: Value::Vector(vector.into()),
        })
    }

    /// The AND of `children`.
    pub fn and(children: impl IntoIterator<Item = Expr>) -> Self {
        Expr::And(children.into_iter().collect())
    }

    /// The OR of `children` at temperature 1.
    pub fn or(children: impl IntoIterator<Item = Expr>) -> Self {
        Self::or_with_temperature(children, 1.0)
    }

    /// The OR of `children` at `temperature`.
    pub fn or_with_temperature(children: impl IntoIterator<Item = Expr>, temperature: f64) -> Self {
        Expr::Or {
            temperature,
            children: children.into_iter().collect(),
        }
    }

    /// `-alpha * expr`.
    pub fn not_weighted(alpha: f64, expr: Expr) -> Self {
        Expr::Not {
            alpha,
            expr: Box::new(expr),
        }
    }

    /// `weight * expr`.
    pub fn scaled(weight: f64, expr: Expr) -> Self {
        Expr::Scale {
            weight,
            expr: Box::new(expr),
        }
    }

    /// Parses the text syntax (see the [crate docs](crate#the-text-syntax)) without checking
    /// concept names; [`ConceptSet::parse`](crate::ConceptSet::parse) checks them too.
    pub fn parse(text: &str) -> Result<Self> {
        crate::parse::parse(text, None)
    }

    /// The terms (leaves), left to right.
    pub fn terms(&self) -> Vec<&Term> {
        let mut out = Vec::new();
        self.collect_terms(&mut out);
        out
    }

    fn collect_terms<'e>(&'e self, out: &mut Vec<&'e Term>) {
        match self {
            Expr::Term(t) => out.push(t),
            Expr::Scale { expr, .. } | Expr::Not { expr, .. } => expr.collect_terms(out),
            Expr::And(children) | Expr::Or { children, .. } => {
                children.iter().for_each(|c| c.collect_terms(out))
            }
        }
    }

    /// The number of nodes on the longest path from the root to a term (a term alone: 1).
    pub fn depth(&self) -> usize {
        match self {
            Expr::Term(_) => 1,
            Expr::Scale { expr, .. } | Expr::Not { expr, .. } => 1 + expr.depth(),
            Expr::And(children) | Expr::Or { children, .. } => {
                1 + children.iter().map(Expr::depth).max().unwrap_or(0)
            }
        }
    }

    /// Checks every number and group: weights finite and > 0, NOT weights finite and >= 0,
    /// temperatures finite and > 0, vector components finite, no empty AND or OR.
    pub fn validate(&self) -> Result<()> {
        match self {
            Expr::Term(Term {
                value: Value::Vector(v),
                ..
            }) => {
                if let Some(bad) = v.iter().find(|c| !c.is_finite()) {
                    return Err(Error::InvalidNumber {
                        what: "vector component",
                        requirement: "finite",
                        value: *bad,
                    });
                }
                Ok(())
            }
            Expr::Term(_) => Ok(()),
            Expr::Scale { weight, expr } => {
                check_weight(*weight)?;
                expr.validate()
            }
            Expr::Not { alpha, expr } => {
                check_alpha(*alpha)?;
                expr.validate()
            }
            Expr::And(children) => {
                if children.is_empty() {
                    return Err(Error::EmptyGroup { what: "AND" });
                }
                children.iter().try_for_each(Expr::validate)
            }
            Expr::Or {
                temperature,
                children,
            } => {
                check_temperature(*temperature)?;
                if children.is_empty() {
                    return Err(Error::EmptyGroup { what: "OR" });
                }
                children.iter().try_for_each(Expr::validate)
            }
        }
    }

    /// The expression itself, or for an AND or OR of one child, that child (recursively): an AND
    /// or OR of one child has the child's energy, and prints as it.
    fn unwrap_single(&self) -> &Expr {
        match self {
            Expr::And(children) | Expr::Or { children, .. } if children.len() == 1 => {
                children[0].unwrap_single()
            }
            other => other,
        }
    }

    /// An OR printed as `a | b` (temperature 1), not as a `(...)@T` group.
    fn is_bare_or(&self) -> bool {
        matches!(self.unwrap_single(), Expr::Or { temperature, .. } if *temperature == 1.0)
    }

    fn is_multi_and(&self) -> bool {
        matches!(self.unwrap_single(), Expr::And(_))
    }

    /// Writes an operand of `!` or `w*`: bare if it is a term or another unary or a `(...)@T`
    /// group, else in parentheses.
    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_bare_or() || self.is_multi_and() {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }

    fn fmt_children(children: &[Expr], sep: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            // A nested group of the same kind keeps its parentheses, so that the text parses
            // back to the same tree.
            let nested = match sep {
                " & " => child.is_multi_and() || child.is_bare_or(),
                _ => child.is_bare_or(),
            };
            if nested {
                write!(f, "({child})")?;
            } else {
                write!(f, "{child}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Named(name) => f.write_str(name),
            Value::Vector(v) => {
                f.write_str("(")?;
                for (i, c) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.concept, self.value)
    }
}

/// Prints the text syntax, with the fewest parentheses that parse back to the same tree
/// (`parse(e.to_string()) == e` for every valid expression whose ANDs and ORs have at least
/// two children; an AND or OR of one child prints as that child, whose energy it has).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unwrap_single() {
            Expr::Term(t) => write!(f, "{t}"),
            Expr::Scale { weight, expr } => {
                write!(f, "{weight}*")?;
                expr.fmt_operand(f)
            }
            Expr::Not { alpha, expr } => {
                f.write_str("!")?;
                if *alpha != 1.0 {
                    write!(f, "{alpha}*")?;
                } else if matches!(expr.unwrap_single(), Expr::Scale { .. }) {
                    // `!2*a` would read as a NOT weight of 2.
                    return write!(f, "({expr})");
                }
                expr.fmt_operand(f)
            }
            Expr::And(children) => Self::fmt_children(children, " & ", f),
            Expr::Or {
                temperature,
                children,
            } => {
                if *temperature == 1.0 {
                    Self::fmt_children(children, " | ", f)
                } else {
                    f.write_str("(")?;
                    Self::fmt_children(children, " | ", f)?;
                    write!(f, ")@{temperature}")
                }
            }
        }
    }
}

impl std::str::FromStr for Expr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Expr::parse(s)
    }
}

/// `a & b`: an AND; a left operand that is already an AND gains a child (so `a & b & c` is one
/// AND of three, as in the text syntax).
impl std::ops::BitAnd for Expr {
    type Output = Expr;

    fn bitand(self, rhs: Expr) -> Expr {
        match self {
            Expr::And(mut children) => {
                children.push(rhs);
                Expr::And(children)
            }
            lhs => Expr::And(vec![lhs, rhs]),
        }
    }
}

/// `a | b`: an OR at temperature 1; a left operand that is already such an OR gains a child.
impl std::ops::BitOr for Expr {
    type Output = Expr;

    fn bitor(self, rhs: Expr) -> Expr {
        match self {
            Expr::Or {
                temperature,
                mut children,
            } if temperature == 1.0 => {
                children.push(rhs);
                Expr::Or {
                    temperature,
                    children,
                }
            }
            lhs => Expr::or([lhs, rhs]),
        }
    }
}

/// `!a`: a NOT with weight 1.
impl std::ops::Not for Expr {
    type Output = Expr;

    fn not(self) -> Expr {
        Expr::not_weighted(1.0, self)
    }
}

/// `w * a`: a weighted expression.
impl std::ops::Mul<Expr> for f64 {
    type Output = Expr;

    fn mul(self, rhs: Expr) -> Expr {
        Expr::scaled(self, rhs)
    }
}
