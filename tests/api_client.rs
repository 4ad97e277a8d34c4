//! The REST API end to end with real peers: the official PyPI `ngrok-api`
//! client (in its own venv) creates a reserved domain, a cloud endpoint
//! with a custom-response policy and a credential; curl reaches the cloud
//! endpoint; the official ngrok Python SDK connects with the new credential,
//! shows up in /tunnel_sessions, and is cut off when the credential is
//! revoked. Cloud endpoints survive a restart.

mod common;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::api::*;
use common::*;

/// curl through the edge's HTTP listener with a Host: (status, body).
fn curl_host(edge: &Edge, host: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{}/", edge.addr()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import ngrok; ngrok.forward"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "the ngrok Python SDK is not installed; scripts/test.sh installs it";
        assert!(std::env::var_os("CI").is_none(), "{msg}; CI is set");
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

#[test]
fn official_client_creates_resources_and_sdk_uses_the_credential() {
    let Some(py) = api_client_python() else {
        return;
    };
    let data = data_dir();
    // A file token exists, so only it and API credentials are accepted.
    let edge = api_edge("[tunnel]\nauth_tokens = [\"file-token\"]\n", data.path());
    let key = bootstrap_key(&edge);
    let base = api_base(&edge);
    let host = "cloud.ringress.localhost";
    let out = Command::new(&py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/client.py"))
        .args(["--base-url", &base, "--api-key", &key, "--host", host])
        .output()
        .expect("run the ngrok-api client");
    assert!(
        out.status.success(),
        "client.py failed:\n{}\n{}\nedge:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        edge.stderr_text()
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
    let token = v["token"].as_str().expect("token").to_owned();
    let cred = v["credential"].as_str().expect("credential").to_owned();

    // The cloud endpoint answers through its policy, without a restart.
    let (status, body) = curl_host(&edge, host);
    assert_eq!((status, body.as_str()), (200, "hello from the cloud"));
    // The deleted one does not.
    assert_eq!(curl_host(&edge, &format!("tmp-{host}")).0, 404);

    if sdk_available() {
        let up = Upstream::start(Behaviour::Echo);
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = common::agent::dev_ca(&edge);
        let tunnel = edge.listener_addr("tunnel");
        let spawn = |token: &str, name: &str| {
            Command::new("python3")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/forward.py"))
                .args(["--server-addr", &format!("localhost:{}", tunnel.port())])
                .arg("--root-cas")
                .arg(&ca)
                .args(["--domain", "sdk.ringress.localhost", "--port"])
                .arg(up.addr().port().to_string())
                .args(["--authtoken", token])
                .stdin(Stdio::piped())
                .stdout(File::create(dir.path().join(format!("{name}.out"))).expect("out"))
                .stderr(File::create(dir.path().join(format!("{name}.err"))).expect("err"))
                .spawn()
                .expect("spawn python3")
        };
        // A wrong token is refused.
        let mut bad = spawn("not-a-token", "bad");
        let refused = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(dir.path().join("bad.err"))
                .unwrap_or_default()
                .contains("ERR_NGROK_107")
                || bad.try_wait().ok().flatten().is_some()
        });
        let _ = bad.kill();
        let _ = bad.wait();
        assert!(refused, "a bad token was not refused");

        let mut sdk = spawn(&token, "good");
        let online = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(dir.path().join("good.out"))
                .unwrap_or_default()
                .contains("://")
        });
        assert!(
            online,
            "the SDK did not come online with the new credential: {}",
            std::fs::read_to_string(dir.path().join("good.err")).unwrap_or_default()
        );
        let https = edge.listener_addr("https");
        let via = || {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-m",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--cacert",
                ])
                .arg(&ca)
                .args([
                    "--resolve",
                    &format!("sdk.ringress.localhost:{}:127.0.0.1", https.port()),
                ])
                .arg(format!("https://sdk.ringress.localhost:{}/", https.port()))
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(via(), "200");
        // The session is listed, with its credential.
        let (s, body) = authed(&base, &key, "GET", "/tunnel_sessions", None);
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let sessions = v["tunnel_sessions"].as_array().expect("list");
        assert_eq!(sessions.len(), 1, "{body}");
        assert_eq!(sessions[0]["credential"]["id"], cred.as_str());
        // And its endpoint, read-only.
        let (_, body) = authed(&base, &key, "GET", "/endpoints", None);
        assert!(
            body.contains("\"ephemeral\"") && body.contains("sdk.ringress.localhost"),
            "{body}"
        );

        // Revoking the credential closes the session at once.
        let (s, body) = authed(&base, &key, "DELETE", &format!("/credentials/{cred}"), None);
        assert_eq!(s, 204, "{body}");
        let gone = wait_until(Duration::from_secs(10), || via() == "404");
        assert!(gone, "the revoked credential's endpoint is still online");
        assert!(edge.wait_for_log("its credential was revoked", Duration::from_secs(5)));
        drop(sdk.stdin.take());
        let _ = sdk.kill();
        let _ = sdk.wait();
    }

    // Cloud endpoints survive a restart (same data dir).
    drop(edge);
    let edge = api_edge("", data.path());
    assert_eq!(curl_host(&edge, host).1, "hello from the cloud");
    // The bootstrap key is printed only once.
    assert!(!edge.stderr_text().contains(BOOTSTRAP_MARKER));
    let (s, body) = authed(&api_base(&edge), &key, "GET", "/endpoints", None);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains(host), "{body}");
}

#[test]
fn cloud_endpoint_forwards_to_an_internal_one_and_config_reload_keeps_it() {
    let data = data_dir();
    let edge = api_edge("", data.path());
    let key = bootstrap_key(&edge);
    let base = api_base(&edge);
    let internal = serde_json::json!({
        "url": "https://api.internal",
        "traffic_policy": "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 201\n          body: internal answer\n",
    });
    let (s, body) = authed(
        &base,
        &key,
        "POST",
        "/endpoints",
        Some(&internal.to_string()),
    );
    assert_eq!(s, 201, "{body}");
    assert!(
        body.contains("\"bindings\":[]") || body.contains("internal"),
        "{body}"
    );
    let public = serde_json::json!({
        "url": "http://front.ringress.localhost",
        "traffic_policy": "on_http_request:\n  - actions:\n      - type: forward-internal\n        config:\n          url: https://api.internal\n",
    });
    let (s, body) = authed(&base, &key, "POST", "/endpoints", Some(&public.to_string()));
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        curl_host(&edge, "front.ringress.localhost"),
        (201, "internal answer".to_owned())
    );
    // The inspector's routes on the API listener take the API's ids.
    let front: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = front["id"].as_str().expect("id");
    let path = format!("/endpoints/{id}/requests");
    let mut captured = serde_json::Value::Null;
    // Captures reach the ring through the drain thread (a few ms).
    let seen = wait_until(Duration::from_secs(5), || {
        let (s, text) = authed(&base, &key, "GET", &path, None);
        captured = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        s == 200
            && captured["requests"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    });
    assert!(seen, "{captured}");
    assert_eq!(captured["endpoint"], "http://front.ringress.localhost");
    // .internal endpoints are never reachable directly.
    assert_eq!(curl_host(&edge, "api.internal").0, 404);
    // A SIGHUP reload of the config file keeps the cloud endpoints.
    edge.write_config("[[endpoints]]\nurl = \"http://cfg.ringress.localhost\"\ntraffic_policy = { on_http_request = [{ actions = [{ type = \"custom-response\", config = { status_code = 200, body = \"cfg\" } }] }] }\n");
    edge.sighup();
    assert!(edge.wait_for_log("config reloaded", Duration::from_secs(10)));
    assert_eq!(curl_host(&edge, "cfg.ringress.localhost").1, "cfg");
    assert_eq!(
        curl_host(&edge, "front.ringress.localhost").1,
        "internal answer"
    );
    // The config endpoint is listed read-only and cannot be deleted.
    let (_, body) = authed(&base, &key, "GET", "/endpoints", None);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let cfg = v["endpoints"]
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["url"] == "http://cfg.ringress.localhost")
        .expect("config endpoint listed")
        .clone();
    assert_eq!(cfg["type"], "config");
    let (s, body) = authed(
        &base,
        &key,
        "DELETE",
        &format!("/endpoints/{}", cfg["id"].as_str().expect("id")),
        None,
    );
    assert_eq!(s, 400, "{body}");
    // A cloud endpoint on a config endpoint's URL is refused.
    let dup = serde_json::json!({"url": "http://cfg.ringress.localhost", "traffic_policy": internal["traffic_policy"]});
    let (s, body) = authed(&base, &key, "POST", "/endpoints", Some(&dup.to_string()));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("already in use"), "{body}");
}

/// A credential's ACL (`bind:` rules) limits what its agents may bind:
/// an allowed name binds, another is refused at Bind with a clear error.
#[test]
fn credential_acl_limits_what_its_agents_bind() {
    let data = data_dir();
    let edge = api_edge("[tunnel]\nauth_tokens = [\"file-token\"]\n", data.path());
    let key = bootstrap_key(&edge);
    let base = api_base(&edge);
    let body = serde_json::json!({"description": "acl", "acl": ["bind:*.ok.ringress.localhost"]});
    let (s, text) = authed(&base, &key, "POST", "/credentials", Some(&body.to_string()));
    assert_eq!(s, 201, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let token = v["token"].as_str().expect("token").to_owned();
    let up = Upstream::start(Behaviour::Echo);
    let upstream = up.addr().to_string();

    let (_agent, url) = common::agent::Agent::start(
        &edge,
        &upstream,
        &[
            "--authtoken",
            &token,
            "--url",
            "https://app.ok.ringress.localhost",
        ],
    );
    assert!(url.contains("app.ok.ringress.localhost"), "{url}");

    let ca = common::agent::dev_ca(&edge);
    let mut cmd = Command::new(common::edge::binary());
    cmd.args(["http", &upstream, "--server-addr"])
        .arg(edge.listener_addr("tunnel").to_string())
        .arg("--root-cas")
        .arg(&ca)
        .args([
            "--authtoken",
            &token,
            "--url",
            "https://app.other.ringress.localhost",
        ])
        .args(["--web-addr", "false"])
        .env_remove("RINGRESS_AUTHTOKEN");
    let out = run_command(cmd, Duration::from_secs(30));
    assert!(
        !out.status.success(),
        "bound a name outside its ACL: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("ACL") && out.stderr.contains("ERR_NGROK_9017"),
        "{}",
        out.stderr
    );
}
