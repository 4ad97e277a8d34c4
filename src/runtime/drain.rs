//! A worker-local, one-shot "stop" signal that any number of tasks can
//! await (accept loops, idle keep-alive connections). Single-threaded:
//! `Rc` + `Cell`, no atomics. A waiter that is dropped before the signal
//! (the usual case: the connection got its next request) unregisters, so
//! the waiter set stays as large as the number of idle connections.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Clone, Default)]
pub struct Drain {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fire(&self) {
        if self.inner.fired.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.inner.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.inner.fired.get()
    }

    /// Resolves once `fire` has been called.
    pub fn wait(&self) -> Wait {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id.wrapping_add(1));
        Wait {
            inner: self.inner.clone(),
            id,
        }
    }

    pub fn waiters(&self) -> usize {
        self.inner.waiters.borrow().len()
    }
}

pub struct Wait {
    inner: Rc<Inner>,
    id: u64,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.fired.get() {
            return Poll::Ready(());
        }
        self.inner
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.inner.waiters.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_unregister_and_fire_wakes() {
        let d = Drain::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        {
            let mut w = Box::pin(d.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert_eq!(d.waiters(), 1);
        }
        assert_eq!(d.waiters(), 0);
        let mut w = Box::pin(d.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        d.fire();
        assert!(w.as_mut().poll(&mut cx).is_ready());
        assert!(d.is_fired());
    }
}
