//! Single byte ranges (RFC 9110 §14.1.2): `bytes=a-b`, `bytes=a-`,
//! `bytes=-n`. Several ranges, other units or malformed values are ignored
//! (a full 200 response is always a correct answer to a Range request).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// Serve the whole representation.
    Full,
    /// Serve bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

pub fn parse(value: &[u8], len: u64) -> RangeSpec {
    let Ok(v) = std::str::from_utf8(value) else {
        return RangeSpec::Full;
    };
    let v = v.trim();
    let Some(spec) = v
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case("bytes="))
        .map(|_| v[6..].trim())
    else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if len == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeSpec::Full,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeSpec::Full;
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(e) if e >= start => e,
                    _ => return RangeSpec::Full,
                }
            };
            if start >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (true, true) => RangeSpec::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = |s: &str| parse(s.as_bytes(), 100);
        assert_eq!(p("bytes=0-9"), RangeSpec::Partial { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), RangeSpec::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=90-500"), RangeSpec::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), RangeSpec::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-500"), RangeSpec::Partial { start: 0, end: 99 });
        assert_eq!(p("Bytes= 5 - 6"), RangeSpec::Partial { start: 5, end: 6 });
        assert_eq!(p("bytes=100-"), RangeSpec::Unsatisfiable);
        assert_eq!(p("bytes=-0"), RangeSpec::Unsatisfiable);
        assert_eq!(parse(b"bytes=-5", 0), RangeSpec::Unsatisfiable);
    }

    #[test]
    fn ignored() {
        for v in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(parse(v.as_bytes(), 100), RangeSpec::Full, "{v}");
        }
    }
}
