//! Pending HTTP-01 challenges, shared between the ACME manager (the only
//! writer, on the control-plane thread) and the workers (readers, on the hot
//! path). Readers take no lock and never block: the map is immutable and
//! swapped whole with `arc-swap`; writes are rare (two per order).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

type TokenMap = HashMap<Box<str>, Arc<str>>;

/// Pending HTTP-01 challenges: token -> key authorization.
///
/// A worker answering `GET /.well-known/acme-challenge/<token>` calls
/// [`Challenges::key_authorization`] and, when it returns `Some`, replies
/// `200` with the value as the body (`text/plain` or
/// `application/octet-stream`), otherwise `404`.
pub struct Challenges {
    map: ArcSwap<TokenMap>,
}

/// The URL path prefix under which HTTP-01 tokens are fetched (RFC 8555 §8.3).
pub const CHALLENGE_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

impl Challenges {
    /// An empty set, to be shared by the manager and every worker.
    pub fn new() -> Arc<Challenges> {
        Arc::new(Challenges {
            map: ArcSwap::from_pointee(TokenMap::new()),
        })
    }

    /// Key authorization for a token, if pending. Called on a worker per
    /// `/.well-known/acme-challenge/` request: no locks, no blocking.
    pub fn key_authorization(&self, token: &str) -> Option<Arc<str>> {
        self.map.load().get(token).cloned()
    }

    /// Convenience for an HTTP handler: the key authorization for a request
    /// path such as `/.well-known/acme-challenge/<token>` (a query string is
    /// ignored), or `None` when the path is not a challenge or not pending.
    pub fn for_path(&self, path: &str) -> Option<Arc<str>> {
        let token = path.strip_prefix(CHALLENGE_PATH_PREFIX)?;
        let token = token.split(['?', '#']).next().unwrap_or(token);
        if token.is_empty() || token.contains('/') {
            return None;
        }
        self.key_authorization(token)
    }

    /// Number of pending challenges.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// True when no challenge is pending.
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }

    /// Publishes a token until the returned guard is dropped (on success,
    /// error, or cancellation of the order future alike).
    pub(crate) fn publish(
        self: &Arc<Self>,
        token: &str,
        key_authorization: &str,
    ) -> ChallengeGuard {
        let token: Box<str> = token.into();
        let value: Arc<str> = key_authorization.into();
        self.map.rcu(|current| {
            let mut next = TokenMap::clone(current);
            next.insert(token.clone(), value.clone());
            next
        });
        ChallengeGuard {
            challenges: Arc::clone(self),
            token,
        }
    }

    fn remove(&self, token: &str) {
        self.map.rcu(|current| {
            let mut next = TokenMap::clone(current);
            next.remove(token);
            next
        });
    }
}

/// Removes its token from [`Challenges`] when dropped.
pub(crate) struct ChallengeGuard {
    challenges: Arc<Challenges>,
    token: Box<str>,
}

impl Drop for ChallengeGuard {
    fn drop(&mut self) {
        self.challenges.remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_remove_on_drop() {
        let c = Challenges::new();
        assert!(c.is_empty());
        let g1 = c.publish("tok1", "tok1.thumb");
        let g2 = c.publish("tok2", "tok2.thumb");
        assert_eq!(c.key_authorization("tok1").as_deref(), Some("tok1.thumb"));
        assert_eq!(
            c.for_path("/.well-known/acme-challenge/tok2?x=1")
                .as_deref(),
            Some("tok2.thumb")
        );
        assert_eq!(c.for_path("/.well-known/acme-challenge/"), None);
        assert_eq!(c.for_path("/.well-known/acme-challenge/tok2/x"), None);
        assert_eq!(c.for_path("/other/tok2"), None);
        assert_eq!(c.len(), 2);
        drop(g1);
        assert_eq!(c.key_authorization("tok1"), None);
        assert_eq!(c.key_authorization("tok2").as_deref(), Some("tok2.thumb"));
        drop(g2);
        assert!(c.is_empty());
    }
}
