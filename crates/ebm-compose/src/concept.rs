//! Named concepts and the models behind them: a [`ConceptSet`] maps each concept name (`shape`,
//! `color`, `pos`, ...) to a model and its values. A discrete concept is a [`LabelledEnergy`]
//! whose values name class indices (`color=red` -> class 0); a continuous concept is a
//! [`VectorConditioned`] model whose values are real vectors, named (`pos=left` -> (0.25, 0.5))
//! or literal (`pos=(0.3, 0.7)`).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use ebm_core::{autograd_energy_and_grad, Energy, LabelledEnergy};

use crate::algebra::{self, BoxedEnergy};
use crate::composition::Composition;
use crate::expr::{Expr, Term, Value};
use crate::{Error, Result};

/// An energy conditioned on a real vector per sample, `E(x | c)` with `c` in `R^d`: e.g. a model
/// of object position conditioned on `(x, y)`.
pub trait VectorConditioned {
    /// Energies of a batch `x` (`[B, ...]`) given conditions `condition` (`[B, d]`, the dtype
    /// and device of `x`), shape `[B]`. Differentiable with respect to `x`.
    fn energy_given_vector(&self, x: &Tensor, condition: &Tensor) -> ebm_core::Result<Tensor>;

    /// Energies (detached) and their gradient with respect to `x`; by default through autograd.
    fn energy_and_grad_given_vector(
        &self,
        x: &Tensor,
        condition: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        autograd_energy_and_grad(|x| self.energy_given_vector(x, condition), x)
    }

    /// The length `d` of the condition vector.
    fn condition_dim(&self) -> usize;

    /// The shape of one sample, as in [`Energy::sample_shape`].
    fn sample_shape(&self) -> Option<Vec<usize>> {
        None
    }
}

/// The model behind a concept.
#[derive(Clone)]
pub(crate) enum Model<'m> {
    Discrete(Arc<dyn LabelledEnergy + 'm>),
    Continuous(Arc<dyn VectorConditioned + 'm>),
}

impl Model<'_> {
    /// The model's identity (the address of its data): terms with the same identity share
    /// one batched call.
    pub(crate) fn identity(&self) -> (bool, *const u8) {
        match self {
            Model::Discrete(m) => (true, Arc::as_ptr(m) as *const u8),
            Model::Continuous(m) => (false, Arc::as_ptr(m) as *const u8),
        }
    }

    pub(crate) fn sample_shape(&self) -> Option<Vec<usize>> {
        match self {
            Model::Discrete(m) => m.sample_shape(),
            Model::Continuous(m) => m.sample_shape(),
        }
    }

    /// One condition per sample, `repeat` samples per condition (condition-major): u32 labels
    /// `[n * repeat]` or vectors `[n * repeat, d]` in `dtype`.
    pub(crate) fn condition_tensor(
        &self,
        conditions: &[&Condition],
        repeat: usize,
        dtype: candle_core::DType,
        device: &Device,
    ) -> ebm_core::Result<Tensor> {
        let n = conditions.len() * repeat;
        match self {
            Model::Discrete(_) => {
                let mut labels = Vec::with_capacity(n);
                for c in conditions {
                    let Condition::Class(k) = c else {
                        return Err(mismatched());
                    };
                    labels.extend(std::iter::repeat_n(*k, repeat));
                }
                Ok(Tensor::from_vec(labels, n, device)?)
            }
            Model::Continuous(m) => {
                let d = m.condition_dim();
                let mut values = Vec::with_capacity(n * d);
                for c in conditions {
                    let Condition::Vector(v) = c else {
                        return Err(mismatched());
                    };
                    for _ in 0..repeat {
                        values.extend_from_slice(v);
                    }
                }
                Ok(Tensor::from_vec(values, (n, d), device)?.to_dtype(dtype)?)
            }
        }
    }

    /// The model's energies at `x` given `condition`, differentiable with respect to `x`.
    pub(crate) fn energy(&self, x: &Tensor, condition: &Tensor) -> ebm_core::Result<Tensor> {
        match self {
            Model::Discrete(m) => m.energy_given(x, condition),
            Model::Continuous(m) => m.energy_given_vector(x, condition),
        }
    }

    /// The model's energies (detached) and their gradient with respect to `x`.
    pub(crate) fn energy_and_grad(
        &self,
        x: &Tensor,
        condition: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        match self {
            Model::Discrete(m) => m.energy_and_grad_given(x, condition),
            Model::Continuous(m) => m.energy_and_grad_given_vector(x, condition),
        }
    }
}

fn mismatched() -> ebm_core::Error {
    ebm_core::Error::invalid("composition", "a condition does not match its model's kind")
}

/// A resolved value: a class index for a discrete concept, a vector for a continuous one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    Class(u32),
    Vector(Vec<f64>),
}

/// A concept: its name, model and named values.
struct Concept<'m> {
    name: String,
    model: Model<'m>,
    /// Named values, in registration order, with their conditions.
    values: Vec<(String, Condition)>,
}

impl Concept<'_> {
    fn value_names(&self) -> Vec<String> {
        self.values.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A registry of named concepts, each a model with its values: what text expressions and
/// [`Expr`]s are bound to.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use ebm_compose::ConceptSet;
/// use ebm_core::{Energy, LabelledEnergy};
///
/// /// E_c(x) = 0.5 |x - mu_c|^2 in one dimension, with mu_c = c.
/// struct Classes;
/// impl LabelledEnergy for Classes {
///     fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
///         let mu = labels.to_dtype(x.dtype())?.unsqueeze(1)?;
///         Ok((x.broadcast_sub(&mu)?.sqr()?.sum(1)? * 0.5)?)
///     }
///     fn num_classes(&self) -> usize {
///         3
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut concepts = ConceptSet::new();
/// concepts.add_discrete("color", Classes, [("red", 0), ("green", 1), ("blue", 2)])?;
/// let red_not_blue = concepts.parse("color=red & !0.5*color=blue")?;
/// let x = Tensor::new(&[[0f32], [1.0]], &Device::Cpu)?;
/// let e = red_not_blue.energy(&x)?.to_vec1::<f32>()?;
/// // 0.5 (x - 0)^2 - 0.5 * 0.5 (x - 2)^2
/// assert_eq!(e, vec![-1.0, 0.25]);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct ConceptSet<'m> {
    concepts: Vec<Concept<'m>>,
}

impl<'m> ConceptSet<'m> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a discrete concept: `model` with named values, each a class index below
    /// `model.num_classes()`. Names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`), unique.
    pub fn add_discrete<M, S>(
        &mut self,
        name: &str,
        model: M,
        values: impl IntoIterator<Item = (S, usize)>,
    ) -> Result<&mut Self>
    where
        M: LabelledEnergy + 'm,
        S: Into<String>,
    {
        self.add_discrete_shared(name, Arc::new(model), values)
    }

    /// [`add_discrete`](Self::add_discrete) with a shared model. Concepts registered with the
    /// same `Arc` share batched calls too.
    pub fn add_discrete_shared<S: Into<String>>(
        &mut self,
        name: &str,
        model: Arc<dyn LabelledEnergy + 'm>,
        values: impl IntoIterator<Item = (S, usize)>,
    ) -> Result<&mut Self> {
        self.check_new_name(name)?;
        let classes = model.num_classes();
        let mut named = Vec::new();
        for (value, class) in values {
            let value = value.into();
            if class >= classes {
                return Err(invalid(
                    name,
                    format!(
                        "value `{value}` is class {class}, but the model has {classes} classes"
                    ),
                ));
            }
            let class = u32::try_from(class)
                .map_err(|_| invalid(name, format!("class {class} does not fit in u32")))?;
            named.push((value, Condition::Class(class)));
        }
        self.push(name, Model::Discrete(model), named)
    }

    /// Registers a continuous concept: `model` with named condition vectors, each of length
    /// `model.condition_dim()`; literal vectors are accepted in terms too.
    pub fn add_continuous<M, S, V>(
        &mut self,
        name: &str,
        model: M,
        values: impl IntoIterator<Item = (S, V)>,
    ) -> Result<&mut Self>
    where
        M: VectorConditioned + 'm,
        S: Into<String>,
        V: Into<Vec<f64>>,
    {
        self.add_continuous_shared(name, Arc::new(model), values)
    }

    /// [`add_continuous`](Self::add_continuous) with a shared model.
    pub fn add_continuous_shared<S, V>(
        &mut self,
        name: &str,
        model: Arc<dyn VectorConditioned + 'm>,
        values: impl IntoIterator<Item = (S, V)>,
    ) -> Result<&mut Self>
    where
        S: Into<String>,
        V: Into<Vec<f64>>,
    {
        self.check_new_name(name)?;
        let dim = model.condition_dim();
        if dim == 0 {
            return Err(invalid(name, "the model's condition_dim is 0"));
        }
        let mut named = Vec::new();
        for (value, vector) in values {
            let (value, vector) = (value.into(), vector.into());
            if vector.len() != dim {
                return Err(Error::ConditionLength {
                    concept: name.to_string(),
                    expected: dim,
                    got: vector.len(),
                });
            }
            if vector.iter().any(|v| !v.is_finite()) {
                return Err(invalid(
                    name,
                    format!("value `{value}` is not finite: {vector:?}"),
                ));
            }
            named.push((value, Condition::Vector(vector)));
        }
        self.push(name, Model::Continuous(model), named)
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        if !is_identifier(name) {
            return Err(invalid(
                name,
                "a concept name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        if self.find(name).is_some() {
            return Err(invalid(name, "already registered"));
        }
        Ok(())
    }

    fn push(
        &mut self,
        name: &str,
        model: Model<'m>,
        values: Vec<(String, Condition)>,
    ) -> Result<&mut Self> {
        for (i, (value, _)) in values.iter().enumerate() {
            if !is_identifier(value) {
                return Err(invalid(
                    name,
                    format!("value name `{value}` is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"),
                ));
            }
            if values[..i].iter().any(|(v, _)| v == value) {
                return Err(invalid(name, format!("value `{value}` is named twice")));
            }
        }
        self.concepts.push(Concept {
            name: name.to_string(),
            model,
            values,
        });
        Ok(self)
    }

    fn find(&self, name: &str) -> Option<(usize, &Concept<'m>)> {
        self.concepts
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }

    /// The concept names, in registration order.
    pub fn concept_names(&self) -> Vec<&str> {
        self.concepts.iter().map(|c| c.name.as_str()).collect()
    }

    /// The named values of a concept, in registration order (`None` for an unknown concept).
    pub fn value_names(&self, concept: &str) -> Option<Vec<&str>> {
        self.find(concept)
            .map(|(_, c)| c.values.iter().map(|(n, _)| n.as_str()).collect())
    }

    /// The number of concepts.
    pub fn len(&self) -> usize {
        self.concepts.len()
    }

    /// Whether no concept is registered.
    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
    }

    /// Resolves a term to its concept's index and its condition.
    pub(crate) fn resolve(&self, term: &Term) -> Result<(usize, Condition)> {
        let Some((index, concept)) = self.find(&term.concept) else {
            return Err(Error::UnknownConcept {
                name: term.concept.clone(),
                known: self.concepts.iter().map(|c| c.name.clone()).collect(),
            });
        };
        let condition = match &term.value {
            Value::Named(value) => concept
                .values
                .iter()
                .find(|(n, _)| n == value)
                .map(|(_, c)| c.clone())
                .ok_or_else(|| Error::UnknownValue {
                    concept: concept.name.clone(),
                    value: value.clone(),
                    known: concept.value_names(),
                })?,
            Value::Vector(vector) => match &concept.model {
                Model::Discrete(_) => {
                    return Err(Error::VectorForDiscrete {
                        concept: concept.name.clone(),
                        known: concept.value_names(),
                    })
                }
                Model::Continuous(m) => {
                    if vector.len() != m.condition_dim() {
                        return Err(Error::ConditionLength {
                            concept: concept.name.clone(),
                            expected: m.condition_dim(),
                            got: vector.len(),
                        });
                    }
                    if let Some(bad) = vector.iter().find(|v| !v.is_finite()) {
                        return Err(Error::InvalidNumber {
                            what: "vector component",
                            requirement: "finite",
                            value: *bad,
                        });
                    }
                    Condition::Vector(vector.clone())
                }
            },
        };
        Ok((index, condition))
    }

    pub(crate) fn name(&self, index: usize) -> &str {
        &self.concepts[index].name
    }

    pub(crate) fn model(&self, index: usize) -> &Model<'m> {
        &self.concepts[index].model
    }

    /// Parses a text expression (see the [crate docs](crate#the-text-syntax)), checking every
    /// concept and value against this set; errors carry the column.
    pub fn parse_expr(&self, text: &str) -> Result<Expr> {
        crate::parse::parse(text, Some(self))
    }

    /// Parses a text expression and builds its [`Composition`], an [`Energy`].
    pub fn parse(&self, text: &str) -> Result<Composition<'m>> {
        let expr = self.parse_expr(text)?;
        self.compose(&expr)
    }

    /// Builds the [`Composition`] of an expression: checks its numbers, resolves its terms and
    /// checks that all its concepts take one sample shape.
    pub fn compose(&self, expr: &Expr) -> Result<Composition<'m>> {
        Composition::build(self, expr)
    }

    /// `expr` with every term of a discrete concept guided by the concept's own classifier:
    /// `c=v` becomes `(1 + gamma)*c=v & !gamma*(c=v_1 | ... | c=v_K)` over the concept's K
    /// named values, whose energy `(1 + gamma) E_v + gamma log sum_k exp(-E_k)` is that of
    /// `p(x | v) p(v | x)^gamma`, `p(v | x)` the softmax of `-E_k(x)` over the values. This
    /// is classifier-free guidance (Ho & Salimans 2022) with the concept's OR as the
    /// unconditional model: it moves samples to where the value is not only likely but also
    /// unambiguous. Terms of continuous concepts (no finite set of values) are left as they
    /// are; `gamma = 0` returns `expr` unchanged.
    ///
    /// # Errors
    /// `gamma` negative or not finite, or a term naming an unknown concept or value.
    pub fn guided(&self, expr: &Expr, gamma: f64) -> Result<Expr> {
        if !(gamma >= 0.0 && gamma.is_finite()) {
            return Err(Error::InvalidNumber {
                what: "guidance",
                requirement: "a finite number >= 0",
                value: gamma,
            });
        }
        if gamma == 0.0 {
            return Ok(expr.clone());
        }
        let guide = |e: &Expr| -> Result<Expr> { self.guided(e, gamma) };
        Ok(match expr {
            Expr::Term(term) => {
                let (index, _) = self.resolve(term)?;
                let concept = &self.concepts[index];
                match concept.model {
                    Model::Continuous(_) => expr.clone(),
                    Model::Discrete(_) => {
                        // One alternative per class: two names of one class would count it twice.
                        let mut seen: Vec<&Condition> = Vec::new();
                        let mut distinct = Vec::new();
                        for (name, condition) in &concept.values {
                            if !seen.contains(&condition) {
                                seen.push(condition);
                                distinct.push(name.as_str());
                            }
                        }
                        Expr::and([
                            Expr::scaled(1.0 + gamma, expr.clone()),
                            Expr::not_weighted(
                                gamma,
                                Expr::or(
                                    distinct
                                        .into_iter()
                                        .map(|name| Expr::term(&concept.name, name)),
                                ),
                            ),
                        ])
                    }
                }
            }
            Expr::Scale { weight, expr } => Expr::scaled(*weight, guide(expr)?),
            Expr::Not { alpha, expr } => Expr::not_weighted(*alpha, guide(expr)?),
            Expr::And(children) => Expr::And(children.iter().map(guide).collect::<Result<_>>()?),
            Expr::Or {
                temperature,
                children,
            } => Expr::Or {
                temperature: *temperature,
                children: children.iter().map(guide).collect::<Result<_>>()?,
            },
        })
    }

    /// One term as a plain [`Energy`]: the concept's model with its value bound for every
    /// sample.
    pub fn term(&self, term: &Term) -> Result<ConceptTerm<'m>> {
        let (index, condition) = self.resolve(term)?;
        Ok(ConceptTerm {
            model: self.concepts[index].model.clone(),
            condition,
        })
    }

    /// The expression as a tree of [`algebra`] nodes over [`ConceptTerm`]s: the same energy as
    /// [`compose`](Self::compose), but every term calls its model on its own (no batching).
    /// For comparison and for code that wants the tree's nodes as separate energies.
    pub fn compose_unbatched(&self, expr: &Expr) -> Result<BoxedEnergy<'m>> {
        expr.validate()?;
        self.unbatched(expr)
    }

    fn unbatched(&self, expr: &Expr) -> Result<BoxedEnergy<'m>> {
        Ok(match expr {
            Expr::Term(t) => Box::new(self.term(t)?),
            Expr::Scale { weight, expr } => Box::new(algebra::And::weighted(vec![(
                *weight,
                self.unbatched(expr)?,
            )])?),
            Expr::Not { alpha, expr } => {
                Box::new(algebra::Not::weighted(*alpha, self.unbatched(expr)?)?)
            }
            Expr::And(children) => Box::new(algebra::And::new(
                children
                    .iter()
                    .map(|c| self.unbatched(c))
                    .collect::<Result<_>>()?,
            )?),
            Expr::Or {
                temperature,
                children,
            } => Box::new(algebra::Or::with_temperature(
                children
                    .iter()
                    .map(|c| self.unbatched(c))
                    .collect::<Result<_>>()?,
                *temperature,
            )?),
        })
    }
}

/// One concept at one value as an [`Energy`]: the model with the value bound for every sample.
pub struct ConceptTerm<'m> {
    model: Model<'m>,
    condition: Condition,
}

impl ConceptTerm<'_> {
    fn condition_for(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let batch = x.dims().first().copied().unwrap_or(0);
        self.model
            .condition_tensor(&[&self.condition], batch, x.dtype(), x.device())
    }
}

impl Energy for ConceptTerm<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        self.model.energy(x, &self.condition_for(x)?)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        self.model.energy_and_grad(x, &self.condition_for(x)?)
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.model.sample_shape()
    }
}

fn invalid(name: &str, problem: impl Into<String>) -> Error {
    Error::InvalidConcept {
        name: name.to_string(),
        problem: problem.into(),
    }
}

/// Whether `s` is an identifier of the text syntax: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
