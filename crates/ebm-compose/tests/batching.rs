//! Terms that share one conditional network are evaluated in one batched call: checked with
//! models that count their calls and record their batch sizes.

mod common;

use std::sync::Arc;

use common::*;
use ebm_compose::ConceptSet;
use ebm_core::{seeded_rng, Energy, LabelledEnergy};
use rand::Rng as _;

const BATCH: usize = 4;

#[test]
fn two_terms_of_one_network_are_one_call() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let x = random_x(&mut seeded_rng(0), BATCH);
    let composition = set.parse("color=red & !color=blue").unwrap();
    assert_eq!(composition.model_calls(), 1);

    fixture.reset_calls();
    let (e, g) = composition.energy_and_grad(&x).unwrap();
    assert_eq!(fixture.color.calls.get(), 1);
    assert_eq!(fixture.color.calls.batches(), vec![2 * BATCH]);

    fixture.reset_calls();
    let e_autograd = composition.energy(&x).unwrap();
    assert_eq!(fixture.color.calls.get(), 1);
    assert_eq!(fixture.color.calls.batches(), vec![2 * BATCH]);

    // The split is right: E_red - E_blue, sample by sample.
    for (b, row) in rows(&x).iter().enumerate() {
        let (er, gr) = fixture.color.reference(0, row);
        let (eb, gb) = fixture.color.reference(2, row);
        assert_close("energy", &[values(&e)[b]], &[er - eb], 1e-12);
        assert_close("energy()", &[values(&e_autograd)[b]], &[er - eb], 1e-12);
        let expected: Vec<f64> = gr.iter().zip(&gb).map(|(a, b)| a - b).collect();
        assert_close("gradient", &rows(&g)[b], &expected, 1e-12);
    }

    // Unbatched, the same energy costs one call per term.
    fixture.reset_calls();
    let unbatched = set
        .compose_unbatched(composition.expr())
        .unwrap()
        .energy_and_grad(&x)
        .unwrap();
    assert_eq!(fixture.color.calls.get(), 2);
    assert_eq!(values(&unbatched.0), values(&e));
}

#[test]
fn each_model_is_called_once_however_many_terms_use_it() {
    let fixture = Fixture::new(1);
    let set = fixture.concepts();
    let x = random_x(&mut seeded_rng(1), BATCH);
    let text = "shape=cube & (color=red | color=blue | color=green)@0.5 & !0.5*color=red \
                & pos=left & !pos=(0.3, 0.7) & 2*(pos=left | shape=cube)";
    let composition = set.parse(text).unwrap();
    // Distinct terms: shape=cube; red, blue, green; left, (0.3, 0.7).
    assert_eq!(composition.distinct_terms(), 6);
    assert_eq!(composition.model_calls(), 3);
    fixture.reset_calls();
    let (e, g) = composition.energy_and_grad(&x).unwrap();
    assert_eq!(
        (
            fixture.shape.calls.get(),
            fixture.color.calls.get(),
            fixture.pos.calls.get()
        ),
        (1, 1, 1)
    );
    assert_eq!(fixture.shape.calls.batches(), vec![BATCH]);
    assert_eq!(fixture.color.calls.batches(), vec![3 * BATCH]);
    assert_eq!(fixture.pos.calls.batches(), vec![2 * BATCH]);
    for (b, row) in rows(&x).iter().enumerate() {
        let (re, rg) = fixture.reference(composition.expr(), row);
        assert_close(&format!("sample {b}"), &[values(&e)[b]], &[re], 1e-12);
        assert_close(&format!("sample {b}"), &rows(&g)[b], &rg, 1e-12);
    }
}

#[test]
fn concepts_registered_with_one_model_share_its_call() {
    // One network conditioned on all eight classes, seen as two concepts of four values.
    let mut rng = seeded_rng(2);
    let model = Arc::new(Quadratic::random(8, &mut rng));
    let shared: Arc<dyn LabelledEnergy> = model.clone();
    let mut set = ConceptSet::new();
    set.add_discrete_shared("color", shared.clone(), [("red", 0), ("blue", 1)])
        .unwrap()
        .add_discrete_shared("material", shared, [("metal", 4), ("rubber", 5)])
        .unwrap();
    let composition = set
        .parse("color=red & !material=rubber | color=blue")
        .unwrap();
    assert_eq!(composition.model_calls(), 1);
    let x = random_x(&mut rng, BATCH);
    let (e, _) = composition.energy_and_grad(&x).unwrap();
    assert_eq!(model.calls.get(), 1);
    assert_eq!(model.calls.batches(), vec![3 * BATCH]);
    for (b, row) in rows(&x).iter().enumerate() {
        let (red, blue, rubber) = (
            model.reference(0, row).0,
            model.reference(1, row).0,
            model.reference(5, row).0,
        );
        let expected = -((-(red - rubber)).exp() + (-blue).exp()).ln();
        assert_close("shared", &[values(&e)[b]], &[expected], 1e-12);
    }
}

#[test]
fn batched_and_unbatched_agree_on_random_compositions() {
    for seed in 0..30 {
        let fixture = Fixture::new(seed);
        let set = fixture.concepts();
        let mut rng = seeded_rng(100 + seed);
        let x = random_x(&mut rng, BATCH);
        let depth = rng.random_range(2..7);
        let expr = random_expr(&mut rng, depth);
        let composition = set.compose(&expr).unwrap();
        fixture.reset_calls();
        let (e, g) = composition.energy_and_grad(&x).unwrap();
        // At most one call per model.
        for calls in [
            fixture.shape.calls.get(),
            fixture.color.calls.get(),
            fixture.pos.calls.get(),
        ] {
            assert!(calls <= 1, "seed {seed}: {calls} calls for {expr}");
        }
        let (ue, ug) = set
            .compose_unbatched(&expr)
            .unwrap()
            .energy_and_grad(&x)
            .unwrap();
        assert_close(
            &format!("seed {seed}: {expr}"),
            &values(&e),
            &values(&ue),
            1e-12,
        );
        for (a, b) in rows(&g).iter().zip(&rows(&ug)) {
            assert_close(&format!("seed {seed}: {expr}"), a, b, 1e-12);
        }
    }
}
