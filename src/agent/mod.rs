//! The agent (`ringress http`, `ringress start`): connects to an edge,
//! binds endpoints, and forwards proxied connections to local or remote
//! upstreams.

pub mod forward;
pub mod upstream_url;
