//! The JSON messages of ngrok's agent protocol (spec §5), with their exact
//! wire keys, and the two framing helpers around them: the 4-byte stream
//! type and an incremental reader for one JSON value.
//!
//! Keys arrive in whatever case the SDK uses (`AuthToken` from Rust,
//! `Authtoken` from Go): the real server matches keys case-insensitively,
//! so [`canonicalize`] rewrites every key we know into its canonical
//! spelling before serde sees it, and unknown keys are ignored. `Opts` of a
//! Bind is kept verbatim, because BindResp must echo it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// Stream types (first 4 bytes of a typed stream, big-endian).
pub mod stream_type {
    pub const AUTH: u32 = 0;
    pub const BIND: u32 = 1;
    pub const UNBIND: u32 = 2;
    pub const PROXY: u32 = 3;
    pub const RESTART: u32 = 4;
    pub const STOP: u32 = 5;
    pub const UPDATE: u32 = 6;
    pub const START_TUNNEL_WITH_LABEL: u32 = 7;
    pub const SRV_INFO: u32 = 8;
    pub const STOP_TUNNEL: u32 = 9;
    pub const PATCH_TUNNEL_STATE: u32 = 10;
    pub const HEARTBEAT: u32 = 0xFFFF_FFFF;
}

/// The largest JSON message accepted on an RPC stream. A Bind carries its
/// traffic policy as a string, so this is generous; anything larger ends
/// the session.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// Every key of the protocol's messages we read, in canonical spelling.
/// Matching is by lowercase, so `Authtoken`, `authtoken` and `AuthToken`
/// all become `AuthToken`.
const KNOWN_KEYS: &[&str] = &[
    "Version",
    "ClientId",
    "Extra",
    "OS",
    "Arch",
    "AuthToken",
    "Hostname",
    "UserAgent",
    "Metadata",
    "Cookie",
    "HeartbeatInterval",
    "HeartbeatTolerance",
    "ClientType",
    "Error",
    "Id",
    "Proto",
    "ForwardsTo",
    "ForwardsProto",
    "Opts",
    "Token",
    "IPPolicyRef",
    "Bindings",
    "PoolingEnabled",
    "Name",
    "Description",
    "URL",
    "Domain",
    "Subdomain",
    "TrafficPolicy",
    "Labels",
    "RingressGroup",
];

fn canonical_key(key: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(key))
        .copied()
}

/// Rewrites the known keys of every object in `v` (recursively) into their
/// canonical spelling. When two spellings of one key are present, the
/// first one in the document wins.
pub fn canonicalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let needs = map.keys().any(|k| canonical_key(k).is_some_and(|c| c != k));
            if needs {
                let old = std::mem::take(map);
                let mut out = Map::with_capacity(old.len());
                for (k, val) in old {
                    let key = canonical_key(&k).map(str::to_owned).unwrap_or(k);
                    out.entry(key).or_insert(val);
                }
                *map = out;
            }
            for val in map.values_mut() {
                canonicalize(val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonicalize),
        _ => {}
    }
}

/// Decodes one message, with case-insensitive keys.
pub fn decode<T: for<'de> Deserialize<'de>>(mut v: Value) -> Result<T, MessageError> {
    canonicalize(&mut v);
    serde_json::from_value(v).map_err(|e| MessageError::Json(e.to_string()))
}

/// Tries to take one complete JSON value from the front of `buf`.
/// `Ok(None)`: more bytes are needed. The SDKs do not half-close after a
/// request, so a value must be recognised without waiting for EOF.
pub fn take_value(buf: &[u8]) -> Result<Option<(Value, usize)>, MessageError> {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match it.next() {
        None => {
            if buf.len() > MAX_MESSAGE_BYTES {
                Err(MessageError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Some(Ok(v)) => Ok(Some((v, it.byte_offset()))),
        Some(Err(e)) if e.is_eof() => {
            if buf.len() > MAX_MESSAGE_BYTES {
                Err(MessageError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Some(Err(e)) => Err(MessageError::Json(e.to_string())),
    }
}

// ---- Auth (type 0) ------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Auth {
    #[serde(rename = "Version")]
    pub version: Vec<String>,
    #[serde(rename = "ClientId")]
    pub client_id: String,
    #[serde(rename = "Extra")]
    pub extra: AuthExtra,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthExtra {
    #[serde(rename = "OS")]
    pub os: String,
    #[serde(rename = "Arch")]
    pub arch: String,
    #[serde(rename = "AuthToken")]
    pub auth_token: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Hostname")]
    pub hostname: String,
    #[serde(rename = "UserAgent")]
    pub user_agent: String,
    #[serde(rename = "Metadata")]
    pub metadata: String,
    #[serde(rename = "Cookie")]
    pub cookie: String,
    /// Nanoseconds.
    #[serde(rename = "HeartbeatInterval")]
    pub heartbeat_interval: i64,
    /// Nanoseconds.
    #[serde(rename = "HeartbeatTolerance")]
    pub heartbeat_tolerance: i64,
    #[serde(rename = "ClientType")]
    pub client_type: String,
    /// ringress extension: sessions of one ringress agent share a group, so
    /// their binds of one URL form a single binder (one session per edge
    /// worker). Other SDKs never send it.
    #[serde(rename = "RingressGroup", skip_serializing_if = "String::is_empty")]
    pub ringress_group: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthResp {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "ClientId")]
    pub client_id: String,
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Extra")]
    pub extra: AuthRespExtra,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthRespExtra {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Region")]
    pub region: String,
    #[serde(rename = "Cookie")]
    pub cookie: String,
    #[serde(rename = "AccountName")]
    pub account_name: String,
    #[serde(rename = "PlanName")]
    pub plan_name: String,
    #[serde(rename = "Banner")]
    pub banner: String,
    #[serde(rename = "SessionDuration")]
    pub session_duration: i64,
    #[serde(rename = "AgentSessionID")]
    pub agent_session_id: String,
    /// ringress extension: how many workers the edge runs and which one
    /// holds this session.
    #[serde(rename = "RingressWorkers")]
    pub ringress_workers: usize,
    #[serde(rename = "RingressWorker")]
    pub ringress_worker: usize,
}

// ---- Bind (type 1) ------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Bind {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Proto")]
    pub proto: String,
    #[serde(rename = "ForwardsTo")]
    pub forwards_to: String,
    #[serde(rename = "ForwardsProto")]
    pub forwards_proto: String,
    /// Kept as sent, for the echo in BindResp.
    #[serde(rename = "Opts")]
    pub opts: Value,
    #[serde(rename = "Extra")]
    pub extra: BindExtra,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BindExtra {
    #[serde(rename = "Token")]
    pub token: String,
    #[serde(rename = "IPPolicyRef")]
    pub ip_policy_ref: String,
    #[serde(rename = "Metadata")]
    pub metadata: String,
    #[serde(rename = "Bindings", deserialize_with = "null_as_default")]
    pub bindings: Vec<String>,
    #[serde(rename = "PoolingEnabled")]
    pub pooling_enabled: bool,
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Description", skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The parts of HTTP endpoint `Opts` the edge reads (after
/// canonicalization; everything else stays in the raw value).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpOpts {
    #[serde(rename = "URL", deserialize_with = "null_as_default")]
    pub url: String,
    #[serde(rename = "Domain", deserialize_with = "null_as_default")]
    pub domain: String,
    #[serde(rename = "Hostname", deserialize_with = "null_as_default")]
    pub hostname: String,
    #[serde(rename = "Subdomain", deserialize_with = "null_as_default")]
    pub subdomain: String,
    #[serde(rename = "TrafficPolicy", deserialize_with = "null_as_default")]
    pub traffic_policy: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BindResp {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "Proto")]
    pub proto: String,
    #[serde(rename = "Opts")]
    pub opts: Value,
    #[serde(rename = "Extra")]
    pub extra: BindRespExtra,
    #[serde(rename = "Error")]
    pub error: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BindRespExtra {
    #[serde(rename = "Token")]
    pub token: String,
    #[serde(rename = "TunnelID")]
    pub tunnel_id: String,
}

// ---- Unbind (type 2) ----------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Unbind {
    #[serde(rename = "Id")]
    pub id: String,
}

/// The reply to Unbind, labels, SrvInfo and commands: `{"Error":""}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ErrorResp {
    #[serde(rename = "Error")]
    pub error: String,
}

/// StartTunnelWithLabel reply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LabelResp {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Error")]
    pub error: String,
}

/// SrvInfo reply (Go's `Diagnose`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SrvInfoResp {
    #[serde(rename = "Region")]
    pub region: String,
}

// ---- Proxy (type 3) -----------------------------------------------------

/// Sent by the edge at the start of every proxy stream. Rust requires all
/// five keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ProxyHeader {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "ClientAddr")]
    pub client_addr: String,
    #[serde(rename = "Proto")]
    pub proto: String,
    #[serde(rename = "EdgeType")]
    pub edge_type: String,
    #[serde(rename = "PassthroughTLS")]
    pub passthrough_tls: bool,
}

/// The bytes that open a proxy stream: type, i64-LE length, header JSON.
pub fn encode_proxy_preamble(header: &ProxyHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&stream_type::PROXY.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let start = out.len();
    // Serializing a struct of strings and a bool cannot fail.
    let _ = serde_json::to_writer(&mut *out, header);
    let len = (out.len() - start) as i64;
    out[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
}

/// Parses a proxy preamble after its 4-byte type: `Ok(None)` until all of
/// it has arrived; returns the header and the bytes consumed.
pub fn decode_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, MessageError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[..8]);
    let len = i64::from_le_bytes(len);
    if !(0..=MAX_MESSAGE_BYTES as i64).contains(&len) {
        return Err(MessageError::TooLarge);
    }
    let end = 8 + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(&buf[8..end]).map_err(|e| MessageError::Json(e.to_string()))?;
    Ok(Some((decode(v)?, end)))
}

/// An error string in ngrok's form: the message, a blank line, the code on
/// its own line (the Rust SDK takes the `ERR_NGROK_` line as the code).
pub fn ngrok_error(message: &str, code: u32) -> String {
    format!("{message}\n\nERR_NGROK_{code}")
}

/// Serializes a reply. Plain structs of strings and numbers: cannot fail.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY_AUTH: &str = r#"{"Version":["3","2"],"ClientId":"","Extra":{"OS":"linux","Arch":"x86_64","AuthToken":"tok-secret",
 "Version":"1.7.0","Hostname":"","UserAgent":"ngrok-python/1.7.0 ngrok-rust/0.18.0","Metadata":"session-meta",
 "Cookie":"","HeartbeatInterval":10000000000,"HeartbeatTolerance":15000000000,
 "UpdateUnsupportedError":"the agent has not defined a callback for this operation",
 "StopUnsupportedError":"the agent has not defined a callback for this operation",
 "RestartUnsupportedError":"the agent has not defined a callback for this operation",
 "ProxyType":"","MutualTLS":false,"ServiceRun":false,"ConfigVersion":"","CustomInterface":false,
 "CustomCAs":false,"ClientType":"ngrok-python"}}"#;

    const PY_BIND: &str = r#"{"Id":"","Proto":"https","ForwardsTo":"app://myhost//usr/bin/python3?pid=4242",
 "ForwardsProto":"","Opts":{"Domain":"foo.example.test","Hostname":"","Auth":"","Subdomain":"",
 "HostHeaderRewrite":false,"LocalUrlScheme":null,"ProxyProto":0,"Compression":null,"CircuitBreaker":null,
 "IPRestriction":null,"BasicAuth":null,"OAuth":null,"OIDC":null,"WebhookVerification":null,"MutualTLSCA":null,
 "RequestHeaders":null,"ResponseHeaders":null,"WebsocketTCPConverter":null,"UserAgentFilter":null,
 "TrafficPolicy":null},"Extra":{"Token":"","IPPolicyRef":"","Metadata":"tunnel-meta","Bindings":[],
 "PoolingEnabled":false}}"#;

    #[test]
    fn python_auth_decodes() {
        let (v, n) = take_value(PY_AUTH.as_bytes()).unwrap().unwrap();
        assert_eq!(n, PY_AUTH.len());
        let a: Auth = decode(v).unwrap();
        assert_eq!(a.version, ["3", "2"]);
        assert_eq!(a.extra.auth_token, "tok-secret");
        assert_eq!(a.extra.heartbeat_interval, 10_000_000_000);
        assert_eq!(a.extra.client_type, "ngrok-python");
    }

    #[test]
    fn go_key_spelling_is_accepted() {
        let v: Value = serde_json::from_str(
            r#"{"Version":["3"],"ClientId":"c","Extra":{"Authtoken":"go-tok","Fingerprint":null,"LegNumber":0}}"#,
        )
        .unwrap();
        let a: Auth = decode(v).unwrap();
        assert_eq!(a.extra.auth_token, "go-tok");
        assert_eq!(a.client_id, "c");
    }

    #[test]
    fn python_bind_decodes_and_keeps_opts() {
        let v: Value = serde_json::from_str(PY_BIND).unwrap();
        let raw_opts = v["Opts"].clone();
        let b: Bind = decode(v).unwrap();
        assert_eq!(b.proto, "https");
        assert_eq!(b.extra.metadata, "tunnel-meta");
        let opts: HttpOpts = decode(b.opts.clone()).unwrap();
        assert_eq!(opts.domain, "foo.example.test");
        assert_eq!(opts.traffic_policy, "");
        // Only key spelling may change, and these are already canonical.
        assert_eq!(b.opts["Compression"], raw_opts["Compression"]);
    }

    #[test]
    fn null_bindings_and_lowercase_keys() {
        let v: Value = serde_json::from_str(
            r#"{"id":"t1","proto":"http","opts":{"url":"http://a.test"},"extra":{"bindings":null,"poolingenabled":true}}"#,
        )
        .unwrap();
        let b: Bind = decode(v).unwrap();
        assert_eq!(b.id, "t1");
        assert!(b.extra.pooling_enabled);
        let o: HttpOpts = decode(b.opts).unwrap();
        assert_eq!(o.url, "http://a.test");
    }

    #[test]
    fn incremental_values() {
        assert_eq!(take_value(b"").unwrap(), None);
        assert_eq!(take_value(b"{\"Id\":").unwrap(), None);
        let (v, n) = take_value(b"{\"Id\":\"x\"}\n").unwrap().unwrap();
        assert_eq!(v["Id"], "x");
        assert_eq!(n, 10);
        assert!(take_value(b"{]").is_err());
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(take_value(&big), Err(MessageError::TooLarge));
        let mut open = b"[\"".to_vec();
        open.extend(std::iter::repeat_n(b'a', MAX_MESSAGE_BYTES));
        assert_eq!(take_value(&open), Err(MessageError::TooLarge));
    }

    #[test]
    fn proxy_preamble_round_trip() {
        let h = ProxyHeader {
            id: "tun-1".into(),
            client_addr: "203.0.113.7:51234".into(),
            proto: "https".into(),
            edge_type: String::new(),
            passthrough_tls: false,
        };
        let mut out = Vec::new();
        encode_proxy_preamble(&h, &mut out);
        assert_eq!(&out[..4], &[0, 0, 0, 3]);
        let (back, n) = decode_proxy_header(&out[4..]).unwrap().unwrap();
        assert_eq!(n, out.len() - 4);
        assert_eq!(back.id, "tun-1");
        assert_eq!(back.client_addr, "203.0.113.7:51234");
        let json = std::str::from_utf8(&out[12..]).unwrap();
        for k in ["Id", "ClientAddr", "Proto", "EdgeType", "PassthroughTLS"] {
            assert!(json.contains(k), "{json}");
        }
        assert_eq!(decode_proxy_header(&out[4..10]).unwrap().map(|_| ()), None);
        let mut bad = out[4..].to_vec();
        bad[..8].copy_from_slice(&(-1i64).to_le_bytes());
        assert!(decode_proxy_header(&bad).is_err());
    }

    #[test]
    fn error_form() {
        assert_eq!(
            ngrok_error("The authtoken you specified is invalid.", 107),
            "The authtoken you specified is invalid.\n\nERR_NGROK_107"
        );
    }
}
