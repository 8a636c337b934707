//! Lane acquisition: a volatile busy flag per lane, taken with one atomic read-modify-write and
//! no global lock. Each thread starts at a preferred lane (spreading threads over the lanes) and
//! scans onward. When every lane is busy the caller backs off (spin, then yield) and retries:
//! lanes are held only while a transaction runs, so one frees as soon as any transaction ends.
//!
//! Each flag has its own 64-byte cache line: every transaction, read-only ones included, sets
//! its lane's flag at begin and clears it at end, and with one shared bitmap word those two
//! read-modify-writes moved the same line between the cores of every running thread.

use crate::sync::{spin_hint, AtomicU64, Ordering};

/// One lane's busy flag (0 free, 1 busy), alone on its cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Flag(AtomicU64);

/// The busy flags of `n` lanes.
#[derive(Debug)]
pub struct LaneMap {
    flags: Box<[Flag]>,
    n: usize,
}

impl LaneMap {
    /// `n` free lanes.
    pub fn new(n: usize) -> Self {
        let flags = (0..n).map(|_| Flag(AtomicU64::new(0))).collect();
        LaneMap { flags, n }
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
        if self.n == 0 {
            return None;
        }
        // Scans `start, start + 1, ...` wrapping at `n` (a compare, not a division per lane).
        let mut lane = if start < self.n { start } else { start % self.n };
        for _ in 0..self.n {
            let flag = &self.flags[lane].0;
            if flag.load(Ordering::Relaxed) == 0 && flag.swap(1, Ordering::Acquire) == 0 {
                return Some(lane);
            }
            lane += 1;
            if lane == self.n {
                lane = 0;
            }
        }
        None
    }

    /// Takes a free lane, waiting while all are busy.
    #[inline]
    pub fn acquire(&self, start: usize) -> usize {
        // Inlined first try: the thread's preferred lane is usually free.
        match self.try_acquire(start) {
            Some(l) => l,
            None => self.acquire_waiting(start),
        }
    }

    /// [`acquire`](Self::acquire) once every lane was busy: tries again, spinning, then
    /// yielding.
    fn acquire_waiting(&self, start: usize) -> usize {
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
        debug_assert!(self.is_busy(lane), "lane {lane} released twice");
        // A plain release store: a `mov` on x86-64, where a swap is a locked instruction that
        // waits for the commit's write-backs still in flight. Under loom a swap: a taker's
        // failed `swap(1)` on a busy flag is a read-modify-write, which no store can split in
        // the memory model, but loom (0.7, tokio-rs/loom#254) lets a plain store land between
        // its read and write, leaving a free lane marked busy. The two are the same release
        // for every execution the memory model allows.
        #[cfg(not(ptm_loom))]
        self.flags[lane].0.store(0, Ordering::Release);
        #[cfg(ptm_loom)]
        self.flags[lane].0.swap(0, Ordering::Release);
    }

    /// Whether `lane` is taken (diagnostics and tests).
    pub fn is_busy(&self, lane: usize) -> bool {
        self.flags[lane].0.load(Ordering::Relaxed) != 0
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
