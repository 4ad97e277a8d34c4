//! The observability routes on the API listener: `/metrics` (Prometheus),
//! `/endpoints/{id}/requests` (inspector captures: list, one, live SSE
//! stream, replay) and the inspector page `/inspect`. Runs on the API's
//! tokio runtime (control plane), never on a worker.
//!
//! Every route but the page needs the API key (`Authorization: Bearer`);
//! the live stream also takes it as `?token=` because browsers'
//! EventSource cannot set headers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::Hub;

pub type Body = BoxBody<Bytes, std::io::Error>;
/// Endpoint id → endpoint URL (interface 2; `control` provides it).
pub type Resolver = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;
/// Checks the API key in these headers; `Err` is the response to send.
pub type AuthCheck<'a> = &'a (dyn Fn(&HeaderMap) -> Result<(), Response<Body>> + Sync);

const PAGE: &str = include_str!("inspector.html");
/// Captures a list returns by default / at most.
const LIST_DEFAULT: usize = 100;
const LIST_MAX: usize = 1000;
/// Comment lines keep an idle stream open through proxies and notice a
/// gone browser.
const SSE_PING: Duration = Duration::from_secs(15);

/// The routes, as one value a mount wraps.
pub struct ObserveApi {
    hub: Arc<Hub>,
    resolver: Resolver,
}

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Metrics,
    Page,
    List(&'a str),
    Stream(&'a str),
    One(&'a str, &'a str),
    Replay(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/metrics" => return Some(Route::Metrics),
        "/inspect" | "/inspect/" => return Some(Route::Page),
        _ => {}
    }
    let rest = path.strip_prefix("/endpoints/")?;
    let (id, rest) = rest.split_once('/')?;
    if id.is_empty() {
        return None;
    }
    let rest = rest.strip_prefix("requests")?;
    match rest {
        "" | "/" => Some(Route::List(id)),
        "/stream" => Some(Route::Stream(id)),
        _ => {
            let rest = rest.strip_prefix('/')?;
            match rest.split_once('/') {
                None if !rest.is_empty() => Some(Route::One(id, rest)),
                Some((rid, "replay")) if !rid.is_empty() => Some(Route::Replay(id, rid)),
                _ => None,
            }
        }
    }
}

pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

/// An ngrok-shaped error body.
fn error(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error_code": code, "status_code": status.as_u16(), "msg": msg, "details": {} }),
    )
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl ObserveApi {
    pub fn new(hub: Arc<Hub>, resolver: Resolver) -> Arc<Self> {
        Arc::new(ObserveApi { hub, resolver })
    }

    /// Whether `path` is one of these routes (a mount gives others back).
    pub fn handles(path: &str) -> bool {
        route(path).is_some()
    }

    /// Endpoint id → URL: the resolver's answer, else the id itself when
    /// it is a (percent-encoded) endpoint URL.
    fn endpoint_url(&self, id: &str) -> Option<String> {
        if let Some(u) = (self.resolver)(id) {
            return Some(u);
        }
        let decoded = percent_decode(id)?;
        decoded.contains("://").then_some(decoded)
    }

    /// Serves one request for a path `handles` accepted.
    pub async fn serve(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        auth: AuthCheck<'_>,
    ) -> Response<Body> {
        let Some(r) = route(uri.path()) else {
            return error(StatusCode::NOT_FOUND, "ERR_NGROK_404", "not found");
        };
        if r == Route::Page {
            if method != Method::GET && method != Method::HEAD {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "ERR_NGROK_405",
                    "method not allowed",
                );
            }
            return full(StatusCode::OK, "text/html; charset=utf-8", PAGE);
        }
        // The stream also accepts ?token= (EventSource sends no headers).
        let with_token;
        let mut h = headers;
        if let (Route::Stream(_), Some(t)) = (&r, query_param(uri.query(), "token")) {
            if !headers.contains_key(header::AUTHORIZATION) {
                let mut copy = headers.clone();
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "Bearer {}",
                    percent_decode(t).unwrap_or_default()
                )) {
                    copy.insert(header::AUTHORIZATION, v);
                }
                with_token = copy;
                h = &with_token;
            }
        }
        if let Err(resp) = auth(h) {
            return resp;
        }
        let want = match &r {
            Route::Replay(..) => Method::POST,
            _ => Method::GET,
        };
        if *method != want && !(want == Method::GET && method == Method::HEAD) {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "ERR_NGROK_405",
                "method not allowed",
            );
        }
        match r {
            Route::Metrics => {
                if !self.hub.config.metrics {
                    return error(
                        StatusCode::NOT_FOUND,
                        "ERR_NGROK_404",
                        "metrics are off ([observe] metrics = false)",
                    );
                }
                full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.hub.render_metrics(),
                )
            }
            Route::Page => unreachable_page(),
            Route::List(id) => {
                let Some(url) = self.endpoint_url(id) else {
                    return no_endpoint(id);
                };
                let limit = query_param(uri.query(), "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(LIST_DEFAULT)
                    .min(LIST_MAX);
                let list: Vec<_> = self
                    .hub
                    .inspector
                    .list(&url, limit)
                    .iter()
                    .map(|c| c.to_json(false))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({ "endpoint": url, "requests": list }),
                )
            }
            Route::One(id, rid) => {
                let Some(url) = self.endpoint_url(id) else {
                    return no_endpoint(id);
                };
                match self.hub.inspector.get(&url, rid) {
                    Some(c) => json_response(StatusCode::OK, &c.to_json(true)),
                    None => error(
                        StatusCode::NOT_FOUND,
                        "ERR_NGROK_404",
                        "no such captured request",
                    ),
                }
            }
            Route::Replay(id, rid) => {
                let Some(url) = self.endpoint_url(id) else {
                    return no_endpoint(id);
                };
                let Some(c) = self.hub.inspector.get(&url, rid) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "ERR_NGROK_404",
                        "no such captured request",
                    );
                };
                let l = self.hub.listeners();
                match super::replay::replay(&c, l.http, l.https).await {
                    Ok(status) => json_response(
                        StatusCode::OK,
                        &json!({ "replayed": c.id(), "status_code": status }),
                    ),
                    Err(e @ super::replay::ReplayError::BodyNotCaptured) => {
                        error(StatusCode::CONFLICT, "ERR_NGROK_409", &e.to_string())
                    }
                    Err(e) => error(StatusCode::BAD_GATEWAY, "ERR_NGROK_502", &e.to_string()),
                }
            }
            Route::Stream(id) => {
                let Some(url) = self.endpoint_url(id) else {
                    return no_endpoint(id);
                };
                self.stream(url)
            }
        }
    }

    /// `text/event-stream` of new captures for `url` (metadata JSON).
    fn stream(&self, url: String) -> Response<Body> {
        let mut live = self.hub.inspector.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            if tx
                .send(Bytes::from_static(b"retry: 1000\n\n"))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let next = tokio::time::timeout(SSE_PING, live.recv()).await;
                let msg = match next {
                    Err(_) => Bytes::from_static(b": ping\n\n"),
                    Ok(Ok(c)) if *c.endpoint == *url => {
                        Bytes::from(format!("event: request\ndata: {}\n\n", c.to_json(false)))
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        Bytes::from(format!("event: lagged\ndata: {n}\n\n"))
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(ChannelBody(rx).boxed());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

fn unreachable_page() -> Response<Body> {
    full(StatusCode::OK, "text/html; charset=utf-8", PAGE)
}

fn no_endpoint(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "ERR_NGROK_404",
        &format!("no endpoint with id {id:?}"),
    )
}

/// A response body fed by a channel (the live stream).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/metrics"), Some(Route::Metrics));
        assert_eq!(route("/inspect"), Some(Route::Page));
        assert_eq!(route("/endpoints/ep_1/requests"), Some(Route::List("ep_1")));
        assert_eq!(
            route("/endpoints/ep_1/requests/stream"),
            Some(Route::Stream("ep_1"))
        );
        assert_eq!(
            route("/endpoints/ep_1/requests/req_2"),
            Some(Route::One("ep_1", "req_2"))
        );
        assert_eq!(
            route("/endpoints/ep_1/requests/req_2/replay"),
            Some(Route::Replay("ep_1", "req_2"))
        );
        for p in [
            "/endpoints/ep_1",
            "/endpoints//requests",
            "/endpoints/a/requests/b/c",
            "/endpoints/a/requestsx",
            "/",
        ] {
            assert_eq!(route(p), None, "{p}");
        }
    }

    #[test]
    fn decode_ids() {
        assert_eq!(
            percent_decode("http%3A%2F%2Fa.test").as_deref(),
            Some("http://a.test")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(query_param(Some("a=1&token=x"), "token"), Some("x"));
    }
}
