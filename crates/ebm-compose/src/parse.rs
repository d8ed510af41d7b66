//! The hand-written lexer and recursive-descent parser of the text syntax (the grammar is in the
//! [crate docs](crate#the-text-syntax)). Every error is an [`Error::Parse`] with the column.

use crate::concept::ConceptSet;
use crate::expr::{Expr, Term, Value};
use crate::{Error, Result};

/// The deepest nesting of parentheses, `!` and weights the parser accepts (it recurses).
pub const MAX_DEPTH: usize = 200;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Number(f64),
    Amp,
    Bar,
    Bang,
    Star,
    At,
    Eq,
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// 1-based column of the first character.
    column: usize,
    text: String,
}

impl Token {
    /// The token quoted for a message, or "end of input".
    fn found(&self) -> String {
        match self.kind {
            Kind::End => "end of input".to_string(),
            _ => format!("`{}`", self.text),
        }
    }
}

fn lex(input: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = input.chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(|c| c.is_ascii_digit());
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            '&' => Some(Kind::Amp),
            '|' => Some(Kind::Bar),
            '!' => Some(Kind::Bang),
            '*' => Some(Kind::Star),
            '@' => Some(Kind::At),
            '=' => Some(Kind::Eq),
            '(' => Some(Kind::LParen),
            ')' => Some(Kind::RParen),
            ',' => Some(Kind::Comma),
            _ => None,
        };
        let kind = if let Some(kind) = single {
            i += 1;
            kind
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Kind::Ident(chars[start..i].iter().collect())
        } else if let Some(end) = number_end(&chars, i, &digit_at) {
            i = end;
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(v) => Kind::Number(v),
                Err(_) => {
                    return Err(Error::at(
                        input,
                        start + 1,
                        Error::Unexpected {
                            expected: "a number".into(),
                            found: format!("`{text}`"),
                        },
                    ))
                }
            }
        } else {
            return Err(Error::at(
                input,
                start + 1,
                Error::Unexpected {
                    expected: "a name, a number or one of & | ! * @ = ( ) ,".into(),
                    found: format!("`{c}`"),
                },
            ));
        };
        tokens.push(Token {
            kind,
            column: start + 1,
            text: chars[start..i].iter().collect(),
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        column: chars.len() + 1,
        text: String::new(),
    });
    Ok(tokens)
}

/// The end of a number starting at `i` (`[+-]? (digits [. digits?] | . digits) ([eE] [+-]?
/// digits)?`), or `None` if no number starts there.
fn number_end(chars: &[char], mut i: usize, digit_at: &dyn Fn(usize) -> bool) -> Option<usize> {
    if matches!(chars.get(i), Some('+' | '-')) {
        i += 1;
    }
    let starts = digit_at(i) || (chars.get(i) == Some(&'.') && digit_at(i + 1));
    if !starts {
        return None;
    }
    while digit_at(i) {
        i += 1;
    }
    if chars.get(i) == Some(&'.') {
        i += 1;
        while digit_at(i) {
            i += 1;
        }
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if digit_at(j) {
            i = j;
            while digit_at(i) {
                i += 1;
            }
        }
    }
    Some(i)
}

struct Parser<'a, 's, 'm> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    set: Option<&'s ConceptSet<'m>>,
    depth: usize,
}

/// Parses `input`; with a set, every term's concept and value are checked against it.
pub(crate) fn parse(input: &str, set: Option<&ConceptSet<'_>>) -> Result<Expr> {
    let tokens = lex(input)?;
    let mut parser = Parser {
        input,
        tokens,
        pos: 0,
        set,
        depth: 0,
    };
    if parser.peek().kind == Kind::End {
        return Err(Error::at(input, 1, Error::EmptyInput));
    }
    let (expr, _) = parser.or()?;
    let next = parser.peek().clone();
    match next.kind {
        Kind::End => Ok(expr),
        Kind::RParen => Err(parser.error(
            &next,
            Error::UnbalancedParenthesis {
                problem: "`)` has no matching `(`".into(),
            },
        )),
        _ => Err(parser.error(
            &next,
            Error::TrailingInput {
                found: next.found(),
            },
        )),
    }
}

impl Parser<'_, '_, '_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn peek_kind_at(&self, offset: usize) -> &Kind {
        let i = (self.pos + offset).min(self.tokens.len() - 1);
        &self.tokens[i].kind
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn error(&self, at: &Token, problem: Error) -> Error {
        Error::at(self.input, at.column, problem)
    }

    fn unexpected(&self, expected: &str) -> Error {
        let next = self.peek();
        self.error(
            next,
            Error::Unexpected {
                expected: expected.to_string(),
                found: next.found(),
            },
        )
    }

    /// `or = and { "|" and }`; also says whether this level built an OR (for `@T`).
    fn or(&mut self) -> Result<(Expr, bool)> {
        let first = self.and()?;
        if self.peek().kind != Kind::Bar {
            return Ok((first, false));
        }
        let mut children = vec![first];
        while self.peek().kind == Kind::Bar {
            self.bump();
            children.push(self.and()?);
        }
        Ok((Expr::or(children), true))
    }

    /// `and = unary { "&" unary }`.
    fn and(&mut self) -> Result<Expr> {
        let first = self.unary()?;
        if self.peek().kind != Kind::Amp {
            return Ok(first);
        }
        let mut children = vec![first];
        while self.peek().kind == Kind::Amp {
            self.bump();
            children.push(self.unary()?);
        }
        Ok(Expr::And(children))
    }

    /// `unary = "!" [number "*"] unary | number "*" unary | primary`.
    fn unary(&mut self) -> Result<Expr> {
        if self.depth >= MAX_DEPTH {
            let next = self.peek().clone();
            return Err(self.error(&next, Error::TooDeep { limit: MAX_DEPTH }));
        }
        self.depth += 1;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr> {
        match self.peek().kind.clone() {
            Kind::Bang => {
                self.bump();
                let mut alpha = 1.0;
                if let (Kind::Number(value), Kind::Star) = (&self.peek().kind, self.peek_kind_at(1))
                {
                    let (value, token) = (*value, self.peek().clone());
                    crate::algebra::check_alpha(value).map_err(|e| self.error(&token, e))?;
                    alpha = value;
                    self.bump();
                    self.bump();
                }
                Ok(Expr::not_weighted(alpha, self.unary()?))
            }
            Kind::Number(weight) => {
                let token = self.bump();
                crate::algebra::check_weight(weight).map_err(|e| self.error(&token, e))?;
                if self.peek().kind != Kind::Star {
                    return Err(self.unexpected(&format!("`*` after the weight `{}`", token.text)));
                }
                self.bump();
                Ok(Expr::scaled(weight, self.unary()?))
            }
            _ => self.primary(),
        }
    }

    /// `primary = term | "(" expr ")" ["@" number]`.
    fn primary(&mut self) -> Result<Expr> {
        let next = self.peek().clone();
        match next.kind {
            Kind::Ident(_) => self.term(),
            Kind::LParen => {
                self.bump();
                let (mut expr, is_or) = self.or()?;
                match self.peek().kind {
                    Kind::RParen => {
                        self.bump();
                    }
                    Kind::End => return Err(self.unclosed(&next)),
                    _ => return Err(self.unexpected("`)`, `&` or `|`")),
                }
                if self.peek().kind == Kind::At {
                    let at = self.bump();
                    if !is_or {
                        return Err(self.error(&at, Error::TemperatureWithoutOr));
                    }
                    let Kind::Number(t) = self.peek().kind else {
                        return Err(self.unexpected("a temperature (a number > 0) after `@`"));
                    };
                    let token = self.bump();
                    crate::algebra::check_temperature(t).map_err(|e| self.error(&token, e))?;
                    if let Expr::Or { temperature, .. } = &mut expr {
                        *temperature = t;
                    }
                }
                Ok(expr)
            }
            Kind::RParen => Err(self.error(
                &next,
                Error::UnbalancedParenthesis {
                    problem: "`)` has no matching `(`".into(),
                },
            )),
            _ => Err(self.unexpected("a term (concept=value), `!`, a weight or `(`")),
        }
    }

    fn unclosed(&self, open: &Token) -> Error {
        self.error(
            open,
            Error::UnbalancedParenthesis {
                problem: format!("`(` at column {} is never closed", open.column),
            },
        )
    }

    /// `term = ident "=" value`, `value = ident | number | "(" number {"," number} ")"`.
    fn term(&mut self) -> Result<Expr> {
        let concept_token = self.bump();
        let Kind::Ident(concept) = concept_token.kind.clone() else {
            return Err(self.unexpected("a concept name"));
        };
        if self.peek().kind != Kind::Eq {
            return Err(self.unexpected(&format!("`=` after the concept name `{concept}`")));
        }
        self.bump();
        let value_token = self.peek().clone();
        let value = match value_token.kind.clone() {
            Kind::Ident(name) => {
                self.bump();
                Value::Named(name)
            }
            Kind::Number(v) => {
                self.bump();
                Value::Vector(vec![v])
            }
            Kind::LParen => {
                self.bump();
                let mut vector = Vec::new();
                loop {
                    match self.peek().kind {
                        Kind::Number(v) => {
                            self.bump();
                            vector.push(v);
                        }
                        Kind::End => return Err(self.unclosed(&value_token)),
                        _ => return Err(self.unexpected("a number")),
                    }
                    match self.peek().kind {
                        Kind::Comma => {
                            self.bump();
                        }
                        Kind::RParen => {
                            self.bump();
                            break;
                        }
                        Kind::End => return Err(self.unclosed(&value_token)),
                        _ => return Err(self.unexpected("`,` or `)`")),
                    }
                }
                Value::Vector(vector)
            }
            _ => {
                return Err(self.unexpected(&format!(
                    "a value for `{concept}` (a name, a number or a vector like (0.3, 0.7))"
                )))
            }
        };
        let term = Term { concept, value };
        if let Value::Vector(v) = &term.value {
            if let Some(bad) = v.iter().find(|c| !c.is_finite()) {
                let problem = Error::InvalidNumber {
                    what: "vector component",
                    requirement: "finite",
                    value: *bad,
                };
                return Err(self.error(&value_token, problem));
            }
        }
        if let Some(set) = self.set {
            if let Err(problem) = set.resolve(&term) {
                let at = match problem {
                    Error::UnknownConcept { .. } => &concept_token,
                    _ => &value_token,
                };
                return Err(self.error(at, problem));
            }
        }
        Ok(Expr::Term(term))
    }
}
