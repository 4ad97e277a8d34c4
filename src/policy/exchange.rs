//! Per-exchange policy state, owned by the connection driver and reused
//! across requests (cleared, never freed): the edits the request phase
//! made for the upstream head, the response edits, phase variables and
//! action results.
//!
//! Strings are kept in pools whose entries are overwritten in place, so a
//! policy with static header edits allocates nothing per request once the
//! connection has served its first one.

use std::sync::Arc;

use cel_interpreter::Value;

use crate::route::Endpoint;

/// Header removals and additions, in the order the actions ran.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    removed: Vec<String>,
    n_removed: usize,
    added: Vec<(String, String)>,
    n_added: usize,
}

fn reuse(slot: &mut String, s: &str) {
    slot.clear();
    slot.push_str(s);
}

impl HeaderEdits {
    pub fn clear(&mut self) {
        self.n_removed = 0;
        self.n_added = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.n_removed == 0 && self.n_added == 0
    }

    /// Removes `name` (lower-case) from the original message and from
    /// what earlier actions added.
    pub fn remove(&mut self, name: &str) {
        let mut i = 0;
        while i < self.n_added {
            if self.added[i].0.eq_ignore_ascii_case(name) {
                self.added[i..self.n_added].rotate_left(1);
                self.n_added -= 1;
            } else {
                i += 1;
            }
        }
        if self.is_removed(name.as_bytes()) {
            return;
        }
        if self.n_removed < self.removed.len() {
            reuse(&mut self.removed[self.n_removed], name);
        } else {
            self.removed.push(name.to_owned());
        }
        self.n_removed += 1;
    }

    /// Appends a header (`name` lower-case).
    pub fn add(&mut self, name: &str, value: &str) {
        if self.n_added < self.added.len() {
            let slot = &mut self.added[self.n_added];
            reuse(&mut slot.0, name);
            reuse(&mut slot.1, value);
        } else {
            self.added.push((name.to_owned(), value.to_owned()));
        }
        self.n_added += 1;
    }

    /// Whether the original message's header `name` is removed.
    pub fn is_removed(&self, name: &[u8]) -> bool {
        self.removed[..self.n_removed]
            .iter()
            .any(|r| r.as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn added(&self) -> impl Iterator<Item = (&str, &str)> {
        self.added[..self.n_added]
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn removed(&self) -> impl Iterator<Item = &str> {
        self.removed[..self.n_removed].iter().map(String::as_str)
    }
}

/// What the request phase changed in the head sent upstream.
#[derive(Debug, Default)]
pub struct RequestEdits {
    pub headers: HeaderEdits,
    target: String,
    has_target: bool,
    host: String,
    has_host: bool,
}

impl RequestEdits {
    pub fn clear(&mut self) {
        self.headers.clear();
        self.has_target = false;
        self.has_host = false;
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && !self.has_target && !self.has_host
    }

    /// The new origin-form target (path and query).
    pub fn target(&self) -> Option<&str> {
        self.has_target.then_some(self.target.as_str())
    }

    pub fn set_target(&mut self, t: &str) {
        reuse(&mut self.target, t);
        self.has_target = true;
    }

    /// The Host value sent upstream instead of the client's.
    pub fn host(&self) -> Option<&str> {
        self.has_host.then_some(self.host.as_str())
    }

    pub fn set_host(&mut self, h: &str) {
        reuse(&mut self.host, h);
        self.has_host = true;
    }
}

/// Content codings compress-response can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Deflate,
    Br,
    Zstd,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// What the response phase changed in the head sent to the client.
#[derive(Debug, Default)]
pub struct ResponseEdits {
    pub headers: HeaderEdits,
    /// `Location` values pointing at this host are rewritten to
    /// `location_to` (set when `add-headers` replaced the Host).
    location_from: String,
    location_to: String,
    /// The client's scheme, for rewritten `Location`s.
    location_scheme: &'static str,
    rewrite_location: bool,
    /// The coding the body is compressed with, once negotiated.
    pub compress: Option<Encoding>,
}

impl ResponseEdits {
    pub fn clear(&mut self) {
        self.headers.clear();
        self.rewrite_location = false;
        self.compress = None;
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && !self.rewrite_location && self.compress.is_none()
    }

    pub fn set_location_rewrite(
        &mut self,
        from_host: &str,
        to_authority: &str,
        scheme: &'static str,
    ) {
        reuse(&mut self.location_from, from_host);
        reuse(&mut self.location_to, to_authority);
        self.location_scheme = scheme;
        self.rewrite_location = true;
    }

    /// The rewritten `Location`, when `value` points at the replaced host.
    pub fn rewrite_location(&self, value: &[u8]) -> Option<String> {
        if !self.rewrite_location {
            return None;
        }
        let v = std::str::from_utf8(value).ok()?.trim();
        let (_scheme, rest) = v.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let host = strip_port(authority);
        if !host.eq_ignore_ascii_case(strip_port(&self.location_from)) {
            return None;
        }
        Some(format!(
            "{}://{}{}",
            self.location_scheme,
            self.location_to,
            &rest[end..]
        ))
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The policy state of one exchange.
#[derive(Debug, Default)]
pub struct Exchange {
    pub req: RequestEdits,
    pub res: ResponseEdits,
    /// `set-vars` values of the running phase.
    pub(crate) vars: Vec<(String, Value)>,
    /// `actions.ngrok.<key>` results, when the policy reads them.
    pub(crate) results: Vec<(&'static str, Value)>,
    /// `req`, kept for the response phase when it reads it.
    pub(crate) req_value: Option<Value>,
    /// The `req` fields the policies run so far read, and those
    /// `req_value` was built with.
    pub(crate) req_fields: crate::policy::request::ReqFields,
    pub(crate) req_value_fields: crate::policy::request::ReqFields,
    /// Endpoints a `forward-internal` passed through, in order.
    pub(crate) chain: Vec<Arc<Endpoint>>,
    /// Algorithms compress-response may use for this exchange.
    pub(crate) compress_algorithms: Vec<Encoding>,
    /// The request's Accept-Encoding, kept when compression may apply.
    pub(crate) accept_encoding: String,
    /// Some expression reads `actions.ngrok.*`.
    pub(crate) record_results: bool,
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange::default()
    }

    /// Forgets the previous exchange, keeping allocations.
    pub fn reset(&mut self) {
        self.req.clear();
        self.res.clear();
        self.vars.clear();
        self.results.clear();
        self.req_value = None;
        self.req_fields = crate::policy::request::ReqFields::NONE;
        self.req_value_fields = crate::policy::request::ReqFields::NONE;
        self.chain.clear();
        self.compress_algorithms.clear();
        self.accept_encoding.clear();
    }

    pub(crate) fn set_var(&mut self, name: &str, v: Value) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.vars.push((name.to_owned(), v)),
        }
    }

    pub(crate) fn set_result(&mut self, key: &'static str, v: Value) {
        match self.results.iter_mut().find(|(n, _)| *n == key) {
            Some(slot) => slot.1 = v,
            None => self.results.push((key, v)),
        }
    }

    /// Whether the response phase has anything to do beyond relaying.
    pub fn response_edited(&self) -> bool {
        !self.res.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_edits_reuse_and_order() {
        let mut e = HeaderEdits::default();
        e.add("x-a", "1");
        e.add("x-b", "2");
        e.add("x-a", "3");
        e.remove("x-a");
        assert_eq!(e.added().collect::<Vec<_>>(), vec![("x-b", "2")]);
        assert!(e.is_removed(b"X-A"));
        e.add("x-a", "4");
        assert_eq!(
            e.added().collect::<Vec<_>>(),
            vec![("x-b", "2"), ("x-a", "4")]
        );
        e.clear();
        assert!(e.is_empty());
        e.add("x-c", "5");
        assert_eq!(e.added().collect::<Vec<_>>(), vec![("x-c", "5")]);
    }

    #[test]
    fn location_rewrite() {
        let mut r = ResponseEdits::default();
        assert_eq!(r.rewrite_location(b"http://localhost/x"), None);
        r.set_location_rewrite("localhost", "app.example.com", "https");
        assert_eq!(
            r.rewrite_location(b"http://localhost:3000/x?y").as_deref(),
            Some("https://app.example.com/x?y")
        );
        assert_eq!(r.rewrite_location(b"http://other/x"), None);
        assert_eq!(r.rewrite_location(b"/relative"), None);
    }
}
