//! What the agent shows: a status screen like ngrok's on a terminal, log
//! lines otherwise. Counters are shared by the session threads.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Counters {
    total: AtomicU64,
    open: AtomicU64,
    sessions: AtomicUsize,
    edge_workers: AtomicUsize,
    urls: Mutex<Vec<(String, String)>>,
    state: Mutex<String>,
    web: Mutex<String>,
}

impl Counters {
    pub fn opened(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn session_up(&self, edge_workers: usize) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.edge_workers.store(edge_workers, Ordering::Relaxed);
    }

    pub fn session_down(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set_state(&self, s: &str) {
        if let Ok(mut st) = self.state.lock() {
            s.clone_into(&mut st);
        }
    }

    /// The inspector's address, for the status screen.
    pub fn set_web(&self, url: String) {
        if let Ok(mut w) = self.web.lock() {
            *w = url;
        }
    }

    pub fn set_urls(&self, urls: Vec<(String, String)>) {
        if let Ok(mut u) = self.urls.lock() {
            *u = urls;
        }
    }

    /// Proxied connections: (total, open).
    pub fn connections(&self) -> (u64, u64) {
        (
            self.total.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed),
        )
    }

    /// (sessions online, edge workers).
    pub fn sessions(&self) -> (usize, usize) {
        (
            self.sessions.load(Ordering::Relaxed),
            self.edge_workers.load(Ordering::Relaxed),
        )
    }

    pub fn urls(&self) -> Vec<(String, String)> {
        self.urls.lock().map(|u| u.clone()).unwrap_or_default()
    }

    /// The status screen (drawn over the previous one).
    pub fn render(&self, out: &mut impl Write) -> std::io::Result<()> {
        let state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        let mut text = String::new();
        text.push_str("\x1b[H\x1b[2J");
        text.push_str(&format!(
            "ringress {}{:>56}\n\n",
            env!("CARGO_PKG_VERSION"),
            "(Ctrl+C to quit)"
        ));
        text.push_str(&format!("{:<30}{state}\n", "Session Status"));
        text.push_str(&format!(
            "{:<30}{} (edge workers: {})\n",
            "Sessions",
            self.sessions.load(Ordering::Relaxed),
            self.edge_workers.load(Ordering::Relaxed)
        ));
        let web = self.web.lock().map(|w| w.clone()).unwrap_or_default();
        if !web.is_empty() {
            text.push_str(&format!("{:<30}{web}\n", "Web Interface"));
        }
        for (url, upstream) in self.urls() {
            text.push_str(&format!("{:<30}{url} -> {upstream}\n", "Forwarding"));
        }
        text.push_str(&format!(
            "\n{:<30}{:<8}{:<8}\n",
            "Connections", "ttl", "opn"
        ));
        text.push_str(&format!(
            "{:<30}{:<8}{:<8}\n",
            "",
            self.total.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed)
        ));
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}
