//! HTTP/2 server side on monoio. Being written.
