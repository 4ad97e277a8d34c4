//! Traffic policy: ngrok's policy documents (YAML, JSON or TOML inline),
//! validated and compiled once at load into an immutable form that lives
//! in the route snapshot, then evaluated per connection, request and
//! response by the drivers in `proxy`.
//!
//! Layout: `document` (the shape users write), `cel` and `template` (CEL
//! expressions and `${...}` interpolation), `cel_budget` (limits checked
//! before the CEL parser), `request` (the facts a policy
//! reads), `exchange` (per-exchange state and edits), `actions` (one
//! module per action), `compile` (load-time checks, the rule loop),
//! `pipeline` (the entry points drivers call), `reply` (edge-made
//! responses), `legacy` (agents' pre-policy endpoint options as rules).
//!
//! An invalid document is refused where it is attached, with a message
//! naming the phase, rule, action and field; a request never meets a
//! load-time error. Runtime failures become ERR_NGROK_3900/3901 replies.

pub mod actions;
pub mod cel;
pub mod cel_budget;
pub mod compile;
pub mod document;
pub mod engine;
pub mod exchange;
pub mod jwt;
pub mod legacy;
pub mod oidc;
pub mod pipeline;
pub mod reply;
pub mod request;
pub mod template;

pub use compile::{CompiledPolicy, PolicyError};
pub use document::TrafficPolicy;
pub use exchange::{Encoding, Exchange};
pub use pipeline::{
    on_http_request, on_http_response, on_tcp_connect, RequestOutcome, ResponseOutcome,
};
pub use reply::{PreparedResponse, ReplyStyle};
pub use request::{ConnInfo, RequestInfo, ResponseInfo, TlsInfo};
