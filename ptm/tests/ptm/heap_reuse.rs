//! Guards that the allocator finds the room it has: a slab lent to a smaller class on a full
//! heap stays available for the next small allocation, checked against a model of the live
//! blocks (no overlap, exactly the heap's allocated blocks).

use crate::common;

use ptm::internals::heap::{class_of, metadata_reserve, slab_geom, CHUNK};
use ptm::{Error, PCell, PPtr, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    slots: [PCell<PPtr<u8>>; 64],
}

fn pool(dir: &tempfile::TempDir, size: u64) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, "reuse.pool"), size, &common::pmem()).unwrap()
}

fn alloc_into(pool: &Pool<Root>, slot: usize, size: u64) -> Result<u64, Error> {
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(size)?;
        r.slots[slot].set(tx, tx.pptr(off))?;
        Ok(off)
    })
}

/// Live blocks as `(offset, size)`, sorted: none may overlap, and the heap's allocated blocks
/// must start exactly at their offsets.
fn assert_matches_model(pool: &mut Pool<Root>, live: &[(u64, u64)]) {
    let mut live = live.to_vec();
    live.sort_unstable();
    for w in live.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {w:?}");
    }
    let heap = common::allocated_offsets(pool);
    assert_eq!(
        heap,
        live.iter().map(|&(o, _)| o).collect::<Vec<_>>(),
        "allocated blocks"
    );
    pool.check_heap().unwrap();
}

/// On a heap with no free chunk beyond the reserve, 64-byte allocations borrow blocks of a
/// slab of the next class (128 bytes, at most twice the size), one transaction each: the slab
/// lent once must be found again by the next allocation, until it is full, rather than
/// `OutOfSpace` while it has room.
#[test]
fn a_slab_lent_to_a_smaller_class_on_a_full_heap_is_found_again() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let lender = alloc_into(&pool, 0, 128).unwrap();
    let chunks = pool.heap_stats().unwrap().chunks;
    let usable = chunks - metadata_reserve(chunks);
    // The lender's slab took one chunk: a run of all the others leaves only the reserve.
    let run = alloc_into(&pool, 1, (usable - 1) * CHUNK).unwrap();
    assert_eq!(
        pool.heap_stats().unwrap().free_chunks,
        chunks - usable,
        "only the reserve is free"
    );
    let class_128 = class_of(128).unwrap();
    let mut live = vec![(lender, 128), (run, (usable - 1) * CHUNK)];
    for slot in 2..40 {
        let off = alloc_into(&pool, slot, 64)
            .unwrap_or_else(|e| panic!("allocation {} of 64 bytes: {e:?}", slot - 1));
        // Borrowed from the lender's slab: the same chunk.
        assert_eq!(
            off / CHUNK,
            lender / CHUNK,
            "block {off:#x} not in the 128-byte slab"
        );
        live.push((off, 128));
    }
    let st = pool.check_heap().unwrap();
    assert_eq!(st.per_class[class_128], 39, "{st:?}");
    assert_matches_model(&mut pool, &live);
}

/// On a full heap (no chunk for a log extent) with a small lane, a transaction allocating
/// small blocks gets `OutOfSpace` from the allocation the log cannot record. The caller may
/// take that error and commit what it has: the commit succeeds, and exactly the blocks handed
/// out before the error are allocated.
#[test]
fn a_transaction_that_goes_on_after_out_of_space_commits_its_earlier_allocations() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2).lane_size(8192);
    let mut pool = Pool::<Root>::create(common::path(&dir, "small-lane.pool"), 8 << 20, &opts).unwrap();
    let first = alloc_into(&pool, 0, 64).unwrap();
    let chunks = pool.heap_stats().unwrap().chunks;
    let usable = chunks - metadata_reserve(chunks);
    let run = alloc_into(&pool, 1, (usable - 1) * CHUNK).unwrap();
    let made: Vec<u64> = pool
        .transaction(|tx, _| {
            let mut made = Vec::new();
            loop {
                match tx.alloc_bytes(64) {
                    Ok(off) => made.push(off),
                    Err(Error::OutOfSpace { .. }) => return Ok::<_, Error>(made),
                    Err(e) => return Err(e),
                }
            }
        })
        .unwrap_or_else(|e| panic!("commit after OutOfSpace: {e:?}"));
    assert!(!made.is_empty());
    let mut live = vec![(first, 64), (run, (usable - 1) * CHUNK)];
    live.extend(made.iter().map(|&o| (o, 64)));
    assert_matches_model(&mut pool, &live);
}

/// A transaction allocates blocks that share a bitmap word, then frees some of them before any
/// drain (each free cancels its allocation): the blocks it keeps are allocated after the commit,
/// exactly those, and a later allocation never overlaps them.
#[test]
fn cancelling_one_allocation_keeps_the_others_in_its_bitmap_word() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 16 << 20);
    let base = alloc_into(&pool, 0, 64).unwrap();
    let kept: Vec<u64> = pool
        .transaction(|tx, r| {
            let blocks: Vec<u64> = (0..6).map(|_| tx.alloc_bytes(64)).collect::<Result<_, _>>()?;
            for &b in &blocks[3..] {
                tx.free_bytes(b)?;
            }
            for (k, &b) in blocks[..3].iter().enumerate() {
                r.slots[1 + k].set(tx, tx.pptr(b))?;
            }
            Ok::<_, Error>(blocks[..3].to_vec())
        })
        .unwrap();
    let mut live = vec![(base, 64)];
    live.extend(kept.iter().map(|&o| (o, 64)));
    assert_matches_model(&mut pool, &live);
    for slot in 4..20 {
        live.push((alloc_into(&pool, slot, 64).unwrap(), 64));
    }
    assert_matches_model(&mut pool, &live);
}

/// Large blocks are cut from the shortest free run that holds them: with a long free run at
/// the heap's start and a one-chunk run at its end, a three-chunk block comes from the long
/// run, inside the heap and overlapping nothing; a block larger than both is `OutOfSpace`
/// naming the longest free run.
#[test]
fn a_large_block_never_comes_from_a_free_run_too_short_for_it() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let n = pool.heap_stats().unwrap().chunks;
    let big = n / 2 + 1;
    let head = alloc_into(&pool, 0, big * CHUNK).unwrap();
    let separator = alloc_into(&pool, 1, 64).unwrap();
    pool.transaction(|tx, r| {
        tx.free(r.slots[0].get(tx))?;
        r.slots[0].set(tx, PPtr::null())
    })
    .unwrap();
    // The rest after the separator, but its last chunk.
    let rest = n - big - 1;
    let tail = alloc_into(&pool, 2, (rest - 1) * CHUNK).unwrap();
    let st = pool.heap_stats().unwrap();
    assert_eq!(
        (st.free_runs, st.largest_free_run, st.free_chunks),
        (2, big, big + 1),
        "{st:?}"
    );
    // Too large for any free run: `OutOfSpace` names the longest one the request could use
    // (the reserve not counted).
    let keep = metadata_reserve(n);
    let e = alloc_into(&pool, 3, (big + 1) * CHUNK).unwrap_err();
    let usable_run = big.min(big + 1 - keep);
    assert!(
        matches!(e, Error::OutOfSpace { largest_free_run, .. } if largest_free_run == usable_run * CHUNK),
        "{e:?}: the longest usable free run has {usable_run} chunks"
    );
    let three = alloc_into(&pool, 3, 3 * CHUNK).unwrap();
    assert_eq!(three, head, "best fit: the long run at the start");
    let live = [(separator, 64), (tail, (rest - 1) * CHUNK), (three, 3 * CHUNK)];
    assert_matches_model(&mut pool, &live);
}

/// Large blocks are cut best-fit: from the shortest free run that holds them, the lowest one
/// on a tie, so long runs stay whole for larger blocks. Free runs of 5, 3, 4 and 4 chunks
/// (kept apart by one-chunk slabs) and the long rest of the heap: a three-chunk block takes
/// the 3-chunk run, the next one the first 4-chunk run.
#[test]
fn large_blocks_come_from_the_shortest_free_run_that_holds_them() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 32 << 20);
    let mut runs = Vec::new();
    for (k, (chunks, separator)) in [(5u64, 64u64), (3, 128), (4, 192), (4, 256)]
        .into_iter()
        .enumerate()
    {
        runs.push(alloc_into(&pool, 2 * k, chunks * CHUNK).unwrap());
        // A block of a class without a slab yet: a new one-chunk slab after the run.
        alloc_into(&pool, 2 * k + 1, separator).unwrap();
    }
    for k in 0..4 {
        pool.transaction(|tx, r| {
            tx.free(r.slots[2 * k].get(tx))?;
            r.slots[2 * k].set(tx, PPtr::null())
        })
        .unwrap();
    }
    assert_eq!(pool.heap_stats().unwrap().free_runs, 5);
    let first = alloc_into(&pool, 20, 3 * CHUNK).unwrap();
    assert_eq!(
        first, runs[1],
        "the 3-chunk run, not the 5-chunk one or the rest of the heap"
    );
    let second = alloc_into(&pool, 21, 3 * CHUNK).unwrap();
    assert_eq!(second, runs[2], "the lower of the two 4-chunk runs");
    pool.check_heap().unwrap();
}

/// One transaction allocates a small block and two chunk runs, then frees one of its own runs
/// and an older run: after the commit exactly the small block, the run it kept and the blocks
/// from before are allocated (the freed runs' descriptors, and only theirs, are dropped).
#[test]
fn freeing_runs_in_the_transaction_that_allocated_runs_keeps_exactly_the_others() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 32 << 20);
    let early = alloc_into(&pool, 0, 3 * CHUNK).unwrap();
    let old = alloc_into(&pool, 1, 2 * CHUNK).unwrap();
    let (small, freed_new, kept) = pool
        .transaction(|tx, r| {
            let small = tx.alloc_bytes(200)?;
            let freed_new = tx.alloc_bytes(2 * CHUNK)?;
            let kept = tx.alloc_bytes(3 * CHUNK)?;
            tx.free(r.slots[1].get(tx))?;
            r.slots[1].set(tx, PPtr::null())?;
            tx.free_bytes(freed_new)?;
            Ok::<_, Error>((small, freed_new, kept))
        })
        .unwrap();
    let live = [(early, 3 * CHUNK), (small, 200), (kept, 3 * CHUNK)];
    assert_matches_model(&mut pool, &live);
    // The two freed runs are free chunks again: a block of their size fits in each.
    let again = [
        alloc_into(&pool, 2, 2 * CHUNK).unwrap(),
        alloc_into(&pool, 3, 2 * CHUNK).unwrap(),
    ];
    let mut expected = [old, freed_new];
    expected.sort_unstable();
    let mut got = again;
    got.sort_unstable();
    assert_eq!(got, expected, "the freed runs are reused (best fit)");
}

/// Freeing two older runs in one transaction frees both; freeing one of them again in that
/// transaction is `InvalidFree` ("freed twice"), and the commit frees each once.
#[test]
fn two_runs_freed_in_one_transaction_are_each_freed_once() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 32 << 20);
    let a = alloc_into(&pool, 0, 2 * CHUNK).unwrap();
    let b = alloc_into(&pool, 1, 3 * CHUNK).unwrap();
    let keep = alloc_into(&pool, 2, 2 * CHUNK).unwrap();
    pool.transaction(|tx, r| {
        tx.free_bytes(a)?;
        tx.free_bytes(b)?;
        let again = tx.free_bytes(a);
        assert!(
            matches!(
                again,
                Err(Error::InvalidFree {
                    what: "freed twice",
                    ..
                })
            ),
            "{again:?}"
        );
        r.slots[0].set(tx, PPtr::null())?;
        r.slots[1].set(tx, PPtr::null())
    })
    .unwrap();
    assert_matches_model(&mut pool, &[(keep, 2 * CHUNK)]);
}

/// A slab whose first bitmap word empties while blocks of its second word are live stays a
/// slab: those blocks stay allocated (the slab is empty only when every word is).
#[test]
fn a_slab_with_live_blocks_past_its_first_bitmap_word_is_not_returned() {
    let dir = common::shm_dir();
    // Few free chunks (fewer than the scarce bound): an emptied slab goes back at once
    // instead of being kept for its class.
    let mut pool = pool(&dir, 8 << 20);
    // A zeroed run before the slab, so whatever lies just before the slab's bitmap is zero.
    let run = alloc_into(&pool, 0, 2 * CHUNK).unwrap();
    let blocks = pool
        .transaction(|tx, _| {
            (0..70)
                .map(|_| tx.alloc_bytes(64))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    pool.transaction(|tx, _| blocks[..64].iter().try_for_each(|&b| tx.free_bytes(b)))
        .unwrap();
    let mut live = vec![(run, 2 * CHUNK)];
    live.extend(blocks[64..].iter().map(|&b| (b, 64)));
    assert_matches_model(&mut pool, &live);
    // New blocks never land on the live ones.
    let more = pool
        .transaction(|tx, _| {
            (0..100)
                .map(|_| tx.alloc_bytes(64))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    live.extend(more.iter().map(|&b| (b, 64)));
    assert_matches_model(&mut pool, &live);
}

/// Small blocks (one-chunk slabs) grow a pool made with `auto_grow` when its heap is full,
/// like large ones: 12 MiB of 4 KiB blocks fit in a pool created at 8 MiB.
#[test]
fn small_blocks_grow_an_auto_grow_pool() {
    let dir = common::shm_dir();
    let opts = common::pmem().auto_grow(32 << 20);
    let mut pool = Pool::<Root>::create(common::path(&dir, "grow.pool"), 8 << 20, &opts).unwrap();
    let mut live = Vec::new();
    for k in 0..3072u64 {
        let off = pool
            .transaction(|tx, _| tx.alloc_bytes(4096))
            .unwrap_or_else(|e| panic!("block {k}: {e:?}"));
        live.push((off, 4096));
    }
    assert!(pool.region().len() > 8 << 20);
    assert_matches_model(&mut pool, &live);
}

/// On a fresh pool: a free run of `chunks` chunks at the heap's start, then a one-chunk slab
/// (its 64-byte block, in slot 1, returned) that keeps the run apart from the free rest.
fn free_run_before_a_separator(pool: &Pool<Root>, chunks: u64) -> u64 {
    alloc_into(pool, 0, chunks * CHUNK).unwrap();
    let separator = alloc_into(pool, 1, 64).unwrap();
    pool.transaction(|tx, r| {
        tx.free(r.slots[0].get(tx))?;
        r.slots[0].set(tx, PPtr::null())
    })
    .unwrap();
    separator
}

/// A chunk run that ends exactly at the heap's end is a valid heap: after a reopen (which
/// rebuilds the heap index from the chunk table) allocation and free go on, and the run is
/// still allocated.
#[test]
fn a_run_ending_at_the_heaps_last_chunk_survives_a_reopen() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "reuse.pool");
    let mut pool = pool(&dir, 8 << 20);
    let n = pool.heap_stats().unwrap().chunks;
    let keep = metadata_reserve(n);
    let separator = free_run_before_a_separator(&pool, keep + 2);
    let tail_len = n - keep - 3;
    let tail = alloc_into(&pool, 2, tail_len * CHUNK).unwrap();
    let layout = pool.geometry().heap_layout();
    assert_eq!(
        layout.chunk_of(tail).unwrap() + tail_len,
        layout.n_chunks,
        "the run ends at the heap's end"
    );
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let more = alloc_into(&pool, 3, 100).unwrap_or_else(|e| panic!("allocation after reopen: {e:?}"));
    assert_matches_model(
        &mut pool,
        &[(separator, 64), (tail, tail_len * CHUNK), (more, 100)],
    );
}

/// The same for a 4-chunk slab that ends at the heap's last chunk.
#[test]
fn a_slab_ending_at_the_heaps_last_chunk_survives_a_reopen() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "reuse.pool");
    let mut pool = pool(&dir, 8 << 20);
    let n = pool.heap_stats().unwrap().chunks;
    let keep = metadata_reserve(n);
    // Longer than four chunks, so the slab below fits best at the end.
    let separator = free_run_before_a_separator(&pool, keep + 5);
    // All but the last four chunks after the separator, then a slab of four chunks in those.
    let body_len = n - (keep + 5) - 1 - 4;
    let body = alloc_into(&pool, 2, body_len * CHUNK).unwrap();
    let block = alloc_into(&pool, 3, 16384).unwrap();
    let layout = pool.geometry().heap_layout();
    assert_eq!(slab_geom(class_of(16384).unwrap()).chunks, 4);
    assert_eq!(
        layout.chunk_of(block).unwrap() + 4,
        layout.n_chunks,
        "the slab ends at the heap's end"
    );
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let more = alloc_into(&pool, 4, 16384).unwrap_or_else(|e| panic!("allocation after reopen: {e:?}"));
    assert_matches_model(
        &mut pool,
        &[
            (separator, 64),
            (body, body_len * CHUNK),
            (block, 16384),
            (more, 16384),
        ],
    );
}

/// Returning one emptied slab of a class leaves the class's other slabs with room where the
/// allocator finds them: the next block of the class fills the hole in the older slab rather
/// than taking a fresh chunk.
#[test]
fn returning_a_slab_keeps_the_other_slabs_of_its_class_in_use() {
    let dir = common::shm_dir();
    // Few free chunks: an emptied slab goes back at once instead of being kept.
    let mut pool = pool(&dir, 8 << 20);
    let layout = pool.geometry().heap_layout();
    let blocks_per_slab = slab_geom(class_of(64).unwrap()).blocks as usize;
    // One full slab and three blocks of a second one.
    let blocks = pool
        .transaction(|tx, _| {
            (0..blocks_per_slab + 3)
                .map(|_| tx.alloc_bytes(64))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    let first = layout.chunk_of(blocks[0]).unwrap();
    let hole = blocks[10];
    assert_eq!(layout.chunk_of(hole).unwrap(), first);
    let second: Vec<u64> = blocks
        .iter()
        .copied()
        .filter(|&b| layout.chunk_of(b).unwrap() != first)
        .collect();
    assert_eq!(second.len(), 3, "one full slab and three blocks of another");
    pool.transaction(|tx, _| tx.free_bytes(hole)).unwrap();
    pool.transaction(|tx, _| second.iter().try_for_each(|&b| tx.free_bytes(b)))
        .unwrap();
    let slab_chunks = pool.heap_stats().unwrap().slab_chunks;
    let next = pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
    assert_eq!(next, hole, "the hole in the older slab, not a fresh slab");
    assert_eq!(pool.heap_stats().unwrap().slab_chunks, slab_chunks);
}

/// A block size of each slab span (1, 2 and 4 chunks): the smallest class whose slab spans it.
fn sizes_by_span() -> Vec<u64> {
    let mut out = Vec::new();
    for span in [1, 2, 4] {
        let size = (1..=16u64)
            .map(|k| k * 1024)
            .chain([64, 128, 256, 512])
            .filter(|&s| class_of(s).is_some_and(|c| slab_geom(c).chunks == span && slab_geom(c).block == s))
            .min();
        out.extend(size);
    }
    assert!(out.len() >= 2, "slab spans found: {out:?}");
    out
}

/// A slab that a transaction makes and empties again (its only blocks allocated and freed in
/// that transaction) is never made: after the commit its chunks are free again, nothing of it
/// is allocated, and the class makes a proper slab for the next block, in the same transaction
/// and in later ones, across a reopen. For slabs of 1, 2 and 4 chunks (the descriptors, bitmap
/// words and hint the cancelling must drop).
#[test]
fn a_slab_made_and_emptied_in_one_transaction_is_never_made() {
    for size in sizes_by_span() {
        let dir = common::shm_dir();
        let mut pool = pool(&dir, 8 << 20);
        let c = class_of(size).unwrap();
        let span = slab_geom(c).chunks;
        let free_before = pool.heap_stats().unwrap().free_chunks;
        // Made and emptied: nothing is left of it.
        pool.transaction(|tx, _| {
            let a = tx.alloc_bytes(size)?;
            tx.free_bytes(a)
        })
        .unwrap();
        assert_eq!(
            pool.heap_stats().unwrap().free_chunks,
            free_before,
            "size {size}: chunks"
        );
        assert_matches_model(&mut pool, &[]);
        // Made, emptied, then the class used again in the same transaction: one slab, holding
        // exactly the blocks kept.
        let kept = pool
            .transaction(|tx, r| {
                let a = tx.alloc_bytes(size)?;
                tx.free_bytes(a)?;
                let b = tx.alloc_bytes(size)?;
                let d = tx.alloc_bytes(size)?;
                tx.free_bytes(b)?;
                let e = tx.alloc_bytes(size)?;
                r.slots[0].set(tx, tx.pptr(d))?;
                r.slots[1].set(tx, tx.pptr(e))?;
                Ok::<_, Error>([d, e])
            })
            .unwrap();
        let live: Vec<(u64, u64)> = kept.iter().map(|&o| (o, size)).collect();
        assert_matches_model(&mut pool, &live);
        assert_eq!(
            pool.heap_stats().unwrap().free_chunks,
            free_before - span,
            "size {size}: one slab of {span} chunk(s)"
        );
        pool.close().unwrap();
        let mut pool = Pool::<Root>::open(common::path(&dir, "reuse.pool"), &common::pmem()).unwrap();
        assert_matches_model(&mut pool, &live);
        pool.transaction(|tx, r| {
            for (slot, &off) in kept.iter().enumerate() {
                assert_eq!(r.slots[slot].get(tx).offset(), off, "size {size}: slot {slot}");
            }
            // The class goes on in the slab it has.
            let f = tx.alloc_bytes(size)?;
            assert_eq!(
                f / CHUNK,
                kept[0] / CHUNK,
                "size {size}: the next block in the same slab"
            );
            tx.free_bytes(f)
        })
        .unwrap();
        assert_matches_model(&mut pool, &live);
    }
}

/// Cancelling a slab made and emptied in a transaction drops only that slab's bookkeeping:
/// another slab the same transaction made (another class), emptied afterwards, is cancelled
/// too, so nothing of either is left after the commit.
#[test]
fn a_cancelled_slab_leaves_the_other_new_slabs_of_its_transaction_alone() {
    let sizes = sizes_by_span();
    let (small, other) = (sizes[0], sizes[1]);
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let free_before = pool.heap_stats().unwrap().free_chunks;
    pool.transaction(|tx, _| {
        let a = tx.alloc_bytes(small)?;
        let b = tx.alloc_bytes(other)?;
        tx.free_bytes(b)?;
        tx.free_bytes(a)
    })
    .unwrap();
    assert_eq!(
        pool.heap_stats().unwrap().free_chunks,
        free_before,
        "a slab left behind"
    );
    assert_matches_model(&mut pool, &[]);
}

/// Cancelling a slab keeps the other chunks its transaction reserved: when the transaction
/// then aborts, a run it had allocated goes back to the free chunks of this process, so the
/// whole free space can be allocated right after (no reopen in between).
#[test]
fn a_cancelled_slab_leaves_the_runs_its_transaction_reserved() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    let stats = pool.heap_stats().unwrap();
    let usable = stats.free_chunks - metadata_reserve(stats.chunks);
    let r = pool.transaction(|tx, _| {
        tx.alloc_bytes(3 * CHUNK)?;
        let a = tx.alloc_bytes(64)?;
        tx.free_bytes(a)?;
        Err::<(), _>(Error::Aborted)
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
    let all = alloc_into(&pool, 0, usable * CHUNK)
        .unwrap_or_else(|e| panic!("a run of all {usable} usable chunks after the abort: {e:?}"));
    assert_matches_model(&mut pool, &[(all, usable * CHUNK)]);
}

/// A slab that a transaction makes, then empties after a drain ordered its block's records
/// (so the block cannot be taken back, and the slab is not cancelled at the free), goes back
/// at commit on a heap with few free chunks: every chunk of it is a free chunk again in the
/// chunk table, nothing of it is allocated, and a reopen finds the heap the same. For slabs of
/// 1, 2 and 4 chunks (the descriptors set free at commit).
#[test]
fn a_slab_made_and_emptied_after_a_drain_goes_back_at_commit() {
    for size in sizes_by_span() {
        let dir = common::shm_dir();
        let mut pool = pool(&dir, 8 << 20);
        let before = pool.check_heap().unwrap();
        pool.transaction(|tx, r| {
            let a = tx.alloc_bytes(size)?;
            // A snapshot: the drain before it orders the block's records.
            r.slots[0].set(tx, tx.pptr(a))?;
            r.slots[0].set(tx, PPtr::null())?;
            tx.free_bytes(a)
        })
        .unwrap();
        let st = pool.check_heap().unwrap();
        assert_eq!(
            (st.slab_chunks, st.free_chunks, st.used_bytes),
            (0, before.free_chunks, 0),
            "size {size}: {st:?}"
        );
        assert_matches_model(&mut pool, &[]);
        pool.close().unwrap();
        let mut pool = Pool::<Root>::open(common::path(&dir, "reuse.pool"), &common::pmem()).unwrap();
        let st = pool.check_heap().unwrap();
        assert_eq!(
            (st.slab_chunks, st.free_chunks),
            (0, before.free_chunks),
            "size {size}: {st:?}"
        );
        assert_matches_model(&mut pool, &[]);
    }
}

/// A slab made and emptied again in a transaction (so never made) on a chunk below a run the
/// same transaction allocated before it: cancelling the slab drops its own descriptors only,
/// and the run stays allocated.
#[test]
fn a_cancelled_slab_below_a_run_of_its_transaction_leaves_the_run_allocated() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir, 8 << 20);
    // A free hole of two chunks at the heap's start: the slab's one chunk fits there, the run
    // (three chunks) does not.
    let separator = free_run_before_a_separator(&pool, 2);
    // A drain, so the hole's chunks leave quarantine before the transaction below.
    pool.transaction(|tx, r| r.slots[2].set(tx, PPtr::null()))
        .unwrap();
    let layout = pool.geometry().heap_layout();
    let (run, slab) = pool
        .transaction(|tx, r| {
            let run = tx.alloc_bytes(3 * CHUNK)?;
            let a = tx.alloc_bytes(4096)?;
            tx.free_bytes(a)?;
            r.slots[0].set(tx, tx.pptr(run))?;
            Ok::<_, Error>((run, a))
        })
        .unwrap();
    assert!(
        layout.chunk_of(slab).unwrap() < layout.chunk_of(run).unwrap(),
        "the slab was not placed below the run: {slab} {run}"
    );
    let live = [(run, 3 * CHUNK), (separator, 64)];
    assert_matches_model(&mut pool, &live);
    pool.close().unwrap();
    let mut pool = Pool::<Root>::open(common::path(&dir, "reuse.pool"), &common::pmem()).unwrap();
    assert_matches_model(&mut pool, &live);
}

/// Small blocks borrow a larger class's block only when free chunks are scarce: fewer than
/// `SCARCE_CHUNKS` (80, alloc.rs; the bound under which emptied slabs are not kept either)
/// beyond the reserves. With exactly 80 free chunks beyond the metadata reserve, a 64-byte
/// block gets a slab of its class although a slab of the next class (128 bytes) has room;
/// with 79, the block comes from that slab.
#[test]
fn small_blocks_borrow_a_larger_class_exactly_when_free_chunks_are_scarce() {
    for (beyond, scarce) in [(80u64, false), (79, true)] {
        let dir = common::shm_dir();
        let mut pool = pool(&dir, 32 << 20);
        let lender = alloc_into(&pool, 0, 128).unwrap();
        let st = pool.heap_stats().unwrap();
        let run = st.free_chunks - metadata_reserve(st.chunks) - beyond;
        alloc_into(&pool, 1, run * CHUNK).unwrap();
        let layout = pool.geometry().heap_layout();
        let block = alloc_into(&pool, 2, 64).unwrap();
        let borrowed = layout.chunk_of(block) == layout.chunk_of(lender);
        assert_eq!(borrowed, scarce, "{beyond} free chunks beyond the reserve");
    }
}

/// A transaction on a small lane first logs most of the lane (a store over part of a large
/// block), then allocates two or three small blocks and frees the newest. For some lengths of
/// the store, the log is short of room at the last allocation, which writes the pending
/// records at once: the freed block's record is then the log's newest, and is taken back.
/// Whatever the length, the other blocks, which share the freed block's bitmap word, stay
/// allocated.
#[test]
fn freeing_the_newest_of_blocks_whose_records_were_written_early_keeps_the_others() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2).lane_size(8192);
    let mut pool = Pool::<Root>::create(common::path(&dir, "small-lane.pool"), 8 << 20, &opts).unwrap();
    let big = alloc_into(&pool, 0, 8192).unwrap();
    for fill in (6400..8000u64).step_by(32) {
        for k in 2..=3usize {
            let kept = pool
                .transaction(|tx, _| {
                    // SAFETY: `big` is a live 8192-byte block of this pool that only this
                    // thread uses; any bytes are valid there (nothing reads them).
                    unsafe { tx.fill_bytes(tx.pptr(big), k as u8, fill)? };
                    let made = (0..k)
                        .map(|_| tx.alloc_bytes(64))
                        .collect::<Result<Vec<u64>, Error>>()?;
                    tx.free_bytes(made[k - 1])?;
                    Ok::<_, Error>(made[..k - 1].to_vec())
                })
                .unwrap();
            let mut live: Vec<(u64, u64)> = kept.iter().map(|&o| (o, 64)).collect();
            live.push((big, 8192));
            assert_matches_model(&mut pool, &live);
            pool.transaction(|tx, _| kept.iter().try_for_each(|&o| tx.free_bytes(o)))
                .unwrap();
        }
    }
}

/// As above, with a free before the allocation: a transaction logs most of the lane, frees an
/// older block X, allocates a block in X's bitmap word and frees it again. For some lengths
/// of the store the allocation's record is written at once and taken back at its free: X is
/// freed all the same (its bit is still cleared at commit).
#[test]
fn a_free_before_an_allocation_taken_back_in_its_word_still_frees() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2).lane_size(8192);
    let mut pool = Pool::<Root>::create(common::path(&dir, "small-lane.pool"), 8 << 20, &opts).unwrap();
    let big = alloc_into(&pool, 0, 8192).unwrap();
    let y = alloc_into(&pool, 1, 64).unwrap();
    let layout = pool.geometry().heap_layout();
    let first = slab_geom(class_of(64).unwrap()).first;
    // A 64-byte block's bitmap word: its chunk and the index of its word there.
    let word_of = |off: u64| {
        let chunk = layout.chunk_of(off).unwrap();
        (chunk, (off - layout.chunk_off(chunk) - first) / 64 / 64)
    };
    for fill in (6400..8000u64).step_by(32) {
        let x = pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
        pool.transaction(|tx, _| {
            // SAFETY: `big` is a live 8192-byte block of this pool that only this thread uses;
            // any bytes are valid there (nothing reads them).
            unsafe { tx.fill_bytes(tx.pptr(big), 1, fill)? };
            tx.free_bytes(x)?;
            let b = tx.alloc_bytes(64)?;
            assert_eq!(word_of(b), word_of(x), "store of {fill} bytes: one bitmap word");
            tx.free_bytes(b)
        })
        .unwrap();
        assert_matches_model(&mut pool, &[(big, 8192), (y, 64)]);
    }
}

/// On a full heap (the log cannot grow) with a small lane, a transaction logs most of its lane
/// (a store over part of a block), then allocates one small block from a slab with room. For
/// store lengths that leave too little room for the block's two records, the allocation
/// itself fails with `OutOfSpace`, and the transaction commits what it has; it never returns a
/// block whose records the commit then cannot write.
#[test]
fn an_allocation_the_nearly_full_log_cannot_record_fails_itself() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2).lane_size(8192);
    let mut pool = Pool::<Root>::create(common::path(&dir, "small-lane.pool"), 8 << 20, &opts).unwrap();
    let big = alloc_into(&pool, 0, 8192).unwrap();
    let small = alloc_into(&pool, 1, 64).unwrap();
    let chunks = pool.heap_stats().unwrap().chunks;
    let free = pool.heap_stats().unwrap().free_chunks;
    let run = alloc_into(&pool, 2, (free - metadata_reserve(chunks)) * CHUNK).unwrap();
    let mut refused = 0;
    for fill in (7000..8200u64).step_by(16) {
        let made = pool
            .transaction(|tx, _| {
                // SAFETY: `big` is a live 8192-byte block of this pool that only this thread
                // uses; any bytes are valid there (nothing reads them).
                if unsafe { tx.fill_bytes(tx.pptr(big), 2, fill) }.is_err() {
                    return Ok(None);
                }
                match tx.alloc_bytes(64) {
                    Ok(off) => Ok(Some(off)),
                    Err(Error::OutOfSpace { .. }) => {
                        refused += 1;
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .unwrap_or_else(|e| panic!("store of {fill} bytes: commit: {e:?}"));
        let mut live = vec![
            (big, 8192),
            (small, 64),
            (run, (free - metadata_reserve(chunks)) * CHUNK),
        ];
        live.extend(made.map(|o| (o, 64)));
        assert_matches_model(&mut pool, &live);
        if let Some(o) = made {
            pool.transaction(|tx, _| tx.free_bytes(o)).unwrap();
        }
    }
    assert!(refused > 0, "no store length left the log short of room");
}
