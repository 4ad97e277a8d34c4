//! The `oauth` and `openid-connect` traffic policy actions: a browser
//! login with an identity provider (authorization code + PKCE S256,
//! `state`, `nonce`), then a sealed session cookie.
//!
//! Owns: the login flow, the callback, the session cookie and the special
//! paths. Never blocks a worker: provider requests go through
//! [`fetch::Fetcher`] (a tokio thread of its own); everything else is
//! computation on the request. `AuthAction` is compiled once at config
//! load and shared through `Arc` across worker threads: it holds no
//! per-request state and no locks on the session path (caches use
//! `arc-swap`).
//!
//! Paths (answered by the action, never forwarded):
//! - [`CALLBACK_OIDC`] / [`CALLBACK_OAUTH`]: the redirect URI to register
//!   with the provider is `<scheme>://<host><path>`;
//! - `/ngrok/login[?auth_id=..][&redirect_path=/p]`: start a login (with
//!   `prompt=login` for OpenID Connect providers), then go to the path;
//! - `/ngrok/logout[?auth_id=..][&redirect_path=/p]`: clear the session.
//!
//! Cookies: `ngrok_session_<auth_id>` and `ngrok_flow_<auth_id>` (see
//! [`session`]). Their key comes from `cookie_secret` in the config, or a
//! random per-process secret: without `cookie_secret` every session ends
//! when the edge restarts.
//!
//! Sessions end after `max_session_duration` (default 72h) or after
//! `idle_session_timeout` (default 24h) without a request that renews the
//! cookie. [`AuthOutcome::Continue`] carries no response headers, so the
//! idle clock is renewed by a `307` to the same URL with a fresh cookie, on
//! browser navigations (GET/HEAD accepting `text/html`) at most every
//! `max(idle/8, 60s)`.

pub mod config;
pub mod cookie;
pub mod discovery;
pub mod fetch;
pub mod idtoken;
pub mod jwks;
pub mod pkce;
pub mod provider;
pub mod response;
pub mod seal;
pub mod session;
pub mod url;

#[cfg(test)]
pub(crate) mod testutil;

use arc_swap::ArcSwapOption;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use config::{AuthConfig, Provider};
use cookie::CookieScope;
use discovery::Discovery;
use fetch::Fetcher;
use pkce::{random_token, same, Pkce};
use provider::{Backend, Client, Codes, GitHubEndpoints, Identity, ProviderError};
use response::{error, redirect, wants_json, AuthError};
use seal::SealKey;
use session::{flow_cookie_name, session_cookie_name, unix_now, Clock, Flow, Session, Standing};

/// Callback path of `openid-connect`.
pub const CALLBACK_OIDC: &str = "/ngrok/oidc/callback";
/// Callback path of `oauth`.
pub const CALLBACK_OAUTH: &str = "/ngrok/oauth/callback";
pub const LOGIN_PATH: &str = "/ngrok/login";
pub const LOGOUT_PATH: &str = "/ngrok/logout";

/// Which action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `oauth` (presets: google, github).
    OAuth,
    /// `openid-connect`.
    Oidc,
}

/// What an action sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The `Host` (with port when not the default).
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// What an action decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthOutcome {
    /// Go on; `vars` is the `actions.ngrok.<oauth|oidc|jwt_validation>`
    /// object.
    Continue { vars: Value },
    /// Answer from the edge (a redirect, the logout page, an error).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// A compiled `oauth` or `openid-connect` action.
pub struct AuthAction {
    kind: AuthKind,
    cfg: AuthConfig,
    fetcher: Fetcher,
    backend: Backend,
    seal: SealKey,
    clock: Clock,
    scope: CookieScope,
    session_cookie: String,
    flow_cookie: String,
    codes: Codes,
}

impl std::fmt::Debug for AuthAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthAction")
            .field("kind", &self.kind)
            .field("provider", &self.cfg.provider_name)
            .field("auth_id", &self.cfg.auth_id)
            .finish()
    }
}

impl AuthAction {
    /// Validates `config` and builds the action. Errors name the field.
    pub fn compile(kind: AuthKind, config: &Value) -> Result<AuthAction, (String, String)> {
        let cfg = match kind {
            AuthKind::Oidc => config::parse_oidc(config)?,
            AuthKind::OAuth => config::parse_oauth(config)?,
        };
        AuthAction::with_config(kind, cfg, GitHubEndpoints::default())
    }

    fn with_config(
        kind: AuthKind,
        cfg: AuthConfig,
        github: GitHubEndpoints,
    ) -> Result<AuthAction, (String, String)> {
        let fetcher = Fetcher::new(cfg.ca_bundle.as_deref())
            .map_err(|e| ("ca_bundle".to_string(), e.to_string()))?;
        let backend = match &cfg.provider {
            Provider::Oidc { issuer_url } => Backend::Oidc {
                discovery: Discovery::new(issuer_url.clone(), fetcher.clone()),
                jwks: ArcSwapOption::empty(),
            },
            Provider::GitHub => Backend::GitHub(github),
        };
        let context = format!("{kind:?}/{}", cfg.auth_id);
        let seal = SealKey::derive(cfg.cookie_secret.as_deref(), &context);
        if cfg.cookie_secret.is_none() {
            info!(
                auth_id = %cfg.auth_id,
                "auth sessions use a per-process key: they end when the edge restarts (set cookie_secret to keep them)"
            );
        }
        Ok(AuthAction {
            kind,
            clock: Clock {
                max_session: cfg.max_session.as_secs(),
                idle: cfg.idle_timeout.as_secs(),
            },
            scope: CookieScope {
                domain: cfg.cookie_domain.clone(),
            },
            session_cookie: session_cookie_name(&cfg.auth_id),
            flow_cookie: flow_cookie_name(&cfg.auth_id),
            codes: Codes::of(kind),
            cfg,
            fetcher,
            backend,
            seal,
        })
    }

    pub fn kind(&self) -> AuthKind {
        self.kind
    }

    pub fn auth_id(&self) -> &str {
        &self.cfg.auth_id
    }

    /// The path the provider redirects back to.
    pub fn callback_path(&self) -> &'static str {
        match self.kind {
            AuthKind::Oidc => CALLBACK_OIDC,
            AuthKind::OAuth => CALLBACK_OAUTH,
        }
    }

    /// Runs the action on one request.
    pub async fn on_request(&self, req: &AuthRequest<'_>) -> AuthOutcome {
        self.on_request_at(req, unix_now()).await
    }

    async fn on_request_at(&self, req: &AuthRequest<'_>, now: u64) -> AuthOutcome {
        let (path, query) = url::split_target(req.path_and_query);
        if self.cfg.allow_cors_preflight
            && req.method.eq_ignore_ascii_case("OPTIONS")
            && has_header(req.headers, "access-control-request-method")
        {
            return AuthOutcome::Continue {
                vars: self.vars(None),
            };
        }
        let ours = || match url::query_param(query, "auth_id") {
            Some(id) => id == self.cfg.auth_id,
            None => true,
        };
        if path == self.callback_path() {
            return self.callback(req, query, now).await;
        }
        if path == LOGOUT_PATH && ours() {
            return self.logout(req, query);
        }
        if path == LOGIN_PATH && ours() {
            let back = url::query_param(query, "redirect_path");
            let back = back
                .as_deref()
                .and_then(url::safe_local_path)
                .unwrap_or("/");
            return self.start_login(req, back, true, now, Vec::new()).await;
        }

        let session = cookie::find(req.headers, &self.session_cookie)
            .and_then(|v| self.seal.open::<Session>(&self.session_cookie, v));
        let Some(mut session) = session else {
            return self.unauthenticated(req, now, Vec::new()).await;
        };
        match self.clock.standing(&session, now) {
            Standing::Valid => AuthOutcome::Continue {
                vars: self.vars(Some(&session)),
            },
            Standing::ValidRefresh if is_navigation(req) => {
                session.last_seen = now;
                let set = self.session_set_cookie(req, &session, now);
                redirect(307, req.path_and_query, vec![("set-cookie".into(), set)])
            }
            Standing::ValidRefresh => AuthOutcome::Continue {
                vars: self.vars(Some(&session)),
            },
            standing @ (Standing::IdleTimedOut | Standing::MaxDurationReached) => {
                debug!(auth_id = %self.cfg.auth_id, ?standing, "session ended");
                let clear = vec![(
                    "set-cookie".to_string(),
                    self.scope.clear(&self.session_cookie, secure(req)),
                )];
                self.unauthenticated(req, now, clear).await
            }
        }
    }

    /// No valid session: browsers are sent to the provider; other
    /// requests get 401 (a redirect would lose their body).
    async fn unauthenticated(
        &self,
        req: &AuthRequest<'_>,
        now: u64,
        headers: Vec<(String, String)>,
    ) -> AuthOutcome {
        if req.method.eq_ignore_ascii_case("GET") || req.method.eq_ignore_ascii_case("HEAD") {
            let back = url::safe_local_path(req.path_and_query).unwrap_or("/");
            return self.start_login(req, back, false, now, headers).await;
        }
        error(
            &AuthError::new(
                401,
                "ERR_NGROK_3401",
                format!(
                    "Authentication required: log in at {LOGIN_PATH}?auth_id={}",
                    self.cfg.auth_id
                ),
            ),
            wants_json(req.headers),
            headers,
        )
    }

    /// Redirects to the provider's authorization endpoint, remembering
    /// the flow in the flow cookie.
    async fn start_login(
        &self,
        req: &AuthRequest<'_>,
        back: &str,
        force: bool,
        now: u64,
        mut headers: Vec<(String, String)>,
    ) -> AuthOutcome {
        let json = wants_json(req.headers);
        let Some(redirect_uri) = self.redirect_uri(req) else {
            return error(
                &AuthError::new(
                    400,
                    self.codes.state_mismatch,
                    "The request has no valid Host.",
                ),
                json,
                headers,
            );
        };
        let target = match self.backend.authorize_target().await {
            Ok(t) => t,
            Err(e) => return self.provider_error(e, json, headers),
        };
        let pkce = Pkce::generate();
        let flow = Flow {
            state: random_token(),
            nonce: random_token(),
            verifier: pkce.verifier,
            redirect: back.to_string(),
            created: now,
        };
        let scope = self.cfg.scopes.join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.cfg.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &scope),
            ("state", &flow.state),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ];
        if target.oidc {
            params.push(("nonce", &flow.nonce));
        }
        let mut prompt_set = false;
        for (k, v) in &self.cfg.authz_url_params {
            prompt_set |= k == "prompt";
            params.push((k, v));
        }
        if force && target.oidc && !prompt_set {
            params.push(("prompt", "login"));
        }
        let location = url::with_query(&target.endpoint, &params);
        let sealed = self.seal.seal(&self.flow_cookie, &flow);
        headers.push((
            "set-cookie".into(),
            self.scope.set(
                &self.flow_cookie,
                &sealed,
                Some(session::FLOW_TTL),
                secure(req),
            ),
        ));
        redirect(302, &location, headers)
    }

    async fn callback(&self, req: &AuthRequest<'_>, query: &str, now: u64) -> AuthOutcome {
        let json = wants_json(req.headers);
        let fail = |status: u16, code: &'static str, msg: String| {
            error(&AuthError::new(status, code, msg), json, Vec::new())
        };
        let Some(state) = url::query_param(query, "state") else {
            return fail(
                400,
                self.codes.state_missing,
                "The state parameter is missing. Start over to try again.".into(),
            );
        };
        let Some(flow) = cookie::find(req.headers, &self.flow_cookie)
            .and_then(|v| self.seal.open::<Flow>(&self.flow_cookie, v))
        else {
            return fail(
                400,
                self.codes.state_unreadable,
                "The login state cannot be read (cookies blocked, or another browser?). Start over to try again.".into(),
            );
        };
        if !same(&state, &flow.state) {
            return fail(
                400,
                self.codes.state_mismatch,
                "The state parameter does not match this login. Start over to try again.".into(),
            );
        }
        if flow.expired(now) {
            debug!(auth_id = %self.cfg.auth_id, "login took too long; starting again");
            return self
                .start_login(req, &flow.redirect, false, now, Vec::new())
                .await;
        }
        if let Some(e) = url::query_param(query, "error") {
            let description = url::query_param(query, "error_description").unwrap_or_default();
            return self.provider_error(
                ProviderError::Denied {
                    error: e,
                    description,
                },
                json,
                Vec::new(),
            );
        }
        let Some(code) = url::query_param(query, "code").filter(|c| !c.is_empty()) else {
            return fail(
                400,
                self.codes.state_missing,
                "The provider sent no authorization code.".into(),
            );
        };
        let Some(redirect_uri) = self.redirect_uri(req) else {
            return fail(
                400,
                self.codes.state_mismatch,
                "The request has no valid Host.".into(),
            );
        };
        let client = Client {
            id: &self.cfg.client_id,
            secret: &self.cfg.client_secret,
            redirect_uri: &redirect_uri,
        };
        let identity = match self
            .backend
            .exchange(&self.fetcher, &client, &code, &flow.verifier, &flow.nonce)
            .await
        {
            Ok(id) => id,
            Err(e) => return self.provider_error(e, json, Vec::new()),
        };
        let clear_flow = (
            "set-cookie".to_string(),
            self.scope.clear(&self.flow_cookie, secure(req)),
        );
        if !self.allowed(&identity) {
            info!(auth_id = %self.cfg.auth_id, email = %identity.email, "login refused by allow list");
            return error(
                &AuthError::new(
                    403,
                    "ERR_NGROK_3403",
                    format!(
                        "{} is not allowed to access this endpoint.",
                        display_user(&identity)
                    ),
                ),
                json,
                vec![clear_flow],
            );
        }
        let session = Session {
            sub: identity.sub,
            email: identity.email,
            name: identity.name,
            provider_session: identity.provider_session,
            created: now,
            last_seen: now,
            access_token: identity.access_token,
            access_expires: identity.expires_in.map(|s| now + s).unwrap_or(0),
            id_token: identity.id_token,
        };
        info!(auth_id = %self.cfg.auth_id, sub = %session.sub, "login");
        let set = self.session_set_cookie(req, &session, now);
        redirect(
            302,
            &flow.redirect,
            vec![clear_flow, ("set-cookie".into(), set)],
        )
    }

    fn logout(&self, req: &AuthRequest<'_>, query: &str) -> AuthOutcome {
        let clear = vec![
            (
                "set-cookie".to_string(),
                self.scope.clear(&self.session_cookie, secure(req)),
            ),
            (
                "set-cookie".to_string(),
                self.scope.clear(&self.flow_cookie, secure(req)),
            ),
        ];
        let back = url::query_param(query, "redirect_path");
        if let Some(p) = back.as_deref().and_then(url::safe_local_path) {
            return redirect(302, p, clear);
        }
        let mut headers = clear;
        headers.push(("cache-control".into(), "no-store".into()));
        let body = if wants_json(req.headers) {
            headers.push(("content-type".into(), "application/json".into()));
            br#"{"logged_out":true}"#.to_vec()
        } else {
            headers.push(("content-type".into(), "text/html; charset=utf-8".into()));
            response::page("Logged out", "You have been logged out.")
        };
        AuthOutcome::Respond {
            status: 200,
            headers,
            body,
        }
    }

    /// Seals `session` into a `Set-Cookie`, dropping the tokens when the
    /// cookie would be too large for browsers.
    fn session_set_cookie(&self, req: &AuthRequest<'_>, session: &Session, now: u64) -> String {
        let mut sealed = self.seal.seal(&self.session_cookie, session);
        if sealed.len() > session::MAX_COOKIE_VALUE {
            let mut slim = session.clone();
            slim.id_token.clear();
            sealed = self.seal.seal(&self.session_cookie, &slim);
            if sealed.len() > session::MAX_COOKIE_VALUE {
                slim.access_token.clear();
                sealed = self.seal.seal(&self.session_cookie, &slim);
            }
            debug!(auth_id = %self.cfg.auth_id, "session cookie too large: tokens dropped");
        }
        self.scope.set(
            &self.session_cookie,
            &sealed,
            Some(self.clock.max_age(session, now)),
            secure(req),
        )
    }

    fn redirect_uri(&self, req: &AuthRequest<'_>) -> Option<String> {
        let scheme = match req.scheme {
            s if s.eq_ignore_ascii_case("https") => "https",
            s if s.eq_ignore_ascii_case("http") => "http",
            _ => return None,
        };
        let host = req.host;
        let valid = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        valid.then(|| {
            format!(
                "{scheme}://{}{}",
                host.to_ascii_lowercase(),
                self.callback_path()
            )
        })
    }

    fn allowed(&self, id: &Identity) -> bool {
        if self.cfg.allow_emails.is_empty() && self.cfg.allow_domains.is_empty() {
            return true;
        }
        if id.email.is_empty() || id.email_verified == Some(false) {
            return false;
        }
        let email = id.email.to_ascii_lowercase();
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.cfg.allow_emails.contains(&email) || self.cfg.allow_domains.iter().any(|d| d == domain)
    }

    fn provider_error(
        &self,
        e: ProviderError,
        json: bool,
        headers: Vec<(String, String)>,
    ) -> AuthOutcome {
        let name = &self.cfg.provider_name;
        let err = match e {
            ProviderError::Unreachable(m) => {
                warn!(auth_id = %self.cfg.auth_id, error = %m, "identity provider unreachable");
                AuthError::new(
                    502,
                    self.codes.provider_unreachable,
                    format!("Error while communicating with the identity provider ({name}): {m}"),
                )
            }
            ProviderError::Denied { error, description } => AuthError::new(
                403,
                self.codes.provider_denied,
                format!(
                    "The identity provider ({name}) returned the error \"{error}\": \"{description}\". Try again."
                ),
            ),
            ProviderError::NoIdentity(m) => {
                AuthError::new(502, self.codes.no_identity, format!("No identity from {name}: {m}"))
            }
            ProviderError::BadIdToken(m) => AuthError::new(
                401,
                self.codes.bad_id_token,
                format!("Failed to verify the ID token: {m}"),
            ),
        };
        error(&err, json, headers)
    }

    /// The `actions.ngrok.<oauth|oidc>` object.
    fn vars(&self, s: Option<&Session>) -> Value {
        let Some(s) = s else {
            return json!({
                "identity": null,
                "session_timed_out": false,
                "session_max_duration_reached": false,
                "userinfo_refreshed": false,
            });
        };
        let mut v = json!({
            "identity": {
                "id": format!("{}|{}", self.cfg.auth_id, s.sub),
                "email": s.email,
                "name": s.name,
                "provider_user_id": s.sub,
                "current_provider_session_id": s.provider_session,
            },
            "access_token": s.access_token,
            "refresh_token": "",
            "expires_at": s.access_expires,
            "session_timed_out": false,
            "session_max_duration_reached": false,
            "userinfo_refreshed": false,
        });
        if self.kind == AuthKind::Oidc {
            v["identity_token"] = Value::String(s.id_token.clone());
        }
        v
    }
}

fn has_header(headers: &[(&str, &[u8])], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

fn secure(req: &AuthRequest<'_>) -> bool {
    req.scheme.eq_ignore_ascii_case("https")
}

/// A browser navigation: GET/HEAD accepting HTML.
fn is_navigation(req: &AuthRequest<'_>) -> bool {
    (req.method.eq_ignore_ascii_case("GET") || req.method.eq_ignore_ascii_case("HEAD"))
        && req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("accept"))
            .any(|(_, v)| v.windows(9).any(|w| w == b"text/html"))
}

fn display_user(id: &Identity) -> String {
    if !id.email.is_empty() {
        id.email.clone()
    } else if !id.name.is_empty() {
        id.name.clone()
    } else {
        format!("user {}", id.sub)
    }
}

#[cfg(test)]
mod tests;
