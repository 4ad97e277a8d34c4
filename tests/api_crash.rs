//! Crash safety of the store: while a client issues 200 API writes, the
//! edge is killed with SIGKILL; after a restart every write the API had
//! acknowledged is there and the store is readable.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::*;

/// One POST over a fresh connection: the id from a 201, or None.
fn post(addr: SocketAddr, key: &str, path: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nNgrok-Version: 2\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 201") {
        return None;
    }
    let json = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// Every id of a list, following next_page_uri.
fn all_ids(base: &str, key: &str, path: &str, field: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = format!("{path}?limit=100");
    loop {
        let (s, body) = authed(base, key, "GET", &next, None);
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        for e in v[field].as_array().expect("list") {
            ids.push(e["id"].as_str().expect("id").to_owned());
        }
        match v["next_page_uri"].as_str() {
            Some(u) => next = u.strip_prefix(base).expect("same base").to_owned(),
            None => return ids,
        }
    }
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_write() {
    let data = data_dir();
    let edge = api_edge("", data.path());
    let key = bootstrap_key(&edge);
    let addr = edge.listener_addr("api");
    let acked_endpoints = Arc::new(Mutex::new(Vec::new()));
    let acked_credentials = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (key, eps, crs, done) = (
            key.clone(),
            acked_endpoints.clone(),
            acked_credentials.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            for i in 0..200 {
                if i % 2 == 0 {
                    let body = serde_json::json!({
                        "url": format!("http://crash{i}.ringress.localhost"),
                        "traffic_policy": "on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 200\n",
                    });
                    if let Some(id) = post(addr, &key, "/endpoints", &body.to_string()) {
                        eps.lock().expect("lock").push(id);
                    }
                } else if let Some(id) =
                    post(addr, &key, "/credentials", "{\"description\": \"crash\"}")
                {
                    crs.lock().expect("lock").push(id);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Kill in the middle of the stream of writes.
    assert!(common::wait_until(Duration::from_secs(60), || done
        .load(Ordering::SeqCst)
        >= 60));
    unsafe {
        libc::kill(edge.pid(), libc::SIGKILL);
    }
    writer.join().expect("writer");
    let eps = acked_endpoints.lock().expect("lock").clone();
    let crs = acked_credentials.lock().expect("lock").clone();
    assert!(
        eps.len() + crs.len() >= 60,
        "too few writes before the kill"
    );
    assert!(
        eps.len() + crs.len() < 200,
        "the kill came after every write"
    );
    drop(edge);

    let edge = api_edge("", data.path());
    let base = api_base(&edge);
    let stored_eps = all_ids(&base, &key, "/endpoints", "endpoints");
    let stored_crs = all_ids(&base, &key, "/credentials", "credentials");
    for id in &eps {
        assert!(stored_eps.contains(id), "acknowledged endpoint {id} lost");
    }
    for id in &crs {
        assert!(stored_crs.contains(id), "acknowledged credential {id} lost");
    }
    // At most the one write in flight at the kill is there unacknowledged.
    assert!(stored_eps.len() + stored_crs.len() <= eps.len() + crs.len() + 1);
    // The store is usable: a new write works, the restored endpoints route.
    assert!(post(addr_of(&edge), &key, "/credentials", "{}").is_some());
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: crash0.ringress.localhost",
        ])
        .arg(format!("http://{}/", edge.addr()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

fn addr_of(edge: &common::Edge) -> SocketAddr {
    edge.listener_addr("api")
}
