//! muxado: the stream multiplexer under ngrok's agent protocol.
