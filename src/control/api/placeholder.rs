//! Stand-ins used until the store-backed parts are wired: a key check that
//! knows no key and own routes that serve nothing.

use super::mount::{ApiAuth, ApiFuture, ApiRequest, KeyCheck, Mount};

/// Accepts no key.
#[derive(Debug, Default)]
pub struct NoKeys;

impl KeyCheck for NoKeys {
    fn is_valid(&self, _secret: &str) -> bool {
        false
    }
}

/// Serves nothing: every request goes on to the mounts.
#[derive(Debug, Default)]
pub struct NoRoutes;

impl Mount for NoRoutes {
    fn call(&self, req: ApiRequest, _auth: ApiAuth) -> Result<ApiFuture, ApiRequest> {
        Err(req)
    }
}
