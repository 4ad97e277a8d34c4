//! `add-headers` and `remove-headers`: edits recorded in the exchange and
//! applied when the head is encoded (`proxy::headers`). Adding `host` in
//! the request phase replaces the Host sent upstream, and makes the edge
//! rewrite response `Location`s that point at it back to the endpoint's
//! host (seed: "Rewriting the host header").

use std::collections::BTreeMap;

use cel_interpreter::Value;
use serde::Deserialize;

use super::{at_most, template};
use crate::policy::cel::{self, EvalError, Needs};
use crate::policy::engine::{Cx, Fail, Flow, PhaseKind};
use crate::policy::reply::{is_token, safe_value};
use crate::policy::template::Template;

const MAX: usize = 10;

/// Names a policy may never add or remove: framing and hop-by-hop fields
/// the edge owns, and those ngrok forbids (`user-agent`).
fn forbidden(lower: &str) -> bool {
    matches!(
        lower,
        "user-agent"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "ngrok-error-code"
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddConfig {
    headers: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct AddHeaders {
    headers: Vec<(String, Template)>,
    needs: Needs,
}

impl AddHeaders {
    pub fn compile(
        cfg: &Option<serde_json::Value>,
        phase: PhaseKind,
    ) -> Result<AddHeaders, String> {
        let cfg: AddConfig = super::config(cfg)?;
        if cfg.headers.is_empty() {
            return Err("config.headers: at least one header".into());
        }
        at_most("headers", cfg.headers.len(), MAX)?;
        let mut headers = Vec::with_capacity(cfg.headers.len());
        let mut needs = Needs::NONE;
        for (name, value) in &cfg.headers {
            let lower = name.to_ascii_lowercase();
            if !is_token(name) {
                return Err(format!(
                    "config.headers: {name:?} is not a valid header name"
                ));
            }
            if forbidden(&lower)
                || (phase == PhaseKind::HttpRequest && lower == "ngrok-skip-browser-warning")
            {
                return Err(format!(
                    "config.headers: {name:?} cannot be added by a policy"
                ));
            }
            if !safe_value(value) {
                return Err(format!(
                    "config.headers.{name}: the value contains a line break"
                ));
            }
            let t = template(&format!("headers.{name}"), value)?;
            needs = needs.union(t.needs());
            headers.push((lower, t));
        }
        Ok(AddHeaders { headers, needs })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let request = cx.phase == PhaseKind::HttpRequest;
        let mut rendered = String::new();
        for (name, t) in &self.headers {
            let value: &str = match t.as_literal() {
                Some(v) => v,
                None => {
                    rendered.clear();
                    t.render_into(cx.scope(self.needs), &mut rendered)?;
                    if !safe_value(&rendered) {
                        return Err(Fail::Eval(EvalError {
                            expr: format!("headers.{name}"),
                            reason: "the value contains a line break".into(),
                        }));
                    }
                    &rendered
                }
            };
            if request && name == "host" {
                let client_authority = cx
                    .facts
                    .req
                    .map(|r| String::from_utf8_lossy(r.authority()).into_owned())
                    .unwrap_or_default();
                let scheme = cx.facts.req.map_or("http", |r| r.scheme.as_str());
                cx.ex.req.set_host(value);
                cx.ex
                    .res
                    .set_location_rewrite(value, &client_authority, scheme);
            } else if request {
                cx.ex.req.headers.add(name, value);
            } else {
                cx.ex.res.headers.add(name, value);
            }
        }
        if cx.record {
            let mut added = Vec::with_capacity(self.headers.len());
            for (name, t) in &self.headers {
                let v = t.value(cx.scope(self.needs))?;
                added.push((name.clone(), v));
            }
            cx.result("add_headers", || {
                cel::map([("headers_added", cel::map(added))])
            });
        }
        Ok(Flow::Next)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveConfig {
    headers: Vec<String>,
}

#[derive(Debug)]
pub struct RemoveHeaders {
    headers: Vec<String>,
}

impl RemoveHeaders {
    pub fn compile(
        cfg: &Option<serde_json::Value>,
        phase: PhaseKind,
    ) -> Result<RemoveHeaders, String> {
        let cfg: RemoveConfig = super::config(cfg)?;
        if cfg.headers.is_empty() {
            return Err("config.headers: at least one header".into());
        }
        at_most("headers", cfg.headers.len(), MAX)?;
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for name in &cfg.headers {
            let lower = name.to_ascii_lowercase();
            if !is_token(name) {
                return Err(format!(
                    "config.headers: {name:?} is not a valid header name"
                ));
            }
            if forbidden(&lower) || (phase == PhaseKind::HttpRequest && lower == "host") {
                return Err(format!(
                    "config.headers: {name:?} cannot be removed by a policy"
                ));
            }
            if name.contains("${") {
                return Err(format!(
                    "config.headers: {name:?}: header names cannot be interpolated"
                ));
            }
            headers.push(lower);
        }
        Ok(RemoveHeaders { headers })
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let request = cx.phase == PhaseKind::HttpRequest;
        for name in &self.headers {
            if request {
                cx.ex.req.headers.remove(name);
            } else {
                cx.ex.res.headers.remove(name);
            }
        }
        cx.result("remove_headers", || {
            cel::map([(
                "headers_removed",
                cel::list(
                    self.headers
                        .iter()
                        .map(|h| cel::string(h.as_str()))
                        .collect::<Vec<Value>>(),
                ),
            )])
        });
        Ok(Flow::Next)
    }
}
