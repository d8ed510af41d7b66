//! Composition of energies (Du, Li & Mordatch 2020, "Compositional Visual Generation with Energy
//! Based Models"): AND, OR and NOT over independently trained, named concept energies, nested
//! to any depth, written in code or in a small text syntax, and evaluated as one
//! [`ebm_core::Energy`], so that samplers know nothing of composition.
//!
//! # The algebra
//!
//! | expression | energy | gradient |
//! | --- | --- | --- |
//! | `a & b` (AND) | `E_a + E_b` | `dE_a + dE_b` |
//! | `w*a` (weight `w > 0`) | `w E_a` | `w dE_a` |
//! | `!a`, `!alpha*a` (NOT, `alpha >= 0`, default 1) | `-alpha E_a` | `-alpha dE_a` |
//! | `a \| b`, `(a \| b)@T` (OR, `T > 0`, default 1) | `-T log(exp(-E_a/T) + exp(-E_b/T))` | `softmax(-E/T)`-weighted `dE` |
//!
//! A NOT term contributes `-alpha E` to the enclosing AND: `a & !b` is `E_a - alpha E_b`, the
//! paper's negation, whose density is `p_a(x) / p_b(x)^alpha`. A bare NOT (at the top level, or
//! as an OR alternative) is `-alpha E` on its own, an energy that is not normalisable by itself:
//! meaningful only next to a term that confines the samples. The OR is the soft minimum of its
//! children (computed stably around the minimum); at `T = 1` its density is the sum of theirs,
//! and as `T -> 0` it tends to `min_i E_i`.
//!
//! # Two ways to compose
//!
//! - [`algebra`]: [`And`](algebra::And), [`Or`](algebra::Or) and [`Not`](algebra::Not) over
//!   any `Box<dyn Energy>`; each node is an `Energy` and calls its children once each.
//! - [`ConceptSet`] and [`Composition`]: a registry of named concepts (a discrete concept is a
//!   [`ebm_core::LabelledEnergy`] with named classes; a continuous one a [`VectorConditioned`]
//!   model with named or literal vectors) and an [`Expr`] over them, compiled into one `Energy`
//!   that calls each model once per evaluation, whatever the number of terms that use it: terms
//!   that share a conditional network go through it as one batch `[T*B, ...]`.
//!
//! Concepts whose models take different sample shapes (e.g. one trained on 32x32 images, one on
//! 64x64) cannot be composed: [`ConceptSet::compose`] returns
//! [`Error::SampleShapeMismatch`].
//!
//! # The text syntax
//!
//! ```text
//! expr    = or ;
//! or      = and , { "|" , and } ;
//! and     = unary , { "&" , unary } ;
//! unary   = "!" , [ number , "*" ] , unary     (* NOT; the number is alpha >= 0 *)
//!         | number , "*" , unary               (* weight > 0 *)
//!         | primary ;
//! primary = term
//!         | "(" , expr , ")" , [ "@" , number ] ;  (* "@T" only after an OR; T > 0 *)
//! term    = ident , "=" , value ;
//! value   = ident                              (* a named value: color=red *)
//!         | number                             (* a 1-vector: size=0.5 *)
//!         | "(" , number , { "," , number } , ")" ;  (* a vector: pos=(0.3, 0.7) *)
//! ident   = ( letter | "_" ) , { letter | digit | "_" } ;
//! number  = [ "+" | "-" ] , ( digits , [ "." , [ digits ] ] | "." , digits ) ,
//!           [ ( "e" | "E" ) , [ "+" | "-" ] , digits ] ;
//! ```
//!
//! White space between tokens is ignored. `!` and weights bind tightest, then `&`, then `|`:
//! `!a=x & b=y | c=z` is `((!a=x) & b=y) | c=z`. `!0.5*a=x` is a NOT of weight 0.5, `2*!a=x` a
//! weight on a NOT (`-2 E`), `!(2*a=x)` a NOT of a weighted term. `a & b & c` is one AND of three
//! children, `(a & b) & c` an AND inside an AND (the same energy). [`Expr`]'s `Display` prints
//! this syntax back, and parsing the printed form gives the same tree.
//!
//! Every error is a value: [`Error::Parse`] names the problem (unknown concept, with the known
//! ones; unknown value, with the concept's values; unbalanced parenthesis; a weight, NOT weight
//! or temperature out of range; empty input; trailing input; an unexpected token) and the
//! column, and prints the input with a caret under it:
//!
//! ```text
//! column 14: unknown concept `colour` (known concepts: shape, color, pos)
//!   shape=cube & colour=red
//!                ^
//! ```
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ebm_compose::{ConceptSet, VectorConditioned};
//! use ebm_core::{Energy, LabelledEnergy};
//!
//! /// E_c(x) = 0.5 (x_0 - c)^2: class c sits at x_0 = c.
//! struct Colour;
//! impl LabelledEnergy for Colour {
//!     fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
//!         let c = labels.to_dtype(x.dtype())?;
//!         Ok((x.narrow(1, 0, 1)?.squeeze(1)? - c)?.sqr()?.affine(0.5, 0.0)?)
//!     }
//!     fn num_classes(&self) -> usize {
//!         3
//!     }
//! }
//!
//! /// E(x | p) = 0.5 (x_1 - p)^2: conditioned on a position p.
//! struct Position;
//! impl VectorConditioned for Position {
//!     fn energy_given_vector(&self, x: &Tensor, p: &Tensor) -> ebm_core::Result<Tensor> {
//!         Ok((x.narrow(1, 1, 1)? - p)?.sqr()?.squeeze(1)?.affine(0.5, 0.0)?)
//!     }
//!     fn condition_dim(&self) -> usize {
//!         1
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut concepts = ConceptSet::new();
//! concepts
//!     .add_discrete("color", Colour, [("red", 0), ("green", 1), ("blue", 2)])?
//!     .add_continuous("pos", Position, [("left", [0.25]), ("right", [0.75])])?;
//!
//! let energy = concepts.parse("(color=red | color=blue)@0.5 & !0.5*color=green & pos=left")?;
//! assert_eq!(energy.model_calls(), 2); // one call per model, three colour terms in one batch
//!
//! let x = Tensor::new(&[[0f32, 0.25], [2.0, 0.5]], &Device::Cpu)?;
//! let (e, grad) = energy.energy_and_grad(&x)?;
//! assert_eq!(e.dims(), &[2]);
//! assert_eq!(grad.dims(), &[2, 2]);
//!
//! let err = concepts.parse("color=red & pos=centre").unwrap_err();
//! assert_eq!(err.column(), Some(17));
//! assert!(err.to_string().contains("unknown value `centre` for concept `pos` (its values: left, right)"));
//! # Ok(())
//! # }
//! ```

pub mod algebra;
mod composition;
mod concept;
mod error;
mod expr;
mod parse;

pub use composition::Composition;
pub use concept::{ConceptSet, ConceptTerm, VectorConditioned};
pub use error::{Error, Result};
pub use expr::{Expr, Term, Value};
pub use parse::MAX_DEPTH;
