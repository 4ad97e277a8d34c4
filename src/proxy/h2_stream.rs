//! One HTTP/2 request stream, proxied as an HTTP/1.1 exchange with the
//! upstream: the h2 request becomes an HTTP/1.1 head (`h2::convert`), which
//! goes through the same parser, routing, policy and header rewriting as an
//! HTTP/1.1 request; the upstream exchange is `proxy::upstream`; the
//! response head and body (chunked bodies decoded, trailers carried) go back
//! as HTTP/2 with flow control.
//!
//! Errors before the response head: an edge error page as an h2 response.
//! Errors after it: RST_STREAM(INTERNAL_ERROR), HTTP/2's "truncated".

use std::rc::Rc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::Request;
use tracing::debug;

use super::error_page::{self, EdgeError};
use super::headers::{
    encode_request_head_edited, encode_response_head_edited, ClientConn, ForwardInfo,
};
use super::io::{read_append, write_all, IoFail};
use super::upstream::{self, ClientInfo, Target, UpstreamConn};
use crate::config::Settings;
use crate::h2::convert::{
    h1_trailers_to_h2, h2_trailers_to_h1, request_to_h1, response_to_h2, write_chunk_header,
};
use crate::h2::{finish, send_body, RequestBody};
use crate::http1::{BodyDecoder, Framing, Method, RequestHead, ResponseHead};
use crate::policy::{self, RequestOutcome, ResponseOutcome};
use crate::route::{normalize_host, RouteTable};
use crate::runtime::worker::WorkerCtx;

/// Serves one stream to completion.
pub async fn handle(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ctx: Rc<WorkerCtx>,
    peer_ip: Rc<str>,
    peer: std::net::SocketAddr,
) {
    let snap = ctx.snapshots.get();
    let settings: Settings = snap.settings;
    let mut obs = StreamObs::new(ctx.clone(), peer);
    let json = req.headers().get_all(http::header::ACCEPT).iter().any(|v| {
        let v = v.as_bytes();
        contains(v, b"application/json") && !contains(v, b"text/html")
    });

    let mut h1 = Vec::with_capacity(512);
    let end_of_stream = req.body().is_end_stream();
    let conv = match request_to_h1(&req, end_of_stream, &mut h1) {
        Ok(c) => c,
        Err(e) if e.is_malformed() => {
            respond.send_reset(Reason::PROTOCOL_ERROR);
            return;
        }
        Err(e) => {
            let err = EdgeError {
                status: e.status(),
                code: None,
                message: "The request cannot be proxied.",
            };
            send_error(&mut respond, &mut obs, err, &e.to_string(), json);
            return;
        }
    };
    if conv.websocket_key.is_some() {
        // Not advertised (SETTINGS_ENABLE_CONNECT_PROTOCOL stays off), so a
        // conforming client never gets here.
        let err = EdgeError {
            status: 501,
            code: None,
            message: "WebSockets over HTTP/2 are not supported; use HTTP/1.1.",
        };
        send_error(&mut respond, &mut obs, err, "", json);
        return;
    }
    let mut head = RequestHead::new();
    if !matches!(head.parse(&h1, settings.limits.max_head_bytes), Ok(true)) {
        let err = EdgeError::protocol(crate::http1::ParseError::Syntax("request"));
        send_error(&mut respond, &mut obs, err, "", json);
        return;
    }
    obs.ex
        .begin(&ctx.obs, &mut obs.meta, &h1[..head.head_len.min(h1.len())]);
    let mut host = String::new();
    if !normalize_host(head.authority.get(&h1), &mut host) {
        let err = EdgeError::protocol(crate::http1::ParseError::InvalidHost);
        send_error(&mut respond, &mut obs, err, "", json);
        return;
    }
    let endpoint = loop {
        let tunnels = ctx.tunnels.table();
        let found = RouteTable::lookup_either(&snap.https_routes, &tunnels.https, &host)
            .filter(|e| !policy::pipeline::is_internal(e))
            .cloned();
        // Just upgraded: the host's agent may be reconnecting.
        if found.is_some()
            || !ctx
                .tunnels
                .wait_for_handoff(crate::route::Scheme::Https, &host)
                .await
        {
            break found;
        }
    };
    let Some(endpoint) = endpoint else {
        let detail = format!("No endpoint is online for {host}.");
        send_error(
            &mut respond,
            &mut obs,
            EdgeError::NO_ENDPOINT,
            &detail,
            json,
        );
        return;
    };
    obs.ex.endpoint(&ctx.obs, &endpoint, 443);
    let head_request = head.method() == Method::Head;
    // Phases on_tcp_connect (per stream here) and on_http_request.
    let mut ex = policy::Exchange::new();
    let conn_info = policy::ConnInfo {
        client: peer_ip
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 0)),
        server_port: 443,
        tls: Some(policy::TlsInfo {
            version: None,
            sni: None,
            negotiated_alpn: Some("h2".into()),
        }),
    };
    let mut recv = Some(req.into_body());
    let mut buffered: Option<Vec<u8>> = None;
    let mut target = None;
    if let Some(compiled) = &endpoint.policy {
        if !policy::on_tcp_connect(&endpoint, &conn_info, &mut ex).await {
            respond.send_reset(Reason::REFUSED_STREAM);
            return;
        }
        ex.reset();
        if let (Some(limit), false) = (compiled.body_limit(), end_of_stream) {
            match buffer_body(recv.take(), limit).await {
                Ok(b) => buffered = Some(b),
                Err(e) => {
                    send_error(&mut respond, &mut obs, e, "", json);
                    return;
                }
            }
        }
        let style = policy::ReplyStyle {
            json,
            close: false,
            head_request,
        };
        let info = policy::RequestInfo {
            buf: &h1,
            head: &head,
            scheme: crate::route::Scheme::Https,
            version: "HTTP/2.0",
            host: &host,
            conn: &conn_info,
        };
        let lookup = |url: &str| policy::pipeline::internal_lookup(&snap, url);
        let mut out = Vec::new();
        let body = buffered
            .as_deref()
            .or(Some(&[][..]).filter(|_| end_of_stream));
        match policy::on_http_request(&endpoint, &info, body, &lookup, &mut ex, style, &mut out)
            .await
        {
            RequestOutcome::Forward(t) => target = t,
            RequestOutcome::Replied => {
                send_raw_reply(&mut respond, &mut obs, &out).await;
                return;
            }
            RequestOutcome::Close => {
                respond.send_reset(Reason::REFUSED_STREAM);
                return;
            }
        }
    }
    let Some(target) = Target::of(target.as_ref().unwrap_or(&endpoint)) else {
        send_error(&mut respond, &mut obs, EdgeError::NO_ENDPOINT, "", json);
        return;
    };

    // Forward: the rewritten head, then the body per the converted framing.
    let t = &settings.timeouts;
    let mut wbuf = Vec::with_capacity(h1.len() + 128);
    let info = ForwardInfo {
        client_ip: &peer_ip,
        proto: "https",
    };
    encode_request_head_edited(&h1, &head, &info, Some(&ex.req), &mut wbuf);
    if let Some(b) = &buffered {
        // The policy read the whole body: send it with the head.
        if conv.framing == Framing::Chunked {
            if !b.is_empty() {
                write_chunk_header(b.len(), &mut wbuf);
                wbuf.extend_from_slice(b);
                wbuf.extend_from_slice(b"\r\n");
            }
            wbuf.extend_from_slice(b"0\r\n\r\n");
        } else {
            wbuf.extend_from_slice(b);
        }
    }
    let complete = conv.framing == Framing::None || buffered.is_some();
    let retryable = head.method().is_idempotent() && complete;
    let mut ubuf = Vec::with_capacity(crate::proxy::io::READ_CHUNK);
    let client = ClientInfo {
        addr: peer,
        proto: "https",
    };
    let mut up = match upstream::send_head(
        &ctx, target, &client, &mut wbuf, complete, retryable, &mut ubuf, t,
    )
    .await
    {
        Ok(up) => up,
        Err(e) => {
            send_error(&mut respond, &mut obs, e, &endpoint.url, json);
            return;
        }
    };
    if let (false, Some(recv)) = (complete, recv) {
        let chunked = conv.framing == Framing::Chunked;
        if let Err(e) = forward_body(recv, &mut up, chunked, &settings).await {
            if let Some(e) = e {
                send_error(&mut respond, &mut obs, e, "", json);
            } else {
                respond.send_reset(Reason::CANCEL);
            }
            return;
        }
        ubuf.clear();
    }

    // Response head; interim responses are relayed as they come.
    let mut res = ResponseHead::new();
    loop {
        if let Err(e) = upstream::read_response_head(
            &mut up,
            &mut ubuf,
            &mut res,
            settings.limits.max_head_bytes,
            head_request,
            t,
        )
        .await
        {
            send_error(&mut respond, &mut obs, e, "", json);
            return;
        }
        if res.is_informational() && res.status != 101 {
            if let Ok(r) = response_to_h2(res.status, upstream_fields(&ubuf, &res), false) {
                let _ = respond.send_informational(r);
            }
            ubuf.drain(..res.head_len);
            continue;
        }
        break;
    }
    // Phase: on_http_response.
    if endpoint.policy.is_some() {
        let style = policy::ReplyStyle {
            json,
            close: false,
            head_request,
        };
        let info = policy::ResponseInfo {
            buf: &ubuf,
            head: &res,
        };
        let mut out = Vec::new();
        if policy::on_http_response(&endpoint, &info, &conn_info, &mut ex, style, &mut out)
            == ResponseOutcome::Replied
        {
            // The upstream's body is not read: its connection is dropped.
            send_raw_reply(&mut respond, &mut obs, &out).await;
            return;
        }
    }
    let converted = if ex.response_edited() {
        let mut edited = Vec::with_capacity(res.head_len + 128);
        encode_response_head_edited(
            &ubuf,
            &res,
            ClientConn::KeepAlive,
            Some(&ex.res),
            &mut edited,
        );
        let mut eh = ResponseHead::new();
        match eh.parse(&edited, edited.len() + 1, head_request) {
            Ok(true) => response_to_h2(res.status, fields(&edited, &eh), false),
            _ => Err(crate::h2::error::ConvertError::InvalidStatus),
        }
    } else {
        response_to_h2(res.status, upstream_fields(&ubuf, &res), false)
    };
    let response = match converted {
        Ok(r) => r,
        Err(_) => {
            send_error(
                &mut respond,
                &mut obs,
                EdgeError::UPSTREAM_INVALID,
                "",
                json,
            );
            return;
        }
    };
    let no_body = matches!(res.framing, Framing::None | Framing::Length(0));
    let compressor = match ex
        .res
        .compress
        .map(policy::actions::compress::Compressor::new)
    {
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
        None => None,
    };
    let mut send = match respond.send_response(response, no_body) {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "client went away before the response");
            return;
        }
    };
    let reusable = res.keep_alive;
    let framing = res.framing;
    obs.ex.response_head(&ubuf[..res.head_len]);
    ubuf.drain(..res.head_len);
    if no_body {
        if reusable && ubuf.is_empty() {
            upstream::release(&ctx, up, settings.limits.upstream_idle_per_host);
        }
        return;
    }
    match relay_body(
        &mut up, &mut ubuf, &mut send, framing, compressor, &settings,
    )
    .await
    {
        Ok(()) => {
            if reusable && ubuf.is_empty() {
                upstream::release(&ctx, up, settings.limits.upstream_idle_per_host);
            }
        }
        Err(reason) => send.send_reset(reason),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn fields<'a>(
    buf: &'a [u8],
    res: &'a ResponseHead,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
    res.headers
        .iter()
        .map(move |h| (h.name.get(buf), h.value.get(buf)))
}

/// An upstream's fields, minus `ngrok-error-code`: only the edge sets it.
fn upstream_fields<'a>(
    buf: &'a [u8],
    res: &'a ResponseHead,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
    fields(buf, res).filter(|(n, _)| !n.eq_ignore_ascii_case(b"ngrok-error-code"))
}

/// Streams the client's DATA to the upstream. `Err(Some(e))`: answer with
/// `e`; `Err(None)`: the client is gone.
async fn forward_body(
    body: RecvStream,
    up: &mut UpstreamConn,
    chunked: bool,
    settings: &Settings,
) -> Result<(), Option<EdgeError>> {
    let t = &settings.timeouts;
    let mut body = RequestBody::new(body);
    let mut wbuf = Vec::with_capacity(crate::proxy::io::READ_CHUNK + 16);
    loop {
        let data = match body.chunk().await {
            Some(Ok(d)) => d,
            Some(Err(_)) => return Err(None),
            None => break,
        };
        if data.is_empty() {
            continue;
        }
        wbuf.clear();
        if chunked {
            write_chunk_header(data.len(), &mut wbuf);
            wbuf.extend_from_slice(&data);
            wbuf.extend_from_slice(b"\r\n");
        } else {
            wbuf.extend_from_slice(&data);
        }
        let (res, buf) = write_all(&mut up.stream, wbuf, t.upstream_idle).await;
        wbuf = buf;
        if res.is_err() {
            return Err(Some(EdgeError::UPSTREAM_UNREACHABLE));
        }
    }
    if chunked {
        let trailers = body.trailers().await.map_err(|_| None)?;
        wbuf.clear();
        h2_trailers_to_h1(trailers.as_ref(), &mut wbuf);
        let (res, _) = write_all(&mut up.stream, wbuf, t.upstream_idle).await;
        if res.is_err() {
            return Err(Some(EdgeError::UPSTREAM_UNREACHABLE));
        }
    }
    Ok(())
}

/// Relays the upstream's body as DATA frames (chunked bodies decoded; their
/// trailers become HTTP/2 trailers). `Err`: reset the stream with it.
async fn relay_body(
    up: &mut UpstreamConn,
    ubuf: &mut Vec<u8>,
    send: &mut SendStream<Bytes>,
    framing: Framing,
    mut compressor: Option<policy::actions::compress::Compressor>,
    settings: &Settings,
) -> Result<(), Reason> {
    let t = &settings.timeouts;
    let mut dec = BodyDecoder::new(framing);
    let mut trailer_section = Vec::new();
    let mut ranges = Vec::with_capacity(4);
    loop {
        ranges.clear();
        let consumed = {
            let buf: &[u8] = ubuf;
            dec.scan_with(
                buf,
                |r| ranges.push(r),
                |r, line_end| {
                    trailer_section.extend_from_slice(&buf[r]);
                    if line_end {
                        trailer_section.extend_from_slice(b"\r\n");
                    }
                },
            )
            .map_err(|_| Reason::INTERNAL_ERROR)?
        };
        for r in ranges.drain(..) {
            let data = match &mut compressor {
                None => Bytes::copy_from_slice(&ubuf[r]),
                Some(c) => {
                    let mut out = Vec::new();
                    c.push(&ubuf[r], &mut out)
                        .map_err(|_| Reason::INTERNAL_ERROR)?;
                    if out.is_empty() {
                        continue;
                    }
                    Bytes::from(out)
                }
            };
            // The client reset the stream or the connection died: stop.
            send_body(send, data).await.map_err(|_| Reason::CANCEL)?;
        }
        ubuf.drain(..consumed);
        if dec.is_done() {
            break;
        }
        let (res, buf) = read_append(&mut up.stream, std::mem::take(ubuf), t.upstream_idle).await;
        *ubuf = buf;
        match res {
            Ok(0) if dec.ends_at_eof() => break,
            Ok(n) if n > 0 => {}
            Err(IoFail::TimedOut) | Err(IoFail::Io(_)) | Ok(_) => {
                return Err(Reason::INTERNAL_ERROR)
            }
        }
    }
    if let Some(c) = compressor {
        let mut out = Vec::new();
        c.finish(&mut out).map_err(|_| Reason::INTERNAL_ERROR)?;
        if !out.is_empty() {
            send_body(send, Bytes::from(out))
                .await
                .map_err(|_| Reason::CANCEL)?;
        }
    }
    let trailers = if trailer_section.is_empty() {
        None
    } else {
        h1_trailers_to_h2(&trailer_section).ok()
    };
    finish(send, trailers).map_err(|_| Reason::INTERNAL_ERROR)
}

/// Reads a whole request body (for a policy that verifies it), up to
/// `limit` bytes.
async fn buffer_body(recv: Option<RecvStream>, limit: usize) -> Result<Vec<u8>, EdgeError> {
    let mut out = Vec::new();
    let Some(recv) = recv else {
        return Ok(out);
    };
    let mut body = RequestBody::new(recv);
    while let Some(chunk) = body.chunk().await {
        let data =
            chunk.map_err(|_| EdgeError::protocol(crate::http1::ParseError::Syntax("body")))?;
        if out.len() + data.len() > limit {
            return Err(policy::reply::codes::BODY_TOO_LARGE);
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// Sends a reply the policy wrote as HTTP/1.1 bytes.
async fn send_raw_reply(respond: &mut SendResponse<Bytes>, obs: &mut StreamObs, raw: &[u8]) {
    obs.ex.own_reply(raw);
    match memchr::memmem::find(raw, b"\r\n\r\n") {
        Some(i) => send_h1_response(respond, &raw[..i + 4], &raw[i + 4..]).await,
        None => respond.send_reset(Reason::INTERNAL_ERROR),
    }
}

/// Sends a complete HTTP/1.1 response made by the edge (`raw` head) as an
/// h2 response.
async fn send_h1_response(respond: &mut SendResponse<Bytes>, raw: &[u8], body: &[u8]) {
    let mut head = ResponseHead::new();
    if !matches!(head.parse(raw, raw.len() + 1, false), Ok(true)) {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    }
    let Ok(response) = response_to_h2(head.status, fields(raw, &head), false) else {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    };
    if let Ok(mut send) = respond.send_response(response, body.is_empty()) {
        if !body.is_empty()
            && send_body(&mut send, Bytes::copy_from_slice(body))
                .await
                .is_ok()
        {
            let _ = finish(&mut send, None);
        }
    }
}

/// An edge error page as an h2 response (small: sent without waiting for
/// flow-control capacity beyond h2's initial window).
fn send_error(
    respond: &mut SendResponse<Bytes>,
    obs: &mut StreamObs,
    err: EdgeError,
    detail: &str,
    json: bool,
) {
    let mut raw = Vec::with_capacity(512);
    error_page::render(err, detail, json, false, &mut raw);
    obs.ex.error(err.code);
    obs.ex.own_reply(&raw);
    let Some(split) = memchr::memmem::find(&raw, b"\r\n\r\n") else {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    };
    let (head_bytes, body) = raw.split_at(split + 4);
    let mut head = ResponseHead::new();
    if !matches!(
        head.parse(head_bytes, head_bytes.len() + 1, false),
        Ok(true)
    ) {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    }
    let Ok(response) = response_to_h2(head.status, fields(head_bytes, &head), false) else {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    };
    if let Ok(mut send) = respond.send_response(response, body.is_empty()) {
        if !body.is_empty() {
            let _ = send.send_data(Bytes::copy_from_slice(body), true);
        }
    }
}

/// A stream's metrics/event/capture record, finished when the stream
/// task ends (whichever return it takes). HTTP/2 body sizes are not
/// counted yet.
struct StreamObs {
    ctx: Rc<WorkerCtx>,
    ex: crate::observe::Exchange,
    meta: crate::observe::ConnMeta,
}

impl StreamObs {
    fn new(ctx: Rc<WorkerCtx>, peer: std::net::SocketAddr) -> Self {
        let meta = crate::observe::ConnMeta::new(&ctx.obs, peer, "https", "HTTP/2.0");
        StreamObs {
            ctx,
            ex: crate::observe::Exchange::new(),
            meta,
        }
    }
}

impl Drop for StreamObs {
    fn drop(&mut self) {
        self.ctx.obs.finish(&mut self.ex, &mut self.meta);
    }
}
