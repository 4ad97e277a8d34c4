//! Moving bodies through h2 with flow control in both directions, so that
//! neither a slow client nor a slow upstream makes the edge buffer more
//! than the windows it advertised.
//!
//! - Responses: `send_body` hands h2 only as many bytes as it has granted
//!   capacity for (the client's stream and connection windows, capped by
//!   `H2Limits::max_send_buffer`), waiting in between.
//! - Requests: `RequestBody::chunk` returns DATA as it arrives and gives
//!   the window back (WINDOW_UPDATE) for a chunk only when the next one is
//!   asked for, i.e. once the caller has written it upstream.

use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;

/// Sends `data` on a response stream without ending it, in pieces no larger
/// than the capacity h2 grants; returns once all of it is queued in h2
/// (which writes it to the socket as the connection task runs).
///
/// Errors when the client resets the stream (with its reason) or the
/// connection fails; the caller then stops reading from the upstream.
pub async fn send_body(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        // Ask for the whole remainder: h2 assigns what the windows allow.
        stream.reserve_capacity(data.len());
        let mut cap = stream.capacity();
        while cap == 0 {
            // poll_capacity only reports increases; `capacity()` above
            // covers capacity that was already assigned.
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) => cap = n,
                Some(Err(e)) => return Err(e),
                None => return Err(closed_reason(stream)),
            }
        }
        let piece = data.split_to(cap.min(data.len()));
        stream.send_data(piece, false)?;
    }
    Ok(())
}

/// Ends a response stream: with `trailers` as a final HEADERS frame, or
/// with an empty END_STREAM DATA frame.
pub fn finish(
    stream: &mut SendStream<Bytes>,
    trailers: Option<HeaderMap>,
) -> Result<(), h2::Error> {
    // Drop capacity requests left from `send_body`.
    stream.reserve_capacity(0);
    match trailers {
        Some(t) if !t.is_empty() => stream.send_trailers(t),
        _ => stream.send_data(Bytes::new(), true),
    }
}

/// Why a stream stopped accepting data: the client's RST_STREAM reason
/// when there was one.
fn closed_reason(stream: &mut SendStream<Bytes>) -> h2::Error {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_reset(&mut cx) {
        Poll::Ready(Ok(reason)) => reason.into(),
        Poll::Ready(Err(e)) => e,
        Poll::Pending => Reason::STREAM_CLOSED.into(),
    }
}

/// A request body read chunk by chunk with deferred window release.
pub struct RequestBody {
    stream: RecvStream,
    /// Bytes of the last chunk handed out and not yet released.
    held: usize,
}

impl RequestBody {
    pub fn new(stream: RecvStream) -> Self {
        Self { stream, held: 0 }
    }

    /// The next DATA payload, or `None` at the end of the body. Releases
    /// the previous chunk's flow-control capacity first: call it again
    /// only after that chunk has been written upstream, and the client can
    /// never be more than one stream window ahead of the upstream.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, h2::Error>> {
        if let Err(e) = self.release() {
            return Some(Err(e));
        }
        let res = self.stream.data().await;
        if let Some(Ok(b)) = &res {
            self.held = b.len();
        }
        res
    }

    /// Gives the last chunk's window back now (WINDOW_UPDATE).
    pub fn release(&mut self) -> Result<(), h2::Error> {
        if self.held > 0 {
            let n = std::mem::take(&mut self.held);
            self.stream.flow_control().release_capacity(n)?;
        }
        Ok(())
    }

    /// The request's trailers, after `chunk` returned `None`.
    pub async fn trailers(&mut self) -> Result<Option<HeaderMap>, h2::Error> {
        self.release()?;
        self.stream.trailers().await
    }

    /// END_STREAM has been received and every chunk read.
    pub fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    pub fn into_inner(self) -> RecvStream {
        self.stream
    }
}
