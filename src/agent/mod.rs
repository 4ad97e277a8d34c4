//! The agent (`ringress http`): connects to an edge, binds endpoints, and
//! forwards proxied connections to local or remote upstreams.
//!
//! `session` speaks ngrok's agent protocol (client role); `run` keeps one
//! session per edge worker alive; `forward` delivers each proxied
//! connection to the upstream; `status` is what the user sees.

pub mod cli;
pub mod forward;
pub mod run;
pub mod session;
pub mod status;
pub mod upstream_url;
