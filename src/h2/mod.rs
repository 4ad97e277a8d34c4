//! HTTP/2 towards clients, on monoio, with the h2 crate.
//!
//! Owns: driving one client HTTP/2 connection (`serve`: handshake, limits,
//! one task per stream, idle timeout, graceful GOAWAY on drain), the
//! conversions between HTTP/2 messages and the HTTP/1.1 messages sent to
//! upstreams (`convert`), and flow-controlled body transfer (`body`).
//! Never: routing, policy, upstream connections or TLS; those stay in
//! `proxy`, `tls` and `runtime`, which call in here. Nothing in this module
//! blocks, holds a `RefCell` borrow across an await, or needs `Send`.
//!
//! # Limits and protections
//! [`H2Limits`] holds every limit with its reason. h2's flood protections
//! are all on: rapid reset (CVE-2023-44487: streams reset before they are
//! accepted are capped by `max_pending_accept_reset_streams`, then GOAWAY
//! ENHANCE_YOUR_CALM), resets forced by client protocol errors
//! (`max_local_error_reset_streams`), CONTINUATION floods, header lists over
//! `max_header_list_size` (431, or GOAWAY past h2's abuse multiple), small
//! and empty DATA frame floods, and the caps on queued SETTINGS and PING
//! acknowledgements.
//!
//! # What the proxy does for each stream
//! `serve(io, &limits, drain, handler)` calls `handler(request, respond)`
//! in a new task per stream. For a plain request the handler:
//! 1. `convert::request_to_h1(&req, req.body().is_end_stream(), &mut head)`;
//!    on `Err(e)` answers `e.status()` (or resets with PROTOCOL_ERROR when
//!    `e.is_malformed()`). The head is a complete HTTP/1.1 head that
//!    `http1::RequestHead::parse` accepts, so routing, policy and
//!    `proxy::headers::encode_request_head` (X-Forwarded-*) apply as for
//!    HTTP/1.1.
//! 2. Sends the head upstream, then the body per `H1Request::framing`,
//!    reading it with `body::RequestBody::chunk` (window released when the
//!    next chunk is asked for, i.e. after the previous one was written):
//!    `Length`: copy chunks as they are. `Chunked`: for each chunk
//!    `convert::write_chunk_header(len)`, the chunk, "\r\n"; at the end
//!    `RequestBody::trailers()` then `convert::h2_trailers_to_h1(...)`
//!    (writes the last chunk, trailers and the final CRLF). `None`: nothing.
//! 3. Parses the upstream's response head; a 1xx (not 101) goes out with
//!    `respond.send_informational(convert::response_to_h2(..)?)`; the final
//!    one with `respond.send_response(convert::response_to_h2(status,
//!    fields, false)?, end_of_stream)` where `end_of_stream` is true when
//!    the response has no body (HEAD, 204, 304, Content-Length: 0).
//! 4. Streams the response body with `body::send_body(&mut send, bytes)`
//!    (waits for the client's window) and ends it with
//!    `body::finish(&mut send, trailers)`; for a chunked upstream body the
//!    trailers are `convert::h1_trailers_to_h2(section)` (empty: `None`).
//! 5. If `send_body` fails (client reset) or `respond.poll_reset` fires,
//!    stops reading from the upstream and drops that upstream connection
//!    (it is mid-response: not reusable).
//!
//! Errors before a response head is sent: `respond.send_response` with
//! the edge's error page (502/504...). Errors after it: `send.send_reset(
//! Reason::INTERNAL_ERROR)`, the HTTP/2 way to say "truncated".
//!
//! # Extended CONNECT (RFC 8441): WebSockets over HTTP/2
//! `H2Limits::builder` sends SETTINGS_ENABLE_CONNECT_PROTOCOL=1, so clients
//! may open WebSockets with `:method CONNECT`, `:protocol websocket`,
//! `:path`, `:authority`. `convert::extended_connect_protocol(&req)` returns
//! the `:protocol` (h2 stores it as `h2::ext::Protocol` in the request's
//! extensions). To bridge it to an HTTP/1.1 upstream the proxy:
//! 1. calls `request_to_h1`, which writes `GET :path` with `Connection:
//!    Upgrade`, `Upgrade: websocket`, a fresh `Sec-WebSocket-Key`
//!    (returned in `H1Request::websocket_key`) and the client's
//!    `sec-websocket-version/-protocol/-extensions`; any other `:protocol`
//!    is `ConvertError::UnsupportedConnect` (501);
//! 2. on `101 Switching Protocols` (optionally checking
//!    `Sec-WebSocket-Accept` against the key), answers the client with
//!    `response_to_h2(101, fields, true)`, which is a 200 without the
//!    HTTP/1.1 handshake fields, sent with `end_of_stream = false`;
//!    any other status is forwarded as an ordinary response (the tunnel is
//!    refused);
//! 3. then pumps both ways until either side ends: client DATA
//!    (`RequestBody::chunk`) → upstream socket; upstream reads →
//!    `send_body`. Client END_STREAM → shut down the upstream's write
//!    side; upstream EOF → `finish(&mut send, None)`; a reset on either
//!    side → close the other. The bytes are WebSocket frames in both
//!    protocols, passed through untouched.
//!
//! # Drain
//! When the worker's `Drain` fires, `serve` sends GOAWAY (h2's graceful
//! shutdown: a GOAWAY with the highest stream id, a PING, then the final
//! GOAWAY), keeps serving the streams already open, and returns once they
//! are done. It has no deadline of its own: the worker's drain deadline
//! drops the future (closing the socket) when it expires.
//!
//! # Bridge
//! h2 uses tokio-style poll I/O; monoio uses owned buffers. `serve` bridges
//! any monoio stream (TCP, monoio-rustls TLS, `Rewind`) with [`CompatIo`]:
//! `monoio_compat::StreamWrapper` behind a write-coalescing `BufWriter`
//! (16 KiB read, 64 KiB write buffers: 144 KiB per connection).
//! `serve_poll` takes a stream that already has poll I/O (monoio's
//! `TcpStream::into_poll_io()`, cleartext only). Measurements and the
//! reasons for this choice: docs/performance.md, "HTTP/2 bridge: poll-io vs
//! monoio-compat". One known hazard below the bridge: monoio-rustls 0.4
//! panics when a TLS error arrives while a write is in flight; `serve`
//! catches it and returns `H2Error::Panic` for that connection only (so the
//! build must keep `panic = "unwind"`).

pub mod body;
pub mod convert;
pub mod error;
pub mod limits;
pub mod server;

pub use body::{finish, send_body, RequestBody};
pub use convert::{
    extended_connect_protocol, h1_trailers_to_h2, h2_trailers_to_h1, request_to_h1, response_to_h2,
    write_chunk_header, H1Request,
};
pub use error::{ConvertError, H2Error};
pub use limits::H2Limits;
pub use server::{compat_io, serve, serve_poll, CompatIo, Rewind};

/// The HTTP/2 client connection preface (RFC 9113 §3.4): a cleartext
/// connection starting with these bytes is h2c with prior knowledge.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
