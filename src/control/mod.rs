//! The control plane's own state and interface: the store (redb), the REST
//! API server and its resources, and what they publish to the data plane
//! (cloud endpoints in the snapshot, credentials at Auth).
//!
//! Runs on the control plane only (its own thread, tokio allowed); never
//! called from a worker's request path.

pub mod api;
pub mod store;
