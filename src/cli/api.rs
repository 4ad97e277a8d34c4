//! `ringress api <resource> <verb>`: a thin client of the edge's REST API,
//! shaped like `ngrok api` (`ringress api endpoints list`,
//! `ringress api reserved-domains create --domain app.example.com`).
//!
//! Owns: turning arguments into one HTTP request (ngrok's paths, bodies
//! and headers), printing the JSON answer, and turning an error answer
//! into a non-zero exit with ngrok's error code. Never interprets a
//! resource beyond that: the API is the authority.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};
use thiserror::Error;

/// Where `ringress api` looks for the edge's REST API by default: loopback,
/// next to the tunnel port 4443 (4040/4041 are agents' local inspectors).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:4444";

/// How long one request may take, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    Endpoints,
    ReservedDomains,
    Credentials,
    ApiKeys,
    TlsCertificates,
    TunnelSessions,
}

impl Resource {
    /// The collection's path, as in ngrok's API.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Endpoints => "/endpoints",
            Resource::ReservedDomains => "/reserved_domains",
            Resource::Credentials => "/credentials",
            Resource::ApiKeys => "/api_keys",
            Resource::TlsCertificates => "/tls_certificates",
            Resource::TunnelSessions => "/tunnel_sessions",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Resource::Endpoints => "endpoints",
            Resource::ReservedDomains => "reserved-domains",
            Resource::Credentials => "credentials",
            Resource::ApiKeys => "api-keys",
            Resource::TlsCertificates => "tls-certificates",
            Resource::TunnelSessions => "tunnel-sessions",
        }
    }

    /// The body fields a create or update of this resource takes.
    fn fields(self, verb: Verb) -> &'static [Field] {
        use Field::*;
        match (self, verb) {
            (Resource::Endpoints, Verb::Create) => &[
                Url,
                Type,
                TrafficPolicy,
                Description,
                Metadata,
                Bindings,
                PoolingEnabled,
            ],
            (Resource::Endpoints, Verb::Update) => &[
                Url,
                TrafficPolicy,
                Description,
                Metadata,
                Bindings,
                PoolingEnabled,
            ],
            (Resource::ReservedDomains, Verb::Create) => &[Domain, Description, Metadata],
            (Resource::ReservedDomains, Verb::Update) => &[Description, Metadata],
            (Resource::Credentials, Verb::Create) => &[Description, Metadata, Acl, OwnerId],
            (Resource::Credentials, Verb::Update) => &[Description, Metadata, Acl],
            (Resource::ApiKeys, Verb::Create) => &[Description, Metadata, OwnerId],
            (Resource::ApiKeys, Verb::Update) => &[Description, Metadata],
            (Resource::TlsCertificates, Verb::Create) => {
                &[CertificatePem, PrivateKeyPem, Description, Metadata]
            }
            (Resource::TlsCertificates, Verb::Update) => &[Description, Metadata],
            _ => &[],
        }
    }

    fn verbs(self) -> &'static [Verb] {
        match self {
            Resource::TunnelSessions => &[Verb::List, Verb::Get],
            _ => &[
                Verb::List,
                Verb::Get,
                Verb::Create,
                Verb::Update,
                Verb::Delete,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verb {
    List,
    Get,
    Create,
    Update,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Url,
    Type,
    TrafficPolicy,
    Description,
    Metadata,
    Bindings,
    PoolingEnabled,
    Domain,
    Acl,
    OwnerId,
    CertificatePem,
    PrivateKeyPem,
}

impl Field {
    fn flag(self) -> &'static str {
        match self {
            Field::Url => "--url",
            Field::Type => "--type",
            Field::TrafficPolicy => "--traffic-policy / --traffic-policy-file",
            Field::Description => "--description",
            Field::Metadata => "--metadata",
            Field::Bindings => "--bindings",
            Field::PoolingEnabled => "--pooling-enabled",
            Field::Domain => "--domain",
            Field::Acl => "--acl",
            Field::OwnerId => "--owner-id",
            Field::CertificatePem => "--certificate-pem-file",
            Field::PrivateKeyPem => "--private-key-pem-file",
        }
    }
}

/// `ringress api <resource> <verb> [id] [flags]`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The API resource.
    #[arg(value_enum)]
    pub resource: Resource,
    /// What to do with it.
    #[arg(value_enum)]
    pub verb: Verb,
    /// The object's id (`ep_...`, `rd_...`, ...), for get, update and delete.
    pub id: Option<String>,
    /// API key (`ringress api api-keys create` makes one).
    #[arg(long, env = "RINGRESS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The edge's REST API.
    #[arg(long, env = "RINGRESS_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// PEM CA file to trust for an https API URL (default: the system's).
    #[arg(long)]
    pub api_ca: Option<PathBuf>,
    /// Endpoint URL (endpoints).
    #[arg(long)]
    pub url: Option<String>,
    /// Endpoint type (endpoints create; `cloud`, the default).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Traffic policy document, YAML or JSON text (endpoints).
    #[arg(long)]
    pub traffic_policy: Option<String>,
    /// Traffic policy document from a file (endpoints).
    #[arg(long, conflicts_with = "traffic_policy")]
    pub traffic_policy_file: Option<PathBuf>,
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
    /// Opaque metadata.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Binding: public or internal (endpoints; repeatable).
    #[arg(long)]
    pub bindings: Vec<String>,
    /// Pool with other endpoints of the same URL (endpoints).
    #[arg(long)]
    pub pooling_enabled: Option<bool>,
    /// Domain name, e.g. app.example.com or *.example.com (reserved-domains).
    #[arg(long)]
    pub domain: Option<String>,
    /// ACL rule, e.g. `bind:app.example.com` (credentials; repeatable).
    #[arg(long)]
    pub acl: Vec<String>,
    /// Owner id (credentials, api-keys create).
    #[arg(long)]
    pub owner_id: Option<String>,
    /// PEM certificate chain file (tls-certificates create).
    #[arg(long)]
    pub certificate_pem_file: Option<PathBuf>,
    /// PEM private key file (tls-certificates create).
    #[arg(long)]
    pub private_key_pem_file: Option<PathBuf>,
    /// Page size (list).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Page after this id (list).
    #[arg(long)]
    pub before_id: Option<String>,
}

#[derive(Debug, Error)]
pub enum ApiCliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// The API answered with an error; its ngrok error code and message.
    #[error("HTTP {status}: {msg} [{code}]")]
    Api {
        status: u16,
        code: String,
        msg: String,
    },
}

/// The request `args` stands for: method, path with query, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub method: http::Method,
    pub path: String,
    pub body: Option<Value>,
}

/// Builds the request without sending it (unit-testable).
pub fn plan(args: &ApiArgs) -> Result<Planned, ApiCliError> {
    let usage = |m: String| ApiCliError::Usage(m);
    let (resource, verb) = (args.resource, args.verb);
    if !resource.verbs().contains(&verb) {
        return Err(usage(format!(
            "`{}` has no `{}` (try: {})",
            resource.name(),
            verb.name(),
            resource
                .verbs()
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let id = match (verb, &args.id) {
        (Verb::Get | Verb::Update | Verb::Delete, Some(id)) => {
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(usage(format!("{id:?} is not an object id")));
            }
            Some(id.as_str())
        }
        (Verb::Get | Verb::Update | Verb::Delete, None) => {
            return Err(usage(format!(
                "`{} {}` needs the object's id",
                resource.name(),
                verb.name()
            )))
        }
        (_, Some(id)) => {
            return Err(usage(format!(
                "`{} {}` takes no id (got {id:?})",
                resource.name(),
                verb.name()
            )))
        }
        (_, None) => None,
    };
    let body = match verb {
        Verb::Create | Verb::Update => Some(Value::Object(body(args)?)),
        _ => {
            if let Some(f) = given_fields(args).first() {
                return Err(usage(format!(
                    "{} does not apply to `{} {}`",
                    f.flag(),
                    resource.name(),
                    verb.name()
                )));
            }
            None
        }
    };
    if verb != Verb::List && (args.limit.is_some() || args.before_id.is_some()) {
        return Err(usage("--limit and --before-id are for list".into()));
    }
    let mut path = resource.path().to_owned();
    if let Some(id) = id {
        path.push('/');
        path.push_str(id);
    }
    let mut query = Vec::new();
    if let Some(l) = args.limit {
        query.push(format!("limit={l}"));
    }
    if let Some(b) = &args.before_id {
        if !b
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            return Err(usage(format!("{b:?} is not an object id")));
        }
        query.push(format!("before_id={b}"));
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let method = match verb {
        Verb::List | Verb::Get => http::Method::GET,
        Verb::Create => http::Method::POST,
        Verb::Update => http::Method::PATCH,
        Verb::Delete => http::Method::DELETE,
    };
    Ok(Planned { method, path, body })
}

fn given_fields(args: &ApiArgs) -> Vec<Field> {
    let mut v = Vec::new();
    let mut add = |set: bool, f| {
        if set {
            v.push(f)
        }
    };
    add(args.url.is_some(), Field::Url);
    add(args.kind.is_some(), Field::Type);
    add(
        args.traffic_policy.is_some() || args.traffic_policy_file.is_some(),
        Field::TrafficPolicy,
    );
    add(args.description.is_some(), Field::Description);
    add(args.metadata.is_some(), Field::Metadata);
    add(!args.bindings.is_empty(), Field::Bindings);
    add(args.pooling_enabled.is_some(), Field::PoolingEnabled);
    add(args.domain.is_some(), Field::Domain);
    add(!args.acl.is_empty(), Field::Acl);
    add(args.owner_id.is_some(), Field::OwnerId);
    add(args.certificate_pem_file.is_some(), Field::CertificatePem);
    add(args.private_key_pem_file.is_some(), Field::PrivateKeyPem);
    v
}

fn body(args: &ApiArgs) -> Result<Map<String, Value>, ApiCliError> {
    let allowed = args.resource.fields(args.verb);
    for f in given_fields(args) {
        if !allowed.contains(&f) {
            return Err(ApiCliError::Usage(format!(
                "{} does not apply to `{} {}`",
                f.flag(),
                args.resource.name(),
                args.verb.name()
            )));
        }
    }
    let mut m = Map::new();
    if let Some(u) = &args.url {
        m.insert("url".into(), json!(u));
    }
    if let Some(t) = &args.kind {
        m.insert("type".into(), json!(t));
    }
    let policy = match (&args.traffic_policy, &args.traffic_policy_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(path)) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| ApiCliError::Read {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        (None, None) => None,
    };
    if let Some(p) = policy {
        m.insert("traffic_policy".into(), json!(p));
    }
    if let Some(d) = &args.description {
        m.insert("description".into(), json!(d));
    }
    if let Some(d) = &args.metadata {
        m.insert("metadata".into(), json!(d));
    }
    if !args.bindings.is_empty() {
        m.insert("bindings".into(), json!(args.bindings));
    }
    if let Some(p) = args.pooling_enabled {
        m.insert("pooling_enabled".into(), json!(p));
    }
    if let Some(d) = &args.domain {
        m.insert("domain".into(), json!(d));
    }
    if !args.acl.is_empty() {
        m.insert("acl".into(), json!(args.acl));
    }
    if let Some(o) = &args.owner_id {
        m.insert("owner_id".into(), json!(o));
    }
    for (file, key) in [
        (&args.certificate_pem_file, "certificate_pem"),
        (&args.private_key_pem_file, "private_key_pem"),
    ] {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ApiCliError::Read {
                path: path.clone(),
                source,
            })?;
            m.insert(key.into(), json!(text));
        }
    }
    let required: &[(Field, &str)] = match (args.resource, args.verb) {
        (Resource::Endpoints, Verb::Create) => &[(Field::Url, "url")],
        (Resource::ReservedDomains, Verb::Create) => &[(Field::Domain, "domain")],
        (Resource::TlsCertificates, Verb::Create) => &[
            (Field::CertificatePem, "certificate_pem"),
            (Field::PrivateKeyPem, "private_key_pem"),
        ],
        _ => &[],
    };
    for (f, key) in required {
        if !m.contains_key(*key) {
            return Err(ApiCliError::Usage(format!(
                "`{} {}` needs {}",
                args.resource.name(),
                args.verb.name(),
                f.flag()
            )));
        }
    }
    Ok(m)
}

/// The answer to print: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Sends the planned request to `api_url` (http or https) and waits for
/// the whole answer, on a small current-thread tokio runtime.
pub fn send(args: &ApiArgs, planned: &Planned) -> Result<Answer, ApiCliError> {
    let base = args.api_url.trim_end_matches('/');
    let url = format!("{base}{}", planned.path);
    let transport = |reason: String| ApiCliError::Transport {
        url: url.clone(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|e| transport(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(transport("--api-url must be http:// or https://".into())),
    }
    let mut req = http::Request::builder()
        .method(planned.method.clone())
        .uri(uri)
        .header("ngrok-version", "2")
        .header("accept", "application/json")
        .header(
            "user-agent",
            concat!("ringress-api/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(key) = args.api_key.as_deref().filter(|k| !k.is_empty()) {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let body = match &planned.body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).map_err(|e| transport(e.to_string()))?)
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(body))
        .map_err(|e| transport(e.to_string()))?;
    let tls = tls_config(args.api_ca.as_deref()).map_err(transport)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| transport(format!("runtime: {e}")))?;
    rt.block_on(async {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let work = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| transport(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(transport(format!(
                "no answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let iter = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--api-ca {}: {e}", path.display()))?;
            for c in iter {
                let c = c.map_err(|e| format!("--api-ca {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--api-ca {}: {e}", path.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Turns an answer into what to print: the JSON (pretty) on success, or
/// the API's ngrok error.
pub fn interpret(answer: &Answer) -> Result<Option<String>, ApiCliError> {
    let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
    if (200..300).contains(&answer.status) {
        if answer.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        return Ok(Some(match parsed {
            Some(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            None => String::from_utf8_lossy(&answer.body).into_owned(),
        }));
    }
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Err(ApiCliError::Api {
        status: answer.status,
        code: field("error_code").unwrap_or_else(|| "no error code".into()),
        msg: field("msg").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&answer.body);
            let text = text.trim();
            if text.is_empty() {
                "(empty answer)".into()
            } else {
                text.chars().take(500).collect()
            }
        }),
    })
}

/// Runs the command: plans, sends, prints. An API error prints the
/// answer's JSON on stdout and returns the error (non-zero exit).
pub fn run(args: ApiArgs) -> Result<(), ApiCliError> {
    let planned = plan(&args)?;
    let answer = send(&args, &planned)?;
    match interpret(&answer) {
        Ok(Some(text)) => {
            println!("{text}");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            if let Ok(v) = serde_json::from_slice::<Value>(&answer.body) {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ApiArgs,
    }

    fn parse(argv: &[&str]) -> ApiArgs {
        let mut v = vec!["api"];
        v.extend_from_slice(argv);
        T::try_parse_from(v).expect("parses").args
    }

    fn planned(argv: &[&str]) -> Result<Planned, String> {
        plan(&parse(argv)).map_err(|e| e.to_string())
    }

    #[test]
    fn paths_and_methods() {
        let p = planned(&["endpoints", "list"]).unwrap();
        assert_eq!(
            (p.method, p.path.as_str(), p.body),
            (http::Method::GET, "/endpoints", None)
        );
        let p = planned(&["reserved-domains", "get", "rd_123"]).unwrap();
        assert_eq!(p.path, "/reserved_domains/rd_123");
        let p = planned(&["api-keys", "delete", "ak_1"]).unwrap();
        assert_eq!(
            (p.method, p.path.as_str()),
            (http::Method::DELETE, "/api_keys/ak_1")
        );
        let p = planned(&[
            "tunnel-sessions",
            "list",
            "--limit",
            "5",
            "--before-id",
            "ts_9",
        ])
        .unwrap();
        assert_eq!(p.path, "/tunnel_sessions?limit=5&before_id=ts_9");
    }

    #[test]
    fn tls_certificates_read_their_pem_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "CERT").expect("write");
        std::fs::write(&key, "KEY").expect("write");
        let p = planned(&[
            "tls-certificates",
            "create",
            "--certificate-pem-file",
            cert.to_str().expect("utf-8"),
            "--private-key-pem-file",
            key.to_str().expect("utf-8"),
        ])
        .unwrap();
        assert_eq!(
            (p.method, p.path.as_str()),
            (http::Method::POST, "/tls_certificates")
        );
        let body = p.body.expect("body");
        assert_eq!(body["certificate_pem"], "CERT");
        assert_eq!(body["private_key_pem"], "KEY");
        let e = planned(&[
            "tls-certificates",
            "create",
            "--certificate-pem-file",
            cert.to_str().expect("utf-8"),
        ])
        .unwrap_err();
        assert!(e.contains("--private-key-pem-file"), "{e}");
        let e = planned(&[
            "tls-certificates",
            "create",
            "--certificate-pem-file",
            "/nonexistent/c.pem",
            "--private-key-pem-file",
            "/nonexistent/k.pem",
        ])
        .unwrap_err();
        assert!(e.contains("cannot read /nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn bodies() {
        let p = planned(&[
            "endpoints",
            "create",
            "--url",
            "https://app.example.com",
            "--traffic-policy",
            "on_http_request: []",
            "--bindings",
            "public",
            "--pooling-enabled",
            "true",
        ])
        .unwrap();
        assert_eq!(p.method, http::Method::POST);
        assert_eq!(
            p.body.unwrap(),
            json!({"url": "https://app.example.com", "traffic_policy": "on_http_request: []",
                   "bindings": ["public"], "pooling_enabled": true})
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yml");
        std::fs::write(&f, "on_http_request: []\n").unwrap();
        let p = planned(&[
            "endpoints",
            "update",
            "ep_1",
            "--traffic-policy-file",
            f.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(p.method, http::Method::PATCH);
        assert_eq!(
            p.body.unwrap(),
            json!({"traffic_policy": "on_http_request: []\n"})
        );
        let p = planned(&["reserved-domains", "create", "--domain", "*.example.com"]).unwrap();
        assert_eq!(p.body.unwrap(), json!({"domain": "*.example.com"}));
        let p = planned(&[
            "credentials",
            "create",
            "--acl",
            "bind:a.example.com",
            "--description",
            "ci",
        ])
        .unwrap();
        assert_eq!(
            p.body.unwrap(),
            json!({"acl": ["bind:a.example.com"], "description": "ci"})
        );
    }

    #[test]
    fn usage_errors() {
        for (argv, want) in [
            (&["endpoints", "get"][..], "needs the object's id"),
            (&["endpoints", "list", "ep_1"][..], "takes no id"),
            (&["endpoints", "create"][..], "needs --url"),
            (&["reserved-domains", "create"][..], "needs --domain"),
            (
                &["reserved-domains", "create", "--url", "https://x"][..],
                "--url does not apply",
            ),
            (
                &["endpoints", "list", "--domain", "x"][..],
                "--domain does not apply",
            ),
            (
                &["tunnel-sessions", "delete", "ts_1"][..],
                "has no `delete`",
            ),
            (&["endpoints", "get", "../x"][..], "not an object id"),
            (
                &["endpoints", "get", "ep_1", "--limit", "3"][..],
                "for list",
            ),
        ] {
            let e = planned(argv).unwrap_err();
            assert!(e.contains(want), "{argv:?}: {e}");
        }
        let missing = planned(&[
            "endpoints",
            "create",
            "--traffic-policy-file",
            "/nonexistent/p.yml",
            "--url",
            "https://a.example.com",
        ])
        .unwrap_err();
        assert!(missing.contains("/nonexistent/p.yml"), "{missing}");
    }

    #[test]
    fn answers() {
        let ok = Answer {
            status: 200,
            body: Bytes::from_static(b"{\"id\":\"ep_1\"}"),
        };
        assert!(interpret(&ok)
            .unwrap()
            .unwrap()
            .contains("\"id\": \"ep_1\""));
        let empty = Answer {
            status: 204,
            body: Bytes::new(),
        };
        assert_eq!(interpret(&empty).unwrap(), None);
        let err = Answer {
            status: 400,
            body: Bytes::from_static(
                b"{\"error_code\":\"ERR_NGROK_319\",\"status_code\":400,\"msg\":\"reserve it\",\"details\":{}}",
            ),
        };
        assert_eq!(
            interpret(&err).unwrap_err().to_string(),
            "HTTP 400: reserve it [ERR_NGROK_319]"
        );
        let bare = Answer {
            status: 502,
            body: Bytes::from_static(b"bad gateway"),
        };
        assert_eq!(
            interpret(&bare).unwrap_err().to_string(),
            "HTTP 502: bad gateway [no error code]"
        );
    }
}
