//! The observability routes as a mount on the API listener (interface 1):
//! `/metrics`, `/endpoints/{id}/requests...` and `/inspect`, checked with
//! the API's keys. Every other path is handed back.

// The auth check returns the response to send (ApiAuth::check's shape).
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use http::HeaderMap;

use super::api::ObserveApi;
use crate::control::api::{ApiAuth, ApiFuture, ApiRequest, Mount};

pub struct ObserveMount {
    api: Arc<ObserveApi>,
}

impl ObserveMount {
    pub fn new(api: Arc<ObserveApi>) -> Arc<ObserveMount> {
        Arc::new(ObserveMount { api })
    }
}

impl Mount for ObserveMount {
    fn call(&self, req: ApiRequest, auth: ApiAuth) -> Result<ApiFuture, ApiRequest> {
        if !ObserveApi::handles(req.uri().path()) {
            return Err(req);
        }
        let api = self.api.clone();
        Ok(Box::pin(async move {
            let check = move |h: &HeaderMap| auth.check(h);
            api.serve(req.method(), req.uri(), req.headers(), &check)
                .await
        }))
    }
}
