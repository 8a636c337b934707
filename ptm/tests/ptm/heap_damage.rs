//! Guards frees against damaged heap metadata: a run descriptor damaged while the pool is open
//! (after the heap index was built) to reach past the heap's end is `CorruptHeap`, never a free
//! of chunks that do not exist; so is a descriptor damaged into a value of no valid form.

use crate::common;

use std::os::unix::fs::FileExt;

use ptm::internals::heap::{Desc, CHUNK};
use ptm::{Error, PCell, PPtr, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    slots: [PCell<PPtr<u8>>; 4],
}

fn pool(dir: &tempfile::TempDir) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, "damage.pool"), 8 << 20, &common::pmem()).unwrap()
}

/// Opens the pool file for writes beside the pool's own mapping (tmpfs: one page cache, so
/// the mapping sees every byte written here).
fn pool_file(dir: &tempfile::TempDir) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(common::path(dir, "damage.pool"))
        .unwrap()
}

/// On a fresh pool: allocates a run of 3 chunks, builds the heap index (another allocation),
/// writes `damage(chunk, n_chunks)` over the run's first descriptor through the pool file, then
/// frees the run. Returns the free's result, the run's first chunk and the heap's chunk count.
fn free_a_run_with_a_damaged_descriptor(damage: impl FnOnce(u64, u64) -> u64) -> (ptm::Result<()>, u64, u64) {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let run = pool.transaction(|tx, _| tx.alloc_bytes(3 * CHUNK)).unwrap();
    // Another allocation builds the heap index before the damage.
    pool.transaction(|tx, _| tx.alloc_bytes(64)).unwrap();
    let layout = pool.geometry().heap_layout();
    let chunk = layout.chunk_of(run).unwrap();
    assert_eq!(layout.chunk_off(chunk), run);
    pool_file(&dir)
        .write_all_at(
            &damage(chunk, layout.n_chunks).to_le_bytes(),
            layout.desc_off(chunk),
        )
        .unwrap();
    (
        pool.transaction(|tx, _| tx.free_bytes(run)),
        chunk,
        layout.n_chunks,
    )
}

#[test]
fn a_run_descriptor_damaged_past_the_heap_end_while_open_is_corrupt_heap() {
    let (r, chunk, n_chunks) =
        free_a_run_with_a_damaged_descriptor(|chunk, n_chunks| Desc::Run(n_chunks - chunk + 1).encode());
    let past_end = n_chunks - chunk + 1;
    assert!(
        matches!(r, Err(Error::CorruptHeap(_))),
        "free of a run of {past_end} chunks from chunk {chunk} of {n_chunks}: {r:?}"
    );
}

/// A chunk descriptor damaged while the pool is open into a value of no valid form (a free
/// kind with other bits set, a slab of no class or with stray bits, a run of 0 chunks, a
/// continuation 0 chunks after its start) is
/// `CorruptHeap` when a free reads it: never taken for a free chunk, an empty run or a
/// continuation (which would report a free of unallocated memory, or free nothing).
#[test]
fn a_descriptor_damaged_into_no_valid_form_is_corrupt_heap_at_free() {
    // Kind 0 with a bit set, a slab of class 20 (there are 20 classes), a slab with a bit set
    // between its class and its kind, a run of 0 chunks, a continuation of 0 chunks.
    for damaged in [1u64, 1 << 56 | 20, 1 << 56 | 1 << 32, 2 << 56, 3 << 56] {
        let (r, _, _) = free_a_run_with_a_damaged_descriptor(|_, _| damaged);
        assert!(
            matches!(r, Err(Error::CorruptHeap(_))),
            "descriptor {damaged:#x}: {r:?}"
        );
    }
}
