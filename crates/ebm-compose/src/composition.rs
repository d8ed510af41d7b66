//! A compiled composition: an [`Expr`] bound to a [`ConceptSet`]'s models, evaluated as one
//! [`Energy`] with every model called once per evaluation, however many terms use it.
//!
//! Compilation resolves each term to its model and condition, merges identical terms, and
//! groups the distinct terms by model. Evaluating `x` (`[B, ...]`) calls each group's model once
//! on `x` repeated for each of its `T` terms (a `[T*B, ...]` batch, with condition `t` for rows
//! `t*B .. (t+1)*B`), splits the energies and gradients back per term, and combines them up the
//! tree. ANDs, NOTs and weights fold into one linear combination per level (`a & !0.5*(b & c)`
//! is `E_a - 0.5 E_b - 0.5 E_c`); an OR is a soft minimum, its gradient the
//! `softmax(-E / T)`-weighted sum of its children's gradients.

use candle_core::Tensor;
use ebm_core::Energy;

use crate::algebra::{common_sample_shape, linear_combination, soft_min, soft_min_grad};
use crate::concept::{ConceptSet, Condition, Model};
use crate::expr::Expr;
use crate::Result;

/// A node of the compiled tree.
#[derive(Debug, Clone)]
enum Node {
    /// A distinct term, by index into the composition's term table.
    Leaf(usize),
    /// `sum_i c_i E_i`, with real coefficients (NOT terms negative).
    Sum(Vec<(f64, Node)>),
    /// `-T log sum_i exp(-E_i / T)`.
    SoftMin {
        temperature: f64,
        children: Vec<Node>,
    },
}

/// The distinct terms that use one model, evaluated in one call.
struct Group<'m> {
    model: Model<'m>,
    /// The concept of the group's first term, for error messages.
    concept: String,
    conditions: Vec<Condition>,
}

/// An [`Expr`] bound to a [`ConceptSet`]: an [`Energy`] that samplers use like any other.
/// Build it with [`ConceptSet::compose`] or [`ConceptSet::parse`].
pub struct Composition<'m> {
    expr: Expr,
    root: Node,
    groups: Vec<Group<'m>>,
    /// For each distinct term, its group and its slot in the group.
    terms: Vec<(usize, usize)>,
    sample_shape: Option<Vec<usize>>,
}

impl<'m> Composition<'m> {
    pub(crate) fn build(set: &ConceptSet<'m>, expr: &Expr) -> Result<Self> {
        expr.validate()?;
        let mut builder = Builder {
            set,
            groups: Vec::new(),
            group_keys: Vec::new(),
            terms: Vec::new(),
            used: Vec::new(),
        };
        let root = builder.node(expr)?;
        let sample_shape = common_sample_shape(
            builder
                .used
                .iter()
                .map(|&c| (set.name(c).to_string(), set.model(c).sample_shape())),
        )?;
        Ok(Self {
            expr: expr.clone(),
            root,
            groups: builder.groups,
            terms: builder.terms,
            sample_shape,
        })
    }

    /// The expression this composition was built from.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The number of model calls one evaluation makes: one per distinct model.
    pub fn model_calls(&self) -> usize {
        self.groups.len()
    }

    /// The number of distinct terms (identical terms are evaluated once).
    pub fn distinct_terms(&self) -> usize {
        self.terms.len()
    }

    /// Every distinct term's energy (and gradient when `grad`), from one call per group.
    fn evaluate_terms(
        &self,
        x: &Tensor,
        grad: bool,
    ) -> ebm_core::Result<Vec<(Tensor, Option<Tensor>)>> {
        let dims = x.dims();
        if dims.is_empty() || dims[0] == 0 {
            return Err(ebm_core::Error::Shape {
                what: "composition input".into(),
                expected: "[batch >= 1, ...]".into(),
                got: dims.to_vec(),
            });
        }
        let batch = dims[0];
        let mut per_group: Vec<Vec<(Tensor, Option<Tensor>)>> =
            Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let count = group.conditions.len();
            let repeated = if count == 1 {
                x.clone()
            } else {
                let mut tiled = vec![count];
                tiled.extend_from_slice(dims);
                let mut flat = dims.to_vec();
                flat[0] = count * batch;
                x.unsqueeze(0)?.broadcast_as(tiled)?.reshape(flat)?
            };
            let conditions: Vec<&Condition> = group.conditions.iter().collect();
            let condition =
                group
                    .model
                    .condition_tensor(&conditions, batch, x.dtype(), x.device())?;
            let (energies, grads) = if grad {
                let (e, g) = group.model.energy_and_grad(&repeated, &condition)?;
                (e, Some(g))
            } else {
                (group.model.energy(&repeated, &condition)?, None)
            };
            if energies.dims() != [count * batch] {
                return Err(ebm_core::Error::Shape {
                    what: format!("energies of concept `{}`", group.concept),
                    expected: format!("[{}]", count * batch),
                    got: energies.dims().to_vec(),
                });
            }
            if let Some(g) = &grads {
                if g.dims() != repeated.dims() {
                    return Err(ebm_core::Error::Shape {
                        what: format!("input gradient of concept `{}`", group.concept),
                        expected: format!("{:?} (the input's shape)", repeated.dims()),
                        got: g.dims().to_vec(),
                    });
                }
            }
            let split = if count == 1 {
                vec![(energies, grads)]
            } else {
                let energies = energies.reshape((count, batch))?;
                let grads = match grads {
                    Some(g) => {
                        let mut shape = vec![count];
                        shape.extend_from_slice(dims);
                        Some(g.reshape(shape)?)
                    }
                    None => None,
                };
                (0..count)
                    .map(|t| {
                        Ok((
                            energies.get(t)?,
                            grads.as_ref().map(|g| g.get(t)).transpose()?,
                        ))
                    })
                    .collect::<ebm_core::Result<Vec<_>>>()?
            };
            per_group.push(split);
        }
        Ok(self
            .terms
            .iter()
            .map(|&(g, slot)| per_group[g][slot].clone())
            .collect())
    }

    fn evaluate(&self, x: &Tensor, grad: bool) -> ebm_core::Result<(Tensor, Option<Tensor>)> {
        let terms = self.evaluate_terms(x, grad)?;
        evaluate_node(&self.root, &terms)
    }
}

fn evaluate_node(
    node: &Node,
    terms: &[(Tensor, Option<Tensor>)],
) -> ebm_core::Result<(Tensor, Option<Tensor>)> {
    match node {
        Node::Leaf(i) => Ok(terms[*i].clone()),
        Node::Sum(children) => {
            let mut energies = Vec::with_capacity(children.len());
            let mut grads = Vec::with_capacity(children.len());
            for (c, child) in children {
                let (e, g) = evaluate_node(child, terms)?;
                energies.push((*c, e));
                if let Some(g) = g {
                    grads.push((*c, g));
                }
            }
            let grad = if grads.is_empty() {
                None
            } else {
                Some(linear_combination(&grads)?)
            };
            Ok((linear_combination(&energies)?, grad))
        }
        Node::SoftMin {
            temperature,
            children,
        } => {
            let mut energies = Vec::with_capacity(children.len());
            let mut grads = Vec::with_capacity(children.len());
            for child in children {
                let (e, g) = evaluate_node(child, terms)?;
                energies.push(e);
                if let Some(g) = g {
                    grads.push(g);
                }
            }
            let (energy, weights) = soft_min(&energies, *temperature)?;
            let grad = if grads.is_empty() {
                None
            } else {
                Some(soft_min_grad(&weights, &grads)?)
            };
            Ok((energy, grad))
        }
    }
}

struct Builder<'s, 'm> {
    set: &'s ConceptSet<'m>,
    groups: Vec<Group<'m>>,
    group_keys: Vec<(bool, *const u8)>,
    terms: Vec<(usize, usize)>,
    /// The concepts used, in order of first use.
    used: Vec<usize>,
}

impl Builder<'_, '_> {
    fn node(&mut self, expr: &Expr) -> Result<Node> {
        Ok(match expr {
            Expr::Term(term) => {
                let (concept, condition) = self.set.resolve(term)?;
                if !self.used.contains(&concept) {
                    self.used.push(concept);
                }
                let model = self.set.model(concept);
                let key = model.identity();
                let group = match self.group_keys.iter().position(|k| *k == key) {
                    Some(g) => g,
                    None => {
                        self.group_keys.push(key);
                        self.groups.push(Group {
                            model: model.clone(),
                            concept: self.set.name(concept).to_string(),
                            conditions: Vec::new(),
                        });
                        self.groups.len() - 1
                    }
                };
                let conditions = &mut self.groups[group].conditions;
                let slot = match conditions.iter().position(|c| *c == condition) {
                    Some(s) => s,
                    None => {
                        conditions.push(condition);
                        conditions.len() - 1
                    }
                };
                let index = match self.terms.iter().position(|t| *t == (group, slot)) {
                    Some(i) => i,
                    None => {
                        self.terms.push((group, slot));
                        self.terms.len() - 1
                    }
                };
                Node::Leaf(index)
            }
            Expr::Or {
                temperature,
                children,
            } => {
                if children.len() == 1 {
                    // An OR of one child is the child, at any temperature.
                    return self.node(&children[0]);
                }
                Node::SoftMin {
                    temperature: *temperature,
                    children: children
                        .iter()
                        .map(|c| self.node(c))
                        .collect::<Result<_>>()?,
                }
            }
            Expr::And(_) | Expr::Scale { .. } | Expr::Not { .. } => {
                let mut sum = Vec::new();
                self.linear_terms(expr, 1.0, &mut sum)?;
                if sum.len() == 1 && sum[0].0 == 1.0 {
                    sum.remove(0).1
                } else {
                    Node::Sum(sum)
                }
            }
        })
    }

    /// Flattens ANDs, weights and NOTs into `sum_i c_i node_i`, each coefficient the product of
    /// the weights (and `-alpha`s) on the path from the enclosing sum.
    fn linear_terms(
        &mut self,
        expr: &Expr,
        coefficient: f64,
        out: &mut Vec<(f64, Node)>,
    ) -> Result<()> {
        match expr {
            Expr::And(children) => {
                for child in children {
                    self.linear_terms(child, coefficient, out)?;
                }
            }
            Expr::Scale { weight, expr } => self.linear_terms(expr, coefficient * weight, out)?,
            Expr::Not { alpha, expr } => self.linear_terms(expr, -coefficient * alpha, out)?,
            Expr::Term(_) | Expr::Or { .. } => out.push((coefficient, self.node(expr)?)),
        }
        Ok(())
    }
}

impl Energy for Composition<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        Ok(self.evaluate(x, false)?.0)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        match self.evaluate(x, true)? {
            (e, Some(g)) => Ok((e, g)),
            // Every tree has at least one term, and every term returns a gradient here.
            (e, None) => Ok((e, x.zeros_like()?)),
        }
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.sample_shape.clone()
    }
}

impl std::fmt::Display for Composition<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.expr)
    }
}

impl std::fmt::Debug for Composition<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composition")
            .field("expr", &self.expr.to_string())
            .field("model_calls", &self.groups.len())
            .field("distinct_terms", &self.terms.len())
            .field("sample_shape", &self.sample_shape)
            .finish()
    }
}
