//! `compress-response`: which coding a response gets (Accept-Encoding
//! q-values against the configured algorithms, skipping responses that
//! are already encoded, small, bodiless or not compressible), and the
//! streaming encoder the driver wraps the body relay with. Each upstream
//! read is compressed and flushed, so streamed bodies keep streaming.

use std::io::Write;

use cel_interpreter::Value;
use serde::Deserialize;

use crate::http1::{Framing, ResponseHead};
use crate::policy::cel;
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::exchange::{Encoding, Exchange};

/// Bodies known to be smaller than this are sent as they are.
pub const MIN_SIZE: u64 = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    algorithms: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct CompressResponse {
    algorithms: Vec<Encoding>,
}

impl CompressResponse {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<CompressResponse, String> {
        let cfg: Config = super::config(cfg)?;
        let names = cfg.algorithms.unwrap_or_else(|| {
            ["gzip", "br", "zstd", "deflate"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let mut algorithms = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let e = match n.to_ascii_lowercase().as_str() {
                "gzip" => Encoding::Gzip,
                "deflate" => Encoding::Deflate,
                "br" => Encoding::Br,
                "zstd" => Encoding::Zstd,
                // LZW `compress` is accepted for ngrok compatibility but
                // never negotiated: no client prefers it.
                "compress" => continue,
                other => {
                    return Err(format!(
                        "config.algorithms[{i}]: {other:?} is not one of gzip, deflate, br, zstd, compress"
                    ))
                }
            };
            if !algorithms.contains(&e) {
                algorithms.push(e);
            }
        }
        if algorithms.is_empty() && names.is_empty() {
            return Err("config.algorithms: at least one algorithm".into());
        }
        Ok(CompressResponse { algorithms })
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        cx.ex.compress_algorithms.clear();
        cx.ex
            .compress_algorithms
            .extend_from_slice(&self.algorithms);
        Ok(Flow::Next)
    }
}

/// Keeps the request's Accept-Encoding for the response phase.
pub fn remember_accept_encoding<'a>(ex: &mut Exchange, values: impl Iterator<Item = &'a [u8]>) {
    ex.accept_encoding.clear();
    for v in values {
        if !ex.accept_encoding.is_empty() {
            ex.accept_encoding.push(',');
        }
        ex.accept_encoding.push_str(&String::from_utf8_lossy(v));
    }
}

/// Picks the coding for `accept` (an Accept-Encoding value): the highest
/// q-value among `offered`, ties going to the earlier offered one.
pub fn negotiate(accept: &str, offered: &[Encoding]) -> Option<Encoding> {
    let mut best: Option<(f32, usize, Encoding)> = None;
    for (rank, enc) in offered.iter().enumerate() {
        let mut q: Option<f32> = None;
        let mut star: Option<f32> = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let mut weight = 1.0f32;
            for p in parts {
                if let Some(v) = p
                    .trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
                {
                    weight = v.trim().parse().unwrap_or(0.0);
                }
            }
            if token.eq_ignore_ascii_case(enc.token())
                || (*enc == Encoding::Gzip && token.eq_ignore_ascii_case("x-gzip"))
            {
                q = Some(weight);
            } else if token == "*" {
                star = Some(weight);
            }
        }
        let q = q.or(star).unwrap_or(0.0);
        if q <= 0.0 {
            continue;
        }
        if best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank < br)) {
            best = Some((q, rank, *enc));
        }
    }
    best.map(|(_, _, e)| e)
}

fn compressible(content_type: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim().to_owned();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/xml"
                | "application/wasm"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "image/svg+xml"
                | "font/ttf"
                | "font/otf"
        )
}

/// Decides whether and how this response is compressed; records the
/// result variables. Called after the response phase's rules ran.
pub fn decide(ex: &mut Exchange, buf: &[u8], res: &ResponseHead, head_request: bool) {
    if ex.compress_algorithms.is_empty() {
        return;
    }
    let header = |name: &[u8]| {
        res.headers
            .iter()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name))
            .map(|h| crate::http1::trim_ows(h.value.get(buf)))
    };
    let already = header(b"content-encoding").is_some_and(|v| !v.eq_ignore_ascii_case(b"identity"));
    let no_transform = header(b"cache-control").is_some_and(|v| {
        String::from_utf8_lossy(v)
            .to_ascii_lowercase()
            .contains("no-transform")
    });
    let bodyless = head_request
        || matches!(res.status, 100..=199 | 204 | 304)
        || match res.framing {
            Framing::None => true,
            Framing::Length(n) => n < MIN_SIZE,
            Framing::Chunked | Framing::CloseDelimited => false,
        };
    let type_ok = header(b"content-type").is_some_and(compressible);
    let chosen = if already || no_transform || bodyless || !type_ok {
        None
    } else {
        negotiate(&ex.accept_encoding, &ex.compress_algorithms)
    };
    ex.res.compress = chosen;
    let name = chosen.map_or("", Encoding::token);
    if ex.record_results {
        ex.set_result(
            "compress",
            cel::map([
                ("already_compressed", Value::Bool(already)),
                ("negotiated_algorithm", cel::string(name)),
            ]),
        );
    }
}

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// A streaming encoder: bytes in, compressed bytes out.
pub struct Compressor {
    inner: Inner,
}

impl Compressor {
    pub fn new(e: Encoding) -> std::io::Result<Compressor> {
        let level = flate2::Compression::new(5);
        let inner = match e {
            Encoding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
            Encoding::Deflate => Inner::Deflate(flate2::write::ZlibEncoder::new(Vec::new(), level)),
            Encoding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                5,
                22,
            ))),
            Encoding::Zstd => Inner::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        };
        Ok(Compressor { inner })
    }

    fn sink(&mut self) -> &mut Vec<u8> {
        match &mut self.inner {
            Inner::Gzip(w) => w.get_mut(),
            Inner::Deflate(w) => w.get_mut(),
            Inner::Br(w) => w.get_mut(),
            Inner::Zstd(w) => w.get_mut(),
        }
    }

    /// Compresses `data` and flushes, appending the output to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(w) => {
                w.write_all(data)?;
                w.flush()?
            }
            Inner::Deflate(w) => {
                w.write_all(data)?;
                w.flush()?
            }
            Inner::Br(w) => {
                w.write_all(data)?;
                w.flush()?
            }
            Inner::Zstd(w) => {
                w.write_all(data)?;
                w.flush()?
            }
        }
        out.append(self.sink());
        Ok(())
    }

    /// Ends the stream, appending the trailing bytes to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let rest = match self.inner {
            Inner::Gzip(w) => w.finish()?,
            Inner::Deflate(w) => w.finish()?,
            Inner::Br(mut w) => {
                w.flush()?;
                w.into_inner()
            }
            Inner::Zstd(w) => w.finish()?,
        };
        out.extend_from_slice(&rest);
        Ok(())
    }
}

/// Appends `data` as one HTTP/1.1 chunk (nothing when empty).
pub fn push_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn negotiation_by_q_values() {
        let all = [
            Encoding::Gzip,
            Encoding::Br,
            Encoding::Zstd,
            Encoding::Deflate,
        ];
        assert_eq!(negotiate("gzip, deflate, br", &all), Some(Encoding::Gzip));
        assert_eq!(negotiate("gzip;q=0.5, br", &all), Some(Encoding::Br));
        assert_eq!(negotiate("identity", &all), None);
        assert_eq!(negotiate("*", &all), Some(Encoding::Gzip));
        assert_eq!(negotiate("gzip;q=0, *;q=0.1", &all), Some(Encoding::Br));
        assert_eq!(negotiate("", &all), None);
        assert_eq!(negotiate("deflate", &[Encoding::Gzip]), None);
    }

    #[test]
    fn round_trips() {
        let text = "hello hello hello hello hello ".repeat(100);
        for e in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Br,
            Encoding::Zstd,
        ] {
            let mut c = Compressor::new(e).expect("encoder");
            let mut out = Vec::new();
            c.push(&text.as_bytes()[..1000], &mut out).expect("push");
            assert!(!out.is_empty(), "{e:?} flushes each push");
            c.push(&text.as_bytes()[1000..], &mut out).expect("push");
            c.finish(&mut out).expect("finish");
            assert!(out.len() < text.len() / 4, "{e:?}");
            let mut back = Vec::new();
            match e {
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .expect("gunzip");
                }
                Encoding::Deflate => {
                    flate2::read::ZlibDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .expect("inflate");
                }
                Encoding::Br => {
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_end(&mut back)
                        .expect("unbrotli");
                }
                Encoding::Zstd => back = zstd::decode_all(&out[..]).expect("unzstd"),
            }
            assert_eq!(back, text.as_bytes(), "{e:?}");
        }
    }

    #[test]
    fn chunk_framing() {
        let mut out = Vec::new();
        push_chunk(&[7u8; 26], &mut out);
        assert!(out.starts_with(b"1a\r\n"));
        assert!(out.ends_with(b"\r\n"));
        let mut empty = Vec::new();
        push_chunk(&[], &mut empty);
        assert!(empty.is_empty());
    }
}
