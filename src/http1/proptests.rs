//! Property tests: arbitrary bytes never panic any parser, and feeding a
//! message in arbitrary pieces gives the same result as feeding it whole.

use proptest::prelude::*;

use super::{BodyDecoder, Framing, RequestHead, ResponseHead};

fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /x HTTP/1.1\r\n".to_vec()),
        Just(b"GET http://a.b/ HTTP/1.1\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    let header = prop_oneof![
        Just(b"Host: a.example.com\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Connection: close, upgrade\r\n".to_vec()),
        Just(b" folded\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..30),
    ];
    (line, prop::collection::vec(header, 0..8)).prop_map(|(mut l, hs)| {
        for h in hs {
            l.extend(h);
        }
        l.extend_from_slice(b"\r\n");
        l
    })
}

proptest! {
    #[test]
    fn request_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut h = RequestHead::new();
        let _ = h.parse(&raw, 256);
    }

    #[test]
    fn request_parser_structured(raw in request_like(), split in 0usize..64) {
        let mut whole = RequestHead::new();
        let full = whole.parse(&raw, 1 << 20);
        // Same verdict when the bytes arrive in two reads.
        let split = split.min(raw.len());
        let mut parts = RequestHead::new();
        let first = parts.parse(&raw[..split], 1 << 20);
        let again = match first {
            Ok(false) => parts.parse(&raw, 1 << 20),
            other => other,
        };
        match (&full, &again) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            // A prefix may already be refused (e.g. a bad request line).
            (Ok(_), Err(_)) | (Err(_), Ok(_)) => prop_assert!(split > 0),
        }
        if let Ok(true) = full {
            prop_assert!(whole.head_len <= raw.len());
        }
    }

    #[test]
    fn response_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..512), head in any::<bool>()) {
        let mut r = ResponseHead::new();
        let _ = r.parse(&raw, 256, head);
    }

    #[test]
    fn chunked_scanner_split_invariant(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
        trailer in any::<bool>(),
        cut in prop::collection::vec(1usize..17, 1..20),
    ) {
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        if trailer {
            body.extend_from_slice(b"X-T: 1\r\n");
        }
        body.extend_from_slice(b"\r\nNEXT");
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut at = 0;
        let mut consumed = 0;
        for step in cut.iter().cycle() {
            if d.is_done() || at >= body.len() {
                break;
            }
            let end = (at + step).min(body.len());
            let n = d.scan(&body[at..end]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            consumed += n;
            at += n;
            if n < end - (at - n) {
                break;
            }
        }
        prop_assert!(d.is_done());
        prop_assert_eq!(consumed, body.len() - 4);
    }

    #[test]
    fn chunked_scanner_never_panics(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let _ = d.scan(&raw);
    }
}
