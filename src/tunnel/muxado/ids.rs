//! Stream-id bookkeeping: a cheap hasher for the stream map, and the
//! record of which peer ids were already used.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hash for u32 stream ids (sequential, never hostile in a
/// way that matters: the map is bounded by the stream limit).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdBuildHasher = BuildHasherDefault<IdHasher>;

/// How far below the highest peer id a late SYN may still arrive. The SDKs
/// pick ids at open time but send the SYN on the first write, so
/// concurrent opens can reach us slightly out of order.
pub(crate) const REORDER_WINDOW: u32 = 128;

/// Which peer-parity ids have been opened: exact within
/// [`REORDER_WINDOW`] ids of the highest one, and everything older counts
/// as used. Ids are therefore never reused, in constant memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerIds {
    /// Highest id seen (0: none yet).
    max: u32,
    /// Bit k set: id `max - 2k` was used.
    seen: u128,
}

impl PeerIds {
    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// Records `id` (of the peer's parity) as opened. False if it was
    /// already used or is too old to tell.
    pub(crate) fn admit(&mut self, id: u32) -> bool {
        if self.max == 0 || id > self.max {
            let shift = if self.max == 0 {
                u32::MAX
            } else {
                (id - self.max) / 2
            };
            self.seen = if shift >= REORDER_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.max = id;
            return true;
        }
        let k = (self.max - id) / 2;
        if k >= REORDER_WINDOW {
            return false;
        }
        let bit = 1u128 << k;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increasing_ids_are_admitted_once() {
        let mut p = PeerIds::default();
        assert!(p.admit(3));
        assert!(!p.admit(3));
        assert!(p.admit(5));
        assert!(p.admit(9));
        assert!(p.admit(7)); // late but unused
        assert!(!p.admit(7));
        assert!(!p.admit(5));
        assert_eq!(p.max(), 9);
    }

    #[test]
    fn ids_older_than_the_window_count_as_used() {
        let mut p = PeerIds::default();
        assert!(p.admit(2));
        assert!(p.admit(2 + 2 * REORDER_WINDOW));
        assert!(!p.admit(2)); // used (and now outside the window)
        assert!(p.admit(4)); // k = REORDER_WINDOW - 1: still inside
        let mut q = PeerIds::default();
        assert!(q.admit(1000));
        assert!(q.admit(1000 - 2 * (REORDER_WINDOW - 1)));
        assert!(!q.admit(1000 - 2 * REORDER_WINDOW));
    }

    #[test]
    fn big_jumps_clear_history() {
        let mut p = PeerIds::default();
        assert!(p.admit(3));
        assert!(p.admit(0x7FFF_FFFF));
        assert!(!p.admit(3));
        assert!(!p.admit(0x7FFF_FFFF));
    }
}
