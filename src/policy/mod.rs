//! Traffic policy: ngrok's policy document shape, validated and compiled
//! once at load into an immutable form that lives in the route snapshot.
//!
//! This is the pipeline's plug-in point for the `on_http_request` phase.
//! Only `custom-response` is implemented so far; every other action, and
//! CEL expressions, are refused at load with a message naming the rule,
//! the action and the field, never at request time.

pub mod compile;
pub mod document;
pub mod jwt;
pub mod oidc;

pub use compile::{CompiledPolicy, Decision, PolicyError, PreparedResponse};
pub use document::TrafficPolicy;
