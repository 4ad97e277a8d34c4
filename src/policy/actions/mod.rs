//! Policy actions: each module compiles one action's config (refusing bad
//! values at load with the field's name) and runs it on an exchange.
//!
//! The table of actions, the phases ngrok allows each in, and which are
//! not supported yet lives here, in one place.

pub mod auth;
pub mod compress;
pub mod forward;
pub mod headers;
pub mod identity;
pub mod ips;
pub mod rate_limit;
pub mod rate_window;
pub mod respond;
pub mod rewrite;
pub mod vars;
pub mod webhook;

use serde::de::DeserializeOwned;

use super::cel::Needs;
use super::engine::{Cx, Fail, Flow, PhaseKind};
use super::oidc::AuthKind;

/// A compiled action.
#[derive(Debug)]
pub enum CompiledAction {
    CustomResponse(respond::CustomResponse),
    Deny(respond::Deny),
    Redirect(rewrite::Redirect),
    UrlRewrite(rewrite::UrlRewrite),
    AddHeaders(headers::AddHeaders),
    RemoveHeaders(headers::RemoveHeaders),
    BasicAuth(auth::BasicAuth),
    RestrictIps(ips::RestrictIps),
    RateLimit(rate_limit::RateLimit),
    SetVars(vars::SetVars),
    Log(vars::Log),
    CompressResponse(compress::CompressResponse),
    VerifyWebhook(webhook::VerifyWebhook),
    ForwardInternal(forward::ForwardInternal),
    /// Boxed: far larger than the other actions.
    Login(Box<identity::Login>),
    JwtValidation(Box<identity::JwtValidation>),
}

use PhaseKind::{HttpRequest as Req, HttpResponse as Res, TcpConnect as Tcp};

/// Actions ngrok documents, with the phases it allows them in.
const KNOWN: &[(&str, &[PhaseKind])] = &[
    ("add-headers", &[Req, Res]),
    ("remove-headers", &[Req, Res]),
    ("custom-response", &[Req, Res]),
    ("deny", &[Tcp, Req]),
    ("redirect", &[Req]),
    ("url-rewrite", &[Req]),
    ("forward-internal", &[Tcp, Req]),
    ("basic-auth", &[Req]),
    ("restrict-ips", &[Req, Res, Tcp]),
    ("rate-limit", &[Req]),
    ("compress-response", &[Req, Res]),
    ("log", &[Tcp, Req, Res]),
    ("set-vars", &[Tcp, Req, Res]),
    ("verify-webhook", &[Req]),
    ("oauth", &[Req]),
    ("openid-connect", &[Req]),
    ("jwt-validation", &[Req]),
    ("terminate-tls", &[Tcp]),
    ("circuit-breaker", &[Req]),
    ("close-connection", &[Tcp, Req]),
    ("http-request", &[Req, Res]),
    ("request-body-find-replace", &[Req]),
    ("response-body-find-replace", &[Res]),
    ("sse-find-replace", &[]),
    ("owasp-crs-request", &[Req]),
    ("owasp-crs-response", &[Res]),
    ("saml", &[Req]),
    ("ai-gateway", &[Req]),
];

/// Parses an action's config; a missing config is an empty object.
pub fn config<T: DeserializeOwned>(config: &Option<serde_json::Value>) -> Result<T, String> {
    let v = match config {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(v) => v.clone(),
    };
    serde_json::from_value(v).map_err(|e| format!("config: {e}"))
}

impl CompiledAction {
    /// Compiles one action for `phase`.
    pub fn compile(
        kind: &str,
        cfg: &Option<serde_json::Value>,
        phase: PhaseKind,
    ) -> Result<CompiledAction, String> {
        let Some((_, phases)) = KNOWN.iter().find(|(k, _)| *k == kind) else {
            return Err(format!("unknown action type {kind:?}"));
        };
        if !phases.contains(&phase) {
            let names: Vec<&str> = phases.iter().map(|p| p.name()).collect();
            return Err(format!(
                "{kind} is not allowed in {} (allowed in: {})",
                phase.name(),
                if names.is_empty() {
                    "on_event_stream_message".to_owned()
                } else {
                    names.join(", ")
                }
            ));
        }
        let tcp = phase == Tcp;
        Ok(match kind {
            "custom-response" => {
                CompiledAction::CustomResponse(respond::CustomResponse::compile(cfg)?)
            }
            "deny" => CompiledAction::Deny(respond::Deny::compile(cfg, tcp)?),
            "redirect" => CompiledAction::Redirect(rewrite::Redirect::compile(cfg)?),
            "url-rewrite" => CompiledAction::UrlRewrite(rewrite::UrlRewrite::compile(cfg)?),
            "add-headers" => CompiledAction::AddHeaders(headers::AddHeaders::compile(cfg, phase)?),
            "remove-headers" => {
                CompiledAction::RemoveHeaders(headers::RemoveHeaders::compile(cfg, phase)?)
            }
            "basic-auth" => CompiledAction::BasicAuth(auth::BasicAuth::compile(cfg)?),
            "restrict-ips" => CompiledAction::RestrictIps(ips::RestrictIps::compile(cfg)?),
            "rate-limit" => CompiledAction::RateLimit(rate_limit::RateLimit::compile(cfg)?),
            "set-vars" => CompiledAction::SetVars(vars::SetVars::compile(cfg)?),
            "log" => CompiledAction::Log(vars::Log::compile(cfg)?),
            "compress-response" => {
                CompiledAction::CompressResponse(compress::CompressResponse::compile(cfg)?)
            }
            "verify-webhook" => {
                CompiledAction::VerifyWebhook(webhook::VerifyWebhook::compile(cfg)?)
            }
            "forward-internal" if !tcp => {
                CompiledAction::ForwardInternal(forward::ForwardInternal::compile(cfg)?)
            }
            "oauth" => {
                CompiledAction::Login(Box::new(identity::Login::compile(AuthKind::OAuth, cfg)?))
            }
            "openid-connect" => {
                CompiledAction::Login(Box::new(identity::Login::compile(AuthKind::Oidc, cfg)?))
            }
            "jwt-validation" => {
                CompiledAction::JwtValidation(Box::new(identity::JwtValidation::compile(cfg)?))
            }
            other => return Err(format!("{other} is not supported yet")),
        })
    }

    /// Variables the action's config reads.
    pub fn needs(&self) -> Needs {
        match self {
            CompiledAction::CustomResponse(a) => a.needs(),
            CompiledAction::Redirect(a) => a.needs(),
            CompiledAction::UrlRewrite(a) => a.needs(),
            CompiledAction::AddHeaders(a) => a.needs(),
            CompiledAction::BasicAuth(a) => a.needs(),
            CompiledAction::RestrictIps(a) => a.needs(),
            CompiledAction::RateLimit(a) => a.needs(),
            CompiledAction::SetVars(a) => a.needs(),
            CompiledAction::Log(a) => a.needs(),
            CompiledAction::VerifyWebhook(a) => a.needs(),
            CompiledAction::ForwardInternal(a) => a.needs(),
            CompiledAction::Deny(_)
            | CompiledAction::RemoveHeaders(_)
            | CompiledAction::CompressResponse(_)
            | CompiledAction::Login(_)
            | CompiledAction::JwtValidation(_) => Needs::NONE,
        }
    }

    /// Whether the action always ends the phase with a reply.
    pub fn terminates(&self) -> bool {
        matches!(
            self,
            CompiledAction::CustomResponse(_)
                | CompiledAction::Deny(_)
                | CompiledAction::ForwardInternal(_)
        )
    }

    /// The request body this action needs buffered, in bytes.
    pub fn body_limit(&self) -> Option<usize> {
        match self {
            CompiledAction::VerifyWebhook(_) => Some(webhook::BODY_LIMIT),
            CompiledAction::JwtValidation(a) if a.needs_body() => Some(identity::JWT_BODY_LIMIT),
            _ => None,
        }
    }

    /// Runs the action. Only the identity actions ever wait (for their
    /// provider); every other action completes at once.
    pub async fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        match self {
            CompiledAction::CustomResponse(a) => a.run(cx),
            CompiledAction::Deny(a) => a.run(cx),
            CompiledAction::Redirect(a) => a.run(cx),
            CompiledAction::UrlRewrite(a) => a.run(cx),
            CompiledAction::AddHeaders(a) => a.run(cx),
            CompiledAction::RemoveHeaders(a) => a.run(cx),
            CompiledAction::BasicAuth(a) => a.run(cx),
            CompiledAction::RestrictIps(a) => a.run(cx),
            CompiledAction::RateLimit(a) => a.run(cx),
            CompiledAction::SetVars(a) => a.run(cx),
            CompiledAction::Log(a) => a.run(cx),
            CompiledAction::CompressResponse(a) => a.run(cx),
            CompiledAction::VerifyWebhook(a) => a.run(cx),
            CompiledAction::ForwardInternal(a) => a.run(cx),
            CompiledAction::Login(a) => a.run(cx).await,
            CompiledAction::JwtValidation(a) => a.run(cx).await,
        }
    }
}

/// Refuses more than `max` entries in a list/map field.
pub fn at_most(field: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("config.{field}: at most {max} entries, got {n}"));
    }
    Ok(())
}

/// Compiles an interpolated config string, naming its field on error.
pub fn template(field: &str, s: &str) -> Result<super::template::Template, String> {
    super::template::Template::compile(s).map_err(|e| format!("config.{field}: {e}"))
}

#[cfg(test)]
mod tests;
