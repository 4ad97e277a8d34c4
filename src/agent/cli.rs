//! `ringress http <upstream> [flags]` → an [`AgentConfig`].

use super::forward::{ForwardOptions, UpstreamProtocol};
use super::run::{self, AgentConfig, AgentEndpoint, AgentError};
use super::session::EndpointRequest;
use super::upstream_url;
use crate::cli::{HttpArgs, LegacyHttpArgs, UpstreamProtocolArg};
use crate::policy::legacy;

pub fn http(args: HttpArgs) -> Result<(), AgentError> {
    let cfg = config_from_args(args)?;
    run::run(cfg)
}

pub fn config_from_args(args: HttpArgs) -> Result<AgentConfig, AgentError> {
    let upstream =
        upstream_url::normalize(&args.upstream).map_err(|e| AgentError::Forward(e.to_string()))?;
    if args.binding != "public" {
        return Err(AgentError::Start(format!(
            "--binding {}: only public endpoints are supported by ringress agents yet",
            args.binding
        )));
    }
    if args.sessions == Some(0) {
        return Err(AgentError::Start("--sessions must be at least 1".into()));
    }
    let file_policy = match &args.traffic_policy_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| AgentError::Start(format!("cannot read {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let traffic_policy = with_legacy_flags(&args.legacy, file_policy)?;
    let protocol = match args.upstream_protocol {
        UpstreamProtocolArg::Http1 => UpstreamProtocol::Http1,
        UpstreamProtocolArg::Http2 => UpstreamProtocol::Http2,
    };
    let display = upstream.to_string();
    let endpoint = AgentEndpoint {
        name: "command_line".into(),
        inspect: args.web.inspect.unwrap_or(true),
        request: EndpointRequest {
            url: args.url.or(args.domain).unwrap_or_default(),
            pooling: args.pooling_enabled,
            metadata: args.metadata.clone(),
            description: args.description.clone(),
            traffic_policy,
            forwards_to: display.clone(),
            forwards_proto: match protocol {
                UpstreamProtocol::Http1 => "http1".into(),
                UpstreamProtocol::Http2 => "http2".into(),
            },
        },
        forward: ForwardOptions {
            upstream,
            protocol,
            tls_verify: args.upstream_tls_verify,
            tls_verify_cas: args.upstream_tls_verify_cas,
        },
        upstream_display: display,
    };
    Ok(AgentConfig {
        server_addr: args.server_addr,
        root_cas: args.root_cas,
        authtoken: args.authtoken,
        metadata: String::new(),
        endpoints: vec![endpoint],
        sessions: args.sessions,
        web: super::start::web_options(&args.web, None),
    })
}

/// The deprecated ngrok flags as the legacy endpoint options they stood
/// for (the shape SDKs send in a Bind's `Opts`).
fn legacy_options(f: &LegacyHttpArgs) -> Result<serde_json::Value, AgentError> {
    use serde_json::{json, Map, Value};
    let mut o = Map::new();
    if !f.basic_auth.is_empty() {
        let mut credentials = Vec::with_capacity(f.basic_auth.len());
        for c in &f.basic_auth {
            let Some((user, password)) = c.split_once(':') else {
                return Err(AgentError::Start(format!(
                    "--basic-auth {c:?}: expected user:password"
                )));
            };
            credentials.push(json!({"username": user, "cleartext_password": password}));
        }
        o.insert("BasicAuth".into(), json!({ "credentials": credentials }));
    }
    let oauth_extras = f.oauth_client_id.is_some()
        || f.oauth_client_secret.is_some()
        || !f.oauth_allow_email.is_empty()
        || !f.oauth_allow_domain.is_empty()
        || !f.oauth_scope.is_empty();
    match &f.oauth {
        Some(provider) => {
            o.insert(
                "OAuth".into(),
                json!({
                    "provider": provider,
                    "client_id": f.oauth_client_id,
                    "client_secret": f.oauth_client_secret,
                    "allow_emails": f.oauth_allow_email,
                    "allow_domains": f.oauth_allow_domain,
                    "scopes": f.oauth_scope,
                }),
            );
        }
        None if oauth_extras => {
            return Err(AgentError::Start(
                "the --oauth-* flags need --oauth <provider>".into(),
            ))
        }
        None => {}
    }
    let oidc_extras =
        f.oidc_client_id.is_some() || f.oidc_client_secret.is_some() || !f.oidc_scope.is_empty();
    match &f.oidc {
        Some(issuer) => {
            o.insert(
                "OIDC".into(),
                json!({
                    "issuer_url": issuer,
                    "client_id": f.oidc_client_id,
                    "client_secret": f.oidc_client_secret,
                    "scopes": f.oidc_scope,
                }),
            );
        }
        None if oidc_extras => {
            return Err(AgentError::Start(
                "the --oidc-* flags need --oidc <issuer URL>".into(),
            ))
        }
        None => {}
    }
    if !f.cidr_allow.is_empty() || !f.cidr_deny.is_empty() {
        o.insert(
            "IPRestriction".into(),
            json!({"allow_cidrs": f.cidr_allow, "deny_cidrs": f.cidr_deny}),
        );
    }
    if !f.request_header_add.is_empty() || !f.request_header_remove.is_empty() {
        o.insert(
            "RequestHeaders".into(),
            json!({"add": f.request_header_add, "remove": f.request_header_remove}),
        );
    }
    if !f.response_header_add.is_empty() || !f.response_header_remove.is_empty() {
        o.insert(
            "ResponseHeaders".into(),
            json!({"add": f.response_header_add, "remove": f.response_header_remove}),
        );
    }
    if f.compression {
        o.insert("Compression".into(), json!({}));
    }
    match (&f.verify_webhook, &f.verify_webhook_secret) {
        (Some(provider), Some(secret)) => {
            o.insert(
                "WebhookVerification".into(),
                json!({"provider": provider, "secret": secret}),
            );
        }
        (None, None) => {}
        _ => {
            return Err(AgentError::Start(
                "--verify-webhook and --verify-webhook-secret go together".into(),
            ))
        }
    }
    Ok(Value::Object(o))
}

/// The policy sent with the endpoint: the deprecated flags' rules first,
/// then the --traffic-policy-file document (unchanged when no deprecated
/// flag is given). The edge validates the result.
pub(crate) fn with_legacy_flags(
    flags: &LegacyHttpArgs,
    file_policy: Option<String>,
) -> Result<Option<String>, AgentError> {
    let options = legacy_options(flags)?;
    let rules = legacy::translate(&options).map_err(AgentError::Start)?;
    if rules.is_empty() {
        return Ok(file_policy);
    }
    rules
        .prepend_to(file_policy.as_deref())
        .map(Some)
        .map_err(|e| AgentError::Start(format!("--traffic-policy-file: {e}")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> HttpArgs {
        let mut full = vec!["ringress", "http", "8080"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parse").command {
            Command::Http(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn policy(argv: &[&str]) -> serde_json::Value {
        let cfg = config_from_args(args(argv)).expect("config");
        let text = cfg.endpoints[0]
            .request
            .traffic_policy
            .clone()
            .expect("a policy");
        crate::policy::CompiledPolicy::from_text(&text).expect("compiles");
        serde_json::from_str(&text).expect("json")
    }

    #[test]
    fn no_deprecated_flag_no_policy() {
        let cfg = config_from_args(args(&[])).expect("config");
        assert!(cfg.endpoints[0].request.traffic_policy.is_none());
    }

    #[test]
    fn deprecated_flags_become_rules() {
        let p = policy(&[
            "--basic-auth",
            "user:password1",
            "--basic-auth",
            "ops:password2",
            "--cidr-allow",
            "10.0.0.0/8",
            "--cidr-deny",
            "10.1.0.0/16",
            "--request-header-add",
            "x-a:1",
            "--request-header-remove",
            "x-b",
            "--response-header-add",
            "x-c:2",
            "--response-header-remove",
            "server",
            "--compression",
            "--verify-webhook",
            "github",
            "--verify-webhook-secret",
            "s3",
        ]);
        let kinds = |phase: &str| -> Vec<String> {
            p[phase]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["actions"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["type"].as_str().map(String::from))
                .collect()
        };
        assert_eq!(
            kinds("on_http_request"),
            [
                "restrict-ips",
                "basic-auth",
                "verify-webhook",
                "remove-headers",
                "add-headers"
            ]
        );
        assert_eq!(
            kinds("on_http_response"),
            ["remove-headers", "add-headers", "compress-response"]
        );
        assert_eq!(
            p["on_http_request"][1]["actions"][0]["config"]["credentials"],
            serde_json::json!(["user:password1", "ops:password2"])
        );
    }

    #[test]
    fn login_flags() {
        let p = policy(&[
            "--oauth",
            "google",
            "--oauth-client-id",
            "id",
            "--oauth-client-secret",
            "secret",
            "--oauth-allow-domain",
            "example.com",
        ]);
        let cfg = &p["on_http_request"][0]["actions"][0];
        assert_eq!(cfg["type"], "oauth");
        assert_eq!(
            cfg["config"]["allow_domains"],
            serde_json::json!(["example.com"])
        );
        let p = policy(&[
            "--oidc",
            "https://id.example.com",
            "--oidc-client-id",
            "id",
            "--oidc-client-secret",
            "secret",
            "--oidc-scope",
            "groups",
        ]);
        assert_eq!(
            p["on_http_request"][0]["actions"][0]["type"],
            "openid-connect"
        );
        assert!(config_from_args(args(&["--oauth-client-id", "x"])).is_err());
    }

    #[test]
    fn flags_go_before_the_policy_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.yml");
        std::fs::write(
            &file,
            "on_http_request:\n  - actions:\n      - type: custom-response\n        config: {body: hi}\n",
        )
        .expect("write");
        let p = policy(&[
            "--basic-auth",
            "user:password1",
            "--traffic-policy-file",
            file.to_str().expect("utf-8"),
        ]);
        assert_eq!(p["on_http_request"][0]["name"], "legacy BasicAuth");
        assert_eq!(
            p["on_http_request"][1]["actions"][0]["type"],
            "custom-response"
        );
        let e = config_from_args(args(&["--basic-auth", "nocolon"]));
        assert!(matches!(e, Err(AgentError::Start(m)) if m.contains("user:password")));
    }
}
