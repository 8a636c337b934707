//! The algorithms of the persistent lock words, generic over the atomic so loom can check them.
//!
//! A lock word lives in the pool next to the data it guards but holds only volatile state. Its
//! high 32 bits are the pool's open *generation*; a word whose generation differs from the
//! current one is free, whatever its low bits say. Each open increments the generation, so every
//! lock is reset on reopen without scanning the pool.
//!
//! Low 32 bits: mutex — owner lane + 1 (0 = free); rwlock — bit 31 set: writer (owner lane + 1
//! in bits 0..31), else the number of readers.

use crate::sync::Ordering;

/// A 64-bit atomic lock word: std's `AtomicU64` (lock words in the pool) or, under
/// `--cfg ptm_loom`, loom's (model checking).
pub trait LockWord {
    /// `AtomicU64::load`.
    fn load(&self, order: Ordering) -> u64;
    /// `AtomicU64::store`.
    fn store(&self, v: u64, order: Ordering);
    /// `AtomicU64::compare_exchange`.
    fn compare_exchange(&self, cur: u64, new: u64, ok: Ordering, err: Ordering) -> Result<u64, u64>;
    /// `AtomicU64::compare_exchange_weak`.
    fn compare_exchange_weak(&self, cur: u64, new: u64, ok: Ordering, err: Ordering) -> Result<u64, u64>;
}

macro_rules! lock_word {
    ($t:ty) => {
        impl LockWord for $t {
            fn load(&self, order: Ordering) -> u64 {
                <$t>::load(self, order)
            }
            fn store(&self, v: u64, order: Ordering) {
                <$t>::store(self, v, order)
            }
            fn compare_exchange(&self, cur: u64, new: u64, ok: Ordering, err: Ordering) -> Result<u64, u64> {
                <$t>::compare_exchange(self, cur, new, ok, err)
            }
            fn compare_exchange_weak(
                &self,
                cur: u64,
                new: u64,
                ok: Ordering,
                err: Ordering,
            ) -> Result<u64, u64> {
                <$t>::compare_exchange_weak(self, cur, new, ok, err)
            }
        }
    };
}

lock_word!(std::sync::atomic::AtomicU64);
#[cfg(ptm_loom)]
lock_word!(loom::sync::atomic::AtomicU64);

const WRITER: u64 = 1 << 31;
const LOW: u64 = 0xFFFF_FFFF;

fn word(generation: u32, low: u64) -> u64 {
    (u64::from(generation) << 32) | low
}

fn live_low(cur: u64, generation: u32) -> u64 {
    if (cur >> 32) as u32 == generation {
        cur & LOW
    } else {
        0
    }
}

/// Outcome of one acquisition attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Taken now.
    Acquired,
    /// Already held by this lane (re-entrant use in the same transaction).
    AlreadyHeld,
    /// Held by someone else: retry later.
    Busy,
}

/// Tries to take a mutex word for `lane`.
pub fn mutex_try_lock(w: &impl LockWord, generation: u32, lane: u32) -> Attempt {
    let me = u64::from(lane) + 1;
    let cur = w.load(Ordering::Acquire);
    match live_low(cur, generation) {
        0 => match w.compare_exchange(cur, word(generation, me), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Attempt::Acquired,
            Err(_) => Attempt::Busy,
        },
        owner if owner == me => Attempt::AlreadyHeld,
        _ => Attempt::Busy,
    }
}

/// Releases a mutex word held by this lane.
pub fn mutex_unlock(w: &impl LockWord, generation: u32) {
    w.store(word(generation, 0), Ordering::Release);
}

/// Tries to take a shared hold of an rwlock word.
pub fn rw_try_read(w: &impl LockWord, generation: u32) -> Attempt {
    let cur = w.load(Ordering::Acquire);
    let low = live_low(cur, generation);
    if low & WRITER != 0 || low >= WRITER - 1 {
        return Attempt::Busy;
    }
    match w.compare_exchange(
        cur,
        word(generation, low + 1),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Attempt::Acquired,
        Err(_) => Attempt::Busy,
    }
}

/// Drops a shared hold.
pub fn rw_unlock_read(w: &impl LockWord, generation: u32) {
    let mut cur = w.load(Ordering::Relaxed);
    loop {
        let low = live_low(cur, generation);
        debug_assert!(
            low > 0 && low & WRITER == 0,
            "read unlock of a lock not read-held"
        );
        let next = word(generation, low.saturating_sub(1));
        match w.compare_exchange_weak(cur, next, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(c) => cur = c,
        }
    }
}

/// Tries to take the write hold for `lane`; `upgrade` means this lane holds one read hold that
/// becomes the write hold (succeeds only if it is the only reader).
pub fn rw_try_write(w: &impl LockWord, generation: u32, lane: u32, upgrade: bool) -> Attempt {
    let me = WRITER | (u64::from(lane) + 1);
    let cur = w.load(Ordering::Acquire);
    let low = live_low(cur, generation);
    if low == me {
        return Attempt::AlreadyHeld;
    }
    let expected_low = u64::from(upgrade);
    if low != expected_low {
        return Attempt::Busy;
    }
    match w.compare_exchange(cur, word(generation, me), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Attempt::Acquired,
        Err(_) => Attempt::Busy,
    }
}

/// Releases the write hold.
pub fn rw_unlock_write(w: &impl LockWord, generation: u32) {
    w.store(word(generation, 0), Ordering::Release);
}
