//! Guards the persistent lock words' state machine (`ptm::internals::lockword`, docs/design.md
//! §8.6) one step at a time, on a single thread: from each state a word can be in, what every
//! attempt returns and the exact word it leaves (generation and low bits). loom
//! (`tests/loom.rs`) checks the interleavings; these tests pin the encoding and every branch.

use std::sync::atomic::{AtomicU64, Ordering};

use ptm::internals::lockword::{self as lw, Attempt, Upgrade};

/// This open's generation, and an earlier one (one bit apart, the high bit set in both, so a
/// comparison of the wrong bits or halves tells them apart).
const GEN: u32 = 0x8000_0005;
const OLD: u32 = 0x8000_0004;
const WRITER: u64 = 1 << 31;
const WAITING: u64 = 1 << 30;

/// A word of generation `generation` with low bits `low`.
fn word(generation: u32, low: u64) -> AtomicU64 {
    AtomicU64::new((u64::from(generation) << 32) | low)
}

/// The low bits of `w`, which must be of this generation.
fn low(w: &AtomicU64) -> u64 {
    let v = w.load(Ordering::Relaxed);
    assert_eq!((v >> 32) as u32, GEN, "generation of {v:#x}");
    v & 0xFFFF_FFFF
}

/// The upgrader field naming `lane`.
fn upgrader(lane: u32) -> u64 {
    (u64::from(lane) + 1) << 16
}

#[test]
fn a_mutex_word_holds_its_owner_lane_plus_one() {
    let w = word(GEN, 0);
    assert_eq!(lw::mutex_try_lock(&w, GEN, 6), Attempt::Acquired);
    assert_eq!(low(&w), 7);
    assert_eq!(lw::mutex_try_lock(&w, GEN, 6), Attempt::AlreadyHeld);
    assert_eq!(lw::mutex_try_lock(&w, GEN, 5), Attempt::Busy);
    assert_eq!(lw::mutex_try_lock(&w, GEN, 0), Attempt::Busy);
    assert_eq!(low(&w), 7, "a refused attempt changes nothing");
    lw::mutex_unlock(&w, GEN);
    assert_eq!(w.load(Ordering::Relaxed), u64::from(GEN) << 32);
    // Lane 0 is owner 1, not "free".
    assert_eq!(lw::mutex_try_lock(&w, GEN, 0), Attempt::Acquired);
    assert_eq!(low(&w), 1);
    assert_eq!(lw::mutex_try_lock(&w, GEN, 1023), Attempt::Busy);
}

#[test]
fn a_word_of_another_generation_is_free_whatever_its_low_bits() {
    // Held by lane 6, by a writer, by readers, marked: all in an earlier open.
    for stale in [7, WRITER | 7, 3, WAITING | 2, upgrader(4) | 2, 0xFFFF_FFFF] {
        let w = word(OLD, stale);
        assert_eq!(lw::mutex_try_lock(&w, GEN, 6), Attempt::Acquired, "{stale:#x}");
        assert_eq!(low(&w), 7);
        let w = word(OLD, stale);
        assert_eq!(lw::rw_try_read(&w, GEN), Attempt::Acquired, "{stale:#x}");
        assert_eq!(low(&w), 1);
        let w = word(OLD, stale);
        assert_eq!(
            lw::rw_try_write(&w, GEN, 6, false),
            Attempt::Acquired,
            "{stale:#x}"
        );
        assert_eq!(low(&w), WRITER | 7);
        let w = word(OLD, stale);
        assert_eq!(lw::sx_try_read(&w, GEN), Attempt::Acquired, "{stale:#x}");
        assert_eq!(low(&w), 1);
        let w = word(OLD, stale);
        assert_eq!(lw::sx_try_write(&w, GEN, 6), Attempt::Acquired, "{stale:#x}");
        assert_eq!(low(&w), WRITER | 7);
    }
    // A generation equal in its low 32 bits of the whole word (the word's low half) is not
    // this generation either.
    let w = word(0, u64::from(GEN));
    assert_eq!(lw::mutex_try_lock(&w, GEN, 6), Attempt::Acquired);
    assert_eq!(low(&w), 7);
}

#[test]
fn rwlock_readers_count_up_and_down_and_writers_need_a_free_word() {
    let w = word(GEN, 0);
    assert_eq!(lw::rw_try_read(&w, GEN), Attempt::Acquired);
    assert_eq!(low(&w), 1);
    assert_eq!(lw::rw_try_read(&w, GEN), Attempt::Acquired);
    assert_eq!(low(&w), 2);
    assert_eq!(lw::rw_try_write(&w, GEN, 3, false), Attempt::Busy);
    assert_eq!(
        lw::rw_try_write(&w, GEN, 3, true),
        Attempt::Busy,
        "not the sole reader"
    );
    assert_eq!(low(&w), 2);
    lw::rw_unlock_read(&w, GEN);
    assert_eq!(low(&w), 1);
    assert_eq!(
        lw::rw_try_write(&w, GEN, 3, false),
        Attempt::Busy,
        "a reader is in"
    );
    assert_eq!(
        lw::rw_try_write(&w, GEN, 3, true),
        Attempt::Acquired,
        "the sole reader upgrades"
    );
    assert_eq!(low(&w), WRITER | 4);
    assert_eq!(lw::rw_try_write(&w, GEN, 3, false), Attempt::AlreadyHeld);
    assert_eq!(lw::rw_try_write(&w, GEN, 3, true), Attempt::AlreadyHeld);
    assert_eq!(lw::rw_try_write(&w, GEN, 2, false), Attempt::Busy);
    assert_eq!(
        lw::rw_try_read(&w, GEN),
        Attempt::Busy,
        "a writer keeps readers out"
    );
    assert_eq!(low(&w), WRITER | 4);
    lw::rw_unlock_write(&w, GEN);
    assert_eq!(w.load(Ordering::Relaxed), u64::from(GEN) << 32);
    // Free: an upgrade needs the one read hold it claims.
    assert_eq!(lw::rw_try_write(&w, GEN, 3, true), Attempt::Busy);
    assert_eq!(lw::rw_try_write(&w, GEN, 3, false), Attempt::Acquired);
    assert_eq!(low(&w), WRITER | 4);
    // The last read hold of a word leaves it free, in the same generation.
    let w = word(GEN, 1);
    lw::rw_unlock_read(&w, GEN);
    assert_eq!(w.load(Ordering::Relaxed), u64::from(GEN) << 32);
}

#[test]
fn rwlock_readers_stop_below_the_writer_bit() {
    let w = word(GEN, WRITER - 2);
    assert_eq!(lw::rw_try_read(&w, GEN), Attempt::Acquired);
    assert_eq!(low(&w), WRITER - 1);
    assert_eq!(
        lw::rw_try_read(&w, GEN),
        Attempt::Busy,
        "one more would set the writer bit"
    );
    assert_eq!(low(&w), WRITER - 1);
    lw::rw_unlock_read(&w, GEN);
    assert_eq!(low(&w), WRITER - 2);
}

#[test]
fn shared_holds_count_up_and_down_keeping_the_marks() {
    let w = word(GEN, 0);
    assert_eq!(lw::sx_try_read(&w, GEN), Attempt::Acquired);
    assert_eq!(lw::sx_try_read(&w, GEN), Attempt::Acquired);
    assert_eq!(low(&w), 2);
    lw::sx_unlock_read(&w, GEN);
    assert_eq!(low(&w), 1);
    lw::sx_unlock_read(&w, GEN);
    assert_eq!(w.load(Ordering::Relaxed), u64::from(GEN) << 32);
    // Unlocks keep a waiting writer's mark and an upgrader's registration.
    for marks in [WAITING, upgrader(9), WAITING | upgrader(9)] {
        let w = word(GEN, marks | 3);
        lw::sx_unlock_read(&w, GEN);
        assert_eq!(low(&w), marks | 2, "{marks:#x}");
    }
    // The shared-hold count stops at its field's top.
    let w = word(GEN, 0xFFFE);
    assert_eq!(lw::sx_try_read(&w, GEN), Attempt::Acquired);
    assert_eq!(low(&w), 0xFFFF);
    assert_eq!(lw::sx_try_read(&w, GEN), Attempt::Busy);
    assert_eq!(low(&w), 0xFFFF);
    lw::sx_unlock_read(&w, GEN);
    assert_eq!(low(&w), 0xFFFE);
}

#[test]
fn no_shared_hold_is_granted_past_a_writer_a_waiting_writer_or_an_upgrader() {
    for held in [
        WRITER | 4,
        WAITING,
        WAITING | 2,
        upgrader(0) | 1,
        upgrader(1023) | 2,
    ] {
        let w = word(GEN, held);
        assert_eq!(lw::sx_try_read(&w, GEN), Attempt::Busy, "{held:#x}");
        assert_eq!(low(&w), held, "a refused hold changes nothing ({held:#x})");
    }
}

#[test]
fn an_exclusive_hold_waits_for_shared_holds_and_marks_the_word() {
    let w = word(GEN, 0);
    assert_eq!(lw::sx_try_write(&w, GEN, 5), Attempt::Acquired);
    assert_eq!(low(&w), WRITER | 6);
    assert_eq!(lw::sx_try_write(&w, GEN, 5), Attempt::AlreadyHeld);
    assert_eq!(lw::sx_try_write(&w, GEN, 4), Attempt::Busy);
    assert_eq!(
        low(&w),
        WRITER | 6,
        "another writer leaves no mark on a held word"
    );
    lw::sx_unlock_write(&w, GEN);
    assert_eq!(w.load(Ordering::Relaxed), u64::from(GEN) << 32);

    // Shared holds in the way: the writer marks the word, and a second attempt (or another
    // writer) finds the mark set and changes nothing.
    let w = word(GEN, 2);
    assert_eq!(lw::sx_try_write(&w, GEN, 5), Attempt::Busy);
    assert_eq!(low(&w), WAITING | 2);
    assert_eq!(lw::sx_try_write(&w, GEN, 5), Attempt::Busy);
    assert_eq!(lw::sx_try_write(&w, GEN, 4), Attempt::Busy);
    assert_eq!(low(&w), WAITING | 2);
    lw::sx_unlock_read(&w, GEN);
    lw::sx_unlock_read(&w, GEN);
    assert_eq!(low(&w), WAITING);
    // Only the mark left: the writer gets in and the mark goes.
    assert_eq!(lw::sx_try_write(&w, GEN, 5), Attempt::Acquired);
    assert_eq!(low(&w), WRITER | 6);

    // A registered upgrader (with its shared hold) is in the way too.
    let w = word(GEN, upgrader(2) | 1);
    assert_eq!(lw::sx_try_write(&w, GEN, 5), Attempt::Busy);
    assert_eq!(low(&w), WAITING | upgrader(2) | 1);
}

#[test]
fn an_abandoning_writer_clears_only_the_waiting_mark() {
    let w = word(GEN, WAITING | 2);
    lw::sx_abandon_write(&w, GEN);
    assert_eq!(low(&w), 2);
    // The shared holds it waited for are gone already: the word is free again.
    let w = word(GEN, WAITING);
    lw::sx_abandon_write(&w, GEN);
    assert_eq!(low(&w), 0);
    let w = word(GEN, WAITING | upgrader(3) | 2);
    lw::sx_abandon_write(&w, GEN);
    assert_eq!(low(&w), upgrader(3) | 2);
    // Nothing to clear: the word is left as it is.
    for held in [2, WRITER | 6, upgrader(3) | 1] {
        let w = word(GEN, held);
        lw::sx_abandon_write(&w, GEN);
        assert_eq!(low(&w), held, "{held:#x}");
    }
}

#[test]
fn an_upgrade_is_immediate_for_the_sole_shared_holder_else_it_registers_once() {
    let w = word(GEN, 1);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 5), Upgrade::Acquired);
    assert_eq!(low(&w), WRITER | 6);
    // A waiting writer's mark does not stop the sole holder's upgrade; the upgrade clears it.
    let w = word(GEN, WAITING | 1);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 5), Upgrade::Acquired);
    assert_eq!(low(&w), WRITER | 6);

    // Other shared holds: lane 5 registers, and waits.
    let w = word(GEN, 3);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 5), Upgrade::Wait);
    assert_eq!(low(&w), upgrader(5) | 3);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 5), Upgrade::Wait);
    assert_eq!(low(&w), upgrader(5) | 3, "registered once");
    // Another lane wanting to upgrade too would deadlock with it.
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 4), Upgrade::Conflict);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 0), Upgrade::Conflict);
    assert_eq!(low(&w), upgrader(5) | 3);
    // The others leave: the registered upgrader gets in, its registration gone.
    lw::sx_unlock_read(&w, GEN);
    lw::sx_unlock_read(&w, GEN);
    assert_eq!(low(&w), upgrader(5) | 1);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 5), Upgrade::Acquired);
    assert_eq!(low(&w), WRITER | 6);

    // Registering keeps a waiting writer's mark.
    let w = word(GEN, WAITING | 2);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 5), Upgrade::Wait);
    assert_eq!(low(&w), WAITING | upgrader(5) | 2);
    // Lane numbers up to the most lanes fit the field.
    let w = word(GEN, 2);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 1023), Upgrade::Wait);
    assert_eq!(low(&w), upgrader(1023) | 2);
    assert_eq!(lw::sx_try_upgrade(&w, GEN, 0), Upgrade::Conflict);
}

#[test]
fn an_abandoning_upgrader_withdraws_only_its_own_registration() {
    let w = word(GEN, upgrader(5) | 3);
    lw::sx_abandon_upgrade(&w, GEN, 5);
    assert_eq!(low(&w), 3);
    let w = word(GEN, WAITING | upgrader(5) | 3);
    lw::sx_abandon_upgrade(&w, GEN, 5);
    assert_eq!(low(&w), WAITING | 3);
    // Another lane's registration, or none, is left as it is.
    for held in [upgrader(4) | 3, 3, WAITING | 3, upgrader(0) | 1] {
        let w = word(GEN, held);
        lw::sx_abandon_upgrade(&w, GEN, 5);
        assert_eq!(low(&w), held, "{held:#x}");
    }
    // An upgrader that got in (the word held exclusively) has nothing to withdraw.
    let w = word(GEN, WRITER | 6);
    lw::sx_abandon_upgrade(&w, GEN, 5);
    assert_eq!(low(&w), WRITER | 6);
}
