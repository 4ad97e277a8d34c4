//! End-to-end `openid-connect` login against a real OpenID provider:
//! panva's `oidc-provider` (npm, tests/oidc/provider.mjs) over HTTPS on
//! loopback, with a certificate made here and trusted through the action's
//! `ca_bundle`.
//!
//! The test drives [`AuthAction::on_request`] directly on a monoio
//! runtime, as the edge's workers do, and plays the browser: it follows
//! redirects and keeps cookies, sending requests for the app's host to the
//! action and the rest to the provider (through the action's own fetch
//! client). That reaches the flow's corners (tampered cookies, expiry,
//! forged state) cheaply; tests/oidc_edge.rs runs the login through the
//! edge binary. The provider helpers live in tests/common/oidc.rs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::oidc::{provider_available, start_provider, IdP, CLIENT_ID, CLIENT_SECRET};

use ringress::policy::oidc::fetch::{FetchRequest, Fetcher};
use ringress::policy::oidc::url::{form_encode, Url};
use ringress::policy::oidc::{AuthAction, AuthKind, AuthOutcome, AuthRequest};
use serde_json::{json, Value};

const APP: &str = "app.ringress.test";

type Rt = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Where a navigation ended.
#[derive(Debug)]
enum End {
    /// The action let the request through.
    App { path: String, vars: Value },
    /// The action answered (not a redirect).
    AppResponse { status: u16, body: String },
    /// A provider page (not a redirect).
    Provider {
        url: String,
        status: u16,
        body: String,
    },
}

/// A browser: two cookie jars (app, provider), redirects followed.
struct Browser {
    rt: Rt,
    fetcher: Fetcher,
    app_jar: HashMap<String, String>,
    idp_jar: HashMap<String, String>,
    hops: usize,
}

impl Browser {
    fn new(ca: &Path) -> Browser {
        Browser {
            rt: monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .expect("runtime"),
            fetcher: Fetcher::new(Some(ca)).expect("fetcher"),
            app_jar: HashMap::new(),
            idp_jar: HashMap::new(),
            hops: 0,
        }
    }

    fn cookie_header(jar: &HashMap<String, String>) -> String {
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store(jar: &mut HashMap<String, String>, headers: &[(String, String)]) {
        for (_, v) in headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        {
            let pair = v.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let lower = v.to_ascii_lowercase();
            if value.is_empty()
                || lower.contains("max-age=0")
                || lower.contains("expires=thu, 01 jan 1970")
            {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.to_string());
            }
        }
    }

    /// One request to the action, no redirect followed.
    fn app_once(&mut self, action: &AuthAction, method: &str, path: &str) -> AuthOutcome {
        let cookie = Self::cookie_header(&self.app_jar);
        let headers: Vec<(&str, &[u8])> = vec![
            ("accept", b"text/html,application/xhtml+xml".as_slice()),
            ("cookie", cookie.as_bytes()),
        ];
        let req = AuthRequest {
            method,
            scheme: "https",
            host: APP,
            path_and_query: path,
            headers: &headers,
        };
        let out = self.rt.block_on(action.on_request(&req));
        if let AuthOutcome::Respond { headers, .. } = &out {
            Self::store(&mut self.app_jar, headers);
        }
        out
    }

    fn navigate(&mut self, action: &AuthAction, url: &str) -> End {
        self.request(action, "GET", url.to_string(), None)
    }

    fn request(
        &mut self,
        action: &AuthAction,
        mut method: &str,
        mut url: String,
        mut form: Option<String>,
    ) -> End {
        self.hops = 0;
        loop {
            assert!(self.hops < 20, "redirect loop at {url}");
            let u = Url::parse(&url).expect("absolute url");
            let origin = match u.port {
                Some(p) => format!("{}://{}:{p}", u.scheme, u.host),
                None => format!("{}://{}", u.scheme, u.host),
            };
            let (status, headers, body) = if u.host == APP {
                match self.app_once(action, method, &u.path_and_query) {
                    AuthOutcome::Continue { vars } => {
                        return End::App {
                            path: u.path_and_query,
                            vars,
                        }
                    }
                    AuthOutcome::Respond {
                        status,
                        headers,
                        body,
                    } => (status, headers, body),
                }
            } else {
                let mut req = match &form {
                    Some(f) => {
                        let mut r = FetchRequest::get(&url);
                        r.method = http::Method::POST;
                        r.body = f.clone().into_bytes();
                        r.header("content-type", "application/x-www-form-urlencoded")
                    }
                    None => FetchRequest::get(&url),
                }
                .header("accept", "text/html");
                if !self.idp_jar.is_empty() {
                    req = req.header("cookie", &Self::cookie_header(&self.idp_jar));
                }
                let res = self
                    .rt
                    .block_on(self.fetcher.fetch(req))
                    .expect("provider request");
                Self::store(&mut self.idp_jar, &res.headers);
                (res.status, res.headers, res.body)
            };
            let location = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.clone());
            match location {
                Some(loc) if (300..400).contains(&status) => {
                    self.hops += 1;
                    url = if loc.starts_with('/') {
                        format!("{origin}{loc}")
                    } else {
                        loc
                    };
                    method = "GET";
                    form = None;
                }
                _ if u.host == APP => {
                    return End::AppResponse {
                        status,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    }
                }
                _ => {
                    return End::Provider {
                        url,
                        status,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    }
                }
            }
        }
    }

    /// Submits the provider's login form shown at `form_url`.
    fn sign_in(&mut self, action: &AuthAction, form_url: &str, login: &str) -> End {
        let u = Url::parse(form_url).expect("url");
        let uid = u
            .path_and_query
            .trim_start_matches("/interaction/")
            .split(['/', '?'])
            .next()
            .unwrap_or("")
            .to_string();
        let origin = format!("{}://{}:{}", u.scheme, u.host, u.port.unwrap_or(443));
        let url = format!("{origin}/interaction/{uid}/login");
        self.request(action, "POST", url, Some(form_encode(&[("login", login)])))
    }
}

fn action(idp: &IdP, extra: Value) -> AuthAction {
    let mut config = json!({
        "issuer_url": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "ca_bundle": idp.ca.to_string_lossy(),
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    AuthAction::compile(AuthKind::Oidc, &config).expect("compile the action")
}

fn expect_app(end: End, want_path: &str) -> Value {
    match end {
        End::App { path, vars } => {
            assert_eq!(path, want_path);
            vars
        }
        other => panic!("expected the app at {want_path}, got {other:?}"),
    }
}

fn expect_login_form(end: End) -> String {
    match end {
        End::Provider {
            url,
            status: 200,
            body,
        } if body.contains("Sign in") => url,
        other => panic!("expected the provider's login form, got {other:?}"),
    }
}

fn location(out: &AuthOutcome) -> Option<&str> {
    match out {
        AuthOutcome::Respond { headers, .. } => headers
            .iter()
            .find(|(n, _)| n == "location")
            .map(|(_, v)| v.as_str()),
        AuthOutcome::Continue { .. } => None,
    }
}

#[test]
fn oidc_login_against_a_real_provider() {
    if !provider_available() {
        return;
    }
    let idp = start_provider(&format!("https://{APP}/ngrok/oidc/callback"));
    let a = action(&idp, json!({}));
    let mut browser = Browser::new(&idp.ca);
    let app = |p: &str| format!("https://{APP}{p}");

    // 1. Unauthenticated: redirected to the provider, which asks for a login.
    let form = expect_login_form(browser.navigate(&a, &app("/private?q=1")));
    assert!(form.starts_with(&idp.issuer), "{form}");
    assert!(browser.app_jar.contains_key("ngrok_flow_oidc"));

    // 2. Login -> callback -> session cookie -> the original URL continues.
    let vars = expect_app(browser.sign_in(&a, &form, "alice"), "/private?q=1");
    assert_eq!(vars["identity"]["email"], "alice@example.com");
    assert_eq!(vars["identity"]["name"], "Test User alice");
    assert_eq!(vars["identity"]["provider_user_id"], "alice");
    assert!(vars["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(vars["identity_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    assert!(browser.app_jar.contains_key("ngrok_session_oidc"));
    assert!(
        !browser.app_jar.contains_key("ngrok_flow_oidc"),
        "flow cookie cleared"
    );

    // 3. Authenticated requests continue without leaving the app.
    let vars = expect_app(browser.navigate(&a, &app("/other")), "/other");
    assert_eq!(browser.hops, 0);
    assert_eq!(vars["identity"]["email"], "alice@example.com");

    // 4. A tampered session cookie is refused: back to the provider.
    let good = browser.app_jar["ngrok_session_oidc"].clone();
    let mut bad = good.clone().into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'x' { b'y' } else { b'x' };
    browser.app_jar.insert(
        "ngrok_session_oidc".into(),
        String::from_utf8(bad).expect("ascii"),
    );
    let out = browser.app_once(&a, "GET", "/other");
    assert!(
        location(&out).is_some_and(|l| l.starts_with(&idp.issuer)),
        "{out:?}"
    );
    browser.app_jar.insert("ngrok_session_oidc".into(), good);
    expect_app(browser.navigate(&a, &app("/other")), "/other");

    // 5. Logout clears the session cookie.
    match browser.navigate(&a, &app("/ngrok/logout")) {
        End::AppResponse { status: 200, body } => assert!(body.contains("logged out")),
        other => panic!("expected the logout page, got {other:?}"),
    }
    assert!(!browser.app_jar.contains_key("ngrok_session_oidc"));
    let out = browser.app_once(&a, "GET", "/other");
    assert!(
        location(&out).is_some_and(|l| l.starts_with(&idp.issuer)),
        "{out:?}"
    );

    // 6. The provider still knows the user: a new login needs no form...
    let vars = expect_app(browser.navigate(&a, &app("/again")), "/again");
    assert_eq!(vars["identity"]["email"], "alice@example.com");
    // ...but /ngrok/login forces re-authentication (prompt=login): the
    // form again, then back to redirect_path. (Signing in as another user
    // would make the provider first end alice's session: its own page.)
    let form = expect_login_form(browser.navigate(&a, &app("/ngrok/login?redirect_path=%2Fdash")));
    let vars = expect_app(browser.sign_in(&a, &form, "alice"), "/dash");
    assert_eq!(vars["identity"]["email"], "alice@example.com");

    // 7. An expired session re-authenticates. The same action with a
    // 2-second maximum (same auth_id, so the same cookie key).
    let short = action(&idp, json!({"max_session_duration": "2s"}));
    expect_app(browser.navigate(&short, &app("/short")), "/short");
    std::thread::sleep(Duration::from_millis(2500));
    let out = browser.app_once(&short, "GET", "/short");
    assert!(
        location(&out).is_some_and(|l| l.starts_with(&idp.issuer)),
        "{out:?}"
    );
    assert!(
        !browser.app_jar.contains_key("ngrok_session_oidc"),
        "expired cookie cleared"
    );
    let vars = expect_app(browser.navigate(&short, &app("/short")), "/short");
    assert_eq!(vars["identity"]["email"], "alice@example.com");

    // 8. A callback replayed with a forged state is refused.
    let out = browser.app_once(&a, "GET", "/ngrok/oidc/callback?code=x&state=forged");
    match out {
        AuthOutcome::Respond {
            status, headers, ..
        } => {
            assert_eq!(status, 400);
            assert!(headers.contains(&("ngrok-error-code".into(), "ERR_NGROK_5200".into())));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
