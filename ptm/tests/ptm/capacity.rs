//! Guards heap capacity (issue 14): emptied slabs return to the free chunks at commit and free
//! chunks coalesce, crash-safely, so the heap holds the peak of the total live bytes rather than
//! the sum of each size class's peak.

use crate::common;

use ptm::internals::heap::{CHUNK, CLASSES};
use ptm::{Error, PCell, PPtr, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    slots: [PCell<PPtr<u8>>; 64],
}

fn pool(dir: &tempfile::TempDir, size: u64) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, "cap.pool"), size, &common::pmem()).unwrap()
}

/// Chunks ordinary allocations may use: all but the metadata reserve kept for the undo log of
/// removal-only transactions.
fn usable_chunks(pool: &mut Pool<Root>) -> u64 {
    let chunks = pool.heap_stats().unwrap().chunks;
    chunks - ptm::internals::heap::metadata_reserve(chunks)
}

fn alloc_into(pool: &Pool<Root>, slot: usize, size: u64) -> Result<u64, Error> {
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(size)?;
        r.slots[slot].set(tx, tx.pptr(off))?;
        Ok(off)
    })
}

fn free_slot(pool: &Pool<Root>, slot: usize) -> Result<(), Error> {
    pool.transaction(|tx, r| {
        tx.free(r.slots[slot].get(tx))?;
        r.slots[slot].set(tx, PPtr::null())
    })
}

/// Allocating and freeing one block of each growing size leaves nothing live, so a 16 KiB block
/// (and a run of the whole heap) fits afterwards. Before empty slabs went back, each class kept
/// its chunk, and the 8 MiB pool ran out after 15 classes.
#[test]
fn free_everything_then_a_16k_allocation_succeeds() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let chunks = pool.heap_stats().unwrap().chunks;
    let mut sizes: Vec<u64> = CLASSES.to_vec();
    sizes.extend([CHUNK, 3 * CHUNK, 5 * CHUNK]);
    for &size in &sizes {
        alloc_into(&pool, 0, size).unwrap_or_else(|e| panic!("alloc of {size} bytes: {e}"));
        free_slot(&pool, 0).unwrap();
    }
    pool.sync().unwrap();
    alloc_into(&pool, 0, 16 << 10).unwrap();
    free_slot(&pool, 0).unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(st.used_bytes, 0);
    assert_eq!(st.free_chunks, chunks, "{st:?}");
    assert_eq!(
        st.largest_free_run, chunks,
        "free chunks did not coalesce: {st:?}"
    );
    // The whole heap (but the metadata reserve) as one block.
    let usable = usable_chunks(&mut pool);
    alloc_into(&pool, 1, usable * CHUNK).unwrap();
}

/// Filling the heap with small blocks of several classes, then freeing them all, gives back one
/// run of every chunk.
#[test]
fn freed_slabs_coalesce_into_one_run() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let chunks = pool.heap_stats().unwrap().chunks;
    // Interleave classes so their slabs alternate across the chunks.
    let sizes = [64u64, 4096, 512, 24576];
    let mut live: Vec<u64> = Vec::new();
    let mut k = 0;
    loop {
        let size = sizes[k % sizes.len()];
        k += 1;
        match pool.transaction(|tx, _| tx.alloc_bytes(size)) {
            Ok(off) => live.push(off),
            Err(Error::OutOfSpace { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let st = pool.heap_stats().unwrap();
    assert_eq!(
        st.free_chunks,
        ptm::internals::heap::metadata_reserve(chunks),
        "{st:?}"
    );
    // Free in a scattered order, a few blocks per transaction.
    live.sort_by_key(|&o| o.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for part in live.chunks(37) {
        pool.transaction(|tx, _| part.iter().try_for_each(|&o| tx.free_bytes(o)))
            .unwrap();
    }
    pool.sync().unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(
        (st.free_chunks, st.largest_free_run, st.slab_chunks),
        (chunks, chunks, 0)
    );
    let usable = usable_chunks(&mut pool);
    let big = pool.transaction(|tx, _| tx.alloc_bytes(usable * CHUNK)).unwrap();
    assert!(big > 0);
}

/// A slab emptied by a transaction that aborts, or crashes before its commit, stays a slab
/// holding its block; one emptied by a committed transaction is a free chunk after a crash too.
#[test]
fn returning_a_slab_is_undone_by_abort_and_kept_by_a_crash_after_commit() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let off = alloc_into(&pool, 0, 100).unwrap();
    let before = pool.heap_stats().unwrap();
    assert_eq!(before.slab_chunks, 1);
    // Abort.
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        tx.free(r.slots[0].get(tx))?;
        r.slots[0].set(tx, PPtr::null())?;
        Err(Error::InvalidOptions("abort"))
    });
    assert!(r.is_err());
    assert_eq!(pool.heap_stats().unwrap(), before);
    assert_eq!(pool.allocated_blocks().unwrap(), [(off, 128)]);
    // A crash image taken inside the freeing transaction, after its free was logged.
    let image = common::path(&dir, "mid.pool");
    let _ = pool.transaction(|tx, r| {
        tx.free(r.slots[0].get(tx))?;
        r.slots[0].set(tx, PPtr::null())?;
        common::crash_image(&common::path(&dir, "cap.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("crash"))
    });
    // Commit, then a crash image.
    free_slot(&pool, 0).unwrap();
    let after = pool.check_heap().unwrap();
    assert_eq!((after.slab_chunks, after.free_chunks), (0, after.chunks));
    let committed = common::path(&dir, "committed.pool");
    common::crash_image(&common::path(&dir, "cap.pool"), &committed);
    drop(pool);
    let mut mid = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(mid.check_heap().unwrap(), before);
    assert_eq!(mid.allocated_blocks().unwrap(), [(off, 128)]);
    drop(mid); // two copies of one pool cannot be open at once (same pointer tag)
    let mut done = Pool::<Root>::open(&committed, &common::pmem()).unwrap();
    assert_eq!(done.check_heap().unwrap(), after);
    assert!(done.allocated_blocks().unwrap().is_empty());
}

/// On a full heap, a slab returned by one transaction is what the next one's large block gets
/// (after the first one's completion mark is made durable, one ordering point), and a crash in
/// the second leaves the first committed and the heap consistent.
#[test]
fn a_returned_slab_is_reused_by_the_next_large_block() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let usable = usable_chunks(&mut pool);
    // An 8 KiB block: its slab spans 2 chunks, as many as the smallest large block.
    let small = alloc_into(&pool, 0, 8192).unwrap();
    alloc_into(&pool, 1, (usable - 2) * CHUNK).unwrap();
    let reserve = pool.heap_stats().unwrap().free_chunks;
    free_slot(&pool, 0).unwrap();
    let image = common::path(&dir, "image.pool");
    let big = pool
        .transaction(|tx, r| {
            let off = tx.alloc_bytes(2 * CHUNK)?;
            let p = tx.pptr::<[PCell<u64>; (2 * CHUNK / 8) as usize]>(off);
            // SAFETY: a fresh block of 2 × CHUNK bytes owned by this transaction.
            let block = unsafe { tx.deref(p)? };
            // Fresh memory: the stores log nothing.
            block.iter().try_for_each(|c| c.set(tx, u64::MAX))?;
            r.slots[2].set(tx, tx.pptr(off))?;
            common::crash_image(&common::path(&dir, "cap.pool"), &image);
            Ok::<_, Error>(off)
        })
        .unwrap();
    assert!(
        big < small && small < big + 2 * CHUNK,
        "the large block is not the returned slab"
    );
    drop(pool);
    let mut recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    let st = recovered.check_heap().unwrap();
    assert_eq!((st.free_chunks, st.slab_chunks), (reserve + 2, 0), "{st:?}");
    let slots = recovered
        .transaction(|tx, r| Ok::<_, Error>((r.slots[0].get(tx).is_null(), r.slots[2].get(tx).is_null())))
        .unwrap();
    assert_eq!(slots, (true, true));
}

/// `OutOfSpace` names the request, the free bytes and the largest free run, and tells a full
/// pool from a fragmented one.
#[test]
fn out_of_space_tells_full_from_fragmented() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    // Full: one large block takes every chunk (but the reserve).
    let usable = usable_chunks(&mut pool);
    alloc_into(&pool, 0, usable * CHUNK).unwrap();
    match alloc_into(&pool, 1, 64) {
        Err(Error::OutOfSpace {
            requested: 64,
            free_bytes: 0,
            largest_free_run: 0,
            fragmented: false,
        }) => {}
        other => panic!("{other:?}"),
    }
    free_slot(&pool, 0).unwrap();
    // Fragmented: 1 KiB blocks fill the heap, every other one is freed.
    let mut live = Vec::new();
    while let Ok(off) = pool.transaction(|tx, _| tx.alloc_bytes(1024)) {
        live.push(off);
    }
    let half: Vec<u64> = live.iter().copied().step_by(2).collect();
    pool.transaction(|tx, _| half.iter().try_for_each(|&o| tx.free_bytes(o)))
        .unwrap();
    pool.sync().unwrap();
    let st = pool.heap_stats().unwrap();
    let reserve = st.free_chunks;
    assert!(
        reserve <= ptm::internals::heap::metadata_reserve(st.chunks),
        "{st:?}"
    );
    let err = alloc_into(&pool, 1, 40 << 10).unwrap_err();
    match err {
        Error::OutOfSpace {
            requested,
            free_bytes,
            largest_free_run: 0,
            fragmented: true,
        } => {
            assert_eq!(requested, 49152);
            assert_eq!(free_bytes, st.free_bytes - reserve * CHUNK);
        }
        ref other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("the heap is fragmented"), "{text}");
    // The freed 1 KiB blocks still serve their class.
    alloc_into(&pool, 1, 1000).unwrap();
}

/// A damaged chunk table or slab bitmap is `CorruptHeap` for every heap operation, never a
/// panic.
#[test]
fn a_damaged_chunk_table_is_corrupt_heap() {
    use std::os::unix::fs::FileExt;
    let dir = common::shm_dir();
    let pool = pool(&dir, 8 << 20);
    let off = alloc_into(&pool, 0, 100).unwrap();
    let table = pool.geometry().heap_offset;
    drop(pool);
    let path = common::path(&dir, "cap.pool");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let damage = |at: u64, v: u64| f.write_all_at(&v.to_le_bytes(), at).unwrap();
    for (what, value) in [
        ("slab of class 200", (1u64 << 56) | 200),
        ("unknown kind", 9u64 << 56),
        ("continuation without a run", (3u64 << 56) | 1),
        ("run past the end", (2u64 << 56) | 100_000),
    ] {
        damage(table, value);
        let mut p = Pool::<Root>::open(&path, &common::pmem()).unwrap();
        assert!(matches!(p.heap_stats(), Err(Error::CorruptHeap(_))), "{what}");
        assert!(matches!(p.check_heap(), Err(Error::CorruptHeap(_))), "{what}");
        let a = p.transaction(|tx, _| tx.alloc_bytes(64));
        assert!(matches!(a, Err(Error::CorruptHeap(_))), "{what}: {a:?}");
        let fr = p.transaction(|tx, _| tx.free_bytes(off));
        assert!(
            matches!(fr, Err(Error::CorruptHeap(_) | Error::InvalidFree { .. })),
            "{what}: {fr:?}"
        );
        drop(p);
    }
    // A bitmap bit beyond the slab's last block.
    let g = ptm::internals::heap::slab_geom(ptm::internals::heap::class_of(100).unwrap());
    damage(
        table,
        (1u64 << 56) | ptm::internals::heap::class_of(100).unwrap() as u64,
    );
    let layout = {
        let p = Pool::<Root>::open(&path, &common::pmem()).unwrap();
        let geo = p.geometry();
        geo.heap_layout()
    };
    damage(layout.chunk_off(0) + (g.words - 1) * 8, u64::MAX);
    drop(f);
    let mut p = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert!(matches!(p.check_heap(), Err(Error::CorruptHeap(_))));
    // Allocation and free stay within the slab's blocks.
    let a = p.transaction(|tx, _| tx.alloc_bytes(100)).unwrap();
    assert!(a < layout.chunk_off(1));
    p.transaction(|tx, _| tx.free_bytes(a)).unwrap();
}

/// Returning a slab rides on the freeing transaction's drains: freeing the last block of a slab
/// costs the same 2 drains as freeing any block.
#[test]
fn returning_a_slab_costs_no_extra_drain() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    alloc_into(&pool, 0, 64).unwrap();
    alloc_into(&pool, 1, 64).unwrap();
    for slot in [0, 1] {
        let before = ptm::thread_stats();
        pool.transaction(|tx, r| {
            let p = r.slots[slot].get(tx);
            tx.snapshot(|b| {
                b.add(&r.slots[slot])?;
                tx.free(p)
            })?;
            r.slots[slot].set(tx, PPtr::null())
        })
        .unwrap();
        assert_eq!(ptm::thread_stats().since(&before).drains, 2, "slot {slot}");
    }
    assert_eq!(pool.heap_stats().unwrap().slab_chunks, 0);
}

#[derive(Persistent, Clone, Copy)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Node {
    value: u64,
    next: PPtr<Node>,
}

/// Fills the heap: a list of `nodes` 64-byte nodes from slot 0, then large and small blocks from
/// the other slots until nothing more fits.
fn fill(pool: &Pool<Root>, nodes: u64) {
    for batch in 0..nodes.div_ceil(500) {
        pool.transaction(|tx, r| {
            for v in batch * 500..((batch + 1) * 500).min(nodes) {
                let n = tx.alloc(Node {
                    value: v,
                    next: r.slots[0].get(tx).cast(),
                })?;
                r.slots[0].set(tx, n.cast())?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    let mut slot = 1;
    for size in [CHUNK, 65536, 4096, 64] {
        while slot < 64 && alloc_into(pool, slot, size).is_ok() {
            slot += 1;
        }
    }
    while pool.transaction(|tx, _| tx.alloc_bytes(64)).is_ok() {}
}

/// A transaction freeing 10,000 objects succeeds on a pool where no allocation fits any more,
/// with lanes so small that its undo log must overflow into heap extents.
#[test]
fn a_removal_only_transaction_frees_10k_objects_on_a_full_pool() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(4).lane_size(8192);
    let mut pool = Pool::<Root>::create(common::path(&dir, "full.pool"), 8 << 20, &opts).unwrap();
    fill(&pool, 10_000);
    assert!(matches!(
        pool.transaction(|tx, _| tx.alloc_bytes(64)),
        Err(Error::OutOfSpace { .. })
    ));
    let freed = pool
        .transaction(|tx, r| {
            let mut p: PPtr<Node> = r.slots[0].get(tx).cast();
            let mut n = 0u64;
            while !p.is_null() {
                // SAFETY: list nodes are live until this transaction commits its frees.
                let next = unsafe { tx.deref(p)? }.next;
                tx.free(p)?;
                p = next;
                n += 1;
            }
            r.slots[0].set(tx, PPtr::null())?;
            Ok::<_, Error>(n)
        })
        .unwrap();
    assert_eq!(freed, 10_000);
    pool.check_heap().unwrap();
    // And the other blocks too, in one transaction.
    pool.transaction(|tx, r| {
        for s in &r.slots[1..] {
            let p = s.get(tx);
            if !p.is_null() {
                tx.free(p)?;
                s.set(tx, PPtr::null())?;
            }
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `PoolOptions::reserve` keeps room that ordinary allocations cannot take and a transaction
/// calling `use_reserve` can.
#[test]
fn the_application_reserve_is_for_transactions_that_ask() {
    let dir = common::shm_dir();
    let opts = common::pmem().reserve(3 * CHUNK);
    let pool = Pool::<Root>::create(common::path(&dir, "res.pool"), 8 << 20, &opts).unwrap();
    while pool.transaction(|tx, _| tx.alloc_bytes(CHUNK)).is_ok() {}
    let err = pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfSpace {
                fragmented: false,
                ..
            }
        ),
        "{err}"
    );
    pool.transaction(|tx, _| {
        tx.use_reserve();
        tx.alloc_bytes(3 * CHUNK)
    })
    .unwrap();
    assert!(pool
        .transaction(|tx, _| {
            tx.use_reserve();
            tx.alloc_bytes(64)
        })
        .is_err());
}

/// Right after a reopen the volatile index is not built yet: a first transaction that only
/// frees (the last block of a slab, a run) must not leave those chunks twice in the index, so
/// later allocations never get one chunk twice.
#[test]
fn frees_right_after_reopen_hand_out_each_chunk_once() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "cap.pool");
    let pool = pool(&dir, 8 << 20);
    alloc_into(&pool, 0, 64).unwrap();
    alloc_into(&pool, 1, 2 * CHUNK).unwrap();
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    free_slot(&pool, 0).unwrap();
    free_slot(&pool, 1).unwrap();
    // Every chunk, in one transaction: a block of each class whose slab is one chunk (one
    // slab each), then runs of two chunks.
    let usable = usable_chunks(&mut pool);
    let one_chunk: Vec<u64> = (0..CLASSES.len())
        .filter(|&c| ptm::internals::heap::slab_geom(c).chunks == 1)
        .map(|c| CLASSES[c])
        .collect();
    let runs = (usable - one_chunk.len() as u64) / 2;
    let (slab_blocks, run_blocks) = pool
        .transaction(|tx, _| {
            let slab_blocks = one_chunk
                .iter()
                .map(|&size| tx.alloc_bytes(size))
                .collect::<Result<Vec<u64>, Error>>()?;
            let run_blocks = (0..runs)
                .map(|_| tx.alloc_bytes(2 * CHUNK))
                .collect::<Result<Vec<u64>, Error>>()?;
            Ok::<_, Error>((slab_blocks, run_blocks))
        })
        .unwrap();
    let mut chunks: Vec<u64> = slab_blocks.iter().map(|o| o / CHUNK).collect();
    chunks.extend(run_blocks.iter().flat_map(|o| [o / CHUNK, o / CHUNK + 1]));
    let handed_out = chunks.len();
    chunks.sort_unstable();
    chunks.dedup();
    assert_eq!(chunks.len(), handed_out, "a chunk was handed out twice");
    pool.check_heap().unwrap();
}

/// On a heap with few free chunks, a class whose slabs are full (or that has none) takes a
/// block of a larger class, at most twice its size, from a slab with room, rather than a whole
/// chunk; with free chunks plentiful it gets a slab of its own. The block is freed through the
/// slab it came from either way.
#[test]
fn a_small_heap_borrows_a_block_of_a_class_at_most_twice_the_size() {
    let class = |size: u64| CLASSES.iter().position(|&c| c == size).unwrap();
    for (size, borrowed) in [(8u64 << 20, true), (32 << 20, false)] {
        let dir = common::shm_dir();
        let mut pool = pool(&dir, size);
        alloc_into(&pool, 0, 3072).unwrap();
        alloc_into(&pool, 1, 1536).unwrap(); // twice: borrowed from the 3072 slab
        alloc_into(&pool, 2, 1000).unwrap(); // 1024: the 3072 slab is three times larger
        let st = pool.check_heap().unwrap();
        let (c1536, c3072, c1024) = (class(1536), class(3072), class(1024));
        if borrowed {
            assert_eq!(
                (st.per_class[c3072], st.per_class[c1536], st.slab_chunks),
                (2, 0, 2),
                "{st:?}"
            );
        } else {
            assert_eq!(
                (st.per_class[c3072], st.per_class[c1536], st.slab_chunks),
                (1, 1, 3),
                "{st:?}"
            );
        }
        assert_eq!(st.per_class[c1024], 1, "{st:?}");
        for slot in 0..3 {
            free_slot(&pool, slot).unwrap();
        }
        pool.sync().unwrap();
        let st = pool.check_heap().unwrap();
        assert_eq!(st.used_bytes, 0, "{st:?}");
        assert!(pool.allocated_blocks().unwrap().is_empty());
    }
}

/// Allocation records wait for the next drain, but not past what the log can hold: on a full
/// heap (no chunk left for a log extent) with a small lane, a transaction allocating small
/// blocks gets `OutOfSpace` from the allocation that the log cannot record, long before the
/// slab is full, and nothing leaks.
#[test]
fn allocations_the_log_cannot_record_fail_at_the_allocation() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2).lane_size(8192);
    let mut pool = Pool::<Root>::create(common::path(&dir, "small-lane.pool"), 8 << 20, &opts).unwrap();
    alloc_into(&pool, 0, 64).unwrap();
    let usable = usable_chunks(&mut pool);
    alloc_into(&pool, 1, (usable - 1) * CHUNK).unwrap();
    let before = pool.allocated_blocks().unwrap();
    let mut made = 0u64;
    let r: Result<(), Error> = pool.transaction(|tx, _| loop {
        tx.alloc_bytes(64)?;
        made += 1;
    });
    assert!(matches!(r, Err(Error::OutOfSpace { .. })), "{r:?}");
    let slab_blocks = ptm::internals::heap::slab_geom(0).blocks;
    assert!(
        made < slab_blocks / 4,
        "{made} allocations before the log ran out"
    );
    pool.check_heap().unwrap();
    assert_eq!(pool.allocated_blocks().unwrap(), before);
}

/// `OutOfSpace` counts the free blocks of every bitmap word of a slab (a 64-byte class's slab
/// has 16 words), and neither the blocks this transaction allocated nor those it freed (free
/// only once it commits).
#[test]
fn out_of_space_counts_the_free_blocks_of_every_bitmap_word() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    // 100 blocks of 64 bytes: one slab, its first bitmap word full, the second partly.
    let blocks = pool
        .transaction(|tx, _| {
            (0..100)
                .map(|_| tx.alloc_bytes(64))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    pool.sync().unwrap();
    let st = pool.heap_stats().unwrap();
    let keep = ptm::internals::heap::metadata_reserve(st.chunks);
    let expected = st.free_bytes - keep * CHUNK;
    let huge = 2 * st.chunks * CHUNK;
    let (before, during) = pool
        .transaction(|tx, _| {
            let before = tx.alloc_bytes(huge).unwrap_err();
            // 30 more blocks and 10 of the first 100 freed, in this transaction.
            for _ in 0..30 {
                tx.alloc_bytes(64)?;
            }
            for &b in &blocks[..10] {
                tx.free_bytes(b)?;
            }
            Ok::<_, Error>((before, tx.alloc_bytes(huge).unwrap_err()))
        })
        .unwrap();
    for (err, free) in [(before, expected), (during, expected - 30 * 64)] {
        match err {
            Error::OutOfSpace {
                requested,
                free_bytes,
                fragmented: false,
                ..
            } => {
                assert_eq!(requested, huge);
                assert_eq!(free_bytes, free, "{st:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
