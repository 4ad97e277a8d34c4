//! Event JSON: `http_request_complete.v0` and `tcp_connection_closed.v0`
//! with ngrok's field names (spec §7), built on the drainer thread from
//! the records workers queued. Never runs on a worker.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::head::{canonical_name, Head};
use super::worker::{HttpRecord, TcpRecord};

pub const HTTP_REQUEST_COMPLETE: &str = "http_request_complete.v0";
pub const TCP_CONNECTION_CLOSED: &str = "tcp_connection_closed.v0";

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn envelope(kind: &str, object: Value) -> Value {
    json!({
        "event_id": format!("ev_{}", crate::tunnel::registry::random_hex(12)),
        "event_type": kind,
        "event_timestamp": rfc3339(SystemTime::now()),
        "object": object,
    })
}

/// Header keys capitalised, values lowercased (as ngrok's events do);
/// repeated fields become lists.
fn headers(head: &Head) -> Value {
    let mut m = Map::new();
    for (n, v) in &head.fields {
        let entry = m
            .entry(canonical_name(n))
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(v.to_ascii_lowercase()));
        }
    }
    Value::Object(m)
}

fn split_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        Some((h, _)) if h.ends_with(']') => h,
        _ => host,
    }
}

/// One `http_request_complete.v0` event.
pub fn http_event(r: &HttpRecord) -> Value {
    let req = Head::parse(&r.req_head);
    let res = Head::parse(&r.res_head);
    let target = req.second.as_str();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let host = req.get("host").map(split_port).unwrap_or_default();
    let raw = format!(
        "{}://{}{}",
        r.scheme,
        req.get("host").unwrap_or_default(),
        target
    );
    let object = json!({
        "conn": {
            "client_ip": r.client.ip().to_canonical().to_string(),
            "server_name": host,
            "server_port": r.server_port,
            "start_ts": rfc3339(r.conn_start),
        },
        "http": {
            "request": {
                "body_length": r.req_body_len,
                "headers": headers(&req),
                "method": req.first.to_ascii_lowercase(),
                "url": {
                    "host": host,
                    "path": path,
                    "query": query,
                    "raw": raw,
                    "scheme": r.scheme,
                },
                "user_agent": req.get("user-agent").unwrap_or_default(),
            },
            "response": {
                "body_length": r.res_body_len,
                "headers": headers(&res),
                "status_code": r.status,
            },
            // ringress additions (not in ngrok's schema):
            "duration_ms": r.duration.as_secs_f64() * 1000.0,
            "start_ts": rfc3339(r.start),
            "proto": r.proto,
        },
        "endpoint": { "url": r.endpoint },
        "ngrok_error_code": r.error_code,
    });
    envelope(HTTP_REQUEST_COMPLETE, object)
}

/// One `tcp_connection_closed.v0` event.
pub fn tcp_event(r: &TcpRecord) -> Value {
    let object = json!({
        "conn": {
            "bytes_in": r.bytes_in,
            "bytes_out": r.bytes_out,
            "client_ip": r.client.ip().to_canonical().to_string(),
            "end_ts": rfc3339(r.end),
            "server_name": r.server_name,
            "server_port": r.server_port,
            "start_ts": rfc3339(r.start),
        }
    });
    envelope(TCP_CONNECTION_CLOSED, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::config::CaptureMode;
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
        let v = http_event(&record());
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
    }
}
