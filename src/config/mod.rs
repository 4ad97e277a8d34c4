//! The edge's configuration: the TOML file format, its defaults and its
//! validation. Loading never touches the network except to resolve
//! upstream host names, which happens on the control thread (see
//! `runtime::snapshot`).

pub mod file;
pub mod url;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use file::load_file;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid config: {field}: {reason}")]
    Field { field: String, reason: String },
    #[error("endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: String },
    #[error("endpoint {url:?}: {source}")]
    Policy {
        url: String,
        source: crate::policy::PolicyError,
    },
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub http: SocketAddr,
    /// The public HTTPS listener; `None` when the edge has nothing to serve
    /// over TLS (see `file::https_needed`).
    pub https: Option<SocketAddr>,
    /// The agent tunnel listener (TLS, ngrok's agent protocol); `None`
    /// when no agent may connect.
    pub tunnel: Option<SocketAddr>,
    /// The REST API listener (`[listen] api`, `--listen-api`); `None`: no
    /// API and no store.
    pub api: Option<SocketAddr>,
}

/// The REST API's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiConfig {
    /// PEM certificate chain and key: the API then speaks HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Agent sessions: who may connect and how their URLs are named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelConfig {
    /// Accepted auth tokens; empty means any token under `--dev` and none
    /// otherwise.
    pub auth_tokens: Vec<String>,
    /// Random hostnames are `<12 hex>.<base_domain>`.
    pub base_domain: Option<String>,
    /// How long a dropped session's URLs stay reserved for its reconnect.
    pub reserve_grace: Duration,
    /// Domains agents may bind on a production edge, besides random names
    /// under the base domain (`[tunnel] reserved_domains`).
    pub reserved_domains: crate::control::domains::ReservedDomains,
    /// CNAME targets of reserved domains are `<random>.cname.<cname_base>`
    /// (default: the base domain).
    pub cname_base: Option<String>,
}

/// A certificate chain and key from files, for the names it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCertificate {
    /// Exact names or `*.suffix` wildcards, lowercase.
    pub domains: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Also served to clients that send no SNI or an unknown name.
    pub default: bool,
}

/// Automatic certificates (RFC 8555, HTTP-01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    pub directory: String,
    /// PEM roots trusted for the directory's HTTPS (a private ACME server).
    pub ca_bundle: Option<PathBuf>,
    pub email: Option<String>,
}

/// Where TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub certificates: Vec<FileCertificate>,
    pub acme: Option<AcmeConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A keep-alive client connection with no request in progress is
    /// closed after this long.
    pub client_idle: Duration,
    /// No byte from the upstream for this long fails the request (504).
    pub upstream_idle: Duration,
    /// A request head must be complete this long after its first byte.
    pub header_read: Duration,
    pub upstream_connect: Duration,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_idle: Duration::from_secs(300),
            upstream_idle: Duration::from_secs(300),
            header_read: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections_per_worker: usize,
    pub max_head_bytes: usize,
    /// Idle keep-alive connections kept per upstream address per worker.
    pub upstream_idle_per_host: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_worker: 65_536,
            max_head_bytes: crate::http1::limits::DEFAULT_MAX_HEAD_BYTES,
            upstream_idle_per_host: 1024,
        }
    }
}

/// Settings that a reload may change; they travel in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub limits: Limits,
}

/// One `[[endpoints]]` entry, validated but not yet compiled.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub url: url::EndpointUrl,
    pub upstream: Option<url::UpstreamUrl>,
    pub traffic_policy: Option<crate::policy::TrafficPolicy>,
    /// Inspector and events overrides (`inspect`, `events`).
    pub observe: crate::observe::config::EndpointObserve,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub workers: usize,
    pub listen: Listen,
    /// Development mode: loopback listeners, a local CA, base domain
    /// `ringress.localhost`.
    pub dev: bool,
    /// State and certificates live here.
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub settings: Settings,
    pub endpoints: Vec<EndpointConfig>,
    pub tunnel: TunnelConfig,
    /// `[observe]`: metrics, events, inspector (fixed at start).
    pub observe: crate::observe::config::ObserveConfig,
    pub api: ApiConfig,
}

/// The dev base domain: every `*.localhost` name resolves to loopback.
pub const DEV_BASE_DOMAIN: &str = "ringress.localhost";

impl EdgeConfig {
    pub fn default_workers() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}
