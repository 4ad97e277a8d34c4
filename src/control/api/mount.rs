//! The interface other modules use to add routes to the API server
//! (`/metrics`, the inspector...): a mount serves the paths it knows and
//! hands every other request back. Also the API key check (`ApiAuth`),
//! which a mount calls for routes that need it.
//!
//! Owns no state of its own and never touches the data plane.

use std::sync::Arc;

use crate::control::api::error::ApiError;

pub type ApiBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;
pub type ApiRequest = http::Request<hyper::body::Incoming>;
pub type ApiFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<ApiBody>> + Send>>;

/// Says whether an API key secret is valid (the store's keys).
pub trait KeyCheck: Send + Sync + 'static {
    fn is_valid(&self, secret: &str) -> bool;
}

/// Checks `Authorization: Bearer <api key>`; Err is the ngrok-shaped 401 to send.
#[derive(Clone)]
pub struct ApiAuth {
    keys: Arc<dyn KeyCheck>,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth").finish_non_exhaustive()
    }
}

impl ApiAuth {
    pub fn new(keys: Arc<dyn KeyCheck>) -> ApiAuth {
        ApiAuth { keys }
    }

    /// Checks `Authorization: Bearer <api key>`; Err is the ngrok-shaped 401 to send.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), http::Response<ApiBody>> {
        self.verify(headers).map_err(|e| e.response())
    }

    /// The same check with the error still typed (the server's own routes).
    pub fn verify(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::new(
                401,
                200,
                "The API requires that you set the Authorization header for authentication (Authorization: Bearer <api key>).",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|s| !s.is_empty());
        let Some(secret) = secret else {
            return Err(ApiError::new(
                401,
                201,
                "The API requires Bearer authentication via the Authorization header; it could not parse the header in this request.",
            ));
        };
        if self.keys.is_valid(secret) {
            Ok(())
        } else {
            Err(ApiError::new(
                401,
                203,
                "The API authentication you specified is properly formed, but it is invalid.",
            ))
        }
    }
}

pub trait Mount: Send + Sync + 'static {
    /// Serves the request if its path is this mount's; gives it back otherwise.
    #[allow(clippy::result_large_err)]
    fn call(&self, req: ApiRequest, auth: ApiAuth) -> Result<ApiFuture, ApiRequest>;
}
