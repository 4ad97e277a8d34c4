//! Event JSON: `http_request_complete.v0` and `tcp_connection_closed.v0`
//! with ngrok's field names (spec §7), written on the drainer thread from
//! the records workers queued, straight into the batch buffer the sinks
//! get: no JSON tree, no per-event allocation, strings escaped a run of
//! bytes at a time. Never runs on a worker.

use std::borrow::Cow;
use std::io::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::fields::{HttpField, Op, Plan, Selection, TcpField, HTTP_FIELDS, TCP_FIELDS};
use super::record::{HttpRecord, TcpRecord};
use super::timestamp;

pub use super::fields::{HTTP_REQUEST_COMPLETE, TCP_CONNECTION_CLOSED};

pub use super::timestamp::rfc3339;

/// `{"event_id":"ev_` + a random per-process prefix: the start of every
/// event, made once.
fn event_start() -> &'static [u8] {
    static START: OnceLock<Vec<u8>> = OnceLock::new();
    START.get_or_init(|| {
        let mut s = b"{\"event_id\":\"ev_".to_vec();
        s.extend_from_slice(crate::tunnel::registry::random_hex(6).as_bytes());
        s
    })
}

/// The rest of an event id: 12 hex digits of a process-wide counter
/// (`ev_` + prefix + counter: unique, and cheap).
fn event_counter(out: &mut Vec<u8>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut d = [0u8; 12];
    for (i, c) in d.iter_mut().enumerate() {
        *c = HEX[((n >> ((11 - i) * 4)) & 0xf) as usize];
    }
    out.extend_from_slice(&d);
}

#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the 8 bytes of `w` needs escaping: below 0x20, `"` or
/// `\\` (the "has zero byte" and "has byte less than" word tricks).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

/// The index of the first byte of `s` that needs escaping, from `from`.
#[inline]
fn next_escape(s: &[u8], mut from: usize) -> Option<usize> {
    while from + 8 <= s.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[from..from + 8]);
        if word_needs_escape(u64::from_le_bytes(w)) {
            break;
        }
        from += 8;
    }
    s[from..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| from + i)
}

/// The inside of a JSON string literal; `s` is valid UTF-8. Escapes use
/// lower-case letters only, so a caller may lower-case what this wrote.
fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    while let Some(i) = next_escape(s, start) {
        out.extend_from_slice(&s[start..i]);
        match s[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// A JSON string literal of valid UTF-8.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// A JSON string literal, lower-cased (ASCII letters).
fn string_lower(out: &mut Vec<u8>, s: &[u8]) {
    let at = out.len();
    string(out, s);
    out[at..].make_ascii_lowercase();
}

/// A header name as ngrok's events key it: `content-type` → `Content-Type`.
fn header_key(out: &mut Vec<u8>, name: &[u8], scratch: &mut Vec<u8>) {
    let canon = |upper: bool, b: u8| {
        if upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        }
    };
    if next_escape(name, 0).is_none() {
        // Field names are tokens: nothing to escape (the usual case).
        out.push(b'"');
        let mut prev = b'-';
        out.extend(name.iter().map(|&b| {
            let c = canon(prev == b'-', b);
            prev = b;
            c
        }));
        out.push(b'"');
        return;
    }
    scratch.clear();
    let mut upper = true;
    for &b in name {
        scratch.push(canon(upper, b));
        upper = b == b'-';
    }
    string(out, scratch);
}

fn num(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn time(out: &mut Vec<u8>, clock: &mut timestamp::Cache, t: SystemTime) {
    out.push(b'"');
    clock.write(out, t);
    out.push(b'"');
}

/// The text of the last client address written (consecutive events are
/// mostly from the same clients).
#[derive(Default)]
struct IpCache {
    last: Option<(std::net::IpAddr, Vec<u8>)>,
}

impl IpCache {
    fn write(&mut self, out: &mut Vec<u8>, a: std::net::SocketAddr) {
        let ip = a.ip().to_canonical();
        out.push(b'"');
        match &self.last {
            Some((last, text)) if *last == ip => out.extend_from_slice(text),
            _ => {
                let mut text = Vec::with_capacity(40);
                let _ = write!(text, "{ip}");
                out.extend_from_slice(&text);
                self.last = Some((ip, text));
            }
        }
        out.push(b'"');
    }
}

fn trim(b: &[u8]) -> Range<usize> {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    start..end.max(start)
}

/// The request line / status line and fields of a head, as offsets into
/// it (kept in a reusable list).
#[derive(Default)]
struct HeadIndex {
    first: Range<usize>,
    second: Range<usize>,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl HeadIndex {
    fn parse(&mut self, h: &[u8]) {
        self.fields.clear();
        // Lines end in CRLF (the edge wrote or checked these heads).
        let eol = |from: usize| -> (usize, usize) {
            match memchr::memchr(b'\n', &h[from.min(h.len())..]) {
                Some(i) => {
                    let nl = from + i;
                    let end = if nl > from && h[nl - 1] == b'\r' {
                        nl - 1
                    } else {
                        nl
                    };
                    (end, nl + 1)
                }
                None => (h.len(), h.len()),
            }
        };
        let (line_end, mut at) = eol(0);
        let line = &h[..line_end];
        let sp1 = memchr::memchr(b' ', line).unwrap_or(line.len());
        self.first = 0..sp1;
        let rest = (sp1 + 1).min(line.len());
        let sp2 = memchr::memchr(b' ', &line[rest..]).map_or(line.len(), |i| rest + i);
        self.second = rest..sp2;
        while at < h.len() {
            let (end, next) = eol(at);
            let l = &h[at..end];
            if l.is_empty() {
                break;
            }
            if let Some(c) = memchr::memchr(b':', l) {
                let n = trim(&l[..c]);
                let v = trim(&l[c + 1..]);
                self.fields.push((
                    at + n.start..at + n.end,
                    at + c + 1 + v.start..at + c + 1 + v.end,
                ));
            }
            at = next;
        }
    }

    fn get<'h>(&self, h: &'h [u8], name: &str) -> Option<&'h [u8]> {
        self.fields
            .iter()
            .find(|(n, _)| h[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &h[v.clone()])
    }

    /// Header keys capitalised (`Content-Type`), values lowercased, as
    /// ngrok's events have them; repeated fields become one list.
    fn headers(&self, out: &mut Vec<u8>, h: &[u8], scratch: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (i, (name, _)) in self.fields.iter().enumerate() {
            let name = &h[name.clone()];
            let same =
                |(n, _): &&(Range<usize>, Range<usize>)| h[n.clone()].eq_ignore_ascii_case(name);
            if self.fields[..i].iter().any(|f| same(&f)) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            header_key(out, name, scratch);
            out.extend_from_slice(b":[");
            let mut first_v = true;
            for (_, v) in self.fields[i..].iter().filter(same) {
                if !first_v {
                    out.push(b',');
                }
                first_v = false;
                string_lower(out, &h[v.clone()]);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
}

/// A head as valid UTF-8 (heads passed the edge's parser; obs-text bytes
/// are replaced).
fn utf8(raw: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(raw) {
        Ok(_) => Cow::Borrowed(raw),
        Err(_) => Cow::Owned(String::from_utf8_lossy(raw).into_owned().into_bytes()),
    }
}

fn split_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match memchr::memchr(b']', host) {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match memchr::memrchr(b':', host) {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

/// Writes events into a buffer, reusing its scratch space between them.
#[derive(Default)]
pub struct EventWriter {
    req: HeadIndex,
    res: HeadIndex,
    scratch: Vec<u8>,
    clock: timestamp::Cache,
    ips: IpCache,
}

/// What follows an event id up to the timestamp's digits, per type.
const HTTP_TYPE: &[u8] = b"\",\"event_type\":\"http_request_complete.v0\",\"event_timestamp\":\"";
const TCP_TYPE: &[u8] = b"\",\"event_type\":\"tcp_connection_closed.v0\",\"event_timestamp\":\"";

/// Room reserved per event up front, so that its pieces rarely grow the
/// buffer one by one (an event with every field and small heads fits).
const EVENT_ROOM: usize = 1024;

/// `{"event_id":"…","event_type":"…","event_timestamp":"…","object":`,
/// from literal pieces.
fn envelope_start(
    out: &mut Vec<u8>,
    clock: &mut timestamp::Cache,
    type_part: &[u8],
    now: SystemTime,
) {
    out.reserve(EVENT_ROOM);
    out.extend_from_slice(event_start());
    event_counter(out);
    out.extend_from_slice(type_part);
    clock.write(out, now);
    out.extend_from_slice(b"\",\"object\":");
}

/// What an `http_request_complete.v0` event's values come from: the
/// record and the parts of its heads the plan needs.
struct HttpParts<'h> {
    rq: &'h [u8],
    rs: &'h [u8],
    target: &'h [u8],
    path: &'h [u8],
    query: &'h [u8],
    raw_host: &'h [u8],
    host: &'h [u8],
}

/// `duration_ms` from microseconds: integer milliseconds and up to three
/// decimals without trailing zeros.
fn millis(o: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    num(o, us / 1000);
    let frac = us % 1000;
    if frac != 0 {
        let d = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut n = 3;
        while d[n - 1] == b'0' {
            n -= 1;
        }
        o.push(b'.');
        o.extend_from_slice(&d[..n]);
    }
}

/// Which heads a plan reads (a plan without header or URL fields parses
/// none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    req: bool,
    res: bool,
}

/// The compiled selections of one sink group.
pub struct Plans {
    pub http: Option<Plan<HttpField>>,
    pub tcp: Option<Plan<TcpField>>,
    needs: Needs,
}

impl Plans {
    pub fn new(sel: &Selection) -> Plans {
        let http = Plan::of(&sel.http, HTTP_FIELDS);
        let needs = http.as_ref().map_or(Needs::default(), |p| {
            use HttpField::*;
            Needs {
                req: p.values().any(|f| {
                    matches!(
                        f,
                        ServerName
                            | ReqHeaders
                            | Method
                            | UrlHost
                            | UrlPath
                            | UrlQuery
                            | UrlRaw
                            | UserAgent
                    )
                }),
                res: p.has(ResHeaders),
            }
        });
        Plans {
            http,
            tcp: Plan::of(&sel.tcp, TCP_FIELDS),
            needs,
        }
    }

    /// Every field of both types.
    pub fn all() -> Plans {
        Plans::new(&Selection::all())
    }
}

impl EventWriter {
    /// Appends one `http_request_complete.v0` event with the fields of
    /// `plans.http` (no newline); `now` is its `event_timestamp`. False,
    /// and nothing written, when the plans take no such events.
    pub fn http(
        &mut self,
        o: &mut Vec<u8>,
        r: &HttpRecord<'_>,
        now: SystemTime,
        plans: &Plans,
    ) -> bool {
        let Some(plan) = &plans.http else {
            return false;
        };
        let req_head = if plans.needs.req {
            utf8(r.req_head)
        } else {
            Cow::Borrowed(&b""[..])
        };
        let res_head = if plans.needs.res {
            utf8(r.res_head)
        } else {
            Cow::Borrowed(&b""[..])
        };
        let (rq, rs) = (&*req_head, &*res_head);
        let mut p = HttpParts {
            rq,
            rs,
            target: b"",
            path: b"",
            query: b"",
            raw_host: b"",
            host: b"",
        };
        if plans.needs.req {
            self.req.parse(rq);
            p.target = &rq[self.req.second.clone()];
            (p.path, p.query) = match memchr::memchr(b'?', p.target) {
                Some(i) => (&p.target[..i], &p.target[i + 1..]),
                None => (p.target, &b""[..]),
            };
            p.raw_host = self.req.get(rq, "host").unwrap_or_default();
            p.host = split_port(p.raw_host);
        }
        if plans.needs.res {
            self.res.parse(rs);
        }
        envelope_start(o, &mut self.clock, HTTP_TYPE, now);
        for op in &plan.ops {
            match *op {
                Op::Text(a, b) => o.extend_from_slice(plan.text(a, b)),
                Op::Value(f) => self.http_value(o, f, r, &p),
            }
        }
        o.push(b'}');
        true
    }

    fn http_value(&mut self, o: &mut Vec<u8>, f: HttpField, r: &HttpRecord<'_>, p: &HttpParts<'_>) {
        use HttpField::*;
        match f {
            ClientIp => self.ips.write(o, r.client),
            ServerName | UrlHost => string(o, p.host),
            ServerPort => num(o, r.server_port),
            ConnStartTs => time(o, &mut self.clock, r.conn_start),
            ReqBodyLength => num(o, r.req_body_len),
            ReqHeaders => self.req.headers(o, p.rq, &mut self.scratch),
            Method => string_lower(o, &p.rq[self.req.first.clone()]),
            UrlPath => string(o, p.path),
            UrlQuery => string(o, p.query),
            UrlRaw => {
                o.push(b'"');
                escaped(o, r.scheme.as_bytes());
                o.extend_from_slice(b"://");
                escaped(o, p.raw_host);
                escaped(o, p.target);
                o.push(b'"');
            }
            UrlScheme => string(o, r.scheme.as_bytes()),
            UserAgent => string(o, self.req.get(p.rq, "user-agent").unwrap_or_default()),
            ResBodyLength => num(o, r.res_body_len),
            ResHeaders => self.res.headers(o, p.rs, &mut self.scratch),
            StatusCode => num(o, r.status),
            DurationMs => millis(o, r.duration),
            StartTs => time(o, &mut self.clock, r.start),
            Proto => string(o, r.proto.as_bytes()),
            EndpointUrl => string(o, r.endpoint.as_bytes()),
            NgrokErrorCode => match r.error_code {
                Some(c) => string(o, c.as_bytes()),
                None => o.extend_from_slice(b"null"),
            },
        }
    }

    /// Appends one `tcp_connection_closed.v0` event with the fields of
    /// `plans.tcp` (no newline). False, and nothing written, when the plans
    /// take no such events.
    pub fn tcp(
        &mut self,
        o: &mut Vec<u8>,
        r: &TcpRecord<'_>,
        now: SystemTime,
        plans: &Plans,
    ) -> bool {
        let Some(plan) = &plans.tcp else {
            return false;
        };
        envelope_start(o, &mut self.clock, TCP_TYPE, now);
        for op in &plan.ops {
            match *op {
                Op::Text(a, b) => o.extend_from_slice(plan.text(a, b)),
                Op::Value(f) => match f {
                    TcpField::BytesIn => num(o, r.bytes_in),
                    TcpField::BytesOut => num(o, r.bytes_out),
                    TcpField::ClientIp => self.ips.write(o, r.client),
                    TcpField::EndTs => time(o, &mut self.clock, r.end),
                    TcpField::ServerName => string(o, r.server_name.as_bytes()),
                    TcpField::ServerPort => num(o, r.server_port),
                    TcpField::StartTs => time(o, &mut self.clock, r.start),
                },
            }
        }
        o.push(b'}');
        true
    }
}

/// One `http_request_complete.v0` event with every field, as a JSON line
/// (no newline).
pub fn http_event(r: &HttpRecord<'_>) -> String {
    let mut o = Vec::with_capacity(1024);
    EventWriter::default().http(&mut o, r, SystemTime::now(), &Plans::all());
    String::from_utf8_lossy(&o).into_owned()
}

/// One `tcp_connection_closed.v0` event with every field, as a JSON line
/// (no newline).
pub fn tcp_event(r: &TcpRecord<'_>) -> String {
    let mut o = Vec::with_capacity(384);
    EventWriter::default().tcp(&mut o, r, SystemTime::now(), &Plans::all());
    String::from_utf8_lossy(&o).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> HttpRecord<'static> {
        crate::observe::record::tests::http()
    }

    #[test]
    fn http_event_has_ngrok_fields() {
        let line = http_event(&record());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_type"], HTTP_REQUEST_COMPLETE);
        let o = &v["object"];
        assert_eq!(o["http"]["request"]["method"], "post");
        assert_eq!(o["http"]["request"]["url"]["path"], "/x");
        assert_eq!(o["http"]["request"]["url"]["query"], "y=1");
        assert_eq!(o["http"]["request"]["url"]["host"], "app.example.com");
        assert_eq!(o["http"]["request"]["user_agent"], "Curl/8");
        assert_eq!(o["http"]["request"]["headers"]["X-A"], json!(["1", "2"]));
        assert_eq!(
            o["http"]["request"]["headers"]["User-Agent"],
            json!(["curl/8"])
        );
        assert_eq!(o["http"]["response"]["status_code"], 201);
        assert_eq!(o["http"]["duration_ms"], 1.5);
        assert_eq!(o["conn"]["client_ip"], "127.0.0.1");
        assert_eq!(o["conn"]["start_ts"], "1970-01-01T00:00:00.000Z");
        assert!(v["event_id"].as_str().unwrap().starts_with("ev_"));
        assert!(v["object"]["ngrok_error_code"].is_null());
    }

    #[test]
    fn strings_are_escaped_and_tcp_events_parse() {
        let mut r = record();
        r.req_head = b"GET /a\"b\\c\x01 HTTP/1.1\r\nHost: x\r\nX-Q: \"q\"\r\n\r\n";
        r.error_code = Some("ERR_NGROK_3004");
        let v: serde_json::Value = serde_json::from_str(&http_event(&r)).unwrap();
        assert_eq!(
            v["object"]["http"]["request"]["url"]["path"],
            "/a\"b\\c\u{1}"
        );
        assert_eq!(
            v["object"]["http"]["request"]["headers"]["X-Q"],
            json!(["\"q\""])
        );
        assert_eq!(v["object"]["ngrok_error_code"], "ERR_NGROK_3004");
        let mut t = crate::observe::record::tests::tcp();
        t.client = "[::1]:9".parse().unwrap();
        let v: serde_json::Value = serde_json::from_str(&tcp_event(&t)).unwrap();
        assert_eq!(v["event_type"], TCP_CONNECTION_CLOSED);
        assert_eq!(v["object"]["conn"]["bytes_out"], 20);
        assert_eq!(v["object"]["conn"]["client_ip"], "::1");
        let a = http_event(&record());
        let b = http_event(&record());
        let id =
            |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["event_id"].clone();
        assert_ne!(id(&a), id(&b));
    }

    #[test]
    fn escaping_matches_a_json_parser_for_every_byte_and_position() {
        // Every byte value at every offset of a 20-byte string (the word
        // scan and its tail), read back by serde_json.
        for b in 0u8..0x80 {
            for at in 0..20 {
                let mut s = vec![b'a'; 20];
                s[at] = b;
                let mut out = Vec::new();
                string(&mut out, &s);
                let back: String = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("byte {b:#x} at {at}: {e}"));
                assert_eq!(back.as_bytes(), &s[..]);
            }
        }
        let mut out = Vec::new();
        string(&mut out, "é\"ü".as_bytes());
        assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), "é\"ü");
    }

    #[test]
    fn odd_heads_still_make_valid_json() {
        let mut r = record();
        // obs-text in a value, a bare LF line end, an IPv6 authority.
        r.req_head = b"GET /p HTTP/1.1\r\nHost: [::1]:8080\r\nX-B: caf\xe9\nX-C: 1\r\n\r\n";
        r.duration = Duration::from_micros(2000);
        let v: serde_json::Value = serde_json::from_str(&http_event(&r)).unwrap();
        let req = &v["object"]["http"]["request"];
        assert_eq!(req["url"]["host"], "[::1]");
        assert_eq!(req["headers"]["X-B"], json!(["caf\u{fffd}"]));
        assert_eq!(req["headers"]["X-C"], json!(["1"]));
        assert_eq!(v["object"]["http"]["duration_ms"], 2);
        r.duration = Duration::from_micros(1033);
        let v: serde_json::Value = serde_json::from_str(&http_event(&r)).unwrap();
        assert_eq!(v["object"]["http"]["duration_ms"], 1.033);
    }

    #[test]
    fn a_selection_writes_only_its_fields() {
        use crate::observe::fields::{Selection, HTTP_REQUEST_COMPLETE};
        let mut sel = Selection::none();
        let names: Vec<String> = [
            "http.response.status_code",
            "http.request.url.query",
            "ngrok_error_code",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        sel.add(HTTP_REQUEST_COMPLETE, Some(&names)).unwrap();
        let plans = Plans::new(&sel);
        assert!(plans.tcp.is_none());
        let mut o = Vec::new();
        let mut w = EventWriter::default();
        assert!(w.http(&mut o, &record(), SystemTime::UNIX_EPOCH, &plans));
        let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
        assert_eq!(
            v["object"],
            json!({"http": {"request": {"url": {"query": "y=1"}}, "response": {"status_code": 201}}, "ngrok_error_code": null})
        );
        assert_eq!(v["event_timestamp"], "1970-01-01T00:00:00.000Z");
        // No TCP plan: nothing written.
        let before = o.len();
        let t = crate::observe::record::tests::tcp();
        assert!(!w.tcp(&mut o, &t, SystemTime::UNIX_EPOCH, &plans));
        assert_eq!(o.len(), before);
    }
}
