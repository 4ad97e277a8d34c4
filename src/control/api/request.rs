//! What every request to the server's own routes goes through: the
//! `Ngrok-Version: 2` check, the API key, a bounded body read and strict
//! JSON decoding (unknown fields refused).
//!
//! No state; never blocks (bodies are read with a size limit and a deadline).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::mount::{ApiAuth, ApiRequest};

/// Request bodies larger than this are refused (413).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// A body must arrive within this long.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The parts of a request a resource handler reads.
#[derive(Debug)]
pub struct ApiCall {
    pub method: http::Method,
    /// Path segments after the leading `/`, e.g. `["endpoints", "ep_x"]`.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl ApiCall {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Decodes the body as JSON into `T` (which should deny unknown fields).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(100, format!("Invalid request body: {e}")))
    }
}

/// Checks `Ngrok-Version: 2` (ERR_NGROK_218 / 219).
pub fn check_version(headers: &http::HeaderMap) -> Result<(), ApiError> {
    match headers.get("ngrok-version").map(|v| v.as_bytes()) {
        None => Err(ApiError::bad_request(
            218,
            "The Ngrok-Version header is required: send `Ngrok-Version: 2`.",
        )),
        Some(b"2") => Ok(()),
        Some(v) => Err(ApiError::bad_request(
            219,
            format!(
                "Unsupported Ngrok-Version {:?}: this API serves version 2.",
                String::from_utf8_lossy(v)
            ),
        )),
    }
}

/// Runs the checks and reads the body.
pub async fn accept(req: ApiRequest, auth: &ApiAuth) -> Result<ApiCall, ApiError> {
    auth.verify(req.headers())?;
    check_version(req.headers())?;
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
    }
    let (parts, body) = req.into_parts();
    let collected =
        tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
            .await
            .map_err(|_| ApiError::new(408, 408, "The request body did not arrive in time."))?
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large()
                } else {
                    ApiError::bad_request(100, format!("Cannot read the request body: {e}"))
                }
            })?;
    let segments = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query = parts.uri.query().map(parse_query).unwrap_or_default();
    Ok(ApiCall {
        method: parts.method,
        segments,
        query,
        body: collected.to_bytes(),
    })
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        413,
        format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
    )
}

/// `a=1&b=x%20y` into pairs (`+` is a space).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_header_required() {
        let mut h = http::HeaderMap::new();
        assert_eq!(check_version(&h).map_err(|e| e.code), Err(218));
        h.insert("ngrok-version", http::HeaderValue::from_static("1"));
        assert_eq!(check_version(&h).map_err(|e| e.code), Err(219));
        h.insert("ngrok-version", http::HeaderValue::from_static("2"));
        assert!(check_version(&h).is_ok());
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("limit=2&before_id=ep_1&x=a%20b+c"),
            vec![
                ("limit".into(), "2".into()),
                ("before_id".into(), "ep_1".into()),
                ("x".into(), "a b c".into())
            ]
        );
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("a%2Fb"), "a/b");
    }
}
