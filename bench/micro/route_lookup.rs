//! Micro benchmark: host normalization and route lookup (exact, wildcard
//! at depth, miss) in a table of 10k endpoints.

#[path = "harness.rs"]
mod harness;

use std::sync::Arc;

use ringress::route::{normalize_host, Endpoint, RouteTable, Scheme};

fn endpoint(host: String) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        url: format!("http://{host}"),
        scheme: Scheme::Http,
        host,
        upstream: None,
        policy: None,
        tunnel: None,
        observe: Default::default(),
    })
}

fn main() {
    let mut table = RouteTable::default();
    for i in 0..10_000 {
        table.insert(endpoint(format!("app{i}.example.com")));
    }
    for i in 0..100 {
        table.insert(endpoint(format!("*.tenant{i}.example.net")));
    }
    let mut host = String::new();
    harness::bench("normalize + exact hit (10k table)", || {
        normalize_host(b"App5000.Example.com:8080", &mut host);
        table.lookup(&host).is_some()
    });
    harness::bench("normalize + wildcard hit at depth 3", || {
        normalize_host(b"a.b.c.tenant42.example.net", &mut host);
        table.lookup(&host).is_some()
    });
    harness::bench("normalize + miss", || {
        normalize_host(b"nothing.here.example.org", &mut host);
        table.lookup(&host).is_some()
    });
}
