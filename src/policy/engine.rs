//! The evaluation machinery shared by every phase: a lazy CEL scope that
//! builds only the variables expressions read, the context actions run
//! in, and what an action tells the phase runner.

use std::collections::HashMap;

use cel_interpreter::{Context, Value};

use super::cel::{self, EvalError, Needs};
use super::exchange::Exchange;
use super::reply::ReplyStyle;
use super::request::{self, ConnInfo, RequestInfo, ResponseInfo};
use crate::route::Endpoint;

/// Which phase is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    TcpConnect,
    HttpRequest,
    HttpResponse,
}

impl PhaseKind {
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::TcpConnect => "on_tcp_connect",
            PhaseKind::HttpRequest => "on_http_request",
            PhaseKind::HttpResponse => "on_http_response",
        }
    }
}

/// A runtime failure: ERR_NGROK_3900, or 3901 for a regex that only
/// became invalid after interpolation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fail {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("invalid regular expression after interpolation: {0}")]
    Regex(String),
}

/// What an action tells the phase runner.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next action.
    Next,
    /// A reply was written to the output: stop.
    Done,
    /// Hand the request to an internal endpoint.
    Forward {
        url: String,
        continue_on_error: bool,
    },
    /// Drop the connection without a reply.
    Close,
}

/// The facts of the exchange an expression may read.
#[derive(Clone, Copy)]
pub struct Facts<'a, 'r> {
    pub req: Option<&'a RequestInfo<'r>>,
    pub res: Option<&'a ResponseInfo<'r>>,
    pub conn: &'a ConnInfo,
    pub endpoint: &'a Endpoint,
}

/// A CEL scope built on demand: variables are added the first time an
/// expression needs them, and rebuilt after `set-vars` or an action
/// result changes them.
#[derive(Default)]
pub struct Scope {
    ctx: Option<Context<'static>>,
    built: Needs,
}

impl Scope {
    pub fn invalidate(&mut self, n: Needs) {
        self.built = self.built.minus(n);
    }

    pub fn get(
        &mut self,
        needs: Needs,
        facts: &Facts<'_, '_>,
        ex: &mut Exchange,
    ) -> &Context<'static> {
        let missing = needs.minus(self.built);
        let ctx = self.ctx.get_or_insert_with(|| cel::scope(HashMap::new()));
        if missing.is_empty() {
            return ctx;
        }
        if missing.contains(Needs::REQ) {
            // Only the fields the policies read (all when unknown).
            let want = if ex.req_fields == request::ReqFields::NONE {
                request::ReqFields::ALL
            } else {
                ex.req_fields
            };
            let v = match (&ex.req_value, facts.req) {
                (Some(v), _) if ex.req_value_fields.covers(want) => v.clone(),
                (_, Some(r)) => {
                    let fields = want.union(ex.req_value_fields);
                    let v = request::req_value(r, fields);
                    ex.req_value = Some(v.clone());
                    ex.req_value_fields = fields;
                    v
                }
                (Some(v), None) => v.clone(),
                (None, None) => Value::Null,
            };
            ctx.add_variable_from_value("req", v);
        }
        if missing.contains(Needs::RES) {
            let v = facts.res.map_or(Value::Null, request::res_value);
            ctx.add_variable_from_value("res", v);
        }
        if missing.contains(Needs::CONN) {
            ctx.add_variable_from_value("conn", request::conn_value(facts.conn));
        }
        if missing.contains(Needs::ENDPOINT) {
            ctx.add_variable_from_value("endpoint", request::endpoint_value(facts.endpoint));
        }
        if missing.contains(Needs::TIME) {
            ctx.add_variable_from_value("time", request::time_value());
        }
        if missing.contains(Needs::VARS) {
            let v = cel::map(ex.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            ctx.add_variable_from_value("vars", v);
        }
        if missing.contains(Needs::ACTIONS) {
            let ngrok = cel::map(ex.results.iter().map(|(k, v)| (*k, v.clone())));
            ctx.add_variable_from_value("actions", cel::map([("ngrok", ngrok)]));
        }
        self.built = self.built.union(missing);
        ctx
    }
}

/// Everything an action runs with.
pub struct Cx<'a, 'r> {
    pub phase: PhaseKind,
    pub facts: Facts<'a, 'r>,
    pub ex: &'a mut Exchange,
    pub scope: &'a mut Scope,
    pub style: ReplyStyle,
    pub out: &'a mut Vec<u8>,
    /// The buffered request body, when the policy asked for it.
    pub body: Option<&'a [u8]>,
    /// Record `actions.ngrok.*` results (some expression reads them).
    pub record: bool,
}

impl Cx<'_, '_> {
    pub fn scope(&mut self, needs: Needs) -> &Context<'static> {
        self.scope.get(needs, &self.facts, self.ex)
    }

    /// Records an action's result variables.
    pub fn result(&mut self, key: &'static str, v: impl FnOnce() -> Value) {
        if self.record {
            self.ex.set_result(key, v());
            self.scope.invalidate(Needs::ACTIONS);
        }
    }

    pub fn set_var(&mut self, name: &str, v: Value) {
        self.ex.set_var(name, v);
        self.scope.invalidate(Needs::VARS);
    }
}
