//! Prometheus text exposition (format 0.0.4) of the workers' published
//! counters, merged at scrape time: counters summed, hdrhistograms added.
//! Runs on the API's thread; never on a worker.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::worker::{new_histogram, EndpointStats, WorkerStats};

/// Latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const LISTENERS: [&str; 3] = ["http", "https", "tunnel"];

/// Counters kept off the workers (drainer and sinks).
#[derive(Debug, Default, Clone)]
pub struct HubCounters {
    /// (sink name, written, dropped)
    pub sinks: Vec<(String, u64, u64)>,
    pub captures: u64,
    pub events_emitted: u64,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders everything.
pub fn render<'a>(workers: impl Iterator<Item = &'a WorkerStats>, hub: &HubCounters) -> String {
    let mut eps: BTreeMap<&str, EndpointStats> = BTreeMap::new();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut tls_ok, mut tls_failed, mut accepted) = ([0u64; 3], [0u64; 3], [0u64; 3]);
    let (mut dropped, mut queued, mut active, mut sessions) = (0u64, 0u64, 0u64, 0u64);
    for w in workers {
        for (url, s) in &w.endpoints {
            let e = eps.entry(url.as_str()).or_insert_with(|| EndpointStats {
                classes: [0; 6],
                bytes_in: 0,
                bytes_out: 0,
                latency: new_histogram(),
                latency_sum_us: 0,
            });
            for (a, b) in e.classes.iter_mut().zip(s.classes) {
                *a += b;
            }
            e.bytes_in += s.bytes_in;
            e.bytes_out += s.bytes_out;
            let _ = e.latency.add(&s.latency);
            e.latency_sum_us += s.latency_sum_us;
        }
        for (code, n) in &w.errors {
            *errors.entry(code).or_insert(0) += n;
        }
        for i in 0..3 {
            tls_ok[i] += w.tls_ok[i];
            tls_failed[i] += w.tls_failed[i];
            accepted[i] += w.accepted[i];
        }
        dropped += w.events_dropped;
        queued += w.events_queued;
        active += w.active_connections;
        sessions += w.agent_sessions;
    }

    let mut out = String::with_capacity(4096 + eps.len() * 2048);
    header(&mut out, "ringress_http_requests_total", "counter", "HTTP requests answered, by endpoint URL and status class (\"none\": no response was sent).");
    const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];
    for (url, e) in &eps {
        for (i, n) in e.classes.iter().enumerate() {
            if *n > 0 || i == 2 {
                let _ = writeln!(
                    out,
                    "ringress_http_requests_total{{endpoint=\"{}\",status_class=\"{}\"}} {n}",
                    label(url),
                    CLASSES[i]
                );
            }
        }
    }
    header(
        &mut out,
        "ringress_http_request_bytes_total",
        "counter",
        "Bytes received from clients in requests (heads and bodies), by endpoint.",
    );
    for (url, e) in &eps {
        let _ = writeln!(
            out,
            "ringress_http_request_bytes_total{{endpoint=\"{}\"}} {}",
            label(url),
            e.bytes_in
        );
    }
    header(
        &mut out,
        "ringress_http_response_bytes_total",
        "counter",
        "Bytes sent to clients in responses (heads and bodies), by endpoint.",
    );
    for (url, e) in &eps {
        let _ = writeln!(
            out,
            "ringress_http_response_bytes_total{{endpoint=\"{}\"}} {}",
            label(url),
            e.bytes_out
        );
    }
    header(
        &mut out,
        "ringress_http_request_duration_seconds",
        "histogram",
        "From the complete request head to the end of the response, by endpoint.",
    );
    for (url, e) in &eps {
        let l = label(url);
        for b in BUCKETS {
            let le_us = (b * 1e6) as u64;
            let n = e.latency.count_between(0, le_us);
            let _ = writeln!(
                out,
                "ringress_http_request_duration_seconds_bucket{{endpoint=\"{l}\",le=\"{b}\"}} {n}"
            );
        }
        let count = e.latency.len();
        let _ = writeln!(
            out,
            "ringress_http_request_duration_seconds_bucket{{endpoint=\"{l}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "ringress_http_request_duration_seconds_sum{{endpoint=\"{l}\"}} {}",
            e.latency_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "ringress_http_request_duration_seconds_count{{endpoint=\"{l}\"}} {count}"
        );
    }
    header(&mut out, "ringress_edge_errors_total", "counter", "Error replies made by the edge, by ngrok error code (upstream, agent and policy failures).");
    for (code, n) in &errors {
        let _ = writeln!(
            out,
            "ringress_edge_errors_total{{code=\"{}\"}} {n}",
            label(code)
        );
    }
    header(
        &mut out,
        "ringress_connections_accepted_total",
        "counter",
        "Client and agent connections accepted, by listener.",
    );
    for (i, l) in LISTENERS.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringress_connections_accepted_total{{listener=\"{l}\"}} {}",
            accepted[i]
        );
    }
    header(
        &mut out,
        "ringress_tls_handshakes_total",
        "counter",
        "TLS handshakes, by listener and result.",
    );
    for (i, l) in LISTENERS.iter().enumerate().skip(1) {
        let _ = writeln!(
            out,
            "ringress_tls_handshakes_total{{listener=\"{l}\",result=\"ok\"}} {}",
            tls_ok[i]
        );
        let _ = writeln!(
            out,
            "ringress_tls_handshakes_total{{listener=\"{l}\",result=\"failed\"}} {}",
            tls_failed[i]
        );
    }
    header(
        &mut out,
        "ringress_active_connections",
        "gauge",
        "Open connections (clients and agents), over all workers.",
    );
    let _ = writeln!(out, "ringress_active_connections {active}");
    header(
        &mut out,
        "ringress_agent_sessions",
        "gauge",
        "Agent sessions held by the workers.",
    );
    let _ = writeln!(out, "ringress_agent_sessions {sessions}");
    header(
        &mut out,
        "ringress_events_queued_total",
        "counter",
        "Event and capture records workers handed to the drainer.",
    );
    let _ = writeln!(out, "ringress_events_queued_total {queued}");
    header(
        &mut out,
        "ringress_events_dropped_total",
        "counter",
        "Events dropped because a queue was full, by stage (worker queue, or a sink).",
    );
    let _ = writeln!(
        out,
        "ringress_events_dropped_total{{stage=\"worker\"}} {dropped}"
    );
    for (name, _, d) in &hub.sinks {
        let _ = writeln!(
            out,
            "ringress_events_dropped_total{{stage=\"sink\",sink=\"{}\"}} {d}",
            label(name)
        );
    }
    header(
        &mut out,
        "ringress_events_written_total",
        "counter",
        "Events a sink wrote, by sink.",
    );
    for (name, w, _) in &hub.sinks {
        let _ = writeln!(
            out,
            "ringress_events_written_total{{sink=\"{}\"}} {w}",
            label(name)
        );
    }
    header(
        &mut out,
        "ringress_inspector_captures",
        "gauge",
        "Exchanges held by the traffic inspector.",
    );
    let _ = writeln!(out, "ringress_inspector_captures {}", hub.captures);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_workers() {
        let mut a = WorkerStats::default();
        let mut e = EndpointStats {
            classes: [0, 0, 3, 0, 1, 0],
            bytes_in: 10,
            bytes_out: 20,
            latency: new_histogram(),
            latency_sum_us: 3000,
        };
        for _ in 0..4 {
            e.latency.record(750).unwrap();
        }
        a.endpoints.push(("http://a\"b".into(), e.clone()));
        let mut b = WorkerStats::default();
        b.endpoints.push(("http://a\"b".into(), e));
        b.errors.insert("ERR_NGROK_3004", 2);
        let text = render([&a, &b].into_iter(), &HubCounters::default());
        assert!(
            text.contains(
                "ringress_http_requests_total{endpoint=\"http://a\\\"b\",status_class=\"2xx\"} 6"
            ),
            "{text}"
        );
        assert!(text.contains("status_class=\"4xx\"} 2"));
        assert!(text.contains("le=\"0.0005\"} 0"));
        assert!(text.contains("le=\"0.001\"} 8"));
        assert!(text.contains(
            "ringress_http_request_duration_seconds_count{endpoint=\"http://a\\\"b\"} 8"
        ));
        assert!(text.contains("ringress_edge_errors_total{code=\"ERR_NGROK_3004\"} 2"));
    }
}
