//! `${...}` interpolation in action config strings (spec §4.2): compiled
//! at load into literal pieces and CEL expressions. A string that is
//! exactly `${expr}` keeps the expression's CEL type; otherwise the pieces
//! are joined as text. A string with no `${` costs nothing to evaluate.

use cel_interpreter::{Context, Value};

use super::cel::{self, EvalError, Expr, Needs};

#[derive(Debug)]
enum Piece {
    Lit(String),
    Expr(Expr),
}

/// A config string, possibly with interpolations.
#[derive(Debug)]
pub struct Template {
    /// The text when there is no interpolation.
    literal: Option<String>,
    pieces: Vec<Piece>,
    needs: Needs,
}

impl Template {
    pub fn compile(src: &str) -> Result<Template, String> {
        if !src.contains("${") {
            return Ok(Template::literal(src));
        }
        let mut pieces = Vec::new();
        let mut needs = Needs::NONE;
        let mut rest = src;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Lit(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end =
                closing_brace(after).ok_or_else(|| format!("unterminated ${{...}} in {src:?}"))?;
            let expr = Expr::compile(after[..end].trim())?;
            needs = needs.union(expr.needs());
            pieces.push(Piece::Expr(expr));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_owned()));
        }
        Ok(Template {
            literal: None,
            pieces,
            needs,
        })
    }

    pub fn literal(s: &str) -> Template {
        Template {
            literal: Some(s.to_owned()),
            pieces: Vec::new(),
            needs: Needs::NONE,
        }
    }

    /// The text, when it has no interpolation.
    pub fn as_literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// Evaluates to text, appending to `out`.
    pub fn render_into(&self, scope: &Context<'_>, out: &mut String) -> Result<(), EvalError> {
        if let Some(l) = &self.literal {
            out.push_str(l);
            return Ok(());
        }
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Expr(e) => {
                    let v = e.eval(scope)?;
                    let text = cel::to_text(&v).map_err(|reason| EvalError {
                        expr: e.source().to_owned(),
                        reason,
                    })?;
                    out.push_str(&text);
                }
            }
        }
        Ok(())
    }

    pub fn render(&self, scope: &Context<'_>) -> Result<String, EvalError> {
        let mut s = String::new();
        self.render_into(scope, &mut s)?;
        Ok(s)
    }

    /// Evaluates keeping the CEL type when the string is exactly `${expr}`.
    pub fn value(&self, scope: &Context<'_>) -> Result<Value, EvalError> {
        if let [Piece::Expr(e)] = self.pieces.as_slice() {
            return e.eval(scope);
        }
        self.render(scope).map(cel::string)
    }
}

/// Index of the `}` closing an interpolation, skipping braces inside CEL
/// string literals and nested map literals.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'{' => depth += 1,
                b'}' if depth == 0 => return Some(i),
                b'}' => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn scope() -> Context<'static> {
        let mut v = HashMap::new();
        v.insert(
            "req".to_owned(),
            cel::map([("method", cel::string("GET")), ("n", Value::Int(3))]),
        );
        cel::scope(v)
    }

    #[test]
    fn literal_and_mixed() {
        let s = scope();
        let t = Template::compile("plain").expect("ok");
        assert_eq!(t.as_literal(), Some("plain"));
        assert_eq!(t.render(&s).expect("ok"), "plain");
        let t = Template::compile("m=${req.method}, n=${req.n}!").expect("ok");
        assert_eq!(t.render(&s).expect("ok"), "m=GET, n=3!");
        assert!(t.needs().contains(Needs::REQ));
        let t = Template::compile("${ {'a': '}'}['a'] }").expect("ok");
        assert_eq!(t.render(&s).expect("ok"), "}");
    }

    #[test]
    fn exact_expression_keeps_type() {
        let s = scope();
        let t = Template::compile("${req.n}").expect("ok");
        assert_eq!(t.value(&s).expect("ok"), Value::Int(3));
        let t = Template::compile("x${req.n}").expect("ok");
        assert_eq!(t.value(&s).expect("ok"), cel::string("x3"));
    }

    #[test]
    fn errors() {
        assert!(Template::compile("${req.method").is_err());
        assert!(Template::compile("${req.method ==}").is_err());
        let t = Template::compile("${req.nope}").expect("ok");
        assert!(t.render(&scope()).is_err());
    }
}
