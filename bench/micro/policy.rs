//! Micro benchmark: traffic policy evaluation per request, including the
//! upstream head encoding that applies its edits: no policy, three static
//! add-headers rules, basic-auth (valid credentials), rate-limit keyed by
//! client IP (never limited), and an expression-matched rule.

#[path = "harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;

use ringress::http1::RequestHead;
use ringress::policy::pipeline::{on_http_request_now, RequestOutcome};
use ringress::policy::{CompiledPolicy, ConnInfo, Exchange, ReplyStyle, RequestInfo};
use ringress::proxy::headers::{encode_request_head_edited, ForwardInfo};
use ringress::route::{Endpoint, Scheme};

const REQUEST: &[u8] = b"GET /api/items?page=2 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\nAccept-Encoding: gzip, br\r\nAuthorization: Basic YWxpY2U6Y29ycmVjdC1ob3JzZQ==\r\nCookie: sid=abc123\r\n\r\n";

fn endpoint(policy: Option<&str>) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        url: "http://app.example.com".into(),
        scheme: Scheme::Http,
        host: "app.example.com".into(),
        upstream: None,
        policy: policy.map(|p| Arc::new(CompiledPolicy::from_text(p).expect("valid policy"))),
        tunnel: None,
        observe: Default::default(),
    })
}

fn main() {
    let mut head = RequestHead::new();
    assert_eq!(head.parse(REQUEST, 1 << 20), Ok(true));
    let conn = ConnInfo {
        client: Some(SocketAddr::from(([203, 0, 113, 7], 40000))),
        server_port: 80,
        tls: None,
    };
    let info = RequestInfo {
        buf: REQUEST,
        head: &head,
        scheme: Scheme::Http,
        version: "HTTP/1.1",
        host: "app.example.com",
        conn: &conn,
    };
    let fwd = ForwardInfo {
        client_ip: "203.0.113.7",
        proto: "http",
    };
    let cases = [
        ("no policy", None),
        (
            "3 rules, static add-headers",
            Some("on_http_request:\n  - actions:\n      - type: add-headers\n        config: {headers: {x-a: '1'}}\n  - actions:\n      - type: add-headers\n        config: {headers: {x-b: '2'}}\n  - actions:\n      - type: add-headers\n        config: {headers: {x-c: '3'}}\n"),
        ),
        (
            "basic-auth (valid)",
            Some("on_http_request:\n  - actions:\n      - type: basic-auth\n        config: {credentials: ['alice:correct-horse']}\n"),
        ),
        (
            "rate-limit by conn.client_ip",
            Some("on_http_request:\n  - actions:\n      - type: rate-limit\n        config: {name: r, algorithm: sliding_window, capacity: 2000000000, rate: 60s, bucket_key: [conn.client_ip]}\n"),
        ),
        (
            "expression rule (req.method, path)",
            Some("on_http_request:\n  - expressions: [\"req.method == 'POST' && req.url.path.startsWith('/admin')\"]\n    actions:\n      - type: deny\n"),
        ),
    ];
    let lookup = |_: &str| None;
    for (name, policy) in cases {
        let ep = endpoint(policy);
        let mut ex = Exchange::new();
        let mut reply = Vec::with_capacity(1024);
        let mut out = Vec::with_capacity(1024);
        harness::bench(&format!("policy: {name}"), || {
            out.clear();
            ex.reset();
            if ep.policy.is_some() {
                reply.clear();
                let o = on_http_request_now(
                    &ep,
                    &info,
                    None,
                    &lookup,
                    &mut ex,
                    ReplyStyle::default(),
                    &mut reply,
                );
                assert!(matches!(o, RequestOutcome::Forward(None)), "{name}");
            }
            encode_request_head_edited(REQUEST, &head, &fwd, Some(&ex.req), &mut out);
            out.len()
        });
    }
}
