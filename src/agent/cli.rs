//! `ringress http <upstream> [flags]` → an [`AgentConfig`].

use super::forward::{ForwardOptions, UpstreamProtocol};
use super::run::{self, AgentConfig, AgentEndpoint, AgentError};
use super::session::EndpointRequest;
use super::upstream_url;
use crate::cli::{HttpArgs, UpstreamProtocolArg};

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
    let traffic_policy = match &args.traffic_policy_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| AgentError::Start(format!("cannot read {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let protocol = match args.upstream_protocol {
        UpstreamProtocolArg::Http1 => UpstreamProtocol::Http1,
        UpstreamProtocolArg::Http2 => UpstreamProtocol::Http2,
    };
    let display = upstream.to_string();
    let endpoint = AgentEndpoint {
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
    })
}
