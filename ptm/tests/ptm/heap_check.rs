//! Guards `Pool::check_heap`'s bitmap check: a slab whose last bitmap word is full (every valid
//! bit set) passes, and reports what `heap_stats` reports; a bit set past the slab's last block,
//! in the last word of a slab with several bitmap words, is `CorruptHeap`; so is a damaged
//! descriptor (the index build's check). And `Pool::heap_free`: the free chunks' bytes, less a
//! run's bytes once it is allocated, back once it is freed.

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

/// Block size of the slab class used here: 768 bytes, 85 blocks in one chunk, 2 bitmap words,
/// 21 valid bits in the last one.
const BLOCK: u64 = 768;

/// Creates a pool at `path`, fills one slab of `BLOCK`-byte blocks (every block allocated), and
/// closes it. Returns the pool offset of the slab's chunk.
fn pool_with_a_full_slab(path: &std::path::Path) -> u64 {
    let c = class_of(BLOCK).unwrap();
    let g = slab_geom(c);
    assert_eq!(
        (g.blocks, g.words, g.chunks, g.blocks % 64),
        (85, 2, 1, 21),
        "{g:?}"
    );
    let mut pool = Pool::<Root>::create(path, 8 << 20, &common::pmem()).unwrap();
    let blocks = pool
        .transaction(|tx, _| {
            (0..g.blocks)
                .map(|_| tx.alloc_bytes(BLOCK))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    let layout = pool.geometry().heap_layout();
    let chunk = layout.chunk_of(blocks[0]).unwrap();
    // Every block in the one slab.
    assert!(
        blocks.iter().all(|&b| layout.chunk_of(b) == Some(chunk)),
        "{blocks:?}"
    );
    let slab = layout.chunk_off(chunk);
    let st = pool.heap_stats().unwrap();
    assert_eq!((st.per_class[c], st.per_class_slabs[c]), (g.blocks, 1), "{st:?}");
    drop(pool);
    slab
}

fn read_word(path: &std::path::Path, off: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_le_bytes(b)
}

fn write_word(path: &std::path::Path, off: u64, v: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

#[test]
fn check_heap_passes_a_full_slab_and_returns_the_heap_statistics() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "full.pool");
    let slab = pool_with_a_full_slab(&path);
    // The bitmap as the allocator left it: the first word full, the last word's 21 valid bits.
    assert_eq!(read_word(&path, slab), u64::MAX);
    assert_eq!(read_word(&path, slab + 8), (1 << 21) - 1);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let checked = pool.check_heap().unwrap();
    let stats = pool.heap_stats().unwrap();
    assert_eq!(checked, stats);
    let c = class_of(BLOCK).unwrap();
    assert_eq!(checked.per_class[c], 85, "{checked:?}");
    assert_eq!(
        checked.chunks,
        checked.free_chunks + checked.slab_chunks + checked.run_chunks
    );
    assert!(checked.slab_chunks >= 1 && checked.chunks > 1, "{checked:?}");
}

#[test]
fn a_bitmap_bit_past_the_slabs_last_block_is_corrupt_heap() {
    for bit in [21u32, 22, 63] {
        let dir = common::shm_dir();
        let path = common::path(&dir, "past.pool");
        let slab = pool_with_a_full_slab(&path);
        // Free the first block, so that the first word is not full either (a check reading
        // the first word in place of the last one finds nothing to refuse there).
        let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
        pool.transaction(|tx, _| tx.free_bytes(slab + 64)).unwrap();
        pool.check_heap().unwrap();
        drop(pool);
        assert_eq!(read_word(&path, slab), u64::MAX - 1);
        write_word(&path, slab + 8, ((1 << 21) - 1) | (1 << bit));
        let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
        let err = pool.check_heap().unwrap_err();
        assert!(
            matches!(err, Error::CorruptHeap(m) if m.contains("beyond the slab's last block")),
            "bit {bit}: {err:?}"
        );
    }
}

#[test]
fn a_damaged_descriptor_is_corrupt_heap_at_check() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "desc.pool");
    let slab = pool_with_a_full_slab(&path);
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let layout = pool.geometry().heap_layout();
    drop(pool);
    let chunk = layout.chunk_of(slab).unwrap();
    // Kind 7: no valid descriptor form.
    write_word(&path, layout.desc_off(chunk), 7 << 56);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let err = pool.check_heap().unwrap_err();
    assert!(matches!(err, Error::CorruptHeap(_)), "{err:?}");
}

#[test]
fn heap_free_counts_the_free_chunks_bytes() {
    let dir = common::shm_dir();
    let mut pool = Pool::<Root>::create(common::path(&dir, "free.pool"), 8 << 20, &common::pmem()).unwrap();
    let before = pool.heap_free();
    let free_chunks = pool.heap_stats().unwrap().free_chunks;
    assert!(
        before > 0 && before.is_multiple_of(CHUNK) && before <= free_chunks * CHUNK,
        "{before}"
    );
    let run = pool.transaction(|tx, _| tx.alloc_bytes(3 * CHUNK)).unwrap();
    assert_eq!(before - pool.heap_free(), 3 * CHUNK);
    pool.transaction(|tx, _| tx.free_bytes(run)).unwrap();
    assert_eq!(pool.heap_free(), before);
}
