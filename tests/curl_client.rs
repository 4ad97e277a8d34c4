//! curl as the client: GET, a multi-megabyte POST with
//! `Expect: 100-continue`, a chunked upload, and several URLs over one
//! kept-alive connection. Skipped with a printed reason when curl is missing
//! and `CI` is unset; fails when `CI` is set.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const CURL_TIMEOUT: Duration = Duration::from_secs(60);

struct Curl {
    bin: PathBuf,
    edge_port: u16,
}

impl Curl {
    fn new(edge: &Edge) -> Option<Curl> {
        let bin = require_tool("curl", &["curl"])?;
        Some(Curl {
            bin,
            edge_port: edge.addr().port(),
        })
    }

    /// `http://HOST:PORT/path` resolved to the edge.
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.edge_port)
    }

    fn run(&self, host: &str, args: &[&str]) -> RunOutput {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--silent",
            "--show-error",
            "--http1.1",
            "--noproxy",
            "*",
            "--max-time",
            "50",
            "--resolve",
            &format!("{host}:{}:127.0.0.1", self.edge_port),
        ])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
        let out = run_command(cmd, CURL_TIMEOUT);
        assert!(
            out.status.success(),
            "curl {args:?} failed ({}):\n{}",
            out.status,
            out.stderr
        );
        out
    }
}

fn write_pattern_file(dir: &Path, len: u64) -> (PathBuf, String) {
    let path = dir.join("payload.bin");
    let mut f = fs::File::create(&path).expect("create payload");
    let pattern = Pattern::new();
    pattern.write_to(&mut f, len).expect("write payload");
    (path, pattern.digest(len))
}

#[test]
fn curl_get() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, ""));
    let Some(curl) = Curl::new(&edge) else { return };
    let out = curl.run(
        APP_HOST,
        &[
            "--write-out",
            "\nstatus=%{http_code}",
            &curl.url(APP_HOST, "/hello?x=1"),
        ],
    );
    assert!(
        out.stdout.starts_with("GET /hello?x=1 HTTP/1.1\r\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("\nstatus=200"), "{}", out.stdout);
    let req = up.last_request();
    assert_eq!(
        req.header("host"),
        Some(format!("{APP_HOST}:{}", curl.edge_port).as_str())
    );
    assert!(req
        .header("user-agent")
        .unwrap_or_default()
        .starts_with("curl/"));
}

#[test]
fn curl_custom_response_and_404() {
    let edge = Edge::start(&custom_response_endpoint(
        "http://hello.example.com",
        200,
        "Hello world!",
        "content-type = \"text/plain\"",
    ));
    let Some(curl) = Curl::new(&edge) else { return };
    let out = curl.run("hello.example.com", &[&curl.url("hello.example.com", "/")]);
    assert_eq!(out.stdout, "Hello world!");
    let out = curl.run(
        "nope.example.com",
        &[
            "--include",
            "--header",
            "Accept: application/json",
            &curl.url("nope.example.com", "/"),
        ],
    );
    assert!(out.stdout.starts_with("HTTP/1.1 404"), "{}", out.stdout);
    assert!(out
        .stdout
        .to_ascii_lowercase()
        .contains("ngrok-error-code: err_ngrok_3200"));
}

#[test]
fn curl_post_several_megabytes_with_expect_100_continue() {
    let up = Upstream::start(Behaviour::BodyDigest);
    let edge = Edge::start(&app_config(&up, ""));
    let Some(curl) = Curl::new(&edge) else { return };
    let len: u64 = 5 << 20;
    let (file, digest) = write_pattern_file(edge.dir(), len);
    let data = format!("@{}", file.display());
    let out = curl.run(
        APP_HOST,
        &[
            "--verbose",
            "--header",
            "Expect: 100-continue",
            "--header",
            "Content-Type: application/octet-stream",
            "--expect100-timeout",
            "20",
            "--data-binary",
            &data,
            &curl.url(APP_HOST, "/upload"),
        ],
    );
    assert_eq!(out.stdout, format!("len={len} digest={digest}"));
    assert!(
        out.stderr.contains("HTTP/1.1 100 Continue"),
        "curl never got 100 Continue from the edge:\n{}",
        out.stderr
    );
    let req = up.last_request();
    assert_eq!(req.method, "POST");
    assert!(
        req.header("expect").is_none(),
        "Expect must not be forwarded"
    );
}

#[test]
fn curl_chunked_upload() {
    let up = Upstream::start(Behaviour::BodyDigest);
    let edge = Edge::start(&app_config(&up, ""));
    let Some(curl) = Curl::new(&edge) else { return };
    let len: u64 = 3 << 20;
    let (file, digest) = write_pattern_file(edge.dir(), len);
    let data = format!("@{}", file.display());
    let out = curl.run(
        APP_HOST,
        &[
            "--header",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            &curl.url(APP_HOST, "/chunked"),
        ],
    );
    assert_eq!(out.stdout, format!("len={len} digest={digest}"));
    let req = up.last_request();
    assert!(req.chunked, "upstream should receive the body chunked");
}

#[test]
fn curl_reuses_one_connection_for_several_urls() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, ""));
    let Some(curl) = Curl::new(&edge) else { return };
    let urls: Vec<String> = (0..4)
        .map(|i| curl.url(APP_HOST, &format!("/k{i}")))
        .collect();
    let mut args = vec![
        "--write-out".to_string(),
        "%{http_code} %{num_connects}\\n".to_string(),
    ];
    for url in urls {
        args.extend(["--output".to_string(), "/dev/null".to_string(), url]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl.run(APP_HOST, &args);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(
        lines.iter().all(|l| l.starts_with("200 ")),
        "{}",
        out.stdout
    );
    let connects: u32 = lines
        .iter()
        .map(|l| {
            l.split(' ')
                .nth(1)
                .and_then(|n| n.parse::<u32>().ok())
                .expect("num_connects")
        })
        .sum();
    assert_eq!(
        connects, 1,
        "curl opened {connects} connections:\n{}",
        out.stdout
    );
    assert_eq!(up.request_count(), 4);
    assert_eq!(up.accepted(), 1, "one upstream connection for all four");
}

#[test]
fn curl_head_request() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, ""));
    let Some(curl) = Curl::new(&edge) else { return };
    let out = curl.run(APP_HOST, &["--head", &curl.url(APP_HOST, "/h")]);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
    assert!(out.stdout.to_ascii_lowercase().contains("content-length:"));
}
