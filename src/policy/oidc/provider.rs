//! The provider side of a login: where to send the user, and how to turn
//! the callback's `code` into an identity (token endpoint, ID token or
//! user API). One [`Backend`] per action.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::discovery::{ClientAuth, Discovery};
use super::fetch::{FetchRequest, Fetcher};
use super::idtoken::verify_id_token;
use super::jwks::JwksCache;
use super::url::encode;
use super::AuthKind;

/// ngrok error codes of one action kind.
#[derive(Debug, Clone, Copy)]
pub struct Codes {
    pub state_missing: &'static str,
    pub state_unreadable: &'static str,
    pub state_mismatch: &'static str,
    pub provider_denied: &'static str,
    pub provider_unreachable: &'static str,
    pub no_identity: &'static str,
    pub bad_id_token: &'static str,
}

impl Codes {
    pub fn of(kind: AuthKind) -> Codes {
        match kind {
            AuthKind::Oidc => Codes {
                state_missing: "ERR_NGROK_5200",
                state_unreadable: "ERR_NGROK_5200",
                state_mismatch: "ERR_NGROK_5200",
                provider_denied: "ERR_NGROK_5211",
                provider_unreachable: "ERR_NGROK_5202",
                no_identity: "ERR_NGROK_5203",
                bad_id_token: "ERR_NGROK_5204",
            },
            AuthKind::OAuth => Codes {
                state_missing: "ERR_NGROK_3107",
                state_unreadable: "ERR_NGROK_3108",
                state_mismatch: "ERR_NGROK_3124",
                provider_denied: "ERR_NGROK_3125",
                provider_unreachable: "ERR_NGROK_3166",
                no_identity: "ERR_NGROK_3164",
                bad_id_token: "ERR_NGROK_3164",
            },
        }
    }
}

/// Why a step with the provider failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// Transport failure or a 5xx / unparsable answer.
    Unreachable(String),
    /// The provider refused (OAuth `error` answer).
    Denied { error: String, description: String },
    /// No ID token, or no usable user id.
    NoIdentity(String),
    /// The ID token did not verify.
    BadIdToken(String),
}

/// Who logged in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub email: String,
    /// `Some(false)` when the provider says the address is unverified.
    pub email_verified: Option<bool>,
    pub name: String,
    pub provider_session: String,
    pub access_token: String,
    pub expires_in: Option<u64>,
    pub id_token: String,
}

/// GitHub's fixed endpoints (overridable for tests).
#[derive(Debug, Clone)]
pub struct GitHubEndpoints {
    pub authorize: String,
    pub token: String,
    pub api: String,
}

impl Default for GitHubEndpoints {
    fn default() -> GitHubEndpoints {
        GitHubEndpoints {
            authorize: "https://github.com/login/oauth/authorize".into(),
            token: "https://github.com/login/oauth/access_token".into(),
            api: "https://api.github.com".into(),
        }
    }
}

pub enum Backend {
    Oidc {
        discovery: Discovery,
        jwks: ArcSwapOption<JwksCache>,
    },
    GitHub(GitHubEndpoints),
}

/// What the authorization redirect needs.
pub struct AuthorizeTarget {
    pub endpoint: String,
    /// OpenID Connect: send `nonce` and (on `/ngrok/login`) `prompt=login`.
    pub oidc: bool,
}

/// Client credentials and the callback URL of one exchange.
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub redirect_uri: &'a str,
}

impl Backend {
    pub async fn authorize_target(&self) -> Result<AuthorizeTarget, ProviderError> {
        match self {
            Backend::Oidc { discovery, .. } => {
                let meta = discovery
                    .metadata()
                    .await
                    .map_err(ProviderError::Unreachable)?;
                Ok(AuthorizeTarget {
                    endpoint: meta.authorization_endpoint.clone(),
                    oidc: true,
                })
            }
            Backend::GitHub(e) => Ok(AuthorizeTarget {
                endpoint: e.authorize.clone(),
                oidc: false,
            }),
        }
    }

    /// Exchanges `code` and establishes who the user is.
    pub async fn exchange(
        &self,
        fetcher: &Fetcher,
        client: &Client<'_>,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, ProviderError> {
        match self {
            Backend::Oidc { discovery, jwks } => {
                let meta = discovery
                    .metadata()
                    .await
                    .map_err(ProviderError::Unreachable)?;
                let tokens = token_request(
                    fetcher,
                    &meta.token_endpoint,
                    meta.client_auth(),
                    client,
                    code,
                    verifier,
                )
                .await?;
                let id_token = tokens
                    .get("id_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ProviderError::NoIdentity("the token response has no id_token".into())
                    })?
                    .to_string();
                let cache = jwks_for(jwks, &meta.jwks_uri, fetcher);
                let claims = verify_id_token(&id_token, &cache, &meta.issuer, client.id, nonce)
                    .await
                    .map_err(|e| match e {
                        super::idtoken::TokenError::Keys(k) => {
                            ProviderError::Unreachable(k.to_string())
                        }
                        other => ProviderError::BadIdToken(other.to_string()),
                    })?;
                let mut id = identity_from_claims(&claims);
                id.access_token = str_field(&tokens, "access_token");
                id.expires_in = tokens.get("expires_in").and_then(Value::as_u64);
                id.id_token = id_token;
                if let (Some(url), false) = (&meta.userinfo_endpoint, id.access_token.is_empty()) {
                    merge_userinfo(fetcher, url, &mut id).await;
                }
                Ok(id)
            }
            Backend::GitHub(e) => {
                let tokens =
                    token_request(fetcher, &e.token, ClientAuth::Post, client, code, verifier)
                        .await?;
                let token = str_field(&tokens, "access_token");
                if token.is_empty() {
                    return Err(ProviderError::NoIdentity(
                        "the token response has no access_token".into(),
                    ));
                }
                let mut id = github_identity(fetcher, &e.api, &token).await?;
                id.access_token = token;
                id.expires_in = tokens.get("expires_in").and_then(Value::as_u64);
                Ok(id)
            }
        }
    }
}

/// The JWKS cache for `uri`, replaced when discovery names another URL.
fn jwks_for(slot: &ArcSwapOption<JwksCache>, uri: &str, fetcher: &Fetcher) -> Arc<JwksCache> {
    if let Some(c) = slot.load_full() {
        if c.url() == uri {
            return c;
        }
    }
    let c = Arc::new(JwksCache::new(uri.to_string(), fetcher.clone()));
    slot.store(Some(c.clone()));
    c
}

/// The authorization-code grant (RFC 6749 §4.1.3, RFC 7636 §4.5).
async fn token_request(
    fetcher: &Fetcher,
    endpoint: &str,
    auth: ClientAuth,
    client: &Client<'_>,
    code: &str,
    verifier: &str,
) -> Result<Map<String, Value>, ProviderError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", client.redirect_uri),
        ("code_verifier", verifier),
    ];
    if auth == ClientAuth::Post {
        form.push(("client_id", client.id));
        form.push(("client_secret", client.secret));
    }
    let mut req = FetchRequest::post_form(endpoint, &form);
    if auth == ClientAuth::Basic {
        // RFC 6749 §2.3.1: form-encode both parts before base64.
        let creds = format!("{}:{}", encode(client.id), encode(client.secret));
        req = req.header(
            "authorization",
            &format!("Basic {}", STANDARD.encode(creds)),
        );
    }
    let res = fetcher
        .fetch(req)
        .await
        .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
    let body: Option<Map<String, Value>> = serde_json::from_slice(&res.body).ok();
    if let Some(error) = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
    {
        // GitHub answers errors with 200 and an `error` field.
        return Err(ProviderError::Denied {
            error: error.to_string(),
            description: body
                .as_ref()
                .map(|b| str_field(b, "error_description"))
                .unwrap_or_default(),
        });
    }
    match body {
        Some(b) if res.is_success() => Ok(b),
        _ => Err(ProviderError::Unreachable(format!(
            "the token endpoint answered HTTP {}",
            res.status
        ))),
    }
}

fn str_field(m: &Map<String, Value>, k: &str) -> String {
    m.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn identity_from_claims(c: &Map<String, Value>) -> Identity {
    let name = match str_field(c, "name") {
        n if !n.is_empty() => n,
        _ => match str_field(c, "preferred_username") {
            n if !n.is_empty() => n,
            _ => [str_field(c, "given_name"), str_field(c, "family_name")]
                .join(" ")
                .trim()
                .to_string(),
        },
    };
    Identity {
        sub: str_field(c, "sub"),
        email: str_field(c, "email"),
        email_verified: c.get("email_verified").and_then(|v| match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => Some(s == "true"),
            _ => None,
        }),
        name,
        provider_session: str_field(c, "sid"),
        ..Identity::default()
    }
}

/// Adds UserInfo claims (OIDC Core §5.3) to what the ID token said. The
/// `sub` must match; failures only cost the extra claims.
async fn merge_userinfo(fetcher: &Fetcher, url: &str, id: &mut Identity) {
    let req =
        FetchRequest::get(url).header("authorization", &format!("Bearer {}", id.access_token));
    let info = match fetcher.get_json(req).await {
        Ok(Value::Object(m)) => m,
        Ok(_) => return,
        Err(e) => {
            warn!(error = %e, "userinfo request failed; using the ID token's claims");
            return;
        }
    };
    if str_field(&info, "sub") != id.sub {
        warn!("userinfo names another subject; ignored");
        return;
    }
    let extra = identity_from_claims(&info);
    if !extra.email.is_empty() {
        id.email = extra.email;
        id.email_verified = extra.email_verified;
    }
    if !extra.name.is_empty() {
        id.name = extra.name;
    }
    debug!("userinfo merged");
}

/// GitHub: `/user`, then `/user/emails` for the primary verified address
/// when the profile's email is private.
async fn github_identity(
    fetcher: &Fetcher,
    api: &str,
    token: &str,
) -> Result<Identity, ProviderError> {
    let get = |path: &str| {
        FetchRequest::get(&format!("{api}{path}"))
            .header("accept", "application/vnd.github+json")
            .header("authorization", &format!("Bearer {token}"))
            .header("x-github-api-version", "2022-11-28")
    };
    let user = match fetcher.get_json(get("/user")).await {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(ProviderError::NoIdentity(
                "GitHub /user is not an object".into(),
            ))
        }
        Err(e) => return Err(ProviderError::Unreachable(e)),
    };
    let sub = match user.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ProviderError::NoIdentity("GitHub /user has no id".into())),
    };
    let login = str_field(&user, "login");
    let name = match str_field(&user, "name") {
        n if !n.is_empty() => n,
        _ => login,
    };
    let mut email = String::new();
    let mut email_verified = None;
    if let Ok(Value::Array(list)) = fetcher.get_json(get("/user/emails")).await {
        if let Some(primary) = list.iter().find(|e| {
            e.get("primary") == Some(&Value::Bool(true))
                && e.get("verified") == Some(&Value::Bool(true))
        }) {
            email = primary
                .get("email")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            email_verified = Some(true);
        }
    }
    if email.is_empty() {
        // The public profile address; GitHub does not say it is verified.
        email = str_field(&user, "email");
        email_verified = (!email.is_empty()).then_some(false);
    }
    Ok(Identity {
        sub,
        email,
        email_verified,
        name,
        ..Identity::default()
    })
}
