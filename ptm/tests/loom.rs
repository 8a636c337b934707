//! Loom models of ptm's lock-free parts: lane acquisition (`ptm::internals::lanes`) and the persistent lock
//! word algorithms (`ptm::internals::lockword`): exclusivity, hand-over with happens-before, re-entrancy,
//! generation reset, shared/exclusive holds and upgrades; for the shared/exclusive words of
//! `PSharedLock` also writer preference (a waiting writer or upgrader stops new readers) and the
//! detection of two upgraders waiting for each other.
//!
//! Compiled only with `--cfg ptm_loom` (then the crate's atomics are loom's):
//!
//! ```text
//! RUSTFLAGS="--cfg ptm_loom" CARGO_TARGET_DIR=target/loom cargo test -p ptm --test loom --release
//! ```
//!
//! Data guarded by a lane or a lock is modelled by a `loom::cell::UnsafeCell<()>` whose accesses
//! loom checks for races (an access not ordered by happens-before after a conflicting one fails
//! the model), plus `Relaxed` loom atomics for values, which loom lets read stale values unless
//! the lock's acquire/release edges order them. Bookkeeping counters use `Relaxed`
//! read-modify-writes (which see the latest value, so they detect overlapping holders), not
//! `SeqCst`, whose synchronization would hide a missing acquire/release edge in the code under
//! test (only the rendezvous of the concurrent-readers model, where two reads cannot race, uses
//! `SeqCst`).
#![cfg(ptm_loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use ptm::internals::completions::CompletionMarks;
use ptm::internals::lanes::LaneMap;
use ptm::internals::lockword::{
    mutex_try_lock, mutex_unlock, rw_try_read, rw_try_write, rw_unlock_read, rw_unlock_write,
    sx_abandon_upgrade, sx_abandon_write, sx_try_read, sx_try_upgrade, sx_try_write, sx_unlock_read,
    sx_unlock_write, Attempt, Upgrade,
};

/// Preemption bound when `LOOM_MAX_PREEMPTIONS` is not set: enough for every interleaving of
/// these small models that matters, and keeps the whole file well under two minutes.
const DEFAULT_PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    b.check(f);
}

const GEN: u32 = 7;
const WRITER: u64 = 1 << 31;

fn word(generation: u32, low: u64) -> u64 {
    (u64::from(generation) << 32) | low
}

/// What a lane guards: race-checked access plus an owner count.
struct LaneSlot {
    data: UnsafeCell<()>,
    owners: AtomicUsize,
    uses: AtomicUsize,
}

impl LaneSlot {
    fn new() -> Self {
        LaneSlot {
            data: UnsafeCell::new(()),
            owners: AtomicUsize::new(0),
            uses: AtomicUsize::new(0),
        }
    }

    /// The work done while holding the lane.
    fn hold(&self, lane: usize) {
        let prev = self.owners.fetch_add(1, Ordering::Relaxed);
        assert_eq!(prev, 0, "lane {lane} held by two threads at once");
        self.data.with_mut(|_| ());
        // Relaxed read-modify-write in two steps: a lost update shows a missing edge.
        let n = self.uses.load(Ordering::Relaxed);
        self.uses.store(n + 1, Ordering::Relaxed);
        let prev = self.owners.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(prev, 1, "lane {lane} owner count changed while held");
    }
}

/// `threads` threads each take a lane `rounds` times; thread `t` prefers lane `t % spread`.
fn lanes_exclusive(threads: usize, rounds: usize, spread: usize) {
    model(move || {
        let map = Arc::new(LaneMap::new(2));
        let slots = Arc::new([LaneSlot::new(), LaneSlot::new()]);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (map, slots) = (map.clone(), slots.clone());
                thread::spawn(move || {
                    for _ in 0..rounds {
                        let lane = map.acquire(t % spread);
                        assert!(lane < 2);
                        assert!(map.is_busy(lane));
                        slots[lane].hold(lane);
                        map.release(lane);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(!map.is_busy(0) && !map.is_busy(1), "a lane stayed busy");
        let uses: usize = slots.iter().map(|s| s.uses.load(Ordering::Relaxed)).sum();
        assert_eq!(uses, threads * rounds, "a lane's guarded update was lost");
    });
}

#[test]
fn lanes_two_threads_never_share_a_lane() {
    // Both prefer lane 0 and take a lane twice, so a lane one thread released is taken again by
    // the other (the hand-over needs the release/acquire edge).
    lanes_exclusive(2, 2, 1);
}

#[test]
fn lanes_three_threads_on_two_lanes_never_share_a_lane() {
    // Threads 0 and 2 prefer the same lane; one of the three always waits.
    lanes_exclusive(3, 1, 2);
}

#[test]
fn lanes_try_acquire_on_a_full_map_fails() {
    model(|| {
        let map = LaneMap::new(2);
        let a = map.try_acquire(1).unwrap();
        let b = map.try_acquire(1).unwrap();
        assert_eq!((a, b), (1, 0), "scan starts at the preferred lane and wraps");
        assert_eq!(map.try_acquire(0), None);
        map.release(a);
        assert_eq!(map.try_acquire(0), Some(1));
        map.release(1);
        map.release(b);
        assert!(!map.is_busy(0) && !map.is_busy(1));
    });
}

#[test]
fn lanes_waiter_gets_the_lane_released_by_the_holder() {
    model(|| {
        let map = Arc::new(LaneMap::new(2));
        let slots = Arc::new([LaneSlot::new(), LaneSlot::new()]);
        // The main thread holds both lanes.
        assert_eq!(map.try_acquire(0), Some(0));
        assert_eq!(map.try_acquire(0), Some(1));
        let waiter = {
            let (map, slots) = (map.clone(), slots.clone());
            thread::spawn(move || {
                let lane = map.acquire(0);
                // Sees the holder's work on the lane (happens-before through release/acquire).
                assert_eq!(slots[lane].uses.load(Ordering::Relaxed), 1);
                slots[lane].hold(lane);
                map.release(lane);
                lane
            })
        };
        slots[1].hold(1);
        map.release(1);
        let got = waiter.join().unwrap();
        assert_eq!(got, 1, "the waiter took a lane that was never released");
        assert!(map.is_busy(0) && !map.is_busy(1));
        map.release(0);
        assert_eq!(slots[1].uses.load(Ordering::Relaxed), 2);
    });
}

/// Spins on `mutex_try_lock` until taken; a `AlreadyHeld` here would be a bug (not held yet).
fn mutex_lock(w: &AtomicU64, generation: u32, lane: u32) {
    loop {
        match mutex_try_lock(w, generation, lane) {
            Attempt::Acquired => return,
            Attempt::AlreadyHeld => panic!("lane {lane}: AlreadyHeld before taking the lock"),
            Attempt::Busy => thread::yield_now(),
        }
    }
}

fn mutex_two_threads(initial: u64) {
    model(move || {
        let w = Arc::new(AtomicU64::new(initial));
        let data = Arc::new(UnsafeCell::new(()));
        let count = Arc::new(AtomicU64::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2u32)
            .map(|lane| {
                let (w, data, count, inside) = (w.clone(), data.clone(), count.clone(), inside.clone());
                thread::spawn(move || {
                    let w: &AtomicU64 = &w;
                    mutex_lock(w, GEN, lane);
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "two holders");
                    assert_eq!(
                        mutex_try_lock(w, GEN, lane),
                        Attempt::AlreadyHeld,
                        "re-entrant lock by the holder"
                    );
                    data.with_mut(|_| ());
                    let n = count.load(Ordering::Relaxed);
                    count.store(n + 1, Ordering::Relaxed);
                    assert_eq!(inside.fetch_sub(1, Ordering::Relaxed), 1);
                    mutex_unlock(w, GEN);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            count.load(Ordering::Relaxed),
            2,
            "an update under the lock was lost"
        );
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));
        assert_eq!(mutex_try_lock(&*w, GEN, 5), Attempt::Acquired);
    });
}

#[test]
fn mutex_word_mutual_exclusion() {
    mutex_two_threads(0);
}

#[test]
fn mutex_word_from_an_old_generation_is_free_under_contention() {
    // Left "held" by lane 9 in the previous open (the process died holding it).
    mutex_two_threads(word(GEN - 1, 10));
}

#[test]
fn mutex_word_states() {
    model(|| {
        // Stale owner from an older (or newer: any other) generation: free.
        for stale in [word(GEN - 1, 3), word(GEN + 1, 1), word(0, 0xFFFF_FFFF)] {
            let w = &AtomicU64::new(stale);
            assert_eq!(mutex_try_lock(w, GEN, 0), Attempt::Acquired, "{stale:#x}");
            assert_eq!(w.load(Ordering::Relaxed), word(GEN, 1));
        }
        let w = &AtomicU64::new(0);
        assert_eq!(mutex_try_lock(w, GEN, 4), Attempt::Acquired);
        assert_eq!(mutex_try_lock(w, GEN, 4), Attempt::AlreadyHeld);
        assert_eq!(mutex_try_lock(w, GEN, 3), Attempt::Busy);
        // The same owner bits under the next generation are free again.
        assert_eq!(mutex_try_lock(w, GEN + 1, 3), Attempt::Acquired);
        assert_eq!(mutex_try_lock(w, GEN + 1, 4), Attempt::Busy);
        mutex_unlock(w, GEN + 1);
        assert_eq!(mutex_try_lock(w, GEN + 1, 4), Attempt::Acquired);
    });
}

/// Spins on `rw_try_read` until a shared hold is taken.
fn read_lock(w: &AtomicU64) {
    while rw_try_read(w, GEN) != Attempt::Acquired {
        thread::yield_now();
    }
}

/// Two readers take the word shared (`read` until `Acquired`) and are inside at the same time;
/// `check` runs while both hold it; `unlock` drops each hold.
fn readers_hold_concurrently(read: fn(&AtomicU64) -> Attempt, check: fn(&AtomicU64), unlock: fn(&AtomicU64)) {
    model(move || {
        let w = Arc::new(AtomicU64::new(0));
        let data = Arc::new(UnsafeCell::new(()));
        let readers = Arc::new(AtomicUsize::new(0));
        let checked = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (w, data, readers, checked) = (w.clone(), data.clone(), readers.clone(), checked.clone());
                thread::spawn(move || {
                    let w: &AtomicU64 = &w;
                    while read(w) != Attempt::Acquired {
                        thread::yield_now();
                    }
                    data.with(|_| ());
                    readers.fetch_add(1, Ordering::SeqCst);
                    // Both readers are inside at once: if a read hold excluded the other reader,
                    // this would never end (loom reports the model as non-terminating).
                    while readers.load(Ordering::SeqCst) < 2 {
                        thread::yield_now();
                    }
                    check(w);
                    checked.fetch_add(1, Ordering::SeqCst);
                    while checked.load(Ordering::SeqCst) < 2 {
                        thread::yield_now();
                    }
                    unlock(w);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));
    });
}

#[test]
fn rwlock_readers_hold_concurrently() {
    readers_hold_concurrently(
        |w| rw_try_read(w, GEN),
        |w| {
            // A writer cannot get in while both hold it, not even as an upgrade.
            assert_eq!(rw_try_write(w, GEN, 9, false), Attempt::Busy);
            assert_eq!(rw_try_write(w, GEN, 9, true), Attempt::Busy);
        },
        |w| rw_unlock_read(w, GEN),
    );
}

#[test]
fn sx_readers_hold_concurrently() {
    readers_hold_concurrently(
        |w| sx_try_read(w, GEN),
        |w| {
            // A writer cannot get in while both hold it; it marks the word, then withdraws.
            assert_eq!(sx_try_write(w, GEN, 9), Attempt::Busy);
            sx_abandon_write(w, GEN);
        },
        |w| sx_unlock_read(w, GEN),
    );
}

/// Shared state of the writer-exclusion models.
#[derive(Clone)]
struct RwState {
    w: Arc<AtomicU64>,
    data: Arc<UnsafeCell<()>>,
    value: Arc<AtomicU64>,
    writers: Arc<AtomicUsize>,
    readers: Arc<AtomicUsize>,
    /// Shared/exclusive word functions (`sx_*`) instead of the rwlock ones (`rw_*`).
    sx: bool,
}

impl RwState {
    fn with(sx: bool) -> Self {
        RwState {
            w: Arc::new(AtomicU64::new(0)),
            data: Arc::new(UnsafeCell::new(())),
            value: Arc::new(AtomicU64::new(0)),
            writers: Arc::new(AtomicUsize::new(0)),
            readers: Arc::new(AtomicUsize::new(0)),
            sx,
        }
    }

    fn try_read(&self) -> Attempt {
        if self.sx {
            sx_try_read(&*self.w, GEN)
        } else {
            rw_try_read(&*self.w, GEN)
        }
    }

    fn try_write(&self, lane: u32) -> Attempt {
        if self.sx {
            sx_try_write(&*self.w, GEN, lane)
        } else {
            rw_try_write(&*self.w, GEN, lane, false)
        }
    }

    fn unlock_read(&self) {
        if self.sx {
            sx_unlock_read(&*self.w, GEN)
        } else {
            rw_unlock_read(&*self.w, GEN)
        }
    }

    fn unlock_write(&self) {
        if self.sx {
            sx_unlock_write(&*self.w, GEN)
        } else {
            rw_unlock_write(&*self.w, GEN)
        }
    }

    /// Critical section of a writer holding the word.
    fn write_held(&self, lane: u32) {
        assert_eq!(self.writers.fetch_add(1, Ordering::Relaxed), 0, "two writers");
        assert_eq!(
            self.readers.fetch_add(0, Ordering::Relaxed),
            0,
            "writer beside a reader"
        );
        assert_eq!(self.try_write(lane), Attempt::AlreadyHeld);
        assert_eq!(self.try_read(), Attempt::Busy);
        self.data.with_mut(|_| ());
        let v = self.value.load(Ordering::Relaxed);
        self.value.store(v + 1, Ordering::Relaxed);
        self.writers.fetch_sub(1, Ordering::Relaxed);
        self.unlock_write();
    }

    /// Critical section of a reader holding the word; returns the value it saw.
    fn read_held(&self) -> u64 {
        self.readers.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            self.writers.fetch_add(0, Ordering::Relaxed),
            0,
            "reader beside a writer"
        );
        self.data.with(|_| ());
        let v = self.value.load(Ordering::Relaxed);
        self.readers.fetch_sub(1, Ordering::Relaxed);
        self.unlock_read();
        v
    }

    fn spawn_writer(&self, lane: u32) -> thread::JoinHandle<()> {
        let st = self.clone();
        thread::spawn(move || {
            loop {
                match st.try_write(lane) {
                    Attempt::Acquired => break,
                    Attempt::AlreadyHeld => panic!("lane {lane}: AlreadyHeld before taking the lock"),
                    Attempt::Busy => thread::yield_now(),
                }
            }
            st.write_held(lane);
        })
    }

    fn spawn_reader(&self) -> thread::JoinHandle<u64> {
        let st = self.clone();
        thread::spawn(move || {
            while st.try_read() != Attempt::Acquired {
                thread::yield_now();
            }
            st.read_held()
        })
    }

    fn assert_free(&self) {
        assert_eq!(self.w.load(Ordering::Relaxed), word(GEN, 0), "word not released");
    }
}

fn writer_excludes_a_reader(sx: bool) {
    model(move || {
        let st = RwState::with(sx);
        let writer = st.spawn_writer(0);
        let reader = st.spawn_reader();
        writer.join().unwrap();
        let seen = reader.join().unwrap();
        // The reader ran wholly before or wholly after the write, and saw it iff after.
        assert!(seen <= 1);
        assert_eq!(st.value.load(Ordering::Relaxed), 1, "the write was lost");
        st.assert_free();
    });
}

#[test]
fn rwlock_writer_excludes_a_reader() {
    writer_excludes_a_reader(false);
}

#[test]
fn sx_writer_excludes_a_reader() {
    // Also: a reader inside makes the writer set the waiting mark, which the writer clears
    // when it gets in (the word ends free).
    writer_excludes_a_reader(true);
}

fn writers_exclude_each_other(sx: bool) {
    model(move || {
        let st = RwState::with(sx);
        let a = st.spawn_writer(0);
        let b = st.spawn_writer(1);
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(
            st.value.load(Ordering::Relaxed),
            2,
            "a write under the lock was lost"
        );
        st.assert_free();
    });
}

#[test]
fn rwlock_writers_exclude_each_other() {
    writers_exclude_each_other(false);
}

#[test]
fn sx_writers_exclude_each_other() {
    writers_exclude_each_other(true);
}

fn two_writers_and_a_reader_single_attempts(sx: bool) {
    // Three threads spinning blow loom's branch budget; with one attempt each, every schedule
    // is explored and whatever holds were granted must still be exclusive.
    model(move || {
        let st = RwState::with(sx);
        let writers: Vec<_> = (0..2u32)
            .map(|lane| {
                let st = st.clone();
                thread::spawn(move || match st.try_write(lane) {
                    Attempt::Acquired => {
                        st.write_held(lane);
                        1
                    }
                    Attempt::Busy => 0,
                    Attempt::AlreadyHeld => panic!("AlreadyHeld before taking the lock"),
                })
            })
            .collect();
        let reader = {
            let st = st.clone();
            thread::spawn(move || match st.try_read() {
                Attempt::Acquired => Some(st.read_held()),
                Attempt::Busy => None,
                Attempt::AlreadyHeld => panic!("AlreadyHeld from a read"),
            })
        };
        let wrote: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
        let seen = reader.join().unwrap();
        // A failed compare-exchange means another attempt succeeded: someone got the word.
        assert!(
            wrote >= 1 || seen.is_some(),
            "every attempt failed on a free word"
        );
        assert_eq!(
            st.value.load(Ordering::Relaxed),
            wrote,
            "a write under the lock was lost"
        );
        assert!(seen.is_none_or(|v| v <= wrote));
        if sx {
            // A writer that found the reader inside left its waiting mark (it gave up after
            // one attempt): clear it as a timed-out writer does.
            sx_abandon_write(&*st.w, GEN);
        }
        st.assert_free();
    });
}

#[test]
fn rwlock_two_writers_and_a_reader_single_attempts() {
    two_writers_and_a_reader_single_attempts(false);
}

#[test]
fn sx_two_writers_and_a_reader_single_attempts() {
    two_writers_and_a_reader_single_attempts(true);
}

#[test]
fn rwlock_upgrade_only_for_the_sole_reader() {
    model(|| {
        let w = Arc::new(AtomicU64::new(0));
        let data = Arc::new(UnsafeCell::new(()));
        let readers = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2u32)
            .map(|lane| {
                let (w, data, readers) = (w.clone(), data.clone(), readers.clone());
                thread::spawn(move || {
                    let w: &AtomicU64 = &w;
                    read_lock(w);
                    readers.fetch_add(1, Ordering::Relaxed);
                    data.with(|_| ());
                    // The word decides; the counter (raised after taking the read hold, lowered
                    // before dropping it) checks that an upgrade never happens beside a reader.
                    match rw_try_write(w, GEN, lane, true) {
                        Attempt::Acquired => {
                            assert_eq!(
                                readers.fetch_sub(1, Ordering::Relaxed),
                                1,
                                "upgrade beside a reader"
                            );
                            assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | u64::from(lane + 1)));
                            data.with_mut(|_| ());
                            assert_eq!(rw_try_read(w, GEN), Attempt::Busy);
                            rw_unlock_write(w, GEN);
                        }
                        Attempt::Busy => {
                            readers.fetch_sub(1, Ordering::Relaxed);
                            rw_unlock_read(w, GEN);
                        }
                        Attempt::AlreadyHeld => panic!("upgrade reported AlreadyHeld"),
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));
    });
}

#[test]
fn rwlock_word_states() {
    model(|| {
        // Sole reader upgrades; a second reader blocks the upgrade until it leaves.
        let w = &AtomicU64::new(0);
        assert_eq!(rw_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(
            rw_try_write(w, GEN, 2, false),
            Attempt::Busy,
            "write beside a reader"
        );
        assert_eq!(rw_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 2));
        assert_eq!(
            rw_try_write(w, GEN, 2, true),
            Attempt::Busy,
            "upgrade beside a reader"
        );
        rw_unlock_read(w, GEN);
        assert_eq!(rw_try_write(w, GEN, 2, true), Attempt::Acquired);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 3));
        assert_eq!(rw_try_write(w, GEN, 2, false), Attempt::AlreadyHeld);
        assert_eq!(rw_try_write(w, GEN, 1, false), Attempt::Busy);
        assert_eq!(rw_try_read(w, GEN), Attempt::Busy);
        rw_unlock_write(w, GEN);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));
        // An upgrade without a read hold is refused; a plain write on a free word succeeds.
        assert_eq!(rw_try_write(w, GEN, 2, true), Attempt::Busy);
        assert_eq!(rw_try_write(w, GEN, 2, false), Attempt::Acquired);
        rw_unlock_write(w, GEN);
        // Holds left by an older generation (writer, or readers) are free.
        for stale in [word(GEN - 1, WRITER | 5), word(GEN - 1, 3)] {
            let w = &AtomicU64::new(stale);
            assert_eq!(rw_try_read(w, GEN), Attempt::Acquired, "{stale:#x}");
            assert_eq!(w.load(Ordering::Relaxed), word(GEN, 1));
            let w = &AtomicU64::new(stale);
            assert_eq!(rw_try_write(w, GEN, 0, false), Attempt::Acquired, "{stale:#x}");
            assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 1));
        }
    });
}

const SX_WAITING: u64 = 1 << 30;

fn sx_read_lock(w: &AtomicU64) {
    while sx_try_read(w, GEN) != Attempt::Acquired {
        thread::yield_now();
    }
}

#[test]
fn sx_two_upgraders_one_gives_way() {
    // Both hold the word shared, then both try to upgrade. Waiting for each other would never
    // end: exactly one is told `Conflict` (and drops its shared hold), the other gets the
    // exclusive hold once the first has left, and sees what the first did under its hold.
    model(|| {
        let w = Arc::new(AtomicU64::new(0));
        let data = Arc::new(UnsafeCell::new(()));
        let inside = Arc::new(AtomicUsize::new(0));
        let readers = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2u32)
            .map(|lane| {
                let (w, data, inside, readers) = (w.clone(), data.clone(), inside.clone(), readers.clone());
                thread::spawn(move || {
                    let w: &AtomicU64 = &w;
                    sx_read_lock(w);
                    readers.fetch_add(1, Ordering::Relaxed);
                    data.with(|_| ());
                    inside.fetch_add(1, Ordering::SeqCst);
                    while inside.load(Ordering::SeqCst) < 2 {
                        thread::yield_now();
                    }
                    loop {
                        match sx_try_upgrade(w, GEN, lane) {
                            Upgrade::Acquired => {
                                assert_eq!(
                                    readers.fetch_sub(1, Ordering::Relaxed),
                                    1,
                                    "upgrade beside a reader"
                                );
                                assert_eq!(
                                    w.load(Ordering::Relaxed),
                                    word(GEN, WRITER | u64::from(lane + 1))
                                );
                                assert_eq!(sx_try_read(w, GEN), Attempt::Busy);
                                data.with_mut(|_| ());
                                sx_unlock_write(w, GEN);
                                return true;
                            }
                            Upgrade::Wait => {
                                // While an upgrader waits, no new reader gets in.
                                assert_eq!(sx_try_read(w, GEN), Attempt::Busy);
                                thread::yield_now();
                            }
                            Upgrade::Conflict => {
                                readers.fetch_sub(1, Ordering::Relaxed);
                                sx_unlock_read(w, GEN);
                                return false;
                            }
                        }
                    }
                })
            })
            .collect();
        let won: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(won.iter().filter(|&&b| b).count(), 1, "{won:?}");
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));
    });
}

#[test]
fn sx_waiting_writer_gets_in_after_the_reader_and_sees_its_reads_done() {
    // A reader holds the word; the writer marks it waiting and spins; the reader leaves (its
    // read of the data must happen-before the writer's store). No new reader gets in while
    // the writer waits.
    model(|| {
        let w = Arc::new(AtomicU64::new(0));
        let data = Arc::new(UnsafeCell::new(()));
        assert_eq!(sx_try_read(&*w, GEN), Attempt::Acquired);
        let writer = {
            let (w, data) = (w.clone(), data.clone());
            thread::spawn(move || {
                let w: &AtomicU64 = &w;
                loop {
                    match sx_try_write(w, GEN, 3) {
                        Attempt::Acquired => break,
                        Attempt::AlreadyHeld => panic!("AlreadyHeld before taking the lock"),
                        Attempt::Busy => thread::yield_now(),
                    }
                }
                data.with_mut(|_| ());
                sx_unlock_write(w, GEN);
            })
        };
        data.with(|_| ());
        sx_unlock_read(&*w, GEN);
        writer.join().unwrap();
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));
    });
}

#[test]
fn sx_word_states() {
    model(|| {
        let w = &AtomicU64::new(0);
        // Readers share; a writer beside them marks the word waiting, which stops new readers.
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 2));
        assert_eq!(sx_try_write(w, GEN, 4), Attempt::Busy);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, SX_WAITING | 2));
        assert_eq!(
            sx_try_read(w, GEN),
            Attempt::Busy,
            "new reader beside a waiting writer"
        );
        assert_eq!(sx_try_write(w, GEN, 5), Attempt::Busy);
        // A timed-out writer clears the mark: readers get in again.
        sx_abandon_write(w, GEN);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 2));
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        sx_unlock_read(w, GEN);
        // The readers leave with the mark set (kept); then the writer gets in and clears it.
        assert_eq!(sx_try_write(w, GEN, 4), Attempt::Busy);
        sx_unlock_read(w, GEN);
        sx_unlock_read(w, GEN);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, SX_WAITING));
        assert_eq!(sx_try_read(w, GEN), Attempt::Busy);
        assert_eq!(sx_try_write(w, GEN, 4), Attempt::Acquired);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 5));
        assert_eq!(sx_try_write(w, GEN, 4), Attempt::AlreadyHeld);
        assert_eq!(sx_try_write(w, GEN, 1), Attempt::Busy);
        assert_eq!(sx_try_read(w, GEN), Attempt::Busy);
        sx_abandon_write(w, GEN); // no effect on a held word
        sx_abandon_upgrade(w, GEN, 4);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 5));
        sx_unlock_write(w, GEN);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));

        // Upgrades: the sole reader upgrades at once.
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(sx_try_upgrade(w, GEN, 2), Upgrade::Acquired);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 3));
        sx_unlock_write(w, GEN);
        // With another reader: registers and waits; new readers and plain writers stay out;
        // a second upgrader is refused; once the other reader leaves the upgrade goes through.
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(sx_try_upgrade(w, GEN, 2), Upgrade::Wait);
        assert_eq!(sx_try_upgrade(w, GEN, 2), Upgrade::Wait);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, (3 << 16) | 2));
        assert_eq!(
            sx_try_read(w, GEN),
            Attempt::Busy,
            "new reader beside an upgrader"
        );
        assert_eq!(sx_try_upgrade(w, GEN, 7), Upgrade::Conflict);
        assert_eq!(sx_try_write(w, GEN, 6), Attempt::Busy);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, SX_WAITING | (3 << 16) | 2));
        sx_unlock_read(w, GEN); // lane 7 gave way
        assert_eq!(sx_try_upgrade(w, GEN, 2), Upgrade::Acquired);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 3));
        sx_unlock_write(w, GEN);
        // A timed-out upgrader withdraws (readers get in again), then drops its hold.
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        assert_eq!(sx_try_upgrade(w, GEN, 2), Upgrade::Wait);
        sx_abandon_upgrade(w, GEN, 9); // not the upgrader: no effect
        assert_eq!(sx_try_read(w, GEN), Attempt::Busy);
        sx_abandon_upgrade(w, GEN, 2);
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 2));
        assert_eq!(sx_try_read(w, GEN), Attempt::Acquired);
        for _ in 0..3 {
            sx_unlock_read(w, GEN);
        }
        assert_eq!(w.load(Ordering::Relaxed), word(GEN, 0));

        // Holds and marks left by an older generation (writer, readers, waiting writer,
        // upgrader) are free.
        for stale in [
            word(GEN - 1, WRITER | 5),
            word(GEN - 1, 3),
            word(GEN - 1, SX_WAITING | 1),
            word(GEN - 1, (4 << 16) | 2),
        ] {
            let w = &AtomicU64::new(stale);
            assert_eq!(sx_try_read(w, GEN), Attempt::Acquired, "{stale:#x}");
            assert_eq!(w.load(Ordering::Relaxed), word(GEN, 1));
            let w = &AtomicU64::new(stale);
            assert_eq!(sx_try_write(w, GEN, 0), Attempt::Acquired, "{stale:#x}");
            assert_eq!(w.load(Ordering::Relaxed), word(GEN, WRITER | 1));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Completion marks and the quarantine (issue 19).
//
// The protocol's in-memory half is ptm's own code: `ptm::internals::completions::
// CompletionMarks` (`mark`, `flush_pending`, `settle`, `is_durable`; `Shared::mark_complete`,
// `flush_pending_completions`, `settle_completions` and `release_quarantine` call them), whose
// atomics are loom's under `--cfg ptm_loom`. What lives in the pool is modelled around it: the
// lanes' `completed` words, and a `media` word per lane for what of each is durable (a flush
// reads the line as it is, as a `clwb` writes back its current contents; the flusher's drain
// makes what it read durable). The quarantine is a list of (lane, seq) entries released, as
// `Shared::release_quarantine` releases them, when `is_durable` says so.
// ---------------------------------------------------------------------------------------------

const SEQ_STRIDE: u64 = 1024;

/// The completion state of two lanes, as in `Shared`, plus the simulated media.
struct Marks {
    /// The lanes' `completed` words (in the pool: stored, not flushed, by the committer).
    completed: [AtomicU64; 2],
    /// What of each `completed` word is durable.
    media: [AtomicU64; 2],
    /// ptm's code under test.
    marks: CompletionMarks,
    /// Quarantined entries: (lane, seq of the freeing transaction).
    quarantine: loom::sync::Mutex<Vec<(usize, u64)>>,
}

impl Marks {
    fn new() -> Self {
        Marks {
            completed: [AtomicU64::new(0), AtomicU64::new(0)],
            media: [AtomicU64::new(0), AtomicU64::new(0)],
            marks: CompletionMarks::new(2),
            quarantine: loom::sync::Mutex::new(Vec::new()),
        }
    }

    /// `Shared::mark_complete`, after drain 2 of the lane's transaction `seq`.
    fn mark_complete(&self, lane: usize, seq: u64) {
        self.completed[lane].store(seq, Ordering::Release);
        self.marks.mark(lane, seq);
    }

    /// `release_lane` of a committed transaction that allocated and freed a block.
    fn quarantine(&self, lane: usize, seq: u64) {
        self.quarantine.lock().unwrap().push((lane, seq));
    }

    /// `Shared::flush_pending_completions`: (lane, seq) flushed, and each flushed line's
    /// contents as written back.
    fn flush_pending(&self) -> (Vec<(usize, u64)>, Vec<(usize, u64)>) {
        let mut flushed = Vec::new();
        let mut lines = Vec::new();
        self.marks.flush_pending(&mut flushed, |lane| {
            lines.push((lane, self.completed[lane].load(Ordering::Relaxed)))
        });
        (flushed, lines)
    }

    /// The flusher's drain: what it flushed is durable.
    fn drain(&self, lines: &[(usize, u64)]) {
        for &(lane, line) in lines {
            self.media[lane].fetch_max(line, Ordering::SeqCst);
        }
    }

    /// `Shared::release_quarantine`: entries whose mark is known durable become reusable;
    /// asserts that the mark really is durable then.
    fn release_quarantine(&self) -> usize {
        let mut q = self.quarantine.lock().unwrap();
        let before = q.len();
        q.retain(|&(lane, seq)| {
            let durable = self.marks.is_durable(lane, seq);
            if durable {
                let media = self.media[lane].load(Ordering::SeqCst);
                assert!(
                    media >= seq,
                    "lane {lane}: blocks of seq {seq} released for reuse, durable mark {media}"
                );
            }
            !durable
        });
        before - q.len()
    }

    /// What any transaction's snapshot drain does first (`Transaction::drain_log`).
    fn drain_pass(&self) {
        let (flushed, lines) = self.flush_pending();
        self.drain(&lines);
        self.marks.settle(&flushed);
        self.release_quarantine();
    }
}

/// A lane commits twice (the first transaction quarantines blocks) while another thread
/// drains and a third commits on the other lane and drains: blocks are released only once
/// their mark is durable, and no mark is lost (a final drain pass makes every lane's newest
/// mark durable and empties the quarantine).
///
/// Run with the busy lane 0 and with the busy lane 1: `settle` sets a lane's bit again in its
/// bit word (`lane / 64`) when the lane's next mark lands between its exchange and its clear,
/// and only a lane other than 0 tells that index from a wrong one (`lane % 64`, `lane * 64`).
#[test]
fn completion_marks_are_durable_before_quarantine_release_and_never_lost() {
    completion_model(0);
}

/// The same model with the lanes swapped.
#[test]
fn completion_marks_on_the_second_lane_are_durable_and_never_lost() {
    completion_model(1);
}

/// The committer as a transaction runs it: its second transaction's snapshot drain flushes
/// the lane's own pending mark (with any other lane's), and after its commit's drain it settles
/// what it flushed and marks the new seq in one step (`CompletionMarks::settle_then_mark`,
/// which replaces its own still-pending mark in place), while another thread drains and a
/// third commits on the other lane. Same guarantees: blocks are released only once their mark
/// is durable, no mark is lost, nothing stays pending.
#[test]
fn completion_marks_settled_and_replaced_at_commit_are_never_lost() {
    for busy in [0, 1] {
        completion_model_with(busy, |m, busy, seq| {
            // The second transaction's snapshot drain (`Transaction::drain_log`).
            let (flushed, lines) = m.flush_pending();
            m.drain(&lines);
            // Its commit's drain, then `Shared::settle_then_mark_complete`.
            m.completed[busy].store(seq, Ordering::Release);
            m.marks.settle_then_mark(&flushed, busy, seq);
            m.release_quarantine();
        });
    }
}

/// [`completion_marks_are_durable_before_quarantine_release_and_never_lost`] with `busy` the
/// lane that commits twice.
fn completion_model(busy: usize) {
    completion_model_with(busy, |m, busy, seq| m.mark_complete(busy, seq));
}

/// The completion model with `second(marks, busy, seq)` as the committer's second transaction's
/// completion (after its first committed, quarantining blocks).
fn completion_model_with(busy: usize, second: fn(&Marks, usize, u64)) {
    let other = 1 - busy;
    model(move || {
        let m = Arc::new(Marks::new());
        let committer = {
            let m = m.clone();
            thread::spawn(move || {
                m.mark_complete(busy, SEQ_STRIDE);
                m.quarantine(busy, SEQ_STRIDE);
                second(&m, busy, 2 * SEQ_STRIDE);
            })
        };
        let drainer = {
            let m = m.clone();
            thread::spawn(move || m.drain_pass())
        };
        let other_lane = {
            let m = m.clone();
            thread::spawn(move || {
                m.mark_complete(other, SEQ_STRIDE + 1);
                m.drain_pass();
            })
        };
        for h in [committer, drainer, other_lane] {
            h.join().unwrap();
        }
        // A later transaction's snapshot drain.
        m.drain_pass();
        assert_eq!(
            m.media[busy].load(Ordering::SeqCst),
            2 * SEQ_STRIDE,
            "lane {busy}'s newest mark lost"
        );
        assert_eq!(
            m.media[other].load(Ordering::SeqCst),
            SEQ_STRIDE + 1,
            "lane {other}'s mark lost"
        );
        assert!(
            m.marks.is_durable(busy, 2 * SEQ_STRIDE),
            "lane {busy}'s newest mark never settled"
        );
        assert!(m.quarantine.lock().unwrap().is_empty(), "blocks never released");
        // Nothing left pending. (A lane's bit may stay set with `pending_seq` 0: a settle
        // cleared the seq between the committer's two stores, and `flush_pending` skips such a
        // lane; the next mark on the lane clears it. Harmless, found by this model.)
        for lane in 0..2 {
            assert_eq!(m.marks.pending(lane), 0, "lane {lane} still pending");
        }
    });
}
