//! Tunnels: ngrok's agent protocol. `muxado` is the stream multiplexer
//! (sans-IO core plus a monoio driver) that both the edge (server role) and
//! the agent (client role) run over TLS.

pub mod edge_session;
pub mod limit;
pub mod messages;
pub mod muxado;
pub mod proxy_stream;
pub mod registry;
pub mod stream_io;
pub mod worker_tunnels;
