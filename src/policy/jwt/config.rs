//! The `jwt-validation` config, validated at load.

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::policy::oidc::config::{object, string};
use crate::policy::oidc::fetch::check_url;
use crate::policy::oidc::idtoken::ASYMMETRIC;

pub type ConfigError = (String, String);

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    (field.to_string(), reason.into())
}

/// Where a token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Header,
    Body,
}

/// One `http.tokens[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    /// `jwt`, `id_token`, `access_token`, `at+jwt`, `it+jwt` or `plain`
    /// (recorded in the result variables; every type is a JWS here).
    pub kind: String,
    pub method: Method,
    /// Header name, or body field name.
    pub name: String,
    /// E.g. `"Bearer "`; must be present when set.
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub tokens: Vec<TokenSource>,
    pub algorithms: Vec<Algorithm>,
    pub jkus: Vec<String>,
    /// ringress extension: extra trusted CA certificates for the JWKS URLs.
    pub ca_bundle: Option<String>,
}

const TYPES: &[&str] = &[
    "jwt",
    "id_token",
    "access_token",
    "at+jwt",
    "it+jwt",
    "plain",
];

pub fn parse(config: &Value) -> Result<JwtConfig, ConfigError> {
    let map = object(config)?;
    known(map, "", &["issuer", "audience", "http", "jws", "ca_bundle"])?;

    let issuers = allow_list(map, "issuer")?;
    if issuers.is_empty() {
        return Err(err("issuer.allow_list", "required: at least one issuer"));
    }
    let audiences = allow_list(map, "audience")?;

    let http = map
        .get("http")
        .and_then(Value::as_object)
        .ok_or_else(|| err("http.tokens", "required: at least one token location"))?;
    known(http, "http.", &["tokens"])?;
    let list = http
        .get("tokens")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| err("http.tokens", "required: at least one token location"))?;
    let mut tokens = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let field = |f: &str| format!("http.tokens[{i}].{f}");
        let t = t
            .as_object()
            .ok_or_else(|| err(&format!("http.tokens[{i}]"), "must be a map"))?;
        for k in t.keys() {
            if !["type", "method", "name", "prefix"].contains(&k.as_str()) {
                return Err(err(&field(k), "unknown field"));
            }
        }
        let kind = string(t, "type")?.unwrap_or_else(|| "jwt".into());
        if !TYPES.contains(&kind.as_str()) {
            return Err(err(
                &field("type"),
                format!("must be one of {}", TYPES.join(", ")),
            ));
        }
        let method = match string(t, "method")?.as_deref() {
            None | Some("header") => Method::Header,
            Some("body") => Method::Body,
            Some("query") | Some("query_param") => {
                return Err(err(
                    &field("method"),
                    "tokens in query parameters are not accepted",
                ))
            }
            Some(m) => {
                return Err(err(
                    &field("method"),
                    format!("{m:?}: must be header or body"),
                ))
            }
        };
        let name = match (string(t, "name")?, &method) {
            (Some(n), _) => n,
            (None, Method::Header) => "Authorization".into(),
            (None, Method::Body) => return Err(err(&field("name"), "required for method body")),
        };
        if method == Method::Header
            && !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(err(
                &field("name"),
                format!("{name:?} is not a header name"),
            ));
        }
        let prefix = match t.get("prefix") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(err(&field("prefix"), "must be a string")),
        };
        tokens.push(TokenSource {
            kind,
            method,
            name,
            prefix,
        });
    }

    let jws = map.get("jws").and_then(Value::as_object).ok_or_else(|| {
        err(
            "jws.keys.sources.additional_jkus",
            "required: at least one JWKS URL",
        )
    })?;
    known(jws, "jws.", &["allowed_algorithms", "keys"])?;
    let algorithms = match jws.get("allowed_algorithms") {
        None | Some(Value::Null) => ASYMMETRIC.to_vec(),
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out = Vec::new();
            for v in a {
                let name = v
                    .as_str()
                    .ok_or_else(|| err("jws.allowed_algorithms", "must be a list of strings"))?;
                out.push(algorithm(name)?);
            }
            out
        }
        Some(_) => {
            return Err(err(
                "jws.allowed_algorithms",
                "must be a non-empty list of algorithms",
            ))
        }
    };

    let mut jkus = Vec::new();
    for keys in one_or_many(jws.get("keys")) {
        let keys = keys
            .as_object()
            .ok_or_else(|| err("jws.keys", "must be a map"))?;
        known(keys, "jws.keys.", &["sources", "identification"])?;
        for ident in one_or_many(keys.get("identification")) {
            let claims = one_or_many(ident.get("token_claims"));
            if claims.iter().any(|c| c.as_str() != Some("kid")) {
                return Err(err(
                    "jws.keys.identification.token_claims",
                    "only kid is supported",
                ));
            }
        }
        for source in one_or_many(keys.get("sources")) {
            let source = source
                .as_object()
                .ok_or_else(|| err("jws.keys.sources", "must be a map"))?;
            known(source, "jws.keys.sources.", &["additional_jkus"])?;
            for url in one_or_many(source.get("additional_jkus")) {
                let url = url.as_str().ok_or_else(|| {
                    err("jws.keys.sources.additional_jkus", "must be a list of URLs")
                })?;
                check_url("jws.keys.sources.additional_jkus", url)
                    .map_err(|e| err("jws.keys.sources.additional_jkus", e.to_string()))?;
                jkus.push(url.to_string());
            }
        }
    }
    if jkus.is_empty() {
        return Err(err(
            "jws.keys.sources.additional_jkus",
            "required: at least one JWKS URL",
        ));
    }

    Ok(JwtConfig {
        issuers,
        audiences,
        tokens,
        algorithms,
        jkus,
        ca_bundle: string(map, "ca_bundle")?,
    })
}

/// An allowed algorithm: `none` and the HMAC family are refused (keys
/// come from JWKS URLs, which never hold shared secrets).
pub fn algorithm(name: &str) -> Result<Algorithm, ConfigError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(err("jws.allowed_algorithms", "\"none\" is never allowed"));
    }
    let alg: Algorithm = name.parse().map_err(|_| {
        err(
            "jws.allowed_algorithms",
            format!("unknown algorithm {name:?}"),
        )
    })?;
    if !ASYMMETRIC.contains(&alg) {
        return Err(err(
            "jws.allowed_algorithms",
            format!("{name} needs a shared secret; only asymmetric algorithms are supported"),
        ));
    }
    Ok(alg)
}

fn allow_list(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, ConfigError> {
    let Some(section) = map.get(key) else {
        return Ok(Vec::new());
    };
    let field = format!("{key}.allow_list");
    let section = section
        .as_object()
        .ok_or_else(|| err(key, "must be a map"))?;
    known(section, &format!("{key}."), &["allow_list"])?;
    let mut out = Vec::new();
    for entry in one_or_many(section.get("allow_list")) {
        let value = match &entry {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| err(&field, "each entry needs a string value"))?
                .to_string(),
            _ => return Err(err(&field, "each entry needs a string value")),
        };
        if value.is_empty() {
            return Err(err(&field, "empty value"));
        }
        out.push(value);
    }
    Ok(out)
}

fn one_or_many(v: Option<&Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => vec![other.clone()],
    }
}

fn known(map: &Map<String, Value>, prefix: &str, keys: &[&str]) -> Result<(), ConfigError> {
    match map.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(err(&format!("{prefix}{k}"), "unknown field")),
        None => Ok(()),
    }
}
