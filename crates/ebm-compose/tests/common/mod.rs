//! Shared test fixtures: analytic concept models that count their calls, a concept set built
//! from them, random expressions, and an independent f64 reference of the algebra.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use ebm_compose::{ConceptSet, Expr, Term, Value, VectorConditioned};
use ebm_core::{LabelledEnergy, Rng};
use rand::Rng as _;

/// The sample dimension of every fixture model.
pub const DIM: usize = 3;

/// A call counter that records the batch size of each call.
#[derive(Default)]
pub struct Calls {
    count: AtomicUsize,
    batches: Mutex<Vec<usize>>,
}

impl Calls {
    fn record(&self, x: &Tensor) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.batches.lock().unwrap().push(x.dims()[0]);
    }

    /// The number of calls since the last reset.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The batch size of each call since the last reset.
    pub fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.batches.lock().unwrap().clear();
    }
}

/// `E_c(x) = 0.5 s_c |x - mu_c|^2` per class `c`, with the analytic gradient `s_c (x - mu_c)`.
/// Counts its calls and records the batch size of each.
pub struct Quadratic {
    pub means: Vec<Vec<f64>>,
    pub scales: Vec<f64>,
    pub shape: Option<Vec<usize>>,
    pub calls: Calls,
}

impl Quadratic {
    pub fn new(means: Vec<Vec<f64>>, scales: Vec<f64>) -> Self {
        Self {
            means,
            scales,
            shape: None,
            calls: Calls::default(),
        }
    }

    /// `k` classes with means and scales drawn from `rng`.
    pub fn random(k: usize, rng: &mut Rng) -> Self {
        let means = (0..k)
            .map(|_| (0..DIM).map(|_| rng.random_range(-2.0..2.0)).collect())
            .collect();
        let scales = (0..k).map(|_| rng.random_range(0.5..2.0)).collect();
        Self::new(means, scales)
    }

    pub fn with_shape(mut self, shape: Vec<usize>) -> Self {
        self.shape = Some(shape);
        self
    }

    fn per_sample(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        let labels = labels.to_vec1::<u32>()?;
        let mu: Vec<f64> = labels
            .iter()
            .flat_map(|&c| self.means[c as usize].clone())
            .collect();
        let s: Vec<f64> = labels.iter().map(|&c| self.scales[c as usize]).collect();
        let n = labels.len();
        let mu = Tensor::from_vec(mu, (n, DIM), x.device())?.to_dtype(x.dtype())?;
        let s = Tensor::from_vec(s, (n, 1), x.device())?.to_dtype(x.dtype())?;
        Ok((mu, s))
    }

    /// The energy and gradient of one sample in f64.
    pub fn reference(&self, class: usize, x: &[f64]) -> (f64, Vec<f64>) {
        let (mu, s) = (&self.means[class], self.scales[class]);
        let e = 0.5 * s * x.iter().zip(mu).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
        let g = x.iter().zip(mu).map(|(a, b)| s * (a - b)).collect();
        (e, g)
    }
}

impl LabelledEnergy for Quadratic {
    fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
        self.calls.record(x);
        let (mu, s) = self.per_sample(x, labels)?;
        let d = (x - mu)?;
        Ok((d.sqr()?.broadcast_mul(&s)?.sum(1)? * 0.5)?)
    }

    fn energy_and_grad_given(
        &self,
        x: &Tensor,
        labels: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        self.calls.record(x);
        let (mu, s) = self.per_sample(x, labels)?;
        let d = (x - mu)?;
        let g = d.broadcast_mul(&s)?;
        Ok((((&d * &g)?.sum(1)? * 0.5)?, g))
    }

    fn num_classes(&self) -> usize {
        self.means.len()
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.shape.clone()
    }
}

/// `E(x | c) = 0.5 |x[:d] - c|^2 + 0.1 |x|^2`, conditioned on `c` in `R^d`; its gradient comes
/// from the trait's autograd default. Counts its calls.
pub struct Pull {
    pub dim: usize,
    pub calls: Calls,
}

impl Pull {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            calls: Calls::default(),
        }
    }

    pub fn reference(&self, c: &[f64], x: &[f64]) -> (f64, Vec<f64>) {
        let mut e = 0.0;
        let mut g = vec![0.0; x.len()];
        for j in 0..x.len() {
            e += 0.1 * x[j] * x[j];
            g[j] += 0.2 * x[j];
            if j < self.dim {
                e += 0.5 * (x[j] - c[j]).powi(2);
                g[j] += x[j] - c[j];
            }
        }
        (e, g)
    }
}

impl VectorConditioned for Pull {
    fn energy_given_vector(&self, x: &Tensor, condition: &Tensor) -> ebm_core::Result<Tensor> {
        self.calls.record(x);
        let near = (x.narrow(1, 0, self.dim)? - condition)?.sqr()?.sum(1)?;
        let norm = x.sqr()?.sum(1)?;
        Ok(((near * 0.5)? + (norm * 0.1)?)?)
    }

    fn condition_dim(&self) -> usize {
        self.dim
    }
}

/// The fixture models, kept so that tests can read their call counts and compute references.
pub struct Fixture {
    pub shape: Arc<Quadratic>,
    pub color: Arc<Quadratic>,
    pub pos: Arc<Pull>,
}

pub const SHAPES: [&str; 3] = ["cube", "sphere", "cylinder"];
pub const COLORS: [&str; 4] = ["red", "green", "blue", "yellow"];
pub const POSITIONS: [(&str, [f64; 2]); 3] = [
    ("left", [0.25, 0.5]),
    ("right", [0.75, 0.5]),
    ("top", [0.5, 0.9]),
];

impl Fixture {
    pub fn new(seed: u64) -> Self {
        let mut rng = ebm_core::seeded_rng(seed);
        Self {
            shape: Arc::new(Quadratic::random(SHAPES.len(), &mut rng)),
            color: Arc::new(Quadratic::random(COLORS.len(), &mut rng)),
            pos: Arc::new(Pull::new(2)),
        }
    }

    /// Concepts `shape`, `color` (discrete) and `pos` (continuous, 2-d).
    pub fn concepts(&self) -> ConceptSet<'static> {
        let mut set = ConceptSet::new();
        set.add_discrete_shared(
            "shape",
            self.shape.clone(),
            SHAPES.iter().enumerate().map(|(i, s)| (*s, i)),
        )
        .unwrap()
        .add_discrete_shared(
            "color",
            self.color.clone(),
            COLORS.iter().enumerate().map(|(i, s)| (*s, i)),
        )
        .unwrap()
        .add_continuous_shared("pos", self.pos.clone(), POSITIONS)
        .unwrap();
        set
    }

    pub fn reset_calls(&self) {
        self.shape.calls.reset();
        self.color.calls.reset();
        self.pos.calls.reset();
    }

    /// A term's energy and gradient at one sample, in f64.
    pub fn term_reference(&self, term: &Term, x: &[f64]) -> (f64, Vec<f64>) {
        let index = |names: &[&str], v: &Value| match v {
            Value::Named(n) => names.iter().position(|s| s == n).unwrap(),
            Value::Vector(_) => panic!("vector for a discrete concept"),
        };
        match term.concept.as_str() {
            "shape" => self.shape.reference(index(&SHAPES, &term.value), x),
            "color" => self.color.reference(index(&COLORS, &term.value), x),
            "pos" => {
                let c = match &term.value {
                    Value::Named(n) => POSITIONS.iter().find(|p| p.0 == n).unwrap().1.to_vec(),
                    Value::Vector(v) => v.clone(),
                };
                self.pos.reference(&c, x)
            }
            other => panic!("unknown concept {other}"),
        }
    }

    /// The expression's energy and gradient at one sample, in f64: an independent reference.
    pub fn reference(&self, expr: &Expr, x: &[f64]) -> (f64, Vec<f64>) {
        reference(expr, x, &|t, x| self.term_reference(t, x))
    }
}

/// A term's energy and gradient at one sample.
pub type TermReference<'a> = dyn Fn(&Term, &[f64]) -> (f64, Vec<f64>) + 'a;

/// The algebra in plain f64, per sample, from the terms' energies and gradients.
pub fn reference(expr: &Expr, x: &[f64], term: &TermReference<'_>) -> (f64, Vec<f64>) {
    let scale = |c: f64, (e, g): (f64, Vec<f64>)| (c * e, g.iter().map(|v| c * v).collect());
    match expr {
        Expr::Term(t) => term(t, x),
        Expr::Scale { weight, expr } => scale(*weight, reference(expr, x, term)),
        Expr::Not { alpha, expr } => scale(-alpha, reference(expr, x, term)),
        Expr::And(children) => {
            let mut e = 0.0;
            let mut g = vec![0.0; x.len()];
            for c in children {
                let (ce, cg) = reference(c, x, term);
                e += ce;
                g.iter_mut().zip(&cg).for_each(|(a, b)| *a += b);
            }
            (e, g)
        }
        Expr::Or {
            temperature,
            children,
        } => {
            let parts: Vec<(f64, Vec<f64>)> =
                children.iter().map(|c| reference(c, x, term)).collect();
            let m = parts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
            let w: Vec<f64> = parts
                .iter()
                .map(|p| (-(p.0 - m) / temperature).exp())
                .collect();
            let s: f64 = w.iter().sum();
            let mut g = vec![0.0; x.len()];
            for (wi, p) in w.iter().zip(&parts) {
                g.iter_mut().zip(&p.1).for_each(|(a, b)| *a += wi / s * b);
            }
            (m - temperature * s.ln(), g)
        }
    }
}

/// A random term over the fixture's concepts (a fifth of `pos` terms are literal vectors).
pub fn random_term(rng: &mut Rng) -> Expr {
    match rng.random_range(0..3) {
        0 => Expr::term("shape", SHAPES[rng.random_range(0..SHAPES.len())]),
        1 => Expr::term("color", COLORS[rng.random_range(0..COLORS.len())]),
        _ => {
            if rng.random_bool(0.2) {
                let v: Vec<f64> = (0..2).map(|_| round(rng.random_range(-1.0..1.0))).collect();
                Expr::term_vector("pos", v)
            } else {
                Expr::term("pos", POSITIONS[rng.random_range(0..POSITIONS.len())].0)
            }
        }
    }
}

/// A number with a short decimal form (so that printed expressions stay readable).
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A random expression whose depth is exactly `depth` (1 = a term): the first child of each
/// node carries the depth, the others are shallower.
pub fn random_expr(rng: &mut Rng, depth: usize) -> Expr {
    if depth <= 1 {
        return random_term(rng);
    }
    let shallower = |rng: &mut Rng| {
        let d = rng.random_range(1..depth);
        random_expr(rng, d)
    };
    match rng.random_range(0..4) {
        0 => {
            let n = rng.random_range(2..4);
            let mut children = vec![random_expr(rng, depth - 1)];
            children.extend((1..n).map(|_| shallower(rng)));
            Expr::And(children)
        }
        1 => {
            let n = rng.random_range(2..4);
            let mut children = vec![random_expr(rng, depth - 1)];
            children.extend((1..n).map(|_| shallower(rng)));
            let temperature = if rng.random_bool(0.5) {
                1.0
            } else {
                round(rng.random_range(0.2..3.0))
            };
            Expr::Or {
                temperature,
                children,
            }
        }
        2 => {
            let alpha = if rng.random_bool(0.5) {
                1.0
            } else {
                round(rng.random_range(0.0..1.5))
            };
            Expr::not_weighted(alpha, random_expr(rng, depth - 1))
        }
        _ => Expr::scaled(
            round(rng.random_range(0.1..3.0)),
            random_expr(rng, depth - 1),
        ),
    }
}

/// A `[batch, DIM]` f64 batch of uniform draws in `[-2, 2)`.
pub fn random_x(rng: &mut Rng, batch: usize) -> Tensor {
    ebm_core::noise::uniform(rng, (batch, DIM), -2.0, 2.0, DType::F64, &Device::Cpu).unwrap()
}

pub fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

/// Asserts `|a - b| <= tol * max(1, |b|)` element-wise.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}[{i}]: {x} vs {y} (tolerance {tol})"
        );
    }
}
