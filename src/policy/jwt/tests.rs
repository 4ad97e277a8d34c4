use super::*;
use crate::policy::oidc::testutil::{jwks, now, runtime, unsigned, Server, TestKey};
use serde_json::json;

const ISS: &str = "https://issuer.example.com";

fn config(jku: &str, extra: Value) -> Value {
    let mut c = json!({
        "issuer": {"allow_list": [{"value": ISS}]},
        "audience": {"allow_list": [{"value": "api://orders"}]},
        "http": {"tokens": [{"type": "jwt", "method": "header", "name": "Authorization", "prefix": "Bearer "}]},
        "jws": {"allowed_algorithms": ["ES256", "RS256"], "keys": {"sources": {"additional_jkus": [jku]}}},
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "api://orders", "sub": "svc-1", "exp": now() + 300, "scope": "orders:read"})
}

struct Setup {
    server: Server,
    key: TestKey,
    action: JwtAction,
}

fn setup(extra: Value) -> Setup {
    let server = Server::start();
    let key = TestKey::generate("k1");
    server.route("/jwks", 200, &jwks(&[&key]));
    let action = JwtAction::compile(&config(&server.url("/jwks"), extra)).expect("compile");
    Setup {
        server,
        key,
        action,
    }
}

fn run(a: &JwtAction, method: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> AuthOutcome {
    let h: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let req = AuthRequest {
        method,
        scheme: "https",
        host: "api.example.com",
        path_and_query: "/orders",
        headers: &h,
    };
    runtime().block_on(a.on_request(&req, body))
}

fn code(o: &AuthOutcome) -> (u16, String) {
    match o {
        AuthOutcome::Respond {
            status, headers, ..
        } => (
            *status,
            headers
                .iter()
                .find(|(n, _)| n == "ngrok-error-code")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        ),
        AuthOutcome::Continue { vars } => panic!("expected a refusal, got Continue {vars}"),
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn valid_token_continues_with_claims() {
    let s = setup(json!({}));
    let t = s.key.sign(&claims());
    let o = run(&s.action, "GET", &[("authorization", &bearer(&t))], None);
    let AuthOutcome::Continue { vars } = o else {
        panic!("expected Continue: {o:?}");
    };
    assert_eq!(vars["tokens"][0]["claims"]["sub"], "svc-1");
    assert_eq!(vars["tokens"][0]["type"], "jwt");
    // Case-insensitive prefix; the JWKS is fetched once.
    let o = run(
        &s.action,
        "GET",
        &[("Authorization", &format!("bearer {t}"))],
        None,
    );
    assert!(matches!(o, AuthOutcome::Continue { .. }));
    assert_eq!(s.server.hits("/jwks"), 1);
}

#[test]
fn refusals() {
    let s = setup(json!({}));
    let a = &s.action;
    let sign = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        bearer(&s.key.sign(&c))
    };
    assert_eq!(
        code(&run(a, "GET", &[], None)),
        (401, "ERR_NGROK_3406".into())
    );
    let t = s.key.sign(&claims());
    assert_eq!(
        code(&run(a, "GET", &[("authorization", &t)], None)),
        (401, "ERR_NGROK_3409".into())
    );
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[("authorization", "Bearer not-a-jwt")],
            None
        )),
        (401, "ERR_NGROK_3412".into())
    );
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[("authorization", &sign(&|c| c["exp"] = json!(now() - 3600)))],
            None
        )),
        (401, "ERR_NGROK_3415".into())
    );
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[(
                "authorization",
                &sign(&|c| c["iss"] = json!("https://evil.example"))
            )],
            None
        )),
        (401, "ERR_NGROK_3417".into())
    );
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[("authorization", &sign(&|c| c["aud"] = json!("api://other")))],
            None
        )),
        (401, "ERR_NGROK_3418".into())
    );
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[("authorization", &sign(&|c| c["nbf"] = json!(now() + 3600)))],
            None
        )),
        (401, "ERR_NGROK_3416".into())
    );
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[(
                "authorization",
                &sign(&|c| {
                    c.as_object_mut().map(|m| m.remove("aud"));
                })
            )],
            None
        )),
        (401, "ERR_NGROK_3419".into())
    );
    // Bad signature: another key under the published kid; a tampered payload.
    let impostor = TestKey::generate("k1");
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[("authorization", &bearer(&impostor.sign(&claims())))],
            None
        )),
        (401, "ERR_NGROK_3414".into())
    );
    let parts: Vec<&str> = t.split('.').collect();
    let mut evil = claims();
    evil["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        unsigned(&evil).split('.').nth(1).unwrap_or(""),
        parts[2]
    );
    assert_eq!(
        code(&run(a, "GET", &[("authorization", &bearer(&forged))], None)),
        (401, "ERR_NGROK_3414".into())
    );
    // alg none at request time.
    let o = run(
        a,
        "GET",
        &[("authorization", &bearer(&unsigned(&claims())))],
        None,
    );
    assert_eq!(code(&o), (401, "ERR_NGROK_3413".into()));
    if let AuthOutcome::Respond { headers, .. } = &o {
        assert!(headers.iter().any(|(n, _)| n == "www-authenticate"));
    }
    // A kid nobody publishes.
    let stranger = TestKey::generate("k7");
    assert_eq!(
        code(&run(
            a,
            "GET",
            &[("authorization", &bearer(&stranger.sign(&claims())))],
            None
        )),
        (401, "ERR_NGROK_3414".into())
    );
}

#[test]
fn algorithm_allow_list() {
    let s = setup(json!({}));
    let es_only = JwtAction::compile(&config(
        &s.server.url("/jwks"),
        json!({"jws": {"allowed_algorithms": ["RS256"], "keys": {"sources": {"additional_jkus": [s.server.url("/jwks")]}}}}),
    ))
    .expect("compile");
    let t = bearer(&s.key.sign(&claims()));
    assert_eq!(
        code(&run(&es_only, "GET", &[("authorization", &t)], None)),
        (401, "ERR_NGROK_3413".into())
    );
}

#[test]
fn refused_at_load() {
    let jku = "https://issuer.example.com/jwks";
    let field = |extra: Value| {
        JwtAction::compile(&config(jku, extra))
            .map(|_| ())
            .unwrap_err()
            .0
    };
    let jws = |algs: Value| json!({"jws": {"allowed_algorithms": algs, "keys": {"sources": {"additional_jkus": [jku]}}}});
    assert_eq!(field(jws(json!(["none"]))), "jws.allowed_algorithms");
    assert_eq!(
        field(jws(json!(["NONE", "RS256"]))),
        "jws.allowed_algorithms"
    );
    assert_eq!(field(jws(json!(["HS256"]))), "jws.allowed_algorithms");
    assert_eq!(field(jws(json!(["XX512"]))), "jws.allowed_algorithms");
    assert_eq!(field(jws(json!([]))), "jws.allowed_algorithms");
    assert_eq!(
        field(json!({"issuer": {"allow_list": []}})),
        "issuer.allow_list"
    );
    assert_eq!(field(json!({"http": {"tokens": []}})), "http.tokens");
    assert_eq!(
        field(json!({"http": {"tokens": [{"method": "query", "name": "t"}]}})),
        "http.tokens[0].method"
    );
    assert_eq!(
        field(json!({"http": {"tokens": [{"method": "body"}]}})),
        "http.tokens[0].name"
    );
    assert_eq!(
        field(json!({"http": {"tokens": [{"type": "saml"}]}})),
        "http.tokens[0].type"
    );
    assert_eq!(
        field(
            json!({"jws": {"keys": {"sources": {"additional_jkus": ["http://keys.example.com/jwks"]}}}})
        ),
        "jws.keys.sources.additional_jkus"
    );
    assert_eq!(
        field(json!({"jws": {"keys": {"sources": {}}}})),
        "jws.keys.sources.additional_jkus"
    );
    assert_eq!(field(json!({"extra": 1})), "extra");
    // Lists of keys and sources, and a missing audience, are fine.
    let mut c = config(
        jku,
        json!({"jws": {"keys": [{"sources": [{"additional_jkus": [jku]}], "identification": [{"token_claims": ["kid"]}]}]}}),
    );
    c.as_object_mut().map(|m| m.remove("audience"));
    let a = JwtAction::compile(&c).expect("compile");
    assert_eq!(a.cfg.algorithms, crate::policy::oidc::idtoken::ASYMMETRIC);
    assert!(!a.needs_body());
}

#[test]
fn body_tokens() {
    let s = setup(json!({"http": {"tokens": [
        {"type": "access_token", "method": "body", "name": "access_token"},
    ]}}));
    let a = &s.action;
    let t = s.key.sign(&claims());
    assert!(a.needs_body());
    let json_body = json!({"access_token": t}).to_string();
    let o = run(
        a,
        "POST",
        &[("content-type", "application/json; charset=utf-8")],
        Some(json_body.as_bytes()),
    );
    assert!(matches!(o, AuthOutcome::Continue { .. }), "{o:?}");
    let form = format!("x=1&access_token={t}");
    let o = run(
        a,
        "PUT",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    );
    assert!(matches!(o, AuthOutcome::Continue { .. }), "{o:?}");
    assert_eq!(
        code(&run(a, "GET", &[], None)),
        (401, "ERR_NGROK_3411".into())
    );
    assert_eq!(
        code(&run(
            a,
            "POST",
            &[("content-type", "application/json")],
            Some(b"{not json")
        )),
        (401, "ERR_NGROK_3408".into())
    );
    assert_eq!(
        code(&run(
            a,
            "POST",
            &[("content-type", "text/plain")],
            Some(t.as_bytes())
        )),
        (401, "ERR_NGROK_3410".into())
    );
    assert_eq!(
        code(&run(
            a,
            "POST",
            &[("content-type", "application/json")],
            Some(b"{}")
        )),
        (401, "ERR_NGROK_3406".into())
    );
    // A header token in the same request does not count for a body-only config.
    assert_eq!(
        code(&run(a, "POST", &[("authorization", &bearer(&t))], None)),
        (401, "ERR_NGROK_3406".into())
    );
}

#[test]
fn header_or_body() {
    let s = setup(json!({"http": {"tokens": [
        {"type": "jwt", "method": "header", "name": "X-Token"},
        {"type": "jwt", "method": "body", "name": "token"},
    ]}}));
    let t = s.key.sign(&claims());
    assert!(matches!(
        run(&s.action, "GET", &[("x-token", &t)], None),
        AuthOutcome::Continue { .. }
    ));
    assert_eq!(
        code(&run(&s.action, "GET", &[], None)),
        (401, "ERR_NGROK_3406".into())
    );
    let body = json!({"token": t}).to_string();
    assert!(matches!(
        run(
            &s.action,
            "PATCH",
            &[("content-type", "application/json")],
            Some(body.as_bytes())
        ),
        AuthOutcome::Continue { .. }
    ));
}

#[test]
fn jwks_unreachable_is_502() {
    let server = Server::start();
    let a = JwtAction::compile(&config(&server.url("/nothing-here"), json!({}))).expect("compile");
    let key = TestKey::generate("k1");
    let o = run(
        &a,
        "GET",
        &[("authorization", &bearer(&key.sign(&claims())))],
        None,
    );
    assert_eq!(code(&o), (502, "ERR_NGROK_3422".into()));
}
