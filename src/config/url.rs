//! Endpoint and upstream URLs as the config writes them.

use super::ConfigError;
use crate::control::url_rules::{validate_url, Binding, EdgeUrls, Origin, UrlError};
use crate::route::Scheme;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    pub original: String,
    pub scheme: Scheme,
    /// Lowercase; wildcards keep their `*.` prefix.
    pub host: String,
    /// `internal` for `.internal` hosts, else `public`.
    pub binding: Binding,
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

impl EndpointUrl {
    /// Checks a config endpoint URL with the shared rules
    /// ([`crate::control::url_rules`], origin `Config`): scheme and host
    /// required, ngrok's port and `.internal` rules, no public-suffix rule
    /// (the operator's names). `edge` gives the listener ports that count
    /// as 80 and 443.
    pub fn parse(url: &str, edge: &EdgeUrls) -> Result<EndpointUrl, ConfigError> {
        let err = |e: UrlError| ConfigError::Endpoint {
            url: url.to_owned(),
            reason: format!("{} ({})", e.message, e.error_code()),
        };
        let v = validate_url(url, None, Origin::Config, edge).map_err(err)?;
        let (Some(scheme), Some(host)) = (v.scheme.route(), v.host) else {
            // validate_url refuses both for the config origin.
            return Err(err(UrlError::new(9034, "Malformed URL: no host.")));
        };
        Ok(EndpointUrl {
            original: url.to_owned(),
            scheme,
            host,
            binding: v.binding,
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

    fn edge() -> EdgeUrls {
        EdgeUrls {
            http_port: 8080,
            https_port: Some(8443),
            base_domains: vec![],
            public_suffix_rule: true,
            serves_tcp_tls: false,
        }
    }

    #[test]
    fn endpoint_urls() {
        let e = edge();
        let u = EndpointUrl::parse("http://App.Example.com", &e).expect("ok");
        assert_eq!(u.host, "app.example.com");
        assert_eq!(u.binding, Binding::Public);
        assert_eq!(
            EndpointUrl::parse("http://*.example.com", &e)
                .expect("ok")
                .host,
            "*.example.com"
        );
        // The listener's own port counts as 80; the operator's names need
        // no public suffix; .internal is an internal endpoint.
        assert!(EndpointUrl::parse("http://app.example.com:8080", &e).is_ok());
        assert!(EndpointUrl::parse("http://app.example.com:80", &e).is_ok());
        assert!(EndpointUrl::parse("https://app.localhost", &e).is_ok());
        let i = EndpointUrl::parse("http://api.internal:9999", &e).expect("ok");
        assert_eq!(i.binding, Binding::Internal);
        for (bad, code) in [
            ("app.example.com", "ERR_NGROK_9034"),
            ("ftp://a.b", "ERR_NGROK_9036"),
            ("tcp://a.b:1", "ERR_NGROK_9036"),
            ("http://", "ERR_NGROK_9034"),
            ("http://a/b", "ERR_NGROK_9037"),
            ("http://a.b/", "ERR_NGROK_9038"),
            ("http://a..b", "ERR_NGROK_327"),
            ("http://*", "ERR_NGROK_403"),
            ("http://a.*.b", "ERR_NGROK_402"),
            ("http://u@a.b", "ERR_NGROK_9037"),
            ("http://app.example.com:81", "ERR_NGROK_9035"),
            ("http://a_b.example.com", "ERR_NGROK_355"),
        ] {
            let err = EndpointUrl::parse(bad, &e).expect_err(bad).to_string();
            assert!(err.contains(code), "{bad}: {err}");
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
