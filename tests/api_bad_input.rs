//! Bad input to the REST API: each kind gets a clear ngrok-shaped error
//! (`{error_code, status_code, msg, details}`) and leaves the store as it
//! was.

mod common;

use common::api::*;

fn assert_error(resp: &(u16, String), status: u16, code: &str, what: &str) {
    let (s, body) = resp;
    assert_eq!(*s, status, "{what}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    assert_eq!(v["error_code"], code, "{what}: {body}");
    assert_eq!(v["status_code"], status, "{what}: {body}");
    assert!(
        v["msg"].as_str().is_some_and(|m| m.len() > 10),
        "{what}: {body}"
    );
    assert!(
        v["details"]["operation_id"]
            .as_str()
            .is_some_and(|o| o.starts_with("op_")),
        "{what}: {body}"
    );
}

const OK_POLICY: &str = "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 200\n          body: ok\n";

fn endpoint(url: &str) -> String {
    serde_json::json!({"url": url, "traffic_policy": OK_POLICY}).to_string()
}

fn counts(base: &str, key: &str) -> Vec<usize> {
    [
        "/endpoints",
        "/reserved_domains",
        "/credentials",
        "/api_keys",
        "/tls_certificates",
    ]
    .iter()
    .map(|p| {
        let (s, body) = authed(base, key, "GET", p, None);
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let list = v
            .as_object()
            .expect("object")
            .iter()
            .find_map(|(_, x)| x.as_array())
            .expect("a list field");
        list.len()
    })
    .collect()
}

#[test]
fn bad_requests_get_ngrok_errors_and_change_nothing() {
    let data = data_dir();
    let edge = api_edge("", data.path());
    let key = bootstrap_key(&edge);
    let base = api_base(&edge);
    let before = counts(&base, &key);

    // Authentication and version.
    assert_error(
        &call(&base, "GET", "/endpoints", &["Ngrok-Version: 2"], None),
        401,
        "ERR_NGROK_200",
        "no key",
    );
    assert_error(
        &call(
            &base,
            "GET",
            "/endpoints",
            &["Authorization: Basic", "Ngrok-Version: 2"],
            None,
        ),
        401,
        "ERR_NGROK_201",
        "unparsable",
    );
    assert_error(
        &call(
            &base,
            "POST",
            "/endpoints",
            &["Authorization: Bearer wrong_key", "Ngrok-Version: 2"],
            Some(&endpoint("http://a.ringress.localhost")),
        ),
        401,
        "ERR_NGROK_203",
        "wrong key",
    );
    let auth = format!("Authorization: Bearer {key}");
    assert_error(
        &call(
            &base,
            "POST",
            "/endpoints",
            &[&auth],
            Some(&endpoint("http://a.ringress.localhost")),
        ),
        400,
        "ERR_NGROK_218",
        "no Ngrok-Version",
    );
    assert_error(
        &call(
            &base,
            "GET",
            "/endpoints",
            &[&auth, "Ngrok-Version: 1"],
            None,
        ),
        400,
        "ERR_NGROK_219",
        "version 1",
    );

    // Bodies.
    assert_error(
        &authed(&base, &key, "POST", "/endpoints", Some("{\"url\": ")),
        400,
        "ERR_NGROK_100",
        "malformed JSON",
    );
    assert_error(
        &authed(&base, &key, "POST", "/endpoints", Some("[1,2]")),
        400,
        "ERR_NGROK_100",
        "not an object",
    );
    let unknown = serde_json::json!({"url": "http://a.ringress.localhost", "traffic_policy": OK_POLICY, "upstream": "x"});
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/endpoints",
            Some(&unknown.to_string()),
        ),
        400,
        "ERR_NGROK_100",
        "unknown field",
    );
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/credentials",
            Some("{\"acl\": [\"bind:a\"], \"colour\": 1}"),
        ),
        400,
        "ERR_NGROK_100",
        "unknown credential field",
    );
    let huge = format!("{{\"description\": \"{}\"}}", "x".repeat(2 << 20));
    assert_error(
        &authed(&base, &key, "POST", "/credentials", Some(&huge)),
        413,
        "ERR_NGROK_413",
        "oversize body",
    );

    // URLs (spec §1.1 rows a cloud endpoint can hit).
    for (url, code) in [
        ("", "ERR_NGROK_249"),
        ("app.ringress.localhost", "ERR_NGROK_249"),
        ("ftp://app.ringress.localhost", "ERR_NGROK_9036"),
        ("tcp://1.tcp.ngrok.io:12345", "ERR_NGROK_9036"),
        ("http://app.ringress.localhost/path", "ERR_NGROK_9037"),
        ("http://app.ringress.localhost?q=1", "ERR_NGROK_9037"),
        ("http://user@app.ringress.localhost", "ERR_NGROK_9037"),
        ("http://app.ringress.localhost/", "ERR_NGROK_9038"),
        ("http://bad_host!.ringress.localhost", "ERR_NGROK_355"),
        ("http://a..ringress.localhost", "ERR_NGROK_327"),
        ("http://-a.ringress.localhost", "ERR_NGROK_328"),
        ("http://ab--c.ringress.localhost", "ERR_NGROK_330"),
        ("http://a-.ringress.localhost", "ERR_NGROK_329"),
        ("http://xn--zz.ringress.localhost", "ERR_NGROK_347"),
        (
            &format!("http://{}.ringress.localhost", "a".repeat(64)),
            "ERR_NGROK_396",
        ),
        ("http://example.ngrok.app:81", "ERR_NGROK_9035"),
        ("https://example.ngrok.app:8443", "ERR_NGROK_9035"),
        ("https://a.b.c.d.e.f.internal", "ERR_NGROK_9031"),
        ("https://example.internal:70000", "ERR_NGROK_9030"),
        ("https://", "ERR_NGROK_249"),
    ] {
        assert_error(
            &authed(&base, &key, "POST", "/endpoints", Some(&endpoint(url))),
            400,
            code,
            url,
        );
    }
    let public_internal = serde_json::json!({"url": "https://example.internal", "bindings": ["public"], "traffic_policy": OK_POLICY});
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/endpoints",
            Some(&public_internal.to_string()),
        ),
        400,
        "ERR_NGROK_331",
        "public .internal",
    );
    let internal_public = serde_json::json!({"url": "https://example.com", "bindings": ["internal"], "traffic_policy": OK_POLICY});
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/endpoints",
            Some(&internal_public.to_string()),
        ),
        400,
        "ERR_NGROK_9029",
        "internal non-.internal",
    );
    let two = serde_json::json!({"url": "https://example.com", "bindings": ["public", "internal"], "traffic_policy": OK_POLICY});
    assert_error(
        &authed(&base, &key, "POST", "/endpoints", Some(&two.to_string())),
        400,
        "ERR_NGROK_15005",
        "two bindings",
    );

    // Policies.
    let no_policy = serde_json::json!({"url": "http://a.ringress.localhost"});
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/endpoints",
            Some(&no_policy.to_string()),
        ),
        400,
        "ERR_NGROK_9026",
        "no policy",
    );
    let no_term = serde_json::json!({"url": "http://a.ringress.localhost", "traffic_policy": "on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            a: b\n"});
    let r = authed(
        &base,
        &key,
        "POST",
        "/endpoints",
        Some(&no_term.to_string()),
    );
    assert_error(&r, 400, "ERR_NGROK_9026", "non-terminating policy");
    assert!(r.1.contains("terminating action"), "{}", r.1);
    let conditional = serde_json::json!({"url": "http://a.ringress.localhost", "traffic_policy": "on_http_request:\n  - expressions: [\"req.method == 'GET'\"]\n    actions:\n      - type: custom-response\n        config:\n          status_code: 200\n"});
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/endpoints",
            Some(&conditional.to_string()),
        ),
        400,
        "ERR_NGROK_9026",
        "conditional only",
    );
    let garbage = serde_json::json!({"url": "http://a.ringress.localhost", "traffic_policy": "on_http_request: [ {actions: [{type: no-such-action}]} ]"});
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/endpoints",
            Some(&garbage.to_string()),
        ),
        400,
        "ERR_NGROK_9026",
        "unknown action",
    );

    // Domains, certificates, credentials.
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/reserved_domains",
            Some("{\"domain\": \"app.*.example.com\"}"),
        ),
        400,
        "ERR_NGROK_402",
        "inner wildcard",
    );
    for internal in ["api.internal", "*.corp.internal"] {
        assert_error(
            &authed(
                &base,
                &key,
                "POST",
                "/reserved_domains",
                Some(&format!("{{\"domain\": \"{internal}\"}}")),
            ),
            400,
            "ERR_NGROK_326",
            internal,
        );
    }
    let r = authed(
        &base,
        &key,
        "POST",
        "/reserved_domains",
        Some("{\"domain\": \"*.example.com\"}"),
    );
    assert_error(&r, 400, "ERR_NGROK_435", "wildcard without certificate");
    assert!(
        r.1.contains("DNS-01") && r.1.contains("certificate_id"),
        "{}",
        r.1
    );
    assert_error(&authed(&base, &key, "POST", "/reserved_domains", Some("{\"domain\": \"a.example.com\", \"certificate_id\": \"cert_x\", \"certificate_management_policy\": {\"authority\": \"letsencrypt\"}}")), 400, "ERR_NGROK_434", "cert and policy");
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/reserved_domains",
            Some("{\"domain\": \"a.example.com\", \"certificate_id\": \"cert_missing\"}"),
        ),
        404,
        "ERR_NGROK_404",
        "missing certificate",
    );
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/tls_certificates",
            Some("{\"certificate_pem\": \"nope\", \"private_key_pem\": \"nope\"}"),
        ),
        400,
        "ERR_NGROK_400",
        "bad PEM",
    );
    assert_error(
        &authed(
            &base,
            &key,
            "POST",
            "/credentials",
            Some("{\"acl\": [\"connect:x\"]}"),
        ),
        400,
        "ERR_NGROK_400",
        "bad ACL",
    );

    // Ids, methods, pagination.
    assert_error(
        &authed(&base, &key, "GET", "/endpoints/ep_nope", None),
        404,
        "ERR_NGROK_404",
        "unknown id",
    );
    assert_error(
        &authed(&base, &key, "DELETE", "/credentials/cr_nope", None),
        404,
        "ERR_NGROK_404",
        "delete unknown",
    );
    assert_error(
        &authed(&base, &key, "PUT", "/endpoints", None),
        405,
        "ERR_NGROK_405",
        "method",
    );
    assert_error(
        &authed(&base, &key, "GET", "/endpoints?limit=0", None),
        400,
        "ERR_NGROK_400",
        "limit 0",
    );
    assert_error(
        &authed(&base, &key, "GET", "/endpoints?limit=101", None),
        400,
        "ERR_NGROK_400",
        "limit 101",
    );
    assert_error(
        &authed(&base, &key, "GET", "/nothing", None),
        404,
        "ERR_NGROK_404",
        "no route",
    );

    assert_eq!(counts(&base, &key), before, "bad input changed the store");
    // Nothing half-applied reached the data plane either.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: a.ringress.localhost",
        ])
        .arg(format!("http://{}/", edge.addr()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}
