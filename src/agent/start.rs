//! `ringress start [NAMES...] [--all] [--config FILE...]` and `ringress
//! config check`: an agent config file (see `agent::config_file`) turned
//! into an [`AgentConfig`], the same one `ringress http` builds from
//! flags; several endpoints then share each session.
//!
//! Also the flags `ringress http` and `ringress start` share for the
//! local inspector ([`WebArgs`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::cli::with_legacy_flags;
use super::config_file::{self, scalar_text, AgentFile, EndpointSection, TunnelSection};
use super::forward::{ForwardOptions, Forwarder, UpstreamProtocol};
use super::inspect::{store::DEFAULT_DB_SIZE, WebOptions, DEFAULT_WEB_ADDR};
use super::run::{self, AgentConfig, AgentEndpoint, AgentError};
use super::session::EndpointRequest;
use super::upstream_url;
use crate::cli::{LegacyHttpArgs, LogFormat};

/// The local inspector's flags.
#[derive(Debug, Default, Clone, Args)]
pub struct WebArgs {
    /// Capture requests for the local inspector; `--inspect=false` turns
    /// capture off (the agent API still runs).
    #[arg(
        long,
        require_equals = true,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub inspect: Option<bool>,
    /// Inspector and agent API address (default 127.0.0.1:4040, then the
    /// next free port); `false` turns it off.
    #[arg(long, value_name = "ADDR")]
    pub web_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Endpoints (or v2 tunnels) to start, by name.
    pub names: Vec<String>,
    /// Start every endpoint of the config.
    #[arg(long)]
    pub all: bool,
    /// Config file(s), ngrok's YAML; repeat the flag or separate with
    /// commas; later files win. Default: ~/.config/ringress/ringress.yml.
    #[arg(long, value_delimiter = ',', value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Auth token for the edge (overrides agent.authtoken).
    #[arg(long, env = "RINGRESS_AUTHTOKEN")]
    pub authtoken: Option<String>,
    /// Sessions to open (default: one per edge worker).
    #[arg(long)]
    pub sessions: Option<usize>,
    #[command(flatten)]
    pub web: WebArgs,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check agent config file(s): syntax, unknown keys, upstreams,
    /// traffic policies.
    Check {
        /// Config file(s); later files win. Default:
        /// ~/.config/ringress/ringress.yml.
        #[arg(long, value_delimiter = ',', value_name = "FILE")]
        config: Vec<PathBuf>,
    },
}

fn paths(given: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_empty() {
        vec![config_file::default_path()]
    } else {
        given.to_vec()
    }
}

fn load(given: &[PathBuf]) -> Result<AgentFile, AgentError> {
    config_file::load(&paths(given)).map_err(|e| AgentError::Config(e.to_string()))
}

pub fn start(args: StartArgs) -> Result<(), AgentError> {
    let file = load(&args.config)?;
    for k in file.agent.ignored_keys() {
        tracing::info!(key = k, "agent.{k} has no effect in ringress");
    }
    let cfg = agent_config(&file, &args)?;
    run::run(cfg)
}

pub fn config(args: ConfigArgs) -> Result<(), AgentError> {
    match args.command {
        ConfigCommand::Check { config } => {
            let file = load(&config)?;
            let start = StartArgs {
                names: Vec::new(),
                all: true,
                config: config.clone(),
                authtoken: None,
                sessions: None,
                web: WebArgs::default(),
            };
            let cfg = agent_config(&file, &start)?;
            for e in &cfg.endpoints {
                Forwarder::new(e.forward.clone())
                    .map_err(|err| AgentError::Start(format!("endpoint {:?}: {err}", e.name)))?;
                if let Some(p) = &e.request.traffic_policy {
                    crate::policy::CompiledPolicy::from_text(p).map_err(|err| {
                        AgentError::Start(format!("endpoint {:?}: traffic_policy: {err}", e.name))
                    })?;
                }
            }
            let shown: Vec<String> = paths(&config)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            println!("Valid configuration file at {}", shown.join(", "));
            for e in &cfg.endpoints {
                let url = if e.request.url.is_empty() {
                    "(random URL)"
                } else {
                    &e.request.url
                };
                println!("  endpoint {}: {url} -> {}", e.name, e.upstream_display);
            }
            for k in file.agent.ignored_keys() {
                println!("  note: agent.{k} has no effect in ringress");
            }
            Ok(())
        }
    }
}

/// The log level and format for `ringress start`: the config file's
/// `log_level` / `log_format` unless the command line gave its own.
pub fn log_settings(args: &StartArgs, level: &str, format: LogFormat) -> (String, LogFormat) {
    let Ok(file) = config_file::load(&paths(&args.config)) else {
        return (level.to_owned(), format);
    };
    let level = match (level, file.agent.log_level.as_deref()) {
        ("info", Some("crit")) => "error".to_owned(),
        ("info", Some(l)) => l.to_owned(),
        (l, _) => l.to_owned(),
    };
    let format = match (format, file.agent.log_format.as_deref()) {
        (LogFormat::Text, Some("json")) => LogFormat::Json,
        (f, _) => f,
    };
    (level, format)
}

fn start_err(name: &str, msg: impl std::fmt::Display) -> AgentError {
    AgentError::Start(format!("endpoint {name:?}: {msg}"))
}

/// Text of an inline policy (mapping → JSON) or the policy text given.
fn policy_text(name: &str, v: &serde_yaml::Value) -> Result<Option<String>, AgentError> {
    match v {
        serde_yaml::Value::Null => Ok(None),
        serde_yaml::Value::String(s) => Ok(Some(s.clone())),
        serde_yaml::Value::Mapping(_) => {
            let j = serde_json::to_value(v).map_err(|e| start_err(name, e))?;
            Ok(Some(j.to_string()))
        }
        _ => Err(start_err(
            name,
            "traffic_policy must be a mapping or its text",
        )),
    }
}

fn protocol(name: &str, p: Option<&str>) -> Result<UpstreamProtocol, AgentError> {
    match p {
        None | Some("http1") => Ok(UpstreamProtocol::Http1),
        Some("http2") => Ok(UpstreamProtocol::Http2),
        Some(other) => Err(start_err(
            name,
            format!("upstream.protocol {other:?} (http1 or http2)"),
        )),
    }
}

fn endpoint(
    name: &str,
    url: String,
    upstream: &str,
    proto: UpstreamProtocol,
    request: EndpointRequest,
    inspect: bool,
) -> Result<AgentEndpoint, AgentError> {
    let upstream = upstream_url::normalize(upstream).map_err(|e| start_err(name, e))?;
    let display = upstream.to_string();
    Ok(AgentEndpoint {
        name: name.to_owned(),
        inspect,
        request: EndpointRequest {
            url,
            forwards_to: display.clone(),
            forwards_proto: match proto {
                UpstreamProtocol::Http1 => "http1".into(),
                UpstreamProtocol::Http2 => "http2".into(),
            },
            ..request
        },
        forward: ForwardOptions {
            upstream,
            protocol: proto,
            tls_verify: false,
            tls_verify_cas: None,
        },
        upstream_display: display,
    })
}

fn from_endpoint(e: &EndpointSection, inspect: bool) -> Result<AgentEndpoint, AgentError> {
    let name = e.name.as_deref().unwrap_or_default();
    let up = e.upstream.clone().unwrap_or_default();
    let upstream = up
        .url
        .as_ref()
        .and_then(scalar_text)
        .ok_or_else(|| start_err(name, "upstream.url must be a port, host:port or URL"))?;
    if let Some(pp) = &up.proxy_protocol {
        if !matches!(pp, serde_yaml::Value::Null)
            && scalar_text(pp).is_some_and(|s| !s.is_empty() && s != "0")
        {
            return Err(start_err(name, "upstream.proxy_protocol is not supported"));
        }
    }
    if e.agent_tls_termination.is_some() {
        return Err(start_err(
            name,
            "agent_tls_termination is for tls:// endpoints, which ringress does not serve",
        ));
    }
    match e.bindings.as_deref() {
        None | Some([]) => {}
        Some([b]) if b == "public" => {}
        Some(other) => {
            return Err(start_err(
                name,
                format!("bindings {other:?}: only public endpoints are supported"),
            ))
        }
    }
    let url = e.url.clone().unwrap_or_default();
    if url.starts_with("tcp://") || url.starts_with("tls://") {
        return Err(start_err(
            name,
            "only http:// and https:// endpoints are supported",
        ));
    }
    let mut policy = match &e.traffic_policy {
        Some(v) => policy_text(name, v)?,
        None => None,
    };
    if let Some(p) = &e.traffic_policy_file {
        if policy.is_some() {
            return Err(start_err(
                name,
                "give traffic_policy or traffic_policy_file, not both",
            ));
        }
        policy = Some(
            std::fs::read_to_string(p)
                .map_err(|err| start_err(name, format!("cannot read {}: {err}", p.display())))?,
        );
    }
    let proto = protocol(name, up.protocol.as_deref())?;
    let request = EndpointRequest {
        url: String::new(),
        pooling: e.pooling_enabled.unwrap_or(false),
        metadata: e.metadata.clone().unwrap_or_default(),
        description: e.description.clone().unwrap_or_default(),
        traffic_policy: policy,
        forwards_to: String::new(),
        forwards_proto: String::new(),
    };
    endpoint(name, url, &upstream, proto, request, inspect)
}

fn from_tunnel(
    name: &str,
    t: &TunnelSection,
    inspect: Option<bool>,
) -> Result<AgentEndpoint, AgentError> {
    match t.proto.as_deref() {
        Some("http") => {}
        other => {
            return Err(start_err(
                name,
                format!("proto {other:?}: only http tunnels are supported"),
            ))
        }
    }
    let upstream = t
        .addr
        .as_ref()
        .and_then(scalar_text)
        .ok_or_else(|| start_err(name, "`addr` is required"))?;
    let host = t.domain.clone().or_else(|| t.hostname.clone());
    let http_only = t
        .schemes
        .as_ref()
        .is_some_and(|s| !s.iter().any(|x| x == "https") && s.iter().any(|x| x == "http"));
    let url = match (host, http_only) {
        (Some(h), true) => format!("http://{h}"),
        (Some(h), false) => format!("https://{h}"),
        (None, _) => String::new(),
    };
    let mut legacy = LegacyHttpArgs {
        basic_auth: t.basic_auth.clone().unwrap_or_default(),
        compression: t.compression.unwrap_or(false),
        ..LegacyHttpArgs::default()
    };
    if let Some(ip) = &t.ip_restriction {
        legacy.cidr_allow.clone_from(&ip.allow_cidrs);
        legacy.cidr_deny.clone_from(&ip.deny_cidrs);
    }
    if let Some(h) = &t.request_header {
        legacy.request_header_add.clone_from(&h.add);
        legacy.request_header_remove.clone_from(&h.remove);
    }
    if let Some(h) = &t.response_header {
        legacy.response_header_add.clone_from(&h.add);
        legacy.response_header_remove.clone_from(&h.remove);
    }
    if let Some(w) = &t.verify_webhook {
        legacy.verify_webhook = Some(w.provider.clone());
        legacy.verify_webhook_secret = Some(w.secret.clone());
    }
    let policy = match &t.traffic_policy {
        Some(v) => policy_text(name, v)?,
        None => None,
    };
    let policy = with_legacy_flags(&legacy, policy).map_err(|e| start_err(name, e))?;
    let request = EndpointRequest {
        url: String::new(),
        pooling: false,
        metadata: t.metadata.clone().unwrap_or_default(),
        description: String::new(),
        traffic_policy: policy,
        forwards_to: String::new(),
        forwards_proto: String::new(),
    };
    let inspect = inspect.or(t.inspect).unwrap_or(true);
    endpoint(
        name,
        url,
        &upstream,
        UpstreamProtocol::Http1,
        request,
        inspect,
    )
}

/// Web options from the flags, then the file, then ngrok's defaults.
pub fn web_options(flags: &WebArgs, file: Option<&AgentFile>) -> WebOptions {
    let agent = file.map(|f| &f.agent);
    let addr = match (&flags.web_addr, agent.and_then(|a| a.web_addr.as_ref())) {
        (Some(a), _) if a == "false" => None,
        (Some(a), _) => Some(a.clone()),
        (None, Some(serde_yaml::Value::Bool(false))) => None,
        (None, Some(serde_yaml::Value::String(s))) => Some(s.clone()),
        _ => Some(DEFAULT_WEB_ADDR.to_owned()),
    };
    let db_size = match agent.and_then(|a| a.inspect_db_size) {
        None | Some(0) => DEFAULT_DB_SIZE,
        Some(n) if n < 0 => 0,
        Some(n) => usize::try_from(n).unwrap_or(DEFAULT_DB_SIZE),
    };
    WebOptions { addr, db_size }
}

/// The agent for the selected endpoints of `file`.
pub fn agent_config(file: &AgentFile, args: &StartArgs) -> Result<AgentConfig, AgentError> {
    if args.sessions == Some(0) {
        return Err(AgentError::Start("--sessions must be at least 1".into()));
    }
    let known: Vec<String> = file
        .endpoints
        .iter()
        .filter_map(|e| e.name.clone())
        .chain(file.tunnels.keys().cloned())
        .collect();
    if !args.all && args.names.is_empty() {
        return Err(AgentError::Start(format!(
            "name the endpoints to start, or give --all (the config has: {})",
            known.join(", ")
        )));
    }
    for n in &args.names {
        if !known.contains(n) {
            return Err(AgentError::Start(format!(
                "no endpoint or tunnel named {n:?} in the config (it has: {})",
                known.join(", ")
            )));
        }
    }
    let wanted = |n: &str| args.all || args.names.iter().any(|x| x == n);
    let inspect_flag = args.web.inspect;
    let mut endpoints = Vec::new();
    for e in &file.endpoints {
        if e.name.as_deref().is_some_and(wanted) {
            endpoints.push(from_endpoint(e, inspect_flag.unwrap_or(true))?);
        }
    }
    for (name, t) in &file.tunnels {
        if wanted(name) {
            endpoints.push(from_tunnel(name, t, inspect_flag)?);
        }
    }
    if endpoints.is_empty() {
        return Err(AgentError::Start("the config has no endpoints".into()));
    }
    let a = &file.agent;
    Ok(AgentConfig {
        server_addr: a
            .connect_url
            .clone()
            .or_else(|| a.server_addr.clone())
            .unwrap_or_else(|| "localhost:4443".into()),
        root_cas: a.connect_cas.clone().or_else(|| a.root_cas.clone()),
        authtoken: args
            .authtoken
            .clone()
            .or_else(|| a.authtoken.clone())
            .unwrap_or_default(),
        metadata: a.metadata.clone().unwrap_or_default(),
        endpoints,
        sessions: args.sessions,
        web: web_options(&args.web, Some(file)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> AgentFile {
        config_file::from_texts(&[(PathBuf::from("t.yml"), text.to_owned())]).expect("valid")
    }

    fn args(names: &[&str], all: bool) -> StartArgs {
        StartArgs {
            names: names.iter().map(|s| s.to_string()).collect(),
            all,
            config: Vec::new(),
            authtoken: None,
            sessions: None,
            web: WebArgs::default(),
        }
    }

    const FILE: &str = r#"
version: 3
agent:
  authtoken: tok
  connect_url: edge.example.com:4443
  connect_cas: /etc/ringress/ca.pem
  web_addr: false
  inspect_db_size: -1
endpoints:
  - name: grpc
    url: https://grpc.example.com
    upstream: {url: "localhost:50051", protocol: http2}
    traffic_policy:
      on_http_request:
        - actions: [{type: deny}]
  - name: site
    upstream: {url: 8080}
tunnels:
  old:
    proto: http
    addr: 9000
    domain: old.example.com
    inspect: false
    basic_auth: ["user:password1"]
"#;

    #[test]
    fn endpoints_map_to_the_agent() {
        let cfg = agent_config(&file(FILE), &args(&[], true)).expect("config");
        assert_eq!(cfg.server_addr, "edge.example.com:4443");
        assert_eq!(cfg.root_cas.as_deref(), Some("/etc/ringress/ca.pem"));
        assert_eq!(cfg.authtoken, "tok");
        assert!(cfg.web.addr.is_none());
        assert_eq!(cfg.web.db_size, 0);
        let names: Vec<_> = cfg.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["grpc", "site", "old"]);
        let g = &cfg.endpoints[0];
        assert_eq!(g.forward.protocol, UpstreamProtocol::Http2);
        assert_eq!(g.request.forwards_proto, "http2");
        assert_eq!(g.request.url, "https://grpc.example.com");
        let p: serde_json::Value =
            serde_json::from_str(g.request.traffic_policy.as_deref().expect("policy"))
                .expect("json");
        assert_eq!(p["on_http_request"][0]["actions"][0]["type"], "deny");
        assert_eq!(cfg.endpoints[1].upstream_display, "http://localhost:8080");
        let old = &cfg.endpoints[2];
        assert_eq!(old.request.url, "https://old.example.com");
        assert!(!old.inspect);
        assert!(old
            .request
            .traffic_policy
            .as_deref()
            .is_some_and(|p| p.contains("basic-auth")));
    }

    #[test]
    fn selection_by_name() {
        let cfg = agent_config(&file(FILE), &args(&["site"], false)).expect("config");
        assert_eq!(cfg.endpoints.len(), 1);
        let e = agent_config(&file(FILE), &args(&["nope"], false)).expect_err("unknown");
        assert!(e.to_string().contains("nope") && e.to_string().contains("grpc"));
        assert!(agent_config(&file(FILE), &args(&[], false)).is_err());
    }

    #[test]
    fn refused_endpoint_options() {
        let bad = |ep: &str| {
            let text =
                format!("version: 3\nendpoints:\n  - name: a\n    upstream: {{url: 80}}\n{ep}");
            agent_config(&file(&text), &args(&[], true))
                .expect_err(ep)
                .to_string()
        };
        assert!(bad("    bindings: [internal]\n").contains("public"));
        assert!(bad("    url: tcp://1.tcp.example.com:1\n").contains("http"));
        assert!(bad("    agent_tls_termination: {}\n").contains("tls"));
        let text = "version: 3\nendpoints:\n  - name: a\n    upstream: {url: 80, protocol: h3}\n";
        assert!(agent_config(&file(text), &args(&[], true)).is_err());
    }

    #[test]
    fn web_flags_win() {
        let flags = WebArgs {
            inspect: None,
            web_addr: Some("127.0.0.1:0".into()),
        };
        let w = web_options(&flags, Some(&file(FILE)));
        assert_eq!(w.addr.as_deref(), Some("127.0.0.1:0"));
        let w = web_options(&WebArgs::default(), None);
        assert_eq!(w.addr.as_deref(), Some(DEFAULT_WEB_ADDR));
        assert_eq!(w.db_size, DEFAULT_DB_SIZE);
        let off = WebArgs {
            inspect: None,
            web_addr: Some("false".into()),
        };
        assert!(web_options(&off, None).addr.is_none());
    }
}
