//! `ringress api` as a process, against a small local HTTP server (the
//! test upstream) standing in for the edge's REST API: the request it
//! sends (method, path, ngrok's headers, JSON body), the JSON it prints,
//! and the non-zero exit with ngrok's error code when the API refuses.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn api(server: &Upstream, args: &[&str], env_key: Option<&str>) -> RunOutput {
    let mut cmd = Command::new(common::edge::binary());
    cmd.arg("api")
        .args(args)
        .arg("--api-url")
        .arg(format!("http://{}", server.addr()))
        .env_remove("RINGRESS_API_KEY")
        .env_remove("RINGRESS_API_URL")
        .env_remove("RUST_LOG");
    if let Some(k) = env_key {
        cmd.env("RINGRESS_API_KEY", k);
    }
    run_command(cmd, Duration::from_secs(20))
}

fn json_answer(status: &str, body: &str) -> Behaviour {
    Behaviour::fixed(&format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[test]
fn create_endpoint_sends_ngrok_shaped_request_and_prints_json() {
    let server = Upstream::start(json_answer(
        "201 Created",
        r#"{"id":"ep_1","url":"https://app.example.com","type":"cloud"}"#,
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yml");
    std::fs::write(
        &policy,
        "on_http_request:\n  - actions:\n      - type: custom-response\n",
    )
    .expect("write");
    let out = api(
        &server,
        &[
            "endpoints",
            "create",
            "--url",
            "https://app.example.com",
            "--traffic-policy-file",
            policy.to_str().expect("utf-8"),
            "--api-key",
            "k-123",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let printed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(printed["id"], "ep_1");
    let req = server.last_request();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/endpoints")
    );
    assert_eq!(req.header("authorization"), Some("Bearer k-123"));
    assert_eq!(req.header("ngrok-version"), Some("2"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("JSON body");
    assert_eq!(body["url"], "https://app.example.com");
    assert!(body["traffic_policy"]
        .as_str()
        .is_some_and(|p| p.contains("custom-response")));
}

#[test]
fn api_key_from_env_list_and_delete() {
    let server = Upstream::start(json_answer(
        "200 OK",
        r#"{"reserved_domains":[],"uri":"/reserved_domains","next_page_uri":null}"#,
    ));
    let out = api(
        &server,
        &["reserved-domains", "list", "--limit", "10"],
        Some("env-key"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let req = server.last_request();
    assert_eq!(req.target, "/reserved_domains?limit=10");
    assert_eq!(req.header("authorization"), Some("Bearer env-key"));

    let server = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
    ));
    let out = api(&server, &["credentials", "delete", "cr_42"], Some("k"));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "");
    let req = server.last_request();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", "/credentials/cr_42")
    );
}

#[test]
fn api_errors_exit_non_zero_with_the_ngrok_code() {
    let server = Upstream::start(json_answer(
        "400 Bad Request",
        r#"{"error_code":"ERR_NGROK_319","status_code":400,"msg":"You must reserve a custom hostname","details":{"operation_id":"op_1"}}"#,
    ));
    let out = api(
        &server,
        &["endpoints", "create", "--url", "https://nope.example.com"],
        Some("k"),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stderr.contains("ERR_NGROK_319"), "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 400"), "{}", out.stderr);
    assert!(
        out.stdout.contains("op_1"),
        "the error JSON on stdout: {}",
        out.stdout
    );

    // Usage errors never reach the server.
    let before = server.request_count();
    let out = api(&server, &["endpoints", "get"], Some("k"));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stderr.contains("needs the object's id"),
        "{}",
        out.stderr
    );
    assert_eq!(server.request_count(), before);
}

#[test]
fn unreachable_api_is_a_clear_error() {
    // A port nothing listens on: bind, learn it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut cmd = Command::new(common::edge::binary());
    cmd.args(["api", "endpoints", "list", "--api-url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .env_remove("RINGRESS_API_KEY");
    let out = run_command(cmd, Duration::from_secs(20));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}
