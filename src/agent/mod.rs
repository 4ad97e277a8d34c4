//! The agent (`ringress http`): connects to an edge, binds endpoints, and
//! forwards proxied connections to local or remote upstreams.
//!
//! `session` speaks ngrok's agent protocol (client role); `run` keeps one
//! session per edge worker alive; `forward` delivers each proxied
//! connection to the upstream; `inspect` is the local inspector and agent
//! API (127.0.0.1:4040); `config_file` and `start` are `ringress start`
//! and `ringress config check`; `status` is what the user sees.

pub mod cli;
pub mod config_file;
pub mod forward;
pub mod inspect;
pub mod run;
pub mod session;
pub mod start;
pub mod status;
pub mod upstream_url;
