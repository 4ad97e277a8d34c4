//! `redirect` and `url-rewrite`: a regex over the full request URL
//! (`scheme://host[:port]/path?query`), interpolated before it is
//! compiled; `to` may use `$1`-style capture references.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

use super::{at_most, template};
use crate::policy::cel::{self, EvalError, Needs};
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::reply::{self, is_token, safe_value};
use crate::policy::template::Template;
use crate::route::Scheme;

/// A `from` pattern: compiled at load, or per request when interpolated.
#[derive(Debug)]
enum Pattern {
    Static(Regex),
    Dynamic(Template),
}

impl Pattern {
    fn compile(src: &str) -> Result<Pattern, String> {
        let t = template("from", src)?;
        match t.as_literal() {
            Some(lit) => Regex::new(lit)
                .map(Pattern::Static)
                .map_err(|e| format!("config.from: invalid regular expression: {e}")),
            None => Ok(Pattern::Dynamic(t)),
        }
    }

    fn needs(&self) -> Needs {
        match self {
            Pattern::Static(_) => Needs::NONE,
            Pattern::Dynamic(t) => t.needs(),
        }
    }

    fn get(&self, cx: &mut Cx<'_, '_>, needs: Needs) -> Result<Cow<'_, Regex>, Fail> {
        match self {
            Pattern::Static(r) => Ok(Cow::Borrowed(r)),
            Pattern::Dynamic(t) => {
                let src = t.render(cx.scope(needs))?;
                Regex::new(&src)
                    .map(Cow::Owned)
                    .map_err(|e| Fail::Regex(e.to_string()))
            }
        }
    }
}

/// The request URL as the upstream would see it so far (after earlier
/// url-rewrites).
fn current_url(cx: &Cx<'_, '_>) -> Option<String> {
    let req = cx.facts.req?;
    let scheme = req.scheme.as_str();
    let authority = match cx.ex.req.host() {
        Some(h) => Cow::Borrowed(h),
        None => Cow::Owned(String::from_utf8_lossy(req.authority()).to_ascii_lowercase()),
    };
    let target = match cx.ex.req.target() {
        Some(t) => Cow::Borrowed(t),
        None => String::from_utf8_lossy(req.path_and_query()),
    };
    Some(format!("{scheme}://{authority}{target}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectConfig {
    #[serde(default)]
    from: Option<String>,
    to: String,
    #[serde(default = "default_302")]
    status_code: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_302() -> u16 {
    302
}

#[derive(Debug)]
pub struct Redirect {
    from: Option<Pattern>,
    to: Template,
    status: u16,
    headers: Vec<(String, Template)>,
    needs: Needs,
}

impl Redirect {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<Redirect, String> {
        let cfg: RedirectConfig = super::config(cfg)?;
        if !(300..=399).contains(&cfg.status_code) {
            return Err(format!(
                "config.status_code: {} is not a 3xx status",
                cfg.status_code
            ));
        }
        at_most("headers", cfg.headers.len(), 10)?;
        let from = cfg.from.as_deref().map(Pattern::compile).transpose()?;
        let to = template("to", &cfg.to)?;
        let mut needs = to
            .needs()
            .union(from.as_ref().map_or(Needs::NONE, Pattern::needs));
        let mut headers = Vec::new();
        for (n, v) in &cfg.headers {
            let lower = n.to_ascii_lowercase();
            if !is_token(n) || !safe_value(v) || super::respond::reserved_response_header(&lower) {
                return Err(format!("config.headers: {n:?} cannot be set"));
            }
            let t = template(&format!("headers.{n}"), v)?;
            needs = needs.union(t.needs());
            headers.push((lower, t));
        }
        Ok(Redirect {
            from,
            to,
            status: cfg.status_code,
            headers,
            needs,
        })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let Some(url) = current_url(cx) else {
            return Ok(Flow::Next);
        };
        let to = self.to.render(cx.scope(self.needs))?;
        let target = match &self.from {
            None => Some(to),
            Some(p) => {
                let re = p.get(cx, self.needs)?;
                re.is_match(&url)
                    .then(|| re.replace(&url, to.as_str()).into_owned())
            }
        };
        let Some(target) = target.filter(|t| *t != url) else {
            cx.result("redirect", || {
                cel::map([
                    ("matches", cel_interpreter::Value::Bool(false)),
                    ("url", cel::string("")),
                ])
            });
            return Ok(Flow::Next);
        };
        if !safe_value(&target) {
            return Err(Fail::Eval(EvalError {
                expr: "to".into(),
                reason: "the redirect URL contains a line break".into(),
            }));
        }
        let mut hs = vec![("location".to_owned(), target.clone())];
        for (n, t) in &self.headers {
            let v = t.render(cx.scope(self.needs))?;
            if safe_value(&v) {
                hs.push((n.clone(), v));
            }
        }
        cx.result("redirect", || {
            cel::map([
                ("matches", cel_interpreter::Value::Bool(true)),
                ("url", cel::string(target.as_str())),
            ])
        });
        let p = reply::prepare(self.status, &hs, Vec::new());
        reply::write_prepared(&p, cx.style, cx.out);
        Ok(Flow::Done)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlRewriteConfig {
    from: String,
    to: String,
}

#[derive(Debug)]
pub struct UrlRewrite {
    from: Pattern,
    to: Template,
    needs: Needs,
}

/// Splits an absolute URL into (scheme, authority, path-and-query).
pub fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, target))
}

impl UrlRewrite {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<UrlRewrite, String> {
        let cfg: UrlRewriteConfig = super::config(cfg)?;
        let from = Pattern::compile(&cfg.from)?;
        let to = template("to", &cfg.to)?;
        let needs = to.needs().union(from.needs());
        Ok(UrlRewrite { from, to, needs })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let Some(url) = current_url(cx) else {
            return Ok(Flow::Next);
        };
        let to = self.to.render(cx.scope(self.needs))?;
        let re = self.from.get(cx, self.needs)?;
        if !re.is_match(&url) {
            drop(re);
            cx.result("url_rewrite", || {
                cel::map([
                    ("matches", cel_interpreter::Value::Bool(false)),
                    ("url", cel::string(url.as_str())),
                ])
            });
            return Ok(Flow::Next);
        }
        let new = re.replace_all(&url, to.as_str()).into_owned();
        drop(re);
        let bad = || {
            Fail::Eval(EvalError {
                expr: "to".into(),
                reason: format!("url-rewrite produced {new:?}, not an absolute URL"),
            })
        };
        let Some((scheme, authority, target)) = split_url(&new) else {
            return Err(bad());
        };
        let scheme_ok = scheme.eq_ignore_ascii_case(Scheme::Http.as_str())
            || scheme.eq_ignore_ascii_case(Scheme::Https.as_str());
        if !scheme_ok || !safe_value(&new) || new.contains(' ') {
            return Err(bad());
        }
        let req = cx.facts.req;
        let old_authority = req.map(|r| r.authority()).unwrap_or_default();
        if !authority.as_bytes().eq_ignore_ascii_case(old_authority) {
            cx.ex.req.set_host(authority);
        }
        cx.ex
            .req
            .set_target(if target.is_empty() { "/" } else { target });
        cx.result("url_rewrite", || {
            cel::map([
                ("matches", cel_interpreter::Value::Bool(true)),
                ("url", cel::string(new.as_str())),
            ])
        });
        Ok(Flow::Next)
    }
}
