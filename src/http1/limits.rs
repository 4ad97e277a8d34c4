//! Protocol limits as named constants, in one place.

/// Default cap on a request or response head (request line or status line
/// plus headers): 1 MB, as ngrok documents.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 1024 * 1024;

/// Hard ceiling for the configurable head limit (offsets are `u32`).
pub const MAX_HEAD_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// Headers parsed with a stack array first; only heads with more headers
/// than this pay for a heap array.
pub const INLINE_HEADERS: usize = 64;

/// Most header fields accepted in one head. A 1 MB head of minimal
/// `a:b\r\n` lines would be ~200k fields; 16k fields is far beyond any real
/// client and bounds the parser's work.
pub const MAX_HEADERS: usize = 16 * 1024;

/// Longest chunk-size line extension accepted (chunk-ext), bytes.
pub const MAX_CHUNK_EXT: usize = 4096;

/// Longest trailer section accepted after the last chunk, bytes.
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;
