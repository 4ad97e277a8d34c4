//! Workers, listeners, snapshots and the signals that drive them.
//!
//! One worker per core, pinned, each with its own monoio runtime and its
//! own SO_REUSEPORT listener; a worker owns every connection it accepts.
//! The control thread (`edge`) publishes immutable [`snapshot::Snapshot`]s
//! that workers pick up lock-free between requests.

pub mod catch_unwind;
pub mod drain;
pub mod edge;
pub mod handoff;
pub mod listeners;
pub mod notify;
pub mod snapshot;
pub mod upgrade;
pub mod worker;
