//! Endpoint URL rules: the one validator behind the REST API (cloud
//! endpoints), agent Bind and the config file, so a URL means the same
//! thing wherever it is written (ngrok's rules, spec §1.1–1.5).
//!
//! Sans-IO and pure: it never resolves a name, reads a file or looks at
//! the network; the only data it consults is the Public Suffix List
//! compiled into the `psl` crate. It never decides domain *ownership*
//! (that is [`super::domains`]); it decides whether a URL is well formed
//! for its binding, scheme and port, and fills in ngrok's defaults.

use thiserror::Error;

use crate::route::Scheme;

/// URL schemes ngrok knows. The edge serves `http` and `https` today;
/// `tls` and `tcp` are parsed so their errors are ngrok's, then refused as
/// not served (`ERR_NGROK_9036`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UrlScheme {
    Http,
    Https,
    Tls,
    Tcp,
}

impl UrlScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
            UrlScheme::Tls => "tls",
            UrlScheme::Tcp => "tcp",
        }
    }

    fn parse(s: &str) -> Option<UrlScheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(UrlScheme::Http),
            "https" => Some(UrlScheme::Https),
            "tls" => Some(UrlScheme::Tls),
            "tcp" => Some(UrlScheme::Tcp),
            _ => None,
        }
    }

    /// The port a public endpoint of this scheme must use (none for tcp).
    pub fn public_port(self) -> Option<u16> {
        match self {
            UrlScheme::Http => Some(80),
            UrlScheme::Https | UrlScheme::Tls => Some(443),
            UrlScheme::Tcp => None,
        }
    }

    /// The routing scheme, for the schemes the edge serves.
    pub fn route(self) -> Option<Scheme> {
        match self {
            UrlScheme::Http => Some(Scheme::Http),
            UrlScheme::Https => Some(Scheme::Https),
            UrlScheme::Tls | UrlScheme::Tcp => None,
        }
    }
}

/// Where an endpoint is reachable from (spec §1.5): exactly one per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    Public,
    Internal,
    Kubernetes,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Public => "public",
            Binding::Internal => "internal",
            Binding::Kubernetes => "kubernetes",
        }
    }
}

/// Who wrote the URL; the defaults and a few rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An agent's Bind (`ringress http --url`, an SDK's `domain=`): scheme
    /// defaults to https, a missing host means a random one.
    Agent,
    /// A cloud endpoint made through the REST API: scheme and host are
    /// required, malformed URLs are `ERR_NGROK_249`.
    Cloud,
    /// `[[endpoints]]` in the edge's config: scheme and host required; the
    /// operator's names are not held to the public-suffix rule.
    Config,
}

/// A refused URL or domain: ngrok's error code and a message in ngrok's
/// words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct UrlError {
    pub code: u32,
    pub message: String,
}

impl UrlError {
    pub fn new(code: u32, message: impl Into<String>) -> UrlError {
        UrlError {
            code,
            message: message.into(),
        }
    }

    /// `ERR_NGROK_<code>`, as the API's `error_code` and agents show it.
    pub fn error_code(&self) -> String {
        format!("ERR_NGROK_{}", self.code)
    }
}

/// What the edge serves: the context of every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUrls {
    /// The public HTTP listener's port. A public `http` URL may say `:80`
    /// or this port (a self-hosted edge on 8080 serves `:8080` as its 80).
    pub http_port: u16,
    /// The public HTTPS listener's port; `None` when the edge has no HTTPS
    /// listener (then `https` endpoints are not served).
    pub https_port: Option<u16>,
    /// The edge's own base domains (random names live there). Names under
    /// them are the edge's, so the public-suffix rule does not apply.
    pub base_domains: Vec<String>,
    /// Enforce "the hostname must end in a public suffix" (production);
    /// off under `--dev`, where `*.localhost` is the point.
    pub public_suffix_rule: bool,
    /// Also accept `tls://` and `tcp://` (rule tests only: the edge does
    /// not serve them yet).
    pub serves_tcp_tls: bool,
}

impl EdgeUrls {
    /// A production edge on the standard ports.
    pub fn production(base_domains: Vec<String>) -> EdgeUrls {
        EdgeUrls {
            http_port: 80,
            https_port: Some(443),
            base_domains,
            public_suffix_rule: true,
            serves_tcp_tls: false,
        }
    }

    fn served(&self) -> Vec<UrlScheme> {
        let mut v = vec![UrlScheme::Http];
        if self.https_port.is_some() {
            v.push(UrlScheme::Https);
        }
        if self.serves_tcp_tls {
            v.extend([UrlScheme::Tls, UrlScheme::Tcp]);
        }
        v
    }

    /// The ports a public URL of this scheme may name: the scheme's own
    /// (80/443) and the edge's listener port for it.
    pub fn allowed_ports(&self, scheme: UrlScheme) -> Vec<u16> {
        let listener = match scheme {
            UrlScheme::Http => Some(self.http_port),
            UrlScheme::Https | UrlScheme::Tls => self.https_port,
            UrlScheme::Tcp => None,
        };
        let mut v: Vec<u16> = scheme.public_port().into_iter().collect();
        if let Some(p) = listener {
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v
    }

    /// The port the edge actually serves this scheme on (for shown URLs).
    pub fn listener_port(&self, scheme: UrlScheme) -> Option<u16> {
        match scheme {
            UrlScheme::Http => Some(self.http_port),
            UrlScheme::Https | UrlScheme::Tls => self.https_port,
            UrlScheme::Tcp => None,
        }
    }

    /// `host` is one of the base domains or below one.
    pub fn under_base_domain(&self, host: &str) -> bool {
        let body = host.strip_prefix("*.").unwrap_or(host);
        self.base_domains
            .iter()
            .any(|b| body == b || is_strictly_under(body, b))
    }
}

/// A valid endpoint URL, with ngrok's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    pub scheme: UrlScheme,
    /// Lowercase, without a trailing dot; wildcards keep `*.`. `None`: the
    /// edge picks a random name (agent endpoints only).
    pub host: Option<String>,
    /// The port as written, if any.
    pub port: Option<u16>,
    pub binding: Binding,
}

impl EndpointUrl {
    pub fn is_wildcard(&self) -> bool {
        self.host.as_deref().is_some_and(|h| h.starts_with("*."))
    }

    /// The URL as the API and agents show it for `host`: the port appears
    /// only when it is not the scheme's default (so `https://x.com:443`
    /// shows as `https://x.com`, as ngrok does). Public URLs show the
    /// edge's listener port.
    pub fn display(&self, host: &str, edge: &EdgeUrls) -> String {
        let port = match self.binding {
            Binding::Public => edge.listener_port(self.scheme).or(self.port),
            Binding::Internal | Binding::Kubernetes => self.port,
        };
        match port {
            Some(p) if Some(p) != self.scheme.public_port() => {
                format!("{}://{host}:{p}", self.scheme.as_str())
            }
            _ => format!("{}://{host}", self.scheme.as_str()),
        }
    }

    /// `host:port` with the effective port (the default when none given).
    pub fn hostport(&self, host: &str) -> String {
        match self.port.or(self.scheme.public_port()) {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }
}

/// Parses `binding` as ngrok spells it (`public`, `internal`,
/// `kubernetes`); empty means "infer from the URL".
pub fn parse_binding(binding: &str) -> Result<Option<Binding>, UrlError> {
    match binding.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "public" => Ok(Some(Binding::Public)),
        "internal" => Ok(Some(Binding::Internal)),
        "kubernetes" => Ok(Some(Binding::Kubernetes)),
        _ => Err(UrlError::new(
            15005,
            format!("The binding `{binding}` is invalid."),
        )),
    }
}

/// A list of bindings (the API's and Bind's shape): at most one.
pub fn parse_bindings(bindings: &[String]) -> Result<Option<Binding>, UrlError> {
    let mut out = None;
    for b in bindings {
        let parsed = parse_binding(b)?;
        match (out, parsed) {
            (Some(a), Some(b)) if a == b => {
                return Err(UrlError::new(
                    15006,
                    format!(
                        "The binding `{}` was specified multiple times, but duplicate bindings are not allowed.",
                        b.as_str()
                    ),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(UrlError::new(
                    15005,
                    "An endpoint has exactly one binding; more than one was given.",
                ))
            }
            (None, p) => out = p,
            (Some(_), None) => {}
        }
    }
    Ok(out)
}

/// Checks an endpoint URL written by `origin` for `binding` (`None`:
/// inferred, `internal` for `.internal` hosts, else `public`) against the
/// edge's facts. Every refusal carries ngrok's code.
pub fn validate_url(
    input: &str,
    binding: Option<Binding>,
    origin: Origin,
    edge: &EdgeUrls,
) -> Result<EndpointUrl, UrlError> {
    let malformed = |why: &str| -> UrlError {
        match origin {
            Origin::Cloud => UrlError::new(
                249,
                format!(
                    "The endpoint URL provided is not a valid URL: {input}. Ensure the URL has a proper scheme, domain, and if a TCP url, port. ({why})"
                ),
            ),
            Origin::Agent | Origin::Config => {
                UrlError::new(9034, format!("Malformed URL: {why}."))
            }
        }
    };
    if input
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(malformed("the URL contains whitespace"));
    }
    let (scheme, rest) = match input.split_once("://") {
        Some((s, rest)) => {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            {
                return Err(malformed(&format!("{s:?} is not a URL scheme")));
            }
            let scheme = UrlScheme::parse(s).ok_or_else(|| scheme_error(s, edge))?;
            (scheme, rest)
        }
        None => {
            if origin != Origin::Agent {
                return Err(match origin {
                    Origin::Cloud => malformed("a cloud endpoint URL needs a scheme and a host"),
                    _ => {
                        malformed("the URL needs a scheme and a host, like https://app.example.com")
                    }
                });
            }
            (UrlScheme::Https, input)
        }
    };
    // Authority, then whatever follows it.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if tail == "/" {
        let mut without = input.to_owned();
        without.pop();
        return Err(UrlError::new(
            9038,
            format!("Invalid URL, trailing '/' is not allowed. Did you mean `{without}`?"),
        ));
    }
    if !tail.is_empty() {
        let (name, part) = match tail.as_bytes()[0] {
            b'/' => ("path", tail.split(['?', '#']).next().unwrap_or(tail)),
            b'?' => ("query", tail.split('#').next().unwrap_or(tail)),
            _ => ("fragment", tail),
        };
        return Err(not_allowed(input, name, part));
    }
    if let Some((user, _)) = authority.rsplit_once('@') {
        return Err(not_allowed(input, "user", user));
    }
    if authority.starts_with('[') {
        return Err(UrlError::new(
            326,
            format!(
                "Invalid character `[` in domain name. Valid domains may contain only a-z, A-Z, 0-9, . * and - characters. Failed to create an endpoint with the domain `{authority}`."
            ),
        ));
    }
    let (host, port) = match authority.split_once(':') {
        None => (authority, None),
        Some((_, p)) if p.contains(':') => {
            return Err(malformed("too many colons in the host"));
        }
        Some((h, p)) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(&format!("invalid port {p:?}")));
            }
            match p.parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => (h, Some(n as u16)),
                _ => {
                    return Err(UrlError::new(
                        9030,
                        format!(
                            "Failed to start endpoint with URL `{input}`, invalid port. Port must be in range 1-65535."
                        ),
                    ))
                }
            }
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();

    // The binding: given, or inferred from `.internal`.
    let is_internal_host = host == "internal" || host.ends_with(".internal");
    let binding = match binding {
        Some(b) => b,
        None if is_internal_host => Binding::Internal,
        None => Binding::Public,
    };

    if host.is_empty() {
        return match (binding, origin) {
            (Binding::Internal, _) | (Binding::Kubernetes, _) => Err(UrlError::new(
                9028,
                format!(
                    "You must specify a domain name for a {} bound endpoint.",
                    if binding == Binding::Internal {
                        "internally"
                    } else {
                        "kubernetes"
                    }
                ),
            )),
            (Binding::Public, Origin::Agent) => {
                let url = EndpointUrl {
                    scheme,
                    host: None,
                    port,
                    binding,
                };
                check_port(&url, edge)?;
                check_served(&url, edge)?;
                Ok(url)
            }
            (Binding::Public, Origin::Cloud) => {
                Err(malformed("a cloud endpoint URL needs a scheme and a host"))
            }
            (Binding::Public, Origin::Config) => Err(malformed(
                "the URL needs a host, like https://app.example.com",
            )),
        };
    }
    check_domain(&host, DomainUse::Endpoint)?;

    match binding {
        Binding::Internal => {
            if !is_internal_host {
                return Err(UrlError::new(
                    9029,
                    format!(
                        "Failed to start endpoint with `{input}`. Endpoints with a \"internal\" binding must have a url that ends in \".internal\"."
                    ),
                ));
            }
            let depth = host.split('.').count() - 1;
            if depth == 0 {
                return Err(UrlError::new(
                    9028,
                    "You must specify a domain name for a internally bound endpoint.",
                ));
            }
            if depth > 5 {
                return Err(UrlError::new(
                    9031,
                    format!(
                        "Failed to start endpoint with URL `{input}`. Endpoints must have at most 5 parts, but had {depth}."
                    ),
                ));
            }
            if scheme == UrlScheme::Tcp && port.is_none() {
                return Err(port_required(scheme));
            }
        }
        Binding::Kubernetes => {
            if !matches!(scheme, UrlScheme::Http | UrlScheme::Tcp) {
                return Err(UrlError::new(
                    9036,
                    format!(
                        "Invalid scheme `{}`, allowed schemes: `http, tcp`.",
                        scheme.as_str()
                    ),
                ));
            }
            if host.starts_with("*.") || host.split('.').count() != 2 {
                return Err(malformed(
                    "a kubernetes endpoint URL is scheme://name.namespace[:port], without wildcards",
                ));
            }
            if scheme == UrlScheme::Tcp && port.is_none() {
                return Err(port_required(scheme));
            }
        }
        Binding::Public => {
            if is_internal_host {
                return Err(UrlError::new(
                    331,
                    format!(
                        "You may not create an endpoint using a domain with the TLD `.internal`. This TLD is not reachable over the public internet. Failed to create an endpoint with the domain `{host}`."
                    ),
                ));
            }
            if edge.public_suffix_rule && origin != Origin::Config && !edge.under_base_domain(&host)
            {
                check_public_suffix(&host, DomainUse::Endpoint)?;
            }
        }
    }
    let url = EndpointUrl {
        scheme,
        host: Some(host),
        port,
        binding,
    };
    check_port(&url, edge)?;
    check_served(&url, edge)?;
    Ok(url)
}

fn scheme_error(given: &str, edge: &EdgeUrls) -> UrlError {
    let allowed: Vec<&str> = edge.served().iter().map(|s| s.as_str()).collect();
    UrlError::new(
        9036,
        format!(
            "Invalid scheme `{given}`, allowed schemes: `{}`.",
            allowed.join(", ")
        ),
    )
}

fn not_allowed(input: &str, name: &str, part: &str) -> UrlError {
    UrlError::new(
        9037,
        format!("Invalid URL `{input}`, {name} `{part}` is not allowed."),
    )
}

fn port_required(scheme: UrlScheme) -> UrlError {
    UrlError::new(
        9035,
        format!(
            "Invalid port for URL with scheme `{}`, allowed ports are `1-65535` (a port is required).",
            scheme.as_str()
        ),
    )
}

/// Public endpoints: 80 for http, 443 for https and tls (or the edge's own
/// listener port for that scheme); tcp needs a port. Internal and
/// kubernetes endpoints take any port (range-checked when parsed).
fn check_port(url: &EndpointUrl, edge: &EdgeUrls) -> Result<(), UrlError> {
    if url.binding != Binding::Public {
        return Ok(());
    }
    if url.scheme == UrlScheme::Tcp {
        // `tcp://` alone asks for a random address, port included.
        return match (url.port, &url.host) {
            (None, Some(_)) => Err(port_required(url.scheme)),
            _ => Ok(()),
        };
    }
    let Some(port) = url.port else {
        return Ok(());
    };
    let allowed = edge.allowed_ports(url.scheme);
    if allowed.contains(&port) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|p| p.to_string()).collect();
    Err(UrlError::new(
        9035,
        format!(
            "Invalid port for URL with scheme `{}`, allowed ports are `{}` (port number must be {}, not {port}).",
            url.scheme.as_str(),
            list.join(", "),
            list.join(" or "),
        ),
    ))
}

/// What this edge serves: http always, https with an HTTPS listener, and
/// neither tls/tcp nor kubernetes bindings (yet).
fn check_served(url: &EndpointUrl, edge: &EdgeUrls) -> Result<(), UrlError> {
    if !edge.served().contains(&url.scheme) {
        let mut e = scheme_error(url.scheme.as_str(), edge);
        if url.scheme == UrlScheme::Https {
            e.message.push_str(" This edge has no HTTPS listener.");
        }
        return Err(e);
    }
    if url.binding == Binding::Kubernetes && !edge.serves_tcp_tls {
        return Err(UrlError::new(
            15005,
            "The binding `kubernetes` is invalid: this edge serves public and internal endpoints.",
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ domain names

/// Which family of ngrok codes a domain error takes: endpoint creation
/// (326–331, 347, 355, 396, 397) or domain reservation (406–411, 429, 438,
/// 513, 514). Wildcard placement is 402/403 for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainUse {
    Endpoint,
    Reservation,
}

impl DomainUse {
    fn code(self, endpoint: u32, reservation: u32) -> u32 {
        match self {
            DomainUse::Endpoint => endpoint,
            DomainUse::Reservation => reservation,
        }
    }

    fn failed(self, domain: &str) -> String {
        match self {
            DomainUse::Endpoint => {
                format!("Failed to create an endpoint with the domain `{domain}`.")
            }
            DomainUse::Reservation => format!("Failed to reserve `{domain}`."),
        }
    }
}

/// Domain syntax (lowercase input, no trailing dot): characters, label
/// shapes and lengths, punycode, and `*` only as the whole first label.
pub fn check_domain(domain: &str, usage: DomainUse) -> Result<(), UrlError> {
    let failed = usage.failed(domain);
    if domain.len() > 253 {
        return Err(UrlError::new(
            usage.code(397, 514),
            format!("Domain `{domain}` is not a valid DNS name. Domains may not be more than 253 characters long."),
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '-')))
    {
        if c == '_' {
            return Err(UrlError::new(
                usage.code(355, 438),
                format!("Invalid '_' in domain name. Valid domains may not contain underscores. {failed}"),
            ));
        }
        return Err(UrlError::new(
            usage.code(326, 406),
            format!("Invalid character `{c}` in domain name. Valid domains may contain only a-z, A-Z, 0-9, . * and - characters. {failed}"),
        ));
    }
    if domain.contains("..") {
        return Err(UrlError::new(
            usage.code(327, 409),
            format!("Domain has an invalid character sequence. Valid domains may not contain repeated periods '..'. {failed}"),
        ));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if label.contains('*') {
            if i > 0 {
                return Err(UrlError::new(
                    402,
                    format!("Only the first part of a domain may be a '*' wildcard. {failed}"),
                ));
            }
            if *label != "*" {
                return Err(UrlError::new(
                    403,
                    format!("The first subdomain of a wildcard domain must be a single '*' character. {failed}"),
                ));
            }
            if labels.len() == 1 {
                return Err(UrlError::new(
                    403,
                    format!("A wildcard domain needs a domain after '*.'. {failed}"),
                ));
            }
            continue;
        }
        if label.len() > 63 {
            return Err(UrlError::new(
                usage.code(396, 513),
                format!("Domain `{domain}` is not a valid DNS name. No domain part may be more than 63 characters long."),
            ));
        }
        let bytes = label.as_bytes();
        match bytes.first() {
            Some(b) if b.is_ascii_alphanumeric() => {}
            _ => {
                return Err(UrlError::new(
                    usage.code(328, 407),
                    format!("Domain part `{label}` has an invalid first character. Valid domain parts must begin with a-z, A-Z, 0-9 or *. {failed}"),
                ))
            }
        }
        if !bytes.last().is_some_and(|b| b.is_ascii_alphanumeric()) {
            return Err(UrlError::new(
                usage.code(329, 408),
                format!("Domain part `{label}` has an invalid last character. Valid domains must end with a-z A-Z or 0-9. {failed}"),
            ));
        }
        if bytes.len() >= 4 && &bytes[2..4] == b"--" {
            if !label.starts_with("xn--") {
                return Err(UrlError::new(
                    usage.code(330, 410),
                    format!("Domain has an invalid character sequence. Valid domains may not contain '--' in positions 3 and 4 unless the domain has a punycode prefix of 'xn--'. {failed}"),
                ));
            }
            if let Err(why) = punycode_decode(&label[4..]) {
                return Err(UrlError::new(
                    usage.code(347, 429),
                    format!("Domain has invalid punycode: {why}. {failed}"),
                ));
            }
        }
    }
    Ok(())
}

/// The public-suffix rule (seed: "the hostname must be a domain with a
/// valid public suffix"): the name (a wildcard's part after `*.`) must sit
/// strictly below a suffix listed on the Public Suffix List.
pub fn check_public_suffix(host: &str, usage: DomainUse) -> Result<(), UrlError> {
    let body = host.strip_prefix("*.").unwrap_or(host);
    let failed = usage.failed(host);
    let suffix = psl::suffix(body.as_bytes());
    let known = suffix.is_some_and(|s| s.is_known());
    let tld = suffix
        .and_then(|s| std::str::from_utf8(s.as_bytes()).ok())
        .unwrap_or(body);
    if !known {
        return Err(UrlError::new(
            usage.code(331, 411),
            format!("You may not use a domain with the TLD `.{tld}`: .{tld} is not a public suffix domain, so the TLD is not reachable over the public internet. {failed}"),
        ));
    }
    if psl::domain(body.as_bytes()).is_none() {
        if host.starts_with("*.") && usage == DomainUse::Reservation {
            return Err(UrlError::new(
                416,
                format!("You may not register a wildcard for all `{body}` domains. {failed}"),
            ));
        }
        return Err(UrlError::new(
            usage.code(331, 411),
            format!("`{body}` is a public suffix itself: use a name below it. {failed}"),
        ));
    }
    Ok(())
}

/// `a` is a proper subdomain of `b` (both lowercase).
pub fn is_strictly_under(a: &str, b: &str) -> bool {
    a.len() > b.len() + 1 && a.ends_with(b) && a.as_bytes()[a.len() - b.len() - 1] == b'.'
}

/// RFC 3492 decoding, only to tell valid punycode from invalid; returns
/// the decoded label.
fn punycode_decode(input: &str) -> Result<String, &'static str> {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    const SKEW: u32 = 38;
    const DAMP: u32 = 700;
    fn adapt(mut delta: u32, points: u32, first: bool) -> u32 {
        delta /= if first { DAMP } else { 2 };
        delta += delta / points;
        let mut k = 0;
        while delta > ((BASE - TMIN) * TMAX) / 2 {
            delta /= BASE - TMIN;
            k += BASE;
        }
        k + (BASE - TMIN + 1) * delta / (delta + SKEW)
    }
    if input.is_empty() {
        return Err("empty punycode label");
    }
    let (basic, encoded) = match input.rfind('-') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => ("", input),
    };
    let mut out: Vec<char> = basic.chars().collect();
    let (mut n, mut i, mut bias) = (128u32, 0u32, 72u32);
    let mut it = encoded.bytes().peekable();
    if encoded.is_empty() {
        return Err("no encoded characters");
    }
    while it.peek().is_some() {
        let old_i = i;
        let mut w = 1u32;
        let mut k = BASE;
        loop {
            let b = it.next().ok_or("truncated punycode")?;
            let digit = match b {
                b'a'..=b'z' => (b - b'a') as u32,
                b'0'..=b'9' => (b - b'0') as u32 + 26,
                _ => return Err("invalid punycode digit"),
            };
            i = i
                .checked_add(digit.checked_mul(w).ok_or("punycode overflow")?)
                .ok_or("punycode overflow")?;
            let t = if k <= bias {
                TMIN
            } else if k >= bias + TMAX {
                TMAX
            } else {
                k - bias
            };
            if digit < t {
                break;
            }
            w = w.checked_mul(BASE - t).ok_or("punycode overflow")?;
            k += BASE;
        }
        let len = out.len() as u32 + 1;
        bias = adapt(i - old_i, len, old_i == 0);
        n = n.checked_add(i / len).ok_or("punycode overflow")?;
        i %= len;
        let c = char::from_u32(n).ok_or("invalid code point")?;
        if c.is_ascii() {
            return Err("punycode encodes an ASCII character");
        }
        out.insert(i as usize, c);
        i += 1;
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
#[path = "url_rules_tests.rs"]
mod tests;
