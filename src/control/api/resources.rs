//! The server's own routes: `/endpoints`, `/reserved_domains`,
//! `/credentials`, `/api_keys`, `/tls_certificates`, `/tunnel_sessions`, in
//! ngrok's JSON shapes, with pagination (`limit`, `before_id`,
//! `next_page_uri`). Request bodies are decoded strictly (unknown fields are
//! an error) and every change is committed by the `Plane` before the reply.
//!
//! Handlers run on the API runtime's blocking pool (store commits fsync);
//! never on a worker.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{json_response, no_content, ApiError};
use super::mount::{ApiAuth, ApiBody, ApiFuture, ApiRequest, Mount};
use super::request::{self, ApiCall};
use crate::control::plane::{config_endpoint_id, Plane};
use crate::control::records::{
    self, readonly_endpoint_view, ApiKeyRec, CertPolicy, CertRec, CredentialRec, DomainRec,
    EndpointRec,
};
use crate::control::store::Kind;

/// Largest and default page size.
const MAX_LIMIT: usize = 100;

const OWN: [&str; 6] = [
    "endpoints",
    "reserved_domains",
    "credentials",
    "api_keys",
    "tls_certificates",
    "tunnel_sessions",
];

/// The API's own resources.
pub struct Resources {
    plane: Arc<Plane>,
    /// `http` or `https`: how `uri`/`next_page_uri` are spelled.
    scheme: &'static str,
}

impl Resources {
    pub fn new(plane: Arc<Plane>, tls: bool) -> Resources {
        Resources {
            plane,
            scheme: if tls { "https" } else { "http" },
        }
    }
}

fn is_own(path: &str) -> bool {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let first = segs.next().unwrap_or("");
    let rest = segs.count();
    // `/endpoints/{id}/...` beyond our own sub-resources belongs to mounts
    // (observe's captures).
    OWN.contains(&first) && (rest <= 1 || (first == "reserved_domains" && rest == 2))
}

impl Mount for Resources {
    fn call(&self, req: ApiRequest, auth: ApiAuth) -> Result<ApiFuture, ApiRequest> {
        if !is_own(req.uri().path()) {
            return Err(req);
        }
        let plane = self.plane.clone();
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        let base = format!("{}://{host}", self.scheme);
        Ok(Box::pin(async move {
            let call = match request::accept(req, &auth).await {
                Ok(c) => c,
                Err(e) => return e.response(),
            };
            match tokio::task::spawn_blocking(move || route(&plane, &call, &base)).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => e.response(),
                Err(e) => ApiError::internal(format!("handler failed: {e}")).response(),
            }
        }))
    }
}

type Reply = Result<http::Response<ApiBody>, ApiError>;

fn method_not_allowed(call: &ApiCall) -> ApiError {
    ApiError::new(
        405,
        405,
        format!(
            "Method {} is not allowed on /{}.",
            call.method,
            call.segments.join("/")
        ),
    )
}

fn route(plane: &Plane, call: &ApiCall, base: &str) -> Reply {
    use http::Method as M;
    let segs: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match (&call.method, segs.as_slice()) {
        (&M::GET, ["endpoints"]) => list_endpoints(plane, call, base),
        (&M::POST, ["endpoints"]) => create_endpoint(plane, call, base),
        (&M::GET, ["endpoints", id]) => get_endpoint(plane, id, base),
        (&M::PATCH, ["endpoints", id]) => update_endpoint(plane, call, id, base),
        (&M::DELETE, ["endpoints", id]) => plane.delete_endpoint(id).map(|_| no_content()),

        (&M::GET, ["reserved_domains"]) => {
            let all: Vec<DomainRec> = plane.list(Kind::ReservedDomains)?;
            page(
                call,
                base,
                "reserved_domains",
                all,
                |d| d.id.clone(),
                |d| domain_view(plane, d, base),
            )
        }
        (&M::POST, ["reserved_domains"]) => create_domain(plane, call, base),
        (&M::GET, ["reserved_domains", id]) => {
            let d: DomainRec = plane.get(Kind::ReservedDomains, "reserved_domain", id)?;
            Ok(json_response(200, &domain_view(plane, &d, base)))
        }
        (&M::PATCH, ["reserved_domains", id]) => update_domain(plane, call, id, base),
        (&M::DELETE, ["reserved_domains", id]) => plane.delete_domain(id).map(|_| no_content()),
        (&M::DELETE, ["reserved_domains", id, "certificate"]) => {
            let d = plane.update_domain(id, |d| {
                d.certificate_id = None;
                Ok(())
            });
            d.map(|_| no_content())
        }
        (&M::DELETE, ["reserved_domains", id, "certificate_management_policy"]) => {
            let d = plane.update_domain(id, |d| {
                d.certificate_management_policy = None;
                Ok(())
            });
            d.map(|_| no_content())
        }

        (&M::GET, ["credentials"]) => {
            let all: Vec<CredentialRec> = plane.list(Kind::Credentials)?;
            page(
                call,
                base,
                "credentials",
                all,
                |c| c.id.clone(),
                |c| c.view(base, None),
            )
        }
        (&M::POST, ["credentials"]) => {
            let body: CreateCredential = call.json()?;
            let (rec, token) = plane.create_credential(CredentialRec {
                id: String::new(),
                created_at: String::new(),
                description: body.description,
                metadata: check_meta(body.metadata)?,
                acl: body.acl,
                token_digest: String::new(),
            })?;
            Ok(json_response(201, &rec.view(base, Some(&token))))
        }
        (&M::GET, ["credentials", id]) => {
            let c: CredentialRec = plane.get(Kind::Credentials, "credential", id)?;
            Ok(json_response(200, &c.view(base, None)))
        }
        (&M::PATCH, ["credentials", id]) => {
            let body: UpdateCredential = call.json()?;
            let meta = body.metadata.map(check_meta).transpose()?;
            let c = plane.update_credential(id, |c| {
                if let Some(d) = body.description {
                    c.description = d;
                }
                if let Some(m) = meta {
                    c.metadata = m;
                }
                if let Some(a) = body.acl {
                    c.acl = a;
                }
            })?;
            Ok(json_response(200, &c.view(base, None)))
        }
        (&M::DELETE, ["credentials", id]) => plane.delete_credential(id).map(|_| no_content()),

        (&M::GET, ["api_keys"]) => {
            let all: Vec<ApiKeyRec> = plane.list(Kind::ApiKeys)?;
            page(
                call,
                base,
                "keys",
                all,
                |k| k.id.clone(),
                |k| k.view(base, None),
            )
        }
        (&M::POST, ["api_keys"]) => {
            let body: CreateApiKey = call.json()?;
            let (rec, token) =
                plane.create_api_key(&body.description, &check_meta(body.metadata)?)?;
            Ok(json_response(201, &rec.view(base, Some(&token))))
        }
        (&M::GET, ["api_keys", id]) => {
            let k: ApiKeyRec = plane.get(Kind::ApiKeys, "api_key", id)?;
            Ok(json_response(200, &k.view(base, None)))
        }
        (&M::PATCH, ["api_keys", id]) => {
            let body: UpdateMeta = call.json()?;
            let meta = body.metadata.map(check_meta).transpose()?;
            let k = plane.update_api_key(id, |k| {
                if let Some(d) = body.description {
                    k.description = d;
                }
                if let Some(m) = meta {
                    k.metadata = m;
                }
            })?;
            Ok(json_response(200, &k.view(base, None)))
        }
        (&M::DELETE, ["api_keys", id]) => plane.delete_api_key(id).map(|_| no_content()),

        (&M::GET, ["tls_certificates"]) => {
            let all: Vec<CertRec> = plane.list(Kind::TlsCertificates)?;
            page(
                call,
                base,
                "tls_certificates",
                all,
                |c| c.id.clone(),
                |c| c.view(base),
            )
        }
        (&M::POST, ["tls_certificates"]) => {
            let body: CreateCertificate = call.json()?;
            if body.description.len() > 255 {
                return Err(ApiError::bad_request(
                    400,
                    "description is at most 255 bytes.",
                ));
            }
            let rec = plane.create_certificate(CertRec {
                id: String::new(),
                created_at: String::new(),
                description: body.description,
                metadata: check_meta(body.metadata)?,
                certificate_pem: body.certificate_pem,
                private_key_pem: body.private_key_pem,
                dns_names: Vec::new(),
                not_before: None,
                not_after: None,
            })?;
            Ok(json_response(201, &rec.view(base)))
        }
        (&M::GET, ["tls_certificates", id]) => {
            let c: CertRec = plane.get(Kind::TlsCertificates, "tls_certificate", id)?;
            Ok(json_response(200, &c.view(base)))
        }
        (&M::PATCH, ["tls_certificates", id]) => {
            let body: UpdateMeta = call.json()?;
            let meta = body.metadata.map(check_meta).transpose()?;
            let c = plane.update_certificate(id, |c| {
                if let Some(d) = body.description {
                    c.description = d;
                }
                if let Some(m) = meta {
                    c.metadata = m;
                }
            })?;
            Ok(json_response(200, &c.view(base)))
        }
        (&M::DELETE, ["tls_certificates", id]) => {
            plane.delete_certificate(id).map(|_| no_content())
        }

        (&M::GET, ["tunnel_sessions"]) => {
            let all = tunnel_sessions(plane, base);
            page(
                call,
                base,
                "tunnel_sessions",
                all,
                |v| v["id"].as_str().unwrap_or("").to_owned(),
                |v| v.clone(),
            )
        }
        (&M::GET, ["tunnel_sessions", id]) => tunnel_sessions(plane, base)
            .into_iter()
            .find(|v| v["id"] == *id)
            .map(|v| json_response(200, &v))
            .ok_or_else(|| ApiError::not_found("tunnel_session", id)),

        _ => Err(method_not_allowed(call)),
    }
}

/// `metadata` is at most 4096 bytes (ngrok's rule).
fn check_meta(m: String) -> Result<String, ApiError> {
    if m.len() > 4096 {
        return Err(ApiError::bad_request(
            400,
            "metadata is at most 4096 bytes.",
        ));
    }
    Ok(m)
}

/// Newest first; `before_id` and `limit`; `next_page_uri` when more remain.
fn page<T>(
    call: &ApiCall,
    base: &str,
    key: &str,
    mut items: Vec<T>,
    id: impl Fn(&T) -> String,
    view: impl Fn(&T) -> Value,
) -> Reply {
    let limit = match call.query("limit") {
        None | Some("") => MAX_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(400, format!("limit must be 1 to {MAX_LIMIT}."))
            })?,
    };
    items.sort_by_key(|t| std::cmp::Reverse(id(t)));
    if let Some(before) = call.query("before_id").filter(|b| !b.is_empty()) {
        items.retain(|t| id(t).as_str() < before);
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let path = call.segments.join("/");
    let next = match (more, items.last()) {
        (true, Some(last)) => Value::String(format!(
            "{base}/{path}?limit={limit}&before_id={}",
            id(last)
        )),
        _ => Value::Null,
    };
    let list: Vec<Value> = items.iter().map(view).collect();
    Ok(json_response(
        200,
        &json!({key: list, "uri": format!("{base}/{path}"), "next_page_uri": next}),
    ))
}

// ---- endpoints ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    #[serde(default)]
    url: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    traffic_policy: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    bindings: Vec<String>,
    #[serde(default)]
    pooling_enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateEndpoint {
    /// Sent by ngrok clients; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    id: Option<String>,
    url: Option<String>,
    traffic_policy: Option<String>,
    description: Option<String>,
    metadata: Option<String>,
    bindings: Option<Vec<String>>,
    pooling_enabled: Option<bool>,
}

fn create_endpoint(plane: &Plane, call: &ApiCall, base: &str) -> Reply {
    let body: CreateEndpoint = call.json()?;
    if let Some(k) = body.kind.as_deref().filter(|k| *k != "cloud") {
        return Err(ApiError::bad_request(
            400,
            format!("Only cloud endpoints are created through the API (type {k:?})."),
        ));
    }
    let rec = plane.create_endpoint(EndpointRec {
        id: String::new(),
        created_at: String::new(),
        updated_at: String::new(),
        url: body.url,
        traffic_policy: body.traffic_policy,
        description: body.description,
        metadata: check_meta(body.metadata)?,
        bindings: body.bindings,
        pooling_enabled: body.pooling_enabled,
    })?;
    Ok(json_response(201, &rec.view(base)))
}

fn update_endpoint(plane: &Plane, call: &ApiCall, id: &str, base: &str) -> Reply {
    let body: UpdateEndpoint = call.json()?;
    let _ = body.id;
    let meta = body.metadata.map(check_meta).transpose()?;
    if plane
        .store()
        .get(Kind::Endpoints, id)
        .ok()
        .flatten()
        .is_none()
        && plane.endpoint_url_by_id(id).is_some()
    {
        return Err(ApiError::bad_request(
            9040,
            "Only cloud endpoints can be changed through the API (config and agent endpoints are read-only).",
        ));
    }
    let rec = plane.update_endpoint(id, |e| {
        if let Some(u) = body.url {
            e.url = u;
        }
        if let Some(p) = body.traffic_policy {
            e.traffic_policy = p;
        }
        if let Some(d) = body.description {
            e.description = d;
        }
        if let Some(m) = meta {
            e.metadata = m;
        }
        if let Some(b) = body.bindings {
            e.bindings = b;
        }
        if let Some(p) = body.pooling_enabled {
            e.pooling_enabled = p;
        }
    })?;
    Ok(json_response(200, &rec.view(base)))
}

/// Cloud, config and agent endpoints.
fn all_endpoints(plane: &Plane, base: &str) -> Result<Vec<(String, String, Value)>, ApiError> {
    let mut out = Vec::new();
    let cloud: Vec<EndpointRec> = plane.list(Kind::Endpoints)?;
    for e in &cloud {
        out.push((e.id.clone(), e.url.clone(), e.view(base)));
    }
    for u in plane.config_urls().iter() {
        let id = config_endpoint_id(u);
        let url = records::canonical_url(u);
        let v = readonly_endpoint_view(base, &id, &url, "config", None, None);
        out.push((id, url, v));
    }
    if let Some(r) = plane.registry() {
        for t in r.tunnels() {
            let id = format!("ep_{}", t.id.trim_start_matches("ep_"));
            let session = format!("ts_{}", t.client_id);
            let url = records::canonical_url(&t.url);
            let v =
                readonly_endpoint_view(base, &id, &url, "ephemeral", Some(&session), Some(&t.id));
            out.push((id, url, v));
        }
    }
    Ok(out)
}

fn list_endpoints(plane: &Plane, call: &ApiCall, base: &str) -> Reply {
    let ids: Vec<&str> = call
        .query
        .iter()
        .filter(|(k, _)| k == "id" || k == "id[]")
        .map(|(_, v)| v.as_str())
        .collect();
    let urls: Vec<String> = call
        .query
        .iter()
        .filter(|(k, _)| k == "url" || k == "url[]")
        .map(|(_, v)| records::canonical_url(v))
        .collect();
    let mut all = all_endpoints(plane, base)?;
    all.retain(|(id, url, _)| {
        (ids.is_empty() || ids.contains(&id.as_str())) && (urls.is_empty() || urls.contains(url))
    });
    page(
        call,
        base,
        "endpoints",
        all,
        |t| t.0.clone(),
        |t| t.2.clone(),
    )
}

fn get_endpoint(plane: &Plane, id: &str, base: &str) -> Reply {
    // A cloud endpoint is one store read; config and agent endpoints are
    // not in the store, so only then are all views built.
    match plane.get::<EndpointRec>(Kind::Endpoints, "endpoint", id) {
        Ok(e) => return Ok(json_response(200, &e.view(base))),
        Err(e) if e.status != 404 => return Err(e),
        Err(_) => {}
    }
    all_endpoints(plane, base)?
        .into_iter()
        .find(|(i, _, _)| i == id)
        .map(|(_, _, v)| json_response(200, &v))
        .ok_or_else(|| ApiError::not_found("endpoint", id))
}

// ---- reserved domains ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    private_key_type: Option<String>,
}

impl PolicyBody {
    fn into_policy(self) -> Result<CertPolicy, ApiError> {
        let key = self.private_key_type.unwrap_or_else(|| "ecdsa".into());
        if key != "ecdsa" && key != "rsa" {
            return Err(ApiError::bad_request(
                400,
                "private_key_type is ecdsa or rsa.",
            ));
        }
        Ok(CertPolicy {
            authority: self.authority.unwrap_or_else(|| "letsencrypt".into()),
            private_key_type: key,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDomain {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: String,
    certificate_id: Option<String>,
    certificate_management_policy: Option<PolicyBody>,
    #[serde(default)]
    resolves_to: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateDomain {
    /// Sent by ngrok clients; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    id: Option<String>,
    description: Option<String>,
    metadata: Option<String>,
    certificate_id: Option<String>,
    certificate_management_policy: Option<PolicyBody>,
    #[serde(default)]
    resolves_to: Option<Vec<Value>>,
}

fn domain_view(plane: &Plane, d: &DomainRec, base: &str) -> Value {
    let status = (d.certificate_id.is_none() && d.certificate_management_policy.is_some()).then(|| {
        json!({"renews_at": Value::Null, "provisioning_job": if plane.config().acme {
            json!({"error_code": "", "msg": "certificate managed by the edge's ACME manager (HTTP-01)", "started_at": d.created_at, "retries_at": Value::Null})
        } else { Value::Null }})
    });
    d.view(base, status)
}

fn create_domain(plane: &Plane, call: &ApiCall, base: &str) -> Reply {
    let body: CreateDomain = call.json()?;
    let _ = (body.region, body.resolves_to);
    let rec = plane.create_domain(DomainRec {
        id: String::new(),
        created_at: String::new(),
        domain: body.domain,
        description: body.description,
        metadata: check_meta(body.metadata)?,
        certificate_id: body.certificate_id.filter(|c| !c.is_empty()),
        certificate_management_policy: body
            .certificate_management_policy
            .map(PolicyBody::into_policy)
            .transpose()?,
        cname_target: None,
    })?;
    Ok(json_response(201, &domain_view(plane, &rec, base)))
}

fn update_domain(plane: &Plane, call: &ApiCall, id: &str, base: &str) -> Reply {
    let body: UpdateDomain = call.json()?;
    let _ = (body.id, body.resolves_to);
    let meta = body.metadata.map(check_meta).transpose()?;
    let policy = body
        .certificate_management_policy
        .map(PolicyBody::into_policy)
        .transpose()?;
    let rec = plane.update_domain(id, |d| {
        if let Some(x) = body.description {
            d.description = x;
        }
        if let Some(m) = meta {
            d.metadata = m;
        }
        if let Some(c) = body.certificate_id.filter(|c| !c.is_empty()) {
            d.certificate_id = Some(c);
            d.certificate_management_policy = None;
        }
        if let Some(p) = policy {
            d.certificate_management_policy = Some(p);
            d.certificate_id = None;
        }
        Ok(())
    })?;
    Ok(json_response(200, &domain_view(plane, &rec, base)))
}

// ---- credentials, API keys, certificates ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCredential {
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    acl: Vec<String>,
    /// Sent by ngrok clients; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    owner_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateCredential {
    /// Sent by ngrok clients; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    id: Option<String>,
    description: Option<String>,
    metadata: Option<String>,
    acl: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: String,
    /// Sent by ngrok clients; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    owner_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMeta {
    /// Sent by ngrok clients; ignored.
    #[allow(dead_code)]
    #[serde(default)]
    id: Option<String>,
    description: Option<String>,
    metadata: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCertificate {
    #[serde(default)]
    certificate_pem: String,
    #[serde(default)]
    private_key_pem: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: String,
}

fn tunnel_sessions(plane: &Plane, base: &str) -> Vec<Value> {
    let Some(r) = plane.registry() else {
        return Vec::new();
    };
    r.sessions()
        .into_iter()
        .map(|s| {
            let id = format!("ts_{}", s.client_id);
            let started: chrono::DateTime<chrono::Utc> = s.started.into();
            json!({
                "id": id,
                "uri": format!("{base}/tunnel_sessions/{id}"),
                "agent_version": s.agent_version,
                "credential": s.credential.as_deref().map(|c| records::reference(base, "credentials", c)),
                "ip": "",
                "metadata": s.metadata,
                "os": s.os,
                "region": "local",
                "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "transport": "ngrok/2",
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths() {
        assert!(is_own("/endpoints"));
        assert!(is_own("/endpoints/ep_1"));
        assert!(!is_own("/endpoints/ep_1/requests"));
        assert!(is_own("/reserved_domains/rd_1/certificate"));
        assert!(!is_own("/metrics"));
    }
}
