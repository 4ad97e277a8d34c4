//! TLS at the edge: certificate sources (local dev CA, ACME, files), the
//! SNI certificate resolver, and termination on the workers.

pub mod acme;
