//! Domain ownership: the set of reserved domains (exact names and `*.`
//! wildcards), the rule deciding which hosts an agent may bind on a
//! production edge, and the rules for a new reserved-domain record (the
//! REST API's `/reserved_domains`: syntax, wildcards, `cname_target`).
//!
//! Sans-IO: no DNS look-ups (a CNAME is never checked here), no store, no
//! clock, no randomness of its own (callers pass the random label). The
//! set is immutable once built; the tunnel registry publishes it through
//! an `ArcSwap` and reads it at Bind, never on the request path.

use std::collections::BTreeSet;

use super::url_rules::{
    check_domain, check_public_suffix, is_strictly_under, parse_bindings, validate_url, Binding,
    DomainUse, EdgeUrls, EndpointUrl, Origin, UrlError,
};

/// Reserved domains: exact names and wildcards (`*.example.com` covers
/// every name below `example.com`, at any depth, and the wildcard
/// `*.example.com` itself, but not `example.com`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservedDomains {
    exact: BTreeSet<String>,
    /// The part after `*.`.
    wildcards: BTreeSet<String>,
}

impl ReservedDomains {
    pub fn new() -> ReservedDomains {
        ReservedDomains::default()
    }

    /// Builds the set from names the operator wrote (config): domain
    /// syntax and wildcard placement are checked (reservation codes); the
    /// public-suffix rule is not (the operator's names).
    pub fn from_list<'a>(
        list: impl IntoIterator<Item = &'a str>,
    ) -> Result<ReservedDomains, UrlError> {
        let mut set = ReservedDomains::new();
        for d in list {
            let d = normalize(d);
            if d.is_empty() {
                return Err(UrlError::new(406, "A reserved domain cannot be empty."));
            }
            check_domain(&d, DomainUse::Reservation)?;
            set.insert(&d);
        }
        Ok(set)
    }

    /// Adds a (valid, lowercase) domain; false if it was there already.
    pub fn insert(&mut self, domain: &str) -> bool {
        match domain.strip_prefix("*.") {
            Some(w) => self.wildcards.insert(w.to_owned()),
            None => self.exact.insert(domain.to_owned()),
        }
    }

    pub fn remove(&mut self, domain: &str) -> bool {
        match domain.strip_prefix("*.") {
            Some(w) => self.wildcards.remove(w),
            None => self.exact.remove(domain),
        }
    }

    /// This exact entry (name or `*.` wildcard) is reserved.
    pub fn contains(&self, domain: &str) -> bool {
        match domain.strip_prefix("*.") {
            Some(w) => self.wildcards.contains(w),
            None => self.exact.contains(domain),
        }
    }

    /// Some reservation covers `host` (lowercase; `*.x` for a wildcard
    /// endpoint): the same exact name, or a wildcard above it.
    pub fn covers(&self, host: &str) -> bool {
        if self.exact.contains(host) {
            return true;
        }
        // Walk the parents: a.b.example.com → b.example.com → example.com.
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.wildcards.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    /// Every entry, wildcards written `*.suffix`.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .iter()
            .cloned()
            .chain(self.wildcards.iter().map(|w| format!("*.{w}")))
    }

    /// Both sets together (config reservations plus the store's).
    pub fn union(&self, other: &ReservedDomains) -> ReservedDomains {
        let mut out = self.clone();
        out.exact.extend(other.exact.iter().cloned());
        out.wildcards.extend(other.wildcards.iter().cloned());
        out
    }
}

/// Lowercase, one trailing dot dropped.
pub fn normalize(domain: &str) -> String {
    domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

/// How an agent named its host (the codes differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSource {
    /// No name given: the edge picked `<12 hex>.<base>`.
    Random,
    /// `Subdomain` + base domain.
    Subdomain,
    /// `URL`, `Domain` or `Hostname`.
    Named,
}

/// What the edge knows when it decides whether a Bind may use a host.
#[derive(Debug, Clone, Copy)]
pub struct Ownership<'a> {
    /// `--dev`: any host.
    pub dev: bool,
    pub base_domains: &'a [String],
    pub reserved: &'a ReservedDomains,
}

/// A random name as the edge makes them: one label of 12 lowercase hex
/// digits directly under a base domain. Agents re-send the name they were
/// given when they reconnect, so such names stay bindable.
pub fn is_random_name(host: &str, base_domains: &[String]) -> bool {
    base_domains.iter().any(|b| {
        is_strictly_under(host, b) && {
            let label = &host[..host.len() - b.len() - 1];
            label.len() == 12
                && label
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        }
    })
}

impl Ownership<'_> {
    /// May an agent bind this public host? Under `--dev`, yes. Otherwise
    /// only a random name under a base domain, or a host a reserved domain
    /// covers (ngrok: "a public endpoint's hostname must match a Domain";
    /// random names are the exception). Internal endpoints never ask.
    pub fn authorize(&self, host: &str, source: HostSource) -> Result<(), UrlError> {
        if self.dev || source == HostSource::Random || self.reserved.covers(host) {
            return Ok(());
        }
        let base = self
            .base_domains
            .iter()
            .find(|b| is_strictly_under(host.strip_prefix("*.").unwrap_or(host), b));
        if host.starts_with("*.") {
            return Err(UrlError::new(
                318,
                format!("You must reserve a wildcard domain before you can use it to create endpoints. Failed to create an endpoint with the wildcard domain `{host}`. Reserve it with `ringress api reserved-domains create --domain '{host}'` or in [tunnel] reserved_domains."),
            ));
        }
        if let Some(base) = base {
            if is_random_name(host, self.base_domains) {
                return Ok(());
            }
            let label = &host[..host.len() - base.len() - 1];
            if label.contains('.') {
                let suggestion = format!("{}.{base}", label.replace('.', "-"));
                return Err(UrlError::new(
                    354,
                    format!("Failed to create an endpoint with the domain `{host}`. Nested subdomains of the base domain `{base}` must be reserved first. Alternatively, try `{suggestion}` instead."),
                ));
            }
            let how = match source {
                HostSource::Subdomain => "subdomain",
                _ => "name",
            };
            return Err(UrlError::new(
                313,
                format!("You must reserve the custom {how} `{host}` before you can use it to create endpoints (`ringress api reserved-domains create --domain {host}`, or [tunnel] reserved_domains). Without a name, the edge assigns a random one."),
            ));
        }
        Err(UrlError::new(
            319,
            format!("You must reserve a custom hostname before it can be used to create endpoints. Failed to create an endpoint with the domain `{host}`. Reserve it with `ringress api reserved-domains create --domain {host}` or in [tunnel] reserved_domains."),
        ))
    }
}

impl Ownership<'_> {
    /// The whole check for a public host: [`Ownership::authorize`], and
    /// before it, for a named host that no reservation covers and that is
    /// not under a base domain, the public-suffix rule (when `edge`
    /// enforces it), so `app.example.doesnotexist` gets `ERR_NGROK_331`.
    pub fn authorize_public(
        &self,
        host: &str,
        source: HostSource,
        edge: &EdgeUrls,
    ) -> Result<(), UrlError> {
        if edge.public_suffix_rule
            && source != HostSource::Random
            && !self.reserved.covers(host)
            && !edge.under_base_domain(host)
        {
            check_public_suffix(host, DomainUse::Endpoint)?;
        }
        self.authorize(host, source)
    }
}

/// A cloud endpoint's URL for the REST API (`POST`/`PATCH /endpoints`):
/// the shared URL rules with origin `Cloud` (`ERR_NGROK_249` when
/// malformed, scheme and host required), `bindings` as the API gives them,
/// then domain ownership as at Bind for a public host.
pub fn check_cloud_endpoint(
    url: &str,
    bindings: &[String],
    edge: &EdgeUrls,
    ownership: &Ownership<'_>,
) -> Result<EndpointUrl, UrlError> {
    let binding = parse_bindings(bindings)?;
    let u = validate_url(
        url,
        binding,
        Origin::Cloud,
        &EdgeUrls {
            public_suffix_rule: false,
            ..edge.clone()
        },
    )?;
    if let (Some(host), Binding::Public) = (&u.host, u.binding) {
        ownership.authorize_public(host, HostSource::Named, edge)?;
    }
    Ok(u)
}

/// The rules for new reserved-domain records (the API's
/// `POST /reserved_domains`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPolicy {
    /// The edge's base domains: names below them are the edge's own (no
    /// CNAME needed, `cname_target` is null, like ngrok-owned domains).
    pub base_domains: Vec<String>,
    /// CNAME targets are `<random>.cname.<cname_base>`; `None`: records get
    /// no `cname_target` (point an A/AAAA record at the edge instead).
    pub cname_base: Option<String>,
    /// Production: a reserved domain must sit below a public suffix
    /// (unless it is under a base domain).
    pub public_suffix_rule: bool,
}

/// A new reserved domain, checked, with what the user points DNS at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDomain {
    /// Lowercase, without a trailing dot; `*.` kept for wildcards.
    pub domain: String,
    pub wildcard: bool,
    /// The CNAME target for `domain` (null for names under a base domain).
    pub cname_target: Option<String>,
}

impl DomainPolicy {
    /// Checks `domain` for a new reservation against the set already
    /// reserved; `random` is a fresh random label (e.g. 12 hex digits)
    /// for the CNAME target.
    pub fn check_new(
        &self,
        domain: &str,
        existing: &ReservedDomains,
        random: &str,
    ) -> Result<NewDomain, UrlError> {
        let d = normalize(domain);
        if d.is_empty() {
            return Err(UrlError::new(406, "The domain to reserve is required."));
        }
        check_domain(&d, DomainUse::Reservation)?;
        let body = d.strip_prefix("*.").unwrap_or(&d);
        let wildcard = d.starts_with("*.");
        if let Some(base) = self.base_domains.iter().find(|b| *b == body) {
            return Err(if wildcard {
                UrlError::new(
                    416,
                    format!("You may not register a wildcard for all `{base}` domains. Failed to reserve `{d}`."),
                )
            } else {
                UrlError::new(
                    450,
                    format!("You are not allowed to reserve `{base}`: it is this edge's base domain. Failed to reserve domain `{d}`."),
                )
            });
        }
        let under_base = self.base_domains.iter().any(|b| is_strictly_under(body, b));
        if self.public_suffix_rule && !under_base {
            check_public_suffix(&d, DomainUse::Reservation)?;
        }
        if existing.contains(&d) {
            return Err(UrlError::new(
                413,
                format!("This domain is already reserved. Failed to reserve `{d}`."),
            ));
        }
        let cname_target = match (&self.cname_base, under_base) {
            (Some(base), false) => Some(format!("{random}.cname.{base}")),
            _ => None,
        };
        Ok(NewDomain {
            domain: d,
            wildcard,
            cname_target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> ReservedDomains {
        ReservedDomains::from_list(list.iter().copied()).expect("valid")
    }

    #[test]
    fn covers_exact_and_wildcards() {
        let s = set(&["app.example.com", "*.apps.example.org", "Shop.Example.NET."]);
        assert!(s.covers("app.example.com"));
        assert!(!s.covers("x.app.example.com"), "exact covers only itself");
        assert!(s.covers("shop.example.net"));
        assert!(s.covers("a.apps.example.org"));
        assert!(s.covers("a.b.c.apps.example.org"), "every depth");
        assert!(s.covers("*.apps.example.org"), "the wildcard endpoint");
        assert!(s.covers("*.x.apps.example.org"));
        assert!(!s.covers("apps.example.org"), "not the apex");
        assert!(!s.covers("badapps.example.org"));
        assert!(!s.covers("example.com"));
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            ["app.example.com", "shop.example.net", "*.apps.example.org"]
        );
    }

    #[test]
    fn list_syntax_errors() {
        for (bad, code) in [
            ("", 406),
            ("a..b.com", 409),
            ("app.*.example.com", 402),
            ("*-app.example.com", 403),
            ("a_b.example.com", 438),
            ("bad!.com", 406),
        ] {
            let e = ReservedDomains::from_list([bad]).unwrap_err();
            assert_eq!(e.code, code, "{bad}: {e}");
        }
    }

    #[test]
    fn insert_remove_union() {
        let mut a = set(&["a.example.com"]);
        assert!(a.insert("*.w.example.com"));
        assert!(!a.insert("*.w.example.com"));
        assert!(a.contains("*.w.example.com"));
        let b = set(&["b.example.com"]);
        let u = a.union(&b);
        assert!(u.covers("b.example.com") && u.covers("x.w.example.com"));
        assert!(a.remove("*.w.example.com"));
        assert!(!a.covers("x.w.example.com"));
    }

    #[test]
    fn random_names() {
        let bases = vec!["tunnel.example.com".to_owned()];
        assert!(is_random_name("0123456789ab.tunnel.example.com", &bases));
        assert!(!is_random_name("0123456789AB.tunnel.example.com", &bases));
        assert!(!is_random_name("0123456789a.tunnel.example.com", &bases));
        assert!(!is_random_name("x.0123456789ab.tunnel.example.com", &bases));
        assert!(!is_random_name("0123456789ab.example.com", &bases));
    }

    #[test]
    fn bind_authorization() {
        let bases = vec!["tunnel.example.com".to_owned()];
        let reserved = set(&[
            "app.example.com",
            "*.apps.example.com",
            "mine.tunnel.example.com",
        ]);
        let prod = Ownership {
            dev: false,
            base_domains: &bases,
            reserved: &reserved,
        };
        let allowed = |h: &str, s| prod.authorize(h, s).map_err(|e| e.code);
        assert_eq!(
            allowed("fe12ab34cd56.tunnel.example.com", HostSource::Random),
            Ok(())
        );
        // A reconnecting agent names its random host.
        assert_eq!(
            allowed("fe12ab34cd56.tunnel.example.com", HostSource::Named),
            Ok(())
        );
        assert_eq!(allowed("app.example.com", HostSource::Named), Ok(()));
        assert_eq!(allowed("x.apps.example.com", HostSource::Named), Ok(()));
        assert_eq!(allowed("*.apps.example.com", HostSource::Named), Ok(()));
        assert_eq!(
            allowed("mine.tunnel.example.com", HostSource::Subdomain),
            Ok(())
        );
        assert_eq!(allowed("other.example.com", HostSource::Named), Err(319));
        assert_eq!(allowed("*.example.com", HostSource::Named), Err(318));
        assert_eq!(allowed("*.tunnel.example.com", HostSource::Named), Err(318));
        assert_eq!(
            allowed("myapp.tunnel.example.com", HostSource::Subdomain),
            Err(313)
        );
        assert_eq!(
            allowed("myapp.tunnel.example.com", HostSource::Named),
            Err(313)
        );
        let e = prod
            .authorize("a.b.tunnel.example.com", HostSource::Named)
            .unwrap_err();
        assert_eq!(e.code, 354);
        assert!(e.message.contains("try `a-b.tunnel.example.com`"), "{e}");
        let dev = Ownership { dev: true, ..prod };
        assert_eq!(dev.authorize("anything.test", HostSource::Named), Ok(()));
    }

    #[test]
    fn cloud_endpoints() {
        let bases = vec!["tunnel.example.com".to_owned()];
        let reserved = set(&["app.example.com", "app.corp"]);
        let own = Ownership {
            dev: false,
            base_domains: &bases,
            reserved: &reserved,
        };
        let edge = EdgeUrls::production(bases.clone());
        let code = |url: &str, b: &[&str]| {
            let b: Vec<String> = b.iter().map(|s| s.to_string()).collect();
            check_cloud_endpoint(url, &b, &edge, &own)
                .map(|_| ())
                .map_err(|e| e.code)
        };
        assert_eq!(code("https://app.example.com", &[]), Ok(()));
        // Reserved by the operator: no public-suffix rule.
        assert_eq!(code("https://app.corp", &[]), Ok(()));
        assert_eq!(code("https://api.internal", &["internal"]), Ok(()));
        assert_eq!(code("https://api.internal", &[]), Ok(()));
        assert_eq!(code("https://", &[]), Err(249));
        assert_eq!(code("app.example.com", &[]), Err(249));
        assert_eq!(code("https://other.example.com", &[]), Err(319));
        assert_eq!(code("https://x.example.nosuchtld", &[]), Err(331));
        assert_eq!(
            code("https://app.example.com", &["public", "internal"]),
            Err(15005)
        );
    }

    #[test]
    fn new_reservations() {
        let policy = DomainPolicy {
            base_domains: vec!["tunnel.example.com".into()],
            cname_base: Some("tunnel.example.com".into()),
            public_suffix_rule: true,
        };
        let existing = set(&["taken.example.com"]);
        let n = policy
            .check_new("App.Example.com.", &existing, "0123456789ab")
            .unwrap();
        assert_eq!(n.domain, "app.example.com");
        assert!(!n.wildcard);
        assert_eq!(
            n.cname_target.as_deref(),
            Some("0123456789ab.cname.tunnel.example.com")
        );
        let w = policy.check_new("*.example.org", &existing, "r").unwrap();
        assert!(w.wildcard);
        // Under the base domain: the edge's own name, no CNAME.
        let own = policy
            .check_new("myapp.tunnel.example.com", &existing, "r")
            .unwrap();
        assert_eq!(own.cname_target, None);
        let code = |d: &str| policy.check_new(d, &existing, "r").unwrap_err().code;
        assert_eq!(code(""), 406);
        assert_eq!(code("taken.example.com"), 413);
        assert_eq!(code("app.*.example.com"), 402);
        assert_eq!(code("*-x.example.com"), 403);
        assert_eq!(code("a..example.com"), 409);
        assert_eq!(code("x.doesnotexist"), 411);
        assert_eq!(code("*.com"), 416);
        assert_eq!(code("co.uk"), 411);
        assert_eq!(code("*.tunnel.example.com"), 416);
        assert_eq!(code("tunnel.example.com"), 450);
        // Without a CNAME base, and without the suffix rule (--dev).
        let dev = DomainPolicy {
            cname_base: None,
            public_suffix_rule: false,
            ..policy
        };
        let n = dev.check_new("app.localhost", &existing, "r").unwrap();
        assert_eq!(n.cname_target, None);
    }
}
