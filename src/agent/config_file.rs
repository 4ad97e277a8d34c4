//! The agent config file: ngrok's YAML (`version: 3`, `agent:`,
//! `endpoints:`; and the older `version: 2` top-level agent keys and
//! `tunnels:` map for HTTP tunnels), read with serde.
//!
//! Owns: parsing, unknown-key errors (with the file, key path, line and
//! column serde_yaml reports), merging several files as ngrok does (later
//! files win; maps merge per key; lists are replaced whole), and the
//! checks that need the merged result. Never: touches the network or
//! starts anything (`agent::start` turns the result into an agent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde_yaml's message names the key path, line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Agent keys (v3 `agent:`; v2 puts them at the top level).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub authtoken: Option<String>,
    /// v2 name of `connect_url`.
    pub server_addr: Option<String>,
    pub connect_url: Option<String>,
    /// v2 name of `connect_cas`.
    pub root_cas: Option<String>,
    pub connect_cas: Option<String>,
    /// An address, or `false`.
    pub web_addr: Option<Value>,
    /// Bytes; 0 = default (50 MB); -1 = no capture.
    pub inspect_db_size: Option<i64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub log: Option<Value>,
    pub metadata: Option<String>,
    // ngrok keys that have no effect here (accepted so an existing
    // ngrok.yml loads; `ringress config check` lists them).
    pub api_key: Option<Value>,
    pub connect_interface: Option<Value>,
    pub connect_timeout: Option<Value>,
    pub heartbeat_interval: Option<Value>,
    pub heartbeat_tolerance: Option<Value>,
    pub dns_resolver_ips: Option<Value>,
    pub proxy_url: Option<Value>,
    pub crl_noverify: Option<Value>,
    pub console_ui: Option<Value>,
    pub console_ui_color: Option<Value>,
    pub remote_management: Option<Value>,
    pub update_channel: Option<Value>,
    pub update_check: Option<Value>,
    pub web_allow_hosts: Option<Value>,
    pub region: Option<Value>,
}

impl AgentSection {
    /// The set keys that ringress ignores.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut check = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        check(self.api_key.is_some(), "api_key");
        check(self.connect_interface.is_some(), "connect_interface");
        check(self.connect_timeout.is_some(), "connect_timeout");
        check(self.heartbeat_interval.is_some(), "heartbeat_interval");
        check(self.heartbeat_tolerance.is_some(), "heartbeat_tolerance");
        check(self.dns_resolver_ips.is_some(), "dns_resolver_ips");
        check(self.proxy_url.is_some(), "proxy_url");
        check(self.crl_noverify.is_some(), "crl_noverify");
        check(self.console_ui.is_some(), "console_ui");
        check(self.console_ui_color.is_some(), "console_ui_color");
        check(self.remote_management.is_some(), "remote_management");
        check(self.update_channel.is_some(), "update_channel");
        check(self.update_check.is_some(), "update_check");
        check(self.web_allow_hosts.is_some(), "web_allow_hosts");
        check(self.region.is_some(), "region");
        check(self.log.is_some(), "log");
        v
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// A port, `host:port`, or a URL (as `ringress http` takes).
    pub url: Option<Value>,
    pub protocol: Option<String>,
    pub proxy_protocol: Option<Value>,
}

/// One item of `endpoints:`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    pub name: Option<String>,
    pub url: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<String>,
    pub bindings: Option<Vec<String>>,
    /// An inline policy (mapping), or its YAML/JSON text.
    pub traffic_policy: Option<Value>,
    pub traffic_policy_file: Option<PathBuf>,
    pub pooling_enabled: Option<bool>,
    pub upstream: Option<Upstream>,
    pub agent_tls_termination: Option<Value>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrLists {
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    #[serde(default)]
    pub deny_cidrs: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub provider: String,
    pub secret: String,
}

/// One entry of the v2 `tunnels:` map: HTTP tunnels only, with the
/// options that map onto a traffic policy.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSection {
    pub proto: Option<String>,
    pub addr: Option<Value>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub schemes: Option<Vec<String>>,
    pub inspect: Option<bool>,
    pub metadata: Option<String>,
    pub traffic_policy: Option<Value>,
    pub basic_auth: Option<Vec<String>>,
    pub compression: Option<bool>,
    pub ip_restriction: Option<CidrLists>,
    pub request_header: Option<HeaderEdits>,
    pub response_header: Option<HeaderEdits>,
    pub verify_webhook: Option<WebhookSection>,
}

/// A whole file (or several merged).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub version: Option<Value>,
    pub agent: Option<AgentSection>,
    pub endpoints: Option<Vec<EndpointSection>>,
    pub tunnels: Option<BTreeMap<String, TunnelSection>>,
    // v2: agent keys at the top level.
    pub authtoken: Option<String>,
    pub server_addr: Option<String>,
    pub root_cas: Option<String>,
    pub web_addr: Option<Value>,
    pub inspect_db_size: Option<i64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub log: Option<Value>,
    pub metadata: Option<String>,
    pub console_ui: Option<Value>,
    pub console_ui_color: Option<Value>,
    pub update_channel: Option<Value>,
    pub update_check: Option<Value>,
    pub region: Option<Value>,
    pub api_key: Option<Value>,
    pub remote_management: Option<Value>,
    pub web_allow_hosts: Option<Value>,
}

/// The checked result.
#[derive(Debug, Clone)]
pub struct AgentFile {
    pub version: u8,
    pub agent: AgentSection,
    pub endpoints: Vec<EndpointSection>,
    pub tunnels: BTreeMap<String, TunnelSection>,
}

/// The default path: `$XDG_CONFIG_HOME/ringress/ringress.yml` (or
/// `~/.config/ringress/ringress.yml`).
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ringress").join("ringress.yml")
}

/// `a` with `b`'s keys laid over it: maps merge per key, everything else
/// (lists included) is replaced.
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Mapping(am), Value::Mapping(bm)) => {
            for (k, v) in bm {
                match am.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        am.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A later file that sets `server_addr` replaces an earlier
/// `connect_url` (its other name), and so on: the later spelling wins.
fn drop_replaced_aliases(merged: &mut Value, next: &Value) {
    let (Some(Value::Mapping(old)), Some(Value::Mapping(new))) =
        (merged.get_mut("agent"), next.get("agent"))
    else {
        return;
    };
    for (a, b) in [("server_addr", "connect_url"), ("root_cas", "connect_cas")] {
        for (set, other) in [(a, b), (b, a)] {
            if new.contains_key(set) {
                old.remove(other);
            }
        }
    }
}

fn parse_one(path: &Path, text: &str) -> Result<Value, ConfigError> {
    let err = |e: serde_yaml::Error| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    };
    // The typed pass reports unknown keys with their line; the untyped
    // value is what gets merged.
    let _: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(err)?
    };
    let v: Value = serde_yaml::from_str(text).map_err(err)?;
    Ok(match v {
        Value::Null => Value::Mapping(Default::default()),
        v => v,
    })
}

/// Reads and merges `paths` in order, then checks the result.
pub fn load(paths: &[PathBuf]) -> Result<AgentFile, ConfigError> {
    let mut texts = Vec::with_capacity(paths.len());
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
            path: p.clone(),
            source: e,
        })?;
        texts.push((p.clone(), text));
    }
    from_texts(&texts)
}

/// [`load`] on texts already read (tests).
pub fn from_texts(files: &[(PathBuf, String)]) -> Result<AgentFile, ConfigError> {
    let mut merged = Value::Mapping(Default::default());
    for (p, text) in files {
        let v = parse_one(p, text)?;
        drop_replaced_aliases(&mut merged, &v);
        merge(&mut merged, v);
    }
    let names = files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let f: FileConfig = serde_yaml::from_value(merged).map_err(|e| ConfigError::Parse {
        path: PathBuf::from(&names),
        message: e.to_string(),
    })?;
    check(f)
}

fn version_of(v: &Option<Value>) -> Result<u8, ConfigError> {
    let s = match v {
        None => {
            return Err(ConfigError::Invalid(
                "`version` is required (use `version: 3`)".into(),
            ))
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
    };
    match s.as_str() {
        "3" => Ok(3),
        "2" => Ok(2),
        _ => Err(ConfigError::Invalid(format!(
            "`version: {s}` is not supported (use 3, or 2 for an older ngrok file)"
        ))),
    }
}

fn check(f: FileConfig) -> Result<AgentFile, ConfigError> {
    let version = version_of(&f.version)?;
    let top_level_agent_keys: Vec<&str> = [
        ("authtoken", f.authtoken.is_some()),
        ("server_addr", f.server_addr.is_some()),
        ("root_cas", f.root_cas.is_some()),
        ("web_addr", f.web_addr.is_some()),
        ("inspect_db_size", f.inspect_db_size.is_some()),
        ("log_level", f.log_level.is_some()),
        ("log_format", f.log_format.is_some()),
        ("log", f.log.is_some()),
        ("metadata", f.metadata.is_some()),
        ("console_ui", f.console_ui.is_some()),
        ("console_ui_color", f.console_ui_color.is_some()),
        ("update_channel", f.update_channel.is_some()),
        ("update_check", f.update_check.is_some()),
        ("region", f.region.is_some()),
        ("api_key", f.api_key.is_some()),
        ("remote_management", f.remote_management.is_some()),
        ("web_allow_hosts", f.web_allow_hosts.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    let agent = match version {
        3 => {
            if let Some(k) = top_level_agent_keys.first() {
                return Err(ConfigError::Invalid(format!(
                    "`{k}` belongs under `agent:` in a version 3 file"
                )));
            }
            f.agent.clone().unwrap_or_default()
        }
        _ => {
            if f.agent.is_some() {
                return Err(ConfigError::Invalid(
                    "`agent:` needs `version: 3` (version 2 files put agent keys at the top level)"
                        .into(),
                ));
            }
            if f.endpoints.is_some() {
                return Err(ConfigError::Invalid(
                    "`endpoints:` needs `version: 3`".into(),
                ));
            }
            AgentSection {
                authtoken: f.authtoken.clone(),
                server_addr: f.server_addr.clone(),
                root_cas: f.root_cas.clone(),
                web_addr: f.web_addr.clone(),
                inspect_db_size: f.inspect_db_size,
                log_level: f.log_level.clone(),
                log_format: f.log_format.clone(),
                log: f.log.clone(),
                metadata: f.metadata.clone(),
                console_ui: f.console_ui.clone(),
                console_ui_color: f.console_ui_color.clone(),
                update_channel: f.update_channel.clone(),
                update_check: f.update_check.clone(),
                region: f.region.clone(),
                api_key: f.api_key.clone(),
                remote_management: f.remote_management.clone(),
                web_allow_hosts: f.web_allow_hosts.clone(),
                ..AgentSection::default()
            }
        }
    };
    if agent.server_addr.is_some() && agent.connect_url.is_some() {
        return Err(ConfigError::Invalid(
            "agent: give `connect_url` or its older name `server_addr`, not both".into(),
        ));
    }
    if agent.root_cas.is_some() && agent.connect_cas.is_some() {
        return Err(ConfigError::Invalid(
            "agent: give `connect_cas` or its older name `root_cas`, not both".into(),
        ));
    }
    if let Some(n) = agent.inspect_db_size {
        if n < -1 {
            return Err(ConfigError::Invalid(format!(
                "agent.inspect_db_size: {n} (bytes; 0 for the default, -1 for no capture)"
            )));
        }
    }
    if let Some(f) = agent.log_format.as_deref() {
        if !matches!(f, "term" | "logfmt" | "json" | "text") {
            return Err(ConfigError::Invalid(format!(
                "agent.log_format: {f:?} (term, logfmt or json)"
            )));
        }
    }
    match &agent.web_addr {
        None | Some(Value::Bool(false)) | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(ConfigError::Invalid(format!(
                "agent.web_addr: {other:?} (an address like 127.0.0.1:4040, or false)"
            )))
        }
    }
    let endpoints = f.endpoints.unwrap_or_default();
    let tunnels = f.tunnels.unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let Some(name) = e.name.as_deref().filter(|n| !n.is_empty()) else {
            return Err(ConfigError::Invalid(format!(
                "endpoints[{i}]: `name` is required"
            )));
        };
        if !seen.insert(name.to_owned()) {
            return Err(ConfigError::Invalid(format!(
                "endpoints[{i}]: the name {name:?} is used twice"
            )));
        }
        if e.upstream.as_ref().and_then(|u| u.url.as_ref()).is_none() {
            return Err(ConfigError::Invalid(format!(
                "endpoint {name:?}: `upstream.url` is required"
            )));
        }
    }
    for name in tunnels.keys() {
        if !seen.insert(name.clone()) {
            return Err(ConfigError::Invalid(format!(
                "tunnel {name:?}: an endpoint has the same name"
            )));
        }
    }
    Ok(AgentFile {
        version,
        agent,
        endpoints,
        tunnels,
    })
}

/// A scalar YAML value as text (`8080`, `localhost:80`).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(files: &[&str]) -> Result<AgentFile, ConfigError> {
        let v: Vec<(PathBuf, String)> = files
            .iter()
            .enumerate()
            .map(|(i, t)| (PathBuf::from(format!("f{i}.yml")), t.to_string()))
            .collect();
        from_texts(&v)
    }

    const NGROK_V3: &str = r#"
version: 3
agent:
  authtoken: tok_123
  server_addr: localhost:4443
  root_cas: /tmp/ca.pem
  web_addr: 127.0.0.1:4041
  inspect_db_size: 1000000
  console_ui: true
  update_check: false
endpoints:
  - name: web
    description: the site
    metadata: '{"team":"a"}'
    url: https://web.example.com
    upstream:
      url: 8080
      protocol: http2
    traffic_policy:
      on_http_request:
        - actions:
            - type: add-headers
              config:
                headers:
                  x-a: "1"
  - name: api
    url: api.example.com
    pooling_enabled: true
    upstream:
      url: http://localhost:9000
"#;

    #[test]
    fn ngrok_v3_file() {
        let f = texts(&[NGROK_V3]).expect("valid");
        assert_eq!(f.version, 3);
        assert_eq!(f.agent.authtoken.as_deref(), Some("tok_123"));
        assert_eq!(f.agent.ignored_keys(), ["console_ui", "update_check"]);
        assert_eq!(f.endpoints.len(), 2);
        let up = f.endpoints[0].upstream.as_ref().expect("upstream");
        assert_eq!(
            up.url.as_ref().and_then(scalar_text).as_deref(),
            Some("8080")
        );
        assert_eq!(up.protocol.as_deref(), Some("http2"));
        assert!(f.endpoints[0].traffic_policy.is_some());
        assert_eq!(f.endpoints[1].pooling_enabled, Some(true));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = texts(&["version: 3\nagent:\n  authtoken: x\nendpoints:\n  - name: a\n    upstream:\n      url: 80\n      protocl: http2\n"])
            .expect_err("typo");
        let m = e.to_string();
        assert!(m.contains("f0.yml"), "{m}");
        assert!(m.contains("protocl"), "{m}");
        assert!(m.contains("line 8"), "{m}");
        let m = texts(&["version: 3\nagnet: {}\n"])
            .expect_err("typo")
            .to_string();
        assert!(m.contains("agnet") && m.contains("line 2"), "{m}");
    }

    #[test]
    fn merge_later_wins_maps_merge_lists_replace() {
        let a = "version: 3\nagent:\n  authtoken: a\n  server_addr: edge:443\nendpoints:\n  - name: one\n    upstream: {url: 1}\n";
        let b = "agent:\n  authtoken: b\nendpoints:\n  - name: two\n    upstream: {url: 2}\n";
        let f = texts(&[a, b]).expect("merged");
        assert_eq!(f.agent.authtoken.as_deref(), Some("b"));
        assert_eq!(f.agent.server_addr.as_deref(), Some("edge:443"));
        let names: Vec<_> = f.endpoints.iter().filter_map(|e| e.name.clone()).collect();
        assert_eq!(names, ["two"]);
    }

    #[test]
    fn a_later_file_replaces_the_other_spelling() {
        let a = "version: 3\nagent:\n  connect_url: ngrok:443\n  connect_cas: trusted\n";
        let b = "agent:\n  server_addr: edge:4443\n  root_cas: /ca.pem\n";
        let f = texts(&[a, b]).expect("merged");
        assert_eq!(f.agent.server_addr.as_deref(), Some("edge:4443"));
        assert!(f.agent.connect_url.is_none() && f.agent.connect_cas.is_none());
        assert!(texts(&["version: 3\nagent: {connect_url: a, server_addr: b}\n"]).is_err());
    }

    #[test]
    fn checks_after_the_merge() {
        assert!(texts(&["agent: {}\n"])
            .expect_err("no version")
            .to_string()
            .contains("version"));
        assert!(texts(&["version: 4\n"]).is_err());
        let m = texts(&["version: 3\nendpoints:\n  - name: a\n"])
            .expect_err("no upstream")
            .to_string();
        assert!(m.contains("upstream.url"), "{m}");
        let m = texts(&["version: 3\nendpoints:\n  - name: a\n    upstream: {url: 1}\n  - name: a\n    upstream: {url: 2}\n"])
            .expect_err("dup").to_string();
        assert!(m.contains("twice"), "{m}");
        let m = texts(&["version: 3\nauthtoken: x\n"])
            .expect_err("v2 key")
            .to_string();
        assert!(m.contains("under `agent:`"), "{m}");
        assert!(texts(&["version: 3\nagent: {inspect_db_size: -5}\n"]).is_err());
        assert!(texts(&["version: 3\nagent: {web_addr: 4040}\n"]).is_err());
        assert!(texts(&["version: 3\nagent: {web_addr: false}\n"]).is_ok());
    }

    #[test]
    fn v2_file_with_tunnels() {
        let f = texts(&["version: \"2\"\nauthtoken: t\nserver_addr: edge:4443\ntunnels:\n  site:\n    proto: http\n    addr: 8080\n    domain: site.example.com\n    basic_auth: [\"u:password1\"]\n"])
            .expect("v2");
        assert_eq!(f.version, 2);
        assert_eq!(f.agent.server_addr.as_deref(), Some("edge:4443"));
        assert_eq!(
            f.tunnels["site"].domain.as_deref(),
            Some("site.example.com")
        );
        let m = texts(&[
            "version: 2\ntunnels:\n  a:\n    proto: http\n    addr: 1\n    host_header: rewrite\n",
        ])
        .expect_err("unsupported")
        .to_string();
        assert!(m.contains("host_header") && m.contains("line 6"), "{m}");
    }
}
