//! The request path of a plain-HTTP client connection, as named phases:
//! read head → route → `on_http_request` policy → forward to the upstream →
//! relay the response. Header rewriting, error pages and the upstream pool
//! are separate modules; `conn` drives them over monoio sockets.

pub mod conn;
pub mod error_page;
pub mod h2_stream;
pub mod headers;
pub mod io;
pub mod status;
pub mod upstream;
pub mod upstream_pool;
pub mod upstream_stream;
