//! A JSON Web Key Set fetched from a URL and cached: shared by ID token
//! verification (`openid-connect`, `oauth` google) and `jwt-validation`.
//!
//! Reads are lock-free (`ArcSwapOption`). The set is fetched on first use,
//! again after `ttl` (15 minutes by default), and early when a token names
//! a `kid` the set lacks (at most once per `min_refresh`, so unknown kids
//! cannot make us hammer the provider). Concurrent refreshes share one
//! fetch. A failed refresh keeps serving the previous set.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::fetch::{FetchRequest, Fetcher};

pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
pub const MIN_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JwksError {
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    #[error("no key in the JWKS matches kid {kid:?} and algorithm {alg:?}")]
    NoKey { kid: Option<String>, alg: Algorithm },
}

/// One usable verification key.
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<String>,
    pub key: DecodingKey,
}

/// A fetched set.
#[derive(Debug)]
pub struct KeySet {
    pub fetched_at: Instant,
    pub keys: Vec<Key>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document, skipping keys that cannot verify
    /// signatures (encryption keys, symmetric keys, unknown types).
    pub fn parse(doc: &serde_json::Value) -> Result<KeySet, String> {
        let list = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("the JWKS has no \"keys\" array")?;
        let mut keys = Vec::new();
        for raw in list {
            if raw
                .get("use")
                .and_then(|u| u.as_str())
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                debug!("JWKS: skipping a key that does not parse");
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if matches!(key.family(), jsonwebtoken::AlgorithmFamily::Hmac) {
                continue;
            }
            keys.push(Key {
                kid: raw.get("kid").and_then(|k| k.as_str()).map(String::from),
                alg: raw.get("alg").and_then(|k| k.as_str()).map(String::from),
                key,
            });
        }
        Ok(KeySet {
            fetched_at: Instant::now(),
            keys,
        })
    }

    /// Keys that may have signed a token with header `kid` and `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        let alg_name = format!("{alg:?}");
        self.keys
            .iter()
            .filter(move |k| match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .filter(move |k| k.key.family() == alg.family())
            .filter(move |k| k.alg.as_deref().is_none_or(|a| a == alg_name))
            .map(|k| &k.key)
    }
}

type Waiters = Vec<oneshot::Sender<Result<Arc<KeySet>, String>>>;

/// A cached JWKS at one URL.
pub struct JwksCache {
    url: String,
    fetcher: Fetcher,
    ttl: Duration,
    min_refresh: Duration,
    current: ArcSwapOption<KeySet>,
    inflight: Mutex<Option<Waiters>>,
    /// When the last refresh failed: a stale set is served without
    /// retrying for `min_refresh`, so a provider outage does not make
    /// every request wait for a timeout.
    failed_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("url", &self.url).finish()
    }
}

impl JwksCache {
    pub fn new(url: String, fetcher: Fetcher) -> JwksCache {
        JwksCache::with_ttl(url, fetcher, DEFAULT_TTL, MIN_REFRESH)
    }

    pub fn with_ttl(
        url: String,
        fetcher: Fetcher,
        ttl: Duration,
        min_refresh: Duration,
    ) -> JwksCache {
        JwksCache {
            url,
            fetcher,
            ttl,
            min_refresh,
            current: ArcSwapOption::empty(),
            inflight: Mutex::new(None),
            failed_at: Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A set holding at least one candidate key for (`kid`, `alg`).
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, JwksError> {
        let cached = self.current.load_full();
        let set = match cached {
            Some(set) if set.fetched_at.elapsed() < self.ttl || self.recently_failed() => set,
            None if self.recently_failed() => {
                return Err(JwksError::Fetch(
                    "the last attempt failed; retrying shortly".into(),
                ))
            }
            stale => match self.refresh().await {
                Ok(set) => set,
                Err(e) => match stale {
                    Some(set) => {
                        warn!(url = %self.url, error = %e, "JWKS refresh failed; using the previous set");
                        set
                    }
                    None => return Err(JwksError::Fetch(e)),
                },
            },
        };
        if set.candidates(kid, alg).next().is_some() {
            return Ok(set);
        }
        if kid.is_some() && set.fetched_at.elapsed() >= self.min_refresh && !self.recently_failed()
        {
            debug!(url = %self.url, ?kid, "unknown kid: refreshing the JWKS");
            if let Ok(fresh) = self.refresh().await {
                if fresh.candidates(kid, alg).next().is_some() {
                    return Ok(fresh);
                }
            }
        }
        Err(JwksError::NoKey {
            kid: kid.map(String::from),
            alg,
        })
    }

    fn recently_failed(&self) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < self.min_refresh)
    }

    /// Fetches the set once for all concurrent callers.
    async fn refresh(&self) -> Result<Arc<KeySet>, String> {
        let waiter = {
            let mut g = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_mut() {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    *g = Some(Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiter {
            return rx
                .await
                .unwrap_or_else(|_| Err("the JWKS refresh was abandoned".into()));
        }
        // We lead: the guard releases waiters even if this future is dropped.
        let guard = Leader { cache: self };
        let result = self
            .fetcher
            .get_json(FetchRequest::get(&self.url))
            .await
            .and_then(|doc| KeySet::parse(&doc))
            .map(Arc::new);
        match &result {
            Ok(set) => {
                debug!(url = %self.url, keys = set.keys.len(), "JWKS fetched");
                self.current.store(Some(set.clone()));
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Err(_) => {
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
        }
        guard.finish(&result);
        result
    }
}

struct Leader<'a> {
    cache: &'a JwksCache,
}

impl Leader<'_> {
    fn finish(self, result: &Result<Arc<KeySet>, String>) {
        for w in self.take() {
            let _ = w.send(result.clone());
        }
    }

    fn take(&self) -> Waiters {
        self.cache
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Dropping the senders wakes waiters with an error.
        drop(self.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::oidc::testutil::{jwks, runtime, Server, TestKey};

    #[test]
    fn stale_set_served_while_the_provider_fails() {
        let key = TestKey::generate("k1");
        let server = Server::start();
        server.route("/jwks", 200, &jwks(&[&key]));
        let cache = JwksCache::with_ttl(
            server.url("/jwks"),
            Fetcher::new(None).expect("fetcher"),
            Duration::ZERO,
            Duration::from_secs(30),
        );
        let mut rt = runtime();
        let kid = Some("k1");
        rt.block_on(cache.keys_for(kid, Algorithm::ES256))
            .expect("fetched");
        server.route("/jwks", 500, "{}");
        // Expired: one refresh attempt fails, the old set answers...
        rt.block_on(cache.keys_for(kid, Algorithm::ES256))
            .expect("stale set");
        assert_eq!(server.hits("/jwks"), 2);
        // ...and the next requests do not retry for a while.
        rt.block_on(cache.keys_for(kid, Algorithm::ES256))
            .expect("stale set");
        assert_eq!(server.hits("/jwks"), 2);
        // Keys of another family never match.
        let r = rt.block_on(cache.keys_for(kid, Algorithm::RS256));
        assert!(matches!(r, Err(JwksError::NoKey { .. })), "{r:?}");
    }

    #[test]
    fn skips_keys_that_cannot_verify() {
        let key = TestKey::generate("k1");
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
            {"kty": "weird"},
            key.jwk(),
        ]});
        let set = KeySet::parse(&doc).expect("parse");
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.candidates(Some("k1"), Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(Some("hmac"), Algorithm::HS256).count(), 0);
        assert!(KeySet::parse(&serde_json::json!({})).is_err());
    }
}
