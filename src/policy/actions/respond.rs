//! `custom-response` and `deny`: terminating actions that answer from the
//! edge. A response without interpolation is encoded once at load.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{at_most, template};
use crate::policy::cel::Needs;
use crate::policy::engine::{Cx, Fail, Flow, PhaseKind};
use crate::policy::reply::{self, is_token, safe_value, PreparedResponse};
use crate::policy::template::Template;

const MAX_HEADERS: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomResponseConfig {
    #[serde(default = "default_200")]
    status_code: u16,
    #[serde(default)]
    body: Option<String>,
    /// The older name of `body`.
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_200() -> u16 {
    200
}

/// Names the edge frames itself.
pub fn reserved_response_header(lower: &str) -> bool {
    matches!(
        lower,
        "content-length" | "transfer-encoding" | "connection" | "ngrok-error-code"
    )
}

#[derive(Debug)]
enum Body {
    Prepared(PreparedResponse),
    Dynamic {
        status: u16,
        headers: Vec<(String, Template)>,
        body: Template,
    },
}

#[derive(Debug)]
pub struct CustomResponse {
    body: Body,
    needs: Needs,
}

impl CustomResponse {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<CustomResponse, String> {
        let cfg: CustomResponseConfig = super::config(cfg)?;
        if !(200..=599).contains(&cfg.status_code) {
            return Err(format!(
                "config.status_code: {} is not in 200..=599",
                cfg.status_code
            ));
        }
        if cfg.body.is_some() && cfg.content.is_some() {
            return Err("config: set either body or content (its older name), not both".into());
        }
        at_most("headers", cfg.headers.len(), MAX_HEADERS)?;
        let body_src = cfg.body.or(cfg.content).unwrap_or_default();
        let body = template("body", &body_src)?;
        let mut needs = body.needs();
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            if !is_token(name) {
                return Err(format!(
                    "config.headers: {name:?} is not a valid header name"
                ));
            }
            if !safe_value(value) {
                return Err(format!(
                    "config.headers: value of {name:?} contains a line break"
                ));
            }
            let lower = name.to_ascii_lowercase();
            if reserved_response_header(&lower) {
                return Err(format!(
                    "config.headers: {name:?} is set by the edge and cannot be overridden"
                ));
            }
            let t = template(&format!("headers.{name}"), value)?;
            needs = needs.union(t.needs());
            headers.push((lower, t));
        }
        let all_static =
            body.as_literal().is_some() && headers.iter().all(|(_, t)| t.as_literal().is_some());
        let body = if all_static {
            let hs: Vec<(String, String)> = headers
                .iter()
                .map(|(n, t)| (n.clone(), t.as_literal().unwrap_or_default().to_owned()))
                .collect();
            Body::Prepared(reply::prepare(
                cfg.status_code,
                &hs,
                body.as_literal().unwrap_or_default().as_bytes().to_vec(),
            ))
        } else {
            Body::Dynamic {
                status: cfg.status_code,
                headers,
                body,
            }
        };
        Ok(CustomResponse { body, needs })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The prepared response, when it has no interpolation.
    pub fn prepared(&self) -> Option<&PreparedResponse> {
        match &self.body {
            Body::Prepared(p) => Some(p),
            Body::Dynamic { .. } => None,
        }
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let style = cx.style;
        match &self.body {
            Body::Prepared(p) => reply::write_prepared(p, style, cx.out),
            Body::Dynamic {
                status,
                headers,
                body,
            } => {
                let scope = cx.scope(self.needs);
                let text = body.render(scope)?;
                let mut hs = Vec::with_capacity(headers.len());
                for (n, t) in headers {
                    let v = t.render(scope)?;
                    if !safe_value(&v) {
                        return Err(Fail::Eval(crate::policy::cel::EvalError {
                            expr: format!("headers.{n}"),
                            reason: "the value contains a line break".into(),
                        }));
                    }
                    hs.push((n.clone(), v));
                }
                let p = reply::prepare(*status, &hs, text.into_bytes());
                reply::write_prepared(&p, style, cx.out);
            }
        }
        Ok(Flow::Done)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyConfig {
    #[serde(default = "default_403")]
    status_code: u16,
}

fn default_403() -> u16 {
    403
}

#[derive(Debug)]
pub struct Deny {
    response: PreparedResponse,
}

impl Deny {
    pub fn compile(cfg: &Option<serde_json::Value>, tcp: bool) -> Result<Deny, String> {
        if tcp
            && cfg
                .as_ref()
                .is_some_and(|c| !c.is_null() && c != &serde_json::json!({}))
        {
            return Err("config: deny takes no config in on_tcp_connect".into());
        }
        let cfg: DenyConfig = super::config(cfg)?;
        if !(400..=599).contains(&cfg.status_code) {
            return Err(format!(
                "config.status_code: {} is not in 400..=599",
                cfg.status_code
            ));
        }
        Ok(Deny {
            response: reply::prepare(cfg.status_code, &[], Vec::new()),
        })
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        if cx.phase == PhaseKind::TcpConnect {
            return Ok(Flow::Close);
        }
        reply::write_prepared(&self.response, cx.style, cx.out);
        Ok(Flow::Done)
    }
}
