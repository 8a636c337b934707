//! Lane acquisition: a volatile bitmap of busy lanes, taken with one atomic read-modify-write and
//! no global lock. Each thread starts at a preferred lane (spreading threads over the bitmap) and
//! scans onward. When every lane is busy the caller backs off (spin, then yield) and retries:
//! lanes are held only while a transaction runs, so one frees as soon as any transaction ends.

use crate::sync::{spin_hint, AtomicU64, Ordering};

/// The busy bitmap of `n` lanes.
#[derive(Debug)]
pub struct LaneMap {
    words: Box<[AtomicU64]>,
    n: usize,
}

impl LaneMap {
    /// `n` free lanes.
    pub fn new(n: usize) -> Self {
        let words = (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        LaneMap { words, n }
    }

    /// Number of lanes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no lanes (never, for a valid pool).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Tries once to take a free lane, scanning from `start`.
    pub fn try_acquire(&self, start: usize) -> Option<usize> {
        for k in 0..self.n {
            let lane = (start + k) % self.n;
            let (w, bit) = (lane / 64, 1u64 << (lane % 64));
            let word = &self.words[w];
            let cur = word.load(Ordering::Relaxed);
            if cur & bit != 0 {
                continue;
            }
            if word.fetch_or(bit, Ordering::Acquire) & bit == 0 {
                return Some(lane);
            }
        }
        None
    }

    /// Takes a free lane, waiting while all are busy.
    pub fn acquire(&self, start: usize) -> usize {
        let mut spins = 0u32;
        loop {
            if let Some(l) = self.try_acquire(start) {
                return l;
            }
            spins += 1;
            if spins < 64 {
                spin_hint();
            } else {
                #[cfg(not(ptm_loom))]
                std::thread::yield_now();
                #[cfg(ptm_loom)]
                spin_hint();
            }
        }
    }

    /// Returns a lane taken by this caller.
    pub fn release(&self, lane: usize) {
        let (w, bit) = (lane / 64, 1u64 << (lane % 64));
        let prev = self.words[w].fetch_and(!bit, Ordering::Release);
        debug_assert!(prev & bit != 0, "lane {lane} released twice");
    }

    /// Whether `lane` is taken (diagnostics and tests).
    pub fn is_busy(&self, lane: usize) -> bool {
        self.words[lane / 64].load(Ordering::Relaxed) & (1 << (lane % 64)) != 0
    }
}

/// A preferred starting lane for this thread: spread threads so they rarely collide.
pub(crate) fn preferred_lane(n: usize) -> usize {
    #[cfg(not(ptm_loom))]
    {
        use std::cell::Cell;
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static PREF: Cell<usize> = const { Cell::new(usize::MAX) });
        PREF.with(|p| {
            if p.get() == usize::MAX {
                p.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            }
            p.get() % n.max(1)
        })
    }
    #[cfg(ptm_loom)]
    {
        let _ = n;
        0
    }
}
