//! `rate-limit` with ngrok's `sliding_window` algorithm: the count of the
//! current fixed window plus the previous window's count weighted by how
//! much of it still overlaps the sliding window.
//!
//! State is per worker thread (no locks, no cross-core traffic), keyed by
//! the compiled action and the bucket key. A client whose connections all
//! land on one worker sees exactly `capacity`; one spreading connections
//! over N workers can get up to `capacity × N` in the worst case (ngrok
//! also tracks capacity per ingress server). State starts afresh when the
//! policy is reloaded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cel_interpreter::Value;
use serde::Deserialize;

use crate::policy::cel::{self, Expr, Needs};
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::reply::{codes, write_error};
use crate::policy::template::Template;

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
    id: u64,
    name: String,
    capacity: u64,
    window: Duration,
    keys: Vec<KeyPart>,
    enforce: bool,
    needs: Needs,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
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
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: cfg.name,
            capacity: cfg.capacity,
            window,
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
        let verdict = LIMITERS.with(|l| {
            l.borrow_mut().entry(self.id).or_default().hit(
                &key,
                self.capacity,
                self.window,
                Instant::now(),
            )
        });
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

thread_local! {
    static LIMITERS: RefCell<HashMap<u64, Limiter>> = RefCell::new(HashMap::new());
}

#[derive(Debug, Clone, Copy)]
struct Window {
    index: u64,
    current: u64,
    previous: u64,
}

/// The windows of one rate-limit action on this worker.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: HashMap<String, Window>,
    sweep_at: usize,
}

impl Limiter {
    /// Counts a request for `key` at `now`. `Some(seconds)`: over the
    /// limit, retry after that long.
    pub fn hit(&mut self, key: &str, capacity: u64, window: Duration, now: Instant) -> Option<u64> {
        let w = window.as_nanos().max(1);
        let t = now.saturating_duration_since(epoch()).as_nanos();
        let index = (t / w) as u64;
        let into = (t % w) as f64 / w as f64;
        if self.windows.len() >= self.sweep_at.max(1024) {
            self.windows.retain(|_, e| e.index + 1 >= index);
            self.sweep_at = self.windows.len() * 2;
        }
        let e = match self.windows.get_mut(key) {
            Some(e) => e,
            None => self.windows.entry(key.to_owned()).or_insert(Window {
                index,
                current: 0,
                previous: 0,
            }),
        };
        if e.index != index {
            e.previous = if e.index + 1 == index { e.current } else { 0 };
            e.current = 0;
            e.index = index;
        }
        let estimate = e.previous as f64 * (1.0 - into) + e.current as f64;
        if estimate + 1.0 > capacity as f64 {
            let left = window.as_secs_f64() * (1.0 - into);
            return Some(left.ceil().max(1.0) as u64);
        }
        e.current += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_counts_and_recovers() {
        let mut l = Limiter::default();
        let w = Duration::from_secs(60);
        let t0 = epoch() + Duration::from_secs(6000);
        assert_eq!(l.hit("k", 2, w, t0), None);
        assert_eq!(l.hit("k", 2, w, t0), None);
        let r = l.hit("k", 2, w, t0).expect("limited");
        assert!((1..=60).contains(&r), "{r}");
        // Another key is independent.
        assert_eq!(l.hit("j", 2, w, t0), None);
        // Late in the next window the previous count has mostly faded.
        assert_eq!(l.hit("k", 2, w, t0 + Duration::from_secs(115)), None);
        // Two windows later, all forgotten.
        assert_eq!(l.hit("k", 2, w, t0 + Duration::from_secs(300)), None);
    }
}
