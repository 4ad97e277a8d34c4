//! Validation and compilation of a policy document, and its evaluation on
//! a request. Compiled responses are pre-encoded, so answering from policy
//! costs one buffer write per request.

use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use super::document::{Action, Rule, TrafficPolicy};

/// A policy error, located: which phase, rule and action, and why.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("traffic policy: {phase}[{rule_index}] (rule {rule_name:?}), {location}: {reason}")]
pub struct PolicyError {
    pub phase: &'static str,
    pub rule_index: usize,
    pub rule_name: String,
    pub location: String,
    pub reason: String,
}

/// A response prepared at load time: status line and headers (without the
/// final blank line, so the driver can add `connection: close`) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedResponse {
    pub status: u16,
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

/// What the request phase decided.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// Go on to the upstream.
    Continue,
    /// Answer from the edge (terminating action).
    Respond(&'a PreparedResponse),
}

#[derive(Debug, Clone)]
enum CompiledAction {
    CustomResponse(Arc<PreparedResponse>),
}

#[derive(Debug, Clone)]
struct CompiledRule {
    actions: Vec<CompiledAction>,
}

/// The immutable, compiled policy of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    on_http_request: Vec<CompiledRule>,
}

impl CompiledPolicy {
    pub fn compile(doc: &TrafficPolicy) -> Result<CompiledPolicy, PolicyError> {
        refuse_phase("on_http_response", &doc.on_http_response)?;
        refuse_phase("on_tcp_connect", &doc.on_tcp_connect)?;
        let mut on_http_request = Vec::with_capacity(doc.on_http_request.len());
        for (i, rule) in doc.on_http_request.iter().enumerate() {
            let err = |location: String, reason: String| PolicyError {
                phase: "on_http_request",
                rule_index: i,
                rule_name: rule.name.clone().unwrap_or_default(),
                location,
                reason,
            };
            if !rule.expressions.is_empty() {
                return Err(err(
                    "expressions".into(),
                    "CEL expressions are not supported yet".into(),
                ));
            }
            if rule.actions.is_empty() {
                return Err(err(
                    "actions".into(),
                    "a rule needs at least one action".into(),
                ));
            }
            let mut actions = Vec::with_capacity(rule.actions.len());
            for (j, action) in rule.actions.iter().enumerate() {
                let at = format!("actions[{j}] ({})", action.kind);
                actions.push(compile_action(action).map_err(|reason| err(at, reason))?);
            }
            on_http_request.push(CompiledRule { actions });
        }
        Ok(CompiledPolicy { on_http_request })
    }

    /// Runs the `on_http_request` phase.
    // Every action implemented so far terminates; the loop is the shape
    // the non-terminating ones will need.
    #[allow(clippy::never_loop)]
    pub fn on_http_request(&self) -> Decision<'_> {
        for rule in &self.on_http_request {
            for action in &rule.actions {
                match action {
                    CompiledAction::CustomResponse(r) => return Decision::Respond(r),
                }
            }
        }
        Decision::Continue
    }

    /// True when every request is answered by the policy itself (a cloud
    /// endpoint needs no upstream then).
    pub fn always_terminates(&self) -> bool {
        self.on_http_request.iter().any(|r| {
            r.actions
                .iter()
                .any(|a| matches!(a, CompiledAction::CustomResponse(_)))
        })
    }
}

fn refuse_phase(phase: &'static str, rules: &[Rule]) -> Result<(), PolicyError> {
    match rules.first() {
        None => Ok(()),
        Some(rule) => Err(PolicyError {
            phase,
            rule_index: 0,
            rule_name: rule.name.clone().unwrap_or_default(),
            location: String::new(),
            reason: format!("the {phase} phase is not supported yet"),
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomResponseConfig {
    #[serde(default = "default_status")]
    status_code: u16,
    #[serde(default)]
    body: Option<String>,
    /// The older name of `body`.
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

fn default_status() -> u16 {
    200
}

const MAX_CUSTOM_HEADERS: usize = 10;

fn compile_action(action: &Action) -> Result<CompiledAction, String> {
    match action.kind.as_str() {
        "custom-response" => {
            let config = action.config.clone().unwrap_or(serde_json::Value::Null);
            let config = if config.is_null() {
                serde_json::json!({})
            } else {
                config
            };
            let cfg: CustomResponseConfig =
                serde_json::from_value(config).map_err(|e| format!("config: {e}"))?;
            prepare_custom_response(cfg).map(|r| CompiledAction::CustomResponse(Arc::new(r)))
        }
        other if KNOWN_ACTIONS.contains(&other) => {
            Err(format!("action type {other:?} is not supported yet"))
        }
        other => Err(format!("unknown action type {other:?}")),
    }
}

/// Actions ngrok documents; refused with "not supported yet" until the
/// policy engine implements them.
const KNOWN_ACTIONS: &[&str] = &[
    "add-headers",
    "basic-auth",
    "circuit-breaker",
    "close-connection",
    "compress-response",
    "deny",
    "forward-internal",
    "http-request",
    "jwt-validation",
    "log",
    "oauth",
    "openid-connect",
    "rate-limit",
    "redirect",
    "remove-headers",
    "restrict-ips",
    "set-vars",
    "terminate-tls",
    "url-rewrite",
    "verify-webhook",
];

fn prepare_custom_response(cfg: CustomResponseConfig) -> Result<PreparedResponse, String> {
    if !(200..=599).contains(&cfg.status_code) {
        return Err(format!(
            "status_code {} is not in 200..=599",
            cfg.status_code
        ));
    }
    if cfg.body.is_some() && cfg.content.is_some() {
        return Err("set either body or content (its older name), not both".into());
    }
    let body = cfg.body.or(cfg.content).unwrap_or_default();
    if body.contains("${") {
        return Err("body: CEL interpolation (${...}) is not supported yet".into());
    }
    if cfg.headers.len() > MAX_CUSTOM_HEADERS {
        return Err(format!("headers: at most {MAX_CUSTOM_HEADERS} headers"));
    }
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(itoa::Buffer::new().format(cfg.status_code).as_bytes());
    head.push(b' ');
    head.extend_from_slice(crate::proxy::status::reason(cfg.status_code).as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut has_content_type = false;
    for (name, value) in &cfg.headers {
        if !is_token(name) {
            return Err(format!("headers: {name:?} is not a valid header name"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("headers: value of {name:?} contains a line break"));
        }
        if value.contains("${") {
            return Err(format!(
                "headers: {name:?}: CEL interpolation is not supported yet"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "ngrok-error-code"
        ) {
            return Err(format!(
                "headers: {name:?} is set by the edge and cannot be overridden"
            ));
        }
        has_content_type |= lower == "content-type";
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !has_content_type && !body.is_empty() {
        head.extend_from_slice(b"content-type: ");
        head.extend_from_slice(infer_content_type(&body).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    head.extend_from_slice(b"\r\n");
    Ok(PreparedResponse {
        status: cfg.status_code,
        head,
        body: body.into_bytes(),
    })
}

fn infer_content_type(body: &str) -> &'static str {
    let t = body.trim_start();
    if (t.starts_with('{') || t.starts_with('['))
        && serde_json::from_str::<serde_json::Value>(t).is_ok()
    {
        "application/json"
    } else if t.starts_with('<') {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: serde_json::Value) -> TrafficPolicy {
        serde_json::from_value(json).expect("document shape")
    }

    #[test]
    fn hello_world() {
        let p = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"actions": [{"type": "custom-response", "config": {
                "status_code": 200, "body": "Hello world!", "headers": {"content-type": "text/plain"}}}]}]
        })))
        .expect("compiles");
        let Decision::Respond(r) = p.on_http_request() else {
            panic!("expected a response");
        };
        let head = String::from_utf8_lossy(&r.head);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-type: text/plain\r\n"));
        assert!(head.contains("content-length: 12\r\n"));
        assert_eq!(r.body, b"Hello world!");
        assert!(p.always_terminates());
    }

    #[test]
    fn content_is_the_old_name_of_body() {
        let p = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"actions": [{"type": "custom-response", "config": {"content": "<p>x</p>", "status_code": 404}}]}]
        })))
        .expect("compiles");
        let Decision::Respond(r) = p.on_http_request() else {
            panic!("expected a response");
        };
        assert_eq!(r.status, 404);
        assert!(String::from_utf8_lossy(&r.head).contains("content-type: text/html"));
    }

    #[test]
    fn refusals_name_rule_action_and_field() {
        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"name": "r0", "actions": [{"type": "custom-response"}]},
                                 {"name": "auth", "actions": [{"type": "basic-auth", "config": {}}]}]
        })))
        .expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("on_http_request[1]")
                && msg.contains("auth")
                && msg.contains("basic-auth"),
            "{msg}"
        );
        assert!(msg.contains("not supported yet"), "{msg}");

        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"actions": [{"type": "frobnicate"}]}]
        })))
        .expect_err("refused");
        assert!(e.to_string().contains("unknown action type"));

        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"expressions": ["req.method == 'GET'"], "actions": [{"type": "custom-response"}]}]
        })))
        .expect_err("refused");
        assert!(e.to_string().contains("expressions"));

        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"actions": [{"type": "custom-response", "config": {"status_code": 99}}]}]
        })))
        .expect_err("refused");
        assert!(e.to_string().contains("status_code"));

        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"actions": [{"type": "custom-response", "config": {"bogus": 1}}]}]
        })))
        .expect_err("refused");
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_response": [{"actions": [{"type": "custom-response"}]}]
        })))
        .expect_err("refused");
        assert!(e.to_string().contains("on_http_response"));
    }

    #[test]
    fn header_injection_refused() {
        let e = CompiledPolicy::compile(&doc(serde_json::json!({
            "on_http_request": [{"actions": [{"type": "custom-response", "config": {"headers": {"x": "a\r\nb: c"}}}]}]
        })));
        assert!(e.is_err());
    }
}
