//! The agents' legacy per-endpoint options (HTTP endpoint `Opts` of a
//! Bind: `BasicAuth`, `IPRestriction`, `OAuth`, ...) translated into a
//! traffic policy document, as ngrok's docs recommend, so the one policy
//! engine enforces them. The edge translates what SDKs send
//! (`tunnel::registry`); our agent translates its deprecated ngrok flags
//! into the same options and sends the resulting policy (`agent::cli`).
//!
//! Owns: reading those options (null, absent and empty mean "off", as the
//! SDKs send them) and building rules named `legacy <Option>`. Never
//! compiles: callers compile the document together with the agent's own
//! `TrafficPolicy`, legacy rules first. Options the edge cannot honour
//! are refused with a message naming them, never ignored.
//!
//! Rule order (ngrok's middleware order): `on_http_request`: IPRestriction
//! (restrict-ips), BasicAuth/`Auth` (basic-auth), OAuth (oauth), OIDC
//! (openid-connect), WebhookVerification (verify-webhook), RequestHeaders
//! (remove-headers, then add-headers); `on_http_response`: ResponseHeaders
//! (remove, then add), Compression (compress-response).

use serde_json::{json, Map, Value};

use super::document::TrafficPolicy;

/// Options refused because no action implements them yet.
const NOT_SUPPORTED: &[&str] = &[
    "CircuitBreaker",
    "MutualTLSCA",
    "UserAgentFilter",
    "WebsocketTCPConverter",
];

/// Rule names start with this, followed by the option's name.
pub const RULE_PREFIX: &str = "legacy ";

/// Headers per add-headers/remove-headers action (the actions' limit).
const HEADERS_PER_ACTION: usize = 10;

/// A translated set of options: rules as policy-document JSON.
#[derive(Debug, Default)]
pub struct Legacy {
    pub on_http_request: Vec<Value>,
    pub on_http_response: Vec<Value>,
}

impl Legacy {
    pub fn is_empty(&self) -> bool {
        self.on_http_request.is_empty() && self.on_http_response.is_empty()
    }

    /// The rules as a policy document (JSON).
    pub fn document(&self) -> Value {
        json!({
            "on_http_request": self.on_http_request,
            "on_http_response": self.on_http_response,
        })
    }

    /// The rules as a parsed document, for compiling.
    pub fn policy(&self) -> Result<TrafficPolicy, String> {
        serde_json::from_value(self.document()).map_err(|e| format!("legacy endpoint options: {e}"))
    }

    /// Puts these rules before those of a policy document in JSON or YAML
    /// text (none: just these), as JSON text.
    pub fn prepend_to(&self, text: Option<&str>) -> Result<String, String> {
        let mut doc = match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => json!({}),
            Some(t) if t.starts_with('{') => {
                serde_json::from_str::<Value>(t).map_err(|e| format!("traffic policy: {e}"))?
            }
            Some(t) => {
                serde_yaml::from_str::<Value>(t).map_err(|e| format!("traffic policy: {e}"))?
            }
        };
        let Some(map) = doc.as_object_mut() else {
            return Err("traffic policy: the document must be a map of phases".into());
        };
        for (phase, rules) in [
            ("on_http_request", &self.on_http_request),
            ("on_http_response", &self.on_http_response),
        ] {
            if rules.is_empty() {
                continue;
            }
            let mut all = rules.clone();
            match map.remove(phase) {
                None | Some(Value::Null) => {}
                Some(Value::Array(theirs)) => all.extend(theirs),
                Some(_) => return Err(format!("traffic policy: {phase} must be a list of rules")),
            }
            map.insert(phase.into(), Value::Array(all));
        }
        Ok(doc.to_string())
    }
}

/// The option named in a legacy rule's name, if it is one.
pub fn option_of(rule_name: &str) -> Option<&str> {
    rule_name.strip_prefix(RULE_PREFIX)
}

/// Translates the legacy options of an HTTP endpoint's `Opts`.
pub fn translate(opts: &Value) -> Result<Legacy, String> {
    let mut out = Legacy::default();
    let Some(o) = opts.as_object() else {
        return Ok(out);
    };
    for name in NOT_SUPPORTED {
        if set(o, name).is_some() {
            return Err(format!(
                "The {name} endpoint option is not supported by this edge yet; remove it (or express it as a traffic policy where an action exists)."
            ));
        }
    }
    if matches!(get(o, "HostHeaderRewrite"), Some(Value::Bool(true))) {
        return Err("The HostHeaderRewrite endpoint option is not supported: the edge cannot know the upstream's host. Send the Host you want as a request header instead (RequestHeaders add \"host:<upstream host>\", or an add-headers action in a traffic policy).".into());
    }
    let req = &mut out.on_http_request;
    if let Some(v) = set(o, "IPRestriction") {
        push(req, "IPRestriction", ip_restriction(v)?);
    }
    let mut credentials = Vec::new();
    if let Some(Value::String(auth)) = get(o, "Auth") {
        if !auth.is_empty() {
            credentials.push(literal("Auth", auth)?);
        }
    }
    if let Some(v) = set(o, "BasicAuth") {
        credentials.extend(basic_auth(v)?);
    }
    if set(o, "BasicAuth").is_some() || !credentials.is_empty() {
        push(
            req,
            "BasicAuth",
            vec![action("basic-auth", json!({ "credentials": credentials }))],
        );
    }
    if let Some(v) = set(o, "OAuth") {
        push(req, "OAuth", vec![action("oauth", oauth(v)?)]);
    }
    if let Some(v) = set(o, "OIDC") {
        push(req, "OIDC", vec![action("openid-connect", oidc(v)?)]);
    }
    if let Some(v) = set(o, "WebhookVerification") {
        push(
            req,
            "WebhookVerification",
            vec![action("verify-webhook", webhook(v)?)],
        );
    }
    if let Some(v) = set(o, "RequestHeaders") {
        push(req, "RequestHeaders", headers("RequestHeaders", v)?);
    }
    let res = &mut out.on_http_response;
    if let Some(v) = set(o, "ResponseHeaders") {
        push(res, "ResponseHeaders", headers("ResponseHeaders", v)?);
    }
    if set(o, "Compression").is_some() {
        push(
            res,
            "Compression",
            vec![json!({ "type": "compress-response" })],
        );
    }
    Ok(out)
}

/// A key, case-insensitively (SDKs agree on the spelling; be lenient).
fn get<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// An option that is on: present and not null.
fn set<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    get(o, name).filter(|v| !v.is_null())
}

fn push(rules: &mut Vec<Value>, option: &str, actions: Vec<Value>) {
    if actions.is_empty() {
        return;
    }
    rules.push(json!({
        "name": format!("{RULE_PREFIX}{option}"),
        "actions": actions,
    }));
}

fn action(kind: &str, config: Value) -> Value {
    json!({ "type": kind, "config": config })
}

fn object<'a>(option: &str, v: &'a Value) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("The {option} endpoint option must be an object."))
}

/// A string field; null or absent is empty.
fn string(option: &str, o: &Map<String, Value>, key: &str) -> Result<String, String> {
    match get(o, key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => literal(&format!("{option}.{key}"), s),
        Some(_) => Err(format!("{option}.{key} must be a string.")),
    }
}

/// A list of strings; null or absent is empty (Go sends nil slices as
/// null).
fn strings(option: &str, o: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match get(o, key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => literal(&format!("{option}.{key}"), s),
                _ => Err(format!("{option}.{key} must be a list of strings.")),
            })
            .collect(),
        Some(_) => Err(format!("{option}.{key} must be a list of strings.")),
    }
}

/// Legacy values are literal text; a policy would interpolate `${`.
fn literal(field: &str, s: &str) -> Result<String, String> {
    if s.contains("${") {
        return Err(format!(
            "{field} contains \"${{\", which this edge would read as an interpolation; express the option as a traffic policy instead."
        ));
    }
    Ok(s.to_string())
}

/// Whether a field holds anything (a string, bytes as a list, ...).
fn present(o: &Map<String, Value>, key: &str) -> bool {
    match get(o, key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// A secret the SDK sealed for ngrok's cloud: this edge cannot open it.
fn refuse_sealed(option: &str, o: &Map<String, Value>, key: &str) -> Result<(), String> {
    if present(o, key) {
        return Err(format!(
            "{option}.{key} is sealed for ngrok's cloud and cannot be opened by this edge; send the secret in clear over the TLS session instead."
        ));
    }
    Ok(())
}

fn ip_restriction(v: &Value) -> Result<Vec<Value>, String> {
    let o = object("IPRestriction", v)?;
    let allow = strings("IPRestriction", o, "allow_cidrs")?;
    let deny = strings("IPRestriction", o, "deny_cidrs")?;
    if allow.is_empty() && deny.is_empty() {
        return Ok(Vec::new());
    }
    let mut config = Map::new();
    if !allow.is_empty() {
        config.insert("allow".into(), json!(allow));
    }
    if !deny.is_empty() {
        config.insert("deny".into(), json!(deny));
    }
    Ok(vec![action("restrict-ips", Value::Object(config))])
}

/// `user:password` strings for basic-auth.
fn basic_auth(v: &Value) -> Result<Vec<String>, String> {
    let o = object("BasicAuth", v)?;
    let list = match get(o, "credentials") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("BasicAuth.credentials must be a list.".into()),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let field = format!("BasicAuth.credentials[{i}]");
        let c = object(&field, c)?;
        let user = string(&field, c, "username")?;
        let password = string(&field, c, "cleartext_password")?;
        if password.is_empty() && present(c, "hashed_password") {
            return Err(format!(
                "{field}: hashed_password credentials cannot be verified by this edge (the hash scheme is ngrok's); send cleartext_password instead."
            ));
        }
        if user.is_empty() {
            return Err(format!("{field}: the username is empty."));
        }
        if user.contains(':') {
            return Err(format!("{field}: the username contains ':'."));
        }
        out.push(format!("{user}:{password}"));
    }
    Ok(out)
}

/// The fields oauth and openid-connect share.
fn identity_common(option: &str, o: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    refuse_sealed(option, o, "sealed_client_secret")?;
    let mut config = Map::new();
    for key in ["client_id", "client_secret"] {
        let s = string(option, o, key)?;
        if !s.is_empty() {
            config.insert(key.into(), Value::String(s));
        }
    }
    for key in ["allow_emails", "allow_domains", "scopes"] {
        let list = strings(option, o, key)?;
        if !list.is_empty() {
            config.insert(key.into(), json!(list));
        }
    }
    Ok(config)
}

fn oauth(v: &Value) -> Result<Value, String> {
    let o = object("OAuth", v)?;
    let mut config = identity_common("OAuth", o)?;
    let provider = string("OAuth", o, "provider")?;
    if provider.is_empty() {
        return Err("OAuth.provider is required.".into());
    }
    config.insert("provider".into(), Value::String(provider));
    Ok(Value::Object(config))
}

fn oidc(v: &Value) -> Result<Value, String> {
    let o = object("OIDC", v)?;
    let mut config = identity_common("OIDC", o)?;
    let issuer = string("OIDC", o, "issuer_url")?;
    if issuer.is_empty() {
        return Err("OIDC.issuer_url is required.".into());
    }
    config.insert("issuer_url".into(), Value::String(issuer));
    Ok(Value::Object(config))
}

fn webhook(v: &Value) -> Result<Value, String> {
    let o = object("WebhookVerification", v)?;
    refuse_sealed("WebhookVerification", o, "sealed_secret")?;
    let provider = string("WebhookVerification", o, "provider")?;
    let secret = string("WebhookVerification", o, "secret")?;
    if provider.is_empty() || secret.is_empty() {
        return Err("WebhookVerification needs a provider and a secret.".into());
    }
    Ok(json!({ "provider": provider, "secret": secret }))
}

/// `{add: ["name:value"], remove: ["name"], addParsed: {name: value}}`
/// → remove-headers, then add-headers (at most ten names per action; a
/// name added twice goes to a second action, so both values are sent).
fn headers(option: &str, v: &Value) -> Result<Vec<Value>, String> {
    let o = object(option, v)?;
    let remove = strings(option, o, "remove")?;
    let mut add: Vec<(String, String)> = Vec::new();
    for (i, entry) in strings(option, o, "add")?.iter().enumerate() {
        let Some((name, value)) = entry.split_once(':') else {
            return Err(format!(
                "{option}.add[{i}]: expected \"name:value\", got {entry:?}."
            ));
        };
        add.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    if add.is_empty() {
        // Older Go agents send the parsed form only.
        if let Some(Value::Object(parsed)) = get(o, "addParsed") {
            for (name, value) in parsed {
                let value = match value {
                    Value::String(s) => literal(&format!("{option}.addParsed.{name}"), s)?,
                    _ => return Err(format!("{option}.addParsed.{name} must be a string.")),
                };
                add.push((name.trim().to_ascii_lowercase(), value));
            }
        }
    }
    let mut actions = Vec::new();
    for chunk in remove.chunks(HEADERS_PER_ACTION) {
        let names: Vec<String> = chunk
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        actions.push(action("remove-headers", json!({ "headers": names })));
    }
    let mut groups: Vec<Map<String, Value>> = Vec::new();
    for (name, value) in add {
        let slot = groups
            .iter_mut()
            .find(|g| g.len() < HEADERS_PER_ACTION && !g.contains_key(&name));
        match slot {
            Some(g) => {
                g.insert(name, Value::String(value));
            }
            None => {
                let mut g = Map::new();
                g.insert(name, Value::String(value));
                groups.push(g);
            }
        }
    }
    for g in groups {
        actions.push(action("add-headers", json!({ "headers": g })));
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_named_rules_in_order() {
        let l = translate(&json!({
            "Compression": {},
            "RequestHeaders": {"add": ["x-a:1"]},
            "BasicAuth": {"credentials": [{"username": "u", "cleartext_password": "password1"}]},
            "IPRestriction": {"allow_cidrs": ["10.0.0.0/8"]},
        }))
        .expect("translate");
        let names: Vec<&str> = l
            .on_http_request
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "legacy IPRestriction",
                "legacy BasicAuth",
                "legacy RequestHeaders"
            ]
        );
        assert_eq!(
            l.on_http_response[0]["actions"][0]["type"],
            "compress-response"
        );
        assert_eq!(option_of("legacy BasicAuth"), Some("BasicAuth"));
        assert!(l.policy().is_ok());
    }

    #[test]
    fn eleven_added_headers_take_two_actions() {
        let add: Vec<String> = (0..11).map(|i| format!("x-{i}:v")).collect();
        let l = translate(&json!({"RequestHeaders": {"add": add, "remove": ["a"]}}))
            .expect("translate");
        let actions = l.on_http_request[0]["actions"].as_array().expect("list");
        let kinds: Vec<&str> = actions.iter().filter_map(|a| a["type"].as_str()).collect();
        assert_eq!(kinds, ["remove-headers", "add-headers", "add-headers"]);
    }

    #[test]
    fn prepend_to_json_and_yaml() {
        let l = translate(&json!({"Compression": {}, "Auth": "u:password1"})).expect("t");
        let out = l.prepend_to(None).expect("none");
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["on_http_request"].as_array().map(Vec::len), Some(1));
        let yaml = "on_http_request:\n  - actions:\n      - type: deny\non_tcp_connect: []\n";
        let v: Value = serde_json::from_str(&l.prepend_to(Some(yaml)).expect("yaml")).expect("j");
        assert_eq!(v["on_http_request"][0]["name"], "legacy BasicAuth");
        assert_eq!(v["on_http_request"][1]["actions"][0]["type"], "deny");
        assert_eq!(v["on_http_response"][0]["name"], "legacy Compression");
        assert!(v["on_tcp_connect"].is_array());
        let json_doc = r#"{"on_http_response":[{"actions":[{"type":"log","config":{"metadata":{"a":"b"}}}]}]}"#;
        let v: Value =
            serde_json::from_str(&l.prepend_to(Some(json_doc)).expect("json")).expect("j");
        assert_eq!(v["on_http_response"][1]["actions"][0]["type"], "log");
        assert!(l.prepend_to(Some("- a list")).is_err());
    }
}
