//! The muxado session state machine, sans-IO: bytes in through
//! [`Core::receive`], frames out through one output buffer the driver
//! drains, and stream reads/writes in between. No I/O, no async, no
//! clocks; wakers are stored and woken but never polled here.
//!
//! It owns per-stream state (receive buffer, both windows, FIN/RST in
//! each direction), stream-id rules, limits, and the session's end. It
//! must never buffer more than the window per stream, never send a frame
//! type other than 0-3, a zero WNDINC, or DATA beyond the peer's window.

use std::collections::{HashMap, VecDeque};
use std::task::{Poll, Waker};

use super::error::{MuxError, StreamError};
use super::frame::{
    encode_data_header, encode_goaway, encode_rst, encode_wndinc, Decoder, ErrorCode, Frame,
    FrameType, DEFAULT_WINDOW, FLAG_FIN, FLAG_SYN, HEADER_LEN, MAX_FRAME_LEN, STREAM_ID_MASK,
};
use super::ids::{IdBuildHasher, PeerIds};

/// Which end of the connection we are: clients open odd ids (3, 5, ...),
/// servers even ids (2, 4, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Session limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Streams not yet closed in both directions (ours and the peer's).
    /// Peer SYNs beyond it get RST StreamRefused; `open` waits. Keep it
    /// under 512: the Rust SDK kills its session beyond that.
    pub max_streams: usize,
    /// Initial window per stream and direction, and the largest DATA frame
    /// accepted. Both SDKs assume 256 KiB with no negotiation: only change
    /// it when both ends are this code.
    pub window: u32,
    /// Peer-opened streams waiting for `accept`; beyond it SYNs get RST
    /// AcceptQueueFull.
    pub accept_backlog: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_streams: 500,
            window: DEFAULT_WINDOW,
            accept_backlog: 128,
        }
    }
}

/// Things that happened while receiving, for logs and tests. The driver
/// wakes tasks through stored wakers and does not need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a stream; it waits in the accept queue.
    StreamOpened(u32),
    /// We refused a peer SYN (limit or full accept queue).
    StreamRefused { stream_id: u32, code: ErrorCode },
    /// Data or EOF became readable on a stream that had nothing to read.
    Readable(u32),
    /// The send window of a stream went from zero to positive.
    WindowOpened(u32),
    /// The peer reset a stream.
    StreamReset { stream_id: u32, code: ErrorCode },
    /// The peer sent GOAWAY; the session has ended.
    GoAway {
        last_stream_id: u32,
        code: ErrorCode,
        message: String,
    },
}

/// Writes wait once this much output is queued and not yet taken.
pub(crate) const OUT_HIGH_WATER: usize = 512 * 1024;
/// Output that only grows from the peer's own frames (RSTs for its junk,
/// WNDINCs for its data) beyond this means it does not read: end it.
pub(crate) const OUT_HARD_LIMIT: usize = 4 * 1024 * 1024;
/// Receive buffers above this capacity are released once drained.
const RECV_KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetBy {
    Local(ErrorCode),
    Peer(ErrorCode),
}

impl From<ResetBy> for StreamError {
    fn from(r: ResetBy) -> Self {
        match r {
            ResetBy::Local(c) => StreamError::Reset(c),
            ResetBy::Peer(c) => StreamError::ResetByPeer(c),
        }
    }
}

#[derive(Debug)]
struct StreamState {
    /// Received, not yet read. Never longer than the window.
    recv: VecDeque<u8>,
    /// Bytes the peer may still send before our next WNDINC.
    recv_window: u32,
    /// Read by the app, not yet given back with WNDINC.
    unacked: u32,
    /// Bytes we may still send.
    send_window: u32,
    /// Opened by us, nothing sent yet: the next frame carries SYN.
    syn_pending: bool,
    /// The peer sent FIN, or the stream was reset.
    read_closed: bool,
    /// We sent FIN, or the stream was reset.
    write_closed: bool,
    reset: Option<ResetBy>,
    /// Counted in `open_count` (not closed in both directions).
    counted: bool,
    /// An app handle (or the accept queue) still refers to it.
    handle_live: bool,
    in_accept_queue: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl StreamState {
    fn new(window: u32, syn_pending: bool) -> Self {
        StreamState {
            recv: VecDeque::new(),
            recv_window: window,
            unacked: 0,
            send_window: window,
            syn_pending,
            read_closed: false,
            write_closed: false,
            reset: None,
            counted: true,
            handle_live: true,
            in_accept_queue: false,
            read_waker: None,
            write_waker: None,
        }
    }

    fn wake_all(&mut self) {
        wake(&mut self.read_waker);
        wake(&mut self.write_waker);
    }
}

/// Receive position: between frames, or inside a DATA payload (payloads
/// are taken as they arrive, so partial frames are never re-buffered).
#[derive(Debug, Clone, Copy)]
enum Rx {
    Header,
    Data {
        stream_id: u32,
        remaining: u32,
        fin: bool,
        deliver: bool,
    },
}

#[derive(Debug)]
struct End {
    result: Result<(), MuxError>,
    /// Write out what is queued before closing (false: drop it, stop now).
    flush: bool,
}

/// One muxado session's state.
#[derive(Debug)]
pub struct Core {
    role: Role,
    cfg: Config,
    decoder: Decoder,
    max_payload: u32,
    wndinc_threshold: u32,
    rx: Rx,
    streams: HashMap<u32, StreamState, IdBuildHasher>,
    open_count: usize,
    next_local_id: u64,
    peer_ids: PeerIds,
    accept_queue: VecDeque<u32>,
    refused_streak: usize,
    out: Vec<u8>,
    events: VecDeque<Event>,
    end: Option<End>,
    driver_waker: Option<Waker>,
    accept_wakers: Vec<Waker>,
    open_wakers: Vec<Waker>,
    closed_wakers: Vec<Waker>,
    out_space_wakers: Vec<Waker>,
}

impl Core {
    pub fn new(role: Role, cfg: Config) -> Core {
        let window = cfg.window.clamp(1, STREAM_ID_MASK);
        let cfg = Config {
            max_streams: cfg.max_streams.max(1),
            window,
            accept_backlog: cfg.accept_backlog.max(1),
        };
        Core {
            role,
            cfg,
            // a server's peer is a client, whose GOAWAY length is unreliable
            decoder: Decoder::new(window, role == Role::Server),
            max_payload: window.min(MAX_FRAME_LEN),
            wndinc_threshold: (window / 8).max(1),
            rx: Rx::Header,
            streams: HashMap::default(),
            open_count: 0,
            next_local_id: match role {
                Role::Client => 3,
                Role::Server => 2,
            },
            peer_ids: PeerIds::default(),
            accept_queue: VecDeque::new(),
            refused_streak: 0,
            out: Vec::new(),
            events: VecDeque::new(),
            end: None,
            driver_waker: None,
            accept_wakers: Vec::new(),
            open_wakers: Vec::new(),
            closed_wakers: Vec::new(),
            out_space_wakers: Vec::new(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ----- receiving -------------------------------------------------

    /// Feeds received bytes. Returns how many were consumed; the caller
    /// keeps the rest (at most a partial header or control frame) and
    /// passes it again with more bytes. An error ends the session (a
    /// GOAWAY with the reason is queued first); so does a peer GOAWAY,
    /// which returns `Ok` and makes [`Core::is_ended`] true.
    pub fn receive(&mut self, input: &[u8]) -> Result<usize, MuxError> {
        if self.end.is_some() {
            return Err(MuxError::SessionClosed);
        }
        let mut pos = 0;
        loop {
            match self.rx {
                Rx::Data {
                    stream_id,
                    remaining,
                    fin,
                    deliver,
                } => {
                    let n = (remaining as usize).min(input.len() - pos);
                    if n > 0 && deliver {
                        self.deliver(stream_id, &input[pos..pos + n]);
                    }
                    pos += n;
                    let remaining = remaining - n as u32;
                    if remaining > 0 {
                        self.rx = Rx::Data {
                            stream_id,
                            remaining,
                            fin,
                            deliver,
                        };
                        break;
                    }
                    self.rx = Rx::Header;
                    if fin && deliver {
                        self.remote_fin(stream_id);
                    }
                }
                Rx::Header => {
                    let rest = &input[pos..];
                    let header = match self.decoder.decode_header(rest) {
                        Ok(Some(h)) => h,
                        Ok(None) => break,
                        Err(e) => return Err(self.fail(e.into())),
                    };
                    if header.ty == FrameType::Data {
                        pos += HEADER_LEN;
                        self.on_data_header(header.stream_id, header.len, header.flags)?;
                        continue;
                    }
                    let need = self.decoder.body_len(&header);
                    let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + need) else {
                        break;
                    };
                    let frame = match self.decoder.decode_body(header, body) {
                        Ok(f) => f,
                        Err(e) => return Err(self.fail(e.into())),
                    };
                    pos += HEADER_LEN + need;
                    self.on_control(frame);
                    if self.end.is_some() {
                        break;
                    }
                }
            }
        }
        if self.end.is_none() && self.out.len() > OUT_HARD_LIMIT {
            return Err(self.fail(MuxError::OutputOverflow(self.out.len())));
        }
        Ok(pos)
    }

    /// The peer closed the connection.
    pub fn peer_eof(&mut self) {
        self.end_session(Ok(()), true);
    }

    /// Reading or writing the connection failed.
    pub fn io_error(&mut self, e: std::io::Error) {
        self.end_session(Err(e.into()), false);
    }

    fn on_data_header(&mut self, id: u32, len: u32, flags: u8) -> Result<(), MuxError> {
        let fin = flags & FLAG_FIN != 0;
        let discard = Rx::Data {
            stream_id: id,
            remaining: len,
            fin,
            deliver: false,
        };
        if flags & FLAG_SYN != 0 {
            if self.is_local_id(id) {
                return Err(self.fail(MuxError::WrongParity(id)));
            }
            if self.streams.contains_key(&id) || !self.peer_ids.admit(id) {
                return Err(self.fail(MuxError::StreamIdReused(id)));
            }
            let refuse = if self.open_count >= self.cfg.max_streams {
                Some(ErrorCode::StreamRefused)
            } else if self.accept_queue.len() >= self.cfg.accept_backlog {
                Some(ErrorCode::AcceptQueueFull)
            } else {
                None
            };
            if let Some(code) = refuse {
                encode_rst(&mut self.out, id, code);
                self.kick();
                self.events.push_back(Event::StreamRefused {
                    stream_id: id,
                    code,
                });
                self.refused_streak += 1;
                if self.refused_streak > self.cfg.max_streams {
                    return Err(self.fail(MuxError::StreamFlood(self.cfg.max_streams)));
                }
                self.rx = discard;
                return Ok(());
            }
            let mut st = StreamState::new(self.cfg.window, false);
            st.in_accept_queue = true;
            self.streams.insert(id, st);
            self.open_count += 1;
            self.accept_queue.push_back(id);
            self.events.push_back(Event::StreamOpened(id));
            wake_list(&mut self.accept_wakers);
        }
        let Some(st) = self.streams.get_mut(&id) else {
            // Unknown stream: an empty FIN is ignored, anything else gets
            // RST StreamClosed (as both SDKs do).
            if !(len == 0 && fin) {
                encode_rst(&mut self.out, id, ErrorCode::StreamClosed);
                self.kick();
            }
            self.rx = discard;
            return Ok(());
        };
        if st.syn_pending {
            return Err(self.fail(MuxError::UnannouncedStream(id)));
        }
        if st.reset.is_some() {
            // in flight when we reset it: drop silently
            self.rx = discard;
            return Ok(());
        }
        if st.read_closed {
            if len > 0 {
                // DATA after the peer's own FIN
                self.reset_stream(id, ErrorCode::StreamClosed);
            }
            self.rx = discard;
            return Ok(());
        }
        if len > st.recv_window {
            let window = st.recv_window;
            return Err(self.fail(MuxError::FlowControl {
                stream_id: id,
                len,
                window,
            }));
        }
        st.recv_window -= len;
        self.rx = Rx::Data {
            stream_id: id,
            remaining: len,
            fin,
            deliver: true,
        };
        Ok(())
    }

    fn deliver(&mut self, id: u32, bytes: &[u8]) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.reset.is_some() {
            return;
        }
        let was_empty = st.recv.is_empty();
        st.recv.extend(bytes);
        if was_empty {
            wake(&mut st.read_waker);
            self.events.push_back(Event::Readable(id));
        }
    }

    fn remote_fin(&mut self, id: u32) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.reset.is_some() || st.read_closed {
            return;
        }
        st.read_closed = true;
        wake(&mut st.read_waker);
        if st.recv.is_empty() {
            self.events.push_back(Event::Readable(id));
        }
        self.settle(id);
    }

    fn on_control(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Rst { stream_id, code } => {
                let Some(st) = self.streams.get_mut(&stream_id) else {
                    return;
                };
                if st.reset.is_some() || (st.read_closed && st.write_closed) {
                    return;
                }
                st.reset = Some(ResetBy::Peer(code));
                st.read_closed = true;
                st.write_closed = true;
                st.recv = VecDeque::new();
                st.unacked = 0;
                st.wake_all();
                if st.in_accept_queue {
                    st.in_accept_queue = false;
                    st.handle_live = false;
                    self.accept_queue.retain(|x| *x != stream_id);
                }
                self.events
                    .push_back(Event::StreamReset { stream_id, code });
                self.settle(stream_id);
            }
            Frame::WndInc {
                stream_id,
                increment,
            } => {
                let Some(st) = self.streams.get_mut(&stream_id) else {
                    return;
                };
                if st.reset.is_some() || st.write_closed {
                    return;
                }
                let was_zero = st.send_window == 0;
                st.send_window = st.send_window.saturating_add(increment).min(STREAM_ID_MASK);
                if was_zero {
                    wake(&mut st.write_waker);
                    self.events.push_back(Event::WindowOpened(stream_id));
                }
            }
            Frame::GoAway {
                last_stream_id,
                code,
                message,
            } => {
                let message = String::from_utf8_lossy(message).into_owned();
                tracing::debug!(%code, %message, last_stream_id, "muxado: peer sent GOAWAY");
                self.events.push_back(Event::GoAway {
                    last_stream_id,
                    code,
                    message: message.clone(),
                });
                let result = if code == ErrorCode::None {
                    Ok(())
                } else {
                    Err(MuxError::RemoteGoAway { code, message })
                };
                self.end_session(result, true);
            }
            Frame::Data { .. } => {}
        }
    }

    /// Takes the next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- streams ---------------------------------------------------

    /// Opens a stream of our parity. Nothing is sent until its first write
    /// or FIN, which carries SYN. Pending while `max_streams` are open.
    pub fn poll_open(&mut self, waker: Option<&Waker>) -> Poll<Result<u32, MuxError>> {
        if self.end.is_some() {
            return Poll::Ready(Err(MuxError::SessionClosed));
        }
        if self.next_local_id > u64::from(STREAM_ID_MASK) {
            return Poll::Ready(Err(MuxError::StreamsExhausted));
        }
        if self.open_count >= self.cfg.max_streams {
            if let Some(w) = waker {
                push_waker(&mut self.open_wakers, w);
            }
            return Poll::Pending;
        }
        let id = self.next_local_id as u32;
        self.next_local_id += 2;
        self.streams
            .insert(id, StreamState::new(self.cfg.window, true));
        self.open_count += 1;
        Poll::Ready(Ok(id))
    }

    /// [`Core::poll_open`] without a waker.
    pub fn open(&mut self) -> Poll<Result<u32, MuxError>> {
        self.poll_open(None)
    }

    /// The next peer-opened stream; `Ready(None)` once the session ended.
    pub fn poll_accept(&mut self, waker: Option<&Waker>) -> Poll<Option<u32>> {
        if let Some(id) = self.accept_queue.pop_front() {
            if let Some(st) = self.streams.get_mut(&id) {
                st.in_accept_queue = false;
            }
            self.refused_streak = 0;
            return Poll::Ready(Some(id));
        }
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        if let Some(w) = waker {
            push_waker(&mut self.accept_wakers, w);
        }
        Poll::Pending
    }

    /// [`Core::poll_accept`] without a waker; `None` when nothing waits.
    pub fn accept(&mut self) -> Option<u32> {
        match self.poll_accept(None) {
            Poll::Ready(id) => id,
            Poll::Pending => None,
        }
    }

    /// Reads up to `max` bytes, handing them to `sink` in one or two
    /// slices. `Ready(Ok(0))`: the peer sent FIN and all data was read.
    /// Reading gives window back to the peer (WNDINC), batched until
    /// 1/8 of the window was read or the buffer is empty.
    pub fn poll_read_with(
        &mut self,
        id: u32,
        max: usize,
        waker: Option<&Waker>,
        mut sink: impl FnMut(&[u8]),
    ) -> Poll<Result<usize, StreamError>> {
        let ended = self.end.is_some();
        let Some(st) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(StreamError::Unknown));
        };
        if let Some(r) = st.reset {
            return Poll::Ready(Err(r.into()));
        }
        if st.recv.is_empty() {
            if st.read_closed {
                return Poll::Ready(Ok(0));
            }
            if ended {
                return Poll::Ready(Err(StreamError::SessionClosed));
            }
            if let Some(w) = waker {
                store_waker(&mut st.read_waker, w);
            }
            return Poll::Pending;
        }
        let n = max.min(st.recv.len());
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let (a, b) = st.recv.as_slices();
        let from_a = n.min(a.len());
        sink(&a[..from_a]);
        if n > from_a {
            sink(&b[..n - from_a]);
        }
        st.recv.drain(..n);
        if st.recv.is_empty() && st.recv.capacity() > RECV_KEEP_CAPACITY {
            st.recv = VecDeque::new();
        }
        if ended || st.read_closed {
            return Poll::Ready(Ok(n));
        }
        st.unacked += n as u32;
        if st.unacked >= self.wndinc_threshold || st.recv.is_empty() {
            let inc = st.unacked;
            st.recv_window += inc;
            st.unacked = 0;
            encode_wndinc(&mut self.out, id, inc);
            self.kick();
        }
        Poll::Ready(Ok(n))
    }

    /// Reads into `into` (no waker).
    pub fn read(&mut self, id: u32, into: &mut [u8]) -> Poll<Result<usize, StreamError>> {
        let mut at = 0;
        self.poll_read_with(id, into.len(), None, |chunk| {
            into[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        })
    }

    /// Queues ONE DATA frame with as much of `bufs` (concatenated) as the
    /// send window allows, SYN on a stream's first frame. Pending when the
    /// window is zero or the output buffer is full.
    pub fn poll_write(
        &mut self,
        id: u32,
        bufs: &[&[u8]],
        waker: Option<&Waker>,
    ) -> Poll<Result<usize, StreamError>> {
        if self.end.is_some() {
            return Poll::Ready(Err(StreamError::SessionClosed));
        }
        let Some(st) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(StreamError::Unknown));
        };
        if let Some(r) = st.reset {
            return Poll::Ready(Err(r.into()));
        }
        if st.write_closed {
            return Poll::Ready(Err(StreamError::WriteClosed));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if st.send_window == 0 {
            if let Some(w) = waker {
                store_waker(&mut st.write_waker, w);
            }
            return Poll::Pending;
        }
        if self.out.len() >= OUT_HIGH_WATER {
            if let Some(w) = waker {
                push_waker(&mut self.out_space_wakers, w);
            }
            return Poll::Pending;
        }
        let n = total
            .min(st.send_window as usize)
            .min(self.max_payload as usize);
        let flags = if st.syn_pending { FLAG_SYN } else { 0 };
        st.syn_pending = false;
        st.send_window -= n as u32;
        encode_data_header(&mut self.out, id, flags, n as u32);
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            self.out.extend_from_slice(&b[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        self.kick();
        Poll::Ready(Ok(n))
    }

    /// Writes `data` (no waker).
    pub fn write(&mut self, id: u32, data: &[u8]) -> Poll<Result<usize, StreamError>> {
        self.poll_write(id, &[data], None)
    }

    /// Sends FIN (SYN|FIN if nothing was sent yet). Idempotent.
    pub fn close_write(&mut self, id: u32) -> Result<(), StreamError> {
        if self.end.is_some() {
            return Err(StreamError::SessionClosed);
        }
        let Some(st) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        if let Some(r) = st.reset {
            return Err(r.into());
        }
        if st.write_closed {
            return Ok(());
        }
        let flags = if st.syn_pending {
            FLAG_SYN | FLAG_FIN
        } else {
            FLAG_FIN
        };
        st.syn_pending = false;
        st.write_closed = true;
        wake(&mut st.write_waker);
        encode_data_header(&mut self.out, id, flags, 0);
        self.kick();
        self.settle(id);
        Ok(())
    }

    /// Aborts both directions with RST(code). Buffered data is dropped.
    /// No-op if the stream already finished both ways or the session
    /// ended; no frame if the peer never heard of the stream.
    pub fn reset(&mut self, id: u32, code: ErrorCode) {
        if self.end.is_some() {
            return;
        }
        self.reset_stream(id, code);
    }

    fn reset_stream(&mut self, id: u32, code: ErrorCode) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.reset.is_some() || (st.read_closed && st.write_closed) {
            return;
        }
        let announced = !st.syn_pending;
        st.syn_pending = false;
        st.reset = Some(ResetBy::Local(code));
        st.read_closed = true;
        st.write_closed = true;
        st.recv = VecDeque::new();
        st.unacked = 0;
        st.wake_all();
        if announced {
            encode_rst(&mut self.out, id, code);
            self.kick();
        }
        self.settle(id);
    }

    /// The app dropped its handle: RST StreamCancelled if the stream is not
    /// finished both ways, then free it once nothing refers to it.
    pub fn release(&mut self, id: u32) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        st.handle_live = false;
        if self.end.is_some() {
            self.streams.remove(&id);
            return;
        }
        if st.read_closed && st.write_closed {
            self.settle(id);
        } else {
            self.reset_stream(id, ErrorCode::StreamCancelled);
        }
    }

    /// Peer sent FIN or RST (or the stream or session is gone).
    pub fn is_read_closed(&self, id: u32) -> bool {
        self.end.is_some() || self.streams.get(&id).is_none_or(|st| st.read_closed)
    }

    /// Streams not yet closed in both directions (0 once ended).
    pub fn open_streams(&self) -> usize {
        if self.end.is_some() {
            0
        } else {
            self.open_count
        }
    }

    /// Stream states held in memory (for tests and metrics).
    pub fn tracked_streams(&self) -> usize {
        self.streams.len()
    }

    /// Updates the open count and frees the state when possible.
    fn settle(&mut self, id: u32) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.counted && st.read_closed && st.write_closed {
            st.counted = false;
            self.open_count -= 1;
            self.refused_streak = 0;
            wake_list(&mut self.open_wakers);
        }
        if !st.counted && !st.handle_live {
            self.streams.remove(&id);
        }
    }

    fn is_local_id(&self, id: u32) -> bool {
        let odd = id & 1 == 1;
        match self.role {
            Role::Client => odd,
            Role::Server => !odd,
        }
    }

    // ----- session ---------------------------------------------------

    /// Queues GOAWAY(code, msg) with the last peer stream id, and ends the
    /// session; the driver flushes it and closes the connection.
    pub fn goaway(&mut self, code: ErrorCode, msg: &str) {
        if self.end.is_some() {
            return;
        }
        encode_goaway(&mut self.out, self.peer_ids.max(), code, msg.as_bytes());
        self.end_session(Ok(()), true);
    }

    /// Ends the session now; queued output is dropped.
    pub fn close(&mut self) {
        self.end_session(Ok(()), false);
    }

    pub fn is_ended(&self) -> bool {
        self.end.is_some()
    }

    /// Ended without flushing: the driver stops all I/O at once.
    pub fn must_stop_now(&self) -> bool {
        self.end.as_ref().is_some_and(|e| !e.flush)
    }

    /// How the session ended (None while it runs).
    pub fn end_result(&self) -> Option<Result<(), MuxError>> {
        self.end.as_ref().map(|e| e.result.clone())
    }

    pub fn poll_closed(&mut self, waker: &Waker) -> Poll<()> {
        if self.end.is_some() {
            return Poll::Ready(());
        }
        push_waker(&mut self.closed_wakers, waker);
        Poll::Pending
    }

    fn fail(&mut self, err: MuxError) -> MuxError {
        if self.end.is_none() {
            tracing::debug!(error = %err, "muxado: session failed");
            let msg = err.to_string();
            encode_goaway(
                &mut self.out,
                self.peer_ids.max(),
                err.code(),
                msg.as_bytes(),
            );
            self.end_session(Err(err.clone()), true);
        }
        err
    }

    fn end_session(&mut self, result: Result<(), MuxError>, flush: bool) {
        if self.end.is_some() {
            return;
        }
        if !flush {
            self.out.clear();
        }
        self.end = Some(End { result, flush });
        for id in std::mem::take(&mut self.accept_queue) {
            self.streams.remove(&id);
        }
        for st in self.streams.values_mut() {
            st.wake_all();
        }
        wake_list(&mut self.accept_wakers);
        wake_list(&mut self.open_wakers);
        wake_list(&mut self.closed_wakers);
        wake_list(&mut self.out_space_wakers);
        self.kick();
    }

    // ----- output ----------------------------------------------------

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queued output (for tests).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Takes all queued output.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        self.swap_output(&mut v);
        v
    }

    /// Exchanges the output buffer with `buf` (which should be empty), so
    /// the driver writes one buffer while frames collect in the other.
    pub fn swap_output(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        std::mem::swap(&mut self.out, buf);
        wake_list(&mut self.out_space_wakers);
    }

    /// The waker of the task that writes output; woken when output is
    /// queued or the session ends.
    pub fn set_driver_waker(&mut self, waker: &Waker) {
        store_waker(&mut self.driver_waker, waker);
    }

    fn kick(&mut self) {
        wake(&mut self.driver_waker);
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

fn wake_list(list: &mut Vec<Waker>) {
    for w in list.drain(..) {
        w.wake();
    }
}

fn store_waker(slot: &mut Option<Waker>, w: &Waker) {
    if !slot.as_ref().is_some_and(|s| s.will_wake(w)) {
        *slot = Some(w.clone());
    }
}

fn push_waker(list: &mut Vec<Waker>, w: &Waker) {
    if !list.iter().any(|x| x.will_wake(w)) {
        list.push(w.clone());
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
