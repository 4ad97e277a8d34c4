//! WebSocket through the edge: the upgrade is forwarded with its hop-by-hop
//! headers, frames flow both ways, and `Upgrade: websocket` without
//! `Connection: upgrade` is refused with 400 ERR_NGROK_3206.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tungstenite::{Message, WebSocket};

fn ws_edge() -> (Upstream, Edge) {
    let up = Upstream::start(Behaviour::WebSocketEcho);
    let edge = Edge::start(&app_config(&up, ""));
    (up, edge)
}

fn ws_connect(stream: TcpStream, url: &str) -> WebSocket<TcpStream> {
    let (ws, resp) = tungstenite::client(url, stream).expect("websocket handshake via the edge");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

fn echo(ws: &mut WebSocket<TcpStream>, msg: Message) {
    ws.send(msg.clone()).expect("send frame");
    let back = ws.read().expect("read echoed frame");
    assert_eq!(back, msg);
}

#[test]
fn websocket_echo_through_edge() {
    let (up, edge) = ws_edge();
    let stream = Client::connect(edge.addr()).into_stream();
    let mut ws = ws_connect(stream, "ws://app.example.com/chat?room=1");
    echo(&mut ws, Message::text("hello"));
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255]));
    echo(&mut ws, Message::binary(vec![0x5au8; 1 << 20]));
    for i in 0..50 {
        echo(&mut ws, Message::text(format!("message {i}")));
    }
    ws.close(None).expect("close");
    // Drain until the close handshake completes.
    while ws.read().is_ok() {}
    let req = up.last_request();
    assert_eq!(req.target, "/chat?room=1");
    assert_eq!(
        req.header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    assert!(
        req.header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("upgrade"),
        "upstream head:\n{}",
        req.head_text()
    );
    assert!(req.header("sec-websocket-key").is_some());
    assert_eq!(req.header("sec-websocket-version"), Some("13"));
    assert_eq!(req.header("host"), Some("app.example.com"));
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn websocket_upgrade_after_plain_request_on_same_connection() {
    let up = Upstream::start(Behaviour::WebSocketEcho);
    let plain = Upstream::start(Behaviour::Echo);
    let config = format!(
        "{}{}",
        endpoint("http://app.example.com", &up.url()),
        endpoint("http://plain.example.com", &plain.url())
    );
    let edge = Edge::start(&config);
    let mut c = Client::connect(edge.addr());
    assert_eq!(c.get("plain.example.com", "/").status, 200);
    assert!(c.buffered().is_empty());
    let mut ws = ws_connect(c.into_stream(), "ws://app.example.com/");
    echo(&mut ws, Message::text("after keep-alive"));
}

#[test]
fn two_websockets_at_once() {
    let (_up, edge) = ws_edge();
    let mut a = ws_connect(
        Client::connect(edge.addr()).into_stream(),
        "ws://app.example.com/a",
    );
    let mut b = ws_connect(
        Client::connect(edge.addr()).into_stream(),
        "ws://app.example.com/b",
    );
    echo(&mut a, Message::text("to a"));
    echo(&mut b, Message::text("to b"));
    echo(&mut a, Message::text("a again"));
}

#[test]
fn websocket_closed_by_upstream_closes_client() {
    let up = Upstream::start(Behaviour::WebSocketEcho);
    let edge = Edge::start(&app_config(&up, ""));
    let stream = Client::connect(edge.addr()).into_stream();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut ws = ws_connect(stream, "ws://app.example.com/");
    echo(&mut ws, Message::text("hi"));
    drop(up); // shuts the upstream socket down
    let end = ws.read();
    assert!(
        !matches!(&end, Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "client still open 5 s after the upstream went away: {end:?}"
    );
}

#[test]
fn upgrade_websocket_without_connection_upgrade_is_400_3206() {
    let (up, edge) = ws_edge();
    let r = send_request(
        edge.addr(),
        "GET /chat HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_edge_error(&r, 400, "ERR_NGROK_3206");
    assert_upstream_untouched(&up);
}

#[test]
fn upgrade_websocket_with_connection_keep_alive_only_is_400_3206() {
    let (up, edge) = ws_edge();
    let r = send_request(
        edge.addr(),
        "GET /chat HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_edge_error(&r, 400, "ERR_NGROK_3206");
    assert_upstream_untouched(&up);
}

#[test]
fn connection_header_upgrade_token_is_case_insensitive_in_a_list() {
    let (_up, edge) = ws_edge();
    let mut c = Client::connect(edge.addr());
    c.send(
        "GET /x HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive, UPGRADE\r\nUpgrade: WebSocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("send");
    let r = c.read_head().expect("101");
    assert_eq!(
        r.status,
        101,
        "head:\n{}",
        String::from_utf8_lossy(&r.raw_head)
    );
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "upstream's accept key passed through"
    );
}
