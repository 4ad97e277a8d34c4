//! Replay: a captured request, optionally edited (method, path, headers,
//! body), sent again straight to the endpoint's local upstream, as ngrok's
//! agent does (edge policies are not applied again). The replay runs
//! through the endpoint's own [`Forwarder`] over an in-process socket pair,
//! wrapped in a tap, so it is recorded as a new capture like any other.
//!
//! Runs on a short-lived thread of its own (with its own monoio runtime):
//! never on the agent's session threads, never on the inspector's.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::UnixStream;
use serde::Deserialize;

use super::capture::{Capture, ConnTap, TapConfig};
use super::tap::Inspected;
use crate::agent::forward::{ForwardOptions, Forwarder};

/// A replay may take this long before it is abandoned.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// Changes to apply before replaying (the page's "Replay with
/// modifications"). Absent fields keep the captured value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    pub method: Option<String>,
    /// Path and query.
    pub path: Option<String>,
    /// Replaces every header field.
    pub headers: Option<Vec<(String, String)>>,
    /// Replaces the body (text).
    pub body: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplayError {
    #[error("the captured request body is incomplete; replay it with an edited body")]
    Truncated,
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Fields that belong to one connection or to the old body's framing.
fn hop_field(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The bytes to send: an HTTP/1.1 request with a `Content-Length` body
/// and `Connection: close`.
pub fn request_bytes(c: &Capture, edits: &Edits) -> Result<Vec<u8>, ReplayError> {
    let method = edits.method.as_deref().unwrap_or(&c.request.method);
    if !token(method) {
        return Err(ReplayError::Invalid("method"));
    }
    let path = edits.path.as_deref().unwrap_or(&c.request.uri);
    if path.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ReplayError::Invalid("path"));
    }
    let body: &[u8] = match &edits.body {
        Some(b) => b.as_bytes(),
        None if c.request.msg.truncated => return Err(ReplayError::Truncated),
        None => &c.request.msg.body,
    };
    let fields = edits.headers.as_ref().unwrap_or(&c.request.msg.headers);
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    for (n, v) in fields {
        if hop_field(n) {
            continue;
        }
        if !token(n) || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(ReplayError::Invalid("header"));
        }
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    let had_body = c.request.msg.headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !body.is_empty() || had_body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

/// Sends `bytes` through a forwarder built from `opts`, on a new thread;
/// the exchange is captured through `tap` as a replay of `original`.
pub fn spawn(
    opts: ForwardOptions,
    tap: TapConfig,
    remote_addr: String,
    original: String,
    bytes: Vec<u8>,
) {
    let spawned = std::thread::Builder::new()
        .name("ringress-replay".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build();
            let Ok(mut rt) = rt else {
                tracing::warn!("replay: cannot build a runtime");
                return;
            };
            rt.block_on(async move {
                let res = monoio::time::timeout(
                    REPLAY_TIMEOUT,
                    run(opts, tap, remote_addr, original, bytes),
                )
                .await;
                match res {
                    Ok(Err(e)) => tracing::warn!(error = %e, "replay failed"),
                    Err(_) => tracing::warn!("replay timed out"),
                    Ok(Ok(())) => {}
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "replay: cannot start a thread");
    }
}

async fn run(
    opts: ForwardOptions,
    tap: TapConfig,
    remote_addr: String,
    original: String,
    bytes: Vec<u8>,
) -> Result<(), String> {
    let fwd = Forwarder::new(opts).map_err(|e| e.to_string())?;
    let (ours, mut theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
    let stream = Inspected::new(ours, ConnTap::new(tap, remote_addr, Some(original)));
    let serve = monoio::spawn(async move { fwd.serve(stream).await });
    let (res, _) = theirs.write_all(bytes).await;
    res.map_err(|e| e.to_string())?;
    // The request is complete: half-close, as a client that sent
    // `Connection: close` may; then read the answer to its end.
    theirs.shutdown().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (res, b) = theirs.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(theirs);
    let _ = serve.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::agent::inspect::capture::{Message, Request};

    fn captured(body: &[u8], truncated: bool) -> Capture {
        Capture {
            id: "x".into(),
            tunnel_name: "t".into(),
            remote_addr: String::new(),
            start: SystemTime::now(),
            duration: None,
            request: Request {
                method: "POST".into(),
                uri: "/hook?a=1".into(),
                msg: Message {
                    headers: vec![
                        ("Host".into(), "h.example".into()),
                        ("Connection".into(), "keep-alive".into()),
                        ("Transfer-Encoding".into(), "chunked".into()),
                        ("X-A".into(), "1".into()),
                    ],
                    body: body.to_vec(),
                    truncated,
                    ..Message::default()
                },
            },
            response: None,
            replay_of: None,
        }
    }

    #[test]
    fn rebuilt_with_length_and_close() {
        let b = request_bytes(&captured(b"hello", false), &Edits::default()).expect("ok");
        assert_eq!(
            String::from_utf8(b).expect("utf-8"),
            "POST /hook?a=1 HTTP/1.1\r\nHost: h.example\r\nX-A: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
    }

    #[test]
    fn edits_apply_and_are_checked() {
        let edits = Edits {
            method: Some("PUT".into()),
            path: Some("/other".into()),
            headers: Some(vec![
                ("Host".into(), "h".into()),
                ("X-B".into(), "2".into()),
            ]),
            body: Some("new".into()),
        };
        let b = request_bytes(&captured(b"", true), &edits).expect("ok");
        assert!(b.starts_with(b"PUT /other HTTP/1.1\r\nHost: h\r\nX-B: 2\r\n"));
        assert!(b.ends_with(b"\r\n\r\nnew"));
        assert_eq!(
            request_bytes(&captured(b"", true), &Edits::default()),
            Err(ReplayError::Truncated)
        );
        let bad = Edits {
            headers: Some(vec![("X".into(), "a\r\nInjected: 1".into())]),
            ..Edits::default()
        };
        assert_eq!(
            request_bytes(&captured(b"", false), &bad),
            Err(ReplayError::Invalid("header"))
        );
        let bad = Edits {
            method: Some("G T".into()),
            ..Edits::default()
        };
        assert!(request_bytes(&captured(b"", false), &bad).is_err());
    }
}
