//! Event sinks: a JSON-lines file (rotated by size), HTTP POST batches (a
//! JSON array per POST), standard output. Each sink has its own thread
//! and a bounded queue; a slow sink drops (and counts) what does not fit,
//! so it never holds up the drainer, let alone a worker.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::config::SinkConfig;

/// Event lines the drainer wrote in one round, each ending in `\n`;
/// shared by every sink without a copy.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub lines: usize,
}

impl Batch {
    /// The lines, without their newlines.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.split(|b| *b == b'\n').take(self.lines)
    }
}

/// A running sink, as the drainer sees it.
pub struct Sink {
    pub name: String,
    tx: Sender<Arc<Batch>>,
    /// Lines queued and not yet written; at most `queue` (a batch is
    /// always taken when nothing waits).
    waiting: Arc<AtomicUsize>,
    queue: usize,
    pub dropped: Arc<AtomicU64>,
    pub written: Arc<AtomicU64>,
}

impl Sink {
    /// Queues a batch; counts its lines as dropped when the sink's queue
    /// is full.
    pub fn offer(&self, batch: &Arc<Batch>) {
        let n = batch.lines;
        let waiting = self.waiting.load(Ordering::Acquire);
        if waiting > 0 && waiting + n > self.queue {
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        self.waiting.fetch_add(n, Ordering::AcqRel);
        if self.tx.send(batch.clone()).is_err() {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// `http://host:port/path` → (host:port, path).
pub fn parse_http_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(' ') {
        return None;
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_owned()))
}

/// Starts one sink's thread; `queue` lines may wait for it.
pub fn start(cfg: &SinkConfig, queue: usize) -> std::io::Result<Sink> {
    let (tx, rx) = channel::<Arc<Batch>>();
    let dropped = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let d = dropped.clone();
    let q = waiting.clone();
    let name = match cfg {
        SinkConfig::File {
            path,
            max_bytes,
            keep,
        } => {
            let mut file = RotatingFile::open(path.clone(), *max_bytes, *keep)?;
            std::thread::Builder::new()
                .name("ringress-sink-file".into())
                .spawn(move || loop {
                    match rx.recv_timeout(FILE_FLUSH_EVERY) {
                        Ok(batch) => {
                            let n = batch.lines as u64;
                            if let Err(e) = file.write_batch(&batch) {
                                warn!(path = %file.path.display(), error = %e, "event file sink: write failed");
                                d.fetch_add(n, Ordering::Relaxed);
                            } else {
                                w.fetch_add(n, Ordering::Relaxed);
                            }
                            q.fetch_sub(batch.lines, Ordering::AcqRel);
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            let _ = file.flush();
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            let _ = file.flush();
                            return;
                        }
                    }
                })?;
            format!("file:{}", path.display())
        }
        SinkConfig::Stdout => {
            std::thread::Builder::new()
                .name("ringress-sink-stdout".into())
                .spawn(move || {
                    let out = std::io::stdout();
                    for batch in rx {
                        let mut o = out.lock();
                        if o.write_all(&batch.bytes).and_then(|()| o.flush()).is_ok() {
                            w.fetch_add(batch.lines as u64, Ordering::Relaxed);
                        } else {
                            d.fetch_add(batch.lines as u64, Ordering::Relaxed);
                        }
                        q.fetch_sub(batch.lines, Ordering::AcqRel);
                    }
                })?;
            "stdout".to_owned()
        }
        SinkConfig::Http {
            url,
            batch,
            flush_ms,
        } => {
            let (authority, path) = parse_http_url(url).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad sink URL")
            })?;
            let batch = *batch;
            let every = Duration::from_millis(*flush_ms);
            let counters = Counters {
                written: w,
                dropped: d,
                waiting: q,
            };
            std::thread::Builder::new()
                .name("ringress-sink-http".into())
                .spawn(move || http_loop(rx, &authority, &path, batch, every, &counters))?;
            url.clone()
        }
    };
    Ok(Sink {
        name,
        tx,
        waiting,
        queue,
        dropped,
        written,
    })
}

/// A sink thread's counters.
struct Counters {
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    waiting: Arc<AtomicUsize>,
}

/// Collects lines and POSTs them as a JSON array when `batch` are ready
/// or `every` has passed since the first one.
fn http_loop(
    rx: Receiver<Arc<Batch>>,
    authority: &str,
    path: &str,
    batch: usize,
    every: Duration,
    c: &Counters,
) {
    let mut body: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut pending = 0usize;
    let mut first: Option<Instant> = None;
    let mut conn: Option<TcpStream> = None;
    let send = |body: &mut Vec<u8>, pending: &mut usize, conn: &mut Option<TcpStream>| {
        if *pending == 0 {
            return;
        }
        body.push(b']');
        let n = *pending as u64;
        match post(conn, authority, path, body) {
            Ok(()) => c.written.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                warn!(sink = authority, error = %e, events = n, "event HTTP sink: POST failed; batch dropped");
                *conn = None;
                c.dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
        c.waiting.fetch_sub(*pending, Ordering::AcqRel);
        body.clear();
        *pending = 0;
    };
    loop {
        let wait = match first {
            Some(t) => every.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        let disconnected = match rx.recv_timeout(wait) {
            Ok(b) => {
                for line in b.lines() {
                    first.get_or_insert_with(Instant::now);
                    body.push(if pending == 0 { b'[' } else { b',' });
                    body.extend_from_slice(line);
                    pending += 1;
                    if pending >= batch {
                        send(&mut body, &mut pending, &mut conn);
                        first = None;
                    }
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = first.is_some_and(|t| t.elapsed() >= every);
        if pending > 0 && (due || disconnected) {
            send(&mut body, &mut pending, &mut conn);
            first = None;
        }
        if disconnected {
            return;
        }
    }
}

/// One POST of a JSON array `body` on a kept-alive connection
/// (reconnecting when needed); any 2xx is success.
fn post(
    conn: &mut Option<TcpStream>,
    authority: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<()> {
    if conn.is_none() {
        let addr = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        *conn = Some(s);
    }
    let Some(s) = conn.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: ringress-events\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    read_status(s)
}

/// Reads a response head and its Content-Length body; Ok on 2xx.
fn read_status(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("response head too large"));
        }
    };
    let head = super::head::Head::parse(&buf[..head_end]);
    let len: usize = head
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        have += n;
    }
    match head.second.parse::<u16>() {
        Ok(c) if (200..300).contains(&c) => Ok(()),
        _ => Err(std::io::Error::other(format!("status {}", head.second))),
    }
}

/// A JSON-lines file rotated at `max_bytes`: `path` → `path.1` → … →
/// `path.<keep>` (dropped).
struct RotatingFile {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let f = open_append(&path)?;
        let size = f.metadata()?.len();
        Ok(RotatingFile {
            path,
            file: std::io::BufWriter::with_capacity(64 * 1024, f),
            size,
            max_bytes,
            keep,
        })
    }

    #[cfg(test)]
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }

    /// Writes a batch of lines, rotating between lines where needed.
    fn write_batch(&mut self, batch: &Batch) -> std::io::Result<()> {
        let bytes = &batch.bytes;
        if self.size + bytes.len() as u64 <= self.max_bytes {
            self.file.write_all(bytes)?;
            self.size += bytes.len() as u64;
            return Ok(());
        }
        for line in batch.lines() {
            let n = line.len() as u64 + 1;
            if self.size > 0 && self.size + n > self.max_bytes {
                self.rotate()?;
            }
            self.file.write_all(line)?;
            self.file.write_all(b"\n")?;
            self.size += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let numbered = |i: usize| -> PathBuf {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let from = numbered(i);
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = std::io::BufWriter::with_capacity(64 * 1024, open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Flushes the file sink's buffer regularly so readers see lines soon.
pub const FILE_FLUSH_EVERY: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:9000/in"),
            Some(("127.0.0.1:9000".into(), "/in".into()))
        );
        assert_eq!(
            parse_http_url("http://logs.local"),
            Some(("logs.local:80".into(), "/".into()))
        );
        assert_eq!(parse_http_url("https://x/"), None);
        assert_eq!(parse_http_url("http:///x"), None);
    }

    #[test]
    fn file_rotates_and_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev.jsonl");
        let mut f = RotatingFile::open(path.clone(), 100, 2).unwrap();
        for i in 0..30 {
            f.write_line(&format!("{{\"n\":{i:04}}}")).unwrap();
        }
        f.flush().unwrap();
        assert!(path.exists());
        assert!(dir.path().join("ev.jsonl.1").exists());
        assert!(dir.path().join("ev.jsonl.2").exists());
        assert!(!dir.path().join("ev.jsonl.3").exists());
        let cur = std::fs::read_to_string(&path).unwrap();
        assert!(cur.len() <= 100);
        assert!(cur.ends_with("{\"n\":0029}\n"));
    }
}
