//! [`walk_schema`]: a type-erased check of everything a pool's root reaches, driven by the root
//! schema the pool records (`ptm::pmem_core::schema`), for tools that do not know the root
//! type (`ptm check`).
//!
//! A derived root is `#[repr(C)]` without padding, so a field's offset is the sum of the sizes
//! of the fields before it; the collection handles have fixed layouts (docs/design.md §13), and
//! the blocks they own have layouts computed from the element, key and value **sizes and
//! alignments**, which the schema gives. The walk uses the collections' own layout code for
//! them (`map::segment_geometry`, `btree::node_geometry`, `queue::shape_of`), so the walker
//! and the typed collections cannot disagree on where a byte is. See docs/design.md §13.6.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::mem::size_of;

use ptm::pmem_core::schema::{SchemaKind, TypeSchema};
use ptm::pmem_core::{PPtr, Region};
use ptm::{Error, PSharedLock, Persistent, Pool, Result};

use crate::btree::{self, Geo};
use crate::map;
use crate::queue;
use crate::raw::{self, Slot};
use crate::vec;
use crate::{PBTreeMap, PConcurrentMap, PHashMap, PQueue, PVec};

/// What [`walk_schema`] found: totals over the structures it walked, the heap blocks the root
/// reaches, and the allocated blocks it does not.
///
/// `structures`, `entries` and `blocks` count as [`Report`](crate::Report) does, for every
/// collection the root reaches, nested ones included (a `PString` inside each map value is a
/// structure of its own); the buffers of string and vector **keys** are in `key_blocks`
/// instead, as the typed verifier counts a map's keys as entries, not structures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalkReport {
    /// Collections walked (every `PVec`, `PString`, map, set, tree and queue; a
    /// `PConcurrentMap` counts once, as in [`Report`](crate::Report)).
    pub structures: u64,
    /// Entries they hold (elements, map entries, bytes of a string).
    pub entries: u64,
    /// Heap blocks of their own structure (buffers, directories, segments, nodes, chunks).
    pub blocks: u64,
    /// Buffers of `PString` and `PVec` keys of maps and trees (separator copies included).
    pub key_blocks: u64,
    /// Non-empty `PBox`es (each owns one block).
    pub boxes: u64,
    /// Distinct `PPtr` targets followed.
    pub pointers: u64,
    /// Every allocated heap block the root reaches (pool offsets of the block starts).
    pub reachable: BTreeSet<u64>,
    /// Allocated blocks the root does not reach through what its schema describes, as
    /// `(pool offset, block size)`: leaked, or reached through something the schema cannot
    /// describe (an offset kept in an integer field, a type listed in `not_walked`).
    pub unreachable: Vec<(u64, u64)>,
    /// Parts of the root the walk could not follow, as `"PFoo at Root.f (why)"`: types whose
    /// layout it does not know (sorted, each once). Blocks reached only through them show up
    /// as `unreachable`.
    pub not_walked: Vec<String>,
}

impl WalkReport {
    /// Bytes of the [`unreachable`](WalkReport::unreachable) blocks.
    pub fn unreachable_bytes(&self) -> u64 {
        self.unreachable.iter().map(|&(_, n)| n).sum()
    }
}

/// Walks the root of the pool in `region` as `schema` describes it: every struct field,
/// `PCell` and lock content, array element, `PBox` and `PPtr` target, and every collection
/// (`PVec`, `PString`, `PHashMap`, `PHashSet`, `PBTreeMap`, `PBTreeSet`, `PQueue`,
/// `PConcurrentMap`), with the elements, keys and values they hold, recursively. Read-only:
/// the region is only read (0 drains), so a pool that is damaged stays as it is.
///
/// Checked, for each collection, what the typed verifiers check without the key type's code:
/// lengths within capacities, the hash map's directory and segment headers (depths, counts,
/// every directory range owned by one segment), each key's hash in its segment's range and
/// reachable by linear probing (for integer, array, `PString` and `PVec` keys), the B-tree's
/// node lengths, leaf flags, equal leaf depth, fill, entry count and zeroed spare slots, key
/// order for integer and byte-string keys, the queue's shape and directory, string contents
/// being UTF-8. For every pointer: inside the pool, carrying the pool's tag; a block a
/// collection or box owns starts an allocated block large enough for what is read from it and
/// is reached once only; a `PPtr` target lies in an allocated block or the root (several
/// pointers may share a target, and a `PPtr` cycle ends at the first target seen again).
///
/// A type the walk does not know is a leaf when nothing inside it can point (a scalar, an enum,
/// an unknown wrapper of scalars) and is listed in [`WalkReport::not_walked`] otherwise: its
/// layout is never guessed.
///
/// # Errors
///
/// [`Error::CorruptCollection`] naming the structure, the pool offset of the damaged block and,
/// in `what`, the schema path (`Root.tasks<V>.title: ...`) and what is wrong;
/// [`Error::InvalidOptions`] when a lane holds a transaction recovery has not decided yet
/// (open the pool once to recover it); the errors of [`ptm::inspect`] and of reading the heap
/// metadata ([`Error::CorruptHeap`]).
pub fn walk_schema(region: &Region, schema: &TypeSchema) -> Result<WalkReport> {
    let summary = ptm::inspect(region)?;
    if summary.lanes_with_log > 0 {
        return Err(Error::InvalidOptions(
            "a lane holds a transaction recovery has not decided yet: open the pool once to \
             recover it before walking its collections",
        ));
    }
    let geometry = summary.geometry;
    let read_u64 = |off: u64| {
        let mut b = [0u8; 8];
        region
            .read_at(off, &mut b)
            .map(|()| u64::from_le_bytes(b))
            .unwrap_or(u64::MAX)
    };
    let allocated = ptm::internals::heap::allocated_blocks(&geometry.heap_layout(), read_u64)?;
    let root = geometry.root_offset..geometry.root_offset + geometry.root_size;
    if schema.size > geometry.root_size {
        return Err(corrupt(
            "root",
            root.start,
            schema.name.as_str(),
            format!(
                "the schema describes {} bytes, the root has {}",
                schema.size, geometry.root_size
            ),
        ));
    }
    let mut w = Walker {
        mem: Memory {
            region,
            data: region.data_range(),
            tag: region.header().pptr_tag,
            allocated: allocated.iter().copied().collect(),
            root: root.clone(),
        },
        defs: HashMap::new(),
        owner: HashMap::new(),
        targets: HashSet::new(),
        work: VecDeque::new(),
        deferred: HashSet::new(),
        nesting: 0,
        walk_cache: HashMap::new(),
        not_walked: BTreeSet::new(),
        report: WalkReport::default(),
    };
    w.define(schema, 0);
    w.work.push_back(Job {
        at: root.start,
        ty: schema,
        path: schema.name.clone(),
    });
    while let Some(job) = w.work.pop_front() {
        let bytes = w.mem.read(job.at, job.ty.size, "root", &job.path)?;
        w.value(job.ty, &bytes, job.at, &job.path)?;
    }
    let mut report = w.report;
    report.unreachable = allocated
        .into_iter()
        .filter(|(off, _)| !report.reachable.contains(off))
        .collect();
    report.not_walked = w.not_walked.into_iter().collect();
    Ok(report)
}

/// [`walk_schema`] over an open pool, with its root type's schema: for tests and for programs
/// that compare the walk with their own [`verify`](crate::verify). `&mut`: no transaction runs
/// meanwhile.
///
/// # Errors
///
/// As [`walk_schema`].
pub fn walk_pool<R: Persistent>(pool: &mut Pool<R>) -> Result<WalkReport> {
    walk_schema(pool.region(), &ptm::pmem_core::schema::schema_of::<R>())
}

/// Sizes of the handles and pointers (each also its alignment, except `SHARD`'s 64), from the
/// types.
const PTR: u64 = size_of::<PPtr<u8>>() as u64;
const VEC: u64 = size_of::<PVec<u8>>() as u64;
const QUEUE: u64 = size_of::<PQueue<u8>>() as u64;
const MAP: u64 = size_of::<PHashMap<u8, u8>>() as u64;
const TREE: u64 = size_of::<PBTreeMap<u8, u8>>() as u64;
/// One shard of a `PConcurrentMap`: a lock word, then the shard's `PHashMap`.
const SHARD: u64 = size_of::<PConcurrentMap<u8, u8, 1>>() as u64;
/// Bytes of a lock's word, before the value it guards.
const LOCK_WORD: u64 = (size_of::<PSharedLock<u64>>() - size_of::<u64>()) as u64;
const _: () = assert!(std::mem::align_of::<PConcurrentMap<u8, u8, 1>>() as u64 == SHARD);

/// The value type of the sets (a `PHashSet<K>` is a `PHashMap<K, u8>`).
static SET_VALUE: std::sync::LazyLock<TypeSchema> = std::sync::LazyLock::new(|| TypeSchema::scalar("u8", 1));

/// Deepest nesting of values inside one block or the root (a schema whose struct contains
/// itself without a pointer would otherwise never end).
const MAX_NESTING: usize = 128;

/// The error for damage found at `path`.
fn corrupt(structure: &'static str, offset: u64, path: &str, what: impl std::fmt::Display) -> Error {
    raw::corrupt(structure, offset, format!("{path}: {what}"))
}

/// `e`, with the schema path added when it is a [`Error::CorruptCollection`] from a shared
/// layout helper.
fn at_path(e: Error, structure: &'static str, offset: u64, path: &str) -> Error {
    match e {
        Error::CorruptCollection { what, .. } => corrupt(structure, offset, path, what),
        e => e,
    }
}

/// The little-endian `u64` at byte `at` of `b` (0 past its end: callers check sizes first).
fn field(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// The `u64` word `i` of `b` (a directory slot, a node's child).
fn word(b: &[u8], i: usize) -> u64 {
    field(b, i * 8)
}

/// The words of a handle at the byte offsets `fields` (its module's `FIELDS`).
fn handle<const N: usize>(b: &[u8], fields: [usize; N]) -> [u64; N] {
    fields.map(|at| field(b, at))
}

/// The pool, read through its region.
struct Memory<'a> {
    region: &'a Region,
    data: std::ops::Range<u64>,
    tag: u16,
    /// Allocated blocks: start → size.
    allocated: BTreeMap<u64, u64>,
    root: std::ops::Range<u64>,
}

impl Memory<'_> {
    /// `len` bytes at pool offset `at`, inside the data area.
    fn read(&self, at: u64, len: u64, structure: &'static str, path: &str) -> Result<Vec<u8>> {
        let end = at.checked_add(len);
        if at < self.data.start || end.is_none_or(|e| e > self.data.end) {
            return Err(corrupt(
                structure,
                at,
                path,
                format!("{len} bytes at {at:#x} are outside the pool's data area"),
            ));
        }
        let n = usize::try_from(len).map_err(|_| corrupt(structure, at, path, "a size out of range"))?;
        let mut buf = vec![0u8; n];
        self.region.read_at(at, &mut buf)?;
        Ok(buf)
    }

    /// The pool offset a stored `PPtr` designates, `None` for null; checked: the pool's tag,
    /// inside the data area.
    fn pointer(&self, raw: u64, structure: &'static str, path: &str) -> Result<Option<u64>> {
        let p = PPtr::<u8>::from_raw(raw);
        if p.is_null() {
            return Ok(None);
        }
        if p.tag() != self.tag {
            return Err(corrupt(
                structure,
                p.offset(),
                path,
                format!(
                    "a pointer {raw:#x} with tag {:#06x}, not this pool's {:#06x}",
                    p.tag(),
                    self.tag
                ),
            ));
        }
        if !self.data.contains(&p.offset()) {
            return Err(corrupt(
                structure,
                p.offset(),
                path,
                format!("a pointer to {:#x}, outside the pool's data area", p.offset()),
            ));
        }
        Ok(Some(p.offset()))
    }

    /// The allocated block holding pool offset `at`, as `(start, size)`.
    fn containing(&self, at: u64) -> Option<(u64, u64)> {
        let (&start, &size) = self.allocated.range(..=at).next_back()?;
        (at - start < size).then_some((start, size))
    }
}

/// A value to walk at a pool offset (the root, a box's content, a pointer's target).
struct Job<'s> {
    at: u64,
    ty: &'s TypeSchema,
    path: String,
}

/// What a collection's walk adds to the report.
#[derive(Default)]
struct Tally {
    entries: u64,
    blocks: u64,
}

/// A vector's or string's buffer, checked and owned (see `Walker::buffer`).
struct Buffer {
    /// Its pool offset.
    at: u64,
    /// Elements in use.
    len: u64,
    /// Their bytes, when asked for.
    data: Option<Vec<u8>>,
}

/// A key in the order its tree keeps (integers by value, strings and bytes
/// lexicographically); keys of other types are not compared.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum OrdKey {
    Unsigned(u128),
    Signed(i128),
    Bytes(Vec<u8>),
}

/// How a map hashes a key type, when the walk can hash it too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// A `Copy` key hashed by its bytes (integers, and arrays of them).
    Plain { signed: Option<bool> },
    /// A `PString` or `PVec` key hashed by its contents: the element size.
    Handle { elem: u64, utf8: bool },
    /// Any other type: not hashed, not ordered.
    Opaque,
}

struct Walker<'a, 's> {
    mem: Memory<'a>,
    /// Full descriptions of the structs of the schema, for its `Seen` references.
    defs: HashMap<(&'s str, u64), &'s TypeSchema>,
    /// Blocks a collection or box owns → the path of their owner.
    owner: HashMap<u64, String>,
    /// `PPtr` targets already queued, with their type.
    targets: HashSet<(u64, &'s str, u64)>,
    work: VecDeque<Job<'s>>,
    /// Values moved to the work queue for depth (see [`value`](Walker::value)).
    deferred: HashSet<(u64, &'s str, u64)>,
    /// Calls of [`value`](Walker::value) on the stack.
    nesting: usize,
    /// [`needs_walk`](Walker::needs_walk) of the types met, by address.
    walk_cache: HashMap<*const TypeSchema, bool>,
    not_walked: BTreeSet<String>,
    report: WalkReport,
}

impl<'s> Walker<'_, 's> {
    /// Records the full description of every struct in `ty`.
    fn define(&mut self, ty: &'s TypeSchema, depth: usize) {
        if depth > MAX_NESTING {
            return;
        }
        match &ty.kind {
            SchemaKind::Struct(fields) => {
                self.defs.entry((ty.name.as_str(), ty.size)).or_insert(ty);
                fields.iter().for_each(|(_, f)| self.define(f, depth + 1));
            }
            SchemaKind::Generic(args) => args.iter().for_each(|(_, a)| self.define(a, depth + 1)),
            _ => {}
        }
    }

    /// `ty`, or the full description a `Seen` reference names.
    fn resolve(&self, ty: &'s TypeSchema) -> Option<&'s TypeSchema> {
        match ty.kind {
            SchemaKind::Seen => self.defs.get(&(ty.name.as_str(), ty.size)).copied(),
            _ => Some(ty),
        }
    }

    /// The size and alignment of `ty`, when the walk knows them.
    fn slot(&self, ty: &'s TypeSchema, depth: usize) -> Option<Slot> {
        let ty = self.resolve(ty)?;
        if depth > MAX_NESTING {
            return None;
        }
        let align = match (&ty.kind, ty.name.as_str()) {
            (SchemaKind::Scalar, name) => scalar_align(name)?,
            (SchemaKind::Enum(_), _) => ty.size.clamp(1, 16),
            (SchemaKind::Struct(fields), _) => fields
                .iter()
                .try_fold(1, |a, (_, f)| self.slot(f, depth + 1).map(|s| s.align.max(a)))?,
            (SchemaKind::Generic(args), name) => match name {
                "PCell" | "Wrapping" => self.slot(&args.first()?.1, depth + 1)?.align,
                "PMutex" | "PRwLock" | "PSharedLock" => {
                    self.slot(&args.first()?.1, depth + 1)?.align.max(LOCK_WORD)
                }
                "PConcurrentMap" => SHARD,
                _ if is_handle(name) || name == "PPtr" => PTR,
                _ if array_len(name).is_some() => self.slot(&args.first()?.1, depth + 1)?.align,
                _ => return None,
            },
            _ => return None,
        };
        Some(Slot { size: ty.size, align })
    }

    /// Whether a value of `ty` may hold a pointer or a handle (else its walk is skipped);
    /// computed once per type.
    fn needs_walk(&mut self, ty: &'s TypeSchema) -> bool {
        let key = std::ptr::from_ref(ty);
        if let Some(&known) = self.walk_cache.get(&key) {
            return known;
        }
        let known = self.may_point(ty, 0);
        self.walk_cache.insert(key, known);
        known
    }

    /// [`needs_walk`](Walker::needs_walk), computed.
    fn may_point(&self, ty: &'s TypeSchema, depth: usize) -> bool {
        let Some(ty) = self.resolve(ty) else {
            return true;
        };
        if depth > MAX_NESTING {
            return true;
        }
        match &ty.kind {
            SchemaKind::Scalar => ty.name == "PString" || collection_like(&ty.name),
            SchemaKind::Enum(_) => false,
            SchemaKind::Struct(fields) => fields.iter().any(|(_, f)| self.may_point(f, depth + 1)),
            SchemaKind::Generic(args) => {
                is_handle(&ty.name)
                    || ty.name == "PPtr"
                    || ty.name == "PConcurrentMap"
                    || args.iter().any(|(_, a)| self.may_point(a, depth + 1))
            }
            _ => true,
        }
    }

    /// Whether a value of `ty` owns heap blocks (a handle or box inside it, not behind a `PPtr`).
    fn owns(&self, ty: &'s TypeSchema, depth: usize) -> bool {
        let Some(ty) = self.resolve(ty) else {
            return false;
        };
        if depth > MAX_NESTING {
            return false;
        }
        match &ty.kind {
            SchemaKind::Scalar => ty.name == "PString",
            SchemaKind::Struct(fields) => fields.iter().any(|(_, f)| self.owns(f, depth + 1)),
            SchemaKind::Generic(args) => {
                is_handle(&ty.name)
                    || ty.name == "PConcurrentMap"
                    || (ty.name != "PPtr" && args.iter().any(|(_, a)| self.owns(a, depth + 1)))
            }
            _ => false,
        }
    }

    fn skip(&mut self, ty: &TypeSchema, path: &str, why: &str) {
        self.not_walked
            .insert(format!("{} at {path} ({why})", ty.short()));
    }

    /// Marks `block` as owned by the structure at `path`, which reads `need` bytes of it.
    fn own(&mut self, block: u64, need: u64, structure: &'static str, path: &str) -> Result<()> {
        let Some(&size) = self.mem.allocated.get(&block) else {
            return Err(corrupt(
                structure,
                block,
                path,
                format!("points at {block:#x}, which does not start an allocated block"),
            ));
        };
        if size < need {
            return Err(corrupt(
                structure,
                block,
                path,
                format!("the block at {block:#x} has {size} bytes, the structure needs {need}"),
            ));
        }
        if let Some(first) = self.owner.insert(block, path.to_owned()) {
            return Err(corrupt(
                structure,
                block,
                path,
                format!("the block at {block:#x} is reached twice (also from {first})"),
            ));
        }
        self.report.reachable.insert(block);
        Ok(())
    }

    /// Walks the value of type `ty` whose bytes are `b`, at pool offset `at`.
    fn value(&mut self, ty: &'s TypeSchema, b: &[u8], at: u64, path: &str) -> Result<()> {
        if self.nesting >= MAX_NESTING {
            // Deep data (collections nested in collections, many levels down), or a schema
            // whose struct contains itself: go on from the work queue, once per offset and
            // type, instead of growing the stack.
            if self.deferred.insert((at, ty.name.as_str(), ty.size)) {
                self.work.push_back(Job {
                    at,
                    ty,
                    path: path.to_owned(),
                });
            } else {
                self.skip(ty, path, "a struct that contains itself");
            }
            return Ok(());
        }
        self.nesting += 1;
        let walked = self.value_here(ty, b, at, path);
        self.nesting -= 1;
        walked
    }

    /// [`value`](Walker::value), on the stack.
    fn value_here(&mut self, ty: &'s TypeSchema, b: &[u8], at: u64, path: &str) -> Result<()> {
        let Some(ty) = self.resolve(ty) else {
            self.skip(ty, path, "a type described nowhere in the schema");
            return Ok(());
        };
        if (b.len() as u64) < ty.size {
            return Err(corrupt("root", at, path, "a value larger than its container"));
        }
        match &ty.kind {
            SchemaKind::Scalar if ty.name == "PString" => {
                let t = self.vec_like(b, at, 1, None, true, path)?;
                self.count(t);
            }
            SchemaKind::Scalar if collection_like(&ty.name) => self.skip(ty, path, "layout unknown"),
            SchemaKind::Scalar | SchemaKind::Enum(_) => {}
            SchemaKind::Struct(fields) => {
                let total = fields.iter().try_fold(0u64, |s, (_, f)| s.checked_add(f.size));
                if total != Some(ty.size) {
                    self.skip(
                        ty,
                        path,
                        "its fields do not fill it: padding or an unknown layout",
                    );
                    return Ok(());
                }
                let mut off = 0u64;
                for (name, f) in fields {
                    if self.needs_walk(f) {
                        let (s, e) = (off as usize, (off + f.size) as usize);
                        self.value(f, &b[s..e], at + off, &format!("{path}.{name}"))?;
                    }
                    off += f.size;
                }
            }
            SchemaKind::Generic(args) => self.generic(ty, args, b, at, path)?,
            _ => self.skip(ty, path, "a kind of type this walk does not know"),
        }
        Ok(())
    }

    fn count(&mut self, t: Tally) {
        self.report.structures += 1;
        self.report.entries += t.entries;
        self.report.blocks += t.blocks;
    }

    fn generic(
        &mut self,
        ty: &'s TypeSchema,
        args: &'s [(String, TypeSchema)],
        b: &[u8],
        at: u64,
        path: &str,
    ) -> Result<()> {
        let arg = |i: usize| args.get(i).map(|(_, a)| a);
        let inner = |label: &str| format!("{path}<{label}>");
        let name = ty.name.as_str();
        let (Some(first), second) = (arg(0), arg(1)) else {
            if collection_like(name) {
                self.skip(ty, path, "no type argument");
            }
            return Ok(());
        };
        match name {
            "PCell" | "Wrapping" if first.size == ty.size => self.value(first, b, at, path),
            "PMutex" | "PRwLock" | "PSharedLock" if first.size.checked_add(LOCK_WORD) == Some(ty.size) => {
                self.value(first, &b[LOCK_WORD as usize..], at + LOCK_WORD, path)
            }
            _ if array_len(name).is_some_and(|n| n.checked_mul(first.size) == Some(ty.size)) => {
                if first.size > 0 && self.needs_walk(first) {
                    for (i, e) in b[..ty.size as usize]
                        .chunks_exact(first.size as usize)
                        .enumerate()
                    {
                        self.value(first, e, at + i as u64 * first.size, &inner("T"))?;
                    }
                }
                Ok(())
            }
            "PPtr" if ty.size == PTR => self.pointer(first, field(b, 0), &inner("T")),
            "PBox" if ty.size == PTR => {
                let Some(block) = self.mem.pointer(field(b, 0), "PBox", path)? else {
                    return Ok(());
                };
                self.own(block, first.size, "PBox", path)?;
                self.report.boxes += 1;
                self.work.push_back(Job {
                    at: block,
                    ty: first,
                    path: inner("T"),
                });
                Ok(())
            }
            "PVec" if ty.size == VEC => {
                let t = self.vec_like(b, at, first.size, Some(first), false, path)?;
                self.count(t);
                Ok(())
            }
            "PQueue" if ty.size == QUEUE => {
                let t = self.queue(first, b, path)?;
                self.count(t);
                Ok(())
            }
            "PHashMap" | "PHashSet" | "PBTreeMap" | "PBTreeSet" => {
                let value = match (name, second) {
                    ("PHashSet" | "PBTreeSet", _) => &*SET_VALUE,
                    (_, Some(v)) => v,
                    (_, None) => {
                        self.skip(ty, path, "no value type");
                        return Ok(());
                    }
                };
                let t = if name.starts_with("PHash") && ty.size == MAP {
                    self.hash_map(first, value, b, path)?
                } else if name.starts_with("PBTree") && ty.size == TREE {
                    self.btree(first, value, b, path)?
                } else {
                    self.skip(ty, path, "an unexpected handle size");
                    return Ok(());
                };
                if let Some(t) = t {
                    self.count(t);
                }
                Ok(())
            }
            "PConcurrentMap" if ty.size.is_multiple_of(SHARD) => {
                let Some(value) = second else {
                    self.skip(ty, path, "no value type");
                    return Ok(());
                };
                let mut all = Tally::default();
                for shard in 0..ty.size / SHARD {
                    let s = (shard * SHARD + LOCK_WORD) as usize;
                    match self.hash_map(first, value, &b[s..s + MAP as usize], path)? {
                        Some(t) => {
                            all.entries += t.entries;
                            all.blocks += t.blocks;
                        }
                        None => return Ok(()),
                    }
                }
                self.count(all);
                Ok(())
            }
            _ if is_handle(name) || name == "PPtr" || name == "PConcurrentMap" || collection_like(name) => {
                self.skip(ty, path, "an unexpected layout");
                Ok(())
            }
            _ => {
                if args.iter().any(|(_, a)| self.may_point(a, 0)) {
                    self.skip(ty, path, "layout unknown");
                }
                Ok(())
            }
        }
    }

    /// A `PPtr<T>` stored as `raw`: its target must be aligned for `T` (when the walk knows
    /// `T`'s alignment) and lie in an allocated block (then reached) or in the root; `T` is
    /// walked there once per target.
    fn pointer(&mut self, target: &'s TypeSchema, raw: u64, path: &str) -> Result<()> {
        let Some(off) = self.mem.pointer(raw, "PPtr", path)? else {
            return Ok(());
        };
        if let Some(align) = self.slot(target, 0).map(|s| s.align).filter(|&a| off % a != 0) {
            return Err(corrupt(
                "PPtr",
                off,
                path,
                format!("a target at {off:#x}, not aligned to {align}"),
            ));
        }
        let end = off.checked_add(target.size);
        let inside = |(start, size): (u64, u64)| end.is_some_and(|e| e <= start + size);
        if let Some(block) = self.mem.containing(off) {
            if !inside(block) {
                return Err(corrupt(
                    "PPtr",
                    off,
                    path,
                    format!("a {}-byte target at {off:#x} overruns its block", target.size),
                ));
            }
            self.report.reachable.insert(block.0);
        } else if !(self.mem.root.contains(&off) && end.is_some_and(|e| e <= self.mem.root.end)) {
            return Err(corrupt(
                "PPtr",
                off,
                path,
                format!("points at {off:#x}, neither inside an allocated block nor the root"),
            ));
        }
        if self.targets.insert((off, target.name.as_str(), target.size)) {
            self.report.pointers += 1;
            if self.needs_walk(target) {
                self.work.push_back(Job {
                    at: off,
                    ty: target,
                    path: path.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The buffer of the `PVec`/`PString` handle `b` (at `at`) of `elem`-byte elements, owned
    /// and checked: `len <= cap`, no buffer only when empty, a block of `cap × elem` bytes,
    /// UTF-8 when `utf8`. Returns `None` for no buffer, else the buffer with, when `read` or
    /// `utf8`, the `len × elem` bytes of the contents.
    fn buffer(
        &mut self,
        b: &[u8],
        at: u64,
        elem: u64,
        (utf8, read): (bool, bool),
        path: &str,
    ) -> Result<Option<Buffer>> {
        let structure = if utf8 { "PString" } else { "PVec" };
        let [buf, len, cap] = handle(b, vec::FIELDS);
        let Some(buf) = self.mem.pointer(buf, structure, path)? else {
            if len != 0 {
                return Err(corrupt(
                    structure,
                    at,
                    path,
                    format!("no buffer, but length {len}"),
                ));
            }
            return Ok(None);
        };
        if len > cap {
            return Err(corrupt(
                structure,
                buf,
                path,
                format!("length {len} above capacity {cap}"),
            ));
        }
        let bytes = cap
            .checked_mul(elem)
            .ok_or_else(|| corrupt(structure, buf, path, format!("capacity {cap} out of range")))?;
        self.own(buf, bytes, structure, path)?;
        if !(read || utf8) {
            return Ok(Some(Buffer {
                at: buf,
                len,
                data: None,
            }));
        }
        let data = self.mem.read(buf, len * elem, structure, path)?;
        if utf8 && std::str::from_utf8(&data).is_err() {
            return Err(corrupt(structure, buf, path, "the contents are not UTF-8"));
        }
        Ok(Some(Buffer {
            at: buf,
            len,
            data: Some(data),
        }))
    }

    /// A `PVec` (or a `PString`: `utf8`) handle `b` of `elem`-byte elements, walking each
    /// element as `ty` when given.
    fn vec_like(
        &mut self,
        b: &[u8],
        at: u64,
        elem: u64,
        ty: Option<&'s TypeSchema>,
        utf8: bool,
        path: &str,
    ) -> Result<Tally> {
        let walk = ty.filter(|&t| elem > 0 && self.needs_walk(t));
        let Some(buf) = self.buffer(b, at, elem, (utf8, walk.is_some()), path)? else {
            return Ok(Tally::default());
        };
        if let (Some(ty), Some(data)) = (walk, &buf.data) {
            let p = format!("{path}<T>");
            for (i, e) in data.chunks_exact(elem as usize).enumerate() {
                self.value(ty, e, buf.at + i as u64 * elem, &p)?;
            }
        }
        Ok(Tally {
            entries: buf.len,
            blocks: 1,
        })
    }

    /// How keys of type `ty` are hashed and ordered.
    fn key_kind(&self, ty: &'s TypeSchema) -> KeyKind {
        let Some(ty) = self.resolve(ty) else {
            return KeyKind::Opaque;
        };
        match (&ty.kind, ty.name.as_str()) {
            (SchemaKind::Scalar, "PString") => KeyKind::Handle { elem: 1, utf8: true },
            (SchemaKind::Scalar, name) => match integer(name) {
                Some(signed) => KeyKind::Plain { signed: Some(signed) },
                None if scalar_align(name).is_some() => KeyKind::Plain { signed: None },
                None => KeyKind::Opaque,
            },
            (SchemaKind::Generic(args), "PVec") => match args.first().map(|(_, a)| self.key_kind(a)) {
                Some(KeyKind::Plain { .. }) => KeyKind::Handle {
                    elem: args[0].1.size,
                    utf8: false,
                },
                _ => KeyKind::Opaque,
            },
            (SchemaKind::Generic(args), name) if array_len(name).is_some() => {
                match args.first().map(|(_, a)| self.key_kind(a)) {
                    Some(KeyKind::Plain { .. }) => KeyKind::Plain { signed: None },
                    _ => KeyKind::Opaque,
                }
            }
            _ => KeyKind::Opaque,
        }
    }

    /// Walks the key `b` (owning its buffer when it is a handle) and returns the bytes the map
    /// hashes and, when ordered, its order.
    fn key(
        &mut self,
        ty: &'s TypeSchema,
        kind: KeyKind,
        b: &[u8],
        at: u64,
        path: &str,
    ) -> Result<(Option<Vec<u8>>, Option<OrdKey>)> {
        match kind {
            KeyKind::Plain { signed } => {
                let ord = signed.map(|s| int_key(b, s));
                Ok((Some(b.to_vec()), ord))
            }
            KeyKind::Handle { elem, utf8 } => {
                let data = match self.buffer(b, at, elem, (utf8, true), path)? {
                    Some(buf) => {
                        self.report.key_blocks += 1;
                        buf.data.unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                let ord = (elem == 1).then(|| OrdKey::Bytes(data.clone()));
                Ok((Some(data), ord))
            }
            KeyKind::Opaque => {
                if self.needs_walk(ty) {
                    self.value(ty, b, at, path)?;
                }
                Ok((None, None))
            }
        }
    }

    /// A `PHashMap<K, V>` handle `b` (or one shard of a `PConcurrentMap`); `None` when a key or
    /// value layout is unknown (listed as not walked).
    fn hash_map(
        &mut self,
        k: &'s TypeSchema,
        v: &'s TypeSchema,
        b: &[u8],
        path: &str,
    ) -> Result<Option<Tally>> {
        const S: &str = map::SEGMENT;
        const H: &str = map::HANDLE;
        let (Some(ks), Some(vs)) = (self.slot(k, 0), self.slot(v, 0)) else {
            self.not_walked
                .insert(format!("PHashMap at {path} (key or value layout unknown)"));
            return Ok(None);
        };
        if ks.size == 0 || vs.size == 0 {
            return Err(corrupt(H, 0, path, "a zero-sized key or value"));
        }
        let [root, depth_word, len, cap] = handle(b, map::FIELDS);
        let g = depth_word & map::DEPTH_MASK;
        let seed = depth_word >> map::SEED_SHIFT;
        if g > map::MAX_DEPTH {
            return Err(corrupt(
                H,
                0,
                path,
                format!("global depth {g} above {}", map::MAX_DEPTH),
            ));
        }
        let Some(root) = self.mem.pointer(root, H, path)? else {
            if (len, cap) != (0, 0) {
                return Err(corrupt(
                    H,
                    0,
                    path,
                    format!("no segment, but len {len} and capacity {cap}"),
                ));
            }
            return Ok(Some(Tally::default()));
        };
        let mut t = Tally::default();
        let dir = if g > 0 {
            let bytes = 8u64 << g;
            self.own(root, bytes, H, path)?;
            t.blocks += 1;
            Some(self.mem.read(root, bytes, H, path)?)
        } else {
            None
        };
        let seg_at = |d: u64| match &dir {
            Some(dir) => word(dir, d as usize),
            None => field(b, map::FIELDS[0]),
        };
        let kkind = self.key_kind(k);
        let (kp, vp) = (format!("{path}<K>"), format!("{path}<V>"));
        let (walk_v, walk_k) = (self.needs_walk(v), kkind != KeyKind::Opaque || self.needs_walk(k));
        let (mut total, mut slots, mut d) = (0u64, 0u64, 0u64);
        while d >> g == 0 {
            let seg = self
                .mem
                .pointer(seg_at(d), H, path)?
                .ok_or_else(|| corrupt(H, root, path, format!("directory index {d} holds no segment")))?;
            let hdr = self.mem.read(seg, map::SEG_HDR, S, path)?;
            let scap = field(&hdr, map::H_CAP as usize);
            if !scap.is_power_of_two() || scap < map::MIN_CAP {
                return Err(corrupt(
                    S,
                    seg,
                    path,
                    format!(
                        "capacity {scap} is not a power of two of at least {}",
                        map::MIN_CAP
                    ),
                ));
            }
            let dw = field(&hdr, map::H_DEPTH as usize);
            let (l, flags) = (dw & map::LOCAL_DEPTH_MASK, dw & !map::LOCAL_DEPTH_MASK);
            if flags & !map::PAIRS != 0 {
                return Err(corrupt(
                    S,
                    seg,
                    path,
                    format!("unknown layout flags {flags:#x} in the depth word"),
                ));
            }
            let geo = map::segment_geometry(scap, ks, vs, flags == map::PAIRS)
                .map_err(|e| at_path(e, S, seg, path))?;
            let end = geo.end;
            if l > g {
                return Err(corrupt(
                    S,
                    seg,
                    path,
                    format!("local depth {l} above the global depth {g}"),
                ));
            }
            let (base, n) = map::dir_range(g, l, d);
            if base != d || (d..d + n).any(|e| seg_at(e) != seg_at(d)) {
                return Err(corrupt(
                    H,
                    seg,
                    path,
                    format!("the segment at directory index {d} does not own exactly its range"),
                ));
            }
            self.own(seg, end, S, path)?;
            t.blocks += 1;
            let data = self.mem.read(seg, end, S, path)?;
            let ctrl = &data[map::SEG_HDR as usize..(map::SEG_HDR + scap) as usize];
            let (mut full, mut used) = (0u64, 0u64);
            for i in 0..scap {
                match ctrl[i as usize] {
                    map::EMPTY => continue,
                    map::FULL => full += 1,
                    _ => {
                        used += 1;
                        continue;
                    }
                }
                used += 1;
                let (kb, vb) = (
                    (geo.ko + i * geo.kstride) as usize,
                    (geo.vo + i * geo.vstride) as usize,
                );
                let key = &data[kb..kb + ks.size as usize];
                let hashed = if walk_k {
                    self.key(k, kkind, key, seg + kb as u64, &kp)?.0
                } else {
                    None
                };
                if let Some(bytes) = hashed {
                    let h = raw::hash_bytes_seeded(seed, &bytes);
                    let di = map::dir_index(h, g);
                    if di < base || di >= base + n {
                        return Err(corrupt(
                            S,
                            seg,
                            path,
                            format!(
                                "slot {i} holds a key of directory index {di}, outside {base}..{}",
                                base + n
                            ),
                        ));
                    }
                    let mut j = h & (scap - 1);
                    while j != i {
                        if ctrl[j as usize] == map::EMPTY {
                            return Err(corrupt(
                                S,
                                seg,
                                path,
                                format!("slot {i} unreachable from its home slot {}", h & (scap - 1)),
                            ));
                        }
                        j = (j + 1) & (scap - 1);
                    }
                }
                if walk_v {
                    self.value(v, &data[vb..vb + vs.size as usize], seg + vb as u64, &vp)?;
                }
            }
            let (hl, hu) = (
                field(&hdr, map::H_LEN as usize),
                field(&hdr, map::H_USED as usize),
            );
            if (hl, hu) != (full, used) {
                return Err(corrupt(
                    S,
                    seg,
                    path,
                    format!("header len/used {hl}/{hu}, counted {full}/{used}"),
                ));
            }
            total += full;
            slots = slots.saturating_add(scap);
            d = base + n;
        }
        if total != len {
            return Err(corrupt(H, root, path, format!("len {len} but {total} entries")));
        }
        if slots != cap {
            return Err(corrupt(
                H,
                root,
                path,
                format!("capacity {cap} but {slots} slots"),
            ));
        }
        t.entries = total;
        Ok(Some(t))
    }

    /// A `PBTreeMap<K, V>` handle `b`; `None` when a key or value layout is unknown.
    fn btree(&mut self, k: &'s TypeSchema, v: &'s TypeSchema, b: &[u8], path: &str) -> Result<Option<Tally>> {
        const T: &str = "PBTreeMap";
        let (Some(ks), Some(vs)) = (self.slot(k, 0), self.slot(v, 0)) else {
            self.not_walked
                .insert(format!("PBTreeMap at {path} (key or value layout unknown)"));
            return Ok(None);
        };
        if ks.size == 0 || vs.size == 0 {
            return Err(corrupt(T, 0, path, "a zero-sized key or value"));
        }
        let [root, len] = handle(b, btree::FIELDS);
        let Some(root) = self.mem.pointer(root, T, path)? else {
            if len != 0 {
                return Err(corrupt(T, 0, path, format!("no root, but len {len}")));
            }
            return Ok(Some(Tally::default()));
        };
        let narrow: Geo = btree::node_geometry(ks, vs);
        let wide: Option<Geo> = btree::wide_geometry(ks);
        let mut internal_wide = None;
        let kkind = self.key_kind(k);
        let (owns_k, owns_v) = (self.owns(k, 0), self.owns(v, 0));
        let walk_v = self.needs_walk(v);
        let (kp, vp) = (format!("{path}<K>"), format!("{path}<V>"));
        let mut t = Tally::default();
        // The nodes of one level, each with the bounds `[lo, hi)` of its keys.
        let mut level: Vec<(u64, Option<OrdKey>, Option<OrdKey>)> = vec![(root, None, None)];
        let mut depth = 0;
        while !level.is_empty() {
            if depth >= btree::MAX_DEPTH {
                return Err(corrupt(
                    T,
                    root,
                    path,
                    format!("deeper than {} levels", btree::MAX_DEPTH),
                ));
            }
            let mut next = Vec::new();
            let mut leaves = None;
            for (n, lo, hi) in level {
                let at = |what: String| corrupt(T, n, path, format!("node {n:#x} (level {depth}): {what}"));
                // The header first: the length word tells a wide internal node's layout.
                let head = self.mem.read(n, 16, T, path)?;
                let (w0, flag) = (word(&head, 0), word(&head, 1));
                let (geo, nlen) = btree::checked_header(w0, flag, narrow, wide).map_err(at)?;
                let cap = geo.cap;
                self.own(n, geo.size, T, path)?;
                t.blocks += 1;
                let data = self.mem.read(n, geo.size, T, path)?;
                let leaf = flag == 1;
                if *leaves.get_or_insert(leaf) != leaf {
                    return Err(at("leaves and internal nodes on one level".into()));
                }
                let is_wide = geo.cap != narrow.cap;
                if !leaf && *internal_wide.get_or_insert(is_wide) != is_wide {
                    return Err(at("wide and narrow internal nodes in one tree".into()));
                }
                let min = if depth == 0 { 1 } else { cap / 2 };
                if nlen < min {
                    return Err(at(format!("{nlen} keys, fewer than {min}")));
                }
                let mut keys = Vec::new();
                for i in 0..nlen {
                    let kb = (geo.ko + i * ks.size) as usize;
                    let (_, ord) =
                        self.key(k, kkind, &data[kb..kb + ks.size as usize], n + kb as u64, &kp)?;
                    keys.push(ord);
                }
                let ordered: Option<Vec<OrdKey>> = keys.into_iter().collect();
                if let Some(keys) = &ordered {
                    if !keys.windows(2).all(|w| w[0] < w[1]) {
                        return Err(at("keys not strictly increasing".into()));
                    }
                    let inside = |k: &OrdKey| {
                        lo.as_ref().is_none_or(|lo| lo <= k) && hi.as_ref().is_none_or(|hi| k < hi)
                    };
                    if let Some(i) = keys.iter().position(|k| !inside(k)) {
                        return Err(at(format!("key {i} outside the range its parent gives")));
                    }
                }
                let zero = |from: u64, bytes: u64| {
                    data[from as usize..(from + bytes) as usize]
                        .iter()
                        .all(|&x| x == 0)
                };
                let nv = if leaf { nlen } else { 0 };
                let nc = if leaf { 0 } else { nlen + 1 };
                if owns_k && !zero(geo.ko + nlen * ks.size, (cap - nlen) * ks.size) {
                    return Err(at("a spare key slot is not zero".into()));
                }
                if owns_v && !is_wide && !zero(geo.vo + nv * vs.size, (cap - nv) * vs.size) {
                    return Err(at("a spare value slot is not zero".into()));
                }
                if !zero(geo.co + nc * 8, (cap + 1 - nc) * 8) {
                    return Err(at("a spare child slot is not zero".into()));
                }
                if leaf {
                    t.entries += nlen;
                    if walk_v {
                        for i in 0..nlen {
                            let vb = (geo.vo + i * vs.size) as usize;
                            self.value(v, &data[vb..vb + vs.size as usize], n + vb as u64, &vp)?;
                        }
                    }
                } else {
                    for i in 0..nc {
                        let kid = self
                            .mem
                            .pointer(word(&data, (geo.co / 8 + i) as usize), T, path)?
                            .ok_or_else(|| at(format!("child {i} is null")))?;
                        let bound = |j: Option<u64>| {
                            ordered
                                .as_ref()
                                .and_then(|o| j.and_then(|j| o.get(j as usize).cloned()))
                        };
                        let clo = if i == 0 { lo.clone() } else { bound(Some(i - 1)) };
                        let chi = bound(Some(i)).or_else(|| hi.clone());
                        next.push((kid, clo, chi));
                    }
                }
            }
            level = next;
            depth += 1;
        }
        if t.entries != len {
            return Err(corrupt(
                T,
                root,
                path,
                format!("{} entries in the leaves, but len {len}", t.entries),
            ));
        }
        Ok(Some(t))
    }

    /// A `PQueue<T>` handle `b`.
    fn queue(&mut self, elem: &'s TypeSchema, b: &[u8], path: &str) -> Result<Tally> {
        const Q: &str = "PQueue";
        if elem.size == 0 {
            return Err(corrupt(Q, 0, path, "a zero-sized element"));
        }
        let [dir, dcap, dhead, ccap, head, len] = handle(b, queue::FIELDS);
        let dir = self.mem.pointer(dir, Q, path)?;
        let words = [dcap, dhead, ccap, head, len];
        let ptr = dir.map_or(PPtr::null(), |d| PPtr::from_parts(self.mem.tag, d));
        let full_chunk =
            usize::try_from(elem.size).map_or(queue::chunk_elems(usize::MAX), queue::chunk_elems);
        let s = queue::shape_of(ptr, words, full_chunk).map_err(|e| at_path(e, Q, dir.unwrap_or(0), path))?;
        let Some(dir) = dir else {
            return Ok(Tally::default());
        };
        let dbytes = s
            .dcap
            .checked_mul(8)
            .ok_or_else(|| corrupt(Q, dir, path, "directory size out of range"))?;
        self.own(dir, dbytes, Q, path)?;
        let slots = self.mem.read(dir, dbytes, Q, path)?;
        let cbytes = s
            .ccap
            .checked_mul(elem.size)
            .ok_or_else(|| corrupt(Q, dir, path, "chunk size out of range"))?;
        let mut chunks = Vec::new();
        for k in 0..s.dcap {
            let slot = queue::ring_index(s.dhead, k, s.dcap);
            let c = self.mem.pointer(word(&slots, slot as usize), Q, path)?;
            match (k < s.chunks, c) {
                (true, Some(c)) => {
                    self.own(c, cbytes, Q, path)?;
                    chunks.push(c);
                }
                (true, None) => return Err(corrupt(Q, dir, path, format!("chunk {k} in use is null"))),
                (false, Some(_)) => {
                    return Err(corrupt(
                        Q,
                        dir,
                        path,
                        format!(
                            "directory slot {k} past the {} chunks in use is not null",
                            s.chunks
                        ),
                    ))
                }
                (false, None) => {}
            }
        }
        if self.needs_walk(elem) {
            let p = format!("{path}<T>");
            for pos in 0..s.len {
                let (k, i) = if s.ring {
                    (0, queue::ring_index(s.head, pos, s.ccap))
                } else {
                    ((s.head + pos) / s.ccap, (s.head + pos) % s.ccap)
                };
                let at = chunks[k as usize] + i * elem.size;
                let e = self.mem.read(at, elem.size, Q, &p)?;
                self.value(elem, &e, at, &p)?;
            }
        }
        Ok(Tally {
            entries: s.len,
            blocks: 1 + s.chunks,
        })
    }
}

/// Alignment of the scalar types the walk knows (`None`: unknown).
fn scalar_align(name: &str) -> Option<u64> {
    Some(match name {
        "u8" | "i8" | "bool" | "unit" | "PhantomData" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" | "f32" | "char" => 4,
        "u64" | "i64" | "f64" | "usize" | "isize" => 8,
        "PString" => PTR,
        "u128" | "i128" => std::mem::align_of::<u128>() as u64,
        _ => return None,
    })
}

/// Whether `name` is an integer type, and if so whether it is signed.
fn integer(name: &str) -> Option<bool> {
    match name {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => Some(false),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => Some(true),
        _ => None,
    }
}

/// A little-endian integer key's order.
fn int_key(b: &[u8], signed: bool) -> OrdKey {
    let mut w = [0u8; 16];
    let n = b.len().min(16);
    w[..n].copy_from_slice(&b[..n]);
    if signed && n > 0 && b[n - 1] & 0x80 != 0 {
        w[n..].fill(0xff);
    }
    if signed {
        OrdKey::Signed(i128::from_le_bytes(w))
    } else {
        OrdKey::Unsigned(u128::from_le_bytes(w))
    }
}

/// The collection handles of this crate (8-byte aligned `repr(C)` structs of cells).
fn is_handle(name: &str) -> bool {
    matches!(
        name,
        "PVec" | "PQueue" | "PBox" | "PHashMap" | "PHashSet" | "PBTreeMap" | "PBTreeSet"
    )
}

/// A name like a persistent collection's (`P` and a capital): an unknown type so named is
/// reported, not taken for a plain value.
fn collection_like(name: &str) -> bool {
    let mut c = name.chars();
    c.next() == Some('P') && c.next().is_some_and(|c| c.is_ascii_uppercase()) && name != "PString"
}

/// The length of an array type's name (`[4]`).
fn array_len(name: &str) -> Option<u64> {
    name.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}
