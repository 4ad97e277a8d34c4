//! A real nginx (Debian's) as the upstream: static files, HEAD, 304,
//! gzip-chunked responses, PUT uploads, keep-alive reuse and the forwarded
//! headers as nginx sees them. Skipped with a printed reason when nginx is
//! missing and `CI` is unset; fails when `CI` is set.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// An nginx in its own prefix dir, single process, on a free loopback port.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Option<Nginx> {
        let bin = require_tool("nginx", &["/usr/sbin/nginx", "nginx"])?;
        for attempt in 1.. {
            match Nginx::try_start(&bin) {
                Ok(n) => return Some(n),
                // The free port was taken between probe and bind: try another.
                Err(log) if log.contains("Address already in use") && attempt < 3 => continue,
                Err(log) => panic!("nginx did not start: {log}"),
            }
        }
        None
    }

    fn try_start(bin: &std::path::Path) -> Result<Nginx, String> {
        let dir = tempfile::Builder::new()
            .prefix("ringress-nginx-")
            .tempdir()
            .expect("tempdir");
        let p = dir.path().to_str().expect("utf-8").to_string();
        let html = dir.path().join("html");
        fs::create_dir_all(html.join("upload")).expect("mkdir");
        fs::write(html.join("index.html"), "<h1>nginx behind ringress</h1>\n").expect("write");
        fs::write(html.join("big.bin"), big_file()).expect("write");
        fs::write(
            html.join("text.txt"),
            "lorem ipsum dolor sit amet\n".repeat(4000),
        )
        .expect("write");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let conf = format!(
            r#"
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    types {{ text/html html; text/plain txt; application/octet-stream bin; }}
    keepalive_requests 10000;
    keepalive_timeout 60s;
    server {{
        listen {addr};
        server_name _;
        root {p}/html;
        location = /headers {{
            default_type text/plain;
            return 200 "xff=$http_x_forwarded_for\nxfp=$http_x_forwarded_proto\nxfh=$http_x_forwarded_host\nhost=$http_host\nexpect=$http_expect\nconnection=$http_connection\nconn=$connection\n";
        }}
        location = /error-code {{
            add_header ngrok-error-code ERR_NGROK_9999 always;
            return 503 "upstream says no\n";
        }}
        location = /text.txt {{
            gzip on;
            gzip_min_length 0;
            gzip_types text/plain;
        }}
        location /upload/ {{
            client_max_body_size 100m;
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited ({status}): {}", nginx.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx not listening on {addr}: {}",
                    nginx.error_log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn html(&self) -> PathBuf {
        self.dir.path().join("html")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn big_file() -> Vec<u8> {
    let mut v = Vec::new();
    Pattern::new()
        .write_to(&mut v, (1 << 20) + 12_345)
        .expect("fill");
    v
}

fn setup() -> Option<(Nginx, Edge)> {
    let nginx = Nginx::start()?;
    let edge = Edge::start(&endpoint("http://app.example.com", &nginx.url()));
    Some((nginx, edge))
}

#[test]
fn static_file_is_served_byte_for_byte() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let r = get(edge.addr(), APP_HOST, "/big.bin");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("server").map(|s| s.starts_with("nginx")),
        Some(true)
    );
    assert_eq!(r.body.len(), (1 << 20) + 12_345);
    assert!(r.body == big_file(), "body differs from the file");
}

#[test]
fn nginx_sees_forwarded_headers() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let r = send_request(
        edge.addr(),
        "GET /headers HTTP/1.1\r\nHost: app.example.com:8443\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("xff=192.0.2.7, 127.0.0.1\n"), "{t}");
    assert!(t.contains("xfp=http\n"), "{t}");
    assert!(t.contains("xfh=app.example.com:8443\n"), "{t}");
    assert!(t.contains("host=app.example.com:8443\n"), "{t}");
}

#[test]
fn keep_alive_reuses_the_nginx_connection() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let mut c = Client::connect(edge.addr());
    let conn = |r: Response| {
        assert_eq!(r.status, 200);
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix("conn=").map(str::to_string))
            .expect("conn line")
    };
    let first = conn(c.get(APP_HOST, "/headers"));
    for _ in 0..4 {
        assert_eq!(
            conn(c.get(APP_HOST, "/headers")),
            first,
            "nginx connection not reused"
        );
    }
}

#[test]
fn head_and_conditional_get_have_no_body() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let mut c = Client::connect(edge.addr());
    let head = c.roundtrip("HEAD /big.bin HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1060921"));
    let etag = head
        .header("etag")
        .expect("nginx sends an ETag")
        .to_string();
    let not_modified = c.roundtrip(format!(
        "GET /big.bin HTTP/1.1\r\nHost: app.example.com\r\nIf-None-Match: {etag}\r\n\r\n"
    ));
    assert_eq!(not_modified.status, 304);
    let again = c.get(APP_HOST, "/index.html");
    assert_eq!(again.status, 200);
    assert_eq!(again.text(), "<h1>nginx behind ringress</h1>\n");
}

#[test]
fn gzip_chunked_response_passes_through() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let mut c = Client::connect(edge.addr());
    let r = c.roundtrip(
        "GET /text.txt HTTP/1.1\r\nHost: app.example.com\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(
        r.is_chunked(),
        "head:\n{}",
        String::from_utf8_lossy(&r.raw_head)
    );
    assert!(r.body.starts_with(&[0x1f, 0x8b]), "gzip magic");
    assert!(r.body.len() < 108_000, "compressed");
    assert_eq!(c.get(APP_HOST, "/index.html").status, 200);
}

#[test]
fn put_upload_round_trips() {
    let Some((nginx, edge)) = setup() else { return };
    let len: u64 = 4 << 20;
    let pattern = Pattern::new();
    let mut c = Client::connect(edge.addr());
    c.send(format!(
        "PUT /upload/file.bin HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: {len}\r\n\r\n"
    ))
    .expect("head");
    pattern.write_to(c.stream_mut(), len).expect("body");
    let r = c.read_response().expect("PUT response");
    assert!(matches!(r.status, 201 | 204), "PUT got {}", r.status);
    let on_disk = fs::read(nginx.html().join("upload/file.bin")).expect("uploaded file");
    assert_eq!(Digest::of(&on_disk), pattern.digest(len));
    let back = c.get(APP_HOST, "/upload/file.bin");
    assert_eq!(back.status, 200);
    assert_eq!(Digest::of(&back.body), pattern.digest(len));
}

#[test]
fn chunked_put_upload_round_trips() {
    let Some((nginx, edge)) = setup() else { return };
    let mut c = Client::connect(edge.addr());
    let r = c.roundtrip(
        "PUT /upload/chunked.txt HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
         6\r\nhello \r\n6\r\nnginx!\r\n0\r\n\r\n",
    );
    assert!(matches!(r.status, 201 | 204), "PUT got {}", r.status);
    let on_disk = fs::read(nginx.html().join("upload/chunked.txt")).expect("uploaded file");
    assert_eq!(on_disk, b"hello nginx!");
}

#[test]
fn nginx_ngrok_error_code_header_is_stripped() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let r = get(edge.addr(), APP_HOST, "/error-code");
    assert_eq!(r.status, 503);
    assert!(r.header("ngrok-error-code").is_none());
    assert_eq!(r.text(), "upstream says no\n");
}

#[test]
fn nginx_404_passes_through_as_is() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let r = get(edge.addr(), APP_HOST, "/no/such/file");
    assert_eq!(r.status, 404);
    assert!(r.header("ngrok-error-code").is_none());
    assert!(r.text().contains("nginx"));
}

#[test]
fn many_requests_over_few_connections() {
    let Some((_nginx, edge)) = setup() else {
        return;
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = edge.addr();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..50 {
                    let r = c.get(APP_HOST, "/index.html");
                    assert_eq!(r.status, 200);
                    assert_eq!(r.text(), "<h1>nginx behind ringress</h1>\n");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
}
