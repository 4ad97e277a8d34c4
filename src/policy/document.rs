//! The Traffic Policy document as users write it (TOML inline tables, JSON
//! or YAML share this shape): phases, rules, actions.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default)]
    pub on_http_request: Vec<Rule>,
    #[serde(default)]
    pub on_http_response: Vec<Rule>,
    #[serde(default)]
    pub on_tcp_connect: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub expressions: Vec<String>,
    #[serde(default)]
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}
