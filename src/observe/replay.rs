//! Inspector replay: sends a captured request again, through the edge
//! itself (its own listener for the endpoint's scheme), so that routing,
//! policy and the upstream see it as they saw the original. The replay
//! carries `ringress-replay-of: <id>` and `Connection: close`; the edge
//! captures it like any other request. Runs on the API's tokio runtime.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::CaptureMode;
use super::head::Head;
use super::inspector::{Captured, REPLAY_HEADER};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("the request had a body that was not captured (capture mode metadata, or truncated at the body cap)")]
    BodyNotCaptured,
    #[error("the edge has no {0} listener to replay through")]
    NoListener(&'static str),
    #[error("replay failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("replay timed out")]
    TimedOut,
}

/// How long a replay may take.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes of the replayed request.
pub fn request_bytes(c: &Captured) -> Result<Vec<u8>, ReplayError> {
    let body_missing = c.req_body_len > 0
        && (c.mode != CaptureMode::Full
            || c.req_truncated
            || c.req_body().len() as u64 != c.req_body_len);
    if body_missing {
        return Err(ReplayError::BodyNotCaptured);
    }
    let head = Head::parse(c.req_head());
    let mut out = Vec::with_capacity(c.req_head().len() + c.req_body().len() + 64);
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", head.first, head.second).as_bytes());
    for (n, v) in &head.fields {
        if n.eq_ignore_ascii_case("connection")
            || n.eq_ignore_ascii_case("keep-alive")
            || n.eq_ignore_ascii_case(REPLAY_HEADER)
        {
            continue;
        }
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!("{REPLAY_HEADER}: {}\r\nconnection: close\r\n\r\n", c.id()).as_bytes(),
    );
    out.extend_from_slice(c.req_body());
    Ok(out)
}

/// Replays `c` through the edge listening at `http` / `https`; returns the
/// response status.
pub async fn replay(
    c: &Captured,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
) -> Result<u16, ReplayError> {
    let bytes = request_bytes(c)?;
    let run = async {
        let raw = match c.scheme {
            "https" => {
                let addr = https.ok_or(ReplayError::NoListener("https"))?;
                let host = Head::parse(c.req_head())
                    .get("host")
                    .map(|h| h.rsplit_once(':').map_or(h, |(a, _)| a).to_owned())
                    .unwrap_or_default();
                tls_exchange(addr, &host, &bytes).await?
            }
            _ => {
                let addr = http.ok_or(ReplayError::NoListener("http"))?;
                let mut s = tokio::net::TcpStream::connect(loopback(addr)).await?;
                s.write_all(&bytes).await?;
                let mut raw = Vec::new();
                s.read_to_end(&mut raw).await?;
                raw
            }
        };
        Ok::<u16, ReplayError>(super::worker::status_of(&raw))
    };
    tokio::time::timeout(REPLAY_TIMEOUT, run)
        .await
        .map_err(|_| ReplayError::TimedOut)?
}

/// A listener bound to 0.0.0.0 or :: is reached on loopback.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Over TLS to the edge's own HTTPS listener. The certificate is not
/// verified: the peer is this process, reached by its own address.
async fn tls_exchange(addr: SocketAddr, host: &str, bytes: &[u8]) -> Result<Vec<u8>, ReplayError> {
    use std::sync::Arc;
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OwnListener(
            rustls::crypto::aws_lc_rs::default_provider(),
        )))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tcp = tokio::net::TcpStream::connect(loopback(addr)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    tls.write_all(bytes).await?;
    let mut raw = Vec::new();
    // The edge may close without close_notify after `connection: close`.
    match tls.read_to_end(&mut raw).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(raw)
}

#[derive(Debug)]
struct OwnListener(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for OwnListener {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(mode: CaptureMode, body: &'static [u8], len: u64) -> Captured {
        let mut r = crate::observe::record::tests::http();
        r.endpoint = "http://a.test";
        r.req_head = b"POST /p HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n";
        r.capture = mode;
        r.req_body = body;
        r.req_body_len = len;
        Captured::new(1, "http://a.test".into(), &r)
    }

    #[test]
    fn replay_bytes() {
        let b = request_bytes(&captured(CaptureMode::Full, b"abc", 3)).unwrap();
        let s = String::from_utf8(b).unwrap();
        assert!(s.starts_with("POST /p HTTP/1.1\r\nHost: a.test\r\n"));
        assert!(!s.contains("keep-alive"));
        assert!(s.ends_with("ringress-replay-of: req_000000000001\r\nconnection: close\r\n\r\nabc"));
        assert!(matches!(
            request_bytes(&captured(CaptureMode::Metadata, b"", 3)),
            Err(ReplayError::BodyNotCaptured)
        ));
    }
}
