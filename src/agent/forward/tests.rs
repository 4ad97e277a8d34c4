//! Forwarders driven end to end on loopback: one end of a real TCP pair
//! stands in for the edge's muxado stream, and real upstreams run on
//! threads (std HTTP/1.1, rustls over std, h2 on tokio, the file system).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::test_util::{block_on, stream_pair};
use super::*;
use crate::agent::upstream_url::normalize;
use crate::http1::{BodyDecoder, ResponseHead};

// ---------------------------------------------------------------------------
// The edge's side of the stream.

/// One response as the edge sees it.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
    trailers: Vec<String>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

struct Edge {
    s: TcpStream,
    buf: Vec<u8>,
    sent: u64,
    received: u64,
}

impl Edge {
    fn new(s: TcpStream) -> Edge {
        Edge {
            s,
            buf: Vec::new(),
            sent: 0,
            received: 0,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.sent += bytes.len() as u64;
        let (res, _) = self.s.write_all(bytes.to_vec()).await;
        res.expect("edge write");
    }

    async fn fin(&mut self) {
        self.s.shutdown().await.expect("edge shutdown");
    }

    /// Reads more; false at EOF.
    async fn fill(&mut self) -> bool {
        let (res, chunk) = self.s.read(Vec::with_capacity(64 * 1024)).await;
        let n = res.expect("edge read");
        self.received += n as u64;
        self.buf.extend_from_slice(&chunk);
        n > 0
    }

    /// Reads exactly one response (framed by the project's parser).
    async fn response(&mut self, head_request: bool) -> Resp {
        let mut head = ResponseHead::new();
        loop {
            if head
                .parse(&self.buf, 1 << 20, head_request)
                .expect("response head")
            {
                break;
            }
            assert!(self.fill().await, "EOF before the response head");
        }
        let head_len = head.head_len;
        let head_text = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        loop {
            let mut dec = BodyDecoder::new(head.framing);
            let mut body = Vec::new();
            let mut trailers = Vec::new();
            let input = &self.buf[head_len..];
            let n = dec
                .scan_with(
                    input,
                    |r| body.extend_from_slice(&input[r]),
                    |r, _| trailers.push(String::from_utf8_lossy(&input[r]).into_owned()),
                )
                .expect("response body");
            if dec.is_done() {
                self.buf.drain(..head_len + n);
                return Resp {
                    status: head.status,
                    head: head_text,
                    body,
                    trailers,
                };
            }
            if !self.fill().await {
                assert!(dec.ends_at_eof(), "EOF inside the response body");
                self.buf.clear();
                return Resp {
                    status: head.status,
                    head: head_text,
                    body,
                    trailers,
                };
            }
        }
    }

    /// Reads until the agent's FIN; returns what came.
    async fn until_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

fn forwarder(upstream: &str, protocol: UpstreamProtocol) -> Forwarder {
    Forwarder::new(ForwardOptions {
        upstream: normalize(upstream).expect("upstream"),
        protocol,
        tls_verify: false,
        tls_verify_cas: None,
    })
    .expect("forwarder")
}

/// Serves one stream with `fwd` while `edge` plays the edge.
async fn drive<F, Fut, T>(fwd: &Forwarder, edge: F) -> (Result<ForwardStats, ForwardError>, T)
where
    F: FnOnce(Edge) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let (agent_side, edge_side) = stream_pair().await;
    let served = fwd.serve(agent_side);
    let client = edge(Edge::new(edge_side));
    let within = Duration::from_secs(20);
    let (served, client) = monoio::join!(
        monoio::time::timeout(within, served),
        monoio::time::timeout(within, client)
    );
    (
        served.expect("serve timed out"),
        client.expect("edge timed out"),
    )
}

// ---------------------------------------------------------------------------
// A plain HTTP/1.1 upstream on a std thread.

#[derive(Default)]
struct Seen {
    heads: Mutex<Vec<String>>,
    /// Connections that ended with a clean EOF from the agent.
    eofs: AtomicUsize,
    tls_sni: Mutex<Vec<Option<String>>>,
}

/// Reads request heads (and Content-Length bodies) and answers each with
/// "path=<path> host=<host> body=<body>"; closes after the agent's EOF.
fn serve_h1<S: Read + Write>(s: &mut S, seen: &Seen) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                seen.eofs.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let field = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let len: usize = field("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let reply = format!(
            "path={path} host={} body={}",
            field("host").unwrap_or_default(),
            String::from_utf8_lossy(&body)
        );
        seen.heads.lock().expect("lock").push(head);
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
        s.flush()?;
    }
}

fn h1_upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let _ = serve_h1(&mut conn, &seen);
            });
        }
    });
    (addr, seen)
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

// ---------------------------------------------------------------------------
// http:// and tcp:// (byte copy)

#[test]
fn http_keep_alive_then_clean_half_close() {
    let (addr, seen) = h1_upstream();
    let fwd = forwarder(
        &format!("localhost:{}", addr.port()),
        UpstreamProtocol::Http1,
    );
    block_on(async {
        let (served, (sent, received, rest)) = drive(&fwd, |mut edge| async move {
            edge.send(b"GET /one HTTP/1.1\r\nHost: public.example\r\n\r\n")
                .await;
            let r1 = edge.response(false).await;
            assert_eq!(r1.status, 200);
            assert_eq!(r1.body, b"path=/one host=public.example body=");
            edge.send(
                b"POST /two HTTP/1.1\r\nHost: public.example\r\nContent-Length: 3\r\n\r\nabc",
            )
            .await;
            let r2 = edge.response(false).await;
            assert_eq!(r2.body, b"path=/two host=public.example body=abc");
            // Edge FIN → upstream EOF → upstream closes → agent FIN.
            edge.fin().await;
            let rest = edge.until_eof().await;
            (edge.sent, edge.received, rest)
        })
        .await;
        assert!(rest.is_empty());
        let stats = served.expect("clean end");
        assert_eq!(stats.bytes_in, sent);
        assert_eq!(stats.bytes_out, received);
    });
    wait_for("upstream EOF", || seen.eofs.load(Ordering::SeqCst) == 1);
    let heads = seen.heads.lock().expect("lock");
    assert_eq!(heads.len(), 2);
    assert!(heads[0].starts_with("GET /one HTTP/1.1\r\nHost: public.example\r\n"));
}

#[test]
fn request_then_immediate_fin_still_gets_the_response() {
    let (addr, _seen) = h1_upstream();
    let fwd = forwarder(
        &format!("tcp://127.0.0.1:{}", addr.port()),
        UpstreamProtocol::Http1,
    );
    block_on(async {
        let (served, all) = drive(&fwd, |mut edge| async move {
            edge.send(b"GET /fin HTTP/1.1\r\nHost: h\r\n\r\n").await;
            edge.fin().await;
            edge.until_eof().await
        })
        .await;
        let text = String::from_utf8(all).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("path=/fin host=h body="), "{text}");
        served.expect("clean end");
    });
}

#[test]
fn unreachable_upstream_gets_the_502_page_after_the_request() {
    let port = {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let fwd = forwarder(&port.to_string(), UpstreamProtocol::Http1);
    block_on(async {
        let (served, all) = drive(&fwd, |mut edge| async move {
            // The head arrives in two pieces: the page must wait for it.
            edge.send(b"GET / HTTP/1.1\r\nHost: pub").await;
            monoio::time::sleep(Duration::from_millis(50)).await;
            edge.send(b"lic.example\r\n\r\n").await;
            edge.until_eof().await
        })
        .await;
        let text = String::from_utf8(all).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        assert!(
            text.contains("ngrok-error-code: ERR_NGROK_8012\r\n"),
            "{text}"
        );
        assert!(text.contains("content-type: text/html"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.contains(&format!("http://localhost:{port}")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        match served {
            Err(ForwardError::Dial { upstream, .. }) => {
                assert_eq!(upstream, format!("http://localhost:{port}"))
            }
            other => panic!("expected a dial error, got {other:?}"),
        }
    });
}

#[test]
fn unreachable_upstream_and_edge_gone_writes_nothing() {
    let port = {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let fwd = forwarder(&format!("127.0.0.1:{port}"), UpstreamProtocol::Http1);
    block_on(async {
        let (served, all) = drive(&fwd, |mut edge| async move {
            edge.fin().await;
            edge.until_eof().await
        })
        .await;
        assert!(all.is_empty());
        assert!(matches!(served, Err(ForwardError::Dial { .. })));
    });
}

// ---------------------------------------------------------------------------
// https:// (rustls client against a rustls server on a std thread)

fn test_cert() -> &'static rcgen::CertifiedKey {
    static CERT: std::sync::OnceLock<rcgen::CertifiedKey> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("cert")
    })
}

fn tls_upstream() -> (SocketAddr, Arc<Seen>) {
    let ck = test_cert();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .expect("server config"),
    );
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { return };
            let (cfg, seen) = (cfg.clone(), s2.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                if serve_h1(&mut tls, &seen).is_ok() {
                    seen.tls_sni
                        .lock()
                        .expect("lock")
                        .push(tls.conn.server_name().map(str::to_owned));
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    (addr, seen)
}

async fn one_get(fwd: &Forwarder) -> (Result<ForwardStats, ForwardError>, String) {
    let (served, all) = drive(fwd, |mut edge| async move {
        edge.send(b"GET /tls HTTP/1.1\r\nHost: public.example\r\n\r\n")
            .await;
        edge.fin().await;
        edge.until_eof().await
    })
    .await;
    (served, String::from_utf8_lossy(&all).into_owned())
}

#[test]
fn https_unverified_by_default_with_sni() {
    let (addr, seen) = tls_upstream();
    let fwd = forwarder(
        &format!("https://localhost:{}", addr.port()),
        UpstreamProtocol::Http1,
    );
    block_on(async {
        let (served, text) = one_get(&fwd).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with("path=/tls host=public.example body="),
            "{text}"
        );
        served.expect("clean end");
    });
    // An IP literal upstream: no SNI at all.
    let fwd = forwarder(
        &format!("https://127.0.0.1:{}", addr.port()),
        UpstreamProtocol::Http1,
    );
    block_on(async {
        let (served, text) = one_get(&fwd).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        served.expect("clean end");
    });
    wait_for("both TLS connections", || {
        seen.tls_sni.lock().expect("lock").len() == 2
    });
    let sni = seen.tls_sni.lock().expect("lock").clone();
    assert!(sni.contains(&Some("localhost".to_owned())), "{sni:?}");
    assert!(sni.contains(&None), "{sni:?}");
}

#[test]
fn https_verification_fails_without_the_ca_and_works_with_it() {
    let (addr, _seen) = tls_upstream();
    let upstream = normalize(&format!("https://localhost:{}", addr.port())).expect("url");
    // Against the system roots: unknown issuer → 502.
    let strict = Forwarder::new(ForwardOptions {
        upstream: upstream.clone(),
        protocol: UpstreamProtocol::Http1,
        tls_verify: true,
        tls_verify_cas: None,
    });
    match strict {
        Ok(fwd) => block_on(async {
            let (served, text) = one_get(&fwd).await;
            assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
            assert!(text.contains("ERR_NGROK_8012"), "{text}");
            assert!(text.contains("TLS handshake failed"), "{text}");
            assert!(
                matches!(served, Err(ForwardError::Dial { .. })),
                "{served:?}"
            );
        }),
        // A machine without system roots refuses at build time instead.
        Err(e) => assert!(matches!(e, ForwardError::SystemRoots(_)), "{e}"),
    }
    // With the certificate as the trusted CA.
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, test_cert().cert.pem()).expect("write ca");
    let fwd = Forwarder::new(ForwardOptions {
        upstream,
        protocol: UpstreamProtocol::Http1,
        tls_verify: true,
        tls_verify_cas: Some(ca),
    })
    .expect("forwarder");
    block_on(async {
        let (served, text) = one_get(&fwd).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        served.expect("clean end");
    });
}

// ---------------------------------------------------------------------------
// HTTP/2 (h2c prior knowledge) against an h2 server on tokio.

#[derive(Default)]
struct H2Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

fn h2_upstream() -> (SocketAddr, Arc<H2Seen>) {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(H2Seen::default());
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                s2.connections.fetch_add(1, Ordering::SeqCst);
                let seen = s2.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        let bye = req.uri().path() == "/bye";
                        tokio::spawn(h2_handle(req, respond, seen.clone()));
                        if bye {
                            conn.graceful_shutdown();
                        }
                    }
                });
            }
        });
    });
    (addr, seen)
}

/// `/grpc`: echoes the body as a gRPC-style response with trailers (the
/// request's `x-req` trailer comes back as `x-echo`). `/plain`: echoes the
/// body with a content-length.
async fn h2_handle(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    seen: Arc<H2Seen>,
) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.ok().flatten();
    let te = parts
        .headers
        .get("te")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    seen.requests.lock().expect("lock").push(format!(
        "{} {} te={te:?} trailers={:?}",
        parts.method,
        parts.uri,
        trailers.as_ref().map(|t| t.len()).unwrap_or(0)
    ));
    if parts.uri.path() == "/grpc" {
        let resp = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .expect("response");
        let Ok(mut send) = respond.send_response(resp, false) else {
            return;
        };
        let mut payload = b"echo:".to_vec();
        payload.extend_from_slice(&data);
        let _ = send.send_data(payload.into(), false);
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let echo = trailers
            .as_ref()
            .and_then(|t| t.get("x-req").cloned())
            .unwrap_or(http::HeaderValue::from_static("none"));
        t.insert("x-echo", echo);
        let _ = send.send_trailers(t);
    } else {
        let resp = http::Response::builder()
            .status(200)
            .header("content-length", data.len().to_string())
            .body(())
            .expect("response");
        let Ok(mut send) = respond.send_response(resp, data.is_empty()) else {
            return;
        };
        if !data.is_empty() {
            let _ = send.send_data(data.into(), true);
        }
    }
}

#[test]
fn h2c_body_trailers_and_keep_alive_on_one_connection() {
    let (addr, seen) = h2_upstream();
    let fwd = forwarder(
        &format!("http://127.0.0.1:{}", addr.port()),
        UpstreamProtocol::Http2,
    );
    block_on(async {
        let (served, ()) = drive(&fwd, |mut edge| async move {
            // Chunked request with a trailer, gRPC-style.
            edge.send(
                b"POST /grpc HTTP/1.1\r\nHost: public.example\r\nContent-Type: application/grpc\r\n\
                  TE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n6\r\n world\r\n0\r\nX-Req: from-edge\r\n\r\n",
            )
            .await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/grpc")
            );
            assert_eq!(r.body, b"echo:hello world");
            assert!(
                r.trailers.contains(&"grpc-status: 0".to_owned()),
                "{:?}",
                r.trailers
            );
            assert!(
                r.trailers.contains(&"x-echo: from-edge".to_owned()),
                "{:?}",
                r.trailers
            );
            // Keep-alive: a Content-Length request on the same stream.
            edge.send(
                b"PUT /plain HTTP/1.1\r\nHost: public.example\r\nContent-Length: 4\r\n\r\nabcd",
            )
            .await;
            let r = edge.response(false).await;
            assert_eq!(r.header("content-length").as_deref(), Some("4"));
            assert_eq!(r.body, b"abcd");
            // No body at all, then HEAD.
            edge.send(b"GET /plain HTTP/1.1\r\nHost: public.example\r\n\r\n")
                .await;
            let r = edge.response(false).await;
            assert_eq!(r.header("content-length").as_deref(), Some("0"));
            edge.send(b"HEAD /plain HTTP/1.1\r\nHost: public.example\r\n\r\n")
                .await;
            let r = edge.response(true).await;
            assert_eq!(r.status, 200);
            edge.fin().await;
            assert!(edge.until_eof().await.is_empty());
        })
        .await;
        served.expect("clean end");
        // A second stream reuses the forwarder's connection.
        let (served, ()) = drive(&fwd, |mut edge| async move {
            edge.send(b"GET /plain HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n")
                .await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("connection").as_deref(), Some("close"));
            assert!(edge.until_eof().await.is_empty(), "agent FIN after close");
        })
        .await;
        served.expect("clean end");
    });
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    let reqs = seen.requests.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 5, "{reqs:?}");
    assert_eq!(
        reqs[0],
        "POST http://public.example/grpc te=Some(\"trailers\") trailers=1"
    );
}

#[test]
fn h2c_large_bodies_and_100_continue() {
    let (addr, _seen) = h2_upstream();
    let fwd = forwarder(
        &format!("http://localhost:{}", addr.port()),
        UpstreamProtocol::Http2,
    );
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    block_on(async {
        let (served, ()) = drive(&fwd, |mut edge| async move {
            let head = format!(
                "PUT /plain HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                big.len()
            );
            edge.send(head.as_bytes()).await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 100);
            edge.send(&big).await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 200);
            assert!(r.body == big, "echoed body differs");
            edge.fin().await;
            assert!(edge.until_eof().await.is_empty());
        })
        .await;
        served.expect("clean end");
    });
}

#[test]
fn h2c_reconnects_after_the_upstream_closes() {
    let (addr, seen) = h2_upstream();
    let fwd = forwarder(
        &format!("http://127.0.0.1:{}", addr.port()),
        UpstreamProtocol::Http2,
    );
    block_on(async {
        for path in ["/bye", "/plain"] {
            let (served, status) = drive(&fwd, |mut edge| async move {
                let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
                edge.send(req.as_bytes()).await;
                edge.response(false).await.status
            })
            .await;
            assert_eq!(status, 200, "{path}");
            served.expect("clean end");
            // Let the GOAWAY arrive before the next request.
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// An `https://` upstream with `--upstream-protocol http2`: TLS with ALPN
/// h2, served by the project's own HTTP/2 server on a monoio thread.
fn h2_tls_upstream() -> (SocketAddr, Arc<H2Seen>) {
    let ck = test_cert();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = Arc::new(cfg);
    let seen = Arc::new(H2Seen::default());
    let s2 = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let acceptor = monoio_rustls::TlsAcceptor::from(cfg);
            let limits = std::rc::Rc::new(crate::h2::H2Limits::default());
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                s2.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, limits, seen) = (acceptor.clone(), limits.clone(), s2.clone());
                monoio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let handler = move |req, respond| h2_handle(req, respond, seen.clone());
                    let drain = crate::runtime::drain::Drain::new();
                    let _ = crate::h2::serve(tls, &limits, drain, handler).await;
                });
            }
        });
    });
    (rx.recv().expect("addr"), seen)
}

#[test]
fn https_http2_uses_alpn_h2() {
    let (addr, seen) = h2_tls_upstream();
    let fwd = forwarder(
        &format!("https://localhost:{}", addr.port()),
        UpstreamProtocol::Http2,
    );
    block_on(async {
        let (served, ()) = drive(&fwd, |mut edge| async move {
            edge.send(
                b"POST /grpc HTTP/1.1\r\nHost: public.example\r\nContent-Length: 2\r\n\r\nhi",
            )
            .await;
            let r = edge.response(false).await;
            assert_eq!(r.body, b"echo:hi");
            assert!(
                r.trailers.contains(&"grpc-status: 0".to_owned()),
                "{:?}",
                r.trailers
            );
            edge.fin().await;
            assert!(edge.until_eof().await.is_empty());
        })
        .await;
        served.expect("clean end");
    });
    let reqs = seen.requests.lock().expect("lock").clone();
    assert_eq!(
        reqs,
        vec!["POST https://public.example/grpc te=None trailers=0".to_owned()]
    );
}

#[test]
fn h2c_unreachable_gets_502() {
    // Reserve a port, leave it closed for the first attempt.
    let probe = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), UpstreamProtocol::Http2);
    block_on(async {
        let (served, all) = drive(&fwd, |mut edge| async move {
            edge.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
            edge.until_eof().await
        })
        .await;
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        assert!(text.contains("ERR_NGROK_8012"), "{text}");
        assert!(matches!(served, Err(ForwardError::Dial { .. })));
    });
}

// ---------------------------------------------------------------------------
// file:///dir

struct Site {
    _dir: tempfile::TempDir,
    _outside: tempfile::TempDir,
    root: PathBuf,
    mtime_secs: u64,
}

fn site() -> Site {
    let dir = tempfile::tempdir().expect("tmp");
    let outside = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("site");
    std::fs::create_dir_all(root.join("docs")).expect("mkdir");
    std::fs::create_dir_all(root.join("with index")).expect("mkdir");
    std::fs::write(root.join("hello.txt"), b"hello, world\n").expect("write");
    std::fs::write(root.join("<b>&.css"), b"b{}").expect("write");
    std::fs::write(root.join("with index/index.html"), b"<p>index</p>").expect("write");
    std::fs::write(root.join("docs/a b.json"), b"{}").expect("write");
    std::fs::write(outside.path().join("secret"), b"secret").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).expect("ln");
    let mtime_secs = 1_700_000_000;
    let f = std::fs::File::options()
        .write(true)
        .open(root.join("hello.txt"))
        .expect("open");
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
        .expect("mtime");
    Site {
        _dir: dir,
        _outside: outside,
        root,
        mtime_secs,
    }
}

#[test]
fn file_server_end_to_end() {
    let site = site();
    let fwd = forwarder(
        &format!("file://{}", site.root.display()),
        UpstreamProtocol::Http1,
    );
    let lm = files_http_date(site.mtime_secs);
    block_on(async {
        let (served, ()) = drive(&fwd, |mut edge| async move {
            let get = |path: &str, extra: &str| {
                format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n").into_bytes()
            };
            // A file.
            edge.send(&get("/hello.txt", "")).await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"hello, world\n");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("text/plain; charset=utf-8")
            );
            assert_eq!(r.header("content-length").as_deref(), Some("13"));
            assert_eq!(r.header("last-modified").as_deref(), Some(lm.as_str()));
            // Conditional GET.
            edge.send(&get("/hello.txt", &format!("If-Modified-Since: {lm}\r\n")))
                .await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 304);
            assert!(r.body.is_empty());
            let older = files_http_date(site_mtime_minus(&lm));
            edge.send(&get(
                "/hello.txt",
                &format!("If-Modified-Since: {older}\r\n"),
            ))
            .await;
            assert_eq!(edge.response(false).await.status, 200);
            // HEAD: headers only.
            edge.send(b"HEAD /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n")
                .await;
            let r = edge.response(true).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length").as_deref(), Some("13"));
            // Range.
            edge.send(&get("/hello.txt", "Range: bytes=7-11\r\n")).await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 206);
            assert_eq!(r.body, b"world");
            assert_eq!(r.header("content-range").as_deref(), Some("bytes 7-11/13"));
            edge.send(&get("/hello.txt", "Range: bytes=50-\r\n")).await;
            assert_eq!(edge.response(false).await.status, 416);
            // Percent-decoded names, listing with escaping.
            edge.send(&get("/docs/a%20b.json", "")).await;
            let r = edge.response(false).await;
            assert_eq!(r.body, b"{}");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/json")
            );
            edge.send(&get("/", "")).await;
            let r = edge.response(false).await;
            let page = String::from_utf8(r.body).expect("utf8");
            assert!(page.contains("href=\"./hello.txt\""), "{page}");
            assert!(page.contains("href=\"./docs/\""), "{page}");
            assert!(page.contains("&lt;b&gt;&amp;.css"), "{page}");
            assert!(!page.contains("<b>&"), "{page}");
            // Directory: redirect to the slash form, then index.html.
            edge.send(&get("/with%20index", "")).await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 301);
            assert_eq!(r.header("location").as_deref(), Some("/with%20index/"));
            edge.send(&get("/with%20index/", "")).await;
            let r = edge.response(false).await;
            assert_eq!(r.body, b"<p>index</p>");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("text/html; charset=utf-8")
            );
            // Escapes refused.
            for bad in ["/../site/hello.txt", "/docs/%2e%2e/%2e%2e/x", "/escape"] {
                edge.send(&get(bad, "")).await;
                let r = edge.response(false).await;
                assert_eq!(r.status, 403, "{bad}");
                assert!(!String::from_utf8_lossy(&r.body).contains("secret"));
            }
            edge.send(&get("/missing", "")).await;
            assert_eq!(edge.response(false).await.status, 404);
            // Other methods: 405 with Allow; with a body, then close.
            edge.send(b"DELETE /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n")
                .await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 405);
            assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
            edge.send(b"POST /hello.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nxy")
                .await;
            let r = edge.response(false).await;
            assert_eq!(r.status, 405);
            assert_eq!(r.header("connection").as_deref(), Some("close"));
            assert!(edge.until_eof().await.is_empty());
        })
        .await;
        served.expect("clean end");
    });
}

#[test]
fn file_server_streams_a_large_file_and_ends_on_fin() {
    let site = site();
    let big: Vec<u8> = (0..(1u32 << 20) + 12345).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.root.join("big.bin"), &big).expect("write");
    let fwd = forwarder(
        &format!("file://{}", site.root.display()),
        UpstreamProtocol::Http1,
    );
    block_on(async {
        let (served, (sent, received)) = drive(&fwd, |mut edge| async move {
            edge.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n").await;
            let r = edge.response(false).await;
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/octet-stream")
            );
            assert!(r.body == big, "body differs");
            edge.fin().await;
            assert!(edge.until_eof().await.is_empty());
            (edge.sent, edge.received)
        })
        .await;
        let stats = served.expect("clean end");
        assert_eq!((stats.bytes_in, stats.bytes_out), (sent, received));
    });
}

fn files_http_date(secs: u64) -> String {
    super::files::format_http_date(secs)
}

fn site_mtime_minus(lm: &str) -> u64 {
    super::files::parse_http_date(lm.as_bytes()).expect("date") - 3600
}
