//! What the auth cookies hold, and the session clock rules (sans-IO: the
//! caller passes `now` in Unix seconds).
//!
//! Two cookies per action, both sealed with the action's key
//! ([`super::seal`]):
//! - `ngrok_session_<auth_id>`: the identity, when the session started,
//!   when it was last refreshed, and the provider's tokens when they fit;
//! - `ngrok_flow_<auth_id>`: a login in progress (`state`, `nonce`, PKCE
//!   verifier, where to go back to), valid [`FLOW_TTL`] seconds.

use serde::{Deserialize, Serialize};

/// Seconds a login may take between the redirect and the callback.
pub const FLOW_TTL: u64 = 600;
/// A sealed session larger than this drops its tokens (browsers keep
/// 4096-byte cookies at most, name and attributes included).
pub const MAX_COOKIE_VALUE: usize = 3800;

pub fn session_cookie_name(auth_id: &str) -> String {
    format!("ngrok_session_{auth_id}")
}

pub fn flow_cookie_name(auth_id: &str) -> String {
    format!("ngrok_flow_{auth_id}")
}

/// A login in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub verifier: String,
    /// Local path to return to after login.
    #[serde(rename = "r")]
    pub redirect: String,
    #[serde(rename = "c")]
    pub created: u64,
}

impl Flow {
    pub fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.created) > FLOW_TTL
    }
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Provider user id (`sub`, or GitHub's numeric id).
    #[serde(rename = "u")]
    pub sub: String,
    #[serde(rename = "e", default)]
    pub email: String,
    #[serde(rename = "n", default)]
    pub name: String,
    /// The provider's session id (`sid` claim), when it gives one.
    #[serde(rename = "p", default)]
    pub provider_session: String,
    #[serde(rename = "c")]
    pub created: u64,
    /// Last time the cookie was (re)issued: the idle clock.
    #[serde(rename = "l")]
    pub last_seen: u64,
    #[serde(rename = "at", default, skip_serializing_if = "String::is_empty")]
    pub access_token: String,
    /// Unix seconds when the access token expires (0: unknown).
    #[serde(rename = "ax", default)]
    pub access_expires: u64,
    #[serde(rename = "it", default, skip_serializing_if = "String::is_empty")]
    pub id_token: String,
}

/// Where a session stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid,
    /// Valid, and old enough that the idle clock should be reset by
    /// issuing the cookie again.
    ValidRefresh,
    IdleTimedOut,
    MaxDurationReached,
}

/// The session lifetime rules of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub max_session: u64,
    pub idle: u64,
}

impl Clock {
    /// The idle clock is reset at most this often (a cookie reissue).
    pub fn refresh_after(&self) -> u64 {
        (self.idle / 8).max(60)
    }

    pub fn standing(&self, s: &Session, now: u64) -> Standing {
        if now >= s.created.saturating_add(self.max_session) {
            Standing::MaxDurationReached
        } else if now >= s.last_seen.saturating_add(self.idle) {
            Standing::IdleTimedOut
        } else if now.saturating_sub(s.last_seen) >= self.refresh_after() {
            Standing::ValidRefresh
        } else {
            Standing::Valid
        }
    }

    /// The cookie's `Max-Age` at `now`.
    pub fn max_age(&self, s: &Session, now: u64) -> u64 {
        s.created
            .saturating_add(self.max_session)
            .saturating_sub(now)
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::oidc::seal::SealKey;

    fn session(created: u64, last_seen: u64) -> Session {
        Session {
            sub: "u1".into(),
            email: "a@example.com".into(),
            name: "A".into(),
            provider_session: String::new(),
            created,
            last_seen,
            access_token: "tok".into(),
            access_expires: 0,
            id_token: String::new(),
        }
    }

    #[test]
    fn clock_rules() {
        let c = Clock {
            max_session: 3600,
            idle: 800,
        };
        assert_eq!(c.refresh_after(), 100);
        let s = session(1000, 1000);
        assert_eq!(c.standing(&s, 1000), Standing::Valid);
        assert_eq!(c.standing(&s, 1099), Standing::Valid);
        assert_eq!(c.standing(&s, 1100), Standing::ValidRefresh);
        assert_eq!(c.standing(&s, 1800), Standing::IdleTimedOut);
        let s = session(1000, 4500);
        assert_eq!(c.standing(&s, 4550), Standing::Valid);
        assert_eq!(c.standing(&s, 4600), Standing::MaxDurationReached);
        assert_eq!(c.max_age(&s, 4000), 600);
        assert_eq!(c.max_age(&s, 9000), 0);
        let short = Clock {
            max_session: 10,
            idle: 5,
        };
        assert_eq!(short.refresh_after(), 60);
    }

    #[test]
    fn sealed_session_and_flow() {
        let k = SealKey::derive(None, "oidc/x");
        let s = session(1, 2);
        let sealed = k.seal(&session_cookie_name("x"), &s);
        assert_eq!(
            k.open::<Session>(&session_cookie_name("x"), &sealed),
            Some(s)
        );
        // A flow cookie cannot pass for a session, nor the reverse.
        let f = Flow {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            redirect: "/".into(),
            created: 10,
        };
        let sealed_flow = k.seal(&flow_cookie_name("x"), &f);
        assert_eq!(
            k.open::<Session>(&session_cookie_name("x"), &sealed_flow),
            None
        );
        assert_eq!(k.open::<Flow>(&flow_cookie_name("x"), &sealed), None);
        assert!(!f.expired(10 + FLOW_TTL));
        assert!(f.expired(11 + FLOW_TTL));
    }
}
