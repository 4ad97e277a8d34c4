//! The policy's entry points for the connection drivers, one per phase:
//! `on_tcp_connect` (once per connection and endpoint), `on_http_request`
//! (before forwarding; follows `forward-internal` hops) and
//! `on_http_response` (after the upstream's head). Replies the policy
//! makes are written as HTTP/1.1 bytes into the driver's buffer.

use std::sync::Arc;

use super::actions::compress;
use super::compile::{run_rules, CompiledPolicy};
use super::engine::{Cx, Facts, Fail, Flow, PhaseKind, Scope};
use super::exchange::Exchange;
use super::reply::{codes, write_error, ReplyStyle};
use super::request::{self, ConnInfo, RequestInfo, ResponseInfo};
use crate::route::Endpoint;

/// forward-internal hops allowed before ERR_NGROK_3501.
pub const MAX_HOPS: usize = 10;

/// What the request phase decided.
#[derive(Debug)]
pub enum RequestOutcome {
    /// Forward upstream, with the edits in the exchange: to the given
    /// endpoint's upstream after a forward-internal, else to the routed
    /// endpoint's.
    Forward(Option<Arc<Endpoint>>),
    /// A reply was written to `out`.
    Replied,
    /// Drop the connection.
    Close,
}

/// What the response phase decided.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Relay the upstream response with the exchange's response edits.
    Relay,
    /// A reply replacing the upstream's was written to `out`; discard the
    /// upstream body and do not reuse its connection.
    Replied,
}

fn fail_reply(endpoint: &Endpoint, f: &Fail, style: ReplyStyle, out: &mut Vec<u8>) {
    tracing::warn!(endpoint = %endpoint.url, error = %f, "traffic policy runtime error");
    let err = match f {
        Fail::Eval(_) => codes::RUNTIME,
        Fail::Regex(_) => codes::BAD_REGEX,
    };
    write_error(err, "", &[], style, out);
}

/// Runs the `on_tcp_connect` phase. False: close the connection.
pub async fn on_tcp_connect(endpoint: &Endpoint, conn: &ConnInfo, ex: &mut Exchange) -> bool {
    let Some(policy) = &endpoint.policy else {
        return true;
    };
    if !policy.has_tcp_connect() {
        return true;
    }
    ex.reset();
    ex.record_results = policy.record_results;
    let mut scope = Scope::default();
    let mut out = Vec::new();
    let mut cx = Cx {
        phase: PhaseKind::TcpConnect,
        facts: Facts {
            req: None,
            res: None,
            conn,
            endpoint,
        },
        ex,
        scope: &mut scope,
        style: ReplyStyle::default(),
        out: &mut out,
        body: None,
        record: policy.record_results,
    };
    let flow = run_rules(&policy.on_tcp_connect, &mut cx).await;
    match flow {
        Ok(Flow::Close) => false,
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(endpoint = %endpoint.url, error = %e, "on_tcp_connect failed; closing");
            false
        }
    }
}

async fn request_phase(
    policy: &CompiledPolicy,
    endpoint: &Endpoint,
    req: &RequestInfo<'_>,
    body: Option<&[u8]>,
    ex: &mut Exchange,
    style: ReplyStyle,
    out: &mut Vec<u8>,
) -> Result<Flow, Fail> {
    ex.vars.clear();
    ex.record_results |= policy.record_results;
    ex.req_fields = ex.req_fields.union(policy.req_fields);
    if policy.compresses {
        compress::remember_accept_encoding(ex, req.header_values("accept-encoding"));
    }
    let mut scope = Scope::default();
    let flow = {
        let mut cx = Cx {
            phase: PhaseKind::HttpRequest,
            facts: Facts {
                req: Some(req),
                res: None,
                conn: req.conn,
                endpoint,
            },
            ex: &mut *ex,
            scope: &mut scope,
            style,
            out,
            body,
            record: policy.record_results,
        };
        run_rules(&policy.on_http_request, &mut cx).await?
    };
    if policy.response_needs_req && !ex.req_value_fields.covers(ex.req_fields) {
        let fields = ex.req_fields.union(ex.req_value_fields);
        ex.req_value = Some(request::req_value(req, fields));
        ex.req_value_fields = fields;
    }
    Ok(flow)
}

/// Runs the `on_http_request` phase of `endpoint` (and of the internal
/// endpoints it forwards to). `lookup` resolves a forward-internal URL.
/// `ex` must have been reset for this exchange.
pub async fn on_http_request(
    endpoint: &Arc<Endpoint>,
    req: &RequestInfo<'_>,
    body: Option<&[u8]>,
    lookup: &dyn Fn(&str) -> Option<Arc<Endpoint>>,
    ex: &mut Exchange,
    style: ReplyStyle,
    out: &mut Vec<u8>,
) -> RequestOutcome {
    let mut current: Option<Arc<Endpoint>> = None;
    loop {
        let ep: &Arc<Endpoint> = current.as_ref().unwrap_or(endpoint);
        let Some(policy) = &ep.policy else {
            return RequestOutcome::Forward(current);
        };
        let flow = request_phase(policy, ep, req, body, ex, style, out).await;
        match flow {
            Ok(Flow::Next) => return RequestOutcome::Forward(current),
            Ok(Flow::Done) => return RequestOutcome::Replied,
            Ok(Flow::Close) => return RequestOutcome::Close,
            Ok(Flow::Forward {
                url,
                continue_on_error,
            }) => {
                if ex.chain.len() >= MAX_HOPS {
                    write_error(codes::HOP_LIMIT, "", &[], style, out);
                    return RequestOutcome::Replied;
                }
                let Some(next) = lookup(&url) else {
                    if continue_on_error {
                        return RequestOutcome::Forward(current);
                    }
                    tracing::debug!(%url, "forward-internal target is not online");
                    write_error(codes::INTERNAL_NOT_FOUND, &url, &[], style, out);
                    return RequestOutcome::Replied;
                };
                ex.chain.push(next.clone());
                current = Some(next);
            }
            Err(f) => {
                fail_reply(ep, &f, style, out);
                return RequestOutcome::Replied;
            }
        }
    }
}

/// Runs the `on_http_response` phases (innermost forward-internal target
/// first, the routed endpoint last), then decides compression.
pub fn on_http_response(
    endpoint: &Endpoint,
    res: &ResponseInfo<'_>,
    conn: &ConnInfo,
    ex: &mut Exchange,
    style: ReplyStyle,
    out: &mut Vec<u8>,
) -> ResponseOutcome {
    let chain = std::mem::take(&mut ex.chain);
    let order = chain
        .iter()
        .rev()
        .map(|e| &**e)
        .chain(std::iter::once(endpoint));
    let mut outcome = ResponseOutcome::Relay;
    for ep in order {
        let Some(policy) = &ep.policy else {
            continue;
        };
        if !policy.has_http_response() {
            continue;
        }
        ex.vars.clear();
        let mut scope = Scope::default();
        let flow = {
            let mut cx = Cx {
                phase: PhaseKind::HttpResponse,
                facts: Facts {
                    req: None,
                    res: Some(res),
                    conn,
                    endpoint: ep,
                },
                ex: &mut *ex,
                scope: &mut scope,
                style,
                out: &mut *out,
                body: None,
                record: policy.record_results,
            };
            // No response action awaits: poll the future once.
            poll_once(run_rules(&policy.on_http_response, &mut cx)).unwrap_or_else(|| {
                Err(Fail::Eval(super::cel::EvalError {
                    expr: String::new(),
                    reason: "a response action tried to wait".into(),
                }))
            })
        };
        match flow {
            Ok(Flow::Next) | Ok(Flow::Forward { .. }) | Ok(Flow::Close) => {}
            Ok(Flow::Done) => {
                outcome = ResponseOutcome::Replied;
                break;
            }
            Err(f) => {
                fail_reply(ep, &f, style, out);
                outcome = ResponseOutcome::Replied;
                break;
            }
        }
    }
    ex.chain = chain;
    if outcome == ResponseOutcome::Relay {
        compress::decide(ex, res.buf, res.head, style.head_request);
    }
    outcome
}

/// Finds the endpoint a forward-internal URL names, among the
/// snapshot's `.internal` endpoints of the same scheme.
pub fn internal_lookup(
    snap: &crate::runtime::snapshot::Snapshot,
    url: &str,
) -> Option<Arc<Endpoint>> {
    let (scheme, authority, _) = super::actions::rewrite::split_url(url)?;
    let mut host = String::new();
    if !crate::route::normalize_host(authority.as_bytes(), &mut host)
        || !host.ends_with(".internal")
    {
        return None;
    }
    let table = if scheme.eq_ignore_ascii_case("https") {
        &snap.https_routes
    } else if scheme.eq_ignore_ascii_case("http") {
        &snap.http_routes
    } else {
        return None;
    };
    table.lookup(&host).cloned()
}

/// Whether an endpoint is internal: reachable only through
/// forward-internal, never from a client directly.
pub fn is_internal(endpoint: &Endpoint) -> bool {
    endpoint.host.ends_with(".internal")
}

/// Polls a future that is known to complete without waiting; `None` if
/// it did wait (an action that needs I/O ran where none is allowed).
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let f = std::pin::pin!(f);
    match f.poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Runs the request phase to completion on the current thread, for
/// callers that are not async (benchmarks, tests). Only `oauth`,
/// `openid-connect` and `jwt-validation` may wait (for their provider):
/// if one does, the reply is ERR_NGROK_3900.
pub fn on_http_request_now(
    endpoint: &Arc<Endpoint>,
    req: &RequestInfo<'_>,
    body: Option<&[u8]>,
    lookup: &dyn Fn(&str) -> Option<Arc<Endpoint>>,
    ex: &mut Exchange,
    style: ReplyStyle,
    out: &mut Vec<u8>,
) -> RequestOutcome {
    poll_once(on_http_request(endpoint, req, body, lookup, ex, style, out)).unwrap_or_else(|| {
        write_error(codes::RUNTIME, "", &[], style, out);
        RequestOutcome::Replied
    })
}
