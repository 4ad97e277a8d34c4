//! Copies bytes both ways between the edge's stream and the upstream,
//! with TCP's half-close semantics carried across (agent protocol spec §6):
//! - edge FIN → shut down the upstream's write side (the upstream reads EOF
//!   and may still answer);
//! - upstream EOF → shut down our write side towards the edge (FIN).
//!
//! The copy ends when both directions have ended. Nothing is parsed: Host
//! and every header reach the upstream exactly as the edge sent them, and
//! keep-alive, pipelining and WebSocket upgrades work as on a plain socket.

use std::io;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use tracing::debug;

/// Buffer per direction.
pub const PIPE_BUFFER: usize = 16 * 1024;

/// How a copy ended.
#[derive(Debug, Default)]
pub struct PipeOutcome {
    /// Bytes read from the edge (and written to the upstream).
    pub bytes_in: u64,
    /// Bytes read from the upstream (and written to the edge).
    pub bytes_out: u64,
    /// The first failure on the edge's stream, if any.
    pub edge_error: Option<io::Error>,
    /// The first failure on the upstream connection, if any.
    pub upstream_error: Option<io::Error>,
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// Runs both directions to their end.
pub async fn pipe<ER, EW, UR, UW>(
    mut edge_r: ER,
    mut edge_w: EW,
    mut up_r: UR,
    mut up_w: UW,
) -> PipeOutcome
where
    ER: AsyncReadRent,
    EW: AsyncWriteRent,
    UR: AsyncReadRent,
    UW: AsyncWriteRent,
{
    let ((bytes_in, to_up), (bytes_out, to_edge)) = monoio::join!(
        copy_half(&mut edge_r, &mut up_w),
        copy_half(&mut up_r, &mut edge_w)
    );
    let mut out = PipeOutcome {
        bytes_in,
        bytes_out,
        ..PipeOutcome::default()
    };
    match to_up {
        Err(HalfError::Read(e)) => out.edge_error = Some(e),
        Err(HalfError::Write(e)) => out.upstream_error = Some(e),
        Ok(()) => {}
    }
    match to_edge {
        Err(HalfError::Read(e)) => {
            out.upstream_error.get_or_insert(e);
        }
        Err(HalfError::Write(e)) => {
            out.edge_error.get_or_insert(e);
        }
        Ok(()) => {}
    }
    out
}

/// Copies `r` to `w` until EOF, then shuts `w` down. A read failure also
/// shuts `w` down (the peer must learn that nothing more comes); a write
/// failure ends the copy. A TLS peer that closes without close_notify
/// (`UnexpectedEof`) counts as EOF: many servers do.
async fn copy_half<R, W>(r: &mut R, w: &mut W) -> (u64, Result<(), HalfError>)
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut total = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(PIPE_BUFFER);
    let result = loop {
        buf.clear();
        let (res, slice) = r.read(buf.slice_mut(0..PIPE_BUFFER)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break Ok(()),
            Ok(n) => {
                total += n as u64;
                let (res, b) = w.write_all(buf).await;
                buf = b;
                if let Err(e) = res {
                    return (total, Err(HalfError::Write(e)));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(HalfError::Read(e)),
        }
    };
    if let Err(e) = w.shutdown().await {
        debug!(error = %e, "half-close after copy");
    }
    (total, result)
}
