//! Event JSON: `http_request_complete.v0` and `tcp_connection_closed.v0`
//! with ngrok's field names (spec §7), written on the drainer thread from
//! the records workers queued (straight into one string: no JSON tree).
//! Never runs on a worker.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use super::worker::{HttpRecord, TcpRecord};

pub const HTTP_REQUEST_COMPLETE: &str = "http_request_complete.v0";
pub const TCP_CONNECTION_CLOSED: &str = "tcp_connection_closed.v0";

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `ev_` + a random per-process prefix + a counter: unique, and cheap.
fn event_id(out: &mut String) {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| crate::tunnel::registry::random_hex(6));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let _ = write!(out, "\"ev_{prefix}{n:012x}\"");
}

/// A JSON string literal.
fn string(out: &mut String, s: &str) {
    string_with(out, s, |c, _| c);
}

/// A JSON string literal of `s` with each character mapped by `f` (which
/// also gets the previous character).
fn string_with(out: &mut String, s: &str, f: impl Fn(char, Option<char>) -> char) {
    out.push('"');
    let mut prev = None;
    for c in s.chars() {
        let mapped = f(c, prev);
        prev = Some(c);
        let c = mapped;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `"key":` (keys here are constants without escapes).
fn key(out: &mut String, k: &str) {
    out.push('"');
    out.push_str(k);
    out.push_str("\":");
}

/// The request line / status line and fields of a head, borrowed.
struct HeadRef<'a> {
    first: &'a str,
    second: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> HeadRef<'a> {
    fn parse(text: &'a str) -> HeadRef<'a> {
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default();
        let mut parts = line.splitn(3, ' ');
        let first = parts.next().unwrap_or_default();
        let second = parts.next().unwrap_or_default();
        let mut fields = Vec::with_capacity(16);
        for l in lines {
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                fields.push((n.trim(), v.trim()));
            }
        }
        HeadRef {
            first,
            second,
            fields,
        }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Header keys capitalised (`Content-Type`), values lowercased, as
/// ngrok's events have them; repeated fields become one list.
fn headers(out: &mut String, head: &HeadRef<'_>) {
    out.push('{');
    let mut first = true;
    for (i, (name, _)) in head.fields.iter().enumerate() {
        if head.fields[..i]
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        // Content-Type: upper case at the start and after '-'.
        string_with(out, name, |c, prev| match prev {
            None | Some('-') => c.to_ascii_uppercase(),
            _ => c.to_ascii_lowercase(),
        });
        out.push_str(":[");
        let mut first_v = true;
        for (_, v) in head.fields[i..]
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            if !first_v {
                out.push(',');
            }
            first_v = false;
            string_with(out, v, |c, _| c.to_ascii_lowercase());
        }
        out.push(']');
    }
    out.push('}');
}

fn envelope_start(out: &mut String, kind: &str) {
    out.push('{');
    key(out, "event_id");
    event_id(out);
    out.push(',');
    key(out, "event_type");
    string(out, kind);
    out.push(',');
    key(out, "event_timestamp");
    string(out, &rfc3339(SystemTime::now()));
    out.push(',');
    key(out, "object");
}

fn split_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        Some((h, _)) if h.ends_with(']') => h,
        _ => host,
    }
}

/// One `http_request_complete.v0` event, as a JSON line (no newline).
pub fn http_event(r: &HttpRecord) -> String {
    let req_text = String::from_utf8_lossy(&r.req_head);
    let res_text = String::from_utf8_lossy(&r.res_head);
    let req = HeadRef::parse(&req_text);
    let res = HeadRef::parse(&res_text);
    let target = req.second;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let raw_host = req.get("host").unwrap_or_default();
    let host = split_port(raw_host);
    let mut o = String::with_capacity(256 + r.req_head.len() + r.res_head.len());
    envelope_start(&mut o, HTTP_REQUEST_COMPLETE);
    o.push_str("{\"conn\":{");
    key(&mut o, "client_ip");
    string(&mut o, &r.client.ip().to_canonical().to_string());
    o.push(',');
    key(&mut o, "server_name");
    string(&mut o, host);
    let _ = write!(o, ",\"server_port\":{},", r.server_port);
    key(&mut o, "start_ts");
    string(&mut o, &rfc3339(r.conn_start));
    o.push_str("},\"http\":{\"request\":{");
    let _ = write!(o, "\"body_length\":{},", r.req_body_len);
    key(&mut o, "headers");
    headers(&mut o, &req);
    o.push(',');
    key(&mut o, "method");
    string(&mut o, &req.first.to_ascii_lowercase());
    o.push_str(",\"url\":{");
    key(&mut o, "host");
    string(&mut o, host);
    o.push(',');
    key(&mut o, "path");
    string(&mut o, path);
    o.push(',');
    key(&mut o, "query");
    string(&mut o, query);
    o.push(',');
    key(&mut o, "raw");
    string(&mut o, &format!("{}://{raw_host}{target}", r.scheme));
    o.push(',');
    key(&mut o, "scheme");
    string(&mut o, r.scheme);
    o.push_str("},");
    key(&mut o, "user_agent");
    string(&mut o, req.get("user-agent").unwrap_or_default());
    o.push_str("},\"response\":{");
    let _ = write!(o, "\"body_length\":{},", r.res_body_len);
    key(&mut o, "headers");
    headers(&mut o, &res);
    let _ = write!(o, ",\"status_code\":{}}},", r.status);
    // ringress additions (not in ngrok's schema):
    let _ = write!(o, "\"duration_ms\":{},", r.duration.as_secs_f64() * 1000.0);
    key(&mut o, "start_ts");
    string(&mut o, &rfc3339(r.start));
    o.push(',');
    key(&mut o, "proto");
    string(&mut o, r.proto);
    o.push_str("},\"endpoint\":{");
    key(&mut o, "url");
    string(&mut o, &r.endpoint);
    o.push_str("},");
    key(&mut o, "ngrok_error_code");
    match r.error_code {
        Some(c) => string(&mut o, c),
        None => o.push_str("null"),
    }
    o.push_str("}}");
    o
}

/// One `tcp_connection_closed.v0` event, as a JSON line (no newline).
pub fn tcp_event(r: &TcpRecord) -> String {
    let mut o = String::with_capacity(384);
    envelope_start(&mut o, TCP_CONNECTION_CLOSED);
    let _ = write!(
        o,
        "{{\"conn\":{{\"bytes_in\":{},\"bytes_out\":{},",
        r.bytes_in, r.bytes_out
    );
    key(&mut o, "client_ip");
    string(&mut o, &r.client.ip().to_canonical().to_string());
    o.push(',');
    key(&mut o, "end_ts");
    string(&mut o, &rfc3339(r.end));
    o.push(',');
    key(&mut o, "server_name");
    string(&mut o, &r.server_name);
    let _ = write!(o, ",\"server_port\":{},", r.server_port);
    key(&mut o, "start_ts");
    string(&mut o, &rfc3339(r.start));
    o.push_str("}}}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::config::CaptureMode;
    use serde_json::json;
    use std::time::Duration;

    fn record() -> HttpRecord {
        HttpRecord {
            endpoint: "http://app.example.com".into(),
            scheme: "http",
            proto: "HTTP/1.1",
            client: "127.0.0.1:5000".parse().unwrap(),
            server_port: 80,
            conn_start: SystemTime::UNIX_EPOCH,
            start: SystemTime::UNIX_EPOCH,
            duration: Duration::from_micros(1500),
            status: 201,
            req_head: b"POST /x?y=1 HTTP/1.1\r\nHost: app.example.com:8080\r\nUser-Agent: Curl/8\r\nX-A: 1\r\nX-A: 2\r\n\r\n".to_vec(),
            res_head: b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n".to_vec(),
            req_body_len: 3,
            res_body_len: 2,
            error_code: None,
            capture: CaptureMode::Off,
            events: true,
            req_body: vec![],
            res_body: vec![],
            req_body_truncated: false,
            res_body_truncated: false,
        }
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
        r.req_head = b"GET /a\"b\\c\x01 HTTP/1.1\r\nHost: x\r\nX-Q: \"q\"\r\n\r\n".to_vec();
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
        let t = TcpRecord {
            client: "[::1]:9".parse().unwrap(),
            server_port: 443,
            server_name: "a.test".into(),
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            bytes_in: 10,
            bytes_out: 20,
        };
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
}
