//! Properties of the composition algebra over many seeded random inputs, against analytic
//! quadratic energies and an independent f64 reference: identities, symmetry, limits, weights,
//! deep nesting, and gradients (composed, and by central finite differences).

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use ebm_compose::algebra::{And, BoxedEnergy, Not, Or};
use ebm_compose::{ConceptSet, Error, Expr};
use ebm_core::analytic::Gaussian;
use ebm_core::{seeded_rng, Energy};
use rand::seq::SliceRandom;
use rand::Rng as _;

const SEEDS: u64 = 40;
const BATCH: usize = 5;

fn eval(set: &ConceptSet<'_>, expr: &Expr, x: &Tensor) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (e, g) = set.compose(expr).unwrap().energy_and_grad(x).unwrap();
    (values(&e), rows(&g))
}

fn energy(set: &ConceptSet<'_>, expr: &Expr, x: &Tensor) -> Vec<f64> {
    values(&set.compose(expr).unwrap().energy(x).unwrap())
}

#[test]
fn and_of_one_term_is_the_term() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(seed);
        let x = random_x(&mut rng, BATCH);
        let term = random_term(&mut rng);
        let alone = eval(&set, &term, &x);
        assert_eq!(
            eval(&set, &Expr::and([term.clone()]), &x),
            alone,
            "seed {seed}"
        );
        assert_eq!(
            eval(&set, &Expr::or([term.clone()]), &x),
            alone,
            "seed {seed}"
        );
        // The generic algebra agrees.
        let leaf = match &term {
            Expr::Term(t) => set.term(t).unwrap(),
            _ => unreachable!(),
        };
        let and = And::new(vec![Box::new(leaf)]).unwrap();
        let (e, g) = and.energy_and_grad(&x).unwrap();
        assert_eq!((values(&e), rows(&g)), alone, "seed {seed}");
    }
}

#[test]
fn and_and_or_are_symmetric() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(1000 + seed);
        let x = random_x(&mut rng, BATCH);
        let n = rng.random_range(2..6);
        let children: Vec<Expr> = (0..n).map(|_| random_expr(&mut rng, 3)).collect();
        let mut shuffled = children.clone();
        shuffled.shuffle(&mut rng);
        let t = round(rng.random_range(0.1..3.0));
        for (a, b) in [
            (Expr::and(children.clone()), Expr::and(shuffled.clone())),
            (
                Expr::or_with_temperature(children.clone(), t),
                Expr::or_with_temperature(shuffled.clone(), t),
            ),
        ] {
            let (ea, ga) = eval(&set, &a, &x);
            let (eb, gb) = eval(&set, &b, &x);
            assert_close(&format!("seed {seed}: {a} vs {b}"), &ea, &eb, 1e-12);
            for (ra, rb) in ga.iter().zip(&gb) {
                assert_close(&format!("seed {seed}: gradient of {a}"), ra, rb, 1e-12);
            }
        }
    }
}

#[test]
fn or_is_minus_logsumexp_at_temperature_one() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(2000 + seed);
        let x = random_x(&mut rng, BATCH);
        let n = rng.random_range(2..5);
        let children: Vec<Expr> = (0..n).map(|_| random_term(&mut rng)).collect();
        let got = energy(&set, &Expr::or(children.clone()), &x);
        for (b, row) in rows(&x).iter().enumerate() {
            // The direct formula, without any shift: fine for these moderate energies.
            let sum: f64 = children
                .iter()
                .map(|c| (-fixture.reference(c, row).0).exp())
                .sum();
            let direct = -sum.ln();
            assert!(
                (got[b] - direct).abs() < 1e-12 * direct.abs().max(1.0),
                "seed {seed} sample {b}: {} vs {direct}",
                got[b]
            );
        }
    }
}

#[test]
fn or_tends_to_the_minimum_as_the_temperature_goes_to_zero() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(3000 + seed);
        let x = random_x(&mut rng, BATCH);
        let children: Vec<Expr> = (0..3).map(|_| random_term(&mut rng)).collect();
        let parts: Vec<Vec<(f64, Vec<f64>)>> = rows(&x)
            .iter()
            .map(|row| children.iter().map(|c| fixture.reference(c, row)).collect())
            .collect();
        let mut previous_gap = [f64::INFINITY; BATCH];
        for t in [10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4] {
            let (e, g) = eval(&set, &Expr::or_with_temperature(children.clone(), t), &x);
            for b in 0..BATCH {
                let min = parts[b].iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
                // min - T log K <= E_T <= min, and the gap shrinks with T.
                let gap = min - e[b];
                assert!(
                    gap >= -1e-12 && gap <= t * 3f64.ln() + 1e-12,
                    "seed {seed} T={t}: E={} min={min}",
                    e[b]
                );
                assert!(
                    gap <= previous_gap[b] + 1e-12,
                    "seed {seed} T={t}: gap grew"
                );
                previous_gap[b] = gap;
                if t == 1e-4 {
                    // The gradient becomes the minimum's gradient, unless two energies tie.
                    let mut sorted: Vec<f64> = parts[b].iter().map(|p| p.0).collect();
                    sorted.sort_by(f64::total_cmp);
                    if sorted[1] - sorted[0] > 0.01 {
                        let argmin = parts[b].iter().position(|p| p.0 == min).unwrap();
                        assert_close(&format!("seed {seed}"), &g[b], &parts[b][argmin].1, 1e-9);
                    }
                }
            }
        }
    }
}

#[test]
fn or_is_stable_for_huge_energies_and_tiny_temperatures() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    // |x - mu|^2 ~ 3e8: exp(-E) underflows and exp(E) overflows in any dtype.
    let x = Tensor::new(&[[1e4f32, -1e4, 1e4]], &Device::Cpu).unwrap();
    let expr = Expr::parse("(color=red | color=blue | shape=cube)@0.001").unwrap();
    let (e, g) = set.compose(&expr).unwrap().energy_and_grad(&x).unwrap();
    let e = values(&e)[0];
    let g = rows(&g);
    assert!(e.is_finite() && e > 1e8, "{e}");
    assert!(g[0].iter().all(|v| v.is_finite()), "{g:?}");
}

#[test]
fn not_with_alpha_zero_is_the_identity_of_the_enclosing_and() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(4000 + seed);
        let x = random_x(&mut rng, BATCH);
        let a = random_expr(&mut rng, 3);
        let b = random_expr(&mut rng, 3);
        let with = eval(
            &set,
            &Expr::and([a.clone(), Expr::not_weighted(0.0, b)]),
            &x,
        );
        let without = eval(&set, &a, &x);
        assert_close(&format!("seed {seed}"), &with.0, &without.0, 1e-14);
        for (r, s) in with.1.iter().zip(&without.1) {
            assert_close(&format!("seed {seed}"), r, s, 1e-14);
        }
    }
}

#[test]
fn weights_scale_energies_and_gradients() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(5000 + seed);
        let x = random_x(&mut rng, BATCH);
        let a = random_expr(&mut rng, 3);
        let b = random_expr(&mut rng, 2);
        let (w, v, alpha) = (
            rng.random_range(0.1..4.0),
            rng.random_range(0.1..4.0),
            rng.random_range(0.0..2.0),
        );
        let (ea, ga) = eval(&set, &a, &x);
        let (eb, gb) = eval(&set, &b, &x);
        // w*a & v*b & !alpha*b = w E_a + (v - alpha) E_b
        let expr = Expr::and([
            w * a.clone(),
            v * b.clone(),
            Expr::not_weighted(alpha, b.clone()),
        ]);
        let (e, g) = eval(&set, &expr, &x);
        let expected: Vec<f64> = (0..BATCH)
            .map(|i| w * ea[i] + (v - alpha) * eb[i])
            .collect();
        assert_close(&format!("seed {seed}: {expr}"), &e, &expected, 1e-12);
        for i in 0..BATCH {
            let expected: Vec<f64> = (0..DIM)
                .map(|j| w * ga[i][j] + (v - alpha) * gb[i][j])
                .collect();
            assert_close(&format!("seed {seed}: gradient"), &g[i], &expected, 1e-12);
        }
        // A bare NOT is -alpha E.
        let (en, _) = eval(&set, &Expr::not_weighted(alpha, a.clone()), &x);
        let expected: Vec<f64> = ea.iter().map(|e| -alpha * e).collect();
        assert_close(&format!("seed {seed}: bare NOT"), &en, &expected, 1e-12);
    }
}

#[test]
fn nesting_to_depth_six_matches_the_reference_batched_and_unbatched() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(6000 + seed);
        let x = random_x(&mut rng, BATCH);
        let depth = rng.random_range(6..9);
        let expr = random_expr(&mut rng, depth);
        assert_eq!(expr.depth(), depth);
        let (e, g) = eval(&set, &expr, &x);
        let unbatched = set.compose_unbatched(&expr).unwrap();
        let (ue, ug) = unbatched.energy_and_grad(&x).unwrap();
        let (ue, ug) = (values(&ue), rows(&ug));
        for (b, row) in rows(&x).iter().enumerate() {
            let (re, rg) = fixture.reference(&expr, row);
            let what = format!("seed {seed} sample {b}: {expr}");
            assert_close(&what, &[e[b]], &[re], 1e-10);
            assert_close(&what, &g[b], &rg, 1e-10);
            assert_close(&what, &[ue[b]], &[re], 1e-10);
            assert_close(&what, &ug[b], &rg, 1e-10);
        }
        // energy() (the autograd path) agrees with energy_and_grad().
        assert_close(&format!("seed {seed}"), &energy(&set, &expr, &x), &e, 1e-12);
    }
}

/// Central differences of an energy in f64, for a `[B, D]` batch.
fn finite_differences(energy: &dyn Energy, x: &Tensor, eps: f64) -> Vec<Vec<f64>> {
    let base = rows(x);
    let dim = base[0].len();
    let mut grad = vec![vec![0.0; dim]; base.len()];
    for j in 0..dim {
        let shifted = |delta: f64| {
            let moved: Vec<f64> = base
                .iter()
                .flat_map(|r| {
                    r.iter()
                        .enumerate()
                        .map(move |(k, v)| if k == j { v + delta } else { *v })
                })
                .collect();
            let t = Tensor::from_vec(moved, (base.len(), dim), &Device::Cpu).unwrap();
            values(&energy.energy(&t).unwrap())
        };
        let (plus, minus) = (shifted(eps), shifted(-eps));
        for b in 0..base.len() {
            grad[b][j] = (plus[b] - minus[b]) / (2.0 * eps);
        }
    }
    grad
}

#[test]
fn gradients_match_central_finite_differences() {
    for seed in 0..SEEDS {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(7000 + seed);
        let x = random_x(&mut rng, BATCH);
        let depth = rng.random_range(2..7);
        let expr = random_expr(&mut rng, depth);
        let composition = set.compose(&expr).unwrap();
        let (_, g) = composition.energy_and_grad(&x).unwrap();
        let numeric = finite_differences(&composition, &x, 1e-5);
        for (b, (r, n)) in rows(&g).iter().zip(&numeric).enumerate() {
            assert_close(&format!("seed {seed} sample {b}: {expr}"), r, n, 1e-6);
        }
        // And autograd through energy() agrees with finite differences too.
        ebm_ops::gradcheck::assert_gradients(
            &format!("seed {seed}: {expr}"),
            |xs| {
                composition
                    .energy(&xs[0])
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                    .sum_all()
            },
            std::slice::from_ref(&x),
            1e-6,
        );
    }
}

#[test]
fn f32_inputs_give_f32_outputs_close_to_f64() {
    let fixture = Fixture::new(3);
    let set = fixture.concepts();
    let mut rng = seeded_rng(8000);
    for _ in 0..10 {
        let x = random_x(&mut rng, BATCH);
        let expr = random_expr(&mut rng, 5);
        let c = set.compose(&expr).unwrap();
        let (e64, g64) = c.energy_and_grad(&x).unwrap();
        let (e32, g32) = c.energy_and_grad(&x.to_dtype(DType::F32).unwrap()).unwrap();
        assert_eq!((e32.dtype(), g32.dtype()), (DType::F32, DType::F32));
        assert_close(&format!("{expr}"), &values(&e32), &values(&e64), 1e-4);
        for (a, b) in rows(&g32).iter().zip(&rows(&g64)) {
            assert_close(&format!("{expr}"), a, b, 1e-4);
        }
    }
}

#[test]
fn the_generic_algebra_composes_any_energy() {
    let a = Gaussian::isotropic(vec![0.0, 0.0], 1.0).unwrap();
    let b = Gaussian::isotropic(vec![2.0, 0.0], 0.5).unwrap();
    let c = Gaussian::isotropic(vec![0.0, 2.0], 2.0).unwrap();
    let quad = |m: [f64; 2], v: f64, x: [f64; 2]| {
        ((x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2)) / (2.0 * v)
    };
    let t = 0.5;
    // ((a | b)@0.5 & 2*c) & !0.3*a
    let or: BoxedEnergy =
        Box::new(Or::with_temperature(vec![Box::new(a.clone()), Box::new(b)], t).unwrap());
    let and = And::weighted(vec![(1.0, or), (2.0, Box::new(c))]).unwrap();
    let top = And::new(vec![
        Box::new(and),
        Box::new(Not::weighted(0.3, a).unwrap()),
    ])
    .unwrap();
    let x = Tensor::new(&[[0.5f64, -0.5], [1.5, 1.0]], &Device::Cpu).unwrap();
    let (e, g) = top.energy_and_grad(&x).unwrap();
    for (i, row) in rows(&x).iter().enumerate() {
        let p = [row[0], row[1]];
        let (ea, eb, ec) = (
            quad([0.0, 0.0], 1.0, p),
            quad([2.0, 0.0], 0.5, p),
            quad([0.0, 2.0], 2.0, p),
        );
        let or = -t * ((-ea / t).exp() + (-eb / t).exp()).ln();
        let expected = or + 2.0 * ec - 0.3 * ea;
        assert!(
            (values(&e)[i] - expected).abs() < 1e-12,
            "{} vs {expected}",
            values(&e)[i]
        );
    }
    let numeric = finite_differences(&top, &x, 1e-6);
    for (r, n) in rows(&g).iter().zip(&numeric) {
        assert_close("generic algebra gradient", r, n, 1e-6);
    }
}

#[test]
fn the_generic_algebra_checks_its_arguments() {
    let a = || -> BoxedEnergy { Box::new(Gaussian::isotropic(vec![0.0], 1.0).unwrap()) };
    assert!(matches!(
        And::new(vec![]),
        Err(Error::EmptyGroup { what: "AND" })
    ));
    assert!(matches!(
        Or::new(vec![]),
        Err(Error::EmptyGroup { what: "OR" })
    ));
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            And::weighted(vec![(w, a())]),
            Err(Error::InvalidNumber { what: "weight", .. })
        ));
        assert!(matches!(
            Or::with_temperature(vec![a()], w),
            Err(Error::InvalidNumber {
                what: "OR temperature",
                ..
            })
        ));
    }
    assert!(Not::weighted(0.0, a()).is_ok());
    let err = Not::weighted(-0.5, a()).err().unwrap();
    assert_eq!(
        err.to_string(),
        "NOT weight must be a finite number >= 0, got -0.5"
    );
    // Children with different sample shapes (e.g. trained on 32x32 and on 64x64 images).
    let mut set = ConceptSet::new();
    let model = |shape| Quadratic::new(vec![vec![0.0; DIM]], vec![1.0]).with_shape(shape);
    set.add_discrete("small", model(vec![3, 32, 32]), [("on", 0)])
        .unwrap()
        .add_discrete("large", model(vec![3, 64, 64]), [("on", 0)])
        .unwrap();
    let term = |c: &str| -> BoxedEnergy {
        Box::new(
            set.term(&ebm_compose::Term {
                concept: c.into(),
                value: ebm_compose::Value::Named("on".into()),
            })
            .unwrap(),
        )
    };
    let err = Or::new(vec![term("small"), term("small"), term("large")])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "cannot compose energies with different sample shapes: `OR child 0` takes [3, 32, 32], \
         `OR child 2` takes [3, 64, 64]"
    );
}
