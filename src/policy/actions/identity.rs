//! `oauth`, `openid-connect` and `jwt-validation` as policy actions: thin
//! adapters between the rule loop and the self-contained modules in
//! [`crate::policy::oidc`] and [`crate::policy::jwt`].
//!
//! Owns: the request view those modules read, recording their result as
//! `actions.ngrok.<oauth|oidc|jwt_validation>`, and writing their answers
//! as edge replies. Never does I/O itself: the modules await their own
//! outbound requests (discovery, token, JWKS) on the auth fetch thread.
//! Their futures are boxed so that the connection drivers' futures stay
//! small for the endpoints that use none of these actions.

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::policy::cel;
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::jwt::JwtAction;
use crate::policy::oidc::{AuthAction, AuthKind, AuthOutcome, AuthRequest};
use crate::policy::reply::{self, is_token, safe_value};
use crate::policy::request::RequestInfo;

/// Bodies up to this size are buffered when `jwt-validation` may read a
/// token from the body (POST/PUT/PATCH forms and JSON documents).
pub const JWT_BODY_LIMIT: usize = 1024 * 1024;

/// A compiled `oauth` or `openid-connect` action.
#[derive(Debug)]
pub struct Login {
    action: AuthAction,
    /// `oauth` or `oidc`: the `actions.ngrok.*` key.
    key: &'static str,
}

/// A compiled `jwt-validation` action.
#[derive(Debug)]
pub struct JwtValidation {
    action: JwtAction,
}

/// The modules report `(field, reason)`; the engine wants
/// `config.<field>: <reason>` like every other action.
fn located((field, reason): (String, String)) -> String {
    if field.is_empty() || field == "config" {
        format!("config: {reason}")
    } else {
        format!("config.{field}: {reason}")
    }
}

/// A missing config is an empty object (then refused for its required
/// fields by the module, with their names).
fn config_value(cfg: &Option<Json>) -> Json {
    match cfg {
        None | Some(Json::Null) => Json::Object(Default::default()),
        Some(v) => v.clone(),
    }
}

impl Login {
    pub fn compile(kind: AuthKind, cfg: &Option<Json>) -> Result<Login, String> {
        let action = AuthAction::compile(kind, &config_value(cfg)).map_err(located)?;
        Ok(Login {
            action,
            key: match kind {
                AuthKind::OAuth => "oauth",
                AuthKind::Oidc => "oidc",
            },
        })
    }

    pub async fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let Some(req) = cx.facts.req else {
            return Ok(Flow::Next);
        };
        let view = RequestView::of(req);
        let outcome = Box::pin(self.action.on_request(&view.as_auth())).await;
        Ok(finish(cx, self.key, outcome))
    }
}

impl JwtValidation {
    pub fn compile(cfg: &Option<Json>) -> Result<JwtValidation, String> {
        let action = JwtAction::compile(&config_value(cfg)).map_err(located)?;
        Ok(JwtValidation { action })
    }

    /// Whether the request body must be buffered for this action.
    pub fn needs_body(&self) -> bool {
        self.action.needs_body()
    }

    pub async fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let Some(req) = cx.facts.req else {
            return Ok(Flow::Next);
        };
        let view = RequestView::of(req);
        let body = if self.action.needs_body() {
            cx.body
        } else {
            None
        };
        let outcome = Box::pin(self.action.on_request(&view.as_auth(), body)).await;
        Ok(finish(cx, "jwt_validation", outcome))
    }
}

/// Records the result on `Continue`; writes the module's answer on
/// `Respond` (keep-alive as for every edge reply: `cx.style` says whether
/// to close, and HEAD requests get no body).
fn finish(cx: &mut Cx<'_, '_>, key: &'static str, outcome: AuthOutcome) -> Flow {
    match outcome {
        AuthOutcome::Continue { vars } => {
            cx.result(key, || cel::from_json(&vars));
            Flow::Next
        }
        AuthOutcome::Respond {
            status,
            headers,
            body,
        } => {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(n, v)| {
                    let ok = is_token(n) && safe_value(v) && !n.eq_ignore_ascii_case("connection");
                    if !ok {
                        tracing::warn!(header = %n, "auth action produced an invalid header; dropped");
                    }
                    ok
                })
                .collect();
            let r = reply::prepare(status, &headers, body);
            reply::write_prepared(&r, cx.style, cx.out);
            Flow::Done
        }
    }
}

/// What the auth modules read of a request, borrowed where the bytes are
/// valid UTF-8.
struct RequestView<'a> {
    method: Cow<'a, str>,
    scheme: &'static str,
    host: Cow<'a, str>,
    path_and_query: Cow<'a, str>,
    headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> RequestView<'a> {
    fn of(req: &RequestInfo<'a>) -> RequestView<'a> {
        let authority = req.authority();
        let host = if authority.is_empty() {
            Cow::Borrowed(req.host)
        } else {
            String::from_utf8_lossy(authority)
        };
        RequestView {
            method: String::from_utf8_lossy(req.method()),
            scheme: req.scheme.as_str(),
            host,
            path_and_query: String::from_utf8_lossy(req.path_and_query()),
            headers: req
                .headers()
                .filter_map(|(n, v)| Some((std::str::from_utf8(n).ok()?, v)))
                .collect(),
        }
    }

    fn as_auth(&self) -> AuthRequest<'_> {
        AuthRequest {
            method: &self.method,
            scheme: self.scheme,
            host: &self.host,
            path_and_query: &self.path_and_query,
            headers: &self.headers,
        }
    }
}

#[cfg(test)]
mod tests;
