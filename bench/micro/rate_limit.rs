//! Micro benchmark: the cost of one `rate-limit` decision in each bucket
//! store (`policy::actions::rate_window`): the per-worker table the edge
//! had before issue 11 (not exact across workers), the shared lock-free
//! table it uses now, with and without a second thread counting on the
//! same key, over many keys, and owner threads by key hash with a
//! request/response per decision (the other exact design). The limit is
//! never reached, so every decision writes.

#[path = "harness.rs"]
mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringress::policy::actions::rate_window::{
    epoch, Buckets, Limiter, OwnerBuckets, Rule, SharedBuckets,
};

const RULE: Rule = Rule {
    capacity: 2_000_000_000,
    window: Duration::from_secs(86_400),
};

/// Runs `f` while another thread hits `store` on `key` as fast as it can.
fn contended(name: &str, store: Arc<dyn Buckets>, key: &'static str, now: Instant) {
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    std::hint::black_box(store.hit(key, now));
                }
            }
        })
    };
    harness::bench(name, || store.hit("203.0.113.7", now));
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
}

fn main() {
    let now = epoch() + Duration::from_secs(1);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
        .collect();

    let mut local = Limiter::new(RULE);
    harness::bench("per-worker Limiter, 1 key (old, not exact)", || {
        local.hit("203.0.113.7", now)
    });
    let mut local = Limiter::new(RULE);
    let mut i = 0;
    harness::bench("per-worker Limiter, 10k keys (old, not exact)", || {
        i = (i + 1) % keys.len();
        local.hit(&keys[i], now)
    });

    let shared = Arc::new(SharedBuckets::new(RULE));
    harness::bench("SharedBuckets, 1 key, uncontended", || {
        shared.hit("203.0.113.7", now)
    });
    let mut i = 0;
    harness::bench("SharedBuckets, 10k keys", || {
        i = (i + 1) % keys.len();
        shared.hit(&keys[i], now)
    });
    contended(
        "SharedBuckets, 1 key, 2nd thread on same key",
        shared.clone(),
        "203.0.113.7",
        now,
    );
    contended(
        "SharedBuckets, 1 key, 2nd thread on other key",
        shared,
        "192.0.2.1",
        now,
    );

    let owner = Arc::new(OwnerBuckets::new(RULE, 2));
    harness::bench("OwnerBuckets (2 owner threads), 1 key", || {
        owner.hit("203.0.113.7", now)
    });
    contended(
        "OwnerBuckets, 1 key, 2nd thread on same key",
        owner,
        "203.0.113.7",
        now,
    );
}
