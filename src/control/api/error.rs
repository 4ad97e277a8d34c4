//! ngrok's API error JSON: `{error_code, status_code, msg, details}`, and
//! the helpers that turn values into API responses.
//!
//! Pure data: no I/O, no state.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::mount::ApiBody;

/// An API error, answered as ngrok's error JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// The number in `ERR_NGROK_<n>`.
    pub code: u32,
    pub msg: String,
    /// Extra `details` entries besides `operation_id`.
    pub details: Vec<(String, String)>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error_code: String,
    status_code: u16,
    msg: &'a str,
    details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: u16, code: u32, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            msg: msg.into(),
            details: Vec::new(),
        }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<String>) -> ApiError {
        self.details.push((key.to_owned(), value.into()));
        self
    }

    /// 400 for a request body or parameter the API cannot accept.
    pub fn bad_request(code: u32, msg: impl Into<String>) -> ApiError {
        ApiError::new(400, code, msg)
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            404,
            404,
            format!("Resource not found: {what} {id:?} does not exist."),
        )
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError::new(500, 500, msg)
    }

    pub fn body(&self) -> Vec<u8> {
        let mut details = serde_json::Map::new();
        details.insert(
            "operation_id".into(),
            serde_json::Value::String(format!("op_{}", crate::tunnel::registry::random_hex(12))),
        );
        for (k, v) in &self.details {
            details.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let json = ErrorJson {
            error_code: format!("ERR_NGROK_{}", self.code),
            status_code: self.status,
            msg: &self.msg,
            details,
        };
        serde_json::to_vec(&json).unwrap_or_default()
    }

    pub fn response(&self) -> http::Response<ApiBody> {
        bytes_response(self.status, "application/json", self.body())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERR_NGROK_{} ({}): {}", self.code, self.status, self.msg)
    }
}

impl std::error::Error for ApiError {}

/// Boxes a complete body.
pub fn full_body(bytes: impl Into<Bytes>) -> ApiBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with a complete body and a content type.
pub fn bytes_response(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<ApiBody> {
    let mut resp = http::Response::new(full_body(body));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response.
pub fn json_response<T: Serialize>(status: u16, value: &T) -> http::Response<ApiBody> {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(status, "application/json", body),
        Err(e) => ApiError::internal(format!("cannot encode the response: {e}")).response(),
    }
}

/// 204 No Content.
pub fn no_content() -> http::Response<ApiBody> {
    let mut resp = http::Response::new(full_body(Bytes::new()));
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_ngrok_fields() {
        let e = ApiError::new(400, 218, "missing Ngrok-Version").with_detail("field", "x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(v["error_code"], "ERR_NGROK_218");
        assert_eq!(v["status_code"], 400);
        assert_eq!(v["msg"], "missing Ngrok-Version");
        assert!(v["details"]["operation_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("op_")));
        assert_eq!(v["details"]["field"], "x");
    }
}
