//! `file:///dir` upstreams: a small static file server speaking HTTP/1.1
//! on the edge's stream (keep-alive loop, same parser as the edge).
//!
//! Owns: GET and HEAD of files below one root (405 with `Allow` for other
//! methods), `index.html` for directories or else an HTML listing,
//! `Content-Type` by extension, `Last-Modified` / `If-Modified-Since`
//! (304), single byte ranges (206/416).
//! Never: serves anything outside the root. `..` segments are refused
//! (403) before the file system is touched, and every resolved path is
//! canonicalized and must stay below the canonical root, so symlinks that
//! lead out are refused too (403).
//!
//! File-system calls are plain `std::fs` on the agent's thread (the agent
//! is not the edge's data plane); files are read in [`FILE_CHUNK`] pieces
//! so a large file streams instead of being loaded.

mod http_date;
mod listing;
mod mime;
mod path;
mod range;

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split, Splitable};
use tracing::{debug, warn};

use super::edge_io::{EdgeReader, EdgeWriter};
use super::error::ForwardError;
use super::ForwardStats;
use crate::http1::{name_eq, BodyDecoder, Framing, Method, RequestHead};
#[cfg(test)]
pub(super) use http_date::{format as format_http_date, parse as parse_http_date};
use path::PathError;
use range::RangeSpec;

/// Bytes read from a file per write to the edge.
pub const FILE_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub struct FileServer {
    root: PathBuf,
}

impl FileServer {
    pub fn new(root: PathBuf) -> FileServer {
        FileServer { root }
    }

    pub async fn serve<S>(&self, stream: S) -> Result<ForwardStats, ForwardError>
    where
        S: AsyncReadRent + AsyncWriteRent + Split + 'static,
    {
        let (r, w) = stream.into_split();
        let mut rd = EdgeReader::new(r);
        let mut wr = EdgeWriter::new(w);
        let res = self.serve_loop(&mut rd, &mut wr).await;
        if let Err(e) = wr.shutdown().await {
            debug!(error = %e, "file server: half-close");
        }
        let stats = ForwardStats {
            bytes_in: rd.bytes_in,
            bytes_out: wr.bytes_out,
        };
        res.map(|()| stats)
    }

    async fn serve_loop<R, W>(
        &self,
        rd: &mut EdgeReader<R>,
        wr: &mut EdgeWriter<W>,
    ) -> Result<(), ForwardError>
    where
        R: AsyncReadRent,
        W: AsyncWriteRent,
    {
        let mut head = RequestHead::new();
        let mut head_buf = Vec::new();
        loop {
            match rd.read_head(&mut head, &mut head_buf).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(ForwardError::Request(e)) => {
                    let reply = Reply::error(e.status(), "The request is malformed.");
                    write_reply(wr, reply, false, true).await?;
                    return Err(e.into());
                }
                Err(e) => return Err(e),
            }
            let method = head.method();
            let has_body = head.framing != Framing::None;
            let mut close = !head.keep_alive;
            let reply = if matches!(method, Method::Get | Method::Head) {
                if has_body {
                    rd.discard_body(&mut BodyDecoder::new(head.framing)).await?;
                }
                let req = Req::from_head(&head, &head_buf);
                answer(&self.root, &req)
            } else {
                // Do not read a body we would only throw away: answer and
                // close instead.
                close |= has_body;
                let mut r = Reply::error(405, "Only GET and HEAD are supported.");
                r.headers.push(("allow", "GET, HEAD".to_owned()));
                r
            };
            write_reply(wr, reply, method == Method::Head, close).await?;
            if close {
                return Ok(());
            }
        }
    }
}

/// What the answer depends on, borrowed from the request head.
struct Req<'a> {
    target: &'a [u8],
    if_modified_since: Option<&'a [u8]>,
    if_none_match: bool,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
}

impl<'a> Req<'a> {
    fn from_head(head: &RequestHead, buf: &'a [u8]) -> Req<'a> {
        let field = |name: &[u8]| {
            head.headers
                .iter()
                .find(|h| name_eq(h.name.get(buf), name))
                .map(|h| h.value.get(buf))
        };
        let target = head.origin_form.get(buf);
        Req {
            target: if target.is_empty() { b"/" } else { target },
            if_modified_since: field(b"if-modified-since"),
            if_none_match: field(b"if-none-match").is_some(),
            range: field(b"range"),
            if_range: field(b"if-range"),
        }
    }
}

enum Body {
    Bytes(Vec<u8>),
    File {
        file: fs::File,
        start: u64,
        len: u64,
    },
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Reply {
    fn error(status: u16, message: &str) -> Reply {
        let reason = reason(status);
        let body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\
             <body><h1>{status} {reason}</h1><p>{}</p></body></html>\n",
            crate::proxy::error_page::html_escape(message)
        );
        Reply {
            status,
            headers: vec![("content-type", "text/html; charset=utf-8".to_owned())],
            body: Body::Bytes(body.into_bytes()),
        }
    }

    fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// Decides the reply to a GET or HEAD (file-system calls happen here).
fn answer(root: &Path, req: &Req<'_>) -> Reply {
    let path = match path::parse(req.target) {
        Ok(p) => p,
        Err(PathError::BadRequest) => return Reply::error(400, "Invalid request path."),
        Err(PathError::Traversal) => return Reply::error(403, "Paths with `..` are refused."),
    };
    let canon_root = match fs::canonicalize(root) {
        Ok(r) => r,
        Err(e) => {
            warn!(root = %root.display(), error = %e, "file server root is not available");
            return Reply::error(500, "The served directory is not available.");
        }
    };
    let canon = match fs::canonicalize(canon_root.join(&path.rel)) {
        Ok(c) => c,
        Err(e) => return io_error(&e),
    };
    if !canon.starts_with(&canon_root) {
        debug!(path = %canon.display(), "file server: symlink leads out of the root");
        return Reply::error(403, "This path leads outside the served directory.");
    }
    let meta = match fs::metadata(&canon) {
        Ok(m) => m,
        Err(e) => return io_error(&e),
    };
    if meta.is_dir() {
        if !path.trailing_slash {
            let mut r = Reply::error(301, "Moved to the directory URL.");
            r.headers.push(("location", format!("{}/", path.raw)));
            return r;
        }
        let index = canon.join("index.html");
        if let Ok(ic) = fs::canonicalize(&index) {
            if ic.starts_with(&canon_root) {
                if let Ok(m) = fs::metadata(&ic) {
                    if m.is_file() {
                        return file_reply(&ic, &m, req);
                    }
                }
            }
        }
        return list_dir(&canon, &path.decoded, canon == canon_root);
    }
    if !meta.is_file() {
        return Reply::error(404, "Not a regular file.");
    }
    file_reply(&canon, &meta, req)
}

fn io_error(e: &io::Error) -> Reply {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Reply::error(403, "Permission denied."),
        _ => Reply::error(404, "No such file or directory."),
    }
}

fn file_reply(path: &Path, meta: &fs::Metadata, req: &Req<'_>) -> Reply {
    let mtime = meta.modified().ok().map(http_date::unix_secs);
    let mut headers = vec![
        ("content-type", mime::for_path(path).to_owned()),
        ("accept-ranges", "bytes".to_owned()),
    ];
    if let Some(m) = mtime {
        headers.push(("last-modified", http_date::format(m)));
    }
    // RFC 9110 §13.2.2: If-Modified-Since only without If-None-Match
    // (we send no ETags, so an If-None-Match never matches).
    if let (Some(m), Some(ims), false) = (
        mtime,
        req.if_modified_since.and_then(http_date::parse),
        req.if_none_match,
    ) {
        if m <= ims {
            return Reply {
                status: 304,
                headers: headers
                    .into_iter()
                    .filter(|(n, _)| *n != "content-type")
                    .collect(),
                body: Body::Bytes(Vec::new()),
            };
        }
    }
    let len = meta.len();
    // If-Range with a date: honour Range only if the file is unchanged.
    let if_range_ok = match req.if_range {
        None => true,
        Some(v) => http_date::parse(v).is_some() && http_date::parse(v) == mtime,
    };
    let spec = match req.range {
        Some(v) if if_range_ok => range::parse(v, len),
        _ => RangeSpec::Full,
    };
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return io_error(&e),
    };
    match spec {
        RangeSpec::Full => Reply {
            status: 200,
            headers,
            body: Body::File {
                file,
                start: 0,
                len,
            },
        },
        RangeSpec::Partial { start, end } => {
            headers.push(("content-range", format!("bytes {start}-{end}/{len}")));
            Reply {
                status: 206,
                headers,
                body: Body::File {
                    file,
                    start,
                    len: end - start + 1,
                },
            }
        }
        RangeSpec::Unsatisfiable => {
            let mut r = Reply::error(416, "The requested range is not available.");
            r.headers.push(("content-range", format!("bytes */{len}")));
            r
        }
    }
}

fn list_dir(dir: &Path, title: &str, at_root: bool) -> Reply {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return io_error(&e),
    };
    let mut entries = Vec::new();
    for entry in rd.flatten() {
        // Follow symlinks for the trailing slash; a dangling one is a file.
        let is_dir = fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        entries.push(listing::Entry {
            name: entry.file_name().as_bytes().to_vec(),
            is_dir,
        });
    }
    Reply {
        status: 200,
        headers: vec![("content-type", "text/html; charset=utf-8".to_owned())],
        body: Body::Bytes(listing::render(title, entries, at_root).into_bytes()),
    }
}

/// Writes the head, then (unless `head_only`) the body.
async fn write_reply<W: AsyncWriteRent>(
    wr: &mut EdgeWriter<W>,
    reply: Reply,
    head_only: bool,
    close: bool,
) -> Result<(), ForwardError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(reply.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(reply.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in &reply.headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if reply.status != 304 {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(reply.body_len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match reply.body {
        Body::Bytes(b) => {
            if !head_only && reply.status != 304 {
                out.extend_from_slice(&b);
            }
            wr.write_all(out).await?;
        }
        Body::File { file, start, len } => {
            let mut buf = wr.write_all(out).await?;
            if head_only {
                return Ok(());
            }
            let mut off = start;
            let end = start + len;
            while off < end {
                let want = ((end - off) as usize).min(FILE_CHUNK);
                buf.clear();
                buf.resize(want, 0);
                let n = file
                    .read_at(&mut buf, off)
                    .map_err(ForwardError::Upstream)?;
                if n == 0 {
                    // The file shrank under us: the promised length cannot
                    // be met, so the connection must end here.
                    return Err(ForwardError::Upstream(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    )));
                }
                buf.truncate(n);
                off += n as u64;
                buf = wr.write_all(buf).await?;
            }
        }
    }
    Ok(())
}
