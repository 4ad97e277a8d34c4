//! Outbound HTTP for the auth actions (discovery, JWKS, token endpoints,
//! user APIs), without ever blocking a worker.
//!
//! Workers are single-threaded monoio runtimes; hyper needs tokio. One
//! tokio runtime thread per process ("ringress-auth-fetch"), spawned lazily
//! on the first request, performs every request. A worker sends a [`Job`]
//! over an unbounded channel (a non-blocking push) and awaits the answer
//! on a tokio oneshot, which wakes the monoio task across threads
//! (monoio's `sync` feature). Every request has a deadline and a body size
//! limit. The module never touches a worker's I/O.
//!
//! Trust: HTTPS with the system roots plus an optional PEM bundle; plain
//! `http://` only to loopback hosts (tests, local providers), checked by
//! [`check_url`] at config load.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Largest response body accepted from a provider.
pub const MAX_BODY: usize = 1 << 20;
/// Default deadline of one request (connect, TLS, head and body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

type HyperClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why an outbound request failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("invalid request to {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: no answer within {secs}s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: response body larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("the fetch service is not running")]
    Unavailable,
}

/// Why a trust configuration or URL was refused at load.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TrustError {
    #[error("CA bundle {path}: {reason}")]
    Bundle { path: String, reason: String },
    #[error("{0}")]
    Url(String),
}

/// One outbound request.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl FetchRequest {
    pub fn get(url: &str) -> FetchRequest {
        FetchRequest {
            method: http::Method::GET,
            url: url.to_string(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A POST of an `application/x-www-form-urlencoded` body.
    pub fn post_form(url: &str, form: &[(&str, &str)]) -> FetchRequest {
        FetchRequest {
            method: http::Method::POST,
            url: url.to_string(),
            headers: vec![
                ("accept".into(), "application/json".into()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
            ],
            body: super::url::form_encode(form).into_bytes(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> FetchRequest {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FetchResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

struct Job {
    client: Arc<HyperClient>,
    req: FetchRequest,
    reply: oneshot::Sender<Result<FetchResponse, FetchError>>,
}

/// A handle for outbound requests with one trust configuration. Cheap to
/// clone, `Send + Sync`; built at config load.
#[derive(Clone)]
pub struct Fetcher {
    client: Arc<HyperClient>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    /// A client trusting the system roots, plus the certificates of
    /// `ca_bundle` when given (read now: this runs at config load).
    pub fn new(ca_bundle: Option<&Path>) -> Result<Fetcher, TrustError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            debug!(error = %e, "system root certificates: partial load");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        debug!(added, ignored, "system root certificates");
        if let Some(path) = ca_bundle {
            let bad = |reason: String| TrustError::Bundle {
                path: path.display().to_string(),
                reason,
            };
            let mut n = 0;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(bad("no certificate found".into()));
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::Url(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Fetcher {
            client: Arc::new(client),
        })
    }

    /// Performs `req` on the fetch thread; the caller's task only awaits.
    pub async fn fetch(&self, req: FetchRequest) -> Result<FetchResponse, FetchError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            client: self.client.clone(),
            req,
            reply,
        };
        service().send(job).map_err(|_| FetchError::Unavailable)?;
        rx.await.unwrap_or(Err(FetchError::Unavailable))
    }

    /// GET `url` and parse the JSON body; non-2xx answers are errors.
    pub async fn get_json(&self, req: FetchRequest) -> Result<serde_json::Value, String> {
        let url = req.url.clone();
        let res = self.fetch(req).await.map_err(|e| e.to_string())?;
        if !res.is_success() {
            return Err(format!("{url}: HTTP status {}", res.status));
        }
        serde_json::from_slice(&res.body).map_err(|e| format!("{url}: invalid JSON: {e}"))
    }
}

/// Checks an outbound URL at load: `https://`, or `http://` to a loopback
/// host only.
pub fn check_url(field: &str, url: &str) -> Result<(), TrustError> {
    let parsed = super::url::Url::parse(url)
        .map_err(|reason| TrustError::Url(format!("{field}: {reason}")))?;
    match parsed.scheme.as_str() {
        "https" => Ok(()),
        "http" if parsed.is_loopback() => Ok(()),
        "http" => Err(TrustError::Url(format!(
            "{field}: must use https (plain http is allowed only to loopback addresses)"
        ))),
        other => Err(TrustError::Url(format!(
            "{field}: unsupported scheme {other:?}"
        ))),
    }
}

/// The process-wide job queue, starting the fetch thread on first use.
fn service() -> &'static mpsc::UnboundedSender<Job> {
    static TX: OnceLock<mpsc::UnboundedSender<Job>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        let spawned = std::thread::Builder::new()
            .name("ringress-auth-fetch".into())
            .spawn(move || run(rx));
        if let Err(e) = spawned {
            // The receiver is dropped with the closure: every send fails
            // and callers answer with a provider error.
            warn!(error = %e, "cannot start the auth fetch thread");
        }
        tx
    })
}

fn run(mut rx: mpsc::UnboundedReceiver<Job>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(error = %e, "cannot build the auth fetch runtime");
            return;
        }
    };
    rt.block_on(async move {
        while let Some(job) = rx.recv().await {
            tokio::spawn(async move {
                let result = perform(&job.client, job.req).await;
                let _ = job.reply.send(result);
            });
        }
    });
}

async fn perform(client: &HyperClient, req: FetchRequest) -> Result<FetchResponse, FetchError> {
    let url = req.url.clone();
    let secs = req.timeout.as_secs();
    match tokio::time::timeout(req.timeout, perform_inner(client, req)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout { url, secs }),
    }
}

async fn perform_inner(
    client: &HyperClient,
    req: FetchRequest,
) -> Result<FetchResponse, FetchError> {
    let url = req.url.clone();
    let bad = |reason: String| FetchError::Request {
        url: url.clone(),
        reason,
    };
    let uri: http::Uri = req
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
    let mut builder = http::Request::builder().method(req.method).uri(uri);
    let mut has_ua = false;
    for (name, value) in &req.headers {
        has_ua |= name.eq_ignore_ascii_case("user-agent");
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !has_ua {
        builder = builder.header(
            "user-agent",
            concat!("ringress/", env!("CARGO_PKG_VERSION")),
        );
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body)))
        .map_err(|e| bad(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| FetchError::Transport {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge { url: url.clone() }
            } else {
                FetchError::Transport {
                    url: url.clone(),
                    reason: e.to_string(),
                }
            }
        })?
        .to_bytes()
        .to_vec();
    Ok(FetchResponse {
        status,
        headers,
        body,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot HTTP/1.1 server on loopback answering `reply`.
    fn one_shot_server(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).expect("read");
            s.write_all(reply.as_bytes()).expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (format!("http://{addr}/x"), h)
    }

    #[test]
    fn fetch_from_a_monoio_task() {
        let (url, server) = one_shot_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"a\": true}",
        );
        let fetcher = Fetcher::new(None).expect("fetcher");
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let v = rt
            .block_on(fetcher.get_json(FetchRequest::get(&url).header("x-test", "1")))
            .expect("json");
        assert_eq!(v["a"], serde_json::Value::Bool(true));
        let seen = server.join().expect("server");
        assert!(seen.starts_with("GET /x HTTP/1.1\r\n"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("x-test: 1"));
    }

    #[test]
    fn timeout_and_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fetcher = Fetcher::new(None).expect("fetcher");
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let mut req = FetchRequest::get(&format!("http://{addr}/slow"));
        req.timeout = Duration::from_millis(200);
        let r = rt.block_on(fetcher.fetch(req));
        assert!(matches!(r, Err(FetchError::Timeout { .. })), "{r:?}");
        drop(listener);
        let r = rt.block_on(fetcher.fetch(FetchRequest::get(&format!("http://{addr}/gone"))));
        assert!(matches!(r, Err(FetchError::Transport { .. })), "{r:?}");
    }

    #[test]
    fn urls_checked_at_load() {
        assert!(check_url("u", "https://accounts.example.com").is_ok());
        assert!(check_url("u", "http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("u", "http://localhost:8080").is_ok());
        assert!(check_url("u", "http://[::1]:8080").is_ok());
        assert!(check_url("u", "http://idp.example.com").is_err());
        assert!(check_url("u", "ftp://idp.example.com").is_err());
        assert!(check_url("u", "not a url").is_err());
    }
}
