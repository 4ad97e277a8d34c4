//! The counting behind `rate-limit`: ngrok's `sliding_window` rule and
//! three stores for its buckets, all behind [`Buckets`].
//!
//! - [`SharedBuckets`] (what the edge uses): one table for all workers, a
//!   lock-free map (papaya) of buckets whose whole state is one 128-bit
//!   atomic, updated by compare-and-swap.
//! - [`Limiter`]: a plain single-threaded table, the reference the others
//!   are tested against, and what each worker had on its own before.
//! - [`OwnerBuckets`]: owner threads by key hash with a request/response
//!   per decision, kept for the comparison benchmark and tests.
//!
//! This module never does I/O and never blocks on the edge's path
//! (`OwnerBuckets` blocks its caller and is not used by the edge).
//!
//! **The rule.** Time is cut into fixed windows of `rate` (counted from the
//! process start). A bucket keeps the count admitted in the current window
//! and in the previous one. A request at fraction `f` into window `k` is
//! admitted when `previous × (1 − f) + current + 1 ≤ capacity`, and then
//! counted in `current`.
//!
//! **What "exact" means here.** Every decision on a bucket is one atomic
//! step on its whole state, so the decisions of all workers happen in one
//! total order, each made by the rule above on the state the earlier ones
//! left. A decision's time never goes back behind a window another worker
//! already opened (a worker whose clock read is a little older acts as if
//! at the start of the newer window). The result is the same as if one
//! thread had made every decision: with capacity N, at most N are admitted
//! in any one fixed window, and a fresh bucket admits exactly N before the
//! first 429, however many workers the requests land on.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use portable_atomic::AtomicU128;

/// Where the windows are counted from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The window index of `now`, and how far into it (0 to 1).
fn window_of(now: Instant, window: Duration) -> (u64, f64) {
    let w = window.as_nanos().max(1);
    let t = now.saturating_duration_since(epoch()).as_nanos();
    ((t / w) as u64, (t % w) as f64 / w as f64)
}

/// The counts of window `at` from a bucket last written in window `stored`
/// with `(previous, current)`.
fn roll(stored: u64, previous: u64, current: u64, at: u64) -> (u64, u64) {
    if stored == at {
        (previous, current)
    } else if stored + 1 == at {
        (current, 0)
    } else {
        (0, 0)
    }
}

/// The sliding-window rule: `Some(seconds)` to retry after when over.
fn over(previous: u64, current: u64, into: f64, capacity: u64, window: Duration) -> Option<u64> {
    let estimate = previous as f64 * (1.0 - into) + current as f64;
    if estimate + 1.0 > capacity as f64 {
        let left = window.as_secs_f64() * (1.0 - into);
        return Some(left.ceil().max(1.0) as u64);
    }
    None
}

/// A store of buckets for one rate-limit action.
pub trait Buckets: Send + Sync {
    /// Counts a request for `key` at `now`. `Some(seconds)`: over the
    /// limit, retry after that long (nothing is counted).
    fn hit(&self, key: &str, now: Instant) -> Option<u64>;
}

/// The limit of one action: `capacity` per `window`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub capacity: u64,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    index: u64,
    current: u64,
    previous: u64,
}

/// A single-threaded table: the reference behaviour.
#[derive(Debug)]
pub struct Limiter {
    rule: Rule,
    windows: HashMap<String, Window>,
    sweep_at: usize,
}

impl Limiter {
    pub fn new(rule: Rule) -> Limiter {
        Limiter {
            rule,
            windows: HashMap::new(),
            sweep_at: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn hit(&mut self, key: &str, now: Instant) -> Option<u64> {
        let Rule { capacity, window } = self.rule;
        let (index, into) = window_of(now, window);
        if self.windows.len() >= self.sweep_at.max(1024) {
            self.windows.retain(|_, e| e.index + 1 >= index);
            self.sweep_at = self.windows.len() * 2;
        }
        let e = match self.windows.get_mut(key) {
            Some(e) => e,
            None => self.windows.entry(key.to_owned()).or_insert(Window {
                index,
                current: 0,
                previous: 0,
            }),
        };
        // Time never goes back for a bucket (see the module docs).
        let (at, into) = if e.index > index {
            (e.index, 0.0)
        } else {
            (index, into)
        };
        let (previous, current) = roll(e.index, e.previous, e.current, at);
        *e = Window {
            index: at,
            current,
            previous,
        };
        if let Some(retry) = over(previous, current, into, capacity, window) {
            return Some(retry);
        }
        e.current += 1;
        None
    }
}

/// One bucket's state in one word: window index (high 64 bits), previous
/// count (next 32), current count (low 32). Counts never pass the
/// capacity, at most 2e9.
#[derive(Debug)]
struct Bucket(AtomicU128);

/// The state of a bucket the sweeper took out of the table.
const DEAD: u128 = u128::MAX;

fn pack(index: u64, previous: u64, current: u64) -> u128 {
    (index as u128) << 64 | (previous as u128 & 0xffff_ffff) << 32 | (current as u128 & 0xffff_ffff)
}

fn unpack(s: u128) -> (u64, u64, u64) {
    (
        (s >> 64) as u64,
        (s >> 32) as u64 & 0xffff_ffff,
        s as u64 & 0xffff_ffff,
    )
}

impl Bucket {
    fn new(index: u64) -> Bucket {
        Bucket(AtomicU128::new(pack(index, 0, 0)))
    }

    /// Marks the bucket dead if both of its windows are over at `index`;
    /// true when it did. A dead bucket is never counted in again.
    fn kill_if_stale(&self, index: u64) -> bool {
        let mut s = self.0.load(Ordering::Acquire);
        loop {
            if s == DEAD {
                return true;
            }
            if unpack(s).0 + 1 >= index {
                return false;
            }
            match self
                .0
                .compare_exchange_weak(s, DEAD, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }
}

/// Sweeps start when the table holds this many buckets, then at twice
/// what a sweep left.
const SWEEP_MIN: usize = 1024;

/// One table shared by every worker (see the module docs for the rule and
/// what exactness means). Lookups, counting and inserts are lock-free; a
/// sweep of expired buckets runs on one worker at a time when the table
/// has doubled since the last one, and takes out only buckets both of
/// whose windows are over (they count nothing any more).
pub struct SharedBuckets {
    rule: Rule,
    map: papaya::HashMap<Box<str>, Bucket>,
    sweep_at: AtomicUsize,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuckets")
            .field("rule", &self.rule)
            .field("buckets", &self.map.len())
            .finish()
    }
}

impl SharedBuckets {
    pub fn new(rule: Rule) -> SharedBuckets {
        SharedBuckets {
            rule,
            map: papaya::HashMap::new(),
            sweep_at: AtomicUsize::new(SWEEP_MIN),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Buckets in the table (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes out the buckets both of whose windows are over at `index`.
    fn sweep(&self, index: u64) {
        if self
            .sweeping
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let map = self.map.pin();
        map.retain(|_, b| !b.kill_if_stale(index));
        self.sweep_at
            .store((map.len() * 2).max(SWEEP_MIN), Ordering::Relaxed);
        self.sweeping.store(false, Ordering::Release);
    }
}

impl Buckets for SharedBuckets {
    fn hit(&self, key: &str, now: Instant) -> Option<u64> {
        let Rule { capacity, window } = self.rule;
        let (index, into) = window_of(now, window);
        let map = self.map.pin();
        loop {
            let bucket = match map.get(key) {
                Some(b) => b,
                None => {
                    if map.len() >= self.sweep_at.load(Ordering::Relaxed) {
                        self.sweep(index);
                    }
                    map.get_or_insert_with(key.into(), || Bucket::new(index))
                }
            };
            let mut s = bucket.0.load(Ordering::Acquire);
            loop {
                if s == DEAD {
                    // Swept while we looked: take it out if the sweeper
                    // has not yet, and count in a new one.
                    let _ = map.remove_if(key, |_, b| b.0.load(Ordering::Acquire) == DEAD);
                    break;
                }
                let (stored, previous, current) = unpack(s);
                let (at, into) = if stored > index {
                    (stored, 0.0)
                } else {
                    (index, into)
                };
                let (previous, current) = roll(stored, previous, current, at);
                if let Some(retry) = over(previous, current, into, capacity, window) {
                    // Decided on the state just read: nothing to write.
                    return Some(retry);
                }
                let next = pack(at, previous, current + 1);
                match bucket
                    .0
                    .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return None,
                    Err(seen) => s = seen,
                }
            }
        }
    }
}

/// One owner thread's work: a decision for a key it owns.
struct Ask {
    key: String,
    now: Instant,
    reply: std::sync::mpsc::SyncSender<Option<u64>>,
}

/// Owner threads by key hash, each with its own [`Limiter`]; a decision
/// is a request to the owner and its answer. On the edge this would be a
/// message to the owning worker and an await on the reply; here the
/// caller blocks, which is only for tests and the comparison benchmark.
pub struct OwnerBuckets {
    owners: Vec<std::sync::mpsc::Sender<Ask>>,
    hasher: std::collections::hash_map::RandomState,
}

impl OwnerBuckets {
    /// Starts `owners` threads; they end when this is dropped.
    pub fn new(rule: Rule, owners: usize) -> OwnerBuckets {
        let owners = (0..owners.max(1))
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel::<Ask>();
                std::thread::spawn(move || {
                    let mut limiter = Limiter::new(rule);
                    while let Ok(ask) = rx.recv() {
                        let _ = ask.reply.send(limiter.hit(&ask.key, ask.now));
                    }
                });
                tx
            })
            .collect();
        OwnerBuckets {
            owners,
            hasher: Default::default(),
        }
    }
}

impl Buckets for OwnerBuckets {
    fn hit(&self, key: &str, now: Instant) -> Option<u64> {
        let owner = &self.owners[self.hasher.hash_one(key) as usize % self.owners.len()];
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let ask = Ask {
            key: key.to_owned(),
            now,
            reply,
        };
        if owner.send(ask).is_err() {
            return None;
        }
        answer.recv().unwrap_or(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Barrier};

    const MIN: Duration = Duration::from_secs(60);

    fn t0() -> Instant {
        // The start of a window, well after the epoch.
        epoch() + Duration::from_secs(6000)
    }

    fn rule(capacity: u64) -> Rule {
        Rule {
            capacity,
            window: MIN,
        }
    }

    /// The reference behaviour, then the same sequence on each store.
    fn sequence(hit: &mut dyn FnMut(&str, Instant) -> Option<u64>) {
        let t0 = t0();
        assert_eq!(hit("k", t0), None);
        assert_eq!(hit("k", t0), None);
        let r = hit("k", t0).expect("limited");
        assert!((1..=60).contains(&r), "{r}");
        // Another key is independent.
        assert_eq!(hit("j", t0), None);
        // Halfway into the next window, 2 × 0.5 + 0 + 1 ≤ 2: one more.
        assert_eq!(hit("k", t0 + Duration::from_secs(90)), None);
        assert!(hit("k", t0 + Duration::from_secs(90)).is_some());
        // Two windows later, all forgotten.
        assert_eq!(hit("k", t0 + Duration::from_secs(300)), None);
    }

    #[test]
    fn sliding_window_counts_and_recovers_on_every_store() {
        let mut l = Limiter::new(rule(2));
        sequence(&mut |k, t| l.hit(k, t));
        let s = SharedBuckets::new(rule(2));
        sequence(&mut |k, t| s.hit(k, t));
        let o = OwnerBuckets::new(rule(2), 2);
        sequence(&mut |k, t| o.hit(k, t));
    }

    #[test]
    fn a_late_clock_read_counts_in_the_newer_window() {
        let s = SharedBuckets::new(rule(1));
        let t0 = t0();
        // Window k+1 opened by one worker...
        assert_eq!(s.hit("k", t0 + MIN + Duration::from_secs(59)), None);
        // ...then another whose clock read is from window k: it is over
        // (k+1 already holds the one allowed), not counted in k.
        assert!(s.hit("k", t0 + Duration::from_secs(30)).is_some());
        let mut l = Limiter::new(rule(1));
        assert_eq!(l.hit("k", t0 + MIN + Duration::from_secs(59)), None);
        assert!(l.hit("k", t0 + Duration::from_secs(30)).is_some());
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn the_bucket_word_is_lock_free_here() {
        // cmpxchg16b (x86_64, detected at run time) or casp/ldxp (aarch64).
        assert!(AtomicU128::is_lock_free());
    }

    #[test]
    fn packing_round_trips_the_largest_counts() {
        let s = pack(u64::MAX - 1, 2_000_000_000, 1_999_999_999);
        assert_eq!(unpack(s), (u64::MAX - 1, 2_000_000_000, 1_999_999_999));
        assert_ne!(s, DEAD);
    }

    /// Threads hammer one key at one instant: exactly `capacity` admitted.
    fn hammer(store: Arc<dyn Buckets>, capacity: u64, threads: usize, per: usize) -> u64 {
        let admitted = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(threads));
        let now = t0() + Duration::from_secs(10);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, admitted, barrier) = (store.clone(), admitted.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..per {
                        if store.hit("same", now).is_none() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let n = admitted.load(Ordering::Relaxed);
        assert_eq!(
            n,
            capacity,
            "admitted {n} of {} with capacity {capacity}",
            threads * per
        );
        n
    }

    #[test]
    fn shared_buckets_admit_exactly_capacity_under_concurrency() {
        for capacity in [1, 7, 1000] {
            hammer(
                Arc::new(SharedBuckets::new(rule(capacity))),
                capacity,
                8,
                2000,
            );
        }
    }

    #[test]
    fn owner_buckets_admit_exactly_capacity_under_concurrency() {
        for capacity in [1, 7, 1000] {
            hammer(
                Arc::new(OwnerBuckets::new(rule(capacity), 2)),
                capacity,
                8,
                500,
            );
        }
    }

    /// Phases at several times across window boundaries (fractions where
    /// the previous window's weight matters); in each, threads hammer one
    /// key at the same instant. The order within a phase cannot change the
    /// outcome, so each phase must admit exactly what the single-threaded
    /// reference admits for the same phases.
    #[test]
    fn concurrent_phases_match_the_reference_across_window_boundaries() {
        let capacity = 40;
        let phases = [0u64, 30, 45, 60, 75, 90, 119, 150, 200, 260, 400];
        let hits_per_phase = 8 * 60;
        let mut reference = Limiter::new(rule(capacity));
        let expected: Vec<u64> = phases
            .iter()
            .map(|&sec| {
                let now = t0() + Duration::from_secs(sec);
                (0..hits_per_phase)
                    .filter(|_| reference.hit("k", now).is_none())
                    .count() as u64
            })
            .collect();
        assert!(
            expected.iter().any(|&n| n > 0 && n < capacity),
            "{expected:?}"
        );
        let stores: Vec<Arc<dyn Buckets>> = vec![
            Arc::new(SharedBuckets::new(rule(capacity))),
            Arc::new(OwnerBuckets::new(rule(capacity), 2)),
        ];
        for store in stores {
            let got: Vec<u64> = phases
                .iter()
                .map(|&sec| {
                    let now = t0() + Duration::from_secs(sec);
                    let admitted = Arc::new(AtomicU64::new(0));
                    let hs: Vec<_> = (0..8)
                        .map(|_| {
                            let (store, admitted) = (store.clone(), admitted.clone());
                            std::thread::spawn(move || {
                                for _ in 0..hits_per_phase / 8 {
                                    if store.hit("k", now).is_none() {
                                        admitted.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().expect("thread");
                    }
                    admitted.load(Ordering::Relaxed)
                })
                .collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn expired_buckets_are_swept_and_memory_stays_bounded() {
        let s = SharedBuckets::new(rule(5));
        let t0 = t0();
        for i in 0..5000 {
            assert_eq!(s.hit(&format!("ip-{i}"), t0), None);
        }
        assert!(s.len() >= 5000);
        // Three windows later new keys arrive: the old ones are swept.
        for round in 0..3 {
            for i in 0..100 {
                let _ = s.hit(&format!("new-{round}-{i}"), t0 + 3 * MIN);
            }
        }
        for i in 0..5000 {
            let _ = s.hit(&format!("late-{i}"), t0 + 3 * MIN);
        }
        assert!(s.len() < 6000, "{} buckets", s.len());
        // A swept key starts afresh and still counts exactly.
        for _ in 0..5 {
            assert_eq!(s.hit("ip-1", t0 + 3 * MIN), None);
        }
        assert!(s.hit("ip-1", t0 + 3 * MIN).is_some());
    }

    #[test]
    fn sweeps_racing_hits_never_lose_a_count() {
        // Many keys so that sweeps run while threads count on one key
        // whose bucket is stale (so the sweeper may kill it mid-hit).
        let capacity = 3;
        for round in 0..20u64 {
            let s = Arc::new(SharedBuckets::new(rule(capacity)));
            let base = t0() + Duration::from_secs(6000 * round);
            for i in 0..2000 {
                let _ = s.hit(&format!("old-{i}"), base);
            }
            let _ = s.hit("hot", base);
            let later = base + 5 * MIN;
            let admitted = Arc::new(AtomicU64::new(0));
            let barrier = Arc::new(Barrier::new(4));
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let (s, admitted, barrier) = (s.clone(), admitted.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for i in 0..600 {
                            if t == 0 {
                                // New keys trigger sweeps.
                                let _ = s.hit(&format!("fresh-{i}"), later);
                            } else if s.hit("hot", later).is_none() {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("thread");
            }
            assert_eq!(admitted.load(Ordering::Relaxed), capacity, "round {round}");
        }
    }
}
