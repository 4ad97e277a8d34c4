//! `forward-internal`: hands the request to an `.internal` endpoint of the
//! same edge config, which runs its own policy and forwards to its own
//! upstream. The driver resolves the URL (see `policy::pipeline`).

use serde::Deserialize;

use super::rewrite::split_url;
use super::template;
use crate::policy::cel::Needs;
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    on_error: Option<String>,
    /// Accepted and ignored: pooling selectors are early access at ngrok.
    #[serde(default)]
    binding: Option<String>,
}

#[derive(Debug)]
pub struct ForwardInternal {
    url: Template,
    continue_on_error: bool,
}

/// Checks an internal endpoint URL: `http(s)://<name>.internal[:port]`.
pub fn check_internal_url(url: &str) -> Result<(), String> {
    let Some((scheme, authority, rest)) = split_url(url) else {
        return Err(format!("{url:?} is not a URL like https://api.internal"));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("{url:?}: only http and https internal endpoints"));
    }
    if !rest.is_empty() && rest != "/" {
        return Err(format!("{url:?}: no path or query"));
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if !host.to_ascii_lowercase().ends_with(".internal") {
        return Err(format!("{url:?}: the host must end in .internal"));
    }
    Ok(())
}

impl ForwardInternal {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<ForwardInternal, String> {
        let cfg: Config = super::config(cfg)?;
        let _ = cfg.binding;
        let continue_on_error = match cfg.on_error.as_deref() {
            None | Some("halt") => false,
            Some("continue") => true,
            Some(other) => {
                return Err(format!(
                    "config.on_error: {other:?} is not halt or continue"
                ))
            }
        };
        let url = template("url", &cfg.url)?;
        if let Some(lit) = url.as_literal() {
            check_internal_url(lit).map_err(|e| format!("config.url: {e}"))?;
        }
        Ok(ForwardInternal {
            url,
            continue_on_error,
        })
    }

    pub fn needs(&self) -> Needs {
        self.url.needs()
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let url = match self.url.as_literal() {
            Some(u) => u.to_owned(),
            None => self.url.render(cx.scope(self.url.needs()))?,
        };
        Ok(Flow::Forward {
            url,
            continue_on_error: self.continue_on_error,
        })
    }
}
