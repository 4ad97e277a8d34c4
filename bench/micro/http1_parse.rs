//! Micro benchmark: request/response head parsing, body scanning and the
//! upstream head encoding, on typical and large heads.

#[path = "harness.rs"]
mod harness;

use ringress::http1::{BodyDecoder, Framing, RequestHead, ResponseHead};
use ringress::proxy::headers::{encode_request_head, ForwardInfo};

const CURL_GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

const BROWSER_GET: &[u8] = b"GET /assets/app.js?v=123 HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive\r\nsec-ch-ua: \"Chromium\";v=\"128\"\r\nsec-ch-ua-mobile: ?0\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36\r\nsec-ch-ua-platform: \"Linux\"\r\nAccept: */*\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: script\r\nReferer: https://app.example.com/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 12:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 612\r\nConnection: keep-alive\r\nETag: \"5f1b-264\"\r\nAccept-Ranges: bytes\r\n\r\n";

fn main() {
    let mut req = RequestHead::new();
    harness::bench("parse request head (curl, 4 headers)", || {
        req.reset();
        req.parse(CURL_GET, 1 << 20)
    });
    harness::bench("parse request head (browser, 14 headers)", || {
        req.reset();
        req.parse(BROWSER_GET, 1 << 20)
    });
    let mut res = ResponseHead::new();
    harness::bench("parse response head (nginx, 7 headers)", || {
        res.reset();
        res.parse(RESPONSE, 1 << 20, false)
    });

    let mut out = Vec::with_capacity(4096);
    req.reset();
    let _ = req.parse(BROWSER_GET, 1 << 20);
    let info = ForwardInfo {
        client_ip: "203.0.113.7",
        proto: "http",
    };
    harness::bench("encode upstream head (browser)", || {
        out.clear();
        encode_request_head(BROWSER_GET, &req, &info, &mut out);
        out.len()
    });

    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..2000 {
        big.extend_from_slice(format!("X-Header-{i}: some value {i}\r\n").as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    harness::bench("parse request head (2000 headers, 60 KB)", || {
        req.reset();
        req.parse(&big, 1 << 20)
    });

    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend(std::iter::repeat_n(b'x', 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    harness::bench("scan chunked body (64 x 1 KiB chunks)", || {
        let mut d = BodyDecoder::new(Framing::Chunked);
        d.scan(&chunked)
    });
}
