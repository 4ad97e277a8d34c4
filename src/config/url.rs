//! Endpoint and upstream URLs as the config writes them.

use super::ConfigError;
use crate::route::Scheme;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    pub original: String,
    pub scheme: Scheme,
    /// Lowercase; wildcards keep their `*.` prefix.
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub original: String,
    pub host: String,
    pub port: u16,
}

fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    Some((scheme, rest))
}

/// Splits `host[:port][/]` and refuses paths, queries and userinfo.
fn split_authority<'a>(rest: &'a str, what: &str) -> Result<(&'a str, Option<u16>), String> {
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{what} must be scheme://host[:port], without path, query or user"
        ));
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => {
            Err(format!("{what}: IPv6 addresses need brackets"))
        }
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{what}: invalid port {port:?}"))?;
            Ok((host, Some(port)))
        }
        None => Ok((authority, None)),
    }
}

fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl EndpointUrl {
    pub fn parse(url: &str) -> Result<EndpointUrl, ConfigError> {
        let err = |reason: String| ConfigError::Endpoint {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) =
            split_scheme(url).ok_or_else(|| err("url needs a scheme (http://)".into()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(err(format!(
                    "unsupported scheme {other:?} (use http:// or https://)"
                )))
            }
        };
        let (host, _port) = split_authority(rest, "url").map_err(err)?;
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if !valid_hostname(bare) {
            return Err(err(format!("invalid host {host:?}")));
        }
        Ok(EndpointUrl {
            original: url.to_owned(),
            scheme,
            host,
        })
    }
}

impl UpstreamUrl {
    pub fn parse(endpoint: &str, url: &str) -> Result<UpstreamUrl, ConfigError> {
        let err = |reason: String| ConfigError::Endpoint {
            url: endpoint.to_owned(),
            reason,
        };
        let (scheme, rest) = split_scheme(url)
            .ok_or_else(|| err(format!("upstream {url:?} needs a scheme (http://)")))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(err(format!(
                "upstream scheme {scheme:?} is not supported yet (use http://)"
            )));
        }
        let (host, port) = split_authority(rest, "upstream").map_err(err)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err(format!("upstream {url:?} has no host")));
        }
        Ok(UpstreamUrl {
            original: url.to_owned(),
            host: host.to_owned(),
            port: port.unwrap_or(80),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let u = EndpointUrl::parse("http://App.Example.com").expect("ok");
        assert_eq!(u.host, "app.example.com");
        assert_eq!(
            EndpointUrl::parse("http://*.example.com/")
                .expect("ok")
                .host,
            "*.example.com"
        );
        assert!(EndpointUrl::parse("http://app.example.com:8080").is_ok());
        for bad in [
            "app.example.com",
            "ftp://a.b",
            "http://",
            "http://a/b",
            "http://a..b",
            "http://*",
            "http://a.*.b",
            "http://u@a.b",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_urls() {
        let u = UpstreamUrl::parse("e", "http://127.0.0.1:9000").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 9000));
        assert_eq!(
            UpstreamUrl::parse("e", "http://localhost")
                .expect("ok")
                .port,
            80
        );
        assert_eq!(
            UpstreamUrl::parse("e", "http://[::1]:81").expect("ok").host,
            "::1"
        );
        for bad in [
            "127.0.0.1:9000",
            "https://a",
            "http://a:99999",
            "http://a/path",
            "http://:80",
        ] {
            assert!(UpstreamUrl::parse("e", bad).is_err(), "{bad}");
        }
    }
}
