//! `rate-limit` with ngrok's `sliding_window` algorithm: the count of the
//! current fixed window plus the previous window's count weighted by how
//! much of it still overlaps the sliding window (`rate_window` has the rule
//! and the store).
//!
//! One table per compiled action, shared by every worker of the edge
//! (`rate_window::SharedBuckets`, lock-free), so `capacity` is the edge's
//! limit however the client's connections are spread over workers. Several
//! edges each count on their own (ngrok also tracks capacity per ingress
//! server). State starts afresh when the policy is reloaded.

use std::time::{Duration, Instant};

use cel_interpreter::Value;
use serde::Deserialize;

use crate::policy::cel::{self, Expr, Needs};
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::reply::{codes, write_error};
use crate::policy::template::Template;

use super::rate_window::{Buckets, Rule, SharedBuckets};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    name: String,
    algorithm: String,
    capacity: u64,
    rate: String,
    bucket_key: Vec<String>,
    #[serde(default = "yes")]
    enforce: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
enum KeyPart {
    Expr(Expr),
    Template(Template),
}

#[derive(Debug)]
pub struct RateLimit {
    name: String,
    buckets: SharedBuckets,
    keys: Vec<KeyPart>,
    enforce: bool,
    needs: Needs,
}

impl RateLimit {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<RateLimit, String> {
        let cfg: Config = super::config(cfg)?;
        if cfg.name.is_empty() || cfg.name.len() >= 1024 {
            return Err("config.name: 1 to 1023 characters".into());
        }
        if cfg.algorithm != "sliding_window" {
            return Err(format!(
                "config.algorithm: {:?} is not supported (use sliding_window)",
                cfg.algorithm
            ));
        }
        if !(1..=2_000_000_000).contains(&cfg.capacity) {
            return Err("config.capacity: 1 to 2000000000".into());
        }
        let window = humantime::parse_duration(&cfg.rate)
            .map_err(|e| format!("config.rate: {:?} is not a duration: {e}", cfg.rate))?;
        if window < Duration::from_secs(60)
            || window > Duration::from_secs(86_400)
            || window.as_millis() % 10_000 != 0
        {
            return Err(format!(
                "config.rate: {:?} must be 60s to 24h, a multiple of 10s",
                cfg.rate
            ));
        }
        if cfg.bucket_key.is_empty() {
            return Err("config.bucket_key: at least one CEL expression".into());
        }
        super::at_most("bucket_key", cfg.bucket_key.len(), 10)?;
        let mut keys = Vec::with_capacity(cfg.bucket_key.len());
        let mut needs = Needs::NONE;
        for (i, k) in cfg.bucket_key.iter().enumerate() {
            let part = if k.contains("${") {
                KeyPart::Template(super::template(&format!("bucket_key[{i}]"), k)?)
            } else {
                KeyPart::Expr(Expr::compile(k).map_err(|e| format!("config.bucket_key[{i}]: {e}"))?)
            };
            needs = needs.union(match &part {
                KeyPart::Expr(e) => e.needs(),
                KeyPart::Template(t) => t.needs(),
            });
            keys.push(part);
        }
        Ok(RateLimit {
            name: cfg.name,
            buckets: SharedBuckets::new(Rule {
                capacity: cfg.capacity,
                window,
            }),
            keys,
            enforce: cfg.enforce,
            needs,
        })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    fn key(&self, cx: &mut Cx<'_, '_>) -> Result<String, Fail> {
        let scope = cx.scope(self.needs);
        let mut key = String::new();
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            match k {
                KeyPart::Expr(e) => {
                    let v = e.eval(scope)?;
                    key.push_str(&cel::to_text(&v).map_err(|reason| {
                        Fail::Eval(cel::EvalError {
                            expr: e.source().to_owned(),
                            reason,
                        })
                    })?);
                }
                KeyPart::Template(t) => t.render_into(scope, &mut key)?,
            }
        }
        Ok(key)
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let key = self.key(cx)?;
        let verdict = self.buckets.hit(&key, Instant::now());
        let limited = verdict.is_some();
        cx.result("rate_limit", || {
            cel::map([
                ("bucket_key", cel::string(key.as_str())),
                ("limited", Value::Bool(limited)),
            ])
        });
        let Some(retry_after) = verdict else {
            return Ok(Flow::Next);
        };
        if !self.enforce {
            return Ok(Flow::Next);
        }
        tracing::debug!(name = %self.name, "rate limited");
        let secs = itoa::Buffer::new().format(retry_after).to_owned();
        write_error(
            codes::RATE_LIMITED,
            "",
            &[("retry-after", &secs)],
            cx.style,
            cx.out,
        );
        Ok(Flow::Done)
    }
}
