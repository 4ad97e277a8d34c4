//! `set-vars` (phase-scoped `vars.*`) and `log` (a tracing event with the
//! rendered metadata, target `ringress::policy::log`).

use std::collections::BTreeMap;

use cel_interpreter::Value;
use serde::Deserialize;

use super::template;
use crate::policy::cel::{self, Needs};
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::template::Template;

/// A config value: strings are interpolated, other JSON is a constant.
#[derive(Debug)]
enum Item {
    Template(Template),
    Const(Value),
}

impl Item {
    fn compile(field: &str, v: &serde_json::Value, needs: &mut Needs) -> Result<Item, String> {
        Ok(match v {
            serde_json::Value::String(s) => {
                let t = template(field, s)?;
                *needs = needs.union(t.needs());
                Item::Template(t)
            }
            other => Item::Const(cel::from_json(other)),
        })
    }

    fn value(&self, cx: &mut Cx<'_, '_>, needs: Needs) -> Result<Value, Fail> {
        Ok(match self {
            Item::Template(t) => t.value(cx.scope(needs))?,
            Item::Const(v) => v.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetVarsConfig {
    vars: Vec<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug)]
pub struct SetVars {
    vars: Vec<(String, Item)>,
    needs: Needs,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SetVars {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<SetVars, String> {
        let cfg: SetVarsConfig = super::config(cfg)?;
        if cfg.vars.is_empty() {
            return Err("config.vars: at least one variable".into());
        }
        let mut vars = Vec::with_capacity(cfg.vars.len());
        let mut needs = Needs::NONE;
        for (i, m) in cfg.vars.iter().enumerate() {
            if m.len() != 1 {
                return Err(format!(
                    "config.vars[{i}]: each item is a map with exactly one key"
                ));
            }
            for (k, v) in m {
                if !valid_name(k) {
                    return Err(format!("config.vars[{i}]: {k:?} is not a variable name"));
                }
                vars.push((
                    k.clone(),
                    Item::compile(&format!("vars[{i}].{k}"), v, &mut needs)?,
                ));
            }
        }
        Ok(SetVars { vars, needs })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        for (name, item) in &self.vars {
            let v = item.value(cx, self.needs)?;
            cx.set_var(name, v);
        }
        Ok(Flow::Next)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogConfig {
    metadata: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug)]
pub struct Log {
    metadata: Vec<(String, Item)>,
    needs: Needs,
}

impl Log {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<Log, String> {
        let cfg: LogConfig = super::config(cfg)?;
        if cfg.metadata.is_empty() {
            return Err("config.metadata: at least one entry".into());
        }
        let mut needs = Needs::NONE;
        let mut metadata = Vec::with_capacity(cfg.metadata.len());
        for (k, v) in &cfg.metadata {
            metadata.push((
                k.clone(),
                Item::compile(&format!("metadata.{k}"), v, &mut needs)?,
            ));
        }
        Ok(Log { metadata, needs })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let mut values = Vec::with_capacity(self.metadata.len());
        for (k, item) in &self.metadata {
            values.push((k.clone(), item.value(cx, self.needs)?));
        }
        let v = cel::map(values);
        let json = cel::to_json(&v).unwrap_or_default();
        tracing::info!(
            target: "ringress::policy::log",
            endpoint = %cx.facts.endpoint.url,
            phase = cx.phase.name(),
            metadata = %json,
            "traffic policy log"
        );
        cx.result("log", || cel::map([("metadata", v)]));
        Ok(Flow::Next)
    }
}
