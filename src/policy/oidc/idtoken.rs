//! ID token verification (OpenID Connect Core §3.1.3.7): signature with a
//! key of the provider's JWKS, `iss`, `aud`, `exp` (60 s leeway), `azp`
//! and the `nonce` we sent. Also the JWS step shared with
//! `jwt-validation`: header checks and trying the candidate keys.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, JwksError};
use super::pkce::same;

/// Asymmetric algorithms accepted for tokens verified with a JWKS. `none`
/// cannot even be named (jsonwebtoken has no such algorithm) and the HMAC
/// family is excluded: a JWKS never shares our secret.
pub const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts, or a header that does not parse
    /// (including `alg: none` and unknown algorithms).
    Malformed(String),
    AlgorithmNotAllowed(String),
    Keys(JwksError),
    BadSignature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim(String),
    Claim(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(m) => write!(f, "malformed token: {m}"),
            TokenError::AlgorithmNotAllowed(a) => write!(f, "algorithm {a} is not allowed"),
            TokenError::Keys(e) => write!(f, "{e}"),
            TokenError::BadSignature => f.write_str("invalid signature"),
            TokenError::Expired => f.write_str("token expired"),
            TokenError::NotYetValid => f.write_str("token not yet valid"),
            TokenError::Issuer => f.write_str("issuer not allowed"),
            TokenError::Audience => f.write_str("audience not allowed"),
            TokenError::MissingClaim(c) => write!(f, "missing claim {c:?}"),
            TokenError::Claim(m) => f.write_str(m),
        }
    }
}

/// Verifies a JWS-signed JWT: `alg` in `allowed`, signature by a key of
/// `jwks`, then `validation` (with its `algorithms` replaced). Returns the
/// claims.
pub async fn verify_jws(
    token: &str,
    jwks: &JwksCache,
    allowed: &[Algorithm],
    validation: &Validation,
) -> Result<Map<String, Value>, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if !allowed.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
    }
    let set = jwks
        .keys_for(header.kid.as_deref(), header.alg)
        .await
        .map_err(TokenError::Keys)?;
    let mut validation = validation.clone();
    validation.algorithms = vec![header.alg];
    verify_with_keys(
        token,
        set.candidates(header.kid.as_deref(), header.alg),
        &validation,
    )
}

/// The sans-IO step of [`verify_jws`]: the first candidate key whose
/// signature verifies decides.
pub fn verify_with_keys<'a>(
    token: &str,
    keys: impl Iterator<Item = &'a DecodingKey>,
    validation: &Validation,
) -> Result<Map<String, Value>, TokenError> {
    let mut last = TokenError::BadSignature;
    for key in keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = map_error(e.kind());
                if last != TokenError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => TokenError::AlgorithmNotAllowed("header".into()),
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

/// The validation of an ID token from `issuer` for `client_id`.
pub fn id_token_validation(issuer: &str, client_id: &str) -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.leeway = LEEWAY_SECS;
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

/// Verifies an ID token and returns its claims.
pub async fn verify_id_token(
    token: &str,
    jwks: &JwksCache,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Map<String, Value>, TokenError> {
    let claims = verify_jws(
        token,
        jwks,
        ASYMMETRIC,
        &id_token_validation(issuer, client_id),
    )
    .await?;
    check_id_claims(&claims, client_id, nonce)?;
    Ok(claims)
}

/// The ID-token checks jsonwebtoken does not do: `nonce` and `azp`.
pub fn check_id_claims(
    claims: &Map<String, Value>,
    client_id: &str,
    nonce: &str,
) -> Result<(), TokenError> {
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if same(n, nonce) => {}
        Some(_) => return Err(TokenError::Claim("nonce does not match".into())),
        None => return Err(TokenError::MissingClaim("nonce".into())),
    }
    if let Some(azp) = claims.get("azp") {
        if azp.as_str() != Some(client_id) {
            return Err(TokenError::Claim("azp is not our client_id".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::oidc::fetch::Fetcher;
    use crate::policy::oidc::testutil::{jwks, now, runtime, unsigned, Server, TestKey};
    use serde_json::json;

    fn setup() -> (Server, JwksCache, TestKey) {
        let key = TestKey::generate("k1");
        let server = Server::start();
        server.route("/jwks", 200, &jwks(&[&key]));
        let cache = JwksCache::new(server.url("/jwks"), Fetcher::new(None).expect("fetcher"));
        (server, cache, key)
    }

    fn claims(iss: &str) -> Value {
        json!({"iss": iss, "aud": "client-1", "sub": "user-1", "exp": now() + 300, "iat": now(), "nonce": "n-123", "email": "a@example.com"})
    }

    #[test]
    fn id_token_checks() {
        let (server, cache, key) = setup();
        let iss = "https://idp.example.com";
        let mut rt = runtime();
        let verify = |t: &str| {
            let mut rt = runtime();
            rt.block_on(verify_id_token(t, &cache, iss, "client-1", "n-123"))
        };
        let good = key.sign(&claims(iss));
        let c = verify(&good).expect("valid");
        assert_eq!(c["email"], "a@example.com");

        let mut c = claims(iss);
        c["iss"] = json!("https://evil.example.com");
        assert_eq!(verify(&key.sign(&c)), Err(TokenError::Issuer));
        let mut c = claims(iss);
        c["aud"] = json!(["other-client"]);
        assert_eq!(verify(&key.sign(&c)), Err(TokenError::Audience));
        let mut c = claims(iss);
        c["exp"] = json!(now() - 3600);
        assert_eq!(verify(&key.sign(&c)), Err(TokenError::Expired));
        let mut c = claims(iss);
        c["nonce"] = json!("n-other");
        assert!(matches!(verify(&key.sign(&c)), Err(TokenError::Claim(_))));
        let mut c = claims(iss);
        c.as_object_mut().expect("obj").remove("nonce");
        assert_eq!(
            verify(&key.sign(&c)),
            Err(TokenError::MissingClaim("nonce".into()))
        );
        let mut c = claims(iss);
        c["azp"] = json!("someone-else");
        assert!(matches!(verify(&key.sign(&c)), Err(TokenError::Claim(_))));
        let mut c = claims(iss);
        c.as_object_mut().expect("obj").remove("sub");
        assert!(matches!(
            verify(&key.sign(&c)),
            Err(TokenError::MissingClaim(_))
        ));

        // Signed by a key the provider does not publish, under its kid.
        let impostor = TestKey::generate("k1");
        assert_eq!(
            verify(&impostor.sign(&claims(iss))),
            Err(TokenError::BadSignature)
        );
        // Tampered payload.
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            unsigned(&json!({"sub": "admin"}))
                .split('.')
                .nth(1)
                .unwrap_or(""),
            parts[2]
        );
        assert_eq!(verify(&forged), Err(TokenError::BadSignature));
        // alg none and garbage.
        assert!(matches!(
            verify(&unsigned(&claims(iss))),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(verify("a.b"), Err(TokenError::Malformed(_))));
        // Unknown kid after a refresh: no key.
        let stranger = TestKey::generate("k9");
        let r = rt.block_on(verify_id_token(
            &stranger.sign(&claims(iss)),
            &cache,
            iss,
            "client-1",
            "n-123",
        ));
        assert!(
            matches!(r, Err(TokenError::Keys(JwksError::NoKey { .. }))),
            "{r:?}"
        );
        // The set was fetched once: unknown-kid refreshes are rate limited.
        assert_eq!(server.hits("/jwks"), 1);
    }

    #[test]
    fn unknown_kid_refreshes_the_set() {
        let old = TestKey::generate("old");
        let new = TestKey::generate("new");
        let server = Server::start();
        server.route("/jwks", 200, &jwks(&[&old]));
        let cache = JwksCache::with_ttl(
            server.url("/jwks"),
            Fetcher::new(None).expect("fetcher"),
            std::time::Duration::from_secs(900),
            std::time::Duration::ZERO,
        );
        let iss = "https://idp.example.com";
        let mut rt = runtime();
        rt.block_on(verify_id_token(
            &old.sign(&claims(iss)),
            &cache,
            iss,
            "client-1",
            "n-123",
        ))
        .expect("old key");
        // Key rotation at the provider.
        server.route("/jwks", 200, &jwks(&[&new]));
        rt.block_on(verify_id_token(
            &new.sign(&claims(iss)),
            &cache,
            iss,
            "client-1",
            "n-123",
        ))
        .expect("new key");
        assert_eq!(server.hits("/jwks"), 2);
    }

    #[test]
    fn jwks_unreachable() {
        let server = Server::start();
        let cache = JwksCache::new(server.url("/missing"), Fetcher::new(None).expect("fetcher"));
        let key = TestKey::generate("k1");
        let mut rt = runtime();
        let r = rt.block_on(verify_id_token(
            &key.sign(&claims("i")),
            &cache,
            "i",
            "client-1",
            "n-123",
        ));
        assert!(
            matches!(r, Err(TokenError::Keys(JwksError::Fetch(_)))),
            "{r:?}"
        );
    }
}
