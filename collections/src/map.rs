//! [`PHashMap`]: an extendible hash table in the pool: a directory of segments, each a
//! linear-probing table, grown one segment at a time.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;

use ptm::pmem_core::bytes_of;
use ptm::{Error, Nested, PCell, PPtr, Persistent, Result, SnapshotBatch, Transaction};

use crate::owned::{doom_on_err, or_free_fresh, Frees};
use crate::raw::{self, Span};
use crate::{AsKey, PHandle, PKey, PToOwned, PValue};

pub(crate) const EMPTY: u8 = 0;
pub(crate) const FULL: u8 = 1;
/// Any control byte other than `EMPTY` and `FULL` is a tombstone.
const TOMB: u8 = 2;
/// Slots of a map's first segment, and the fewest of any segment.
pub(crate) const MIN_CAP: u64 = 8;
/// Slots per probe group (see `probe`): a segment has at least this many.
const GROUP: u64 = 8;
const _: () = assert!(MIN_CAP >= GROUP && GROUP.is_power_of_two());
/// Bytes of a segment's header: four `u64`s at the offsets below.
pub(crate) const SEG_HDR: u64 = 32;
/// Header field: slots of the segment (a power of two).
pub(crate) const H_CAP: u64 = 0;
/// Header field: local depth (the segment holds the keys whose hash starts with the top
/// `depth` bits of its directory indices).
pub(crate) const H_DEPTH: u64 = 8;
/// Header field: full slots plus tombstones. `H_LEN` follows it: one 16-byte span logs both.
pub(crate) const H_USED: u64 = 16;
/// Header field: full slots.
pub(crate) const H_LEN: u64 = 24;
/// A segment grows by doubling up to this many bytes; a full segment of this size splits.
const SEG_BYTES: u64 = 64 << 10;
/// Deepest directory (`2^32` segment pointers); a segment as deep as this doubles instead.
pub(crate) const MAX_DEPTH: u64 = 32;
/// The handle's `depth` word holds the global depth in its low 8 bits and the map's hash seed
/// above them (56 bits; 0 in maps written before seeds: the fixed hash).
pub(crate) const SEED_SHIFT: u32 = 8;
/// The global-depth bits of the handle's `depth` word.
pub(crate) const DEPTH_MASK: u64 = (1 << SEED_SHIFT) - 1;
/// What corruption errors name.
pub(crate) const SEGMENT: &str = "PHashMap segment";
/// What corruption errors name for the handle and the directory.
pub(crate) const HANDLE: &str = "PHashMap handle or directory";

/// A fresh hash seed, never 0 (which selects the fixed hash of maps written before seeds):
/// 56 bits from std's randomly keyed `RandomState` (seeded from the operating system's
/// randomness once per thread), over a process-wide counter and the handle's address.
fn fresh_seed(at: usize) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let n = DRAWN.fetch_add(1, Ordering::Relaxed);
    let s = RandomState::new().hash_one((n, at)) >> SEED_SHIFT;
    s.max(1)
}

/// Slots of a full-size segment for `slot` bytes per slot: the largest power of two (at least
/// [`MIN_CAP`]) whose segment, with alignment slack, fits [`SEG_BYTES`].
const fn seg_cap(slot: u64) -> u64 {
    let mut c = MIN_CAP;
    while SEG_HDR + 128 + 2 * c * slot <= SEG_BYTES {
        c *= 2;
    }
    c
}

/// A persistent hash map (a pool's `HashMap<K, V>`): an **extendible hash table**. A directory
/// of `2^depth` segment pointers is indexed by the top `depth` bits of a key's hash; each
/// segment is a linear-probing table (control bytes, then key-value pairs) of at most
/// about 64 KiB, shared by `2^(depth - local depth)` consecutive directory entries. A segment
/// that would pass 3/4 full is rebuilt alone: doubled while small, then **split** in two by
/// the next hash bit (the directory doubles when the segment was as deep as it). So no insert
/// ever moves more than one segment: growth costs a bounded pause whatever the map's size,
/// where a table that doubles whole stops for longer and longer (a std `HashMap` too).
/// Removals leave tombstones, purged when their segment is rebuilt. A map with one segment
/// has no directory block: its handle points at the segment.
///
/// **Keys** are [`PKey`]s. A `Copy` key is compared and hashed by its bytes (they are
/// `Persistent`, so they have no padding): two keys are equal exactly when their bytes are
/// (for floats, `-0.0 != 0.0` and a NaN equals itself). A [`PString`](crate::PString) key (or a
/// `PVec<T>` key) is stored in its key slot as a handle owning a buffer of exactly its
/// contents, compared and hashed by those contents, and looked up by `&str` (`&[T]`):
/// `PHashMap<PString, u64>` is a persistent string-keyed store.
///
/// **Hashing.** Each map draws a random 56-bit seed when it gets its first block (at its first
/// insert, and again after [`clear`](PHashMap::clear)), kept in its handle, and hashes keys
/// with SipHash-1-3 keyed by it (the hash of std's `HashMap`): nobody who does not know the
/// seed can choose keys that collide. The seed and the hash are part of the on-media format,
/// so any build and any process finds the keys again. Maps written before seeds (seed 0) keep
/// the fixed hash they were written with (design §13.3).
///
/// **Collisions.** Keys that a segment cannot split apart (a key type whose own hash collides,
/// or keys crafted against the fixed hash of seed-0 maps) **overflow**: their segment grows past
/// the normal size instead of splitting, so the map stays correct and its memory proportional
/// to its entries whatever the keys. The cost is the one any hash table pays for full
/// collisions: with `n` keys of one hash, a lookup, insert or removal among them probes O(n)
/// slots, and the segment's rebuilds copy O(n) entries (amortised O(1) per insert).
///
/// Lookups take the borrowed form of the key (`get(tx, &7)`, `get(tx, "ada")`); inserting
/// methods take anything that is [`AsKey`] (`insert(tx, 7, x)`, `insert(tx, "ada", x)`).
///
/// Values are `Copy` (read and written by copy: [`get`](PHashMap::get),
/// [`insert`](PHashMap::insert), ...) or nested collection handles ([`PHandle`]s such as
/// [`PString`](crate::PString) or `PVec<u64>`, created in place by
/// [`get_or_insert_new`](PHashMap::get_or_insert_new) and reached by reference through
/// [`get_ref`](PHashMap::get_ref)); [`remove_free`](PHashMap::remove_free) and
/// [`clear`](PHashMap::clear) free what the values own. Removing an entry ([`remove`](PHashMap::remove)
/// too) frees what its key owns.
///
/// Drains: `insert` (new key or update), `remove`, `remove_free`, `get_or_insert_with` and
/// `get_or_insert_new` (when they insert) cost **2**, growth and string keys included (a new
/// key's buffer is fresh memory, allocated before the snapshot); `get`, `get_ref`,
/// `contains_key`, `len` and iteration cost 0.
///
/// `!Sync` like [`PCell`]: share it between threads under a [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PHashMap<K, V> {
    /// With `depth` 0, the only segment (null before the first insert); else the directory:
    /// `2^depth` segment pointers.
    root: PCell<PPtr<u8>>,
    /// Low 8 bits: the global depth (the directory is indexed by the top `depth` bits of a
    /// key's hash); above: the hash seed (0: the fixed hash of maps written before seeds).
    depth: PCell<u64>,
    len: PCell<u64>,
    /// Slots over all segments.
    cap: PCell<u64>,
    _kv: PhantomData<(K, V)>,
}

const _: () = assert!(size_of::<PHashMap<u64, u64>>() == 32);

/// Byte offsets of a handle's `root`, `depth`, `len` and `cap` words (for the schema-driven
/// walk, `walk.rs`).
pub(crate) const FIELDS: [usize; 4] = [
    std::mem::offset_of!(PHashMap<u8, u8>, root),
    std::mem::offset_of!(PHashMap<u8, u8>, depth),
    std::mem::offset_of!(PHashMap<u8, u8>, len),
    std::mem::offset_of!(PHashMap<u8, u8>, cap),
];

// SAFETY: `repr(C)` of four 8-byte `PCell`s and a zero-sized marker: no padding whatever `K` and
// `V` are; every bit pattern is a valid handle (depths, capacities and pointers are checked
// before any access, pointers by `Transaction::deref`); no virtual address.
// The layout check rejects zero-sized keys and values at `cargo check` (a root deriving
// `Persistent` evaluates its fields' checks): use a `PHashSet` for a set.
unsafe impl<K: Persistent, V: Persistent> Persistent for PHashMap<K, V> {
    const __LAYOUT_CHECK: () = assert!(
        size_of::<K>() > 0 && size_of::<V>() > 0,
        "PHashMap<K, V> needs non-zero-sized K and V (use PHashSet<K> for a set)"
    );
}

/// The layout flag of a segment's local-depth word (bits 8..64; the depth is bits 0..8): set in
/// every segment this build writes, whose slots' keys and values are **pairs** (slot `i`'s key
/// and value side by side, one cache line for small ones); clear in segments written before it,
/// which keep a key array and a value array (design §13.4).
pub(crate) const PAIRS: u64 = 1 << 8;
/// The local-depth bits of a segment's depth word.
pub(crate) const LOCAL_DEPTH_MASK: u64 = 0xFF;

/// Where a segment's keys and values are: slot `i`'s key at `ko + i * kstride` and its value
/// at `vo + i * vstride`, up to `end`, the segment's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegGeo {
    pub(crate) ko: u64,
    pub(crate) vo: u64,
    pub(crate) kstride: u64,
    pub(crate) vstride: u64,
    pub(crate) end: u64,
}

/// A key-value pair's layout, as a `repr(C)` struct of the two: the value's offset (the key's
/// size rounded up to the value's alignment) and the pair's size (rounded up to the larger
/// alignment). `None` when it overflows (only from a damaged schema, `walk.rs`).
const fn pair_layout(key: raw::Slot, value: raw::Slot) -> Option<(u64, u64)> {
    let ka = if key.align == 0 { 1 } else { key.align };
    let va = if value.align == 0 { 1 } else { value.align };
    let a = if ka > va { ka } else { va };
    let Some(vo) = key.size.checked_next_multiple_of(va) else {
        return None;
    };
    let Some(end) = vo.checked_add(value.size) else {
        return None;
    };
    match end.checked_next_multiple_of(a) {
        Some(stride) => Some((vo, stride)),
        None => None,
    }
}

std::thread_local! {
    /// Whether this thread's new segments take the layout of builds before [`PAIRS`] (for
    /// tests of pools written by them: see [`write_legacy_segments`]).
    static LEGACY_SEGMENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Segments this thread's lookups opened through [`PHashMap::open`]'s general checks
    /// rather than the full-size fast path (see [`general_segment_opens`]).
    static GENERAL_OPENS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many segments this thread's lookups (gets, inserts, removals) have opened through the
/// general path, which reads a segment's geometry from its header, rather than the fast path
/// for full-size pair-layout segments (design §13.4). For tests that large maps take the fast
/// path: a count, not a time.
#[doc(hidden)]
pub fn general_segment_opens() -> u64 {
    GENERAL_OPENS.with(std::cell::Cell::get)
}

/// Makes the `PHashMap` segments that this thread writes from now on take the layout of
/// builds before the pair layout (a key array and a value array, flag clear), or this build's
/// again. For tests that a pool written by an older build keeps working: every build reads
/// both layouts, and rebuilds an old segment in its own layout when it grows.
#[doc(hidden)]
pub fn write_legacy_segments(on: bool) {
    LEGACY_SEGMENTS.with(|c| c.set(on));
}

/// Whether this thread's new segments take the pair layout.
fn writes_pairs() -> bool {
    !LEGACY_SEGMENTS.with(std::cell::Cell::get)
}

/// Offset of the pairs array: a cache line after the control bytes, so that a pair of at most
/// 64 bytes whose size divides 64 never straddles two lines.
const PAIRS_ALIGN: u64 = 64;

/// The layout of a segment of `cap` slots (`pairs`: this build's pair layout, else the key and
/// value arrays of segments written before it).
#[inline]
fn geometry<K, V>(cap: u64, pairs: bool) -> Result<SegGeo> {
    segment_geometry(cap, raw::Slot::of::<K>(), raw::Slot::of::<V>(), pairs)
}

/// [`geometry`] from the key and value slots' sizes and alignments (shared with the
/// schema-driven walker, `walk.rs`).
#[inline]
pub(crate) fn segment_geometry(cap: u64, key: raw::Slot, value: raw::Slot, pairs: bool) -> Result<SegGeo> {
    let ctrl_end = SEG_HDR
        .checked_add(cap)
        .ok_or_else(|| raw::out_of_bounds(SEG_HDR, cap))?;
    if pairs {
        let (voff, stride) =
            pair_layout(key, value).ok_or_else(|| raw::out_of_bounds(key.size, value.size))?;
        let ko = raw::Slot {
            size: stride,
            align: PAIRS_ALIGN.max(key.align).max(value.align),
        }
        .align_up(ctrl_end);
        let end = cap
            .checked_mul(stride)
            .and_then(|b| b.checked_add(ko))
            .ok_or_else(|| raw::out_of_bounds(ko, cap))?;
        return Ok(SegGeo {
            ko,
            vo: ko + voff,
            kstride: stride,
            vstride: stride,
            end,
        });
    }
    let ko = key.align_up(ctrl_end);
    let vo = value.align_up(
        ko.checked_add(key.array_bytes(cap)?)
            .ok_or_else(|| raw::out_of_bounds(ko, cap))?,
    );
    let end = vo
        .checked_add(value.array_bytes(cap)?)
        .ok_or_else(|| raw::out_of_bounds(vo, cap))?;
    Ok(SegGeo {
        ko,
        vo,
        kstride: key.size,
        vstride: value.size,
        end,
    })
}

/// A segment and the offsets of its arrays.
#[derive(Clone, Copy)]
struct Seg {
    block: PPtr<u8>,
    cap: u64,
    /// Whether the segment has this build's pair layout (its depth word's [`PAIRS`] flag).
    pairs: bool,
    ko: u64,
    vo: u64,
    kstride: u64,
    vstride: u64,
    /// Bytes of the segment (the end of its last array).
    size: u64,
}

/// Where a key is, or where it would go.
enum Probe {
    Found(u64),
    /// Not present; the slot to insert at and whether it was a tombstone.
    Vacant(u64, bool),
    /// Not present and no free slot (only in a segment full of tombstones or corrupted).
    Full,
}

/// The outcome of looking a key up: found, or absent with its hash and where it would go.
enum Search {
    Found(Seg, u64),
    Absent(u64, Option<(Seg, u64, bool)>),
}

/// What [`PHashMap::find_full`] found: the key's slot in a full-size pair-layout segment (the
/// segment's resolved block and the slot), no such key, or a case for the general path.
enum Fast<'t> {
    Found(raw::Block<'t>, u64),
    Absent,
    General,
}

/// The bytes of `w` equal to `b`: bit 7 of each such byte set, every other bit clear (exact:
/// no carry crosses a byte).
#[inline(always)]
fn bytes_equal(w: u64, b: u8) -> u64 {
    bytes_zero_exact(w ^ (u64::from(b) * 0x0101_0101_0101_0101))
}

/// The zero bytes of `w`, exactly (bit 7 of each set).
#[inline(always)]
fn bytes_zero_exact(w: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// The zero bytes of `w`, with bit 7 set in each; bytes above the lowest zero byte may be
/// flagged wrongly (a borrow), so only the lowest set bit is exact: what a search for the
/// first zero byte needs, in three operations.
#[inline(always)]
fn bytes_zero(w: u64) -> u64 {
    w.wrapping_sub(0x0101_0101_0101_0101) & !w & 0x8080_8080_8080_8080
}

/// A position of a walk over the entries: directory index of the segment, slot in it.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    d: u64,
    i: u64,
}

/// Offset of slot `i` in an array at `base` of `stride`-byte slots, checked.
#[inline]
fn slot_off(base: u64, stride: u64, i: u64) -> Result<u64> {
    i.checked_mul(stride)
        .and_then(|o| o.checked_add(base))
        .ok_or_else(|| raw::out_of_bounds(i, stride))
}

/// The directory index of hash `h` at global depth `g`: its top `g` bits.
pub(crate) fn dir_index(h: u64, g: u64) -> u64 {
    if g == 0 {
        0
    } else {
        h >> (64 - g)
    }
}

/// The directory range `[base, base + n)` shared by a segment of local depth `l` reached at
/// index `d` of a directory of global depth `g >= l`.
pub(crate) fn dir_range(g: u64, l: u64, d: u64) -> (u64, u64) {
    let n = 1u64 << (g - l);
    (d & !(n - 1), n)
}

impl<K: PKey, V: Persistent> PHashMap<K, V> {
    const SIZES_OK: () = assert!(
        size_of::<K>() > 0 && size_of::<V>() > 0,
        "PHashMap<K, V> needs non-zero-sized K and V (use u8 as a unit value)"
    );

    /// Slots of a full-size segment.
    const SEG_CAP: u64 = match pair_layout(raw::Slot::of::<K>(), raw::Slot::of::<V>()) {
        Some((_, stride)) => seg_cap(1 + stride),
        None => panic!("a key-value pair larger than the address space"),
    };

    /// The layout of a full-size pair-layout segment (every segment of a large map this build
    /// wrote), computed once: what [`geometry`] gives for it (checked by a test).
    const FULL_GEO: SegGeo = match pair_layout(raw::Slot::of::<K>(), raw::Slot::of::<V>()) {
        Some((voff, stride)) => {
            let (ka, va) = (align_of::<K>() as u64, align_of::<V>() as u64);
            let a = if ka > va { ka } else { va };
            let a = if a > PAIRS_ALIGN { a } else { PAIRS_ALIGN };
            let ko = (SEG_HDR + Self::SEG_CAP).next_multiple_of(a);
            SegGeo {
                ko,
                vo: ko + voff,
                kstride: stride,
                vstride: stride,
                end: ko + Self::SEG_CAP * stride,
            }
        }
        None => panic!("a key-value pair larger than the address space"),
    };

    /// [`geometry`] for this map's types, the common full-size pair layout without computing.
    #[inline]
    fn geo(cap: u64, pairs: bool) -> Result<SegGeo> {
        if pairs && cap == Self::SEG_CAP {
            return Ok(Self::FULL_GEO);
        }
        geometry::<K, V>(cap, pairs)
    }

    // The accessors below share one contract: blocks are this map's directory or segments
    // (live: freed only together with replacing every pointer to them, and then readable until
    // commit), or fresh blocks of this transaction; indices are below the block's capacity; the
    // map is `!Sync` (or guarded by a lock the transaction holds), so its blocks are reached only
    // by this thread, through cells.

    /// The global depth, checked.
    fn global_depth(&self, tx: &Transaction<'_>) -> Result<u64> {
        let g = self.depth.get(tx) & DEPTH_MASK;
        if g > MAX_DEPTH {
            return Err(raw::corrupt(
                HANDLE,
                0,
                format!("global depth {g} above {MAX_DEPTH}"),
            ));
        }
        Ok(g)
    }

    /// The map's hash seed (0: the fixed hash of maps written before seeds).
    fn seed(&self, tx: &Transaction<'_>) -> u64 {
        self.depth.get(tx) >> SEED_SHIFT
    }

    /// The hash of a borrowed key under seed `seed`.
    fn hash(seed: u64, k: &K::Borrowed) -> u64 {
        K::seeded_borrowed_hash(k, seed)
    }

    /// The map's hash seed: 0 for a map written before seeds (hashed with the fixed hash of
    /// §13.3), else the 56-bit seed drawn at its first insert. For tests and tools.
    #[doc(hidden)]
    pub fn hash_seed(&self, tx: &Transaction<'_>) -> u64 {
        self.seed(tx)
    }

    /// Sets the hash seed of an **empty** map (no block yet), which its first insert then keeps
    /// instead of drawing one: for tests that need two maps hashed alike. `seed` must be
    /// nonzero and below `2^56`. One drain (the handle's word is logged).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`](ptm::Error::InvalidOptions) for a map that holds blocks or a
    /// seed out of range; logging errors.
    #[doc(hidden)]
    pub fn set_hash_seed(&self, tx: &Transaction<'_>, seed: u64) -> Result<()> {
        if !self.root.get(tx).is_null() || seed == 0 || seed >> (64 - SEED_SHIFT) != 0 {
            return Err(ptm::Error::InvalidOptions(
                "set_hash_seed needs an empty map and a seed in 1..2^56",
            ));
        }
        self.depth.set(tx, seed << SEED_SHIFT)
    }

    /// Entry `d` of the directory `dir`.
    fn dir_cell<'t>(tx: &'t Transaction<'_>, dir: PPtr<u8>, d: u64) -> Result<&'t PCell<PPtr<u8>>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<PPtr<u8>>(tx, dir, raw::elem_off::<u64>(d)?) }
    }

    /// The segment pointer at directory index `d` (at global depth `g`).
    fn seg_ptr(&self, tx: &Transaction<'_>, g: u64, d: u64) -> Result<PPtr<u8>> {
        let root = self.root.get(tx);
        if g == 0 {
            Ok(root)
        } else {
            Ok(Self::dir_cell(tx, root, d)?.get(tx))
        }
    }

    /// Header field `f` of the segment `block`.
    fn hdr<'t>(tx: &'t Transaction<'_>, block: PPtr<u8>, f: u64) -> Result<&'t PCell<u64>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<u64>(tx, block, f) }
    }

    /// The segment at `block`, its capacity and layout flags checked.
    #[inline]
    fn open(tx: &Transaction<'_>, block: PPtr<u8>) -> Result<Seg> {
        let () = Self::SIZES_OK;
        // SAFETY: see the contract above: the header of a live segment (one resolve for both
        // words a lookup reads).
        let hdr = unsafe { raw::Block::new(tx, block, SEG_HDR)? };
        let cap = hdr.cell::<u64>(H_CAP)?.get(tx);
        if !cap.is_power_of_two() || cap < MIN_CAP {
            return Err(raw::corrupt(
                SEGMENT,
                block.offset(),
                format!("capacity {cap} is not a power of two of at least {MIN_CAP}"),
            ));
        }
        let flags = hdr.cell::<u64>(H_DEPTH)?.get(tx) & !LOCAL_DEPTH_MASK;
        if flags & !PAIRS != 0 {
            return Err(raw::corrupt(
                SEGMENT,
                block.offset(),
                format!("unknown layout flags {flags:#x} in the depth word"),
            ));
        }
        Self::seg(block, cap, flags == PAIRS)
    }

    /// The segment at `block` of `cap` slots in the given layout, with its arrays' offsets.
    #[inline]
    fn seg(block: PPtr<u8>, cap: u64, pairs: bool) -> Result<Seg> {
        let g = Self::geo(cap, pairs)?;
        Ok(Seg {
            block,
            cap,
            pairs,
            ko: g.ko,
            vo: g.vo,
            kstride: g.kstride,
            vstride: g.vstride,
            size: g.end,
        })
    }

    /// The local depth of `s`, checked against the global depth `g`.
    fn local_depth(tx: &Transaction<'_>, s: Seg, g: u64) -> Result<u64> {
        let l = Self::hdr(tx, s.block, H_DEPTH)?.get(tx) & LOCAL_DEPTH_MASK;
        if l > g {
            return Err(raw::corrupt(
                SEGMENT,
                s.block.offset(),
                format!("local depth {l} above the global depth {g}"),
            ));
        }
        Ok(l)
    }

    /// The segment for hash `h`, with the global depth; `None` before the first insert.
    #[inline(always)]
    fn locate(&self, tx: &Transaction<'_>, h: u64) -> Result<Option<(Seg, u64)>> {
        let g = self.global_depth(tx)?;
        if self.root.get(tx).is_null() {
            return if g == 0 {
                Ok(None)
            } else {
                Err(raw::corrupt(HANDLE, 0, format!("no segment at global depth {g}")))
            };
        }
        let block = self.seg_ptr(tx, g, dir_index(h, g))?;
        let s = match Self::open_full(tx, block, h) {
            Some(s) => s,
            None => {
                GENERAL_OPENS.with(|c| c.set(c.get() + 1));
                Self::open(tx, block)?
            }
        };
        Ok(Some((s, g)))
    }

    /// The segment at `block` if it is a full-size pair-layout segment (what every segment of
    /// a large map this build wrote is), else `None` (then [`open`](Self::open) reads and
    /// checks it). Starts loading the lines a lookup of hash `h` reads next (the header, the
    /// home slot's control group, key and value) before reading the header.
    ///
    /// The `Seg` it returns is built from constants, not from the header words it checked: the
    /// addresses a probe then computes depend on the header only through a branch the CPU
    /// predicts, so the probe's loads can start while the header's miss is still in flight.
    /// (Measured: 21% fewer instructions per get with the lookup path inlined; the time of a
    /// get at 1M keys did not move beyond this machine's noise: README, eleventh session.)
    #[inline(always)]
    fn open_full(tx: &Transaction<'_>, block: PPtr<u8>, h: u64) -> Option<Seg> {
        let () = Self::SIZES_OK;
        let g = Self::FULL_GEO;
        // SAFETY: the contract above, with one exception: `block` may be a smaller segment
        // than the `g.end` bytes viewed. Through this view only the two header words at offsets
        // 0 and 8, which every segment has, are read (the other lines are only prefetched, a
        // hint that reads nothing); a smaller segment near the pool's end fails to resolve.
        let b = unsafe { raw::Block::new(tx, block, g.end) }.ok()?;
        Self::prefetch_home(&b, h);
        let cap = b.cell::<u64>(H_CAP).ok()?.get(tx);
        let depth = b.cell::<u64>(H_DEPTH).ok()?.get(tx);
        if cap != Self::SEG_CAP || depth & !LOCAL_DEPTH_MASK != PAIRS {
            return None;
        }
        Some(Seg {
            block,
            cap: Self::SEG_CAP,
            pairs: true,
            ko: g.ko,
            vo: g.vo,
            kstride: g.kstride,
            vstride: g.vstride,
            size: g.end,
        })
    }

    /// Starts loading the lines a lookup of hash `h` reads in the segment viewed by `b` (as a
    /// full-size pair-layout segment: a hint only): its header, the home slot's control group
    /// and the home slot's pair.
    #[inline(always)]
    fn prefetch_home(b: &raw::Block<'_>, h: u64) {
        let g = Self::FULL_GEO;
        let i = h & (Self::SEG_CAP - 1);
        // A group's `GROUP` control bytes start 8-aligned, so they lie in one line; so does a
        // pair whose stride divides 64, as the pair array starts a line (`PAIRS_ALIGN`; a
        // `u64` key and value: 16 bytes). One prefetch each then (the lengths are constants).
        let pair = if g.ko.is_multiple_of(64) && g.kstride <= 64 && 64u64.is_multiple_of(g.kstride) {
            1
        } else {
            g.kstride
        };
        const _: () = assert!(SEG_HDR.is_multiple_of(GROUP) && 64u64.is_multiple_of(GROUP));
        b.prefetch(0, 1);
        b.prefetch(SEG_HDR + (i & !(GROUP - 1)), 1);
        b.prefetch(g.ko + i * g.kstride, pair);
    }

    /// [`prefetch_home`](Self::prefetch_home) for hash `h` in the segment that serves it, found
    /// through the directory without reading the segment. A hint: a damaged handle or
    /// directory prefetches nothing (the lookup itself reports it).
    #[inline(always)]
    fn prefetch_lookup(&self, tx: &Transaction<'_>, h: u64) {
        let Ok(g) = self.global_depth(tx) else {
            return;
        };
        let Ok(block) = self.seg_ptr(tx, g, dir_index(h, g)) else {
            return;
        };
        // SAFETY: only prefetched through this view, never read (see `open_full`).
        if let Ok(b) = unsafe { raw::Block::new(tx, block, Self::FULL_GEO.end) } {
            Self::prefetch_home(&b, h);
        }
    }

    fn ctrl<'t>(tx: &'t Transaction<'_>, s: Seg, i: u64) -> Result<&'t PCell<u8>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<u8>(tx, s.block, SEG_HDR + i) }
    }

    /// Byte offset of slot `i`'s key in the segment.
    fn key_off(s: Seg, i: u64) -> Result<u64> {
        slot_off(s.ko, s.kstride, i)
    }

    /// A reference to slot `i`'s key.
    ///
    /// # Safety
    ///
    /// The contract above, and the reference is used only while the map writes no key slot,
    /// unless `K` is all cells (as [`PKey`] promises of a key whose `Ref` borrows it).
    unsafe fn key_ref<'t>(tx: &'t Transaction<'_>, s: Seg, i: u64) -> Result<&'t K> {
        // SAFETY: see the contract above and this function's.
        unsafe { raw::at::<K>(tx, s.block, Self::key_off(s, i)?) }
    }

    /// Byte offset of slot `i`'s value in the segment.
    fn val_off(s: Seg, i: u64) -> Result<u64> {
        slot_off(s.vo, s.vstride, i)
    }

    /// A reference to slot `i`'s value.
    ///
    /// # Safety
    ///
    /// The contract above, and `V` is a [`PHandle`] (all cells) or the value is being discarded.
    unsafe fn val_ref<'t>(tx: &'t Transaction<'_>, s: Seg, i: u64) -> Result<&'t V> {
        // SAFETY: see the contract above and this function's.
        unsafe { raw::at::<V>(tx, s.block, Self::val_off(s, i)?) }
    }

    /// Where `k` (of hash `h`) is in `s`, or where it would go. Linear probing from the home
    /// slot `h mod cap`, reading the control bytes and the keys a group of [`GROUP`] slots at a
    /// time (one access each per group instead of one per slot: long probe sequences, as among
    /// colliding keys, cost a fraction of the checks).
    #[inline(always)]
    fn probe(tx: &Transaction<'_>, s: Seg, h: u64, k: &K::Borrowed) -> Result<Probe> {
        Self::probe_past(tx, s, h, k, |_| false)
    }

    /// [`probe`](Self::probe), treating the vacant slots for which `claimed` is true as full
    /// with other keys (slots a staged insert has taken but not written yet).
    #[inline(always)]
    fn probe_past(
        tx: &Transaction<'_>,
        s: Seg,
        h: u64,
        k: &K::Borrowed,
        claimed: impl Fn(u64) -> bool,
    ) -> Result<Probe> {
        let mask = s.cap - 1;
        let mut i = h & mask;
        let mut tomb = None;
        let mut seen = 0;
        // SAFETY: the contract above: a live segment of `s.size` bytes.
        let b = unsafe { raw::Block::new(tx, s.block, s.size)? };
        while seen < s.cap {
            // `cap` is a power of two of at least `GROUP` (checked by `open`): the group
            // `base..base + GROUP` lies inside the segment.
            let base = i & !(GROUP - 1);
            let ctrl = b.cell::<[u8; GROUP as usize]>(SEG_HDR + base)?.get(tx);
            for j in i - base..GROUP {
                let slot = base + j;
                match ctrl[j as usize] {
                    // A slot a staged insert took: full, with another key.
                    EMPTY if claimed(slot) => {}
                    EMPTY => {
                        return Ok(match tomb {
                            Some(t) => Probe::Vacant(t, true),
                            None => Probe::Vacant(slot, false),
                        })
                    }
                    FULL => {
                        // SAFETY: the contract above: a key slot of a live segment, below
                        // `cap`; `probe` only reads, so the reference is dropped before any write.
                        let key = unsafe { b.at::<K>(Self::key_off(s, slot)?)? };
                        if key.key_eq(tx, k)? {
                            return Ok(Probe::Found(slot));
                        }
                    }
                    _ if claimed(slot) => {}
                    _ => {
                        tomb.get_or_insert(slot);
                    }
                }
            }
            seen += GROUP - (i - base);
            i = (base + GROUP) & mask;
        }
        Ok(match tomb {
            Some(t) => Probe::Vacant(t, true),
            None => Probe::Full,
        })
    }

    /// A lookup's fast path, for a key whose segment is a full-size pair-layout one (every
    /// segment of a large map this build wrote): `Found(segment, slot)`, `Absent`, or `General`
    /// when anything on the way is not that case or does not check (a handle or directory
    /// word out of range, a pointer that does not resolve, another segment layout). Then
    /// [`find`](Self::find) takes the general path, which reports what is wrong.
    ///
    /// The segment is resolved once and its home lines prefetched ([`open_full`](Self::open_full));
    /// the probe then reads the control bytes a group of [`GROUP`] at a time as one word and
    /// tests all of them at once (which bytes are `FULL`, where the first `EMPTY` is), so a key
    /// costs one comparison per full slot before the first empty one, and the slot's value is
    /// read through the same resolved block. A lookup is its few loads and little else: short
    /// enough that consecutive gets of independent keys inside one transaction overlap their
    /// cache misses (README, sixteenth session). Answers exactly as [`probe`](Self::probe) would.
    #[inline(always)]
    fn find_full<'t>(&self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<Fast<'t>> {
        let Some((g, root, seed)) = self.full_entry(tx) else {
            return Ok(Fast::General);
        };
        Self::lookup_full(tx, g, root, Self::hash(seed, k), k)
    }

    /// The handle's global depth, root and hash seed when the fast path can start from them
    /// (a depth in range, a root); `None` sends lookups down the general path.
    #[inline(always)]
    fn full_entry(&self, tx: &Transaction<'_>) -> Option<(u64, PPtr<u8>, u64)> {
        let w = self.depth.get(tx);
        let (g, root) = (w & DEPTH_MASK, self.root.get(tx));
        (g <= MAX_DEPTH && !root.is_null()).then_some((g, root, w >> SEED_SHIFT))
    }

    /// [`find_full`](Self::find_full) of `k`, of hash `h`, in a map of global depth `g` (at most
    /// [`MAX_DEPTH`]) whose root is `root` (not null).
    #[inline(always)]
    fn lookup_full<'t>(
        tx: &'t Transaction<'_>,
        g: u64,
        root: PPtr<u8>,
        h: u64,
        k: &K::Borrowed,
    ) -> Result<Fast<'t>> {
        let block = if g == 0 {
            root
        } else {
            match Self::dir_cell(tx, root, dir_index(h, g)) {
                Ok(c) => c.get(tx),
                Err(_) => return Ok(Fast::General),
            }
        };
        let geo = Self::FULL_GEO;
        // SAFETY: as in `open_full`: the view spans `geo.end` bytes, and only the header words
        // are read through it until they say the segment is a full-size pair-layout one, of
        // `geo.end` bytes.
        let Ok(b) = (unsafe { raw::Block::new(tx, block, geo.end) }) else {
            return Ok(Fast::General);
        };
        Self::prefetch_home(&b, h);
        let (Some(cap), Some(depth)) = (b.read::<u64>(tx, H_CAP), b.read::<u64>(tx, H_DEPTH)) else {
            return Ok(Fast::General);
        };
        if cap != Self::SEG_CAP || depth & !LOCAL_DEPTH_MASK != PAIRS {
            return Ok(Fast::General);
        }
        let mask = Self::SEG_CAP - 1;
        let mut i = h & mask;
        let mut seen = 0;
        while seen < Self::SEG_CAP {
            let base = i & !(GROUP - 1);
            let skip = i - base;
            let Some(ctrl) = b.read::<[u8; GROUP as usize]>(tx, SEG_HDR + base) else {
                return Ok(Fast::General);
            };
            // The group's control bytes as one little-endian word, the slots before `i` shifted
            // out. The bytes shifted in read as 0: never `FULL`, but `EMPTY`, which `live`
            // masks off.
            let c = u64::from_le_bytes(ctrl) >> (8 * skip);
            let live = u64::MAX >> (8 * skip);
            let (full, empty) = (bytes_equal(c, FULL), bytes_zero(c) & live);
            // Full slots before the first empty one (all of them if none is), in probe order.
            let mut cand = full & (empty & empty.wrapping_neg()).wrapping_sub(1);
            while cand != 0 {
                // `slot < SEG_CAP`: its key and value lie inside the `geo.end` bytes.
                let slot = i + u64::from(cand.trailing_zeros() / 8);
                // SAFETY: the contract above: a key slot of a live segment, below `cap`; only
                // read, and dropped before this lookup returns.
                let Some(key) = (unsafe { b.at_opt::<K>(geo.ko + slot * geo.kstride) }) else {
                    return Ok(Fast::General);
                };
                if key.key_eq(tx, k)? {
                    return Ok(Fast::Found(b, slot));
                }
                cand &= cand - 1;
            }
            if empty != 0 {
                return Ok(Fast::Absent);
            }
            seen += GROUP - skip;
            i = (base + GROUP) & mask;
        }
        Ok(Fast::Absent)
    }

    /// Looks `k` up: its slot, or its hash and where it would go in its segment.
    #[inline(always)]
    fn search(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Search> {
        let h = Self::hash(self.seed(tx), k);
        let Some((s, _)) = self.locate(tx, h)? else {
            return Ok(Search::Absent(h, None));
        };
        Ok(match Self::probe(tx, s, h, k)? {
            Probe::Found(i) => Search::Found(s, i),
            Probe::Vacant(i, tomb) => Search::Absent(h, Some((s, i, tomb))),
            Probe::Full => Search::Absent(h, None),
        })
    }

    /// The slot holding `k`, if any.
    #[inline(always)]
    fn find(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<(Seg, u64)>> {
        Ok(match self.search(tx, k)? {
            Search::Found(s, i) => Some((s, i)),
            Search::Absent(..) => None,
        })
    }

    /// Number of entries.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.len.get(tx)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// Number of slots over all segments (0 before the first insert).
    pub fn capacity(&self, tx: &Transaction<'_>) -> u64 {
        self.cap.get(tx)
    }

    /// Whether `k` is present (`&7` for a `u64` key, `"ada"` for a `PString` key).
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a block pointer outside the pool, a depth or capacity out of
    /// range) or key.
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        tx.check_live(self)?;
        match self.find_full(tx, k)? {
            Fast::Found(..) => Ok(true),
            Fast::Absent => Ok(false),
            Fast::General => Ok(self.find(tx, k)?.is_some()),
        }
    }

    /// The keys, in table order: copies of `Copy` keys, references to `PString` (`PVec`) keys.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PHashMap::contains_key).
    pub fn keys<'a>(&'a self, tx: &'a Transaction<'_>) -> Result<Vec<K::Ref<'a>>> {
        tx.check_live(self)?;
        let (mut out, mut cur) = (Vec::new(), Cursor::default());
        while let Some((s, i)) = self.next_full(tx, &mut cur)? {
            out.push(Self::stored_key(tx, s, i)?);
        }
        Ok(out)
    }

    /// The iteration form of slot `i`'s key.
    fn stored_key<'t>(tx: &'t Transaction<'_>, s: Seg, i: u64) -> Result<K::Ref<'t>> {
        // SAFETY: a full slot; `PKey` promises `K` is all cells when `Ref` borrows it, and a
        // `Ref` that does not is a copy taken at once.
        Ok(unsafe { Self::key_ref(tx, s, i)? }.key_ref())
    }

    /// Owned copies of every entry, in table order (keys and values by [`PToOwned`]: a `String`
    /// for a `PString`, a `Vec` for a `PVec`, the value itself for `Copy` types): the whole
    /// map read out without a reference into it, whatever its key and value types. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted map, key or value.
    pub fn to_vec_owned(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<(<K as PToOwned>::Owned, <V as PToOwned>::Owned)>>
    where
        K: PToOwned,
        V: PToOwned,
    {
        tx.check_live(self)?;
        let (mut cur, mut out) = (Cursor::default(), Vec::new());
        while let Some((s, i)) = self.next_full(tx, &mut cur)? {
            // SAFETY: slot `i` of a live segment of this map holds an entry; the references
            // are only read, and this function stores nothing while they live (nor can another
            // thread: the map is `!Sync`, or held by a lock the transaction holds).
            let (k, v) = unsafe { (Self::key_ref(tx, s, i)?, Self::val_ref(tx, s, i)?) };
            out.push((k.to_owned_value(tx)?, v.to_owned_value(tx)?));
        }
        Ok(out)
    }

    /// The first full slot at or after `*cur` (advancing `*cur` past it), with its segment.
    /// Segments are visited in directory order, each once, at the first index of its range.
    fn next_full(&self, tx: &Transaction<'_>, cur: &mut Cursor) -> Result<Option<(Seg, u64)>> {
        let g = self.global_depth(tx)?;
        if self.root.get(tx).is_null() {
            return Ok(None);
        }
        while cur.d >> g == 0 {
            let s = Self::open(tx, self.seg_ptr(tx, g, cur.d)?)?;
            while cur.i < s.cap {
                let i = cur.i;
                cur.i += 1;
                if Self::ctrl(tx, s, i)?.get(tx) == FULL {
                    return Ok(Some((s, i)));
                }
            }
            let (base, n) = dir_range(g, Self::local_depth(tx, s, g)?, cur.d);
            *cur = Cursor { d: base + n, i: 0 };
        }
        Ok(None)
    }

    /// Every segment, once, in directory order. Checks the directory: each segment's range
    /// holds only pointers to it, and no segment is reached from two ranges.
    fn segments(&self, tx: &Transaction<'_>) -> Result<Vec<Seg>> {
        let g = self.global_depth(tx)?;
        let root = self.root.get(tx);
        if root.is_null() {
            return Ok(Vec::new());
        }
        let (mut out, mut seen, mut d) = (Vec::new(), HashSet::new(), 0u64);
        while d >> g == 0 {
            let block = self.seg_ptr(tx, g, d)?;
            let s = Self::open(tx, block)?;
            let (base, n) = dir_range(g, Self::local_depth(tx, s, g)?, d);
            let split_range = base != d;
            let foreign = || -> Result<bool> {
                for e in d..d + n {
                    if self.seg_ptr(tx, g, e)? != block {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            if split_range || !seen.insert(block.offset()) || foreign()? {
                return Err(raw::corrupt(
                    HANDLE,
                    block.offset(),
                    format!("the segment at directory index {d} does not own exactly its range"),
                ));
            }
            out.push(s);
            d += n;
        }
        Ok(out)
    }

    /// The pool offsets of every block of the map: the directory (if any) first, then each
    /// segment (for reachability checks). Not the blocks its keys and values own.
    ///
    /// # Errors
    ///
    /// For a corrupted handle or directory: a depth out of range, a segment whose directory
    /// range holds another pointer or that two ranges share, a pointer outside the pool.
    pub fn block_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        tx.check_live(self)?;
        let segs = self.segments(tx)?;
        let dir = (self.global_depth(tx)? > 0).then(|| self.root.get(tx).offset());
        Ok(dir
            .into_iter()
            .chain(segs.iter().map(|s| s.block.offset()))
            .collect())
    }

    /// How many of the map's segments have the layout of builds before the pair layout, and
    /// how many this build's (design §13.4). For tests and tools.
    ///
    /// # Errors
    ///
    /// As [`block_offsets`](PHashMap::block_offsets).
    #[doc(hidden)]
    pub fn segment_layouts(&self, tx: &Transaction<'_>) -> Result<(u64, u64)> {
        tx.check_live(self)?;
        let segs = self.segments(tx)?;
        let pairs = segs.iter().filter(|s| s.pairs).count() as u64;
        Ok((segs.len() as u64 - pairs, pairs))
    }

    /// Verifies the map's structure: the handle and directory (as
    /// [`block_offsets`](PHashMap::block_offsets)), every full slot's key hashing (under the
    /// map's seed) into its segment's directory range and reachable by linear probing from its
    /// home slot, each segment's counts, the total length and the capacity. 0 drains; reads
    /// every segment and hashes every key. For tests, fuzzers and `ptm check`.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptCollection`](ptm::Error::CorruptCollection) naming the damaged segment or
    /// handle and what is wrong, and the errors of reading a damaged key
    /// ([`contains_key`](PHashMap::contains_key)).
    pub fn check_invariants(&self, tx: &Transaction<'_>) -> Result<()> {
        let g = self.global_depth(tx)?;
        let seed = self.seed(tx);
        let (mut total, mut slots) = (0u64, 0u64);
        let mut d = 0;
        for s in self.segments(tx)? {
            let at = s.block.offset();
            slots = slots.saturating_add(s.cap);
            let l = Self::local_depth(tx, s, g)?;
            let (base, n) = dir_range(g, l, d);
            let (mut full, mut used) = (0, 0);
            let mask = s.cap - 1;
            for i in 0..s.cap {
                match Self::ctrl(tx, s, i)?.get(tx) {
                    EMPTY => continue,
                    FULL => full += 1,
                    _ => {
                        used += 1;
                        continue;
                    }
                }
                used += 1;
                // SAFETY: a full slot; the reference is dropped at once.
                let h = unsafe { Self::key_ref(tx, s, i) }?.seeded_key_hash(tx, seed)?;
                let di = dir_index(h, g);
                if di < base || di >= base + n {
                    return Err(raw::corrupt(
                        SEGMENT,
                        at,
                        format!(
                            "slot {i} holds a key of directory index {di}, outside {base}..{}",
                            base + n
                        ),
                    ));
                }
                // Linear probing: no empty slot between the key's home and its slot.
                let mut j = h & mask;
                while j != i {
                    if Self::ctrl(tx, s, j)?.get(tx) == EMPTY {
                        return Err(raw::corrupt(
                            SEGMENT,
                            at,
                            format!("slot {i} unreachable from its home slot {}", h & mask),
                        ));
                    }
                    j = (j + 1) & mask;
                }
            }
            let hl = Self::hdr(tx, s.block, H_LEN)?.get(tx);
            let hu = Self::hdr(tx, s.block, H_USED)?.get(tx);
            if (hl, hu) != (full, used) {
                return Err(raw::corrupt(
                    SEGMENT,
                    at,
                    format!("header len/used {hl}/{hu}, counted {full}/{used}"),
                ));
            }
            total += full;
            d = base + n;
        }
        if total != self.len(tx) {
            return Err(raw::corrupt(
                HANDLE,
                0,
                format!("len {} but {total} entries", self.len(tx)),
            ));
        }
        if slots != self.capacity(tx) {
            return Err(raw::corrupt(
                HANDLE,
                0,
                format!("capacity {} but {slots} slots", self.capacity(tx)),
            ));
        }
        Ok(())
    }

    /// Marks the full slot `i` of `s` vacant, freeing (at commit) what its key owns and, when
    /// `free_value`, what its value owns (else the value is dropped as is).
    fn vacate(&self, tx: &Transaction<'_>, s: Seg, i: u64, free_value: bool) -> Result<()>
    where
        V: PValue,
    {
        let ctrl = Self::ctrl(tx, s, i)?;
        // If the next slot is empty, no probe sequence runs through this one: mark it empty.
        let next_empty = Self::ctrl(tx, s, (i + 1) & (s.cap - 1))?.get(tx) == EMPTY;
        let (ko, vo) = (Self::key_off(s, i)?, Self::val_off(s, i)?);
        let (ks, vs) = (size_of::<K>() as u64, size_of::<V>() as u64);
        let (used, len) = (Self::hdr(tx, s.block, H_USED)?, Self::hdr(tx, s.block, H_LEN)?);
        tx.snapshot(|b| {
            // SAFETY: the key and value of slot `i` and the counts of a live segment of this
            // map, reached only through cells by this thread.
            unsafe {
                if K::OWNS {
                    b.add(&Span::new(tx, s.block, ko, ks)?)?;
                }
                if V::OWNS {
                    b.add(&Span::new(tx, s.block, vo, vs)?)?;
                }
                b.add(&Span::new(tx, s.block, H_USED, 16)?)?;
            }
            b.add(ctrl)?;
            b.add(&self.len)?;
            // Last, once the slot is logged: the frees' allocator records drain with the batch
            // (no extra drain), and a batch that failed above (e.g. `OutOfSpace` growing the
            // log) freed nothing, so a caller that goes on and commits keeps a whole entry.
            // SAFETY: the key and value are discarded below, in this transaction.
            unsafe {
                if K::OWNS {
                    Self::key_ref(tx, s, i)?.free_owned(tx)?;
                }
                if free_value && V::OWNS {
                    Self::val_ref(tx, s, i)?.free_owned(tx)?;
                }
            }
            Ok(())
        })?;
        // A discarded handle's blocks are freed: zero it, so that no damaged control byte can
        // bring back a second owner of blocks reused later.
        // SAFETY: as above; logged in the batch.
        unsafe {
            if K::OWNS {
                raw::zero_bytes(tx, s.block, ko, ks)?;
            }
            if V::OWNS {
                raw::zero_bytes(tx, s.block, vo, vs)?;
            }
        }
        self.len.set(tx, self.len.get(tx).saturating_sub(1))?;
        len.set(tx, len.get(tx).saturating_sub(1))?;
        if next_empty {
            ctrl.set(tx, EMPTY)?;
            used.set(tx, used.get(tx).saturating_sub(1))
        } else {
            ctrl.set(tx, TOMB)
        }
    }
}

impl<K: PKey, V: PValue> PHashMap<K, V> {
    /// Inserts `k` (of hash `h`), known to be absent (`vacant`: where the lookup would put it,
    /// if it found room): makes the key ([`PKey::key_new`]: a `PString` key's buffer is
    /// allocated here, before any snapshot), makes room if needed, logs the slot (unless its
    /// segment is fresh), stores the key's bytes, lets `fill` write the value at the given byte
    /// offset of the segment (logged or fresh), then marks the slot full. One snapshot drain.
    /// Returns the segment and the slot.
    fn insert_new(
        &self,
        tx: &Transaction<'_>,
        k: &K::Borrowed,
        (h, vacant): (u64, Option<(Seg, u64, bool)>),
        fill: impl FnOnce(PPtr<u8>, u64) -> Result<()>,
    ) -> Result<(Seg, u64)> {
        // SAFETY: `key` is stored into a key slot by `place`, or freed below on failure, in
        // this transaction, and not used afterwards.
        let key = unsafe { K::key_new(tx, k)? };
        let r = self.place(tx, k, (h, vacant), &key, fill);
        if r.is_err() && K::OWNS {
            // SAFETY: `key` is not in the map (its slot, if written, was not marked full): it
            // is discarded here. Freeing it keeps a caller that goes on after the error from
            // leaking its blocks.
            unsafe { key.free_owned(tx)? };
        }
        r
    }

    /// `insert_new` once the key is made.
    fn place(
        &self,
        tx: &Transaction<'_>,
        k: &K::Borrowed,
        (h, vacant): (u64, Option<(Seg, u64, bool)>),
        key: &K,
        fill: impl FnOnce(PPtr<u8>, u64) -> Result<()>,
    ) -> Result<(Seg, u64)> {
        // The first insert (no block yet) keeps a seed set by `set_hash_seed`, or draws one;
        // the key is hashed again under it. Written with the growth step's handle.
        let (h, seed) = if self.root.get(tx).is_null() {
            let seed = match self.seed(tx) {
                0 => fresh_seed(self as *const Self as usize),
                s => s,
            };
            (Self::hash(seed, k), seed)
        } else {
            (h, self.seed(tx))
        };
        let grown = self.make_room(tx, h, seed, vacant.map(|(s, _, _)| s))?;
        let (s, slot, was_tomb) = match (grown, vacant) {
            (None, Some(v)) => v,
            // Room, but the lookup found no vacant slot: only in a corrupted segment.
            (None, None) => return Err(raw::corrupt(SEGMENT, 0, "a segment with room has no vacant slot")),
            (Some(s), _) => match Self::probe(tx, s, h, k)? {
                Probe::Vacant(i, tomb) => (s, i, tomb),
                Probe::Found(_) | Probe::Full => {
                    return Err(raw::corrupt(
                        SEGMENT,
                        s.block.offset(),
                        "a rebuilt segment has no vacant slot",
                    ))
                }
            },
        };
        let ctrl = Self::ctrl(tx, s, slot)?;
        let (ko, vo) = (Self::key_off(s, slot)?, Self::val_off(s, slot)?);
        if grown.is_none() {
            tx.snapshot(|b| {
                Self::log_slot(tx, b, s, slot, ctrl)?;
                b.add(&self.len)
            })?;
        }
        fill(s.block, vo)?;
        // SAFETY: the slot's key, logged above or fresh, reached only through cells.
        unsafe { raw::write_bytes(tx, s.block, ko, bytes_of(key))? };
        Self::mark_full(tx, s, ctrl, was_tomb)?;
        self.len.set(tx, self.len.get(tx).saturating_add(1))?;
        Ok((s, slot))
    }

    /// Logs, in batch `b`, what an insert into vacant slot `slot` of `s` changes there: its
    /// control byte `ctrl`, its key and value (one range in the pair layout) and the segment's
    /// `used` and `len` (one 16-byte span).
    #[inline(always)]
    fn log_slot(
        tx: &Transaction<'_>,
        b: &mut SnapshotBatch<'_, '_>,
        s: Seg,
        slot: u64,
        ctrl: &PCell<u8>,
    ) -> Result<()> {
        b.add(ctrl)?;
        let ko = Self::key_off(s, slot)?;
        // SAFETY: the slot's key and value and the counts of a live segment of this map,
        // reached only through cells by this thread.
        unsafe {
            if s.pairs {
                // The key and value side by side: one range (one record).
                b.add(&Span::new(tx, s.block, ko, s.kstride)?)?;
            } else {
                b.add(&Span::new(tx, s.block, ko, size_of::<K>() as u64)?)?;
                b.add(&Span::new(
                    tx,
                    s.block,
                    Self::val_off(s, slot)?,
                    size_of::<V>() as u64,
                )?)?;
            }
            b.add(&Span::new(tx, s.block, H_USED, 16)?)
        }
    }

    /// Marks a slot of `s` full (its key and value written) through its control byte `ctrl`
    /// and counts it in the segment: `len`, and `used` unless it was a tombstone.
    #[inline(always)]
    fn mark_full(tx: &Transaction<'_>, s: Seg, ctrl: &PCell<u8>, was_tomb: bool) -> Result<()> {
        ctrl.set(tx, FULL)?;
        let len = Self::hdr(tx, s.block, H_LEN)?;
        len.set(tx, len.get(tx).saturating_add(1))?;
        if !was_tomb {
            let used = Self::hdr(tx, s.block, H_USED)?;
            used.set(tx, used.get(tx).saturating_add(1))?;
        }
        Ok(())
    }

    /// Makes room for `additional` more entries without a rebuild, as far as one segment goes
    /// (`HashMap::reserve`): a map whose entries fit one full-size segment (no directory yet)
    /// gets a segment with enough slots to keep `len + additional` entries under 3/4 full, up
    /// to the full size (a rebuild that moves the entries: 2 drains; an empty map draws its
    /// hash seed here). A map of several segments already grows one segment at a time (no
    /// insert moves more than one) and is left as is, as is one with room already (0 drains):
    /// so [`capacity`](PHashMap::capacity) may stay below what std guarantees.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors; corrupted maps.
    pub fn reserve(&self, tx: &Transaction<'_>, additional: u64) -> Result<()> {
        raw::mutating(tx, self)?;
        if additional == 0 || self.global_depth(tx)? > 0 {
            return Ok(());
        }
        let want = self.len(tx).saturating_add(additional);
        let slots = want
            .saturating_mul(4)
            .div_ceil(3)
            .saturating_add(1)
            .max(MIN_CAP)
            .min(Self::SEG_CAP)
            .next_power_of_two();
        let root = self.root.get(tx);
        if root.is_null() {
            let seed = match self.seed(tx) {
                0 => fresh_seed(self as *const Self as usize),
                s => s,
            };
            let s = Self::new_seg(tx, slots, 0)?;
            or_free_fresh(tx, &[s.block], self.log_growth(tx, None, None, &[]))?;
            self.root.set(tx, s.block)?;
            self.depth.set(tx, seed << SEED_SHIFT)?;
            return self.cap.set(tx, slots);
        }
        let s = Self::open(tx, root)?;
        if s.cap >= slots {
            return Ok(());
        }
        let moves = Self::entries(tx, s, self.seed(tx))?;
        let ns = Self::new_seg(tx, slots, Self::local_depth(tx, s, 0)?)?;
        or_free_fresh(tx, &[ns.block], self.log_growth(tx, Some(s), None, &[s.block]))?;
        // The old segment's free is recorded: a failure now must not commit.
        let stored = (|| {
            Self::redistribute(tx, s, &moves, &[ns], |_| 0)?;
            self.point(tx, 0, 0, 1, ns.block)?;
            self.cap.set(tx, slots)
        })();
        doom_on_err(tx, stored)
    }

    /// Makes room for one more key of hash `h` (`looked_up`: its segment, when the caller's
    /// lookup already found it). `None` when that segment has room (nothing written); else the fresh segment that now holds `h`'s keys, after one growth step logged
    /// in one batch (the handle, the directory range or root, and the old segment's key and
    /// value arrays when they own blocks):
    /// - the first insert makes a segment of [`MIN_CAP`] slots;
    /// - a segment with many tombstones, or below full size, is rebuilt alone with room for
    ///   twice its live keys;
    /// - a full-size segment splits in two by hash bit `63 - local depth` (the directory doubles
    ///   first if the segment is as deep as it).
    ///
    /// Failure-atomic: the entries are read (and their keys hashed) before anything is
    /// allocated, the replaced blocks are freed inside the logging batch, after everything it
    /// logs (so a batch that fails, e.g. `OutOfSpace` growing the log, frees nothing), and the
    /// fresh blocks are freed again on any error. A caller that goes on after an error and
    /// commits finds the map as it was.
    fn make_room(
        &self,
        tx: &Transaction<'_>,
        h: u64,
        seed: u64,
        looked_up: Option<Seg>,
    ) -> Result<Option<Seg>> {
        // The usual case: the lookup's segment has room (no second walk of the directory).
        if let Some(s) = looked_up {
            if Self::has_room(tx, s)? {
                return Ok(None);
            }
        }
        let Some((s, g)) = self.locate(tx, h)? else {
            let s = Self::new_seg(tx, MIN_CAP, 0)?;
            or_free_fresh(tx, &[s.block], self.log_growth(tx, None, None, &[]))?;
            self.root.set(tx, s.block)?;
            self.depth.set(tx, seed << SEED_SHIFT)?;
            self.cap.set(tx, MIN_CAP)?;
            return Ok(Some(s));
        };
        if Self::has_room(tx, s)? {
            return Ok(None);
        }
        let l = Self::local_depth(tx, s, g)?;
        let d = dir_index(h, g);
        let (base, span) = dir_range(g, l, d);
        self.check_range(tx, g, (base, span), s.block)?;
        // The live entries, counted (not taken from the header) so that a rebuild always holds
        // them.
        let moves = Self::entries(tx, s, seed)?;
        let n = moves.len() as u64;
        let roomy = n.saturating_add(1).saturating_mul(2) <= s.cap;
        // A split by hash bit `63 - l` is useful only when each side gets at least 1/8 of the
        // entries (the new key counted) and, when the directory must double, it stays within
        // 8 entries per full-size segment's worth of slots. Otherwise (keys whose hashes share
        // many leading bits, or collide fully) the segment **overflows**: it is rebuilt alone,
        // bigger than a full-size segment, so memory stays proportional to the entries and the
        // directory never doubles for nothing (§13.4).
        let bit = 63 - l.min(63);
        let ones = moves.iter().filter(|&&(_, mh)| (mh >> bit) & 1 == 1).count() as u64 + ((h >> bit) & 1);
        let zeros = (n + 1).saturating_sub(ones);
        let balanced = zeros.min(ones).saturating_mul(8) > n;
        let dir_ok = l < g || (2u64 << g) <= 8 * (self.cap.get(tx) / Self::SEG_CAP).max(1);
        if roomy || s.cap < Self::SEG_CAP || l == MAX_DEPTH || !balanced || !dir_ok {
            // Rebuild alone, with room for twice the live keys (and at least MIN_CAP slots).
            let want = n.saturating_add(1).saturating_mul(2).max(MIN_CAP);
            let cap = want
                .checked_next_power_of_two()
                .ok_or_else(|| raw::out_of_bounds(want, 2))?;
            let ns = Self::new_seg(tx, cap, l)?;
            let dir = (g > 0).then_some((self.root.get(tx), base, span));
            or_free_fresh(tx, &[ns.block], self.log_growth(tx, Some(s), dir, &[s.block]))?;
            Self::redistribute(tx, s, &moves, &[ns], |_| 0)?;
            self.point(tx, g, base, span, ns.block)?;
            self.cap
                .set(tx, self.cap.get(tx).saturating_sub(s.cap).saturating_add(cap))?;
            return Ok(Some(ns));
        }
        // Split. Directory entries `[base, base + span)` point at `s`; after a doubling (when
        // `l == g`) its range is `[2 base, 2 base + 2)` of the new directory.
        let fresh_dir = l == g;
        let (base2, span2) = if fresh_dir {
            (base * 2, span * 2)
        } else {
            (base, span)
        };
        let old_root = self.root.get(tx);
        let mut fresh = Vec::with_capacity(3);
        let made = (|| {
            let dir = if fresh_dir {
                let nd = raw::alloc_block(tx, raw::elem_off::<u64>(2u64 << g)?)?;
                fresh.push(nd);
                for i in 0..2u64 << g {
                    Self::dir_cell(tx, nd, i)?.set(tx, self.seg_ptr(tx, g, i >> 1)?)?;
                }
                nd
            } else {
                old_root
            };
            let a = Self::new_seg(tx, Self::split_cap(zeros)?, l + 1)?;
            fresh.push(a.block);
            let b = Self::new_seg(tx, Self::split_cap(ones)?, l + 1)?;
            fresh.push(b.block);
            let old: &[PPtr<u8>] = if fresh_dir && g > 0 {
                &[s.block, old_root]
            } else {
                &[s.block]
            };
            self.log_growth(tx, Some(s), (!fresh_dir).then_some((dir, base2, span2)), old)?;
            Ok((dir, a, b))
        })();
        let (dir, a, b) = or_free_fresh(tx, &fresh, made)?;
        Self::redistribute(tx, s, &moves, &[a, b], |h| ((h >> bit) & 1) as usize)?;
        let half = span2 / 2;
        for i in 0..span2 {
            let seg = if i < half { a.block } else { b.block };
            Self::dir_cell(tx, dir, base2 + i)?.set(tx, seg)?;
        }
        if fresh_dir {
            self.root.set(tx, dir)?;
            self.depth.set(tx, (seed << SEED_SHIFT) | (g + 1))?;
        }
        self.cap.set(
            tx,
            self.cap
                .get(tx)
                .saturating_sub(s.cap)
                .saturating_add(a.cap)
                .saturating_add(b.cap),
        )?;
        Ok(Some(if (h >> bit) & 1 == 0 { a } else { b }))
    }

    /// Slots of one half of a split that takes `n` entries (the new key counted): a full-size
    /// segment when they fit in 3/4 of one (always, splitting a full-size segment), else (an
    /// overflowed segment splitting) room for twice them.
    fn split_cap(n: u64) -> Result<u64> {
        if n.saturating_add(1).saturating_mul(4) <= Self::SEG_CAP.saturating_mul(3) {
            return Ok(Self::SEG_CAP);
        }
        n.saturating_mul(2)
            .checked_next_power_of_two()
            .ok_or_else(|| raw::corrupt(SEGMENT, 0, format!("{n} entries")))
    }

    /// Whether one more key fits in `s` without passing 3/4 full (full slots plus tombstones).
    fn has_room(tx: &Transaction<'_>, s: Seg) -> Result<bool> {
        let used = Self::hdr(tx, s.block, H_USED)?.get(tx);
        Ok(used.saturating_add(1).saturating_mul(4) <= s.cap.saturating_mul(3))
    }

    /// The full slots of `s` with their keys' hashes under `seed`, in slot order.
    fn entries(tx: &Transaction<'_>, s: Seg, seed: u64) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for i in 0..s.cap {
            if Self::ctrl(tx, s, i)?.get(tx) == FULL {
                // SAFETY: a full slot of a live segment; the reference is dropped at once.
                out.push((i, unsafe { Self::key_ref(tx, s, i)? }.seeded_key_hash(tx, seed)?));
            }
        }
        Ok(out)
    }

    /// Checks that the directory entries pointing at `seg` are exactly `[base, base + n)` (the
    /// range its local depth gives), before a growth step rewrites them: a damaged local depth
    /// would otherwise drop other segments from the directory or leave pointers to the freed
    /// one.
    fn check_range(&self, tx: &Transaction<'_>, g: u64, (base, n): (u64, u64), seg: PPtr<u8>) -> Result<()> {
        if g == 0 {
            return Ok(());
        }
        let inside = (base..base + n).try_fold(true, |ok, d| {
            Ok::<_, ptm::Error>(ok && self.seg_ptr(tx, g, d)? == seg)
        })?;
        let before = base > 0 && self.seg_ptr(tx, g, base - 1)? == seg;
        let after = (base + n) >> g == 0 && self.seg_ptr(tx, g, base + n)? == seg;
        if !inside || before || after {
            return Err(raw::corrupt(
                HANDLE,
                seg.offset(),
                format!("the directory range of the segment at index {base} does not match its local depth"),
            ));
        }
        Ok(())
    }

    /// Logs, in one batch, what a growth step writes outside fresh memory: the handle, the
    /// directory entries `[base, base + n)` of `dir` when given, and the old segment's key and
    /// value arrays when they own blocks (the moved copies are zeroed); then frees (at commit)
    /// the blocks `free` it replaces.
    fn log_growth(
        &self,
        tx: &Transaction<'_>,
        old: Option<Seg>,
        dir: Option<(PPtr<u8>, u64, u64)>,
        free: &[PPtr<u8>],
    ) -> Result<()> {
        tx.snapshot(|b| {
            b.add(&self.root)?;
            b.add(&self.depth)?;
            b.add(&self.len)?;
            b.add(&self.cap)?;
            // SAFETY: the directory range and the old segment's arrays (the segment is freed at
            // commit, readable until then), reached only through cells by this thread.
            unsafe {
                if let Some((dir, base, n)) = dir {
                    b.add(&Span::new(
                        tx,
                        dir,
                        raw::elem_off::<u64>(base)?,
                        raw::elem_off::<u64>(n)?,
                    )?)?;
                }
                if let Some(o) = old {
                    if o.pairs && (K::OWNS || V::OWNS) {
                        // One array of pairs: the keys and values are all in it.
                        b.add(&Span::new(tx, o.block, o.ko, o.size - o.ko)?)?;
                    } else {
                        if K::OWNS {
                            b.add(&Span::new(tx, o.block, o.ko, raw::array_bytes::<K>(o.cap)?)?)?;
                        }
                        if V::OWNS {
                            b.add(&Span::new(tx, o.block, o.vo, raw::array_bytes::<V>(o.cap)?)?)?;
                        }
                    }
                }
            }
            // Last, once everything is logged: the frees' allocator records are drained with
            // the batch (no extra drain), and a batch that failed above freed nothing (a free
            // failing after another, on a damaged map, dooms the transaction).
            Frees::walk(tx, |f| free.iter().try_for_each(|&blk| f.block(blk)))
        })
    }

    /// Points the directory entries `[base, base + n)` (or the root, at depth 0) at `seg`.
    fn point(&self, tx: &Transaction<'_>, g: u64, base: u64, n: u64, seg: PPtr<u8>) -> Result<()> {
        if g == 0 {
            return self.root.set(tx, seg);
        }
        let dir = self.root.get(tx);
        for d in base..base + n {
            Self::dir_cell(tx, dir, d)?.set(tx, seg)?;
        }
        Ok(())
    }

    /// A fresh, empty segment of `cap` slots and local depth `l`: its header written, control
    /// bytes zeroed (and, when keys or values own blocks, the key and value arrays too: spare
    /// slots of a fresh block hold old bytes, which must never read as a handle). Fresh memory:
    /// no logging.
    fn new_seg(tx: &Transaction<'_>, cap: u64, l: u64) -> Result<Seg> {
        let pairs = writes_pairs();
        let size = Self::geo(cap, pairs)?.end;
        let block = raw::alloc_block(tx, size)?;
        Self::hdr(tx, block, H_CAP)?.set(tx, cap)?;
        Self::hdr(tx, block, H_DEPTH)?.set(tx, if pairs { l | PAIRS } else { l })?;
        Self::hdr(tx, block, H_USED)?.set(tx, 0)?;
        Self::hdr(tx, block, H_LEN)?.set(tx, 0)?;
        let zeroed = if K::OWNS || V::OWNS { size - SEG_HDR } else { cap };
        // SAFETY: the fresh block of `size` bytes, reached only through cells by this thread.
        unsafe { raw::zero_bytes(tx, block, SEG_HDR, zeroed)? };
        Self::seg(block, cap, pairs)
    }

    /// Moves the entries `moves` (slot, hash) of `old` into the fresh segment `to[pick(hash)]`,
    /// keys and values by bytes (zeroing the old copies of owning keys and values, logged by
    /// `log_growth`), and sets the fresh segments' counts.
    fn redistribute(
        tx: &Transaction<'_>,
        old: Seg,
        moves: &[(u64, u64)],
        to: &[Seg],
        pick: impl Fn(u64) -> usize,
    ) -> Result<()> {
        let (ksize, vsize) = (size_of::<K>() as u64, size_of::<V>() as u64);
        let mut counts = vec![0u64; to.len()];
        for &(i, h) in moves {
            let j = pick(h);
            let t = to[j];
            // The fresh segment has no tombstone and holds distinct keys: the first free slot.
            let Some(s) = Self::first_free(tx, t, h)? else {
                // No room: only in a corrupted segment.
                return Err(raw::corrupt(
                    SEGMENT,
                    old.block.offset(),
                    "more entries than slots",
                ));
            };
            Self::ctrl(tx, t, s)?.set(tx, FULL)?;
            let (kf, kt) = (Self::key_off(old, i)?, Self::key_off(t, s)?);
            let (vf, vt) = (Self::val_off(old, i)?, Self::val_off(t, s)?);
            // SAFETY: key and value slots of the old segment (logged when zeroed) and of the
            // fresh one, reached only through cells by this thread.
            unsafe {
                raw::move_bytes(tx, (old.block, kf), (t.block, kt), ksize, K::OWNS)?;
                raw::move_bytes(tx, (old.block, vf), (t.block, vt), vsize, V::OWNS)?;
            }
            counts[j] += 1;
        }
        for (t, n) in to.iter().zip(counts) {
            Self::hdr(tx, t.block, H_USED)?.set(tx, n)?;
            Self::hdr(tx, t.block, H_LEN)?.set(tx, n)?;
        }
        Ok(())
    }

    /// The first slot at or after hash `h`'s home in `s` that is not full.
    fn first_free(tx: &Transaction<'_>, s: Seg, h: u64) -> Result<Option<u64>> {
        let mask = s.cap - 1;
        let mut i = h & mask;
        for _ in 0..s.cap {
            if Self::ctrl(tx, s, i)?.get(tx) != FULL {
                return Ok(Some(i));
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    /// Removes `k`, freeing (at commit) everything its key and value own; `false` when absent.
    /// 2 drains (0 when absent), whatever the value owns.
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashMap::clear), and those of [`contains_key`](PHashMap::contains_key).
    pub fn remove_free(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        raw::mutating(tx, self)?;
        let Some((s, i)) = self.find(tx, k)? else {
            return Ok(false);
        };
        self.vacate(tx, s, i, true)?;
        Ok(true)
    }

    /// Frees the directory, the segments and everything the keys and values own, without
    /// writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`]: the map is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        Frees::walk(tx, |f| unsafe { self.release_into(tx, f) })
    }

    /// [`release`](PHashMap::release) through `f`, so that an error after a free dooms the
    /// transaction.
    ///
    /// # Safety
    ///
    /// As [`release`](PHashMap::release).
    unsafe fn release_into(&self, tx: &Transaction<'_>, f: &mut Frees<'_, '_>) -> Result<()> {
        let segs = self.segments(tx)?;
        for &s in &segs {
            if K::OWNS || V::OWNS {
                for i in 0..s.cap {
                    if Self::ctrl(tx, s, i)?.get(tx) == FULL {
                        // SAFETY: the whole map, so this entry, is being discarded.
                        unsafe {
                            f.value(Self::key_ref(tx, s, i)?)?;
                            f.value(Self::val_ref(tx, s, i)?)?;
                        }
                    }
                }
            }
            f.block(s.block)?;
        }
        if self.global_depth(tx)? > 0 {
            f.block(self.root.get(tx))?;
        }
        Ok(())
    }

    /// Removes every entry and frees the directory, the segments and everything the keys and
    /// values own (at commit). 2 drains, however deeply the values nest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted block pointer, those of
    /// [`block_offsets`](PHashMap::block_offsets), and logging errors.
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        Self::clear_all(tx, &[self])
    }

    /// [`clear`](PHashMap::clear) of several maps (a [`PConcurrentMap`](crate::PConcurrentMap)'s
    /// shards) in one snapshot batch: 2 drains in all.
    pub(crate) fn clear_all(tx: &Transaction<'_>, maps: &[&Self]) -> Result<()> {
        tx.snapshot(|b| {
            maps.iter().try_for_each(|m| {
                b.add(&m.root)?;
                b.add(&m.depth)?;
                b.add(&m.len)?;
                b.add(&m.cap)
            })?;
            // Last, once every handle is logged (as in `vacate`): a failed batch frees nothing,
            // and an error after a free (a damaged map) dooms the transaction.
            Frees::walk(tx, |f| {
                maps.iter().try_for_each(|m| {
                    // SAFETY: the handle is emptied below, in this transaction.
                    unsafe { m.release_into(tx, f) }
                })
            })
        })?;
        for m in maps {
            m.root.set(tx, PPtr::null())?;
            m.depth.set(tx, 0)?;
            m.len.set(tx, 0)?;
            m.cap.set(tx, 0)?;
        }
        Ok(())
    }

    /// Frees everything the map owns (the same as [`clear`](PHashMap::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashMap::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.clear(tx)
    }
}

impl<K: PKey, V: Persistent + Copy> PHashMap<K, V> {
    /// A copy of the value for `k` (`&7` for a `u64` key, `"ada"` for a `PString` key).
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a block pointer outside the pool, a depth or capacity out of
    /// range) or key.
    pub fn get(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        tx.check_live(self)?;
        match self.find_full(tx, k)? {
            Fast::Found(b, slot) => {
                if let Some(v) = Self::full_value(tx, &b, slot) {
                    return Ok(Some(v));
                }
            }
            Fast::Absent => return Ok(None),
            Fast::General => {}
        }
        match self.find(tx, k)? {
            Some((s, i)) => Ok(Some(Self::val(tx, s, i)?.get(tx))),
            None => Ok(None),
        }
    }

    /// Copies of the values for `keys`, in order (`None` for an absent key): what
    /// [`get`](PHashMap::get) returns for each, with the lookups overlapped. The keys are
    /// hashed first, and each lookup starts loading the lines of the lookup 8
    /// keys later, so up to 8 lookups' memory accesses are in flight at once instead of one
    /// after another. For many random lookups in a large map, a multiple of
    /// one `get` at a time. 0 drains.
    ///
    /// # Errors
    ///
    /// As [`get`](PHashMap::get).
    pub fn get_many<Q: AsKey<K>>(&self, tx: &Transaction<'_>, keys: &[Q]) -> Result<Vec<Option<V>>> {
        let keys: Vec<&K::Borrowed> = keys.iter().map(AsKey::as_key).collect();
        self.get_each(tx, &keys)
    }

    /// [`get_many`](PHashMap::get_many) of borrowed keys.
    pub(crate) fn get_each(&self, tx: &Transaction<'_>, keys: &[&K::Borrowed]) -> Result<Vec<Option<V>>> {
        tx.check_live(self)?;
        let seed = self.seed(tx);
        let hashes: Vec<u64> = keys.iter().map(|&k| Self::hash(seed, k)).collect();
        for &h in hashes.iter().take(GET_AHEAD) {
            self.prefetch_lookup(tx, h);
        }
        // Read once: nothing writes the map during the lookups.
        let entry = self.full_entry(tx);
        let mut out = Vec::with_capacity(keys.len());
        for (i, (&k, &h)) in keys.iter().zip(&hashes).enumerate() {
            if let Some(&next) = hashes.get(i + GET_AHEAD) {
                self.prefetch_lookup(tx, next);
            }
            if let Some((g, root, _)) = entry {
                match Self::lookup_full(tx, g, root, h, k)? {
                    Fast::Found(b, slot) => {
                        if let Some(v) = Self::full_value(tx, &b, slot) {
                            out.push(Some(v));
                            continue;
                        }
                    }
                    Fast::Absent => {
                        out.push(None);
                        continue;
                    }
                    Fast::General => {}
                }
            }
            let found = match self.locate(tx, h)? {
                Some((s, _)) => match Self::probe(tx, s, h, k)? {
                    Probe::Found(slot) => Some(Self::val(tx, s, slot)?.get(tx)),
                    Probe::Vacant(..) | Probe::Full => None,
                },
                None => None,
            };
            out.push(found);
        }
        Ok(out)
    }

    /// The value in slot `slot` of the full-size segment `b` that
    /// [`lookup_full`](Self::lookup_full) found; `None` where the read does not check (then the
    /// caller looks again the general way, which names what is wrong).
    #[inline(always)]
    fn full_value(tx: &Transaction<'_>, b: &raw::Block<'_>, slot: u64) -> Option<V> {
        let geo = Self::FULL_GEO;
        b.read::<V>(tx, geo.vo + slot * geo.vstride)
    }

    fn val<'t>(tx: &'t Transaction<'_>, s: Seg, i: u64) -> Result<&'t PCell<V>> {
        // SAFETY: the accessors' contract.
        unsafe { raw::cell::<V>(tx, s.block, Self::val_off(s, i)?) }
    }

    /// Inserts `k`, known to be absent, with value `v`.
    fn insert_copy(
        &self,
        tx: &Transaction<'_>,
        k: &K::Borrowed,
        at: (u64, Option<(Seg, u64, bool)>),
        v: V,
    ) -> Result<()> {
        self.insert_new(tx, k, at, |block, off| {
            // SAFETY: the value slot `insert_new` hands to its `fill`: inside a segment of this map,
            // logged or fresh, reached only through cells by this thread.
            unsafe { raw::cell::<V>(tx, block, off)? }.set(tx, v)
        })?;
        Ok(())
    }

    /// Inserts or updates `k` (`7` for a `u64` key; `"ada"` or a `String` for a `PString` key,
    /// whose buffer is allocated only when the key is new); returns the previous value.
    /// 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, and those of
    /// [`get`](PHashMap::get).
    pub fn insert(&self, tx: &Transaction<'_>, k: impl AsKey<K>, v: V) -> Result<Option<V>> {
        raw::mutating(tx, self)?;
        let k = k.as_key();
        match self.search(tx, k)? {
            Search::Found(s, i) => {
                let cell = Self::val(tx, s, i)?;
                let old = cell.get(tx);
                cell.set(tx, v)?;
                Ok(Some(old))
            }
            Search::Absent(h, vacant) => {
                self.insert_copy(tx, k, (h, vacant), v)?;
                Ok(None)
            }
        }
    }

    /// The value for `k`, inserting `f()` first if absent (2 drains when it inserts, 0 when not).
    /// `f` may itself use the map; if it inserts `k`, the value it stored is returned and `f()`'s
    /// is dropped.
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashMap::insert).
    pub fn get_or_insert_with(
        &self,
        tx: &Transaction<'_>,
        k: impl AsKey<K>,
        f: impl FnOnce() -> V,
    ) -> Result<V> {
        raw::mutating(tx, self)?;
        let k = k.as_key();
        match self.search(tx, k)? {
            Search::Found(s, i) => Ok(Self::val(tx, s, i)?.get(tx)),
            Search::Absent(..) => {
                let v = f();
                // `f` may have changed the map (it is shared, `&self`): where the key would go,
                // and even its absence, are looked up again.
                match self.search(tx, k)? {
                    Search::Found(s, i) => Ok(Self::val(tx, s, i)?.get(tx)),
                    Search::Absent(h, vacant) => {
                        self.insert_copy(tx, k, (h, vacant), v)?;
                        Ok(v)
                    }
                }
            }
        }
    }

    /// Removes `k` and returns its value, freeing what the key owns. 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// Logging errors, and those of [`get`](PHashMap::get).
    pub fn remove(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        raw::mutating(tx, self)?;
        let Some((s, i)) = self.find(tx, k)? else {
            return Ok(None);
        };
        let v = Self::val(tx, s, i)?.get(tx);
        self.vacate(tx, s, i, false)?;
        Ok(Some(v))
    }

    /// The key as stored and a copy of the value for `k` (`HashMap::get_key_value`). 0 drains.
    ///
    /// # Errors
    ///
    /// As [`get`](PHashMap::get).
    pub fn get_key_value<'t>(
        &'t self,
        tx: &'t Transaction<'_>,
        k: &K::Borrowed,
    ) -> Result<Option<(K::Ref<'t>, V)>> {
        tx.check_live(self)?;
        match self.find(tx, k)? {
            Some((s, i)) => Ok(Some((Self::stored_key(tx, s, i)?, Self::val(tx, s, i)?.get(tx)))),
            None => Ok(None),
        }
    }

    /// Changes the value for `k` in place through `f` (the persistent `get_mut`: `f` gets a
    /// copy, which is stored back) and returns the new value; `None` if `k` is absent. 2 drains.
    ///
    /// # Errors
    ///
    /// Logging errors, and those of [`get`](PHashMap::get).
    pub fn update(&self, tx: &Transaction<'_>, k: &K::Borrowed, f: impl FnOnce(&mut V)) -> Result<Option<V>> {
        raw::mutating(tx, self)?;
        let Some((s, i)) = self.find(tx, k)? else {
            return Ok(None);
        };
        raw::update_cell(tx, Self::val(tx, s, i)?, f).map(Some)
    }

    /// Copies of the values, in table order (`HashMap::values`, eagerly). 0 drains.
    ///
    /// # Errors
    ///
    /// Corrupted maps (the error an iteration meets).
    pub fn values(&self, tx: &Transaction<'_>) -> Result<Vec<V>> {
        tx.check_live(self)?;
        Ok(self.all_entries(tx)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every entry, in table order, as [`iter`](PHashMap::iter) yields them, or the error that
    /// stopped the iteration.
    fn all_entries<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<Vec<(K::Ref<'a>, V)>> {
        let mut it = self.iter(tx);
        let out = it.by_ref().collect();
        match it.error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Iterates over the entries as `(key, value copy)`, in table order (the key as
    /// [`keys`](PHashMap::keys) gives it). Each step rereads the table, so changing the map
    /// while iterating is memory-safe (entries may then be missed or repeated).
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> MapIter<'a, K, V> {
        MapIter {
            map: self,
            tx,
            cur: Cursor::default(),
            error: None,
            yielded: 0,
        }
    }
}

/// Methods for maps of `Copy` keys and values, whose keys can be handed back by value.
impl<K: Persistent + Copy, V: Persistent + Copy> PHashMap<K, V> {
    /// Removes `k` and returns the stored key and its value (`HashMap::remove_entry`). 2 drains
    /// (0 when absent).
    ///
    /// # Errors
    ///
    /// As [`remove`](PHashMap::remove).
    pub fn remove_entry(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<(K, V)>> {
        raw::mutating(tx, self)?;
        let Some((s, i)) = self.find(tx, k)? else {
            return Ok(None);
        };
        let stored = Self::stored_key(tx, s, i)?;
        let v = Self::val(tx, s, i)?.get(tx);
        self.vacate(tx, s, i, false)?;
        Ok(Some((stored, v)))
    }

    /// Keeps only the entries for which `keep` returns `true` (`HashMap::retain`; called once
    /// per entry, in table order). One removal per entry dropped: a snapshot drain each, plus
    /// the commit.
    ///
    /// # Errors
    ///
    /// As [`remove`](PHashMap::remove), and corrupted maps.
    pub fn retain(&self, tx: &Transaction<'_>, mut keep: impl FnMut(&K, &V) -> bool) -> Result<()> {
        raw::mutating(tx, self)?;
        let drop: Vec<K> = self
            .all_entries(tx)?
            .into_iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k)
            .collect();
        for k in &drop {
            self.remove(tx, k)?;
        }
        Ok(())
    }

    /// Removes every entry and returns them (`HashMap::drain`, eagerly), in table order; the
    /// map's blocks are freed as by [`clear`](PHashMap::clear). 2 drains (0 when the map holds no block).
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashMap::clear), and corrupted maps.
    pub fn drain(&self, tx: &Transaction<'_>) -> Result<Vec<(K, V)>> {
        raw::mutating(tx, self)?;
        let out = self.all_entries(tx)?;
        // Also when no entry is left: the blocks of a map emptied by removals are freed too.
        if !self.root.get(tx).is_null() {
            self.clear(tx)?;
        }
        Ok(out)
    }

    /// Inserts every entry of `items` (`Extend`), as [`insert`](PHashMap::insert) one by one
    /// would, but staging them: new keys bound for segments with room are logged up to 64
    /// at a time behind one drain, then written. A key already in the map or among
    /// the staged ones, or one whose segment must grow, writes what is staged and goes in by a
    /// plain insert. So `n` new keys into a map with room cost about `n / 64` drains plus the
    /// commit, where one insert each costs `n`.
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashMap::insert). On an error, the entries before the failing one (in
    /// the order of `items`) may be in the map, and none after it.
    pub fn extend(&self, tx: &Transaction<'_>, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        raw::mutating(tx, self)?;
        let mut staged: Vec<Staged<K, V>> = Vec::new();
        for (k, v) in items {
            if staged.len() == STAGE {
                self.write_staged(tx, &mut staged)?;
            }
            let h = Self::hash(self.seed(tx), &k);
            // Keys of equal hashes (the same key twice, or a collision) go in one after the
            // other, not in one stage.
            if !staged.iter().any(|e| e.h == h) {
                if let Some((s, slot, tomb)) = self.stage_slot(tx, h, &k, &staged)? {
                    staged.push(Staged {
                        s,
                        slot,
                        tomb,
                        h,
                        k,
                        v,
                    });
                    continue;
                }
            }
            self.write_staged(tx, &mut staged)?;
            self.insert(tx, k, v)?;
        }
        self.write_staged(tx, &mut staged)
    }

    /// Where [`extend`](PHashMap::extend) can stage `k` (of hash `h`): the vacant slot its
    /// insert would take after the `staged` ones, if `k` is absent and its segment has room
    /// for one more insert after them (as [`has_room`](Self::has_room) would find it then).
    /// `None` otherwise, and before the first insert.
    fn stage_slot(
        &self,
        tx: &Transaction<'_>,
        h: u64,
        k: &K,
        staged: &[Staged<K, V>],
    ) -> Result<Option<(Seg, u64, bool)>> {
        let Some((s, _)) = self.locate(tx, h)? else {
            return Ok(None);
        };
        let mine = |e: &&Staged<K, V>| e.s.block == s.block;
        let taken = |slot| staged.iter().filter(mine).any(|e| e.slot == slot);
        let Probe::Vacant(slot, tomb) = Self::probe_past(tx, s, h, k, taken)? else {
            return Ok(None);
        };
        let fills = staged.iter().filter(mine).filter(|e| !e.tomb).count() as u64;
        let used = Self::hdr(tx, s.block, H_USED)?.get(tx).saturating_add(fills);
        Ok((used.saturating_add(1).saturating_mul(4) <= s.cap.saturating_mul(3)).then_some((s, slot, tomb)))
    }

    /// Logs every staged insert in one batch (one drain at the first store), writes them and
    /// empties `staged`.
    fn write_staged(&self, tx: &Transaction<'_>, staged: &mut Vec<Staged<K, V>>) -> Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        tx.snapshot(|b| {
            for e in staged.iter() {
                Self::log_slot(tx, b, e.s, e.slot, Self::ctrl(tx, e.s, e.slot)?)?;
            }
            b.add(&self.len)
        })?;
        for e in staged.iter() {
            Self::val(tx, e.s, e.slot)?.set(tx, e.v)?;
            // SAFETY: the slot's key, logged above, reached only through cells.
            unsafe { raw::write_bytes(tx, e.s.block, Self::key_off(e.s, e.slot)?, bytes_of(&e.k))? };
            Self::mark_full(tx, e.s, Self::ctrl(tx, e.s, e.slot)?, e.tomb)?;
        }
        self.len
            .set(tx, self.len.get(tx).saturating_add(staged.len() as u64))?;
        staged.clear();
        Ok(())
    }
}

/// Most inserts [`PHashMap::extend`] logs behind one drain.
pub(crate) const STAGE: usize = 64;

/// How many keys ahead [`PHashMap::get_many`] starts loading a lookup's lines.
pub(crate) const GET_AHEAD: usize = 8;

/// An insert [`PHashMap::extend`] staged: key `k` (of hash `h`) and value `v` go into `slot` of
/// `s`, vacant (`tomb`: a tombstone) and not written yet.
struct Staged<K, V> {
    s: Seg,
    slot: u64,
    tomb: bool,
    h: u64,
    k: K,
    v: V,
}

/// Nested collections as values: a `PHashMap` whose values are handles
/// ([`PString`](crate::PString), [`PVec`](crate::PVec), your own [`PHandle`] structs).
///
/// Value references handed out are [`Nested`](ptm::Nested) guards. An insert that rebuilds a
/// segment (growth, or purging tombstones) moves every entry of that segment to a new block,
/// and `remove_free` or `clear` discard them: a reference taken before any change of the map is
/// **stale**, and writes through it fail with
/// [`Error::StaleReference`](ptm::Error::StaleReference) (see the crate docs, "Nested
/// references"). Key references (`&'t PString`) are not tracked: one kept across a rebuild
/// reads an empty (zeroed) key; never write through a key reference.
impl<K: PKey, V: PHandle> PHashMap<K, V> {
    /// A reference to the value for `k`. 0 drains.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PHashMap::contains_key).
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<Option<Nested<'t, V>>> {
        tx.check_live(self)?;
        match self.find(tx, k)? {
            // SAFETY: a full slot of a live segment; `V` is all cells.
            Some((s, i)) => unsafe { Self::val_ref(tx, s, i) }.map(|v| Some(tx.nested(self, v))),
            None => Ok(None),
        }
    }

    /// The value for `k`, inserting an empty handle (all-zero bytes) first if absent: the way to
    /// create a nested collection. 2 drains when it inserts (growth included: a rebuild moves the
    /// entries by bytes and zeroes and logs the old copies of owning keys and values), 0 when
    /// not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashMap::insert).
    pub fn get_or_insert_new<'t>(
        &'t self,
        tx: &'t Transaction<'_>,
        k: impl AsKey<K>,
    ) -> Result<Nested<'t, V>> {
        tx.check_live(self)?;
        let k = k.as_key();
        let at = match self.search(tx, k)? {
            // SAFETY: a full slot of a live segment; `V` is all cells.
            Search::Found(s, i) => return unsafe { Self::val_ref(tx, s, i) }.map(|v| tx.nested(self, v)),
            Search::Absent(h, vacant) => (h, vacant),
        };
        // The insert may move the other values (a segment split): references to them go stale.
        tx.invalidate_nested(self);
        let (s, slot) = self.insert_new(tx, k, at, |block, off| {
            // SAFETY: the value slot handed to `fill`: logged or fresh; zero is the empty handle.
            unsafe { raw::zero_bytes(tx, block, off, size_of::<V>() as u64) }
        })?;
        // SAFETY: the slot just filled, in a live segment; `V` is all cells.
        unsafe { Self::val_ref(tx, s, slot) }.map(|v| tx.nested(self, v))
    }

    /// Iterates over the entries as `(key, value reference)`, in table order (the key as
    /// [`keys`](PHashMap::keys) gives it); see [`iter`](PHashMap::iter) for changes during
    /// iteration.
    pub fn iter_refs<'a>(&'a self, tx: &'a Transaction<'a>) -> MapRefs<'a, K, V> {
        MapRefs {
            map: self,
            tx,
            cur: Cursor::default(),
            error: None,
        }
    }
}

impl<K, V> fmt::Debug for PHashMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PHashMap { .. }")
    }
}

/// Iterator over a [`PHashMap`]'s entries as `(key, value copy)`; see [`PHashMap::iter`]. Stops at the
/// first error (only possible on a corrupted map).
pub struct MapIter<'a, K, V> {
    map: &'a PHashMap<K, V>,
    tx: &'a Transaction<'a>,
    cur: Cursor,
    error: Option<Error>,
    /// Entries handed out so far (for `size_hint`).
    yielded: u64,
}

impl<K, V> MapIter<'_, K, V> {
    /// The error that ended the iteration early, if any (only on a corrupted map). Such an
    /// error also dooms the transaction (see the crate docs, "Iteration errors").
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

impl<'a, K: PKey, V: Persistent + Copy> Iterator for MapIter<'a, K, V> {
    type Item = (K::Ref<'a>, V);

    /// Exact unless the map changes during the iteration.
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.map.len(self.tx).saturating_sub(self.yielded)).unwrap_or(usize::MAX);
        (n, Some(n))
    }

    fn next(&mut self) -> Option<Self::Item> {
        if self.error.is_some() {
            return None;
        }
        self.yielded += 1;
        let (map, tx) = (self.map, self.tx);
        let r = map.next_full(tx, &mut self.cur).and_then(|at| {
            at.map(|(s, i)| {
                let k = PHashMap::<K, V>::stored_key(tx, s, i)?;
                Ok((k, PHashMap::<K, V>::val(tx, s, i)?.get(tx)))
            })
            .transpose()
        });
        raw::iteration(tx, r, &mut self.error)
    }
}

impl<K, V> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter").field("at", &self.cur).finish()
    }
}

/// Iterator over a [`PHashMap`]'s entries as `(key, value reference)`; see
/// [`PHashMap::iter_refs`]. Stops at the first error (only possible on a corrupted map).
pub struct MapRefs<'a, K, V> {
    map: &'a PHashMap<K, V>,
    tx: &'a Transaction<'a>,
    cur: Cursor,
    error: Option<Error>,
}

impl<K, V> MapRefs<'_, K, V> {
    /// The error that ended the iteration early, if any (only on a corrupted map). Such an
    /// error also dooms the transaction (see the crate docs, "Iteration errors").
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

impl<'a, K: PKey, V: PHandle> Iterator for MapRefs<'a, K, V> {
    type Item = (K::Ref<'a>, Nested<'a, V>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.error.is_some() {
            return None;
        }
        let (map, tx) = (self.map, self.tx);
        let r = map.next_full(tx, &mut self.cur).and_then(|at| {
            at.map(|(s, i)| {
                let k = PHashMap::<K, V>::stored_key(tx, s, i)?;
                // SAFETY: a full slot of a live segment; `V` is all cells.
                let v = unsafe { PHashMap::<K, V>::val_ref(tx, s, i) }?;
                Ok((k, tx.nested(map, v)))
            })
            .transpose()
        });
        raw::iteration(tx, r, &mut self.error)
    }
}

impl<K, V> fmt::Debug for MapRefs<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapRefs").field("at", &self.cur).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word tests of the fast path against a byte-by-byte model: `bytes_equal` and
    /// `bytes_zero_exact` flag exactly the matching bytes (bit 7 of each), `bytes_zero` at least
    /// its lowest zero byte exactly, over words mixing the control values (empty, full,
    /// tombstones) with bytes that borrow or carry (0x01, 0x7F, 0x80, 0xFF).
    #[test]
    fn word_tests_flag_the_bytes_a_byte_loop_would() {
        const BYTES: [u8; 8] = [EMPTY, FULL, TOMB, 0x03, 0x7F, 0x80, 0x81, 0xFF];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let cases = if cfg!(miri) { 300 } else { 20_000 };
        for _ in 0..cases {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes: [u8; 8] = std::array::from_fn(|j| BYTES[(x >> (3 * j)) as usize % 8]);
            let w = u64::from_le_bytes(bytes);
            let flag = |p: &dyn Fn(u8) -> bool| -> u64 {
                (0..8).filter(|&j| p(bytes[j])).map(|j| 0x80 << (8 * j)).sum()
            };
            for b in [EMPTY, FULL, TOMB] {
                assert_eq!(bytes_equal(w, b), flag(&|v| v == b), "{w:#018x} == {b}");
            }
            assert_eq!(bytes_zero_exact(w), flag(&|v| v == 0), "{w:#018x}");
            let zero = bytes_zero(w);
            let first = flag(&|v| v == 0);
            assert_eq!(
                zero & zero.wrapping_neg(),
                first & first.wrapping_neg(),
                "{w:#018x}"
            );
            assert_eq!(zero == 0, first == 0, "{w:#018x}");
        }
    }

    /// The precomputed full-size layout is what `geometry` computes, for pairs of every
    /// alignment and size mix (a key smaller than its value, larger, over-aligned, odd-sized).
    #[test]
    fn full_segment_geometry_is_computed_geometry() {
        fn check<K: PKey, V: Persistent>() {
            let cap = PHashMap::<K, V>::SEG_CAP;
            assert_eq!(
                PHashMap::<K, V>::FULL_GEO,
                geometry::<K, V>(cap, true).unwrap(),
                "{} -> {}",
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            );
            for (c, pairs) in [(cap, true), (cap, false), (cap / 2, true), (cap * 2, true)] {
                assert_eq!(
                    PHashMap::<K, V>::geo(c, pairs).ok(),
                    geometry::<K, V>(c, pairs).ok(),
                    "{c} slots, pairs {pairs}"
                );
            }
        }
        check::<u64, u64>();
        check::<u8, u64>();
        check::<u64, u8>();
        check::<u128, u16>();
        check::<[u8; 3], [u64; 5]>();
        check::<[u16; 7], u32>();
        check::<crate::PString, u64>();
        check::<u32, crate::PString>();
    }
}
