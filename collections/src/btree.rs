//! [`PBTreeMap`]: an ordered map in the pool (a B+ tree).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Bound, RangeBounds};

use ptm::pmem_core::{bytes_of, read_from_bytes};
use ptm::{Error, Nested, PCell, PPtr, Persistent, Result, Transaction};

use crate::owned::{doom_on_err, Frees};
use crate::raw::{self, Span};
use crate::{AsKey, PHandle, POrdKey, PValue};

/// Keys per leaf, and per narrow internal node (every internal node of builds before wide
/// nodes, and of trees whose key slots exceed [`WIDE_KEY_MAX`] bytes).
pub(crate) const CAP: usize = 15;
/// Keys per wide internal node (every internal node this build makes in a tree whose key slots
/// are at most [`WIDE_KEY_MAX`] bytes, unless the tree's internal nodes are narrow already).
/// Four times the fan-out: a tree of 1M keys is 4 levels deep instead of 6.
pub(crate) const WIDE_CAP: usize = 63;
/// Largest key slot (bytes) whose trees get wide internal nodes (a wide node of 32-byte keys is
/// 2 544 bytes).
pub(crate) const WIDE_KEY_MAX: u64 = 32;
/// The high 32 bits of a wide internal node's length word (the low 32 hold its length); 0 in
/// every other node. A build before wide nodes clamps such a length to 15 and reads the node as
/// a narrow internal one, whose child slots then hold key bytes: its pointer checks refuse
/// them (design §13.2).
pub(crate) const WIDE_TAG: u64 = 0x5749_4445;
/// Fewest keys in a node other than the root. Splits leave at least this many on each side (a
/// leaf of 16 splits 8 + 8, an internal node of 16 keys 8 + 1 up + 7), and a removal that leaves
/// a node with fewer borrows from a sibling or merges with it. (Removals made before rebalancing
/// existed left emptier leaves, even empty ones: every operation still works on such a tree,
/// and removals repair the nodes they pass.)
pub(crate) const MIN: usize = CAP / 2;
/// Longest root-to-leaf path accepted (a deeper or cyclic tree is corrupt).
pub(crate) const MAX_DEPTH: usize = 48;

/// A persistent ordered map (a pool's `BTreeMap<K, V>`): a B+ tree whose leaves hold up to 15
/// keys and their values, and whose internal nodes hold up to 63 separator keys (64 children)
/// when a key takes at most 32 bytes, else 15.
///
/// **Keys** are [`POrdKey`]s: any `Persistent + Copy + Ord` type, ordered by its [`Ord`] (which
/// must be the same in every build that opens the pool), [`PString`](crate::PString) (ordered as
/// `str`, looked up by `&str`: `get(tx, "ada")`, `range(tx, "a".."m")`) and `PVec<u8>` (as
/// `[u8]`, by `&[u8]`). A string key is stored in its leaf slot as a handle owning a buffer of
/// exactly its bytes; an internal node's separator is a **separate copy owning its own
/// buffer**, made when a leaf split or borrow sets it and freed when a merge or borrow drops it
/// (so removing a key does not touch the separators equal to it, and no buffer is reached
/// twice). Inserting methods take anything [`AsKey`] (`insert(tx, 7, x)`, `insert(tx, "ada",
/// x)`).
///
/// **Values** are `Copy` (read and written by copy: [`get`](PBTreeMap::get),
/// [`insert`](PBTreeMap::insert), [`range`](PBTreeMap::range)) or nested collection handles
/// ([`PHandle`]s such as `PVec<u64>`, created in place by
/// [`get_or_insert_new`](PBTreeMap::get_or_insert_new) and reached by reference through
/// [`get_ref`](PBTreeMap::get_ref), [`iter_refs`](PBTreeMap::iter_refs) and
/// [`range_refs`](PBTreeMap::range_refs)); [`remove_free`](PBTreeMap::remove_free),
/// [`clear`](PBTreeMap::clear) and [`free`](PBTreeMap::free) free what the values own, at any
/// depth. Removing an entry ([`remove`](PBTreeMap::remove) too) frees what its key owns.
///
/// Every node but the root is at least half full (7 keys; 31 in a wide internal node): a
/// removal that leaves a node with fewer borrows keys from a sibling or merges with it (merges
/// may climb to the root); a root left with one child is replaced by it, and the tree of a map emptied by removals has no node at
/// all. Merged and emptied nodes are freed in the removing transaction.
///
/// Splits, borrows and merges move keys and values between nodes **by bytes**. When keys or
/// values own blocks, every slot of a logged node that loses its handle (the spare slots past a
/// node's length, and every slot of a node freed by a merge) is zeroed in the same batch, and a
/// fresh node's spare slots are zeroed too: each handle's bytes are in exactly one slot of the
/// tree, and no damaged length can bring back a second owner.
///
/// Drains: `insert` (new key or update), `remove`, `remove_free` and `get_or_insert_new` (when
/// it inserts) cost **2**, node splits, borrows, merges, root collapses and string keys
/// included (nodes, key buffers and separator copies are allocated, and nodes and buffers
/// freed, first; then every node the operation changes is logged in one batch; then the
/// commit); `clear` and `free` cost 2 however deeply the values nest; reads cost 0.
///
/// Value references handed out ([`Nested`](ptm::Nested) guards from `get_ref`,
/// `get_or_insert_new`, `iter_refs`, `range_refs`) point at a slot of a node. A later insert or
/// removal in the same transaction may move entries between slots: a reference taken before
/// then is **stale**, and writes through it fail with
/// [`Error::StaleReference`](ptm::Error::StaleReference) (see the crate docs, "Nested
/// references"). Key references (`&'t PString` from iteration) are not tracked: one kept across
/// a change reads an empty (zeroed) key or the key that moved into its slot; never write
/// through a key reference.
///
/// `!Sync`: share it under a [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PBTreeMap<K, V> {
    root: PCell<PPtr<u8>>,
    len: PCell<u64>,
    _kv: PhantomData<(K, V)>,
}

const _: () = assert!(size_of::<PBTreeMap<u64, u64>>() == 16);

/// Byte offsets of a handle's `root` and `len` words (for the schema-driven walk, `walk.rs`).
pub(crate) const FIELDS: [usize; 2] = [
    std::mem::offset_of!(PBTreeMap<u8, u8>, root),
    std::mem::offset_of!(PBTreeMap<u8, u8>, len),
];

// SAFETY: `repr(C)` of two 8-byte `PCell`s and a zero-sized marker: no padding whatever `K` and
// `V` are; every bit pattern is valid (node pointers are checked by `Transaction::deref`, node
// lengths clamped, depth bounded); no virtual address.
// The layout check rejects zero-sized keys and values at `cargo check` (a root deriving
// `Persistent` evaluates its fields' checks): use a `PBTreeSet` for a set.
unsafe impl<K: Persistent, V: Persistent> Persistent for PBTreeMap<K, V> {
    const __LAYOUT_CHECK: () = assert!(
        size_of::<K>() > 0 && size_of::<V>() > 0,
        "PBTreeMap<K, V> needs non-zero-sized K and V (use PBTreeSet<K> for a set)"
    );
}

/// A node copied out of the pool. Keys and values are **bitwise copies** of the slots: for
/// handle types they are not owners (nothing is dropped or freed through them unless the
/// operation discards that entry); the tree moves a handle by storing its bytes into its new
/// slot and zeroing the old one.
struct Node<K, V> {
    leaf: bool,
    /// Internal nodes only: a wide one ([`WIDE_CAP`] keys), else narrow ([`CAP`]).
    wide: bool,
    keys: Vec<K>,
    /// Leaves only.
    vals: Vec<V>,
    /// Internal nodes only: `keys.len() + 1` children.
    kids: Vec<PPtr<u8>>,
}

impl<K, V> Node<K, V> {
    /// Keys the node holds at most.
    fn cap(&self) -> usize {
        if self.wide {
            WIDE_CAP
        } else {
            CAP
        }
    }

    /// Fewest keys the node holds unless it is the root: half its capacity, rounded down.
    fn min(&self) -> usize {
        if self.wide {
            WIDE_CAP / 2
        } else {
            MIN
        }
    }
}

/// A root-to-leaf path: `(node, its contents, index of the child taken)`. Only the leaf's
/// contents are read while descending (`Some`); an internal node's are read
/// ([`PBTreeMap::contents`]) only when a split or an underflow reaches it, which most inserts
/// and removals never do.
type Path<K, V> = Vec<(PPtr<u8>, Option<Node<K, V>>, usize)>;

/// An entry at one end of the tree: the key as a reference and as an owned copy, the value.
type EdgeEntry<'t, K, V> = (<K as crate::PKey>::Ref<'t>, <K as POrdKey>::Owned, V);

/// Nodes to store, with their new contents.
type Writes<K, V> = Vec<(PPtr<u8>, Node<K, V>)>;

/// What [`PBTreeMap::walk`] calls for every node.
type Visit<'f, K, V> = dyn FnMut(PPtr<u8>, &Node<K, V>) -> Result<()> + 'f;

/// A node with the bounds `[lo, hi)` its parent gives its keys (`None`: unbounded).
type Bounded<K> = (
    PPtr<u8>,
    Option<<K as POrdKey>::Owned>,
    Option<<K as POrdKey>::Owned>,
);

/// A node resolved, with its header read (see [`PBTreeMap::open`]).
struct Opened<'t> {
    /// The node's bytes (`g.size`).
    b: raw::Block<'t>,
    leaf: bool,
    /// A wide internal node.
    wide: bool,
    /// Keys in use, clamped to the node's capacity.
    len: usize,
    /// The node's layout.
    g: Geo,
}

/// Byte layout of a node: `[len: u64][leaf: u64][keys: K; cap][vals: V; cap][kids: u64; cap+1]`
/// (a leaf or narrow internal node, `cap` = [`CAP`]), or `[len | WIDE_TAG << 32: u64][0:
/// u64][keys: K; WIDE_CAP][kids: u64; WIDE_CAP + 1]` (a wide internal node: no value array,
/// `vo == co`).
#[derive(Clone, Copy)]
pub(crate) struct Geo {
    /// Keys the node holds at most.
    pub(crate) cap: u64,
    /// Offset of the key array.
    pub(crate) ko: u64,
    /// Offset of the value array.
    pub(crate) vo: u64,
    /// Offset of the child array.
    pub(crate) co: u64,
    /// Bytes of a node.
    pub(crate) size: u64,
}

#[inline]
fn geo<K, V>() -> Geo {
    node_geometry(raw::Slot::of::<K>(), raw::Slot::of::<V>())
}

/// [`geo`] from the key and value slots' sizes and alignments (shared with the schema-driven
/// walker, `walk.rs`). Saturating: absurd sizes from a damaged schema give a node no block
/// holds.
#[inline]
pub(crate) fn node_geometry(key: raw::Slot, value: raw::Slot) -> Geo {
    let cap = CAP as u64;
    let ko = key.align_up(16);
    let vo = value.align_up(ko.saturating_add(cap.saturating_mul(key.size)));
    let co = raw::Slot::of::<u64>().align_up(vo.saturating_add(cap.saturating_mul(value.size)));
    Geo {
        cap,
        ko,
        vo,
        co,
        size: co.saturating_add((cap + 1) * 8),
    }
}

/// The layout of a wide internal node of `key` slots; `None` when the slots exceed
/// [`WIDE_KEY_MAX`] bytes (such trees keep narrow internal nodes).
#[inline]
pub(crate) fn wide_geometry(key: raw::Slot) -> Option<Geo> {
    if key.size > WIDE_KEY_MAX {
        return None;
    }
    let cap = WIDE_CAP as u64;
    let ko = key.align_up(16);
    let co = raw::Slot::of::<u64>().align_up(ko + cap * key.size);
    Some(Geo {
        cap,
        ko,
        vo: co,
        co,
        size: co + (cap + 1) * 8,
    })
}

/// What a node's length word `w0` and leaf word `w8` say: `Some((leaf, wide, len))`, the length
/// not yet clamped; `None` for a length word whose high half is neither 0 nor [`WIDE_TAG`] on an
/// internal node of a tree that has wide nodes (0 on a leaf). Shared with the schema-driven
/// walker (`walk.rs`).
#[inline]
pub(crate) fn decode_header(w0: u64, w8: u64, wide_ok: bool) -> Option<(bool, bool, u64)> {
    let leaf = w8 != 0;
    let wide = match w0 >> 32 {
        0 => false,
        WIDE_TAG if !leaf && wide_ok => true,
        _ => return None,
    };
    Some((leaf, wide, w0 & u64::from(u32::MAX)))
}

/// The layout and length a node's header gives, checked: the length at most the layout's
/// capacity and the leaf word 0 or 1; else what is wrong, for a verifier's report. Shared by
/// [`PBTreeMap::check`] and the schema-driven walker (`walk.rs`).
pub(crate) fn checked_header(
    w0: u64,
    w8: u64,
    narrow: Geo,
    wide: Option<Geo>,
) -> std::result::Result<(Geo, u64), String> {
    let header = decode_header(w0, w8, wide.is_some());
    header
        .and_then(|(_, is_wide, l)| {
            let g = if is_wide { wide? } else { narrow };
            (l <= g.cap && w8 <= 1).then_some((g, l))
        })
        .ok_or_else(|| match header {
            Some((_, _, l)) => format!("length {l}, leaf flag {w8}"),
            None => format!("length word {w0:#x}, leaf flag {w8}"),
        })
}

/// A bitwise copy of `t` (not an owner of what a handle owns: see [`Node`]).
fn bits<T: Persistent>(t: &T) -> T {
    read_from_bytes(bytes_of(t)).expect("a value's own bytes")
}

/// By binary search, the first index of `keys` whose key is at least `k` (the lower bound) or,
/// when `upper`, greater than `k` (the upper bound).
fn search<K: POrdKey>(tx: &Transaction<'_>, keys: &[K], k: &K::Borrowed, upper: bool) -> Result<usize> {
    partition_point(keys.len(), |i| {
        let o = keys[i].key_cmp(tx, k)?;
        Ok(o == Ordering::Less || (upper && o == Ordering::Equal))
    })
}

/// Blocks allocated by an operation before its snapshot, freed again when it fails before its
/// first store (so a caller that goes on after the error leaks nothing).
struct Fresh<K> {
    keys: Vec<K>,
    nodes: Vec<PPtr<u8>>,
}

impl<K: PValue> Fresh<K> {
    fn new() -> Self {
        Fresh {
            keys: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Frees everything recorded (the first error, if any, is returned after trying all).
    fn release(self, tx: &Transaction<'_>) -> Result<()> {
        let mut first = Ok(());
        for k in &self.keys {
            // SAFETY: a key made by this operation and not stored (the operation failed before
            // its first store): discarded here.
            let r = unsafe { k.free_owned(tx) };
            first = first.and(r);
        }
        for n in self.nodes {
            first = first.and(tx.free(n));
        }
        first
    }
}

impl<K: POrdKey, V: PValue> PBTreeMap<K, V> {
    const SIZES_OK: () = assert!(
        size_of::<K>() > 0 && size_of::<V>() > 0,
        "PBTreeMap<K, V> needs non-zero-sized K and V (use u8 as a unit value)"
    );

    // Node accessors. Contract shared by all of them: `n` is a node of this tree or a node
    // allocated for it in this transaction. It is live: nodes are freed only by `clear` (which
    // nulls the root) and by a `remove` that unlinks them in the same transaction, and a block
    // freed by a transaction stays readable, and is not handed out again, until that
    // transaction commits (a `Range` that still holds a pointer to it cannot outlive the
    // transaction). The tree is `!Sync` (or guarded by a lock the transaction holds), so its
    // nodes are reached only by this thread, through cells (keys and values that are handles
    // are all cells; `Copy` ones are read by copy, through a reference used for that read only).

    /// A bitwise copy of the `T` `off` bytes into node `n`.
    ///
    /// # Safety
    ///
    /// The accessor contract, and a `T` slot lies at `off` inside the node.
    unsafe fn copy_at<T: Persistent>(tx: &Transaction<'_>, n: PPtr<u8>, off: u64) -> Result<T> {
        // SAFETY: forwarded contract; the reference is only read from, at once; any bit pattern
        // is a `T` (`Persistent`).
        Ok(unsafe { std::ptr::read(raw::at::<T>(tx, n, off)?) })
    }

    /// The layout of this tree's wide internal nodes; `None` when its keys are too large for
    /// them.
    #[inline]
    fn wide_geo() -> Option<Geo> {
        wide_geometry(raw::Slot::of::<K>())
    }

    /// The layout of a wide internal node (`wide`), or of a leaf or narrow internal node.
    #[inline]
    fn geo_of(wide: bool) -> Geo {
        match (wide, Self::wide_geo()) {
            (true, Some(w)) => w,
            _ => geo::<K, V>(),
        }
    }

    /// Bytes every node of this tree spans at least (the smaller of the two layouts): what is
    /// resolved and prefetched before the node's kind is known.
    #[inline]
    fn head_len() -> u64 {
        let g = geo::<K, V>().size;
        Self::wide_geo().map_or(g, |w| w.size.min(g))
    }

    /// Node `n` resolved, its header read and its lines prefetched: the first
    /// [`head_len`](Self::head_len) bytes at once (a whole leaf), the rest of a wide node once
    /// its header says so.
    ///
    /// # Errors
    ///
    /// A pointer that does not resolve, or a length word with unknown high bits
    /// ([`Error::CorruptCollection`]).
    #[inline(always)]
    fn open<'t>(tx: &'t Transaction<'_>, n: PPtr<u8>) -> Result<Opened<'t>> {
        let head_len = Self::head_len();
        // SAFETY: see the contract above; every node of this tree spans `head_len` bytes or more.
        let head = unsafe { raw::Block::new(tx, n, head_len)? };
        head.prefetch(0, head_len);
        let w0 = head.cell::<u64>(0)?.get(tx);
        let w8 = head.cell::<u64>(8)?.get(tx);
        let Some((leaf, wide, len)) = decode_header(w0, w8, Self::wide_geo().is_some()) else {
            return Err(raw::corrupt(
                "PBTreeMap",
                n.offset(),
                format!("a node's length word {w0:#x} (leaf word {w8})"),
            ));
        };
        let g = Self::geo_of(wide);
        let b = if g.size == head_len {
            head
        } else {
            // SAFETY: as above; a node of this kind spans `g.size` bytes.
            let b = unsafe { raw::Block::new(tx, n, g.size)? };
            // Two calls: one prefetches at most 9 lines (576 bytes).
            b.prefetch(head_len, 576);
            b.prefetch(head_len + 576, g.size.saturating_sub(head_len + 576));
            b
        };
        Ok(Opened {
            b,
            leaf,
            wide,
            len: len.min(g.cap) as usize,
            g,
        })
    }

    fn read_node(tx: &Transaction<'_>, n: PPtr<u8>) -> Result<Node<K, V>> {
        Self::node_from(tx, &Self::open(tx, n)?)
    }

    /// [`read_node`](Self::read_node) of a node already opened.
    fn node_from(tx: &Transaction<'_>, o: &Opened<'_>) -> Result<Node<K, V>> {
        let (b, g, len, leaf) = (&o.b, o.g, o.len, o.leaf);
        let mut node = Node {
            leaf,
            wide: o.wide,
            keys: Vec::with_capacity(len + 1),
            vals: Vec::new(),
            kids: Vec::new(),
        };
        // SAFETY: see the contract above; offsets lie inside the node (its layout `g`, `len` at
        // most its capacity);
        // each reference is only read from, at once; any bit pattern is a `K` or `V`
        // (`Persistent`).
        unsafe {
            for i in 0..len as u64 {
                node.keys
                    .push(std::ptr::read(b.at::<K>(g.ko + raw::elem_off::<K>(i)?)?));
            }
            if leaf {
                node.vals.reserve(len + 1);
                for i in 0..len as u64 {
                    node.vals
                        .push(std::ptr::read(b.at::<V>(g.vo + raw::elem_off::<V>(i)?)?));
                }
            } else {
                node.kids.reserve(len + 2);
                for i in 0..=len as u64 {
                    node.kids.push(b.cell::<PPtr<u8>>(g.co + i * 8)?.get(tx));
                }
            }
        }
        Ok(node)
    }

    /// Stores `node` into `n`, whose whole span this transaction has logged (or which is
    /// fresh), by bytes. When keys (values) own blocks, the key (value) slots past the node's
    /// entries are zeroed: they may hold handles moved out of this node, or old bytes of a
    /// fresh block, which must never read as a second owner.
    fn write_node(tx: &Transaction<'_>, n: PPtr<u8>, node: &Node<K, V>) -> Result<()> {
        let g = Self::geo_of(node.wide);
        let (len, vlen) = (node.keys.len() as u64, node.vals.len() as u64);
        if len > g.cap || vlen > CAP as u64 || node.kids.len() as u64 > g.cap + 1 {
            return Err(raw::out_of_bounds(n.offset(), len));
        }
        let (ks, vs) = (size_of::<K>() as u64, size_of::<V>() as u64);
        let tag = if node.wide { WIDE_TAG << 32 } else { 0 };
        // SAFETY: see the contract above; the arrays lie inside the node (its layout `g`, at
        // most `g.cap` keys and values, `g.cap + 1` children; a wide node has no value array).
        unsafe {
            raw::cell::<u64>(tx, n, 0)?.set(tx, len | tag)?;
            raw::cell::<u64>(tx, n, 8)?.set(tx, u64::from(node.leaf))?;
            raw::write_bytes(tx, n, g.ko, raw::slice_bytes(&node.keys))?;
            raw::write_bytes(tx, n, g.co, raw::slice_bytes(&node.kids))?;
            if K::OWNS {
                raw::zero_bytes(tx, n, g.ko + len * ks, (g.cap - len) * ks)?;
            }
            if !node.wide {
                raw::write_bytes(tx, n, g.vo, raw::slice_bytes(&node.vals))?;
                if V::OWNS {
                    raw::zero_bytes(tx, n, g.vo + vlen * vs, (CAP as u64 - vlen) * vs)?;
                }
            }
            if !node.leaf {
                // Child pointers own nodes: the slots past `len + 1` may hold a child that moved
                // to another node (a split's right half) or was freed (a merge), which a damaged
                // length must not bring back.
                let kids = node.kids.len() as u64;
                raw::zero_bytes(tx, n, g.co + kids * 8, (g.cap + 1).saturating_sub(kids) * 8)?;
            }
        }
        Ok(())
    }

    /// A fresh node block whose child array is zeroed (fresh memory: no log), so that a leaf,
    /// which never writes it, holds no old bytes there that a damaged leaf flag could read as
    /// child pointers.
    fn alloc_node(tx: &Transaction<'_>, wide: bool) -> Result<PPtr<u8>> {
        let g = Self::geo_of(wide);
        let n = raw::alloc_block(tx, g.size)?;
        // SAFETY: the fresh block of `g.size` bytes just allocated by `tx`, reached only by this
        // thread, through cells; the child array lies in `co..size`. (Zeroing fresh memory
        // cannot fail; should it, the block is given back.)
        if let Err(e) = unsafe { raw::zero_bytes(tx, n, g.co, g.size - g.co) } {
            let _ = tx.free(n);
            return Err(e);
        }
        Ok(n)
    }

    /// Zeroes every key and value slot of `n`, a node being freed whose span is logged (when
    /// keys or values own blocks: a reference into it then reads empty handles).
    fn zero_slots(tx: &Transaction<'_>, n: PPtr<u8>) -> Result<()> {
        let g = Self::open(tx, n)?.g;
        // SAFETY: see the contract above (freed nodes stay readable until commit); the key and
        // value arrays lie in `ko..co` (a wide node: its keys).
        unsafe { raw::zero_bytes(tx, n, g.ko, g.co - g.ko) }
    }

    /// The whole node `n` as one loggable range.
    fn span(tx: &Transaction<'_>, n: PPtr<u8>) -> Result<Span> {
        let size = Self::open(tx, n)?.g.size;
        // SAFETY: see the contract above; `size` is the node's block size (its kind's).
        unsafe { Span::new(tx, n, 0, size) }
    }

    /// What [`write_node`](Self::write_node) stores into the existing node `n` when it writes
    /// `node` there, as one loggable range: a leaf's header, keys and values (`0..co`: a leaf
    /// never writes its child array, which stays zero), else the whole node. A node keeps its
    /// kind when rewritten (splits, merges and borrows pair nodes of one level), so `node.leaf`
    /// is also what `n` holds. Logging (and, at commit, flushing) the child array of every leaf
    /// written cost two undo lines and two flushed lines per leaf insert or removal, with
    /// nothing changed in them.
    fn write_span(tx: &Transaction<'_>, n: PPtr<u8>, node: &Node<K, V>) -> Result<Span> {
        let g = Self::geo_of(node.wide);
        let len = if node.leaf { g.co } else { g.size };
        // SAFETY: see the contract above; `co <= size`, the node's block size.
        unsafe { Span::new(tx, n, 0, len) }
    }

    /// A reference to value `i` of leaf `n`.
    ///
    /// # Safety
    ///
    /// The accessor contract, `i < CAP`, and `V` is a [`PHandle`] (all cells).
    unsafe fn val_ref<'t>(tx: &'t Transaction<'_>, n: PPtr<u8>, i: u64) -> Result<&'t V> {
        // SAFETY: forwarded contract.
        unsafe { raw::at::<V>(tx, n, geo::<K, V>().vo + raw::elem_off::<V>(i)?) }
    }

    /// The iteration form of key `i` of node `n`, whose copy is `copy`.
    fn key_ref<'t>(tx: &'t Transaction<'_>, n: PPtr<u8>, i: usize, copy: &K) -> Result<K::Ref<'t>> {
        K::ref_from(copy, || {
            // SAFETY: the accessor contract; `i < len <= CAP`; a key whose `Ref` borrows it is
            // all cells (`PKey`).
            unsafe { raw::at::<K>(tx, n, geo::<K, V>().ko + raw::elem_off::<K>(i as u64)?) }
        })
    }

    /// The path from the root to the leaf where `k` belongs: `(node, node contents, index of
    /// the child taken)`, the leaf last (its index unused).
    fn path(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Path<K, V>> {
        let () = Self::SIZES_OK;
        let mut out = Vec::new();
        let mut n = self.root.get(tx);
        if n.is_null() {
            return Ok(out);
        }
        loop {
            if out.len() >= MAX_DEPTH {
                return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
            }
            let node = Self::open(tx, n)?;
            if node.leaf {
                out.push((n, Some(Self::node_from(tx, &node)?), 0));
                return Ok(out);
            }
            // In place, as `find`: what `read_node` + `search(.., true)` would give.
            let i = Self::child_index(tx, &node, k)?;
            let child = node.b.cell::<PPtr<u8>>(node.g.co + i as u64 * 8)?.get(tx);
            out.push((n, None, i));
            n = child;
        }
    }

    /// The index of the child of the internal node `node` whose keys include `k`: child `i`
    /// holds the keys in `[keys[i - 1], keys[i])`. Reads the keys in place.
    #[inline(always)]
    fn child_index(tx: &Transaction<'_>, node: &Opened<'_>, k: &K::Borrowed) -> Result<usize> {
        // SAFETY: the accessor contract, `len` at most the node's capacity; the keys are only
        // read, for this search.
        let keys = unsafe { node.b.slice::<K>(node.g.ko, node.len)? };
        partition_point(node.len, |i| Ok(keys[i].key_cmp(tx, k)? != Ordering::Greater))
    }

    /// The contents of a node of a [`Path`]: as read on the way down, or read now.
    fn contents(tx: &Transaction<'_>, n: PPtr<u8>, node: Option<Node<K, V>>) -> Result<Node<K, V>> {
        match node {
            Some(node) => Ok(node),
            None => Self::read_node(tx, n),
        }
    }

    /// The leaf holding `k` and its index there. Reads in place: the length and leaf flag of
    /// each node on the way, the keys a binary search visits (about 4 per node) and one child
    /// pointer per internal node; no node is copied out.
    fn find(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<(PPtr<u8>, u64)>> {
        Ok(self.find_in(tx, k)?.map(|(b, i)| (b.ptr(), i)))
    }

    /// [`find`](Self::find), with the leaf as the block it resolved (a lookup reads its value
    /// from there without resolving it again).
    fn find_in<'t>(&self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<Option<(raw::Block<'t>, u64)>> {
        let () = Self::SIZES_OK;
        let mut n = self.root.get(tx);
        if n.is_null() {
            return Ok(None);
        }
        for _ in 0..MAX_DEPTH {
            // The node's lines are read next (header, keys, then values or children): `open`
            // loads them together.
            let node = Self::open(tx, n)?;
            let len = node.len;
            if node.leaf {
                // SAFETY: the accessor contract, `len <= CAP`; the keys are only read, for this
                // search.
                let keys = unsafe { node.b.slice::<K>(node.g.ko, len)? };
                let cmp = |i: usize| keys[i].key_cmp(tx, k);
                let i = partition_point(len, |i| Ok(cmp(i)? == Ordering::Less))?;
                if i == len || cmp(i)? != Ordering::Equal {
                    return Ok(None);
                }
                return Ok(Some((node.b, i as u64)));
            }
            let i = Self::child_index(tx, &node, k)?;
            n = node.b.cell::<PPtr<u8>>(node.g.co + i as u64 * 8)?.get(tx);
        }
        Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64))
    }

    /// The leaf holding the smallest (`last == false`) or largest key and that key's index,
    /// `None` for an empty tree. Reads one length, flag and child pointer per level.
    fn edge(&self, tx: &Transaction<'_>, last: bool) -> Result<Option<(PPtr<u8>, u64)>> {
        let () = Self::SIZES_OK;
        let mut n = self.root.get(tx);
        if n.is_null() {
            return Ok(None);
        }
        for _ in 0..MAX_DEPTH {
            let node = Self::open(tx, n)?;
            let len = node.len as u64;
            if node.leaf {
                return Ok((len > 0).then(|| (n, if last { len - 1 } else { 0 })));
            }
            // `i <= len`: one of the `len + 1` children.
            let i = if last { len } else { 0 };
            n = node.b.cell::<PPtr<u8>>(node.g.co + i * 8)?.get(tx);
        }
        Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64))
    }

    /// The key at `(leaf, i)` as a reference and as an owned copy.
    fn key_at<'t>(tx: &'t Transaction<'_>, n: PPtr<u8>, i: u64) -> Result<(K::Ref<'t>, K::Owned)> {
        // SAFETY: the accessor contract; `i` is under the leaf's length.
        let copy = unsafe { Self::copy_at::<K>(tx, n, geo::<K, V>().ko + raw::elem_off::<K>(i)?)? };
        let owned = copy.key_owned(tx)?;
        Ok((Self::key_ref(tx, n, i as usize, &copy)?, owned))
    }

    /// The keys in order (`BTreeMap::keys`, eagerly), as [`PKey::Ref`](crate::PKey::Ref)
    /// (copies of `Copy` keys, `&PString` for string keys), like
    /// [`PHashMap::keys`](crate::PHashMap::keys). 0 drains.
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn keys<'a>(&'a self, tx: &'a Transaction<'_>) -> Result<Vec<K::Ref<'a>>> {
        tx.check_live(self)?;
        let mut out = Vec::new();
        self.walk(tx, &mut |n, node| {
            for (i, k) in node.keys.iter().enumerate().take(node.vals.len()) {
                out.push(Self::key_ref(tx, n, i, k)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Number of entries.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.len.get(tx)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// Whether `k` is present (`&7` for a `u64` key, `"ada"` for a `PString` key). 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted tree (bad node pointers, too deep) or key.
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        tx.check_live(self)?;
        Ok(self.find(tx, k)?.is_some())
    }

    /// Inserts `k` with value `v` unless present; returns where `k` already was (then nothing
    /// changed). Makes the key first ([`PKey::key_new`](crate::PKey::key_new): a `PString`
    /// key's buffer), then plans the splits (allocating their nodes, and a separator copy per
    /// leaf split when keys own blocks), logs every existing node that changes in one batch, and
    /// stores. 2 drains.
    fn insert_entry(&self, tx: &Transaction<'_>, k: &K::Borrowed, v: V) -> Result<Option<(PPtr<u8>, u64)>> {
        let path = self.path(tx, k)?;
        let pos = match path.last() {
            Some((lp, leaf, _)) => {
                // `path` reads the leaf it ends with.
                let leaf = leaf
                    .as_ref()
                    .ok_or_else(|| raw::corrupt("PBTreeMap", lp.offset(), "a path that ends at no leaf"))?;
                let i = search(tx, &leaf.keys, k, false)?;
                if i < leaf.keys.len() && leaf.keys[i].key_cmp(tx, k)? == Ordering::Equal {
                    return Ok(Some((*lp, i as u64)));
                }
                i
            }
            None => 0,
        };
        let mut fresh = Fresh::new();
        // SAFETY: the key is stored below into a leaf by its bytes, or freed by
        // `fresh.release` if the insert fails before its first store; never used otherwise.
        let key = unsafe { K::key_new(tx, k)? };
        if K::OWNS {
            fresh.keys.push(bits(&key));
        }
        let InsertPlan { writes, root } = match self.plan_insert(tx, path, pos, key, v, &mut fresh) {
            Ok(plan) => plan,
            Err(e) => {
                // The error that matters is the first; freeing what was made is best effort.
                let _ = fresh.release(tx);
                return Err(e);
            }
        };
        for (n, node) in &writes {
            Self::write_node(tx, *n, node)?;
        }
        if let Some(r) = root {
            self.root.set(tx, r)?;
        }
        self.len.set(tx, self.len.get(tx).saturating_add(1))?;
        Ok(None)
    }

    /// The nodes an insert of `key` at `pos` of the last node of `path` (none: an empty tree)
    /// writes, and the new root if any; allocates the fresh nodes and separator copies (recorded
    /// in `fresh`) and logs the rest, one batch.
    fn plan_insert(
        &self,
        tx: &Transaction<'_>,
        mut path: Path<K, V>,
        pos: usize,
        key: K,
        v: V,
        fresh: &mut Fresh<K>,
    ) -> Result<InsertPlan<K, V>> {
        let mut writes = Vec::new();
        let mut root = None;
        match path.pop() {
            None => {
                // Empty tree: a single leaf.
                let n = Self::alloc_node(tx, false)?;
                fresh.nodes.push(n);
                let node = Node {
                    leaf: true,
                    wide: false,
                    keys: vec![key],
                    vals: vec![v],
                    kids: vec![],
                };
                writes.push((n, node));
                root = Some(n);
            }
            Some((mut ptr, node, _)) => {
                let mut node = Self::contents(tx, ptr, node)?;
                node.keys.insert(pos, key);
                node.vals.insert(pos, v);
                // Split upward while a node overflows; the first one that does not absorbs the
                // last separator.
                loop {
                    if node.keys.len() <= node.cap() {
                        writes.push((ptr, node));
                        break;
                    }
                    let right_ptr = Self::alloc_node(tx, node.wide)?;
                    fresh.nodes.push(right_ptr);
                    let (left, mut sep, right) = split_half(node);
                    if left.leaf && K::OWNS {
                        // The separator is a copy of the right leaf's first key, owning its own
                        // blocks. SAFETY: stored below into the parent (or the new root), or
                        // freed by `fresh.release` on failure.
                        sep = unsafe { sep.key_dup(tx)? };
                        fresh.keys.push(bits(&sep));
                    }
                    let (split_leaf, split_wide) = (left.leaf, left.wide);
                    writes.push((ptr, left));
                    writes.push((right_ptr, right));
                    match path.pop() {
                        Some((pptr, parent, i)) => {
                            let mut parent = Self::contents(tx, pptr, parent)?;
                            parent.keys.insert(i, sep);
                            parent.kids.insert(i + 1, right_ptr);
                            ptr = pptr;
                            node = parent;
                        }
                        None => {
                            // A new root is wide where the keys allow it, unless the tree's
                            // internal nodes are narrow (a tree an older build grew): every
                            // internal node of a tree is of one kind.
                            let wide = match split_leaf {
                                true => Self::wide_geo().is_some(),
                                false => split_wide,
                            };
                            let root_ptr = Self::alloc_node(tx, wide)?;
                            fresh.nodes.push(root_ptr);
                            let top = Node {
                                leaf: false,
                                wide,
                                keys: vec![sep],
                                vals: vec![],
                                kids: vec![ptr, right_ptr],
                            };
                            writes.push((root_ptr, top));
                            root = Some(root_ptr);
                            break;
                        }
                    }
                }
            }
        }
        tx.snapshot(|b| {
            b.add(&self.root)?;
            b.add(&self.len)?;
            // The fresh nodes need no snapshot: ptm logged them as new memory at allocation.
            for (n, node) in writes.iter().filter(|(n, _)| !fresh.nodes.contains(n)) {
                b.add(&Self::write_span(tx, *n, node)?)?;
            }
            Ok(())
        })?;
        Ok(InsertPlan { writes, root })
    }

    /// Removes `k`: returns a bitwise copy of its value (freed first when `free_value`), or
    /// `None` when absent. 2 drains (0 when absent), rebalancing included.
    fn remove_entry(&self, tx: &Transaction<'_>, k: &K::Borrowed, free_value: bool) -> Result<Option<V>> {
        let mut path = self.path(tx, k)?;
        let Some((ptr, leaf, _)) = path.pop() else {
            return Ok(None);
        };
        let mut leaf = Self::contents(tx, ptr, leaf)?;
        let i = search(tx, &leaf.keys, k, false)?;
        if i >= leaf.vals.len() || leaf.keys[i].key_cmp(tx, k)? != Ordering::Equal {
            return Ok(None);
        }
        let key = leaf.keys.remove(i);
        let v = leaf.vals.remove(i);
        // Every change is computed first (reads, and separator copies when keys own blocks),
        // then everything changed is logged in one batch (one drain) whose last step frees the
        // blocks (so a batch that fails, e.g. `OutOfSpace` growing the log, frees nothing),
        // then stored. An error once a free is recorded dooms the transaction.
        let mut fresh = Fresh::new();
        let plan = match Self::rebalance(tx, path, ptr, leaf, &mut fresh) {
            Ok(plan) => plan,
            Err(e) => {
                let _ = fresh.release(tx);
                return Err(e);
            }
        };
        let owns = K::OWNS || V::OWNS;
        let logged = tx.snapshot(|b| {
            b.add(&self.len)?;
            if plan.root.is_some() {
                b.add(&self.root)?;
            }
            for (n, node) in &plan.writes {
                b.add(&Self::write_span(tx, *n, node)?)?;
            }
            if owns {
                for n in &plan.freed {
                    b.add(&Self::span(tx, *n)?)?;
                }
            }
            // Last, once everything is logged: the frees' allocator records drain with the
            // batch (no extra drain), and a batch that failed above freed nothing.
            Frees::walk(tx, |f| {
                // SAFETY: the removed key and value, and the separators the plan drops, are
                // discarded in this transaction: the stores below overwrite or zero their
                // slots.
                unsafe {
                    if K::OWNS {
                        f.value(&key)?;
                        for s in &plan.dropped {
                            f.value(s)?;
                        }
                    }
                    if free_value {
                        f.value(&v)?;
                    }
                }
                plan.freed.iter().try_for_each(|&n| f.block(n))
            })
        });
        if let Err(e) = logged {
            let _ = fresh.release(tx);
            return Err(e);
        }
        let stored = (|| {
            for (n, node) in &plan.writes {
                Self::write_node(tx, *n, node)?;
            }
            if owns {
                for n in &plan.freed {
                    Self::zero_slots(tx, *n)?;
                }
            }
            if let Some(root) = plan.root {
                self.root.set(tx, root)?;
            }
            self.len.set(tx, self.len.get(tx).saturating_sub(1))
        })();
        if K::OWNS || (free_value && V::OWNS) || !plan.freed.is_empty() {
            // Frees are recorded: a failure now must not commit.
            doom_on_err(tx, stored)?;
        } else {
            stored?;
        }
        Ok(Some(v))
    }

    /// Removes `k`, freeing (at commit) everything its key and value own; `false` when absent.
    /// 2 drains (0 when absent), rebalancing included, however deeply the value nests.
    ///
    /// # Errors
    ///
    /// Logging errors, corrupted trees.
    pub fn remove_free(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        raw::mutating(tx, self)?;
        Ok(self.remove_entry(tx, k, true)?.is_some())
    }

    /// Plans the repair of the tree after `node` (at `ptr`, at the end of `path`) lost a key:
    /// climbing while a node is under its minimum ([`MIN`]; half of [`WIDE_CAP`] for a wide
    /// node) keys, it borrows from a sibling that has more than that minimum (the two share
    /// their keys evenly; the parent's separator changes, the climb stops)
    /// or else merges with one (the right node of the pair is freed, the parent loses a key and
    /// the climb goes on). A root left without keys is freed: an internal one is replaced by
    /// its only child, a leaf by nothing. Reads only, but for the separator copy a leaf borrow
    /// makes when keys own blocks (recorded in `fresh`); the separators a leaf merge or borrow
    /// drops are listed in the plan, for the caller to free.
    fn rebalance(
        tx: &Transaction<'_>,
        mut path: Path<K, V>,
        mut ptr: PPtr<u8>,
        mut node: Node<K, V>,
        fresh: &mut Fresh<K>,
    ) -> Result<RemovePlan<K, V>> {
        let mut plan = RemovePlan {
            writes: Vec::new(),
            freed: Vec::new(),
            root: None,
            dropped: Vec::new(),
        };
        loop {
            let Some((pptr, parent, i)) = path.pop() else {
                // `node` is the root.
                if node.keys.is_empty() {
                    plan.freed.push(ptr);
                    plan.root = Some(if node.leaf { PPtr::null() } else { node.kids[0] });
                } else {
                    plan.writes.push((ptr, node));
                }
                return Ok(plan);
            };
            let min = node.min();
            if node.keys.len() >= min {
                plan.writes.push((ptr, node));
                return Ok(plan);
            }
            let mut parent = Self::contents(tx, pptr, parent)?;
            let left = match i.checked_sub(1) {
                Some(j) => Some(Self::sibling(tx, &parent, j, ptr, &node)?),
                None => None,
            };
            // The pair to fix: children `j` and `j + 1` of the parent, and whether they merge.
            let (j, l, r, merge) = match left {
                Some((lp, l)) if l.keys.len() > min => (i - 1, (lp, l), (ptr, node), false),
                left => {
                    let right = if i + 1 < parent.kids.len() {
                        Some(Self::sibling(tx, &parent, i + 1, ptr, &node)?)
                    } else {
                        None
                    };
                    match (left, right) {
                        (_, Some(r)) if r.1.keys.len() > min => (i, (ptr, node), r, false),
                        (Some(l), _) => (i - 1, l, (ptr, node), true),
                        (None, Some(r)) => (i, (ptr, node), r, true),
                        // A non-root internal node with one child: never built by this code.
                        (None, None) => return Err(raw::out_of_bounds(pptr.offset(), 0)),
                    }
                }
            };
            let leaves = l.1.leaf;
            // Internal nodes take the separator down between them (it moves: same owner);
            // leaves drop it.
            let both = concat(l.1, bits(&parent.keys[j]), r.1);
            if merge {
                // The right node is freed: refuse when it is still linked from the parent (a
                // corrupted node linking one child twice) or is an ancestor (a cycle), which
                // the commit would leave pointing at a free block.
                let links = parent.kids.iter().filter(|&&c| c == r.0).count();
                if links > 1 || r.0 == pptr || path.iter().any(|(a, _, _)| *a == r.0) {
                    return Err(raw::out_of_bounds(r.0.offset(), 0));
                }
                // At most (MIN - 1) + MIN (+ 1 separator) keys: fits in one node.
                plan.writes.push((l.0, both));
                plan.freed.push(r.0);
                let sep = parent.keys.remove(j);
                if leaves && K::OWNS {
                    plan.dropped.push(sep);
                }
                parent.kids.remove(j + 1);
                ptr = pptr;
                node = parent;
                continue;
            }
            // Share evenly: at least 2 * MIN keys between the two, so each keeps MIN or more.
            let (left_node, mut new_sep, right_node) = split_half(both);
            if leaves && K::OWNS {
                // A copy of the right leaf's new first key replaces the old separator.
                // SAFETY: stored into the parent by the caller, or freed by `fresh.release`.
                new_sep = unsafe { new_sep.key_dup(tx)? };
                fresh.keys.push(bits(&new_sep));
                plan.dropped.push(std::mem::replace(&mut parent.keys[j], new_sep));
            } else {
                parent.keys[j] = new_sep;
            }
            plan.writes.push((l.0, left_node));
            plan.writes.push((r.0, right_node));
            plan.writes.push((pptr, parent));
            return Ok(plan);
        }
    }

    /// Child `j` of `parent`, the sibling of `of` (at `of_ptr`): another node of the same kind
    /// (leaf, narrow or wide internal node). Anything else is a corrupted tree (leaves at
    /// different depths, or a node
    /// linked twice, which a merge would free while still linked).
    fn sibling(
        tx: &Transaction<'_>,
        parent: &Node<K, V>,
        j: usize,
        of_ptr: PPtr<u8>,
        of: &Node<K, V>,
    ) -> Result<(PPtr<u8>, Node<K, V>)> {
        let Some(&p) = parent.kids.get(j) else {
            return Err(raw::out_of_bounds(j as u64, parent.kids.len() as u64));
        };
        if p == of_ptr {
            return Err(raw::out_of_bounds(p.offset(), 0));
        }
        let n = Self::read_node(tx, p)?;
        if n.leaf != of.leaf || n.wide != of.wide {
            return Err(raw::out_of_bounds(p.offset(), 8));
        }
        Ok((p, n))
    }

    /// Visits every node (pre-order) with its contents, refusing a node reached twice (only in
    /// a corrupted tree: without this, nodes whose children all point to one shared node would
    /// be read exponentially often, and `clear` would free a node twice) and a path deeper than
    /// [`MAX_DEPTH`].
    fn walk(&self, tx: &Transaction<'_>, f: &mut Visit<'_, K, V>) -> Result<()> {
        let root = self.root.get(tx);
        if root.is_null() {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let mut stack = vec![(root, 0usize)];
        while let Some((n, depth)) = stack.pop() {
            if depth >= MAX_DEPTH || !seen.insert(n.offset()) {
                return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
            }
            let node = Self::read_node(tx, n)?;
            f(n, &node)?;
            // Children in reverse, so that they pop left to right (key order).
            stack.extend(node.kids.iter().rev().map(|&c| (c, depth + 1)));
        }
        Ok(())
    }

    /// Frees every node, key and value (at commit) without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`]: the tree is being cleared or discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        // The whole tree is walked (and so checked) before anything is freed.
        let mut nodes = Vec::new();
        self.walk(tx, &mut |n, _| {
            nodes.push(n);
            Ok(())
        })?;
        Frees::walk(tx, |f| {
            if K::OWNS || V::OWNS {
                for &n in &nodes {
                    let node = Self::read_node(tx, n)?;
                    // SAFETY: the whole tree is being discarded (this function's contract):
                    // every key (separators own their own copies) and value once.
                    unsafe {
                        for k in &node.keys {
                            f.value(k)?;
                        }
                        for v in &node.vals {
                            f.value(v)?;
                        }
                    }
                }
            }
            nodes.iter().try_for_each(|&n| f.block(n))
        })
    }

    /// The pool offsets of every node (for reachability checks).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn node_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        tx.check_live(self)?;
        let mut out = Vec::new();
        self.walk(tx, &mut |n, _| {
            out.push(n.offset());
            Ok(())
        })?;
        Ok(out)
    }

    /// The separator keys of the internal nodes, in pre-order (a test hook for reachability
    /// checks: with `PString` keys, each owns a buffer of its own).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    #[doc(hidden)]
    pub fn separators<'a>(&'a self, tx: &'a Transaction<'_>) -> Result<Vec<K::Ref<'a>>> {
        tx.check_live(self)?;
        let mut out = Vec::new();
        self.walk(tx, &mut |n, node| {
            if !node.leaf {
                for (i, k) in node.keys.iter().enumerate() {
                    out.push(Self::key_ref(tx, n, i, k)?);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Checks the tree's structural invariants and returns the number of keys of every node,
    /// level by level from the root, each level left to right (empty for an empty map). Checked:
    /// no node reached twice; stored lengths at most the node's capacity (15; 63 in a wide
    /// internal node), no unknown high bits in a length word, and leaf flags 0 or 1; internal
    /// nodes all wide or all narrow; every leaf at the same depth; at least 1 key in the root
    /// and half the capacity in every other node; keys strictly
    /// increasing in each node; each node's keys inside the range its parent's separators give
    /// it (child `i` holds keys `k` with `keys[i - 1] <= k < keys[i]`); as many entries as
    /// `len`; no root exactly when `len` is 0; when keys (values) own blocks, every key (value)
    /// slot past a node's entries is zero; every child slot past an internal node's `len + 1`
    /// children, and a leaf's whole child array, is zero. (There is no leaf chain: `range` walks down from
    /// the parents.)
    ///
    /// A test hook (see [`check`](PBTreeMap::check) for the typed verifier): a tree built by
    /// this version passes, but one whose removals were made by
    /// an older version (which left empty leaves in place) need not.
    ///
    /// # Errors
    ///
    /// A description of the first violation found (or of a node that could not be read).
    #[doc(hidden)]
    pub fn check_invariants(&self, tx: &Transaction<'_>) -> std::result::Result<Vec<Vec<usize>>, String> {
        self.fill_levels(tx)
    }

    /// Verifies the whole tree: key order within nodes and against the separators above them,
    /// node fill (every node but the root at least half full), equal leaf depth, child counts,
    /// no node reached twice, the entry count against `len`, zeroed spare slots. 0 drains;
    /// reads every node. For tests, fuzzers and your own `check` program (see
    /// [`Verify`](crate::Verify)).
    ///
    /// # Errors
    ///
    /// [`Error::CorruptCollection`](ptm::Error::CorruptCollection) (`structure` "PBTreeMap",
    /// the root's offset) naming the first violation found.
    pub fn check(&self, tx: &Transaction<'_>) -> Result<()> {
        tx.check_live(self)?;
        self.fill_levels(tx)
            .map(drop)
            .map_err(|what| raw::corrupt("PBTreeMap", self.root.get(tx).offset(), what))
    }

    /// The fill of every node, level by level, after checking the invariants of
    /// [`check`](PBTreeMap::check); a description of the first violation otherwise.
    fn fill_levels(&self, tx: &Transaction<'_>) -> std::result::Result<Vec<Vec<usize>>, String> {
        let root = self.root.get(tx);
        let len = self.len.get(tx);
        if root.is_null() {
            return match len {
                0 => Ok(Vec::new()),
                _ => Err(format!("no root, but len {len}")),
            };
        }
        fn b<K: POrdKey>(o: &K::Owned) -> &K::Borrowed {
            o.borrow()
        }
        let mut seen = std::collections::HashSet::new();
        let mut levels = Vec::new();
        // The kind of the tree's internal nodes (wide or narrow), from the first one met.
        let mut internal_wide = None;
        let mut entries = 0u64;
        // The nodes of one level, each with the bounds `[lo, hi)` of its keys.
        let mut level: Vec<Bounded<K>> = vec![(root, None, None)];
        while !level.is_empty() {
            let depth = levels.len();
            if depth >= MAX_DEPTH {
                return Err(format!("deeper than {MAX_DEPTH} levels"));
            }
            let mut counts = Vec::new();
            let mut next = Vec::new();
            let mut leaves = None;
            for (n, lo, hi) in level {
                let at = format!("node {:#x} (level {depth})", n.offset());
                if !seen.insert(n.offset()) {
                    return Err(format!("{at} reached twice"));
                }
                let read = |off| {
                    // SAFETY: see the accessor contract; `n` is reached from the root like any
                    // node read, and the length and flag words lie at offsets 0 and 8 of it.
                    unsafe { raw::cell::<u64>(tx, n, off) }.map(|c| c.get(tx))
                };
                let (word, flag) = match (read(0), read(8)) {
                    (Ok(l), Ok(f)) => (l, f),
                    (Err(e), _) | (_, Err(e)) => return Err(format!("{at}: {e}")),
                };
                let (g, stored_len) = checked_header(word, flag, geo::<K, V>(), Self::wide_geo())
                    .map_err(|what| format!("{at}: {what}"))?;
                let wide = g.cap == WIDE_CAP as u64;
                let node = Self::read_node(tx, n).map_err(|e| format!("{at}: {e}"))?;
                if *leaves.get_or_insert(node.leaf) != node.leaf {
                    return Err(format!("{at}: leaves and internal nodes on one level"));
                }
                if !node.leaf && *internal_wide.get_or_insert(wide) != wide {
                    return Err(format!("{at}: wide and narrow internal nodes in one tree"));
                }
                debug_assert_eq!(stored_len, node.keys.len() as u64);
                let min = if depth == 0 { 1 } else { node.min() };
                if node.keys.len() < min {
                    return Err(format!("{at}: {} keys, fewer than {min}", node.keys.len()));
                }
                let keys = node
                    .keys
                    .iter()
                    .map(|k| k.key_owned(tx))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| format!("{at}: {e}"))?;
                if !keys.windows(2).all(|w| b::<K>(&w[0]) < b::<K>(&w[1])) {
                    return Err(format!("{at}: keys not strictly increasing"));
                }
                let inside = |k: &K::Owned| {
                    lo.as_ref().is_none_or(|lo| b::<K>(lo) <= b::<K>(k))
                        && hi.as_ref().is_none_or(|hi| b::<K>(k) < b::<K>(hi))
                };
                if let Some(i) = keys.iter().position(|k| !inside(k)) {
                    return Err(format!("{at}: key {i} outside the range its parent gives"));
                }
                let spare = |what: &str, off: u64, bytes: u64| -> std::result::Result<(), String> {
                    let mut zero = true;
                    // SAFETY: as `read` above; the range lies inside the node's key or value
                    // array (`geo`).
                    unsafe {
                        raw::read_chunks(tx, n, off, bytes, |w| {
                            zero = w == 0;
                            zero
                        })
                    }
                    .map_err(|e| format!("{at}: {e}"))?;
                    match zero {
                        true => Ok(()),
                        false => Err(format!("{at}: a spare {what} slot is not zero")),
                    }
                };
                let (ks, vs) = (size_of::<K>() as u64, size_of::<V>() as u64);
                let (nk, nv) = (node.keys.len() as u64, node.vals.len() as u64);
                if K::OWNS {
                    spare("key", g.ko + nk * ks, (g.cap - nk) * ks)?;
                }
                if V::OWNS && !wide {
                    spare("value", g.vo + nv * vs, (CAP as u64 - nv) * vs)?;
                }
                let nc = node.kids.len() as u64;
                spare("child", g.co + nc * 8, (g.cap + 1 - nc) * 8)?;
                counts.push(node.keys.len());
                if node.leaf {
                    entries += node.keys.len() as u64;
                } else {
                    for (i, &c) in node.kids.iter().enumerate() {
                        let clo = if i == 0 {
                            lo.clone()
                        } else {
                            Some(keys[i - 1].clone())
                        };
                        let chi = keys.get(i).cloned().or_else(|| hi.clone());
                        next.push((c, clo, chi));
                    }
                }
            }
            levels.push(counts);
            level = next;
        }
        if entries != len {
            return Err(format!("{entries} entries in the leaves, but len {len}"));
        }
        Ok(levels)
    }

    /// Removes every entry and frees every node and everything the keys and values own (at
    /// commit). 2 drains, however deeply the values nest.
    ///
    /// # Errors
    ///
    /// Corrupted trees ([`Error::InvalidFree`](ptm::Error::InvalidFree) for a node reached
    /// twice), logging errors. An error after part of a damaged structure was freed
    /// dooms the transaction (see the crate docs).
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        tx.snapshot(|b| {
            b.add(&self.root)?;
            b.add(&self.len)?;
            // Last, once the handle is logged: a failed batch frees nothing.
            // SAFETY: the handle is emptied below, in this transaction.
            unsafe { self.release(tx) }
        })?;
        // Logged in the batch: these stores cannot fail.
        self.root.set(tx, PPtr::null())?;
        self.len.set(tx, 0)
    }

    /// Frees everything the map owns (the same as [`clear`](PBTreeMap::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PBTreeMap::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.clear(tx)
    }

    /// The cursor of a range (see [`range`](PBTreeMap::range)).
    fn cursor<'a, 'q, R: RangeBounds<K::RangeKey<'q>>>(
        &'a self,
        tx: &'a Transaction<'a>,
        range: R,
    ) -> Result<Range<'a, K, V>> {
        let () = Self::SIZES_OK;
        let start = match range.start_bound() {
            Bound::Included(b) => Bound::Included(K::range_key(b)),
            Bound::Excluded(b) => Bound::Excluded(K::range_key(b)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let owned = |b: Bound<&K::RangeKey<'q>>| match b {
            Bound::Included(b) => Bound::Included(K::to_owned_key(K::range_key(b))),
            Bound::Excluded(b) => Bound::Excluded(K::to_owned_key(K::range_key(b))),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut it = Range {
            tx,
            root: self.root.get(tx),
            stack: Vec::new(),
            leaf: None,
            pos: 0,
            start_bound: owned(range.start_bound()),
            end: owned(range.end_bound()),
            back: None,
            front_at: None,
            back_at: None,
            done: false,
            error: None,
        };
        let mut n = it.root;
        if n.is_null() {
            it.done = true;
            return Ok(it);
        }
        loop {
            if it.stack.len() >= MAX_DEPTH {
                return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
            }
            let node = Self::read_node(tx, n)?;
            if node.leaf {
                it.pos = match start {
                    Bound::Included(lo) => search(tx, &node.keys, lo, false)?,
                    Bound::Excluded(lo) => search(tx, &node.keys, lo, true)?,
                    Bound::Unbounded => 0,
                };
                it.leaf = Some((n, node));
                return Ok(it);
            }
            // Child `i` holds the keys in `[keys[i - 1], keys[i])`.
            let i = match start {
                Bound::Included(lo) | Bound::Excluded(lo) => search(tx, &node.keys, lo, true)?,
                Bound::Unbounded => 0,
            };
            let Some(&child) = node.kids.get(i) else {
                return Err(raw::out_of_bounds(n.offset(), i as u64));
            };
            it.stack.push((node, i + 1));
            n = child;
        }
    }
}

impl<K: POrdKey, V: Persistent + Copy> PBTreeMap<K, V> {
    /// A copy of the value for `k` (`&7` for a `u64` key, `"ada"` for a `PString` key). Reads
    /// in place: the length and leaf flag of each node on the way, the keys a binary search
    /// visits (about 4 per node), one child pointer per internal node and the value; no node is
    /// copied out.
    ///
    /// # Errors
    ///
    /// Only for a corrupted tree (bad node pointers, too deep) or key.
    pub fn get(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        tx.check_live(self)?;
        match self.find_in(tx, k)? {
            Some((leaf, i)) => Ok(Some(leaf.cell::<V>(Self::val_off(i)?)?.get(tx))),
            None => Ok(None),
        }
    }

    /// The cell of value `i` of leaf `n`.
    fn val_cell<'t>(tx: &'t Transaction<'_>, n: PPtr<u8>, i: u64) -> Result<&'t PCell<V>> {
        // SAFETY: the accessor contract; `n` is a leaf of this tree and `i` under its length.
        unsafe { raw::cell::<V>(tx, n, Self::val_off(i)?) }
    }

    /// Byte offset of value `i` in a leaf.
    fn val_off(i: u64) -> Result<u64> {
        Ok(geo::<K, V>().vo + raw::elem_off::<V>(i)?)
    }

    /// Inserts or updates `k` (`7` for a `u64` key; `"ada"` or a `String` for a `PString` key,
    /// whose buffer is allocated only when the key is new); returns the previous value.
    /// 2 drains, splits included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, corrupted trees.
    pub fn insert(&self, tx: &Transaction<'_>, k: impl AsKey<K>, v: V) -> Result<Option<V>> {
        raw::mutating(tx, self)?;
        match self.insert_entry(tx, k.as_key(), v)? {
            Some((n, i)) => {
                let cell = Self::val_cell(tx, n, i)?;
                let old = cell.get(tx);
                cell.set(tx, v)?;
                Ok(Some(old))
            }
            None => Ok(None),
        }
    }

    /// Removes `k` and returns its value, freeing what the key owns. 2 drains (0 when absent),
    /// rebalancing included.
    ///
    /// # Errors
    ///
    /// Logging errors, corrupted trees.
    pub fn remove(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        raw::mutating(tx, self)?;
        self.remove_entry(tx, k, false)
    }

    /// The entry with the smallest key (`BTreeMap::first_key_value`), the key as
    /// [`PKey::Ref`](crate::PKey::Ref). 0 drains.
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn first_key_value<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<(K::Ref<'t>, V)>> {
        tx.check_live(self)?;
        self.edge_entry(tx, false).map(|e| e.map(|(k, _, v)| (k, v)))
    }

    /// The entry with the largest key (`BTreeMap::last_key_value`). 0 drains.
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn last_key_value<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<(K::Ref<'t>, V)>> {
        tx.check_live(self)?;
        self.edge_entry(tx, true).map(|e| e.map(|(k, _, v)| (k, v)))
    }

    pub(crate) fn edge_entry<'t>(
        &'t self,
        tx: &'t Transaction<'_>,
        last: bool,
    ) -> Result<Option<EdgeEntry<'t, K, V>>> {
        let Some((n, i)) = self.edge(tx, last)? else {
            return Ok(None);
        };
        let (r, owned) = Self::key_at(tx, n, i)?;
        Ok(Some((r, owned, Self::val_cell(tx, n, i)?.get(tx))))
    }

    /// Removes and returns the entry with the smallest key (`BTreeMap::pop_first`), the key as
    /// an owned copy (its buffer, for a `PString` key, is freed). 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// As [`remove`](PBTreeMap::remove).
    pub fn pop_first(&self, tx: &Transaction<'_>) -> Result<Option<(K::Owned, V)>> {
        self.pop_edge(tx, false)
    }

    /// Removes and returns the entry with the largest key (`BTreeMap::pop_last`). 2 drains (0
    /// when empty).
    ///
    /// # Errors
    ///
    /// As [`remove`](PBTreeMap::remove).
    pub fn pop_last(&self, tx: &Transaction<'_>) -> Result<Option<(K::Owned, V)>> {
        self.pop_edge(tx, true)
    }

    fn pop_edge(&self, tx: &Transaction<'_>, last: bool) -> Result<Option<(K::Owned, V)>> {
        raw::mutating(tx, self)?;
        let Some((_, k, v)) = self.edge_entry(tx, last)? else {
            return Ok(None);
        };
        self.remove_entry(tx, k.borrow(), false)?;
        Ok(Some((k, v)))
    }

    /// Copies of the values, in key order (`BTreeMap::values`, eagerly). 0 drains.
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn values(&self, tx: &Transaction<'_>) -> Result<Vec<V>> {
        tx.check_live(self)?;
        let mut out = Vec::new();
        self.walk(tx, &mut |_, node| {
            out.extend_from_slice(&node.vals);
            Ok(())
        })?;
        Ok(out)
    }

    /// Changes the value for `k` in place through `f` (the persistent `get_mut`: `f` gets a
    /// copy, which is stored back) and returns the new value; `None` if `k` is absent.
    /// 2 drains.
    ///
    /// # Errors
    ///
    /// Logging errors, corrupted trees.
    pub fn update(&self, tx: &Transaction<'_>, k: &K::Borrowed, f: impl FnOnce(&mut V)) -> Result<Option<V>> {
        raw::mutating(tx, self)?;
        let Some((n, i)) = self.find(tx, k)? else {
            return Ok(None);
        };
        raw::update_cell(tx, Self::val_cell(tx, n, i)?, f).map(Some)
    }

    /// Keeps only the entries for which `keep` returns `true` (`BTreeMap::retain`; called once
    /// per entry, in key order). One removal per entry dropped: a snapshot drain each, plus
    /// the commit.
    ///
    /// # Errors
    ///
    /// As [`remove`](PBTreeMap::remove).
    pub fn retain(&self, tx: &Transaction<'_>, mut keep: impl FnMut(&K::Borrowed, &V) -> bool) -> Result<()> {
        raw::mutating(tx, self)?;
        let drop: Vec<K::Owned> = self
            .to_vec(tx)?
            .into_iter()
            .filter(|(k, v)| !keep(k.borrow(), v))
            .map(|(k, _)| k)
            .collect();
        for k in &drop {
            self.remove_entry(tx, k.borrow(), false)?;
        }
        Ok(())
    }

    /// Inserts every entry of `items` (`Extend`): one insert each (a snapshot drain each, plus
    /// the commit).
    ///
    /// # Errors
    ///
    /// As [`insert`](PBTreeMap::insert).
    pub fn extend<A: AsKey<K>>(
        &self,
        tx: &Transaction<'_>,
        items: impl IntoIterator<Item = (A, V)>,
    ) -> Result<()> {
        raw::mutating(tx, self)?;
        for (k, v) in items {
            self.insert(tx, k, v)?;
        }
        Ok(())
    }

    /// Removes the entries whose keys are at least `at` and returns them in key order
    /// (`BTreeMap::split_off`, returning a `Vec`: a new persistent map needs a home in the
    /// pool; [`extend`](PBTreeMap::extend) one with the result). One snapshot drain per entry
    /// removed, plus the commit (0 when none is); nothing is allocated.
    ///
    /// # Errors
    ///
    /// As [`remove`](PBTreeMap::remove).
    pub fn split_off(&self, tx: &Transaction<'_>, at: &K::Borrowed) -> Result<Vec<(K::Owned, V)>> {
        raw::mutating(tx, self)?;
        let tail: Vec<(K::Owned, V)> = self
            .to_vec(tx)?
            .into_iter()
            .filter(|(k, _)| k.borrow() >= at)
            .collect();
        for (k, _) in tail.iter().rev() {
            self.remove_entry(tx, k.borrow(), false)?;
        }
        Ok(tail)
    }

    /// Moves every entry of `other` into this map, leaving `other` empty with its nodes (and
    /// key buffers) freed (`BTreeMap::append`: on equal keys, `other`'s value wins). One
    /// snapshot drain per entry moved and one for emptying `other`, plus the commit.
    ///
    /// # Errors
    ///
    /// As [`insert`](PBTreeMap::insert) and [`clear`](PBTreeMap::clear).
    pub fn append(&self, tx: &Transaction<'_>, other: &PBTreeMap<K, V>) -> Result<()>
    where
        K::Owned: AsKey<K>,
    {
        raw::mutating(tx, self)?;
        raw::mutating(tx, other)?;
        if std::ptr::eq(self, other) {
            return Ok(());
        }
        let items = other.to_vec(tx)?;
        if items.is_empty() {
            return Ok(());
        }
        for (k, v) in items {
            self.insert(tx, k, v)?;
        }
        other.clear(tx)
    }

    /// Copies every entry, in key order, keys as owned copies (`String` for a `PString` key).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<(K::Owned, V)>> {
        tx.check_live(self)?;
        let mut out = Vec::new();
        self.walk(tx, &mut |_, node| {
            for (k, v) in node.keys.iter().zip(&node.vals) {
                out.push((k.key_owned(tx)?, *v));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Iterates over the entries in key order (`BTreeMap::iter`): keys as
    /// [`PKey::Ref`](crate::PKey::Ref) (copies of `Copy` keys, `&PString` for string keys),
    /// copies of the values. Lazy and double-ended: [`range`](PBTreeMap::range)`(..)`, reading
    /// one leaf at a time from either end. 0 drains.
    ///
    /// # Errors
    ///
    /// Corrupted trees met on the way to the first leaf; later ones end the iteration (see
    /// [`Range::error`]).
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<Range<'a, K, V>> {
        tx.check_live(self)?;
        self.cursor(tx, ..)
    }

    /// Iterates over the entries whose keys lie in `range` (`3..7` for `u64` keys, `"a".."m"`
    /// for `PString` keys), in key order, like
    /// [`BTreeMap::range`](std::collections::BTreeMap::range): keys as
    /// [`PKey::Ref`](crate::PKey::Ref), copies of the values. Lazy: it descends once to the
    /// first leaf that can hold the start bound, then walks the following leaves (reading one
    /// node at a time, never a node whose keys all lie past the end bound), so
    /// `range(..).take(n)` reads about `n / 15 + depth` nodes. 0 drains.
    ///
    /// Unlike `BTreeMap::range`, an empty range (start after end, or equal excluded bounds)
    /// yields nothing instead of panicking. The iterator reads the tree as it is at each step:
    /// do not change the map while iterating (memory-safe, but entries may be missed or
    /// repeated). A corrupted node met after the first leaf ends the iteration; see
    /// [`Range::error`].
    ///
    /// # Errors
    ///
    /// Corrupted trees (bad node pointers, too deep) met on the way to the first leaf.
    pub fn range<'a, 'q, R: RangeBounds<K::RangeKey<'q>>>(
        &'a self,
        tx: &'a Transaction<'a>,
        range: R,
    ) -> Result<Range<'a, K, V>> {
        self.cursor(tx, range)
    }
}

/// Nested collections as values: a `PBTreeMap` whose values are handles
/// ([`PString`](crate::PString), [`PVec`](crate::PVec), [`PHashMap`](crate::PHashMap), your own
/// [`PHandle`] structs). See the type's documentation for stale references.
impl<K: POrdKey, V: PHandle> PBTreeMap<K, V> {
    /// A reference to the value for `k`. 0 drains.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PBTreeMap::contains_key).
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<Option<Nested<'t, V>>> {
        tx.check_live(self)?;
        match self.find(tx, k)? {
            // SAFETY: value `i` of a leaf of this tree; `V` is all cells.
            Some((n, i)) => unsafe { Self::val_ref(tx, n, i) }.map(|v| Some(tx.nested(self, v))),
            None => Ok(None),
        }
    }

    /// The value for `k`, inserting an empty handle (all-zero bytes) first if absent: the way to
    /// create a nested collection. 2 drains when it inserts (splits included: they move handles
    /// by bytes, zeroing the slots they leave), 0 when not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PBTreeMap::insert).
    pub fn get_or_insert_new<'t>(
        &'t self,
        tx: &'t Transaction<'_>,
        k: impl AsKey<K>,
    ) -> Result<Nested<'t, V>> {
        tx.check_live(self)?;
        let k = k.as_key();
        let at = match self.find(tx, k)? {
            Some(at) => at,
            None => {
                // The insert shifts values inside a leaf and may split it: references go stale.
                tx.invalidate_nested(self);
                let zero = read_from_bytes::<V>(&vec![0u8; size_of::<V>()]).expect("size_of::<V>() bytes");
                self.insert_entry(tx, k, zero)?;
                // Just inserted: found unless the tree is corrupted.
                self.find(tx, k)?
                    .ok_or_else(|| raw::out_of_bounds(self.root.get(tx).offset(), 0))?
            }
        };
        // SAFETY: value `at.1` of a leaf of this tree; `V` is all cells.
        unsafe { Self::val_ref(tx, at.0, at.1) }.map(|v| tx.nested(self, v))
    }

    /// Iterates over the entries in key order (a snapshot of the positions taken now) as
    /// `(key, value reference)`, the key as [`PKey::Ref`](crate::PKey::Ref).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn iter_refs<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
    ) -> Result<std::vec::IntoIter<(K::Ref<'a>, Nested<'a, V>)>> {
        tx.check_live(self)?;
        let mut out = Vec::new();
        self.walk(tx, &mut |n, node| {
            for (i, k) in node.keys.iter().enumerate().take(node.vals.len()) {
                // SAFETY: value `i` of a leaf of this tree; `V` is all cells.
                let v = unsafe { Self::val_ref(tx, n, i as u64)? };
                out.push((Self::key_ref(tx, n, i, k)?, tx.nested(self, v)));
            }
            Ok(())
        })?;
        Ok(out.into_iter())
    }

    /// As [`range`](PBTreeMap::range), yielding `(key, value reference)`.
    ///
    /// # Errors
    ///
    /// As [`range`](PBTreeMap::range).
    pub fn range_refs<'a, 'q, R: RangeBounds<K::RangeKey<'q>>>(
        &'a self,
        tx: &'a Transaction<'a>,
        range: R,
    ) -> Result<RangeRefs<'a, K, V>> {
        tx.check_live(self)?;
        Ok(RangeRefs {
            range: self.cursor(tx, range)?,
            map: self,
        })
    }
}

/// The first index in `0..len` for which `pred` is false (`len` if none), by binary search;
/// `pred` must be true then false over the range (on a corrupted node the result is still in
/// `0..=len`).
///
/// Branch-free in the keys (the shape of std's `binary_search_by`): the range halves whatever
/// `pred` says, and its answer only selects the next base (a conditional move), so a lookup
/// does not pay a mispredicted branch per comparison at every level of the tree.
///
/// Up to [`CAP`] (leaves, narrow internal nodes), four fixed steps of 8, 4, 2 and 1 (binary
/// lifting): with the answer `a <= len <= 15` and every index below `base` true, a probe at
/// `min(base + step, len)` moves `base` there exactly when `a` lies at or past it, so `a - base`
/// stays below `step` after each; a probe at `base` itself (`base == len`) leaves it. The steps
/// are constants, so the search unrolls into four compare-and-selects. Up to [`WIDE_CAP`]
/// (wide internal nodes), six: 32, 16, 8, 4, 2, 1, the same way (`a <= 63`).
#[inline(always)]
fn partition_point(len: usize, mut pred: impl FnMut(usize) -> Result<bool>) -> Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    if len <= CAP {
        let mut base = 0;
        for step in [8, 4, 2, 1] {
            let probe = (base + step).min(len);
            base = std::hint::select_unpredictable(pred(probe - 1)?, probe, base);
        }
        return Ok(base);
    }
    if len <= WIDE_CAP {
        let mut base = 0;
        for step in [32, 16, 8, 4, 2, 1] {
            let probe = (base + step).min(len);
            base = std::hint::select_unpredictable(pred(probe - 1)?, probe, base);
        }
        return Ok(base);
    }
    // Invariant: the answer is in `base..=base + size`.
    let (mut base, mut size) = (0, len);
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        base = std::hint::select_unpredictable(pred(mid)?, mid, base);
        size -= half;
    }
    Ok(base + usize::from(pred(base)?))
}

/// What an insert changes (computed, allocated and logged before anything is stored).
struct InsertPlan<K, V> {
    /// Nodes to store, with their new contents.
    writes: Writes<K, V>,
    /// The new root, when the tree had none or the root split.
    root: Option<PPtr<u8>>,
}

/// What a removal changes, computed before anything is logged.
struct RemovePlan<K, V> {
    /// Nodes to store, with their new contents.
    writes: Writes<K, V>,
    /// Nodes to free (merged away, or an emptied root).
    freed: Vec<PPtr<u8>>,
    /// The new root pointer, when the root goes.
    root: Option<PPtr<u8>>,
    /// Separators that leave the tree (leaf merges and borrows), to free when keys own blocks.
    dropped: Vec<K>,
}

/// Nodes `l` and `r` (siblings, `l` first) as one node, which may hold more than [`CAP`] keys:
/// leaves are concatenated; internal nodes take their parent's separator `sep` between them.
fn concat<K, V>(mut l: Node<K, V>, sep: K, r: Node<K, V>) -> Node<K, V> {
    if !l.leaf {
        l.keys.push(sep);
    }
    l.keys.extend(r.keys);
    l.vals.extend(r.vals);
    l.kids.extend(r.kids);
    l
}

/// Splits `node` in two halves around its middle: `(left, separator, right)`. A leaf keeps every
/// key (the separator is a bitwise copy of the right half's first key); an internal node gives
/// its middle key to the parent. From 2 × [`MIN`] keys (leaf) or 2 × `MIN` + 1 (internal) up,
/// both halves hold at least `MIN`.
fn split_half<K: Persistent, V>(mut node: Node<K, V>) -> (Node<K, V>, K, Node<K, V>) {
    let mid = node.keys.len() / 2;
    if node.leaf {
        let right = Node {
            leaf: true,
            wide: false,
            keys: node.keys.split_off(mid),
            vals: node.vals.split_off(mid),
            kids: vec![],
        };
        let sep = bits(&right.keys[0]);
        (node, sep, right)
    } else {
        let mut rk = node.keys.split_off(mid);
        let sep = rk.remove(0);
        let right = Node {
            leaf: false,
            wide: node.wide,
            keys: rk,
            vals: vec![],
            kids: node.kids.split_off(mid + 1),
        };
        (node, sep, right)
    }
}

impl<K, V> fmt::Debug for PBTreeMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PBTreeMap { .. }")
    }
}

/// Whether the stored key `k` lies past the end bound `end`.
fn past_end<K: POrdKey>(tx: &Transaction<'_>, end: &Bound<K::Owned>, k: &K) -> Result<bool> {
    Ok(match end {
        Bound::Included(hi) => k.key_cmp(tx, hi.borrow())? == Ordering::Greater,
        Bound::Excluded(hi) => k.key_cmp(tx, hi.borrow())? != Ordering::Less,
        Bound::Unbounded => false,
    })
}

/// Whether the stored key `k` lies before the start bound `start`.
fn before_start<K: POrdKey>(tx: &Transaction<'_>, start: &Bound<K::Owned>, k: &K) -> Result<bool> {
    Ok(match start {
        Bound::Included(lo) => k.key_cmp(tx, lo.borrow())? == Ordering::Less,
        Bound::Excluded(lo) => k.key_cmp(tx, lo.borrow())? != Ordering::Greater,
        Bound::Unbounded => false,
    })
}

/// Iterator over the entries of a [`PBTreeMap`] in a key range, as `(key, value copy)`; see
/// [`PBTreeMap::range`]. Double-ended: `.rev()` and `next_back` walk the leaves from the end
/// bound backwards, lazily too; the two ends stop where they meet.
pub struct Range<'a, K: POrdKey, V> {
    tx: &'a Transaction<'a>,
    /// The root when the iterator was made (the back end descends from it on first use).
    root: PPtr<u8>,
    /// Internal nodes above the current leaf, with the index of the next child to visit.
    stack: Vec<(Node<K, V>, usize)>,
    leaf: Option<(PPtr<u8>, Node<K, V>)>,
    /// Next entry of `leaf`.
    pos: usize,
    start_bound: Bound<K::Owned>,
    end: Bound<K::Owned>,
    /// The back end, once `next_back` was called.
    back: Option<BackCursor<K, V>>,
    /// The last entries yielded by each end: the other end stops there.
    front_at: Option<(PPtr<u8>, usize)>,
    back_at: Option<(PPtr<u8>, usize)>,
    done: bool,
    error: Option<Error>,
}

/// The back end of a [`Range`]: internal nodes above its leaf, each with the number of children
/// left to visit (those before the one taken); the leaf; the entries of the leaf left (`..pos`).
struct BackCursor<K, V> {
    stack: Vec<(Node<K, V>, usize)>,
    leaf: Option<(PPtr<u8>, Node<K, V>)>,
    pos: usize,
}

impl<K: POrdKey, V: PValue> Range<'_, K, V> {
    /// Moves to the next leaf in key order; `Ok(false)` when there is none left in range.
    fn next_leaf(&mut self) -> Result<bool> {
        // Climb to the nearest ancestor with a child left to visit.
        let mut n = loop {
            let Some((node, i)) = self.stack.last_mut() else {
                return Ok(false);
            };
            if *i < node.kids.len() {
                // Child `i` holds keys >= `keys[i - 1]` (`i >= 1` here).
                if let Some(sep) = node.keys.get(*i - 1) {
                    if past_end(self.tx, &self.end, sep)? {
                        return Ok(false);
                    }
                }
                let child = node.kids[*i];
                *i += 1;
                break child;
            }
            self.stack.pop();
        };
        // Descend to its leftmost leaf.
        loop {
            if self.stack.len() >= MAX_DEPTH {
                return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
            }
            let node = PBTreeMap::<K, V>::read_node(self.tx, n)?;
            if node.leaf {
                self.leaf = Some((n, node));
                self.pos = 0;
                return Ok(true);
            }
            let Some(&child) = node.kids.first() else {
                return Err(raw::out_of_bounds(n.offset(), 0));
            };
            self.stack.push((node, 1));
            n = child;
        }
    }

    /// The leaf and index of the next entry in range, if any (advancing past it).
    fn advance(&mut self) -> Result<Option<(PPtr<u8>, usize)>> {
        while !self.done {
            if let Some((n, leaf)) = &self.leaf {
                if let (Some(k), true) = (leaf.keys.get(self.pos), self.pos < leaf.vals.len()) {
                    if past_end(self.tx, &self.end, k)? || self.back_at == Some((*n, self.pos)) {
                        break;
                    }
                    self.pos += 1;
                    self.front_at = Some((*n, self.pos - 1));
                    return Ok(Some((*n, self.pos - 1)));
                }
            }
            if !self.next_leaf()? {
                break;
            }
        }
        self.finish();
        Ok(None)
    }

    /// The back end, descending from the root to the leaf that holds the last key within the
    /// end bound on first use.
    fn back_cursor(&mut self) -> Result<()> {
        if self.back.is_none() {
            let mut back = BackCursor {
                stack: Vec::new(),
                leaf: None,
                pos: 0,
            };
            let mut n = self.root;
            while !n.is_null() {
                if back.stack.len() >= MAX_DEPTH {
                    return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
                }
                let node = PBTreeMap::<K, V>::read_node(self.tx, n)?;
                // Keys within the end bound: `..i` of a leaf; in children `..=i` of a node.
                let i = match &self.end {
                    Bound::Included(hi) => search(self.tx, &node.keys, hi.borrow(), true)?,
                    Bound::Excluded(hi) => search(self.tx, &node.keys, hi.borrow(), false)?,
                    Bound::Unbounded => node.keys.len(),
                };
                if node.leaf {
                    back.pos = i;
                    back.leaf = Some((n, node));
                    break;
                }
                let Some(&child) = node.kids.get(i) else {
                    return Err(raw::out_of_bounds(n.offset(), i as u64));
                };
                back.stack.push((node, i));
                n = child;
            }
            self.back = Some(back);
        }
        Ok(())
    }

    /// Moves the back end to the previous leaf in key order; `Ok(false)` when there is none
    /// left in range.
    fn prev_leaf(&mut self) -> Result<bool> {
        let (tx, start) = (self.tx, &self.start_bound);
        let back = self.back.as_mut().expect("the back end is made first");
        // Climb to the nearest ancestor with a child left to visit before the one taken.
        let mut n = loop {
            let Some((node, i)) = back.stack.last_mut() else {
                return Ok(false);
            };
            if *i > 0 {
                // Child `i - 1` holds keys below `keys[i - 1]`: none in range if that
                // separator is at or before the start bound.
                if let (Some(sep), Bound::Included(lo) | Bound::Excluded(lo)) = (node.keys.get(*i - 1), start)
                {
                    if sep.key_cmp(tx, lo.borrow())? != Ordering::Greater {
                        return Ok(false);
                    }
                }
                *i -= 1;
                break node.kids[*i];
            }
            back.stack.pop();
        };
        // Descend to its rightmost leaf.
        loop {
            if back.stack.len() >= MAX_DEPTH {
                return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
            }
            let node = PBTreeMap::<K, V>::read_node(tx, n)?;
            if node.leaf {
                back.pos = node.keys.len().min(node.vals.len());
                back.leaf = Some((n, node));
                return Ok(true);
            }
            let Some(&child) = node.kids.last() else {
                return Err(raw::out_of_bounds(n.offset(), 0));
            };
            let i = node.kids.len() - 1;
            back.stack.push((node, i));
            n = child;
        }
    }

    /// The leaf and index of the next entry in range from the back, if any (moving past it).
    fn advance_back(&mut self) -> Result<Option<(PPtr<u8>, usize)>> {
        while !self.done {
            self.back_cursor()?;
            let (tx, start, front_at) = (self.tx, &self.start_bound, self.front_at);
            let back = self.back.as_mut().expect("made above");
            if let Some((n, leaf)) = &back.leaf {
                let pos = back.pos.min(leaf.keys.len()).min(leaf.vals.len());
                if pos > 0 {
                    let at = (*n, pos - 1);
                    if before_start(tx, start, &leaf.keys[pos - 1])? || front_at == Some(at) {
                        break;
                    }
                    back.pos = pos - 1;
                    self.back_at = Some(at);
                    return Ok(Some(at));
                }
            }
            if !self.prev_leaf()? {
                break;
            }
        }
        self.finish();
        Ok(None)
    }

    fn finish(&mut self) {
        self.done = true;
        self.leaf = None;
        self.stack.clear();
        self.back = None;
    }

    /// The next position from the front (from the back when `back`) with its leaf, or `None` at
    /// the end or on an error (kept for [`error`](Range::error)).
    fn step<T>(
        &mut self,
        back: bool,
        item: impl FnOnce(&Self, PPtr<u8>, usize, &Node<K, V>) -> Result<T>,
    ) -> Option<T> {
        let r = if back { self.advance_back() } else { self.advance() }.and_then(|at| {
            at.map(|(n, i)| {
                let leaf = if back {
                    self.back.as_ref().and_then(|b| b.leaf.as_ref())
                } else {
                    self.leaf.as_ref()
                };
                match leaf {
                    Some((_, node)) => item(self, n, i, node),
                    None => Err(raw::out_of_bounds(n.offset(), i as u64)),
                }
            })
            .transpose()
        });
        match r {
            Ok(x) => x,
            Err(e) => {
                self.error = Some(e);
                self.tx.doom();
                self.finish();
                None
            }
        }
    }

    /// The error that ended the iteration early, if any (only on a corrupted tree). Such an
    /// error also dooms the transaction (see the crate docs, "Iteration errors").
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

impl<'a, K: POrdKey, V: Persistent + Copy> Range<'a, K, V> {
    /// The entry at `(n, i)` of `leaf`.
    fn entry(&self, n: PPtr<u8>, i: usize, leaf: &Node<K, V>) -> Result<(K::Ref<'a>, V)> {
        let k = PBTreeMap::<K, V>::key_ref(self.tx, n, i, &leaf.keys[i])?;
        Ok((k, leaf.vals[i]))
    }
}

impl<'a, K: POrdKey, V: Persistent + Copy> Iterator for Range<'a, K, V> {
    type Item = (K::Ref<'a>, V);

    fn next(&mut self) -> Option<Self::Item> {
        self.step(false, |it, n, i, leaf| it.entry(n, i, leaf))
    }
}

impl<K: POrdKey, V: Persistent + Copy> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(true, |it, n, i, leaf| it.entry(n, i, leaf))
    }
}

impl<K: POrdKey, V> fmt::Debug for Range<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Range")
            .field("depth", &self.stack.len())
            .field("pos", &self.pos)
            .field("done", &self.done)
            .finish()
    }
}

/// Iterator over the entries of a [`PBTreeMap`] of handles in a key range, as `(key, value
/// reference)`; see [`PBTreeMap::range_refs`].
pub struct RangeRefs<'a, K: POrdKey, V> {
    range: Range<'a, K, V>,
    map: &'a PBTreeMap<K, V>,
}

impl<K: POrdKey, V: PValue> RangeRefs<'_, K, V> {
    /// The error that ended the iteration early, if any (only on a corrupted tree).
    pub fn error(&self) -> Option<&Error> {
        self.range.error()
    }
}

impl<'a, K: POrdKey, V: PHandle> Iterator for RangeRefs<'a, K, V> {
    type Item = (K::Ref<'a>, Nested<'a, V>);

    fn next(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

impl<K: POrdKey, V: PHandle> DoubleEndedIterator for RangeRefs<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl<'a, K: POrdKey, V: PHandle> RangeRefs<'a, K, V> {
    /// The next entry from the front (from the back when `back`).
    fn step(&mut self, back: bool) -> Option<(K::Ref<'a>, Nested<'a, V>)> {
        let map = self.map;
        self.range.step(back, |it, n, i, leaf| {
            let k = PBTreeMap::<K, V>::key_ref(it.tx, n, i, &leaf.keys[i])?;
            // SAFETY: value `i` of a leaf of this tree; `V` is all cells.
            let v = unsafe { PBTreeMap::<K, V>::val_ref(it.tx, n, i as u64)? };
            Ok((k, it.tx.nested(map, v)))
        })
    }
}

impl<K: POrdKey, V> fmt::Debug for RangeRefs<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeRefs").field("range", &self.range).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::partition_point;

    /// The branch-free search against std's `partition_point` for every length up to past a
    /// node's capacity and every split point; and, on a predicate that is not monotone (a
    /// corrupted node), an answer in range.
    #[test]
    fn partition_point_matches_std() {
        for len in 0..100usize {
            for split in 0..=len {
                let v: Vec<bool> = (0..len).map(|i| i < split).collect();
                let got = partition_point(len, |i| Ok(v[i])).unwrap();
                assert_eq!(got, v.partition_point(|&b| b), "len {len} split {split}");
            }
            for bits in 0u32..256 {
                let got = partition_point(len, |i| Ok(bits >> (i % 8) & 1 == 1)).unwrap();
                assert!(got <= len, "len {len} bits {bits:#x}: {got}");
            }
        }
        let err = partition_point(5, |_| Err(ptm::Error::Aborted));
        assert!(err.is_err());
    }
}
