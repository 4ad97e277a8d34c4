//! The control plane's own state, rules and interface: the store (redb),
//! the REST API server and its resources, what they publish to the data
//! plane (cloud endpoints in the snapshot, credentials at Auth), endpoint URL
//! rules ([`url_rules`]) and domain ownership ([`domains`]).
//!
//! Runs on the control plane only (its own thread, tokio allowed); never
//! on a worker's request path except through immutable, published snapshots.

pub mod api;
pub mod cli;
pub mod domains;
pub mod plane;
pub mod records;
pub mod store;
pub mod url_rules;
