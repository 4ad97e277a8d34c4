//! Command line: `ringress edge`, the agent (`http`, `start`, `config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod api;

#[derive(Debug, Parser)]
#[command(
    name = "ringress",
    version,
    about = "Self-hosted, ngrok-compatible HTTP/S edge and agent"
)]
pub struct Cli {
    /// Log level or filter (e.g. info, debug, ringress=trace); RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start-up: the size of one value does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge: public HTTP listener, routing, traffic policy, proxying.
    Edge(EdgeArgs),
    /// Expose a local service through an edge: `ringress http 8080`.
    Http(HttpArgs),
    /// Manage the edge's API keys offline: `ringress api-key create`.
    ApiKey(crate::control::cli::ApiKeyArgs),
    /// Call the edge's REST API: `ringress api endpoints list`.
    Api(api::ApiArgs),
    /// Start the endpoints of an agent config file (ngrok's v3 YAML).
    Start(crate::agent::start::StartArgs),
    /// Agent config file tools: `ringress config check`.
    Config(crate::agent::start::ConfigArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamProtocolArg {
    Http1,
    Http2,
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The upstream: a port (`8080`), `host:port`, `http(s)://host:port`, or
    /// `file:///abs/dir`.
    pub upstream: String,
    /// Endpoint URL: `https://name.example.com`, `http://...`, a bare host,
    /// or nothing for a random name under the edge's base domain.
    #[arg(long)]
    pub url: Option<String>,
    /// Deprecated ngrok spelling of --url.
    #[arg(long, hide = true)]
    pub domain: Option<String>,
    /// Auth token for the edge (not needed by a `--dev` edge).
    #[arg(long, env = "RINGRESS_AUTHTOKEN", default_value = "")]
    pub authtoken: String,
    /// The edge's tunnel address.
    #[arg(long, env = "RINGRESS_SERVER_ADDR", default_value = "localhost:4443")]
    pub server_addr: String,
    /// CA file (PEM) to trust for the edge, or `host` for the system store.
    /// Default: the dev CA of a local `--dev` edge when it exists.
    #[arg(long)]
    pub root_cas: Option<String>,
    /// Let other agents bind the same URL; requests are balanced.
    #[arg(long)]
    pub pooling_enabled: bool,
    /// Opaque endpoint metadata.
    #[arg(long, default_value = "")]
    pub metadata: String,
    /// Free-text description (shown by the edge).
    #[arg(long, default_value = "")]
    pub description: String,
    /// Traffic policy file (JSON or YAML) for the endpoint.
    #[arg(long)]
    pub traffic_policy_file: Option<PathBuf>,
    /// How to speak to the upstream: HTTP/1.1 or h2c (prior knowledge).
    #[arg(long, value_enum, default_value = "http1")]
    pub upstream_protocol: UpstreamProtocolArg,
    /// Verify an https upstream's certificate (off by default).
    #[arg(long)]
    pub upstream_tls_verify: bool,
    /// CA file for --upstream-tls-verify.
    #[arg(long)]
    pub upstream_tls_verify_cas: Option<PathBuf>,
    /// Only `public` is supported.
    #[arg(long, default_value = "public")]
    pub binding: String,
    /// Sessions to open (default: one per edge worker).
    #[arg(long)]
    pub sessions: Option<usize>,
    #[command(flatten)]
    pub web: crate::agent::start::WebArgs,
    #[command(flatten)]
    pub legacy: LegacyHttpArgs,
}

/// ngrok's deprecated endpoint flags, translated by the agent into a
/// traffic policy sent with the endpoint (its rules run before those of
/// --traffic-policy-file).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Deprecated (translated into a traffic policy)")]
pub struct LegacyHttpArgs {
    /// Require HTTP basic auth: `user:password` (password 8-128
    /// characters); repeatable.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub basic_auth: Vec<String>,
    /// Require an OAuth login with this provider (google, github).
    #[arg(long, value_name = "PROVIDER")]
    pub oauth: Option<String>,
    /// OAuth: allow this email address; repeatable.
    #[arg(long, value_name = "EMAIL")]
    pub oauth_allow_email: Vec<String>,
    /// OAuth: allow email addresses of this domain; repeatable.
    #[arg(long, value_name = "DOMAIN")]
    pub oauth_allow_domain: Vec<String>,
    /// OAuth: the application's client id.
    #[arg(long)]
    pub oauth_client_id: Option<String>,
    /// OAuth: the application's client secret.
    #[arg(long)]
    pub oauth_client_secret: Option<String>,
    /// OAuth: an extra scope to request; repeatable.
    #[arg(long, value_name = "SCOPE")]
    pub oauth_scope: Vec<String>,
    /// Require an OpenID Connect login with this issuer.
    #[arg(long, value_name = "ISSUER_URL")]
    pub oidc: Option<String>,
    /// OpenID Connect: the client id.
    #[arg(long)]
    pub oidc_client_id: Option<String>,
    /// OpenID Connect: the client secret.
    #[arg(long)]
    pub oidc_client_secret: Option<String>,
    /// OpenID Connect: an extra scope to request; repeatable.
    #[arg(long, value_name = "SCOPE")]
    pub oidc_scope: Vec<String>,
    /// Allow only clients in this CIDR; repeatable.
    #[arg(long, value_name = "CIDR")]
    pub cidr_allow: Vec<String>,
    /// Refuse clients in this CIDR; repeatable.
    #[arg(long, value_name = "CIDR")]
    pub cidr_deny: Vec<String>,
    /// Add a header to requests: `name:value`; repeatable.
    #[arg(long, value_name = "NAME:VALUE")]
    pub request_header_add: Vec<String>,
    /// Remove a header from requests; repeatable.
    #[arg(long, value_name = "NAME")]
    pub request_header_remove: Vec<String>,
    /// Add a header to responses: `name:value`; repeatable.
    #[arg(long, value_name = "NAME:VALUE")]
    pub response_header_add: Vec<String>,
    /// Remove a header from responses; repeatable.
    #[arg(long, value_name = "NAME")]
    pub response_header_remove: Vec<String>,
    /// Compress responses (gzip, br, zstd, deflate, as the client accepts).
    #[arg(long)]
    pub compression: bool,
    /// Verify webhooks from this provider (github, stripe, slack, ...).
    #[arg(long, value_name = "PROVIDER")]
    pub verify_webhook: Option<String>,
    /// The secret for --verify-webhook.
    #[arg(long)]
    pub verify_webhook_secret: Option<String>,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Edge config file (TOML). Without it: no endpoints, defaults only.
    #[arg(long, short = 'c', env = "RINGRESS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Worker threads, one per core (overrides `workers`).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Public HTTP listener address (overrides `listen.http`).
    #[arg(long)]
    pub listen_http: Option<SocketAddr>,
    /// Public HTTPS listener address (overrides `listen.https`).
    #[arg(long)]
    pub listen_https: Option<SocketAddr>,
    /// Agent tunnel listener address (overrides `listen.tunnel`).
    #[arg(long)]
    pub listen_tunnel: Option<SocketAddr>,
    /// REST API listener address (overrides `listen.api`; loopback is
    /// advised). Without it or `listen.api`, the edge runs no API.
    #[arg(long)]
    pub listen_api: Option<SocketAddr>,
    /// Development mode: loopback listeners (8080/8443), a local CA in the
    /// data dir, base domain ringress.localhost.
    #[arg(long)]
    pub dev: bool,
    /// Where state and certificates live (default /var/lib/ringress, or
    /// ~/.local/share/ringress with --dev).
    #[arg(long, env = "RINGRESS_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Validate the config and exit.
    #[arg(long)]
    pub check: bool,
    /// Zero-downtime upgrade: check the config, ask the running edge to
    /// start a new process from the binary on disk and hand it its
    /// sockets, wait for the outcome (exit status), print the new PID.
    #[arg(long, conflicts_with = "check")]
    pub upgrade: bool,
    /// The running edge's control socket (default `<data_dir>/edge.sock`).
    #[arg(long, value_name = "PATH")]
    pub upgrade_socket: Option<PathBuf>,
}
