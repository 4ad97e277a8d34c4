//! Encrypted, authenticated cookie values (AES-256-GCM).
//!
//! A value is `base64url(nonce ‖ ciphertext ‖ tag)` with a random 96-bit
//! nonce; the cookie's name is the associated data, so a value sealed for
//! one cookie (the login flow) cannot be replayed as another (the session).
//! Keys come from HKDF-SHA256 over a secret: the `cookie_secret` given in
//! the action's config, or else a random secret made once per process, so
//! that sessions do not survive a restart (nor move between edges).

use std::sync::OnceLock;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pkce::random_bytes;

const SALT: &[u8] = b"ringress auth cookie v1";

/// The per-process secret used when the config gives none.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(random_bytes::<32>)
}

/// A sealing key for one action (kind and auth id bind the key).
pub struct SealKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// Derives the key for `context` from `secret`, or from the process
    /// secret when `secret` is `None`.
    pub fn derive(secret: Option<&[u8]>, context: &str) -> SealKey {
        let ikm: &[u8] = match secret {
            Some(s) => s,
            None => process_secret(),
        };
        let info = [context.as_bytes()];
        let prk = Salt::new(HKDF_SHA256, SALT).extract(ikm);
        let mut raw = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte output limit, so
        // expand and fill cannot fail.
        let ok = prk
            .expand(&info, &AES_256_GCM)
            .and_then(|okm| okm.fill(&mut raw))
            .is_ok();
        debug_assert!(ok);
        let key = match UnboundKey::new(&AES_256_GCM, &raw) {
            Ok(k) => LessSafeKey::new(k),
            // A 32-byte key is always valid for AES-256-GCM.
            Err(_) => unreachable!("AES-256-GCM rejects a 32-byte key"),
        };
        SealKey { key }
    }

    /// Encrypts `value` (as JSON) for the cookie `name`.
    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        let mut buf = serde_json::to_vec(value).unwrap_or_default();
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        if self
            .key
            .seal_in_place_append_tag(nonce, Aad::from(name.as_bytes()), &mut buf)
            .is_err()
        {
            return String::new();
        }
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts and authenticates a cookie value; `None` for anything
    /// tampered with, truncated, sealed under another key or name, or not
    /// of the expected shape.
    pub fn open<T: DeserializeOwned>(&self, name: &str, sealed: &str) -> Option<T> {
        let raw = URL_SAFE_NO_PAD.decode(sealed.trim()).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut ct = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut ct)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct V {
        a: String,
        n: u64,
    }

    #[test]
    fn seal_open_round_trip() {
        let k = SealKey::derive(None, "oidc/x");
        let v = V {
            a: "alice@example.com".into(),
            n: 42,
        };
        let s = k.seal("c", &v);
        assert_eq!(k.open::<V>("c", &s), Some(v));
        // Fresh nonce per seal.
        assert_ne!(
            s,
            k.seal(
                "c",
                &V {
                    a: "alice@example.com".into(),
                    n: 42
                }
            )
        );
    }

    #[test]
    fn tampering_is_refused() {
        let k = SealKey::derive(Some(b"a configured secret of some length"), "oidc/x");
        let s = k.seal(
            "c",
            &V {
                a: "x".into(),
                n: 1,
            },
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&s).expect("b64");
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            assert_eq!(
                k.open::<V>("c", &URL_SAFE_NO_PAD.encode(&raw)),
                None,
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        assert!(k.open::<V>("c", &URL_SAFE_NO_PAD.encode(&raw)).is_some());
        assert_eq!(k.open::<V>("c", &s[..s.len() - 2]), None);
        assert_eq!(k.open::<V>("c", "garbage!"), None);
        assert_eq!(k.open::<V>("c", ""), None);
        // Another cookie name, context or secret: refused.
        assert_eq!(k.open::<V>("other", &s), None);
        let other_ctx = SealKey::derive(Some(b"a configured secret of some length"), "oauth/x");
        assert_eq!(other_ctx.open::<V>("c", &s), None);
        let other_secret = SealKey::derive(Some(b"another secret"), "oidc/x");
        assert_eq!(other_secret.open::<V>("c", &s), None);
        // Same secret and context: another process could open it.
        let same = SealKey::derive(Some(b"a configured secret of some length"), "oidc/x");
        assert!(same.open::<V>("c", &s).is_some());
        // Wrong shape.
        assert_eq!(k.open::<u64>("c", &s), None);
    }
}
