//! Every HTTP/2 limit the edge applies to a client connection, in one place,
//! with the reason for each default. `builder` turns them into h2's server
//! settings; the two timeouts are enforced by `serve` itself.

use std::time::Duration;

/// Per-connection HTTP/2 limits. `Default` is what the edge runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS. Streams beyond it are refused with
    /// RST_STREAM(REFUSED_STREAM). 256: twice what browsers open at once
    /// (Chrome and Firefox use 100), and small enough that one connection
    /// cannot hold more than 256 upstream requests.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE, in RFC 9113 §6.5.2 units (name +
    /// value + 32 bytes per field). Larger requests get 431; a list beyond
    /// h2's abuse multiple of it ends the connection. 1 MiB, the same
    /// order as the HTTP/1.1 head limit.
    pub max_header_list_size: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much request body a client may
    /// send on one stream before the proxy has forwarded it. 256 KiB keeps
    /// uploads at line rate on a loopback or LAN upstream without letting
    /// one stream buffer much.
    pub initial_stream_window: u32,
    /// The connection-level receive window (WINDOW_UPDATE on stream 0):
    /// the most request body one connection can have buffered in the edge.
    /// 1 MiB = four streams' windows.
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE the edge accepts. 16 KiB, the protocol's
    /// minimum and what every client sends anyway.
    pub max_frame_size: u32,
    /// Response bytes h2 may queue per stream before `send_body` waits for
    /// the client to read: bounds memory per slow reader. 256 KiB.
    pub max_send_buffer: usize,
    /// Streams a client resets before the edge has accepted them (the rapid
    /// reset attack, CVE-2023-44487). Past this many, GOAWAY with
    /// ENHANCE_YOUR_CALM. 20, h2's and hyper's default.
    pub max_pending_accept_reset_streams: usize,
    /// Resets the edge may be forced to send because of a client's protocol
    /// errors (malformed headers, flow-control violations...) before it
    /// sends GOAWAY ENHANCE_YOUR_CALM. `None` disables the check: never in
    /// production. 1024, h2's default.
    pub max_local_error_reset_streams: Option<usize>,
    /// Time for the client preface and SETTINGS exchange.
    pub handshake_timeout: Duration,
    /// A connection with no request in progress for this long is closed
    /// with a graceful GOAWAY (and dropped if that does not finish within
    /// `handshake_timeout`). Matches the HTTP/1.1 client idle default.
    pub idle_timeout: Duration,
    /// Advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 WebSockets over
    /// HTTP/2). Off until the proxy bridges it: a browser that sees it set
    /// opens its WebSockets over HTTP/2 and would get 501, where with it off
    /// it uses HTTP/1.1, which works.
    pub enable_connect_protocol: bool,
}

impl Default for H2Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: 1 << 20,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 1 << 20,
            max_frame_size: 16 * 1024,
            max_send_buffer: 256 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: Some(1024),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            enable_connect_protocol: false,
        }
    }
}

impl H2Limits {
    /// h2's server builder with these limits (and extended CONNECT, RFC
    /// 8441, when `enable_connect_protocol`). h2's other protections stay at their defaults and are
    /// always on: CONTINUATION flood limit (derived from the header list
    /// size), empty and small DATA frame budgets, the locally-reset stream
    /// cap (10 kept for 1 s), and the SETTINGS/PING queues.
    pub fn builder(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .initial_window_size(self.initial_stream_window)
            .initial_connection_window_size(self.initial_connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(self.max_local_error_reset_streams);
        if self.enable_connect_protocol {
            b.enable_connect_protocol();
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let l = H2Limits::default();
        assert_eq!(l.max_concurrent_streams, 256);
        assert_eq!(l.max_header_list_size, 1024 * 1024);
        assert!(l.initial_connection_window >= l.initial_stream_window);
        assert!(l.max_local_error_reset_streams.is_some());
        // h2 panics on frame sizes outside RFC 9113's range and send
        // buffers above u32::MAX: the defaults must be inside them.
        assert!((16_384..=16_777_215).contains(&l.max_frame_size));
        assert!(l.max_send_buffer <= u32::MAX as usize);
        let _ = l.builder();
    }
}
