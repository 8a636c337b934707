//! [`PQueue`]: a double-ended queue in the pool, stored in fixed-size chunks reached through a
//! directory, so that growth at either end costs at most one chunk however long the queue is.

use std::collections::BTreeSet;
use std::fmt;
use std::mem::size_of;

use ptm::{Loggable, Nested, PCell, PPtr, Persistent, Result, SnapshotBatch, Transaction};

use crate::owned::{doom_on_err, or_free_fresh, Frees};
use crate::raw::{self, Span};
use crate::{PHandle, PValue};

/// Most bytes of one chunk: a full chunk holds the largest power-of-two number of elements that
/// fits, but at least [`MIN_CHUNK`].
const CHUNK_BYTES: u64 = 64 << 10;
/// Fewest elements of a full chunk (for elements over 4 KiB).
const MIN_CHUNK: u64 = 16;
/// Elements of the first chunk of an empty queue (it doubles up to the full chunk size).
pub(crate) const FIRST_CHUNK: u64 = 4;

/// Elements of a full chunk of `size`-byte elements: the largest power of two `n` with
/// `n × size <= CHUNK_BYTES`, at least [`MIN_CHUNK`].
pub(crate) const fn chunk_elems(size: usize) -> u64 {
    let fit = CHUNK_BYTES / if size == 0 { 1 } else { size as u64 };
    if fit < MIN_CHUNK {
        MIN_CHUNK
    } else {
        1 << (63 - fit.leading_zeros())
    }
}

/// A persistent double-ended queue (a pool's `VecDeque<T>`). `push` appends at the back, `pop`
/// takes from the front, [`push_front`](PQueue::push_front) and [`pop_back`](PQueue::pop_back)
/// work the other ends, `get(pos)` reads any position in O(1); [`insert`](PQueue::insert),
/// [`remove`](PQueue::remove), [`retain`](PQueue::retain), [`truncate`](PQueue::truncate),
/// [`rotate_left`](PQueue::rotate_left) / [`rotate_right`](PQueue::rotate_right),
/// [`range`](PQueue::range) (double-ended) and [`reserve`](PQueue::reserve) /
/// [`capacity`](PQueue::capacity) follow `VecDeque`, returning `false` or `None` where std
/// panics (a position past the end).
///
/// The elements live in **chunks** reached through a **directory** (a ring of chunk pointers),
/// so that no operation ever copies the queue: a full chunk holds the largest power-of-two
/// number of elements fitting 64 KiB (at least 16). A small queue has one chunk, used as a
/// ring, which starts at 4 elements and doubles (moving its elements) until it reaches the
/// full size; from then on a push that finds the last chunk full allocates one new chunk (and,
/// rarely, a directory of twice the slots, 8 bytes per chunk), and a pop that empties the front
/// chunk frees it. So the work and the cache lines flushed by any one push are bounded by one
/// chunk and the directory, independent of the queue's length (over a million `u64` pushes,
/// at most 1 053 cache lines flushed by one push, where a single doubling buffer flushes 131 097
/// at its last growth: `tests/collections/queue_growth.rs`).
///
/// Elements are `Copy` values ([`push`](PQueue::push), [`pop`](PQueue::pop), ...) or nested
/// collection handles ([`push_new`](PQueue::push_new), [`front_ref`](PQueue::front_ref),
/// [`pop_free`](PQueue::pop_free), [`insert_new`](PQueue::insert_new),
/// [`remove_free`](PQueue::remove_free), [`retain_free`](PQueue::retain_free)); `clear` and
/// `free` free what the elements own. Handles shifted by an insertion or removal move by their
/// bytes (a handle is offsets: what it owns stays put).
///
/// A push at the front that finds the front chunk full allocates a chunk *before* it (a
/// directory slot before the front one; the directory is a ring), and a small ring full at a
/// push at the front doubles with its elements in the back half of the new chunk. Removals
/// (`pop_back`, `remove`, `retain`, `truncate`) free the chunks they empty and allocate
/// nothing, so they never fail for lack of pool space.
///
/// Drains: every change costs **2** on its own, growth included (allocations first, then one
/// snapshot batch that records the frees last, then the stores: a fresh chunk or directory is
/// new memory of the transaction, never logged): `push`, `push_front`, `push_new`,
/// `push_front_new`, `pop`, `pop_back`, `pop_free`, `pop_back_free`, `insert`, `insert_new`,
/// `remove`, `remove_free` (the shorter side's elements are logged), `retain`,
/// `retain_free`, `truncate`, `rotate_left`/`right`
/// (every element logged), `reserve` (when it grows) and `clear`; `peek`, `front`, `back`,
/// `get`, `front_ref`, `back_ref`, `len`, `capacity`, `iter`, `range` and `to_vec` cost 0
/// (asserted in `tests/deque.rs` and `tests/drains.rs`).
///
/// `!Sync`: share it under a [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PQueue<T> {
    /// The directory: `dcap` chunk pointers (null when the queue has no chunk).
    dir: PCell<PPtr<PPtr<T>>>,
    /// Slots of the directory.
    dcap: PCell<u64>,
    /// Directory slot of the front chunk.
    dhead: PCell<u64>,
    /// Elements per chunk (a power of two).
    ccap: PCell<u64>,
    /// Slot of the front element in the front chunk.
    head: PCell<u64>,
    /// Number of elements.
    len: PCell<u64>,
}

const _: () = assert!(size_of::<PQueue<u64>>() == 48);

/// Byte offsets of a handle's `dir`, `dcap`, `dhead`, `ccap`, `head` and `len` words (for the
/// schema-driven walk, `walk.rs`).
pub(crate) const FIELDS: [usize; 6] = [
    std::mem::offset_of!(PQueue<u8>, dir),
    std::mem::offset_of!(PQueue<u8>, dcap),
    std::mem::offset_of!(PQueue<u8>, dhead),
    std::mem::offset_of!(PQueue<u8>, ccap),
    std::mem::offset_of!(PQueue<u8>, head),
    std::mem::offset_of!(PQueue<u8>, len),
];

// SAFETY: `repr(C)` of six 8-byte `PCell`s: no padding whatever `T` is; every bit pattern is
// valid (the shape is checked by `PQueue::shape` before use, pointers by `Transaction::deref`);
// no virtual address.
unsafe impl<T: Persistent> Persistent for PQueue<T> {}

/// The whole handle, logged as one undo record.
struct Header<'a, T>(&'a PQueue<T>);

// SAFETY: every byte of a `PQueue` is inside its `PCell`s (interior-mutable), and `PQueue` is
// `!Sync` (or guarded by a lock the transaction holds), so only this thread reaches them.
unsafe impl<T> Loggable for Header<'_, T> {
    fn log_range(&self) -> (usize, usize) {
        (std::ptr::from_ref(self.0) as usize, size_of::<PQueue<T>>())
    }
}

/// The queue's shape, read from the handle and checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// The directory (null: no chunk, and every other field is 0).
    pub(crate) dir: PPtr<u8>,
    pub(crate) dcap: u64,
    pub(crate) dhead: u64,
    pub(crate) ccap: u64,
    pub(crate) head: u64,
    pub(crate) len: u64,
    /// Chunks in use (from `dhead`): 0 without a directory; 1 for a ring; else the chunks
    /// `head..head + len` spans, at least 1.
    pub(crate) chunks: u64,
    /// One chunk used as a ring (`ccap` below the full chunk size).
    pub(crate) ring: bool,
}

impl<T: Persistent> PQueue<T> {
    const ELEM_OK: () = assert!(size_of::<T>() > 0, "PQueue<T> needs a non-zero-sized T");

    /// Elements of a full chunk.
    const CHUNK: u64 = chunk_elems(size_of::<T>());

    /// The shape of the queue, checked: a corrupted handle is an error, never a wild access
    /// (beyond what `Transaction::deref` checks for the pointers).
    fn shape(&self, tx: &Transaction<'_>) -> Result<Shape> {
        let dir = self.dir.get(tx).cast::<u8>();
        let words = [
            self.dcap.get(tx),
            self.dhead.get(tx),
            self.ccap.get(tx),
            self.head.get(tx),
            self.len.get(tx),
        ];
        shape_of(dir, words, Self::CHUNK)
    }

    /// Byte offset in the directory of the slot of chunk `k < s.chunks` (0 = front).
    fn slot_off(s: &Shape, k: u64) -> Result<u64> {
        raw::elem_off::<u64>(ring_index(s.dhead, k % s.dcap, s.dcap))
    }

    /// The directory slot of chunk `k` (0 = front).
    fn dir_slot<'t>(tx: &'t Transaction<'_>, s: &Shape, k: u64) -> Result<&'t PCell<PPtr<u8>>> {
        // SAFETY: `s.dir` is this queue's live directory of `dcap` slots (freed only together
        // with storing a new pointer into `dir`), the slot is below `dcap`; the queue is `!Sync`
        // (or guarded by the caller's lock), so it is reached only by this thread, through cells.
        unsafe { raw::cell::<PPtr<u8>>(tx, s.dir, Self::slot_off(s, k)?) }
    }

    /// The pointer to chunk `k` (0 = front); an error if it is null.
    fn chunk(tx: &Transaction<'_>, s: &Shape, k: u64) -> Result<PPtr<u8>> {
        let c = Self::dir_slot(tx, s, k)?.get(tx);
        if c.is_null() {
            return Err(ptm::pmem_core::Error::NullPointer.into());
        }
        Ok(c)
    }

    /// The chunk and the byte offset in it of position `pos` (0 = front), which must be below
    /// the room of the chunks in use (`ccap` for a ring, `chunks × ccap - head` otherwise).
    fn locate(tx: &Transaction<'_>, s: &Shape, pos: u64) -> Result<(PPtr<u8>, u64)> {
        if s.ring {
            let at = ring_index(s.head, pos % s.ccap, s.ccap);
            return Ok((Self::chunk(tx, s, 0)?, raw::elem_off::<T>(at)?));
        }
        let g = s
            .head
            .checked_add(pos)
            .ok_or_else(|| raw::out_of_bounds(s.head, pos))?;
        let (k, at) = (g / s.ccap, g % s.ccap);
        if k >= s.chunks {
            return Err(raw::out_of_bounds(k, s.chunks));
        }
        Ok((Self::chunk(tx, s, k)?, raw::elem_off::<T>(at)?))
    }

    /// A reference to the element at position `pos < len`.
    ///
    /// # Safety
    ///
    /// `T` is all cells ([`PHandle`]), or the element is being discarded.
    unsafe fn elem<'t>(&self, tx: &'t Transaction<'_>, pos: u64) -> Result<&'t T> {
        let s = self.shape(tx)?;
        let (c, off) = Self::locate(tx, &s, pos)?;
        // SAFETY: `c` is a live chunk of this queue (freed only together with clearing its
        // directory slot) and the slot is below `ccap`; the queue is `!Sync` (or guarded by the
        // caller's lock), so it is reached only by this thread; through cells or not at all
        // after this use (this function's contract).
        unsafe { raw::at::<T>(tx, c, off) }
    }

    /// Number of elements (0 for a corrupted handle, whose other methods return errors).
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.shape(tx).map_or(0, |s| s.len)
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// Slots of the chunks in use (`VecDeque::capacity`): the elements, plus the free slots at
    /// either end that pushes fill without allocating (0 without a chunk; a corrupted handle
    /// reads as 0).
    pub fn capacity(&self, tx: &Transaction<'_>) -> u64 {
        self.shape(tx).map_or(0, |s| s.chunks.saturating_mul(s.ccap))
    }

    /// The blocks the queue owns: the directory, then every chunk from the front, checked to
    /// be distinct.
    fn blocks(tx: &Transaction<'_>, s: &Shape) -> Result<Vec<PPtr<u8>>> {
        if s.dir.is_null() {
            return Ok(Vec::new());
        }
        let mut out = vec![s.dir];
        let mut seen = BTreeSet::from([s.dir.offset()]);
        for k in 0..s.chunks {
            let c = Self::chunk(tx, s, k)?;
            if !seen.insert(c.offset()) {
                return Err(ptm::Error::InvalidFree {
                    offset: c.offset(),
                    what: "a PQueue block reached twice (corrupted directory)",
                });
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The pool offsets of the blocks the queue owns (for reachability and leak checks): the
    /// directory, then every chunk from the front; empty when the queue owns nothing. Not the
    /// blocks the elements own (walk them with [`get_ref`](PQueue::get_ref)).
    ///
    /// # Errors
    ///
    /// For a corrupted handle or directory (a block reached twice, a null chunk pointer).
    pub fn block_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        tx.check_live(self)?;
        let s = self.shape(tx)?;
        Ok(Self::blocks(tx, &s)?.iter().map(|b| b.offset()).collect())
    }

    /// The contiguous pieces of positions `from..to` (below the room of the chunks in use):
    /// for each, the chunk index (0 = front), the chunk, the byte offset in it and the bytes.
    fn runs(tx: &Transaction<'_>, s: &Shape, from: u64, to: u64) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        let mut pos = from;
        while pos < to {
            let (k, at) = if s.ring {
                (0, ring_index(s.head, pos % s.ccap, s.ccap))
            } else {
                let g = s
                    .head
                    .checked_add(pos)
                    .ok_or_else(|| raw::out_of_bounds(s.head, pos))?;
                (g / s.ccap, g % s.ccap)
            };
            if k >= s.chunks {
                return Err(raw::out_of_bounds(k, s.chunks));
            }
            let n = (s.ccap - at).min(to - pos);
            out.push(Run {
                chunk_index: k,
                chunk: Self::chunk(tx, s, k)?,
                byte_off: raw::elem_off::<T>(at)?,
                bytes: raw::array_bytes::<T>(n)?,
            });
            pos += n;
        }
        Ok(out)
    }

    /// Logs the slots of positions `from..to` in a snapshot batch.
    fn log_positions(
        tx: &Transaction<'_>,
        b: &mut SnapshotBatch<'_, '_>,
        s: &Shape,
        from: u64,
        to: u64,
    ) -> Result<()> {
        for r in Self::runs(tx, s, from, to)? {
            // SAFETY: slots of a live chunk of this queue (`runs` stays below the room of the
            // chunks in use), reached only through cells by this thread.
            b.add(&unsafe { Span::new(tx, r.chunk, r.byte_off, r.bytes)? })?;
        }
        Ok(())
    }

    /// The bytes of the elements at positions `from..to`, in order.
    fn read_positions(tx: &Transaction<'_>, s: &Shape, from: u64, to: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for r in Self::runs(tx, s, from, to)? {
            let start = out.len();
            // SAFETY: as in `log_positions`; read through cells.
            unsafe {
                raw::read_chunks(tx, r.chunk, r.byte_off, r.bytes, |w| {
                    out.extend_from_slice(&w.to_le_bytes());
                    true
                })?;
            }
            out.truncate(
                start + usize::try_from(r.bytes).map_err(|_| raw::out_of_bounds(r.byte_off, r.bytes))?,
            );
        }
        Ok(out)
    }

    /// Writes `bytes` (whole elements) at positions `from..`, which the caller logged (or which
    /// are fresh).
    fn write_positions(tx: &Transaction<'_>, s: &Shape, from: u64, bytes: &[u8]) -> Result<()> {
        let n = bytes.len() as u64 / size_of::<T>() as u64;
        let mut rest = bytes;
        for r in Self::runs(tx, s, from, from + n)? {
            let (piece, tail) = rest.split_at(r.bytes as usize);
            // SAFETY: as in `log_positions`; logged by the caller.
            unsafe { raw::write_bytes(tx, r.chunk, r.byte_off, piece)? };
            rest = tail;
        }
        Ok(())
    }

    /// Applies one in-place change that keeps or shortens the queue: writes `e.bytes` (whole
    /// elements) at positions `e.at..`, frees what the elements in `e.free` own, drops
    /// `e.front` elements at the front and `e.back` at the back, and frees the chunks left
    /// without an element (clearing their directory slots; an emptied queue keeps its front
    /// chunk). Positions are numbered before the change; the written ones must be kept.
    ///
    /// One snapshot drain: the written slots, the dropped slots of kept chunks (zeroed when `T`
    /// owns blocks, so that no damaged `head`/`len` can bring back a second owner), the freed
    /// directory slots and the header, then the frees, last (a failed batch frees nothing).
    /// An error after the batch dooms the transaction. Allocates nothing, so it never fails
    /// for lack of pool space.
    fn shrink(&self, tx: &Transaction<'_>, e: Shrink<'_>) -> Result<()>
    where
        T: PValue,
    {
        let s = self.shape(tx)?;
        let size = size_of::<T>() as u64;
        let written = e.bytes.len() as u64 / size;
        let kept_to = s.len.checked_sub(e.back).filter(|&t| t >= e.front);
        let Some(kept_to) = kept_to.filter(|&t| written == 0 || (e.at >= e.front && e.at + written <= t))
        else {
            return Err(raw::out_of_bounds(e.front, s.len));
        };
        let remaining = kept_to - e.front;
        // The chunks kept: `first..=last` (the front one of an emptied queue; a ring's only one).
        let (first, last) = if s.ring || remaining == 0 {
            (0, 0)
        } else {
            ((s.head + e.front) / s.ccap, (s.head + kept_to - 1) / s.ccap)
        };
        let freed: Vec<u64> = (0..s.chunks).filter(|&k| k < first || k > last).collect();
        let head = if remaining == 0 {
            0
        } else if s.ring {
            ring_index(s.head, e.front, s.ccap)
        } else {
            s.head + e.front - first * s.ccap
        };
        let dhead = ring_index(s.dhead, first, s.dcap.max(1));
        let mut dropped = Self::runs(tx, &s, 0, e.front)?;
        dropped.extend(Self::runs(tx, &s, kept_to, s.len)?);
        dropped.retain(|r| T::OWNS && (first..=last).contains(&r.chunk_index));
        let free_chunks: Vec<PPtr<u8>> = freed
            .iter()
            .map(|&k| Self::chunk(tx, &s, k))
            .collect::<Result<_>>()?;
        tx.snapshot(|b| {
            Self::log_positions(tx, b, &s, e.at, e.at + written)?;
            for r in &dropped {
                // SAFETY: dropped slots of a kept chunk of this queue, reached only through
                // cells by this thread.
                b.add(&unsafe { Span::new(tx, r.chunk, r.byte_off, r.bytes)? })?;
            }
            for &k in &freed {
                // SAFETY: the chunk's slot of this queue's live directory.
                b.add(&unsafe { Span::new(tx, s.dir, Self::slot_off(&s, k)?, 8)? })?;
            }
            b.add(&Header(self))?;
            // Last, once everything is logged: the frees' allocator records drain with the
            // batch, and a batch that failed above freed nothing.
            Frees::walk(tx, |f| {
                if T::OWNS {
                    for pos in e.free.iter().flat_map(Clone::clone) {
                        // SAFETY: an element removed by this change (its chunk is freed at
                        // commit at the earliest), discarded below.
                        unsafe { f.value(self.elem(tx, pos)?)? };
                    }
                }
                free_chunks.iter().try_for_each(|&c| f.block(c))
            })
        })?;
        let stored = (|| {
            Self::write_positions(tx, &s, e.at, e.bytes)?;
            for r in &dropped {
                // SAFETY: as above; logged in the batch.
                unsafe { raw::zero_bytes(tx, r.chunk, r.byte_off, r.bytes)? };
            }
            for &k in &freed {
                // A freed chunk never stays in the directory, where a damaged `dhead` could
                // reach it.
                Self::dir_slot(tx, &s, k)?.set(tx, PPtr::null())?;
            }
            self.dhead.set(tx, dhead)?;
            self.head.set(tx, head)?;
            self.len.set(tx, remaining)
        })();
        doom_on_err(tx, stored)
    }

    /// Verifies the queue: its shape (`dhead < dcap`, `ccap` a power of two in range,
    /// `head < ccap`, the elements fitting the chunks in use, which fit the directory), every
    /// chunk in use non-null and distinct, and every other directory slot null (a push at
    /// either end stores a new chunk into the slot after the last or before the first). 0
    /// drains; reads the directory. For tests, fuzzers and your own `check` program (see
    /// [`Verify`](crate::Verify)).
    ///
    /// # Errors
    ///
    /// [`Error::CorruptCollection`](ptm::Error::CorruptCollection) (`structure` "PQueue", the
    /// directory's offset) naming the first violation, or another error of reading a damaged
    /// directory.
    pub fn check(&self, tx: &Transaction<'_>) -> Result<()> {
        tx.check_live(self)?;
        let bad = |offset: u64, what: String| raw::corrupt("PQueue", offset, what);
        let dir = self.dir.get(tx).cast::<u8>().offset();
        let s = self
            .shape(tx)
            .map_err(|e| bad(dir, format!("a damaged handle: {e}")))?;
        Self::blocks(tx, &s).map_err(|e| bad(dir, format!("a damaged directory: {e}")))?;
        for k in s.chunks..s.dcap {
            if !Self::dir_slot(tx, &s, k)?.get(tx).is_null() {
                return Err(bad(
                    dir,
                    format!(
                        "directory slot {k} past the {} chunks in use is not null",
                        s.chunks
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Drops the front element of a non-empty queue, freeing what it owns when `free_elem`.
    /// 2 drains with the commit (see [`shrink`](PQueue::shrink)).
    fn advance(&self, tx: &Transaction<'_>, free_elem: bool) -> Result<()>
    where
        T: PValue,
    {
        self.shrink(
            tx,
            Shrink {
                front: 1,
                free: if free_elem {
                    std::slice::from_ref(&(0..1))
                } else {
                    &[]
                },
                ..Shrink::default()
            },
        )
    }
}

/// The shape of a queue whose handle holds `dir` and `[dcap, dhead, ccap, head, len]`, of
/// elements whose full chunk holds `full_chunk`, checked: a corrupted handle is an error, never
/// a wild access (beyond what `Transaction::deref` checks for the pointers). Shared by the
/// typed queue and the schema-driven walker (`walk.rs`).
pub(crate) fn shape_of(dir: PPtr<u8>, words: [u64; 5], full_chunk: u64) -> Result<Shape> {
    let [dcap, dhead, ccap, head, len] = words;
    if dir.is_null() {
        if len != 0 {
            return Err(raw::out_of_bounds(len, 0));
        }
        let none = Shape {
            dir,
            dcap: 0,
            dhead: 0,
            ccap: 0,
            head: 0,
            len: 0,
            chunks: 0,
            ring: false,
        };
        return Ok(none);
    }
    if dhead >= dcap {
        return Err(raw::out_of_bounds(dhead, dcap));
    }
    if !ccap.is_power_of_two() || ccap < FIRST_CHUNK || ccap > full_chunk {
        return Err(raw::out_of_bounds(ccap, full_chunk));
    }
    if head >= ccap {
        return Err(raw::out_of_bounds(head, ccap));
    }
    let ring = ccap < full_chunk;
    let chunks = if ring {
        if len > ccap {
            return Err(raw::out_of_bounds(len, ccap));
        }
        1
    } else {
        let end = head
            .checked_add(len)
            .ok_or_else(|| raw::out_of_bounds(head, len))?;
        end.div_ceil(ccap).max(1)
    };
    if chunks > dcap {
        return Err(raw::out_of_bounds(chunks, dcap));
    }
    // The slots of the chunks in use must be countable (`reserve_back` computes the room
    // as `chunks × ccap`): only a damaged `dcap` lets `chunks` come near 2^64 / `ccap`.
    if chunks.checked_mul(ccap).is_none() {
        return Err(raw::out_of_bounds(chunks, ccap));
    }
    Ok(Shape {
        dir,
        dcap,
        dhead,
        ccap,
        head,
        len,
        chunks,
        ring,
    })
}

/// A contiguous piece of positions inside one chunk (see `PQueue::runs`).
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Index of the chunk from the front (0 for a ring).
    chunk_index: u64,
    chunk: PPtr<u8>,
    byte_off: u64,
    bytes: u64,
}

/// One in-place change that keeps or shortens a queue (see `PQueue::shrink`).
#[derive(Debug, Default)]
struct Shrink<'a> {
    /// Elements dropped at the front.
    front: u64,
    /// Elements dropped at the back.
    back: u64,
    /// Position of the first element written.
    at: u64,
    /// Whole elements written from `at` on.
    bytes: &'a [u8],
    /// Ranges of positions whose elements' blocks are freed (removed elements, not written).
    free: &'a [std::ops::Range<u64>],
}

/// Ranges an operation adds to the snapshot batch of a reservation at either end: the slots of
/// the elements it will shift, as positions of the queue before the reservation.
type Extra<'e> = &'e dyn Fn(&mut SnapshotBatch<'_, '_>) -> Result<()>;

/// No extra range.
fn no_extra(_: &mut SnapshotBatch<'_, '_>) -> Result<()> {
    Ok(())
}

impl<T: PValue> PQueue<T> {
    /// Allocates a chunk of `n` elements; its slots are zeroed when `T` owns blocks, so that
    /// spare slots never read as a handle (fresh memory: no logging).
    fn new_chunk(tx: &Transaction<'_>, n: u64) -> Result<PPtr<u8>> {
        let bytes = raw::array_bytes::<T>(n)?;
        let c = raw::alloc_block(tx, bytes)?;
        if T::OWNS {
            // SAFETY: the fresh chunk of `n` elements, reached only by this thread.
            unsafe { raw::zero_bytes(tx, c, 0, bytes)? };
        }
        Ok(c)
    }

    /// Makes room for one element at the back and logs what the caller will write, in one
    /// batch (one snapshot drain, which also logs `extra` unless the elements move to a fresh
    /// chunk); returns the chunk, the byte offset of the new back slot and the new length,
    /// which the caller stores after writing the slot. See [`PQueue`] for the cases: a free
    /// slot (the slot and the header are logged), the first chunk, a ring that doubles, a new
    /// chunk (with, rarely, a new directory).
    fn reserve_back(&self, tx: &Transaction<'_>, extra: Extra<'_>) -> Result<(PPtr<u8>, u64, u64)> {
        let () = Self::ELEM_OK;
        let s = self.shape(tx)?;
        let len = s.len.checked_add(1).ok_or_else(|| raw::out_of_bounds(s.len, 1))?;
        if s.chunks == 0 {
            return self.first_chunk(tx, FIRST_CHUNK);
        }
        let room = if s.ring {
            s.ccap
        } else {
            s.chunks * s.ccap - s.head
        };
        if s.len < room {
            let (c, off) = Self::locate(tx, &s, s.len)?;
            tx.snapshot(|b| {
                // SAFETY: the back slot of a live chunk of this queue, reached only through
                // cells by this thread.
                b.add(&unsafe { Span::new(tx, c, off, size_of::<T>() as u64)? })?;
                b.add(&self.len)?;
                extra(b)
            })?;
            return Ok((c, off, len));
        }
        if s.ring {
            self.grow_ring(tx, &s, false)
        } else {
            self.add_chunk(tx, &s, false, extra)
        }
    }

    /// Makes room for one element at the front, as [`reserve_back`](PQueue::reserve_back) at
    /// the back: a free slot before the front in a ring or the front chunk, the first chunk, a
    /// ring that doubles (its elements moved to the back half of the new chunk), or a new
    /// chunk before the front one. `head` (and the directory) are stored; the caller writes
    /// the returned slot, then stores the returned length.
    fn reserve_front(&self, tx: &Transaction<'_>, extra: Extra<'_>) -> Result<(PPtr<u8>, u64, u64)> {
        let () = Self::ELEM_OK;
        let s = self.shape(tx)?;
        let len = s.len.checked_add(1).ok_or_else(|| raw::out_of_bounds(s.len, 1))?;
        if s.chunks == 0 {
            return self.first_chunk(tx, FIRST_CHUNK);
        }
        let head = if s.ring && s.len < s.ccap {
            Some(ring_index(s.head, s.ccap - 1, s.ccap))
        } else if !s.ring && s.head > 0 {
            Some(s.head - 1)
        } else if !s.ring && s.len == 0 {
            // An empty chunk: its last slot (the number of chunks follows from `head + len`,
            // so an empty chunk can never stay behind a new front one).
            Some(s.ccap - 1)
        } else {
            None
        };
        if let Some(head) = head {
            let (c, off) = (Self::chunk(tx, &s, 0)?, raw::elem_off::<T>(head)?);
            tx.snapshot(|b| {
                // SAFETY: the free slot before the front, in this queue's live front chunk,
                // reached only through cells by this thread.
                b.add(&unsafe { Span::new(tx, c, off, size_of::<T>() as u64)? })?;
                b.add(&Header(self))?;
                extra(b)
            })?;
            self.head.set(tx, head)?;
            return Ok((c, off, len));
        }
        if s.ring {
            self.grow_ring(tx, &s, true)
        } else {
            self.add_chunk(tx, &s, true, extra)
        }
    }

    /// The first chunk of a queue without a directory: a directory of one slot and a chunk of
    /// `n` elements (a power of two, at least [`FIRST_CHUNK`]), both fresh. Returns the slot
    /// of position 0 and the length 1, as [`reserve_back`](PQueue::reserve_back).
    fn first_chunk(&self, tx: &Transaction<'_>, n: u64) -> Result<(PPtr<u8>, u64, u64)> {
        let dir = raw::alloc_block(tx, 8)?;
        let c = or_free_fresh(tx, &[dir], Self::new_chunk(tx, n))?;
        let logged = (|| {
            tx.snapshot(|b| b.add(&Header(self)))?;
            // SAFETY: the fresh directory of one slot, reached only by this thread.
            unsafe { raw::cell::<PPtr<u8>>(tx, dir, 0)? }.set(tx, c)
        })();
        or_free_fresh(tx, &[dir, c], logged)?;
        self.dir.set(tx, dir.cast())?;
        self.dcap.set(tx, 1)?;
        self.dhead.set(tx, 0)?;
        self.ccap.set(tx, n)?;
        self.head.set(tx, 0)?;
        Ok((c, 0, 1))
    }

    /// A full ring below the full chunk size: moved to a chunk of twice the elements (see
    /// [`move_ring`](PQueue::move_ring)), with the free slot after the elements (`front`
    /// false) or before them (`front`: the elements fill the back half, and `head` is the slot
    /// before them). Returns the free slot and the new length, as
    /// [`reserve_back`](PQueue::reserve_back).
    fn grow_ring(&self, tx: &Transaction<'_>, s: &Shape, front: bool) -> Result<(PPtr<u8>, u64, u64)> {
        let new_cap = s.ccap * 2;
        let at = if front { new_cap - s.len } else { 0 };
        let new = self.move_ring(tx, s, new_cap, at)?;
        let slot = if front {
            // Logged with the header by `move_ring`.
            doom_on_err(tx, self.head.set(tx, at - 1))?;
            at - 1
        } else {
            s.len
        };
        Ok((new, raw::elem_off::<T>(slot)?, s.len + 1))
    }

    /// Moves a ring, in order, into a fresh chunk of `new_cap >= len` elements (a power of
    /// two, at most the full chunk size), from slot `at` on (`at + len <= new_cap`), frees the
    /// old chunk (at commit) and stores the new one in the same directory slot, with `head =
    /// at`. One snapshot drain. When `T` owns blocks the moved elements' old copies are zeroed
    /// (so the old chunk is logged in the batch): a stale `&T` then sees an empty handle.
    fn move_ring(&self, tx: &Transaction<'_>, s: &Shape, new_cap: u64, at: u64) -> Result<PPtr<u8>> {
        let (old, cap, len) = (Self::chunk(tx, s, 0)?, s.ccap, s.len);
        let new = Self::new_chunk(tx, new_cap)?;
        let logged = Self::slot_off(s, 0).and_then(|slot| {
            tx.snapshot(|b| {
                if T::OWNS && len > 0 {
                    // SAFETY: this queue's chunk (freed at commit), all `cap` slots live,
                    // reached only through cells by this thread.
                    b.add(&unsafe { Span::new(tx, old, 0, raw::array_bytes::<T>(cap)?)? })?;
                }
                // SAFETY: the chunk's slot of this queue's live directory.
                b.add(&unsafe { Span::new(tx, s.dir, slot, 8)? })?;
                // The fresh chunk needs no snapshot: ptm logged it as new memory at allocation.
                b.add(&Header(self))?;
                // Last, once everything is logged (a failed batch frees nothing).
                tx.free(old)
            })
        });
        or_free_fresh(tx, &[new], logged)?;
        // The old chunk's free is recorded: a failure now must not commit.
        doom_on_err(tx, self.ring_store(tx, s, (old, new), new_cap, at))?;
        Ok(new)
    }

    /// The stores of [`move_ring`](PQueue::move_ring), once logged: the ring `old`, in order,
    /// into `new` from slot `at`.
    fn ring_store(
        &self,
        tx: &Transaction<'_>,
        s: &Shape,
        (old, new): (PPtr<u8>, PPtr<u8>),
        new_cap: u64,
        at: u64,
    ) -> Result<()> {
        let (cap, len) = (s.ccap, s.len);
        // The ring in order: positions `head..cap`, then `0..head`.
        let first = len.min(cap - s.head);
        let (first_bytes, rest_bytes) = (raw::array_bytes::<T>(first)?, raw::array_bytes::<T>(len - first)?);
        let dst = raw::elem_off::<T>(at)?;
        // SAFETY: `old` is this queue's chunk of `cap` elements (its free takes effect at
        // commit, so it is still readable; logged above when zeroed), `new` the fresh chunk of
        // `new_cap >= at + len` elements; both reached only through cells by this thread.
        unsafe {
            let src = raw::elem_off::<T>(s.head)?;
            raw::move_bytes(tx, (old, src), (new, dst), first_bytes, T::OWNS)?;
            raw::move_bytes(tx, (old, 0), (new, dst + first_bytes), rest_bytes, T::OWNS)?;
        }
        Self::dir_slot(tx, s, 0)?.set(tx, new)?;
        self.head.set(tx, at)?;
        self.ccap.set(tx, new_cap)
    }

    /// Full chunks of the full size: a fresh chunk after the last one (`front` false) or
    /// before the first one (`front`: `head` becomes its last slot). When every directory
    /// slot is in use, a fresh directory of twice the slots first, into which the chunk
    /// pointers are copied in order (the old directory is freed at commit): no element moves.
    /// The batch also logs `extra`.
    fn add_chunk(
        &self,
        tx: &Transaction<'_>,
        s: &Shape,
        front: bool,
        extra: Extra<'_>,
    ) -> Result<(PPtr<u8>, u64, u64)> {
        let grow = s.chunks >= s.dcap;
        let new_dcap = if grow {
            s.dcap
                .checked_mul(2)
                .ok_or_else(|| raw::out_of_bounds(s.dcap, 2))?
        } else {
            s.dcap
        };
        let new_dir = if grow {
            let d = raw::alloc_block(tx, raw::array_bytes::<u64>(new_dcap)?)?;
            // Slots past the chunks in use are null (fresh memory: no logging).
            // SAFETY: the fresh directory of `new_dcap` slots, reached only by this thread.
            let zeroed =
                raw::array_bytes::<u64>(new_dcap).and_then(|n| unsafe { raw::zero_bytes(tx, d, 0, n) });
            or_free_fresh(tx, &[d], zeroed)?;
            d
        } else {
            s.dir
        };
        let fresh_dir: &[PPtr<u8>] = if grow { &[new_dir] } else { &[] };
        let c = or_free_fresh(tx, fresh_dir, Self::new_chunk(tx, s.ccap))?;
        let logged = (|| {
            // The free slot: after the last chunk, or before the first (`dcap - 1` slots on).
            let slot = match (grow, front) {
                (true, _) => 0,
                (false, false) => Self::slot_off(s, s.chunks)?,
                (false, true) => Self::slot_off(s, s.dcap - 1)?,
            };
            tx.snapshot(|b| {
                if !grow {
                    // SAFETY: an unused slot of this queue's live directory.
                    b.add(&unsafe { Span::new(tx, s.dir, slot, 8)? })?;
                }
                // A fresh directory needs no snapshot: ptm logged it as new memory at
                // allocation.
                b.add(&Header(self))?;
                extra(b)?;
                // Last, once everything is logged (a failed batch frees nothing).
                if grow {
                    tx.free(s.dir)?;
                }
                Ok(())
            })?;
            Ok(slot)
        })();
        let slot = or_free_fresh(tx, &[fresh_dir, &[c]].concat(), logged)?;
        let stored = self.chunk_store(tx, s, (new_dir, new_dcap), (slot, front), c);
        if grow {
            // The old directory's free is recorded: a failure now must not commit.
            doom_on_err(tx, stored)
        } else {
            stored
        }
    }

    /// The stores of [`add_chunk`](PQueue::add_chunk), once logged: the chunk pointers copied
    /// into a fresh directory when it grew (from slot 1 when the new chunk goes in front), and
    /// the new chunk `c` after the last or before the first.
    fn chunk_store(
        &self,
        tx: &Transaction<'_>,
        s: &Shape,
        (new_dir, new_dcap): (PPtr<u8>, u64),
        (slot, front): (u64, bool),
        c: PPtr<u8>,
    ) -> Result<(PPtr<u8>, u64, u64)> {
        let grow = new_dir != s.dir;
        let at = if grow {
            let shift = u64::from(front);
            for k in 0..s.chunks {
                let p = Self::dir_slot(tx, s, k)?.get(tx);
                // SAFETY: slot `k + shift <= chunks < new_dcap` of the fresh directory.
                unsafe { raw::cell::<PPtr<u8>>(tx, new_dir, raw::elem_off::<u64>(k + shift)?)? }
                    .set(tx, p)?;
            }
            self.dir.set(tx, new_dir.cast())?;
            self.dcap.set(tx, new_dcap)?;
            self.dhead.set(tx, 0)?;
            if front {
                0
            } else {
                raw::elem_off::<u64>(s.chunks)?
            }
        } else {
            if front {
                self.dhead.set(tx, ring_index(s.dhead, s.dcap - 1, s.dcap))?;
            }
            slot
        };
        // SAFETY: the free slot of the directory now in use (fresh, or logged above).
        unsafe { raw::cell::<PPtr<u8>>(tx, new_dir, at)? }.set(tx, c)?;
        if front {
            self.head.set(tx, s.ccap - 1)?;
            Ok((c, raw::elem_off::<T>(s.ccap - 1)?, s.len + 1))
        } else {
            Ok((c, 0, s.len + 1))
        }
    }

    /// The handle's six words, to tell whether the queue changed meanwhile.
    fn header_words(&self, tx: &Transaction<'_>) -> [u64; 6] {
        [
            self.dir.get(tx).offset(),
            self.dcap.get(tx),
            self.dhead.get(tx),
            self.ccap.get(tx),
            self.head.get(tx),
            self.len.get(tx),
        ]
    }

    /// Inserts the element `value` (its bytes) at position `pos`, shifting the elements on the
    /// shorter side by one slot, moved by their bytes; `false` and nothing changed if
    /// `pos > len`. One snapshot drain (the reservation's batch also logs the shifted slots
    /// unless they move to a fresh chunk). The caller marked the queue as changing
    /// ([`raw::mutating`]).
    fn insert_bytes(&self, tx: &Transaction<'_>, pos: u64, value: &[u8]) -> Result<bool> {
        let s = self.shape(tx)?;
        if pos > s.len {
            return Ok(false);
        }
        if pos < s.len - pos {
            // The front `pos` elements move one slot towards the front.
            let mut bytes = Self::read_positions(tx, &s, 0, pos)?;
            bytes.extend_from_slice(value);
            let log = |b: &mut SnapshotBatch<'_, '_>| Self::log_positions(tx, b, &s, 0, pos);
            let (_, _, len) = self.reserve_front(tx, &log)?;
            doom_on_err(
                tx,
                self.len.set(tx, len).and_then(|()| self.write_at(tx, 0, &bytes)),
            )?;
        } else {
            // The back `len - pos` elements move one slot towards the back.
            let mut bytes = value.to_vec();
            bytes.extend(Self::read_positions(tx, &s, pos, s.len)?);
            let log = |b: &mut SnapshotBatch<'_, '_>| Self::log_positions(tx, b, &s, pos, s.len);
            let (_, _, len) = self.reserve_back(tx, &log)?;
            doom_on_err(
                tx,
                self.len
                    .set(tx, len)
                    .and_then(|()| self.write_at(tx, pos, &bytes)),
            )?;
        }
        Ok(true)
    }

    /// Writes whole elements' `bytes` at positions `from..` of the queue as it is now (slots
    /// the caller logged).
    fn write_at(&self, tx: &Transaction<'_>, from: u64, bytes: &[u8]) -> Result<()> {
        let s = self.shape(tx)?;
        Self::write_positions(tx, &s, from, bytes)
    }

    /// Removes the element at position `pos < len`, shifting the elements on the shorter side
    /// by one slot (moved by their bytes), and frees what it owns when `free_elem`. One
    /// snapshot drain ([`shrink`](PQueue::shrink)); allocates nothing.
    fn remove_at(&self, tx: &Transaction<'_>, pos: u64, free_elem: bool) -> Result<()> {
        let s = self.shape(tx)?;
        if pos >= s.len {
            return Err(raw::out_of_bounds(pos, s.len));
        }
        let freed = pos..pos + 1;
        let free = if free_elem {
            std::slice::from_ref(&freed)
        } else {
            &[]
        };
        if pos < s.len - 1 - pos {
            // The front `pos` elements move one slot towards the back.
            let bytes = Self::read_positions(tx, &s, 0, pos)?;
            self.shrink(
                tx,
                Shrink {
                    front: 1,
                    at: 1,
                    bytes: &bytes,
                    free,
                    ..Shrink::default()
                },
            )
        } else {
            let bytes = Self::read_positions(tx, &s, pos + 1, s.len)?;
            self.shrink(
                tx,
                Shrink {
                    back: 1,
                    at: pos,
                    bytes: &bytes,
                    free,
                    ..Shrink::default()
                },
            )
        }
    }

    /// Keeps the elements whose flag (one per element, front to back) is `true`, in order,
    /// moving the kept ones from the first removed position on by their bytes, and frees what
    /// the removed ones own when `free_elems`. One snapshot drain
    /// ([`shrink`](PQueue::shrink)), none when every flag is `true`; allocates nothing.
    fn retain_flags(&self, tx: &Transaction<'_>, flags: &[bool], free_elems: bool) -> Result<()> {
        let s = self.shape(tx)?;
        if flags.len() as u64 != s.len {
            return Err(raw::out_of_bounds(flags.len() as u64, s.len));
        }
        let Some(first) = flags.iter().position(|k| !k) else {
            return Ok(());
        };
        let size = size_of::<T>();
        let tail = Self::read_positions(tx, &s, first as u64, s.len)?;
        let mut kept = Vec::with_capacity(tail.len());
        // Runs of removed positions, for the frees.
        let mut removed: Vec<std::ops::Range<u64>> = Vec::new();
        for (i, (elem, &keep)) in tail.chunks_exact(size).zip(&flags[first..]).enumerate() {
            let pos = (first + i) as u64;
            if keep {
                kept.extend_from_slice(elem);
            } else if let Some(r) = removed.last_mut().filter(|r| r.end == pos) {
                r.end = pos + 1;
            } else {
                removed.push(pos..pos + 1);
            }
        }
        let remaining = first as u64 + (kept.len() / size) as u64;
        self.shrink(
            tx,
            Shrink {
                back: s.len - remaining,
                at: first as u64,
                bytes: &kept,
                free: if free_elems { &removed } else { &[] },
                ..Shrink::default()
            },
        )
    }

    /// Removes the front element, freeing (at commit) everything it owns; `false` when empty.
    /// 2 drains (0 when empty), whatever the element owns.
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn pop_free(&self, tx: &Transaction<'_>) -> Result<bool> {
        raw::mutating(tx, self)?;
        if self.shape(tx)?.len == 0 {
            return Ok(false);
        }
        self.advance(tx, true)?;
        Ok(true)
    }

    /// Removes the back element, freeing (at commit) everything it owns; `false` when empty
    /// (`VecDeque::pop_back` for handles). 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn pop_back_free(&self, tx: &Transaction<'_>) -> Result<bool> {
        raw::mutating(tx, self)?;
        let len = self.shape(tx)?.len;
        if len == 0 {
            return Ok(false);
        }
        self.shrink(
            tx,
            Shrink {
                back: 1,
                free: std::slice::from_ref(&(len - 1..len)),
                ..Shrink::default()
            },
        )?;
        Ok(true)
    }

    /// Keeps the first `new_len` elements and drops the rest, freeing (at commit) what they
    /// own and the chunks left empty (`VecDeque::truncate`); nothing when `new_len >= len`.
    /// 2 drains (0 when nothing is dropped); allocates nothing.
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn truncate(&self, tx: &Transaction<'_>, new_len: u64) -> Result<()> {
        raw::mutating(tx, self)?;
        let len = self.shape(tx)?.len;
        if new_len >= len {
            return Ok(());
        }
        self.shrink(
            tx,
            Shrink {
                back: len - new_len,
                free: std::slice::from_ref(&(new_len..len)),
                ..Shrink::default()
            },
        )
    }

    /// Rotates the queue `n` places to the left: the element at position `n` becomes the front
    /// and the first `n` go to the back (`VecDeque::rotate_left`); returns `false` and changes
    /// nothing if `n > len` (where std panics). 2 drains (0 when `n` is 0 or `len`); every
    /// element is rewritten and logged (O(len), where std moves `min(n, len - n)`: the chunks
    /// are not a single ring), nothing is allocated.
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn rotate_left(&self, tx: &Transaction<'_>, n: u64) -> Result<bool> {
        raw::mutating(tx, self)?;
        let s = self.shape(tx)?;
        if n > s.len {
            return Ok(false);
        }
        if n == 0 || n == s.len {
            return Ok(true);
        }
        let mut bytes = Self::read_positions(tx, &s, n, s.len)?;
        bytes.extend(Self::read_positions(tx, &s, 0, n)?);
        self.shrink(
            tx,
            Shrink {
                bytes: &bytes,
                ..Shrink::default()
            },
        )?;
        Ok(true)
    }

    /// Rotates the queue `n` places to the right: the last `n` elements come to the front
    /// (`VecDeque::rotate_right`); returns `false` and changes nothing if `n > len`. As
    /// [`rotate_left`](PQueue::rotate_left)`(len - n)`.
    ///
    /// # Errors
    ///
    /// As [`rotate_left`](PQueue::rotate_left).
    pub fn rotate_right(&self, tx: &Transaction<'_>, n: u64) -> Result<bool> {
        raw::mutating(tx, self)?;
        let len = self.shape(tx)?.len;
        if n > len {
            return Ok(false);
        }
        self.rotate_left(tx, len - n)
    }

    /// Makes room for at least `additional` more elements without allocation, as far as one
    /// chunk goes (`VecDeque::reserve`): a queue still in its first, ring-shaped chunk grows it
    /// to the power of two that holds `len + additional` elements, up to the full chunk size
    /// (moving its elements, 2 drains); a queue of full chunks already allocates one chunk
    /// per chunk's worth of pushes, never copying, and is left as is (0 drains). So
    /// [`capacity`](PQueue::capacity) may stay below `len + additional` where std guarantees
    /// it.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors; corrupted handles.
    pub fn reserve(&self, tx: &Transaction<'_>, additional: u64) -> Result<()> {
        raw::mutating(tx, self)?;
        let () = Self::ELEM_OK;
        let s = self.shape(tx)?;
        let want = s
            .len
            .checked_add(additional)
            .ok_or_else(|| raw::out_of_bounds(s.len, additional))?;
        let cap = want
            .clamp(FIRST_CHUNK, Self::CHUNK)
            .next_power_of_two()
            .min(Self::CHUNK);
        if s.chunks == 0 {
            if additional > 0 {
                // The slot `first_chunk` returns stays unused: `len` is not stored.
                self.first_chunk(tx, cap)?;
            }
            return Ok(());
        }
        if s.ring && cap > s.ccap {
            self.move_ring(tx, &s, cap, 0)?;
        }
        Ok(())
    }

    /// Removes every element and frees the directory, the chunks and everything the elements
    /// own (at commit). 2 drains, however deeply the elements nest.
    ///
    /// # Errors
    ///
    /// For a corrupted handle or directory (an error before anything is freed when the shape
    /// or a chunk pointer is wrong; [`Error::InvalidFree`](ptm::Error::InvalidFree) for a block
    /// reached twice or not allocated); logging errors. An error after part of a damaged structure was freed
    /// dooms the transaction (see the crate docs).
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        tx.snapshot(|b| {
            b.add(&Header(self))?;
            // Last, once the handle is logged: a failed batch frees nothing.
            // SAFETY: the handle is emptied below, in this transaction.
            unsafe { self.release(tx) }
        })?;
        // Logged in the batch: these stores cannot fail.
        self.dir.set(tx, PPtr::null())?;
        self.dcap.set(tx, 0)?;
        self.dhead.set(tx, 0)?;
        self.ccap.set(tx, 0)?;
        self.head.set(tx, 0)?;
        self.len.set(tx, 0)
    }

    /// Frees the directory, the chunks and everything the elements own, without writing the
    /// handle. Every block is checked before the first is freed, and none is freed twice.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`](crate::PValue::free_owned): the queue is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.dir.get(tx).is_null() {
            // Nothing owned (whatever the other words say).
            return Ok(());
        }
        let s = self.shape(tx)?;
        let blocks = Self::blocks(tx, &s)?;
        Frees::walk(tx, |f| {
            if T::OWNS {
                for pos in 0..s.len {
                    // SAFETY: the whole queue, so this element, is being discarded.
                    unsafe { f.value(self.elem(tx, pos)?)? };
                }
            }
            blocks.into_iter().try_for_each(|b| f.block(b))
        })
    }

    /// Frees everything the queue owns (the same as [`clear`](PQueue::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.clear(tx)
    }
}

impl<T: Persistent + Copy> PQueue<T> {
    /// A copy of the front element.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn peek(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        tx.check_live(self)?;
        self.get(tx, 0)
    }

    /// A copy of the front element (`VecDeque::front`; the same as [`peek`](PQueue::peek)).
    /// 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn front(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        self.peek(tx)
    }

    /// Inserts `v` at the front (`VecDeque::push_front`). 2 drains, growth included (a new
    /// chunk before the front one, or a ring doubled with its elements in the back half).
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn push_front(&self, tx: &Transaction<'_>, v: T) -> Result<()> {
        raw::mutating(tx, self)?;
        let (c, off, len) = self.reserve_front(tx, &no_extra)?;
        let stored = (|| {
            // SAFETY: the front slot `reserve_front` logged (or fresh), reached only through
            // cells.
            unsafe { raw::cell::<T>(tx, c, off)? }.set(tx, v)?;
            self.len.set(tx, len)
        })();
        // `head` is stored already: a failure now must not commit.
        doom_on_err(tx, stored)
    }

    /// Removes and returns the back element (`VecDeque::pop_back`), freeing the back chunk
    /// when it empties. 2 drains (0 when empty); allocates nothing.
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn pop_back(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let Some(v) = self.back(tx)? else {
            return Ok(None);
        };
        self.shrink(
            tx,
            Shrink {
                back: 1,
                ..Shrink::default()
            },
        )?;
        Ok(Some(v))
    }

    /// Inserts `v` at position `pos`, shifting the elements on the shorter side by one
    /// (`VecDeque::insert`); returns `false` and changes nothing if `pos > len` (where std
    /// panics). 2 drains, growth included; the shifted elements are logged
    /// (`min(pos, len - pos)` of them).
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn insert(&self, tx: &Transaction<'_>, pos: u64, v: T) -> Result<bool> {
        raw::mutating(tx, self)?;
        self.insert_bytes(tx, pos, raw::slice_bytes(std::slice::from_ref(&v)))
    }

    /// Removes and returns the element at position `pos`, shifting the elements on the shorter
    /// side by one (`VecDeque::remove`); `None` if `pos >= len`. 2 drains; the shifted
    /// elements are logged; allocates nothing.
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn remove(&self, tx: &Transaction<'_>, pos: u64) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let Some(v) = self.get(tx, pos)? else {
            return Ok(None);
        };
        self.remove_at(tx, pos, false)?;
        Ok(Some(v))
    }

    /// Keeps only the elements for which `keep` returns `true`, in order (`VecDeque::retain`;
    /// `keep` is called once per element, front to back). 2 drains (0 when it keeps
    /// everything); the elements from the first one removed onwards are logged; chunks left
    /// empty are freed; allocates nothing.
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn retain(&self, tx: &Transaction<'_>, mut keep: impl FnMut(&T) -> bool) -> Result<()> {
        raw::mutating(tx, self)?;
        let flags: Vec<bool> = self.to_vec(tx)?.iter().map(&mut keep).collect();
        self.retain_flags(tx, &flags, false)
    }

    /// Iterates over copies of the elements at positions in `range`, in order
    /// (`VecDeque::range`; double-ended, so `.rev()` runs from the back). Bounds past the end
    /// are clamped and a reversed range is empty (where std panics). 0 drains.
    pub fn range<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        range: impl std::ops::RangeBounds<u64>,
    ) -> QueueIter<'a, T> {
        let (pos, end) = raw::clamp_range(&range, self.len(tx));
        QueueIter {
            queue: self,
            tx,
            pos,
            end: end.max(pos),
            error: None,
        }
    }

    /// A copy of the element at position `pos` from the front (O(1)).
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn get(&self, tx: &Transaction<'_>, pos: u64) -> Result<Option<T>> {
        tx.check_live(self)?;
        let s = self.shape(tx)?;
        if pos >= s.len {
            return Ok(None);
        }
        let (c, off) = Self::locate(tx, &s, pos)?;
        // SAFETY: as in `elem`; a `PCell` is a cell.
        Ok(Some(unsafe { raw::cell::<T>(tx, c, off)? }.get(tx)))
    }

    /// Appends `v` at the back. 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace) and logging errors; corrupted handles.
    pub fn push(&self, tx: &Transaction<'_>, v: T) -> Result<()> {
        raw::mutating(tx, self)?;
        let (c, off, len) = self.reserve_back(tx, &no_extra)?;
        // SAFETY: the back slot `reserve_back` logged (or fresh), reached only through cells.
        unsafe { raw::cell::<T>(tx, c, off)? }.set(tx, v)?;
        self.len.set(tx, len)
    }

    /// Removes and returns the front element. 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn pop(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let Some(v) = self.peek(tx)? else {
            return Ok(None);
        };
        self.advance(tx, false)?;
        Ok(Some(v))
    }

    /// The back (most recently pushed) element (`VecDeque::back`). 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn back(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        tx.check_live(self)?;
        match self.shape(tx)?.len {
            0 => Ok(None),
            n => self.get(tx, n - 1),
        }
    }

    /// Changes the element at position `pos` in place through `f` (the persistent `get_mut`:
    /// `f` gets a copy, which is stored back) and returns the new value; `None` if
    /// `pos >= len`. 2 drains.
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn update(&self, tx: &Transaction<'_>, pos: u64, f: impl FnOnce(&mut T)) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let s = self.shape(tx)?;
        if pos >= s.len {
            return Ok(None);
        }
        let (c, off) = Self::locate(tx, &s, pos)?;
        // SAFETY: as in `get`: a live slot of this queue, reached through its cell.
        raw::update_cell(tx, unsafe { raw::cell::<T>(tx, c, off)? }, f).map(Some)
    }

    /// Appends every element of `items` at the back (`Extend`): one push each (a snapshot
    /// drain each, plus the commit).
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn extend(&self, tx: &Transaction<'_>, items: impl IntoIterator<Item = T>) -> Result<()> {
        raw::mutating(tx, self)?;
        items.into_iter().try_for_each(|v| self.push(tx, v))
    }

    /// Iterates over copies of the elements, front to back (`VecDeque::iter`); the length is
    /// taken now. An error (a corrupted queue) ends the iteration and dooms the transaction
    /// (see the crate docs, "Iteration errors"); the iterator keeps it for `error()`.
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> QueueIter<'a, T> {
        QueueIter {
            queue: self,
            tx,
            pos: 0,
            end: self.len(tx),
            error: None,
        }
    }

    /// Copies the elements, front to back, into a `Vec`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<T>> {
        tx.check_live(self)?;
        let s = self.shape(tx)?;
        let mut out = Vec::with_capacity(usize::try_from(s.len.min(1 << 20)).unwrap_or(0));
        for pos in 0..s.len {
            let (c, off) = Self::locate(tx, &s, pos)?;
            // SAFETY: as in `get`.
            out.push(unsafe { raw::cell::<T>(tx, c, off)? }.get(tx));
        }
        Ok(out)
    }
}

/// A queue of nested collections ([`PString`](crate::PString), [`PVec`](crate::PVec), your
/// own [`PHandle`] structs): created in place by [`push_new`](PQueue::push_new),
/// [`push_front_new`](PQueue::push_front_new) and [`insert_new`](PQueue::insert_new), reached
/// by [`front_ref`](PQueue::front_ref) and [`get_ref`](PQueue::get_ref), removed with
/// everything they own by [`pop_free`](PQueue::pop_free), [`pop_back_free`](PQueue::pop_back_free),
/// [`remove_free`](PQueue::remove_free), [`retain_free`](PQueue::retain_free),
/// [`truncate`](PQueue::truncate) and [`clear`](PQueue::clear).
///
/// As for [`PVec`](crate::PVec)'s handle methods, references are [`Nested`](ptm::Nested) guards,
/// and one taken before any change of the queue (a `push_new`, which may double a small ring,
/// a removal) is **stale**: writes through it fail with
/// [`Error::StaleReference`](ptm::Error::StaleReference).
impl<T: PHandle> PQueue<T> {
    /// Appends an empty handle (all-zero bytes) at the back and returns a reference to it.
    /// 2 drains, growth included (a ring's doubling moves the handles by bytes and zeroes and
    /// logs their old copies; a new chunk moves nothing).
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn push_new<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Nested<'t, T>> {
        raw::mutating(tx, self)?;
        let (c, off, len) = self.reserve_back(tx, &no_extra)?;
        // SAFETY: the back slot `reserve_back` logged (or fresh); zero is the empty handle.
        unsafe { raw::zero_bytes(tx, c, off, size_of::<T>() as u64)? };
        self.len.set(tx, len)?;
        // SAFETY: the back element now; `T` is all cells.
        unsafe { self.elem(tx, len - 1) }.map(|v| tx.nested(self, v))
    }

    /// A reference to the front element, if any. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn front_ref<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<Nested<'t, T>>> {
        tx.check_live(self)?;
        self.get_ref(tx, 0)
    }

    /// A reference to the element at position `pos` from the front, if any (O(1)). 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, pos: u64) -> Result<Option<Nested<'t, T>>> {
        tx.check_live(self)?;
        if pos >= self.shape(tx)?.len {
            return Ok(None);
        }
        // SAFETY: `pos < len`; `T` is all cells.
        unsafe { self.elem(tx, pos) }.map(|v| Some(tx.nested(self, v)))
    }

    /// Inserts an empty handle (all-zero bytes) at the front and returns a reference to it
    /// (`push_front` for nested collections). 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn push_front_new<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Nested<'t, T>> {
        raw::mutating(tx, self)?;
        let (c, off, len) = self.reserve_front(tx, &no_extra)?;
        let stored = (|| {
            // SAFETY: the front slot `reserve_front` logged (or fresh); zero is the empty
            // handle.
            unsafe { raw::zero_bytes(tx, c, off, size_of::<T>() as u64)? };
            self.len.set(tx, len)
        })();
        doom_on_err(tx, stored)?;
        // SAFETY: the front element now; `T` is all cells.
        unsafe { self.elem(tx, 0) }.map(|v| tx.nested(self, v))
    }

    /// A reference to the back element, if any. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn back_ref<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<Nested<'t, T>>> {
        tx.check_live(self)?;
        match self.shape(tx)?.len {
            0 => Ok(None),
            n => self.get_ref(tx, n - 1),
        }
    }

    /// Inserts an empty handle (all-zero bytes) at position `pos` and returns a reference to it
    /// (`VecDeque::insert` for nested collections); `None` and nothing changed if `pos > len`
    /// (where std panics). The handles on the shorter side move one slot by their bytes (a
    /// handle is an offset: what it owns stays where it is). 2 drains, growth included; the
    /// moved handles are logged (`min(pos, len - pos)` of them). Marks every reference taken
    /// from the queue stale.
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn insert_new<'t>(&'t self, tx: &'t Transaction<'_>, pos: u64) -> Result<Option<Nested<'t, T>>> {
        raw::mutating(tx, self)?;
        if !self.insert_bytes(tx, pos, &vec![0u8; size_of::<T>()])? {
            return Ok(None);
        }
        // SAFETY: `pos < len` now; `T` is all cells.
        unsafe { self.elem(tx, pos) }.map(|v| Some(tx.nested(self, v)))
    }

    /// Removes the element at position `pos`, freeing (at commit) everything it owns
    /// (`VecDeque::remove` for nested collections, as [`pop_free`](PQueue::pop_free) is
    /// `pop_front`); `false` and nothing changed if `pos >= len`. The handles on the shorter
    /// side move one slot by their bytes; the slot left free is zeroed. 2 drains (0 when
    /// `pos >= len`), whatever the element owns; allocates nothing, so it never fails for lack
    /// of pool space. Marks every reference taken from the queue stale.
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn remove_free(&self, tx: &Transaction<'_>, pos: u64) -> Result<bool> {
        raw::mutating(tx, self)?;
        if pos >= self.shape(tx)?.len {
            return Ok(false);
        }
        self.remove_at(tx, pos, true)?;
        Ok(true)
    }

    /// Keeps only the elements for which `keep` returns `true`, in order, freeing (at commit)
    /// everything the others own (`VecDeque::retain` for nested collections). `keep` is called
    /// once per element, front to back, with a reference it may read through and write
    /// through (a change of the element's own contents is kept); it must not change the queue
    /// itself. The kept handles from the first removed one on move by their bytes; chunks left
    /// empty are freed. 2 drains (0 when everything is kept), whatever the elements own;
    /// allocates nothing. Marks every reference taken from the queue stale.
    ///
    /// # Errors
    ///
    /// [`Error::StaleReference`](ptm::Error::StaleReference) if `keep` changed the queue's
    /// handle (a push, a removal, ...: the retain then changes nothing itself), or wrote
    /// through a reference a change made stale; otherwise as [`clear`](PQueue::clear).
    pub fn retain_free(&self, tx: &Transaction<'_>, mut keep: impl FnMut(&T) -> bool) -> Result<()> {
        raw::mutating(tx, self)?;
        let len = self.shape(tx)?.len;
        let header = self.header_words(tx);
        let mut flags = Vec::with_capacity(usize::try_from(len.min(1 << 20)).unwrap_or(0));
        for pos in 0..len {
            // SAFETY: `pos < len`, and the handle is as it was when `len` was read (checked
            // after every call of `keep`); `T` is all cells.
            let elem = tx.nested(self, unsafe { self.elem(tx, pos)? });
            flags.push(keep(&elem));
            drop(elem);
            if self.header_words(tx) != header {
                // `keep` changed the queue: the flags no longer name its elements. (A change
                // that leaves the handle as it was, such as a removal and an insertion at the
                // same place, is taken as it is: the elements' bytes are read below, after
                // the last call, so nothing is freed or kept twice either way.)
                return Err(ptm::Error::StaleReference);
            }
        }
        raw::mutating(tx, self)?;
        self.retain_flags(tx, &flags, true)
    }
}

/// `(head + pos) % cap` for `head, pos < cap`, without overflow.
pub(crate) fn ring_index(head: u64, pos: u64, cap: u64) -> u64 {
    if pos < cap - head {
        head + pos
    } else {
        pos - (cap - head)
    }
}

impl<T> fmt::Debug for PQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PQueue { .. }")
    }
}

/// Iterator over copies of a [`PQueue`]'s elements, front to back; see [`PQueue::iter`].
pub struct QueueIter<'a, T> {
    queue: &'a PQueue<T>,
    tx: &'a Transaction<'a>,
    pos: u64,
    end: u64,
    error: Option<ptm::Error>,
}

impl<T> QueueIter<'_, T> {
    /// The error that ended the iteration early, if any (only on a corrupted queue). Such an
    /// error also dooms the transaction.
    pub fn error(&self) -> Option<&ptm::Error> {
        self.error.as_ref()
    }
}

impl<T: Persistent + Copy> Iterator for QueueIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.error.is_some() || self.pos >= self.end {
            return None;
        }
        let r = self.queue.get(self.tx, self.pos);
        let v = raw::iteration(self.tx, r, &mut self.error)?;
        self.pos += 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl<T: Persistent + Copy> DoubleEndedIterator for QueueIter<'_, T> {
    fn next_back(&mut self) -> Option<T> {
        if self.error.is_some() || self.pos >= self.end {
            return None;
        }
        let r = self.queue.get(self.tx, self.end - 1);
        let v = raw::iteration(self.tx, r, &mut self.error)?;
        self.end -= 1;
        Some(v)
    }
}

impl<T: Persistent + Copy> ExactSizeIterator for QueueIter<'_, T> {}

impl<T> fmt::Debug for QueueIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueIter")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}
