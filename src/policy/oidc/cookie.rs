//! Request cookies and `Set-Cookie` values for the auth actions.

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn find<'a>(headers: &'a [(&'a str, &'a [u8])], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Attributes shared by every cookie an action sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieScope {
    /// `Domain=` (from `auth_cookie_domain`), host-only when `None`.
    pub domain: Option<String>,
}

impl CookieScope {
    /// `name=value` with `Path=/; HttpOnly; SameSite=Lax`, `Secure` over
    /// https, and `Max-Age` when given.
    pub fn set(&self, name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
        let mut s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(age) = max_age {
            s.push_str(&format!("; Max-Age={age}"));
        }
        if secure {
            s.push_str("; Secure");
        }
        s
    }

    /// A `Set-Cookie` that deletes `name`.
    pub fn clear(&self, name: &str, secure: bool) -> String {
        let mut s = self.set(name, "", Some(0), secure);
        s.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        s
    }
}

/// Checks a cookie domain from config: a host name, optionally with a
/// leading dot.
pub fn valid_domain(d: &str) -> bool {
    let d = d.strip_prefix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_across_headers() {
        let h: Vec<(&str, &[u8])> = vec![
            ("Cookie", b"a=1; ngrok_session_x=abc".as_slice()),
            ("cookie", b"b=\"2\"".as_slice()),
            ("x-other", b"c=3".as_slice()),
        ];
        assert_eq!(find(&h, "ngrok_session_x"), Some("abc"));
        assert_eq!(find(&h, "b"), Some("2"));
        assert_eq!(find(&h, "c"), None);
        assert_eq!(find(&h, "ngrok_session"), None);
    }

    #[test]
    fn set_cookie_attributes() {
        let s = CookieScope {
            domain: Some("example.com".into()),
        };
        assert_eq!(
            s.set("n", "v", Some(60), true),
            "n=v; Path=/; HttpOnly; SameSite=Lax; Domain=example.com; Max-Age=60; Secure"
        );
        let s = CookieScope { domain: None };
        assert!(s
            .clear("n", false)
            .starts_with("n=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"));
        assert!(valid_domain(".example.com"));
        assert!(!valid_domain("exa mple.com"));
        assert!(!valid_domain("a..b"));
        assert!(!valid_domain("x;y"));
    }
}
