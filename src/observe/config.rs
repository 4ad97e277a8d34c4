//! `[observe]` in the edge TOML and the per-endpoint overrides
//! (`inspect`, `events` on `[[endpoints]]`): file shapes, defaults and
//! validation. Owns no state; never touches the network or files.

use std::path::PathBuf;

use serde::Deserialize;

use super::fields::{Pick, Selection};
use crate::config::ConfigError;

/// What the inspector keeps of an endpoint's exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Nothing.
    Off,
    /// Heads (method, URL, status, headers, sizes, timing); no bodies.
    #[default]
    Metadata,
    /// Heads and bodies, each body up to `body_cap` bytes.
    Full,
}

/// An endpoint's own settings; `None` takes `[observe]`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointObserve {
    pub inspect: Option<CaptureMode>,
    pub events: Option<bool>,
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// JSON lines, rotated at `max_bytes`, keeping `keep` old files
    /// (`path.1` the newest).
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: usize,
    },
    /// Batches POSTed as a JSON array (`http://` only).
    Http {
        url: String,
        batch: usize,
        flush_ms: u64,
    },
    /// JSON lines on standard output.
    Stdout,
}

/// A sink and what it gets (`sources`, like an ngrok event
/// subscription's: per event type, the fields; without them, everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    pub to: SinkConfig,
    pub select: Selection,
}

/// `[observe]`, validated. Fixed at start (a reload keeps the running
/// one); the per-endpoint overrides reload with the endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Prometheus counters and histograms (served at `/metrics`).
    pub metrics: bool,
    /// Endpoints without `inspect` capture this.
    pub inspect: CaptureMode,
    /// Bytes kept per body in `full` mode.
    pub body_cap: usize,
    /// Exchanges kept per endpoint.
    pub ring: usize,
    /// Endpoints without `events` emit events when sinks exist.
    pub events: bool,
    pub sinks: Vec<SinkSpec>,
    /// Events each worker may have waiting for the drainer (then they
    /// are dropped and counted).
    pub queue: usize,
    /// A listener of its own for `/metrics` and the inspector (besides
    /// the API listener), e.g. a private scrape port.
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer tokens `listen` accepts; empty: no authentication (then it
    /// must be a loopback address).
    pub api_keys: Vec<String>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            metrics: true,
            inspect: CaptureMode::Metadata,
            body_cap: 10 * 1024,
            ring: 500,
            events: true,
            sinks: Vec::new(),
            queue: 8192,
            listen: None,
            api_keys: Vec::new(),
        }
    }
}

impl ObserveConfig {
    /// Everything off: no metrics, no capture, no events.
    pub fn off() -> Self {
        ObserveConfig {
            metrics: false,
            inspect: CaptureMode::Off,
            events: false,
            ..ObserveConfig::default()
        }
    }

    /// Whether events are emitted at all.
    pub fn events_on(&self) -> bool {
        self.events_possible() && self.events
    }

    /// Whether some endpoint could emit events (a sink takes some).
    pub fn events_possible(&self) -> bool {
        self.http_sinks() || self.tcp_sinks()
    }

    /// Whether some sink takes `http_request_complete.v0` events.
    pub fn http_sinks(&self) -> bool {
        self.sinks.iter().any(|s| s.select.http != Pick::None)
    }

    /// Whether some sink takes `tcp_connection_closed.v0` events.
    pub fn tcp_sinks(&self) -> bool {
        self.sinks.iter().any(|s| s.select.tcp != Pick::None)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObserve {
    metrics: Option<bool>,
    inspect: Option<CaptureMode>,
    inspect_body_cap: Option<usize>,
    inspect_ring: Option<usize>,
    events: Option<bool>,
    events_queue: Option<usize>,
    #[serde(default)]
    sinks: Vec<FileSink>,
    listen: Option<String>,
    #[serde(default)]
    api_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
enum FileSink {
    File {
        path: PathBuf,
        max_bytes: Option<u64>,
        keep: Option<usize>,
        sources: Option<Vec<FileSource>>,
    },
    Http {
        url: String,
        batch: Option<usize>,
        flush_ms: Option<u64>,
        sources: Option<Vec<FileSource>>,
    },
    Stdout {
        sources: Option<Vec<FileSource>>,
    },
}

/// `[[observe.sinks.sources]]`: an event type and, optionally, its fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    #[serde(rename = "type")]
    kind: String,
    fields: Option<Vec<String>>,
}

fn selection(sources: Option<Vec<FileSource>>) -> Result<Selection, ConfigError> {
    let Some(sources) = sources else {
        return Ok(Selection::all());
    };
    let mut sel = Selection::none();
    for s in &sources {
        sel.add(&s.kind, s.fields.as_deref())
            .map_err(|e| field("observe.sinks.sources", e.to_string()))?;
    }
    Ok(sel)
}

fn field(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: name.into(),
        reason: reason.into(),
    }
}

/// Validates `[observe]`.
pub fn validate(file: Option<FileObserve>) -> Result<ObserveConfig, ConfigError> {
    let d = ObserveConfig::default();
    let Some(f) = file else {
        return Ok(d);
    };
    let nonzero = |name: &str, v: Option<usize>, def: usize| match v {
        Some(0) => Err(field(name, "must be greater than zero")),
        Some(n) => Ok(n),
        None => Ok(def),
    };
    let mut sinks = Vec::with_capacity(f.sinks.len());
    for s in f.sinks {
        let (to, sources) = match s {
            FileSink::File {
                path,
                max_bytes,
                keep,
                sources,
            } => {
                if path.as_os_str().is_empty() {
                    return Err(field("observe.sinks.path", "cannot be empty"));
                }
                let max_bytes = max_bytes.unwrap_or(100 * 1024 * 1024);
                if max_bytes < 4096 {
                    return Err(field("observe.sinks.max_bytes", "at least 4096"));
                }
                (
                    SinkConfig::File {
                        path,
                        max_bytes,
                        keep: keep.unwrap_or(5),
                    },
                    sources,
                )
            }
            FileSink::Http {
                url,
                batch,
                flush_ms,
                sources,
            } => {
                if crate::observe::sink::parse_http_url(&url).is_none() {
                    return Err(field(
                        "observe.sinks.url",
                        format!("{url:?} is not an http://host:port/path URL (https is not supported yet)"),
                    ));
                }
                (
                    SinkConfig::Http {
                        url,
                        batch: nonzero("observe.sinks.batch", batch, 500)?,
                        flush_ms: flush_ms.unwrap_or(1000).max(1),
                    },
                    sources,
                )
            }
            FileSink::Stdout { sources } => (SinkConfig::Stdout, sources),
        };
        sinks.push(SinkSpec {
            to,
            select: selection(sources)?,
        });
    }
    let listen = match &f.listen {
        Some(a) => {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                field(
                    "observe.listen",
                    format!("{a:?} is not an address like 127.0.0.1:9100"),
                )
            })?;
            if f.api_keys.is_empty() && !addr.ip().is_loopback() {
                return Err(field(
                    "observe.listen",
                    "a non-loopback address needs observe.api_keys",
                ));
            }
            Some(addr)
        }
        None => None,
    };
    if f.api_keys.iter().any(|k| k.len() < 16) {
        return Err(field(
            "observe.api_keys",
            "each key needs at least 16 characters",
        ));
    }
    Ok(ObserveConfig {
        listen,
        api_keys: f.api_keys,
        metrics: f.metrics.unwrap_or(d.metrics),
        inspect: f.inspect.unwrap_or(d.inspect),
        body_cap: f.inspect_body_cap.unwrap_or(d.body_cap),
        ring: nonzero("observe.inspect_ring", f.inspect_ring, d.ring)?,
        events: f.events.unwrap_or(d.events),
        sinks,
        queue: nonzero("observe.events_queue", f.events_queue, d.queue)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ObserveConfig, ConfigError> {
        let f: FileObserve = toml::from_str(text).map_err(ConfigError::Toml)?;
        validate(Some(f))
    }

    #[test]
    fn defaults_without_a_section() {
        let c = validate(None).unwrap();
        assert!(c.metrics);
        assert_eq!(c.inspect, CaptureMode::Metadata);
        assert!(!c.events_on(), "no sinks, no events");
    }

    #[test]
    fn sinks_and_modes() {
        let c = parse(
            r#"
metrics = false
inspect = "full"
inspect_body_cap = 100
[[sinks]]
type = "file"
path = "/tmp/x.jsonl"
[[sinks]]
type = "http"
url = "http://127.0.0.1:9/ingest"
[[sinks]]
type = "stdout"
"#,
        )
        .unwrap();
        assert!(!c.metrics);
        assert_eq!(c.inspect, CaptureMode::Full);
        assert_eq!(c.body_cap, 100);
        assert_eq!(c.sinks.len(), 3);
        assert!(c.sinks.iter().all(|s| s.select == Selection::all()));
        assert!(c.events_on());
    }

    #[test]
    fn sources_pick_types_and_fields() {
        use crate::observe::fields::HttpField;
        let c = parse(
            r#"
[[sinks]]
type = "file"
path = "/tmp/x.jsonl"
[[sinks.sources]]
type = "http_request_complete.v0"
fields = ["http.response.status_code", "conn.client_ip"]
[[sinks]]
type = "stdout"
[[sinks.sources]]
type = "tcp_connection_closed.v0"
"#,
        )
        .unwrap();
        assert_eq!(
            c.sinks[0].select.http,
            Pick::Some(vec![HttpField::ClientIp, HttpField::StatusCode])
        );
        assert_eq!(c.sinks[0].select.tcp, Pick::None);
        assert_eq!(c.sinks[1].select.http, Pick::None);
        assert_eq!(c.sinks[1].select.tcp, Pick::All);
        assert!(c.http_sinks() && c.tcp_sinks());
        // Only TCP events wanted: workers queue no HTTP records for events.
        let t = parse(
            "[[sinks]]\ntype = \"stdout\"\n[[sinks.sources]]\ntype = \"tcp_connection_closed.v0\"\n",
        )
        .unwrap();
        assert!(!t.http_sinks() && t.tcp_sinks() && t.events_on());
    }

    #[test]
    fn bad_input_is_named() {
        for (text, needle) in [
            ("inspect = \"everything\"", "unknown variant"),
            (
                "[[sinks]]\ntype = \"http\"\nurl = \"https://x/\"",
                "observe.sinks.url",
            ),
            ("[[sinks]]\ntype = \"kafka\"", "unknown variant"),
            (
                "[[sinks]]\ntype = \"file\"\npath = \"/tmp/a\"\nmax_bytes = 10",
                "4096",
            ),
            ("events_queue = 0", "greater than zero"),
            ("colour = 1", "unknown field"),
            ("listen = \"nowhere\"", "observe.listen"),
            ("listen = \"0.0.0.0:9100\"", "needs observe.api_keys"),
            ("api_keys = [\"short\"]", "16 characters"),
            (
                "[[sinks]]\ntype = \"stdout\"\n[[sinks.sources]]\ntype = \"http_request_complete.v1\"",
                "unknown event type",
            ),
            (
                "[[sinks]]\ntype = \"stdout\"\n[[sinks.sources]]\ntype = \"http_request_complete.v0\"\nfields = [\"http.request.colour\"]",
                "no field \"http.request.colour\"",
            ),
            (
                "[[sinks]]\ntype = \"stdout\"\n[[sinks.sources]]\ntype = \"tcp_connection_closed.v0\"\nfields = []",
                "is empty",
            ),
            (
                "[[sinks]]\ntype = \"stdout\"\n[[sinks.sources]]\ntype = \"tcp_connection_closed.v0\"\nfilter = \"true\"",
                "unknown field",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
