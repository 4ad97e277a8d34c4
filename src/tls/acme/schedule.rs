//! When to renew and when to retry: pure time arithmetic, no clocks read
//! except by the caller, so every rule here is unit tested.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// Longest delay between two attempts for one domain.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Shortest accepted `retry_base`: protects the CA from a tight failure loop.
pub(crate) const MIN_RETRY_BASE: Duration = Duration::from_millis(100);

/// A certificate is renewed once two thirds of its lifetime have passed
/// (30 days before expiry for a 90-day certificate). An inverted window
/// (not_after before not_before) is due at once.
pub(crate) fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    match not_after.duration_since(not_before) {
        Ok(lifetime) => not_before + lifetime / 3 * 2,
        Err(_) => not_before,
    }
}

/// Delay before attempt number `failures + 1`, after `failures` (>= 1)
/// consecutive failures: `base * 2^(failures-1)`, capped at
/// [`MAX_RETRY_DELAY`], then "equal jitter": half of it fixed, the other half
/// scaled by `jitter` in `[0, 1]`. So the result lies in `[nominal/2, nominal]`.
pub(crate) fn backoff_delay(base: Duration, failures: u32, jitter: f64) -> Duration {
    let base = base.max(MIN_RETRY_BASE);
    let exponent = failures.saturating_sub(1).min(31);
    let nominal = base
        .checked_mul(1u32 << exponent)
        .unwrap_or(MAX_RETRY_DELAY)
        .min(MAX_RETRY_DELAY);
    let half = nominal / 2;
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    half + half.mul_f64(jitter)
}

/// A uniform value in `[0, 1)` for jitter. Not cryptographic; std's
/// `RandomState` is randomly keyed per process and per call.
pub(crate) fn jitter() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    hasher.write_u32(nanos);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Polling schedule while the CA works on an order: starts short (a local CA
/// answers in milliseconds), doubles, and stays below a few seconds.
pub(crate) struct Poll {
    next: Duration,
}

pub(crate) const POLL_FIRST: Duration = Duration::from_millis(200);
pub(crate) const POLL_MAX: Duration = Duration::from_secs(4);

impl Poll {
    pub(crate) fn new() -> Self {
        Poll { next: POLL_FIRST }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(POLL_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renews_at_two_thirds_of_lifetime() {
        let nb = UNIX_EPOCH + DAY * 1000;
        assert_eq!(renewal_time(nb, nb + DAY * 90), nb + DAY * 60);
        assert_eq!(renewal_time(nb, nb + DAY * 6), nb + DAY * 4);
        // Pebble-style 5-year certificate.
        assert_eq!(
            renewal_time(nb, nb + DAY * 1825),
            nb + DAY * 1216 + DAY * 2 / 3
        );
        // Inverted or empty windows are due at once.
        assert_eq!(renewal_time(nb + DAY, nb), nb + DAY);
        assert_eq!(renewal_time(nb, nb), nb);
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let base = Duration::from_secs(30);
        // jitter 1.0 gives the nominal value.
        let full: Vec<u64> = (1..=9)
            .map(|n| backoff_delay(base, n, 1.0).as_secs())
            .collect();
        assert_eq!(full, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        // jitter 0.0 gives half of it.
        assert_eq!(backoff_delay(base, 1, 0.0), Duration::from_secs(15));
        assert_eq!(backoff_delay(base, 20, 0.0), Duration::from_secs(1800));
        // Huge failure counts never overflow.
        assert_eq!(backoff_delay(base, u32::MAX, 1.0), MAX_RETRY_DELAY);
        // Bad jitter values are clamped.
        assert_eq!(backoff_delay(base, 1, 7.0), base);
        assert_eq!(backoff_delay(base, 1, f64::NAN), base / 2);
        // A zero base is raised to the minimum.
        assert_eq!(backoff_delay(Duration::ZERO, 1, 1.0), MIN_RETRY_BASE);
    }

    #[test]
    fn backoff_stays_in_jitter_window() {
        let base = Duration::from_secs(30);
        for n in 1..12 {
            let nominal = backoff_delay(base, n, 1.0);
            for _ in 0..50 {
                let d = backoff_delay(base, n, jitter());
                assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            }
        }
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn poll_schedule_grows_and_caps() {
        let mut poll = Poll::new();
        let delays: Vec<u128> = (0..7).map(|_| poll.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 4000, 4000]);
    }
}
