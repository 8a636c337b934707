//! [`PQueue`]: a FIFO queue in the pool, stored in fixed-size chunks reached through a
//! directory, so that growth costs at most one chunk however long the queue is.

use std::collections::BTreeSet;
use std::fmt;
use std::mem::size_of;

use ptm::{Loggable, Nested, PCell, PPtr, Persistent, Result, Transaction};

use crate::owned::{doom_on_err, or_free_fresh, Frees};
use crate::raw::{self, Span};
use crate::{PHandle, PValue};

/// Most bytes of one chunk: a full chunk holds the largest power-of-two number of elements that
/// fits, but at least [`MIN_CHUNK`].
const CHUNK_BYTES: u64 = 64 << 10;
/// Fewest elements of a full chunk (for elements over 4 KiB).
const MIN_CHUNK: u64 = 16;
/// Elements of the first chunk of an empty queue (it doubles up to the full chunk size).
const FIRST_CHUNK: u64 = 4;

/// Elements of a full chunk of `size`-byte elements: the largest power of two `n` with
/// `n × size <= CHUNK_BYTES`, at least [`MIN_CHUNK`].
const fn chunk_elems(size: usize) -> u64 {
    let fit = CHUNK_BYTES / if size == 0 { 1 } else { size as u64 };
    if fit < MIN_CHUNK {
        MIN_CHUNK
    } else {
        1 << (63 - fit.leading_zeros())
    }
}

/// A persistent FIFO queue (a pool's `VecDeque<T>` used as a queue). `push` appends at the
/// back, `pop` takes from the front, `get(pos)` reads any position in O(1).
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
/// [`pop_free`](PQueue::pop_free)); `clear` and `free` free what the elements own.
///
/// Drains: `push`, `push_new`, `pop`, `pop_free` and `clear` cost **2**, growth included
/// (allocations first, then one snapshot batch that records the frees last, then the stores: a fresh chunk or
/// directory is new memory of the transaction, never logged); `peek`, `get`, `front_ref`,
/// `len` and `to_vec` cost 0.
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
struct Shape {
    /// The directory (null: no chunk, and every other field is 0).
    dir: PPtr<u8>,
    dcap: u64,
    dhead: u64,
    ccap: u64,
    head: u64,
    len: u64,
    /// Chunks in use (from `dhead`): 0 without a directory; 1 for a ring; else the chunks
    /// `head..head + len` spans, at least 1.
    chunks: u64,
    /// One chunk used as a ring (`ccap` below the full chunk size).
    ring: bool,
}

impl<T: Persistent> PQueue<T> {
    const ELEM_OK: () = assert!(size_of::<T>() > 0, "PQueue<T> needs a non-zero-sized T");

    /// Elements of a full chunk.
    const CHUNK: u64 = chunk_elems(size_of::<T>());

    /// The shape of the queue, checked: a corrupted handle is an error, never a wild access
    /// (beyond what `Transaction::deref` checks for the pointers).
    fn shape(&self, tx: &Transaction<'_>) -> Result<Shape> {
        let dir = self.dir.get(tx).cast::<u8>();
        let (dcap, dhead, ccap) = (self.dcap.get(tx), self.dhead.get(tx), self.ccap.get(tx));
        let (head, len) = (self.head.get(tx), self.len.get(tx));
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
        if !ccap.is_power_of_two() || ccap < FIRST_CHUNK || ccap > Self::CHUNK {
            return Err(raw::out_of_bounds(ccap, Self::CHUNK));
        }
        if head >= ccap {
            return Err(raw::out_of_bounds(head, ccap));
        }
        let ring = ccap < Self::CHUNK;
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

    /// Drops the front element of a non-empty queue (freeing what it owns when `free_elem`,
    /// else as is): moves `head` and `len`, and frees the front chunk when the front leaves it
    /// (clearing its directory slot). One snapshot drain; the frees are its last step (a failed
    /// batch frees nothing), and an error after one was recorded dooms the transaction.
    fn advance(&self, tx: &Transaction<'_>, free_elem: bool) -> Result<()>
    where
        T: PValue,
    {
        let s = self.shape(tx)?;
        if s.len == 0 {
            return Ok(());
        }
        let (c, front) = Self::locate(tx, &s, 0)?;
        let size = size_of::<T>() as u64;
        let len = s.len - 1;
        let (head, free_front) = if len == 0 {
            (0, false)
        } else if s.ring {
            (ring_index(s.head, 1, s.ccap), false)
        } else if s.head + 1 == s.ccap {
            (0, true)
        } else {
            (s.head + 1, false)
        };
        let slot = Self::slot_off(&s, 0)?;
        tx.snapshot(|b| {
            if T::OWNS {
                // SAFETY: the front slot of a live chunk of this queue, reached only through
                // cells by this thread.
                b.add(&unsafe { Span::new(tx, c, front, size)? })?;
            }
            if free_front {
                // SAFETY: the front chunk's slot of this queue's live directory.
                b.add(&unsafe { Span::new(tx, s.dir, slot, 8)? })?;
            }
            b.add(&Header(self))?;
            // Last, once everything is logged: the frees' allocator records drain with the
            // batch, and a batch that failed above freed nothing.
            Frees::walk(tx, |f| {
                if free_elem {
                    // SAFETY: the front element of a live chunk, discarded below.
                    unsafe { f.value(raw::at::<T>(tx, c, front)?)? };
                }
                if free_front {
                    f.block(c)?;
                }
                Ok(())
            })
        })?;
        let stored = self.advance_store(tx, &s, (c, front), head, free_front);
        if (free_elem && T::OWNS) || free_front {
            doom_on_err(tx, stored)
        } else {
            stored
        }
    }

    /// The stores of [`advance`](PQueue::advance), once logged.
    fn advance_store(
        &self,
        tx: &Transaction<'_>,
        s: &Shape,
        (c, front): (PPtr<u8>, u64),
        head: u64,
        free_front: bool,
    ) -> Result<()>
    where
        T: PValue,
    {
        let (size, len, s) = (size_of::<T>() as u64, s.len - 1, *s);
        if T::OWNS {
            // The popped handle's blocks are freed: zero it, so that no damaged `head`/`len` can
            // bring back a second owner of blocks reused later.
            // SAFETY: as above; logged in the batch.
            unsafe { raw::zero_bytes(tx, c, front, size)? };
        }
        if free_front {
            // A freed chunk never stays in the directory, where a damaged `dhead` could reach it.
            Self::dir_slot(tx, &s, 0)?.set(tx, PPtr::null())?;
            self.dhead.set(tx, ring_index(s.dhead, 1, s.dcap))?;
        }
        self.head.set(tx, head)?;
        self.len.set(tx, len)
    }
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
    /// batch (one snapshot drain); returns the chunk, the byte offset of the new back slot and
    /// the new length, which the caller stores after writing the slot. See [`PQueue`] for the
    /// cases: a free slot (the slot and the header are logged), the first chunk, a ring that
    /// doubles, a new chunk (with, rarely, a new directory).
    fn reserve_back(&self, tx: &Transaction<'_>) -> Result<(PPtr<u8>, u64, u64)> {
        let () = Self::ELEM_OK;
        let s = self.shape(tx)?;
        let len = s.len.checked_add(1).ok_or_else(|| raw::out_of_bounds(s.len, 1))?;
        if s.chunks == 0 {
            return self.first_chunk(tx);
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
                b.add(&self.len)
            })?;
            return Ok((c, off, len));
        }
        if s.ring {
            self.grow_ring(tx, &s)
        } else {
            self.add_chunk(tx, &s)
        }
    }

    /// The first push of a queue without a directory: a directory of one slot and a chunk of
    /// [`FIRST_CHUNK`] elements, both fresh.
    fn first_chunk(&self, tx: &Transaction<'_>) -> Result<(PPtr<u8>, u64, u64)> {
        let dir = raw::alloc_block(tx, 8)?;
        let c = or_free_fresh(tx, &[dir], Self::new_chunk(tx, FIRST_CHUNK))?;
        let logged = (|| {
            tx.snapshot(|b| b.add(&Header(self)))?;
            // SAFETY: the fresh directory of one slot, reached only by this thread.
            unsafe { raw::cell::<PPtr<u8>>(tx, dir, 0)? }.set(tx, c)
        })();
        or_free_fresh(tx, &[dir, c], logged)?;
        self.dir.set(tx, dir.cast())?;
        self.dcap.set(tx, 1)?;
        self.dhead.set(tx, 0)?;
        self.ccap.set(tx, FIRST_CHUNK)?;
        self.head.set(tx, 0)?;
        Ok((c, 0, 1))
    }

    /// A full ring below the full chunk size: moves it, in order, into a fresh chunk of twice
    /// the elements, frees the old one (at commit) and stores the new one in the same
    /// directory slot. When `T` owns blocks the moved elements' old copies are zeroed (so the
    /// old chunk is logged in the batch): a stale `&T` then sees an empty handle.
    fn grow_ring(&self, tx: &Transaction<'_>, s: &Shape) -> Result<(PPtr<u8>, u64, u64)> {
        let (old, cap, len) = (Self::chunk(tx, s, 0)?, s.ccap, s.len);
        let new_cap = cap * 2;
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
        doom_on_err(tx, self.ring_store(tx, s, old, new))
    }

    /// The stores of [`grow_ring`](PQueue::grow_ring), once logged: the ring `old`, in order,
    /// into `new`.
    fn ring_store(
        &self,
        tx: &Transaction<'_>,
        s: &Shape,
        old: PPtr<u8>,
        new: PPtr<u8>,
    ) -> Result<(PPtr<u8>, u64, u64)> {
        let (cap, len) = (s.ccap, s.len);
        let new_cap = cap * 2;
        // The ring in order: positions `head..cap`, then `0..head`.
        let first = len.min(cap - s.head);
        let (first_bytes, rest_bytes) = (raw::array_bytes::<T>(first)?, raw::array_bytes::<T>(len - first)?);
        // SAFETY: `old` is this queue's chunk of `cap` elements (its free takes effect at
        // commit, so it is still readable; logged above when zeroed), `new` the fresh chunk of
        // `new_cap > len` elements; both reached only through cells by this thread.
        unsafe {
            let at = raw::elem_off::<T>(s.head)?;
            raw::move_bytes(tx, (old, at), (new, 0), first_bytes, T::OWNS)?;
            raw::move_bytes(tx, (old, 0), (new, first_bytes), rest_bytes, T::OWNS)?;
        }
        Self::dir_slot(tx, s, 0)?.set(tx, new)?;
        self.head.set(tx, 0)?;
        self.ccap.set(tx, new_cap)?;
        Ok((new, raw::elem_off::<T>(len)?, len + 1))
    }

    /// Full chunks of the full size: a fresh chunk after the last one. When every directory
    /// slot is in use, a fresh directory of twice the slots first, into which the chunk
    /// pointers are copied in order (the old directory is freed at commit): no element moves.
    fn add_chunk(&self, tx: &Transaction<'_>, s: &Shape) -> Result<(PPtr<u8>, u64, u64)> {
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
            let back = if grow { 0 } else { Self::slot_off(s, s.chunks)? };
            tx.snapshot(|b| {
                if !grow {
                    // SAFETY: the first unused slot of this queue's live directory.
                    b.add(&unsafe { Span::new(tx, s.dir, back, 8)? })?;
                }
                // A fresh directory needs no snapshot: ptm logged it as new memory at
                // allocation.
                b.add(&Header(self))?;
                // Last, once everything is logged (a failed batch frees nothing).
                if grow {
                    tx.free(s.dir)?;
                }
                Ok(())
            })?;
            Ok(back)
        })();
        let back = or_free_fresh(tx, &[fresh_dir, &[c]].concat(), logged)?;
        let stored = self.chunk_store(tx, s, (new_dir, new_dcap), back, c);
        if grow {
            // The old directory's free is recorded: a failure now must not commit.
            doom_on_err(tx, stored)
        } else {
            stored
        }
    }

    /// The stores of [`add_chunk`](PQueue::add_chunk), once logged: the chunk pointers copied
    /// into a fresh directory when it grew, and the new chunk `c` after the last.
    fn chunk_store(
        &self,
        tx: &Transaction<'_>,
        s: &Shape,
        (new_dir, new_dcap): (PPtr<u8>, u64),
        back: u64,
        c: PPtr<u8>,
    ) -> Result<(PPtr<u8>, u64, u64)> {
        let grow = new_dir != s.dir;
        let at = if grow {
            for k in 0..s.chunks {
                let p = Self::dir_slot(tx, s, k)?.get(tx);
                // SAFETY: slot `k < chunks < new_dcap` of the fresh directory.
                unsafe { raw::cell::<PPtr<u8>>(tx, new_dir, raw::elem_off::<u64>(k)?)? }.set(tx, p)?;
            }
            self.dir.set(tx, new_dir.cast())?;
            self.dcap.set(tx, new_dcap)?;
            self.dhead.set(tx, 0)?;
            raw::elem_off::<u64>(s.chunks)?
        } else {
            back
        };
        // SAFETY: slot `chunks` of the directory now in use (fresh, or logged above).
        unsafe { raw::cell::<PPtr<u8>>(tx, new_dir, at)? }.set(tx, c)?;
        Ok((c, 0, s.len + 1))
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
        let (c, off, len) = self.reserve_back(tx)?;
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
/// own [`PHandle`] structs): created in place at the back by [`push_new`](PQueue::push_new),
/// reached by [`front_ref`](PQueue::front_ref) and [`get_ref`](PQueue::get_ref), removed with
/// everything they own by [`pop_free`](PQueue::pop_free) and [`clear`](PQueue::clear).
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
        let (c, off, len) = self.reserve_back(tx)?;
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
}

/// `(head + pos) % cap` for `head, pos < cap`, without overflow.
fn ring_index(head: u64, pos: u64, cap: u64) -> u64 {
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

impl<T> fmt::Debug for QueueIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueIter")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}
