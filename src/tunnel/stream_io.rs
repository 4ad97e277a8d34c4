//! Reading the typed-stream pieces of the agent protocol off a muxado
//! stream: an exact number of bytes (stream types, heartbeats, ProxyHeader
//! lengths) and one JSON message (RPC requests and replies, which arrive
//! without a half-close). Shared by the edge's sessions and the agent.

use std::time::{Duration, Instant};

use monoio::io::AsyncReadRent;
use serde_json::Value;
use thiserror::Error;

use super::messages::{self, MessageError};
use super::muxado::Stream;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("timed out")]
    TimedOut,
    #[error("stream closed")]
    Closed,
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// One read onto the end of `buf`, within `deadline` if there is one.
async fn read_more(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Option<Instant>,
) -> Result<(), ReadError> {
    let chunk = Vec::with_capacity(want);
    let (res, chunk) = match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            monoio::time::timeout(left, s.read(chunk))
                .await
                .map_err(|_| ReadError::TimedOut)?
        }
        None => s.read(chunk).await,
    };
    match res {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        _ => Err(ReadError::Closed),
    }
}

/// Exactly `n` bytes, within `limit` if given.
pub async fn read_exact(
    s: &mut Stream,
    n: usize,
    limit: Option<Duration>,
) -> Result<Vec<u8>, ReadError> {
    let deadline = limit.map(|l| Instant::now() + l);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = n - out.len();
        read_more(s, &mut out, want, deadline).await?;
    }
    Ok(out)
}

/// One JSON value, within `limit`; refuses messages over
/// `messages::MAX_MESSAGE_BYTES`.
pub async fn read_json(s: &mut Stream, limit: Duration) -> Result<Value, ReadError> {
    let deadline = Some(Instant::now() + limit);
    let mut buf = Vec::new();
    loop {
        if let Some((v, _)) = messages::take_value(&buf)? {
            return Ok(v);
        }
        read_more(s, &mut buf, 16 * 1024, deadline).await?;
    }
}
