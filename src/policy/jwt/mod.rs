//! The `jwt-validation` traffic policy action: a request must carry a
//! JWS-signed JWT (header or, on POST/PUT/PATCH, body) signed by a key
//! from the configured JWKS URLs, with an allowed algorithm, issuer and
//! audience, and not expired.
//!
//! Owns: token extraction, verification and the 401/502 answers. Never
//! blocks: JWKS documents are fetched through the auth fetch thread
//! ([`crate::policy::oidc::fetch`]) and cached 15 minutes, refreshed
//! early on an unknown `kid` (at most every 30 s). `none` and HMAC
//! algorithms are refused at load and at request time.
//!
//! Errors (ours; ngrok documents the codes but not their statuses):
//! 3406 no token, 3408 unreadable body, 3409 prefix missing, 3410 body of
//! another content type, 3411 body token on a method without a body, 3412
//! malformed token, 3413 algorithm not allowed, 3414 signature or key,
//! 3415 expired, 3416 not yet valid, 3417 issuer, 3418 audience, 3419
//! missing claim: all 401 with `WWW-Authenticate: Bearer`; 3422 JWKS
//! unreachable: 502.

pub mod config;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{json, Value};
use tracing::debug;

use crate::policy::oidc::fetch::Fetcher;
use crate::policy::oidc::idtoken::{verify_with_keys, TokenError, LEEWAY_SECS};
use crate::policy::oidc::jwks::{JwksCache, JwksError};
use crate::policy::oidc::response::{error, wants_json, AuthError};
use crate::policy::oidc::url::parse_query;
use crate::policy::oidc::{AuthOutcome, AuthRequest};
use config::{JwtConfig, Method, TokenSource};

/// A compiled `jwt-validation` action (`Send + Sync`).
pub struct JwtAction {
    cfg: JwtConfig,
    jwks: Vec<Arc<JwksCache>>,
    validation: Validation,
}

impl std::fmt::Debug for JwtAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAction")
            .field("issuers", &self.cfg.issuers)
            .field("jkus", &self.cfg.jkus)
            .finish()
    }
}

/// A refusal: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl JwtAction {
    pub fn compile(config: &Value) -> Result<JwtAction, (String, String)> {
        let cfg = config::parse(config)?;
        let fetcher = Fetcher::new(cfg.ca_bundle.as_deref().map(std::path::Path::new))
            .map_err(|e| ("ca_bundle".to_string(), e.to_string()))?;
        let jwks = cfg
            .jkus
            .iter()
            .map(|u| Arc::new(JwksCache::new(u.clone(), fetcher.clone())))
            .collect();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&cfg.issuers);
        if cfg.audiences.is_empty() {
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "iss"]);
        } else {
            validation.set_audience(&cfg.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        }
        Ok(JwtAction {
            cfg,
            jwks,
            validation,
        })
    }

    /// Whether a token may be read from the body: the caller must then
    /// buffer POST/PUT/PATCH bodies and pass them to [`Self::on_request`].
    pub fn needs_body(&self) -> bool {
        self.cfg.tokens.iter().any(|t| t.method == Method::Body)
    }

    pub async fn on_request(&self, req: &AuthRequest<'_>, body: Option<&[u8]>) -> AuthOutcome {
        match self.check(req, body).await {
            Ok(vars) => AuthOutcome::Continue { vars },
            Err(r) => {
                debug!(code = r.code, reason = %r.message, "jwt-validation refused a request");
                let status = if r.code == "ERR_NGROK_3422" { 502 } else { 401 };
                let mut headers = Vec::new();
                if status == 401 {
                    headers.push((
                        "www-authenticate".to_string(),
                        "Bearer error=\"invalid_token\"".to_string(),
                    ));
                }
                error(
                    &AuthError::new(status, r.code, r.message),
                    wants_json(req.headers),
                    headers,
                )
            }
        }
    }

    async fn check(&self, req: &AuthRequest<'_>, body: Option<&[u8]>) -> Result<Value, Refusal> {
        let (source, token) = self.extract(req, body)?;
        let claims = self.verify(&token).await?;
        Ok(json!({
            "tokens": [{ "type": source.kind, "claims": claims }],
            "error": { "code": "", "message": "" },
        }))
    }

    /// The first configured location holding a token.
    fn extract(
        &self,
        req: &AuthRequest<'_>,
        body: Option<&[u8]>,
    ) -> Result<(&TokenSource, String), Refusal> {
        let mut first_problem: Option<Refusal> = None;
        let only_body = self.cfg.tokens.iter().all(|t| t.method == Method::Body);
        for source in &self.cfg.tokens {
            let found = match source.method {
                Method::Header => from_header(req, source),
                Method::Body => from_body(req, body, source, only_body),
            };
            match found {
                Ok(Some(t)) => return Ok((source, t)),
                Ok(None) => {}
                Err(r) => {
                    first_problem.get_or_insert(r);
                }
            }
        }
        Err(first_problem
            .unwrap_or_else(|| refuse("ERR_NGROK_3406", "Token could not be found in request.")))
    }

    async fn verify(&self, token: &str) -> Result<Value, Refusal> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) if header_alg(token).is_some_and(|a| a.eq_ignore_ascii_case("none")) => {
                return Err(refuse(
                    "ERR_NGROK_3413",
                    "Unsigned tokens (alg none) are not accepted.",
                ));
            }
            Err(e) => return Err(refuse("ERR_NGROK_3412", format!("Malformed token: {e}."))),
        };
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(refuse(
                "ERR_NGROK_3413",
                format!("Algorithm {:?} is not allowed.", header.alg),
            ));
        }
        let kid = header.kid.as_deref();
        let mut fetch_error = None;
        let mut fetch_failures = 0;
        let mut set = None;
        for cache in &self.jwks {
            match cache.keys_for(kid, header.alg).await {
                Ok(s) => {
                    set = Some(s);
                    break;
                }
                Err(JwksError::Fetch(e)) => {
                    fetch_failures += 1;
                    fetch_error = Some(e);
                }
                Err(JwksError::NoKey { .. }) => {}
            }
        }
        let Some(set) = set else {
            return Err(match fetch_error {
                Some(e) if fetch_failures == self.jwks.len() => refuse(
                    "ERR_NGROK_3422",
                    format!("Could not fetch the signing keys: {e}"),
                ),
                _ => refuse("ERR_NGROK_3414", "No signing key matches the token."),
            });
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let claims = verify_with_keys(token, set.candidates(kid, header.alg), &validation)
            .map_err(|e| match e {
                TokenError::Expired => refuse("ERR_NGROK_3415", "The token has expired."),
                TokenError::NotYetValid => refuse("ERR_NGROK_3416", "The token is not valid yet."),
                TokenError::Issuer => {
                    refuse("ERR_NGROK_3417", "The token's issuer is not allowed.")
                }
                TokenError::Audience => {
                    refuse("ERR_NGROK_3418", "The token's audience is not allowed.")
                }
                TokenError::MissingClaim(c) => {
                    refuse("ERR_NGROK_3419", format!("The token has no {c} claim."))
                }
                TokenError::BadSignature => {
                    refuse("ERR_NGROK_3414", "The token's signature is invalid.")
                }
                TokenError::AlgorithmNotAllowed(a) => {
                    refuse("ERR_NGROK_3413", format!("Algorithm {a} is not allowed."))
                }
                other => refuse("ERR_NGROK_3412", format!("Invalid token: {other}.")),
            })?;
        Ok(Value::Object(claims))
    }
}

fn from_header(req: &AuthRequest<'_>, source: &TokenSource) -> Result<Option<String>, Refusal> {
    let Some((_, raw)) = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&source.name))
    else {
        return Ok(None);
    };
    let value = std::str::from_utf8(raw)
        .map_err(|_| refuse("ERR_NGROK_3412", "The token header is not valid text."))?
        .trim();
    let token = strip_prefix(value, &source.prefix).ok_or_else(|| {
        refuse(
            "ERR_NGROK_3409",
            format!(
                "The {} header lacks the prefix {:?}.",
                source.name, source.prefix
            ),
        )
    })?;
    Ok((!token.is_empty()).then(|| token.to_string()))
}

/// Case-insensitive prefix match (`bearer x` for `Bearer `).
fn strip_prefix<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(value);
    }
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| value[prefix.len()..].trim())
}

/// A token from a JSON or form body field. On methods without a body
/// this is an error only when the body is the sole configured location.
fn from_body(
    req: &AuthRequest<'_>,
    body: Option<&[u8]>,
    source: &TokenSource,
    only_body: bool,
) -> Result<Option<String>, Refusal> {
    let m = req.method.to_ascii_uppercase();
    if !matches!(m.as_str(), "POST" | "PUT" | "PATCH") {
        if !only_body {
            return Ok(None);
        }
        return Err(refuse(
            "ERR_NGROK_3411",
            format!("Body tokens are not read on {m} requests."),
        ));
    }
    let Some(body) = body else {
        return Ok(None);
    };
    let content_type = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let value = match content_type.as_str() {
        "application/json" => {
            let doc: Value = serde_json::from_slice(body)
                .map_err(|_| refuse("ERR_NGROK_3408", "The request body is not valid JSON."))?;
            doc.get(&source.name)
                .and_then(Value::as_str)
                .map(String::from)
        }
        "application/x-www-form-urlencoded" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| refuse("ERR_NGROK_3408", "The request body is not a valid form."))?;
            parse_query(text)
                .into_iter()
                .find(|(k, _)| *k == source.name)
                .map(|(_, v)| v)
        }
        other => {
            return Err(refuse(
                "ERR_NGROK_3410",
                format!("Cannot read a token from a body of type {other:?}."),
            ))
        }
    };
    let Some(value) = value else {
        return Ok(None);
    };
    let token = strip_prefix(value.trim(), &source.prefix).ok_or_else(|| {
        refuse(
            "ERR_NGROK_3409",
            format!(
                "The {} field lacks the prefix {:?}.",
                source.name, source.prefix
            ),
        )
    })?;
    Ok((!token.is_empty()).then(|| token.to_string()))
}

/// The `alg` of a token header that jsonwebtoken refused to parse.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let raw = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v.get("alg")?.as_str().map(String::from)
}

#[cfg(test)]
mod tests;
