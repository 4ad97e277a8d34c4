//! The records the store keeps (JSON), their ids and timestamps, and their
//! API views in ngrok's JSON shapes.
//!
//! Pure data: no I/O. Secrets (API keys, authtokens) are kept only as
//! SHA-256 digests; the token is shown once, in the create reply.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A new id: `<prefix>_` + 12 hex digits of milliseconds + 12 random hex
/// digits, so ids of one kind sort by creation time.
pub fn new_id(prefix: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    format!(
        "{prefix}_{ms:012x}{}",
        crate::tunnel::registry::random_hex(6)
    )
}

/// RFC 3339 UTC, seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new secret token: `<27 hex>_<32 hex>` (two parts, like ngrok's).
pub fn new_token() -> String {
    format!(
        "{}_{}",
        crate::tunnel::registry::random_hex(14),
        crate::tunnel::registry::random_hex(16)
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointRec {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub url: String,
    pub traffic_policy: String,
    pub description: String,
    pub metadata: String,
    pub bindings: Vec<String>,
    pub pooling_enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertPolicy {
    pub authority: String,
    pub private_key_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainRec {
    pub id: String,
    pub created_at: String,
    pub domain: String,
    pub description: String,
    pub metadata: String,
    pub certificate_id: Option<String>,
    pub certificate_management_policy: Option<CertPolicy>,
    pub cname_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CredentialRec {
    pub id: String,
    pub created_at: String,
    pub description: String,
    pub metadata: String,
    pub acl: Vec<String>,
    pub token_digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKeyRec {
    pub id: String,
    pub created_at: String,
    pub description: String,
    pub metadata: String,
    pub token_digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertRec {
    pub id: String,
    pub created_at: String,
    pub description: String,
    pub metadata: String,
    pub certificate_pem: String,
    pub private_key_pem: String,
    /// DNS names from the leaf's SAN (and CN when no SAN).
    pub dns_names: Vec<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

/// `{id, uri}` reference.
pub fn reference(base: &str, kind: &str, id: &str) -> Value {
    json!({"id": id, "uri": format!("{base}/{kind}/{id}")})
}

/// Parts of an endpoint URL for the API view.
pub fn url_parts(url: &str) -> (String, String, u16) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let rest = rest.trim_end_matches('/');
    let default = if scheme == "http" { 80 } else { 443 };
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (
            scheme.to_owned(),
            h.to_owned(),
            p.parse().unwrap_or(default),
        ),
        _ => (scheme.to_owned(), rest.to_owned(), default),
    }
}

/// The URL as the API shows it: lowercase, default port dropped.
pub fn canonical_url(url: &str) -> String {
    let (scheme, host, port) = url_parts(url);
    let default = if scheme == "http" { 80 } else { 443 };
    let host = host.to_ascii_lowercase();
    if port == default {
        format!("{}://{host}", scheme.to_ascii_lowercase())
    } else {
        format!("{}://{host}:{port}", scheme.to_ascii_lowercase())
    }
}

fn endpoint_common(base: &str, id: &str, url: &str) -> serde_json::Map<String, Value> {
    let (scheme, host, port) = url_parts(url);
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(id));
    m.insert("region".into(), json!("local"));
    m.insert("public_url".into(), json!(url));
    m.insert("proto".into(), json!(scheme));
    m.insert("scheme".into(), json!(scheme));
    m.insert("hostport".into(), json!(format!("{host}:{port}")));
    m.insert("host".into(), json!(host));
    m.insert("port".into(), json!(port));
    m.insert("url".into(), json!(url));
    m.insert("uri".into(), json!(format!("{base}/endpoints/{id}")));
    for k in [
        "domain",
        "tcp_addr",
        "tunnel",
        "edge",
        "principal",
        "tunnel_session",
    ] {
        m.insert(k.into(), Value::Null);
    }
    m.insert("upstream_url".into(), json!(""));
    m.insert("upstream_protocol".into(), json!(""));
    m.insert("name".into(), json!(""));
    m
}

impl EndpointRec {
    pub fn view(&self, base: &str) -> Value {
        let mut m = endpoint_common(base, &self.id, &self.url);
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("updated_at".into(), json!(self.updated_at));
        m.insert("type".into(), json!("cloud"));
        m.insert("metadata".into(), json!(self.metadata));
        m.insert("description".into(), json!(self.description));
        m.insert("traffic_policy".into(), json!(self.traffic_policy));
        m.insert("bindings".into(), json!(self.bindings));
        m.insert("pooling_enabled".into(), json!(self.pooling_enabled));
        Value::Object(m)
    }
}

/// A read-only endpoint view (config file or agent).
pub fn readonly_endpoint_view(
    base: &str,
    id: &str,
    url: &str,
    kind: &str,
    session: Option<&str>,
    tunnel: Option<&str>,
) -> Value {
    let mut m = endpoint_common(base, id, url);
    let internal = url_parts(url).1.ends_with(".internal");
    m.insert("created_at".into(), json!(""));
    m.insert("updated_at".into(), json!(""));
    m.insert("type".into(), json!(kind));
    m.insert("metadata".into(), json!(""));
    m.insert("description".into(), json!(""));
    m.insert("traffic_policy".into(), json!(""));
    m.insert(
        "bindings".into(),
        json!([if internal { "internal" } else { "public" }]),
    );
    m.insert("pooling_enabled".into(), json!(false));
    if let Some(s) = session {
        m.insert(
            "tunnel_session".into(),
            reference(base, "tunnel_sessions", s),
        );
    }
    if let Some(t) = tunnel {
        m.insert("tunnel".into(), reference(base, "tunnels", t));
    }
    Value::Object(m)
}

impl DomainRec {
    pub fn view(&self, base: &str, status: Option<Value>) -> Value {
        json!({
            "id": self.id,
            "uri": format!("{base}/reserved_domains/{}", self.id),
            "created_at": self.created_at,
            "description": self.description,
            "metadata": self.metadata,
            "domain": self.domain,
            "region": "",
            "cname_target": self.cname_target,
            "certificate": self.certificate_id.as_deref().map(|c| reference(base, "tls_certificates", c)),
            "certificate_management_policy": self.certificate_management_policy,
            "certificate_management_status": status,
            "acme_challenge_cname_target": Value::Null,
            "resolves_to": [],
        })
    }
}

impl CredentialRec {
    pub fn view(&self, base: &str, token: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "uri": format!("{base}/credentials/{}", self.id),
            "created_at": self.created_at,
            "description": self.description,
            "metadata": self.metadata,
            "token": token,
            "acl": self.acl,
            "owner_id": Value::Null,
        })
    }
}

impl ApiKeyRec {
    pub fn view(&self, base: &str, token: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "uri": format!("{base}/api_keys/{}", self.id),
            "created_at": self.created_at,
            "description": self.description,
            "metadata": self.metadata,
            "token": token,
            "owner_id": Value::Null,
        })
    }
}

impl CertRec {
    pub fn view(&self, base: &str) -> Value {
        json!({
            "id": self.id,
            "uri": format!("{base}/tls_certificates/{}", self.id),
            "created_at": self.created_at,
            "description": self.description,
            "metadata": self.metadata,
            "certificate_pem": self.certificate_pem,
            "subject_common_name": self.dns_names.first().cloned().unwrap_or_default(),
            "subject_alternative_names": {"dns_names": self.dns_names, "ips": []},
            "issued_at": Value::Null,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "key_usages": [],
            "extended_key_usages": [],
            "private_key_type": "",
            "issuer_common_name": "",
            "serial_number": "",
            "subject_organization": "",
            "subject_organizational_unit": "",
            "subject_locality": "",
            "subject_province": "",
            "subject_country": "",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_carry_prefix() {
        let a = new_id("ep");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("ep");
        assert!(a.starts_with("ep_") && a < b, "{a} {b}");
    }

    #[test]
    fn url_canonical_drops_default_port() {
        assert_eq!(canonical_url("https://X.com:443"), "https://x.com");
        assert_eq!(
            canonical_url("http://a.internal:8080"),
            "http://a.internal:8080"
        );
        assert_eq!(
            url_parts("https://x.com"),
            ("https".into(), "x.com".into(), 443)
        );
    }
}
