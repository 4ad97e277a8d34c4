//! Confines a panic to the connection task that raised it: the task ends,
//! its sockets close, the worker and its other connections go on. A panic
//! is always a bug; this only limits the damage and logs it.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The panic message, when it is a string.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut ok = CatchUnwind(Box::pin(async { 5 }));
        assert!(matches!(
            Pin::new(&mut ok).poll(&mut cx),
            Poll::Ready(Ok(5))
        ));
        let mut bad = CatchUnwind(Box::pin(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
        }));
        match Pin::new(&mut bad).poll(&mut cx) {
            Poll::Ready(Err(p)) => assert_eq!(panic_message(p.as_ref()), "boom"),
            _ => panic!("expected a caught panic"),
        }
    }
}
