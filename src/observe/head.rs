//! Parsing of the raw heads a worker copied, on the drainer thread: the
//! request line, the status line and the fields, leniently (these heads
//! already passed the edge's own parser).

/// A parsed copy of a request or response head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request: method; response: `HTTP/1.1`.
    pub first: String,
    /// Request: target; response: status code.
    pub second: String,
    /// Request: `HTTP/1.1`; response: reason.
    pub third: String,
    pub fields: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let mut h = Head::default();
        if let Some(line) = lines.next() {
            let mut parts = line.splitn(3, ' ');
            h.first = parts.next().unwrap_or_default().to_owned();
            h.second = parts.next().unwrap_or_default().to_owned();
            h.third = parts.next().unwrap_or_default().to_owned();
        }
        for line in lines {
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                h.fields.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        h
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `content-type` → `Content-Type` (ngrok's event header keys).
pub fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_and_response() {
        let r = Head::parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\n\r\n");
        assert_eq!((r.first.as_str(), r.second.as_str()), ("GET", "/a?b=1"));
        assert_eq!(r.get("user-agent"), Some("curl"));
        let s = Head::parse(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(s.second, "404");
        assert_eq!(s.third, "Not Found");
        assert_eq!(Head::parse(b""), Head::default());
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_name("HOST"), "Host");
    }
}
