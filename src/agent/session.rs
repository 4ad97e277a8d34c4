//! One agent session with an edge: TLS, muxado in the client role, the
//! heartbeat requester, Auth, Bind for every endpoint, then serving the
//! proxy streams the edge opens until the session ends. The caller
//! (`agent::run`) reconnects, passing back what the edge handed out
//! (client id, cookie, tunnel ids and tokens) so endpoints keep their URLs.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::forward::Forwarder;
use super::inspect::{ConnTap, Inspected, TapConfig};
use super::status::Counters;
use crate::tunnel::messages::{
    self, decode_proxy_header, stream_type, Auth, AuthExtra, AuthResp, Bind, BindExtra, BindResp,
    ErrorResp, Unbind,
};
use crate::tunnel::muxado::{self, ErrorCode, Role, Session, Stream};
use crate::tunnel::stream_io::{read_exact, read_json, ReadError};

/// How often we send a heartbeat (the SDKs' default).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
pub const HEARTBEAT_TOLERANCE: Duration = Duration::from_secs(15);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("session closed")]
    Closed,
    /// Our agent keeps one session per edge worker: this one landed on a
    /// worker that already has one.
    #[error("session landed on edge worker {0}, which already has one")]
    Misplaced(usize),
}

impl SessionError {
    /// Errors that retrying cannot fix (a refused token or endpoint).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Refused(_))
    }
}

/// What an endpoint asks the edge for.
#[derive(Debug, Clone)]
pub struct EndpointRequest {
    /// `https://host`, `http://host`, a bare host, or empty for a random one.
    pub url: String,
    pub pooling: bool,
    pub metadata: String,
    pub traffic_policy: Option<String>,
    pub forwards_to: String,
    pub forwards_proto: String,
    pub description: String,
}

/// What a bound endpoint kept across reconnects.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub id: String,
    pub token: String,
    pub url: String,
}

/// What a session learned, for the next one (reconnect, other workers).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub client_id: String,
    pub cookie: String,
    pub bound: Vec<Option<Bound>>,
}

pub struct SessionParams {
    pub server_addr: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub authtoken: String,
    pub metadata: String,
    /// Shared by all sessions of this agent.
    pub group: String,
    pub endpoints: Vec<EndpointRequest>,
    pub forwarders: Vec<Rc<Forwarder>>,
    /// Per endpoint: the inspector's capture sink, when inspected.
    pub taps: Vec<Option<TapConfig>>,
}

/// A session after Auth and Bind.
pub struct Connected {
    pub mux: Session,
    pub auth: AuthResp,
    pub resume: Resume,
    driver: monoio::task::JoinHandle<Result<(), muxado::MuxError>>,
}

fn server_name(addr: &str) -> Result<(String, ServerName<'static>), SessionError> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| SessionError::Protocol(format!("invalid server name {host:?}: {e}")))?;
    Ok((host.to_owned(), name))
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>, SessionError> {
    use std::net::ToSocketAddrs;
    let with_port = if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_owned()
    } else {
        format!("{addr}:443")
    };
    with_port
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|source| SessionError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

/// Pieces the edge sends right away (a stream type, a ProxyHeader) come
/// within this; heartbeat echoes are waited for by the heartbeat itself.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

impl From<ReadError> for SessionError {
    fn from(e: ReadError) -> SessionError {
        match e {
            ReadError::Message(m) => SessionError::Protocol(m.to_string()),
            ReadError::TimedOut => SessionError::Protocol("the edge did not answer in time".into()),
            ReadError::Closed => SessionError::Closed,
        }
    }
}

/// `scheme://host[:port]` without the port.
pub fn without_port(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let host = match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => rest,
    };
    match scheme {
        Some(s) => format!("{s}://{host}"),
        None => host.to_owned(),
    }
}

/// One RPC: open a typed stream, send the request, read the reply to EOF.
async fn rpc(mux: &Session, ty: u32, body: Vec<u8>) -> Result<serde_json::Value, SessionError> {
    let mut s = monoio::time::timeout(RPC_TIMEOUT, mux.open())
        .await
        .map_err(|_| SessionError::Protocol("no stream free for a request to the edge".into()))?
        .map_err(|_| SessionError::Closed)?;
    let (res, _) = s.write_all(ty.to_be_bytes().to_vec()).await;
    res.map_err(|_| SessionError::Closed)?;
    let (res, _) = s.write_all(body).await;
    res.map_err(|_| SessionError::Closed)?;
    let v = read_json(&mut s, RPC_TIMEOUT).await?;
    let _ = s.shutdown().await;
    Ok(v)
}

/// Connects, authenticates and binds every endpoint.
pub async fn connect(
    p: &SessionParams,
    resume: &Resume,
    place: impl FnOnce(&AuthResp) -> bool,
) -> Result<Connected, SessionError> {
    let (host, name) = server_name(&p.server_addr)?;
    let mut last = None;
    let mut tcp = None;
    for addr in resolve(&p.server_addr)? {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(tcp) = tcp else {
        return Err(SessionError::Connect {
            addr: p.server_addr.clone(),
            source: last.unwrap_or_else(|| std::io::Error::other("no address")),
        });
    };
    let _ = tcp.set_nodelay(true);
    let connector = monoio_rustls::TlsConnector::from(p.tls.clone());
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| SessionError::Tls {
            addr: format!("{host} ({})", p.server_addr),
            source: std::io::Error::other(e.to_string()),
        })?;
    let (mux, driver) = Session::new(tls, Role::Client, muxado::Config::default());
    let driver = monoio::spawn(driver);
    monoio::spawn(heartbeat(mux.clone()));

    let auth = Auth {
        version: vec!["3".into(), "2".into()],
        client_id: resume.client_id.clone(),
        extra: AuthExtra {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            auth_token: p.authtoken.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            user_agent: format!("ringress/{}", env!("CARGO_PKG_VERSION")),
            metadata: p.metadata.clone(),
            cookie: resume.cookie.clone(),
            heartbeat_interval: HEARTBEAT_INTERVAL.as_nanos() as i64,
            heartbeat_tolerance: HEARTBEAT_TOLERANCE.as_nanos() as i64,
            client_type: "ringress".into(),
            ringress_group: p.group.clone(),
            ..AuthExtra::default()
        },
    };
    let v = rpc(&mux, stream_type::AUTH, messages::encode(&auth)).await?;
    let auth_resp: AuthResp =
        messages::decode(v).map_err(|e| SessionError::Protocol(e.to_string()))?;
    if !auth_resp.error.is_empty() {
        mux.close();
        return Err(SessionError::Refused(auth_resp.error));
    }
    if !place(&auth_resp) {
        mux.close();
        return Err(SessionError::Misplaced(auth_resp.extra.ringress_worker));
    }
    let mut next = Resume {
        client_id: auth_resp.client_id.clone(),
        cookie: auth_resp.extra.cookie.clone(),
        bound: Vec::with_capacity(p.endpoints.len()),
    };
    for (i, e) in p.endpoints.iter().enumerate() {
        let prev = resume.bound.get(i).cloned().flatten();
        // A rebind asks for the host it had; the port is the edge's (it
        // may differ after the edge restarts elsewhere).
        let url = match &prev {
            Some(b) => without_port(&b.url),
            None => e.url.clone(),
        };
        let (proto, url_opt) = if url.starts_with("http://") {
            ("http", url.clone())
        } else if url.is_empty() {
            ("https", String::new())
        } else if url.starts_with("https://") {
            ("https", url.clone())
        } else {
            ("https", format!("https://{url}"))
        };
        let opts = serde_json::json!({
            "URL": url_opt,
            "Domain": "",
            "Hostname": "",
            "Auth": "",
            "Subdomain": "",
            "HostHeaderRewrite": false,
            "ProxyProto": 0,
            "TrafficPolicy": e.traffic_policy.clone().unwrap_or_default(),
        });
        let bind = Bind {
            id: prev.as_ref().map(|b| b.id.clone()).unwrap_or_default(),
            proto: proto.into(),
            forwards_to: e.forwards_to.clone(),
            forwards_proto: e.forwards_proto.clone(),
            opts,
            extra: BindExtra {
                token: prev.as_ref().map(|b| b.token.clone()).unwrap_or_default(),
                metadata: e.metadata.clone(),
                description: e.description.clone(),
                pooling_enabled: e.pooling,
                ..BindExtra::default()
            },
        };
        let v = rpc(&mux, stream_type::BIND, messages::encode(&bind)).await?;
        let resp: BindResp =
            messages::decode(v).map_err(|e| SessionError::Protocol(e.to_string()))?;
        if !resp.error.is_empty() {
            mux.close();
            return Err(SessionError::Refused(resp.error));
        }
        next.bound.push(Some(Bound {
            id: resp.id,
            token: resp.extra.token,
            url: resp.url,
        }));
    }
    Ok(Connected {
        mux,
        auth: auth_resp,
        resume: next,
        driver,
    })
}

impl Connected {
    /// Serves proxy streams until the session ends or `stop` resolves;
    /// on stop, unbinds every endpoint first.
    pub async fn serve(
        self,
        p: &SessionParams,
        status: Arc<Counters>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), SessionError> {
        let ids: Vec<String> = self
            .resume
            .bound
            .iter()
            .map(|b| b.as_ref().map(|b| b.id.clone()).unwrap_or_default())
            .collect();
        let mux = self.mux.clone();
        let accept = async {
            while let Some(s) = mux.accept().await {
                monoio::spawn(server_stream(
                    s,
                    ids.clone(),
                    p.forwarders.clone(),
                    p.taps.clone(),
                    status.clone(),
                ));
            }
        };
        let stopped = monoio::select! {
            _ = accept => false,
            _ = stop => true,
        };
        if stopped {
            for id in &ids {
                let body = messages::encode(&Unbind { id: id.clone() });
                match rpc(&self.mux, stream_type::UNBIND, body).await {
                    Ok(v) => {
                        let r: Result<ErrorResp, _> = messages::decode(v);
                        if let Ok(r) = r {
                            if !r.error.is_empty() {
                                warn!(tunnel = %id, error = %r.error, "unbind refused");
                            }
                        }
                    }
                    Err(e) => debug!(tunnel = %id, error = %e, "unbind failed"),
                }
            }
            self.mux.goaway(ErrorCode::None, "agent stopping");
            self.mux.close();
            return Ok(());
        }
        self.mux.close();
        match self.driver.await {
            Ok(()) => Err(SessionError::Closed),
            Err(e) => Err(SessionError::Protocol(e.to_string())),
        }
    }
}

/// A stream the edge opened: a proxy stream (or a heartbeat or command).
async fn server_stream(
    mut s: Stream,
    ids: Vec<String>,
    forwarders: Vec<Rc<Forwarder>>,
    taps: Vec<Option<TapConfig>>,
    status: Arc<Counters>,
) {
    let Ok(ty) = read_exact(&mut s, 4, Some(PIECE_TIMEOUT)).await else {
        return;
    };
    match u32::from_be_bytes([ty[0], ty[1], ty[2], ty[3]]) {
        stream_type::PROXY => {
            let Ok(len) = read_exact(&mut s, 8, Some(PIECE_TIMEOUT)).await else {
                return;
            };
            let mut len8 = [0u8; 8];
            len8.copy_from_slice(&len);
            let n = i64::from_le_bytes(len8);
            if !(0..=messages::MAX_MESSAGE_BYTES as i64).contains(&n) {
                s.reset(ErrorCode::Protocol);
                return;
            }
            let Ok(json) = read_exact(&mut s, n as usize, Some(PIECE_TIMEOUT)).await else {
                return;
            };
            let mut whole = len;
            whole.extend_from_slice(&json);
            let header = match decode_proxy_header(&whole) {
                Ok(Some((h, _))) => h,
                _ => {
                    s.reset(ErrorCode::Protocol);
                    return;
                }
            };
            let Some(i) = ids.iter().position(|id| *id == header.id) else {
                debug!(tunnel = %header.id, "proxy stream for an unknown tunnel");
                return;
            };
            let Some(fwd) = forwarders.get(i).cloned() else {
                return;
            };
            status.opened();
            // Inspection on: the same forwarder on a stream that shows the
            // bytes to a capture tap; off: the bare stream, as always.
            let result = match taps.get(i).cloned().flatten() {
                Some(tap) => {
                    let tap = ConnTap::new(tap, header.client_addr.clone(), None);
                    fwd.serve(Inspected::new(s, tap)).await
                }
                None => fwd.serve(s).await,
            };
            status.closed();
            if let Err(e) = result {
                debug!(client = %header.client_addr, error = %e, "forward ended with an error");
            }
        }
        stream_type::HEARTBEAT => loop {
            let Ok(beat) = read_exact(&mut s, 4, None).await else {
                return;
            };
            let (res, _) = s.write_all(beat).await;
            if res.is_err() {
                return;
            }
        },
        stream_type::STOP_TUNNEL => {
            match read_json(&mut s, PIECE_TIMEOUT).await {
                Ok(v) => warn!(message = %v, "the edge stopped an endpoint"),
                Err(e) => debug!(error = %e, "unreadable StopTunnel"),
            }
            let _ = s.shutdown().await;
        }
        stream_type::RESTART | stream_type::STOP | stream_type::UPDATE => {
            let body = messages::encode(&ErrorResp {
                error: "ringress does not take remote commands".into(),
            });
            let (_, _) = s.write_all(body).await;
            let _ = s.shutdown().await;
        }
        other => {
            debug!(ty = other, "unexpected stream type from the edge");
            s.reset(ErrorCode::StreamRefused);
        }
    }
}

/// The requester side of the heartbeat: 4 random bytes every interval,
/// expecting them back.
async fn heartbeat(mux: Session) {
    let Ok(mut s) = mux.open().await else {
        return;
    };
    let (res, _) = s
        .write_all(stream_type::HEARTBEAT.to_be_bytes().to_vec())
        .await;
    if res.is_err() {
        return;
    }
    let mut n: u32 = 0x5eed_0000;
    loop {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let beat = n.to_be_bytes().to_vec();
        let (res, beat) = s.write_all(beat).await;
        if res.is_err() {
            return;
        }
        match monoio::time::timeout(
            HEARTBEAT_INTERVAL + HEARTBEAT_TOLERANCE,
            read_exact(&mut s, 4, None),
        )
        .await
        {
            Ok(Ok(echo)) if echo == beat => {}
            Ok(Ok(_)) => {
                warn!("heartbeat echo mismatch");
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {
                info!("no heartbeat from the edge; reconnecting");
                mux.close();
                return;
            }
        }
        monoio::time::sleep(HEARTBEAT_INTERVAL).await;
    }
}
