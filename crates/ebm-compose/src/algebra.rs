//! The composition algebra over any [`Energy`]: [`And`] (a weighted sum), [`Or`] (a soft
//! minimum at a temperature) and [`Not`] (a negated, weighted energy). Each node is itself an
//! [`Energy`], so nodes nest to any depth and samplers see one energy.
//!
//! | node | energy | gradient |
//! | --- | --- | --- |
//! | `And(w_i, E_i)` | `sum_i w_i E_i` | `sum_i w_i dE_i` |
//! | `Or_T(E_i)` | `-T log sum_i exp(-E_i / T)` | `sum_i softmax(-E / T)_i dE_i` |
//! | `Not_alpha(E)` | `-alpha E` | `-alpha dE` |
//!
//! A [`Not`] inside an [`And`] therefore contributes `-alpha E` to the sum: `A & !B` is
//! `E_A - alpha E_B`, the paper's negation (`p(x) ∝ p_A(x) / p_B(x)^alpha`). A bare [`Not`] is
//! `-alpha E`, whose density `exp(alpha E)` is not normalisable on its own: use it inside an AND.
//!
//! The OR is computed stably, around the per-sample minimum: `m - T log sum_i exp(-(E_i - m)/T)`
//! with `m = min_i E_i`, so it tends to the minimum as `T -> 0` instead of overflowing.
//!
//! These nodes call each child once per evaluation. Terms that share one conditional network are
//! batched into one call by [`Composition`](crate::Composition), built from a
//! [`ConceptSet`](crate::ConceptSet); this module is for energies that share nothing.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ebm_compose::algebra::{And, Not, Or};
//! use ebm_core::{analytic::Gaussian, Energy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Gaussian::isotropic(vec![0.0, 0.0], 1.0)?;
//! let b = Gaussian::isotropic(vec![1.0, 0.0], 1.0)?;
//! let c = Gaussian::isotropic(vec![0.0, 1.0], 1.0)?;
//! // (a | b) & !0.5*c
//! let or = Or::new(vec![Box::new(a), Box::new(b)])?;
//! let and = And::new(vec![Box::new(or), Box::new(Not::weighted(0.5, c)?)])?;
//! let x = Tensor::new(&[[0f32, 0.0]], &Device::Cpu)?;
//! let (e, grad) = and.energy_and_grad(&x)?;
//! assert_eq!(e.dims(), &[1]);
//! assert_eq!(grad.dims(), &[1, 2]);
//! # Ok(())
//! # }
//! ```

use candle_core::Tensor;
use ebm_core::Energy;

use crate::{Error, Result};

/// A boxed child energy of a composition node.
pub type BoxedEnergy<'a> = Box<dyn Energy + 'a>;

/// A weighted sum of energies, `sum_i w_i E_i`: the conjunction (AND) of concepts.
pub struct And<'a> {
    terms: Vec<(f64, BoxedEnergy<'a>)>,
    sample_shape: Option<Vec<usize>>,
}

impl<'a> And<'a> {
    /// The plain sum of the children's energies (every weight 1).
    pub fn new(children: Vec<BoxedEnergy<'a>>) -> Result<Self> {
        Self::weighted(children.into_iter().map(|c| (1.0, c)).collect())
    }

    /// A weighted sum; every weight must be finite and > 0 (for a negative contribution, add a
    /// [`Not`] child).
    pub fn weighted(terms: Vec<(f64, BoxedEnergy<'a>)>) -> Result<Self> {
        if terms.is_empty() {
            return Err(Error::EmptyGroup { what: "AND" });
        }
        for (w, _) in &terms {
            check_weight(*w)?;
        }
        let sample_shape = common_sample_shape(
            terms
                .iter()
                .enumerate()
                .map(|(i, (_, e))| (format!("AND child {i}"), e.sample_shape())),
        )?;
        Ok(Self {
            terms,
            sample_shape,
        })
    }

    /// The number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Always false: an AND has at least one term.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

impl Energy for And<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let energies = self
            .terms
            .iter()
            .map(|(w, e)| Ok((*w, e.energy(x)?)))
            .collect::<ebm_core::Result<Vec<_>>>()?;
        linear_combination(&energies)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        let mut energies = Vec::with_capacity(self.terms.len());
        let mut grads = Vec::with_capacity(self.terms.len());
        for (w, child) in &self.terms {
            let (e, g) = child.energy_and_grad(x)?;
            energies.push((*w, e));
            grads.push((*w, g));
        }
        Ok((linear_combination(&energies)?, linear_combination(&grads)?))
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.sample_shape.clone()
    }
}

/// The soft minimum of energies at a temperature, `-T log sum_i exp(-E_i / T)`: the
/// disjunction (OR) of concepts, whose density is the sum of the children's (unnormalised)
/// densities at `T = 1`.
pub struct Or<'a> {
    children: Vec<BoxedEnergy<'a>>,
    temperature: f64,
    sample_shape: Option<Vec<usize>>,
}

impl<'a> Or<'a> {
    /// The OR at temperature 1: `-log sum_i exp(-E_i)`.
    pub fn new(children: Vec<BoxedEnergy<'a>>) -> Result<Self> {
        Self::with_temperature(children, 1.0)
    }

    /// The OR at temperature `temperature` (finite, > 0); it tends to `min_i E_i` as the
    /// temperature goes to 0.
    pub fn with_temperature(children: Vec<BoxedEnergy<'a>>, temperature: f64) -> Result<Self> {
        if children.is_empty() {
            return Err(Error::EmptyGroup { what: "OR" });
        }
        check_temperature(temperature)?;
        let sample_shape = common_sample_shape(
            children
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("OR child {i}"), e.sample_shape())),
        )?;
        Ok(Self {
            children,
            temperature,
            sample_shape,
        })
    }

    /// The temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }
}

impl Energy for Or<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let energies = self
            .children
            .iter()
            .map(|e| e.energy(x))
            .collect::<ebm_core::Result<Vec<_>>>()?;
        Ok(soft_min(&energies, self.temperature)?.0)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        let mut energies = Vec::with_capacity(self.children.len());
        let mut grads = Vec::with_capacity(self.children.len());
        for child in &self.children {
            let (e, g) = child.energy_and_grad(x)?;
            energies.push(e);
            grads.push(g);
        }
        let (e, weights) = soft_min(&energies, self.temperature)?;
        Ok((e, soft_min_grad(&weights, &grads)?))
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.sample_shape.clone()
    }
}

/// A negated energy, `-alpha E` (`alpha >= 0`, default 1): inside an [`And`] it divides the
/// density by `p_E^alpha`, i.e. steers samples away from the concept.
pub struct Not<'a> {
    child: BoxedEnergy<'a>,
    alpha: f64,
}

impl<'a> Not<'a> {
    /// `-E`.
    pub fn new(child: impl Energy + 'a) -> Self {
        Self {
            child: Box::new(child),
            alpha: 1.0,
        }
    }

    /// `-alpha E`, with `alpha` finite and >= 0 (`alpha = 0` makes the term vanish).
    pub fn weighted(alpha: f64, child: impl Energy + 'a) -> Result<Self> {
        check_alpha(alpha)?;
        Ok(Self {
            child: Box::new(child),
            alpha,
        })
    }

    /// The NOT weight `alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Energy for Not<'_> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        Ok(self.child.energy(x)?.affine(-self.alpha, 0.0)?)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        let (e, g) = self.child.energy_and_grad(x)?;
        Ok((e.affine(-self.alpha, 0.0)?, g.affine(-self.alpha, 0.0)?))
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.child.sample_shape()
    }
}

/// Checks an AND weight: finite and > 0.
pub(crate) fn check_weight(w: f64) -> Result<()> {
    if w.is_finite() && w > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidNumber {
            what: "weight",
            requirement: "a finite number > 0",
            value: w,
        })
    }
}

/// Checks a NOT weight: finite and >= 0.
pub(crate) fn check_alpha(alpha: f64) -> Result<()> {
    if alpha.is_finite() && alpha >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidNumber {
            what: "NOT weight",
            requirement: "a finite number >= 0",
            value: alpha,
        })
    }
}

/// Checks an OR temperature: finite and > 0.
pub(crate) fn check_temperature(t: f64) -> Result<()> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidNumber {
            what: "OR temperature",
            requirement: "a finite number > 0",
            value: t,
        })
    }
}

/// The one sample shape that all named energies agree on (`None` where none declares one), or
/// an error naming the first two that disagree.
pub(crate) fn common_sample_shape(
    shapes: impl IntoIterator<Item = (String, Option<Vec<usize>>)>,
) -> Result<Option<Vec<usize>>> {
    let mut first: Option<(String, Vec<usize>)> = None;
    for (name, shape) in shapes {
        let Some(shape) = shape else { continue };
        match &first {
            None => first = Some((name, shape)),
            Some((first_name, first_shape)) => {
                if *first_shape != shape {
                    return Err(Error::SampleShapeMismatch {
                        first: first_name.clone(),
                        first_shape: first_shape.clone(),
                        second: name,
                        second_shape: shape,
                    });
                }
            }
        }
    }
    Ok(first.map(|(_, s)| s))
}

/// `sum_i c_i t_i` over tensors of one shape (at least one term).
pub(crate) fn linear_combination(terms: &[(f64, Tensor)]) -> ebm_core::Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (c, t) in terms {
        let scaled = if *c == 1.0 {
            t.clone()
        } else {
            t.affine(*c, 0.0)?
        };
        acc = Some(match acc {
            None => scaled,
            Some(a) => (a + scaled)?,
        });
    }
    acc.ok_or_else(|| ebm_core::Error::invalid("composition", "a sum needs at least one term"))
}

/// The OR of energies `[B]` each: `-T log sum_i exp(-E_i / T)`, shape `[B]`, and the softmax
/// weights `softmax(-E / T)` over the children, shape `[K, B]`. Differentiable in the energies
/// (the per-sample minimum it subtracts is detached; it cancels from value and gradient).
pub(crate) fn soft_min(
    energies: &[Tensor],
    temperature: f64,
) -> ebm_core::Result<(Tensor, Tensor)> {
    let stacked = Tensor::stack(energies, 0)?; // [K, B]
    let min = stacked.min_keepdim(0)?.detach(); // [1, B]
    let unnormalised = stacked
        .broadcast_sub(&min)?
        .affine(-1.0 / temperature, 0.0)?
        .exp()?; // [K, B], the largest entry of each column is exactly 1
    let total = unnormalised.sum_keepdim(0)?; // [1, B], in [1, K]
    let energy = min
        .sub(&total.log()?.affine(temperature, 0.0)?)?
        .squeeze(0)?;
    let weights = unnormalised.broadcast_div(&total)?;
    Ok((energy, weights))
}

/// The gradient of the OR: `sum_i weights[i] * grads[i]`, each weight row broadcast over the
/// sample dimensions.
pub(crate) fn soft_min_grad(weights: &Tensor, grads: &[Tensor]) -> ebm_core::Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (i, g) in grads.iter().enumerate() {
        let mut shape = vec![g.dim(0)?];
        shape.resize(g.rank(), 1);
        let w = weights.get(i)?.reshape(shape)?;
        let term = g.broadcast_mul(&w)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    acc.ok_or_else(|| ebm_core::Error::invalid("composition", "an OR needs at least one term"))
}
