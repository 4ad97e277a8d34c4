//! Drives one client connection: a loop of request → response exchanges
//! (keep-alive and pipelining; responses in order by construction), each
//! going through the phases route → policy → upstream → relay.
//!
//! Buffers are owned and reused for the connection's life: `rbuf` holds
//! client bytes (the head is parsed in place there), `ubuf` upstream
//! bytes, `wbuf` the heads the edge writes. Body bytes are read into
//! `rbuf`/`ubuf` and written out of the same buffer: never copied in user
//! space except the small piece that arrives together with a head.
//!
//! This module must never block the worker, hold a `RefCell` borrow
//! across an `.await`, or panic on anything a peer sends.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split, Splitable};
use tracing::debug;

use super::error_page::{self, EdgeError};
use super::headers::{
    encode_request_head_edited, encode_response_head, encode_response_head_edited, ClientConn,
    ForwardInfo,
};
use super::io::{read_append, write_all, write_prefix, IoFail};
use super::upstream::{self, ClientInfo, Target};
use super::upstream_stream::UpStream;
use crate::config::Settings;
use crate::http1::{BodyDecoder, Framing, Method, ParseError, RequestHead, ResponseHead};
use crate::policy::{self, RequestOutcome, ResponseOutcome};
use crate::route::{normalize_host, Endpoint, RouteTable, Scheme};
use crate::runtime::snapshot::Snapshot;
use crate::runtime::worker::WorkerCtx;
use crate::tls::acme::CHALLENGE_PATH_PREFIX;

/// Request bodies up to this size are read and discarded when the edge
/// answers by itself, so the connection can be kept; larger ones close it.
const DISCARD_LIMIT: u64 = 1024 * 1024;

/// How long a closing connection keeps draining unread client bytes, so
/// that closing with unread data does not reset away our response.
const LINGER: Duration = Duration::from_secs(2);

/// When the drain starts, how long a connection that has not sent its
/// first request yet still gets to send it: it was accepted before the
/// edge stopped accepting (an upgrade's hand-off, a stop), and its client
/// would not retry a request on a connection it just opened.
const FIRST_REQUEST_ON_DRAIN: Duration = Duration::from_secs(1);

struct Conn<S> {
    client: S,
    scheme: Scheme,
    peer: SocketAddr,
    peer_ip: String,
    rbuf: Vec<u8>,
    ubuf: Vec<u8>,
    wbuf: Vec<u8>,
    req: RequestHead,
    res: ResponseHead,
    host: String,
    /// The client prefers JSON error pages (decided while the head's spans
    /// are still valid).
    json: bool,
    /// The head (and maybe part of the body) has left `rbuf`: its spans are
    /// stale, and an error reply must close the connection.
    head_consumed: bool,
    ctx: Rc<WorkerCtx>,
    /// Traffic policy state of the current exchange.
    policy: policy::Exchange,
    conn_info: policy::ConnInfo,
    /// The endpoint whose on_tcp_connect phase this connection passed.
    tcp_passed: Option<Arc<Endpoint>>,
    /// Metrics, event and capture record of the current exchange.
    ob: crate::observe::Exchange,
    meta: crate::observe::ConnMeta,
    /// No request head read yet on this connection.
    fresh: bool,
}

/// What the request policy left to do.
enum PolicyStep {
    /// Forward; to this endpoint's upstream after a forward-internal.
    Forward(Option<Arc<Endpoint>>),
    Done(Next),
}

/// What happens to the client connection after an exchange.
#[derive(Debug)]
enum Next {
    KeepAlive,
    /// Close; unread client bytes may remain, so linger first.
    Close,
    /// The connection is unusable (peer gone, or mid-message failure).
    Abort,
    /// A 101 was relayed: pipe bytes between client and this upstream.
    Upgrade(UpStream),
}

/// Serves a client connection until it closes. `scheme` is the
/// listener's: it picks the route table and `X-Forwarded-Proto`.
pub async fn serve<S>(client: S, peer: SocketAddr, ctx: Rc<WorkerCtx>, scheme: Scheme)
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let meta = crate::observe::ConnMeta::new(&ctx.obs, peer, scheme.as_str(), "HTTP/1.1");
    let mut conn = Conn {
        client,
        scheme,
        peer,
        peer_ip: peer.ip().to_canonical().to_string(),
        rbuf: Vec::with_capacity(8 * 1024),
        ubuf: Vec::new(),
        wbuf: Vec::with_capacity(4 * 1024),
        req: RequestHead::new(),
        res: ResponseHead::new(),
        host: String::new(),
        json: false,
        head_consumed: false,
        ctx,
        policy: policy::Exchange::new(),
        conn_info: policy::ConnInfo {
            client: Some(peer),
            server_port: 0,
            tls: None,
        },
        tcp_passed: None,
        ob: crate::observe::Exchange::new(),
        meta,
        fresh: true,
    };
    loop {
        let snap = conn.ctx.snapshots.get();
        let next = match conn.read_head(&snap.settings).await {
            Ok(true) => {
                let head = &conn.rbuf[..conn.req.head_len];
                conn.ob.begin(&conn.ctx.obs, &mut conn.meta, head);
                conn.exchange(&snap).await
            }
            Ok(false) => Next::Abort,
            Err(err) => {
                conn.ob.begin(&conn.ctx.obs, &mut conn.meta, &[]);
                conn.reply_error(err, "", false, &snap.settings).await
            }
        };
        conn.ctx.obs.finish(&mut conn.ob, &mut conn.meta);
        if !matches!(next, Next::KeepAlive) || conn.ctx.drain.is_fired() {
            conn.ctx.obs.conn_closed(&conn.meta);
        }
        match next {
            Next::KeepAlive if !conn.ctx.drain.is_fired() => continue,
            Next::KeepAlive | Next::Close => {
                conn.linger().await;
                return;
            }
            Next::Abort => return,
            Next::Upgrade(up) => {
                let idle = snap
                    .settings
                    .timeouts
                    .client_idle
                    .max(snap.settings.timeouts.upstream_idle);
                let Conn { client, .. } = conn;
                pipe(client, up, idle).await;
                return;
            }
        }
    }
}

impl<S> Conn<S>
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    /// Reads until a complete request head is in `rbuf`. `Ok(false)`: the
    /// client closed, idled out, or the worker is draining.
    async fn read_head(&mut self, settings: &Settings) -> Result<bool, EdgeError> {
        self.req.reset();
        let max = settings.limits.max_head_bytes;
        let mut started = None;
        loop {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            let skip = self
                .rbuf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if skip > 0 {
                self.rbuf.drain(..skip);
            }
            if !self.rbuf.is_empty() {
                started.get_or_insert_with(Instant::now);
                match self.req.parse(&self.rbuf, max) {
                    Ok(true) => {
                        self.fresh = false;
                        return Ok(true);
                    }
                    Ok(false) => {}
                    Err(e) => return Err(EdgeError::protocol(e)),
                }
            }
            let limit = match started {
                None => settings.timeouts.client_idle,
                Some(t0) => {
                    let left = settings.timeouts.header_read.saturating_sub(t0.elapsed());
                    if left.is_zero() {
                        return Err(EdgeError::REQUEST_TIMEOUT);
                    }
                    left
                }
            };
            let buf = std::mem::take(&mut self.rbuf);
            let (res, buf) = if started.is_none() {
                // Idle between requests: also wake up for a drain (a
                // fresh connection a little later).
                let fresh = self.fresh;
                let wait = self.ctx.drain.wait();
                let drain = async move {
                    wait.await;
                    if fresh {
                        monoio::time::sleep(FIRST_REQUEST_ON_DRAIN).await;
                    }
                };
                monoio::select! {
                    r = read_append(&mut self.client, buf, limit) => r,
                    _ = drain => return Ok(false),
                }
            } else {
                read_append(&mut self.client, buf, limit).await
            };
            self.rbuf = buf;
            match res {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(IoFail::TimedOut) if started.is_some() => {
                    return Err(EdgeError::REQUEST_TIMEOUT)
                }
                Err(_) => return Ok(false),
            }
        }
    }

    /// One request/response exchange for the head now in `rbuf`.
    async fn exchange(&mut self, snap: &Arc<Snapshot>) -> Next {
        let settings = &snap.settings;
        self.json = error_page::wants_json(&self.rbuf, &self.req);
        self.head_consumed = false;
        if self.req.method() == Method::Connect {
            return self
                .reply_error(EdgeError::METHOD_NOT_ALLOWED, "", true, settings)
                .await;
        }
        let authority = self.req.authority.get(&self.rbuf);
        if !normalize_host(authority, &mut self.host) {
            return self
                .reply_error(
                    EdgeError::protocol(ParseError::InvalidHost),
                    "",
                    true,
                    settings,
                )
                .await;
        }
        // RFC 8555 §8.3: HTTP-01 validation, only for hosts whose
        // certificates come from ACME (seed, "Well Known URIs").
        if self.scheme == Scheme::Http
            && self
                .req
                .origin_form
                .get(&self.rbuf)
                .starts_with(CHALLENGE_PATH_PREFIX.as_bytes())
            && snap.acme_domains.contains(&self.host)
        {
            return self.answer_acme_challenge(settings).await;
        }
        let routes = match self.scheme {
            Scheme::Http => &snap.http_routes,
            Scheme::Https => &snap.https_routes,
        };
        let endpoint = loop {
            let tunnels = self.ctx.tunnels.table();
            let found = RouteTable::lookup_either(routes, tunnels.routes(self.scheme), &self.host)
                .filter(|e| !policy::pipeline::is_internal(e))
                .cloned();
            // Just upgraded: the host's agent may be reconnecting.
            if found.is_some()
                || !self
                    .ctx
                    .tunnels
                    .wait_for_handoff(self.scheme, &self.host)
                    .await
            {
                break found;
            }
        };
        let Some(endpoint) = endpoint else {
            let detail = format!("No endpoint is online for {}.", self.host);
            return self
                .reply_error(EdgeError::NO_ENDPOINT, &detail, true, settings)
                .await;
        };
        if self.ob.is_active() {
            let port = authority_port(self.req.authority.get(&self.rbuf), self.scheme);
            self.ob.endpoint(&self.ctx.obs, &endpoint, port);
            self.meta.server_port = port;
            self.meta.server_name.clone_from(&self.host);
        }
        if let Some(up) = self.req.upgrade {
            let wants_ws = up.get(&self.rbuf).eq_ignore_ascii_case(b"websocket");
            if wants_ws && !self.req.connection_upgrade {
                return self
                    .reply_error(
                        EdgeError::WEBSOCKET_NO_CONNECTION_UPGRADE,
                        "",
                        true,
                        settings,
                    )
                    .await;
            }
        }
        // Phase: on_http_request.
        self.policy.reset();
        let mut target = None;
        if endpoint.policy.is_some() {
            match self.request_policy(&endpoint, snap).await {
                PolicyStep::Forward(t) => target = t,
                PolicyStep::Done(next) => return next,
            }
        }
        let chosen = target.as_ref().unwrap_or(&endpoint);
        match Target::of(chosen) {
            Some(t) => self.forward(&endpoint, t, settings).await,
            None => {
                self.reply_error(EdgeError::NO_ENDPOINT, "", true, settings)
                    .await
            }
        }
    }

    /// Runs the endpoint's on_tcp_connect (once per connection and
    /// endpoint) and on_http_request phases, buffering the request body
    /// first when an action needs it.
    async fn request_policy(
        &mut self,
        endpoint: &Arc<Endpoint>,
        snap: &Arc<Snapshot>,
    ) -> PolicyStep {
        let settings = &snap.settings;
        let Some(compiled) = &endpoint.policy else {
            return PolicyStep::Forward(None);
        };
        self.conn_info.server_port =
            authority_port(self.req.authority.get(&self.rbuf), self.scheme);
        if compiled.has_tcp_connect()
            && !self
                .tcp_passed
                .as_ref()
                .is_some_and(|e| Arc::ptr_eq(e, endpoint))
        {
            if !policy::on_tcp_connect(endpoint, &self.conn_info, &mut self.policy).await {
                debug!(endpoint = %endpoint.url, "on_tcp_connect closed the connection");
                return PolicyStep::Done(Next::Abort);
            }
            self.tcp_passed = Some(endpoint.clone());
            self.policy.reset();
        }
        if !compiled.has_http_request() && !compiled.has_http_response() {
            return PolicyStep::Forward(None);
        }
        let body = match compiled.body_limit() {
            Some(limit) => match self.buffer_body(limit, settings).await {
                Ok(b) => Some(b),
                Err(next) => return PolicyStep::Done(next),
            },
            None => None,
        };
        let style = policy::ReplyStyle {
            json: self.json,
            close: !self.can_keep_after_own_reply(),
            head_request: self.req.method() == Method::Head,
        };
        self.wbuf.clear();
        let info = policy::RequestInfo {
            buf: &self.rbuf,
            head: &self.req,
            scheme: self.scheme,
            version: "HTTP/1.1",
            host: &self.host,
            conn: &self.conn_info,
        };
        let body_bytes = body.as_ref().map(|b| b.bytes(&self.rbuf));
        let lookup = |url: &str| policy::pipeline::internal_lookup(snap, url);
        let outcome = policy::on_http_request(
            endpoint,
            &info,
            body_bytes,
            &lookup,
            &mut self.policy,
            style,
            &mut self.wbuf,
        )
        .await;
        match outcome {
            RequestOutcome::Forward(t) => PolicyStep::Forward(t),
            RequestOutcome::Replied => {
                PolicyStep::Done(self.finish_own_reply(style.close, settings).await)
            }
            RequestOutcome::Close => PolicyStep::Done(Next::Abort),
        }
    }

    /// Reads the whole request body into `rbuf` (after the head), up to
    /// `limit` decoded bytes, for actions that verify it. The bytes stay
    /// where they are, so forwarding sends them unchanged.
    async fn buffer_body(
        &mut self,
        limit: usize,
        settings: &Settings,
    ) -> Result<BufferedBody, Next> {
        if self.req.expect_continue && self.req.framing != Framing::None {
            let (res, _) = write_all(
                &mut self.client,
                b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                settings.timeouts.client_idle,
            )
            .await;
            if res.is_err() {
                return Err(Next::Abort);
            }
            self.req.expect_continue = false;
        }
        let mut dec = BodyDecoder::new(self.req.framing);
        let mut scanned = self.req.head_len;
        let mut decoded = Vec::new();
        let chunked = self.req.framing == Framing::Chunked;
        loop {
            let mut ranges = Vec::new();
            let n = match dec.scan_with(&self.rbuf[scanned..], |r| ranges.push(r), |_, _| {}) {
                Ok(n) => n,
                Err(e) => {
                    return Err(self
                        .reply_error(EdgeError::protocol(e), "", true, settings)
                        .await)
                }
            };
            if chunked {
                for r in ranges {
                    decoded.extend_from_slice(&self.rbuf[scanned + r.start..scanned + r.end]);
                }
            }
            scanned += n;
            let size = if chunked {
                decoded.len()
            } else {
                scanned - self.req.head_len
            };
            if size > limit {
                return Err(self
                    .reply_error(policy::reply::codes::BODY_TOO_LARGE, "", true, settings)
                    .await);
            }
            if dec.is_done() {
                return Ok(if chunked {
                    BufferedBody::Decoded(decoded)
                } else {
                    BufferedBody::InPlace(self.req.head_len..scanned)
                });
            }
            let buf = std::mem::take(&mut self.rbuf);
            let (res, buf) =
                read_append(&mut self.client, buf, settings.timeouts.client_idle).await;
            self.rbuf = buf;
            match res {
                Ok(n) if n > 0 => {}
                _ => return Err(Next::Abort),
            }
        }
    }

    /// Answers an ACME HTTP-01 challenge from the pending set.
    async fn answer_acme_challenge(&mut self, settings: &Settings) -> Next {
        let path = String::from_utf8_lossy(self.req.origin_form.get(&self.rbuf)).into_owned();
        let Some(key_auth) = self.ctx.challenges.for_path(&path) else {
            let detail = "No such ACME challenge is pending.";
            return self
                .reply_error(EdgeError::NO_ENDPOINT, detail, true, settings)
                .await;
        };
        let close = !self.can_keep_after_own_reply();
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: no-store\r\ncontent-length: ");
        self.wbuf
            .extend_from_slice(itoa::Buffer::new().format(key_auth.len()).as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
        if close {
            self.wbuf.extend_from_slice(b"connection: close\r\n");
        }
        self.wbuf.extend_from_slice(b"\r\n");
        if self.req.method() != Method::Head {
            self.wbuf.extend_from_slice(key_auth.as_bytes());
        }
        self.finish_own_reply(close, settings).await
    }

    /// Whether the connection survives a reply the edge makes without
    /// reading the request body.
    fn can_keep_after_own_reply(&self) -> bool {
        self.req.keep_alive
            && !self.ctx.drain.is_fired()
            && !self.req.is_upgrade()
            && match self.req.framing {
                Framing::None => true,
                Framing::Length(n) => n <= DISCARD_LIMIT && !self.req.expect_continue,
                Framing::Chunked | Framing::CloseDelimited => false,
            }
    }

    /// Writes `wbuf` (a reply made by the edge), then discards the request
    /// body when the connection is kept.
    async fn finish_own_reply(&mut self, close: bool, settings: &Settings) -> Next {
        self.ob.own_reply(&self.wbuf);
        let wbuf = std::mem::take(&mut self.wbuf);
        let (res, wbuf) = write_all(&mut self.client, wbuf, settings.timeouts.client_idle).await;
        self.wbuf = wbuf;
        if res.is_err() {
            return Next::Abort;
        }
        if close || self.head_consumed {
            return Next::Close;
        }
        self.rbuf.drain(..self.req.head_len);
        self.head_consumed = true;
        let mut body = BodyDecoder::new(self.req.framing);
        loop {
            match body.scan(&self.rbuf) {
                Ok(n) => {
                    self.rbuf.drain(..n);
                }
                Err(_) => return Next::Close,
            }
            if body.is_done() {
                return Next::KeepAlive;
            }
            let buf = std::mem::take(&mut self.rbuf);
            let (res, buf) =
                read_append(&mut self.client, buf, settings.timeouts.header_read).await;
            self.rbuf = buf;
            match res {
                Ok(n) if n > 0 => {}
                _ => return Next::Abort,
            }
        }
    }

    /// Answers with an edge-made error page.
    async fn reply_error(
        &mut self,
        err: EdgeError,
        detail: &str,
        parsed: bool,
        settings: &Settings,
    ) -> Next {
        let json = parsed && self.json;
        let close = !parsed || self.head_consumed || !self.can_keep_after_own_reply();
        self.wbuf.clear();
        error_page::render(err, detail, json, close, &mut self.wbuf);
        debug!(status = err.status, code = err.code, "edge error reply");
        self.ob.error(err.code);
        if !parsed {
            self.ob.own_reply(&self.wbuf);
            // Nothing after a malformed head can be trusted: drop it.
            self.rbuf.clear();
            let wbuf = std::mem::take(&mut self.wbuf);
            let (res, wbuf) =
                write_all(&mut self.client, wbuf, settings.timeouts.client_idle).await;
            self.wbuf = wbuf;
            return if res.is_ok() {
                Next::Close
            } else {
                Next::Abort
            };
        }
        self.finish_own_reply(close, settings).await
    }

    /// Reads and drops what the client still sends, for a short while,
    /// after our last response; then the connection closes.
    async fn linger(&mut self) {
        let _ = self.client.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut drained = 0usize;
        while drained < DISCARD_LIMIT as usize {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut buf = std::mem::take(&mut self.rbuf);
            buf.clear();
            let (res, buf) = read_append(&mut self.client, buf, left).await;
            self.rbuf = buf;
            match res {
                Ok(n) if n > 0 => drained += n,
                _ => return,
            }
        }
    }

    /// Proxies the request to a direct upstream and relays the response.
    async fn forward(
        &mut self,
        endpoint: &Endpoint,
        target: Target<'_>,
        settings: &Settings,
    ) -> Next {
        let t = &settings.timeouts;
        let head_request = self.req.method() == Method::Head;
        let retryable = self.req.method().is_idempotent() && self.req.framing == Framing::None;

        // Request head for the upstream, with whatever body bytes came with
        // the client's head (one write for small requests).
        self.wbuf.clear();
        let info = ForwardInfo {
            client_ip: &self.peer_ip,
            proto: self.scheme.as_str(),
        };
        encode_request_head_edited(
            &self.rbuf,
            &self.req,
            &info,
            Some(&self.policy.req),
            &mut self.wbuf,
        );
        let upgrade = self.req.is_upgrade();
        let expect_continue = self.req.expect_continue;
        let client_keep_alive = self.req.keep_alive;
        self.rbuf.drain(..self.req.head_len);
        self.head_consumed = true;
        let mut body = BodyDecoder::new(self.req.framing);
        match body.scan(&self.rbuf) {
            Ok(n) => {
                self.ob.req_body(&self.rbuf[..n]);
                self.wbuf.extend_from_slice(&self.rbuf[..n]);
                self.rbuf.drain(..n);
            }
            Err(e) => {
                return self
                    .reply_error(EdgeError::protocol(e), "", false, settings)
                    .await
            }
        }

        let complete = body.is_done();
        let client = ClientInfo {
            addr: self.peer,
            proto: endpoint.scheme.as_str(),
        };
        let mut up = match upstream::send_head(
            &self.ctx,
            target,
            &client,
            &mut self.wbuf,
            complete,
            retryable,
            &mut self.ubuf,
            t,
        )
        .await
        {
            Ok(up) => up,
            Err(e) => return self.reply_error(e, &endpoint.url, true, settings).await,
        };

        if !body.is_done() {
            if expect_continue && self.rbuf.is_empty() {
                let (res, _) = write_all(
                    &mut self.client,
                    b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                    t.client_idle,
                )
                .await;
                if res.is_err() {
                    return Next::Abort;
                }
            }
            self.ubuf.clear();
            if let Err(next) = self
                .stream_request_body(&mut up.stream, &mut body, settings)
                .await
            {
                return next;
            }
        }

        // Response head (skipping interim 1xx responses, relayed as they come).
        let close_client = loop {
            if let Err(e) = upstream::read_response_head(
                &mut up,
                &mut self.ubuf,
                &mut self.res,
                settings.limits.max_head_bytes,
                head_request,
                t,
            )
            .await
            {
                return self.reply_error(e, "", true, settings).await;
            }
            let status = self.res.status;
            if status == 101 {
                if !upgrade {
                    return self
                        .reply_error(EdgeError::UPSTREAM_INVALID, "", true, settings)
                        .await;
                }
                return self.pipe_upgrade(up.stream, settings).await;
            }
            if self.res.is_informational() {
                self.wbuf.clear();
                encode_response_head(&self.ubuf, &self.res, ClientConn::KeepAlive, &mut self.wbuf);
                self.ubuf.drain(..self.res.head_len);
                let wbuf = std::mem::take(&mut self.wbuf);
                let (res, wbuf) = write_all(&mut self.client, wbuf, t.client_idle).await;
                self.wbuf = wbuf;
                if res.is_err() {
                    return Next::Abort;
                }
                continue;
            }
            break !client_keep_alive
                || upgrade
                || self.res.framing == Framing::CloseDelimited
                || self.ctx.drain.is_fired();
        };

        // Final response: head plus the body bytes that came with it.
        self.wbuf.clear();
        if endpoint.policy.is_some() {
            // Phase: on_http_response (a reply replaces the upstream's,
            // whose connection is then dropped, not reused).
            if let Some(next) = self
                .response_policy(endpoint, head_request, close_client, settings)
                .await
            {
                return next;
            }
        }
        let mode = if close_client {
            ClientConn::Close
        } else {
            ClientConn::KeepAlive
        };
        encode_response_head_edited(
            &self.ubuf,
            &self.res,
            mode,
            Some(&self.policy.res),
            &mut self.wbuf,
        );
        self.ob.response_head(&self.wbuf);
        self.ubuf.drain(..self.res.head_len);
        if let Some(enc) = self.policy.res.compress {
            return self.relay_compressed(up, enc, close_client, settings).await;
        }
        let mut rbody = BodyDecoder::new(self.res.framing);
        match rbody.scan(&self.ubuf) {
            Ok(n) => {
                self.ob.res_body(&self.ubuf[..n]);
                self.wbuf.extend_from_slice(&self.ubuf[..n]);
                self.ubuf.drain(..n);
            }
            Err(_) => {
                return self
                    .reply_error(EdgeError::UPSTREAM_INVALID, "", true, settings)
                    .await
            }
        }
        let upstream_reusable = self.res.keep_alive;
        let wbuf = std::mem::take(&mut self.wbuf);
        let (res, wbuf) = write_all(&mut self.client, wbuf, t.client_idle).await;
        self.wbuf = wbuf;
        if res.is_err() {
            return Next::Abort;
        }
        while !rbody.is_done() {
            let ubuf = std::mem::take(&mut self.ubuf);
            let (res, ubuf) = read_append(&mut up.stream, ubuf, t.upstream_idle).await;
            self.ubuf = ubuf;
            match res {
                Ok(0) if rbody.ends_at_eof() => break,
                Ok(n) if n > 0 => {}
                // Truncated or timed out mid-body: the client can only
                // learn of it by the connection closing.
                _ => return Next::Abort,
            }
            let n = match rbody.scan(&self.ubuf) {
                Ok(n) => n,
                Err(_) => return Next::Abort,
            };
            self.ob.res_body(&self.ubuf[..n]);
            let ubuf = std::mem::take(&mut self.ubuf);
            let (res, mut ubuf) = write_prefix(&mut self.client, ubuf, n, t.client_idle).await;
            if res.is_err() {
                return Next::Abort;
            }
            ubuf.drain(..n);
            self.ubuf = ubuf;
        }
        // Bytes after the response's end mean the upstream is confused.
        if upstream_reusable && rbody.is_done() && self.ubuf.is_empty() {
            upstream::release(&self.ctx, up, settings.limits.upstream_idle_per_host);
        }
        if close_client {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Runs the response phase; `Some` when the policy answered instead
    /// of the upstream (the reply is written and the exchange is over).
    async fn response_policy(
        &mut self,
        endpoint: &Endpoint,
        head_request: bool,
        close_client: bool,
        settings: &Settings,
    ) -> Option<Next> {
        let style = policy::ReplyStyle {
            json: self.json,
            close: close_client,
            head_request,
        };
        let info = policy::ResponseInfo {
            buf: &self.ubuf,
            head: &self.res,
        };
        let outcome = policy::on_http_response(
            endpoint,
            &info,
            &self.conn_info,
            &mut self.policy,
            style,
            &mut self.wbuf,
        );
        if outcome == ResponseOutcome::Relay {
            return None;
        }
        self.ob.own_reply(&self.wbuf);
        let wbuf = std::mem::take(&mut self.wbuf);
        let (res, wbuf) = write_all(&mut self.client, wbuf, settings.timeouts.client_idle).await;
        self.wbuf = wbuf;
        Some(match res {
            Err(_) => Next::Abort,
            Ok(()) if close_client => Next::Close,
            Ok(()) => Next::KeepAlive,
        })
    }

    /// Relays the upstream body compressed (compress-response): decoded
    /// payload in, chunked compressed bytes out, flushed per read. The head
    /// is already in `wbuf`.
    async fn relay_compressed(
        &mut self,
        mut up: upstream::UpstreamConn,
        enc: policy::Encoding,
        close_client: bool,
        settings: &Settings,
    ) -> Next {
        let t = &settings.timeouts;
        let Ok(mut comp) = policy::actions::compress::Compressor::new(enc) else {
            return Next::Abort;
        };
        let mut rbody = BodyDecoder::new(self.res.framing);
        let mut raw = Vec::new();
        loop {
            let mut ranges = Vec::new();
            let n = match rbody.scan_with(&self.ubuf, |r| ranges.push(r), |_, _| {}) {
                Ok(n) => n,
                Err(_) => return Next::Abort,
            };
            raw.clear();
            for r in ranges {
                if comp.push(&self.ubuf[r], &mut raw).is_err() {
                    return Next::Abort;
                }
            }
            self.ubuf.drain(..n);
            policy::actions::compress::push_chunk(&raw, &mut self.wbuf);
            let eof = if rbody.is_done() {
                true
            } else {
                if !self.wbuf.is_empty() {
                    let wbuf = std::mem::take(&mut self.wbuf);
                    let (res, mut wbuf) = write_all(&mut self.client, wbuf, t.client_idle).await;
                    if res.is_err() {
                        return Next::Abort;
                    }
                    wbuf.clear();
                    self.wbuf = wbuf;
                }
                let ubuf = std::mem::take(&mut self.ubuf);
                let (res, ubuf) = read_append(&mut up.stream, ubuf, t.upstream_idle).await;
                self.ubuf = ubuf;
                match res {
                    Ok(0) if rbody.ends_at_eof() => true,
                    Ok(n) if n > 0 => false,
                    _ => return Next::Abort,
                }
            };
            if eof {
                break;
            }
        }
        raw.clear();
        if comp.finish(&mut raw).is_err() {
            return Next::Abort;
        }
        policy::actions::compress::push_chunk(&raw, &mut self.wbuf);
        self.wbuf.extend_from_slice(b"0\r\n\r\n");
        let wbuf = std::mem::take(&mut self.wbuf);
        let (res, wbuf) = write_all(&mut self.client, wbuf, t.client_idle).await;
        self.wbuf = wbuf;
        if res.is_err() {
            return Next::Abort;
        }
        if self.res.keep_alive && rbody.is_done() && self.ubuf.is_empty() {
            upstream::release(&self.ctx, up, settings.limits.upstream_idle_per_host);
        }
        if close_client {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// An upstream connection: pooled if one is idle, else a new one.
    /// Streams the rest of a request body from the client to the upstream.
    async fn stream_request_body(
        &mut self,
        up: &mut UpStream,
        body: &mut BodyDecoder,
        settings: &Settings,
    ) -> Result<(), Next> {
        let t = &settings.timeouts;
        while !body.is_done() {
            if self.rbuf.is_empty() {
                let buf = std::mem::take(&mut self.rbuf);
                let (res, buf) = read_append(&mut self.client, buf, t.client_idle).await;
                self.rbuf = buf;
                match res {
                    Ok(n) if n > 0 => {}
                    _ => return Err(Next::Abort),
                }
            }
            let n = match body.scan(&self.rbuf) {
                Ok(n) => n,
                Err(e) => {
                    return Err(self
                        .reply_error(EdgeError::protocol(e), "", false, settings)
                        .await)
                }
            };
            self.ob.req_body(&self.rbuf[..n]);
            let buf = std::mem::take(&mut self.rbuf);
            let (res, mut buf) = write_prefix(up, buf, n, t.upstream_idle).await;
            if res.is_err() {
                // The upstream went away mid-body: it may have answered
                // early; otherwise report it.
                self.rbuf = Vec::new();
                return Err(self
                    .reply_error(EdgeError::UPSTREAM_UNREACHABLE, "", true, settings)
                    .await);
            }
            buf.drain(..n);
            self.rbuf = buf;
        }
        Ok(())
    }

    /// After a 101: relay the upstream's head, then bytes both ways until
    /// either side closes.
    async fn pipe_upgrade(&mut self, mut up: UpStream, settings: &Settings) -> Next {
        let t = &settings.timeouts;
        self.wbuf.clear();
        encode_response_head(&self.ubuf, &self.res, ClientConn::Upgrade, &mut self.wbuf);
        self.ob.response_head(&self.wbuf);
        self.ubuf.drain(..self.res.head_len);
        self.wbuf.extend_from_slice(&self.ubuf);
        self.ubuf.clear();
        let wbuf = std::mem::take(&mut self.wbuf);
        let (res, _) = write_all(&mut self.client, wbuf, t.client_idle).await;
        if res.is_err() {
            return Next::Abort;
        }
        if !self.rbuf.is_empty() {
            let early = std::mem::take(&mut self.rbuf);
            let (res, _) = write_all(&mut up, early, t.upstream_idle).await;
            if res.is_err() {
                return Next::Abort;
            }
        }
        Next::Upgrade(up)
    }
}

/// Relays bytes both ways between an upgraded client and its upstream
/// until both directions have closed, or nothing moved for `idle`.
async fn pipe<S>(client: S, up: UpStream, idle: Duration)
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let last = std::cell::Cell::new(Instant::now());
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    let both = async {
        monoio::join!(
            super::io::copy_until_eof(&mut cr, &mut uw, &last),
            super::io::copy_until_eof(&mut ur, &mut cw, &last)
        );
    };
    let watchdog = async {
        loop {
            let due = last.get() + idle;
            if Instant::now() >= due {
                return;
            }
            monoio::time::sleep_until(due.into()).await;
        }
    };
    monoio::select! {
        _ = both => {}
        _ = watchdog => debug!("upgraded connection idle; closing"),
    }
}

/// A request body buffered for the policy.
enum BufferedBody {
    /// The body bytes in `rbuf` (Content-Length framing).
    InPlace(std::ops::Range<usize>),
    /// A chunked body, decoded (the raw chunks stay in `rbuf`).
    Decoded(Vec<u8>),
}

impl BufferedBody {
    fn bytes<'a>(&'a self, rbuf: &'a [u8]) -> &'a [u8] {
        match self {
            BufferedBody::InPlace(r) => rbuf.get(r.clone()).unwrap_or_default(),
            BufferedBody::Decoded(v) => v,
        }
    }
}

/// The port in a request's authority, or the scheme's default.
fn authority_port(authority: &[u8], scheme: Scheme) -> u16 {
    let default = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    match memchr::memrchr(b':', authority) {
        Some(i) if !authority[i..].contains(&b']') => std::str::from_utf8(&authority[i + 1..])
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default),
        _ => default,
    }
}
