//! The fields of the two event types (ngrok's names, spec §7) and which of
//! them a sink asked for, like the `fields` of an ngrok event source. A
//! selection is compiled once, at start, into a [`Plan`]: the JSON text
//! between the values (keys, braces, commas) and which value goes where,
//! so writing an event is one walk over the plan with no nesting logic
//! and no work for fields nobody asked for. Sans-IO; no state.

/// A value of `http_request_complete.v0` that ringress produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpField {
    ClientIp,
    ServerName,
    ServerPort,
    ConnStartTs,
    ReqBodyLength,
    ReqHeaders,
    Method,
    UrlHost,
    UrlPath,
    UrlQuery,
    UrlRaw,
    UrlScheme,
    UserAgent,
    ResBodyLength,
    ResHeaders,
    StatusCode,
    DurationMs,
    StartTs,
    Proto,
    EndpointUrl,
    NgrokErrorCode,
}

/// The produced fields in output order. Fields sharing a parent object
/// are next to each other (a plan opens each object once).
pub const HTTP_FIELDS: &[(&str, HttpField)] = &[
    ("conn.client_ip", HttpField::ClientIp),
    ("conn.server_name", HttpField::ServerName),
    ("conn.server_port", HttpField::ServerPort),
    ("conn.start_ts", HttpField::ConnStartTs),
    ("http.request.body_length", HttpField::ReqBodyLength),
    ("http.request.headers", HttpField::ReqHeaders),
    ("http.request.method", HttpField::Method),
    ("http.request.url.host", HttpField::UrlHost),
    ("http.request.url.path", HttpField::UrlPath),
    ("http.request.url.query", HttpField::UrlQuery),
    ("http.request.url.raw", HttpField::UrlRaw),
    ("http.request.url.scheme", HttpField::UrlScheme),
    ("http.request.user_agent", HttpField::UserAgent),
    ("http.response.body_length", HttpField::ResBodyLength),
    ("http.response.headers", HttpField::ResHeaders),
    ("http.response.status_code", HttpField::StatusCode),
    // ringress additions (not in ngrok's schema):
    ("http.duration_ms", HttpField::DurationMs),
    ("http.start_ts", HttpField::StartTs),
    ("http.proto", HttpField::Proto),
    ("endpoint.url", HttpField::EndpointUrl),
    ("ngrok_error_code", HttpField::NgrokErrorCode),
];

/// Fields of ngrok's `http_request_complete.v0` that ringress accepts in a
/// selection (so an ngrok field list carries over) but does not produce:
/// the modules they describe are not part of the edge, or the data is not
/// kept per request.
pub const HTTP_NOT_PRODUCED: &[&str] = &[
    "backend.connection_reused",
    "basic_auth.decision",
    "basic_auth.username",
    "circuit_breaker.decision",
    "compression.algorithm",
    "compression.bytes_saved",
    "conn.server_ip",
    "ip_policy.decision",
    "ja4_fingerprint",
    "oauth.app_client_id",
    "oauth.decision",
    "oauth.user.id",
    "oauth.user.name",
    "tls.cipher_suite",
    "tls.client_cert.serial_number",
    "tls.client_cert.subject.cn",
    "tls.version",
    "traffic_policy.logs",
    "webhook_verification.decision",
];

/// A value of `tcp_connection_closed.v0` that ringress produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpField {
    BytesIn,
    BytesOut,
    ClientIp,
    EndTs,
    ServerName,
    ServerPort,
    StartTs,
}

pub const TCP_FIELDS: &[(&str, TcpField)] = &[
    ("conn.bytes_in", TcpField::BytesIn),
    ("conn.bytes_out", TcpField::BytesOut),
    ("conn.client_ip", TcpField::ClientIp),
    ("conn.end_ts", TcpField::EndTs),
    ("conn.server_name", TcpField::ServerName),
    ("conn.server_port", TcpField::ServerPort),
    ("conn.start_ts", TcpField::StartTs),
];

pub const TCP_NOT_PRODUCED: &[&str] = &[
    "conn.server_ip",
    "ip_policy.decision",
    "ja4_fingerprint",
    "traffic_policy.logs",
];

pub const HTTP_REQUEST_COMPLETE: &str = "http_request_complete.v0";
pub const TCP_CONNECTION_CLOSED: &str = "tcp_connection_closed.v0";

/// What a sink gets of one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick<F> {
    /// Not this event type.
    None,
    /// Every field.
    All,
    /// These fields (a subset of the produced ones, in output order; may
    /// be empty when only not-produced fields were asked for).
    Some(Vec<F>),
}

/// What a sink gets: per event type, all fields, some, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub http: Pick<HttpField>,
    pub tcp: Pick<TcpField>,
}

impl Selection {
    /// Both event types, every field (a sink without `sources`).
    pub fn all() -> Self {
        Selection {
            http: Pick::All,
            tcp: Pick::All,
        }
    }

    /// Neither event type (the start of a `sources` list).
    pub fn none() -> Self {
        Selection {
            http: Pick::None,
            tcp: Pick::None,
        }
    }
}

/// Why a `sources` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "unknown event type {0:?} (known: http_request_complete.v0, tcp_connection_closed.v0)"
    )]
    UnknownType(String),
    #[error("event type {0} is listed twice")]
    Duplicate(String),
    #[error("{kind} has no field {name:?} (see docs/observability.md for the list)")]
    UnknownField { kind: &'static str, name: String },
    #[error(
        "fields of {0} is empty: list the fields to send, or leave `fields` out for all of them"
    )]
    Empty(&'static str),
}

fn pick<F: Copy + PartialEq>(
    kind: &'static str,
    names: Option<&[String]>,
    known: &[(&str, F)],
    not_produced: &[&str],
) -> Result<Pick<F>, SelectError> {
    let Some(names) = names else {
        return Ok(Pick::All);
    };
    if names.is_empty() {
        return Err(SelectError::Empty(kind));
    }
    for n in names {
        let n = n.as_str();
        if !known.iter().any(|(k, _)| *k == n) && !not_produced.contains(&n) {
            return Err(SelectError::UnknownField {
                kind,
                name: n.to_owned(),
            });
        }
    }
    // Output order, whatever the order asked in; duplicates collapse.
    Ok(Pick::Some(
        known
            .iter()
            .filter(|(k, _)| names.iter().any(|n| n == k))
            .map(|(_, f)| *f)
            .collect(),
    ))
}

/// Sets what a sink gets of one event type, once.
fn set<F: Copy + PartialEq>(
    slot: &mut Pick<F>,
    kind: &'static str,
    fields: Option<&[String]>,
    known: &[(&str, F)],
    not_produced: &[&str],
) -> Result<(), SelectError> {
    if *slot != Pick::None {
        return Err(SelectError::Duplicate(kind.to_owned()));
    }
    *slot = pick(kind, fields, known, not_produced)?;
    Ok(())
}

impl Selection {
    /// Adds one `sources` entry: `kind` an event type, `fields` its field
    /// names (`None`: all).
    pub fn add(&mut self, kind: &str, fields: Option<&[String]>) -> Result<(), SelectError> {
        match kind {
            HTTP_REQUEST_COMPLETE => set(
                &mut self.http,
                HTTP_REQUEST_COMPLETE,
                fields,
                HTTP_FIELDS,
                HTTP_NOT_PRODUCED,
            ),
            TCP_CONNECTION_CLOSED => set(
                &mut self.tcp,
                TCP_CONNECTION_CLOSED,
                fields,
                TCP_FIELDS,
                TCP_NOT_PRODUCED,
            ),
            _ => Err(SelectError::UnknownType(kind.to_owned())),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<F> {
    /// Literal JSON text (a range of [`Plan::text`]).
    Text(u32, u32),
    /// The value of a field.
    Value(F),
}

/// An event object's JSON as literal text and values, in order; written
/// between the envelope's `"object":` and its closing brace.
#[derive(Debug, Clone)]
pub struct Plan<F> {
    text: Vec<u8>,
    pub ops: Vec<Op<F>>,
}

impl<F: Copy + PartialEq> Plan<F> {
    /// The plan of `pick` (`None` for [`Pick::None`]).
    pub fn of(pick: &Pick<F>, known: &[(&'static str, F)]) -> Option<Plan<F>> {
        let fields: Vec<(&'static str, F)> = match pick {
            Pick::None => return None,
            Pick::All => known.to_vec(),
            Pick::Some(fs) => known
                .iter()
                .filter(|(_, f)| fs.contains(f))
                .copied()
                .collect(),
        };
        Some(Plan::build(&fields))
    }

    fn build(fields: &[(&'static str, F)]) -> Plan<F> {
        let mut text = vec![b'{'];
        let mut ops = Vec::new();
        let mut mark = 0usize;
        // The objects open below the event object, and whether each (the
        // event object first) has had a member yet.
        let mut open: Vec<&str> = Vec::new();
        let mut started = vec![false];
        let key = |text: &mut Vec<u8>, started: &mut Vec<bool>, k: &str| {
            if let Some(s) = started.last_mut() {
                if *s {
                    text.push(b',');
                }
                *s = true;
            }
            text.push(b'"');
            text.extend_from_slice(k.as_bytes());
            text.extend_from_slice(b"\":");
        };
        for (name, f) in fields {
            let mut segs: Vec<&str> = name.split('.').collect();
            let leaf = segs.pop().unwrap_or_default();
            let common = open.iter().zip(&segs).take_while(|(a, b)| a == b).count();
            while open.len() > common {
                open.pop();
                started.pop();
                text.push(b'}');
            }
            for seg in &segs[common..] {
                key(&mut text, &mut started, seg);
                text.push(b'{');
                open.push(seg);
                started.push(false);
            }
            key(&mut text, &mut started, leaf);
            ops.push(Op::Text(mark as u32, text.len() as u32));
            mark = text.len();
            ops.push(Op::Value(*f));
        }
        // The open objects and the event object.
        text.extend(std::iter::repeat_n(b'}', open.len() + 1));
        ops.push(Op::Text(mark as u32, text.len() as u32));
        ops.retain(|op| !matches!(op, Op::Text(a, b) if a == b));
        Plan { text, ops }
    }

    #[inline]
    pub fn text(&self, at: u32, end: u32) -> &[u8] {
        &self.text[at as usize..end as usize]
    }

    /// Whether the plan writes `f`.
    pub fn has(&self, f: F) -> bool {
        self.ops.contains(&Op::Value(f))
    }

    /// The values in order.
    pub fn values(&self) -> impl Iterator<Item = F> + '_ {
        self.ops.iter().filter_map(|op| match op {
            Op::Value(f) => Some(*f),
            Op::Text(..) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan's JSON with every value written as its field's index.
    fn render<F: Copy + PartialEq + std::fmt::Debug>(p: &Plan<F>) -> String {
        let mut out = Vec::new();
        for op in &p.ops {
            match op {
                Op::Text(a, b) => out.extend_from_slice(p.text(*a, *b)),
                Op::Value(f) => out.extend_from_slice(format!("\"{f:?}\"").as_bytes()),
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(v, &p, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn every_subset_of_fields_nests_as_its_names_say() {
        // All fields, each field alone, each pair in a window, and every
        // other one: the JSON parses and has exactly the asked names.
        let n = HTTP_FIELDS.len();
        let mut subsets: Vec<Vec<usize>> = vec![(0..n).collect()];
        subsets.extend((0..n).map(|i| vec![i]));
        subsets.extend((0..n - 1).map(|i| vec![i, i + 1]));
        subsets.extend((0..n).step_by(3).map(|i| (i..n).step_by(2).collect()));
        for s in subsets {
            let fields: Vec<_> = s.iter().map(|&i| HTTP_FIELDS[i]).collect();
            let plan = Plan::build(&fields);
            let json = render(&plan);
            let v: serde_json::Value =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let mut got = Vec::new();
            leaves(&v, "", &mut got);
            got.sort();
            let mut want: Vec<String> = fields.iter().map(|(k, _)| (*k).to_owned()).collect();
            want.sort();
            assert_eq!(got, want, "{json}");
        }
        let tcp = Plan::of(&Pick::All, TCP_FIELDS).unwrap();
        assert!(render(&tcp).starts_with("{\"conn\":{\"bytes_in\":"));
    }

    #[test]
    fn objects_are_contiguous_in_the_catalogue() {
        // A parent object's fields must not be split by another object's,
        // or a plan would open it twice.
        for cat in [
            HTTP_FIELDS.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            TCP_FIELDS.iter().map(|(k, _)| *k).collect(),
        ] {
            let parents: Vec<String> = cat
                .iter()
                .flat_map(|k| {
                    let segs: Vec<&str> = k.split('.').collect();
                    (1..segs.len()).map(move |i| segs[..i].join("."))
                })
                .collect();
            for p in &parents {
                let idx: Vec<usize> = cat
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.starts_with(&format!("{p}.")))
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(idx.last().unwrap() - idx[0] + 1, idx.len(), "{p} is split");
            }
        }
    }

    #[test]
    fn selections_are_checked_and_ordered() {
        let mut s = Selection::none();
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        s.add(
            HTTP_REQUEST_COMPLETE,
            Some(&names(&[
                "http.response.status_code",
                "conn.client_ip",
                "tls.version",
            ])),
        )
        .unwrap();
        assert_eq!(
            s.http,
            Pick::Some(vec![HttpField::ClientIp, HttpField::StatusCode])
        );
        assert_eq!(s.tcp, Pick::None);
        assert!(matches!(
            s.add(HTTP_REQUEST_COMPLETE, None),
            Err(SelectError::Duplicate(_))
        ));
        assert!(matches!(
            s.add("http_request_complete.v1", None),
            Err(SelectError::UnknownType(_))
        ));
        let e = s
            .add(
                TCP_CONNECTION_CLOSED,
                Some(&names(&["conn.bytes", "conn.bytes_in"])),
            )
            .unwrap_err();
        assert!(e.to_string().contains("\"conn.bytes\""), "{e}");
        assert!(matches!(
            Selection::none().add(TCP_CONNECTION_CLOSED, Some(&[])),
            Err(SelectError::Empty(_))
        ));
        s.add(TCP_CONNECTION_CLOSED, None).unwrap();
        assert_eq!(s.tcp, Pick::All);
        // Only not-produced fields: an event with an empty object.
        let mut t = Selection::none();
        t.add(HTTP_REQUEST_COMPLETE, Some(&names(&["ja4_fingerprint"])))
            .unwrap();
        let p = Plan::of(&t.http, HTTP_FIELDS).unwrap();
        assert_eq!(render(&p), "{}");
        assert!(Plan::of(&Pick::<HttpField>::None, HTTP_FIELDS).is_none());
    }
}
