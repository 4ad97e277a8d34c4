//! `ringress edge --config FILE --check`: valid configs exit 0, invalid ones
//! exit non-zero with a message naming the problem. Also: an invalid config
//! at startup stops the edge with a non-zero exit.

mod common;

use std::time::Duration;

use common::*;

const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

fn check(config: &str) -> RunOutput {
    run_ringress(
        config,
        &["edge", "--config", "{CONFIG}", "--check"],
        CHECK_TIMEOUT,
    )
}

/// Asserts `--check` fails and stderr mentions one of `needles`
/// (case-insensitive).
fn assert_check_fails(config: &str, needles: &[&str]) {
    let out = check(config);
    assert!(
        !out.status.success(),
        "--check accepted an invalid config:\n{config}\nstderr:\n{}",
        out.stderr
    );
    let text = format!("{}\n{}", out.stderr, out.stdout).to_ascii_lowercase();
    assert!(
        needles
            .iter()
            .any(|n| text.contains(&n.to_ascii_lowercase())),
        "error message should name the problem (one of {needles:?}); stderr:\n{}",
        out.stderr
    );
}

const FULL_CONFIG: &str = r#"
workers = 2
[listen]
http = "127.0.0.1:8080"
[timeouts]
client_idle = "5m"
upstream_idle = "5m"
header_read = "30s"
upstream_connect = "10s"
shutdown_grace = "30s"
[limits]
max_connections_per_worker = 65536
max_head_bytes = 1048576
upstream_idle_per_host = 64
[[endpoints]]
url = "http://app.example.com"
upstream = "http://127.0.0.1:9000"
[[endpoints]]
url = "http://*.example.com"
upstream = "http://127.0.0.1:9001"
[[endpoints]]
url = "http://hello.example.com"
traffic_policy = { on_http_request = [ { actions = [ { type = "custom-response", config = { status_code = 200, body = "Hello world!", headers = { content-type = "text/plain" } } } ] } ] }
"#;

#[test]
fn contract_example_config_passes_check() {
    let out = check(FULL_CONFIG);
    assert!(out.status.success(), "stderr:\n{}", out.stderr);
}

#[test]
fn minimal_config_passes_check() {
    let out = check("[listen]\nhttp = \"127.0.0.1:8080\"\n\n[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:9000\"\n");
    assert!(out.status.success(), "stderr:\n{}", out.stderr);
}

#[test]
fn check_does_not_bind_the_listen_address() {
    // --check validates only: it must work while the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = check(&format!(
        "[listen]\nhttp = \"{addr}\"\n\n[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:9000\"\n"
    ));
    assert!(out.status.success(), "stderr:\n{}", out.stderr);
}

#[test]
fn bad_toml_fails_check() {
    assert_check_fails(
        "[listen\nhttp = \"127.0.0.1:8080\"\n",
        &["toml", "parse", "line 1", "expected"],
    );
}

#[test]
fn unknown_policy_action_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy = { on_http_request = [ { actions = [ { type = \"frobnicate\" } ] } ] }\n",
        &["frobnicate"],
    );
}

#[test]
fn policy_expression_syntax_error_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy = { on_http_request = [ { expressions = [\"req.url.path ==\"], actions = [ { type = \"custom-response\", config = { status_code = 200, body = \"x\" } } ] } ] }\n",
        &["expressions"],
    );
}

#[test]
fn policy_action_in_a_phase_ngrok_does_not_allow_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:9000\"\ntraffic_policy = { on_http_response = [ { actions = [ { type = \"redirect\", config = { to = \"/x\" } } ] } ] }\n",
        &["on_http_response"],
    );
}

#[test]
fn endpoint_without_upstream_or_policy_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"http://lonely.example.com\"\n",
        &["lonely.example.com", "upstream"],
    );
}

#[test]
fn bad_endpoint_url_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"not a url\"\nupstream = \"http://127.0.0.1:9000\"\n",
        &["not a url"],
    );
}

#[test]
fn unsupported_endpoint_scheme_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"ftp://files.example.com\"\nupstream = \"http://127.0.0.1:9000\"\n",
        &["ftp://files.example.com", "scheme", "ftp"],
    );
}

#[test]
fn bad_upstream_url_fails_check() {
    assert_check_fails(
        "[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"definitely not a url\"\n",
        &["definitely not a url", "upstream"],
    );
}

#[test]
fn bad_duration_fails_check() {
    assert_check_fails(
        "[timeouts]\nheader_read = \"soonish\"\n\n[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:9000\"\n",
        &["soonish", "header_read"],
    );
}

#[test]
fn missing_config_file_fails_check() {
    let out = run_ringress(
        "",
        &[
            "edge",
            "--config",
            "/nonexistent/ringress-test/none.toml",
            "--check",
        ],
        CHECK_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("/nonexistent/ringress-test/none.toml"),
        "stderr should name the file:\n{}",
        out.stderr
    );
}

#[test]
fn invalid_config_at_startup_exits_non_zero() {
    let out = run_ringress(
        "[[endpoints]]\nurl = \"http://a.example.com\"\ntraffic_policy = { on_http_request = [ { actions = [ { type = \"frobnicate\" } ] } ] }\n",
        &["edge", "--config", "{CONFIG}", "--listen-http", "127.0.0.1:0"],
        CHECK_TIMEOUT,
    );
    assert!(!out.status.success(), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("frobnicate"), "stderr:\n{}", out.stderr);
    assert!(!out.stderr.contains("ringress edge ready"));
}
