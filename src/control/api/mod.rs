//! The REST API, shaped like ngrok's (`/endpoints`, `/reserved_domains`,
//! `/credentials`, `/api_keys`, `/tls_certificates`, `/tunnel_sessions`):
//! the listener (`server`), the mount interface other modules plug into
//! (`mount`), request checks (`request`) and ngrok's error JSON (`error`).
//!
//! Runs on the control plane's API thread; never on a worker.

pub mod error;
pub mod mount;
pub mod placeholder;
pub mod request;
pub mod server;

pub use error::ApiError;
pub use mount::{ApiAuth, ApiBody, ApiFuture, ApiRequest, KeyCheck, Mount};
pub use server::{ApiServer, Routes};
