//! The identity actions through the policy engine: located compile
//! errors, replies written as edge responses, results readable by later
//! rules, body buffering for jwt-validation. The providers are loopback
//! test servers (the flows themselves are tested in `oidc` and `jwt`).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;

use super::JWT_BODY_LIMIT;
use crate::http1::RequestHead;
use crate::policy::actions::tests::endpoint_with;
use crate::policy::oidc::testutil::{jwks, now, runtime, Server, TestKey};
use crate::policy::oidc::url::query_param;
use crate::policy::pipeline::{self, RequestOutcome};
use crate::policy::{CompiledPolicy, ConnInfo, Exchange, ReplyStyle, RequestInfo};
use crate::proxy::headers::{encode_request_head_edited, ForwardInfo};
use crate::route::{Endpoint, Scheme};

/// The request phase on a real runtime (the actions await providers).
struct Run {
    outcome: RequestOutcome,
    reply: String,
    upstream: String,
}

fn run_with(ep: &Arc<Endpoint>, raw: &str, body: Option<&[u8]>, style: ReplyStyle) -> Run {
    let mut head = RequestHead::new();
    assert_eq!(head.parse(raw.as_bytes(), 1 << 20), Ok(true), "{raw}");
    let mut host = String::new();
    assert!(crate::route::normalize_host(
        head.authority.get(raw.as_bytes()),
        &mut host
    ));
    let conn = ConnInfo {
        client: Some(SocketAddr::from(([203, 0, 113, 7], 40000))),
        server_port: 443,
        tls: None,
    };
    let info = RequestInfo {
        buf: raw.as_bytes(),
        head: &head,
        scheme: Scheme::Https,
        version: "HTTP/1.1",
        host: &host,
        conn: &conn,
    };
    let mut ex = Exchange::new();
    let mut out = Vec::new();
    let lookup = |_: &str| None;
    let outcome = runtime().block_on(pipeline::on_http_request(
        ep, &info, body, &lookup, &mut ex, style, &mut out,
    ));
    let mut upstream = Vec::new();
    if matches!(outcome, RequestOutcome::Forward(_)) {
        let fi = ForwardInfo {
            client_ip: "203.0.113.7",
            proto: "https",
        };
        encode_request_head_edited(raw.as_bytes(), &head, &fi, Some(&ex.req), &mut upstream);
    }
    Run {
        outcome,
        reply: String::from_utf8_lossy(&out).into_owned(),
        upstream: String::from_utf8_lossy(&upstream).into_owned(),
    }
}

fn run(ep: &Arc<Endpoint>, raw: &str) -> Run {
    run_with(ep, raw, None, ReplyStyle::default())
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n{extra}\r\n")
}

fn header<'a>(reply: &'a str, name: &str) -> Vec<&'a str> {
    let head = reply.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

fn refused(doc: &str) -> String {
    match CompiledPolicy::from_text(doc) {
        Ok(_) => panic!("should be refused:\n{doc}"),
        Err(e) => e,
    }
}

#[test]
fn compile_errors_are_located() {
    let e = refused(
        r#"{"on_http_request":[{"name":"sso","actions":[{"type":"openid-connect","config":{"client_id":"c","client_secret":"s"}}]}]}"#,
    );
    assert!(e.contains("on_http_request[0]"), "{e}");
    assert!(e.contains("\"sso\""), "{e}");
    assert!(e.contains("actions[0] (openid-connect)"), "{e}");
    assert!(e.contains("config.issuer_url: required"), "{e}");

    let e = refused(
        r#"{"on_http_request":[{"actions":[{"type":"log","config":{"metadata":{"a":"b"}}},{"type":"oauth","config":{"provider":"nope","client_id":"c","client_secret":"s"}}]}]}"#,
    );
    assert!(e.contains("actions[1] (oauth)"), "{e}");
    assert!(e.contains("config.provider: unknown provider"), "{e}");

    let e = refused(r#"{"on_http_request":[{"actions":[{"type":"jwt-validation"}]}]}"#);
    assert!(e.contains("actions[0] (jwt-validation): config"), "{e}");

    let e = refused(
        r#"{"on_http_response":[{"actions":[{"type":"oauth","config":{"provider":"google"}}]}]}"#,
    );
    assert!(
        e.contains("oauth is not allowed in on_http_response"),
        "{e}"
    );
    let e = refused(
        r#"{"on_http_request":[{"actions":[{"type":"oauth","config":{"provider":"google"}}]}]}"#,
    );
    assert!(e.contains("config.client_id: required"), "{e}");
}

// ------------------------------------------------------------ jwt-validation

const ISS: &str = "https://issuer.example.com";

fn jwt_policy(jku: &str, tokens: serde_json::Value) -> Arc<Endpoint> {
    let doc = json!({
        "on_http_request": [
            {"actions": [{"type": "jwt-validation", "config": {
                "issuer": {"allow_list": [{"value": ISS}]},
                "audience": {"allow_list": [{"value": "api://orders"}]},
                "http": {"tokens": tokens},
                "jws": {"allowed_algorithms": ["ES256"], "keys": {"sources": {"additional_jkus": [jku]}}},
            }}]},
            {"expressions": ["actions.ngrok.jwt_validation.tokens[0].claims.sub == 'svc-1'"],
             "actions": [{"type": "add-headers", "config": {"headers": {
                "x-sub": "${actions.ngrok.jwt_validation.tokens[0].claims.sub}",
                "x-scope": "${actions.ngrok.jwt_validation.tokens[0].claims.scope}"}}}]},
        ]
    });
    endpoint_with(&doc.to_string())
}

fn header_tokens() -> serde_json::Value {
    json!([{"type": "jwt", "method": "header", "name": "Authorization", "prefix": "Bearer "}])
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "aud": "api://orders", "sub": "svc-1", "exp": now() + 300, "scope": "orders:read"})
}

#[test]
fn jwt_validation_result_feeds_later_rules() {
    let server = Server::start();
    let key = TestKey::generate("k1");
    server.route("/jwks", 200, &jwks(&[&key]));
    let ep = jwt_policy(&server.url("/jwks"), header_tokens());
    assert_eq!(ep.policy.as_ref().and_then(|p| p.body_limit()), None);

    let token = key.sign(&claims());
    let r = run(
        &ep,
        &get("/orders", &format!("Authorization: Bearer {token}\r\n")),
    );
    assert!(
        matches!(r.outcome, RequestOutcome::Forward(None)),
        "{}",
        r.reply
    );
    assert!(r.upstream.contains("x-sub: svc-1\r\n"), "{}", r.upstream);
    assert!(
        r.upstream.contains("x-scope: orders:read\r\n"),
        "{}",
        r.upstream
    );

    // No token: 401 from the edge, nothing forwarded.
    let r = run(&ep, &get("/orders", ""));
    assert!(matches!(r.outcome, RequestOutcome::Replied));
    assert!(
        r.reply.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{}",
        r.reply
    );
    assert_eq!(header(&r.reply, "ngrok-error-code"), ["ERR_NGROK_3406"]);
    assert_eq!(
        header(&r.reply, "www-authenticate"),
        ["Bearer error=\"invalid_token\""]
    );
    let len: usize = header(&r.reply, "content-length")[0].parse().expect("len");
    let body = r.reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert_eq!(body.len(), len);
    assert!(header(&r.reply, "connection").is_empty());

    // A bad signature, on a connection the driver will close, for HEAD.
    let other = TestKey::generate("k1");
    let forged = other.sign(&claims());
    let style = ReplyStyle {
        close: true,
        head_request: true,
        ..ReplyStyle::default()
    };
    let r = run_with(
        &ep,
        &format!("HEAD /orders HTTP/1.1\r\nHost: app.example.com\r\nAuthorization: Bearer {forged}\r\n\r\n"),
        None,
        style,
    );
    assert!(r.reply.starts_with("HTTP/1.1 401 "), "{}", r.reply);
    assert_eq!(header(&r.reply, "ngrok-error-code"), ["ERR_NGROK_3414"]);
    assert_eq!(header(&r.reply, "connection"), ["close"]);
    assert!(r.reply.ends_with("\r\n\r\n"), "HEAD: no body: {}", r.reply);
}

#[test]
fn jwt_validation_reads_buffered_bodies() {
    let server = Server::start();
    let key = TestKey::generate("k1");
    server.route("/jwks", 200, &jwks(&[&key]));
    let ep = jwt_policy(
        &server.url("/jwks"),
        json!([{"type": "jwt", "method": "body", "name": "token"}]),
    );
    assert_eq!(
        ep.policy.as_ref().and_then(|p| p.body_limit()),
        Some(JWT_BODY_LIMIT)
    );
    let token = key.sign(&claims());
    let body = format!("token={token}&x=1");
    let raw = format!(
        "POST /orders HTTP/1.1\r\nHost: app.example.com\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let r = run_with(&ep, &raw, Some(body.as_bytes()), ReplyStyle::default());
    assert!(
        matches!(r.outcome, RequestOutcome::Forward(None)),
        "{}",
        r.reply
    );
    assert!(r.upstream.contains("x-sub: svc-1\r\n"), "{}", r.upstream);
    // Without the body (a driver that did not buffer): no token.
    let r = run_with(&ep, &raw, None, ReplyStyle::default());
    assert_eq!(header(&r.reply, "ngrok-error-code"), ["ERR_NGROK_3406"]);
}

// ------------------------------------------------------------ openid-connect

struct Idp {
    server: Server,
    key: TestKey,
    issuer: String,
}

fn idp() -> Idp {
    let server = Server::start();
    let key = TestKey::generate("k1");
    let issuer = server.url("");
    server.route(
        "/.well-known/openid-configuration",
        200,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
        })
        .to_string(),
    );
    server.route("/jwks", 200, &jwks(&[&key]));
    Idp {
        server,
        key,
        issuer,
    }
}

fn oidc_endpoint(p: &Idp) -> Arc<Endpoint> {
    let doc = json!({
        "on_http_request": [
            {"actions": [{"type": "openid-connect", "config": {
                "issuer_url": p.issuer, "client_id": "client-1", "client_secret": "s3cret"}}]},
            {"expressions": ["actions.ngrok.oidc.identity.email.endsWith('@example.com')"],
             "actions": [{"type": "add-headers", "config": {"headers": {
                "x-email": "${actions.ngrok.oidc.identity.email}",
                "x-user": "${actions.ngrok.oidc.identity.provider_user_id}"}}}]},
        ]
    });
    endpoint_with(&doc.to_string())
}

/// `name=value` of the reply's Set-Cookie headers.
fn cookies(reply: &str) -> Vec<(String, String)> {
    header(reply, "set-cookie")
        .into_iter()
        .filter_map(|v| {
            let (n, v) = v.split(';').next()?.split_once('=')?;
            Some((n.to_string(), v.to_string()))
        })
        .collect()
}

fn cookie(reply: &str, name: &str) -> String {
    cookies(reply)
        .into_iter()
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} cookie in {reply}"))
}

#[test]
fn openid_connect_login_then_identity_in_later_rules() {
    let p = idp();
    let ep = oidc_endpoint(&p);
    let accept = "Accept: text/html\r\n";

    // 1. No session: a redirect to the provider with the flow cookie.
    let r = run(&ep, &get("/private", accept));
    assert!(matches!(r.outcome, RequestOutcome::Replied));
    assert!(r.reply.starts_with("HTTP/1.1 302 Found\r\n"), "{}", r.reply);
    let location = header(&r.reply, "location")[0].to_string();
    assert!(
        location.starts_with(&format!("{}/auth?", p.issuer)),
        "{location}"
    );
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    assert_eq!(
        query_param(q, "redirect_uri").as_deref(),
        Some("https://app.example.com/ngrok/oidc/callback")
    );
    let state = query_param(q, "state").expect("state");
    let nonce = query_param(q, "nonce").expect("nonce");
    let flow = cookie(&r.reply, "ngrok_flow_oidc");
    assert!(header(&r.reply, "set-cookie")[0].contains("Secure"));

    // 2. The callback: the code is exchanged, the session cookie set.
    let claims = json!({"iss": p.issuer, "aud": "client-1", "sub": "user-1", "nonce": nonce,
        "exp": now() + 600, "iat": now(), "email": "alice@example.com"});
    p.server.route(
        "/token",
        200,
        &json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600,
            "id_token": p.key.sign(&claims)})
        .to_string(),
    );
    let r = run(
        &ep,
        &get(
            &format!("/ngrok/oidc/callback?code=c1&state={state}"),
            &format!("{accept}Cookie: ngrok_flow_oidc={flow}\r\n"),
        ),
    );
    assert!(r.reply.starts_with("HTTP/1.1 302 "), "{}", r.reply);
    assert_eq!(header(&r.reply, "location"), ["/private"]);
    assert_eq!(header(&r.reply, "set-cookie").len(), 2, "{}", r.reply);
    let session = cookie(&r.reply, "ngrok_session_oidc");

    // 3. With the session: forwarded, identity readable by the next rule.
    let r = run(
        &ep,
        &get(
            "/private",
            &format!("{accept}Cookie: ngrok_session_oidc={session}\r\n"),
        ),
    );
    assert!(
        matches!(r.outcome, RequestOutcome::Forward(None)),
        "{}",
        r.reply
    );
    assert!(
        r.upstream.contains("x-email: alice@example.com\r\n"),
        "{}",
        r.upstream
    );
    assert!(r.upstream.contains("x-user: user-1\r\n"), "{}", r.upstream);

    // 4. Logout: answered by the edge, both cookies cleared.
    let r = run(
        &ep,
        &get(
            "/ngrok/logout",
            &format!("{accept}Cookie: ngrok_session_oidc={session}\r\n"),
        ),
    );
    assert!(r.reply.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.reply);
    let cleared = cookies(&r.reply);
    assert_eq!(cleared.len(), 2, "{}", r.reply);
    assert!(cleared.iter().all(|(_, v)| v.is_empty()), "{}", r.reply);

    // 5. A POST without a session: 401 (a redirect would lose the body).
    let r = run(
        &ep,
        "POST /api HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(r.reply.starts_with("HTTP/1.1 401 "), "{}", r.reply);
    assert_eq!(header(&r.reply, "ngrok-error-code"), ["ERR_NGROK_3401"]);
}

#[test]
fn unreachable_provider_is_a_502_from_the_edge() {
    // A port nothing listens on.
    let issuer = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let doc = json!({"on_http_request": [{"actions": [{"type": "openid-connect", "config": {
        "issuer_url": issuer, "client_id": "c", "client_secret": "s"}}]}]});
    let ep = endpoint_with(&doc.to_string());
    let r = run(&ep, &get("/", "Accept: text/html\r\n"));
    assert!(r.reply.starts_with("HTTP/1.1 502 "), "{}", r.reply);
    assert!(!header(&r.reply, "ngrok-error-code").is_empty());
}
