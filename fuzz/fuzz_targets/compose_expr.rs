//! Fuzz target `compose_expr`: arbitrary UTF-8 text through `ebm_compose`'s expression parser,
//! without concepts (`Expr::parse`) and against a concept set (`ConceptSet::parse_expr`,
//! `ConceptSet::parse`), then the composed energy evaluated. Nothing may panic; every parse
//! error carries a column inside the input; every accepted expression validates, prints, and
//! parses back from its printed form to the same tree (the documented `Display` contract).
#![no_main]

use candle_core::{Device, Tensor};
use ebm_compose::{ConceptSet, Expr, VectorConditioned};
use ebm_core::{Energy, LabelledEnergy};
use libfuzzer_sys::fuzz_target;

/// E_c(x) = 0.5 (x_0 - c)^2 (the crate docs' example).
struct Colour;
impl LabelledEnergy for Colour {
    fn energy_given(&self, x: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
        let c = labels.to_dtype(x.dtype())?;
        Ok((x.narrow(1, 0, 1)?.squeeze(1)? - c)?
            .sqr()?
            .affine(0.5, 0.0)?)
    }
    fn num_classes(&self) -> usize {
        3
    }
}

/// E(x | p) = 0.5 |x_1 - p|^2, conditioned on a 1-vector.
struct Position;
impl VectorConditioned for Position {
    fn energy_given_vector(&self, x: &Tensor, p: &Tensor) -> ebm_core::Result<Tensor> {
        Ok((x.narrow(1, 1, 1)? - p)?
            .sqr()?
            .squeeze(1)?
            .affine(0.5, 0.0)?)
    }
    fn condition_dim(&self) -> usize {
        1
    }
}

fn check_error(text: &str, e: &ebm_compose::Error) {
    let column = e
        .column()
        .unwrap_or_else(|| panic!("a parse error without a column: {e}"));
    let chars = text.chars().count();
    assert!(
        (1..=chars + 1).contains(&column),
        "column {column} outside 1..={} for {text:?}",
        chars + 1
    );
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let plain = Expr::parse(text);
    match &plain {
        Ok(expr) => {
            expr.validate().expect("a parsed expression validates");
            assert!(expr.depth() >= 1 && !expr.terms().is_empty());
            let printed = expr.to_string();
            let again = Expr::parse(&printed)
                .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?} does not parse: {e}"));
            assert_eq!(&again, expr, "{text:?} printed as {printed:?}");
        }
        Err(e) => check_error(text, e),
    }

    let mut concepts = ConceptSet::new();
    concepts
        .add_discrete("color", Colour, [("red", 0), ("green", 1), ("blue", 2)])
        .unwrap()
        .add_continuous("pos", Position, [("left", [0.25]), ("right", [0.75])])
        .unwrap();
    match concepts.parse_expr(text) {
        Ok(expr) => match &plain {
            Ok(p) => assert_eq!(&expr, p, "{text:?}"),
            Err(e) => panic!("{text:?} parses with concepts but not without: {e}"),
        },
        Err(e) => {
            if plain.is_ok() {
                // Only the concept check can fail where the plain parse succeeded.
                assert!(e.column().is_some(), "{e}");
            }
            check_error(text, &e)
        }
    }
    if let Ok(energy) = concepts.parse(text) {
        let x = Tensor::new(&[[0f32, 0.25], [2.0, 0.5]], &Device::Cpu).unwrap();
        let _ = energy.energy(&x);
        let _ = energy.energy_and_grad(&x);
        let _ = energy.to_string();
        if let Ok(expr) = &plain {
            if let Ok(unbatched) = concepts.compose_unbatched(expr) {
                let _ = unbatched.energy(&x);
            }
        }
    }
});
