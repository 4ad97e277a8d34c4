//! `restrict-ips`: the L4 client address (never X-Forwarded-For) must be
//! in some `allow` CIDR (when any are given) and in no `deny` CIDR.

use std::net::IpAddr;

use cel_interpreter::Value;
use ipnet::IpNet;
use serde::Deserialize;

use super::template;
use crate::policy::cel::{self, parse_cidr, Needs};
use crate::policy::engine::{Cx, Fail, Flow, PhaseKind};
use crate::policy::reply::{codes, write_error};
use crate::policy::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "yes")]
    enforce: bool,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    ip_policies: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
enum Cidr {
    Static(IpNet),
    Dynamic(Template),
}

#[derive(Debug)]
pub struct RestrictIps {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    enforce: bool,
    needs: Needs,
}

fn compile_list(field: &str, items: &[String], needs: &mut Needs) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::with_capacity(items.len());
    for (i, s) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let t = template(&f, s)?;
        match t.as_literal() {
            Some(lit) => out.push(Cidr::Static(
                parse_cidr(lit).map_err(|e| format!("config.{f}: {e}"))?,
            )),
            None => {
                *needs = needs.union(t.needs());
                out.push(Cidr::Dynamic(t));
            }
        }
    }
    Ok(out)
}

impl RestrictIps {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<RestrictIps, String> {
        let cfg: Config = super::config(cfg)?;
        if !cfg.ip_policies.is_empty() {
            return Err(
                "config.ip_policies: IP policy objects are not supported yet; list CIDRs in allow/deny"
                    .into(),
            );
        }
        if cfg.allow.is_empty() && cfg.deny.is_empty() {
            return Err("config: give at least one CIDR in allow or deny".into());
        }
        let mut needs = Needs::NONE;
        let allow = compile_list("allow", &cfg.allow, &mut needs)?;
        let deny = compile_list("deny", &cfg.deny, &mut needs)?;
        Ok(RestrictIps {
            allow,
            deny,
            enforce: cfg.enforce,
            needs,
        })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The first CIDR of `list` containing `ip`.
    fn matching(
        &self,
        list: &[Cidr],
        ip: IpAddr,
        cx: &mut Cx<'_, '_>,
    ) -> Result<Option<IpNet>, Fail> {
        for c in list {
            let net = match c {
                Cidr::Static(n) => *n,
                Cidr::Dynamic(t) => {
                    let s = t.render(cx.scope(self.needs))?;
                    parse_cidr(&s).map_err(|reason| {
                        Fail::Eval(cel::EvalError {
                            expr: s.clone(),
                            reason,
                        })
                    })?
                }
            };
            if net.contains(&ip) {
                return Ok(Some(net));
            }
        }
        Ok(None)
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let ip = cx.facts.conn.client.map(|a| a.ip().to_canonical());
        let (allowed, matched) = match ip {
            None => (false, None),
            Some(ip) => {
                let denied = self.matching(&self.deny, ip, cx)?;
                if denied.is_some() {
                    (false, denied)
                } else if self.allow.is_empty() {
                    (true, None)
                } else {
                    let a = self.matching(&self.allow, ip, cx)?;
                    (a.is_some(), a)
                }
            }
        };
        cx.result("restrict_ips", || {
            cel::map([
                (
                    "action",
                    cel::string(if allowed { "allow" } else { "deny" }),
                ),
                (
                    "matched_cidr",
                    matched.map_or(Value::Null, |n| cel::string(n.to_string())),
                ),
            ])
        });
        if allowed || !self.enforce {
            return Ok(Flow::Next);
        }
        if cx.phase == PhaseKind::TcpConnect {
            return Ok(Flow::Close);
        }
        write_error(codes::IP_RESTRICTED, "", &[], cx.style, cx.out);
        Ok(Flow::Done)
    }
}
