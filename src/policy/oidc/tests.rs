//! The login flow against a loopback provider (discovery, token endpoint,
//! JWKS and userinfo served by a test server; ID tokens signed with a key
//! made here). The end-to-end test with a real provider is
//! tests/oidc_provider.rs.

use super::testutil::{jwks, now, runtime, Server, TestKey};
use super::*;
use serde_json::json;

struct Provider {
    server: Server,
    key: TestKey,
    issuer: String,
}

fn provider() -> Provider {
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
            "userinfo_endpoint": format!("{issuer}/me"),
        })
        .to_string(),
    );
    server.route("/jwks", 200, &jwks(&[&key]));
    server.route(
        "/me",
        200,
        &json!({"sub": "user-1", "name": "Alice Liddell"}).to_string(),
    );
    Provider {
        server,
        key,
        issuer,
    }
}

fn action(p: &Provider, extra: Value) -> AuthAction {
    let mut cfg =
        json!({"issuer_url": p.issuer, "client_id": "client-1", "client_secret": "s3cr:t"});
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    AuthAction::compile(AuthKind::Oidc, &cfg).expect("compile")
}

/// A request with owned headers.
struct Req {
    method: &'static str,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Req {
    fn get(target: &str) -> Req {
        Req {
            method: "GET",
            target: target.to_string(),
            headers: vec![("accept".into(), b"text/html".to_vec())],
        }
    }

    fn cookie(mut self, c: &str) -> Req {
        self.headers.push(("cookie".into(), c.as_bytes().to_vec()));
        self
    }

    fn run(&self, a: &AuthAction, at: u64) -> AuthOutcome {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let req = AuthRequest {
            method: self.method,
            scheme: "https",
            host: "app.example.com",
            path_and_query: &self.target,
            headers: &headers,
        };
        runtime().block_on(a.on_request_at(&req, at))
    }
}

fn respond(o: &AuthOutcome) -> (u16, &[(String, String)], &[u8]) {
    match o {
        AuthOutcome::Respond {
            status,
            headers,
            body,
        } => (*status, headers, body),
        AuthOutcome::Continue { vars } => panic!("expected a response, got Continue {vars}"),
    }
}

fn header<'a>(o: &'a AuthOutcome, name: &str) -> Option<&'a str> {
    respond(o)
        .1
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `name=value` of every `Set-Cookie`.
fn set_cookies(o: &AuthOutcome) -> Vec<(String, String)> {
    respond(o)
        .1
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .filter_map(|(_, v)| {
            let pair = v.split(';').next()?;
            let (n, v) = pair.split_once('=')?;
            Some((n.to_string(), v.to_string()))
        })
        .collect()
}

fn cookie_value(o: &AuthOutcome, name: &str) -> Option<String> {
    set_cookies(o)
        .into_iter()
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// Logs in through the loopback provider; returns the session cookie.
fn login(
    p: &Provider,
    a: &AuthAction,
    at: u64,
    claims_extra: Value,
) -> (AuthOutcome, Option<String>) {
    let start = Req::get("/private?x=1").run(a, at);
    assert_eq!(respond(&start).0, 302);
    let location = header(&start, "location").expect("location").to_string();
    assert!(
        location.starts_with(&format!("{}/auth?", p.issuer)),
        "{location}"
    );
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    assert_eq!(
        url::query_param(q, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        url::query_param(q, "client_id").as_deref(),
        Some("client-1")
    );
    assert_eq!(
        url::query_param(q, "redirect_uri").as_deref(),
        Some("https://app.example.com/ngrok/oidc/callback")
    );
    assert_eq!(
        url::query_param(q, "scope").as_deref(),
        Some("openid profile email")
    );
    assert_eq!(
        url::query_param(q, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let state = url::query_param(q, "state").expect("state");
    let nonce = url::query_param(q, "nonce").expect("nonce");
    let challenge = url::query_param(q, "code_challenge").expect("challenge");
    let flow = cookie_value(&start, "ngrok_flow_oidc").expect("flow cookie");

    let mut claims = json!({"iss": p.issuer, "aud": "client-1", "sub": "user-1", "nonce": nonce,
        "exp": now() + 600, "iat": now(), "email": "alice@example.com", "sid": "sess-9"});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), claims_extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    p.server.route(
        "/token",
        200,
        &json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600,
            "id_token": p.key.sign(&claims)})
        .to_string(),
    );
    let cb = Req::get(&format!("/ngrok/oidc/callback?code=the-code&state={state}"))
        .cookie(&format!("ngrok_flow_oidc={flow}"))
        .run(a, at);
    // The token request proved possession of the PKCE verifier.
    if let Some(sent) = p.server.requests("/token").last() {
        let body = sent.split("\r\n\r\n").nth(1).unwrap_or("");
        let verifier = url::query_param(body, "code_verifier").expect("verifier");
        assert_eq!(pkce::challenge_s256(&verifier), challenge);
        assert_eq!(url::query_param(body, "code").as_deref(), Some("the-code"));
        // client_secret_basic, with the secret form-encoded (RFC 6749 §2.3.1).
        assert!(
            sent.to_ascii_lowercase()
                .contains("authorization: basic y2xpzw50lte6cznjciuzqxq="),
            "{sent}"
        );
    }
    let session = cookie_value(&cb, "ngrok_session_oidc");
    (cb, session)
}

#[test]
fn login_session_logout() {
    let p = provider();
    let a = action(&p, json!({}));
    let t = now();
    let (cb, session) = login(&p, &a, t, json!({}));
    assert_eq!(respond(&cb).0, 302, "{cb:?}");
    assert_eq!(header(&cb, "location"), Some("/private?x=1"));
    let session = session.expect("session cookie");
    // The flow cookie is cleared.
    assert!(set_cookies(&cb).contains(&("ngrok_flow_oidc".into(), String::new())));
    let sc = respond(&cb)
        .1
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with("ngrok_session_oidc"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        sc.contains("HttpOnly") && sc.contains("Secure") && sc.contains("SameSite=Lax"),
        "{sc}"
    );
    assert!(sc.contains(&format!("Max-Age={}", 72 * 3600)), "{sc}");

    let ok = Req::get("/private")
        .cookie(&format!("ngrok_session_oidc={session}"))
        .run(&a, t + 5);
    let AuthOutcome::Continue { vars } = ok else {
        panic!("expected Continue, got {ok:?}");
    };
    assert_eq!(vars["identity"]["email"], "alice@example.com");
    // From userinfo.
    assert_eq!(vars["identity"]["name"], "Alice Liddell");
    assert_eq!(vars["identity"]["provider_user_id"], "user-1");
    assert_eq!(vars["identity"]["current_provider_session_id"], "sess-9");
    assert_eq!(vars["access_token"], "at-1");
    assert!(vars["identity_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    // Tampered or foreign cookies: back to the provider.
    let mut bad = session.clone().into_bytes();
    let last = bad.len() - 3;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ascii");
    let r = Req::get("/private")
        .cookie(&format!("ngrok_session_oidc={bad}"))
        .run(&a, t + 5);
    assert_eq!(respond(&r).0, 302);
    let other = action(
        &p,
        json!({"cookie_secret": "another edge's secret, 32 bytes or more"}),
    );
    let r = Req::get("/private")
        .cookie(&format!("ngrok_session_oidc={session}"))
        .run(&other, t + 5);
    assert_eq!(respond(&r).0, 302, "another key cannot open the cookie");
    // The same action compiled again (a config reload) keeps the sessions.
    let again = action(&p, json!({}));
    let r = Req::get("/private")
        .cookie(&format!("ngrok_session_oidc={session}"))
        .run(&again, t + 5);
    assert!(matches!(r, AuthOutcome::Continue { .. }));

    // Logout clears the cookie; with redirect_path it goes there.
    let out = Req::get("/ngrok/logout")
        .cookie(&format!("ngrok_session_oidc={session}"))
        .run(&a, t + 6);
    assert_eq!(respond(&out).0, 200);
    assert!(set_cookies(&out).contains(&("ngrok_session_oidc".into(), String::new())));
    let out = Req::get("/ngrok/logout?redirect_path=%2Fbye").run(&a, t + 6);
    assert_eq!(
        (respond(&out).0, header(&out, "location")),
        (302, Some("/bye"))
    );
    let out = Req::get("/ngrok/logout?redirect_path=https://evil.example/").run(&a, t + 6);
    assert_eq!(respond(&out).0, 200, "no open redirect");
    // Another action's logout is not ours.
    let out = Req::get("/ngrok/logout?auth_id=other")
        .cookie(&format!("ngrok_session_oidc={session}"))
        .run(&a, t + 6);
    assert!(matches!(out, AuthOutcome::Continue { .. }));
}

#[test]
fn session_clock() {
    let p = provider();
    let a = action(
        &p,
        json!({"max_session_duration": "1h", "idle_session_timeout": "16m"}),
    );
    let t = now();
    let (_, session) = login(&p, &a, t, json!({}));
    let cookie = format!("ngrok_session_oidc={}", session.expect("session"));
    // Within 2 minutes (idle/8): no refresh.
    assert!(matches!(
        Req::get("/").cookie(&cookie).run(&a, t + 119),
        AuthOutcome::Continue { .. }
    ));
    // Later: browsers are bounced once with a renewed cookie...
    let r = Req::get("/a?b").cookie(&cookie).run(&a, t + 300);
    assert_eq!((respond(&r).0, header(&r, "location")), (307, Some("/a?b")));
    let renewed = format!(
        "ngrok_session_oidc={}",
        cookie_value(&r, "ngrok_session_oidc").expect("renewed")
    );
    assert!(matches!(
        Req::get("/").cookie(&renewed).run(&a, t + 301),
        AuthOutcome::Continue { .. }
    ));
    // ...API calls are not.
    let mut api = Req::get("/api").cookie(&cookie);
    api.headers[0].1 = b"application/json".to_vec();
    assert!(matches!(api.run(&a, t + 300), AuthOutcome::Continue { .. }));
    // Idle for 16 minutes: log in again, the stale cookie cleared.
    let r = Req::get("/").cookie(&cookie).run(&a, t + 16 * 60);
    assert_eq!(respond(&r).0, 302);
    assert!(header(&r, "location").is_some_and(|l| l.starts_with(&p.issuer)));
    assert!(set_cookies(&r).contains(&("ngrok_session_oidc".into(), String::new())));
    // The renewed cookie survives that, but not the maximum duration.
    let r = Req::get("/").cookie(&renewed).run(&a, t + 16 * 60);
    assert_eq!(respond(&r).0, 307, "still valid, due for renewal");
    let r = Req::get("/").cookie(&renewed).run(&a, t + 3600);
    assert_eq!(respond(&r).0, 302);
}

#[test]
fn callback_refusals() {
    let p = provider();
    let a = action(&p, json!({}));
    let t = now();
    let start = Req::get("/").run(&a, t);
    let flow = cookie_value(&start, "ngrok_flow_oidc").expect("flow");
    let fc = format!("ngrok_flow_oidc={flow}");
    let code = |o: &AuthOutcome| {
        (
            respond(o).0,
            header(o, "ngrok-error-code").map(String::from),
        )
    };

    let r = Req::get("/ngrok/oidc/callback?code=c")
        .cookie(&fc)
        .run(&a, t);
    assert_eq!(code(&r), (400, Some("ERR_NGROK_5200".into())));
    let r = Req::get("/ngrok/oidc/callback?code=c&state=forged")
        .cookie(&fc)
        .run(&a, t);
    assert_eq!(code(&r), (400, Some("ERR_NGROK_5200".into())));
    let r = Req::get("/ngrok/oidc/callback?code=c&state=x").run(&a, t);
    assert_eq!(code(&r), (400, Some("ERR_NGROK_5200".into())));
    let location = header(&start, "location").unwrap_or_default().to_string();
    let state = url::query_param(location.split_once('?').map(|x| x.1).unwrap_or(""), "state")
        .expect("state");
    let r = Req::get(&format!(
        "/ngrok/oidc/callback?error=access_denied&error_description=no%20way&state={state}"
    ))
    .cookie(&fc)
    .run(&a, t);
    assert_eq!(code(&r), (403, Some("ERR_NGROK_5211".into())));
    assert!(String::from_utf8_lossy(respond(&r).2).contains("no way"));
    // A flow older than 10 minutes starts a new login.
    let r = Req::get(&format!("/ngrok/oidc/callback?code=c&state={state}"))
        .cookie(&fc)
        .run(&a, t + 601);
    assert_eq!(respond(&r).0, 302);
    assert!(header(&r, "location").is_some_and(|l| l.starts_with(&p.issuer)));
    // Token endpoint refuses the code.
    p.server.route(
        "/token",
        400,
        r#"{"error":"invalid_grant","error_description":"code expired"}"#,
    );
    let r = Req::get(&format!("/ngrok/oidc/callback?code=c&state={state}"))
        .cookie(&fc)
        .run(&a, t);
    assert_eq!(code(&r), (403, Some("ERR_NGROK_5211".into())));
    // No ID token.
    p.server.route(
        "/token",
        200,
        r#"{"access_token":"x","token_type":"Bearer"}"#,
    );
    let r = Req::get(&format!("/ngrok/oidc/callback?code=c&state={state}"))
        .cookie(&fc)
        .run(&a, t);
    assert_eq!(code(&r), (502, Some("ERR_NGROK_5203".into())));
}

#[test]
fn id_token_must_verify() {
    let p = provider();
    let a = action(&p, json!({}));
    let (cb, session) = login(&p, &a, now(), json!({"aud": "someone-else"}));
    assert_eq!(respond(&cb).0, 401);
    assert_eq!(header(&cb, "ngrok-error-code"), Some("ERR_NGROK_5204"));
    assert!(session.is_none());
    let (cb, _) = login(&p, &a, now(), json!({"nonce": "replayed"}));
    assert_eq!(header(&cb, "ngrok-error-code"), Some("ERR_NGROK_5204"));
}

#[test]
fn allow_lists() {
    let p = provider();
    let a = action(&p, json!({"allow_domains": ["corp.example"]}));
    let (cb, session) = login(&p, &a, now(), json!({}));
    assert_eq!(respond(&cb).0, 403);
    assert_eq!(header(&cb, "ngrok-error-code"), Some("ERR_NGROK_3403"));
    assert!(session.is_none());
    let (cb, _) = login(
        &p,
        &a,
        now(),
        json!({"email": "bob@corp.example", "email_verified": false}),
    );
    assert_eq!(respond(&cb).0, 403, "unverified addresses do not count");
    let (cb, session) = login(
        &p,
        &a,
        now(),
        json!({"email": "bob@corp.example", "email_verified": true}),
    );
    assert_eq!(respond(&cb).0, 302);
    assert!(session.is_some());
}

#[test]
fn special_paths_and_methods() {
    let p = provider();
    let a = action(
        &p,
        json!({"allow_cors_preflight": true, "authz_url_params": {"hd": "corp.example"}}),
    );
    let r = Req::get("/ngrok/login?redirect_path=%2Fdash").run(&a, now());
    let location = header(&r, "location").unwrap_or_default().to_string();
    assert!(
        location.contains("prompt=login") && location.contains("hd=corp.example"),
        "{location}"
    );
    // The flow remembers where to go.
    let flow = cookie_value(&r, "ngrok_flow_oidc").expect("flow");
    let f: Flow = a.seal.open("ngrok_flow_oidc", &flow).expect("open");
    assert_eq!(f.redirect, "/dash");
    let r = Req::get("/ngrok/login?redirect_path=//evil.example").run(&a, now());
    let f: Flow = a
        .seal
        .open(
            "ngrok_flow_oidc",
            &cookie_value(&r, "ngrok_flow_oidc").expect("flow"),
        )
        .expect("open");
    assert_eq!(f.redirect, "/");

    let mut pre = Req::get("/api");
    pre.method = "OPTIONS";
    pre.headers
        .push(("access-control-request-method".into(), b"POST".to_vec()));
    assert!(matches!(pre.run(&a, now()), AuthOutcome::Continue { .. }));
    pre.headers.pop();
    assert_eq!(respond(&pre.run(&a, now())).0, 401);

    let mut post = Req::get("/api");
    post.method = "POST";
    post.headers[0].1 = b"application/json".to_vec();
    let r = post.run(&a, now());
    assert_eq!(respond(&r).0, 401);
    assert_eq!(header(&r, "ngrok-error-code"), Some("ERR_NGROK_3401"));
    assert_eq!(header(&r, "content-type"), Some("application/json"));
}

#[test]
fn provider_down() {
    let server = Server::start();
    let issuer = server.url("");
    let a = AuthAction::compile(
        AuthKind::Oidc,
        &json!({"issuer_url": issuer, "client_id": "c", "client_secret": "s"}),
    )
    .expect("compile");
    let r = Req::get("/").run(&a, now());
    assert_eq!(respond(&r).0, 502);
    assert_eq!(header(&r, "ngrok-error-code"), Some("ERR_NGROK_5202"));
}

#[test]
fn github_login() {
    let server = Server::start();
    server.route(
        "/login/oauth/access_token",
        200,
        r#"{"access_token":"gho_x","token_type":"bearer","scope":"read:user,user:email"}"#,
    );
    server.route(
        "/user",
        200,
        r#"{"id": 583231, "login": "octocat", "name": null, "email": null}"#,
    );
    server.route(
        "/user/emails",
        200,
        r#"[{"email":"old@example.com","primary":false,"verified":true},{"email":"octo@github.example","primary":true,"verified":true}]"#,
    );
    let cfg = config::parse_oauth(
        &json!({"provider": "github", "client_id": "gh-id", "client_secret": "gh-secret",
        "allow_emails": ["octo@github.example"]}),
    )
    .expect("config");
    let a = AuthAction::with_config(
        AuthKind::OAuth,
        cfg,
        GitHubEndpoints {
            authorize: server.url("/login/oauth/authorize"),
            token: server.url("/login/oauth/access_token"),
            api: server.url(""),
        },
    )
    .expect("action");
    let start = Req::get("/repo").run(&a, now());
    let location = header(&start, "location").unwrap_or_default().to_string();
    let q = location.split_once('?').map(|x| x.1).unwrap_or("");
    assert!(
        location.starts_with(&server.url("/login/oauth/authorize?")),
        "{location}"
    );
    assert_eq!(
        url::query_param(q, "scope").as_deref(),
        Some("read:user user:email")
    );
    assert_eq!(
        url::query_param(q, "redirect_uri").as_deref(),
        Some("https://app.example.com/ngrok/oauth/callback")
    );
    assert_eq!(url::query_param(q, "nonce"), None);
    let state = url::query_param(q, "state").expect("state");
    let flow = cookie_value(&start, "ngrok_flow_github").expect("flow");
    let cb = Req::get(&format!("/ngrok/oauth/callback?code=gh-code&state={state}"))
        .cookie(&format!("ngrok_flow_github={flow}"))
        .run(&a, now());
    assert_eq!(
        (respond(&cb).0, header(&cb, "location")),
        (302, Some("/repo")),
        "{cb:?}"
    );
    let token_req = server
        .requests("/login/oauth/access_token")
        .pop()
        .unwrap_or_default();
    assert!(
        token_req.contains("client_secret=gh-secret") && token_req.contains("code=gh-code"),
        "{token_req}"
    );
    assert!(token_req
        .to_ascii_lowercase()
        .contains("accept: application/json"));
    assert!(server
        .requests("/user")
        .pop()
        .unwrap_or_default()
        .contains("Bearer gho_x"));
    let session = cookie_value(&cb, "ngrok_session_github").expect("session");
    let ok = Req::get("/repo")
        .cookie(&format!("ngrok_session_github={session}"))
        .run(&a, now());
    let AuthOutcome::Continue { vars } = ok else {
        panic!("expected Continue: {ok:?}");
    };
    assert_eq!(vars["identity"]["email"], "octo@github.example");
    assert_eq!(vars["identity"]["name"], "octocat");
    assert_eq!(vars["identity"]["provider_user_id"], "583231");
    assert!(vars.get("identity_token").is_none());

    // GitHub reports a bad code with 200 and an error field.
    server.route("/login/oauth/access_token", 200, r#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#);
    let cb = Req::get(&format!("/ngrok/oauth/callback?code=old&state={state}"))
        .cookie(&format!("ngrok_flow_github={flow}"))
        .run(&a, now());
    assert_eq!(
        (respond(&cb).0, header(&cb, "ngrok-error-code")),
        (403, Some("ERR_NGROK_3125"))
    );
}
