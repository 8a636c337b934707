//! Completion marks in memory: which lanes have a `completed` word still to flush, and which
//! marks are known durable (docs/design.md §8.3, and §10.2 for the quarantine that waits for
//! them).
//!
//! A committer stores its lane's `completed` word (in the pool, not flushed) and then
//! [`CompletionMarks::mark`]s it pending; the next drainer of any thread flushes the pending
//! lanes' words before its ordering point ([`CompletionMarks::flush_pending`]) and, once that
//! point has passed, [`CompletionMarks::settle`]s them: each flushed mark becomes known durable
//! and its pending entry is cleared unless a newer mark replaced it meanwhile. Blocks a
//! transaction freed are reused only once [`CompletionMarks::is_durable`] says its mark is.
//!
//! Its atomics come from the crate's `sync` module (loom's under `--cfg ptm_loom`), so
//! `tests/loom.rs` model-checks this very code.

use crate::sync::{AtomicU64, Ordering};

/// The volatile completion state of one pool's lanes.
#[derive(Debug)]
pub struct CompletionMarks {
    /// Per lane: a completed seq whose `completed` word still needs a flush by some drainer.
    pending_seq: Box<[AtomicU64]>,
    /// Bit per lane: `pending_seq` is non-zero.
    pending_bits: Box<[AtomicU64]>,
    /// Per lane: the highest seq whose completion mark is known durable.
    durable: Box<[AtomicU64]>,
}

impl CompletionMarks {
    /// No mark pending or durable, for `lanes` lanes.
    pub fn new(lanes: usize) -> Self {
        CompletionMarks {
            pending_seq: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
            pending_bits: (0..lanes.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            durable: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Lane `lane` completed `seq` and stored it in its `completed` word (the caller did, before
    /// this call): the word waits for a drainer's flush.
    pub fn mark(&self, lane: usize, seq: u64) {
        // A swap, not a store: the same instruction on x86-64 (a sequentially consistent store
        // is an `xchg`), and one loom keeps out of the middle of `settle`'s compare-exchange
        // (loom 0.7 lets a plain store land inside another thread's read-modify-write,
        // tokio-rs/loom#254, an execution C++ forbids, in which a newer mark would be erased).
        self.pending_seq[lane].swap(seq, Ordering::SeqCst);
        self.pending_bits[lane / 64].fetch_or(1 << (lane % 64), Ordering::SeqCst);
    }

    /// Calls `flush(lane)` for every lane with a pending mark (the caller flushes its
    /// `completed` line) and returns `(lane, seq)` of each in `out`, for
    /// [`settle`](Self::settle) after the caller's ordering point.
    pub fn flush_pending(&self, out: &mut Vec<(usize, u64)>, mut flush: impl FnMut(usize)) {
        out.clear();
        for (w, word) in self.pending_bits.iter().enumerate() {
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let lane = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let seq = self.pending_seq[lane].load(Ordering::SeqCst);
                if seq != 0 {
                    flush(lane);
                    out.push((lane, seq));
                }
            }
        }
    }

    /// After the ordering point that followed [`flush_pending`](Self::flush_pending): the
    /// flushed marks are durable; clears the pending ones no newer mark replaced.
    pub fn settle(&self, flushed: &[(usize, u64)]) {
        for &(lane, seq) in flushed {
            // The flushed line held `completed >= seq`, and the caller has drained since.
            self.durable[lane].fetch_max(seq, Ordering::SeqCst);
            if self.pending_seq[lane]
                .compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let bit = 1u64 << (lane % 64);
                self.pending_bits[lane / 64].fetch_and(!bit, Ordering::SeqCst);
                // A completion recorded between the exchange and the clear keeps its bit.
                if self.pending_seq[lane].load(Ordering::SeqCst) != 0 {
                    self.pending_bits[lane / 64].fetch_or(bit, Ordering::SeqCst);
                }
            }
        }
    }

    /// [`settle`](Self::settle)`(flushed)` then [`mark`](Self::mark)`(lane, seq)`, by the
    /// holder of `lane` after its commit's drain, in fewer atomic steps: the lane's own flushed
    /// mark, while still pending, is replaced by `seq` in one exchange, which leaves the lane's
    /// bit set (clearing it and setting it again would take two more read-modify-writes, each a
    /// full barrier on x86-64).
    pub fn settle_then_mark(&self, flushed: &[(usize, u64)], lane: usize, seq: u64) {
        let mut marked = false;
        for &(l, s) in flushed {
            if l == lane && !marked {
                self.durable[l].fetch_max(s, Ordering::SeqCst);
                // Fails only if another drainer settled `s` meanwhile (the seq is 0 then, and
                // the lane's bit cleared or about to be): `mark` below sets both again.
                marked = self.pending_seq[l]
                    .compare_exchange(s, seq, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            } else {
                self.settle(&[(l, s)]);
            }
        }
        if !marked {
            self.mark(lane, seq);
        }
    }

    /// Lane `lane`'s mark `seq` is durable by other means (a rollback's own drain, recovery).
    pub fn set_durable(&self, lane: usize, seq: u64) {
        self.durable[lane].fetch_max(seq, Ordering::SeqCst);
    }

    /// Whether lane `lane`'s completion of `seq` is known durable: the blocks its transaction
    /// freed may be reused.
    pub fn is_durable(&self, lane: usize, seq: u64) -> bool {
        self.durable[lane].load(Ordering::SeqCst) >= seq
    }

    /// The seq lane `lane` has pending (0: none).
    pub fn pending(&self, lane: usize) -> u64 {
        self.pending_seq[lane].load(Ordering::SeqCst)
    }
}

#[cfg(all(test, not(ptm_loom)))]
mod tests {
    use super::CompletionMarks;

    /// What `flush_pending` reports, and the lanes it asked to flush, in order.
    fn flush(m: &CompletionMarks) -> (Vec<(usize, u64)>, Vec<usize>) {
        let (mut out, mut lanes) = (Vec::new(), Vec::new());
        m.flush_pending(&mut out, |lane| lanes.push(lane));
        (out, lanes)
    }

    /// Every lane's pending bit, word by word (the field's invariant: set exactly for the lanes
    /// with a pending seq, once no thread is between `settle`'s steps; a stale bit costs every
    /// drainer a wasted look).
    fn bits(m: &CompletionMarks) -> Vec<u64> {
        m.pending_bits
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }

    #[test]
    fn marks_of_lanes_past_the_first_word_are_flushed_and_settled() {
        let m = CompletionMarks::new(130);
        m.mark(3, 7);
        m.mark(64, 9);
        m.mark(129, 11);
        assert_eq!(m.pending(64), 9);
        assert_eq!(bits(&m), [1 << 3, 1, 1 << 1]);
        let (out, lanes) = flush(&m);
        assert_eq!(out, [(3, 7), (64, 9), (129, 11)]);
        assert_eq!(lanes, [3, 64, 129]);
        assert!(!m.is_durable(129, 11));
        m.settle(&out);
        assert!(m.is_durable(3, 7) && m.is_durable(64, 9) && m.is_durable(129, 11));
        assert!(!m.is_durable(64, 10));
        assert_eq!((m.pending(3), m.pending(64), m.pending(129)), (0, 0, 0));
        assert_eq!(bits(&m), [0, 0, 0]);
        assert_eq!(flush(&m), (vec![], vec![]));
    }

    #[test]
    fn settling_one_lane_leaves_the_others_pending() {
        let m = CompletionMarks::new(8);
        m.mark(0, 4);
        m.mark(5, 6);
        m.settle(&[(5, 6)]);
        assert_eq!(m.pending(5), 0);
        assert_eq!(m.pending(0), 4);
        assert_eq!(bits(&m), [1]);
        assert_eq!(flush(&m).0, [(0, 4)]);
        assert!(m.is_durable(5, 6) && !m.is_durable(0, 4));
    }

    #[test]
    fn a_newer_mark_than_the_flushed_one_stays_pending() {
        let m = CompletionMarks::new(4);
        m.mark(2, 10);
        let (out, _) = flush(&m);
        m.mark(2, 12); // the lane's next transaction completed before the settle
        m.settle(&out);
        assert!(m.is_durable(2, 10) && !m.is_durable(2, 12));
        assert_eq!(m.pending(2), 12);
        assert_eq!(bits(&m), [1 << 2]);
        assert_eq!(flush(&m).0, [(2, 12)]);
    }

    /// The committer's own flushed mark, still pending, is replaced in place by its new one (the
    /// lane's bit stays set); another lane's flushed mark, ahead of it in the list, is settled.
    #[test]
    fn settle_then_mark_replaces_the_own_pending_mark_and_settles_the_others() {
        let m = CompletionMarks::new(8);
        m.mark(1, 5);
        m.mark(6, 7);
        let (out, _) = flush(&m);
        assert_eq!(out, [(1, 5), (6, 7)]);
        m.settle_then_mark(&out, 6, 9);
        assert!(m.is_durable(1, 5) && m.is_durable(6, 7));
        assert!(!m.is_durable(6, 9));
        assert_eq!((m.pending(1), m.pending(6)), (0, 9));
        assert_eq!(bits(&m), [1 << 6]);
        assert_eq!(flush(&m).0, [(6, 9)]);
    }

    /// Another drainer settled the committer's flushed mark between its drain and its commit
    /// (its pending seq is 0, its bit cleared): the new mark is recorded pending again, with its
    /// bit, so the next drainer flushes it. A committer with no flushed mark of its own marks too.
    #[test]
    fn settle_then_mark_marks_again_after_another_drainer_settled_the_own_mark() {
        let m = CompletionMarks::new(4);
        m.mark(2, 5);
        let (out, _) = flush(&m);
        m.settle(&out); // another thread's drain
        assert_eq!((m.pending(2), bits(&m)), (0, vec![0]));
        m.settle_then_mark(&out, 2, 9);
        assert!(m.is_durable(2, 5) && !m.is_durable(2, 9));
        assert_eq!(m.pending(2), 9);
        assert_eq!(bits(&m), [1 << 2]);
        assert_eq!(flush(&m).0, [(2, 9)]);
        m.settle_then_mark(&[], 3, 4);
        assert_eq!(m.pending(3), 4);
        assert_eq!(bits(&m), [1 << 2 | 1 << 3]);
    }

    #[test]
    fn set_durable_only_raises_the_durable_seq() {
        let m = CompletionMarks::new(2);
        m.set_durable(1, 20);
        m.set_durable(1, 15);
        assert!(m.is_durable(1, 20) && !m.is_durable(1, 21) && !m.is_durable(0, 1));
        assert_eq!(m.pending(1), 0);
    }
}
