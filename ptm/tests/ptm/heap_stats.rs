//! Guards the heap's reports (`Pool::heap_stats`, `Pool::allocated_blocks`, `HeapStats`'s
//! ratios and `class_capacity`) and its address arithmetic (`HeapLayout::chunk_of`,
//! `metadata_reserve`) on chunk tables and bitmaps written by hand: every count, byte total,
//! free run and block offset exactly; slabs and runs that end at the heap's last chunk are
//! counted, those that pass it are `CorruptHeap`; nothing past the last chunk is read.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use crate::common;

use ptm::internals::heap::{
    allocated_blocks, class_of, metadata_reserve, slab_geom, Desc, HeapLayout, CHUNK,
};
use ptm::{Error, HeapStats, PCell, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    x: PCell<u64>,
}

/// The class of 64-byte blocks: one chunk, 1022 blocks after a 128-byte bitmap of 16 words
/// (bits 62 and 63 of the last word stand for no block).
fn c64() -> usize {
    let c = class_of(64).unwrap();
    let g = slab_geom(c);
    assert_eq!(
        (g.block, g.blocks, g.first, g.words, g.chunks),
        (64, 1022, 128, 16, 1)
    );
    c
}

/// The class of 16 KiB blocks: four chunks, 15 blocks after a one-word bitmap.
fn c16k() -> usize {
    let c = class_of(16384).unwrap();
    let g = slab_geom(c);
    assert_eq!(
        (g.block, g.blocks, g.first, g.words, g.chunks),
        (16384, 15, 64, 1, 4)
    );
    c
}

/// A slab's descriptors: its first chunk and its continuations.
fn slab(c: usize) -> Vec<Desc> {
    let mut d = vec![Desc::Slab(c)];
    d.extend((1..slab_geom(c).chunks).map(Desc::Cont));
    d
}

/// A run's descriptors.
fn run(n: u64) -> Vec<Desc> {
    let mut d = vec![Desc::Run(n)];
    d.extend((1..n).map(Desc::Cont));
    d
}

/// `n` free chunks.
fn free(n: u64) -> Vec<Desc> {
    vec![Desc::Free; n as usize]
}

/// A fresh 8 MiB pool on tmpfs whose chunk table is replaced by `table(n_chunks)` (one
/// descriptor per chunk from chunk 0, exactly `n_chunks` of them) and whose slab bitmap words
/// are set to `words(n_chunks)` (`(chunk, word, value)`), both written through the pool file while the
/// pool is open (tmpfs: one page cache, so the mapping sees them). No transaction runs on it:
/// its heap index is never built.
fn crafted(
    dir: &tempfile::TempDir,
    table: impl FnOnce(u64) -> Vec<Desc>,
    words: impl FnOnce(u64) -> Vec<(u64, u64, u64)>,
) -> (Pool<Root>, HeapLayout) {
    let path = common::path(dir, "stats.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    let l = pool.geometry().heap_layout();
    assert!(l.n_chunks >= 20, "{l:?}");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let table = table(l.n_chunks);
    assert_eq!(table.len() as u64, l.n_chunks);
    for (i, d) in table.iter().enumerate() {
        file.write_all_at(&d.encode().to_le_bytes(), l.desc_off(i as u64))
            .unwrap();
    }
    for (chunk, w, v) in words(l.n_chunks) {
        file.write_all_at(&v.to_le_bytes(), l.chunk_off(chunk) + w * 8)
            .unwrap();
    }
    (pool, l)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// A heap of every kind of chunk: a free chunk, a one-chunk slab with blocks in its first,
/// second and last bitmap words, two free chunks, a run of 3, a four-chunk slab, the longest
/// free run, and a run of 3 that ends at the heap's last chunk. Every field of the statistics,
/// the two ratios, the class capacities and the allocated blocks are what the table says.
#[test]
fn heap_stats_count_every_chunk_block_and_free_run_of_a_table_written_by_hand() {
    let (c64, c16k) = (c64(), c16k());
    let dir = common::shm_dir();
    let (mut pool, l) = crafted(
        &dir,
        |n| {
            [
                free(1),
                slab(c64),
                free(2),
                run(3),
                slab(c16k),
                free(n - 14),
                run(3),
            ]
            .concat()
        },
        |_| {
            vec![
                (1, 0, 0b101),
                (1, 1, 1 << 5 | 1 << 63),
                (1, 15, 1 << 61),
                (7, 0, 0b1_1010),
            ]
        },
    );
    let n = l.n_chunks;
    let st: HeapStats = pool.heap_stats().unwrap();
    let slab_free = (1022 - 5) * 64 + (15 - 3) * 16384;
    assert_eq!(
        (st.chunks, st.free_chunks, st.slab_chunks, st.run_chunks),
        (n, n - 11, 5, 6),
        "{st:?}"
    );
    assert_eq!(
        (st.used_bytes, st.free_bytes, st.slab_free_bytes),
        (
            5 * 64 + 3 * 16384 + 6 * CHUNK,
            (n - 11) * CHUNK + slab_free,
            slab_free
        ),
        "{st:?}"
    );
    assert_eq!((st.free_runs, st.largest_free_run), (3, n - 14), "{st:?}");
    let mut per_class = vec![0; st.per_class.len()];
    per_class[c64] = 5;
    per_class[c16k] = 3;
    assert_eq!(st.per_class, per_class, "{st:?}");
    let mut slabs = vec![0; st.per_class.len()];
    slabs[c64] = 1;
    slabs[c16k] = 1;
    assert_eq!(st.per_class_slabs, slabs, "{st:?}");
    assert_eq!(
        (
            st.class_capacity(c64),
            st.class_capacity(c16k),
            st.class_capacity(c64 + 1)
        ),
        (1022, 15, 0)
    );
    // 1 - largest free run / free chunks; 1 - its bytes / every free byte.
    let frag = 1.0 - (n - 14) as f64 / (n - 11) as f64;
    assert!(
        close(st.fragmentation(), frag),
        "{} != {frag}",
        st.fragmentation()
    );
    let space = 1.0 - ((n - 14) * CHUNK) as f64 / ((n - 11) * CHUNK + slab_free) as f64;
    assert!(
        close(st.free_space_fragmentation(), space),
        "{} != {space}",
        st.free_space_fragmentation()
    );
    let slab1 = l.chunk_off(1) + 128;
    let slab7 = l.chunk_off(7) + 64;
    assert_eq!(
        pool.allocated_blocks().unwrap(),
        [
            (slab1, 64),
            (slab1 + 2 * 64, 64),
            (slab1 + (64 + 5) * 64, 64),
            (slab1 + (64 + 63) * 64, 64),
            (slab1 + (15 * 64 + 61) * 64, 64),
            (l.chunk_off(4), 3 * CHUNK),
            (slab7 + 16384, 16384),
            (slab7 + 3 * 16384, 16384),
            (slab7 + 4 * 16384, 16384),
            (l.chunk_off(n - 3), 3 * CHUNK),
        ]
    );
    // The same through the full check (it builds an index of the table, then scans it).
    assert_eq!(pool.check_heap().unwrap(), st);
}

/// A slab at chunk 0, a run, free chunks and a four-chunk slab that ends at the heap's last
/// chunk: counted, not `CorruptHeap`.
#[test]
fn a_slab_ending_at_the_heaps_last_chunk_is_counted_and_listed() {
    let (c64, c16k) = (c64(), c16k());
    let dir = common::shm_dir();
    let (mut pool, l) = crafted(
        &dir,
        |n| [slab(c64), run(2), free(n - 7), slab(c16k)].concat(),
        |n| vec![(0, 0, u64::MAX), (0, 3, 1 << 7), (n - 4, 0, 1 << 14)],
    );
    let n = l.n_chunks;
    let st = pool.heap_stats().unwrap();
    assert_eq!(
        (
            st.chunks,
            st.free_chunks,
            st.slab_chunks,
            st.run_chunks,
            st.free_runs,
            st.largest_free_run
        ),
        (n, n - 7, 5, 2, 1, n - 7),
        "{st:?}"
    );
    assert_eq!(
        (st.per_class[c64], st.per_class[c16k], st.used_bytes),
        (65, 1, 65 * 64 + 16384 + 2 * CHUNK),
        "{st:?}"
    );
    let slab0 = l.chunk_off(0) + 128;
    let mut blocks: Vec<(u64, u64)> = (0..64).map(|b| (slab0 + b * 64, 64)).collect();
    blocks.push((slab0 + (3 * 64 + 7) * 64, 64));
    blocks.push((l.chunk_off(1), 2 * CHUNK));
    blocks.push((l.chunk_off(n - 4) + 64 + 14 * 16384, 16384));
    assert_eq!(pool.allocated_blocks().unwrap(), blocks);
}

/// A run or a slab whose chunks pass the heap's end (a table damaged, or a pool cut short) is
/// `CorruptHeap` for both reports, never counted or listed as far as it goes.
#[test]
fn a_run_or_a_slab_past_the_heaps_last_chunk_is_corrupt_heap() {
    let c16k = c16k();
    for (what, tail) in [("run", run(4)), ("slab", slab(c16k))] {
        let dir = common::shm_dir();
        // The table has room for one chunk's descriptors less than the run or slab needs.
        let (mut pool, _) = crafted(&dir, |n| [free(n - 3), tail[..3].to_vec()].concat(), |_| vec![]);
        let st = pool.heap_stats();
        assert!(matches!(st, Err(Error::CorruptHeap(_))), "{what}: {st:?}");
        let blocks = pool.allocated_blocks();
        assert!(matches!(blocks, Err(Error::CorruptHeap(_))), "{what}: {blocks:?}");
    }
}

/// `allocated_blocks` on a heap of 512 chunks whose table fills exactly one page, so that the
/// word after the last descriptor is chunk 0's first bitmap word: it reads no descriptor past
/// the last chunk, and lists no block for the bits past a slab's last block.
#[test]
fn allocated_blocks_reads_only_the_heaps_chunks_and_blocks() {
    let c64 = c64();
    let l = HeapLayout {
        table: 0,
        n_chunks: 512,
        chunks: 4096,
    };
    let mut mem = HashMap::new();
    let table = [slab(c64), free(508), run(3)].concat();
    for (i, d) in table.iter().enumerate() {
        mem.insert(l.desc_off(i as u64), d.encode());
    }
    // The first 64 blocks, block 1021 (the last), and the two bits past it.
    mem.insert(l.chunk_off(0), u64::MAX);
    mem.insert(l.chunk_off(0) + 15 * 8, 0b111 << 61);
    assert_eq!(l.desc_off(l.n_chunks), l.chunk_off(0));
    let read = |off: u64| mem.get(&off).copied().unwrap_or(0);
    let mut want: Vec<(u64, u64)> = (0..64).map(|b| (4096 + 128 + b * 64, 64)).collect();
    want.push((4096 + 128 + 1021 * 64, 64));
    want.push((l.chunk_off(509), 3 * CHUNK));
    assert_eq!(allocated_blocks(&l, read).unwrap(), want);
}

/// `chunk_of` maps an offset in chunk `i` to `i`, and an offset before chunk 0 or past the last
/// chunk to none.
#[test]
fn chunk_of_maps_offsets_inside_the_chunks_only() {
    let l = HeapLayout {
        table: 1 << 20,
        n_chunks: 10,
        chunks: (1 << 20) + 8192,
    };
    let end = l.chunks + 10 * CHUNK;
    for (off, chunk) in [
        (0, None),
        (l.chunks - 1, None),
        (l.chunks, Some(0)),
        (l.chunks + CHUNK - 8, Some(0)),
        (l.chunks + 3 * CHUNK + 100, Some(3)),
        (end - 1, Some(9)),
        (end, None),
        (end + 5 * CHUNK, None),
    ] {
        assert_eq!(l.chunk_of(off), chunk, "offset {off:#x}");
        if let Some(i) = chunk {
            assert!(l.chunk_off(i) <= off && off < l.chunk_off(i) + CHUNK);
        }
    }
}

/// The metadata reserve: a 64-byte undo record per bitmap word and one for the descriptors of
/// the densest slab (16 bitmap words of 64-byte blocks: 1088 bytes a chunk), and a jump record
/// a chunk: 1152 bytes of log a chunk of heap, 56 chunks to a chunk of reserve.
#[test]
fn the_metadata_reserve_is_one_chunk_per_56_of_heap() {
    for (chunks, reserve) in [(0, 0), (1, 1), (56, 1), (57, 2), (113, 2), (114, 3), (1000, 18)] {
        assert_eq!(metadata_reserve(chunks), reserve, "{chunks} chunks");
    }
}
