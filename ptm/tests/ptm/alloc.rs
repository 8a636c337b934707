//! Guards the allocator: transactional alloc/free at no extra drain in the alloc-then-link
//! pattern, undone by abort and by crash recovery (no leak), frees effective only at commit,
//! invalid frees refused, large blocks, out of space, concurrency, and a model-based proptest
//! across reopen.

use crate::common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use ptm::{thread_stats, Error, PCell, PMutex, PPtr, Persistent, Pool};

#[derive(Persistent, Clone, Copy)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Node {
    value: u64,
    next: PPtr<Node>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    head: PCell<PPtr<Node>>,
    len: PCell<u64>,
    slots: [PCell<PPtr<u8>>; 64],
}

fn pool(dir: &tempfile::TempDir, size: u64) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, "alloc.pool"), size, &common::pmem()).unwrap()
}

fn push(pool: &Pool<Root>, value: u64) -> Result<PPtr<Node>, Error> {
    pool.transaction(|tx, r| {
        let n = tx.alloc(Node {
            value,
            next: r.head.get(tx),
        })?;
        // One batched snapshot after the allocation: its drain also covers the allocation.
        tx.snapshot(|b| {
            b.add(&r.head)?;
            b.add(&r.len)
        })?;
        r.head.set(tx, n)?;
        r.len.set(tx, r.len.get(tx) + 1)?;
        Ok(n)
    })
}

fn list(pool: &Pool<Root>) -> Vec<u64> {
    pool.transaction(|tx, r| {
        let mut out = vec![];
        let mut p = r.head.get(tx);
        while !p.is_null() {
            // SAFETY: list nodes are live until popped, and this single-threaded test changes
            // them only in other transactions.
            let n = unsafe { tx.deref(p)? };
            out.push(n.value);
            p = n.next;
        }
        Ok::<_, Error>(out)
    })
    .unwrap()
}

/// Every allocated block is a reachable list node and vice versa.
fn assert_no_leak(pool: &mut Pool<Root>) {
    let reachable: Vec<u64> = pool
        .transaction(|tx, r| {
            let mut out = vec![];
            let mut p = r.head.get(tx);
            while !p.is_null() {
                out.push(p.offset());
                // SAFETY: as in `list`.
                p = unsafe { tx.deref(p)? }.next;
            }
            Ok::<_, Error>(out)
        })
        .unwrap();
    let allocated = common::allocated_offsets(pool);
    let mut reachable_sorted = reachable.clone();
    reachable_sorted.sort();
    assert_eq!(
        allocated, reachable_sorted,
        "allocated blocks differ from reachable nodes"
    );
    pool.check_heap().unwrap();
}

#[test]
fn alloc_and_link_costs_two_drains() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    push(&pool, 0).unwrap(); // the first allocation also creates a slab
    for i in 1..20 {
        let before = thread_stats();
        push(&pool, i).unwrap();
        assert_eq!(thread_stats().since(&before).drains, 2, "push {i}");
    }
    assert_eq!(list(&pool), (0..20).rev().collect::<Vec<_>>());
}

#[test]
fn an_allocation_alone_costs_two_drains_and_one_after_a_snapshot_costs_three() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    pool.transaction(|tx, _| tx.alloc(1u64).map(|_| ())).unwrap();
    let before = thread_stats();
    pool.transaction(|tx, _| tx.alloc(2u64).map(|_| ())).unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
    let before = thread_stats();
    pool.transaction(|tx, r| {
        r.len.set(tx, 1)?; // drain 1
        tx.alloc(3u64)?; // logged after the last drain: commit drains it first
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 3);
}

#[test]
fn abort_returns_the_allocation() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    push(&pool, 1).unwrap();
    let used = pool.heap_stats().unwrap().used_bytes;
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        let n = tx.alloc(Node {
            value: 2,
            next: r.head.get(tx),
        })?;
        r.head.set(tx, n)?;
        let big = tx.alloc_bytes(3 << 20)?; // a run of chunks
        assert!(big > 0);
        Err(Error::InvalidOptions("abort"))
    });
    assert!(r.is_err());
    assert_eq!(pool.heap_stats().unwrap().used_bytes, used);
    assert_eq!(list(&pool), [1]);
    assert_no_leak(&mut pool);
}

#[test]
fn a_crash_mid_allocation_leaks_nothing() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    for i in 0..5 {
        push(&pool, i).unwrap();
    }
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, r| {
        for v in 100..110 {
            let n = tx.alloc(Node {
                value: v,
                next: r.head.get(tx),
            })?;
            r.head.set(tx, n)?;
        }
        tx.alloc_bytes(1 << 20)?;
        common::crash_image(&common::path(&dir, "alloc.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("crash"))
    });
    assert_no_leak(&mut pool);
    drop(pool);
    let mut recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    assert_eq!(list(&recovered), [4, 3, 2, 1, 0]);
    assert_no_leak(&mut recovered);
}

#[test]
fn a_committed_allocation_survives_a_crash() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    for i in 0..5 {
        push(&pool, i).unwrap();
    }
    let image = common::path(&dir, "image.pool");
    common::crash_image(&common::path(&dir, "alloc.pool"), &image);
    drop(pool);
    let mut recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(list(&recovered), [4, 3, 2, 1, 0]);
    assert_no_leak(&mut recovered);
}

#[test]
fn frees_take_effect_at_commit() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    // A second node keeps the slab in use (an emptied slab returns to the free chunks).
    let keep = push(&pool, 0).unwrap();
    let a = push(&pool, 1).unwrap();
    pool.transaction(|tx, r| {
        // SAFETY: the head node is live (pushed above) and only this thread uses the pool.
        let n = unsafe { tx.deref(r.head.get(tx))? }.next;
        r.head.set(tx, n)?;
        tx.free(a)?;
        // Not reusable before commit: a new block in the same transaction is elsewhere.
        let b = tx.alloc(7u64)?;
        assert_ne!(b.offset(), a.offset());
        tx.free(b)?; // allocated and freed in one transaction: never allocated
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(pool.allocated_blocks().unwrap(), [(keep.offset(), 64)]);
    // Reusable after commit.
    let c = push(&pool, 2).unwrap();
    assert_eq!(c.offset(), a.offset());
    // Aborted free: still allocated.
    let r: Result<(), Error> = pool.transaction(|tx, _| {
        tx.free(c)?;
        Err(Error::InvalidOptions("abort"))
    });
    assert!(r.is_err());
    assert_eq!(pool.allocated_blocks().unwrap().len(), 2);
}

#[test]
fn invalid_frees_are_refused() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    let a = push(&pool, 1).unwrap();
    let geo = pool.geometry();
    pool.transaction(|tx, _| {
        assert!(matches!(
            tx.free(PPtr::<u8>::from_parts(a.tag(), a.offset() + 8)),
            Err(Error::InvalidFree { .. })
        ));
        assert!(matches!(
            tx.free_bytes(geo.root_offset),
            Err(Error::InvalidFree { .. })
        ));
        assert!(matches!(
            tx.free_bytes(a.offset() + 64),
            Err(Error::InvalidFree {
                what: "not allocated",
                ..
            })
        ));
        assert!(matches!(
            tx.free(PPtr::<u8>::from_parts(a.tag() ^ 1, a.offset())),
            Err(Error::Core(_))
        ));
        tx.free(a)?;
        assert!(matches!(
            tx.free(a),
            Err(Error::InvalidFree {
                what: "freed twice",
                ..
            })
        ));
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn large_blocks_and_out_of_space() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 24 << 20);
    let free0 = pool.heap_stats().unwrap().free_chunks;
    let big = pool.transaction(|tx, _| tx.alloc_bytes(5 << 20)).unwrap();
    let s = pool.heap_stats().unwrap();
    let chunks = (5 << 20) / ptm::internals::heap::CHUNK;
    assert_eq!(s.run_chunks, chunks);
    assert_eq!(s.free_chunks, free0 - chunks);
    let e = pool.transaction(|tx, _| tx.alloc_bytes(64 << 20)).unwrap_err();
    assert!(matches!(e, Error::OutOfSpace { .. }), "{e:?}");
    pool.check_heap().unwrap();
    pool.transaction(|tx, _| tx.free_bytes(big)).unwrap();
    assert_eq!(pool.heap_stats().unwrap().free_chunks, free0);
    // Fill the heap with small blocks until it is full; the pool stays consistent.
    let mut n = 0;
    loop {
        match pool.transaction(|tx, _| tx.alloc_bytes(60_000)) {
            Ok(_) => n += 1,
            Err(Error::OutOfSpace { .. }) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(n > 10);
    // Chunks too few for another slab of 64 KiB blocks (4 chunks) may be left: smaller blocks
    // take them, until nothing fits.
    while pool.transaction(|tx, _| tx.alloc_bytes(64)).is_ok() {}
    pool.check_heap().unwrap();
    push(&pool, 1).unwrap_err();
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct SharedRoot {
    counts: [PMutex<PCell<u64>>; 2],
}

#[test]
fn two_threads_allocate_and_free_without_overlap() {
    let dir = common::shm_dir();
    let mut pool =
        Pool::<SharedRoot>::create(common::path(&dir, "mt.pool"), 64 << 20, &common::pmem()).unwrap();
    let blocks: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let mut mine = vec![];
                    for i in 0..300u64 {
                        let size = 64 + (i * 37 + t * 11) % 3000;
                        let off = pool.transaction(|tx, r| {
                            r.counts[t as usize].lock(tx)?.update(tx, |c| c + 1)?;
                            tx.alloc_bytes(size)
                        });
                        mine.push((off.unwrap(), size));
                        if i % 3 == 0 {
                            let (o, _) = mine.remove(0);
                            pool.transaction(|tx, _| tx.free_bytes(o)).unwrap();
                        }
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<(u64, u64)> = blocks.concat();
    all.sort();
    for w in all.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {w:?}");
    }
    assert_eq!(pool.allocated_blocks().unwrap().len(), all.len());
    pool.check_heap().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u8, u32),
    Free(u8),
    AbortAlloc(u32),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..64, 1u32..300_000).prop_map(|(s, n)| Op::Alloc(s, n)),
        3 => (0u8..64).prop_map(Op::Free),
        1 => (1u32..100_000).prop_map(Op::AbortAlloc),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random alloc/free/abort/reopen sequences against a model of which slots hold a block:
    /// live blocks never overlap, and the heap holds exactly the model's blocks.
    #[test]
    fn allocator_matches_a_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = common::shm_dir();
        let path = common::path(&dir, "model.pool");
        let mut pool = Pool::<Root>::create(&path, 48 << 20, &common::pmem()).unwrap();
        let mut model: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
        let tag = pool.region().header().pptr_tag;
        for op in ops {
            match op {
                Op::Alloc(slot, size) => {
                    let size = u64::from(size);
                    let r = pool.transaction(|tx, r| {
                        let old = r.slots[slot as usize].get(tx);
                        if !old.is_null() { tx.free(old)?; }
                        let off = tx.alloc_bytes(size)?;
                        r.slots[slot as usize].set(tx, PPtr::<u8>::from_parts(tag, off))?;
                        Ok::<_, Error>(off)
                    });
                    match r {
                        Ok(off) => { model.insert(slot, (off, size)); }
                        Err(Error::OutOfSpace { .. }) => {}
                        Err(e) => prop_assert!(false, "{e:?}"),
                    }
                }
                Op::Free(slot) => {
                    pool.transaction(|tx, r| {
                        let old = r.slots[slot as usize].get(tx);
                        if !old.is_null() { tx.free_bytes(old.offset())?; r.slots[slot as usize].set(tx, PPtr::null())?; }
                        Ok::<_, Error>(())
                    }).unwrap();
                    model.remove(&slot);
                }
                Op::AbortAlloc(size) => {
                    let r: Result<(), Error> = pool.transaction(|tx, _| { tx.alloc_bytes(u64::from(size))?; Err(Error::InvalidOptions("abort")) });
                    prop_assert!(r.is_err());
                }
                Op::Reopen => {
                    drop(pool);
                    pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
                }
            }
            let mut live: Vec<(u64, u64)> = model.values().copied().collect();
            live.sort();
            for w in live.windows(2) {
                prop_assert!(w[0].0 + w[0].1 <= w[1].0, "overlap {:?}", w);
            }
            let blocks = common::allocated_offsets(&mut pool);
            prop_assert_eq!(blocks, live.iter().map(|&(o, _)| o).collect::<Vec<_>>());
            pool.check_heap().unwrap();
        }
    }
}

#[test]
fn writing_into_a_fresh_block_needs_no_undo_record() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    push(&pool, 0).unwrap();
    let before = thread_stats();
    pool.transaction(|tx, r| {
        let p = tx.alloc(Node {
            value: 1,
            next: PPtr::null(),
        })?;
        // SAFETY: allocated just above in this transaction; nothing else can reach it.
        let node = unsafe { tx.deref(p)? };
        assert_eq!(node.value, 1);
        assert_eq!(tx.pptr::<Node>(p.offset()), p);
        assert_eq!(tx.pptr_tag(), p.tag());
        r.head.set(tx, p)
    })
    .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
}

/// Regression: a block allocated and freed by a committed transaction T1 is covered by T1's
/// data hash until T1's completion mark is durable. Reusing it before then (a later transaction
/// writes a fresh allocation before its first drain) made recovery roll back the committed T1
/// when the mark was lost in a crash.
#[test]
fn a_block_freed_in_its_allocating_transaction_is_not_reused_too_early() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    push(&pool, 1).unwrap();
    let geo = pool.geometry();
    let (x, lane) = pool
        .transaction(|tx, r| {
            let x = tx.alloc(Node {
                value: 0xAAAA,
                next: PPtr::null(),
            })?;
            // A drain between the allocation and the free: its records are ordered, so they
            // cannot be taken back, and the block's bytes stay in the data hash.
            r.len.set(tx, 41)?;
            tx.free(x)?;
            r.len.set(tx, 42)?;
            Ok::<_, Error>((x, tx.lane()))
        })
        .unwrap();
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, _| {
        // Before this transaction's first drain: must not get (and overwrite) block x.
        let y = tx.alloc(Node {
            value: 0xBBBB,
            next: PPtr::null(),
        })?;
        assert_ne!(y.offset(), x.offset(), "a quarantined block was handed out");
        common::crash_image(&common::path(&dir, "alloc.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("crash"))
    });
    drop(pool);
    // The crash lost T1's completion mark: recovery must keep T1 by its data hash.
    let completed_at = geo.lanes_offset + lane as u64 * geo.lane_size;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, completed_at).unwrap();
    let seq = u64::from_le_bytes(b);
    f.write_all_at(
        &seq.saturating_sub(u64::from(ptm::internals::layout::MAX_LANES))
            .to_le_bytes(),
        completed_at,
    )
    .unwrap();
    drop(f);
    let recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    let len = recovered
        .transaction(|tx, r| Ok::<_, Error>(r.len.get(tx)))
        .unwrap();
    assert_eq!(
        len,
        42,
        "the committed transaction was rolled back: {:?}",
        recovered.recovery_report()
    );
}

/// Allocates a block holding `v` and frees it in one transaction that orders the allocation's
/// records first (a store between them): the block is quarantined, not taken back. Returns it.
fn alloc_and_free_quarantined(pool: &Pool<Root>, v: u64) -> PPtr<u64> {
    pool.transaction(|tx, r| {
        let x = tx.alloc(v)?;
        r.len.set(tx, 1)?;
        tx.free(x)?;
        Ok::<_, Error>(x)
    })
    .unwrap()
}

#[test]
fn quarantined_blocks_become_reusable_after_a_drain() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    let x = alloc_and_free_quarantined(&pool, 5u64);
    pool.sync().unwrap(); // the completion mark is durable now
    let y = pool.transaction(|tx, _| tx.alloc(6u64)).unwrap();
    assert_eq!(y.offset(), x.offset());
    assert_eq!(pool.allocated_blocks().unwrap().len(), 1);
}

#[test]
fn alloc_into_publishes_the_block_in_one_step() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    let before = thread_stats();
    let p = pool
        .alloc_into(
            |r| &r.head,
            Node {
                value: 9,
                next: PPtr::null(),
            },
        )
        .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
    assert_eq!(list(&pool), [9]);
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, Error>(r.head.get(tx))).unwrap(),
        p
    );
    assert_no_leak(&mut pool);
    // A crash image taken right after: both the block and the pointer, never one alone.
    let image = common::path(&dir, "image.pool");
    common::crash_image(&common::path(&dir, "alloc.pool"), &image);
    drop(pool);
    let mut recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(list(&recovered), [9]);
    assert_no_leak(&mut recovered);
}

/// An allocation freed before any drain ordered its records is cancelled like a reservation:
/// its records are taken back, so the transaction logs nothing, drains nothing, and the block
/// is free at once (no quarantine); a crash image taken after it recovers to the same state.
#[test]
fn alloc_and_free_before_a_drain_is_cancelled() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    push(&pool, 1).unwrap(); // the slab exists
    let before = thread_stats();
    let x = pool
        .transaction(|tx, _| {
            let x = tx.alloc(Node {
                value: 7,
                next: PPtr::null(),
            })?;
            tx.free(x)?;
            Ok::<_, Error>(x)
        })
        .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 0);
    // Free at once: the next allocation gets the same block.
    let y = pool
        .transaction(|tx, _| {
            let y = tx.alloc(8u64)?;
            tx.free(y)?;
            let z = tx.alloc(9u64)?;
            tx.free(z)?;
            assert_eq!(y.offset(), z.offset());
            Ok::<_, Error>(y)
        })
        .unwrap();
    assert_eq!(x.offset(), y.offset());
    // With a snapshot after it, the cancelled allocation still costs nothing extra.
    let before = thread_stats();
    pool.transaction(|tx, r| {
        let x = tx.alloc(5u64)?;
        tx.free(x)?;
        r.len.set(tx, 77)
    })
    .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
    assert_no_leak(&mut pool);
    let image = common::path(&dir, "image.pool");
    common::crash_image(&common::path(&dir, "alloc.pool"), &image);
    drop(pool);
    let mut recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(list(&recovered), [1]);
    assert_eq!(
        recovered
            .transaction(|tx, r| Ok::<_, Error>(r.len.get(tx)))
            .unwrap(),
        77
    );
    assert_no_leak(&mut recovered);
}

/// On a heap with few free chunks and no slab of the class, an alloc + free in one transaction
/// makes no slab at all (the slab's making is taken back with the block): no drain, no chunk
/// taken, every time. With free chunks plentiful, the first such transaction keeps the slab it
/// made (empty, 2 drains), and every later one uses it: no drain, no further chunk.
#[test]
fn a_cancelled_allocation_makes_a_slab_only_when_chunks_are_plentiful() {
    let dir = common::shm_dir();
    for (size, kept) in [(8u64 << 20, false), (32 << 20, true)] {
        let mut pool = pool(&dir, size);
        let free = pool.heap_stats().unwrap().free_chunks;
        for i in 0..4 {
            let before = thread_stats();
            pool.transaction(|tx, _| {
                let o = tx.alloc_bytes(64)?;
                tx.free_bytes(o)
            })
            .unwrap();
            let drains = thread_stats().since(&before).drains;
            let st = pool.check_heap().unwrap();
            let first_keeps = kept && i == 0;
            assert_eq!(drains, if first_keeps { 2 } else { 0 }, "{size}: round {i}");
            let slabs = u64::from(kept);
            assert_eq!(
                (st.slab_chunks, st.free_chunks, st.used_bytes),
                (slabs, free - slabs, 0),
                "{size}: {st:?}"
            );
        }
        assert_no_leak(&mut pool);
        drop(pool);
        std::fs::remove_file(common::path(&dir, "alloc.pool")).unwrap();
    }
}

/// The empty slabs kept for their classes go back to the free chunks once free chunks are
/// scarce: after alloc + free of five classes on a heap with plentiful chunks, allocations of
/// whole chunks fill every chunk ordinary allocations may use, kept slabs included, in the
/// same process or after a reopen (which forgot which slabs were kept).
#[test]
fn kept_empty_slabs_go_back_when_chunks_run_short() {
    for reopen in [false, true] {
        let dir = common::shm_dir();
        let mut pool = pool(&dir, 32 << 20);
        for size in [64u64, 256, 1024, 4096, 16384] {
            pool.transaction(|tx, _| {
                let o = tx.alloc_bytes(size)?;
                tx.free_bytes(o)
            })
            .unwrap();
        }
        // One chunk for each class's slab, four for the 16 KiB one.
        assert_eq!(pool.check_heap().unwrap().slab_chunks, 8);
        if reopen {
            drop(pool);
            pool = Pool::<Root>::open(common::path(&dir, "alloc.pool"), &common::pmem()).unwrap();
        }
        fill_with_chunks(&mut pool);
    }
}

/// Allocates runs of two chunks (the smallest run: a block of one chunk is a slab block) until
/// none fits; checks every chunk but the metadata reserve went (but one, when their number is
/// odd).
fn fill_with_chunks(pool: &mut Pool<Root>) {
    let chunks = pool.heap_stats().unwrap().chunks;
    let mut runs = 0;
    loop {
        match pool.transaction(|tx, _| tx.alloc_bytes(2 * ptm::internals::heap::CHUNK)) {
            Ok(_) => runs += 1,
            Err(Error::OutOfSpace { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let st = pool.check_heap().unwrap();
    assert_eq!(st.slab_chunks, 0, "{st:?}");
    assert_eq!(
        runs,
        (chunks - ptm::internals::heap::metadata_reserve(chunks)) / 2,
        "{st:?}"
    );
}

/// A kept empty slab goes back on the drain the transaction takes anyway: the transaction that
/// makes free chunks scarce (a large block, then its link snapshotted) still costs 2 drains,
/// and the kept slab is a free chunk after its commit.
#[test]
fn returning_a_kept_slab_costs_no_extra_drain() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 32 << 20);
    pool.transaction(|tx, _| {
        let o = tx.alloc_bytes(64)?;
        tx.free_bytes(o)
    })
    .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(st.slab_chunks, 1, "{st:?}");
    // Leave 10 free chunks beyond the metadata reserve: scarce.
    let big = (st.free_chunks - ptm::internals::heap::metadata_reserve(st.chunks) - 10)
        * ptm::internals::heap::CHUNK;
    let before = thread_stats();
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(big)?;
        r.slots[0].set(tx, tx.pptr(off))
    })
    .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
    let st = pool.check_heap().unwrap();
    assert_eq!(st.slab_chunks, 0, "{st:?}");
}

/// A quarantined block keeps only its own bit out of allocation: the same bit of another bitmap
/// word of the slab is handed out as usual.
#[test]
fn a_quarantined_block_keeps_only_its_own_bitmap_bit_out_of_allocation() {
    let dir = common::shm_dir();
    let pool = pool(&dir, 16 << 20);
    // 70 blocks of one class in a row: the first bitmap word of their slab, and bits 0..6 of
    // the second.
    let blocks: Vec<PPtr<u64>> = (0..70u64)
        .map(|i| pool.transaction(|tx, _| tx.alloc(i)).unwrap())
        .collect();
    let size = blocks[1].offset() - blocks[0].offset();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(
            b.offset(),
            blocks[0].offset() + i as u64 * size,
            "block {i} not in a row"
        );
    }
    // Bit 5 of both words free and reusable.
    pool.transaction(|tx, _| {
        tx.free(blocks[5])?;
        tx.free(blocks[69])
    })
    .unwrap();
    pool.sync().unwrap();
    // Bit 5 of the first word allocated and freed by one transaction: quarantined until that
    // transaction's completion mark is durable.
    let x = alloc_and_free_quarantined(&pool, 7u64);
    assert_eq!(x.offset(), blocks[5].offset());
    let next = pool.transaction(|tx, _| tx.alloc(100u64)).unwrap();
    assert_eq!(
        next.offset(),
        blocks[69].offset(),
        "bit 5 of the second word is the first free block not quarantined"
    );
}
