//! A worker's record queue: a single-producer single-consumer byte ring
//! (`rtrb`: two cursors, no lock, no allocation per record) that the
//! worker writes frames into and the drainer reads them from. A frame
//! that does not fit is dropped: the worker never waits.

use rtrb::{Consumer, Producer, RingBuffer};

use super::record;

/// The worker's end.
pub struct RecordProducer {
    tx: Producer<u8>,
}

/// The drainer's end.
pub struct RecordConsumer {
    rx: Consumer<u8>,
    /// A frame that wraps around the ring's end, made contiguous.
    scratch: Vec<u8>,
}

/// A ring of `bytes` bytes.
pub fn channel(bytes: usize) -> (RecordProducer, RecordConsumer) {
    let (tx, rx) = RingBuffer::new(bytes.max(64));
    (
        RecordProducer { tx },
        RecordConsumer {
            rx,
            scratch: Vec::new(),
        },
    )
}

impl RecordProducer {
    /// Queues one encoded frame; `false` when there is no room (or the
    /// drainer is gone).
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if self.tx.is_abandoned() {
            return false;
        }
        let Ok(mut chunk) = self.tx.write_chunk(frame.len()) else {
            return false;
        };
        let (a, b) = chunk.as_mut_slices();
        let (fa, fb) = frame.split_at(a.len());
        a.copy_from_slice(fa);
        b.copy_from_slice(fb);
        chunk.commit_all();
        true
    }
}

impl RecordConsumer {
    /// Hands every complete frame queued so far to `f` (at most `budget`
    /// bytes of them), then frees their room. Returns how many frames.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(&[u8])) -> usize {
        let avail = self.rx.slots().min(budget.max(1));
        let Ok(chunk) = self.rx.read_chunk(avail) else {
            return 0;
        };
        let (a, b) = chunk.as_slices();
        let total = a.len() + b.len();
        let mut at = 0usize;
        let mut frames = 0usize;
        while at < total {
            let Some(len) = peek_len(a, b, at) else {
                break;
            };
            if at + len > total {
                break;
            }
            if at + len <= a.len() {
                f(&a[at..at + len]);
            } else if at >= a.len() {
                f(&b[at - a.len()..at - a.len() + len]);
            } else {
                self.scratch.clear();
                self.scratch.extend_from_slice(&a[at..]);
                self.scratch.extend_from_slice(&b[..len - (a.len() - at)]);
                f(&self.scratch);
            }
            at += len;
            frames += 1;
        }
        chunk.commit(at);
        frames
    }

    /// Whether the worker's end is gone (and everything was read).
    pub fn finished(&self) -> bool {
        self.rx.is_abandoned() && self.rx.is_empty()
    }
}

/// The length of the frame at `at` of the two slices, prefix included.
fn peek_len(a: &[u8], b: &[u8], at: usize) -> Option<usize> {
    let mut p = [0u8; 4];
    for (i, byte) in p.iter_mut().enumerate() {
        let j = at + i;
        *byte = if j < a.len() {
            a[j]
        } else {
            *b.get(j - a.len())?
        };
    }
    record::frame_len(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_le_bytes().to_vec();
        f.extend(std::iter::repeat_n(n, len));
        f
    }

    #[test]
    fn frames_cross_the_ring_end_intact() {
        let (mut tx, mut rx) = channel(100);
        let mut seen = Vec::new();
        for round in 0..20u8 {
            // 3 frames of 4 + 20 bytes; the ring wraps every few rounds.
            for i in 0..3 {
                assert!(tx.push(&frame(round * 3 + i, 20)));
            }
            let n = rx.drain(usize::MAX, |f| seen.push(f.to_vec()));
            assert_eq!(n, 3);
        }
        for (k, f) in seen.iter().enumerate() {
            assert_eq!(f, &frame(k as u8, 20));
        }
    }

    #[test]
    fn a_full_ring_drops_and_a_budget_leaves_the_rest() {
        let (mut tx, mut rx) = channel(64);
        assert!(tx.push(&frame(1, 28)));
        assert!(tx.push(&frame(2, 28)));
        assert!(!tx.push(&frame(3, 28)), "no room: dropped");
        let mut seen = Vec::new();
        assert_eq!(rx.drain(40, |f| seen.push(f[4])), 1);
        assert_eq!(rx.drain(usize::MAX, |f| seen.push(f[4])), 1);
        assert_eq!(seen, [1, 2]);
        drop(tx);
        assert!(rx.finished());
    }
}
