//! ACME (RFC 8555) certificate management. Being written; see the module
//! contract in CONTRACT-ACME.md until it lands.
