//! Host routing: endpoints by exact host, then by the most specific
//! wildcard. Built by the control thread, read by workers through the
//! snapshot; lookups never allocate.

pub mod endpoint;
pub mod table;

pub use endpoint::{Binding, Endpoint, Member, Scheme, TunnelTarget, Upstream};
pub use table::{normalize_host, RouteTable};
