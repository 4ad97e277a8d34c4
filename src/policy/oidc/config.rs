//! The `oauth` and `openid-connect` action configs, validated at load.
//! Errors are `(field, reason)`, as the policy compiler reports them.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::cookie::valid_domain;
use super::fetch::check_url;

pub type ConfigError = (String, String);

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    (field.to_string(), reason.into())
}

/// Default `max_session_duration`.
pub const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(72 * 3600);
/// Default idle timeout (`idle_session_timeout` / `idle_session_duration`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Which identity provider an action talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Generic OpenID Connect (discovery from the issuer); also `google`.
    Oidc { issuer_url: String },
    /// GitHub's OAuth 2.0 apps (not OpenID Connect).
    GitHub,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub provider: Provider,
    /// The `provider` name for `oauth`, `"oidc"` for `openid-connect`.
    pub provider_name: String,
    pub auth_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Complete list sent to the provider (defaults plus configured).
    pub scopes: Vec<String>,
    pub authz_url_params: Vec<(String, String)>,
    pub max_session: Duration,
    pub idle_timeout: Duration,
    pub allow_cors_preflight: bool,
    pub cookie_domain: Option<String>,
    /// Lower-cased; empty means everyone who logs in.
    pub allow_emails: Vec<String>,
    pub allow_domains: Vec<String>,
    /// ringress extension: key material for session cookies (at least 32
    /// bytes). Without it, a random per-process secret.
    pub cookie_secret: Option<Vec<u8>>,
    /// ringress extension: extra trusted CA certificates (PEM file) for
    /// requests to the provider.
    pub ca_bundle: Option<PathBuf>,
}

const COMMON: &[&str] = &[
    "auth_id",
    "client_id",
    "client_secret",
    "scopes",
    "authz_url_params",
    "max_session_duration",
    "idle_session_timeout",
    "idle_session_duration",
    "userinfo_refresh_interval",
    "allow_cors_preflight",
    "auth_cookie_domain",
    "allow_emails",
    "allow_domains",
    "emails",
    "email_addresses",
    "email_domains",
    "cookie_secret",
    "ca_bundle",
];

/// Parameters of the authorization request we set ourselves.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

pub fn parse_oidc(config: &Value) -> Result<AuthConfig, ConfigError> {
    let map = object(config)?;
    check_keys(map, &["issuer_url"])?;
    let issuer_url = string(map, "issuer_url")?.ok_or_else(|| err("issuer_url", "required"))?;
    check_url("issuer_url", &issuer_url).map_err(|e| err("issuer_url", e.to_string()))?;
    common(
        map,
        Provider::Oidc {
            issuer_url: issuer_url.trim_end_matches('/').to_string(),
        },
        "oidc",
        &["openid", "profile", "email"],
    )
}

pub fn parse_oauth(config: &Value) -> Result<AuthConfig, ConfigError> {
    let map = object(config)?;
    check_keys(map, &["provider"])?;
    let name = string(map, "provider")?.ok_or_else(|| err("provider", "required"))?;
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "google" => common(
            map,
            Provider::Oidc {
                issuer_url: "https://accounts.google.com".into(),
            },
            "google",
            &["openid", "profile", "email"],
        ),
        "github" => common(
            map,
            Provider::GitHub,
            "github",
            &["read:user", "user:email"],
        ),
        "amazon" | "facebook" | "gitlab" | "linkedin" | "microsoft" | "twitch" => Err(err(
            "provider",
            format!(
                "provider {name:?} is not supported yet (supported: google, github; \
                 any OpenID Connect provider works with the openid-connect action)"
            ),
        )),
        _ => Err(err(
            "provider",
            format!(
                "unknown provider {name:?} (one of amazon, facebook, github, gitlab, google, \
                 linkedin, microsoft, twitch)"
            ),
        )),
    }
}

fn common(
    map: &Map<String, Value>,
    provider: Provider,
    provider_name: &str,
    default_scopes: &[&str],
) -> Result<AuthConfig, ConfigError> {
    let auth_id = string(map, "auth_id")?.unwrap_or_else(|| provider_name.to_string());
    if auth_id.is_empty()
        || auth_id.len() > 64
        || !auth_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(
            "auth_id",
            "must be 1-64 characters of letters, digits, '-' and '_'",
        ));
    }
    let missing_app = "required: ringress has no managed OAuth application; register one with \
                       the provider and set client_id and client_secret";
    let client_id = non_cel(map, "client_id")?.ok_or_else(|| err("client_id", missing_app))?;
    let client_secret =
        non_cel(map, "client_secret")?.ok_or_else(|| err("client_secret", missing_app))?;

    let mut scopes: Vec<String> = default_scopes.iter().map(|s| s.to_string()).collect();
    for s in string_list(map, "scopes")? {
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(err("scopes", format!("invalid scope {s:?}")));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }

    let mut authz_url_params = Vec::new();
    if let Some(v) = map.get("authz_url_params") {
        let obj = v
            .as_object()
            .ok_or_else(|| err("authz_url_params", "must be a map of strings"))?;
        for (k, v) in obj {
            let v = v
                .as_str()
                .ok_or_else(|| err("authz_url_params", format!("{k}: must be a string")))?;
            if RESERVED_PARAMS.contains(&k.as_str()) {
                return Err(err(
                    "authz_url_params",
                    format!("{k} is set by the action and cannot be overridden"),
                ));
            }
            authz_url_params.push((k.clone(), v.to_string()));
        }
    }

    let max_session = duration(map, "max_session_duration")?.unwrap_or(DEFAULT_MAX_SESSION);
    let idle_timeout = match (
        duration(map, "idle_session_timeout")?,
        duration(map, "idle_session_duration")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(err(
                "idle_session_timeout",
                "set idle_session_timeout or idle_session_duration, not both",
            ))
        }
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => DEFAULT_IDLE,
    };
    if map.contains_key("userinfo_refresh_interval") {
        return Err(err(
            "userinfo_refresh_interval",
            "not supported yet: identity is read once at login; use max_session_duration",
        ));
    }
    let allow_cors_preflight = match map.get("allow_cors_preflight") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err("allow_cors_preflight", "must be a boolean")),
    };
    let cookie_domain = string(map, "auth_cookie_domain")?;
    if let Some(d) = &cookie_domain {
        if !valid_domain(d) {
            return Err(err("auth_cookie_domain", format!("{d:?} is not a domain")));
        }
    }

    let mut allow_emails = Vec::new();
    for key in ["allow_emails", "emails", "email_addresses"] {
        for e in string_list(map, key)? {
            if !e.contains('@') {
                return Err(err(key, format!("{e:?} is not an email address")));
            }
            allow_emails.push(e.to_ascii_lowercase());
        }
    }
    let mut allow_domains = Vec::new();
    for key in ["allow_domains", "email_domains"] {
        for d in string_list(map, key)? {
            let d = d.trim_start_matches('@').to_ascii_lowercase();
            if !valid_domain(&d) {
                return Err(err(key, format!("{d:?} is not a domain")));
            }
            allow_domains.push(d);
        }
    }

    let cookie_secret = match string(map, "cookie_secret")? {
        Some(s) if s.len() < 32 => {
            return Err(err("cookie_secret", "must be at least 32 characters"))
        }
        Some(s) => Some(s.into_bytes()),
        None => None,
    };
    let ca_bundle = string(map, "ca_bundle")?.map(PathBuf::from);

    Ok(AuthConfig {
        provider,
        provider_name: provider_name.to_string(),
        auth_id,
        client_id,
        client_secret,
        scopes,
        authz_url_params,
        max_session,
        idle_timeout,
        allow_cors_preflight,
        cookie_domain,
        allow_emails,
        allow_domains,
        cookie_secret,
        ca_bundle,
    })
}

pub(crate) fn object(config: &Value) -> Result<&Map<String, Value>, ConfigError> {
    config
        .as_object()
        .ok_or_else(|| err("config", "must be a map"))
}

fn check_keys(map: &Map<String, Value>, own: &[&str]) -> Result<(), ConfigError> {
    for k in map.keys() {
        if !own.contains(&k.as_str()) && !COMMON.contains(&k.as_str()) {
            return Err(err(k, "unknown field"));
        }
    }
    Ok(())
}

pub(crate) fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(key, "must be a string")),
    }
}

/// A string that must not use CEL interpolation (not supported yet).
fn non_cel(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
    let s = string(map, key)?;
    if s.as_deref().is_some_and(|s| s.contains("${")) {
        return Err(err(key, "CEL interpolation is not supported yet"));
    }
    Ok(s)
}

pub(crate) fn string_list(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| err(key, "must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(err(key, "must be a list of strings")),
    }
}

/// A duration: Go-style text (`"90s"`, `"1h30m"`, `"72h"`) or a number of
/// seconds. At least one second.
pub(crate) fn duration(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    let d = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| err(key, "must be a positive number of seconds"))?,
        Some(Value::String(s)) => humantime::parse_duration(s.trim())
            .map_err(|e| err(key, format!("invalid duration {s:?}: {e}")))?,
        Some(_) => return Err(err(key, "must be a duration such as \"1h\"")),
    };
    if d < Duration::from_secs(1) {
        return Err(err(key, "must be at least 1s"));
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oidc(extra: Value) -> Result<AuthConfig, ConfigError> {
        let mut base = json!({"issuer_url": "https://idp.example.com/", "client_id": "c", "client_secret": "s"});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        parse_oidc(&base)
    }

    #[test]
    fn oidc_defaults() {
        let c = oidc(json!({})).expect("config");
        assert_eq!(
            c.provider,
            Provider::Oidc {
                issuer_url: "https://idp.example.com".into()
            }
        );
        assert_eq!(c.auth_id, "oidc");
        assert_eq!(c.scopes, ["openid", "profile", "email"]);
        assert_eq!(c.max_session, DEFAULT_MAX_SESSION);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE);
        assert!(!c.allow_cors_preflight);
        let c = oidc(json!({"scopes": ["groups", "openid"], "idle_session_duration": "90s",
            "max_session_duration": "1h30m", "auth_id": "corp", "authz_url_params": {"hd": "example.com"},
            "allow_domains": ["@Example.com"], "allow_cors_preflight": true}))
        .expect("config");
        assert_eq!(c.scopes, ["openid", "profile", "email", "groups"]);
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.max_session, Duration::from_secs(5400));
        assert_eq!(c.auth_id, "corp");
        assert_eq!(
            c.authz_url_params,
            [("hd".to_string(), "example.com".to_string())]
        );
        assert_eq!(c.allow_domains, ["example.com"]);
        assert!(c.allow_cors_preflight);
    }

    #[test]
    fn oidc_refusals() {
        let field = |v: Value| oidc(v).map(|_| ()).unwrap_err().0;
        assert_eq!(
            parse_oidc(&json!({"client_id": "c"})).unwrap_err().0,
            "issuer_url"
        );
        assert_eq!(
            field(json!({"issuer_url": "http://idp.example.com"})),
            "issuer_url"
        );
        assert_eq!(field(json!({"client_id": ""})), "client_id");
        assert_eq!(
            field(json!({"client_secret": "${secrets.get('x','y')}"})),
            "client_secret"
        );
        assert_eq!(
            field(json!({"max_session_duration": "soon"})),
            "max_session_duration"
        );
        assert_eq!(
            field(json!({"max_session_duration": "0s"})),
            "max_session_duration"
        );
        assert_eq!(
            field(json!({"idle_session_timeout": "1m", "idle_session_duration": "1m"})),
            "idle_session_timeout"
        );
        assert_eq!(
            field(json!({"userinfo_refresh_interval": "1h"})),
            "userinfo_refresh_interval"
        );
        assert_eq!(
            field(json!({"authz_url_params": {"state": "x"}})),
            "authz_url_params"
        );
        assert_eq!(field(json!({"auth_id": "a b"})), "auth_id");
        assert_eq!(
            field(json!({"auth_cookie_domain": "a;b"})),
            "auth_cookie_domain"
        );
        assert_eq!(field(json!({"cookie_secret": "short"})), "cookie_secret");
        assert_eq!(field(json!({"scopes": "openid"})), "scopes");
        assert_eq!(field(json!({"issuer": "x"})), "issuer");
        assert_eq!(parse_oidc(&json!("x")).unwrap_err().0, "config");
    }

    #[test]
    fn oauth_providers() {
        let g = parse_oauth(&json!({"provider": "google", "client_id": "c", "client_secret": "s"}))
            .expect("google");
        assert_eq!(g.auth_id, "google");
        assert!(matches!(g.provider, Provider::Oidc { .. }));
        let gh = parse_oauth(
            &json!({"provider": "github", "client_id": "c", "client_secret": "s",
            "allow_emails": ["Alice@Example.com"], "scopes": ["read:org"]}),
        )
        .expect("github");
        assert_eq!(gh.provider, Provider::GitHub);
        assert_eq!(gh.scopes, ["read:user", "user:email", "read:org"]);
        assert_eq!(gh.allow_emails, ["alice@example.com"]);
        let e = parse_oauth(&json!({"provider": "github"})).unwrap_err();
        assert_eq!(e.0, "client_id");
        assert!(e.1.contains("no managed OAuth application"), "{}", e.1);
        let e = parse_oauth(&json!({"provider": "gitlab", "client_id": "c", "client_secret": "s"}))
            .unwrap_err();
        assert!(e.1.contains("not supported yet"), "{}", e.1);
        assert_eq!(
            parse_oauth(&json!({"provider": "myspace"})).unwrap_err().0,
            "provider"
        );
        assert_eq!(parse_oauth(&json!({})).unwrap_err().0, "provider");
    }
}
