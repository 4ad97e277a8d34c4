//! Request target → path below the served root, without touching the file
//! system: the path part only (query dropped), percent-decoded, split into
//! segments, with `.` dropped and `..` refused outright (no clamping: a
//! client asking for `..` is refused, not silently served something else).
//! Symlinks that lead out of the root are the file server's job
//! (`canonicalize` and a prefix check).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// Relative to the root; empty for the root itself.
    pub rel: PathBuf,
    /// The decoded path as the client wrote it ("/docs/a b/"), for titles.
    pub decoded: String,
    /// The raw path ended in `/` (a directory URL).
    pub trailing_slash: bool,
    /// The raw path (without query), for redirects.
    pub raw: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form, a bad `%` escape, or a NUL byte: 400.
    BadRequest,
    /// A `..` segment: 403.
    Traversal,
}

pub fn parse(target: &[u8]) -> Result<RequestPath, PathError> {
    let path = match memchr::memchr2(b'?', b'#', target) {
        Some(i) => &target[..i],
        None => target,
    };
    let path = if path.is_empty() {
        b"/".as_slice()
    } else {
        path
    };
    if path[0] != b'/' {
        return Err(PathError::BadRequest);
    }
    let decoded = percent_decode(path).ok_or(PathError::BadRequest)?;
    if decoded.contains(&0) {
        return Err(PathError::BadRequest);
    }
    let mut rel = PathBuf::new();
    for seg in decoded.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(PathError::Traversal),
            s => rel.push(OsStr::from_bytes(s)),
        }
    }
    Ok(RequestPath {
        rel,
        decoded: String::from_utf8_lossy(&decoded).into_owned(),
        trailing_slash: path.ends_with(b"/"),
        raw: String::from_utf8_lossy(path).into_owned(),
    })
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a file name for use in an href: everything but RFC
/// 3986 unreserved characters.
pub fn encode_segment(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 0xf) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_splits() {
        let p = parse(b"/docs/a%20b/./c.txt?x=1").expect("ok");
        assert_eq!(p.rel, PathBuf::from("docs/a b/c.txt"));
        assert_eq!(p.decoded, "/docs/a b/./c.txt");
        assert!(!p.trailing_slash);
        assert_eq!(p.raw, "/docs/a%20b/./c.txt");
        let root = parse(b"/").expect("ok");
        assert_eq!(root.rel, PathBuf::new());
        assert!(root.trailing_slash);
        assert_eq!(parse(b"").expect("empty means /").rel, PathBuf::new());
    }

    #[test]
    fn traversal_refused_in_every_spelling() {
        for t in [
            &b"/../etc/passwd"[..],
            b"/a/../../etc/passwd",
            b"/%2e%2e/etc/passwd",
            b"/%2E%2E%2Fetc%2Fpasswd",
            b"/a/..",
            b"/a%2f..%2f..%2fb",
        ] {
            assert_eq!(
                parse(t),
                Err(PathError::Traversal),
                "{}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn bad_requests() {
        for t in [&b"/a%zz"[..], b"/a%2", b"/a%00b", b"relative", b"*"] {
            assert_eq!(
                parse(t),
                Err(PathError::BadRequest),
                "{}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert_eq!(
            parse(b"/a..b/..c").expect("ok").rel,
            PathBuf::from("a..b/..c")
        );
    }

    #[test]
    fn href_encoding() {
        assert_eq!(encode_segment(b"a b&c<d>.txt"), "a%20b%26c%3Cd%3E.txt");
        assert_eq!(encode_segment("é".as_bytes()), "%C3%A9");
    }
}
