//! The agent's own 502 when its upstream cannot be reached
//! (ERR_NGROK_8012), sent like an HTTP/1.1 server would: after the request
//! head has arrived, with `connection: close`, and only then a FIN.
//! Replying (or half-closing) before the request was read is what made the
//! Rust SDK's 502 vanish (agent protocol spec §6, pitfall).

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use tracing::debug;

use super::edge_io::{EdgeReader, EdgeWriter};
use super::error::ForwardError;
use crate::http1::RequestHead;
use crate::proxy::error_page::{render, wants_json, EdgeError};

/// Longest wait for the request head before answering anyway.
pub const HEAD_WAIT: Duration = Duration::from_secs(30);
/// After the reply: how long, and how much, of the rest of the request is
/// read and dropped so the edge is not cut off mid-send.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);
pub const DRAIN_MAX: u64 = 1024 * 1024;

pub const UNREACHABLE: EdgeError = EdgeError {
    status: 502,
    code: Some("ERR_NGROK_8012"),
    message: "The ringress agent could not reach its upstream.",
};

/// Another 502, for an upstream that was reached but failed before
/// answering (HTTP/2 reset, invalid reply).
pub const UPSTREAM_FAILED: EdgeError = EdgeError {
    status: 502,
    code: Some("ERR_NGROK_3004"),
    message: "The upstream failed before sending a complete response.",
};

/// Reads the request head (bounded by [`HEAD_WAIT`]), answers with the
/// 502 page naming `upstream` and `reason`, half-closes, and drains what
/// the edge still sends for a moment. Returns the `Dial` error to report.
pub async fn answer_unreachable<R, W>(
    rd: &mut EdgeReader<R>,
    wr: &mut EdgeWriter<W>,
    upstream: &str,
    reason: &str,
) -> ForwardError
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut head = RequestHead::new();
    let mut head_buf = Vec::new();
    let json = match monoio::time::timeout(HEAD_WAIT, rd.read_head(&mut head, &mut head_buf)).await
    {
        Ok(Ok(true)) => wants_json(&head_buf, &head),
        Ok(Ok(false)) => {
            // The edge closed without a request: nobody to answer.
            return dial_error(upstream, reason);
        }
        Ok(Err(e)) => {
            debug!(error = %e, "no valid request head before the 502");
            false
        }
        Err(_) => false,
    };
    let detail = format!("The agent could not reach {upstream}: {reason}");
    let mut page = Vec::new();
    render(UNREACHABLE, &detail, json, true, &mut page);
    if let Err(e) = wr.write_all(page).await {
        debug!(error = %e, "writing the 502 page");
        return dial_error(upstream, reason);
    }
    let _ = wr.shutdown().await;
    drain(rd).await;
    dial_error(upstream, reason)
}

fn dial_error(upstream: &str, reason: &str) -> ForwardError {
    ForwardError::Dial {
        upstream: upstream.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Reads and drops what the edge still sends, until EOF or the bounds.
pub async fn drain<R: AsyncReadRent>(rd: &mut EdgeReader<R>) {
    let start = rd.bytes_in;
    let _ = monoio::time::timeout(DRAIN_WAIT, async {
        loop {
            let n = rd.buffered().len();
            rd.consume(n);
            if rd.bytes_in - start > DRAIN_MAX {
                break;
            }
            match rd.fill().await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
