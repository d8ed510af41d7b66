//! The concept registry: registration checks, named and literal values, sample shapes that must
//! agree, and checks of expressions built in code.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use ebm_compose::{ConceptSet, Error, Expr, Term, Value};
use ebm_core::{seeded_rng, Energy};

fn quadratic(classes: usize) -> Quadratic {
    Quadratic::new(vec![vec![0.0; DIM]; classes], vec![1.0; classes])
}

#[test]
fn registration_rejects_bad_names_values_and_classes() {
    let mut set = ConceptSet::new();
    set.add_discrete("color", quadratic(2), [("red", 0), ("blue", 1)])
        .unwrap();
    let problems = [
        (
            set.add_discrete("color", quadratic(2), [("red", 0)]).err(),
            "concept `color`: already registered",
        ),
        (
            set.add_discrete("my color", quadratic(2), [("red", 0)])
                .err(),
            "concept `my color`: a concept name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            set.add_discrete("shape", quadratic(2), [("cube", 0), ("ball", 2)])
                .err(),
            "concept `shape`: value `ball` is class 2, but the model has 2 classes",
        ),
        (
            set.add_discrete("shape", quadratic(2), [("cube", 0), ("cube", 1)])
                .err(),
            "concept `shape`: value `cube` is named twice",
        ),
        (
            set.add_discrete("shape", quadratic(2), [("3d", 0)]).err(),
            "concept `shape`: value name `3d` is not an identifier ([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            set.add_continuous("pos", Pull::new(2), [("left", vec![0.25])])
                .err(),
            "concept `pos` is conditioned on 2 number(s), got 1",
        ),
        (
            set.add_continuous("pos", Pull::new(2), [("left", vec![0.25, f64::NAN])])
                .err(),
            "concept `pos`: value `left` is not finite: [0.25, NaN]",
        ),
        (
            set.add_continuous("pos", Pull::new(0), [("left", vec![])])
                .err(),
            "concept `pos`: the model's condition_dim is 0",
        ),
    ];
    for (err, message) in problems {
        assert_eq!(err.expect(message).to_string(), message);
    }
    // Failed registrations leave the set as it was.
    assert_eq!(set.concept_names(), vec!["color"]);
    assert_eq!(set.value_names("color"), Some(vec!["red", "blue"]));
    assert_eq!(set.value_names("shape"), None);
}

#[test]
fn named_and_literal_vectors_are_the_same_condition() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let x = random_x(&mut seeded_rng(0), 4);
    let named = set.parse("pos=left").unwrap().energy_and_grad(&x).unwrap();
    let literal = set
        .parse("pos=(0.25, 0.5)")
        .unwrap()
        .energy_and_grad(&x)
        .unwrap();
    assert_eq!(values(&named.0), values(&literal.0));
    assert_eq!(rows(&named.1), rows(&literal.1));
    // ... and identical terms are evaluated once.
    let both = set.parse("pos=left & pos=(0.25, 0.5)").unwrap();
    assert_eq!(both.distinct_terms(), 1);
    let e = values(&both.energy(&x).unwrap());
    let expected: Vec<f64> = values(&named.0).iter().map(|v| 2.0 * v).collect();
    assert_close("twice", &e, &expected, 1e-12);
}

#[test]
fn concepts_with_different_sample_shapes_cannot_be_composed() {
    let mut set = ConceptSet::new();
    set.add_discrete(
        "shape",
        quadratic(2).with_shape(vec![3, 32, 32]),
        [("cube", 0), ("ball", 1)],
    )
    .unwrap()
    .add_discrete(
        "color",
        quadratic(2).with_shape(vec![3, 64, 64]),
        [("red", 0)],
    )
    .unwrap()
    .add_discrete("any", quadratic(1), [("thing", 0)])
    .unwrap();
    let err = set
        .parse("any=thing & shape=cube & (shape=ball | color=red)")
        .unwrap_err();
    assert!(matches!(err, Error::SampleShapeMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "cannot compose energies with different sample shapes: `shape` takes [3, 32, 32], \
         `color` takes [3, 64, 64]"
    );
    // A model without a declared shape composes with either; the composition reports the shape.
    let ok = set.parse("any=thing & shape=cube & !shape=ball").unwrap();
    assert_eq!(ok.sample_shape(), Some(vec![3, 32, 32]));
    assert_eq!(set.parse("any=thing").unwrap().sample_shape(), None);
}

#[test]
fn expressions_built_in_code_are_checked() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let red = || Expr::term("color", "red");
    let cases: Vec<(Expr, &str)> = vec![
        (Expr::and([]), "AND has no terms"),
        (Expr::or([]), "OR has no terms"),
        (0.0 * red(), "weight must be a finite number > 0, got 0"),
        (
            f64::NAN * red(),
            "weight must be a finite number > 0, got NaN",
        ),
        (
            Expr::not_weighted(-1.0, red()),
            "NOT weight must be a finite number >= 0, got -1",
        ),
        (
            Expr::or_with_temperature([red(), red()], 0.0),
            "OR temperature must be a finite number > 0, got 0",
        ),
        (
            Expr::term_vector("pos", [f64::INFINITY, 0.0]),
            "vector component must be finite, got inf",
        ),
        (
            red() & Expr::term("size", "big"),
            "unknown concept `size` (known concepts: shape, color, pos)",
        ),
        (
            Expr::term("pos", "middle"),
            "unknown value `middle` for concept `pos` (its values: left, right, top)",
        ),
    ];
    for (expr, message) in cases {
        let err = set.compose(&expr).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.column(), None);
        assert!(set.compose_unbatched(&expr).is_err(), "{message}");
    }
}

#[test]
fn a_term_is_an_energy_of_its_own() {
    let fixture = Fixture::new(5);
    let set = fixture.concepts();
    let x = random_x(&mut seeded_rng(5), 3);
    let term = set
        .term(&Term {
            concept: "color".into(),
            value: Value::Named("blue".into()),
        })
        .unwrap();
    let (e, g) = term.energy_and_grad(&x).unwrap();
    for (b, row) in rows(&x).iter().enumerate() {
        let (re, rg) = fixture.color.reference(2, row);
        assert_close("term", &[values(&e)[b]], &[re], 1e-12);
        assert_close("term", &rows(&g)[b], &rg, 1e-12);
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let composition = set.parse("color=red & !color=blue").unwrap();
    let scalar = Tensor::new(1f64, &Device::Cpu).unwrap();
    let err = composition.energy(&scalar).unwrap_err();
    assert!(err.to_string().contains("composition input"), "{err}");
    let empty = Tensor::zeros((0, DIM), candle_core::DType::F64, &Device::Cpu).unwrap();
    assert!(composition.energy_and_grad(&empty).is_err());
    // The wrong width is the model's error, passed through.
    let wide = Tensor::zeros((2, DIM + 1), candle_core::DType::F64, &Device::Cpu).unwrap();
    assert!(composition.energy_and_grad(&wide).is_err());
}

/// Guidance by the concept's own classifier: the energy of `p(x | v) p(v | x)^gamma`, computed
/// here in f64 from the fixture's per-class energies and their softmax.
#[test]
fn guided_terms_are_the_energy_of_the_likelihood_times_the_classifier() {
    let fixture = Fixture::new(11);
    let set = fixture.concepts();
    let x = random_x(&mut seeded_rng(11), 5);
    let gamma = 1.5;
    let expr = set.parse_expr("shape=sphere & pos=left").unwrap();
    let guided = set.compose(&set.guided(&expr, gamma).unwrap()).unwrap();
    let (e, g) = guided.energy_and_grad(&x).unwrap();
    for (b, row) in rows(&x).iter().enumerate() {
        let per_class: Vec<(f64, Vec<f64>)> = (0..SHAPES.len())
            .map(|k| fixture.shape.reference(k, row))
            .collect();
        let (e_pos, g_pos) = fixture.pos.reference(&POSITIONS[0].1, row);
        // -log p(v | x) = E_v + log sum_k exp(-E_k); its gradient dE_v - sum_k p_k dE_k.
        let m = per_class.iter().map(|c| c.0).fold(f64::INFINITY, f64::min);
        let z: f64 = per_class.iter().map(|c| (m - c.0).exp()).sum();
        let p: Vec<f64> = per_class.iter().map(|c| (m - c.0).exp() / z).collect();
        let nll = per_class[1].0 - m + z.ln();
        let expected = per_class[1].0 + gamma * nll + e_pos;
        let expected_grad: Vec<f64> = (0..DIM)
            .map(|j| {
                let mean: f64 = per_class.iter().zip(&p).map(|(c, pk)| pk * c.1[j]).sum();
                per_class[1].1[j] + gamma * (per_class[1].1[j] - mean) + g_pos[j]
            })
            .collect();
        assert_close("guided energy", &[values(&e)[b]], &[expected], 1e-10);
        assert_close("guided gradient", &rows(&g)[b], &expected_grad, 1e-10);
    }
    // gamma = 0 is the expression itself; continuous terms are never guided; a bad gamma or
    // an unknown value is an error.
    assert_eq!(set.guided(&expr, 0.0).unwrap(), expr);
    let pos = Expr::term("pos", "left");
    assert_eq!(set.guided(&pos, 3.0).unwrap(), pos);
    assert_eq!(
        set.guided(&expr, -1.0).unwrap_err().to_string(),
        "guidance must be a finite number >= 0, got -1"
    );
    assert!(set.guided(&expr, f64::NAN).is_err());
    let err = set.guided(&Expr::term("shape", "cone"), 1.0).unwrap_err();
    assert!(err.to_string().contains("unknown value `cone`"), "{err}");
}
