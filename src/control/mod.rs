//! The control plane's rules and state: endpoint URL rules
//! ([`url_rules`]), domain ownership ([`domains`]). Never on a worker's
//! request path except through immutable, published snapshots.

pub mod domains;
pub mod url_rules;
