//! `--upstream-protocol http2`: HTTP/1.1 requests from the edge's stream
//! sent to the upstream over HTTP/2 (h2c with prior knowledge for
//! `http://`, TLS with ALPN "h2" for `https://`). Needed for gRPC.
//!
//! Owns: the HTTP/1.1 keep-alive loop on the stream (the project's
//! sans-IO parser), one HTTP/2 connection to the upstream shared by every
//! stream of a forwarder (opened on first use, replaced when it dies),
//! request and response bodies streamed both ways at once (bidirectional
//! gRPC streams work), and trailers carried across: chunked trailers from
//! the edge become h2 trailers, h2 trailers become chunked trailers.
//! Never: upgrades or CONNECT (answered 501: HTTP/2 would need RFC 8441
//! from the upstream), or buffering a whole body.

mod convert;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, SendStream};
use http::uri::Scheme;
use http::Request;
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split, Splitable};
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use tracing::{debug, warn};

use super::bad_gateway::{UNREACHABLE, UPSTREAM_FAILED};
use super::dial::{self, Resolver, CONNECT_TIMEOUT};
use super::edge_io::{trailer_section, EdgeReader, EdgeWriter};
use super::error::ForwardError;
use super::ForwardStats;
use crate::h2::server::{BRIDGE_READ_BUFFER, BRIDGE_WRITE_BUFFER};
use crate::h2::{compat_io, finish, h1_trailers_to_h2, h2_trailers_to_h1, send_body};
use crate::h2::{write_chunk_header, RequestBody};
use crate::http1::{BodyDecoder, Framing, Method, RequestHead};
use crate::proxy::error_page::{render, EdgeError};
use crate::runtime::catch_unwind::{panic_message, CatchUnwind};
use convert::{clone_request, request_to_h2, response_to_h1, H1Body};

/// HTTP/2 windows we advertise to the upstream: large enough that one
/// round trip does not cap a download at 64 KiB.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

const NOT_SUPPORTED: EdgeError = EdgeError {
    status: 501,
    code: None,
    message: "Upgrades and CONNECT cannot be forwarded to an HTTP/2 upstream.",
};

const BAD_REQUEST: EdgeError = EdgeError {
    status: 400,
    code: None,
    message: "The request cannot be expressed in HTTP/2.",
};

/// The forwarder's HTTP/2 connection to its upstream.
pub struct H2Upstream {
    /// For error pages: the normalized upstream URL.
    upstream: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    current: RefCell<Option<Live>>,
}

struct Live {
    send: SendRequest<Bytes>,
    /// Cleared by the connection task when the connection ends.
    alive: Rc<Cell<bool>>,
}

/// Why a request could not be sent.
enum SendFail {
    /// No connection could be opened: the reason, for the 502 page.
    Dial(String),
    H2(h2::Error),
}

impl H2Upstream {
    pub fn new(
        upstream: String,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    ) -> H2Upstream {
        H2Upstream {
            upstream,
            tls: tls.map(|(cfg, name)| (TlsConnector::from(cfg), name)),
            current: RefCell::new(None),
        }
    }

    /// Serves one proxied connection.
    pub async fn serve<S>(
        &self,
        resolver: &Resolver,
        stream: S,
    ) -> Result<ForwardStats, ForwardError>
    where
        S: AsyncReadRent + AsyncWriteRent + Split + 'static,
    {
        let (r, w) = stream.into_split();
        let mut rd = EdgeReader::new(r);
        let mut wr = EdgeWriter::new(w);
        let res = self.serve_loop(resolver, &mut rd, &mut wr).await;
        if let Err(e) = wr.shutdown().await {
            debug!(error = %e, "h2 forwarder: half-close");
        }
        let stats = ForwardStats {
            bytes_in: rd.bytes_in,
            bytes_out: wr.bytes_out,
        };
        res.map(|()| stats)
    }

    async fn serve_loop<R, W>(
        &self,
        resolver: &Resolver,
        rd: &mut EdgeReader<R>,
        wr: &mut EdgeWriter<W>,
    ) -> Result<(), ForwardError>
    where
        R: AsyncReadRent,
        W: AsyncWriteRent,
    {
        let mut head = RequestHead::new();
        let mut head_buf = Vec::new();
        loop {
            match rd.read_head(&mut head, &mut head_buf).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(ForwardError::Request(e)) => {
                    page(wr, EdgeError::protocol(e), &e.to_string()).await;
                    return Err(e.into());
                }
                Err(e) => return Err(e),
            }
            if head.is_upgrade() || head.method() == Method::Connect {
                page(wr, NOT_SUPPORTED, "").await;
                return Ok(());
            }
            let req = match request_to_h2(&head, &head_buf, self.scheme()) {
                Ok(r) => r,
                Err(e) => {
                    page(wr, BAD_REQUEST, &e.to_string()).await;
                    return Ok(());
                }
            };
            let no_body = head.framing == Framing::None;
            let (response, send_stream) = match self.send(resolver, req, no_body).await {
                Ok(pair) => pair,
                Err(SendFail::Dial(reason)) => {
                    let detail = format!("The agent could not reach {}: {reason}", self.upstream);
                    page(wr, UNREACHABLE, &detail).await;
                    return Err(ForwardError::Dial {
                        upstream: self.upstream.clone(),
                        reason,
                    });
                }
                Err(SendFail::H2(e)) => {
                    page(wr, UPSTREAM_FAILED, &e.to_string()).await;
                    return Err(e.into());
                }
            };
            if head.expect_continue && !no_body {
                wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                    .await?;
            }
            let close = !head.keep_alive;
            let mut dec = BodyDecoder::new(head.framing);
            let (sent, answered) = monoio::join!(
                pump_request_body(rd, &mut dec, send_stream, no_body),
                write_response(wr, response, head.method() == Method::Head, close)
            );
            answered?;
            sent?;
            if close {
                return Ok(());
            }
        }
    }

    fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// Opens a stream for `req`, on the shared connection or, when that is
    /// gone or fails before anything was sent, on a fresh one (once).
    async fn send(
        &self,
        resolver: &Resolver,
        req: Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), SendFail> {
        let mut last = None;
        for fresh in [false, true] {
            let sender = self.sender(resolver, fresh).await.map_err(SendFail::Dial)?;
            let mut ready = match sender.ready().await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "h2 upstream not ready; reconnecting");
                    self.current.borrow_mut().take();
                    last = Some(e);
                    continue;
                }
            };
            match ready.send_request(clone_request(&req), end_of_stream) {
                Ok(pair) => return Ok(pair),
                Err(e) => {
                    debug!(error = %e, "h2 upstream refused a stream; reconnecting");
                    self.current.borrow_mut().take();
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => SendFail::H2(e),
            None => SendFail::Dial("no connection".into()),
        })
    }

    /// The shared connection's handle, opening a connection when there is
    /// none, it has died, or `fresh` is asked for.
    async fn sender(&self, resolver: &Resolver, fresh: bool) -> Result<SendRequest<Bytes>, String> {
        if !fresh {
            if let Some(live) = self.current.borrow().as_ref() {
                if live.alive.get() {
                    return Ok(live.send.clone());
                }
            }
        }
        let live = monoio::time::timeout(CONNECT_TIMEOUT * 2, self.connect(resolver))
            .await
            .map_err(|_| "timed out opening the HTTP/2 connection".to_owned())??;
        let send = live.send.clone();
        *self.current.borrow_mut() = Some(live);
        Ok(send)
    }

    async fn connect(&self, resolver: &Resolver) -> Result<Live, String> {
        let tcp = dial::connect(resolver).await.map_err(|e| e.to_string())?;
        let alive = Rc::new(Cell::new(true));
        let send = match &self.tls {
            None => handshake(tcp, alive.clone()).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                if tls.alpn_protocol().as_deref() != Some(b"h2".as_slice()) {
                    return Err("the upstream did not agree to HTTP/2 (ALPN h2)".into());
                }
                handshake(tls, alive.clone()).await
            }
        }
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        Ok(Live { send, alive })
    }
}

/// Starts HTTP/2 on `io` and spawns the connection task on this thread.
async fn handshake<IO>(io: IO, alive: Rc<Cell<bool>>) -> Result<SendRequest<Bytes>, h2::Error>
where
    IO: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let io = compat_io(io, BRIDGE_READ_BUFFER, BRIDGE_WRITE_BUFFER);
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    monoio::spawn(async move {
        match CatchUnwind(Box::pin(conn)).await {
            Ok(Ok(())) => debug!("h2 upstream connection closed"),
            Ok(Err(e)) => debug!(error = %e, "h2 upstream connection ended"),
            Err(p) => warn!(
                panic = panic_message(p.as_ref()),
                "h2 upstream connection panicked"
            ),
        }
        alive.set(false);
    });
    Ok(send)
}

/// Streams the request body from the edge to the upstream. If the
/// upstream stops accepting it (reset, early response), the rest is still
/// read and dropped so the next request on the stream is found. If the
/// edge fails mid-body, the h2 stream is reset so the response side ends.
async fn pump_request_body<R: AsyncReadRent>(
    rd: &mut EdgeReader<R>,
    dec: &mut BodyDecoder,
    mut send: SendStream<Bytes>,
    no_body: bool,
) -> Result<(), ForwardError> {
    if no_body {
        return Ok(());
    }
    let chunked = matches!(dec, BodyDecoder::Chunked(_));
    let mut tail = Vec::new();
    let mut upstream_ok = true;
    loop {
        match rd.body_data(dec, &mut tail).await {
            Ok(Some(data)) => {
                if upstream_ok {
                    if let Err(e) = send_body(&mut send, data).await {
                        debug!(error = %e, "h2 upstream stopped reading the request body");
                        upstream_ok = false;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                send.send_reset(Reason::CANCEL);
                return Err(e);
            }
        }
    }
    if upstream_ok {
        let trailers = if chunked {
            match h1_trailers_to_h2(trailer_section(&tail)) {
                Ok(t) => Some(t),
                Err(e) => {
                    debug!(error = ?e, "dropping invalid request trailers");
                    None
                }
            }
        } else {
            None
        };
        if let Err(e) = finish(&mut send, trailers) {
            debug!(error = %e, "ending the h2 request body");
        }
    }
    Ok(())
}

/// Waits for the upstream's response and writes it to the edge as
/// HTTP/1.1. Before the head: a failure becomes a 502 page. After it: the
/// error ends the connection (the edge sees a truncated response).
async fn write_response<W: AsyncWriteRent>(
    wr: &mut EdgeWriter<W>,
    response: ResponseFuture,
    head_request: bool,
    close: bool,
) -> Result<(), ForwardError> {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            page(wr, UPSTREAM_FAILED, &e.to_string()).await;
            return Err(e.into());
        }
    };
    let (parts, body) = response.into_parts();
    let end_stream = body.is_end_stream();
    let mut out = Vec::with_capacity(512);
    let framing = response_to_h1(&parts, head_request, end_stream, close, &mut out);
    let mut out = wr.write_all(out).await?;
    let mut body = RequestBody::new(body);
    match framing {
        // Dropping `body` resets a stream that still had data (a HEAD
        // response must not).
        H1Body::None => {}
        H1Body::Length => {
            while let Some(chunk) = body.chunk().await {
                wr.write_bytes(chunk?).await?;
            }
        }
        H1Body::Chunked => {
            while let Some(chunk) = body.chunk().await {
                let chunk = chunk?;
                if chunk.is_empty() {
                    continue;
                }
                out.clear();
                write_chunk_header(chunk.len(), &mut out);
                out.extend_from_slice(&chunk);
                out.extend_from_slice(b"\r\n");
                out = wr.write_all(out).await?;
            }
            let trailers = body.trailers().await?;
            out.clear();
            h2_trailers_to_h1(trailers.as_ref(), &mut out);
            wr.write_all(out).await?;
        }
    }
    Ok(())
}

/// Writes an error page with `connection: close`; failures are only logged
/// (the connection ends right after anyway).
async fn page<W: AsyncWriteRent>(wr: &mut EdgeWriter<W>, err: EdgeError, detail: &str) {
    let mut out = Vec::new();
    render(err, detail, false, true, &mut out);
    if let Err(e) = wr.write_all(out).await {
        debug!(error = %e, "writing an error page");
    }
}
