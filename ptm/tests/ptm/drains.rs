//! Guards the deterministic persistence cost of transactions: 2 drains for a 1-word and for an
//! 8-range batched transaction, 0 for a read-only one and for an aborted one that logged nothing,
//! one more per unbatched snapshot, none for a store a logged range covers (also among many
//! ranges, inside a snapshot batch next to its ranges, in a fresh block after another fresh block
//! was freed, whether or not that one's records were written), and a commit that flushes only
//! the lines it changed.

use crate::common;

use ptm::{thread_stats, PCell, PMutex, PPtr, Persistent, Pool, Transaction};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// One cache line per element.
    lines: [PCell<[u64; 8]>; 64],
    word: PCell<u64>,
    big: PCell<PPtr<Big>>,
}

fn drains_of(pool: &Pool<Root>, f: impl FnOnce(&Transaction<'_>, &Root) -> ptm::Result<()>) -> (u64, u64) {
    let before = thread_stats();
    pool.transaction(|tx, root| f(tx, root)).unwrap();
    let d = thread_stats().since(&before);
    (d.drains, d.lines_flushed)
}

fn pool(dir: &tempfile::TempDir) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, "drains.pool"), 8 << 20, &common::pmem()).unwrap()
}

#[test]
fn one_word_transaction_costs_two_drains() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    for i in 0..10 {
        let (drains, lines) = drains_of(&pool, |tx, r| r.word.set(tx, i));
        assert_eq!(drains, 2, "transaction {i}");
        // The lane's first line (its pending completion mark and the record, format 5), the
        // word's line, the commit record's line.
        assert_eq!(lines, 3, "lines flushed by transaction {i}");
    }
}

#[test]
fn eight_range_batched_transaction_costs_two_drains() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    for round in 0..5u64 {
        let (drains, lines) = drains_of(&pool, |tx, r| {
            tx.snapshot(|b| {
                for l in &r.lines[..8] {
                    b.add(l)?;
                }
                Ok(())
            })?;
            for (i, l) in r.lines[..8].iter().enumerate() {
                l.set(tx, [round * 100 + i as u64; 8])?;
            }
            Ok(())
        });
        assert_eq!(drains, 2, "round {round}");
        // Packed records (format 5): the lane's first line (with its pending completion mark)
        // and the 8 records of 32 + 64 bytes behind it, each line flushed once; then 8 data
        // lines and the commit line.
        let g = pool.geometry();
        let log = (8 + 8 * g.rec_total(64)).div_ceil(64);
        assert_eq!(log, 13);
        assert_eq!(lines, log + 8 + 1, "lines flushed in round {round}");
    }
}

/// `add_all` logs what `add` one by one logs, in groups of 8 (the lines of a group loading
/// together): the same drains, lines and records for 1 to 20 ranges (a partial group, one, two
/// and a half), the same values after an abort rolls them back and after a commit.
#[test]
fn add_all_costs_what_adds_one_by_one_cost_and_rolls_back_the_same() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let values = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| {
            Ok::<_, ptm::Error>(r.lines.iter().map(|l| l.get(tx)[0]).collect::<Vec<_>>())
        })
        .unwrap()
    };
    fn every_third(r: &Root, n: usize) -> Vec<&PCell<[u64; 8]>> {
        r.lines.iter().step_by(3).take(n).collect()
    }
    /// One batch of every third line (`n` of them): by `add_all` or by `add` one by one.
    fn snapshot_every_third(tx: &Transaction<'_>, r: &Root, n: usize, all: bool) -> ptm::Result<()> {
        tx.snapshot(|b| {
            if all {
                b.add_all(every_third(r, n))
            } else {
                every_third(r, n).into_iter().try_for_each(|l| b.add(l))
            }
        })
    }
    for n in [1usize, 5, 8, 9, 16, 20] {
        let mut cost = Vec::new();
        for all in [false, true] {
            let tag = n as u64 * 10 + u64::from(all);
            let (drains, lines) = drains_of(&pool, |tx, r| {
                snapshot_every_third(tx, r, n, all)?;
                // Every store is covered: no drain beyond the batch's and the commit's.
                every_third(r, n)
                    .into_iter()
                    .try_for_each(|l| l.set(tx, [tag; 8]))
            });
            cost.push((drains, lines));
            let committed = values(&pool);
            assert_eq!(
                committed.iter().step_by(3).take(n).collect::<Vec<_>>(),
                vec![&tag; n]
            );
            // The same batch, then an abort: every range rolls back.
            let r: Result<(), ptm::Error> = pool.transaction(|tx, r| {
                snapshot_every_third(tx, r, n, all)?;
                every_third(r, n)
                    .into_iter()
                    .try_for_each(|l| l.set(tx, [u64::MAX; 8]))?;
                Err(ptm::Error::InvalidOptions("abort on purpose"))
            });
            assert!(r.is_err());
            assert_eq!(values(&pool), committed, "{n} ranges, add_all {all}: rolled back");
        }
        assert_eq!(cost[0], cost[1], "{n} ranges: (drains, lines) by add, by add_all");
        assert_eq!(cost[1].0, 2, "{n} ranges");
    }
}

/// Objects already logged cost `add_all` nothing, as they cost `add` nothing: a list naming
/// each object twice costs what the list of the distinct ones costs (drains and lines), and a
/// second batch over the same objects adds no record, no line and no drain.
#[test]
fn add_all_skips_objects_already_logged() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    fn four(r: &Root) -> impl Iterator<Item = &PCell<[u64; 8]>> {
        r.lines.iter().step_by(3).take(4)
    }
    let distinct = drains_of(&pool, |tx, r| {
        tx.snapshot(|b| b.add_all(four(r)))?;
        four(r).try_for_each(|l| l.set(tx, [1; 8]))
    });
    let repeated = drains_of(&pool, |tx, r| {
        tx.snapshot(|b| b.add_all(four(r).chain(four(r))))?;
        tx.snapshot(|b| b.add_all(four(r)))?;
        four(r).try_for_each(|l| l.set(tx, [2; 8]))
    });
    assert_eq!(distinct.0, 2);
    assert_eq!(
        repeated, distinct,
        "(drains, lines): each object twice, then a second batch"
    );
}

/// The commit flushes each logged range's lines whatever order the ranges were logged in: 8
/// lines logged from the highest address down cost what they cost logged upwards (the commit
/// merges the ranges' lines into runs, which needs them sorted).
#[test]
fn commit_flushes_every_line_of_ranges_logged_out_of_address_order() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let mut cost = Vec::new();
    for down in [false, true] {
        cost.push(drains_of(&pool, |tx, r| {
            let mut eight: Vec<_> = r.lines.iter().step_by(5).take(8).collect();
            if down {
                eight.reverse();
            }
            tx.snapshot(|b| b.add_all(eight.iter().copied()))?;
            eight.iter().try_for_each(|l| l.set(tx, [u64::from(down); 8]))
        }));
    }
    assert_eq!(cost[1], cost[0], "(drains, lines): logged downwards, upwards");
}

/// An object outside the pool stops `add_all` with `NotInPool`, as it stops `add`: the objects
/// before it are logged (stores to them cost no drain), those after it are not (a store to one
/// logs it: one drain); the transaction still rolls back what it changed.
#[test]
fn add_all_refuses_an_object_outside_the_pool() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let other = Pool::<Root>::create(common::path(&dir, "other.pool"), 8 << 20, &common::pmem()).unwrap();
    let r: Result<(), ptm::Error> = other.transaction(|_, outside| {
        pool.transaction(|tx, r| {
            // A cell of the other pool among this pool's.
            let objs = r.lines[..4]
                .iter()
                .chain([&outside.lines[0]])
                .chain(&r.lines[4..8]);
            let e = tx.snapshot(|b| b.add_all(objs));
            assert!(matches!(e, Err(ptm::Error::NotInPool { .. })), "{e:?}");
            let before = thread_stats();
            r.lines[..4].iter().try_for_each(|l| l.set(tx, [1; 8]))?;
            assert_eq!(
                thread_stats().since(&before).drains,
                0,
                "the 4 before it are logged"
            );
            r.lines[4].set(tx, [1; 8])?;
            assert_eq!(thread_stats().since(&before).drains, 1, "the one after it is not");
            Err(ptm::Error::InvalidOptions("abort on purpose"))
        })
    });
    assert!(r.is_err());
    let v = pool.transaction(|tx, r| {
        Ok::<_, ptm::Error>(r.lines[..8].iter().map(|l| l.get(tx)[0]).collect::<Vec<_>>())
    });
    assert_eq!(v.unwrap(), [0; 8]);
}

#[test]
fn sixty_four_range_batched_transaction_costs_two_drains() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let (drains, _) = drains_of(&pool, |tx, r| {
        tx.snapshot(|b| r.lines.iter().try_for_each(|l| b.add(l)))?;
        r.lines.iter().try_for_each(|l| l.set(tx, [9; 8]))
    });
    assert_eq!(drains, 2);
}

#[test]
fn read_only_transaction_costs_no_drain() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    pool.transaction(|tx, r| r.word.set(tx, 5)).unwrap();
    let before = thread_stats();
    let v = pool
        .transaction(|tx, r| Ok::<_, ptm::Error>(r.word.get(tx) + r.lines[3].get(tx)[0]))
        .unwrap();
    let d = thread_stats().since(&before);
    assert_eq!(v, 5);
    assert_eq!((d.drains, d.lines_flushed), (0, 0));
}

#[test]
fn unbatched_snapshots_cost_one_drain_each_plus_commit() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let (drains, _) = drains_of(&pool, |tx, r| {
        r.lines[..8].iter().try_for_each(|l| l.set(tx, [1; 8]))
    });
    assert_eq!(drains, 9);
}

#[test]
fn stores_inside_a_batch_into_ranges_ordered_before_it_cost_no_drain() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let (drains, _) = drains_of(&pool, |tx, r| {
        // Logged and ordered before the batch: lines 0, 2 and 4 (one drain each).
        for k in [0, 2, 4] {
            r.lines[k].set(tx, [1; 8])?;
        }
        tx.snapshot(|b| {
            // Not yet ordered: lines 1 and 3, each next to the lines stored to below.
            b.add(&r.lines[1])?;
            b.add(&r.lines[3])?;
            // Stores before, between and after them touch none of their bytes: no drain.
            for k in [0, 2, 4] {
                r.lines[k].set(tx, [2; 8])?;
            }
            // One more entry for the batch's own drain at its close.
            b.add(&r.lines[5])
        })?;
        for k in [1, 3, 5] {
            r.lines[k].set(tx, [2; 8])?;
        }
        Ok(())
    });
    assert_eq!(drains, 5, "3 snapshots, the batch, the commit");
    let v = pool.transaction(|tx, r| {
        Ok::<_, ptm::Error>(r.lines[..6].iter().map(|l| l.get(tx)[0]).collect::<Vec<_>>())
    });
    assert_eq!(v.unwrap(), [2; 6]);
}

#[test]
fn rewriting_a_logged_range_costs_nothing_more() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let (drains, _) = drains_of(&pool, |tx, r| {
        for i in 0..100 {
            r.word.set(tx, i)?;
        }
        Ok(())
    });
    assert_eq!(drains, 2);
}

#[test]
fn nested_transactions_share_the_outer_drains() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let before = thread_stats();
    pool.transaction(|tx, r| {
        r.word.set(tx, 1)?;
        pool.transaction(|tx2, r2| {
            assert_eq!(tx2.lane(), tx.lane());
            r2.word.set(tx2, 2)
        })
    })
    .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
}

#[test]
fn an_aborted_transaction_costs_its_snapshot_and_two_rollback_drains() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let before = thread_stats();
    let r: Result<(), ptm::Error> = pool.transaction(|tx, r| {
        r.word.set(tx, 77)?;
        Err(ptm::Error::InvalidOptions("abort on purpose"))
    });
    assert!(r.is_err());
    assert_eq!(thread_stats().since(&before).drains, 3);
}

#[test]
fn an_aborted_transaction_that_logged_nothing_costs_no_drain() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    pool.transaction(|tx, r| r.word.set(tx, 5)).unwrap();
    let before = thread_stats();
    let r: Result<u64, ptm::Error> = pool.transaction(|tx, r| {
        let _ = r.word.get(tx);
        Err(ptm::Error::InvalidOptions("abort on purpose"))
    });
    let d = thread_stats().since(&before);
    assert!(r.is_err());
    assert_eq!((d.drains, d.lines_flushed), (0, 0));
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.word.get(tx)))
            .unwrap(),
        5
    );
}

#[test]
fn read_only_transactions_leave_nothing_for_the_next_drain_to_flush() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    // The same one-word transaction measured twice after a sync (no completion mark pending):
    // once right after it, once after read-only transactions, which have nothing to mark.
    pool.transaction(|tx, r| r.word.set(tx, 1)).unwrap();
    pool.sync().unwrap();
    let (_, alone) = drains_of(&pool, |tx, r| r.word.set(tx, 2));
    pool.sync().unwrap();
    for _ in 0..3 {
        pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.word.get(tx)))
            .unwrap();
    }
    let (_, after_reads) = drains_of(&pool, |tx, r| r.word.set(tx, 3));
    assert_eq!(
        after_reads, alone,
        "lines flushed by the write after read-only transactions"
    );
}

#[test]
fn a_commit_flushes_the_lines_it_changed_not_the_lines_between_them() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    // Two one-line stores, adjacent or 40 lines apart: the same records, the same lines to
    // flush (the 39 lines between the far pair hold nothing this transaction wrote). Each after
    // a sync, so neither flushes the completion mark of the transaction before it.
    let two_lines = |a: usize, b: usize, v: u64| {
        pool.sync().unwrap();
        drains_of(&pool, |tx, r| {
            r.lines[a].set(tx, [v; 8])?;
            r.lines[b].set(tx, [v; 8])
        })
    };
    let (_, adjacent) = two_lines(0, 1, 1);
    let (_, apart) = two_lines(0, 40, 2);
    assert_eq!(apart, adjacent, "lines flushed: 40 lines apart vs adjacent");
    let v = pool.transaction(|tx, r| Ok::<_, ptm::Error>((r.lines[1].get(tx)[0], r.lines[40].get(tx)[7])));
    assert_eq!(v.unwrap(), (1, 2));
}

#[test]
fn rewriting_many_scattered_logged_ranges_costs_nothing_more() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    // 32 ranges with gaps between them (more than the 16 a transaction scans linearly, so
    // coverage is looked up in its index): logged in one batch, then each stored to, in
    // ascending and descending order. Every store is covered: no drain but the batch's and
    // the commit's.
    let every_other = || (0..64).step_by(2);
    let (drains, _) = drains_of(&pool, |tx, r| {
        tx.snapshot(|b| every_other().try_for_each(|i| b.add(&r.lines[i])))?;
        every_other().try_for_each(|i| r.lines[i].set(tx, [i as u64; 8]))?;
        every_other()
            .rev()
            .try_for_each(|i| r.lines[i].set(tx, [i as u64 + 1; 8]))
    });
    assert_eq!(drains, 2);
    let got = pool
        .transaction(|tx, r| Ok::<_, ptm::Error>(r.lines.iter().map(|l| l.get(tx)[0]).collect::<Vec<_>>()));
    let want: Vec<u64> = (0..64)
        .map(|i| if i % 2 == 0 { i as u64 + 1 } else { 0 })
        .collect();
    assert_eq!(got.unwrap(), want);
}

/// A block of `BIG_LINES` cache lines, allocated fresh (its first and last line stored to).
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Big {
    head: PCell<[u64; 8]>,
    fill: [[u64; 8]; BIG_LINES - 2],
    tail: PCell<[u64; 8]>,
}

const BIG_LINES: usize = 1 << 17; // 8 MiB

#[test]
fn stores_into_a_large_fresh_block_among_many_logged_ranges_cost_no_drain() {
    let dir = common::shm_dir();
    let pool = Pool::<Root>::create(common::path(&dir, "big.pool"), 64 << 20, &common::pmem()).unwrap();
    let (drains, _) = drains_of(&pool, |tx, r| {
        // 32 ranges: coverage is looked up in the transaction's index, then the block, longer
        // than its own pool offset, is the newest covered range.
        tx.snapshot(|b| (0..64).step_by(2).try_for_each(|i| b.add(&r.lines[i])))?;
        let p = tx.alloc_zeroed::<Big>()?;
        assert!(
            p.offset() < std::mem::size_of::<Big>() as u64,
            "block at {:#x}",
            p.offset()
        );
        // SAFETY: a fresh block of this transaction.
        let big = unsafe { tx.deref(p)? };
        big.head.set(tx, [1; 8])?; // covered by the block, the newest range
        r.lines[2].set(tx, [2; 8])?; // covered by an older range
        big.tail.set(tx, [3; 8])?; // covered by the block, found through the index
        r.big.set(tx, p)?; // not covered: its undo record is the third drain
        Ok(())
    });
    assert_eq!(drains, 3);
    let (head, line, tail) = pool
        .transaction(|tx, r| {
            let p = r.big.get(tx);
            // SAFETY: the block allocated above, committed.
            let big = unsafe { tx.deref(p)? };
            Ok::<_, ptm::Error>((big.head.get(tx)[0], r.lines[2].get(tx)[0], big.tail.get(tx)[7]))
        })
        .unwrap();
    assert_eq!((head, line, tail), (1, 2, 3));
}

#[test]
fn freeing_one_fresh_block_keeps_the_next_one_covered() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    // Two fresh blocks, the first freed before any drain (its reservation is forgotten), then
    // the second filled: fresh memory needs no undo record, so the transaction flushes as many
    // lines as one that only allocates and fills the second.
    let fill = |tx: &Transaction<'_>, off: u64| {
        // SAFETY: a block this transaction just allocated, 256 bytes.
        unsafe { tx.fill_bytes(tx.pptr(off), 9, 256) }
    };
    // The class's slab made first, so that neither measured transaction makes one.
    pool.transaction(|tx, _| tx.alloc_bytes(256).map(drop)).unwrap();
    pool.sync().unwrap();
    let (_, one) = drains_of(&pool, |tx, _| fill(tx, tx.alloc_bytes(256)?));
    pool.sync().unwrap();
    let (_, two) = drains_of(&pool, |tx, _| {
        let first = tx.alloc_bytes(256)?;
        let second = tx.alloc_bytes(256)?;
        tx.free_bytes(first)?;
        fill(tx, second)
    });
    assert_eq!(two, one, "lines flushed");
}

/// As above, with the first block's records written at once (its allocation found the lane's
/// log nearly full) and the second block still pending (no record yet): freeing the first
/// cannot take its record back (the newest covered range is the second block's), and the
/// second block stays covered, so a store into it costs no drain. For each length of a store
/// that first fills most of a small lane; some of them leave the room where the first
/// allocation writes its records and the second does not (checked in the lane's log, read from
/// the pool file; 7960 bytes here).
#[test]
fn freeing_a_block_whose_records_were_written_keeps_a_pending_block_covered() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "pending.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem().lanes(2).lane_size(8192)).unwrap();
    let g = pool.geometry();
    let big = pool.transaction(|tx, _| tx.alloc_bytes(8192)).unwrap();
    // The class's slab made first.
    pool.transaction(|tx, _| tx.alloc_bytes(64).map(drop)).unwrap();
    // Whether lane `lane`'s log holds a new-range record of this transaction (the seq of the
    // lane's first record) for the 64-byte block at `target`: the pool file shows memory.
    let recorded = |lane: usize, target: u64| {
        use std::io::{Read, Seek};
        let (start, end) = g.lane_log(lane);
        let mut bytes = vec![0u8; (end - start) as usize];
        let mut f = std::fs::File::open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(start)).unwrap();
        f.read_exact(&mut bytes).unwrap();
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let new_64 = (u64::from(ptm::internals::layout::KIND_NEW) << 56) | 64;
        (0..bytes.len() - 24)
            .step_by(8)
            .any(|at| word(at) == word(0) && word(at + 8) == new_64 && word(at + 16) == target)
    };
    let mut written = 0;
    for fill in (6400..8000u64).step_by(8) {
        let r: Result<(), ptm::Error> = pool.transaction(|tx, _| {
            // SAFETY: `big` is a live 8192-byte block of this pool that only this thread uses.
            unsafe { tx.fill_bytes(tx.pptr(big), 3, fill)? };
            let a = tx.alloc_bytes(64)?;
            let b = tx.alloc_bytes(64)?;
            tx.free_bytes(a)?;
            if recorded(tx.lane(), a) && !recorded(tx.lane(), b) {
                written += 1;
            }
            let before = thread_stats();
            // SAFETY: `b` was just allocated by this transaction, 64 bytes.
            unsafe { tx.fill_bytes(tx.pptr(b), 9, 64)? };
            let d = thread_stats().since(&before);
            assert_eq!(
                d.drains, 0,
                "store of {fill} bytes first: a store into the pending block"
            );
            Err(ptm::Error::InvalidOptions("abort on purpose"))
        });
        assert!(matches!(r, Err(ptm::Error::InvalidOptions(_))), "{r:?}");
    }
    assert!(
        written > 0,
        "no store length wrote the first block's record and not the second's"
    );
}

/// Up to 16 logged ranges (`LINEAR_RANGES`, tx.rs) coverage looks at every one of them (design
/// §8.2: a linear scan, an index only above that): with 16, a store covered only by the range
/// logged 9th, whose start lies before the starts of 8 other ranges, costs no drain. (The index
/// looks at the 8 starts nearest below a store: such a store would be logged again.)
#[test]
fn up_to_sixteen_logged_ranges_a_store_covered_by_any_of_them_costs_no_drain() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let blk = pool.transaction(|tx, _| tx.alloc_bytes(2048)).unwrap();
    let word = |tx: &Transaction<'_>, line: u64, at: u64| {
        // SAFETY: `blk` is a live 2048-byte block of this pool that only this thread uses.
        unsafe { tx.store_bytes(tx.pptr(blk + line * 64 + at), &[7; 8]) }
    };
    let (drains, _) = drains_of(&pool, |tx, _| {
        // 8 one-word ranges at the start of lines 1 to 8, then lines 0 to 15 in one range,
        // then 7 one-word ranges at lines 17 to 23: 16 ranges.
        for line in 1..=8 {
            word(tx, line, 0)?;
        }
        // SAFETY: as above, 1024 bytes.
        unsafe { tx.store_bytes(tx.pptr(blk), &[5; 1024])? };
        for line in 17..=23 {
            word(tx, line, 0)?;
        }
        let before = thread_stats();
        // Covered only by the 16-line range: 8 other starts lie between it and the store.
        word(tx, 15, 8)?;
        assert_eq!(thread_stats().since(&before).drains, 0, "a covered store");
        Ok(())
    });
    // 16 unbatched records, the commit.
    assert_eq!(drains, 17);
}

/// Storing, filling or copying nothing does nothing and succeeds, whatever the pointers: no
/// check, no record, no drain, no flushed line (as documented on `store_bytes`, `fill_bytes` and
/// `copy_bytes`). The collections rely on it for the empty keys and values of structures that
/// have no block; the same calls with one byte check the pointer.
#[test]
fn storing_nothing_does_nothing_whatever_the_pointer() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let foreign = PPtr::<u8>::from_raw(u64::MAX);
    for dst in [PPtr::<u8>::null(), foreign] {
        let cost = drains_of(&pool, |tx, _| {
            // SAFETY: nothing is stored, copied or filled (every length is 0).
            unsafe {
                tx.store_bytes(dst, &[])?;
                tx.fill_bytes(dst, 7, 0)?;
                tx.copy_bytes(dst, dst, 0)?;
            }
            Ok(())
        });
        assert_eq!(cost, (0, 0), "(drains, lines) of empty stores at {dst:?}");
        let refused = pool.transaction(|tx, _| {
            // SAFETY: `dst` is null or not this pool's: the check refuses it before any store.
            unsafe { tx.store_bytes(dst, &[1]) }
        });
        assert!(refused.is_err(), "one byte at {dst:?} is checked: {refused:?}");
    }
}

/// A transaction's byte stores, fills and copies log each destination before writing it: each
/// costs the drain of its undo record, and an abort leaves every destination as it was.
#[test]
fn byte_stores_fills_and_copies_are_logged_and_undone_at_abort() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let blk = pool.transaction(|tx, _| tx.alloc_bytes(256)).unwrap();
    let line = |tx: &Transaction<'_>, i: u64| -> ptm::Result<[u64; 8]> {
        // SAFETY: line `i` of the live 256-byte block `blk`, read through a cell by this thread.
        Ok(unsafe { tx.deref(tx.pptr::<PCell<[u64; 8]>>(blk + 64 * i)) }?.get(tx))
    };
    let filled = |b: u8| [u64::from_ne_bytes([b; 8]); 8];
    pool.transaction(|tx, _| {
        for i in 0..4u8 {
            // SAFETY: line `i` of `blk`, a live block only this thread uses.
            unsafe { tx.store_bytes(tx.pptr(blk + 64 * u64::from(i)), &[i + 1; 64]) }?;
        }
        Ok::<_, ptm::Error>(())
    })
    .unwrap();
    let before = thread_stats();
    let r: ptm::Result<()> = pool.transaction(|tx, _| {
        // SAFETY: lines 0 to 3 of `blk`, as above; the copy's source and destination are
        // distinct lines of it.
        unsafe {
            tx.store_bytes(tx.pptr(blk), &[9; 64])?;
            tx.fill_bytes(tx.pptr(blk + 64), 8, 64)?;
            tx.copy_bytes(tx.pptr(blk + 192), tx.pptr(blk + 128), 64)?;
        }
        let now = (0..4).map(|i| line(tx, i)).collect::<ptm::Result<Vec<_>>>()?;
        assert_eq!(now, [filled(9), filled(8), filled(4), filled(4)]);
        Err(ptm::Error::InvalidOptions("abort on purpose"))
    });
    let drains = thread_stats().since(&before).drains;
    assert!(r.is_err());
    assert_eq!(drains, 3 + 2, "a drain per undo record, then the roll-back's two");
    let after = pool
        .transaction(|tx, _| (0..4).map(|i| line(tx, i)).collect::<ptm::Result<Vec<_>>>())
        .unwrap();
    assert_eq!(after, [filled(1), filled(2), filled(3), filled(4)]);
}

/// `copy_bytes` checks its source as it checks its destination: a source range outside the
/// root and the heap (here the superblock at the start of the data area, which transactions
/// never read as data) is `NotInPool`, and nothing is stored.
#[test]
fn copy_bytes_refuses_a_source_outside_the_root_and_the_heap() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let blk = pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
    let data_start = pool.region().data_range().start;
    let before = thread_stats();
    let r = pool.transaction(|tx, _| {
        // SAFETY: the destination is the live 64-byte block `blk`, only this thread's; the
        // source is refused before anything is read or stored.
        unsafe { tx.copy_bytes(tx.pptr(data_start), tx.pptr(blk), 64) }
    });
    assert!(matches!(r, Err(ptm::Error::NotInPool { .. })), "{r:?}");
    assert_eq!(thread_stats().since(&before).drains, 0, "nothing logged");
}

/// A store into a range logged inside the still-open batch drains before it stores (its undo
/// entry is not yet ordered), also when the store's range is the logged range itself (covered:
/// the store path's shortcut for covered ranges applies outside batches only); a second store
/// to it, now ordered, costs nothing.
#[test]
fn a_store_into_a_range_logged_in_the_open_batch_drains_first() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    pool.transaction(|tx, r| {
        tx.snapshot(|b| {
            b.add(&r.lines[1])?;
            let before = thread_stats();
            r.lines[1].set(tx, [7; 8])?;
            assert_eq!(
                thread_stats().since(&before).drains,
                1,
                "drains at the first store"
            );
            let before = thread_stats();
            r.lines[1].set(tx, [8; 8])?;
            assert_eq!(
                thread_stats().since(&before).drains,
                0,
                "drains at the second store"
            );
            Ok(())
        })
    })
    .unwrap();
    let v = pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.lines[1].get(tx)[0]));
    assert_eq!(v.unwrap(), 8);
}

/// A root threads can share: each cell under a lock.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Locked {
    lines: [PMutex<PCell<[u64; 8]>>; 2],
    word: PMutex<PCell<u64>>,
}

/// Another lane's completion mark, flushed by a transaction's first drain, is settled by its
/// second (no longer pending), so the second flushes no line for it: it costs what it costs
/// with no other mark pending. Unsettled, every later drain of the transaction would flush that
/// lane's `completed` line again.
#[test]
fn a_mark_flushed_by_one_drain_is_settled_by_the_next_and_not_flushed_again() {
    let dir = common::shm_dir();
    let pool = Pool::<Locked>::create(common::path(&dir, "locked.pool"), 8 << 20, &common::pmem()).unwrap();
    let mut cost = Vec::new();
    for other in [false, true] {
        pool.sync().unwrap();
        let other_lane = other.then(|| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    pool.transaction(|tx, r| r.word.lock(tx)?.set(tx, 1).map(|()| tx.lane()))
                        .unwrap()
                })
                .join()
                .unwrap()
            })
        });
        let lines = pool
            .transaction(|tx, r| {
                assert_ne!(other_lane, Some(tx.lane()), "the other transaction's lane");
                let (a, b) = (r.lines[0].lock(tx)?, r.lines[1].lock(tx)?);
                a.set(tx, [1; 8])?;
                let before = thread_stats();
                b.set(tx, [1; 8])?;
                let d = thread_stats().since(&before);
                assert_eq!(d.drains, 1);
                Ok::<_, ptm::Error>(d.lines_flushed)
            })
            .unwrap();
        cost.push(lines);
    }
    assert_eq!(
        cost[1], cost[0],
        "lines of the second drain: another lane's mark pending before, none"
    );
}

/// The commit flushes each line the transaction changed once, and every line of a run of
/// adjacent ones: two words logged in one line cost one data line; lines 0 and 1 (one run of
/// two) and line 5 cost three. Counted from the last store to the commit's end: the data lines
/// and the commit record's line.
#[test]
fn a_commit_flushes_a_shared_line_once_and_every_line_of_a_run() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let commit_lines = |f: &dyn Fn(&Transaction<'_>, &Root) -> ptm::Result<()>| {
        pool.sync().unwrap();
        let mid = pool
            .transaction(|tx, r| {
                f(tx, r)?;
                Ok::<_, ptm::Error>(thread_stats())
            })
            .unwrap();
        thread_stats().since(&mid).lines_flushed
    };
    let shared = commit_lines(&|tx, r| {
        let line = |p: *const u8| p as usize / 64;
        assert_eq!(
            line((&r.word as *const PCell<u64>).cast()),
            line((&r.big as *const PCell<PPtr<Big>>).cast())
        );
        r.word.set(tx, 3)?;
        r.big.set(tx, PPtr::null())
    });
    assert_eq!(shared, 2, "two words of one line: the line, the commit record");
    let run = commit_lines(&|tx, r| [0, 1, 5].iter().try_for_each(|&k| r.lines[k].set(tx, [4; 8])));
    assert_eq!(run, 4, "lines 0, 1 and 5: three lines, the commit record");
}
