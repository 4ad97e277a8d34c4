//! `verify-webhook`: checks a provider's signature over the buffered
//! request body (forwarded unchanged afterwards). Signatures are compared
//! in constant time; providers that sign a timestamp are held to a
//! five-minute tolerance against replays.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use cel_interpreter::Value;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::template;
use crate::policy::cel::{self, Needs};
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::reply::{codes, write_error};
use crate::policy::request::RequestInfo;
use crate::policy::template::Template;

/// Bodies up to this size are buffered for verification.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Timestamped signatures older (or newer) than this are refused.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Github,
    Stripe,
    Slack,
    Shopify,
    Gitlab,
    Svix,
    /// Ours: HMAC-SHA256 of the body in a configurable header.
    HmacSha256,
}

const PROVIDERS: &[(&str, Provider)] = &[
    ("github", Provider::Github),
    ("stripe", Provider::Stripe),
    ("slack", Provider::Slack),
    ("shopify", Provider::Shopify),
    ("gitlab", Provider::Gitlab),
    ("svix", Provider::Svix),
    ("hmac-sha256", Provider::HmacSha256),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    provider: String,
    secret: String,
    #[serde(default = "yes")]
    enforce: bool,
    /// Only for `hmac-sha256`: the header carrying the signature.
    #[serde(default)]
    header: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct VerifyWebhook {
    provider: Provider,
    secret: Template,
    header: String,
    enforce: bool,
}

impl VerifyWebhook {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<VerifyWebhook, String> {
        let cfg: Config = super::config(cfg)?;
        let provider = PROVIDERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&cfg.provider))
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let names: Vec<&str> = PROVIDERS.iter().map(|(n, _)| *n).collect();
                format!(
                    "config.provider: {:?} is not supported yet (supported: {})",
                    cfg.provider,
                    names.join(", ")
                )
            })?;
        if cfg.header.is_some() && provider != Provider::HmacSha256 {
            return Err("config.header: only for provider hmac-sha256".into());
        }
        if cfg.secret.is_empty() {
            return Err("config.secret: required".into());
        }
        let secret = template("secret", &cfg.secret)?;
        if provider == Provider::Svix {
            if let Some(s) = secret.as_literal() {
                svix_key(s).map_err(|e| format!("config.secret: {e}"))?;
            }
        }
        Ok(VerifyWebhook {
            provider,
            secret,
            header: cfg
                .header
                .unwrap_or_else(|| "x-signature".into())
                .to_ascii_lowercase(),
            enforce: cfg.enforce,
        })
    }

    pub fn needs(&self) -> Needs {
        self.secret.needs()
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let secret = match self.secret.as_literal() {
            Some(s) => s.to_owned(),
            None => self.secret.render(cx.scope(self.secret.needs()))?,
        };
        let body = cx.body.unwrap_or_default();
        let outcome = match cx.facts.req {
            Some(req) => verify(
                self.provider,
                &self.header,
                secret.as_bytes(),
                req,
                body,
                now(),
            ),
            None => Err("no request"),
        };
        let verified = outcome.is_ok();
        cx.result("verify_webhook", || {
            let mut entries = vec![("verified", Value::Bool(verified))];
            if let Err(e) = outcome {
                entries.push(("error", cel::map([("message", cel::string(e))])));
            }
            cel::map(entries)
        });
        if verified || !self.enforce {
            return Ok(Flow::Next);
        }
        if let Err(e) = outcome {
            tracing::debug!(reason = e, "webhook verification failed");
        }
        write_error(codes::WEBHOOK, "", &[], cx.style, cx.out);
        Ok(Flow::Done)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(&[]).expect("empty HMAC key")
    });
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hmac1(key: &[u8], body: &[u8]) -> [u8; 20] {
    let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(&[]).expect("empty HMAC key")
    });
    m.update(body);
    m.finalize().into_bytes().into()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn header<'a>(req: &RequestInfo<'a>, name: &str) -> Option<&'a str> {
    req.header_values(name)
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn fresh(ts: &str, now: i64) -> Result<(), &'static str> {
    let t: i64 = ts.trim().parse().map_err(|_| "invalid timestamp")?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err("timestamp outside the tolerance");
    }
    Ok(())
}

fn svix_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "a svix secret is whsec_ followed by base64".to_owned())
}

/// Verifies one request. `Err` says why not.
fn verify(
    provider: Provider,
    custom_header: &str,
    secret: &[u8],
    req: &RequestInfo<'_>,
    body: &[u8],
    now: i64,
) -> Result<(), &'static str> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match provider {
        Provider::Github => {
            if let Some(sig) = header(req, "x-hub-signature-256") {
                let hex = sig.strip_prefix("sha256=").ok_or("malformed signature")?;
                let got = hex_decode(hex).ok_or("malformed signature")?;
                return ct_eq(&got, &hmac256(secret, &[body]))
                    .then_some(())
                    .ok_or("signature mismatch");
            }
            let sig = header(req, "x-hub-signature").ok_or("missing X-Hub-Signature-256")?;
            let hex = sig.strip_prefix("sha1=").ok_or("malformed signature")?;
            let got = hex_decode(hex).ok_or("malformed signature")?;
            ct_eq(&got, &hmac1(secret, body))
                .then_some(())
                .ok_or("signature mismatch")
        }
        Provider::Stripe => {
            let sig = header(req, "stripe-signature").ok_or("missing Stripe-Signature")?;
            let mut ts = None;
            let mut candidates = Vec::new();
            for part in sig.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => ts = Some(v),
                    Some(("v1", v)) => candidates.push(v),
                    _ => {}
                }
            }
            let ts = ts.ok_or("missing timestamp")?;
            fresh(ts, now)?;
            let expected = hmac256(secret, &[ts.as_bytes(), b".", body]);
            let mut ok = false;
            for c in candidates {
                if let Some(got) = hex_decode(c) {
                    ok |= ct_eq(&got, &expected);
                }
            }
            ok.then_some(()).ok_or("signature mismatch")
        }
        Provider::Slack => {
            let ts = header(req, "x-slack-request-timestamp").ok_or("missing timestamp")?;
            fresh(ts, now)?;
            let sig = header(req, "x-slack-signature").ok_or("missing X-Slack-Signature")?;
            let hex = sig.strip_prefix("v0=").ok_or("malformed signature")?;
            let got = hex_decode(hex).ok_or("malformed signature")?;
            let expected = hmac256(secret, &[b"v0:", ts.trim().as_bytes(), b":", body]);
            ct_eq(&got, &expected)
                .then_some(())
                .ok_or("signature mismatch")
        }
        Provider::Shopify => {
            let sig =
                header(req, "x-shopify-hmac-sha256").ok_or("missing X-Shopify-Hmac-Sha256")?;
            let got = b64.decode(sig.trim()).map_err(|_| "malformed signature")?;
            ct_eq(&got, &hmac256(secret, &[body]))
                .then_some(())
                .ok_or("signature mismatch")
        }
        Provider::Gitlab => {
            let token = header(req, "x-gitlab-token").ok_or("missing X-Gitlab-Token")?;
            ct_eq(token.trim().as_bytes(), secret)
                .then_some(())
                .ok_or("token mismatch")
        }
        Provider::Svix => {
            let id = header(req, "svix-id")
                .or_else(|| header(req, "webhook-id"))
                .ok_or("missing svix-id")?;
            let ts = header(req, "svix-timestamp")
                .or_else(|| header(req, "webhook-timestamp"))
                .ok_or("missing svix-timestamp")?;
            fresh(ts, now)?;
            let sigs = header(req, "svix-signature")
                .or_else(|| header(req, "webhook-signature"))
                .ok_or("missing svix-signature")?;
            let key = svix_key(std::str::from_utf8(secret).map_err(|_| "bad secret")?)
                .map_err(|_| "bad secret")?;
            let expected = hmac256(
                &key,
                &[id.trim().as_bytes(), b".", ts.trim().as_bytes(), b".", body],
            );
            let mut ok = false;
            for s in sigs.split_whitespace() {
                if let Some(v) = s.strip_prefix("v1,") {
                    if let Ok(got) = b64.decode(v) {
                        ok |= ct_eq(&got, &expected);
                    }
                }
            }
            ok.then_some(()).ok_or("signature mismatch")
        }
        Provider::HmacSha256 => {
            let sig = header(req, custom_header).ok_or("missing signature header")?;
            let sig = sig.trim();
            let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
            let got = hex_decode(sig)
                .or_else(|| b64.decode(sig).ok())
                .ok_or("malformed signature")?;
            ct_eq(&got, &hmac256(secret, &[body]))
                .then_some(())
                .ok_or("signature mismatch")
        }
    }
}

/// Test helpers: signatures as providers compute them.
pub mod sign {
    use super::*;

    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn github(secret: &str, body: &[u8]) -> String {
        format!("sha256={}", hex(&hmac256(secret.as_bytes(), &[body])))
    }

    pub fn stripe(secret: &str, ts: i64, body: &[u8]) -> String {
        let t = ts.to_string();
        format!(
            "t={t},v1={}",
            hex(&hmac256(secret.as_bytes(), &[t.as_bytes(), b".", body]))
        )
    }

    pub fn slack(secret: &str, ts: i64, body: &[u8]) -> String {
        let t = ts.to_string();
        format!(
            "v0={}",
            hex(&hmac256(
                secret.as_bytes(),
                &[b"v0:", t.as_bytes(), b":", body]
            ))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::RequestHead;
    use crate::policy::request::ConnInfo;
    use crate::route::Scheme;

    fn check(
        provider: Provider,
        raw: &str,
        secret: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), &'static str> {
        let mut head = RequestHead::new();
        assert_eq!(head.parse(raw.as_bytes(), 1 << 20), Ok(true));
        let conn = ConnInfo::default();
        let req = RequestInfo {
            buf: raw.as_bytes(),
            head: &head,
            scheme: Scheme::Http,
            version: "HTTP/1.1",
            host: "h",
            conn: &conn,
        };
        verify(provider, "x-signature", secret.as_bytes(), &req, body, now)
    }

    #[test]
    fn github() {
        let body = b"{\"zen\":\"x\"}";
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Hub-Signature-256: {}\r\n\r\n",
            sign::github("s3cret", body)
        );
        assert_eq!(check(Provider::Github, &raw, "s3cret", body, 0), Ok(()));
        assert!(check(Provider::Github, &raw, "other", body, 0).is_err());
        assert!(check(Provider::Github, &raw, "s3cret", b"tampered", 0).is_err());
        assert!(check(
            Provider::Github,
            "POST / HTTP/1.1\r\nHost: h\r\n\r\n",
            "s",
            body,
            0
        )
        .is_err());
    }

    #[test]
    fn stripe_and_slack_with_tolerance() {
        let body = b"payload";
        let now = 1_700_000_000;
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nStripe-Signature: {}\r\n\r\n",
            sign::stripe("whsec", now - 10, body)
        );
        assert_eq!(check(Provider::Stripe, &raw, "whsec", body, now), Ok(()));
        assert_eq!(
            check(Provider::Stripe, &raw, "whsec", body, now + 400),
            Err("timestamp outside the tolerance")
        );
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Slack-Request-Timestamp: {now}\r\nX-Slack-Signature: {}\r\n\r\n",
            sign::slack("sl", now, body)
        );
        assert_eq!(check(Provider::Slack, &raw, "sl", body, now), Ok(()));
        assert!(check(Provider::Slack, &raw, "sl", body, now - 1000).is_err());
    }

    #[test]
    fn generic_and_shopify() {
        let body = b"abc";
        let mac = hmac256(b"k", &[body]);
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Signature: sha256={}\r\nX-Shopify-Hmac-Sha256: {}\r\n\r\n",
            sign::hex(&mac),
            base64::engine::general_purpose::STANDARD.encode(mac)
        );
        assert_eq!(check(Provider::HmacSha256, &raw, "k", body, 0), Ok(()));
        assert_eq!(check(Provider::Shopify, &raw, "k", body, 0), Ok(()));
    }
}
