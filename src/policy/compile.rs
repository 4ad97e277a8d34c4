//! Validation and compilation of a policy document into the immutable
//! form the snapshot holds, and the rule loop that runs one phase.
//!
//! Everything that can be checked is checked here, at load, with a
//! located error: phase, rule, action and field. Nothing in a compiled
//! policy can fail to parse at request time except an interpolated regex.

use thiserror::Error;

use super::actions::CompiledAction;
use super::cel::{Expr, Needs};
use super::document::{Rule, TrafficPolicy};
use super::engine::{Cx, Fail, Flow, PhaseKind};

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

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) name: String,
    pub(crate) exprs: Vec<Expr>,
    pub(crate) actions: Vec<CompiledAction>,
}

/// The immutable, compiled policy of one endpoint (`Send + Sync`, shared
/// by every worker through the snapshot).
#[derive(Debug, Default)]
pub struct CompiledPolicy {
    pub(crate) on_tcp_connect: Vec<CompiledRule>,
    pub(crate) on_http_request: Vec<CompiledRule>,
    pub(crate) on_http_response: Vec<CompiledRule>,
    /// Some expression reads `actions.ngrok.*`.
    pub(crate) record_results: bool,
    /// The request body the request phase needs buffered.
    pub(crate) body_limit: Option<usize>,
    /// Some rule may compress the response.
    pub(crate) compresses: bool,
    /// The response phase reads `req`.
    pub(crate) response_needs_req: bool,
    /// The fields of `req` the policy's expressions and templates read.
    pub(crate) req_fields: crate::policy::request::ReqFields,
    always_terminates: bool,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledPolicy>();
};

/// Rules per phase; ngrok's hosted limit is lower on free plans.
const MAX_RULES: usize = 1000;

fn compile_phase(
    phase: PhaseKind,
    rules: &[Rule],
    needs: &mut Needs,
) -> Result<Vec<CompiledRule>, PolicyError> {
    if rules.len() > MAX_RULES {
        return Err(PolicyError {
            phase: phase.name(),
            rule_index: MAX_RULES,
            rule_name: String::new(),
            location: String::new(),
            reason: format!("at most {MAX_RULES} rules per phase"),
        });
    }
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let err = |location: String, reason: String| PolicyError {
            phase: phase.name(),
            rule_index: i,
            rule_name: rule.name.clone().unwrap_or_default(),
            location,
            reason,
        };
        if rule.actions.is_empty() {
            return Err(err(
                "actions".into(),
                "a rule needs at least one action".into(),
            ));
        }
        let mut exprs = Vec::with_capacity(rule.expressions.len());
        for (j, src) in rule.expressions.iter().enumerate() {
            let e = Expr::compile(src).map_err(|r| err(format!("expressions[{j}]"), r))?;
            check_phase_vars(phase, e.needs()).map_err(|r| err(format!("expressions[{j}]"), r))?;
            *needs = needs.union(e.needs());
            exprs.push(e);
        }
        let mut actions = Vec::with_capacity(rule.actions.len());
        for (j, a) in rule.actions.iter().enumerate() {
            let at = format!("actions[{j}] ({})", a.kind);
            let c = CompiledAction::compile(&a.kind, &a.config, phase)
                .map_err(|r| err(at.clone(), r))?;
            check_phase_vars(phase, c.needs()).map_err(|r| err(at, r))?;
            *needs = needs.union(c.needs());
            actions.push(c);
        }
        out.push(CompiledRule {
            name: rule.name.clone().unwrap_or_default(),
            exprs,
            actions,
        });
    }
    Ok(out)
}

fn check_phase_vars(phase: PhaseKind, needs: Needs) -> Result<(), String> {
    match phase {
        PhaseKind::TcpConnect if needs.contains(Needs::REQ) || needs.contains(Needs::RES) => {
            Err("on_tcp_connect has no req or res variables".into())
        }
        PhaseKind::HttpRequest if needs.contains(Needs::RES) => {
            Err("res variables exist only in on_http_response".into())
        }
        _ => Ok(()),
    }
}

/// The `req` fields any expression or config string of `doc` reads.
fn req_fields_of(doc: &TrafficPolicy) -> crate::policy::request::ReqFields {
    use crate::policy::request::ReqFields;
    fn walk(v: &serde_json::Value, acc: &mut ReqFields) {
        match v {
            serde_json::Value::String(s) => *acc = acc.union(ReqFields::scan(s)),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, acc)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, acc)),
            _ => {}
        }
    }
    let mut acc = ReqFields::NONE;
    for rule in doc
        .on_tcp_connect
        .iter()
        .chain(&doc.on_http_request)
        .chain(&doc.on_http_response)
    {
        for e in &rule.expressions {
            acc = acc.union(ReqFields::scan(e));
        }
        for a in &rule.actions {
            if let Some(c) = &a.config {
                walk(c, &mut acc);
            }
        }
    }
    acc
}

impl CompiledPolicy {
    pub fn compile(doc: &TrafficPolicy) -> Result<CompiledPolicy, PolicyError> {
        let mut tcp_needs = Needs::NONE;
        let mut req_needs = Needs::NONE;
        let mut res_needs = Needs::NONE;
        let on_tcp_connect =
            compile_phase(PhaseKind::TcpConnect, &doc.on_tcp_connect, &mut tcp_needs)?;
        let on_http_request =
            compile_phase(PhaseKind::HttpRequest, &doc.on_http_request, &mut req_needs)?;
        let on_http_response = compile_phase(
            PhaseKind::HttpResponse,
            &doc.on_http_response,
            &mut res_needs,
        )?;
        let all = tcp_needs.union(req_needs).union(res_needs);
        let actions = || {
            on_http_request
                .iter()
                .chain(&on_http_response)
                .flat_map(|r| r.actions.iter())
        };
        let compresses = actions().any(|a| matches!(a, CompiledAction::CompressResponse(_)));
        let body_limit = on_http_request
            .iter()
            .flat_map(|r| r.actions.iter())
            .filter_map(CompiledAction::body_limit)
            .max();
        let always_terminates = on_http_request
            .iter()
            .any(|r| r.exprs.is_empty() && r.actions.iter().any(CompiledAction::terminates));
        Ok(CompiledPolicy {
            record_results: all.contains(Needs::ACTIONS),
            response_needs_req: res_needs.contains(Needs::REQ),
            req_fields: req_fields_of(doc),
            on_tcp_connect,
            on_http_request,
            on_http_response,
            body_limit,
            compresses,
            always_terminates,
        })
    }

    /// Parses a YAML or JSON document and compiles it.
    pub fn from_text(text: &str) -> Result<CompiledPolicy, String> {
        let doc = TrafficPolicy::parse(text).map_err(|e| e.to_string())?;
        CompiledPolicy::compile(&doc).map_err(|e| e.to_string())
    }

    /// True when every request is answered by the policy itself (an
    /// endpoint needs no upstream then).
    pub fn always_terminates(&self) -> bool {
        self.always_terminates
    }

    /// The request body the request phase needs buffered before it runs.
    pub fn body_limit(&self) -> Option<usize> {
        self.body_limit
    }

    pub fn has_tcp_connect(&self) -> bool {
        !self.on_tcp_connect.is_empty()
    }

    pub fn has_http_request(&self) -> bool {
        !self.on_http_request.is_empty()
    }

    pub fn has_http_response(&self) -> bool {
        !self.on_http_response.is_empty()
    }
}

/// Runs one phase's rules in order: a rule whose expressions all hold
/// runs its actions in order until one ends the phase.
///
/// `async` because `oauth`, `openid-connect` and `jwt-validation` await
/// their identity provider; every other action completes at once.
pub(crate) async fn run_rules(rules: &[CompiledRule], cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
    'rules: for rule in rules {
        for e in &rule.exprs {
            let needs = e.needs();
            if !e.eval_bool(cx.scope(needs))? {
                continue 'rules;
            }
        }
        for a in &rule.actions {
            match a.run(cx).await? {
                Flow::Next => {}
                other => {
                    tracing::trace!(rule = %rule.name, "rule ended the phase");
                    return Ok(other);
                }
            }
        }
    }
    Ok(Flow::Next)
}
