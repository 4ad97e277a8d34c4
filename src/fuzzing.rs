//! Fuzz entry points: one function per fuzz target, taking arbitrary bytes
//! and checking the invariants of one sans-IO parser or codec. The
//! cargo-fuzz targets in `fuzz/` call these, and so does
//! `tests/fuzz_replay.rs` (corpus replay plus random inputs in the normal
//! test suite), so both exercise exactly the same code.
//!
//! Owns: input splitting and invariant checks. Never does I/O, never
//! changes the behaviour of the modules it drives; a broken invariant is a
//! panic (that is what a fuzzer reports). Not part of the public API.

use std::task::Poll;

use crate::http1::{BodyDecoder, Framing, RequestHead, ResponseHead};
use crate::tunnel::messages;
use crate::tunnel::muxado::frame::{Decoded, Decoder, MAX_FRAME_LEN};
use crate::tunnel::muxado::{Config, Core, ErrorCode, Role};

/// Largest head the head targets allow (the edge's default is 64 KiB).
const MAX_HEAD: usize = 64 * 1024;

/// Cuts `data` into pieces whose lengths come from `sizes` (cycled), so a
/// fuzzer controls how a message arrives in reads.
fn pieces<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1),
            None => rest.len(),
        };
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

/// HTTP/1 request head (and response head): a head parsed whole and the
/// same head parsed as it grows read by read give the same verdict, and
/// every span lies inside the head.
pub fn http1_head(data: &[u8]) {
    let (split, raw) = match data.split_first() {
        Some((s, r)) => (usize::from(*s), r),
        None => return,
    };
    let mut whole = RequestHead::new();
    let full = whole.parse(raw, MAX_HEAD);
    if let Ok(true) = full {
        let len = whole.head_len;
        assert!(len <= raw.len(), "head_len past the input");
        let spans = [
            whole.method_span,
            whole.target,
            whole.origin_form,
            whole.authority,
        ];
        for s in spans.iter().chain(whole.connection_tokens.iter()) {
            assert!(s.start <= s.end && s.end as usize <= len, "span {s:?}");
        }
        for h in &whole.headers {
            assert!(h.name.end as usize <= len && h.value.end as usize <= len);
        }
        assert_eq!(whole.headers.len(), whole.roles.len());
        // A head with a framing the edge forwards: Content-Length and
        // Transfer-Encoding never both survive.
        if let Framing::Chunked = whole.framing {
            assert!(!whole
                .headers
                .iter()
                .any(|h| h.name.get(raw).eq_ignore_ascii_case(b"content-length")));
        }
    }
    // Incremental: the buffer grows by `split`-sized reads.
    let step = split.max(1);
    let mut inc = RequestHead::new();
    let mut end = 0;
    let verdict = loop {
        end = (end + step).min(raw.len());
        match inc.parse(&raw[..end], MAX_HEAD) {
            Ok(false) if end < raw.len() => continue,
            other => break other,
        }
    };
    match (&full, &verdict) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "whole and incremental verdicts differ");
            if *a {
                assert_eq!(whole.head_len, inc.head_len);
                assert_eq!(whole.framing, inc.framing);
                assert_eq!(whole.authority, inc.authority);
                assert_eq!(whole.headers.len(), inc.headers.len());
            }
        }
        (Err(_), Err(_)) => {}
        // A read that ends inside the head may exceed the limit only when
        // the whole input does too; otherwise verdicts must agree.
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
            panic!("whole {full:?} vs incremental {verdict:?} ({e})")
        }
    }
    // The response parser on the same bytes must not panic either.
    let mut resp = ResponseHead::new();
    if let Ok(true) = resp.parse(raw, MAX_HEAD, split & 1 == 1) {
        assert!(resp.head_len <= raw.len());
    }
}

/// The chunked scanner: fed whole or in pieces it consumes the same
/// bytes, reports the same payload, and never reports a range outside its
/// input.
pub fn chunked(data: &[u8]) {
    let (sizes, body) = match data.split_first() {
        Some((n, rest)) => {
            let n = usize::from(*n % 8).min(rest.len());
            rest.split_at(n)
        }
        None => return,
    };
    let run = |parts: &[&[u8]]| -> (Result<usize, ()>, Vec<u8>, Vec<u8>, bool) {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        let mut payload = Vec::new();
        let mut trailers = Vec::new();
        let mut consumed = 0usize;
        for part in parts {
            let mut data_ranges = Vec::new();
            let mut trailer_ranges = Vec::new();
            let r = dec.scan_with(
                part,
                |r| data_ranges.push(r),
                |r, end| trailer_ranges.push((r, end)),
            );
            let n = match r {
                Ok(n) => n,
                Err(_) => return (Err(()), payload, trailers, false),
            };
            assert!(n <= part.len(), "consumed past the input");
            for r in data_ranges {
                assert!(r.start <= r.end && r.end <= n, "data range {r:?} past {n}");
                payload.extend_from_slice(&part[r]);
            }
            for (r, line_end) in trailer_ranges {
                assert!(
                    r.start <= r.end && r.end <= n,
                    "trailer range {r:?} past {n}"
                );
                trailers.extend_from_slice(&part[r]);
                if line_end {
                    trailers.push(b'\n');
                }
            }
            consumed += n;
            if dec.is_done() {
                return (Ok(consumed), payload, trailers, true);
            }
            assert_eq!(n, part.len(), "stopped early without being done");
        }
        (Ok(consumed), payload, trailers, false)
    };
    let whole = run(&[body]);
    let split = run(&pieces(body, sizes));
    assert_eq!(whole.0.is_ok(), split.0.is_ok(), "verdicts differ");
    if whole.0.is_ok() {
        assert_eq!(whole.0, split.0, "consumed differs");
        assert_eq!(whole.1, split.1, "payload differs");
        assert_eq!(whole.3, split.3, "done differs");
        assert_eq!(
            String::from_utf8_lossy(&whole.2),
            String::from_utf8_lossy(&split.2),
            "trailer lines differ"
        );
    }
    // The plain scanner agrees with the reporting one.
    let mut plain = BodyDecoder::new(Framing::Chunked);
    match (plain.scan(body), whole.0) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(())) => {}
        (a, b) => panic!("scan {a:?} vs scan_with {b:?}"),
    }
}

/// The muxado frame codec: decoding never panics, and every frame it
/// accepts re-encodes to bytes that decode to the same frame.
pub fn muxado_frame(data: &[u8]) {
    let (cfg, mut buf) = match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => return,
    };
    let max_data = match cfg & 3 {
        0 => 256 * 1024,
        1 => 16,
        2 => 0,
        _ => MAX_FRAME_LEN,
    };
    let dec = Decoder::new(max_data, cfg & 4 != 0);
    let strict = Decoder::new(MAX_FRAME_LEN, false);
    loop {
        match dec.decode(buf) {
            Ok(Decoded::NeedMore) | Err(_) => return,
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!(consumed <= buf.len() && consumed >= 8);
                let mut out = Vec::new();
                frame.encode(&mut out);
                match strict.decode(&out) {
                    Ok(Decoded::Frame {
                        frame: again,
                        consumed: n,
                    }) => {
                        assert_eq!(again, frame, "re-encoded frame differs");
                        assert_eq!(n, out.len());
                    }
                    other => panic!("re-encoded {frame:?} does not decode: {other:?}"),
                }
                buf = &buf[consumed..];
            }
        }
    }
}

/// The muxado session core driven by a script: the fuzzer's bytes are
/// both the peer's frames (fed in reads of any size) and the app's calls
/// (open, accept, read, write, FIN, reset, release). The core never
/// panics, and everything it queues for the peer is well-formed frames.
pub fn muxado_core(data: &[u8]) {
    let (cfg, mut script) = match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => return,
    };
    let role = if cfg & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let config = Config {
        max_streams: 1 + usize::from((cfg >> 1) & 7),
        window: if cfg & 0x10 != 0 { 64 } else { 256 * 1024 },
        accept_backlog: 1 + usize::from((cfg >> 5) & 3),
    };
    let mut core = Core::new(role, config);
    let out_check = Decoder::new(MAX_FRAME_LEN, false);
    let mut pending: Vec<u8> = Vec::new();
    let mut streams: Vec<u32> = Vec::new();
    let mut read_buf = [0u8; 512];
    let mut out_rest: Vec<u8> = Vec::new();
    while let Some((&op, rest)) = script.split_first() {
        script = rest;
        let arg = script.first().copied().unwrap_or(0);
        let pick = |streams: &[u32]| -> Option<u32> {
            (!streams.is_empty()).then(|| streams[usize::from(arg) % streams.len()])
        };
        match op % 10 {
            // Peer bytes: `arg` of them.
            0..=3 => {
                let n = (usize::from(arg) + 1).min(script.len().saturating_sub(1));
                let chunk = script.get(1..1 + n).unwrap_or(&[]);
                script = script.get(1 + n..).unwrap_or(&[]);
                pending.extend_from_slice(chunk);
                match core.receive(&pending) {
                    Ok(used) => {
                        assert!(used <= pending.len());
                        pending.drain(..used);
                    }
                    Err(_) => pending.clear(),
                }
                continue;
            }
            4 => {
                while let Some(id) = core.accept() {
                    streams.push(id);
                }
            }
            5 => {
                if let Poll::Ready(Ok(id)) = core.open() {
                    streams.push(id);
                }
            }
            6 => {
                if let Some(id) = pick(&streams) {
                    let _ = core.read(id, &mut read_buf[..1 + usize::from(arg) * 2]);
                }
            }
            7 => {
                if let Some(id) = pick(&streams) {
                    let _ = core.write(id, &vec![b'x'; usize::from(arg) * 7]);
                }
            }
            8 => {
                if let Some(id) = pick(&streams) {
                    if arg & 1 == 0 {
                        let _ = core.close_write(id);
                    } else {
                        core.reset(id, ErrorCode::from_u32(u32::from(arg >> 1)));
                    }
                }
            }
            _ => {
                if let Some(id) = pick(&streams) {
                    core.release(id);
                    streams.retain(|s| *s != id);
                }
            }
        }
        script = script.get(1..).unwrap_or(&[]);
        while core.poll_event().is_some() {}
        // What the core sends is always valid muxado.
        out_rest.extend_from_slice(&core.take_output());
        let mut at = 0;
        loop {
            match out_check.decode(&out_rest[at..]) {
                Ok(Decoded::Frame { consumed, .. }) => at += consumed,
                Ok(Decoded::NeedMore) => break,
                Err(e) => panic!("core queued an invalid frame: {e}"),
            }
        }
        out_rest.drain(..at);
        if core.is_ended() {
            break;
        }
    }
    let _ = core.open_streams();
    core.peer_eof();
}

/// ngrok's JSON control messages: take values off a stream of bytes and
/// decode each as every message type the edge reads; also the proxy
/// preamble. None of it may panic.
pub fn ngrok_messages(data: &[u8]) {
    let mut buf = data;
    while let Ok(Some((value, used))) = messages::take_value(buf) {
        assert!(used > 0 && used <= buf.len());
        let mut canon = value.clone();
        messages::canonicalize(&mut canon);
        let mut twice = canon.clone();
        messages::canonicalize(&mut twice);
        assert_eq!(canon, twice, "canonicalize is not idempotent");
        let _ = messages::decode::<messages::Auth>(value.clone());
        let _ = messages::decode::<messages::Bind>(value.clone());
        let _ = messages::decode::<messages::Unbind>(value.clone());
        let _ = messages::decode::<messages::AuthResp>(value.clone());
        let _ = messages::decode::<messages::BindResp>(value.clone());
        let _ = messages::decode::<messages::ErrorResp>(value.clone());
        let _ = messages::decode::<messages::ProxyHeader>(value);
        buf = &buf[used..];
    }
    let _ = messages::decode_proxy_header(data);
}

/// A traffic policy document (YAML or JSON) loaded and compiled as the
/// edge does at config load.
pub fn policy_document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = crate::policy::TrafficPolicy::parse(text) {
        let _ = crate::policy::CompiledPolicy::compile(&doc);
    }
}

/// One CEL expression compiled as a policy rule's `expressions` entry.
pub fn cel_compile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = crate::policy::cel::Expr::compile(text) {
        assert_eq!(expr.source(), text);
    }
}

/// libFuzzer aborts on any panic, through a panic hook. [`Expr::compile`]
/// contains panics of the CEL parser on purpose (it has some on malformed
/// input): this hook lets only those unwind to it and hands every other
/// panic to the previous hook. Call once before the first input.
///
/// [`Expr::compile`]: crate::policy::cel::Expr::compile
pub fn allow_contained_cel_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let contained = info.location().is_some_and(|l| {
                let f = l.file();
                f.contains("cel-parser")
                    || f.contains("cel-interpreter")
                    || f.contains("antlr4rust")
            });
            if !contained {
                previous(info);
            }
        }));
    });
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test and the campaign script.
pub const TARGETS: &[(&str, Target)] = &[
    ("http1_head", http1_head),
    ("chunked", chunked),
    ("muxado_frame", muxado_frame),
    ("muxado_core", muxado_core),
    ("ngrok_messages", ngrok_messages),
    ("policy_document", policy_document),
    ("cel_compile", cel_compile),
];
