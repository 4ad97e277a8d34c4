//! The agent API's JSON shapes (ngrok's local agent API): captured
//! requests, tunnels, endpoints, metrics.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::capture::{Capture, Fields, Message};

/// Header fields as ngrok shows them: name → list of values (the first
/// spelling seen of a name is kept).
pub fn headers(fields: &Fields) -> Value {
    let mut m: Map<String, Value> = Map::new();
    for (n, v) in fields {
        let key = m
            .keys()
            .find(|k| k.eq_ignore_ascii_case(n))
            .cloned()
            .unwrap_or_else(|| n.clone());
        match m.get_mut(&key) {
            Some(Value::Array(a)) => a.push(Value::String(v.clone())),
            _ => {
                m.insert(key, json!([v]));
            }
        }
    }
    Value::Object(m)
}

/// Our addition to ngrok's shape: the decoded body, for the page.
fn body(msg: &Message) -> Value {
    json!({
        "size": msg.body_size,
        "captured": msg.body.len(),
        "truncated": msg.truncated,
        "data": B64.encode(&msg.body),
    })
}

pub fn capture(c: &Capture) -> Value {
    let start = chrono::DateTime::<chrono::Local>::from(c.start)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let response = c.response.as_ref().map(|r| {
        json!({
            "status": r.status,
            "status_code": r.status_code,
            "proto": r.msg.proto,
            "headers": headers(&r.msg.headers),
            "raw": B64.encode(&r.msg.raw),
            "body": body(&r.msg),
        })
    });
    json!({
        "uri": format!("/api/requests/http/{}", c.id),
        "id": c.id,
        "tunnel_name": &*c.tunnel_name,
        "remote_addr": c.remote_addr,
        "start": start,
        "duration": c.duration.map_or(0, |d| d.as_nanos() as u64),
        "request": {
            "method": c.request.method,
            "proto": c.request.msg.proto,
            "headers": headers(&c.request.msg.headers),
            "uri": c.request.uri,
            "raw": B64.encode(&c.request.msg.raw),
            "body": body(&c.request.msg),
        },
        "response": response,
        "replay_of": c.replay_of,
    })
}

/// The few fields the page's list needs, sent on every live event (the
/// page fetches a whole capture when it shows one).
pub fn summary(c: &Capture) -> Value {
    json!({
        "id": c.id,
        "uri": format!("/api/requests/http/{}", c.id),
        "tunnel_name": &*c.tunnel_name,
        "duration": c.duration.map_or(0, |d| d.as_nanos() as u64),
        "request": {"method": c.request.method, "uri": c.request.uri},
        "response": c.response.as_ref().map(|r| json!({"status": r.status, "status_code": r.status_code})),
        "replay_of": c.replay_of,
    })
}

/// ngrok's metrics object for one kind (`conns` or `http`).
pub fn metric(
    count: u64,
    gauge: Option<u64>,
    hist: Option<&hdrhistogram::Histogram<u64>>,
) -> Value {
    let q = |p: f64| hist.map_or(0, |h| h.value_at_quantile(p));
    let mut v = json!({
        "count": count,
        "rate1": 0.0,
        "rate5": 0.0,
        "rate15": 0.0,
        "p50": q(0.5),
        "p90": q(0.9),
        "p95": q(0.95),
        "p99": q(0.99),
    });
    if let (Some(g), Value::Object(m)) = (gauge, &mut v) {
        m.insert("gauge".into(), json!(g));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_group_case_insensitively() {
        let f = vec![
            ("Set-Cookie".to_string(), "a".to_string()),
            ("set-cookie".to_string(), "b".to_string()),
            ("Host".to_string(), "h".to_string()),
        ];
        assert_eq!(
            headers(&f),
            json!({"Set-Cookie": ["a", "b"], "Host": ["h"]})
        );
    }
}
