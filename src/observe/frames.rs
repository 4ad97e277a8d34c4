//! A bounded store of byte frames, oldest first: at most `max` frames, each
//! tagged with a rising sequence number, kept back to back in one circular
//! buffer. Adding a frame is one copy into memory written in order (no
//! allocation once the buffer has grown to the ring's size, no per-frame
//! object to build or free); reading one copies it out. The inspector keeps
//! each endpoint's captures here as the raw records the workers queued and
//! decodes them only when the API reads them. Sans-IO; no locking.

use std::collections::VecDeque;

/// Where a frame sits: `at` is a logical offset (rising; the buffer index
/// is `at % buf.len()`).
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    at: usize,
    len: usize,
}

/// The buffer never shrinks below this.
const MIN_BYTES: usize = 4096;

#[derive(Debug)]
pub struct FrameRing {
    max: usize,
    buf: Vec<u8>,
    /// Logical offset of the next write.
    head: usize,
    entries: VecDeque<Entry>,
}

impl FrameRing {
    /// A ring of at most `max` frames.
    pub fn new(max: usize) -> Self {
        FrameRing {
            max,
            buf: Vec::new(),
            head: 0,
            entries: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the kept frames use.
    fn used(&self) -> usize {
        self.entries.front().map_or(0, |e| self.head - e.at)
    }

    /// Adds a frame, evicting the oldest when `max` are kept. `seq` must
    /// be above every kept one's.
    pub fn push(&mut self, seq: u64, frame: &[u8]) {
        if self.max == 0 {
            return;
        }
        if self.entries.len() >= self.max {
            self.entries.pop_front();
        }
        if self.entries.is_empty() {
            self.head = 0;
        }
        let need = self.used() + frame.len();
        if need > self.buf.len() || self.buf.is_empty() {
            self.relayout(need.max(self.buf.len() * 2));
        } else if self.buf.len() > 4 * need.max(MIN_BYTES) && self.buf.len() > (1 << 20) {
            // A burst of large frames (full bodies) has passed: give the
            // memory back.
            self.relayout(2 * need);
        }
        let cap = self.buf.len();
        let at = self.head % cap;
        let first = frame.len().min(cap - at);
        self.buf[at..at + first].copy_from_slice(&frame[..first]);
        self.buf[..frame.len() - first].copy_from_slice(&frame[first..]);
        self.entries.push_back(Entry {
            seq,
            at: self.head,
            len: frame.len(),
        });
        self.head += frame.len();
    }

    /// Moves the kept frames, in order, to the start of a new buffer of
    /// at least `bytes`.
    fn relayout(&mut self, bytes: usize) {
        let cap = bytes.max(MIN_BYTES).next_power_of_two();
        let mut buf = vec![0u8; cap];
        let base = self.entries.front().map_or(self.head, |e| e.at);
        let mut out = 0;
        for e in &mut self.entries {
            copy_out(&self.buf, e.at, e.len, &mut buf[out..out + e.len]);
            e.at = out;
            out += e.len;
        }
        debug_assert_eq!(out, self.head - base);
        self.head = out;
        self.buf = buf;
    }

    /// Appends the frame numbered `seq` to `out`; false if it is not kept.
    pub fn get(&self, seq: u64, out: &mut Vec<u8>) -> bool {
        let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return false;
        };
        let e = self.entries[i];
        let start = out.len();
        out.resize(start + e.len, 0);
        copy_out(&self.buf, e.at, e.len, &mut out[start..]);
        true
    }

    /// Copies every kept frame, oldest first, into `out`, and returns
    /// each one's sequence number and range in it.
    pub fn copy_all(&self, out: &mut Vec<u8>) -> Vec<(u64, std::ops::Range<usize>)> {
        let mut v = Vec::with_capacity(self.entries.len());
        out.reserve(self.used());
        for e in &self.entries {
            let start = out.len();
            out.resize(start + e.len, 0);
            copy_out(&self.buf, e.at, e.len, &mut out[start..]);
            v.push((e.seq, start..start + e.len));
        }
        v
    }
}

/// Copies `len` bytes at logical offset `at` of the circular `buf`.
fn copy_out(buf: &[u8], at: usize, len: usize, out: &mut [u8]) {
    if len == 0 {
        return;
    }
    let cap = buf.len();
    let at = at % cap;
    let first = len.min(cap - at);
    out[..first].copy_from_slice(&buf[at..at + first]);
    out[first..len].copy_from_slice(&buf[..len - first]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    /// The ring against a plain model (a deque of owned frames) over
    /// frames of many sizes: wrapping, growing, shrinking, evicting.
    #[test]
    fn matches_a_model_over_many_sizes() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for max in [1usize, 2, 7, 50] {
            let mut r = FrameRing::new(max);
            let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
            for seq in 1..3000u64 {
                let len = match next() % 10 {
                    0 => 0,
                    1 => 3_000_000 + (next() % 1000) as usize,
                    2..=4 => (next() % 5000) as usize,
                    _ => (next() % 300) as usize,
                };
                // Big frames only now and then (each is megabytes).
                let len = if len > 1_000_000 && seq % 200 != 0 {
                    len % 700
                } else {
                    len
                };
                let f = frame(seq, len);
                r.push(seq, &f);
                model.push_back((seq, f));
                if model.len() > max {
                    model.pop_front();
                }
                assert_eq!(r.len(), model.len());
                if seq % 97 == 0 || max == 1 {
                    let mut out = Vec::new();
                    let all = r.copy_all(&mut out);
                    assert_eq!(all.len(), model.len());
                    for ((s, range), (ms, mf)) in all.iter().zip(&model) {
                        assert_eq!(s, ms);
                        assert_eq!(&out[range.clone()], &mf[..], "max {max} seq {s}");
                    }
                }
                let (ms, mf) = &model[(next() as usize) % model.len()];
                let mut one = vec![9u8];
                assert!(r.get(*ms, &mut one));
                assert_eq!(&one[1..], &mf[..]);
            }
            // Memory went back after the big frames.
            assert!(
                r.buf.len() <= (8 << 20) || max == 50,
                "max {max}: {}",
                r.buf.len()
            );
            assert!(!r.get(0, &mut Vec::new()));
        }
    }

    #[test]
    fn a_zero_ring_keeps_nothing() {
        let mut r = FrameRing::new(0);
        r.push(1, b"abc");
        assert!(r.is_empty());
        assert!(!r.get(1, &mut Vec::new()));
    }
}
