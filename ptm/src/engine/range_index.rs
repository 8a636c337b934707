//! The exact set of byte ranges a large transaction has logged ([`RangeIndex`]): what a store
//! asks before it logs ("is every byte of `[off, end)` logged already?") once a transaction has
//! more ranges than a linear scan serves.
//!
//! Small ranges (under [`BIG`] bytes, the many slots, counters and node pieces of a transaction
//! of many collection operations) are kept as a bit per byte, 64 bits per cache line, in a hash
//! map from line number to mask: adding one and asking about one cost a hash lookup per line
//! they span, whatever the transaction's size. Larger ranges (fresh blocks, big snapshots: few
//! per transaction) are kept merged, disjoint and in address order, in a `BTreeMap`. A byte is
//! covered if either holds it, and the answer is exact: no range is ever missed, and nothing
//! outside the added ranges counts as covered.
//!
//! The previous index (a `BTreeMap` of every range by start, a lookup walking back over up to 8
//! of them) took about 45% of the time of a transaction of 100 000 hash-map inserts (`perf`),
//! and its per-insert cost grew with the transaction.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

/// Ranges of at least this many bytes go to the merged list instead of the line masks.
pub(crate) const BIG: u64 = 256;

/// Line map entries [`RangeIndex::clear`] keeps room for (about 256 KiB).
pub(crate) const KEEP_LINES: usize = 1 << 14;

/// A set of byte ranges of the pool, exact, for covered-or-not questions. See the module doc.
#[derive(Debug, Default)]
pub(crate) struct RangeIndex {
    /// Line number (`offset / 64`) -> the bytes of that line covered by a small range (bit `i`:
    /// byte `i` of the line). Never holds a zero mask.
    lines: HashMap<u64, u64, LineHash>,
    /// Ranges of at least [`BIG`] bytes, merged: start -> end, disjoint and never touching.
    big: BTreeMap<u64, u64>,
}

impl RangeIndex {
    /// Whether no range was added since the last [`clear`](Self::clear).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.big.is_empty()
    }

    /// Forgets every range (a transaction's start), keeping the line map's memory up to
    /// [`KEEP_LINES`] entries: a lane that once ran a huge transaction does not hold its
    /// table for good.
    pub(crate) fn clear(&mut self) {
        self.lines.clear();
        if self.lines.capacity() > KEEP_LINES {
            self.lines.shrink_to(KEEP_LINES);
        }
        self.big.clear();
    }

    /// Adds `[off, off + len)` (an empty range adds nothing; the end saturates at `u64::MAX`).
    pub(crate) fn insert(&mut self, off: u64, len: u64) {
        let end = off.saturating_add(len);
        if end <= off {
            return;
        }
        if end - off >= BIG {
            self.insert_big(off, end);
            return;
        }
        let mut at = off;
        while at < end {
            let line = at >> 6;
            let upto = end.min((line << 6).saturating_add(64));
            *self.lines.entry(line).or_insert(0) |= bits(at & 63, upto - at);
            at = upto;
        }
    }

    /// [`insert`](Self::insert) of a range of at least [`BIG`] bytes: merged with every range
    /// of the list it overlaps or touches.
    fn insert_big(&mut self, mut off: u64, mut end: u64) {
        if let Some((&s, &e)) = self.big.range(..=off).next_back() {
            if e >= off {
                off = s;
                end = end.max(e);
            }
        }
        while let Some((&s, &e)) = self.big.range(off..=end).next() {
            end = end.max(e);
            self.big.remove(&s);
        }
        self.big.insert(off, end);
    }

    /// Whether every byte of `[off, end)` was added (true for an empty range).
    #[inline]
    pub(crate) fn covers(&self, off: u64, end: u64) -> bool {
        let mut at = off;
        while at < end {
            let line = at >> 6;
            let bit = at & 63;
            let mask = self.lines.get(&line).map_or(0, |&m| m >> bit);
            // The covered bytes from `at` on in this line (the shift leaves the top bits clear,
            // so at most `64 - bit`).
            let run = u64::from((!mask).trailing_zeros());
            if run > 0 {
                at = (line << 6).saturating_add(bit + run);
                continue;
            }
            match self.big.range(..=at).next_back() {
                Some((_, &e)) if at < e => at = e,
                _ => return false,
            }
        }
        true
    }
}

/// The mask of bytes `[from, from + n)` of a line (`from < 64`, `1 <= n <= 64 - from`).
#[inline]
fn bits(from: u64, n: u64) -> u64 {
    debug_assert!(from < 64 && n >= 1 && from + n <= 64);
    (u64::MAX >> (64 - n)) << from
}

/// The line map's hasher: a keyed multiply of the line number (its keys are pool offsets, and
/// SipHash, `HashMap`'s default, would cost more than the lookup it serves). The key is drawn
/// per map from std's `RandomState`, so no fixed set of offsets collides in every process.
#[derive(Debug, Clone, Copy)]
struct LineHash(u64);

impl Default for LineHash {
    fn default() -> Self {
        LineHash(RandomState::new().hash_one(0x6c69_6e65_u64) | 1)
    }
}

impl BuildHasher for LineHash {
    type Hasher = LineHasher;

    #[inline]
    fn build_hasher(&self) -> LineHasher {
        LineHasher { key: self.0, h: 0 }
    }
}

/// See [`LineHash`]: only `write_u64` (a line number) is used.
#[derive(Debug)]
struct LineHasher {
    key: u64,
    h: u64,
}

impl Hasher for LineHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        let p = (x ^ self.key ^ self.h).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.h = p ^ (p >> 29);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_covers(ranges: &[(u64, u64)], off: u64, end: u64) -> bool {
        (off..end).all(|b| ranges.iter().any(|&(o, l)| o <= b && b < o + l))
    }

    #[test]
    fn small_ranges_across_lines_and_their_union() {
        let mut ix = RangeIndex::default();
        assert!(ix.is_empty());
        assert!(ix.covers(5, 5), "an empty range is covered");
        assert!(!ix.covers(0, 1));
        ix.insert(60, 10); // bytes 60..70: two lines
        assert!(!ix.is_empty());
        assert!(ix.covers(60, 70));
        assert!(ix.covers(63, 65));
        assert!(!ix.covers(59, 61));
        assert!(!ix.covers(69, 71));
        ix.insert(70, 2);
        assert!(ix.covers(60, 72), "two touching ranges cover their union");
        assert!(!ix.covers(60, 73));
        ix.insert(0, 0);
        assert!(!ix.covers(0, 1), "an empty range adds nothing");
        ix.clear();
        assert!(ix.is_empty());
        assert!(!ix.covers(60, 61));
    }

    #[test]
    #[cfg_attr(miri, ignore = "65 536 map inserts: minutes under Miri, and no unsafe code")]
    fn clear_gives_back_a_huge_table() {
        let mut ix = RangeIndex::default();
        for line in 0..4 * KEEP_LINES as u64 {
            ix.insert(line * 64, 8);
        }
        assert!(ix.lines.capacity() >= 4 * KEEP_LINES);
        ix.clear();
        assert!(ix.is_empty());
        assert!(ix.lines.capacity() <= 2 * KEEP_LINES, "{}", ix.lines.capacity());
        ix.insert(64, 8);
        assert!(ix.covers(64, 72));
    }

    #[test]
    fn big_ranges_merge_and_combine_with_small_ones() {
        let mut ix = RangeIndex::default();
        ix.insert(1000, BIG); // [1000, 1256)
        ix.insert(1256, BIG); // touches: merged
        assert_eq!(ix.big.len(), 1);
        assert!(ix.covers(1000, 1512));
        assert!(!ix.covers(999, 1001));
        assert!(!ix.covers(1511, 1513));
        ix.insert(1512, 8); // small, right after the big one
        assert!(ix.covers(1100, 1520));
        ix.insert(5000, 1000);
        ix.insert(900, 4200); // [900, 5100): swallows both
        assert_eq!(ix.big.len(), 1);
        assert!(ix.covers(900, 6000));
        assert!(!ix.covers(899, 900 + 1));
        assert!(!ix.covers(5999, 6001));
        ix.insert(u64::MAX - 10, 100);
        assert!(ix.covers(u64::MAX - 10, u64::MAX), "the end saturates");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Add(u64, u64),
        Clear,
        Query(u64, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => (0u64..1200, 1u64..80).prop_map(|(o, l)| Step::Add(o, l)),
            1 => (0u64..1200, BIG..BIG + 300).prop_map(|(o, l)| Step::Add(o, l)),
            1 => Just(Step::Clear),
            8 => (0u64..1600, 0u64..400).prop_map(|(o, l)| Step::Query(o, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// `covers` answers as a byte-by-byte model, for small and big ranges mixed, after
        /// clears, and for every added range and its neighbours.
        #[test]
        #[cfg_attr(miri, ignore = "proptest persists failures through the file system")]
        fn covers_matches_a_byte_model(steps in prop::collection::vec(step(), 1..60)) {
            let mut ix = RangeIndex::default();
            let mut model: Vec<(u64, u64)> = Vec::new();
            for s in steps {
                match s {
                    Step::Add(o, l) => {
                        ix.insert(o, l);
                        model.push((o, l));
                    }
                    Step::Clear => {
                        ix.clear();
                        model.clear();
                    }
                    Step::Query(o, l) => {
                        prop_assert_eq!(ix.covers(o, o + l), model_covers(&model, o, o + l), "{:?}", (o, l));
                        for &(o, l) in &model {
                            prop_assert!(ix.covers(o, o + l));
                            prop_assert_eq!(ix.covers(o.saturating_sub(1), o + l), model_covers(&model, o.saturating_sub(1), o + l));
                            prop_assert_eq!(ix.covers(o, o + l + 1), model_covers(&model, o, o + l + 1));
                        }
                    }
                }
                prop_assert_eq!(ix.is_empty(), model.iter().all(|&(_, l)| l == 0));
            }
        }
    }
}
