//! ringress: a self-hosted, ngrok-compatible HTTP/S edge and agent, built
//! as an io_uring thread-per-core proxy.
//!
//! Layout by concern: `http1` (sans-IO protocol), `route` (host routing),
//! `policy` (traffic policy), `proxy` (request pipeline and upstreams),
//! `runtime` (workers, listeners, snapshots, signals), `config`, `cli`.

pub mod agent;
pub mod cli;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod h2;
pub mod http1;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod tls;
pub mod tunnel;
