//! ACME (issue 3) against a real pebble on loopback: issuance verified with
//! pebble's root, restart from the state directory without a new order and
//! with the same account, renewal, and a failing validation that backs off.
//!
//! Name resolution: pebble's VA resolves the order's names over DNS. Each test
//! also starts `pebble-challtestsrv` (same Debian package) as pebble's
//! `-dnsserver`, with every A query answered 127.0.0.1 and AAAA disabled, so
//! names such as `app.ringress.localhost` validate against the challenge
//! responder the test runs on pebble's `httpPort`.
//!
//! `PEBBLE_VA_NOSLEEP=1` everywhere; `PEBBLE_WFE_NONCEREJECT` is left at its
//! default (5%) except in the issuance test, which raises it to 40% so the
//! badNonce retry path certainly runs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use ringress::tls::acme::{AcmeHandle, AcmeSettings, Challenges, IssuedCert};

mod common;

use common::pebble::Pebble;
const CERT_WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ tests

#[test]
fn issuance_verifies_against_pebble_root() {
    if !pebble_available() {
        return;
    }
    let responder = Responder::start(&[]);
    let pebble = Pebble::start(responder.port, &[("PEBBLE_WFE_NONCEREJECT", "40")]);
    let state = tempfile::tempdir().expect("tempdir");
    let domain = "app.ringress.localhost";

    let (handle, certs) = spawn(&pebble, state.path(), &responder, Duration::from_secs(1));
    handle.manage(vec![domain.to_owned()]);
    let cert = recv_cert(&certs, domain);

    pebble.verify(&cert);
    assert!(cert.not_after > cert.not_before);
    assert!(responder.challenges.is_empty(), "challenge left published");
    let crt = std::fs::read_to_string(state.path().join("certs/app.ringress.localhost.crt"))
        .expect("stored chain");
    assert_eq!(crt, cert.chain_pem);
    assert_eq!(
        mode(&state.path().join("certs/app.ringress.localhost.key")),
        0o600
    );
    assert_eq!(mode(&state.path().join("account.json")), 0o600);
    assert!(handle.is_running());
    handle.shutdown();
}

#[test]
fn restart_reuses_account_and_stored_cert_then_renews() {
    if !pebble_available() {
        return;
    }
    let responder = Responder::start(&[]);
    let pebble = Pebble::start(responder.port, &[("PEBBLE_AUTHZREUSE", "0")]);
    let state = tempfile::tempdir().expect("tempdir");
    let domain = "restart.ringress.localhost";

    let (handle, certs) = spawn(&pebble, state.path(), &responder, Duration::from_secs(1));
    handle.manage(vec![domain.to_owned()]);
    let first = recv_cert(&certs, domain);
    pebble.verify(&first);
    handle.shutdown();
    let account = std::fs::read(state.path().join("account.json")).expect("account");
    assert_eq!(orders_started(domain), 1);

    // Restart on the same state directory: the stored pair comes back through
    // on_cert at start, and managing the domain starts no order.
    let (handle, certs) = spawn(&pebble, state.path(), &responder, Duration::from_secs(1));
    let loaded = recv_cert(&certs, domain);
    assert_eq!(loaded.serial, first.serial);
    assert_eq!(loaded.chain_pem, first.chain_pem);
    handle.manage(vec![domain.to_owned()]);
    assert!(
        certs.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a stored, valid certificate was issued again"
    );
    assert_eq!(orders_started(domain), 1, "restart started a new order");

    // Renewal with the restarted manager: a new certificate, the same account.
    handle.renew_now(domain);
    let renewed = recv_cert(&certs, domain);
    assert_ne!(renewed.serial, first.serial);
    pebble.verify(&renewed);
    assert_eq!(orders_started(domain), 2);
    assert_eq!(
        std::fs::read(state.path().join("account.json")).expect("account"),
        account,
        "account credentials changed"
    );
    assert!(
        logs_contain(&["ACME account loaded", &state.path().display().to_string()]),
        "the stored account was not reused"
    );
    let crt = std::fs::read_to_string(state.path().join(format!("certs/{domain}.crt")))
        .expect("stored chain");
    assert_eq!(crt, renewed.chain_pem);
    handle.shutdown();
}

#[test]
fn failed_validation_warns_and_backs_off() {
    if !pebble_available() {
        return;
    }
    let bad = "bad.ringress.localhost";
    let responder = Responder::start(&[bad]);
    let pebble = Pebble::start(responder.port, &[]);
    let state = tempfile::tempdir().expect("tempdir");

    let (handle, certs) = spawn(
        &pebble,
        state.path(),
        &responder,
        Duration::from_millis(500),
    );
    handle.manage(vec![bad.to_owned(), "*.wild.ringress.localhost".to_owned()]);

    // Two failures: the first attempt and one retry after the backoff delay.
    let deadline = Instant::now() + CERT_WAIT;
    while count_logs(&["ACME order failed", bad]) < 2 {
        assert!(
            Instant::now() < deadline,
            "no retry after a failed validation"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The warning carries the CA's problem detail.
    assert!(logs_contain(&[
        "WARN",
        "ACME order failed",
        bad,
        "unauthorized"
    ]));
    assert!(logs_contain(&["not managing domain", "wildcards"]));
    assert!(
        certs.try_recv().is_err(),
        "a certificate for a failing domain"
    );
    assert!(handle.is_running(), "the manager died");
    handle.shutdown();
    assert!(responder.challenges.is_empty(), "challenge left published");
}

// ------------------------------------------------------------------ helpers

fn pebble_available() -> bool {
    init_logs();
    common::pebble::available()
}

fn spawn(
    pebble: &Pebble,
    state_dir: &Path,
    responder: &Responder,
    retry_base: Duration,
) -> (AcmeHandle, Receiver<IssuedCert>) {
    let (tx, rx) = mpsc::channel();
    let settings = AcmeSettings {
        directory_url: pebble.directory_url(),
        ca_bundle: Some(pebble.ca_bundle.clone()),
        contact_email: Some("ops@ringress.localhost".into()),
        state_dir: state_dir.to_path_buf(),
        retry_base,
    };
    let handle = AcmeHandle::spawn(
        settings,
        Arc::clone(&responder.challenges),
        Box::new(move |cert| {
            let _ = tx.send(cert);
        }),
    )
    .expect("spawn ACME manager");
    (handle, rx)
}

fn recv_cert(certs: &Receiver<IssuedCert>, domain: &str) -> IssuedCert {
    let cert = certs
        .recv_timeout(CERT_WAIT)
        .unwrap_or_else(|_| panic!("no certificate for {domain} within {CERT_WAIT:?}"));
    assert_eq!(cert.domain, domain);
    cert
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// A tiny HTTP-01 responder on 127.0.0.1 (pebble's `httpPort`): answers from
/// `Challenges`, except for `wrong_hosts`, which get a wrong key authorization.
struct Responder {
    port: u16,
    challenges: Arc<Challenges>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Responder {
    fn start(wrong_hosts: &[&str]) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let challenges = Challenges::new();
        let stop = Arc::new(AtomicBool::new(false));
        let wrong: Vec<String> = wrong_hosts.iter().map(|h| h.to_string()).collect();
        let thread = {
            let challenges = Arc::clone(&challenges);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream, &challenges, &wrong),
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Responder {
            port,
            challenges,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut stream: TcpStream, challenges: &Challenges, wrong: &[String]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let host = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("host")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
    let (status, body): (&str, String) = if wrong.contains(&host) {
        ("200 OK", "wrong-key-authorization".into())
    } else {
        match challenges.for_path(path) {
            Some(ka) => ("200 OK", ka.to_string()),
            None => ("404 Not Found", "not found".into()),
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

// ------------------------------------------------------------------ logs

/// Every log line of the process (the manager logs from its own thread, so
/// the subscriber is global), also echoed to stderr.
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        eprint!("{text}");
        let mut logs = logs().lock().unwrap_or_else(|e| e.into_inner());
        logs.extend(text.lines().map(str::to_owned));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("ringress=debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

fn count_logs(needles: &[&str]) -> usize {
    let logs = logs().lock().unwrap_or_else(|e| e.into_inner());
    logs.iter()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}

fn logs_contain(needles: &[&str]) -> bool {
    count_logs(needles) > 0
}

fn orders_started(domain: &str) -> usize {
    count_logs(&["ACME order started", &format!("domain=\"{domain}\"")]).max(count_logs(&[
        "ACME order started",
        &format!("domain={domain}"),
    ]))
}
