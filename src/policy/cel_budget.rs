//! The compile budget for CEL expressions: cheap, sans-IO checks that run
//! before the CEL parser so that no expression can make compiling it slow.
//!
//! Owns: one pass over the source that follows CEL's lexical grammar
//! (cel-spec `langdef.md`, cel-parser's `CEL.g4`) and refuses what the
//! parser would refuse anyway, but only after a long time, plus limits no
//! real policy reaches. Allocates only the bracket stack (at most
//! [`MAX_NESTING`] entries) and never calls the parser.
//!
//! Why: the parser (antlr4rust, adaptive LL(*)) has no limit on its error
//! recovery or lookahead. On invalid input with runs of `-` (ambiguous in
//! the grammar), its full-context prediction grows exponentially with the
//! runs and the real nesting depth: the fuzzer found an 889-byte
//! expression that took 22 s and more than 20 GB of memory to refuse, a
//! 1,953-byte one that took 14 s, and, within a first form of this
//! budget, a 1,929-byte one that took 1.3 s. cel-go bounds the same parser
//! generator with an error-recovery limit (30) and a lookahead limit (256
//! tokens); cel-parser does not expose those knobs, so the input is
//! bounded instead.

use std::fmt;

/// Longest expression accepted, in bytes. ngrok's documented examples are
/// a few hundred bytes at most; 4 KiB leaves room for long lists of CIDRs
/// or paths while keeping a worst-case parse short.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// How deep an expression may nest `(`, `[` and `{`. Real policies nest a
/// few levels; the parser's cost on invalid input grows exponentially with
/// depth (a 321-byte input 63 levels deep took 9 s to refuse).
pub const MAX_NESTING: usize = 12;

/// Most `-` and `!` operators in a row (whitespace between them does not
/// matter): one. `a - (-1)` and `!(!x)` still work; `a - -1` and `!!x` do
/// not. A `-` before a number is ambiguous in the grammar (a negation or
/// a negative literal), and on invalid input the parser explores every
/// reading of every such run up to the point where it gives up: a
/// balanced, lexically valid 1,292-byte expression 12 levels deep with
/// runs of three took 17 s to refuse (9 ms with runs of two), and a
/// 1,929-byte one 2 levels deep with runs of two (`1--.1[1--.1...`) took
/// 1.3 s (14 ms with single `-`).
pub const MAX_UNARY_RUN: usize = 1;

/// Most tokens (identifiers, literals, operators, brackets; whitespace and
/// comments do not count) in one expression. A chain of binary operators
/// is as deep in the parse tree as it is long, and the parser and the
/// interpreter recurse on it: `1+1+...` with 2,000 operands took 80 ms to
/// compile and 4,000 overflowed a 2 MiB stack (release build). At 1,024
/// tokens such a chain compiles in about 6 ms.
pub const MAX_TOKENS: usize = 1024;

/// Why an expression was refused before it reached the parser. Offsets
/// are byte offsets into the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("CEL expression is {len} bytes long; at most {MAX_EXPRESSION_BYTES} are allowed")]
    TooLong { len: usize },
    #[error("CEL expression has more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    #[error(
        "CEL expression nests deeper than {MAX_NESTING} levels (brackets and parentheses) at byte {at}"
    )]
    TooDeep { at: usize },
    #[error(
        "CEL expression has {run} `-`/`!` operators in a row at byte {at}; at most {MAX_UNARY_RUN} without parentheses between them (`a - (-1)`, `!(!x)`)"
    )]
    UnaryRun { run: usize, at: usize },
    #[error(
        "CEL expression has {what} at byte {at}, which cannot appear outside a string literal"
    )]
    BadChar { what: CharName, at: usize },
    #[error(
        "CEL expression has {what} at byte {at}; control characters are not allowed, not even in string literals (write an escape such as \\x00)"
    )]
    ControlChar { what: CharName, at: usize },
    #[error("CEL string literal starting at byte {at} is not terminated")]
    UnterminatedString { at: usize },
    #[error("CEL string literal has an invalid escape sequence at byte {at}")]
    BadEscape { at: usize },
    #[error("CEL escaped identifier (`...`) starting at byte {at} is invalid")]
    BadEscapedIdent { at: usize },
    #[error("CEL expression has an unmatched {found:?} at byte {at}")]
    Unmatched { found: char, at: usize },
    #[error("CEL expression has an unclosed {open:?} at byte {at}")]
    Unclosed { open: char, at: usize },
}

/// A character named for an error message: printable ones as themselves,
/// others by code point (a NUL in a message is unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharName(pub char);

impl fmt::Display for CharName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        if c.is_control() || c.is_whitespace() {
            write!(f, "the character U+{:04X}", c as u32)
        } else {
            write!(f, "the character {c:?} (U+{:04X})", c as u32)
        }
    }
}

/// What one pass over a well-formed expression found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub tokens: usize,
    pub depth: usize,
}

/// Checks `src` against the compile budget. `Ok` means the expression is
/// lexically valid CEL with balanced brackets, within every limit above;
/// the parser may still refuse it, but quickly.
pub fn check(src: &str) -> Result<Shape, BudgetError> {
    if src.len() > MAX_EXPRESSION_BYTES {
        return Err(BudgetError::TooLong { len: src.len() });
    }
    let b = src.as_bytes();
    // Before lexing: the parser's lexer ends a raw triple-quoted string
    // (`r"""..."""`) at a NUL, where CEL's grammar does not, so the two
    // would disagree on what is a string. No policy needs a raw control
    // character; an escape says the same.
    if let Some(at) = b.iter().position(|&c| is_control(c)) {
        return Err(BudgetError::ControlChar {
            what: CharName(char::from(b[at])),
            at,
        });
    }
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let (mut tokens, mut depth) = (0usize, 0usize);
    let (mut run, mut run_start) = (0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // Whitespace and comments are hidden from the parser.
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0x0c) {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n + 1);
            continue;
        }
        tokens += 1;
        if tokens > MAX_TOKENS {
            return Err(BudgetError::TooManyTokens);
        }
        if c == b'-' || (c == b'!' && b.get(i + 1) != Some(&b'=')) {
            if run == 0 {
                run_start = i;
            }
            run += 1;
            if run > MAX_UNARY_RUN {
                return Err(BudgetError::UnaryRun { run, at: run_start });
            }
            i += 1;
            continue;
        }
        run = 0;
        let start = i;
        i = match c {
            b'(' | b'[' | b'{' => {
                stack.push((c, i));
                depth = depth.max(stack.len());
                if depth > MAX_NESTING {
                    return Err(BudgetError::TooDeep { at: i });
                }
                i + 1
            }
            b')' | b']' | b'}' => {
                let open = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match stack.pop() {
                    Some((o, _)) if o == open => i + 1,
                    _ => {
                        return Err(BudgetError::Unmatched {
                            found: char::from(c),
                            at: i,
                        })
                    }
                }
            }
            b'=' if b.get(i + 1) == Some(&b'=') => i + 2,
            b'!' | b'<' | b'>' => i + 1 + usize::from(b.get(i + 1) == Some(&b'=')),
            b'&' | b'|' if b.get(i + 1) == Some(&c) => i + 2,
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => number(b, i),
            b'.' | b',' | b'?' | b':' | b'+' | b'*' | b'/' | b'%' => i + 1,
            b'0'..=b'9' => number(b, i),
            b'"' | b'\'' => string(b, i, false)?,
            b'`' => escaped_ident(b, i)?,
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                // String prefixes: r, b, br (any case), directly before a quote.
                let prefix = &b[i..j];
                let is_prefix = matches!(
                    prefix,
                    [b'r' | b'R' | b'b' | b'B'] | [b'b' | b'B', b'r' | b'R']
                );
                if is_prefix && matches!(b.get(j), Some(b'"' | b'\'')) {
                    let raw = prefix.iter().any(|&p| p == b'r' || p == b'R');
                    string(b, j, raw)?
                } else {
                    j
                }
            }
            _ => {
                // Tokens end on ASCII bytes, so `i` is a character boundary.
                let what = src
                    .get(i..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(BudgetError::BadChar {
                    what: CharName(what),
                    at: i,
                });
            }
        };
        debug_assert!(i > start);
    }
    if let Some(&(open, at)) = stack.last() {
        return Err(BudgetError::Unclosed {
            open: char::from(open),
            at,
        });
    }
    Ok(Shape { tokens, depth })
}

/// C0 control characters other than CEL's whitespace (tab, LF, form
/// feed, CR).
fn is_control(c: u8) -> bool {
    c < 0x20 && !matches!(c, b'\t' | b'\n' | 0x0c | b'\r')
}

/// The end of the numeric literal starting at `i` (ints, uints, hex,
/// floats with exponents). Lenient: the parser checks the digits.
fn number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let exp = matches!(b[i], b'e' | b'E');
                i += 1;
                if exp
                    && matches!(b.get(i), Some(b'+' | b'-'))
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit)
                {
                    i += 1;
                }
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => i += 1,
            _ => break,
        }
    }
    i
}

/// The end of the string literal whose opening quote is at `i`: single-
/// or triple-quoted, raw (no escapes) or not. Single-quoted strings end at
/// a line break, as in CEL's lexer.
fn string(b: &[u8], i: usize, raw: bool) -> Result<usize, BudgetError> {
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    if !triple && b.get(j) == Some(&q) {
        return Ok(j + 1); // ""
    }
    while j < b.len() {
        let c = b[j];
        if c == b'\\' && !raw {
            j = escape(b, j)?;
            continue;
        }
        if triple {
            if c == q && b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q) {
                return Ok(j + 3);
            }
        } else if c == q {
            return Ok(j + 1);
        } else if c == b'\n' || c == b'\r' {
            break;
        }
        j += 1;
    }
    Err(BudgetError::UnterminatedString { at: i })
}

/// The end of the escape sequence at `i` (a backslash), as CEL defines
/// them: `\a \b \f \n \r \t \v \" \' \\ \? \``, `\ooo` (first digit 0-3),
/// `\xHH`, `\XHH`, `\uHHHH`, `\UHHHHHHHH`.
fn escape(b: &[u8], i: usize) -> Result<usize, BudgetError> {
    let hex = |from: usize, n: usize| {
        b.get(from..from + n)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    };
    let oct = |from: usize| {
        b.get(from..from + 3).is_some_and(|o| {
            (b'0'..=b'3').contains(&o[0]) && o[1..].iter().all(|d| (b'0'..=b'7').contains(d))
        })
    };
    let ok = match b.get(i + 1) {
        Some(
            b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`',
        ) => Some(i + 2),
        Some(b'x' | b'X') if hex(i + 2, 2) => Some(i + 4),
        Some(b'u') if hex(i + 2, 4) => Some(i + 6),
        Some(b'U') if hex(i + 2, 8) => Some(i + 10),
        Some(b'0'..=b'3') if oct(i + 1) => Some(i + 4),
        _ => None,
    };
    ok.ok_or(BudgetError::BadEscape { at: i })
}

/// The end of the escaped identifier (`` `a.b-c/d e` ``) starting at `i`.
fn escaped_ident(b: &[u8], i: usize) -> Result<usize, BudgetError> {
    let mut j = i + 1;
    while j < b.len()
        && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'.' | b'-' | b'/' | b' '))
    {
        j += 1;
    }
    if j > i + 1 && b.get(j) == Some(&b'`') {
        Ok(j + 1)
    } else {
        Err(BudgetError::BadEscapedIdent { at: i })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_expressions_are_within_budget() {
        for src in [
            "req.url.path.startsWith('/blog/')",
            "res.status_code >= 500",
            "req.method == 'GET' && conn.client_ip != ''",
            "hasReqHeader('x-api-key') && getReqHeader('x-api-key')[0] == 'secret'",
            "req.headers['user-agent'].exists(v, v.matches('(?i)bot'))",
            "conn.geo.country_code in ['DE', 'FR'] ? true : false",
            "{'a': [1, 2.5, -3, 0x1F, 7u, 1e-5, .5]}['a'].size() > 2",
            "a - (-1) == !(!true) && -x < -1.5e-3 && !has(a.b) && a != -b",
            "'\\n\\t\\\\\\'\\u00e9\\U0001F600\\x41\\101' + \"\\\"\" + r'\\d+' + b\"ab\" + br'\\x'",
            "'''multi\nline ' \" \\n''' + \"\"\"x\"\"\" + r'''\\'''",
            "'' + \"\" + 'é ∀ 😀'",
            "req.`x-y.z/w v` // a comment with $ and ( inside\n || true",
        ] {
            assert!(check(src).is_ok(), "{src}: {:?}", check(src));
        }
        let s = check("f(a, [b]) + {1: (2)}").expect("ok");
        assert_eq!(
            s,
            Shape {
                tokens: 16,
                depth: 2
            }
        );
    }

    #[test]
    fn too_long() {
        let src = format!("'{}'", "a".repeat(MAX_EXPRESSION_BYTES - 2));
        assert!(check(&src).is_ok());
        let src = format!("'{}'", "a".repeat(MAX_EXPRESSION_BYTES - 1));
        assert_eq!(
            check(&src),
            Err(BudgetError::TooLong {
                len: MAX_EXPRESSION_BYTES + 1
            })
        );
    }

    #[test]
    fn too_many_tokens() {
        let ok = vec!["1"; MAX_TOKENS / 2].join("+");
        assert!(check(&ok).is_ok());
        let over = vec!["1"; MAX_TOKENS / 2 + 1].join("+");
        assert_eq!(check(&over), Err(BudgetError::TooManyTokens));
    }

    #[test]
    fn nesting_counts_real_brackets_only() {
        let ok = format!("{}1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(check(&ok).map(|s| s.depth), Ok(MAX_NESTING));
        let deep = format!("{}1{}", "([".repeat(7), "])".repeat(7));
        assert_eq!(check(&deep), Err(BudgetError::TooDeep { at: 12 }));
        assert_eq!(check("'(((' + \"[[[\" + (1)").map(|s| s.depth), Ok(1));
    }

    #[test]
    fn regression_unterminated_string_hid_nesting() {
        // fuzz/corpus/cel_compile/regression_unterminated_string_hid_nesting:
        // a `"` whose string the CEL lexer ends at the line break hid 72
        // levels of real nesting from the old nesting count, which skipped
        // to the next `"`.
        assert_eq!(
            check("[s(\"[0\n(((\"x"),
            Err(BudgetError::UnterminatedString { at: 3 })
        );
        assert_eq!(
            check("'abc"),
            Err(BudgetError::UnterminatedString { at: 0 })
        );
        assert_eq!(
            check("'''abc''"),
            Err(BudgetError::UnterminatedString { at: 0 })
        );
        assert_eq!(
            check("r'a\n'"),
            Err(BudgetError::UnterminatedString { at: 1 })
        );
        assert!(check("r'a\\'").is_ok());
    }

    #[test]
    fn regression_mismatched_closer_hid_nesting() {
        // The expression in
        // fuzz/corpus/policy_document/regression_unary_runs_in_nesting_slow_parse
        // (refused first for its `---` runs): `}` closing a `(` lowered the
        // old nesting count, which saw 12 levels where the parser had 31.
        assert_eq!(
            check("f(a}"),
            Err(BudgetError::Unmatched { found: '}', at: 3 })
        );
        assert_eq!(
            check("a)"),
            Err(BudgetError::Unmatched { found: ')', at: 1 })
        );
        assert_eq!(
            check("f([1]"),
            Err(BudgetError::Unclosed { open: '(', at: 1 })
        );
    }

    #[test]
    fn regression_unary_runs_slow_parse() {
        // fuzz/corpus/cel_compile/regression_balanced_unary_runs_slow_parse
        // (runs of three, 17 s) and regression_minus_minus_before_float_slow_parse
        // (runs of two, 1.3 s).
        assert!(check("a - 1 - (-1) - (-(-.1))").is_ok());
        assert_eq!(
            check("x - - ! - y"),
            Err(BudgetError::UnaryRun {
                run: MAX_UNARY_RUN + 1,
                at: 2
            })
        );
        assert_eq!(check("1--.1"), Err(BudgetError::UnaryRun { run: 2, at: 1 }));
        assert_eq!(check("!!x"), Err(BudgetError::UnaryRun { run: 2, at: 0 }));
        // `!=` is a comparison, not a negation; comments do not break a run.
        assert!(check("a != -b").is_ok());
        assert_eq!(
            check("a - // x\n -b"),
            Err(BudgetError::UnaryRun { run: 2, at: 2 })
        );
    }

    #[test]
    fn characters_outside_cel_are_refused() {
        for (src, c, at) in [
            ("a $ b", '$', 2),
            ("#", '#', 0),
            ("a;", ';', 1),
            ("a & b", '&', 2),
            ("a | b", '|', 2),
            ("a = b", '=', 2),
            ("\\n", '\\', 0),
            ("é", 'é', 0),
        ] {
            assert_eq!(
                check(src),
                Err(BudgetError::BadChar {
                    what: CharName(c),
                    at
                }),
                "{src:?}"
            );
        }
        assert!(check("a\u{7f}").is_err());
    }

    #[test]
    fn regression_nul_in_raw_triple_quoted_string() {
        // fuzz/corpus/cel_compile/regression_nul_in_raw_triple_quoted_string:
        // the parser's lexer ended `r"""` at a NUL (CEL's grammar does not),
        // so what the budget took for one string the parser saw as two
        // empty strings and 3,700 bytes of junk: 2.7 s and 600 MB to refuse.
        for (src, c, at) in [
            ("r\"\"\"\0\"\"\"", '\0', 4),
            ("'a\0'", '\0', 2),
            ("a\0b", '\0', 1),
            ("a\u{1}", '\u{1}', 1),
            ("'''\u{b}'''", '\u{b}', 3),
            ("// \u{1f}", '\u{1f}', 3),
        ] {
            assert_eq!(
                check(src),
                Err(BudgetError::ControlChar {
                    what: CharName(c),
                    at
                }),
                "{src:?}"
            );
        }
        let e = check("a\0")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("U+0000 at byte 1; control characters"), "{e}");
        // Escapes and CEL's whitespace are fine, in strings and out.
        assert!(check("'\\x00\t' +\t\r\n\u{c}r'''\t'''").is_ok());
    }

    #[test]
    fn bad_escapes_and_escaped_identifiers() {
        assert_eq!(check("'\\q'"), Err(BudgetError::BadEscape { at: 1 }));
        assert_eq!(check("'\\x4'"), Err(BudgetError::BadEscape { at: 1 }));
        assert_eq!(check("'\\477'"), Err(BudgetError::BadEscape { at: 1 }));
        assert_eq!(check("'\\u12g4'"), Err(BudgetError::BadEscape { at: 1 }));
        assert!(check("r'\\q'").is_ok());
        assert_eq!(check("a.``"), Err(BudgetError::BadEscapedIdent { at: 2 }));
        assert_eq!(check("a.`b"), Err(BudgetError::BadEscapedIdent { at: 2 }));
        assert_eq!(check("a.`b!`"), Err(BudgetError::BadEscapedIdent { at: 2 }));
    }
}
