//! The route table: a hash map for exact hosts and one for wildcard
//! suffixes. A lookup walks the host's labels from the most specific
//! suffix outwards, so the first wildcard hit is the most specific one.

use std::collections::HashMap;
use std::sync::Arc;

use super::endpoint::Endpoint;

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Arc<Endpoint>>,
    /// Keyed by the suffix after `*.` (e.g. `example.com`).
    wildcard: HashMap<Box<str>, Arc<Endpoint>>,
}

impl RouteTable {
    /// Adds an endpoint; returns false if its host is already taken.
    pub fn insert(&mut self, endpoint: Arc<Endpoint>) -> bool {
        let (map, key) = match endpoint.host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_owned()),
            None => (&mut self.exact, endpoint.host.clone()),
        };
        if map.contains_key(key.as_str()) {
            return false;
        }
        map.insert(key.into_boxed_str(), endpoint);
        true
    }

    /// Finds the endpoint for a normalized host (see [`normalize_host`]).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Endpoint>> {
        if let Some(ep) = self.exact.get(host) {
            return Some(ep);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // `*.example.com` matches any depth below example.com, but not
        // example.com itself.
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(ep) = self.wildcard.get(rest) {
                return Some(ep);
            }
        }
        None
    }

    /// Looks a host up in two tables as if they were one: an exact host in
    /// either beats any wildcard, and the most specific wildcard of either
    /// wins; on a tie, `first` wins (config endpoints before agent ones).
    pub fn lookup_either<'a>(
        first: &'a RouteTable,
        second: &'a RouteTable,
        host: &str,
    ) -> Option<&'a Arc<Endpoint>> {
        if let Some(ep) = first.exact.get(host).or_else(|| second.exact.get(host)) {
            return Some(ep);
        }
        if first.wildcard.is_empty() && second.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(ep) = first
                .wildcard
                .get(rest)
                .or_else(|| second.wildcard.get(rest))
            {
                return Some(ep);
            }
        }
        None
    }

    /// Whether an endpoint has exactly this host (wildcards aside).
    pub fn has_exact(&self, host: &str) -> bool {
        self.exact.contains_key(host)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Normalizes a Host / authority value into `out`: port stripped, trailing
/// dot removed, ASCII lowercase. Returns false when nothing is left.
pub fn normalize_host(authority: &[u8], out: &mut String) -> bool {
    out.clear();
    let host = if authority.first() == Some(&b'[') {
        // IP-literal: keep the brackets, drop any port after them.
        match memchr::memchr(b']', authority) {
            Some(end) => &authority[..=end],
            None => return false,
        }
    } else {
        match memchr::memrchr(b':', authority) {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return false;
    }
    out.extend(host.iter().map(|b| b.to_ascii_lowercase() as char));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Scheme;

    fn ep(host: &str) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            url: format!("http://{host}"),
            scheme: Scheme::Http,
            host: host.into(),
            upstream: None,
            policy: None,
            tunnel: None,
            observe: Default::default(),
        })
    }

    #[test]
    fn two_tables_read_as_one() {
        let mut config = RouteTable::default();
        let mut agents = RouteTable::default();
        config.insert(ep("*.example.com"));
        agents.insert(ep("app.example.com"));
        agents.insert(ep("*.b.example.com"));
        let find = |h: &str| RouteTable::lookup_either(&config, &agents, h).map(|e| e.host.clone());
        assert_eq!(find("app.example.com").as_deref(), Some("app.example.com"));
        assert_eq!(find("x.b.example.com").as_deref(), Some("*.b.example.com"));
        assert_eq!(find("x.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(find("other.test"), None);
    }

    #[test]
    fn exact_beats_wildcard_and_most_specific_wildcard_wins() {
        let mut t = RouteTable::default();
        assert!(t.insert(ep("*.example.com")));
        assert!(t.insert(ep("*.b.example.com")));
        assert!(t.insert(ep("app.example.com")));
        assert!(!t.insert(ep("app.example.com")));
        let host = |h: &str| t.lookup(h).map(|e| e.host.clone());
        assert_eq!(host("app.example.com").as_deref(), Some("app.example.com"));
        assert_eq!(host("x.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(host("a.b.c.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(host("a.b.example.com").as_deref(), Some("*.b.example.com"));
        assert_eq!(
            host("z.y.b.example.com").as_deref(),
            Some("*.b.example.com")
        );
        assert_eq!(host("example.com"), None);
        assert_eq!(host("other.org"), None);
    }

    #[test]
    fn normalization() {
        let mut s = String::new();
        assert!(normalize_host(b"App.Example.COM:8080", &mut s));
        assert_eq!(s, "app.example.com");
        assert!(normalize_host(b"example.com.", &mut s));
        assert_eq!(s, "example.com");
        assert!(normalize_host(b"[::1]:80", &mut s));
        assert_eq!(s, "[::1]");
        assert!(!normalize_host(b":80", &mut s));
        assert!(!normalize_host(b"[::1", &mut s));
    }
}
