//! `[observe] listen`: a small HTTP/1.1 server of its own (hyper on a
//! current-thread tokio runtime, on its own thread: control plane) that
//! serves the observability routes, for a private scrape port or an edge
//! run without the API listener. The API listener mounts the same routes.

// The auth check returns the response to send, as `ApiAuth::check` does
// (interface 1 in TEAM.md): large, and built only on failure.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderMap, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tracing::{debug, warn};

use super::api::{full, Body, ObserveApi};

/// Binds now (errors are start-up errors) and serves on a new thread.
/// Returns the bound address.
pub fn spawn(
    std_listener: std::net::TcpListener,
    api: Arc<ObserveApi>,
    keys: Vec<String>,
) -> std::io::Result<SocketAddr> {
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let keys = Arc::new(keys);
    std::thread::Builder::new()
        .name("ringress-observe-http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "observe listener: cannot build its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "observe listener: cannot register");
                        return;
                    }
                };
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            warn!(error = %e, "observe listener: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let api = api.clone();
                    let keys = keys.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let api = api.clone();
                            let keys = keys.clone();
                            async move {
                                let check = move |h: &HeaderMap| check_key(&keys, h);
                                let resp = if ObserveApi::handles(req.uri().path()) {
                                    api.serve(req.method(), req.uri(), req.headers(), &check).await
                                } else {
                                    full(StatusCode::NOT_FOUND, "application/json", r#"{"error_code":"ERR_NGROK_404","status_code":404,"msg":"not found","details":{}}"#)
                                };
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await
                        {
                            debug!(%peer, error = %e, "observe listener: connection error");
                        }
                    });
                }
            });
        })?;
    Ok(bound)
}

/// `Authorization: Bearer <key>` against the configured keys (none: open).
fn check_key(keys: &[String], h: &HeaderMap) -> Result<(), Response<Body>> {
    if keys.is_empty() {
        return Ok(());
    }
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if keys
        .iter()
        .any(|k| bool::from(k.as_bytes().ct_eq(given.as_bytes())))
    {
        return Ok(());
    }
    let mut r = full(
        StatusCode::UNAUTHORIZED,
        "application/json",
        r#"{"error_code":"ERR_NGROK_401","status_code":401,"msg":"a valid API key is required: Authorization: Bearer <key>","details":{}}"#,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Err(r)
}
