//! The TOML file: serde shapes with defaults, then validation into
//! [`EdgeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::url::{EndpointUrl, UpstreamUrl};
use super::{
    AcmeConfig, ConfigError, EdgeConfig, EndpointConfig, FileCertificate, Limits, Listen, Settings,
    Timeouts, TlsConfig, TunnelConfig,
};
use crate::http1::limits::MAX_HEAD_BYTES_CEILING;
use crate::policy::TrafficPolicy;
use crate::route::Scheme;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workers: Option<usize>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    tls: FileTls,
    acme: Option<FileAcme>,
    #[serde(default)]
    listen: FileListen,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    endpoints: Vec<FileEndpoint>,
    tunnel: Option<FileTunnel>,
    observe: Option<crate::observe::config::FileObserve>,
    #[serde(default)]
    api: FileApi,
}

/// The REST API listener's TLS (the address is `[listen] api`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTunnel {
    #[serde(default)]
    auth_tokens: Vec<String>,
    base_domain: Option<String>,
    reserve_grace: Option<String>,
    /// Hosts agents may bind on a production edge (besides random names).
    #[serde(default)]
    reserved_domains: Vec<String>,
    /// Zone of reserved domains' CNAME targets (default: the base domain).
    cname_base: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    http: Option<String>,
    https: Option<String>,
    tunnel: Option<String>,
    api: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(default)]
    certificates: Vec<FileCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCert {
    domains: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAcme {
    directory: String,
    ca_bundle: Option<PathBuf>,
    email: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    client_idle: Option<String>,
    upstream_idle: Option<String>,
    header_read: Option<String>,
    upstream_connect: Option<String>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections_per_worker: Option<usize>,
    max_head_bytes: Option<usize>,
    upstream_idle_per_host: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    url: String,
    upstream: Option<String>,
    traffic_policy: Option<TrafficPolicy>,
    /// A YAML or JSON policy document (relative paths from the working
    /// directory), instead of the inline `traffic_policy`.
    traffic_policy_file: Option<PathBuf>,
    /// Inspector capture for this endpoint (`off`, `metadata`, `full`).
    inspect: Option<crate::observe::config::CaptureMode>,
    /// Whether this endpoint emits events.
    events: Option<bool>,
}

/// Where the edge listens when neither the file nor a flag says.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:80";
pub const DEFAULT_HTTPS_LISTEN: &str = "0.0.0.0:443";
pub const DEV_HTTP_LISTEN: &str = "127.0.0.1:8080";
pub const DEV_HTTPS_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_TUNNEL_LISTEN: &str = "0.0.0.0:4443";
pub const DEV_TUNNEL_LISTEN: &str = "127.0.0.1:4443";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ringress";

/// How the file is read: `--dev` changes defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadMode {
    pub dev: bool,
}

/// The data dir used when none is configured: the system's in
/// production, the user's under `--dev` (where the agent looks for the dev
/// CA by default).
pub fn default_data_dir(dev: bool) -> PathBuf {
    if !dev {
        return PathBuf::from(DEFAULT_DATA_DIR);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    match base {
        Some(b) => b.join("ringress"),
        None => PathBuf::from(".ringress"),
    }
}

/// Reads and validates a config file.
pub fn load_file(path: &Path, mode: LoadMode) -> Result<EdgeConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str_with(&text, mode)
}

/// Parses and validates config text (production defaults).
pub fn parse_str(text: &str) -> Result<EdgeConfig, ConfigError> {
    parse_str_with(text, LoadMode::default())
}

/// Parses and validates config text.
pub fn parse_str_with(text: &str, mode: LoadMode) -> Result<EdgeConfig, ConfigError> {
    let file: FileConfig = toml::from_str(text)?;
    validate(file, mode)
}

fn socket_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Field {
        field: field.into(),
        reason: format!("{value:?} is not an address like 127.0.0.1:8080"),
    })
}

fn duration(
    field: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(&v).map_err(|e| ConfigError::Field {
        field: field.into(),
        reason: format!("{v:?} is not a duration like \"30s\" or \"5m\": {e}"),
    })?;
    if d.is_zero() {
        return Err(ConfigError::Field {
            field: field.into(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(d)
}

fn positive(field: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::Field {
            field: field.into(),
            reason: "must be greater than zero".into(),
        }),
        Some(n) => Ok(n),
    }
}

fn validate(file: FileConfig, mode: LoadMode) -> Result<EdgeConfig, ConfigError> {
    let workers = positive("workers", file.workers, EdgeConfig::default_workers())?;
    if workers > 1024 {
        return Err(ConfigError::Field {
            field: "workers".into(),
            reason: "at most 1024".into(),
        });
    }
    let (http_default, https_default) = if mode.dev {
        (DEV_HTTP_LISTEN, DEV_HTTPS_LISTEN)
    } else {
        (DEFAULT_HTTP_LISTEN, DEFAULT_HTTPS_LISTEN)
    };
    let http = socket_addr(
        "listen.http",
        file.listen.http.as_deref().unwrap_or(http_default),
    )?;
    let https_explicit = file.listen.https.is_some();
    let tunnel_wanted = mode.dev || file.listen.tunnel.is_some() || file.tunnel.is_some();
    let tunnel_listen = socket_addr(
        "listen.tunnel",
        file.listen.tunnel.as_deref().unwrap_or(if mode.dev {
            DEV_TUNNEL_LISTEN
        } else {
            DEFAULT_TUNNEL_LISTEN
        }),
    )?;
    let ft = file.tunnel.unwrap_or_default();
    let base_domain = match ft.base_domain {
        Some(b) => {
            let b = b.trim_end_matches('.').to_ascii_lowercase();
            if b.is_empty() || b.contains(['*', '/', ':', ' ']) {
                return Err(ConfigError::Field {
                    field: "tunnel.base_domain".into(),
                    reason: format!("{b:?} is not a domain name"),
                });
            }
            crate::control::url_rules::check_domain(
                &b,
                crate::control::url_rules::DomainUse::Reservation,
            )
            .map_err(|e| ConfigError::Field {
                field: "tunnel.base_domain".into(),
                reason: format!("{} ({})", e.message, e.error_code()),
            })?;
            Some(b)
        }
        None => mode.dev.then(|| super::DEV_BASE_DOMAIN.to_owned()),
    };
    if ft.auth_tokens.iter().any(|t| t.is_empty()) {
        return Err(ConfigError::Field {
            field: "tunnel.auth_tokens".into(),
            reason: "an auth token cannot be empty".into(),
        });
    }
    let reserved_domains = crate::control::domains::ReservedDomains::from_list(
        ft.reserved_domains.iter().map(String::as_str),
    )
    .map_err(|e| ConfigError::Field {
        field: "tunnel.reserved_domains".into(),
        reason: format!("{} ({})", e.message, e.error_code()),
    })?;
    let cname_base = match ft.cname_base {
        Some(c) => {
            let c = crate::control::domains::normalize(&c);
            crate::control::url_rules::check_domain(
                &c,
                crate::control::url_rules::DomainUse::Reservation,
            )
            .map_err(|e| ConfigError::Field {
                field: "tunnel.cname_base".into(),
                reason: format!("{} ({})", e.message, e.error_code()),
            })?;
            if c.is_empty() || c.contains('*') {
                return Err(ConfigError::Field {
                    field: "tunnel.cname_base".into(),
                    reason: format!("{c:?} is not a domain name"),
                });
            }
            Some(c)
        }
        None => base_domain.clone(),
    };
    let tunnel = TunnelConfig {
        auth_tokens: ft.auth_tokens,
        reserved_domains,
        cname_base,
        base_domain,
        reserve_grace: match ft.reserve_grace.as_deref() {
            Some("0s") | Some("0") => Duration::ZERO,
            _ => duration(
                "tunnel.reserve_grace",
                ft.reserve_grace,
                Duration::from_secs(30),
            )?,
        },
    };
    let api = file
        .listen
        .api
        .as_deref()
        .map(|a| socket_addr("listen.api", a))
        .transpose()?;
    let api_tls = match (file.api.tls_cert, file.api.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Field {
                field: "api".into(),
                reason: "tls_cert and tls_key go together".into(),
            })
        }
    };
    let https = socket_addr(
        "listen.https",
        file.listen.https.as_deref().unwrap_or(https_default),
    )?;
    let d = Timeouts::default();
    let t = file.timeouts;
    let timeouts = Timeouts {
        client_idle: duration("timeouts.client_idle", t.client_idle, d.client_idle)?,
        upstream_idle: duration("timeouts.upstream_idle", t.upstream_idle, d.upstream_idle)?,
        header_read: duration("timeouts.header_read", t.header_read, d.header_read)?,
        upstream_connect: duration(
            "timeouts.upstream_connect",
            t.upstream_connect,
            d.upstream_connect,
        )?,
        shutdown_grace: duration(
            "timeouts.shutdown_grace",
            t.shutdown_grace,
            d.shutdown_grace,
        )?,
    };
    let dl = Limits::default();
    let l = file.limits;
    let limits = Limits {
        max_connections_per_worker: positive(
            "limits.max_connections_per_worker",
            l.max_connections_per_worker,
            dl.max_connections_per_worker,
        )?,
        max_head_bytes: positive("limits.max_head_bytes", l.max_head_bytes, dl.max_head_bytes)?,
        upstream_idle_per_host: l
            .upstream_idle_per_host
            .unwrap_or(dl.upstream_idle_per_host),
    };
    if limits.max_head_bytes > MAX_HEAD_BYTES_CEILING {
        return Err(ConfigError::Field {
            field: "limits.max_head_bytes".into(),
            reason: format!("at most {MAX_HEAD_BYTES_CEILING}"),
        });
    }
    let mut certificates = Vec::with_capacity(file.tls.certificates.len());
    for (i, c) in file.tls.certificates.into_iter().enumerate() {
        if c.domains.is_empty() {
            return Err(ConfigError::Field {
                field: format!("tls.certificates[{i}].domains"),
                reason: "list the names this certificate serves".into(),
            });
        }
        let mut domains = Vec::with_capacity(c.domains.len());
        for d in c.domains {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let bare = d.strip_prefix("*.").unwrap_or(&d);
            if bare.is_empty() || bare.contains(['*', '/', ':', ' ']) {
                return Err(ConfigError::Field {
                    field: format!("tls.certificates[{i}].domains"),
                    reason: format!("{d:?} is not a host name or *.suffix"),
                });
            }
            domains.push(d);
        }
        certificates.push(FileCertificate {
            domains,
            cert: c.cert,
            key: c.key,
            default: c.default,
        });
    }
    if certificates.iter().filter(|c| c.default).count() > 1 {
        return Err(ConfigError::Field {
            field: "tls.certificates".into(),
            reason: "at most one certificate can be the default".into(),
        });
    }
    let acme = match file.acme {
        None => None,
        Some(a) => {
            if !a.directory.starts_with("https://") && !a.directory.starts_with("http://") {
                return Err(ConfigError::Field {
                    field: "acme.directory".into(),
                    reason: format!("{:?} is not a URL", a.directory),
                });
            }
            Some(AcmeConfig {
                directory: a.directory,
                ca_bundle: a.ca_bundle,
                email: a.email,
            })
        }
    };
    let tls = TlsConfig { certificates, acme };
    // The listener ports count as 80 and 443 for endpoint URLs (an https
    // endpoint starts the HTTPS listener, so its port is known here).
    let edge_urls = crate::control::url_rules::EdgeUrls {
        http_port: http.port(),
        https_port: Some(https.port()),
        base_domains: tunnel.base_domain.iter().cloned().collect(),
        public_suffix_rule: false,
        serves_tcp_tls: false,
    };
    let mut endpoints = Vec::with_capacity(file.endpoints.len());
    for e in file.endpoints {
        let url = EndpointUrl::parse(&e.url, &edge_urls)?;
        let upstream = e
            .upstream
            .as_deref()
            .map(|u| UpstreamUrl::parse(&e.url, u))
            .transpose()?;
        let traffic_policy = match (e.traffic_policy, &e.traffic_policy_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Endpoint {
                    url: e.url,
                    reason: "set traffic_policy or traffic_policy_file, not both".into(),
                })
            }
            (inline, None) => inline,
            (None, Some(path)) => Some(read_policy_file(&e.url, path)?),
        };
        if upstream.is_none() && traffic_policy.is_none() {
            return Err(ConfigError::Endpoint {
                url: e.url,
                reason: "needs an upstream or a traffic_policy that answers requests".into(),
            });
        }
        endpoints.push(EndpointConfig {
            url,
            upstream,
            traffic_policy,
            observe: crate::observe::config::EndpointObserve {
                inspect: e.inspect,
                events: e.events,
            },
        });
    }
    let https_needed = mode.dev
        || https_explicit
        || tunnel_wanted
        || !tls.certificates.is_empty()
        || tls.acme.is_some()
        || endpoints.iter().any(|e| e.url.scheme == Scheme::Https);
    Ok(EdgeConfig {
        workers,
        listen: Listen {
            http,
            https: https_needed.then_some(https),
            tunnel: tunnel_wanted.then_some(tunnel_listen),
            api,
        },
        api: super::ApiConfig { tls: api_tls },
        tunnel,
        dev: mode.dev,
        data_dir: file.data_dir.unwrap_or_else(|| default_data_dir(mode.dev)),
        tls,
        settings: Settings { timeouts, limits },
        endpoints,
        observe: crate::observe::config::validate(file.observe)?,
    })
}

/// Reads a traffic policy document (YAML or JSON) named by an endpoint.
fn read_policy_file(url: &str, path: &Path) -> Result<TrafficPolicy, ConfigError> {
    let err = |reason: String| ConfigError::Endpoint {
        url: url.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read traffic_policy_file {}: {e}",
            path.display()
        ))
    })?;
    TrafficPolicy::parse(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses() {
        let c = parse_str(
            r#"
workers = 2
[listen]
http = "127.0.0.1:8080"
[[endpoints]]
url = "http://app.example.com"
upstream = "http://127.0.0.1:9000"
[[endpoints]]
url = "http://hello.example.com"
traffic_policy = { on_http_request = [ { actions = [ { type = "custom-response", config = { status_code = 200, body = "Hello world!", headers = { content-type = "text/plain" } } } ] } ] }
"#,
        )
        .expect("valid");
        assert_eq!(c.workers, 2);
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.settings.timeouts.client_idle, Duration::from_secs(300));
    }

    #[test]
    fn traffic_policy_file_yaml_and_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = dir.path().join("p.yml");
        std::fs::write(
            &yaml,
            "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          body: hi\n",
        )
        .expect("write");
        let json = dir.path().join("p.json");
        std::fs::write(
            &json,
            r#"{"on_http_request":[{"actions":[{"type":"deny"}]}]}"#,
        )
        .expect("write");
        for p in [&yaml, &json] {
            let c = parse_str(&format!(
                "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy_file = {:?}\n",
                p.display().to_string()
            ))
            .expect("valid");
            assert_eq!(
                c.endpoints[0]
                    .traffic_policy
                    .as_ref()
                    .map(|t| t.on_http_request.len()),
                Some(1)
            );
        }
        let e = parse_str("[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy_file = \"/nonexistent.yml\"\n")
            .expect_err("missing file");
        assert!(e.to_string().contains("traffic_policy_file"), "{e}");
        std::fs::write(&yaml, "on_http_requests: []\n").expect("write");
        let e = parse_str(&format!(
            "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy_file = {:?}\n",
            yaml.display().to_string()
        ))
        .expect_err("typo");
        assert!(e.to_string().contains("on_http_requests"), "{e}");
    }

    #[test]
    fn reserved_domains_and_cname_base() {
        let c = parse_str(
            "[tunnel]\nbase_domain = \"tunnel.example.com\"\nreserved_domains = [\"App.Example.com\", \"*.apps.example.com\"]\n",
        )
        .expect("valid");
        assert!(c.tunnel.reserved_domains.covers("app.example.com"));
        assert!(c.tunnel.reserved_domains.covers("x.apps.example.com"));
        assert_eq!(c.tunnel.cname_base.as_deref(), Some("tunnel.example.com"));
        let c = parse_str("[tunnel]\ncname_base = \"cname.example.net\"\n").expect("valid");
        assert_eq!(c.tunnel.cname_base.as_deref(), Some("cname.example.net"));
        assert!(c.tunnel.reserved_domains.is_empty());
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("workers = 0", "workers"),
            ("bogus = 1", "bogus"),
            ("[listen]\nhttp = \"nope\"", "listen.http"),
            ("[timeouts]\nclient_idle = \"soon\"", "timeouts.client_idle"),
            (
                "[[endpoints]]\nurl = \"http://a.example.com\"",
                "needs an upstream",
            ),
            (
                "[[endpoints]]\nurl = \"a.example.com\"\nupstream = \"http://127.0.0.1:1\"",
                "scheme",
            ),
            ("[limits]\nmax_head_bytes = 0", "max_head_bytes"),
            ("workers = ", "TOML"),
            (
                "[tunnel]\nreserved_domains = [\"app.*.example.com\"]",
                "tunnel.reserved_domains",
            ),
            ("[tunnel]\nreserved_domains = [\"\"]", "ERR_NGROK_406"),
            ("[tunnel]\ncname_base = \"a..b\"", "tunnel.cname_base"),
            ("[tunnel]\nbase_domain = \"a_b.example.com\"", "ERR_NGROK_438"),
            (
                "[[endpoints]]\nurl = \"http://a.example.com:81\"\nupstream = \"http://127.0.0.1:1\"",
                "ERR_NGROK_9035",
            ),
        ];
        for (text, needle) in cases {
            let e = parse_str(text).expect_err(text).to_string();
            assert!(
                e.contains(needle) || (needle == "TOML" && e.contains("invalid config")),
                "{text:?} gave {e:?}"
            );
        }
    }
}
