//! [`PBTreeMap`]: an ordered map in the pool (a B+ tree).

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Bound, RangeBounds};

use ptm::{Error, PCell, PPtr, Persistent, Result, Transaction};

use crate::raw::{self, Span};

/// Keys per node.
const CAP: usize = 15;
/// Fewest keys in a node other than the root. Splits leave at least this many on each side (a
/// leaf of 16 splits 8 + 8, an internal node of 16 keys 8 + 1 up + 7), and a removal that leaves
/// a node with fewer borrows from a sibling or merges with it. (Removals made before rebalancing
/// existed left emptier leaves, even empty ones: every operation still works on such a tree,
/// and removals repair the nodes they pass.)
const MIN: usize = CAP / 2;
/// Longest root-to-leaf path accepted (a deeper or cyclic tree is corrupt).
const MAX_DEPTH: usize = 48;

/// A persistent ordered map (a pool's `BTreeMap<K, V>`): a B+ tree whose nodes hold up to 15
/// keys; values live in the leaves, internal nodes hold separator keys. Keys are ordered by
/// `K`'s [`Ord`], which must be the same in every build that opens the pool.
///
/// Every node but the root holds at least 7 keys: a removal that leaves a node with fewer
/// borrows keys from a sibling or merges with it (merges may climb to the root); a root left
/// with one child is replaced by it, and the tree of a map emptied by removals has no node at
/// all. Merged and emptied nodes are freed in the removing transaction.
///
/// Drains: `insert` (new key or update) and `remove` cost **2**, node splits, borrows, merges
/// and root collapses included (nodes are allocated or freed first, then every node the
/// operation changes is logged in one batch, then the commit); reads cost 0.
///
/// `!Sync`: share it under a [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PBTreeMap<K, V> {
    root: PCell<PPtr<u8>>,
    len: PCell<u64>,
    _kv: PhantomData<(K, V)>,
}

const _: () = assert!(size_of::<PBTreeMap<u64, u64>>() == 16);

// SAFETY: `repr(C)` of two 8-byte `PCell`s and a zero-sized marker: no padding whatever `K` and
// `V` are; every bit pattern is valid (node pointers are checked by `Transaction::deref`, node
// lengths clamped, depth bounded); no virtual address.
unsafe impl<K: Persistent, V: Persistent> Persistent for PBTreeMap<K, V> {}

/// A node copied out of the pool.
#[derive(Clone, Debug)]
struct Node<K, V> {
    leaf: bool,
    keys: Vec<K>,
    /// Leaves only.
    vals: Vec<V>,
    /// Internal nodes only: `keys.len() + 1` children.
    kids: Vec<PPtr<u8>>,
}

/// A root-to-leaf path: `(node, its contents, index of the child taken)`.
type Path<K, V> = Vec<(PPtr<u8>, Node<K, V>, usize)>;

/// Byte layout of a node: `[len: u64][leaf: u64][keys: K; CAP][vals: V; CAP][kids: u64; CAP+1]`.
#[derive(Clone, Copy)]
struct Geo {
    ko: u64,
    vo: u64,
    co: u64,
    size: u64,
}

fn geo<K, V>() -> Geo {
    let cap = CAP as u64;
    let ko = raw::align_for::<K>(16);
    let vo = raw::align_for::<V>(ko + cap * size_of::<K>() as u64);
    let co = raw::align_for::<u64>(vo + cap * size_of::<V>() as u64);
    Geo {
        ko,
        vo,
        co,
        size: co + (cap + 1) * 8,
    }
}

impl<K: Persistent + Copy + Ord, V: Persistent + Copy> PBTreeMap<K, V> {
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
    // nodes are reached only by this thread, through cells.

    fn read_node(tx: &Transaction<'_>, n: PPtr<u8>) -> Result<Node<K, V>> {
        let g = geo::<K, V>();
        // SAFETY: see the contract above; offsets lie inside the node (`geo`).
        unsafe {
            let len = (raw::cell::<u64>(tx, n, 0)?.get(tx) as usize).min(CAP);
            let leaf = raw::cell::<u64>(tx, n, 8)?.get(tx) != 0;
            let mut node = Node {
                leaf,
                keys: Vec::with_capacity(len + 1),
                vals: Vec::new(),
                kids: Vec::new(),
            };
            for i in 0..len as u64 {
                node.keys
                    .push(raw::cell::<K>(tx, n, g.ko + raw::elem_off::<K>(i)?)?.get(tx));
            }
            if leaf {
                for i in 0..len as u64 {
                    node.vals
                        .push(raw::cell::<V>(tx, n, g.vo + raw::elem_off::<V>(i)?)?.get(tx));
                }
            } else {
                for i in 0..=len as u64 {
                    node.kids
                        .push(raw::cell::<PPtr<u8>>(tx, n, g.co + i * 8)?.get(tx));
                }
            }
            Ok(node)
        }
    }

    /// Stores `node` into `n`, whose whole span this transaction has logged.
    fn write_node(tx: &Transaction<'_>, n: PPtr<u8>, node: &Node<K, V>) -> Result<()> {
        debug_assert!(node.keys.len() <= CAP);
        let g = geo::<K, V>();
        // SAFETY: see the contract above; offsets lie inside the node (`geo`, `len <= CAP`).
        unsafe {
            raw::cell::<u64>(tx, n, 0)?.set(tx, node.keys.len() as u64)?;
            raw::cell::<u64>(tx, n, 8)?.set(tx, u64::from(node.leaf))?;
            for (i, k) in node.keys.iter().enumerate() {
                raw::cell::<K>(tx, n, g.ko + raw::elem_off::<K>(i as u64)?)?.set(tx, *k)?;
            }
            for (i, v) in node.vals.iter().enumerate() {
                raw::cell::<V>(tx, n, g.vo + raw::elem_off::<V>(i as u64)?)?.set(tx, *v)?;
            }
            for (i, c) in node.kids.iter().enumerate() {
                raw::cell::<PPtr<u8>>(tx, n, g.co + i as u64 * 8)?.set(tx, *c)?;
            }
        }
        Ok(())
    }

    /// The whole node `n` as one loggable range.
    fn span(tx: &Transaction<'_>, n: PPtr<u8>) -> Result<Span> {
        // SAFETY: see the contract above; `geo().size` is the node's block size.
        unsafe { Span::new(tx, n, 0, geo::<K, V>().size) }
    }

    /// The path from the root to the leaf where `k` belongs: `(node, node contents, index of
    /// the child taken)`, the leaf last (its index unused).
    fn path(&self, tx: &Transaction<'_>, k: &K) -> Result<Path<K, V>> {
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
            let node = Self::read_node(tx, n)?;
            if node.leaf {
                out.push((n, node, 0));
                return Ok(out);
            }
            let i = node.keys.partition_point(|x| x <= k);
            let child = node.kids[i];
            out.push((n, node, i));
            n = child;
        }
    }

    /// Number of entries.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.len.get(tx)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// A copy of the value for `k`. Reads in place: the length and leaf flag of each node on
    /// the way, the keys a binary search visits (about 4 per node), one child pointer per
    /// internal node and the value; no node is copied out.
    ///
    /// # Errors
    ///
    /// Only for a corrupted tree (bad node pointers, too deep).
    pub fn get(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        let () = Self::SIZES_OK;
        let g = geo::<K, V>();
        let mut n = self.root.get(tx);
        if n.is_null() {
            return Ok(None);
        }
        for _ in 0..MAX_DEPTH {
            // SAFETY: see the accessor contract; `n` is a node of this tree, and the offsets lie
            // inside it (`geo`; below, indexes are under the clamped `len`).
            let (len, leaf) = unsafe {
                (
                    (raw::cell::<u64>(tx, n, 0)?.get(tx) as usize).min(CAP),
                    raw::cell::<u64>(tx, n, 8)?.get(tx) != 0,
                )
            };
            let key = |i: usize| -> Result<K> {
                // SAFETY: as above, `i < len <= CAP`.
                Ok(unsafe { raw::cell::<K>(tx, n, g.ko + raw::elem_off::<K>(i as u64)?)? }.get(tx))
            };
            if leaf {
                let i = partition_point(len, |i| Ok(key(i)? < *k))?;
                if i == len || key(i)? != *k {
                    return Ok(None);
                }
                // SAFETY: as above, `i < len`.
                let v = unsafe { raw::cell::<V>(tx, n, g.vo + raw::elem_off::<V>(i as u64)?)? };
                return Ok(Some(v.get(tx)));
            }
            // Child `i` holds the keys in `[keys[i - 1], keys[i])`.
            let i = partition_point(len, |i| Ok(key(i)? <= *k))?;
            // SAFETY: as above, `i <= len`: one of the `len + 1` children.
            n = unsafe { raw::cell::<PPtr<u8>>(tx, n, g.co + i as u64 * 8)? }.get(tx);
        }
        Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64))
    }

    /// Whether `k` is present.
    ///
    /// # Errors
    ///
    /// As [`get`](PBTreeMap::get).
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K) -> Result<bool> {
        Ok(self.get(tx, k)?.is_some())
    }

    /// Inserts or updates `k`; returns the previous value. 2 drains, splits included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, corrupted trees.
    pub fn insert(&self, tx: &Transaction<'_>, k: K, v: V) -> Result<Option<V>> {
        let g = geo::<K, V>();
        let mut path = self.path(tx, &k)?;
        let Some((leaf_ptr, leaf, _)) = path.last() else {
            // Empty tree: a single leaf.
            let n = raw::alloc_block(tx, g.size)?;
            tx.snapshot(|b| {
                b.add(&self.root)?;
                // The fresh leaf needs no snapshot: ptm logged it as new memory at allocation.
                b.add(&self.len)
            })?;
            let node = Node {
                leaf: true,
                keys: vec![k],
                vals: vec![v],
                kids: vec![],
            };
            Self::write_node(tx, n, &node)?;
            self.root.set(tx, n)?;
            self.len.set(tx, 1)?;
            return Ok(None);
        };
        if let Ok(i) = leaf.keys.binary_search(&k) {
            let old = leaf.vals.get(i).copied();
            // SAFETY: `leaf_ptr` is a node of this tree (see the accessor contract); `i < len`.
            unsafe { raw::cell::<V>(tx, *leaf_ptr, g.vo + raw::elem_off::<V>(i as u64)?)? }.set(tx, v)?;
            return Ok(old);
        }
        // Full nodes from the leaf up split; the first non-full one absorbs the separator.
        let splits = path
            .iter()
            .rev()
            .take_while(|(_, n, _)| n.keys.len() >= CAP)
            .count();
        let new_root = splits == path.len();
        let mut fresh = Vec::new();
        for _ in 0..splits + usize::from(new_root) {
            fresh.push(raw::alloc_block(tx, g.size)?);
        }
        let touched = &path[path.len() - (splits + 1).min(path.len())..];
        tx.snapshot(|b| {
            b.add(&self.root)?;
            b.add(&self.len)?;
            for (n, _, _) in touched {
                b.add(&Self::span(tx, *n)?)?;
            }
            // The fresh nodes need no snapshot: ptm logged them as new memory at allocation.
            Ok(())
        })?;
        // Insert into the leaf, then split upward while a node overflows.
        let (mut ptr, mut node, _) = path.pop().expect("non-empty path");
        let pos = node.keys.partition_point(|x| *x < k);
        node.keys.insert(pos, k);
        node.vals.insert(pos, v);
        loop {
            if node.keys.len() <= CAP {
                Self::write_node(tx, ptr, &node)?;
                break;
            }
            let right_ptr = fresh.pop().expect("allocated one node per split");
            let (left, sep, right) = split_half(node);
            Self::write_node(tx, ptr, &left)?;
            Self::write_node(tx, right_ptr, &right)?;
            match path.pop() {
                Some((pptr, mut parent, i)) => {
                    parent.keys.insert(i, sep);
                    parent.kids.insert(i + 1, right_ptr);
                    ptr = pptr;
                    node = parent;
                }
                None => {
                    let root_ptr = fresh.pop().expect("allocated a new root");
                    let root = Node {
                        leaf: false,
                        keys: vec![sep],
                        vals: vec![],
                        kids: vec![ptr, right_ptr],
                    };
                    Self::write_node(tx, root_ptr, &root)?;
                    self.root.set(tx, root_ptr)?;
                    break;
                }
            }
        }
        self.len.set(tx, self.len.get(tx).saturating_add(1))?;
        Ok(None)
    }

    /// Removes `k` and returns its value. 2 drains (0 when absent), rebalancing included.
    ///
    /// # Errors
    ///
    /// Logging errors, corrupted trees.
    pub fn remove(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        let mut path = self.path(tx, k)?;
        let Some((ptr, mut leaf, _)) = path.pop() else {
            return Ok(None);
        };
        let Ok(i) = leaf.keys.binary_search(k) else {
            return Ok(None);
        };
        let Some(&v) = leaf.vals.get(i) else {
            return Ok(None);
        };
        leaf.keys.remove(i);
        leaf.vals.remove(i);
        // Every change is computed first (reads only), then nodes are freed, then everything
        // changed is logged in one batch (one drain), then stored.
        let plan = Self::rebalance(tx, path, ptr, leaf)?;
        for n in &plan.freed {
            tx.free(*n)?;
        }
        tx.snapshot(|b| {
            b.add(&self.len)?;
            if plan.root.is_some() {
                b.add(&self.root)?;
            }
            for (n, _) in &plan.writes {
                b.add(&Self::span(tx, *n)?)?;
            }
            Ok(())
        })?;
        for (n, node) in &plan.writes {
            Self::write_node(tx, *n, node)?;
        }
        if let Some(root) = plan.root {
            self.root.set(tx, root)?;
        }
        self.len.set(tx, self.len.get(tx).saturating_sub(1))?;
        Ok(Some(v))
    }

    /// Plans the repair of the tree after `node` (at `ptr`, at the end of `path`) lost a key:
    /// climbing while a node is under [`MIN`] keys, it borrows from a sibling that has more than
    /// `MIN` (the two share their keys evenly; the parent's separator changes, the climb stops)
    /// or else merges with one (the right node of the pair is freed, the parent loses a key and
    /// the climb goes on). A root left without keys is freed: an internal one is replaced by
    /// its only child, a leaf by nothing. Reads only.
    fn rebalance(
        tx: &Transaction<'_>,
        mut path: Path<K, V>,
        mut ptr: PPtr<u8>,
        mut node: Node<K, V>,
    ) -> Result<RemovePlan<K, V>> {
        let mut plan = RemovePlan {
            writes: Vec::new(),
            freed: Vec::new(),
            root: None,
        };
        loop {
            let Some((pptr, mut parent, i)) = path.pop() else {
                // `node` is the root.
                if node.keys.is_empty() {
                    plan.freed.push(ptr);
                    plan.root = Some(if node.leaf { PPtr::null() } else { node.kids[0] });
                } else {
                    plan.writes.push((ptr, node));
                }
                return Ok(plan);
            };
            if node.keys.len() >= MIN {
                plan.writes.push((ptr, node));
                return Ok(plan);
            }
            let left = match i.checked_sub(1) {
                Some(j) => Some(Self::sibling(tx, &parent, j, ptr, &node)?),
                None => None,
            };
            // The pair to fix: children `j` and `j + 1` of the parent, and whether they merge.
            let (j, l, r, merge) = match left {
                Some((lp, l)) if l.keys.len() > MIN => (i - 1, (lp, l), (ptr, node), false),
                left => {
                    let right = if i + 1 < parent.kids.len() {
                        Some(Self::sibling(tx, &parent, i + 1, ptr, &node)?)
                    } else {
                        None
                    };
                    match (left, right) {
                        (_, Some(r)) if r.1.keys.len() > MIN => (i, (ptr, node), r, false),
                        (Some(l), _) => (i - 1, l, (ptr, node), true),
                        (None, Some(r)) => (i, (ptr, node), r, true),
                        // A non-root internal node with one child: never built by this code.
                        (None, None) => return Err(raw::out_of_bounds(pptr.offset(), 0)),
                    }
                }
            };
            let both = concat(l.1, parent.keys[j], r.1);
            if merge {
                // At most (MIN - 1) + MIN (+ 1 separator) keys: fits in one node.
                plan.writes.push((l.0, both));
                plan.freed.push(r.0);
                parent.keys.remove(j);
                parent.kids.remove(j + 1);
                ptr = pptr;
                node = parent;
                continue;
            }
            // Share evenly: at least 2 * MIN keys between the two, so each keeps MIN or more.
            let (left_node, new_sep, right_node) = split_half(both);
            parent.keys[j] = new_sep;
            plan.writes.push((l.0, left_node));
            plan.writes.push((r.0, right_node));
            plan.writes.push((pptr, parent));
            return Ok(plan);
        }
    }

    /// Child `j` of `parent`, the sibling of `of` (at `of_ptr`): another node of the same kind
    /// (leaf or not). Anything else is a corrupted tree (leaves at different depths, or a node
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
        if n.leaf != of.leaf {
            return Err(raw::out_of_bounds(p.offset(), 8));
        }
        Ok((p, n))
    }

    /// Visits every node (pre-order) and, in leaves, every entry in key order.
    fn walk(
        tx: &Transaction<'_>,
        n: PPtr<u8>,
        depth: usize,
        node_fn: &mut dyn FnMut(PPtr<u8>),
        entry_fn: &mut dyn FnMut(K, V),
    ) -> Result<()> {
        Self::walk_seen(tx, n, depth, &mut HashSet::new(), node_fn, entry_fn)
    }

    /// [`walk`](Self::walk), refusing a node reached twice (only in a corrupted tree: without
    /// this, nodes whose children all point to one shared node would be read exponentially often,
    /// and `clear` would free a node twice).
    fn walk_seen(
        tx: &Transaction<'_>,
        n: PPtr<u8>,
        depth: usize,
        seen: &mut HashSet<u64>,
        node_fn: &mut dyn FnMut(PPtr<u8>),
        entry_fn: &mut dyn FnMut(K, V),
    ) -> Result<()> {
        if depth >= MAX_DEPTH || !seen.insert(n.offset()) {
            return Err(raw::out_of_bounds(n.offset(), MAX_DEPTH as u64));
        }
        node_fn(n);
        let node = Self::read_node(tx, n)?;
        if node.leaf {
            for (k, v) in node.keys.into_iter().zip(node.vals) {
                entry_fn(k, v);
            }
        } else {
            for c in node.kids {
                Self::walk_seen(tx, c, depth + 1, seen, node_fn, entry_fn)?;
            }
        }
        Ok(())
    }

    /// Copies every entry, in key order.
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        let root = self.root.get(tx);
        if !root.is_null() {
            Self::walk(tx, root, 0, &mut |_| {}, &mut |k, v| out.push((k, v)))?;
        }
        Ok(out)
    }

    /// Iterates over copies of the entries in key order (a snapshot taken now).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn iter(&self, tx: &Transaction<'_>) -> Result<std::vec::IntoIter<(K, V)>> {
        Ok(self.to_vec(tx)?.into_iter())
    }

    /// Iterates over copies of the entries whose keys lie in `range`, in key order, like
    /// [`BTreeMap::range`](std::collections::BTreeMap::range). Lazy: it descends once to the
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
    pub fn range<'a, R: RangeBounds<K>>(
        &'a self,
        tx: &'a Transaction<'a>,
        range: R,
    ) -> Result<Range<'a, K, V>> {
        let () = Self::SIZES_OK;
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let mut it = Range {
            tx,
            stack: Vec::new(),
            leaf: None,
            pos: 0,
            end,
            done: false,
            error: None,
        };
        let mut n = self.root.get(tx);
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
                it.pos = match &start {
                    Bound::Included(lo) => node.keys.partition_point(|x| x < lo),
                    Bound::Excluded(lo) => node.keys.partition_point(|x| x <= lo),
                    Bound::Unbounded => 0,
                };
                it.leaf = Some(node);
                return Ok(it);
            }
            // Child `i` holds the keys in `[keys[i - 1], keys[i])`.
            let i = match &start {
                Bound::Included(lo) | Bound::Excluded(lo) => node.keys.partition_point(|x| x <= lo),
                Bound::Unbounded => 0,
            };
            let Some(&child) = node.kids.get(i) else {
                return Err(raw::out_of_bounds(n.offset(), i as u64));
            };
            it.stack.push((node, i + 1));
            n = child;
        }
    }

    /// Frees every node (at commit) without writing the handle: the tree is being cleared or
    /// discarded. Its values are `Copy`, so the nodes are everything it owns.
    pub(crate) fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        for off in self.node_offsets(tx)? {
            tx.free_bytes(off)?;
        }
        Ok(())
    }

    /// The pool offsets of every node (for reachability checks).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn node_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let root = self.root.get(tx);
        if !root.is_null() {
            Self::walk(tx, root, 0, &mut |n| out.push(n.offset()), &mut |_, _| {})?;
        }
        Ok(out)
    }

    /// Checks the tree's structural invariants and returns the number of keys of every node,
    /// level by level from the root, each level left to right (empty for an empty map). Checked:
    /// no node reached twice; stored lengths at most 15 and leaf flags 0 or 1; every leaf at
    /// the same depth; at least 1 key in the root and 7 in every other node; keys strictly
    /// increasing in each node; each node's keys inside the range its parent's separators give
    /// it (child `i` holds keys `k` with `keys[i - 1] <= k < keys[i]`); as many entries as
    /// `len`; no root exactly when `len` is 0. (There is no leaf chain: `range` walks down from
    /// the parents.)
    ///
    /// A test hook: a tree built by this version passes, but one whose removals were made by
    /// an older version (which left empty leaves in place) need not.
    ///
    /// # Errors
    ///
    /// A description of the first violation found (or of a node that could not be read).
    #[doc(hidden)]
    pub fn check_invariants(&self, tx: &Transaction<'_>) -> std::result::Result<Vec<Vec<usize>>, String> {
        let root = self.root.get(tx);
        let len = self.len.get(tx);
        if root.is_null() {
            return match len {
                0 => Ok(Vec::new()),
                _ => Err(format!("no root, but len {len}")),
            };
        }
        let mut seen = std::collections::HashSet::new();
        let mut levels = Vec::new();
        let mut entries = 0u64;
        // The nodes of one level, each with the bounds `[lo, hi)` of its keys.
        let mut level: Vec<(PPtr<u8>, Option<K>, Option<K>)> = vec![(root, None, None)];
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
                let (stored_len, flag) = match (read(0), read(8)) {
                    (Ok(l), Ok(f)) => (l, f),
                    (Err(e), _) | (_, Err(e)) => return Err(format!("{at}: {e}")),
                };
                if stored_len > CAP as u64 || flag > 1 {
                    return Err(format!("{at}: length {stored_len}, leaf flag {flag}"));
                }
                let node = Self::read_node(tx, n).map_err(|e| format!("{at}: {e}"))?;
                if *leaves.get_or_insert(node.leaf) != node.leaf {
                    return Err(format!("{at}: leaves and internal nodes on one level"));
                }
                let min = if depth == 0 { 1 } else { MIN };
                if node.keys.len() < min {
                    return Err(format!("{at}: {} keys, fewer than {min}", node.keys.len()));
                }
                if !node.keys.windows(2).all(|w| w[0] < w[1]) {
                    return Err(format!("{at}: keys not strictly increasing"));
                }
                let inside = |k: &K| lo.is_none_or(|lo| lo <= *k) && hi.is_none_or(|hi| *k < hi);
                if let Some(i) = node.keys.iter().position(|k| !inside(k)) {
                    return Err(format!("{at}: key {i} outside the range its parent gives"));
                }
                counts.push(node.keys.len());
                if node.leaf {
                    entries += node.keys.len() as u64;
                } else {
                    for (i, &c) in node.kids.iter().enumerate() {
                        let clo = if i == 0 { lo } else { Some(node.keys[i - 1]) };
                        let chi = node.keys.get(i).copied().or(hi);
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

    /// Removes every entry and frees every node (at commit). 2 drains.
    ///
    /// # Errors
    ///
    /// Corrupted trees ([`Error::InvalidFree`](ptm::Error::InvalidFree) for a node reached
    /// twice), logging errors.
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        self.release(tx)?;
        tx.snapshot(|b| {
            b.add(&self.root)?;
            b.add(&self.len)
        })?;
        self.root.set(tx, PPtr::null())?;
        self.len.set(tx, 0)
    }

    /// Frees everything the map owns (the same as [`clear`](PBTreeMap::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PBTreeMap::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.clear(tx)
    }
}

/// The first index in `0..len` for which `pred` is false (`len` if none), by binary search;
/// `pred` must be true then false over the range (on a corrupted node the result is still in
/// `0..=len`).
fn partition_point(len: usize, mut pred: impl FnMut(usize) -> Result<bool>) -> Result<usize> {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// What a removal changes, computed before anything is logged.
struct RemovePlan<K, V> {
    /// Nodes to store, with their new contents.
    writes: Vec<(PPtr<u8>, Node<K, V>)>,
    /// Nodes to free (merged away, or an emptied root).
    freed: Vec<PPtr<u8>>,
    /// The new root pointer, when the root goes.
    root: Option<PPtr<u8>>,
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
/// key (the separator is the right half's first key); an internal node gives its middle key to
/// the parent. From 2 × [`MIN`] keys (leaf) or 2 × `MIN` + 1 (internal) up, both halves hold at
/// least `MIN`.
fn split_half<K: Copy, V>(mut node: Node<K, V>) -> (Node<K, V>, K, Node<K, V>) {
    let mid = node.keys.len() / 2;
    if node.leaf {
        let right = Node {
            leaf: true,
            keys: node.keys.split_off(mid),
            vals: node.vals.split_off(mid),
            kids: vec![],
        };
        let sep = right.keys[0];
        (node, sep, right)
    } else {
        let mut rk = node.keys.split_off(mid);
        let sep = rk.remove(0);
        let right = Node {
            leaf: false,
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

/// Whether `k` lies past the end bound `end`.
fn past_end<K: Ord>(end: &Bound<K>, k: &K) -> bool {
    match end {
        Bound::Included(hi) => k > hi,
        Bound::Excluded(hi) => k >= hi,
        Bound::Unbounded => false,
    }
}

/// Iterator over copies of the entries of a [`PBTreeMap`] in a key range; see
/// [`PBTreeMap::range`].
pub struct Range<'a, K, V> {
    tx: &'a Transaction<'a>,
    /// Internal nodes above the current leaf, with the index of the next child to visit.
    stack: Vec<(Node<K, V>, usize)>,
    leaf: Option<Node<K, V>>,
    /// Next entry of `leaf`.
    pos: usize,
    end: Bound<K>,
    done: bool,
    error: Option<Error>,
}

impl<K: Persistent + Copy + Ord, V: Persistent + Copy> Range<'_, K, V> {
    /// Moves to the next leaf in key order; `Ok(false)` when there is none left in range.
    fn next_leaf(&mut self) -> Result<bool> {
        // Climb to the nearest ancestor with a child left to visit.
        let mut n = loop {
            let Some((node, i)) = self.stack.last_mut() else {
                return Ok(false);
            };
            if *i < node.kids.len() {
                // Child `i` holds keys >= `keys[i - 1]` (`i >= 1` here).
                if node.keys.get(*i - 1).is_some_and(|sep| past_end(&self.end, sep)) {
                    return Ok(false);
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
                self.leaf = Some(node);
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

    /// The error that ended the iteration early, if any (only on a corrupted tree).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

impl<K: Persistent + Copy + Ord, V: Persistent + Copy> Iterator for Range<'_, K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        while !self.done {
            if let Some(leaf) = &self.leaf {
                if let (Some(&k), Some(&v)) = (leaf.keys.get(self.pos), leaf.vals.get(self.pos)) {
                    if past_end(&self.end, &k) {
                        break;
                    }
                    self.pos += 1;
                    return Some((k, v));
                }
            }
            match self.next_leaf() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        self.done = true;
        self.leaf = None;
        self.stack.clear();
        None
    }
}

impl<K, V> fmt::Debug for Range<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Range")
            .field("depth", &self.stack.len())
            .field("pos", &self.pos)
            .field("done", &self.done)
            .finish()
    }
}
