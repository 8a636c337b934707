//! Guards slabs that span several 64 KiB chunks (heap format 3, design §10.1): blocks in a
//! slab's continuation chunks are allocated, freed (also by an aborted transaction and after a
//! reopen) and checked through the slab's first chunk; the emptied slab goes back whole; a
//! damaged continuation descriptor is `CorruptHeap`.

use crate::common;

use std::os::unix::fs::FileExt;

use ptm::internals::heap::{class_of, slab_geom, CHUNK};
use ptm::{Error, PCell, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    unused: PCell<u64>,
}

/// A root that threads may share (no cells).
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Shared {
    unused: u64,
}

#[test]
fn blocks_in_continuation_chunks_free_through_the_first_chunk() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "span.pool");
    let mut pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    let c = class_of(16384).unwrap();
    let g = slab_geom(c);
    assert_eq!((g.chunks, g.blocks), (4, 15));
    let chunks = pool.heap_stats().unwrap().chunks;
    let blocks = pool
        .transaction(|tx, _| {
            (0..g.blocks)
                .map(|_| tx.alloc_bytes(16384))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(
        (st.slab_chunks, st.per_class_slabs[c], st.per_class[c]),
        (4, 1, 15)
    );
    let first = blocks[0];
    let last = *blocks.last().unwrap();
    assert!(
        last - first >= 3 * CHUNK,
        "the slab spans 4 chunks: {first:#x}..{last:#x}"
    );
    // Not a block start, inside a continuation chunk.
    let err = pool.transaction(|tx, _| tx.free_bytes(last + 64)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidFree {
                what: "not the start of a block",
                ..
            }
        ),
        "{err:?}"
    );
    // Aborted: still allocated.
    let r: Result<(), Error> = pool.transaction(|tx, _| {
        tx.free_bytes(last)?;
        Err(Error::Aborted)
    });
    assert!(r.is_err());
    assert_eq!(pool.allocated_blocks().unwrap().len(), 15);
    // Committed, then the rest after a reopen: the slab goes back whole.
    pool.transaction(|tx, _| tx.free_bytes(last)).unwrap();
    assert!(!pool.allocated_blocks().unwrap().contains(&(last, 16384)));
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let err = pool.transaction(|tx, _| tx.free_bytes(last)).unwrap_err();
    assert!(matches!(err, Error::InvalidFree { .. }), "{err:?}");
    pool.transaction(|tx, _| blocks[..14].iter().try_for_each(|&o| tx.free_bytes(o)))
        .unwrap();
    pool.sync().unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(
        (st.slab_chunks, st.free_chunks, st.largest_free_run),
        (0, chunks, chunks),
        "{st:?}"
    );
    // A slab again, then one of its continuation descriptors damaged.
    let off = pool.transaction(|tx, _| tx.alloc_bytes(16384)).unwrap();
    let table = pool.geometry().heap_layout();
    let chunk = table.chunk_of(off).unwrap();
    drop(pool);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&0u64.to_le_bytes(), table.desc_off(chunk + 2))
        .unwrap();
    drop(f);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert!(matches!(pool.check_heap(), Err(Error::CorruptHeap(_))));
    let err = pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap_err();
    assert!(matches!(err, Error::CorruptHeap(_)), "{err:?}");
}

/// Two threads free blocks of one 4-chunk slab at once, each transaction a pair in opposite
/// orders (a continuation chunk's block then the first chunk's, and the reverse): every
/// transaction commits and the slab goes back whole. (A smoke test: the interleaving that
/// would deadlock if a free held the continuation chunk's lock while waiting for the first
/// chunk's is rare in so short transactions; the lock order is argued in design §10.1.)
#[test]
fn frees_in_one_slab_from_two_threads_never_wait_for_each_other() {
    let dir = common::shm_dir();
    let pool = Pool::<Shared>::create(common::path(&dir, "threads.pool"), 8 << 20, &common::pmem()).unwrap();
    for round in 0..40 {
        let blocks = pool
            .transaction(|tx, _| {
                (0..slab_geom(class_of(16384).unwrap()).blocks)
                    .map(|_| tx.alloc_bytes(16384))
                    .collect::<Result<Vec<u64>, Error>>()
            })
            .unwrap();
        assert!(blocks[14] - blocks[0] >= 3 * CHUNK);
        // Blocks 0..=2 lie in the slab's first chunk, 5..=14 in its continuations.
        let free = |order: &[[usize; 2]]| {
            for pair in order {
                pool.transaction(|tx, _| pair.iter().try_for_each(|&i| tx.free_bytes(blocks[i])))
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        };
        std::thread::scope(|s| {
            let continuation_first = s.spawn(|| free(&[[5, 0], [10, 2]]));
            free(&[[1, 6], [11, 7]]);
            continuation_first.join().unwrap();
        });
        free(&[[3, 4], [8, 9], [12, 13]]);
        pool.transaction(|tx, _| tx.free_bytes(blocks[14])).unwrap();
    }
    let mut pool = pool;
    pool.sync().unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!((st.used_bytes, st.slab_chunks), (0, 0), "{st:?}");
}

/// A free in a continuation chunk lets that chunk's lock go before it waits for the slab's
/// first chunk. Transaction B holds the first chunk (it freed a block there); transaction A
/// frees a block of a continuation chunk and waits for B; B then frees another block of the
/// same continuation chunk and commits. If A kept the continuation's lock while waiting, A
/// and B would wait for each other until `LockTimeout`. (The order is made by a barrier and a
/// pause: on a machine that starts A late, B runs through first and the test shows nothing,
/// but it never fails on a correct build.)
#[test]
fn a_free_in_a_continuation_chunk_never_holds_its_lock_while_waiting_for_the_first_chunk() {
    let dir = common::shm_dir();
    let opts = common::pmem().lock_timeout(std::time::Duration::from_secs(2));
    let pool = Pool::<Shared>::create(common::path(&dir, "wait.pool"), 8 << 20, &opts).unwrap();
    let class = class_of(16384).unwrap();
    let blocks = pool
        .transaction(|tx, _| {
            (0..slab_geom(class).blocks)
                .map(|_| tx.alloc_bytes(16384))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    let layout = pool.geometry().heap_layout();
    let first_chunk = layout.chunk_of(blocks[0]).unwrap();
    // Two blocks wholly inside one continuation chunk.
    let in_chunk = |i: usize| {
        let chunk = |off: u64| layout.chunk_of(off).unwrap();
        (chunk(blocks[i]), chunk(blocks[i] + 16383))
    };
    let (a, b) = (0..blocks.len())
        .flat_map(|i| (i + 1..blocks.len()).map(move |j| (i, j)))
        .find(|&(i, j)| {
            let (ci, ei) = in_chunk(i);
            ci != first_chunk && ci == ei && in_chunk(j) == (ci, ci)
        })
        .expect("two blocks in one continuation chunk");
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            barrier.wait();
            pool.transaction(|tx, _| tx.free_bytes(blocks[a]))
        });
        let holder = pool.transaction(|tx, _| {
            tx.free_bytes(blocks[0])?;
            barrier.wait();
            // Time for the other transaction to take the continuation chunk's lock and start
            // waiting for the first chunk's.
            std::thread::sleep(std::time::Duration::from_millis(200));
            tx.free_bytes(blocks[b])
        });
        let waited = waiter.join().unwrap();
        assert!(
            holder.is_ok() && waited.is_ok(),
            "holder: {holder:?}, waiter: {waited:?}"
        );
    });
}

/// A transaction makes a 4-chunk slab, frees a block of it in a continuation chunk (found
/// through the slab this transaction made), allocates a chunk run and then frees a block of
/// an older slab: every free succeeds, and after the commit exactly the blocks kept are
/// allocated.
#[test]
fn frees_in_a_slab_made_by_the_same_transaction_find_its_first_chunk() {
    let dir = common::shm_dir();
    let mut pool = Pool::<Root>::create(common::path(&dir, "own.pool"), 16 << 20, &common::pmem()).unwrap();
    let old = pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
    let layout = pool.geometry().heap_layout();
    let (kept, run) = pool
        .transaction(|tx, _| {
            let blocks = (0..slab_geom(class_of(16384).unwrap()).blocks)
                .map(|_| tx.alloc_bytes(16384))
                .collect::<Result<Vec<u64>, Error>>()?;
            let first = layout.chunk_of(blocks[0]).unwrap();
            let cont = *blocks
                .iter()
                .rev()
                .find(|&&b| layout.chunk_of(b).unwrap() != first)
                .unwrap();
            tx.free_bytes(cont)?;
            let run = tx.alloc_bytes(2 * CHUNK)?;
            tx.free_bytes(old)?;
            Ok::<_, Error>((
                blocks.into_iter().filter(|&b| b != cont).collect::<Vec<u64>>(),
                run,
            ))
        })
        .unwrap();
    let mut expected: Vec<u64> = kept.iter().copied().chain([run]).collect();
    expected.sort_unstable();
    let allocated = common::allocated_offsets(&mut pool);
    assert_eq!(allocated, expected);
    pool.check_heap().unwrap();
}

/// A slab's metadata has one writer at a time: while one transaction that freed a block of
/// a slab is open, another transaction's free in the same slab waits for it to end. (The
/// waiting side checks a flag the holder sets just before its commit; a pause keeps the
/// holder open meanwhile. A late start of the waiter only makes the test show nothing; it
/// never fails on a correct build.)
#[test]
fn frees_in_one_slab_wait_for_the_transaction_holding_its_metadata() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = common::shm_dir();
    let pool = Pool::<Shared>::create(common::path(&dir, "hold.pool"), 8 << 20, &common::pmem()).unwrap();
    let blocks = pool
        .transaction(|tx, _| {
            (0..4)
                .map(|_| tx.alloc_bytes(64))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    let committing = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            barrier.wait();
            pool.transaction(|tx, _| {
                tx.free_bytes(blocks[1])?;
                Ok::<_, Error>(committing.load(Ordering::SeqCst))
            })
        });
        pool.transaction(|tx, _| {
            tx.free_bytes(blocks[0])?;
            barrier.wait();
            std::thread::sleep(std::time::Duration::from_millis(200));
            committing.store(true, Ordering::SeqCst);
            Ok::<_, Error>(())
        })
        .unwrap();
        let after = waiter.join().unwrap().unwrap();
        assert!(
            after,
            "a free in the slab went ahead while another transaction held its metadata"
        );
    });
}
