//! Element access inside heap blocks owned by a collection: every element is viewed as a
//! [`PCell`], so reads copy and writes log first, exactly like a cell in the root.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use ptm::{Loggable, PCell, PPtr, Persistent, Result, Transaction};

/// A byte range of cells inside a block owned by one collection, logged as one undo record.
pub(crate) struct Span {
    addr: usize,
    len: usize,
}

impl Span {
    /// The `len` bytes starting `byte_off` bytes into `block`.
    ///
    /// # Safety
    ///
    /// `block` is a live block owned by the calling collection, at least `byte_off + len` bytes
    /// long, whose bytes are accessed only as [`PCell`]s by the thread running `tx` (the
    /// collection is `!Sync`, or guarded by a lock `tx` holds).
    pub(crate) unsafe fn new(tx: &Transaction<'_>, block: PPtr<u8>, byte_off: u64, len: u64) -> Result<Self> {
        // SAFETY: per this function's contract; the first byte is a `PCell<u8>` like any other.
        let first = unsafe { cell::<u8>(tx, block, byte_off)? };
        Ok(Span {
            addr: first as *const PCell<u8> as usize,
            len: usize::try_from(len).map_err(|_| out_of_bounds(byte_off, len))?,
        })
    }
}

// SAFETY: a `Span` is only built (by the unsafe `Span::new`) over bytes that are `PCell`s of a
// block owned by one collection and reachable only by the thread of the running transaction (the
// collection is `!Sync` or under a lock the transaction holds), so the bytes are interior-mutable
// and a rollback cannot race another thread. `SnapshotBatch::add` checks the range is in the pool.
unsafe impl Loggable for Span {
    fn log_range(&self) -> (usize, usize) {
        (self.addr, self.len)
    }
}

/// The error for a damaged collection: [`ptm::Error::CorruptCollection`] naming the structure,
/// the pool offset of the damaged block (0 when unknown) and what is wrong.
pub(crate) fn corrupt(
    structure: &'static str,
    offset: u64,
    what: impl Into<Cow<'static, str>>,
) -> ptm::Error {
    ptm::Error::CorruptCollection {
        structure,
        offset,
        what: what.into(),
    }
}

/// The error for sizes and offsets that do not fit (only on a corrupted collection header): a
/// [`corrupt`] "collection" whose `what` carries the value out of range.
pub(crate) fn out_of_bounds(offset: u64, len: u64) -> ptm::Error {
    corrupt(
        "collection",
        offset,
        format!("a size, count or offset out of range (value {len:#x})"),
    )
}

/// `i * size_of::<T>()`, checked.
pub(crate) fn elem_off<T>(i: u64) -> Result<u64> {
    i.checked_mul(size_of::<T>() as u64)
        .ok_or_else(|| out_of_bounds(i, size_of::<T>() as u64))
}

/// Bytes of an array of `n` `T`s, checked.
pub(crate) fn array_bytes<T>(n: u64) -> Result<u64> {
    elem_off::<T>(n)
}

/// The size and alignment of an element type: what array layouts need of it, whether from
/// `size_of`/`align_of` (the typed collections) or from a recorded schema (`walk.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// `size_of` the element.
    pub(crate) size: u64,
    /// `align_of` the element (a power of two).
    pub(crate) align: u64,
}

impl Slot {
    /// `T`'s slot.
    #[inline]
    pub(crate) const fn of<T>() -> Slot {
        Slot {
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
        }
    }

    /// `x` rounded up to the alignment (saturating). A mask for a power of two (every type's
    /// alignment): no division on the lookup paths that compute a node's or segment's layout.
    #[inline]
    pub(crate) fn align_up(self, x: u64) -> u64 {
        if self.align.is_power_of_two() {
            let m = self.align - 1;
            x.checked_add(m).map_or(u64::MAX, |v| v & !m)
        } else {
            x.div_ceil(self.align.max(1)).saturating_mul(self.align)
        }
    }

    /// Bytes of an array of `n` elements, checked.
    #[inline]
    pub(crate) fn array_bytes(self, n: u64) -> Result<u64> {
        n.checked_mul(self.size)
            .ok_or_else(|| out_of_bounds(n, self.size))
    }
}

/// A block of the pool resolved once ([`Transaction::resolve_bytes`]): its fields are then
/// reached with a bounds and alignment check against the block's length only, instead of the
/// pool's checks per field. For lookups that read several fields of one node or segment.
#[derive(Clone, Copy)]
pub(crate) struct Block<'t> {
    block: PPtr<u8>,
    base: NonNull<u8>,
    len: u64,
    _tx: PhantomData<&'t ()>,
}

impl<'t> Block<'t> {
    /// The `len` bytes at `block` (at least 8).
    ///
    /// # Safety
    ///
    /// As [`cell`], for every byte of `block[..len]`: a live block owned by the calling
    /// collection, at least `len` bytes long, whose bytes are accessed only as [`PCell`]s by the
    /// thread running `tx`.
    ///
    /// # Errors
    ///
    /// As [`cell`].
    #[inline]
    pub(crate) unsafe fn new(tx: &'t Transaction<'_>, block: PPtr<u8>, len: u64) -> Result<Self> {
        Ok(Block {
            block,
            base: tx.resolve_bytes(block, len)?,
            len,
            _tx: PhantomData,
        })
    }

    /// The block's pointer.
    #[inline]
    pub(crate) fn ptr(&self) -> PPtr<u8> {
        self.block
    }

    /// A reference to the `U` `byte_off` bytes into the block.
    ///
    /// # Safety
    ///
    /// As [`at`].
    ///
    /// # Errors
    ///
    /// A `U` that does not lie inside the block or is misaligned (only on a damaged length or
    /// offset read from the pool).
    #[inline]
    pub(crate) unsafe fn at<U: Persistent>(&self, byte_off: u64) -> Result<&'t U> {
        let fits = byte_off
            .checked_add(size_of::<U>() as u64)
            .is_some_and(|end| end <= self.len);
        let addr = (self.base.as_ptr() as usize).wrapping_add(byte_off as usize);
        if !fits || !addr.is_multiple_of(align_of::<U>()) {
            return Err(out_of_bounds(self.block.offset(), byte_off));
        }
        // SAFETY: `[addr, addr + size_of::<U>())` lies inside the block, which `new` resolved
        // inside the mapping, and is aligned; liveness and the access rule per `new`'s and this
        // function's contracts; any bit pattern is a `U` (`Persistent`).
        Ok(unsafe { &*(addr as *const U) })
    }

    /// The `n` consecutive `U`s starting `byte_off` bytes into the block (one bounds and
    /// alignment check for all of them: a node's keys for a binary search).
    ///
    /// # Safety
    ///
    /// As [`at`], for each of them.
    ///
    /// # Errors
    ///
    /// As [`at`](Self::at), when any of them does not lie inside the block.
    #[inline]
    pub(crate) unsafe fn slice<U: Persistent>(&self, byte_off: u64, n: usize) -> Result<&'t [U]> {
        let fits = (n as u64)
            .checked_mul(size_of::<U>() as u64)
            .and_then(|bytes| byte_off.checked_add(bytes))
            .is_some_and(|end| end <= self.len);
        let addr = (self.base.as_ptr() as usize).wrapping_add(byte_off as usize);
        if !fits || !addr.is_multiple_of(align_of::<U>()) {
            return Err(out_of_bounds(self.block.offset(), byte_off));
        }
        // SAFETY: `n` aligned `U`s from `addr` lie inside the block, which `new` resolved
        // inside the mapping; liveness and the access rule per `new`'s and this function's
        // contracts; any bit pattern is a `U` (`Persistent`).
        Ok(unsafe { std::slice::from_raw_parts(addr as *const U, n) })
    }

    /// The `T` cell `byte_off` bytes into the block.
    ///
    /// # Errors
    ///
    /// As [`at`](Self::at).
    #[inline]
    pub(crate) fn cell<T: Persistent>(&self, byte_off: u64) -> Result<&'t PCell<T>> {
        // SAFETY: `new`'s contract: every byte of the block is accessed only as cells, by this
        // thread (`PCell<T>` is `repr(transparent)` over `T`).
        unsafe { self.at::<PCell<T>>(byte_off) }
    }

    /// A copy of the `T` `byte_off` bytes into the block; `None` where [`cell`](Self::cell)
    /// fails. For hot paths that fall back to a checked path on `None`: no error value is
    /// built (moving `Result`s of the large error type cost a hash lookup a tenth of its
    /// instructions).
    #[inline(always)]
    pub(crate) fn read<T: Persistent + Copy>(&self, tx: &Transaction<'_>, byte_off: u64) -> Option<T> {
        let addr = self.checked_addr::<T>(byte_off)?;
        // SAFETY: as in `at`: inside the block, aligned; `new`'s contract: its bytes are
        // accessed only as cells by this thread (`PCell<T>` is `repr(transparent)` over `T`).
        Some(unsafe { &*(addr as *const PCell<T>) }.get(tx))
    }

    /// A reference to the `U` `byte_off` bytes into the block, `None` where [`at`](Self::at)
    /// fails (as [`read`](Self::read)).
    ///
    /// # Safety
    ///
    /// As [`at`](Self::at).
    #[inline(always)]
    pub(crate) unsafe fn at_opt<U: Persistent>(&self, byte_off: u64) -> Option<&'t U> {
        let addr = self.checked_addr::<U>(byte_off)?;
        // SAFETY: as in `at`.
        Some(unsafe { &*(addr as *const U) })
    }

    /// The address of the `U` `byte_off` bytes into the block, if it lies inside the block and
    /// is aligned: the checks of [`at`](Self::at), which keeps its own copy (written over this
    /// one it compiled to more instructions on the B-tree's lookups, callgrind).
    #[inline(always)]
    fn checked_addr<U>(&self, byte_off: u64) -> Option<usize> {
        let fits = byte_off
            .checked_add(size_of::<U>() as u64)
            .is_some_and(|end| end <= self.len);
        let addr = (self.base.as_ptr() as usize).wrapping_add(byte_off as usize);
        (fits && addr.is_multiple_of(align_of::<U>())).then_some(addr)
    }

    /// Starts loading the cache lines of `[byte_off, byte_off + len)` clamped to the block, at
    /// most 9 (a hint, see [`Transaction::prefetch`]).
    ///
    /// One prefetch every 64 bytes from the range's start, and one at its last byte unless the
    /// last probe is that byte, reach every line it touches whatever its alignment (at most one
    /// line twice). The count depends only
    /// on the length, which callers pass as a constant (a node's size), so the loop unrolls into
    /// straight prefetches: a loop bounded by the end's line cost 4 instructions a line, a fifth
    /// of a B-tree lookup's instructions.
    #[inline]
    pub(crate) fn prefetch(&self, byte_off: u64, len: u64) {
        let end = byte_off.saturating_add(len).min(self.len);
        let start = byte_off.min(end);
        if start == end {
            return;
        }
        let p = (self.base.as_ptr() as usize).wrapping_add(start as usize);
        let last = (end - start - 1) as usize;
        for i in 0..(last / 64).min(7) + 1 {
            ptm::pmem_core::internals::flush::prefetch(p.wrapping_add(64 * i) as *const u8);
        }
        if !last.is_multiple_of(64) {
            // The last byte may lie in the line after the last probe's.
            ptm::pmem_core::internals::flush::prefetch(p.wrapping_add(last) as *const u8);
        }
    }
}

/// The `T` cell `byte_off` bytes into `block`.
///
/// # Safety
///
/// `block` is a live block (not freed by a committed transaction) owned by the calling
/// collection, holding a `T` at `byte_off`, and every access to that `T` during this transaction
/// goes through `PCell`s by the thread running `tx` (the collection is `!Sync`, or guarded by a
/// lock `tx` holds).
///
/// # Errors
///
/// Null, foreign, out-of-bounds or misaligned pointers (checked by `Transaction::deref`).
#[inline]
pub(crate) unsafe fn cell<'t, T: Persistent>(
    tx: &'t Transaction<'_>,
    block: PPtr<u8>,
    byte_off: u64,
) -> Result<&'t PCell<T>> {
    // SAFETY: forwarded contract (`PCell<T>` is `repr(transparent)` over `T`).
    unsafe { at::<PCell<T>>(tx, block, byte_off) }
}

/// A reference to the `U` `byte_off` bytes into `block`.
///
/// # Safety
///
/// As [`cell`], with `U` either a `PCell` or a value whose bytes are all inside `PCell`s (a
/// [`PHandle`](crate::PHandle)), or a value no other reference reaches while this one is used.
///
/// # Errors
///
/// As [`cell`].
#[inline]
pub(crate) unsafe fn at<'t, U: Persistent>(
    tx: &'t Transaction<'_>,
    block: PPtr<u8>,
    byte_off: u64,
) -> Result<&'t U> {
    let off = block
        .offset()
        .checked_add(byte_off)
        .filter(|&o| o < 1 << ptm::pmem_core::internals::pptr::OFFSET_BITS)
        .ok_or_else(|| out_of_bounds(block.offset(), byte_off))?;
    let p = PPtr::<U>::from_parts(block.tag(), off);
    // SAFETY: per this function's contract: live, and only reached through cells by this thread.
    unsafe { tx.deref(p) }
}

/// Copies `len` bytes from `byte_off_src` bytes into `src` to `byte_off_dst` bytes into `dst`,
/// in one pass ([`Transaction::copy_bytes`]): the destination is logged first (one record for
/// the whole range) unless already covered (a fresh block, or a batch snapshot).
///
/// # Safety
///
/// As [`cell`], for both ranges (which must not overlap).
pub(crate) unsafe fn copy_bytes(
    tx: &Transaction<'_>,
    (src, src_off): (PPtr<u8>, u64),
    (dst, dst_off): (PPtr<u8>, u64),
    len: u64,
) -> Result<()> {
    // SAFETY: forwarded contract: both ranges lie in live blocks of the caller, reached only
    // through cells by this thread.
    unsafe { tx.copy_bytes(byte_ptr(src, src_off, len)?, byte_ptr(dst, dst_off, len)?, len) }
}

/// `block + byte_off` as a byte pointer, checked so that the `len` bytes there fit the offset
/// space (the pool checks the rest when it resolves the pointer).
fn byte_ptr(block: PPtr<u8>, byte_off: u64, len: u64) -> Result<PPtr<u8>> {
    let off = block
        .offset()
        .checked_add(byte_off)
        .filter(|&o| {
            o.checked_add(len)
                .is_some_and(|e| e <= 1 << ptm::pmem_core::internals::pptr::OFFSET_BITS)
        })
        .ok_or_else(|| out_of_bounds(block.offset(), byte_off))?;
    Ok(PPtr::from_parts(block.tag(), off))
}

/// Zeroes `len` bytes `byte_off` bytes into `block` in one pass ([`Transaction::fill_bytes`]),
/// logging them first unless already covered.
///
/// # Safety
///
/// As [`cell`], for the whole range.
pub(crate) unsafe fn zero_bytes(
    tx: &Transaction<'_>,
    block: PPtr<u8>,
    byte_off: u64,
    len: u64,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { tx.fill_bytes(byte_ptr(block, byte_off, len)?, 0, len) }
}

/// Moves `len` bytes from `src` to `dst` by [`copy_bytes`], then, when `zero_src`, zeroes the
/// source (so a stale reference to a moved handle sees an empty one, never a second owner).
///
/// # Safety
///
/// As [`copy_bytes`]; when `zero_src`, the source range must be logged already (or fresh) if
/// its zeroing is to cost no drain.
pub(crate) unsafe fn move_bytes(
    tx: &Transaction<'_>,
    src: (PPtr<u8>, u64),
    dst: (PPtr<u8>, u64),
    len: u64,
    zero_src: bool,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe {
        copy_bytes(tx, src, dst, len)?;
        if zero_src {
            zero_bytes(tx, src.0, src.1, len)?;
        }
    }
    Ok(())
}

/// Writes `src` `byte_off` bytes into `block` in one pass ([`Transaction::store_bytes`]),
/// logged first (one record for the whole range) unless already covered.
///
/// # Safety
///
/// As [`cell`], for the whole range.
pub(crate) unsafe fn write_bytes(
    tx: &Transaction<'_>,
    block: PPtr<u8>,
    byte_off: u64,
    src: &[u8],
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { tx.store_bytes(byte_ptr(block, byte_off, src.len() as u64)?, src) }
}

/// Reads the `len` bytes `byte_off` bytes into `block` through cells as 8-byte chunks, each
/// passed to `f` as a little-endian word (the last one zero-padded, as [`hash_bytes`] reads a
/// slice); stops early when `f` returns `false`. Whole words are read as `u64` cells when the
/// start is 8-aligned.
///
/// # Safety
///
/// As [`cell`], for the whole range.
pub(crate) unsafe fn read_chunks(
    tx: &Transaction<'_>,
    block: PPtr<u8>,
    byte_off: u64,
    len: u64,
    mut f: impl FnMut(u64) -> bool,
) -> Result<()> {
    let aligned = block.offset().wrapping_add(byte_off).is_multiple_of(8);
    for k in (0..len).step_by(8) {
        let o = byte_off
            .checked_add(k)
            .ok_or_else(|| out_of_bounds(byte_off, len))?;
        let n = (len - k).min(8);
        let mut w = [0u8; 8];
        // SAFETY: forwarded contract.
        unsafe {
            if aligned && n == 8 {
                w = cell::<u64>(tx, block, o)?.get(tx).to_ne_bytes();
            } else {
                for j in 0..n {
                    w[j as usize] = cell::<u8>(tx, block, o + j)?.get(tx);
                }
            }
        }
        if !f(u64::from_le_bytes(w)) {
            break;
        }
    }
    Ok(())
}

/// The bytes of a slice of `Persistent` values (which have no padding).
pub(crate) fn slice_bytes<T: Persistent>(s: &[T]) -> &[u8] {
    let () = T::__LAYOUT_CHECK;
    // SAFETY: `T: Persistent` has no padding and a slice has none between elements, so all
    // `size_of_val(s)` bytes are initialised; the result borrows `s`.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// Reads element `i` of the `T` array at `block`.
///
/// # Safety
///
/// As [`cell`], for element `i`.
pub(crate) unsafe fn read<T: Persistent + Copy>(tx: &Transaction<'_>, block: PPtr<u8>, i: u64) -> Result<T> {
    // SAFETY: forwarded contract.
    Ok(unsafe { cell::<T>(tx, block, elem_off::<T>(i)?)? }.get(tx))
}

/// Writes element `i` of the `T` array at `block` (logging it first unless already logged).
///
/// # Safety
///
/// As [`cell`], for element `i`.
pub(crate) unsafe fn write<T: Persistent + Copy>(
    tx: &Transaction<'_>,
    block: PPtr<u8>,
    i: u64,
    v: T,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { cell::<T>(tx, block, elem_off::<T>(i)?)? }.set(tx, v)
}

/// A deterministic 64-bit hash of `bytes` (part of the on-media format of `PHashMap`: it must
/// never change, and must not depend on the process or the Rust version).
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = ByteHash::new(bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h.chunk(u64::from_le_bytes(w));
    }
    h.finish()
}

/// [`hash_bytes`] fed chunk by chunk: the byte count first, then each 8-byte chunk as a
/// little-endian word (the last one zero-padded), so bytes read from the pool piecewise
/// ([`read_chunks`]) hash exactly as the same bytes in one slice.
pub(crate) struct ByteHash(u64);

impl ByteHash {
    /// The state before the first chunk of `len` bytes.
    pub(crate) fn new(len: u64) -> Self {
        ByteHash(0x9e37_79b9_7f4a_7c15 ^ len)
    }

    /// Mixes in the next chunk.
    pub(crate) fn chunk(&mut self, w: u64) {
        let h = (self.0 ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
        self.0 = h ^ (h >> 32);
    }

    /// fmix64 (MurmurHash3's finaliser).
    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser: a bijection that mixes every input bit into every output bit.
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A map's hash seed: 0 selects the fixed hash of pools written before seeds
/// ([`hash_bytes`]), any other value SipHash-1-3 keyed by it ([`SipHash13`]).
#[inline]
pub(crate) fn hash_bytes_seeded(seed: u64, bytes: &[u8]) -> u64 {
    if let Ok(&word) = <&[u8; 8]>::try_from(bytes) {
        // One word (a `u64` key, the most common): the same steps as below, unrolled. Written
        // out rather than through `KeyHasher`, whose enum dispatch cost a hash get about 100
        // instructions more (callgrind, the `instructions` example).
        let w = u64::from_le_bytes(word);
        return if seed == 0 {
            let mut h = ByteHash::new(8);
            h.chunk(w);
            h.finish()
        } else {
            let mut h = SipHash13::new(seed, 8);
            h.chunk(w);
            h.finish()
        };
    }
    hash_chunks(seed, bytes)
}

/// [`hash_bytes_seeded`] of any length, chunk by chunk.
fn hash_chunks(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = KeyHasher::new(seed, bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h.chunk(u64::from_le_bytes(w));
    }
    h.finish()
}

/// The hash of a key's bytes under a map's seed, fed chunk by chunk as [`ByteHash`] is: the
/// fixed hash for seed 0 (maps of pools written before seeds), SipHash-1-3 otherwise.
pub(crate) enum KeyHasher {
    /// Seed 0: [`ByteHash`].
    Fixed(ByteHash),
    /// Any other seed.
    Sip(SipHash13),
}

impl KeyHasher {
    /// The state before the first chunk of `len` bytes, for a map of hash seed `seed`.
    pub(crate) fn new(seed: u64, len: u64) -> Self {
        if seed == 0 {
            KeyHasher::Fixed(ByteHash::new(len))
        } else {
            KeyHasher::Sip(SipHash13::new(seed, len))
        }
    }

    /// Mixes in the next chunk (8 bytes little-endian, the last one zero-padded).
    pub(crate) fn chunk(&mut self, w: u64) {
        match self {
            KeyHasher::Fixed(h) => h.chunk(w),
            KeyHasher::Sip(h) => h.chunk(w),
        }
    }

    /// The hash.
    pub(crate) fn finish(self) -> u64 {
        match self {
            KeyHasher::Fixed(h) => h.finish(),
            KeyHasher::Sip(h) => h.finish(),
        }
    }
}

/// SipHash-1-3 (Aumasson and Bernstein; the keyed hash of Rust's std `HashMap`): one
/// compression round per 8-byte word, three finalisation rounds, keyed by the 128 bits
/// `(k0, k1) = (seed, seed ^ 0x9e37_79b9_7f4a_7c15)`. Fed as [`ByteHash`] is (the byte count
/// first, then 8-byte little-endian chunks, the last one zero-padded), it computes exactly the
/// reference SipHash-1-3 of the bytes: the last word carries the byte count in its top byte.
pub(crate) struct SipHash13 {
    v: [u64; 4],
    /// Bytes not yet received.
    left: u64,
    /// The byte count mod 256, placed in the top byte of the last word.
    len_byte: u64,
    /// Whether the last word (holding the byte count) was compressed already.
    ended: bool,
}

impl SipHash13 {
    /// The state before the first chunk of `len` bytes.
    pub(crate) fn new(seed: u64, len: u64) -> Self {
        let (k0, k1) = (seed, seed ^ 0x9e37_79b9_7f4a_7c15);
        SipHash13 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            left: len,
            len_byte: (len & 0xff) << 56,
            ended: false,
        }
    }

    #[inline]
    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.v;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13);
        v1 ^= v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16);
        v3 ^= v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21);
        v3 ^= v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17);
        v1 ^= v2;
        v2 = v2.rotate_left(32);
        self.v = [v0, v1, v2, v3];
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.v[0] ^= m;
    }

    /// Mixes in the next chunk. The chunk holding the last `len mod 8 > 0` bytes is the last
    /// word: the byte count goes into its (zero) top byte.
    #[inline]
    pub(crate) fn chunk(&mut self, w: u64) {
        if self.left >= 8 {
            self.left -= 8;
            self.compress(w);
        } else if !self.ended {
            self.left = 0;
            self.ended = true;
            self.compress(w | self.len_byte);
        }
    }

    /// The hash: the last word (the byte count alone when `len` is a multiple of 8), then the
    /// finalisation.
    #[inline]
    pub(crate) fn finish(mut self) -> u64 {
        if !self.ended {
            self.compress(self.len_byte);
        }
        self.v[2] ^= 0xff;
        self.round();
        self.round();
        self.round();
        let [v0, v1, v2, v3] = self.v;
        v0 ^ v1 ^ v2 ^ v3
    }
}

/// Allocates `size` bytes in `tx`'s pool and returns a pointer to them. The block is fresh
/// memory of this transaction: ptm already treats it as logged (a new-range record), so stores
/// into it need no snapshot.
pub(crate) fn alloc_block(tx: &Transaction<'_>, size: u64) -> Result<PPtr<u8>> {
    Ok(tx.pptr(tx.alloc_bytes(size)?))
}

/// The start of every method that changes collection `c`: refuses the change if `c` is reached
/// through a stale [`Nested`](ptm::Nested) reference ([`Error::StaleReference`](ptm::Error)),
/// then marks stale the nested references taken from `c`, since the change may move or discard
/// the handles `c` stores.
///
/// # Errors
///
/// [`Error::StaleReference`](ptm::Error::StaleReference).
#[inline]
pub(crate) fn mutating<C: ?Sized>(tx: &Transaction<'_>, c: &C) -> Result<()> {
    tx.check_live(c)?;
    tx.invalidate_nested(c);
    Ok(())
}

/// One step of an iterator over a collection: `Ok(item)` passes through; an error (a corrupted
/// collection) is kept in `slot` for the iterator's `error()`, dooms the transaction (so it
/// cannot commit, or return `Ok` from `Pool::transaction`, on a silently shortened
/// iteration), and ends the iteration.
pub(crate) fn iteration<T>(
    tx: &Transaction<'_>,
    r: Result<Option<T>>,
    slot: &mut Option<ptm::Error>,
) -> Option<T> {
    match r {
        Ok(x) => x,
        Err(e) => {
            tx.doom();
            *slot = Some(e);
            None
        }
    }
}

/// `range` as `from..to` clamped to `0..len`; a reversed range comes out empty (`from >= to`).
pub(crate) fn clamp_range(range: &impl std::ops::RangeBounds<u64>, len: u64) -> (u64, u64) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let from = match range.start_bound() {
        Included(&a) => a,
        Excluded(&a) => a.saturating_add(1),
        Unbounded => 0,
    };
    let to = match range.end_bound() {
        Included(&b) => b.saturating_add(1),
        Excluded(&b) => b,
        Unbounded => len,
    };
    (from.min(len), to.min(len))
}

/// Changes the value in `cell` through `f` (which gets a copy) and stores it back; returns the
/// new value. The `update` methods' one step: a logged store.
///
/// # Errors
///
/// Those of `PCell::set`.
pub(crate) fn update_cell<T: Persistent + Copy>(
    tx: &Transaction<'_>,
    cell: &PCell<T>,
    f: impl FnOnce(&mut T),
) -> Result<T> {
    let mut v = cell.get(tx);
    f(&mut v);
    cell.set(tx, v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose root is one cell (tmpfs treated as persistent memory), for the accessors'
    /// tests: they view blocks of it directly, as the collections do.
    fn pool() -> (tempfile::TempDir, ptm::Pool<PCell<u64>>) {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let opts = ptm::PoolOptions::new().layout("raw").force_pmem(true).lanes(2);
        let pool = ptm::Pool::create(dir.path().join("raw.pool"), 8 << 20, &opts).unwrap();
        (dir, pool)
    }

    /// A fresh 256-byte block holding `pattern()`.
    fn filled_block(tx: &Transaction<'_>) -> Result<PPtr<u8>> {
        let b = alloc_block(tx, 256)?;
        // SAFETY: a fresh block of this transaction, 256 bytes, reached only by this thread.
        unsafe { write_bytes(tx, b, 0, &pattern())? };
        Ok(b)
    }

    /// 256 bytes, no two neighbouring words alike.
    fn pattern() -> Vec<u8> {
        (0..256u32).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// The `n` bytes `off` bytes into `b`, read one cell at a time.
    fn bytes_at(tx: &Transaction<'_>, b: PPtr<u8>, off: u64, n: u64) -> Result<Vec<u8>> {
        // SAFETY: every caller passes a live block of its transaction, read only through cells.
        (off..off + n)
            .map(|o| Ok(unsafe { cell::<u8>(tx, b, o)? }.get(tx)))
            .collect()
    }

    /// `Block`'s field and run accessors accept exactly what lies inside the block (up to its
    /// last byte) and is aligned, read the right bytes, and refuse the rest: past the end,
    /// straddling it, misaligned, overflowing; resolving a block longer than the pool fails.
    #[test]
    fn block_accessors_read_inside_the_block_and_refuse_the_rest() {
        let (_dir, pool) = pool();
        let bytes = pattern();
        let word = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        pool.transaction(|tx, _| {
            let b = filled_block(tx)?;
            // SAFETY: a fresh block of this transaction, 256 bytes, reached only by this
            // thread; the references below are only read from, at once.
            unsafe {
                let blk = Block::new(tx, b, 256)?;
                assert_eq!(blk.ptr(), b);
                assert_eq!(*blk.at::<u64>(0)?, word(0));
                assert_eq!(
                    *blk.at::<u64>(248)?,
                    word(248),
                    "a field ending at the block's end"
                );
                assert_eq!(*blk.at::<u8>(255)?, bytes[255]);
                assert_eq!(
                    *blk.at::<u32>(12)?,
                    u32::from_le_bytes(bytes[12..16].try_into().unwrap())
                );
                assert_eq!(blk.cell::<u64>(16)?.get(tx), word(16));
                assert!(blk.at::<u64>(256).is_err(), "past the end");
                assert!(blk.at::<u8>(256).is_err(), "past the end");
                assert!(blk.at::<u64>(4).is_err(), "misaligned");
                assert!(blk.at::<u64>(u64::MAX - 7).is_err(), "overflowing");
                // A view of the first 252 bytes: the aligned last word straddles its end.
                let short = Block::new(tx, b, 252)?;
                assert!(short.at::<u64>(248).is_err(), "straddling the end");
                assert_eq!(
                    *short.at::<u32>(248)?,
                    u32::from_le_bytes(bytes[248..252].try_into().unwrap())
                );

                let all = blk.slice::<u64>(0, 32)?;
                assert_eq!(all.len(), 32);
                assert!(all.iter().enumerate().all(|(i, &w)| w == word(i * 8)));
                let tail = blk.slice::<u64>(8, 31)?;
                assert_eq!(
                    (tail.len(), tail[30]),
                    (31, word(248)),
                    "a run ending at the block's end"
                );
                assert_eq!(
                    blk.slice::<u32>(4, 1)?,
                    [u32::from_le_bytes(bytes[4..8].try_into().unwrap())]
                );
                assert!(blk.slice::<u64>(8, 32).is_err(), "one element past the end");
                assert!(blk.slice::<u64>(4, 2).is_err(), "misaligned");
                assert!(blk.slice::<u64>(0, usize::MAX).is_err(), "overflowing");
                assert!(short.slice::<u64>(224, 4).is_err(), "straddling the end");

                assert!(Block::new(tx, b, 16 << 20).is_err(), "longer than the pool");
                // Prefetches of empty, clamped and whole ranges (a hint: nothing to see but
                // that they neither fault nor overflow).
                blk.prefetch(0, 0);
                blk.prefetch(300, 8);
                blk.prefetch(200, 1000);
                blk.prefetch(0, 256);
            }
            Ok::<_, ptm::Error>(())
        })
        .unwrap();
    }

    /// `cell`, `at`, `read` and `write` reach the bytes at their offset (element `i` at
    /// `i * size_of::<T>()`), and an offset past the pointer's offset space is refused rather
    /// than wrapped onto another offset.
    #[test]
    fn cells_and_elements_are_at_their_offsets() {
        let (_dir, pool) = pool();
        let bytes = pattern();
        pool.transaction(|tx, _| {
            let b = filled_block(tx)?;
            // SAFETY: a fresh block of this transaction, 256 bytes, reached only through cells
            // by this thread; the reference from `at` is only read from, at once.
            unsafe {
                assert_eq!(
                    cell::<u32>(tx, b, 4)?.get(tx),
                    u32::from_le_bytes(bytes[4..8].try_into().unwrap())
                );
                assert_eq!(*at::<u16>(tx, b, 6)?, u16::from_le_bytes([bytes[6], bytes[7]]));
                assert_eq!(
                    read::<u64>(tx, b, 3)?,
                    u64::from_le_bytes(bytes[24..32].try_into().unwrap())
                );
                write::<u64>(tx, b, 5, 0x0102_0304_0506_0708)?;
                assert_eq!(bytes_at(tx, b, 40, 8)?, 0x0102_0304_0506_0708u64.to_le_bytes());
                assert_eq!(
                    bytes_at(tx, b, 32, 8)?,
                    bytes[32..40],
                    "the element before untouched"
                );
                write::<u16>(tx, b, 1, 0xabcd)?;
                assert_eq!(bytes_at(tx, b, 0, 4)?, [bytes[0], bytes[1], 0xcd, 0xab]);
                // `b + past` wraps, in the pointer's offset bits, onto `b + 8`, a valid offset.
                let past = (1 << ptm::pmem_core::internals::pptr::OFFSET_BITS) + 8;
                assert!(at::<u64>(tx, b, past).is_err(), "past the offset space");
                assert!(cell::<u8>(tx, b, past).is_err(), "past the offset space");
            }
            Ok::<_, ptm::Error>(())
        })
        .unwrap();
    }

    /// A `Span` logs exactly its bytes: from the cell at its offset, its length.
    #[test]
    fn a_span_logs_exactly_its_bytes() {
        let (_dir, pool) = pool();
        pool.transaction(|tx, _| {
            let b = filled_block(tx)?;
            for (off, len) in [(0, 256), (24, 40), (3, 5), (255, 1)] {
                // SAFETY: a fresh block of this transaction, 256 bytes, reached only through
                // cells by this thread.
                let (span, first) = unsafe { (Span::new(tx, b, off, len)?, cell::<u8>(tx, b, off)?) };
                assert_eq!(
                    span.log_range(),
                    (first as *const PCell<u8> as usize, len as usize),
                    "{len} bytes at {off}"
                );
            }
            Ok::<_, ptm::Error>(())
        })
        .unwrap();
    }

    /// `read_chunks` passes the bytes of the range as `hash_bytes` reads a slice, from every
    /// alignment, for every length around the word boundaries, and stops when `f` says so.
    #[test]
    fn read_chunks_reads_every_range_as_a_slice_is_read() {
        let (_dir, pool) = pool();
        let bytes = pattern();
        pool.transaction(|tx, _| {
            let b = filled_block(tx)?;
            for off in 0..9u64 {
                for len in 0..40u64 {
                    let mut got = Vec::new();
                    // SAFETY: a fresh block of this transaction, 256 bytes, reached only
                    // through cells by this thread.
                    unsafe {
                        read_chunks(tx, b, off, len, |w| {
                            got.push(w);
                            true
                        })?
                    };
                    let want: Vec<u64> = bytes[off as usize..(off + len) as usize]
                        .chunks(8)
                        .map(|c| {
                            let mut w = [0u8; 8];
                            w[..c.len()].copy_from_slice(c);
                            u64::from_le_bytes(w)
                        })
                        .collect();
                    assert_eq!(got, want, "{len} bytes at {off}");
                    let mut h = ByteHash::new(len);
                    // SAFETY: as above.
                    unsafe {
                        read_chunks(tx, b, off, len, |w| {
                            h.chunk(w);
                            true
                        })?
                    };
                    assert_eq!(h.finish(), hash_bytes(&bytes[off as usize..(off + len) as usize]));
                    let mut calls = 0;
                    // SAFETY: as above.
                    unsafe {
                        read_chunks(tx, b, off, len, |_| {
                            calls += 1;
                            false
                        })?
                    };
                    assert_eq!(calls, len.min(1), "stops at the first `false`");
                }
            }
            Ok::<_, ptm::Error>(())
        })
        .unwrap();
    }

    /// The byte-range writers change exactly their range: `write_bytes` all of `src`,
    /// `copy_bytes` from the source offset to the destination offset, `zero_bytes` its length,
    /// `move_bytes` zeroing the source only when asked.
    #[test]
    fn byte_writers_change_exactly_their_range() {
        let (_dir, pool) = pool();
        let bytes = pattern();
        pool.transaction(|tx, _| {
            let (a, b) = (filled_block(tx)?, filled_block(tx)?);
            // SAFETY: fresh blocks of this transaction, 256 bytes each, reached only through
            // cells by this thread; the ranges of each call do not overlap.
            unsafe {
                write_bytes(tx, b, 5, &[1, 2, 3])?;
                assert_eq!(bytes_at(tx, b, 4, 5)?, [bytes[4], 1, 2, 3, bytes[8]]);
                copy_bytes(tx, (a, 3), (b, 10), 20)?;
                assert_eq!(bytes_at(tx, b, 9, 22)?[1..21], bytes[3..23]);
                assert_eq!(bytes_at(tx, b, 9, 22)?[..1], bytes[9..10]);
                assert_eq!(bytes_at(tx, b, 9, 22)?[21..], bytes[30..31]);
                zero_bytes(tx, b, 40, 30)?;
                assert_eq!(
                    bytes_at(tx, b, 39, 32)?,
                    [&bytes[39..40], &[0; 30][..], &bytes[70..71]].concat()
                );
                move_bytes(tx, (a, 100), (b, 200), 16, false)?;
                assert_eq!(bytes_at(tx, b, 200, 16)?, bytes[100..116]);
                assert_eq!(bytes_at(tx, a, 100, 16)?, bytes[100..116], "the source kept");
                move_bytes(tx, (a, 120), (b, 220), 16, true)?;
                assert_eq!(bytes_at(tx, b, 220, 16)?, bytes[120..136]);
                assert_eq!(
                    bytes_at(tx, a, 119, 18)?,
                    [&bytes[119..120], &[0; 16][..], &bytes[136..137]].concat()
                );
            }
            Ok::<_, ptm::Error>(())
        })
        .unwrap();
    }

    /// `Slot`'s layout arithmetic: rounding up to a power-of-two alignment (and to any other,
    /// which no Rust type has but a damaged schema may name), array sizes with overflow refused.
    #[test]
    fn slot_arithmetic_rounds_up_and_refuses_overflow() {
        let word = Slot::of::<u64>();
        assert_eq!(word, Slot { size: 8, align: 8 });
        assert_eq!(Slot::of::<[u8; 3]>(), Slot { size: 3, align: 1 });
        assert_eq!(
            [0, 1, 7, 8, 9, 17].map(|x| word.align_up(x)),
            [0, 8, 8, 8, 16, 24]
        );
        assert_eq!(Slot { size: 3, align: 1 }.align_up(5), 5);
        assert_eq!(Slot { size: 32, align: 32 }.align_up(33), 64);
        assert_eq!(word.align_up(u64::MAX - 3), u64::MAX, "saturates");
        assert_eq!(Slot { size: 6, align: 6 }.align_up(7), 12, "not a power of two");
        assert_eq!(word.array_bytes(5).unwrap(), 40);
        assert_eq!(Slot { size: 3, align: 1 }.array_bytes(7).unwrap(), 21);
        assert_eq!(word.array_bytes(0).unwrap(), 0);
        assert!(word.array_bytes(u64::MAX / 4).is_err());
        assert_eq!(
            (elem_off::<u32>(3).unwrap(), array_bytes::<u16>(5).unwrap()),
            (12, 10)
        );
        assert!(elem_off::<u64>(1 << 62).is_err());
    }

    #[test]
    fn hash_is_stable() {
        // Part of the on-media format: these values must never change.
        let got = [
            hash_bytes(&[]),
            hash_bytes(&7u64.to_le_bytes()),
            hash_bytes(b"persistent memory"),
        ];
        assert_eq!(
            got,
            [
                0x9ca0_66f1_a4ab_2eea,
                0xd5b1_0419_5a17_ebb4,
                0x1295_277e_2fd0_a61a
            ]
        );
        assert_ne!(hash_bytes(&1u64.to_le_bytes()), hash_bytes(&2u64.to_le_bytes()));
        assert_ne!(hash_bytes(&[0]), hash_bytes(&[0, 0]));
    }

    #[test]
    fn seed_zero_is_the_fixed_hash() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(hash_bytes_seeded(0, &bytes), hash_bytes(&bytes), "{n} bytes");
        }
    }

    /// The seeded hash is the reference SipHash-1-3 (the `siphasher` crate) of the bytes, for
    /// every length around the word boundaries, whichever way the bytes are chunked.
    #[test]
    fn seeded_hash_is_siphash13() {
        use std::hash::Hasher;
        for seed in [1u64, 0x5eed, (1 << 56) - 1] {
            for n in 0..40u8 {
                let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(101) ^ 0x5a).collect();
                let mut r = siphasher::sip::SipHasher13::new_with_keys(seed, seed ^ 0x9e37_79b9_7f4a_7c15);
                r.write(&bytes);
                assert_eq!(
                    hash_bytes_seeded(seed, &bytes),
                    r.finish(),
                    "seed {seed:#x}, {n} bytes"
                );
            }
        }
        assert_ne!(hash_bytes_seeded(1, b"k"), hash_bytes_seeded(2, b"k"));
    }

    /// The one-word path of the seeded hash (every `u64` key) is the reference SipHash-1-3 and
    /// the fixed hash, for many words and seeds.
    #[test]
    fn one_word_hash_matches_the_references() {
        use std::hash::Hasher;
        let mut x = 0x0123_4567_89ab_cdefu64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (word, seed) = (x.rotate_left(17), (x >> 8) | 1);
            let bytes = word.to_le_bytes();
            let mut r = siphasher::sip::SipHasher13::new_with_keys(seed, seed ^ 0x9e37_79b9_7f4a_7c15);
            r.write(&bytes);
            assert_eq!(
                hash_bytes_seeded(seed, &bytes),
                r.finish(),
                "{word:#x}, seed {seed:#x}"
            );
            assert_eq!(hash_bytes_seeded(seed, &bytes), hash_chunks(seed, &bytes));
            assert_eq!(
                hash_bytes_seeded(0, &bytes),
                hash_bytes(&bytes),
                "{word:#x}, fixed"
            );
        }
    }
}
