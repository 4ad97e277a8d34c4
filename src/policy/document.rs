//! The Traffic Policy document as users write it: phases, rules, actions.
//! The same shape comes from TOML inline tables, JSON or YAML.

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

/// A document that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("traffic policy document: {0}")]
pub struct DocumentError(pub String);

impl TrafficPolicy {
    /// Parses a document in JSON or YAML (JSON is tried first when the text
    /// starts with `{`; YAML is a superset of JSON otherwise).
    pub fn parse(text: &str) -> Result<TrafficPolicy, DocumentError> {
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map_err(|e| DocumentError(format!("JSON: {e}")));
        }
        if text.trim().is_empty() {
            return Ok(TrafficPolicy::default());
        }
        serde_yaml::from_str(text).map_err(|e| DocumentError(format!("YAML: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_share_the_shape() {
        let y = TrafficPolicy::parse(
            "on_http_request:\n  - name: hello\n    expressions:\n      - \"req.method == 'GET'\"\n    actions:\n      - type: custom-response\n        config:\n          status_code: 200\n          body: Hello\n",
        )
        .expect("yaml");
        let j = TrafficPolicy::parse(
            r#"{"on_http_request":[{"name":"hello","expressions":["req.method == 'GET'"],"actions":[{"type":"custom-response","config":{"status_code":200,"body":"Hello"}}]}]}"#,
        )
        .expect("json");
        assert_eq!(y.on_http_request.len(), 1);
        assert_eq!(
            j.on_http_request[0].expressions,
            y.on_http_request[0].expressions
        );
        assert_eq!(
            j.on_http_request[0].actions[0].config,
            y.on_http_request[0].actions[0].config
        );
    }

    #[test]
    fn unknown_fields_refused() {
        let e = TrafficPolicy::parse("on_http_requests: []\n").expect_err("typo");
        assert!(e.to_string().contains("on_http_requests"), "{e}");
    }
}
