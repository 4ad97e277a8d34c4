//! A per-session cap on open proxy streams, with a bounded wait line.
//!
//! The Rust SDK kills a session that tracks more than 512 streams (spec
//! §2), so the edge keeps each session under `max` and lets up to
//! `max_waiters` requests wait for a stream to close; beyond that, the
//! caller answers 503 at once. Single-threaded (one worker owns it).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

#[derive(Debug, PartialEq, Eq)]
pub struct LimitFull;

#[derive(Debug)]
pub struct StreamLimit {
    max: usize,
    max_waiters: usize,
    used: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
    /// True while requests wait (read by other workers).
    pressure: Arc<AtomicBool>,
}

/// One open stream's share of the limit, released on drop.
#[derive(Debug)]
pub struct Permit(Rc<StreamLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        let l = &self.0;
        l.used.set(l.used.get().saturating_sub(1));
        // Waiters that still wait set it again when they re-queue.
        l.pressure.store(false, Ordering::Relaxed);
        // Wake every waiter: one of them takes the slot, the others queue
        // again. A waiter whose future was dropped cannot swallow the slot.
        for w in l.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

impl StreamLimit {
    pub fn new(max: usize, max_waiters: usize) -> Rc<StreamLimit> {
        StreamLimit::with_pressure(max, max_waiters, Arc::new(AtomicBool::new(false)))
    }

    /// A limit that mirrors "requests are waiting" into `pressure`.
    pub fn with_pressure(
        max: usize,
        max_waiters: usize,
        pressure: Arc<AtomicBool>,
    ) -> Rc<StreamLimit> {
        Rc::new(StreamLimit {
            max,
            max_waiters,
            used: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            pressure,
        })
    }

    /// Requests are waiting for a slot.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.borrow().is_empty()
    }

    pub fn in_use(&self) -> usize {
        self.used.get()
    }

    pub fn try_acquire(self: &Rc<Self>) -> Option<Permit> {
        if self.used.get() < self.max {
            self.used.set(self.used.get() + 1);
            Some(Permit(self.clone()))
        } else {
            None
        }
    }

    /// Waits for a slot; `Err` at once when the wait line is full.
    pub async fn acquire(self: &Rc<Self>) -> Result<Permit, LimitFull> {
        let mut queued = false;
        poll_fn(|cx| {
            if let Some(p) = self.try_acquire() {
                return Poll::Ready(Ok(p));
            }
            let mut w = self.waiters.borrow_mut();
            if !queued && w.len() >= self.max_waiters {
                return Poll::Ready(Err(LimitFull));
            }
            queued = true;
            w.push(cx.waker().clone());
            self.pressure.store(true, Ordering::Relaxed);
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(enable_timer = true)]
    async fn waits_then_gets_a_slot() {
        let l = StreamLimit::new(1, 1);
        let first = l.acquire().await.expect("free slot");
        let l2 = l.clone();
        let waiter = monoio::spawn(async move { l2.acquire().await.map(|_| ()) });
        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
        // The line holds one waiter: the next caller is refused.
        assert_eq!(l.acquire().await.map(|_| ()), Err(LimitFull));
        drop(first);
        assert_eq!(waiter.await, Ok(()));
        assert_eq!(l.in_use(), 0);
    }
}
