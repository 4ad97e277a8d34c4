//! Hostile tunnel input: each kind of bad frame or message ends only the
//! offending session. After every attack, an agent on the same edge still
//! serves its endpoint.

mod common;

use std::time::Duration;

use common::agent::*;
use common::*;

/// An edge with a well-behaved agent online, and a raw session to attack
/// it with.
fn setup() -> (Edge, Agent, Upstream) {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://good.ringress.localhost"],
    );
    (edge, agent, up)
}

fn raw(edge: &Edge) -> RawSession {
    RawSession::connect(edge.listener_addr("tunnel"), &dev_ca(edge))
}

fn assert_good_agent_serves(edge: &Edge) {
    let r = get(edge.addr(), "good.ringress.localhost", "/still-here");
    assert_eq!(r.status, 200, "the well-behaved agent must be unaffected");
}

#[test]
fn heartbeat_is_echoed_even_before_auth() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.send(&frame(TY_DATA, SYN, 3, &0xFFFF_FFFFu32.to_be_bytes()))
        .unwrap();
    s.send(&frame(TY_DATA, 0, 3, b"ping")).unwrap();
    loop {
        let (ty, _, id, body) = s.read_frame().expect("echo");
        if ty == TY_DATA && id == 3 {
            assert_eq!(body, b"ping");
            break;
        }
    }
    let reply = s.auth_on(5);
    assert!(reply.contains("\"ClientId\""), "{reply}");
}

#[test]
fn unknown_frame_type_ends_the_session() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.auth();
    s.send(&frame(7, 0, 3, b"????")).unwrap();
    assert!(s.closed_within(Duration::from_secs(5)));
    assert_good_agent_serves(&edge);
}

#[test]
fn malformed_rst_and_wndinc_lengths_end_the_session() {
    let (edge, _agent, _up) = setup();
    for bad in [
        frame(TY_RST, 0, 5, &[0, 0, 1]),
        frame(TY_WNDINC, 0, 5, &[0, 0, 0, 0, 1]),
    ] {
        let mut s = raw(&edge);
        s.auth();
        s.send(&bad).unwrap();
        assert!(s.closed_within(Duration::from_secs(5)));
    }
    assert_good_agent_serves(&edge);
}

#[test]
fn wrong_parity_stream_id_ends_the_session() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.auth();
    s.send(&frame(TY_DATA, SYN, 8, &0u32.to_be_bytes()))
        .unwrap();
    assert!(s.closed_within(Duration::from_secs(5)));
    assert_good_agent_serves(&edge);
}

#[test]
fn data_beyond_the_window_ends_the_session() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.auth();
    // One DATA frame larger than the 256 KiB window.
    let mut body = 1u32.to_be_bytes().to_vec();
    body.resize(300 * 1024, b' ');
    // The edge may close while this is still being written.
    let _ = s.send(&frame(TY_DATA, SYN, 5, &body));
    assert!(s.closed_within(Duration::from_secs(5)));
    assert_good_agent_serves(&edge);
}

#[test]
fn oversized_json_ends_the_session() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.auth();
    // A Bind that never ends: an open string, 1.2 MB and counting, sent
    // within the window as the edge consumes it.
    s.send(&frame(TY_DATA, SYN, 5, &1u32.to_be_bytes()))
        .unwrap();
    s.send(&frame(TY_DATA, 0, 5, b"{\"Id\":\"")).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut closed = false;
    for _ in 0..20 {
        if s.send(&frame(TY_DATA, 0, 5, &chunk)).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(closed || s.closed_within(Duration::from_secs(5)));
    assert_good_agent_serves(&edge);
}

#[test]
fn bind_before_auth_is_refused() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.rpc_request(
        3,
        1,
        r#"{"Id":"","Proto":"http","Opts":{"URL":"http://sneaky.ringress.localhost"},"Extra":{}}"#,
    );
    let reply = s.read_reply(3).expect("reply");
    assert!(reply.contains("ERR_NGROK_4018"), "{reply}");
    let r = get(edge.addr(), "sneaky.ringress.localhost", "/");
    assert_edge_error(&r, 404, "ERR_NGROK_3200");
}

#[test]
fn stream_flood_is_refused_without_hurting_others() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.auth();
    // 2000 streams opened and never used.
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        burst.extend_from_slice(&frame(TY_DATA, SYN, 5 + 2 * i, &[]));
    }
    let _ = s.send(&burst);
    // Far past the stream limit: the session is ended (not left silent).
    loop {
        match s.next_event() {
            WireEvent::Frame(_) => {}
            WireEvent::Closed => break,
            WireEvent::Silent => panic!("a 2000-stream flood did not end the session"),
        }
    }
    assert_good_agent_serves(&edge);
}

#[test]
fn streams_just_over_the_limit_are_refused_and_the_session_lives() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.auth();
    // 520 streams at once (stream 3 was Auth's): those that find no room
    // (stream limit, or the accept queue while the edge catches up) are
    // refused one by one, with RST StreamRefused or AcceptQueueFull.
    let mut burst = Vec::new();
    for i in 0..520u32 {
        burst.extend_from_slice(&frame(TY_DATA, SYN, 5 + 2 * i, &[]));
    }
    s.send(&burst).expect("send");
    let mut refused = 0;
    while refused < 20 {
        match s.next_event() {
            WireEvent::Frame((ty, _, _, body))
                if ty == TY_RST && (body == [0, 0, 0, 5] || body == [0, 0, 0, 9]) =>
            {
                refused += 1
            }
            WireEvent::Frame(_) => {}
            WireEvent::Silent => panic!("after {refused} refusals: silent"),
            WireEvent::Closed => panic!("after {refused} refusals: closed"),
        }
    }
    // Still alive: a heartbeat on a stream of its own is echoed... once a
    // slot is free. Reset one flood stream to free it.
    s.send(&frame(TY_RST, 0, 5, &[0, 0, 0, 6])).expect("rst");
    s.send(&frame(
        TY_DATA,
        SYN,
        5 + 2 * 520,
        &0xFFFF_FFFFu32.to_be_bytes(),
    ))
    .expect("heartbeat syn");
    s.send(&frame(TY_DATA, 0, 5 + 2 * 520, b"beat"))
        .expect("beat");
    loop {
        match s.next_event() {
            WireEvent::Frame((ty, _, id, body)) if ty == TY_DATA && id == 5 + 2 * 520 => {
                assert_eq!(body, b"beat");
                break;
            }
            WireEvent::Frame(_) => {}
            other => panic!("the session did not survive a small overflow: {other:?}"),
        }
    }
    assert_good_agent_serves(&edge);
}

#[test]
fn invalid_json_on_auth_ends_the_session() {
    let (edge, _agent, _up) = setup();
    let mut s = raw(&edge);
    s.rpc_request(3, 0, "{not json at all");
    assert!(s.closed_within(Duration::from_secs(5)));
    assert_good_agent_serves(&edge);
}

#[test]
fn bad_token_in_production_gets_err_107() {
    let data = tempfile::tempdir().expect("tempdir");
    let edge = Edge::builder("[tunnel]\nauth_tokens = [\"right\"]\n")
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.path().to_str().expect("utf-8"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .start();
    let mut s = raw(&edge);
    s.rpc_request(
        3,
        0,
        r#"{"Version":["3"],"ClientId":"","Extra":{"AuthToken":"wrong"}}"#,
    );
    let reply = s.read_reply(3).expect("reply");
    assert!(reply.contains("ERR_NGROK_107"), "{reply}");
    assert!(s.closed_within(Duration::from_secs(5)));
}
