//! CEL for traffic policies: expressions parsed and checked at load, one
//! shared function registry (ngrok's macros and the common string
//! functions), and per-evaluation scopes that hold only the variables an
//! expression references.
//!
//! Never panics on a request: every failure is an [`EvalError`], which the
//! pipeline turns into ERR_NGROK_3900.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use cel_interpreter::extractors::{Arguments, This};
use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, ExecutionError, FunctionContext, Program, Value};

use super::cel_budget::BudgetError;
pub use super::cel_budget::MAX_NESTING;

/// Top-level variables a policy may reference, as a bit set, so a scope
/// builds only what an expression reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs(u16);

impl Needs {
    pub const NONE: Needs = Needs(0);
    pub const REQ: Needs = Needs(1);
    pub const RES: Needs = Needs(1 << 1);
    pub const CONN: Needs = Needs(1 << 2);
    pub const ENDPOINT: Needs = Needs(1 << 3);
    pub const TIME: Needs = Needs(1 << 4);
    pub const VARS: Needs = Needs(1 << 5);
    pub const ACTIONS: Needs = Needs(1 << 6);

    pub fn contains(self, other: Needs) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Needs) -> Needs {
        Needs(self.0 | other.0)
    }

    pub fn minus(self, other: Needs) -> Needs {
        Needs(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const VARIABLES: &[(&str, Needs)] = &[
    ("req", Needs::REQ),
    ("res", Needs::RES),
    ("conn", Needs::CONN),
    ("endpoint", Needs::ENDPOINT),
    ("time", Needs::TIME),
    ("vars", Needs::VARS),
    ("actions", Needs::ACTIONS),
];

/// Functions that read a variable through the context.
const FUNCTION_NEEDS: &[(&str, Needs)] = &[
    ("getReqHeader", Needs::REQ),
    ("hasReqHeader", Needs::REQ),
    ("getQueryParam", Needs::REQ),
    ("hasQueryParam", Needs::REQ),
    ("getReqCookie", Needs::REQ),
    ("hasReqCookie", Needs::REQ),
    ("getResHeader", Needs::RES),
    ("hasResHeader", Needs::RES),
];

/// A parsed, checked CEL expression.
#[derive(Debug)]
pub struct Expr {
    program: Program,
    source: Box<str>,
    needs: Needs,
}

/// Evaluation failed (ERR_NGROK_3900).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("CEL evaluation of {expr:?} failed: {reason}")]
pub struct EvalError {
    pub expr: String,
    pub reason: String,
}

impl Expr {
    /// Parses `source` and checks that it names only known variables and
    /// functions. The error is the reason, for a located `PolicyError`.
    pub fn compile(source: &str) -> Result<Expr, String> {
        // Bounded before the parser: it can take seconds (and gigabytes)
        // to refuse some invalid input (see `cel_budget`).
        super::cel_budget::check(source).map_err(|e| match e {
            BudgetError::TooLong { .. } | BudgetError::TooManyTokens => e.to_string(),
            _ => format!("{e}: {source:?}"),
        })?;
        let rewritten = rewrite_url_members(source);
        // The parser panics on some malformed input instead of failing:
        // contain it (this runs at load, on the control thread).
        let parsed = std::panic::catch_unwind(|| Program::compile(&rewritten));
        let program = match parsed {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(format!("CEL parse error in {source:?}: {e}")),
            Err(_) => {
                return Err(format!(
                    "CEL parse error in {source:?}: malformed expression"
                ))
            }
        };
        let refs = program.references();
        let mut needs = Needs::NONE;
        for v in refs.variables() {
            match VARIABLES.iter().find(|(n, _)| *n == v) {
                Some((_, n)) => needs = needs.union(*n),
                None => {
                    // Comprehension variables (`x` in `l.exists(x, ...)`)
                    // show up as references too; only refuse names that
                    // look like a misspelt top-level variable.
                    if looks_top_level(&rewritten, v) {
                        return Err(format!("unknown variable {v:?} in {source:?}"));
                    }
                }
            }
        }
        for f in refs.functions() {
            if let Some((_, n)) = FUNCTION_NEEDS.iter().find(|(n, _)| *n == f) {
                needs = needs.union(*n);
            }
            if !is_builtin_operator(f) && !root_has_function(f) {
                return Err(format!("unknown function {f:?} in {source:?}"));
            }
        }
        Ok(Expr {
            program,
            source: source.into(),
            needs,
        })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn eval(&self, scope: &Context<'_>) -> Result<Value, EvalError> {
        // A panic inside the interpreter must not take the connection
        // down with it: it becomes ERR_NGROK_3900 like any other failure.
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(scope)));
        match run {
            Ok(r) => r.map_err(|e| EvalError {
                expr: self.source.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => Err(EvalError {
                expr: self.source.to_string(),
                reason: "the CEL interpreter failed".into(),
            }),
        }
    }

    /// Evaluates a rule expression: it must be a boolean.
    pub fn eval_bool(&self, scope: &Context<'_>) -> Result<bool, EvalError> {
        match self.eval(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError {
                expr: self.source.to_string(),
                reason: format!("expected a bool, got {}", type_name(&other)),
            }),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "duration",
        Value::Timestamp(_) => "timestamp",
        Value::Null => "null",
    }
}

/// Whether identifier `v` is used as the start of a member chain outside
/// a comprehension (`v.` at an identifier boundary, not bound by a macro).
fn looks_top_level(src: &str, v: &str) -> bool {
    let bound = [".exists(", ".all(", ".map(", ".filter(", ".exists_one("]
        .iter()
        .any(|m| src.contains(&format!("{m}{v},")) || src.contains(&format!("{m}{v} ,")));
    !bound
}

/// `req.url` is a string in ngrok and also has fields (`req.url.path`).
/// CEL values cannot be both, so the fields live under `req.url_parts`;
/// this rewrites `req.url.<field>` outside string literals.
fn rewrite_url_members(src: &str) -> String {
    const FROM: &str = "req.url.";
    if !src.contains(FROM) {
        return src.to_owned();
    }
    let mut out = String::with_capacity(src.len() + 8);
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' && i + 1 < bytes.len() {
                    // The escaped character may be several bytes long.
                    let next = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    out.push_str(&src[i..i + 1 + next]);
                    i += 1 + next;
                    continue;
                }
                if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'\'' || b == b'"' {
                    quote = Some(b);
                } else if src[i..].starts_with(FROM)
                    && (i == 0 || !is_ident_byte(bytes[i - 1]) && bytes[i - 1] != b'.')
                {
                    out.push_str("req.url_parts.");
                    i += FROM.len();
                    continue;
                }
            }
        }
        let ch_len = src[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&src[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_builtin_operator(f: &str) -> bool {
    f.starts_with('_')
        || f.starts_with('@')
        || f.starts_with('!')
        || matches!(
            f,
            "has" | "all" | "exists" | "exists_one" | "map" | "filter" | "size"
        )
}

/// `Context::has_function` is crate-private: the registry's names are
/// kept beside it.
fn root_has_function(name: &str) -> bool {
    root();
    ROOT_FUNCTIONS
        .get()
        .is_some_and(|names| names.contains(&name))
}

static ROOT: OnceLock<Context<'static>> = OnceLock::new();
static ROOT_FUNCTIONS: OnceLock<Vec<&'static str>> = OnceLock::new();

/// The shared, immutable root scope: functions only.
pub fn root() -> &'static Context<'static> {
    ROOT.get_or_init(|| {
        let mut ctx = Context::default();
        let mut names: Vec<&'static str> = vec![
            "contains",
            "size",
            "max",
            "min",
            "startsWith",
            "endsWith",
            "string",
            "bytes",
            "double",
            "int",
            "uint",
            "matches",
            "duration",
            "timestamp",
            "getFullYear",
            "getMonth",
            "getDayOfYear",
            "getDayOfMonth",
            "getDate",
            "getDayOfWeek",
            "getHours",
            "getMinutes",
            "getSeconds",
            "getMilliseconds",
        ];
        register(&mut ctx, &mut names);
        let _ = ROOT_FUNCTIONS.set(names);
        ctx
    })
}

/// A per-evaluation scope over the root.
pub fn scope(vars: HashMap<String, Value>) -> Context<'static> {
    Context::Child {
        parent: root(),
        variables: vars,
    }
}

type R<T> = Result<T, ExecutionError>;

fn register(ctx: &mut Context<'static>, names: &mut Vec<&'static str>) {
    names.extend([
        "getReqHeader",
        "hasReqHeader",
        "getResHeader",
        "hasResHeader",
        "getQueryParam",
        "hasQueryParam",
        "getReqCookie",
        "hasReqCookie",
        "inCidrRange",
        "inCidrRanges",
        "lower",
        "upper",
        "trim",
        "split",
        "replace",
        "substring",
        "indexOf",
        "join",
    ]);
    ctx.add_function(
        "getReqHeader",
        |ftx: &FunctionContext, name: Arc<String>| header_values(ftx, "req", &name),
    );
    ctx.add_function(
        "hasReqHeader",
        |ftx: &FunctionContext, name: Arc<String>| has_nonempty(header_values(ftx, "req", &name)),
    );
    ctx.add_function(
        "getResHeader",
        |ftx: &FunctionContext, name: Arc<String>| header_values(ftx, "res", &name),
    );
    ctx.add_function(
        "hasResHeader",
        |ftx: &FunctionContext, name: Arc<String>| has_nonempty(header_values(ftx, "res", &name)),
    );
    ctx.add_function(
        "getQueryParam",
        |ftx: &FunctionContext, name: Arc<String>| lookup_list(ftx, "req", "query_params", &name),
    );
    ctx.add_function(
        "hasQueryParam",
        |ftx: &FunctionContext, name: Arc<String>| {
            has_nonempty(lookup_list(ftx, "req", "query_params", &name))
        },
    );
    ctx.add_function(
        "getReqCookie",
        |ftx: &FunctionContext, name: Arc<String>| match lookup_list(ftx, "req", "cookies", &name)?
        {
            Value::List(l) => Ok(l.first().cloned().unwrap_or(Value::Null)),
            _ => Ok(Value::Null),
        },
    );
    ctx.add_function(
        "hasReqCookie",
        |ftx: &FunctionContext, name: Arc<String>| {
            has_nonempty(lookup_list(ftx, "req", "cookies", &name))
        },
    );
    ctx.add_function(
        "inCidrRange",
        |ftx: &FunctionContext, ip: Arc<String>, cidr: Arc<String>| -> R<bool> {
            in_cidr(ftx, &ip, &cidr)
        },
    );
    ctx.add_function(
        "inCidrRanges",
        |ftx: &FunctionContext, ip: Arc<String>, cidrs: Arc<Vec<Value>>| -> R<bool> {
            for c in cidrs.iter() {
                let Value::String(c) = c else {
                    return Err(ftx.error("inCidrRanges: CIDRs must be strings"));
                };
                if in_cidr(ftx, &ip, c)? {
                    return Ok(true);
                }
            }
            Ok(false)
        },
    );
    ctx.add_function("lower", |This(s): This<Arc<String>>| s.to_lowercase());
    ctx.add_function("upper", |This(s): This<Arc<String>>| s.to_uppercase());
    ctx.add_function("trim", |This(s): This<Arc<String>>| s.trim().to_owned());
    ctx.add_function(
        "split",
        |This(s): This<Arc<String>>, sep: Arc<String>| -> R<Value> {
            let parts: Vec<Value> = s.split(sep.as_str()).map(Value::from).collect();
            Ok(Value::List(Arc::new(parts)))
        },
    );
    ctx.add_function(
        "replace",
        |This(s): This<Arc<String>>, from: Arc<String>, to: Arc<String>| -> String {
            s.replace(from.as_str(), to.as_str())
        },
    );
    ctx.add_function(
        "indexOf",
        |This(s): This<Arc<String>>, needle: Arc<String>| -> i64 {
            s.find(needle.as_str())
                .map_or(-1, |b| s[..b].chars().count() as i64)
        },
    );
    ctx.add_function(
        "substring",
        |ftx: &FunctionContext,
         This(s): This<Arc<String>>,
         Arguments(args): Arguments|
         -> R<Value> {
            let chars: Vec<char> = s.chars().collect();
            let idx = |v: Option<&Value>, default: usize| -> R<usize> {
                match v {
                    None => Ok(default),
                    Some(Value::Int(i)) if *i >= 0 && (*i as usize) <= chars.len() => {
                        Ok(*i as usize)
                    }
                    Some(Value::UInt(i)) if (*i as usize) <= chars.len() => Ok(*i as usize),
                    Some(_) => Err(ftx.error("substring: index out of range")),
                }
            };
            let start = idx(args.first(), 0)?;
            let end = idx(args.get(1), chars.len())?;
            if start > end {
                return Err(ftx.error("substring: start after end"));
            }
            Ok(string(chars[start..end].iter().collect::<String>()))
        },
    );
    ctx.add_function(
        "join",
        |ftx: &FunctionContext,
         This(l): This<Arc<Vec<Value>>>,
         Arguments(args): Arguments|
         -> R<Value> {
            let sep = match args.first() {
                Some(Value::String(s)) => s.to_string(),
                None => String::new(),
                Some(_) => return Err(ftx.error("join: separator must be a string")),
            };
            let mut out = String::new();
            for (i, v) in l.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                match v {
                    Value::String(s) => out.push_str(s),
                    _ => return Err(ftx.error("join: list items must be strings")),
                }
            }
            Ok(string(out))
        },
    );
}

fn in_cidr(ftx: &FunctionContext, ip: &str, cidr: &str) -> R<bool> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ftx.error(format!("{ip:?} is not an IP address")))?;
    let net = parse_cidr(cidr).map_err(|e| ftx.error(e))?;
    Ok(net.contains(&ip.to_canonical()))
}

/// Parses a CIDR, or a bare address as a single-host network.
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR (like 10.0.0.0/8) or an IP address"))
}

fn has_nonempty(v: R<Value>) -> R<bool> {
    Ok(matches!(v?, Value::List(l) if !l.is_empty()))
}

fn map_get<'a>(m: &'a Map, key: &str) -> Option<&'a Value> {
    m.map.get(&Key::String(Arc::new(key.to_owned())))
}

fn header_values(ftx: &FunctionContext, var: &str, name: &str) -> R<Value> {
    lookup_list(ftx, var, "headers", &name.to_ascii_lowercase())
}

/// `var.field[key]` as a list, or an empty list.
fn lookup_list(ftx: &FunctionContext, var: &str, field: &str, key: &str) -> R<Value> {
    let empty = || Value::List(Arc::new(Vec::new()));
    let Ok(Value::Map(top)) = ftx.ptx.get_variable(var) else {
        return Ok(empty());
    };
    let Some(Value::Map(inner)) = map_get(&top, field) else {
        return Ok(empty());
    };
    Ok(map_get(inner, key).cloned().unwrap_or_else(empty))
}

/// Builds a CEL map from string keys.
pub fn map<I, K>(entries: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    let m: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.into())), v))
        .collect();
    Value::Map(Map { map: Arc::new(m) })
}

pub fn string(s: impl Into<String>) -> Value {
    Value::String(Arc::new(s.into()))
}

pub fn list(items: Vec<Value>) -> Value {
    Value::List(Arc::new(items))
}

/// A CEL value as text for interpolation into a string.
pub fn to_text(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Timestamp(t) => t.to_rfc3339(),
        Value::Duration(d) => format!("{}s", d.num_seconds()),
        Value::List(_) | Value::Map(_) => to_json(v)?.to_string(),
        Value::Function(..) => return Err("a function is not a value".into()),
    })
}

/// A CEL value as JSON (for `log` metadata and non-string interpolation).
pub fn to_json(v: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Value::String(s) => J::String(s.to_string()),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => J::from(*f),
        Value::Bool(b) => J::Bool(*b),
        Value::Null => J::Null,
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Timestamp(t) => J::String(t.to_rfc3339()),
        Value::Duration(d) => J::String(format!("{}s", d.num_seconds())),
        Value::List(l) => J::Array(l.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(m) => {
            let mut o = serde_json::Map::new();
            for (k, v) in m.map.iter() {
                let k = match k {
                    Key::String(s) => s.to_string(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                o.insert(k, to_json(v)?);
            }
            J::Object(o)
        }
        Value::Function(..) => return Err("a function is not a value".into()),
    })
}

/// A JSON value (from a policy document) as a CEL value.
pub fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or_default()),
        },
        J::String(s) => string(s.as_str()),
        J::Array(a) => list(a.iter().map(from_json).collect()),
        J::Object(o) => map(o.iter().map(|(k, v)| (k.clone(), from_json(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_deep_nesting_is_refused_before_the_parser() {
        // Found by the cel_compile fuzz target: 63 levels of brackets made
        // the parser take 9 s before refusing the expression.
        let deep = format!("{}1{}", "(".repeat(63), ")".repeat(63));
        let t = std::time::Instant::now();
        let e = Expr::compile(&deep).err().unwrap_or_default();
        assert!(e.contains("deeper than 12 levels"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // MAX_NESTING levels still compile.
        let ok = format!("{}1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(Expr::compile(&format!("{ok} == 1")).is_ok());
        // Every bracket kind at the limit parses (or fails) without
        // exhausting a 2 MiB test thread's stack in a debug build.
        for (open, close) in [("[", "]"), ("{1:", "}"), ("size([", "])")] {
            let n = MAX_NESTING / open.matches(['(', '[', '{']).count();
            let e = format!("{}1{}", open.repeat(n), close.repeat(n));
            let _ = Expr::compile(&e);
        }
    }

    /// Expressions the fuzzer found slow to refuse (1.3-22 s, one of them
    /// using more than 20 GB), now refused by the compile budget before
    /// the parser.
    #[test]
    fn regression_slow_refusals_are_refused_before_the_parser() {
        // (input, why it is refused, why once its control characters are
        // blanked: the other limits must hold it too).
        let cases: [(&[u8], &str, &str); 4] = [
            (
                include_bytes!(
                    "../../fuzz/corpus/cel_compile/regression_unterminated_string_hid_nesting"
                ),
                "control characters are not allowed",
                "not terminated",
            ),
            (
                include_bytes!(
                    "../../fuzz/corpus/cel_compile/regression_balanced_unary_runs_slow_parse"
                ),
                "2 `-`/`!` operators in a row",
                "2 `-`/`!` operators in a row",
            ),
            (
                include_bytes!(
                    "../../fuzz/corpus/cel_compile/regression_minus_minus_before_float_slow_parse"
                ),
                "control characters are not allowed",
                "2 `-`/`!` operators in a row",
            ),
            (
                include_bytes!(
                    "../../fuzz/corpus/cel_compile/regression_nul_in_raw_triple_quoted_string"
                ),
                "control characters are not allowed",
                "",
            ),
        ];
        for (input, why, why_blanked) in cases {
            let src = String::from_utf8_lossy(input);
            let blanked: String = src
                .chars()
                .map(|c| match c {
                    '\t' | '\n' | '\r' | '\u{c}' => c,
                    c if c.is_ascii_control() => ' ',
                    c => c,
                })
                .collect();
            for (src, why) in [(&*src, why), (&*blanked, why_blanked)] {
                let t = std::time::Instant::now();
                let e = Expr::compile(src).err().unwrap_or_default();
                assert!(!e.is_empty() && e.contains(why), "{e}");
                assert!(t.elapsed() < std::time::Duration::from_millis(100));
            }
        }
        let doc = include_str!(
            "../../fuzz/corpus/policy_document/regression_unary_runs_in_nesting_slow_parse"
        );
        let t = std::time::Instant::now();
        let compiled = crate::policy::TrafficPolicy::parse(doc)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                crate::policy::CompiledPolicy::compile(&d)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        assert!(compiled.is_err_and(|e| e.contains("operators in a row")));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
    }

    /// Times `Expr::compile` on every input in the cel_compile corpora
    /// (committed seeds and, if present, a campaign's `fuzz/corpus-work`)
    /// and prints the slowest: how the compile budget was checked against
    /// what the fuzzer found. Ignored: it reads files outside the crate.
    /// `cargo test --release --lib slowest_cel_corpus_inputs -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn slowest_cel_corpus_inputs() {
        // On its own thread: a debug build needs more than a test thread's
        // 2 MiB for some inputs within the budget (release needs < 512 KiB).
        let run = std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn(time_cel_corpus_inputs)
            .and_then(|h| h.join().map_err(|_| std::io::Error::other("panicked")));
        assert!(run.is_ok(), "{run:?}");
    }

    fn time_cel_corpus_inputs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut times = Vec::new();
        for dir in ["corpus/cel_compile", "corpus-work/cel_compile"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(bytes) = std::fs::read(entry.path()) else {
                    continue;
                };
                let Ok(src) = String::from_utf8(bytes) else {
                    continue;
                };
                let t = std::time::Instant::now();
                let refused = Expr::compile(&src).is_err();
                times.push((t.elapsed(), refused, entry.path()));
            }
        }
        times.sort_by_key(|t| std::cmp::Reverse(t.0));
        let refused = times.iter().filter(|t| t.1).count();
        println!("{} inputs, {refused} refused; slowest:", times.len());
        for (t, refused, path) in times.iter().take(5) {
            println!("  {t:?} refused={refused} {}", path.display());
        }
        if let Some((t, _, path)) = times.first() {
            assert!(*t < std::time::Duration::from_secs(1), "{}", path.display());
        }
    }

    #[test]
    fn budget_errors_name_the_limit() {
        let long = format!("'{}'", "a".repeat(5000));
        let e = Expr::compile(&long).err().unwrap_or_default();
        assert!(e.contains("5002 bytes long; at most 4096"), "{e}");
        assert!(e.len() < 200, "the expression is not echoed: {e}");
        let e = Expr::compile("a\0b").err().unwrap_or_default();
        assert!(
            e.contains("U+0000 at byte 1") && e.contains("\"a\\0b\""),
            "{e}"
        );
    }

    #[test]
    fn regression_escape_before_a_multibyte_character_in_a_string() {
        // Found by the cel_compile and policy_document fuzz targets: a
        // backslash before a multi-byte character inside a string literal
        // was copied as two bytes, splitting the character (a panic).
        let src = "req.url.path == 'a\\\u{2028}b' || req.url.path == \"\\\u{712}\"";
        let out = rewrite_url_members(src);
        assert!(
            out.starts_with("req.url_parts.path == 'a\\\u{2028}b'"),
            "{out}"
        );
        assert!(
            out.contains("|| req.url_parts.path == \"\\\u{712}\""),
            "{out}"
        );
        // The fuzzer's input: compiles or fails, never panics.
        let _ =
            Expr::compile("req.url.f\\\\\\\u{712}'th\0DDDDD.url.f\\\\\\\u{712}'th\0DDDq\u{712}'at");
    }

    fn eval(src: &str, vars: Vec<(&str, Value)>) -> Result<Value, EvalError> {
        let e = Expr::compile(src).expect("compiles");
        let s = scope(vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        e.eval(&s)
    }

    fn req() -> Value {
        map([
            ("method", string("GET")),
            (
                "headers",
                map([("x-key", list(vec![string("a"), string("b")]))]),
            ),
            ("query_params", map([("q", list(vec![string("1")]))])),
            (
                "url_parts",
                map([("path", string("/p")), ("host", string("h"))]),
            ),
        ])
    }

    #[test]
    fn needs_follow_references() {
        assert_eq!(Expr::compile("true").expect("ok").needs(), Needs::NONE);
        let e = Expr::compile("req.method == 'GET' && conn.client_ip != ''").expect("ok");
        assert!(e.needs().contains(Needs::REQ) && e.needs().contains(Needs::CONN));
        let e = Expr::compile("hasReqHeader('x')").expect("ok");
        assert_eq!(e.needs(), Needs::REQ);
    }

    #[test]
    fn parse_errors_and_unknown_names_refused() {
        assert!(Expr::compile("req.method ==").is_err());
        assert!(Expr::compile("request.method == 'GET'")
            .expect_err("unknown")
            .contains("request"));
        assert!(Expr::compile("frob('x')")
            .expect_err("unknown")
            .contains("frob"));
        // Comprehension variables are fine.
        Expr::compile("req.headers['x'].exists(v, v == 'a')").expect("ok");
    }

    #[test]
    fn macros() {
        let r = || vec![("req", req())];
        assert_eq!(
            eval("getReqHeader('X-Key')", r()).expect("ok"),
            list(vec![string("a"), string("b")])
        );
        assert_eq!(eval("hasReqHeader('x-key')", r()), Ok(Value::Bool(true)));
        assert_eq!(eval("hasReqHeader('nope')", r()), Ok(Value::Bool(false)));
        assert_eq!(
            eval("getQueryParam('q')[0] == '1'", r()),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("hasQueryParam('z')", r()), Ok(Value::Bool(false)));
        assert_eq!(eval("req.url.path == '/p'", r()), Ok(Value::Bool(true)));
        assert_eq!(eval("'req.url.path'", r()), Ok(string("req.url.path")));
        assert_eq!(
            eval("inCidrRange('10.1.2.3', '10.0.0.0/8')", vec![]),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("inCidrRanges('::1', ['10.0.0.0/8', '::1/128'])", vec![]),
            Ok(Value::Bool(true))
        );
        assert!(eval("inCidrRange('x', '10.0.0.0/8')", vec![]).is_err());
    }

    #[test]
    fn string_functions() {
        assert_eq!(eval("'AbC'.lower()", vec![]), Ok(string("abc")));
        assert_eq!(eval("'AbC'.upper()", vec![]), Ok(string("ABC")));
        assert_eq!(eval("'  x '.trim()", vec![]), Ok(string("x")));
        assert_eq!(eval("'a,b'.split(',')[1]", vec![]), Ok(string("b")));
        assert_eq!(eval("'aXa'.replace('a', 'b')", vec![]), Ok(string("bXb")));
        assert_eq!(eval("'hello'.substring(1, 3)", vec![]), Ok(string("el")));
        assert_eq!(eval("'hello'.substring(2)", vec![]), Ok(string("llo")));
        assert_eq!(eval("'hello'.indexOf('l')", vec![]), Ok(Value::Int(2)));
        assert_eq!(eval("['a','b'].join('-')", vec![]), Ok(string("a-b")));
        assert_eq!(
            eval(
                "'abc'.startsWith('a') && 'abc'.endsWith('c') && 'abc'.contains('b')",
                vec![]
            ),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("'abc'.matches('^a.c$')", vec![]),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn runtime_errors_are_values_not_panics() {
        assert!(eval("req.nope == 1", vec![("req", req())]).is_err());
        let e = Expr::compile("1 + 1").expect("ok");
        assert!(e.eval_bool(&scope(HashMap::new())).is_err());
    }
}
