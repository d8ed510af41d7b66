//! The text syntax: round trips through `Display`, precedence, every error with its column, and
//! no panic on thousands of random strings.

mod common;

use common::*;
use ebm_compose::{ConceptSet, Error, Expr, MAX_DEPTH};
use ebm_core::seeded_rng;
use rand::Rng as _;

fn t(concept: &str, value: &str) -> Expr {
    Expr::term(concept, value)
}

#[test]
fn display_round_trips_random_expressions() {
    let mut rng = seeded_rng(0);
    for i in 0..500 {
        let depth = rng.random_range(1..8);
        let expr = random_expr(&mut rng, depth);
        let text = expr.to_string();
        let parsed = Expr::parse(&text).unwrap_or_else(|e| panic!("case {i}: {text}\n{e}"));
        assert_eq!(parsed, expr, "case {i}: {text}");
        assert_eq!(parsed.to_string(), text, "case {i}");
    }
}

#[test]
fn display_prints_the_fewest_parentheses() {
    let a = || t("shape", "cube");
    let b = || t("color", "red");
    let c = || Expr::term_vector("pos", [0.3, -0.7]);
    let cases = [
        (a() & b() & c(), "shape=cube & color=red & pos=(0.3, -0.7)"),
        (
            Expr::and([a() & b(), c()]),
            "(shape=cube & color=red) & pos=(0.3, -0.7)",
        ),
        (a() & b() | c(), "shape=cube & color=red | pos=(0.3, -0.7)"),
        (
            a() & (b() | c()),
            "shape=cube & (color=red | pos=(0.3, -0.7))",
        ),
        (
            Expr::or_with_temperature([a(), b()], 0.1) & c(),
            "(shape=cube | color=red)@0.1 & pos=(0.3, -0.7)",
        ),
        (
            Expr::or([Expr::or([a(), b()]), c()]),
            "(shape=cube | color=red) | pos=(0.3, -0.7)",
        ),
        (!a() & b(), "!shape=cube & color=red"),
        (!(a() & b()), "!(shape=cube & color=red)"),
        (Expr::not_weighted(0.5, a()), "!0.5*shape=cube"),
        (2.5 * a(), "2.5*shape=cube"),
        (2.0 * !a(), "2*!shape=cube"),
        (!(2.0 * a()), "!(2*shape=cube)"),
        (Expr::not_weighted(0.5, 2.0 * a()), "!0.5*2*shape=cube"),
        (
            3.0 * Expr::or_with_temperature([a(), b()], 2.0),
            "3*(shape=cube | color=red)@2",
        ),
        (Expr::and([a()]), "shape=cube"),
        (
            Expr::or_with_temperature([a()], 0.5) & b(),
            "shape=cube & color=red",
        ),
    ];
    for (expr, text) in cases {
        assert_eq!(expr.to_string(), text);
        let parsed = Expr::parse(text).unwrap();
        // One-child groups print as their child, so compare printed forms.
        assert_eq!(parsed.to_string(), text);
    }
}

#[test]
fn precedence_not_then_and_then_or() {
    let (a, b, c) = (|| t("a", "x"), || t("b", "y"), || t("c", "z"));
    let cases = [
        ("!a=x & b=y | c=z", Expr::or([Expr::and([!a(), b()]), c()])),
        ("a=x | b=y & c=z", Expr::or([a(), Expr::and([b(), c()])])),
        ("a=x & (b=y | c=z)", Expr::and([a(), Expr::or([b(), c()])])),
        ("!(a=x | b=y)", !Expr::or([a(), b()])),
        ("2*a=x & b=y", Expr::and([2.0 * a(), b()])),
        ("2 * (a=x & b=y)", 2.0 * Expr::and([a(), b()])),
        (
            "!0.5*a=x & b=y",
            Expr::and([Expr::not_weighted(0.5, a()), b()]),
        ),
        ("!!a=x", !!a()),
        ("a=x | b=y | c=z", Expr::or([a(), b(), c()])),
        (
            "(a=x | b=y)@0.1 | c=z",
            Expr::or([Expr::or_with_temperature([a(), b()], 0.1), c()]),
        ),
        ("  a = x&b=y  ", Expr::and([a(), b()])),
        ("((a=x))", a()),
        (
            "a=(1, -2.5e-1, .5, 3.)",
            Expr::term_vector("a", [1.0, -0.25, 0.5, 3.0]),
        ),
        ("a=0.5", Expr::term_vector("a", [0.5])),
        ("1e-1*a=x", 0.1 * a()),
    ];
    for (text, expected) in cases {
        assert_eq!(Expr::parse(text).unwrap(), expected, "{text}");
    }
}

/// Parses `text` against the fixture's concepts and returns the error's problem and column.
fn error(set: &ConceptSet<'_>, text: &str) -> (Error, usize) {
    match set.parse(text) {
        Ok(c) => panic!("`{text}` parsed as {c}"),
        Err(Error::Parse {
            column, problem, ..
        }) => (*problem, column),
        Err(other) => panic!("`{text}`: not a parse error: {other}"),
    }
}

#[test]
fn every_error_names_the_problem_and_the_column() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();

    let (e, col) = error(&set, "shape=cube & colour=red");
    assert_eq!(col, 14);
    assert_eq!(
        e.to_string(),
        "unknown concept `colour` (known concepts: shape, color, pos)"
    );
    let (e, col) = error(&set, "shape=cube & color=purple");
    assert_eq!(col, 20);
    assert_eq!(
        e.to_string(),
        "unknown value `purple` for concept `color` (its values: red, green, blue, yellow)"
    );
    let (e, col) = error(&set, "shape=cube & (color=red | color=blue");
    assert_eq!(col, 14);
    assert!(matches!(e, Error::UnbalancedParenthesis { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "unbalanced parenthesis: `(` at column 14 is never closed"
    );
    let (e, col) = error(&set, "shape=cube & color=red)");
    assert_eq!(col, 23);
    assert_eq!(
        e.to_string(),
        "unbalanced parenthesis: `)` has no matching `(`"
    );
    let (e, col) = error(&set, "pos=(0.3, 0.7");
    assert_eq!(
        (col, matches!(e, Error::UnbalancedParenthesis { .. })),
        (5, true),
        "{e}"
    );
    let (e, col) = error(&set, ")");
    assert_eq!(
        (col, matches!(e, Error::UnbalancedParenthesis { .. })),
        (1, true),
        "{e}"
    );

    for (text, column, what, value) in [
        ("0*color=red", 1, "weight", "0"),
        ("shape=cube & -2*color=red", 14, "weight", "-2"),
        ("1e999*color=red", 1, "weight", "inf"),
        ("(color=red | color=blue)@0", 26, "OR temperature", "0"),
        (
            "(color=red | color=blue)@-0.5",
            26,
            "OR temperature",
            "-0.5",
        ),
        ("!-1*color=red", 2, "NOT weight", "-1"),
        ("pos=(1e999, 0)", 5, "vector component", "inf"),
    ] {
        let (e, col) = error(&set, text);
        assert_eq!(col, column, "{text}");
        match &e {
            Error::InvalidNumber {
                what: w, value: v, ..
            } => {
                assert_eq!((*w, v.to_string()), (what, value.to_string()), "{text}")
            }
            other => panic!("{text}: {other}"),
        }
    }
    let (e, _) = error(&set, "0*color=red");
    assert_eq!(e.to_string(), "weight must be a finite number > 0, got 0");

    for text in ["", "   \t "] {
        let (e, col) = error(&set, text);
        assert_eq!(
            (col, matches!(e, Error::EmptyInput)),
            (1, true),
            "{text:?}: {e}"
        );
    }
    let (e, col) = error(&set, "color=red shape=cube");
    assert_eq!(col, 11);
    assert_eq!(
        e.to_string(),
        "trailing input `shape` after a complete expression"
    );

    // The remaining syntax errors.
    for (text, column, message) in [
        ("color red", 7, "expected `=` after the concept name `color`, found `red`"),
        ("color=", 7, "expected a value for `color` (a name, a number or a vector like (0.3, 0.7)), found end of input"),
        ("color=red &", 12, "expected a term (concept=value), `!`, a weight or `(`, found end of input"),
        ("& color=red", 1, "expected a term (concept=value), `!`, a weight or `(`, found `&`"),
        ("2 color=red", 3, "expected `*` after the weight `2`, found `color`"),
        ("(color=red shape=cube)", 12, "expected `)`, `&` or `|`, found `shape`"),
        ("color=red # shape=cube", 11, "expected a name, a number or one of & | ! * @ = ( ) ,, found `#`"),
        ("pos=(0.3; 0.7)", 9, "expected a name, a number or one of & | ! * @ = ( ) ,, found `;`"),
        ("pos=(0.3 0.7)", 10, "expected `,` or `)`, found `0.7`"),
        ("pos=()", 6, "expected a number, found `)`"),
        ("(color=red | color=blue)@", 26, "expected a temperature (a number > 0) after `@`, found end of input"),
        ("(color=red)@0.5", 12, "a temperature `@T` applies only to a parenthesised OR, like `(a=x | a=y)@0.5`"),
        ("pos=(0.3)", 5, "concept `pos` is conditioned on 2 number(s), got 1"),
        ("color=(1, 2)", 7, "concept `color` is discrete: its values are names (red, green, blue, yellow), not numbers"),
    ] {
        let (e, col) = error(&set, text);
        assert_eq!((col, e.to_string()), (column, message.to_string()), "{text}");
    }
}

#[test]
fn the_error_message_shows_the_input_with_a_caret() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let err = set.parse("shape=cube & colour=red").unwrap_err();
    assert_eq!(err.column(), Some(14));
    assert!(matches!(err.problem(), Error::UnknownConcept { name, .. } if name == "colour"));
    assert_eq!(
        err.to_string(),
        "column 14: unknown concept `colour` (known concepts: shape, color, pos)\n\
         \x20 shape=cube & colour=red\n\
         \x20              ^"
    );
    // Tabs are kept in the caret line so that it lines up.
    let err = set.parse("\tcolor=red\t| bad=x").unwrap_err();
    assert_eq!(err.column(), Some(14));
    assert!(
        err.to_string()
            .ends_with("\n  \tcolor=red\t| bad=x\n  \t         \t  ^"),
        "{err}"
    );
}

#[test]
fn syntax_only_parsing_does_not_check_names() {
    let expr = Expr::parse("anything=goes & !0.5*x=(1, 2)").unwrap();
    assert_eq!(expr.terms().len(), 2);
    let fixture = Fixture::new(0);
    let err = fixture.concepts().compose(&expr).unwrap_err();
    // Programmatic expressions have no column.
    assert_eq!(err.column(), None);
    assert!(matches!(err, Error::UnknownConcept { .. }), "{err}");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let n = 100_000;
    for text in [
        format!("{}a=x{}", "(".repeat(n), ")".repeat(n)),
        format!("{}a=x", "!".repeat(n)),
        format!("{}a=x", "2*".repeat(n)),
    ] {
        let err = Expr::parse(&text).unwrap_err();
        assert!(
            matches!(err.problem(), Error::TooDeep { limit } if *limit == MAX_DEPTH),
            "{err}"
        );
    }
    // Just under the limit is fine.
    let d = MAX_DEPTH - 1;
    let text = format!("{}a=x{}", "(".repeat(d), ")".repeat(d));
    assert_eq!(Expr::parse(&text).unwrap(), t("a", "x"));
}

/// Pieces of random strings: the grammar's characters, names, numbers, a few whole terms (so
/// that some strings are valid) and characters outside the grammar.
const ALPHABET: &[&str] = &[
    "shape",
    "color",
    "pos",
    "size",
    "cube",
    "red",
    "blue",
    "left",
    "x",
    "=",
    "=",
    "&",
    "|",
    "!",
    "*",
    "@",
    "(",
    ")",
    "(",
    ")",
    ",",
    " ",
    "0",
    "1",
    "0.5",
    "-",
    ".",
    "e",
    "2.5",
    "-3",
    "1e9",
    "é",
    "#",
    "\t",
    "color=red",
    "shape=cube",
    "pos=left",
    "pos=(0.1, 0.2)",
    " & ",
    " | ",
];

#[test]
fn random_strings_never_panic() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let mut rng = seeded_rng(42);
    let mut parsed = 0;
    for i in 0..5000 {
        let len = rng.random_range(0..12);
        let text: String = (0..len)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
            .collect();
        match set.parse(&text) {
            Ok(composition) => {
                parsed += 1;
                // A valid expression round-trips and evaluates.
                let expr = composition.expr().clone();
                assert_eq!(
                    Expr::parse(&expr.to_string()).unwrap().to_string(),
                    expr.to_string()
                );
                let x = random_x(&mut rng, 2);
                use ebm_core::Energy;
                composition.energy_and_grad(&x).unwrap();
            }
            Err(err) => {
                let column = err
                    .column()
                    .unwrap_or_else(|| panic!("case {i} {text:?}: {err}"));
                assert!(
                    column >= 1 && column <= text.chars().count() + 1,
                    "case {i} {text:?}: {err}"
                );
                assert!(!err.to_string().is_empty());
            }
        }
    }
    // The alphabet is rich enough that some strings are valid.
    assert!(parsed >= 20, "only {parsed} random strings parsed");
}

#[test]
fn random_mutations_of_valid_expressions_never_panic() {
    let fixture = Fixture::new(0);
    let set = fixture.concepts();
    let mut rng = seeded_rng(7);
    for _ in 0..2000 {
        let depth = rng.random_range(1..6);
        let mut chars: Vec<char> = random_expr(&mut rng, depth).to_string().chars().collect();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..chars.len());
            match rng.random_range(0..3) {
                0 => {
                    chars.remove(i);
                }
                1 => chars.insert(
                    i,
                    ALPHABET[rng.random_range(0..ALPHABET.len())]
                        .chars()
                        .next()
                        .unwrap(),
                ),
                _ => {
                    let j = rng.random_range(0..chars.len());
                    chars.swap(i, j)
                }
            }
            if chars.is_empty() {
                break;
            }
        }
        let text: String = chars.into_iter().collect();
        if let Err(err) = set.parse(&text) {
            let column = err.column().expect("parse errors carry a column");
            assert!(column <= text.chars().count() + 1, "{text:?}: {err}");
        }
    }
}
