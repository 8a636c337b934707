//! The algorithms of the persistent lock words, generic over the atomic so loom can check them.
//!
//! A lock word lives in the pool next to the data it guards but holds only volatile state. Its
//! high 32 bits are the pool's open *generation*; a word whose generation differs from the
//! current one is free, whatever its low bits say. Each open increments the generation, so every
//! lock is reset on reopen without scanning the pool.
//!
//! Low 32 bits: mutex — owner lane + 1 (0 = free); rwlock — bit 31 set: writer (owner lane + 1
//! in bits 0..31), else the number of readers; shared/exclusive word — see [`sx_try_read`]'s
//! section below (readers, a waiting-writer mark and a waiting upgrader).

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

// Shared/exclusive words ([`PSharedLock`](crate::PSharedLock)), low 32 bits:
// - bit 31 set: held exclusively, by lane `(low & 0xFFFF) - 1`;
// - else: bit 30 `SX_WAITING`: a writer without a shared hold waits; bits 16..30: lane + 1 of a
//   shared holder waiting to upgrade (0: none); bits 0..16: the number of shared holds.
// While a writer or an upgrader waits no new shared hold is granted, so a stream of readers
// cannot starve writers. Lanes are at most `MAX_LANES` (1024), and a transaction holds a word at
// most once, so both fields are wide enough.

const SX_WAITING: u64 = 1 << 30;
const SX_UPGRADER_SHIFT: u32 = 16;
const SX_UPGRADER: u64 = 0x3FFF << SX_UPGRADER_SHIFT;
const SX_READERS: u64 = 0xFFFF;

/// Outcome of one attempt to upgrade a shared hold to the exclusive hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// The exclusive hold is taken now.
    Acquired,
    /// Other shared holds remain; this lane is the registered upgrader (new shared holds are
    /// refused): retry later.
    Wait,
    /// Another lane already waits to upgrade its own shared hold: the two would wait for each
    /// other forever, so this one must give up (and drop its shared hold).
    Conflict,
}

/// One state change of a live word by compare-exchange: `f(low)` either gives up with a
/// result (`Err`), or names the next low bits and the result of installing them (`Ok`), retried
/// on the current value until the compare-exchange succeeds (with ordering `ok`).
fn transition<R>(
    w: &impl LockWord,
    generation: u32,
    ok: Ordering,
    f: impl Fn(u64) -> Result<(u64, R), R>,
) -> R {
    let mut cur = w.load(Ordering::Acquire);
    loop {
        let (next, r) = match f(live_low(cur, generation)) {
            Ok(step) => step,
            Err(r) => return r,
        };
        match w.compare_exchange_weak(cur, word(generation, next), ok, Ordering::Acquire) {
            Ok(_) => return r,
            Err(c) => cur = c,
        }
    }
}

/// Tries to take a shared hold of a shared/exclusive word.
pub fn sx_try_read(w: &impl LockWord, generation: u32) -> Attempt {
    transition(w, generation, Ordering::Acquire, |low| {
        if low & (WRITER | SX_WAITING | SX_UPGRADER) != 0 || low & SX_READERS == SX_READERS {
            Err(Attempt::Busy)
        } else {
            Ok((low + 1, Attempt::Acquired))
        }
    })
}

/// Drops a shared hold (keeping the waiting writer / upgrader marks).
pub fn sx_unlock_read(w: &impl LockWord, generation: u32) {
    transition(w, generation, Ordering::Release, |low| {
        debug_assert!(
            low & WRITER == 0 && low & SX_READERS > 0,
            "shared unlock of a word not shared-held: {low:#x}"
        );
        Ok((if low & SX_READERS > 0 { low - 1 } else { low }, ()))
    })
}

/// Tries to take the exclusive hold for `lane`, which holds no shared hold of the word. When
/// shared holds (or an upgrader) are in the way, marks the word so no new shared hold is granted
/// until the writer gets in or [`sx_abandon_write`] clears the mark.
pub fn sx_try_write(w: &impl LockWord, generation: u32, lane: u32) -> Attempt {
    let me = WRITER | (u64::from(lane) + 1);
    transition(w, generation, Ordering::AcqRel, |low| {
        if low == me {
            Err(Attempt::AlreadyHeld)
        } else if low & !SX_WAITING == 0 {
            Ok((me, Attempt::Acquired))
        } else if low & (WRITER | SX_WAITING) != 0 {
            Err(Attempt::Busy)
        } else {
            Ok((low | SX_WAITING, Attempt::Busy))
        }
    })
}

/// A writer that waited in [`sx_try_write`] and gives up (lock timeout): clears the waiting mark
/// (another waiting writer sets it again on its next attempt).
pub fn sx_abandon_write(w: &impl LockWord, generation: u32) {
    transition(w, generation, Ordering::Relaxed, |low| {
        if low & WRITER == 0 && low & SX_WAITING != 0 {
            Ok((low & !SX_WAITING, ()))
        } else {
            Err(())
        }
    })
}

/// Tries to turn `lane`'s shared hold (its only one on this word) into the exclusive hold: at
/// once if it is the sole shared holder, else registers `lane` as the upgrader (refusing new
/// shared holds) and reports [`Upgrade::Wait`], or [`Upgrade::Conflict`] if another lane is
/// the upgrader already.
pub fn sx_try_upgrade(w: &impl LockWord, generation: u32, lane: u32) -> Upgrade {
    let me_up = (u64::from(lane) + 1) << SX_UPGRADER_SHIFT;
    let me = WRITER | (u64::from(lane) + 1);
    transition(w, generation, Ordering::AcqRel, |low| {
        debug_assert!(
            low & WRITER == 0 && low & SX_READERS > 0,
            "upgrade of a word not shared-held: {low:#x}"
        );
        let up = low & SX_UPGRADER;
        if up != 0 && up != me_up {
            Err(Upgrade::Conflict)
        } else if low & SX_READERS == 1 {
            Ok((me, Upgrade::Acquired))
        } else if up == me_up {
            Err(Upgrade::Wait)
        } else {
            Ok((low | me_up, Upgrade::Wait))
        }
    })
}

/// An upgrader that gives up (lock timeout) withdraws its registration; its shared hold stays
/// until it is unlocked.
pub fn sx_abandon_upgrade(w: &impl LockWord, generation: u32, lane: u32) {
    let me_up = (u64::from(lane) + 1) << SX_UPGRADER_SHIFT;
    transition(w, generation, Ordering::Relaxed, |low| {
        if low & WRITER == 0 && low & SX_UPGRADER == me_up {
            Ok((low & !SX_UPGRADER, ()))
        } else {
            Err(())
        }
    })
}

/// Releases the exclusive hold of a shared/exclusive word (waiting writers mark it again).
pub fn sx_unlock_write(w: &impl LockWord, generation: u32) {
    w.store(word(generation, 0), Ordering::Release);
}
