//! One agent connection at the edge, after TLS: a muxado session in the
//! server role, the typed streams the agent opens (heartbeat, Auth, Bind,
//! Unbind, and the calls we refuse), and the session's end (EOF, heartbeat
//! silence, drain). Proxy streams are opened by the request path through
//! `WorkerTunnels`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split};
use tracing::{debug, info, warn};

use super::messages::{
    self, encode, stream_type, Auth, Bind, ErrorResp, LabelResp, SrvInfoResp, Unbind,
};
use super::muxado::{self, ErrorCode, Role, Session, Stream};
use super::registry::SessionId;
use super::stream_io::{read_exact, read_json, ReadError};
use crate::runtime::worker::WorkerCtx;

/// A typed stream must name its type this soon after opening.
const TYPE_TIMEOUT: Duration = Duration::from_secs(30);
/// An RPC request must arrive complete this soon.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Without Auth this long after connecting, the session is closed.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat defaults when the agent's Auth does not say (spec §4).
const DEFAULT_BEAT: Duration = Duration::from_secs(10);
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(15);
/// On a drain, how long GOAWAY gets to reach the agent before the
/// connection closes (the agent's own close is not awaited).
const DRAIN_CLOSE_WAIT: Duration = Duration::from_millis(200);

/// Session-wide state shared by its stream tasks.
struct SessionState {
    id: SessionId,
    mux: Session,
    last_beat: Cell<Option<Instant>>,
    /// Interval + tolerance from Auth.
    silence_limit: Cell<Duration>,
}

/// Serves an agent connection until it ends.
pub async fn serve<IO>(io: IO, peer: SocketAddr, ctx: Rc<WorkerCtx>)
where
    IO: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let tunnels = &ctx.tunnels;
    let registry = tunnels.registry().clone();
    let (id, pressure) = registry.new_session_with_pressure(ctx.id);
    let (mux, driver) = Session::new(io, Role::Server, muxado::Config::default());
    let driver = monoio::spawn(driver);
    let local = tunnels.add_session(id, mux.clone(), pressure);
    debug!(session = id, %peer, worker = ctx.id, "agent connected");
    let state = Rc::new(SessionState {
        id,
        mux: mux.clone(),
        last_beat: Cell::new(None),
        silence_limit: Cell::new(DEFAULT_BEAT + DEFAULT_TOLERANCE),
    });
    let started = Instant::now();
    let watchdog = {
        let state = state.clone();
        let registry = registry.clone();
        async move {
            loop {
                monoio::time::sleep(Duration::from_secs(1)).await;
                if !registry.is_authed(state.id) && started.elapsed() > AUTH_TIMEOUT {
                    return "no Auth in time";
                }
                if registry.is_revoked(state.id) {
                    return "its credential was revoked";
                }
                if let Some(t) = state.last_beat.get() {
                    if t.elapsed() > state.silence_limit.get() {
                        return "heartbeat silence";
                    }
                }
            }
        }
    };
    let accept = {
        let state = state.clone();
        let ctx = ctx.clone();
        async move {
            while let Some(stream) = state.mux.accept().await {
                monoio::spawn(typed_stream(stream, state.clone(), ctx.clone()));
            }
        }
    };
    let mut draining = false;
    monoio::select! {
        _ = accept => debug!(session = id, "agent session ended"),
        why = watchdog => {
            info!(session = id, %peer, why, "closing agent session");
            mux.close();
        }
        _ = ctx.drain.wait() => {
            // Requests in flight through this session finish first (up to
            // the grace period); idle streams close now.
            ctx.pool.borrow_mut().drop_session(id);
            let grace = ctx.snapshots.get().settings.timeouts.shutdown_grace;
            let deadline = Instant::now() + grace;
            while local.limit.in_use() > 0 && Instant::now() < deadline && !mux.is_closed() {
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
            // GOAWAY, then close promptly (muxado-go over-reads GOAWAY).
            mux.goaway(ErrorCode::None, "edge shutting down");
            draining = true;
        }
    }
    tunnels.remove_session(id);
    ctx.pool.borrow_mut().drop_session(id);
    registry.session_gone(id);
    // On a drain, a short wait: the SDKs reconnect on GOAWAY but keep
    // their end open, and a stop (or an upgrade) must not wait for them.
    let close_wait = if draining {
        DRAIN_CLOSE_WAIT
    } else {
        Duration::from_secs(2)
    };
    match monoio::time::timeout(close_wait, driver).await {
        Ok(Err(e)) => debug!(session = id, error = %e, "agent session error"),
        Err(_) => mux.close(),
        Ok(Ok(())) => {}
    }
}

/// Writes one JSON reply and FIN (the Rust SDK reads replies to EOF),
/// then waits briefly for the agent's FIN so the stream closes cleanly
/// instead of being reset.
async fn reply(s: &mut Stream, body: Vec<u8>) {
    let (res, _) = s.write_all(body).await;
    if res.is_err() || s.shutdown().await.is_err() {
        return;
    }
    let wait_fin = async {
        loop {
            let (res, _) = s.read(Vec::with_capacity(256)).await;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_secs(2), wait_fin).await;
}

async fn typed_stream(mut s: Stream, state: Rc<SessionState>, ctx: Rc<WorkerCtx>) {
    let Ok(head) = read_exact(&mut s, 4, Some(TYPE_TIMEOUT)).await else {
        return;
    };
    let ty = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let registry = ctx.tunnels.registry().clone();
    let result = match ty {
        stream_type::HEARTBEAT => {
            heartbeat(s, &state).await;
            return;
        }
        stream_type::AUTH => match read_json(&mut s, RPC_TIMEOUT).await {
            Ok(v) => {
                let auth: Auth = match messages::decode(v) {
                    Ok(a) => a,
                    Err(e) => {
                        refuse_and_close(&mut s, &state, &format!("Invalid Auth: {e}")).await;
                        return;
                    }
                };
                let hb = Duration::from_nanos(auth.extra.heartbeat_interval.max(0) as u64);
                let tol = Duration::from_nanos(auth.extra.heartbeat_tolerance.max(0) as u64);
                if !hb.is_zero() {
                    state.silence_limit.set(hb + tol.max(DEFAULT_TOLERANCE));
                }
                match registry.auth(state.id, &auth) {
                    Ok(resp) => {
                        // Silence is measured from Auth on, so an agent
                        // that never beats is noticed too.
                        if state.last_beat.get().is_none() {
                            state.last_beat.set(Some(Instant::now()));
                        }
                        reply(&mut s, encode(&resp)).await;
                        Ok(())
                    }
                    Err(msg) => {
                        refuse_and_close(&mut s, &state, &msg).await;
                        return;
                    }
                }
            }
            Err(e) => Err(e),
        },
        stream_type::BIND => match read_json(&mut s, RPC_TIMEOUT).await {
            Ok(v) => {
                let resp = match messages::decode::<Bind>(v) {
                    Ok(b) => registry.bind(state.id, &b),
                    Err(e) => messages::BindResp {
                        error: format!("Invalid Bind: {e}"),
                        ..Default::default()
                    },
                };
                if !resp.error.is_empty() {
                    info!(session = state.id, error = %resp.error.replace('\n', " "), "bind refused");
                }
                reply(&mut s, encode(&resp)).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        stream_type::UNBIND => match read_json(&mut s, RPC_TIMEOUT).await {
            Ok(v) => {
                let resp = match messages::decode::<Unbind>(v) {
                    Ok(u) => registry.unbind(state.id, &u.id),
                    Err(e) => ErrorResp {
                        error: format!("Invalid Unbind: {e}"),
                    },
                };
                reply(&mut s, encode(&resp)).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        stream_type::START_TUNNEL_WITH_LABEL => match read_json(&mut s, RPC_TIMEOUT).await {
            Ok(_) => {
                let resp = LabelResp {
                    id: String::new(),
                    error: messages::ngrok_error(
                        "Labeled tunnels (ngrok Edges) are not supported by this edge; bind an endpoint URL instead.",
                        9036,
                    ),
                };
                reply(&mut s, encode(&resp)).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        stream_type::SRV_INFO => match read_json(&mut s, RPC_TIMEOUT).await {
            Ok(_) => {
                let resp = SrvInfoResp {
                    region: "local".into(),
                };
                reply(&mut s, encode(&resp)).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        stream_type::PATCH_TUNNEL_STATE => match read_json(&mut s, RPC_TIMEOUT).await {
            Ok(_) => {
                let resp = ErrorResp {
                    error: "Updating a bound endpoint is not supported by this edge; unbind and bind again.".into(),
                };
                reply(&mut s, encode(&resp)).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        other => {
            debug!(
                session = state.id,
                ty = other,
                "unexpected stream type from agent"
            );
            s.reset(ErrorCode::StreamRefused);
            return;
        }
    };
    match result {
        Ok(()) => {}
        Err(ReadError::Message(e)) => {
            // Oversized or malformed JSON: the agent is broken or hostile.
            warn!(session = state.id, error = %e, "bad message from agent; closing its session");
            state.mux.goaway(ErrorCode::Protocol, "malformed message");
        }
        Err(e) => {
            debug!(session = state.id, ty, error = %e, "agent RPC stream ended early");
            s.reset(ErrorCode::StreamCancelled);
        }
    }
}

/// Replies with an error, then closes the session (failed Auth).
async fn refuse_and_close(s: &mut Stream, state: &SessionState, msg: &str) {
    info!(session = state.id, error = %msg.replace('\n', " "), "agent refused");
    let body = encode(&ErrorResp {
        error: msg.to_owned(),
    });
    reply(s, body).await;
    monoio::time::sleep(Duration::from_millis(200)).await;
    state.mux.close();
}

/// The responder side: echo every 4 bytes at once, in order.
async fn heartbeat(mut s: Stream, state: &SessionState) {
    let mut pending: Vec<u8> = Vec::with_capacity(64);
    loop {
        let chunk = Vec::with_capacity(64);
        let (res, chunk) = s.read(chunk).await;
        match res {
            Ok(n) if n > 0 => pending.extend_from_slice(&chunk[..n]),
            _ => return,
        }
        state.last_beat.set(Some(Instant::now()));
        let whole = pending.len() / 4 * 4;
        if whole == 0 {
            continue;
        }
        // One 4-byte frame per beat: the Rust responder expects exactly that.
        for beat in pending[..whole].chunks(4) {
            let (res, _) = s.write_all(beat.to_vec()).await;
            if res.is_err() {
                return;
            }
        }
        pending.drain(..whole);
        if pending.len() > 64 {
            return;
        }
    }
}
