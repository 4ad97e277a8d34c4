//! The captures the inspector still holds: newest last, bounded by bytes
//! (`inspect_db_size`); the oldest captures go first. Sans-IO; owned by
//! the inspector thread (the agent's session threads only send events).

use std::collections::{HashMap, VecDeque};

use super::capture::{Capture, Event};

/// ngrok's default for `inspect_db_size: 0`.
pub const DEFAULT_DB_SIZE: usize = 50 * 1024 * 1024;

pub struct Store {
    order: VecDeque<String>,
    by_id: HashMap<String, Capture>,
    bytes: usize,
    limit: usize,
}

impl Store {
    pub fn new(limit: usize) -> Store {
        Store {
            order: VecDeque::new(),
            by_id: HashMap::new(),
            bytes: 0,
            limit: limit.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies an event; the id of the capture it touched (None when its
    /// request was evicted already).
    pub fn apply(&mut self, ev: Event) -> Option<String> {
        match ev {
            Event::Request(c) => {
                let id = c.id.clone();
                self.bytes += c.mem_size();
                self.order.push_back(id.clone());
                self.by_id.insert(id.clone(), *c);
                self.evict();
                self.by_id.contains_key(&id).then_some(id)
            }
            Event::Response {
                id,
                duration,
                response,
            } => {
                let c = self.by_id.get_mut(&id)?;
                let before = c.mem_size();
                c.duration = Some(duration);
                c.response = Some(*response);
                let after = c.mem_size();
                self.bytes = self.bytes + after - before;
                self.evict();
                self.by_id.contains_key(&id).then_some(id)
            }
        }
    }

    fn evict(&mut self) {
        // The newest capture stays even when it alone is over the limit.
        while self.bytes > self.limit && self.order.len() > 1 {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(c) = self.by_id.remove(&old) {
                self.bytes -= c.mem_size();
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Capture> {
        self.by_id.get(id)
    }

    /// Newest first, at most `limit`, optionally of one tunnel.
    pub fn list(&self, limit: usize, tunnel: Option<&str>) -> Vec<&Capture> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.by_id.get(id))
            .filter(|c| tunnel.is_none_or(|t| &*c.tunnel_name == t))
            .take(limit)
            .collect()
    }

    pub fn clear(&mut self) {
        self.order.clear();
        self.by_id.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::agent::inspect::capture::{Message, Request, Response};

    fn cap(id: &str, body: usize) -> Event {
        Event::Request(Box::new(Capture {
            id: id.into(),
            tunnel_name: "t".into(),
            remote_addr: String::new(),
            start: SystemTime::now(),
            duration: None,
            request: Request {
                method: "GET".into(),
                uri: "/".into(),
                msg: Message {
                    raw: vec![0; body],
                    ..Message::default()
                },
            },
            response: None,
            replay_of: None,
        }))
    }

    #[test]
    fn bounded_by_bytes_oldest_first() {
        let mut s = Store::new(3000);
        for i in 0..10 {
            s.apply(cap(&format!("{i}"), 1000));
        }
        assert!(s.bytes() <= 3000);
        let ids: Vec<_> = s.list(10, None).iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids.first().map(String::as_str), Some("9"));
        assert!(ids.len() < 3);
        assert!(s.get("0").is_none());
        let resp = Event::Response {
            id: "9".into(),
            duration: Duration::from_millis(3),
            response: Box::new(Response::default()),
        };
        assert_eq!(s.apply(resp), Some("9".into()));
        assert!(s.get("9").and_then(|c| c.response.as_ref()).is_some());
        let late = Event::Response {
            id: "0".into(),
            duration: Duration::ZERO,
            response: Box::new(Response::default()),
        };
        assert_eq!(s.apply(late), None);
        s.clear();
        assert!(s.is_empty() && s.bytes() == 0);
    }

    #[test]
    fn filter_by_tunnel_and_limit() {
        let mut s = Store::new(DEFAULT_DB_SIZE);
        for i in 0..5 {
            s.apply(cap(&format!("{i}"), 10));
        }
        assert_eq!(s.list(2, None).len(), 2);
        assert_eq!(s.list(10, Some("t")).len(), 5);
        assert!(s.list(10, Some("other")).is_empty());
    }
}
