//! muxado: the stream multiplexer under ngrok's agent protocol
//! (wire format: `shared/spec/ngrok-agent-protocol.md` §2).
//!
//! Three layers, each usable and tested on its own:
//!
//! 1. [`frame`]: the codec. Encode helpers append frames to a `Vec<u8>`;
//!    [`frame::Decoder`] takes `&[u8]` and returns a whole frame (or asks
//!    for more), enforcing the length rules (RST/WNDINC = 4, GOAWAY ≥ 8
//!    from a server but any length from a client, DATA ≤ the window,
//!    unknown types are errors). No I/O, no allocation.
//! 2. [`core`]: the session state machine, sans-IO and synchronous.
//!    [`Core::receive`] eats bytes (DATA payloads are taken as they arrive,
//!    so only a partial header or control frame is ever left over), updates
//!    streams (receive buffer ≤ window, both windows, FIN/RST per
//!    direction), queues frames into one output buffer, and records
//!    [`Event`]s. Apps read, write, FIN, reset and open through it. Hostile
//!    input ends the session with a typed [`MuxError`] after queueing a
//!    GOAWAY that says why.
//! 3. [`driver`]: the monoio driver. [`Session::new`] returns a handle and
//!    the future that owns the connection: one reader loop (64 KiB reads,
//!    many frames per read) and one writer loop (all queued frames in one
//!    write per wakeup), both in the same task. [`Stream`] implements
//!    monoio's owned-buffer read/write traits; tasks sleep on wakers kept
//!    in the core (single thread: `Rc<RefCell<Core>>`, no borrow across an
//!    await). After a graceful end (GOAWAY, protocol error, EOF) the last
//!    frames are flushed within 2 s, then the connection lingers up to 2 s
//!    for the peer to close; [`Session::close`] stops at once. The runtime
//!    needs its timer enabled.
//!
//! Ids: clients open odd ids from 3, servers even ids from 2; SYN rides on
//! a stream's first DATA frame. A stream counts against
//! [`Config::max_streams`] until it is closed both ways, and its state is
//! freed once that is true and the app dropped its handle.

pub mod core;
pub mod driver;
pub mod error;
pub mod frame;
mod ids;

pub use self::core::{Config, Core, Event, Role};
pub use self::driver::{Session, Stream};
pub use self::error::{MuxError, StreamError};
pub use self::frame::ErrorCode;
