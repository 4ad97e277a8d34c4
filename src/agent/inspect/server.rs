//! The inspector's HTTP server: hyper 1 on a current-thread tokio runtime,
//! on a thread of its own (`ringress-inspect`). Serves the page
//! (`/inspect/http`), its live feed (`/inspect/events`, server-sent
//! events carrying a summary of each capture as it is recorded and
//! answered), and ngrok's agent API under `/api/`. Requests whose `Host` is
//! not a loopback name or the listen address get 403 (ngrok's default
//! `web_allow_hosts`), which stops DNS-rebinding pages from reading it.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::capture::{Event, TapConfig};
use super::replay::{self, Edits};
use super::store::Store;
use super::{json as shapes, PORT_FALLBACKS};
use crate::agent::forward::ForwardOptions;
use crate::agent::run::AgentEndpoint;
use crate::agent::status::Counters;

type ApiBody = BoxBody<Bytes, io::Error>;

const PAGE: &str = include_str!("page.html");
/// Largest API request body (a replay with an edited body).
const MAX_API_BODY: usize = 16 * 1024 * 1024;

/// Binds `addr`; when its port is taken, the next ones (as ngrok does).
pub fn bind_with_fallback(addr: &str) -> io::Result<TcpListener> {
    let sa: SocketAddr = match addr.parse() {
        Ok(a) => a,
        // `localhost:4040` and bare ports as ngrok accepts them.
        Err(_) => match addr.rsplit_once(':') {
            Some(("localhost", p)) | Some(("", p)) => format!("127.0.0.1:{p}")
                .parse()
                .map_err(|_| io::Error::other(format!("invalid web_addr {addr:?}")))?,
            _ => match addr.parse::<u16>() {
                Ok(p) => SocketAddr::from(([127, 0, 0, 1], p)),
                Err(_) => return Err(io::Error::other(format!("invalid web_addr {addr:?}"))),
            },
        },
    };
    let mut last = None;
    let tries = if sa.port() == 0 {
        1
    } else {
        PORT_FALLBACKS + 1
    };
    for i in 0..tries {
        let mut a = sa;
        a.set_port(sa.port().saturating_add(i));
        match TcpListener::bind(a) {
            Ok(l) => {
                if i > 0 {
                    tracing::info!(wanted = %sa, using = %a, "inspector port taken; using the next free one");
                }
                return Ok(l);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

struct Tunnel {
    name: String,
    upstream: String,
    proto: String,
    inspect: bool,
    forward: ForwardOptions,
    tap: Option<TapConfig>,
    traffic_policy: String,
    pooling: bool,
    description: String,
    metadata: String,
    http_count: u64,
    durations: hdrhistogram::Histogram<u64>,
}

/// Everything the server's handlers share (on the inspector thread only).
pub struct State {
    tunnels: Mutex<Vec<Tunnel>>,
    store: Mutex<Store>,
    counters: Arc<Counters>,
    events: broadcast::Sender<Bytes>,
    local: SocketAddr,
}

impl State {
    pub fn new(
        endpoints: &[AgentEndpoint],
        taps: Vec<Option<TapConfig>>,
        counters: Arc<Counters>,
        db_size: usize,
        local: SocketAddr,
    ) -> Arc<State> {
        let tunnels = endpoints
            .iter()
            .zip(taps)
            .map(|(e, tap)| Tunnel {
                name: e.name.clone(),
                upstream: e.upstream_display.clone(),
                proto: if e.request.url.starts_with("http://") {
                    "http".into()
                } else {
                    "https".into()
                },
                inspect: tap.is_some(),
                forward: e.forward.clone(),
                tap,
                traffic_policy: e.request.traffic_policy.clone().unwrap_or_default(),
                pooling: e.request.pooling,
                description: e.request.description.clone(),
                metadata: e.request.metadata.clone(),
                http_count: 0,
                durations: hdrhistogram::Histogram::new(3)
                    .unwrap_or_else(|_| hdrhistogram::Histogram::new(2).expect("sigfig 2")),
            })
            .collect();
        // Summaries only (a few hundred bytes each): a slow page lags and
        // reloads rather than holding captures in this ring.
        let (events, _) = broadcast::channel(256);
        Arc::new(State {
            tunnels: Mutex::new(tunnels),
            store: Mutex::new(Store::new(db_size.max(1))),
            counters,
            events,
            local,
        })
    }

    fn apply(&self, ev: Event) {
        let tunnel_of_response = match &ev {
            Event::Response { id, duration, .. } => self
                .store
                .lock()
                .ok()
                .and_then(|s| s.get(id).map(|c| (c.tunnel_name.to_string(), *duration))),
            Event::Request(_) => None,
        };
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let Some(id) = store.apply(ev) else { return };
        let msg = store
            .get(&id)
            .map(|c| Bytes::from(format!("data: {}\n\n", shapes::summary(c))));
        drop(store);
        if let Some((name, d)) = tunnel_of_response {
            if let Ok(mut ts) = self.tunnels.lock() {
                if let Some(t) = ts.iter_mut().find(|t| t.name == name) {
                    t.http_count += 1;
                    let _ = t.durations.record(d.as_nanos() as u64);
                }
            }
        }
        if let Some(m) = msg {
            let _ = self.events.send(m);
        }
    }
}

/// Starts the server thread on an already bound listener.
pub fn spawn(
    listener: TcpListener,
    state: Arc<State>,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("ringress-inspect".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "inspector: cannot build its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "inspector: cannot listen");
                        return;
                    }
                };
                let st = state.clone();
                tokio::spawn(async move {
                    while let Some(ev) = events.recv().await {
                        st.apply(ev);
                    }
                });
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let st = state.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let st = st.clone();
                            async move { Ok::<_, Infallible>(handle(st, req).await) }
                        });
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(())
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<ApiBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<ApiBody> {
    full(status, "application/json", v.to_string())
}

/// ngrok's agent API error shape.
fn error(status: StatusCode, msg: &str) -> Response<ApiBody> {
    json_reply(
        status,
        &json!({"error_code": 100 + status.as_u16() as u32, "status_code": status.as_u16(), "msg": msg, "details": {}}),
    )
}

fn no_content() -> Response<ApiBody> {
    full(StatusCode::NO_CONTENT, "application/json", Bytes::new())
}

/// `web_allow_hosts` default: loopback names and the listen address.
fn host_allowed(req: &Request<Incoming>, local: SocketAddr) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return true; // HTTP/1.0 without Host: only local clients send it
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let name = name.to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == local.ip(),
        Err(_) => false,
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<ApiBody> {
    if !host_allowed(&req, st.local) {
        return error(
            StatusCode::FORBIDDEN,
            "this Host is not allowed to use the inspector",
        );
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segs.as_slice()) {
        (&Method::GET, [""]) | (&Method::GET, ["inspect"]) => {
            let mut r = full(StatusCode::FOUND, "text/plain", "");
            r.headers_mut().insert(
                header::LOCATION,
                header::HeaderValue::from_static("/inspect/http"),
            );
            r
        }
        (&Method::GET, ["inspect", "http"]) => {
            full(StatusCode::OK, "text/html; charset=utf-8", PAGE)
        }
        (&Method::GET, ["inspect", "events"]) => sse(&st),
        (&Method::GET, ["api"]) => json_reply(
            StatusCode::OK,
            &json!({
                "uri": "/api/",
                "tunnels": "/api/tunnels",
                "endpoints": "/api/endpoints",
                "requests": "/api/requests/http",
                "status": "/api/status",
            }),
        ),
        (&Method::GET, ["api", "status"]) => status(&st),
        (&Method::GET, ["api", "tunnels"]) => {
            let list = tunnels(&st, None);
            json_reply(
                StatusCode::OK,
                &json!({"tunnels": list, "uri": "/api/tunnels"}),
            )
        }
        (&Method::GET, ["api", "tunnels", name]) => match tunnels(&st, Some(name)).pop() {
            Some(t) => json_reply(StatusCode::OK, &t),
            None => error(StatusCode::NOT_FOUND, "tunnel not found"),
        },
        (&Method::GET, ["api", "endpoints"]) => {
            let list = endpoints(&st, None, false);
            json_reply(
                StatusCode::OK,
                &json!({"endpoints": list, "uri": "/api/endpoints"}),
            )
        }
        (&Method::GET, ["api", "endpoints", name]) => {
            match endpoints(&st, Some(name), true).pop() {
                Some(e) => json_reply(StatusCode::OK, &e),
                None => error(StatusCode::NOT_FOUND, "endpoint not found"),
            }
        }
        (m, ["api", "tunnels", ..]) | (m, ["api", "endpoints", ..]) if m != Method::GET => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "ringress agents start endpoints from flags and config files only",
        ),
        (&Method::GET, ["api", "requests", "http"]) => list_requests(&st, &query),
        (&Method::DELETE, ["api", "requests", "http"]) => {
            if let Ok(mut s) = st.store.lock() {
                s.clear();
            }
            let _ = st
                .events
                .send(Bytes::from_static(b"event: cleared\ndata: {}\n\n"));
            no_content()
        }
        (&Method::POST, ["api", "requests", "http"]) => replay_request(&st, req).await,
        (&Method::GET, ["api", "requests", "http", id]) => {
            let v = st
                .store
                .lock()
                .ok()
                .and_then(|s| s.get(id).map(shapes::capture));
            match v {
                Some(v) => json_reply(StatusCode::OK, &v),
                None => error(StatusCode::NOT_FOUND, "no such captured request"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn tunnels(st: &State, only: Option<&str>) -> Vec<Value> {
    let urls = st.counters.urls();
    let Ok(ts) = st.tunnels.lock() else {
        return Vec::new();
    };
    ts.iter()
        .enumerate()
        .filter(|(_, t)| only.is_none_or(|n| n == t.name))
        .map(|(i, t)| {
            let url = urls.get(i).map(|u| u.0.clone()).unwrap_or_default();
            json!({
                "name": t.name,
                "uri": format!("/api/tunnels/{}", t.name),
                "public_url": url,
                "proto": t.proto,
                "config": {"addr": t.upstream, "inspect": t.inspect},
                "metrics": metrics(st, t),
            })
        })
        .collect()
}

fn metrics(st: &State, t: &Tunnel) -> Value {
    let (total, open) = st.counters.connections();
    json!({
        "conns": shapes::metric(total, Some(open), None),
        "http": shapes::metric(t.http_count, None, Some(&t.durations)),
    })
}

fn endpoints(st: &State, only: Option<&str>, detail: bool) -> Vec<Value> {
    let urls = st.counters.urls();
    let Ok(ts) = st.tunnels.lock() else {
        return Vec::new();
    };
    ts.iter()
        .enumerate()
        .filter(|(_, t)| only.is_none_or(|n| n == t.name))
        .map(|(i, t)| {
            let url = urls.get(i).map(|u| u.0.clone()).unwrap_or_default();
            let mut v = json!({
                "name": t.name,
                "uri": format!("/api/endpoints/{}", t.name),
                "url": url,
                "upstream": {
                    "url": t.upstream,
                    "protocol": match t.forward.protocol {
                        crate::agent::forward::UpstreamProtocol::Http1 => "http1",
                        crate::agent::forward::UpstreamProtocol::Http2 => "http2",
                    },
                },
                "inspect": t.inspect,
                "traffic_policy": t.traffic_policy,
                "pooling_enabled": t.pooling,
                "description": t.description,
                "metadata": t.metadata,
            });
            if let (true, Value::Object(m)) = (detail, &mut v) {
                m.insert("metrics".into(), metrics(st, t));
            }
            v
        })
        .collect()
}

fn status(st: &State) -> Response<ApiBody> {
    let (sessions, _) = st.counters.sessions();
    json_reply(
        StatusCode::OK,
        &json!({
            "status": if sessions > 0 { "online" } else { "reconnecting" },
            "agent_version": env!("CARGO_PKG_VERSION"),
            "session": {"legs": [{"region": "local", "latency": 0}], "sessions": sessions},
            "uri": "/api/status",
        }),
    )
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn list_requests(st: &State, query: &str) -> Response<ApiBody> {
    let limit = match query_param(query, "limit") {
        Some(l) => match l.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return error(StatusCode::BAD_REQUEST, "limit must be a number"),
        },
        None => 50,
    };
    let tunnel = query_param(query, "tunnel_name").map(percent_decode);
    // Ours: `summary=true` lists without headers and bodies (the page).
    let shape = if query_param(query, "summary") == Some("true") {
        shapes::summary
    } else {
        shapes::capture
    };
    let list: Vec<Value> = st
        .store
        .lock()
        .map(|s| {
            s.list(limit, tunnel.as_deref())
                .into_iter()
                .map(shape)
                .collect()
        })
        .unwrap_or_default();
    json_reply(
        StatusCode::OK,
        &json!({"uri": "/api/requests/http", "requests": list}),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("-"), 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    id: String,
    #[serde(default)]
    tunnel_name: Option<String>,
    /// Ours: "Replay with modifications".
    #[serde(default)]
    modify: Option<Edits>,
}

async fn replay_request(st: &State, req: Request<Incoming>) -> Response<ApiBody> {
    let body = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let rb: ReplayBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid replay request: {e}"),
            )
        }
    };
    let captured = st.store.lock().ok().and_then(|s| s.get(&rb.id).cloned());
    let Some(c) = captured else {
        return error(StatusCode::NOT_FOUND, "no such captured request");
    };
    let target = rb.tunnel_name.unwrap_or_else(|| c.tunnel_name.to_string());
    let found = st.tunnels.lock().ok().and_then(|ts| {
        ts.iter()
            .find(|t| t.name == target)
            .map(|t| (t.forward.clone(), t.tap.clone()))
    });
    let Some((forward, tap)) = found else {
        return error(StatusCode::NOT_FOUND, "tunnel not found");
    };
    let Some(tap) = tap else {
        return error(StatusCode::CONFLICT, "inspection is off for this tunnel");
    };
    let bytes = match replay::request_bytes(&c, &rb.modify.unwrap_or_default()) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    replay::spawn(forward, tap, c.remote_addr.clone(), c.id.clone(), bytes);
    no_content()
}

/// A server-sent event stream: each capture as it is recorded or answered.
fn sse(st: &State) -> Response<ApiBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut sub = st.events.subscribe();
    tokio::spawn(async move {
        if tx.send(Bytes::from_static(b": hello\n\n")).await.is_err() {
            return;
        }
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(15), sub.recv()).await;
            let msg = match next {
                Ok(Ok(m)) => m,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    Bytes::from_static(b"event: lagged\ndata: {}\n\n")
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(SseBody { rx }.boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_to_the_next_port() {
        let first = bind_with_fallback("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        let next = bind_with_fallback(&format!("127.0.0.1:{port}")).expect("fallback");
        assert_ne!(next.local_addr().expect("addr").port(), port);
        assert!(bind_with_fallback("nonsense").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("command_line%20(http)"),
            "command_line (http)"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
