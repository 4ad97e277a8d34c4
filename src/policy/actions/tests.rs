//! Table-driven, sans-IO tests of every action: a policy document and a
//! raw request in, the upstream head or the edge's reply out.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http1::{RequestHead, ResponseHead};
use crate::policy::pipeline::{self, RequestOutcome, ResponseOutcome};
use crate::policy::{CompiledPolicy, ConnInfo, Exchange, ReplyStyle, RequestInfo, ResponseInfo};
use crate::proxy::headers::{
    encode_request_head_edited, encode_response_head_edited, ClientConn, ForwardInfo,
};
use crate::route::{Endpoint, Scheme};

pub(crate) fn endpoint_with(yaml: &str) -> Arc<Endpoint> {
    let policy = CompiledPolicy::from_text(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Arc::new(Endpoint {
        url: "https://app.example.com".into(),
        scheme: Scheme::Https,
        host: "app.example.com".into(),
        upstream: None,
        policy: Some(Arc::new(policy)),
        tunnel: None,
        observe: Default::default(),
    })
}

fn conn(ip: &str) -> ConnInfo {
    ConnInfo {
        client: Some(SocketAddr::new(ip.parse().expect("ip"), 40000)),
        server_port: 443,
        tls: None,
    }
}

/// The result of the request phase.
pub(crate) struct Run {
    pub outcome: RequestOutcome,
    /// The edge's reply, when it made one.
    pub reply: String,
    /// The head sent upstream, when forwarded.
    pub upstream: String,
    pub ex: Exchange,
}

pub(crate) fn run_full(
    ep: &Arc<Endpoint>,
    raw: &str,
    ip: &str,
    body: Option<&[u8]>,
    internal: &[Arc<Endpoint>],
) -> Run {
    let mut head = RequestHead::new();
    assert_eq!(head.parse(raw.as_bytes(), 1 << 20), Ok(true), "{raw}");
    let mut host = String::new();
    assert!(crate::route::normalize_host(
        head.authority.get(raw.as_bytes()),
        &mut host
    ));
    let c = conn(ip);
    let info = RequestInfo {
        buf: raw.as_bytes(),
        head: &head,
        scheme: Scheme::Https,
        version: "HTTP/1.1",
        host: &host,
        conn: &c,
    };
    let mut ex = Exchange::new();
    let mut out = Vec::new();
    let lookup = |url: &str| {
        internal
            .iter()
            .find(|e| url.contains(e.host.as_str()))
            .cloned()
    };
    let outcome = pipeline::on_http_request_now(
        ep,
        &info,
        body,
        &lookup,
        &mut ex,
        ReplyStyle::default(),
        &mut out,
    );
    let mut upstream = Vec::new();
    if matches!(outcome, RequestOutcome::Forward(_)) {
        let fi = ForwardInfo {
            client_ip: ip,
            proto: "https",
        };
        encode_request_head_edited(raw.as_bytes(), &head, &fi, Some(&ex.req), &mut upstream);
    }
    Run {
        outcome,
        reply: String::from_utf8_lossy(&out).into_owned(),
        upstream: String::from_utf8_lossy(&upstream).into_owned(),
        ex,
    }
}

pub(crate) fn run(yaml: &str, raw: &str) -> Run {
    run_full(&endpoint_with(yaml), raw, "203.0.113.7", None, &[])
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n{extra}\r\n")
}

fn status(reply: &str) -> u16 {
    reply
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"))
}

fn refused(yaml: &str) -> String {
    match CompiledPolicy::from_text(yaml) {
        Ok(_) => panic!("should be refused:\n{yaml}"),
        Err(e) => e,
    }
}

#[test]
fn custom_response_hello_world() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 200\n          body: Hello, World!\n          headers:\n            content-type: text/plain\n",
        &get("/", ""),
    );
    assert!(matches!(r.outcome, RequestOutcome::Replied));
    assert!(r.reply.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.reply);
    assert!(r.reply.contains("content-type: text/plain\r\n"));
    assert!(r.reply.ends_with("\r\n\r\nHello, World!"));
}

#[test]
fn custom_response_interpolates_and_keeps_json_type() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 404\n          body: '{\"path\": \"${req.url.path}\", \"m\": \"${req.method}\"}'\n          headers:\n            x-ip: ${conn.client_ip}\n",
        &get("/missing?a=1", ""),
    );
    assert_eq!(status(&r.reply), 404);
    assert!(r.reply.contains("x-ip: 203.0.113.7\r\n"), "{}", r.reply);
    assert!(
        r.reply.contains("content-type: application/json"),
        "{}",
        r.reply
    );
    assert!(
        r.reply
            .ends_with("{\"path\": \"/missing\", \"m\": \"GET\"}"),
        "{}",
        r.reply
    );
}

#[test]
fn expressions_select_rules() {
    let yaml = "on_http_request:\n  - expressions:\n      - req.method == 'POST'\n      - req.url.path.startsWith('/api')\n    actions:\n      - type: deny\n        config:\n          status_code: 405\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            x-seen: 'yes'\n";
    let r = run(
        yaml,
        "POST /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status(&r.reply), 405);
    assert!(r.reply.contains("content-length: 0"), "{}", r.reply);
    let r = run(
        yaml,
        "POST /web HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(matches!(r.outcome, RequestOutcome::Forward(None)));
    assert!(r.upstream.contains("x-seen: yes\r\n"), "{}", r.upstream);
}

#[test]
fn deny_default_403() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: deny\n",
        &get("/", ""),
    );
    assert_eq!(status(&r.reply), 403);
}

#[test]
fn redirect_cases() {
    // (config, path, expected status, expected location or None for no-op)
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            "to: https://example.org/new",
            "/old",
            302,
            Some("https://example.org/new"),
        ),
        (
            "from: '^https://app.example.com/old/(.*)$'\n          to: 'https://app.example.com/new/$1'\n          status_code: 301",
            "/old/page?x=1",
            301,
            Some("https://app.example.com/new/page?x=1"),
        ),
        (
            "from: '^https://app.example.com/old/(.*)$'\n          to: 'https://app.example.com/new/$1'",
            "/other",
            0,
            None,
        ),
        (
            "to: 'https://${req.host}/landing'",
            "/x",
            302,
            Some("https://app.example.com/landing"),
        ),
    ];
    for (cfg, path, st, loc) in cases {
        let yaml = format!("on_http_request:\n  - actions:\n      - type: redirect\n        config:\n          {cfg}\n");
        let r = run(&yaml, &get(path, ""));
        match loc {
            Some(l) => {
                assert_eq!(status(&r.reply), *st, "{cfg}");
                assert!(
                    r.reply.contains(&format!("location: {l}\r\n")),
                    "{cfg}: {}",
                    r.reply
                );
            }
            None => assert!(matches!(r.outcome, RequestOutcome::Forward(None)), "{cfg}"),
        }
    }
    assert!(refused("on_http_request:\n  - actions:\n      - type: redirect\n        config:\n          to: /x\n          status_code: 200\n").contains("3xx"));
}

#[test]
fn url_rewrite_cases() {
    let cases: &[(&str, &str, &str)] = &[
        ("from: /old\n          to: /new", "/old/a?q=1", "GET /new/a?q=1 HTTP/1.1\r\n"),
        ("from: '^https://app.example.com/api/v1/(.*)'\n          to: 'https://app.example.com/v1/$1'", "/api/v1/users", "GET /v1/users HTTP/1.1\r\n"),
        ("from: nomatch\n          to: x", "/same", "GET /same HTTP/1.1\r\n"),
        ("from: '\\?(.*)$'\n          to: '?user=${req.method}&$1'", "/q?a=1", "GET /q?user=GET&a=1 HTTP/1.1\r\n"),
    ];
    for (cfg, path, line) in cases {
        let yaml = format!("on_http_request:\n  - actions:\n      - type: url-rewrite\n        config:\n          {cfg}\n");
        let r = run(&yaml, &get(path, ""));
        assert!(r.upstream.starts_with(line), "{cfg}: {}", r.upstream);
    }
    // A host change is sent as the new Host.
    let r = run(
        "on_http_request:\n  - actions:\n      - type: url-rewrite\n        config:\n          from: app.example.com\n          to: api.example.com\n",
        &get("/p", ""),
    );
    assert!(
        r.upstream.contains("Host: api.example.com\r\n"),
        "{}",
        r.upstream
    );
    assert!(
        r.upstream.contains("X-Forwarded-Host: app.example.com\r\n"),
        "{}",
        r.upstream
    );
}

#[test]
fn regex_invalid_after_interpolation_is_3901() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: url-rewrite\n        config:\n          from: '${getReqHeader(\"x-re\")[0]}'\n          to: /x\n",
        &get("/", "X-Re: (unclosed\r\n"),
    );
    assert_eq!(status(&r.reply), 500);
    assert!(r.reply.contains("ERR_NGROK_3901"), "{}", r.reply);
}

#[test]
fn runtime_error_is_3900() {
    let r = run(
        "on_http_request:\n  - expressions:\n      - req.headers['x-missing'][0] == 'a'\n    actions:\n      - type: deny\n",
        &get("/", ""),
    );
    assert_eq!(status(&r.reply), 500);
    assert!(r.reply.contains("ERR_NGROK_3900"), "{}", r.reply);
}

#[test]
fn add_and_remove_headers() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            X-Client: ${conn.client_ip}\n            x-static: s\n      - type: remove-headers\n        config:\n          headers: [x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-drop, x-static]\n",
        &get("/", "X-Drop: 1\r\nX-Keep: 2\r\n"),
    );
    let u = &r.upstream;
    assert!(u.contains("x-client: 203.0.113.7\r\n"), "{u}");
    assert!(u.contains("X-Keep: 2\r\n"), "{u}");
    for gone in [
        "X-Drop",
        "x-static",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    ] {
        assert!(!u.contains(gone), "{gone} in {u}");
    }
    for bad in ["user-agent", "content-length", "connection"] {
        let e = refused(&format!("on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            {bad}: x\n"));
        assert!(e.contains("cannot be added"), "{e}");
    }
    let e = refused("on_http_request:\n  - actions:\n      - type: remove-headers\n        config:\n          headers: [user-agent]\n");
    assert!(e.contains("cannot be removed"), "{e}");
}

#[test]
fn host_rewrite_and_location_back() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            host: localhost\n",
        &get("/", ""),
    );
    assert!(r.upstream.contains("Host: localhost\r\n"), "{}", r.upstream);
    assert_eq!(r.upstream.matches("\r\nHost:").count(), 1, "{}", r.upstream);
    assert!(r.upstream.contains("X-Forwarded-Host: app.example.com\r\n"));
    let raw = b"HTTP/1.1 302 Found\r\nLocation: http://localhost:3000/login?next=/\r\nContent-Length: 0\r\n\r\n";
    let mut res = ResponseHead::new();
    assert_eq!(res.parse(raw, 1 << 20, false), Ok(true));
    let mut out = Vec::new();
    encode_response_head_edited(raw, &res, ClientConn::KeepAlive, Some(&r.ex.res), &mut out);
    let out = String::from_utf8(out).expect("ascii");
    assert!(
        out.contains("Location: https://app.example.com/login?next=/\r\n"),
        "{out}"
    );
}

#[test]
fn basic_auth_cases() {
    let yaml = "on_http_request:\n  - actions:\n      - type: basic-auth\n        config:\n          realm: staging\n          credentials:\n            - alice:correct-horse\n            - bob:battery-staple\n";
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let cases: &[(Option<String>, bool)] = &[
        (None, false),
        (Some(format!("Basic {}", b64("alice:correct-horse"))), true),
        (Some(format!("basic {}", b64("bob:battery-staple"))), true),
        (
            Some(format!("Basic {}", b64("alice:wrong-password"))),
            false,
        ),
        (Some("Basic !!notbase64".into()), false),
        (Some("Bearer abc".into()), false),
    ];
    for (auth, ok) in cases {
        let extra = auth
            .as_ref()
            .map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let r = run(yaml, &get("/", &extra));
        if *ok {
            assert!(
                matches!(r.outcome, RequestOutcome::Forward(None)),
                "{auth:?}"
            );
            assert!(
                r.upstream.contains("Authorization"),
                "credentials are forwarded"
            );
        } else {
            assert_eq!(status(&r.reply), 401, "{auth:?}");
            assert!(
                r.reply
                    .contains("www-authenticate: Basic realm=\"staging\"\r\n"),
                "{}",
                r.reply
            );
        }
    }
    let e = refused("on_http_request:\n  - actions:\n      - type: basic-auth\n        config:\n          credentials: ['a:short']\n");
    assert!(
        e.contains("credentials[0]") && e.contains("8 to 128"),
        "{e}"
    );
    let e = refused("on_http_response:\n  - actions:\n      - type: basic-auth\n        config:\n          credentials: ['a:longenough']\n");
    assert!(e.contains("not allowed in on_http_response"), "{e}");
}

#[test]
fn basic_auth_result_variables() {
    let yaml = "on_http_request:\n  - actions:\n      - type: basic-auth\n        config:\n          enforce: false\n          credentials: ['alice:correct-horse']\n  - expressions:\n      - \"!actions.ngrok.basic_auth.credentials.authorized\"\n    actions:\n      - type: custom-response\n        config:\n          status_code: 418\n          body: 'hello ${actions.ngrok.basic_auth.credentials.username}'\n";
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("mallory:x");
    let r = run(yaml, &get("/", &format!("Authorization: Basic {auth}\r\n")));
    assert_eq!(status(&r.reply), 418);
    assert!(r.reply.ends_with("hello mallory"), "{}", r.reply);
}

#[test]
fn restrict_ips_cases() {
    let yaml = "on_http_request:\n  - actions:\n      - type: restrict-ips\n        config:\n          allow: [203.0.113.0/24, '2001:db8::/32']\n          deny: [203.0.113.66/32]\n";
    let ep = endpoint_with(yaml);
    for (ip, ok) in [
        ("203.0.113.7", true),
        ("203.0.113.66", false),
        ("198.51.100.1", false),
        ("2001:db8::1", true),
        ("::ffff:203.0.113.9", true),
    ] {
        let r = run_full(
            &ep,
            &get("/", "X-Forwarded-For: 203.0.113.7\r\n"),
            ip,
            None,
            &[],
        );
        if ok {
            assert!(matches!(r.outcome, RequestOutcome::Forward(None)), "{ip}");
        } else {
            assert_eq!(status(&r.reply), 403, "{ip}");
            assert!(r.reply.contains("ERR_NGROK_3205"), "{ip}");
        }
    }
    let e = refused("on_http_request:\n  - actions:\n      - type: restrict-ips\n        config:\n          allow: [nonsense]\n");
    assert!(e.contains("allow[0]"), "{e}");
}

#[test]
fn rate_limit_429_with_retry_after() {
    let yaml = "on_http_request:\n  - actions:\n      - type: rate-limit\n        config:\n          name: per-ip\n          algorithm: sliding_window\n          capacity: 2\n          rate: 60s\n          bucket_key: [conn.client_ip]\n";
    let ep = endpoint_with(yaml);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = run_full(&ep, &get("/", ""), "192.0.2.1", None, &[]);
        statuses.push(if r.reply.is_empty() {
            0
        } else {
            status(&r.reply)
        });
        if !r.reply.is_empty() {
            assert!(r.reply.contains("retry-after: "), "{}", r.reply);
        }
    }
    assert_eq!(statuses, vec![0, 0, 429]);
    // Another client has its own bucket.
    let r = run_full(&ep, &get("/", ""), "192.0.2.2", None, &[]);
    assert!(r.reply.is_empty());
    for (cfg, field) in [
        ("capacity: 0", "capacity"),
        ("rate: 5s", "rate"),
        ("rate: 65s", "rate"),
        ("algorithm: fixed", "algorithm"),
    ] {
        let mut y = yaml.to_owned();
        let key = cfg.split(':').next().unwrap_or_default();
        let line = y
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_default()
            .to_owned();
        y = y.replace(&line, &format!("          {cfg}"));
        assert!(refused(&y).contains(field), "{cfg}");
    }
}

#[test]
fn set_vars_and_phase_scope() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: set-vars\n        config:\n          vars:\n            - tier: gold\n            - n: 3\n  - expressions:\n      - vars.tier == 'gold' && vars.n == 3\n    actions:\n      - type: custom-response\n        config:\n          body: '${vars.tier}'\n",
        &get("/", ""),
    );
    assert!(r.reply.ends_with("gold"), "{}", r.reply);
}

#[test]
fn log_action_continues() {
    let r = run(
        "on_http_request:\n  - actions:\n      - type: log\n        config:\n          metadata:\n            path: ${req.url.path}\n            n: 1\n",
        &get("/logged", ""),
    );
    assert!(matches!(r.outcome, RequestOutcome::Forward(None)));
}

#[test]
fn verify_webhook_github() {
    let yaml = "on_http_request:\n  - actions:\n      - type: verify-webhook\n        config:\n          provider: github\n          secret: It's a Secret to Everybody\n";
    let ep = endpoint_with(yaml);
    assert_eq!(
        ep.policy.as_ref().and_then(|p| p.body_limit()),
        Some(super::webhook::BODY_LIMIT)
    );
    let body = b"Hello, World!";
    let sig = super::webhook::sign::github("It's a Secret to Everybody", body);
    // GitHub's documented example signature for this body and secret.
    assert_eq!(
        sig,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let raw = format!("POST /hook HTTP/1.1\r\nHost: app.example.com\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: 13\r\n\r\n");
    let r = run_full(&ep, &raw, "192.0.2.1", Some(body), &[]);
    assert!(
        matches!(r.outcome, RequestOutcome::Forward(None)),
        "{}",
        r.reply
    );
    let r = run_full(&ep, &raw, "192.0.2.1", Some(b"Hello, World?"), &[]);
    assert_eq!(status(&r.reply), 403);
    assert!(r.reply.contains("ERR_NGROK_3204"));
    assert!(refused("on_http_request:\n  - actions:\n      - type: verify-webhook\n        config:\n          provider: nosuch\n          secret: x\n").contains("provider"));
}

#[test]
fn forward_internal_hops() {
    let inner = Arc::new(Endpoint {
        url: "https://api.internal".into(),
        scheme: Scheme::Https,
        host: "api.internal".into(),
        upstream: None,
        policy: CompiledPolicy::from_text("on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            x-inner: '1'\n").ok().map(Arc::new),
        tunnel: None,
        observe: Default::default(),
    });
    let outer = endpoint_with("on_http_request:\n  - actions:\n      - type: forward-internal\n        config:\n          url: https://api.internal\n");
    let r = run_full(
        &outer,
        &get("/", ""),
        "192.0.2.1",
        None,
        std::slice::from_ref(&inner),
    );
    match &r.outcome {
        RequestOutcome::Forward(Some(t)) => assert_eq!(t.host, "api.internal"),
        other => panic!("{other:?}"),
    }
    assert!(r.upstream.contains("x-inner: 1\r\n"));
    assert!(
        r.upstream.contains("Host: app.example.com\r\n"),
        "{}",
        r.upstream
    );
    // Not online: 502 with halt, forward to own upstream with continue.
    let r = run_full(&outer, &get("/", ""), "192.0.2.1", None, &[]);
    assert_eq!(status(&r.reply), 502);
    // A loop hits the hop limit.
    let looping = Arc::new(Endpoint {
        url: "https://loop.internal".into(),
        scheme: Scheme::Https,
        host: "loop.internal".into(),
        upstream: None,
        policy: CompiledPolicy::from_text("on_http_request:\n  - actions:\n      - type: forward-internal\n        config:\n          url: https://loop.internal\n").ok().map(Arc::new),
        tunnel: None,
        observe: Default::default(),
    });
    let r = run_full(
        &looping,
        &get("/", ""),
        "192.0.2.1",
        None,
        std::slice::from_ref(&looping),
    );
    assert_eq!(status(&r.reply), 508);
    assert!(r.reply.contains("ERR_NGROK_3501"));
    let e = refused("on_http_request:\n  - actions:\n      - type: forward-internal\n        config:\n          url: https://api.example.com\n");
    assert!(e.contains(".internal"), "{e}");
}

fn respond(ep: &Arc<Endpoint>, ex: &mut Exchange, raw: &[u8]) -> (ResponseOutcome, String, String) {
    let mut res = ResponseHead::new();
    assert_eq!(res.parse(raw, 1 << 20, false), Ok(true));
    let info = ResponseInfo {
        buf: raw,
        head: &res,
    };
    let mut out = Vec::new();
    let o = pipeline::on_http_response(
        ep,
        &info,
        &conn("192.0.2.1"),
        ex,
        ReplyStyle::default(),
        &mut out,
    );
    let mut head = Vec::new();
    encode_response_head_edited(raw, &res, ClientConn::KeepAlive, Some(&ex.res), &mut head);
    (
        o,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&head).into_owned(),
    )
}

#[test]
fn response_phase_headers_and_custom_response() {
    let ep = endpoint_with("on_http_response:\n  - expressions:\n      - res.status_code >= 500\n    actions:\n      - type: custom-response\n        config:\n          status_code: 503\n          body: 'sorry (${res.status_code}) ${req.url.path}'\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            x-policy: 'on'\n      - type: remove-headers\n        config:\n          headers: [server]\n");
    let mut ex = Exchange::new();
    let r = run_full(&ep, &get("/page", ""), "192.0.2.1", None, &[]);
    ex.req_value = r.ex.req_value.clone();
    let (o, _, head) = respond(
        &ep,
        &mut ex,
        b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(o, ResponseOutcome::Relay);
    assert!(
        head.contains("x-policy: on\r\n") && !head.contains("Server"),
        "{head}"
    );
    let mut ex = Exchange::new();
    ex.req_value = r.ex.req_value;
    let (o, reply, _) = respond(
        &ep,
        &mut ex,
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(o, ResponseOutcome::Replied);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.ends_with("sorry (502) /page"), "{reply}");
}

#[test]
fn compress_response_negotiation() {
    let ep = endpoint_with("on_http_response:\n  - actions:\n      - type: compress-response\n");
    let big = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n";
    let cases: &[(&str, &[u8], Option<&str>)] = &[
        ("gzip, br", big, Some("gzip")),
        ("br;q=1, gzip;q=0.5", big, Some("br")),
        ("identity", big, None),
        ("gzip", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\n\r\n", None),
        ("gzip", b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n", None),
        ("gzip", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: br\r\nContent-Length: 5000\r\n\r\n", None),
        ("gzip", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", Some("gzip")),
    ];
    for (accept, raw, want) in cases {
        let r = run_full(
            &ep,
            &get("/", &format!("Accept-Encoding: {accept}\r\n")),
            "192.0.2.1",
            None,
            &[],
        );
        let mut ex = r.ex;
        let (_, _, head) = respond(&ep, &mut ex, raw);
        assert_eq!(ex.res.compress.map(|e| e.token()), *want, "{accept}");
        if let Some(w) = want {
            assert!(
                head.contains(&format!("Content-Encoding: {w}\r\n")),
                "{head}"
            );
            assert!(head.contains("Vary: accept-encoding\r\n"), "{head}");
            assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
            assert!(
                !head.to_ascii_lowercase().contains("content-length"),
                "{head}"
            );
        }
    }
}

#[test]
fn phase_rules_refused_at_load() {
    let cases = [
        ("on_http_request:\n  - actions:\n      - type: oauth\n        config: {provider: google}\n", "config.client_id: required"),
        ("on_http_request:\n  - actions:\n      - type: jwt-validation\n", "actions[0] (jwt-validation): config"),
        ("on_http_request:\n  - actions:\n      - type: circuit-breaker\n", "circuit-breaker is not supported yet"),
        ("on_tcp_connect:\n  - actions:\n      - type: terminate-tls\n", "terminate-tls is not supported yet"),
        ("on_http_response:\n  - actions:\n      - type: redirect\n        config: {to: /x}\n", "not allowed in on_http_response"),
        ("on_tcp_connect:\n  - actions:\n      - type: add-headers\n        config: {headers: {a: b}}\n", "not allowed in on_tcp_connect"),
        ("on_http_request:\n  - expressions: ['res.status_code == 200']\n    actions:\n      - type: deny\n", "only in on_http_response"),
        ("on_http_request:\n  - expressions: ['req.method ==']\n    actions:\n      - type: deny\n", "expressions[0]"),
        ("on_http_request:\n  - actions:\n      - type: frobnicate\n", "unknown action type"),
        ("on_http_request:\n  - actions: []\n", "at least one action"),
        ("on_http_request:\n  - actions:\n      - type: custom-response\n        config: {bogus: 1}\n", "bogus"),
        ("on_http_request:\n  - actions:\n      - type: custom-response\n        config: {headers: {x: \"a\\r\\nb: c\"}}\n", "line break"),
        ("on_http_request:\n  - actions:\n      - type: custom-response\n        config: {body: '${req.method'}\n", "unterminated"),
    ];
    for (yaml, needle) in cases {
        let e = refused(yaml);
        assert!(e.contains(needle), "{yaml}: {e}");
    }
    // Located: phase, rule index and name, action.
    let e = refused("on_http_request:\n  - name: ok\n    actions:\n      - type: deny\n  - name: auth\n    actions:\n      - type: basic-auth\n        config: {}\n");
    assert!(
        e.contains("on_http_request[1]")
            && e.contains("\"auth\"")
            && e.contains("actions[0] (basic-auth)")
            && e.contains("credentials"),
        "{e}"
    );
}

#[test]
fn tcp_connect_restrict_ips_closes() {
    let ep = endpoint_with("on_tcp_connect:\n  - actions:\n      - type: restrict-ips\n        config:\n          deny: [192.0.2.0/24]\n");
    let mut ex = Exchange::new();
    let poll = |c: &ConnInfo, ex: &mut Exchange| {
        let f = pipeline::on_tcp_connect(&ep, c, ex);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("pending"),
        }
    };
    use std::future::Future;
    assert!(!poll(&conn("192.0.2.5"), &mut ex));
    assert!(poll(&conn("198.51.100.5"), &mut ex));
}

#[test]
fn static_policy_needs_no_cel_scope() {
    // A policy without expressions never builds CEL variables.
    let ep = endpoint_with("on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            a: '1'\n            b: '2'\n            c: '3'\n");
    let r = run_full(&ep, &get("/", ""), "192.0.2.1", None, &[]);
    assert!(r.ex.req_value.is_none());
    assert!(
        r.upstream.contains("a: 1\r\nb: 2\r\nc: 3\r\n"),
        "{}",
        r.upstream
    );
}

#[test]
fn cel_variables_coverage() {
    let body = "${req.method}|${req.url}|${req.url.scheme}|${req.url.host}|${req.url.port}|${req.url.path}|${req.url.query}|${req.url.raw_path}|${req.host}|${req.headers['x-a'][1]}|${req.query_params['q'][0]}|${req.cookies['sid'][0].value}|${req.content_length}|${req.version}|${conn.client_ip}|${conn.client_port}|${conn.server_port}|${endpoint.url}|${endpoint.host}|${endpoint.port}|${endpoint.protocol}|${getQueryParam('q')[0]}|${getReqCookie('sid').value}|${hasReqHeader('X-A')}|${inCidrRange(conn.client_ip, '203.0.113.0/24')}|${time.now > timestamp('2020-01-01T00:00:00Z')}";
    let yaml = format!("on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          body: \"{body}\"\n");
    let r = run(&yaml, "GET /a%20b?q=1&q=2 HTTP/1.1\r\nHost: App.example.com:8443\r\nX-A: one\r\nx-a: two\r\nCookie: sid=abc; other=1\r\n\r\n");
    let got = r.reply.rsplit("\r\n\r\n").next().unwrap_or_default();
    assert_eq!(
        got,
        "GET|https://app.example.com:8443/a%20b?q=1&q=2|https|app.example.com|8443|/a b|q=1&q=2|/a%20b|app.example.com|two|1|abc|0|HTTP/1.1|203.0.113.7|40000|443|https://app.example.com|app.example.com|443|https|1|abc|true|true|true"
    );
}

/// Counts allocations made by the current thread while enabled.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if ON.with(Cell::get) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            if ON.with(Cell::get) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(p, l, n) }
        }
    }

    /// Allocations `f` makes on this thread.
    pub fn count(f: impl FnOnce()) -> usize {
        COUNT.with(|c| c.set(0));
        ON.with(|o| o.set(true));
        f();
        ON.with(|o| o.set(false));
        COUNT.with(Cell::get)
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

#[test]
fn static_header_policy_allocates_nothing_per_request_once_warm() {
    let ep = endpoint_with("on_http_request:\n  - actions:\n      - type: add-headers\n        config: {headers: {x-a: '1'}}\n  - actions:\n      - type: add-headers\n        config: {headers: {x-b: '2'}}\n  - actions:\n      - type: remove-headers\n        config: {headers: [x-drop]}\n");
    let raw = get("/", "X-Drop: 1\r\n");
    let mut head = RequestHead::new();
    assert_eq!(head.parse(raw.as_bytes(), 1 << 20), Ok(true));
    let c = conn("192.0.2.1");
    let info = RequestInfo {
        buf: raw.as_bytes(),
        head: &head,
        scheme: Scheme::Https,
        version: "HTTP/1.1",
        host: "app.example.com",
        conn: &c,
    };
    let mut ex = Exchange::new();
    let mut out = Vec::with_capacity(4096);
    let mut up = Vec::with_capacity(4096);
    let fi = ForwardInfo {
        client_ip: "192.0.2.1",
        proto: "https",
    };
    let lookup = |_: &str| None;
    let mut once = || {
        ex.reset();
        out.clear();
        up.clear();
        let o = pipeline::on_http_request_now(
            &ep,
            &info,
            None,
            &lookup,
            &mut ex,
            ReplyStyle::default(),
            &mut out,
        );
        assert!(matches!(o, RequestOutcome::Forward(None)));
        encode_request_head_edited(raw.as_bytes(), &head, &fi, Some(&ex.req), &mut up);
    };
    once();
    let n = counting::count(&mut once);
    assert_eq!(n, 0, "allocations per request after the first");
    assert!(String::from_utf8_lossy(&up).contains("x-a: 1\r\nx-b: 2\r\n"));
}
