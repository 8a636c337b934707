//! Guards completion marks and the quarantine (issue 19, class "completion marks and
//! quarantine") with workloads on several lanes and follow-up workloads after recovery
//! (`Explorer::run_then`):
//! - a completion mark written by recovery must be durable before a later transaction on
//!   another lane changes the recovered transaction's ranges (else a second crash makes
//!   recovery judge that transaction by a data hash that no longer matches, and roll it back);
//! - blocks and runs allocated and freed in one transaction must not be reused, on the same
//!   lane or another, before that transaction's completion mark is durable (the reuse writes
//!   fresh memory before its first drain, into bytes the committed transaction's data hash
//!   covers);
//! - after recovery, the reopened pool's in-memory allocator state (index, quarantine) is
//!   exercised by new allocations and frees, whose crash points are explored in turn.
//!
//! Lanes are chosen deterministically in one thread: a relaxed commit keeps its lane until
//! dropped, so the thread's next transaction takes the next free lane (asserted).

use std::cell::Cell;
use std::collections::BTreeSet;

use ptm::internals::heap::CHUNK;
use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions, Transaction};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, CheckResult, Explorer, Report};

const LINKS: usize = 4;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<u64>,
    /// Cells the lane-holding relaxed commits write (never checked).
    hold: [PCell<u64>; 4],
    blocks: [PCell<PPtr<u64>>; LINKS],
}

fn explorer() -> Explorer {
    Explorer::new()
        .seed(19)
        .pool_size(4 << 20)
        .pool_options(PoolOptions::new().layout("crashtest").lanes(3).lane_size(8192))
}

/// Holds a lane: a relaxed commit of one cell, kept until dropped.
fn hold(pool: &Pool<Root>, i: usize) -> Result<(usize, ptm::PendingCommit<'_>), Error> {
    pool.transaction_relaxed(|tx, r| {
        r.hold[i].set(tx, r.hold[i].get(tx) + 1)?;
        Ok(tx.lane())
    })
}

/// Sets `a` and `b` to `v`; returns the lane it ran on.
fn set_ab(pool: &Pool<Root>, v: u64) -> Result<usize, Error> {
    pool.transaction(|tx, r| {
        r.a.set(tx, v)?;
        r.b.set(tx, v)?;
        Ok(tx.lane())
    })
}

/// What the root holds: `(a, b)`.
fn ab(pool: &Pool<Root>) -> Result<(u64, u64), Error> {
    pool.transaction(|tx, r| Ok((r.a.get(tx), r.b.get(tx))))
}

fn assert_clean(report: &Report) {
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}

/// A transaction recovered as complete (committed, its completion mark lost) and then, after
/// recovery, another lane's transaction over the same ranges, and a crash again: the mark
/// recovery wrote must have been durable, or the second recovery rolls the first transaction
/// back over the second one's committed data.
#[test]
fn a_completion_mark_written_by_recovery_is_durable_before_other_lanes_reuse_its_ranges() {
    let done = Cell::new(0usize); // workload transactions that returned (T1)
    let base = Cell::new((0u64, 0u64)); // the recovered image's state, when the follow-up began
    let followup_done = Cell::new(0usize);
    let report = explorer()
        .double_crash(true)
        .run_then::<Root>(
            |_| Ok(()),
            |pool| {
                // T1 on the third lane: the follow-up holds the first and runs on the second.
                let (l0, h0) = hold(pool, 0)?;
                let (l1, h1) = hold(pool, 1)?;
                let l2 = set_ab(pool, 1)?;
                done.set(1);
                ensure!(l0 != l1 && l1 != l2 && l0 != l2, "lanes {l0} {l1} {l2}");
                drop(h1);
                drop(h0);
                Ok(())
            },
            |pool| {
                followup_done.set(0);
                base.set(ab(pool)?);
                let (l0, h0) = hold(pool, 2)?;
                // T2 on the second lane, over T1's ranges.
                let l1 = set_ab(pool, 2)?;
                followup_done.set(1);
                ensure!(l0 != l1, "lanes {l0} {l1}");
                drop(h0);
                Ok(())
            },
            |pool| {
                let (a, b) = ab(pool)?;
                ensure!(a == b, "torn: a = {a}, b = {b}");
                let states = [0, 1];
                ensure_prefix(&a, &states, done.get())
            },
            |pool| {
                let (a, b) = ab(pool)?;
                ensure!(a == b, "torn after recovery and a follow-up: a = {a}, b = {b}");
                if followup_done.get() == 1 {
                    ensure!(a == 2, "the follow-up's returned transaction was lost: a = {a}");
                } else {
                    ensure!(
                        a == base.get().0 || a == 2,
                        "after recovery to a = {}, a crash in the follow-up left a = {a}",
                        base.get().0
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    assert_clean(&report);
    assert!(report.followup_images_checked > 0, "{report}");
}

/// The stamp the words of block `i` hold when written by transaction `t`.
fn stamp(t: u64, i: usize) -> u64 {
    0xB10C_0000_0000 | t << 8 | i as u64
}

/// Allocates a run of two chunks and a small block, stamps both (fresh memory, before any
/// drain of the transaction), and links them into `blocks[first..first + 2]` (the first link
/// drains). Allocation first, so a block reused too early is written before the drain that
/// would make a lost completion mark durable.
fn alloc_and_link(tx: &Transaction<'_>, r: &Root, t: u64, first: usize) -> Result<(), Error> {
    let offs = [tx.alloc_bytes(2 * CHUNK)?, tx.alloc_bytes(100)?];
    for (k, &off) in offs.iter().enumerate() {
        let cell: PPtr<PCell<u64>> = tx.pptr(off);
        // SAFETY: a block this transaction just allocated: only it uses the block.
        unsafe { tx.deref(cell)? }.set(tx, stamp(t, first + k))?;
    }
    for (k, &off) in offs.iter().enumerate() {
        r.blocks[first + k].set(tx, tx.pptr(off))?;
    }
    Ok(())
}

/// Allocates a run and a small block, orders their records with a drain, frees both: they are
/// quarantined after the commit (their bytes are in its data hash).
fn alloc_drain_free(tx: &Transaction<'_>, r: &Root, v: u64) -> Result<usize, Error> {
    let x = tx.alloc_bytes(2 * CHUNK)?;
    let y = tx.alloc_bytes(100)?;
    r.a.set(tx, v)?; // drains: the allocations' records are ordered, not taken back
    tx.free_bytes(x)?;
    tx.free_bytes(y)?;
    r.b.set(tx, v)?;
    Ok(tx.lane())
}

/// The root's state: `(a, b, linked blocks with their stamps' writer)`, checking the stamps.
fn links(pool: &mut Pool<Root>) -> Result<(u64, u64, Vec<Option<u64>>), ptm_crashtest::BoxError> {
    let (a, b, found) = pool.transaction(|tx, r| {
        let mut found = Vec::new();
        for i in 0..LINKS {
            let p = r.blocks[i].get(tx);
            found.push((!p.is_null()).then(|| p.offset()));
        }
        let words = found
            .iter()
            .map(|o| match o {
                // SAFETY: linked blocks are live (the heap check below confirms it).
                Some(off) => Ok(Some(*unsafe { tx.deref(tx.pptr::<u64>(*off))? })),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok::<_, Error>((
            r.a.get(tx),
            r.b.get(tx),
            found.into_iter().zip(words).collect::<Vec<_>>(),
        ))
    })?;
    let owned: BTreeSet<u64> = found.iter().filter_map(|(o, _)| *o).collect();
    ensure_heap_owns(pool, &owned)?;
    pool.check_heap()?;
    let mut writers = Vec::new();
    for (i, (_, word)) in found.into_iter().enumerate() {
        writers.push(match word {
            None => None,
            Some(w) => {
                let t = (w >> 8) & 0xFF;
                ensure!(w == stamp(t, i), "block {i} overwritten: {w:#x}");
                Some(t)
            }
        });
    }
    Ok((a, b, writers))
}

/// The model states of [`quarantine_workload`], by transactions returned.
fn quarantine_states() -> Vec<(u64, u64, Vec<Option<u64>>)> {
    vec![
        (0, 0, vec![None; LINKS]),
        (1, 1, vec![None; LINKS]),                        // T1
        (1, 1, vec![Some(3), Some(3), None, None]),       // T3
        (2, 2, vec![Some(3), Some(3), None, None]),       // T5
        (2, 2, vec![Some(3), Some(3), Some(6), Some(6)]), // T6
    ]
}

/// T1 allocates, drains, frees (quarantined); then T3 on another lane and, after T5 did the
/// same as T1, T6 on T5's lane allocate and write fresh memory before their first drain.
fn quarantine_workload(pool: &Pool<Root>, done: &Cell<usize>) -> CheckResult {
    let (l0, h0) = hold(pool, 0)?;
    let (l1, h1) = hold(pool, 1)?;
    let l2 = pool.transaction(|tx, r| alloc_drain_free(tx, r, 1))?;
    done.set(1);
    drop(h1);
    // Another lane, before T1's completion mark is durable.
    let l3 = pool.transaction(|tx, r| {
        alloc_and_link(tx, r, 3, 0)?;
        Ok::<_, Error>(tx.lane())
    })?;
    done.set(2);
    ensure!(
        l0 != l1 && l1 != l2 && l2 != l0 && l3 == l1,
        "lanes {l0} {l1} {l2} {l3}"
    );
    // The same lane, right after.
    let l5 = pool.transaction(|tx, r| alloc_drain_free(tx, r, 2))?;
    done.set(3);
    let l6 = pool.transaction(|tx, r| {
        alloc_and_link(tx, r, 6, 2)?;
        Ok::<_, Error>(tx.lane())
    })?;
    done.set(4);
    ensure!(l5 == l6, "lanes {l5} {l6}");
    drop(h0);
    Ok(())
}

/// Freed blocks and runs are reused only once their transaction's completion mark is durable,
/// on another lane and on the same lane.
#[test]
fn blocks_freed_are_not_reused_before_their_completion_mark_is_durable() {
    let done = Cell::new(0usize);
    let states = quarantine_states();
    // The images that show an early reuse persist the reusing transaction's fresh stores but
    // neither its log records nor the freeing transaction's mark, among ~25 pending words:
    // many random images per point (this exploration is cheap, about a thousand images).
    let report = explorer()
        .images_per_point(48)
        .run::<Root>(
            |_| Ok(()),
            |pool| quarantine_workload(pool, &done),
            |pool| {
                let state = links(pool)?;
                ensure_prefix(&state, &states, done.get())
            },
        )
        .unwrap();
    assert_clean(&report);
}

/// The same workload, and on every recovered image a follow-up that frees what is linked and
/// allocates again, in one transaction and the next (the allocator's in-memory state after
/// recovery, used in the same process rather than rebuilt by another open), with the
/// follow-up's crash points explored.
#[test]
fn the_allocator_after_recovery_reuses_freed_blocks_safely() {
    let done = Cell::new(0usize);
    let followup_done = Cell::new(0usize);
    let states = quarantine_states();
    // Each recovered image runs the follow-up, whose crash points have images of their own:
    // fewer images per point keep the product to a few thousand.
    let report = explorer()
        .images_per_point(2)
        .exhaustive_units(2)
        .recovery_images_per_point(1)
        .run_then::<Root>(
            |_| Ok(()),
            |pool| quarantine_workload(pool, &done),
            |pool| {
                followup_done.set(0);
                pool.transaction(|tx, r| {
                    for i in 0..LINKS {
                        let p = r.blocks[i].get(tx);
                        if !p.is_null() {
                            tx.free(p)?;
                            r.blocks[i].set(tx, PPtr::null())?;
                        }
                    }
                    alloc_and_link(tx, r, 7, 0)
                })?;
                followup_done.set(1);
                pool.transaction(|tx, r| alloc_and_link(tx, r, 8, 2))?;
                followup_done.set(2);
                Ok(())
            },
            |pool| {
                let state = links(pool)?;
                ensure_prefix(&state, &states, done.get())
            },
            |pool| {
                let (a, b, writers) = links(pool)?;
                ensure!(a == b, "torn: a = {a}, b = {b}");
                let f = followup_done.get();
                let first = [Some(7), Some(7)];
                let second = [Some(8), Some(8)];
                if f >= 1 {
                    ensure!(
                        writers[..2] == first,
                        "the follow-up's first transaction lost: {writers:?}"
                    );
                }
                if f >= 2 {
                    ensure!(
                        writers[2..] == second,
                        "the follow-up's second transaction lost: {writers:?}"
                    );
                }
                if f == 0 && writers[..2] == first {
                    ensure!(
                        writers[2..] == [None, None],
                        "half of the follow-up's first transaction: {writers:?}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    assert_clean(&report);
    assert!(report.followup_images_checked > 0, "{report}");
}

/// Allocation in the same process right after an aborted free: a transaction frees a linked
/// run and a linked small block and aborts; the next one allocates a run and a block. They
/// must not be the aborted frees' (still linked) blocks, at every crash point and in the end.
#[test]
fn blocks_whose_free_was_aborted_are_not_reused() {
    let done = Cell::new(0usize);
    let before = vec![Some(1), Some(1), None, None];
    let states = [
        (0, 0, before.clone()),
        (0, 0, before),                                   // T7, aborted
        (0, 0, vec![Some(1), Some(1), Some(8), Some(8)]), // T8
    ];
    let report = explorer()
        .run::<Root>(
            |pool| Ok(pool.transaction(|tx, r| alloc_and_link(tx, r, 1, 0))?),
            |pool| {
                let aborted: Result<(), Error> = pool.transaction(|tx, r| {
                    for i in 0..2 {
                        tx.free(r.blocks[i].get(tx))?;
                        r.blocks[i].set(tx, PPtr::null())?;
                    }
                    Err(Error::InvalidOptions("abort"))
                });
                ensure!(aborted.is_err(), "the free was not aborted");
                done.set(1);
                pool.transaction(|tx, r| alloc_and_link(tx, r, 8, 2))?;
                done.set(2);
                Ok(())
            },
            |pool| {
                let state = links(pool)?;
                ensure_prefix(&state, &states, done.get())
            },
        )
        .unwrap();
    assert_clean(&report);
}
