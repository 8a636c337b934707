//! Guards heap capacity (issue 14): emptied slabs return to the free chunks at commit and free
//! chunks coalesce, crash-safely, so the heap holds the peak of the total live bytes rather than
//! the sum of each size class's peak.

mod common;

use ptm::heap::{CHUNK, CLASSES};
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
    // The whole heap as one block.
    alloc_into(&pool, 1, chunks * CHUNK).unwrap();
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
    assert_eq!(st.free_chunks, 0, "{st:?}");
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
    let big = pool.transaction(|tx, _| tx.alloc_bytes(chunks * CHUNK)).unwrap();
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
    let chunks = pool.heap_stats().unwrap().chunks;
    let small = alloc_into(&pool, 0, 64).unwrap();
    alloc_into(&pool, 1, (chunks - 1) * CHUNK).unwrap();
    assert_eq!(pool.heap_stats().unwrap().free_chunks, 0);
    free_slot(&pool, 0).unwrap();
    let image = common::path(&dir, "image.pool");
    let big = pool
        .transaction(|tx, r| {
            let off = tx.alloc_bytes(CHUNK)?;
            let p = tx.pptr::<[u8; CHUNK as usize]>(off);
            // SAFETY: a fresh block of CHUNK bytes owned by this transaction.
            let block = unsafe { tx.deref(p)? };
            // SAFETY: fresh memory of this transaction: nobody else reads or writes it.
            unsafe { std::ptr::write_bytes(block.as_ptr().cast_mut(), 0xFF, CHUNK as usize) };
            r.slots[2].set(tx, tx.pptr(off))?;
            common::crash_image(&common::path(&dir, "cap.pool"), &image);
            Ok::<_, Error>(off)
        })
        .unwrap();
    assert!(
        big < small && small < big + CHUNK,
        "the large block is not the returned slab"
    );
    drop(pool);
    let mut recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    let st = recovered.check_heap().unwrap();
    assert_eq!((st.free_chunks, st.slab_chunks), (1, 0), "{st:?}");
    let slots = recovered
        .transaction(|tx, r| Ok::<_, Error>((r.slots[0].get(tx).is_null(), r.slots[2].get(tx).is_null())))
        .unwrap();
    assert_eq!(slots, (true, true));
}
