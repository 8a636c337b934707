//! Guards the empty slab each class keeps while free chunks are plentiful: which slab is kept
//! (at most one per class, the one kept already while it is still empty, a slab emptied again
//! by a later transaction), and when kept slabs go back to the free chunks: once chunks are
//! scarce (fewer than 80 beyond the reserves, also on a grown pool), on a drain the transaction
//! takes anyway, later when another transaction held the slab, and never as a slab once its
//! chunk is something else.

use crate::common;

use std::sync::mpsc;

use ptm::internals::heap::{class_of, metadata_reserve, slab_geom, CHUNK};
use ptm::{thread_stats, Error, PCell, PMutex, PPtr, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Links to large blocks (behind locks: one test shares the pool between threads).
    slots: [PMutex<PCell<PPtr<u8>>>; 2],
}

/// 32 MiB: 443 heap chunks, free chunks plentiful (far more than the scarce bound beyond the
/// reserves), so emptied slabs are kept for their class.
fn pool(dir: &tempfile::TempDir) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, "kept.pool"), 32 << 20, &common::pmem()).unwrap()
}

/// The block size these tests use: a class whose slab is one chunk of a few blocks.
const SIZE: u64 = 4096;

fn blocks_per_slab() -> u64 {
    let g = slab_geom(class_of(SIZE).unwrap());
    assert_eq!(g.chunks, 1, "{g:?}");
    g.blocks
}

/// The heap chunk holding pool offset `off`.
fn chunk(pool: &Pool<Root>, off: u64) -> u64 {
    pool.geometry().heap_layout().chunk_of(off).unwrap()
}

fn slab_chunks(pool: &mut Pool<Root>) -> u64 {
    pool.check_heap().unwrap().slab_chunks
}

/// Allocates and frees one block in one transaction: on a heap without a slab of the class,
/// the slab made for it is kept, empty.
fn keep_a_slab(pool: &mut Pool<Root>) {
    pool.transaction(|tx, _| {
        let o = tx.alloc_bytes(SIZE)?;
        tx.free_bytes(o)
    })
    .unwrap();
    assert_eq!(slab_chunks(pool), 1);
}

/// The kept slab used again, then emptied again by a later transaction, is still its class's
/// kept slab: it stays a slab (the class's kept slab is this one, not another).
#[test]
fn a_kept_slab_emptied_again_by_a_later_transaction_stays_kept() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir);
    keep_a_slab(&mut pool);
    let b = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    assert_eq!(slab_chunks(&mut pool), 1);
    pool.transaction(|tx, _| tx.free_bytes(b)).unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!((st.slab_chunks, st.used_bytes), (1, 0), "{st:?}");
    // And it is the slab the next block of the class comes from: no chunk taken.
    let free = st.free_chunks;
    let again = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    assert_eq!(chunk(&pool, again), chunk(&pool, b));
    assert_eq!(pool.check_heap().unwrap().free_chunks, free);
}

/// A class keeps one empty slab at most, and the one it keeps is an empty one: with slab K
/// kept and then filled, a second slab S emptied is kept (K is in use); with S kept and
/// empty, K emptied goes back to the free chunks (S stays the kept one).
#[test]
fn a_class_keeps_one_empty_slab_and_only_while_it_is_empty() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir);
    keep_a_slab(&mut pool);
    let n = blocks_per_slab();
    // K full, and one block in a second slab S.
    let blocks = pool
        .transaction(|tx, _| {
            (0..=n)
                .map(|_| tx.alloc_bytes(SIZE))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    let k = chunk(&pool, blocks[0]);
    let s = chunk(&pool, blocks[n as usize]);
    assert!(blocks[..n as usize].iter().all(|&b| chunk(&pool, b) == k));
    assert_ne!(s, k);
    assert_eq!(slab_chunks(&mut pool), 2);
    // S emptied: K, the kept slab, is full now, so S is kept in its place.
    pool.transaction(|tx, _| tx.free_bytes(blocks[n as usize]))
        .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(st.slab_chunks, 2, "S went back although K is in use: {st:?}");
    // K emptied: S is kept and empty, so K goes back.
    pool.transaction(|tx, _| blocks[..n as usize].iter().try_for_each(|&b| tx.free_bytes(b)))
        .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(
        (st.slab_chunks, st.used_bytes),
        (1, 0),
        "two empty slabs kept for one class: {st:?}"
    );
    // The one left is S: the next block of the class comes from it.
    let again = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    assert_eq!(chunk(&pool, again), s);
}

/// Free chunks made scarce while another transaction holds the kept slab's metadata lock: the
/// slab cannot go back then, and stays kept; once that transaction ended (leaving the slab
/// empty), the next transaction that drains on the scarce heap returns it.
#[test]
fn a_kept_slab_held_by_another_transaction_when_chunks_run_short_goes_back_later() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir);
    keep_a_slab(&mut pool);
    let st = pool.check_heap().unwrap();
    // Leave 10 free chunks beyond the metadata reserve: scarce.
    let big = (st.free_chunks - metadata_reserve(st.chunks) - 10) * CHUNK;
    let (held_tx, held_rx) = mpsc::channel();
    let mut kept = 0;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let pool = &pool;
        let holder = scope.spawn(move || {
            pool.transaction(|tx, _| {
                // A block of the kept slab, given back at once: the slab stays locked by
                // this transaction until it ends, and is empty again then.
                let o = tx.alloc_bytes(SIZE)?;
                tx.free_bytes(o)?;
                held_tx.send(o).unwrap();
                done_rx.recv().unwrap();
                Ok::<_, Error>(())
            })
            .unwrap();
        });
        kept = held_rx.recv().unwrap();
        // Chunks become scarce; this transaction's drain finds the kept slab locked.
        pool.transaction(|tx, r| {
            let off = tx.alloc_bytes(big)?;
            r.slots[0].lock(tx)?.set(tx, tx.pptr(off))
        })
        .unwrap();
        done_tx.send(()).unwrap();
        holder.join().unwrap();
    });
    assert_eq!(slab_chunks(&mut pool), 1, "slab {kept}");
    // The next transaction that drains on the scarce heap returns it.
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(2 * CHUNK)?;
        r.slots[1].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(st.slab_chunks, 0, "the kept slab was forgotten: {st:?}");
}

/// A kept slab goes back on a drain the transaction takes anyway, never on one of its own: on
/// a heap made scarce while the kept slab was locked (so it stayed kept), a transaction whose
/// only drain comes before it allocates (and it allocates and frees a block of another slab:
/// no record) commits with its two drains, the snapshot's and the commit's, and leaves the
/// slab kept; the next transaction that allocates and drains returns it.
#[test]
fn a_transaction_without_a_drain_after_it_allocates_takes_none_to_return_a_kept_slab() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir);
    // A slab of another class, with a live block.
    pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
    let b = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(st.slab_chunks, 2, "{st:?}");
    let big = (st.free_chunks - metadata_reserve(st.chunks) - 10) * CHUNK;
    // The slab emptied while chunks are plentiful (kept), then chunks made scarce in the same
    // transaction, which holds the slab: it stays kept.
    pool.transaction(|tx, r| {
        tx.free_bytes(b)?;
        let off = tx.alloc_bytes(big)?;
        r.slots[0].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    assert_eq!(slab_chunks(&mut pool), 2);
    let before = thread_stats();
    pool.transaction(|tx, r| {
        r.slots[1].lock(tx)?.set(tx, PPtr::null())?;
        let o = tx.alloc_bytes(64)?;
        tx.free_bytes(o)
    })
    .unwrap();
    assert_eq!(thread_stats().since(&before).drains, 2);
    assert_eq!(slab_chunks(&mut pool), 2);
    // A transaction that allocates and drains returns it.
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(2 * CHUNK)?;
        r.slots[1].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    assert_eq!(slab_chunks(&mut pool), 1);
}

/// Kept slabs go back only while free chunks are scarce: with a slab kept on a heap made
/// scarce (while that slab was locked, so it stayed kept), then the pool grown in place (free
/// chunks plentiful again), a transaction that allocates (from the slab its lane used last:
/// no chunk taken) and drains leaves the slab kept.
#[test]
fn a_kept_slab_stays_kept_once_the_pool_grew_out_of_scarcity() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir);
    // A slab of another class, with a live block, this thread's lane's current slab.
    pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
    let b = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    let st = pool.check_heap().unwrap();
    let big = (st.free_chunks - metadata_reserve(st.chunks) - 10) * CHUNK;
    pool.transaction(|tx, r| {
        tx.free_bytes(b)?;
        let off = tx.alloc_bytes(big)?;
        r.slots[0].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    assert_eq!(slab_chunks(&mut pool), 2);
    // 256 more free chunks: plentiful.
    pool.grow(48 << 20).unwrap();
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(64)?;
        r.slots[1].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    let st = pool.check_heap().unwrap();
    assert!(st.free_chunks >= metadata_reserve(st.chunks) + 100, "{st:?}");
    assert_eq!(st.slab_chunks, 2, "{st:?}");
}

/// A chunk still recorded as its class's kept slab after it went back to the free chunks (a
/// free emptied it on a scarce heap) and became part of a run: a later transaction going
/// through the kept slabs on the scarce heap leaves the run alone (its first chunk is not a
/// slab of the class any more), even though the run's first bytes are zero like an empty
/// slab's bitmap.
#[test]
fn a_kept_slab_reused_as_a_run_is_not_returned_as_a_slab() {
    let dir = common::shm_dir();
    let mut pool = pool(&dir);
    let layout = pool.geometry().heap_layout();
    keep_a_slab(&mut pool);
    let r1 = pool.transaction(|tx, _| tx.alloc_bytes(2 * CHUNK)).unwrap();
    let x = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    let k = chunk(&pool, x);
    assert_eq!(layout.chunk_of(r1), Some(k + 1), "the run right after the slab");
    let st = pool.check_heap().unwrap();
    let big = (st.free_chunks - metadata_reserve(st.chunks) - 10) * CHUNK;
    // The slab emptied (kept: chunks plentiful), then chunks made scarce by the same
    // transaction, which holds the slab: it stays kept.
    pool.transaction(|tx, r| {
        tx.free_bytes(x)?;
        let off = tx.alloc_bytes(big)?;
        r.slots[0].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    // A block of it again (kept still: this transaction holds it), then freed on the scarce
    // heap: the slab goes back to the free chunks, and with the run after it a hole of three.
    let y = pool.transaction(|tx, _| tx.alloc_bytes(SIZE)).unwrap();
    assert_eq!(chunk(&pool, y), k);
    pool.transaction(|tx, _| tx.free_bytes(y)).unwrap();
    pool.transaction(|tx, _| tx.free_bytes(r1)).unwrap();
    assert_eq!(slab_chunks(&mut pool), 0);
    // A run of three fills the hole (the shortest free run that holds it), its first bytes
    // the zeroed bitmap of the slab that was there.
    let z = pool
        .transaction(|tx, r| {
            let z = tx.alloc_bytes(3 * CHUNK)?;
            r.slots[1].lock(tx)?.set(tx, tx.pptr(z))?;
            Ok::<_, Error>(z)
        })
        .unwrap();
    assert_eq!(chunk(&pool, z), k);
    // Another transaction that allocates and drains on the scarce heap.
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(64)?;
        r.slots[1].lock(tx)?.set(tx, tx.pptr(off))?;
        r.slots[1].lock(tx)?.set(tx, tx.pptr(z))
    })
    .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!(st.run_chunks, (big / CHUNK) + 3, "{st:?}");
    assert!(common::allocated_offsets(&mut pool).contains(&z));
}

/// The scarce bound holds on a small pool whose metadata reserve is one chunk (fixed at open,
/// so also after the pool grew in place): with a slab kept while chunks were plentiful, a
/// transaction that leaves exactly 79 free chunks beyond the reserve (scarce) returns the
/// kept slab on its drain.
#[test]
fn a_kept_slab_goes_back_at_the_scarce_bound_on_a_grown_small_pool() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2);
    let mut pool = Pool::<Root>::create(common::path(&dir, "kept.pool"), 3 << 20, &opts).unwrap();
    let reserve = metadata_reserve(pool.check_heap().unwrap().chunks);
    assert_eq!(reserve, 1);
    pool.grow(16 << 20).unwrap();
    keep_a_slab(&mut pool);
    leave_80_free_chunks_then_no_slab_is_kept(&mut pool, reserve);
}

/// Allocates one run of all free chunks but the metadata reserve and 79 (the kept slab, once
/// back, makes 80), then checks that the kept slab went back: no slab chunk, 80 free besides
/// the reserve.
fn leave_80_free_chunks_then_no_slab_is_kept(pool: &mut Pool<Root>, reserve: u64) {
    let st = pool.check_heap().unwrap();
    let big = (st.free_chunks - reserve - 79) * CHUNK;
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(big)?;
        r.slots[0].lock(tx)?.set(tx, tx.pptr(off))
    })
    .unwrap();
    let st = pool.check_heap().unwrap();
    assert_eq!((st.slab_chunks, st.free_chunks), (0, reserve + 80), "{st:?}");
}

/// On a one-lane pool every transaction runs on lane 0, whose chunk metadata locks must still
/// tell "held by this transaction" from "unlocked" (a lock word of lane + 1, never 0): a slab
/// kept while chunks were plentiful goes back once a transaction makes them scarce, as on a
/// pool of several lanes.
#[test]
fn a_kept_slab_goes_back_when_chunks_run_short_on_a_one_lane_pool() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(1);
    let mut pool = Pool::<Root>::create(common::path(&dir, "kept.pool"), 32 << 20, &opts).unwrap();
    keep_a_slab(&mut pool);
    let reserve = metadata_reserve(pool.check_heap().unwrap().chunks);
    leave_80_free_chunks_then_no_slab_is_kept(&mut pool, reserve);
}
