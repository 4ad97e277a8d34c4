//! One test per row of the spec's URL tables (§1.1, §1.2), then the
//! generic and domain-syntax errors, each with ngrok's code.

use super::*;

/// A production edge on 80/443 that also parses tls/tcp (rule tables).
fn all() -> EdgeUrls {
    EdgeUrls {
        serves_tcp_tls: true,
        ..EdgeUrls::production(vec!["ngrok.app".into()])
    }
}

/// The edge as built: http and https only.
fn prod() -> EdgeUrls {
    EdgeUrls::production(vec!["tunnel.example.com".into()])
}

fn dev() -> EdgeUrls {
    EdgeUrls {
        http_port: 8080,
        https_port: Some(8443),
        base_domains: vec!["ringress.localhost".into()],
        public_suffix_rule: false,
        serves_tcp_tls: false,
    }
}

fn ok(url: &str, binding: Option<Binding>, edge: &EdgeUrls) -> EndpointUrl {
    validate_url(url, binding, Origin::Agent, edge)
        .unwrap_or_else(|e| panic!("{url} should be valid: {e} ({})", e.code))
}

fn code(url: &str, binding: Option<Binding>, origin: Origin, edge: &EdgeUrls) -> u32 {
    match validate_url(url, binding, origin, edge) {
        Ok(u) => panic!("{url} should be refused, got {u:?}"),
        Err(e) => {
            assert!(!e.message.is_empty());
            e.code
        }
    }
}

fn agent_code(url: &str) -> u32 {
    code(url, None, Origin::Agent, &all())
}

// ----------------------------------------------------------- §1.1 public

#[test]
fn public_http_valid() {
    for url in [
        "http://example.ngrok.app",
        "http://example.ngrok.app:80",
        "http://example.party",
    ] {
        let u = ok(url, None, &all());
        assert_eq!(u.scheme, UrlScheme::Http);
        assert_eq!(u.binding, Binding::Public);
    }
}

#[test]
fn public_http_invalid() {
    let e = validate_url("http://example.ngrok.app:81", None, Origin::Agent, &all()).unwrap_err();
    assert_eq!(e.code, 9035);
    assert!(e.message.contains("must be 80, not 81"), "{}", e.message);
    let e = validate_url("http://example.doesnotexist", None, Origin::Agent, &all()).unwrap_err();
    assert_eq!(e.code, 331);
    assert!(
        e.message
            .contains(".doesnotexist is not a public suffix domain"),
        "{}",
        e.message
    );
    // .internal is not a public suffix: as a public endpoint it is refused.
    assert_eq!(
        code(
            "http://example.internal",
            Some(Binding::Public),
            Origin::Agent,
            &all()
        ),
        331
    );
}

#[test]
fn public_https_and_tls_valid() {
    for url in [
        "https://example.ngrok.app",
        "https://example.ngrok.app:443",
        "https://example.party",
        "tls://example.ngrok.app",
        "tls://example.ngrok.app:443",
    ] {
        ok(url, None, &all());
    }
}

#[test]
fn public_https_invalid() {
    assert_eq!(agent_code("https://example.ngrok.app:8443"), 9035);
    assert_eq!(agent_code("https://example.nosuchtld"), 331);
    assert_eq!(
        code(
            "https://example.internal",
            Some(Binding::Public),
            Origin::Agent,
            &all()
        ),
        331
    );
    assert_eq!(agent_code("tls://example.ngrok.app:8443"), 9035);
}

#[test]
fn public_tcp() {
    ok("tcp://1.tcp.ngrok.io:12345", None, &all());
    ok("tcp://1.tcp.eu.ngrok.io:12345", None, &all());
    // tcp needs a port.
    assert_eq!(agent_code("tcp://1.tcp.ngrok.io"), 9035);
}

#[test]
fn schemes_the_edge_does_not_serve() {
    for url in ["tcp://1.tcp.ngrok.io:12345", "tls://example.ngrok.app"] {
        assert_eq!(code(url, None, Origin::Agent, &prod()), 9036, "{url}");
    }
    let no_https = EdgeUrls {
        https_port: None,
        ..prod()
    };
    let e = validate_url("https://a.example.com", None, Origin::Agent, &no_https).unwrap_err();
    assert_eq!(e.code, 9036);
    assert!(e.message.contains("no HTTPS listener"), "{}", e.message);
    assert_eq!(
        code("ftp://a.example.com", None, Origin::Agent, &prod()),
        9036
    );
    assert_eq!(
        code("ftp://a.example.com", None, Origin::Cloud, &prod()),
        9036
    );
}

// --------------------------------------------------------- §1.1 internal

#[test]
fn internal_valid() {
    for url in [
        "https://example.internal",
        "https://example.foo.bar.internal",
        "https://example.internal:12345",
        "tls://example.internal",
        "tls://example.internal:12345",
        "tcp://example.internal:12345",
        "http://example.internal",
        "https://*.example.internal",
        "https://a.b.c.d.e.internal",
    ] {
        let u = ok(url, None, &all());
        assert_eq!(u.binding, Binding::Internal, "{url}: binding inferred");
        // An explicit internal binding gives the same result.
        assert_eq!(ok(url, Some(Binding::Internal), &all()), u);
    }
    // Internal endpoints take any port, whatever the edge listens on.
    assert_eq!(ok("http://api.internal:81", None, &prod()).port, Some(81));
}

#[test]
fn internal_invalid() {
    // At most 5 subdomain labels.
    let e = validate_url("https://a.b.c.d.e.f.internal", None, Origin::Agent, &all()).unwrap_err();
    assert_eq!(e.code, 9031);
    assert!(
        e.message.contains("at most 5 parts, but had 6"),
        "{}",
        e.message
    );
    // A hostname is mandatory.
    for url in ["https://", "", "https://internal"] {
        assert_eq!(
            code(url, Some(Binding::Internal), Origin::Agent, &all()),
            9028,
            "{url:?}"
        );
    }
    // Port range.
    assert_eq!(agent_code("https://example.internal:0"), 9030);
    assert_eq!(agent_code("https://example.internal:65536"), 9030);
    assert_eq!(agent_code("https://example.internal:99999"), 9030);
    // tcp must give a port.
    assert_eq!(agent_code("tcp://example.internal"), 9035);
    // An internal binding needs a .internal URL.
    assert_eq!(
        code(
            "https://example.ngrok.app",
            Some(Binding::Internal),
            Origin::Agent,
            &all()
        ),
        9029
    );
}

// ------------------------------------------------------- §1.1 kubernetes

#[test]
fn kubernetes_rows() {
    for url in [
        "http://app.example",
        "http://app.example:12345",
        "tcp://app.example:443",
        "tcp://app.example:12345",
    ] {
        ok(url, Some(Binding::Kubernetes), &all());
    }
    assert_eq!(
        code(
            "https://app.example",
            Some(Binding::Kubernetes),
            Origin::Agent,
            &all()
        ),
        9036
    );
    assert_eq!(
        code(
            "tls://app.example:12345",
            Some(Binding::Kubernetes),
            Origin::Agent,
            &all()
        ),
        9036
    );
    assert_eq!(
        code(
            "http://app.foo.bar",
            Some(Binding::Kubernetes),
            Origin::Agent,
            &all()
        ),
        9034
    );
    assert_eq!(
        code(
            "tcp://app.example",
            Some(Binding::Kubernetes),
            Origin::Agent,
            &all()
        ),
        9035
    );
    // The edge as built serves no kubernetes binding.
    assert_eq!(
        code(
            "http://app.example",
            Some(Binding::Kubernetes),
            Origin::Agent,
            &prod()
        ),
        15005
    );
}

// ------------------------------------------------------ §1.2 defaulting

#[test]
fn defaulting_table() {
    let rows: &[(&str, UrlScheme, Option<&str>, Option<u16>)] = &[
        (
            "https://example.ngrok.app",
            UrlScheme::Https,
            Some("example.ngrok.app"),
            None,
        ),
        (
            "http://example.ngrok.app",
            UrlScheme::Http,
            Some("example.ngrok.app"),
            None,
        ),
        (
            "example.ngrok.app",
            UrlScheme::Https,
            Some("example.ngrok.app"),
            None,
        ),
        (
            "app.example.com",
            UrlScheme::Https,
            Some("app.example.com"),
            None,
        ),
        (
            "https://example.internal",
            UrlScheme::Https,
            Some("example.internal"),
            None,
        ),
        (
            "https://example.internal:1234",
            UrlScheme::Https,
            Some("example.internal"),
            Some(1234),
        ),
        (
            "http://example.internal",
            UrlScheme::Http,
            Some("example.internal"),
            None,
        ),
        ("foo.internal", UrlScheme::Https, Some("foo.internal"), None),
        ("", UrlScheme::Https, None, None),
    ];
    let edge = all();
    for (given, scheme, host, port) in rows {
        let u = ok(given, None, &edge);
        assert_eq!(
            (u.scheme, u.host.as_deref(), u.port),
            (*scheme, *host, *port),
            "{given:?}"
        );
    }
    // What each row shows as its endpoint URL.
    let shown = |given: &str| {
        let u = ok(given, None, &edge);
        u.display(u.host.as_deref().unwrap_or("1eb2.ngrok.app"), &edge)
    };
    assert_eq!(shown("example.ngrok.app"), "https://example.ngrok.app");
    assert_eq!(
        shown("http://example.ngrok.app"),
        "http://example.ngrok.app"
    );
    assert_eq!(
        shown("https://example.internal:1234"),
        "https://example.internal:1234"
    );
    assert_eq!(shown("foo.internal"), "https://foo.internal");
    assert_eq!(shown(""), "https://1eb2.ngrok.app");
}

#[test]
fn scheme_only_shorthand_is_a_random_host() {
    for (given, scheme) in [("https://", UrlScheme::Https), ("http://", UrlScheme::Http)] {
        let u = ok(given, None, &prod());
        assert_eq!((u.scheme, u.host), (scheme, None));
    }
    // A random tcp address comes with its port.
    let u = ok("tcp://", None, &all());
    assert_eq!((u.host, u.port), (None, None));
}

#[test]
fn cloud_endpoints_need_scheme_and_host() {
    for url in ["", "https://", "example.ngrok.app", "not a url"] {
        assert_eq!(code(url, None, Origin::Cloud, &all()), 249, "{url:?}");
    }
    let u = validate_url("https://x.com:443", None, Origin::Cloud, &all()).unwrap();
    // The API shows the URL without the default port, hostport with it.
    assert_eq!(u.display("x.com", &all()), "https://x.com");
    assert_eq!(u.hostport("x.com"), "x.com:443");
}

#[test]
fn config_endpoints_need_scheme_and_host() {
    for url in ["", "https://", "app.example.com", "not a url"] {
        assert_eq!(code(url, None, Origin::Config, &prod()), 9034, "{url:?}");
    }
}

// ------------------------------------------- self-hosted ports and suffixes

#[test]
fn the_edge_listener_ports_count_as_80_and_443() {
    let d = dev();
    for url in [
        "http://app.ringress.localhost:8080",
        "http://app.ringress.localhost:80",
        "https://app.ringress.localhost:8443",
        "https://app.ringress.localhost:443",
        "https://app.ringress.localhost",
    ] {
        ok(url, None, &d);
    }
    let e = validate_url(
        "https://app.ringress.localhost:8080",
        None,
        Origin::Agent,
        &d,
    )
    .unwrap_err();
    assert_eq!(e.code, 9035);
    assert!(e.message.contains("`443, 8443`"), "{}", e.message);
    // Shown with the port the edge really listens on.
    let u = ok("https://app.ringress.localhost", None, &d);
    assert_eq!(
        u.display("app.ringress.localhost", &d),
        "https://app.ringress.localhost:8443"
    );
}

#[test]
fn public_suffix_rule_by_origin_and_mode() {
    // Production agents and the API: the PSL applies...
    assert_eq!(code("https://app.corp", None, Origin::Agent, &prod()), 331);
    assert_eq!(code("https://app.corp", None, Origin::Cloud, &prod()), 331);
    assert_eq!(
        code("https://app.localhost", None, Origin::Agent, &prod()),
        331
    );
    // ...except under the edge's own base domain, whatever its suffix.
    let intranet = EdgeUrls::production(vec!["tunnel.corp".into()]);
    ok("https://abc.tunnel.corp", None, &intranet);
    ok("https://*.tunnel.corp", None, &intranet);
    // A bare public suffix (or a wildcard of one) is no domain.
    assert_eq!(code("https://co.uk", None, Origin::Agent, &prod()), 331);
    assert_eq!(code("https://*.com", None, Origin::Agent, &prod()), 331);
    ok("https://*.example.com", None, &prod());
    // The operator's config is not held to it.
    validate_url("https://app.corp", None, Origin::Config, &prod()).unwrap();
    validate_url("http://app.localhost", None, Origin::Config, &prod()).unwrap();
    // --dev accepts any well-formed name.
    ok("https://x.test", None, &dev());
    ok("https://app.localhost", None, &dev());
}

// ------------------------------------------------------- generic errors

#[test]
fn generic_url_errors() {
    let e = validate_url("https://a.example.com/", None, Origin::Agent, &prod()).unwrap_err();
    assert_eq!(e.code, 9038);
    assert!(
        e.message.contains("Did you mean `https://a.example.com`?"),
        "{}",
        e.message
    );
    for (url, part) in [
        ("https://a.example.com/path", "path `/path`"),
        ("https://a.example.com?q=1", "query `?q=1`"),
        ("https://a.example.com#frag", "fragment `#frag`"),
        ("https://user:pw@a.example.com", "user `user:pw`"),
    ] {
        let e = validate_url(url, None, Origin::Agent, &prod()).unwrap_err();
        assert_eq!(e.code, 9037, "{url}");
        assert!(e.message.contains(part), "{}", e.message);
    }
    for url in [
        "https://a.example.com:",
        "https://a.example.com:x",
        "https://a:1:2",
        "https:// a.com",
    ] {
        assert_eq!(code(url, None, Origin::Agent, &prod()), 9034, "{url}");
    }
    assert_eq!(code("https://[::1]", None, Origin::Agent, &prod()), 326);
    // The API says 249 for what an agent hears as 9034.
    assert_eq!(
        code("https://a.example.com:x", None, Origin::Cloud, &prod()),
        249
    );
    // Case and a trailing dot are normalized.
    let u = ok("HTTPS://App.Example.COM.", None, &prod());
    assert_eq!(
        (u.scheme, u.host.as_deref()),
        (UrlScheme::Https, Some("app.example.com"))
    );
}

#[test]
fn bindings() {
    assert_eq!(parse_binding("").unwrap(), None);
    assert_eq!(parse_binding("Public").unwrap(), Some(Binding::Public));
    assert_eq!(parse_binding("internal").unwrap(), Some(Binding::Internal));
    assert_eq!(parse_binding("edge").unwrap_err().code, 15005);
    assert_eq!(parse_bindings(&[]).unwrap(), None);
    assert_eq!(
        parse_bindings(&["internal".into()]).unwrap(),
        Some(Binding::Internal)
    );
    assert_eq!(
        parse_bindings(&["public".into(), "public".into()])
            .unwrap_err()
            .code,
        15006
    );
    assert_eq!(
        parse_bindings(&["public".into(), "internal".into()])
            .unwrap_err()
            .code,
        15005
    );
}

// ------------------------------------------------------- domain syntax

#[test]
fn domain_syntax_codes() {
    let long_label = format!("{}.example.com", "a".repeat(64));
    let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    let rows: &[(&str, u32, u32)] = &[
        ("bad!.example.com", 326, 406),
        ("a..example.com", 327, 409),
        ("-a.example.com", 328, 407),
        ("a-.example.com", 329, 408),
        ("ab--c.example.com", 330, 410),
        ("xn--zz-.example.com", 329, 408),
        ("xn--99999999999.example.com", 347, 429),
        ("a_b.example.com", 355, 438),
        (&long_label, 396, 513),
        (&long_name, 397, 514),
        ("app.*.example.com", 402, 402),
        ("*-app.example.com", 403, 403),
        ("*", 403, 403),
    ];
    for (domain, endpoint, reservation) in rows {
        let e = check_domain(domain, DomainUse::Endpoint).unwrap_err();
        assert_eq!(e.code, *endpoint, "{domain}: {}", e.message);
        assert!(
            e.message.contains("Failed to create an endpoint") || e.code == 396 || e.code == 397
        );
        let e = check_domain(domain, DomainUse::Reservation).unwrap_err();
        assert_eq!(e.code, *reservation, "{domain}: {}", e.message);
    }
    for good in [
        "example.com",
        "*.example.com",
        "a-b.c9.example.com",
        "xn--mnchen-3ya.de",
        "1eb2-181-80-12-3.ngrok.app",
    ] {
        check_domain(good, DomainUse::Endpoint).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    // Through the URL validator, with the endpoint codes.
    assert_eq!(agent_code("https://bad_host!.example.com"), 355);
    assert_eq!(agent_code("https://bad!.example.com"), 326);
    assert_eq!(agent_code("https://app.*.example.com"), 402);
}

#[test]
fn punycode() {
    assert_eq!(punycode_decode("mnchen-3ya").unwrap(), "münchen");
    assert!(punycode_decode("").is_err());
    assert!(punycode_decode("a-").is_err());
    assert!(punycode_decode("99999999999").is_err());
}

#[test]
fn strictly_under() {
    assert!(is_strictly_under("a.example.com", "example.com"));
    assert!(!is_strictly_under("example.com", "example.com"));
    assert!(!is_strictly_under("badexample.com", "example.com"));
}
