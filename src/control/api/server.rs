//! The API listener: a hyper 1 HTTP/1.1 server on a current-thread tokio
//! runtime, on its own control-plane thread (never on a worker). Each
//! request goes to the server's own routes first, then to the mounts in
//! order, then 404.
//!
//! Owns the listening socket and the connections; never touches the data
//! plane's state directly (its routes do, through the control plane).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::{debug, info, warn};

use super::error::ApiError;
use super::mount::{ApiAuth, ApiBody, ApiRequest, Mount};

/// A request head must arrive within this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many API connections at once.
const MAX_CONNECTIONS: usize = 1024;

/// A running API server; dropping it does not stop it, `stop` does.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The routes the server tries, in order, and the key check they share.
pub struct Routes {
    pub own: Arc<dyn Mount>,
    pub mounts: Vec<Arc<dyn Mount>>,
    pub auth: ApiAuth,
    /// TLS for the API listener, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ApiServer {
    /// Starts serving on an already bound listener (so bind errors are
    /// reported by the caller before anything starts).
    pub fn start(listener: std::net::TcpListener, routes: Routes) -> std::io::Result<ApiServer> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ringress-api".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        warn!("API server cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(serve(listener, Arc::new(routes), stop_rx));
            })?;
        info!(%addr, "API listening");
        Ok(ApiServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits (briefly) for the thread.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    routes: Arc<Routes>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("API listener unusable: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tls = routes.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                debug!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "API connection refused: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let routes = routes.clone();
                async move { Ok::<_, std::convert::Infallible>(dispatch(&routes, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), service).await,
                        _ => return,
                    }
                }
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "API connection: {e}");
            }
        });
    }
}

/// The API listener's one certificate, whatever the SNI.
#[derive(Debug)]
pub struct OneCert(pub Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Own routes first, then mounts in order, then 404.
async fn dispatch(routes: &Routes, req: ApiRequest) -> http::Response<ApiBody> {
    let mut req = req;
    for m in std::iter::once(&routes.own).chain(routes.mounts.iter()) {
        match m.call(req, routes.auth.clone()) {
            Ok(fut) => return fut.await,
            Err(back) => req = back,
        }
    }
    ApiError::new(
        404,
        404,
        format!(
            "No API route matches {} {}.",
            req.method(),
            req.uri().path()
        ),
    )
    .response()
}
