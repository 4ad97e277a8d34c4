//! pebble (Debian's ACME test server) plus pebble-challtestsrv as its DNS
//! server, for ACME tests: every A query is answered 127.0.0.1, so names
//! like `app.ringress.localhost` validate against whatever HTTP server the
//! test puts on pebble's `httpPort` (a test responder, or the edge itself).
//! Both processes are killed by PID on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringress::tls::acme::IssuedCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

pub const PEBBLE: &str = "/usr/bin/pebble";
pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// Whether pebble is installed; outside CI a missing pebble skips (with a
/// printed reason), in CI it fails.
pub fn available() -> bool {
    if Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "pebble is not installed ({PEBBLE}); scripts/test.sh installs it"
    );
    println!("SKIPPED: pebble not installed");
    false
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A port free for both UDP and TCP (the DNS server binds both).
pub fn free_dns_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn wait_tcp(port: u16, what: &str, child: &mut Child) {
    if let Err(e) = try_wait_tcp(port, what, child) {
        panic!("{e}");
    }
}

/// Waits for `child` to listen on `port`; `Err` if it exits first.
pub fn try_wait_tcp(port: u16, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early: {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not listen on {port}"));
        }
        thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// pebble plus pebble-challtestsrv as its DNS server, killed on drop.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub pebble: Child,
    pub dns: Child,
    pub acme_port: u16,
    pub mgmt_port: u16,
    pub ca_bundle: PathBuf,
}

impl Pebble {
    pub fn start(http_port: u16, env: &[(&str, &str)]) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        // A test CA (the bundle our client trusts) and pebble's HTTPS cert.
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringress pebble test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        let ca_bundle = dir.path().join("ca.pem");
        std::fs::write(&ca_bundle, ca.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");

        // Free ports can be taken by a parallel test between our probe and
        // pebble's bind: on an early exit, try again with fresh ones.
        let mut attempt = 0;
        let (dns, pebble, acme_port, mgmt_port) = loop {
            attempt += 1;
            match Self::launch(&dir, http_port, env) {
                Ok(started) => break started,
                Err(e) if attempt < 4 => {
                    eprintln!("pebble start attempt {attempt} failed ({e}); retrying");
                }
                Err(e) => {
                    let err =
                        std::fs::read_to_string(dir.path().join("pebble.err")).unwrap_or_default();
                    panic!("{e}; pebble stderr:\n{err}");
                }
            }
        };
        Pebble {
            dir,
            pebble,
            dns,
            acme_port,
            mgmt_port,
            ca_bundle,
        }
    }

    /// Starts pebble-challtestsrv and pebble on fresh ports.
    fn launch(
        dir: &tempfile::TempDir,
        http_port: u16,
        env: &[(&str, &str)],
    ) -> Result<(Child, Child, u16, u16), String> {
        let acme_port = free_tcp_port();
        let mgmt_port = free_tcp_port();
        let dns_port = free_dns_port();
        let dns_mgmt_port = free_tcp_port();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": free_tcp_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");

        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let mut dns = Command::new(CHALLTESTSRV)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        if let Err(e) = try_wait_tcp(dns_mgmt_port, "pebble-challtestsrv", &mut dns) {
            let _ = dns.kill();
            let _ = dns.wait();
            return Err(e);
        }

        let mut cmd = Command::new(PEBBLE);
        cmd.arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .args(["-strict=false"])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut pebble = cmd.spawn().expect("start pebble");
        let ready = try_wait_tcp(acme_port, "pebble", &mut pebble)
            .and_then(|_| try_wait_tcp(mgmt_port, "pebble management", &mut pebble));
        if let Err(e) = ready {
            for c in [&mut pebble, &mut dns] {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(e);
        }
        Ok((dns, pebble, acme_port, mgmt_port))
    }

    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// GET over HTTPS from the management interface, trusting our test CA.
    pub fn management_get(&self, path: &str) -> String {
        let config = super::tls::client_config(&self.ca_bundle, &[]);
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("tls");
        let tcp = TcpStream::connect(("127.0.0.1", self.mgmt_port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut body = Vec::new();
        // Go may close without close_notify: keep what arrived.
        let _ = tls.read_to_end(&mut body);
        String::from_utf8_lossy(&body).into_owned()
    }

    pub fn root(&self) -> CertificateDer<'static> {
        let response = self.management_get("/roots/0");
        let start = response
            .find("-----BEGIN CERTIFICATE-----")
            .expect("root PEM");
        CertificateDer::from_pem_slice(&response.as_bytes()[start..]).expect("root")
    }

    /// The chain verifies for its domain against pebble's root, and the key
    /// matches the leaf.
    pub fn verify(&self, cert: &IssuedCert) {
        let mut roots = RootCertStore::empty();
        roots.add(self.root()).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("chain");
        assert!(chain.len() >= 2, "chain without intermediate");
        let name = ServerName::try_from(cert.domain.clone()).expect("name");
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .expect("chain verifies against pebble's root");
        let other = ServerName::try_from("other.ringress.localhost").expect("name");
        assert!(verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], UnixTime::now())
            .is_err());
        cert.certified_key()
            .expect("certified key")
            .keys_match()
            .expect("key matches the leaf");
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            for name in [
                "pebble.log",
                "pebble.err",
                "challtestsrv.log",
                "challtestsrv.err",
            ] {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                eprintln!("---- {name}\n{text}");
            }
        }
    }
}
