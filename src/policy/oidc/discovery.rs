//! OpenID Provider metadata (OpenID Connect Discovery 1.0 §3), fetched
//! from `<issuer>/.well-known/openid-configuration` and cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::Deserialize;

use super::fetch::{check_url, FetchRequest, Fetcher};

/// How long fetched metadata is used before it is fetched again.
pub const TTL: Duration = Duration::from_secs(60 * 60);

/// The fields we use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

impl ProviderMetadata {
    /// Parses and checks a discovery document for `issuer_url`: the
    /// `issuer` must be the configured one (a trailing `/` aside) and every
    /// endpoint must be https (or loopback http).
    pub fn parse(issuer_url: &str, body: &[u8]) -> Result<ProviderMetadata, String> {
        let m: ProviderMetadata =
            serde_json::from_slice(body).map_err(|e| format!("invalid discovery document: {e}"))?;
        if m.issuer.trim_end_matches('/') != issuer_url.trim_end_matches('/') {
            return Err(format!(
                "the discovery document names issuer {:?}, not {issuer_url:?}",
                m.issuer
            ));
        }
        for (field, url) in [
            ("authorization_endpoint", Some(&m.authorization_endpoint)),
            ("token_endpoint", Some(&m.token_endpoint)),
            ("jwks_uri", Some(&m.jwks_uri)),
            ("userinfo_endpoint", m.userinfo_endpoint.as_ref()),
        ] {
            if let Some(url) = url {
                check_url(field, url).map_err(|e| e.to_string())?;
            }
        }
        Ok(m)
    }

    /// `client_secret_basic` unless the provider only lists
    /// `client_secret_post` (the default list is basic only).
    pub fn client_auth(&self) -> ClientAuth {
        match &self.token_endpoint_auth_methods_supported {
            Some(m)
                if !m.iter().any(|x| x == "client_secret_basic")
                    && m.iter().any(|x| x == "client_secret_post") =>
            {
                ClientAuth::Post
            }
            _ => ClientAuth::Basic,
        }
    }
}

/// The discovery URL for an issuer.
pub fn well_known(issuer_url: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer_url.trim_end_matches('/')
    )
}

struct Cached {
    at: Instant,
    meta: Arc<ProviderMetadata>,
}

/// Discovery for one issuer, cached for [`TTL`]; a failed refresh keeps
/// the previous document.
pub struct Discovery {
    issuer_url: String,
    fetcher: Fetcher,
    cached: ArcSwapOption<Cached>,
    /// Last failed refresh: the previous document is used without
    /// retrying for [`RETRY_AFTER`].
    failed_at: std::sync::Mutex<Option<Instant>>,
}

/// How long a failed refresh is not retried while an older document exists.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer_url", &self.issuer_url)
            .finish()
    }
}

impl Discovery {
    pub fn new(issuer_url: String, fetcher: Fetcher) -> Discovery {
        Discovery {
            issuer_url,
            fetcher,
            cached: ArcSwapOption::empty(),
            failed_at: std::sync::Mutex::new(None),
        }
    }

    /// Pre-filled metadata (providers with fixed endpoints).
    pub fn fixed(meta: ProviderMetadata, fetcher: Fetcher) -> Discovery {
        let d = Discovery::new(meta.issuer.clone(), fetcher);
        d.cached.store(Some(Arc::new(Cached {
            at: Instant::now(),
            meta: Arc::new(meta),
        })));
        d
    }

    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, String> {
        let cached = self.cached.load_full();
        if let Some(c) = &cached {
            let recently_failed = self
                .failed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() < RETRY_AFTER);
            if c.at.elapsed() < TTL || recently_failed {
                return Ok(c.meta.clone());
            }
        }
        let url = well_known(&self.issuer_url);
        let fetched = async {
            let res = self
                .fetcher
                .fetch(FetchRequest::get(&url))
                .await
                .map_err(|e| e.to_string())?;
            if !res.is_success() {
                return Err(format!("{url}: HTTP status {}", res.status));
            }
            ProviderMetadata::parse(&self.issuer_url, &res.body)
        }
        .await;
        match (fetched, cached) {
            (Ok(meta), _) => {
                let meta = Arc::new(meta);
                self.cached.store(Some(Arc::new(Cached {
                    at: Instant::now(),
                    meta: meta.clone(),
                })));
                Ok(meta)
            }
            (Err(e), Some(old)) => {
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                tracing::warn!(issuer = %self.issuer_url, error = %e, "discovery refresh failed; using the previous document");
                Ok(old.meta.clone())
            }
            (Err(e), None) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "https://idp.example.com/auth",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
        "userinfo_endpoint": "https://idp.example.com/me",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code"],
        "unknown_extension": {"x": 1}
    }"#;

    #[test]
    fn parses_and_checks_issuer() {
        let m = ProviderMetadata::parse("https://idp.example.com/", DOC.as_bytes()).expect("doc");
        assert_eq!(m.token_endpoint, "https://idp.example.com/token");
        assert_eq!(
            m.userinfo_endpoint.as_deref(),
            Some("https://idp.example.com/me")
        );
        assert_eq!(m.client_auth(), ClientAuth::Post);
        let e = ProviderMetadata::parse("https://other.example.com", DOC.as_bytes()).unwrap_err();
        assert!(e.contains("names issuer"), "{e}");
        assert!(ProviderMetadata::parse("https://idp.example.com", b"{}").is_err());
        assert!(ProviderMetadata::parse("https://idp.example.com", b"not json").is_err());
        let insecure = DOC.replace(
            "https://idp.example.com/token",
            "http://idp.example.com/token",
        );
        let e =
            ProviderMetadata::parse("https://idp.example.com", insecure.as_bytes()).unwrap_err();
        assert!(e.contains("token_endpoint"), "{e}");
    }

    #[test]
    fn default_client_auth_is_basic() {
        let doc = DOC.replace(
            r#""client_secret_post", "private_key_jwt""#,
            r#""client_secret_basic", "client_secret_post""#,
        );
        let m = ProviderMetadata::parse("https://idp.example.com", doc.as_bytes()).expect("doc");
        assert_eq!(m.client_auth(), ClientAuth::Basic);
        let doc = DOC.replace(r#""token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],"#, "");
        let m = ProviderMetadata::parse("https://idp.example.com", doc.as_bytes()).expect("doc");
        assert_eq!(m.client_auth(), ClientAuth::Basic);
        assert_eq!(
            well_known("https://a/b/"),
            "https://a/b/.well-known/openid-configuration"
        );
    }

    #[test]
    fn fetched_once_and_cached() {
        let body = DOC.replace("https://idp.example.com", "http://127.0.0.1:1");
        let server = crate::policy::oidc::testutil::Server::start();
        let issuer = server.url("");
        let body = body.replace("http://127.0.0.1:1", &issuer);
        server.route("/.well-known/openid-configuration", 200, &body);
        let d = Discovery::new(issuer.clone(), Fetcher::new(None).expect("fetcher"));
        let mut rt = crate::policy::oidc::testutil::runtime();
        let m = rt.block_on(d.metadata()).expect("metadata");
        assert_eq!(m.issuer, issuer);
        rt.block_on(d.metadata()).expect("metadata");
        assert_eq!(server.hits("/.well-known/openid-configuration"), 1);
    }
}
