//! Forwarders: what the agent does with one proxied connection.
