//! TLS towards `https://` upstreams.
//!
//! As with ngrok, the upstream's certificate is NOT verified by default:
//! the agent's network is assumed private, and local servers mostly use
//! self-signed certificates. [`AcceptAnyCert`] skips the chain and name
//! checks but still verifies the handshake signatures with the provider,
//! so the session is at least bound to the key in the presented
//! certificate. `--upstream-tls-verify` switches to rustls's WebPKI
//! verifier against the CA file given, or the system's roots.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::ForwardError;

/// Builds the client configuration. `alpn_h2`: offer only "h2" (HTTP/2 to
/// a TLS upstream); otherwise no ALPN, since the bytes are copied as they
/// come and the upstream must speak what the edge sent (HTTP/1.1).
pub fn client_config(
    verify: bool,
    cas: Option<&Path>,
    alpn_h2: bool,
) -> Result<Arc<ClientConfig>, ForwardError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if verify {
        builder
            .with_root_certificates(roots(cas)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { provider }))
            .with_no_client_auth()
    };
    if alpn_h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(Arc::new(config))
}

pub fn roots(cas: Option<&Path>) -> Result<RootCertStore, ForwardError> {
    let mut store = RootCertStore::empty();
    match cas {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ForwardError::CaFile {
                path: path.to_owned(),
                source,
            })?;
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            let (added, _ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ForwardError::NoCaCertificates(path.to_owned()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none found".to_owned());
                return Err(ForwardError::SystemRoots(why));
            }
        }
    }
    Ok(store)
}

/// The name sent as SNI and checked when verifying: the upstream host.
/// rustls sends no SNI for an IP address, as RFC 6066 §3 requires.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ForwardError> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        ForwardError::TlsConfig(rustls::Error::General(format!(
            "{host:?} is not a valid TLS server name"
        )))
    })
}

/// Accepts any certificate chain and name; checks handshake signatures.
#[derive(Debug)]
pub struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_are_ip_server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
    }

    #[test]
    fn ca_file_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            client_config(true, Some(&missing), false),
            Err(ForwardError::CaFile { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"not a certificate").expect("write");
        assert!(matches!(
            client_config(true, Some(&empty), false),
            Err(ForwardError::NoCaCertificates(_))
        ));
        // Verification off never reads anything.
        assert!(client_config(false, Some(&missing), false).is_ok());
    }
}
