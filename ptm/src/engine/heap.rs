//! The persistent heap: 64 KiB chunks described by a persistent table; small objects in
//! size-class slabs of 1, 2 or 4 chunks with persistent bitmaps, large ones in runs of chunks.
//!
//! Heap layout (from the superblock's `heap_offset`; superblock format 3):
//!
//! ```text
//! heap_offset   align_up(table_entries * 8, 4096)  chunk table: one u64 descriptor per chunk
//! chunks        n_chunks * 64 KiB                  chunks
//! ```
//!
//! Descriptor (u64): bits 56..64 kind — 0 free, 1 slab start (bits 0..8: class index), 2 run
//! start (bits 0..32: length in chunks), 3 continuation of a run or of a slab (bits 0..32:
//! distance back to its start). A slab spans [`SlabGeom::chunks`] chunks (fixed per class,
//! [`slab_geom`]); it starts with its bitmap (one bit per block, 1 = allocated), padded to 64
//! bytes, followed by the blocks, which may cross chunk boundaries inside the slab.
//!
//! Metadata changes are transactional through the undo log (docs/design.md §10): the old value of
//! every descriptor or bitmap word a transaction changes is logged; the new value is stored at
//! commit, once the log is durable, so a crash or abort restores it. The volatile index (free
//! runs, slabs with room) is rebuilt lazily on the first allocation, not at open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::engine::align_up;
use crate::error::{Error, Result};

/// Bytes per chunk (format 3; formats 1 and 2 had 256 KiB chunks and are refused).
pub const CHUNK: u64 = 64 * 1024;
/// Block sizes of the slab classes (64-byte multiples, so every block is cache-line aligned).
pub const CLASSES: [u64; 20] = [
    64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768,
    49152, 65536,
];
/// Largest slab allocation; larger ones take whole chunks.
pub const MAX_SMALL: u64 = 65536;

const KIND_SHIFT: u32 = 56;
const KIND_FREE: u64 = 0;
const KIND_SLAB: u64 = 1;
const KIND_RUN: u64 = 2;
const KIND_CONT: u64 = 3;
const LOW32: u64 = 0xFFFF_FFFF;

/// A decoded chunk descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desc {
    /// Free chunk.
    Free,
    /// Slab of the given class index.
    Slab(usize),
    /// First chunk of a run of `n` chunks.
    Run(u64),
    /// Continuation of a run starting `d` chunks earlier.
    Cont(u64),
    /// Not a valid descriptor.
    Invalid(u64),
}

impl Desc {
    /// Decodes a stored descriptor.
    pub fn decode(v: u64) -> Desc {
        match v >> KIND_SHIFT {
            KIND_FREE if v == 0 => Desc::Free,
            KIND_SLAB if (v & LOW32) < CLASSES.len() as u64 && v & !(0xFF << KIND_SHIFT | LOW32) == 0 => {
                Desc::Slab((v & LOW32) as usize)
            }
            KIND_RUN if v & LOW32 > 0 => Desc::Run(v & LOW32),
            KIND_CONT if v & LOW32 > 0 => Desc::Cont(v & LOW32),
            _ => Desc::Invalid(v),
        }
    }

    /// Encodes a descriptor.
    pub fn encode(self) -> u64 {
        match self {
            Desc::Free => 0,
            Desc::Slab(c) => (KIND_SLAB << KIND_SHIFT) | c as u64,
            Desc::Run(n) => (KIND_RUN << KIND_SHIFT) | n,
            Desc::Cont(d) => (KIND_CONT << KIND_SHIFT) | d,
            Desc::Invalid(v) => v,
        }
    }
}

/// The class index for `size` bytes, or `None` if it needs a run.
pub fn class_of(size: u64) -> Option<usize> {
    CLASSES.iter().position(|&c| c >= size.max(1))
}

/// Geometry of a slab chunk of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabGeom {
    /// Block size.
    pub block: u64,
    /// Blocks in the chunk.
    pub blocks: u64,
    /// Offset of the first block within the chunk (after the bitmap).
    pub first: u64,
    /// Bitmap words.
    pub words: u64,
    /// Chunks the slab spans (1, 2 or 4: the fewest whose tail left over is at most 1/16 of
    /// the slab, at most 4).
    pub chunks: u64,
}

impl SlabGeom {
    /// The bits of bitmap word `w` that stand for blocks (all but the tail of the last word).
    pub fn valid_mask(&self, w: u64) -> u64 {
        if (w + 1) * 64 <= self.blocks {
            u64::MAX
        } else {
            (1u64 << (self.blocks % 64)) - 1
        }
    }
}

/// The slab geometry of class `c`.
#[inline]
pub fn slab_geom(c: usize) -> SlabGeom {
    GEOMETRIES[c]
}

/// [`slab_geom`] of every class, computed at compile time (the allocator's hot path reads it).
const GEOMETRIES: [SlabGeom; CLASSES.len()] = {
    let mut all = [SlabGeom {
        block: 0,
        blocks: 0,
        first: 0,
        words: 0,
        chunks: 0,
    }; CLASSES.len()];
    let mut c = 0;
    while c < CLASSES.len() {
        all[c] = class_geom(CLASSES[c]);
        c += 1;
    }
    all
};

/// The slab of `block`-byte blocks: the fewest chunks (1, 2 or 4) whose space left over after
/// the bitmap and the blocks is at most 1/16 of the slab, 4 if none is. Small classes thus
/// take one 64 KiB chunk, so a class with a few live blocks holds little of the heap.
const fn class_geom(block: u64) -> SlabGeom {
    let mut chunks = 1;
    loop {
        let g = compute_geom(block, chunks);
        if chunks == 4 || 16 * g.blocks * block >= 15 * chunks * CHUNK {
            return g;
        }
        chunks *= 2;
    }
}

/// The most blocks of `block` bytes that fit `chunks` chunks after their bitmap (padded to 64
/// bytes).
const fn compute_geom(block: u64, chunks: u64) -> SlabGeom {
    let bytes = chunks * CHUNK;
    let mut blocks = bytes / block;
    loop {
        let words = blocks.div_ceil(64);
        let first = (words * 8).div_ceil(64) * 64;
        if first + blocks * block <= bytes {
            return SlabGeom {
                block,
                blocks,
                first,
                words,
                chunks,
            };
        }
        blocks -= 1;
    }
}

/// Where the chunk table and the chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapLayout {
    /// Pool offset of the chunk table.
    pub table: u64,
    /// Number of chunks.
    pub n_chunks: u64,
    /// Pool offset of chunk 0.
    pub chunks: u64,
}

impl HeapLayout {
    /// The layout of a heap at `[offset, offset + size)` whose chunk table is as large as the
    /// heap needs, rounded up to a page (format 1, and the least a new pool gets).
    pub fn new(offset: u64, size: u64) -> HeapLayout {
        let mut n = size / (CHUNK + 8);
        loop {
            let table_bytes = align_up(n * 8, 4096);
            if n == 0 || table_bytes + n * CHUNK <= size {
                return HeapLayout {
                    table: offset,
                    n_chunks: n,
                    chunks: offset + table_bytes,
                };
            }
            n -= 1;
        }
    }

    /// The layout of a heap at `[offset, offset + size)` with a chunk table of `entries`
    /// descriptors (rounded up to a page): chunks start after the table, and the heap has as
    /// many as fit, at most `entries`.
    pub fn with_table(offset: u64, size: u64, entries: u64) -> HeapLayout {
        let table_bytes = align_up(entries.saturating_mul(8), 4096);
        let n = (size.saturating_sub(table_bytes) / CHUNK).min(entries);
        HeapLayout {
            table: offset,
            n_chunks: n,
            chunks: offset + table_bytes,
        }
    }

    /// Descriptors the chunk table has room for.
    pub fn table_entries(&self) -> u64 {
        (self.chunks - self.table) / 8
    }

    /// Pool offset of chunk `i`'s descriptor.
    pub fn desc_off(&self, i: u64) -> u64 {
        self.table + 8 * i
    }

    /// Pool offset of chunk `i`.
    pub fn chunk_off(&self, i: u64) -> u64 {
        self.chunks + i * CHUNK
    }

    /// The chunk holding pool offset `off`.
    pub fn chunk_of(&self, off: u64) -> Option<u64> {
        if off < self.chunks {
            return None;
        }
        let i = (off - self.chunks) / CHUNK;
        (i < self.n_chunks).then_some(i)
    }
}

/// Heap usage, as scanned from the persistent metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapStats {
    /// Chunks in the heap.
    pub chunks: u64,
    /// Free chunks.
    pub free_chunks: u64,
    /// Chunks used as slabs.
    pub slab_chunks: u64,
    /// Chunks used by large allocations.
    pub run_chunks: u64,
    /// Bytes handed out (block sizes of allocated blocks + run sizes).
    pub used_bytes: u64,
    /// Bytes free (free chunks + free slab blocks).
    pub free_bytes: u64,
    /// Allocated blocks per class (index as [`CLASSES`]).
    pub per_class: Vec<u64>,
    /// Slabs per class (index as [`CLASSES`]; each spans [`SlabGeom::chunks`] chunks).
    pub per_class_slabs: Vec<u64>,
    /// Bytes in free blocks of slabs (usable only by their own class).
    pub slab_free_bytes: u64,
    /// Number of separate free chunk runs.
    pub free_runs: u64,
    /// Largest free run, in chunks.
    pub largest_free_run: u64,
}

impl HeapStats {
    /// Blocks of class `c` that its slabs hold (used or free).
    pub fn class_capacity(&self, c: usize) -> u64 {
        self.per_class_slabs
            .get(c)
            .map_or(0, |&n| n * slab_geom(c).blocks)
    }

    /// Share of the free bytes that a request for the largest free run could not use:
    /// 1 - largest free run / free bytes (0 when all free space is one run of chunks; free slab
    /// blocks count as fragmented, since they serve only their own class).
    pub fn free_space_fragmentation(&self) -> f64 {
        if self.free_bytes == 0 {
            0.0
        } else {
            1.0 - (self.largest_free_run * CHUNK) as f64 / self.free_bytes as f64
        }
    }

    /// External fragmentation of free chunks: 1 - largest free run / free chunks (0 = one run).
    pub fn fragmentation(&self) -> f64 {
        if self.free_chunks == 0 {
            0.0
        } else {
            1.0 - self.largest_free_run as f64 / self.free_chunks as f64
        }
    }
}

/// The volatile index of the heap, built from the chunk table on first use.
#[derive(Debug, Default)]
pub(crate) struct HeapIndex {
    /// Free chunk runs not reserved by anyone: start -> length.
    pub(crate) free: BTreeMap<u64, u64>,
    /// Per class: slab chunks that may have free blocks.
    pub(crate) partial: Vec<Vec<u64>>,
    /// Chunks in `free` (the sum of its lengths).
    pub(crate) free_total: u64,
    /// Per class: an empty slab kept for the class while free chunks are plentiful, so an
    /// allocation that is freed again does not make and return a slab each time (a hint,
    /// checked under the chunk's lock before use; docs/design.md §10.3).
    pub(crate) kept: Vec<Option<u64>>,
    /// The slabs were searched for empty ones (kept by the process that wrote the pool, before
    /// it closed) the first time free chunks were scarce since this index was built.
    pub(crate) swept: bool,
}

impl HeapIndex {
    /// Best-fit reservation of `n` contiguous chunks: the shortest free run that holds them
    /// (the lowest such run on a tie), so single chunks for new slabs and log extents are cut
    /// from small gaps and long runs stay whole for large blocks.
    ///
    /// `keep` chunks must stay free afterwards (the reserves of [`Reserve`]): `None` if taking
    /// `n` would leave fewer.
    pub(crate) fn take_run(&mut self, n: u64, keep: u64) -> Option<u64> {
        if self.free_total < n.saturating_add(keep) {
            return None;
        }
        let mut best: Option<(u64, u64)> = None;
        for (&start, &len) in &self.free {
            if len >= n && best.is_none_or(|(_, b)| len < b) {
                best = Some((start, len));
                if len == n {
                    break;
                }
            }
        }
        let (start, len) = best?;
        self.free.remove(&start);
        self.free_total -= n;
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    /// Forgets slab `chunk` of class `c` (it was returned to the free chunks).
    pub(crate) fn drop_partial(&mut self, c: usize, chunk: u64) {
        self.partial[c].retain(|&a| a != chunk);
    }

    /// The longest free run, in chunks.
    pub(crate) fn largest_run(&self) -> u64 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// Returns `[start, start + n)` to the free runs, coalescing.
    pub(crate) fn give_run(&mut self, mut start: u64, mut n: u64) {
        debug_assert!(
            self.free
                .range(..start + n)
                .next_back()
                .is_none_or(|(&a, &l)| a + l <= start),
            "chunks {start}..{} given back while free: {:?}",
            start + n,
            self.free
        );
        self.free_total += n;
        if let Some((&p, &plen)) = self.free.range(..start).next_back() {
            if p + plen == start {
                self.free.remove(&p);
                start = p;
                n += plen;
            }
        }
        if let Some(&next) = self.free.get(&(start + n)) {
            self.free.remove(&(start + n));
            n += next;
        }
        self.free.insert(start, n);
    }
}

/// What a quarantined entry holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuarantineKind {
    /// Slab blocks (bits of one bitmap word): free in the bitmap, but not to be handed out.
    Block { word: u64, mask: u64 },
    /// A run of chunks kept out of the index.
    Run { start: u64, n: u64 },
}

/// Memory a committed transaction allocated *and* freed. The transaction's data hash covers it
/// (its new-range record stays in the log), so until the transaction's completion mark is
/// durable, a crash followed by a recovery that judges the transaction by its hash must find
/// those bytes unchanged: nobody may reuse them before then. Released once
/// `CompletionMarks::is_durable(lane, seq)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quarantined {
    pub(crate) lane: usize,
    pub(crate) seq: u64,
    pub(crate) kind: QuarantineKind,
}

/// Free chunks kept out of ordinary allocation (volatile: counts, not particular chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserve {
    /// For the undo log of removal-only transactions: enough log extents to record every
    /// bitmap word and chunk descriptor of the heap, so freeing any set of blocks fits
    /// ([`metadata_reserve`]).
    pub(crate) metadata: u64,
    /// [`PoolOptions::reserve`](crate::PoolOptions::reserve): for transactions that call
    /// [`Transaction::use_reserve`](crate::Transaction::use_reserve).
    pub(crate) app: u64,
}

/// Chunks of log extent that record every bitmap word and descriptor of a heap of `n_chunks`
/// (one 64-byte undo record per 8-byte word at worst: a one-chunk slab of 64-byte blocks has
/// 16 bitmap words, plus a record for its descriptors and one for a jump), with the lanes' own
/// logs not counted. 1 chunk per 56 chunks of heap, at least 1 (0 for an empty heap).
pub fn metadata_reserve(n_chunks: u64) -> u64 {
    (n_chunks * METADATA_PER_CHUNK).div_ceil(CHUNK)
}

/// Log bytes that record the metadata of one chunk at worst ([`metadata_reserve`]): for each
/// class, a 64-byte record per bitmap word and one for the slab's descriptors, spread over the
/// slab's chunks, and a jump record per chunk.
const METADATA_PER_CHUNK: u64 = {
    let mut most = 0;
    let mut c = 0;
    while c < CLASSES.len() {
        let g = GEOMETRIES[c];
        let per = ((g.words + 1) * 64).div_ceil(g.chunks);
        if per > most {
            most = per;
        }
        c += 1;
    }
    most + 64
};

/// Heap state shared by all transactions of a pool.
#[derive(Debug)]
pub(crate) struct Heap {
    /// The layout at open; the number of chunks is `n_chunks` (it grows with the pool).
    base: HeapLayout,
    /// Chunks in the heap now (at most the table's entries).
    n_chunks: std::sync::atomic::AtomicU64,
    pub(crate) reserve: Reserve,
    /// Per chunk of the table's capacity: lane + 1 of the transaction changing its metadata
    /// (volatile; held to the end of that transaction).
    pub(crate) locks: Box<[AtomicU32]>,
    pub(crate) index: Mutex<Option<HeapIndex>>,
    /// `index` is built (set once, under its lock).
    pub(crate) index_built: std::sync::atomic::AtomicBool,
    /// The index's `free_total` as of its last use (read without the lock by checks that
    /// only need an estimate, e.g. whether free chunks are scarce).
    pub(crate) free_chunks_seen: std::sync::atomic::AtomicU64,
    /// See [`Quarantined`]; lock order: quarantine before index.
    pub(crate) quarantine: Mutex<Vec<Quarantined>>,
    /// Entries in `quarantine` (checked without the lock on fast paths).
    pub(crate) quarantined: std::sync::atomic::AtomicUsize,
}

impl Heap {
    /// A heap keeping the metadata reserve and `app_reserve` bytes (whole chunks, rounded up)
    /// free for the transactions entitled to them; reserves are capped so that ordinary
    /// allocation keeps at least half of the heap.
    pub(crate) fn new(layout: HeapLayout, app_reserve: u64) -> Heap {
        let metadata = metadata_reserve(layout.n_chunks).min(layout.n_chunks / 2);
        let app = app_reserve
            .div_ceil(CHUNK)
            .min((layout.n_chunks / 2).saturating_sub(metadata));
        Heap {
            base: layout,
            n_chunks: std::sync::atomic::AtomicU64::new(layout.n_chunks),
            reserve: Reserve { metadata, app },
            locks: zeroed_atomics(layout.table_entries() as usize),
            index: Mutex::new(None),
            index_built: std::sync::atomic::AtomicBool::new(false),
            free_chunks_seen: std::sync::atomic::AtomicU64::new(0),
            quarantine: Mutex::new(Vec::new()),
            quarantined: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Where the chunk table and the chunks are, with the number of chunks now.
    pub(crate) fn layout(&self) -> HeapLayout {
        HeapLayout {
            n_chunks: self.n_chunks.load(Ordering::Acquire),
            ..self.base
        }
    }

    /// The pool grew: the heap has `n` chunks now (at most the table's entries). The new ones
    /// (free: their descriptors were zeroed with the table) join the index if it is built;
    /// else its build finds them.
    pub(crate) fn grow_to(&self, n: u64) {
        let n = n.min(self.base.table_entries());
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.n_chunks.load(Ordering::Acquire);
        if n <= old {
            return;
        }
        self.n_chunks.store(n, Ordering::Release);
        if let Some(idx) = guard.as_mut() {
            idx.give_run(old, n - old);
        }
    }

    /// Tries to take chunk `i`'s metadata lock for `lane`; true if taken or already held.
    pub(crate) fn try_lock_chunk(&self, i: u64, lane: usize) -> std::result::Result<bool, ()> {
        let me = lane as u32 + 1;
        let lock = &self.locks[i as usize];
        // Re-entrant use (a transaction allocating many blocks from its slab) needs no locked
        // instruction: only the holder can have stored `me`.
        if lock.load(Ordering::Relaxed) == me {
            return Ok(false);
        }
        match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(true),
            Err(cur) if cur == me => Ok(false),
            Err(_) => Err(()),
        }
    }

    pub(crate) fn unlock_chunk(&self, i: u64) {
        self.locks[i as usize].store(0, Ordering::Release);
    }

    /// Runs `f` on the index, building it from the chunk table (read through `desc`) first if
    /// needed.
    pub(crate) fn with_index<T>(
        &self,
        desc: impl Fn(u64) -> u64,
        f: impl FnOnce(&mut HeapIndex) -> T,
    ) -> Result<T> {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(build_index(&self.layout(), desc)?);
            self.index_built.store(true, Ordering::Release);
        }
        let idx = guard.as_mut().expect("built above");
        let r = f(idx);
        self.free_chunks_seen.store(idx.free_total, Ordering::Relaxed);
        Ok(r)
    }
}

/// Every allocated block of the heap `l` as `(pool offset, block size)`, in address order, read
/// from the persistent metadata through `read` (a `u64` at a pool offset): for leak checks and
/// reachability tracing (`Pool::allocated_blocks`, and `ptm check` on a pool it only maps).
///
/// # Errors
///
/// [`Error::CorruptHeap`] if the chunk table is malformed.
pub fn allocated_blocks(l: &HeapLayout, read: impl Fn(u64) -> u64) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < l.n_chunks {
        match Desc::decode(read(l.desc_off(i))) {
            Desc::Free => i += 1,
            Desc::Slab(c) => {
                let g = slab_geom(c);
                if i + g.chunks > l.n_chunks {
                    return Err(Error::CorruptHeap("slab past the end of the heap"));
                }
                for w in 0..g.words {
                    let bits = read(l.chunk_off(i) + w * 8) & g.valid_mask(w);
                    for b in (0..64).filter(|b| bits & (1 << b) != 0) {
                        out.push((l.chunk_off(i) + g.first + (w * 64 + b) * g.block, g.block));
                    }
                }
                i += g.chunks;
            }
            Desc::Run(n) if i + n <= l.n_chunks => {
                out.push((l.chunk_off(i), n * CHUNK));
                i += n;
            }
            _ => return Err(Error::CorruptHeap("malformed chunk table")),
        }
    }
    Ok(out)
}

/// Scans heap usage from the persistent metadata, reading u64 words through `read`.
pub(crate) fn scan_stats(l: &HeapLayout, read: impl Fn(u64) -> u64) -> Result<HeapStats> {
    let mut st = HeapStats {
        chunks: l.n_chunks,
        per_class: vec![0; CLASSES.len()],
        per_class_slabs: vec![0; CLASSES.len()],
        ..Default::default()
    };
    let mut run = 0u64;
    let mut i = 0;
    let end_run = |st: &mut HeapStats, run: &mut u64| {
        if *run > 0 {
            st.free_runs += 1;
            st.largest_free_run = st.largest_free_run.max(*run);
            *run = 0;
        }
    };
    while i < l.n_chunks {
        match Desc::decode(read(l.desc_off(i))) {
            Desc::Free => {
                st.free_chunks += 1;
                st.free_bytes += CHUNK;
                run += 1;
                i += 1;
                continue;
            }
            Desc::Slab(c) => {
                let g = slab_geom(c);
                let used: u64 = (0..g.words)
                    .map(|w| u64::from(read(l.chunk_off(i) + w * 8).count_ones()))
                    .sum();
                if i + g.chunks > l.n_chunks {
                    return Err(Error::CorruptHeap("slab past the end of the heap"));
                }
                st.slab_chunks += g.chunks;
                st.per_class[c] += used;
                st.per_class_slabs[c] += 1;
                st.used_bytes += used * g.block;
                st.free_bytes += (g.blocks - used.min(g.blocks)) * g.block;
                st.slab_free_bytes += (g.blocks - used.min(g.blocks)) * g.block;
                i += g.chunks;
            }
            Desc::Run(n) if i + n <= l.n_chunks => {
                st.run_chunks += n;
                st.used_bytes += n * CHUNK;
                i += n;
            }
            _ => return Err(Error::CorruptHeap("malformed chunk table")),
        }
        end_run(&mut st, &mut run);
    }
    end_run(&mut st, &mut run);
    Ok(st)
}

/// `n` atomics set to zero, from a zeroed allocation: the OS maps the pages lazily, so this is
/// O(1) however large the heap (opening a pool must not touch per-chunk state).
fn zeroed_atomics(n: usize) -> Box<[AtomicU32]> {
    // SAFETY: `AtomicU32` has the same size, alignment and bit validity as `u32`, for which all
    // zero bits is a valid value (0).
    unsafe { Box::<[AtomicU32]>::new_zeroed_slice(n).assume_init() }
}

/// Scans the chunk table into a volatile index; a malformed table is `CorruptMetadata`.
pub(crate) fn build_index(layout: &HeapLayout, desc: impl Fn(u64) -> u64) -> Result<HeapIndex> {
    let corrupt = || Error::CorruptHeap("malformed chunk table");
    let mut idx = HeapIndex {
        free: BTreeMap::new(),
        partial: vec![Vec::new(); CLASSES.len()],
        free_total: 0,
        kept: vec![None; CLASSES.len()],
        swept: false,
    };
    let mut i = 0;
    while i < layout.n_chunks {
        match Desc::decode(desc(i)) {
            Desc::Free => {
                let start = i;
                while i < layout.n_chunks && desc(i) == 0 {
                    i += 1;
                }
                idx.free.insert(start, i - start);
                idx.free_total += i - start;
            }
            Desc::Slab(c) => {
                let n = slab_geom(c).chunks;
                if i + n > layout.n_chunks || (1..n).any(|k| Desc::decode(desc(i + k)) != Desc::Cont(k)) {
                    return Err(Error::CorruptHeap("slab without its continuation chunks"));
                }
                idx.partial[c].push(i);
                i += n;
            }
            Desc::Run(n) => {
                if i + n > layout.n_chunks {
                    return Err(corrupt());
                }
                for k in 1..n {
                    if Desc::decode(desc(i + k)) != Desc::Cont(k) {
                        return Err(corrupt());
                    }
                }
                i += n;
            }
            Desc::Cont(_) | Desc::Invalid(_) => return Err(corrupt()),
        }
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() {
        for d in [
            Desc::Free,
            Desc::Slab(0),
            Desc::Slab(19),
            Desc::Run(1),
            Desc::Run(4000),
            Desc::Cont(3),
        ] {
            assert_eq!(Desc::decode(d.encode()), d);
        }
        assert!(matches!(
            Desc::decode(KIND_SLAB << KIND_SHIFT | 20),
            Desc::Invalid(_)
        ));
        assert!(matches!(Desc::decode(KIND_RUN << KIND_SHIFT), Desc::Invalid(_)));
        assert!(matches!(Desc::decode(1), Desc::Invalid(_)));
    }

    #[test]
    fn slab_geometry_fits_every_class() {
        for c in 0..CLASSES.len() {
            let g = slab_geom(c);
            assert!(g.first + g.blocks * g.block <= g.chunks * CHUNK, "class {c}");
            assert!([1, 2, 4].contains(&g.chunks), "class {c}");
            // The tail left over is at most 1/16 of the slab, but for the largest classes.
            assert!(
                16 * g.blocks * g.block >= 15 * g.chunks * CHUNK || g.chunks == 4,
                "class {c}"
            );
            assert!(g.words * 64 >= g.blocks);
            assert_eq!(g.first % 64, 0);
            assert!(g.blocks >= 3, "class {c} has {} blocks", g.blocks);
        }
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(64), Some(0));
        assert_eq!(class_of(65), Some(1));
        assert_eq!(class_of(65536), Some(19));
        assert_eq!(class_of(65537), None);
    }

    #[test]
    fn layout_fits_the_heap() {
        for size in [0, 4096, CHUNK, 10 * CHUNK, 4096 + 10 * CHUNK + 80, 1 << 32] {
            let l = HeapLayout::new(1 << 20, size);
            assert!(
                l.chunks - l.table + l.n_chunks * CHUNK <= size.max(l.chunks - l.table),
                "{size}"
            );
            assert!(l.n_chunks * 8 <= l.chunks - l.table);
        }
        assert_eq!(HeapLayout::new(0, 4096 + 10 * CHUNK).n_chunks, 10);
        // A table with room for growth: the same chunks at first, more as the heap grows,
        // never past the table's capacity.
        let small = HeapLayout::with_table(0, 16384 + 10 * CHUNK, 2000);
        assert_eq!(
            (small.n_chunks, small.chunks, small.table_entries()),
            (10, 16384, 2048)
        );
        let grown = HeapLayout::with_table(0, 16384 + 100 * CHUNK, 2000);
        assert_eq!((grown.n_chunks, grown.chunks), (100, 16384));
        assert_eq!(HeapLayout::with_table(0, 1 << 40, 2000).n_chunks, 2000);
    }

    #[test]
    fn index_build_and_runs() {
        let layout = HeapLayout {
            table: 0,
            n_chunks: 8,
            chunks: 4096,
        };
        let table = [
            0,
            Desc::Run(2).encode(),
            Desc::Cont(1).encode(),
            0,
            0,
            Desc::Slab(3).encode(),
            0,
            0,
        ];
        let mut idx = build_index(&layout, |i| table[i as usize]).unwrap();
        assert_eq!(
            idx.free.iter().map(|(&a, &b)| (a, b)).collect::<Vec<_>>(),
            [(0, 1), (3, 2), (6, 2)]
        );
        assert_eq!(idx.partial[3], [5]);
        assert_eq!(idx.free_total, 5);
        assert_eq!(idx.take_run(2, 3), Some(3)); // best fit: the run of 2, not the first
        assert_eq!(idx.take_run(1, 3), None); // would leave 2 free of the 3 to keep
        idx.give_run(3, 2);
        assert_eq!(idx.take_run(3, 0), None);
        assert_eq!(idx.take_run(1, 0), Some(0));
        assert_eq!(idx.free_total, 4);
        let bad = [Desc::Cont(1).encode(), 0, 0, 0, 0, 0, 0, 0];
        assert!(build_index(&layout, |i| bad[i as usize]).is_err());
        let short = [0, 0, 0, 0, 0, 0, 0, Desc::Run(2).encode()];
        assert!(build_index(&layout, |i| short[i as usize]).is_err());
        // A slab of 16 KiB blocks spans 4 chunks: its first chunk is listed, its continuations
        // are neither free nor listed; a slab whose continuations are missing, or that passes
        // the heap's end, is corrupt.
        let c16k = class_of(16384).unwrap();
        assert_eq!(slab_geom(c16k).chunks, 4);
        let multi = [
            0,
            Desc::Slab(c16k).encode(),
            Desc::Cont(1).encode(),
            Desc::Cont(2).encode(),
            Desc::Cont(3).encode(),
            0,
            0,
            0,
        ];
        let idx = build_index(&layout, |i| multi[i as usize]).unwrap();
        assert_eq!(idx.partial[c16k], [1]);
        assert_eq!(idx.free_total, 4);
        let stats = scan_stats(&layout, |off| {
            if off < layout.chunks {
                multi[(off / 8) as usize]
            } else {
                0
            }
        })
        .unwrap();
        assert_eq!((stats.slab_chunks, stats.free_chunks), (4, 4));
        let mut torn = multi;
        torn[3] = 0;
        assert!(matches!(
            build_index(&layout, |i| torn[i as usize]),
            Err(Error::CorruptHeap(_))
        ));
        let past_end = [
            0,
            0,
            0,
            0,
            0,
            0,
            Desc::Slab(c16k).encode(),
            Desc::Cont(1).encode(),
        ];
        assert!(build_index(&layout, |i| past_end[i as usize]).is_err());
        assert!(scan_stats(&layout, |off| if off < layout.chunks {
            past_end[(off / 8) as usize]
        } else {
            0
        })
        .is_err());
    }
}
