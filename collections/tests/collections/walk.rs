//! `walk_schema` (`walk_pool`), the schema-driven walk `ptm check` runs: on a user root of every
//! kind of collection, nested values and a `PPtr` cycle (`common/user_root.rs`) it agrees with
//! the typed `verify` and with the allocator; damage in a map segment, a B-tree node, a queue
//! directory, a string is `CorruptCollection` naming the schema path; a block whose only handle
//! was overwritten is unreachable; what the schema cannot describe (an offset in an integer, an
//! unknown type) is reported, not guessed; after random operations (on the user root and on the
//! shared fixture root) its counts and reachable set equal the typed ones and the allocator's;
//! and random or mutated schemas over real bytes end cleanly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ptm::pmem_core::schema::{SchemaKind, TypeSchema};
use ptm::Transaction;
use ptm::{Error, PCell, PMutex, PPtr, Persistent, Pool};
use ptm_collections::{
    verify, walk_pool, walk_schema, PBTreeMap, PBTreeSet, PHashMap, PHashSet, PString, PVec, Report, Verify,
    WalkReport,
};

use crate::common::user_root::{self, Node, Root, JOBS, JOB_COUNT, NAME, NODES, SCRATCH, TASKS, WORDS};
use crate::common::{self, assert_allocated_exactly, opts, shm_dir, POOL_SIZE};

#[test]
fn a_user_root_walks_as_the_typed_verify_counts() {
    let dir = shm_dir();
    let mut pool = user_root::make(&dir.path().join("w.pool"), &opts());
    let typed = user_root::typed(&pool);
    let walked = walk_pool(&mut pool).unwrap();
    assert_eq!(
        (walked.structures, walked.entries, walked.blocks),
        (typed.structures, typed.entries, typed.blocks),
        "not walked: {:?}",
        walked.not_walked
    );
    // The std-model counts: tasks + 2 per task + tree + queue + sharded map + set + boxed
    // vector + name + scratch.
    assert_eq!(walked.structures, 1 + 2 * TASKS + 7);
    let title_bytes: u64 = (0..TASKS).map(|k| format!("task é{k}").len() as u64).sum();
    let tags: u64 = (0..TASKS).map(|k| k % 5).sum();
    assert_eq!(
        walked.entries,
        TASKS + title_bytes + tags + WORDS + JOB_COUNT + 100 + 33 + 3 + 6 + 50
    );
    let separators = pool
        .transaction(|tx, r| Ok::<_, Error>(r.index.separators(tx)?.len() as u64))
        .unwrap();
    assert!(separators > 0, "the tree has internal nodes");
    assert_eq!(walked.key_blocks, WORDS + separators);
    assert_eq!((walked.boxes, walked.pointers), (1, NODES));
    assert!(walked.not_walked.is_empty(), "{:?}", walked.not_walked);
    assert_eq!(walked.unreachable, []);
    assert_allocated_exactly(&mut pool, &walked.reachable, "the walk's reachable blocks");
}

/// A filled user-root pool, closed: its directory (kept alive), path, root offset and the
/// offsets `user_root::offsets` notes.
struct Closed {
    _dir: tempfile::TempDir,
    path: PathBuf,
    root: u64,
    at: user_root::Offsets,
}

fn closed() -> Closed {
    let dir = shm_dir();
    let path = dir.path().join("d.pool");
    let pool = user_root::make(&path, &opts());
    let (root, at) = (pool.geometry().root_offset, user_root::offsets(&pool));
    pool.close().unwrap();
    Closed {
        _dir: dir,
        path,
        root,
        at,
    }
}

/// Writes `bytes` at `at` in the pool file.
fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_u64(path: &Path, at: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_le_bytes(b)
}

/// Walks the pool file at `path` (closed), returning the walk or the error.
fn walk_file(path: &Path) -> ptm::Result<WalkReport> {
    let mut pool = Pool::<Root>::open(path, &opts())?;
    walk_pool(&mut pool)
}

/// Writes `bytes` at `at` of a fresh closed pool and returns the walk's error message, which
/// must be a `CorruptCollection` of `structure` starting with `path_in_schema`.
fn damaged(c: &Closed, at: u64, bytes: &[u8], structure: &str, path_in_schema: &str) -> String {
    patch(&c.path, at, bytes);
    match walk_file(&c.path) {
        Err(Error::CorruptCollection {
            structure: s, what, ..
        }) => {
            assert_eq!(s, structure, "{what}");
            assert!(what.starts_with(&format!("{path_in_schema}: ")), "{what}");
            what.into_owned()
        }
        other => panic!("expected CorruptCollection in {structure}, got {other:?}"),
    }
}

#[test]
fn damage_is_named_by_its_schema_path() {
    // A map segment's `len` header word.
    let c = closed();
    let what = damaged(
        &c,
        c.at.segment + 24,
        &999u64.to_le_bytes(),
        "PHashMap segment",
        "Root.tasks",
    );
    assert!(what.contains("header len/used 999/"), "{what}");
    // A B-tree node's length.
    let c = closed();
    let what = damaged(&c, c.at.node, &99u64.to_le_bytes(), "PBTreeMap", "Root.index");
    assert!(what.contains("length 99"), "{what}");
    // A string length above its capacity, in the root.
    let c = closed();
    let what = damaged(
        &c,
        c.root + NAME + 8,
        &99u64.to_le_bytes(),
        "PString",
        "Root.name",
    );
    assert!(what.contains("length 99 above capacity"), "{what}");
    // A nested title whose bytes are not UTF-8.
    let c = closed();
    let what = damaged(&c, c.at.title, &[0xff], "PString", "Root.tasks<V>.title");
    assert!(what.contains("not UTF-8"), "{what}");
    // The scratch vector's buffer pointer aimed at the boxed vector's buffer: two owners.
    let c = closed();
    let tag = read_u64(&c.path, c.root + SCRATCH) >> 48;
    let handle = [(tag << 48) | c.at.boxed, 2, 3];
    let what = damaged(
        &c,
        c.root + SCRATCH,
        &handle.map(u64::to_le_bytes).concat(),
        "PVec",
        "Root.boxed<T>",
    );
    assert!(what.contains("reached twice (also from Root.scratch)"), "{what}");
    // The slot of the queue's second chunk (`dhead + 1`) pointing 64 bytes into the first.
    let c = closed();
    let jobs = &c.at.jobs;
    assert_eq!(jobs.len(), 3, "a directory and two chunks");
    let dhead = read_u64(&c.path, c.root + JOBS + 16);
    let dcap = read_u64(&c.path, c.root + JOBS + 8);
    let slot = jobs[0] + 8 * ((dhead + 1) % dcap);
    let tag = read_u64(&c.path, slot) >> 48;
    let what = damaged(
        &c,
        slot,
        &((tag << 48) | (jobs[1] + 64)).to_le_bytes(),
        "PQueue",
        "Root.jobs",
    );
    assert!(what.contains("does not start an allocated block"), "{what}");
}

#[test]
fn a_block_whose_handle_is_overwritten_is_unreachable() {
    let c = closed();
    // The scratch vector's handle zeroed behind the library's back: its buffer is allocated
    // (the commit made it so) but nothing reaches it.
    patch(&c.path, c.root + SCRATCH, &[0u8; 24]);
    let mut pool = Pool::<Root>::open(&c.path, &opts()).unwrap();
    let walked = walk_pool(&mut pool).unwrap();
    let block = pool
        .allocated_blocks()
        .unwrap()
        .into_iter()
        .find(|&(o, _)| o == c.at.scratch)
        .unwrap();
    assert_eq!(walked.unreachable, [block]);
    assert_eq!(walked.unreachable_bytes(), block.1);
    assert!(!walked.reachable.contains(&c.at.scratch));
}

fn model_counts(pool: &Pool<common::Root>) -> (u64, u64, u64, BTreeSet<u64>) {
    pool.transaction(|tx, r| {
        let mut report = Report::default();
        r.v.verify(tx, &mut report)?;
        r.m.verify(tx, &mut report)?;
        r.s.verify(tx, &mut report)?;
        r.q.verify(tx, &mut report)?;
        r.m2.verify(tx, &mut report)?;
        r.t.verify(tx, &mut report)?;
        let mut owned: BTreeSet<u64> = [r.v.buffer_offset(tx), r.s.buffer_offset(tx), r.b.offset(tx)]
            .into_iter()
            .flatten()
            .collect();
        owned.extend(r.t.node_offsets(tx)?);
        owned.extend(r.m.block_offsets(tx)?);
        owned.extend(r.m2.block_offsets(tx)?);
        owned.extend(r.q.block_offsets(tx)?);
        Ok::<_, Error>((report.structures, report.entries, report.blocks, owned))
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random operations on the shared fixture root (odd key and value sizes, a signed tree
    /// key, a box), then: the walk's counts are the typed verifiers', its reachable set is the
    /// typed block lists' and the heap's allocated set.
    #[test]
    fn the_walk_matches_the_typed_counts_after_random_operations(
        steps in prop::collection::vec(prop::collection::vec(common::op(), 1..8), 1..6),
    ) {
        let dir = shm_dir();
        let (mut pool, _) = common::create(&dir, "p.pool");
        let mut model = common::Model::default();
        for ops in &steps {
            let m = model.clone();
            let applied = pool.transaction(|tx, r| {
                let mut m = m.clone();
                for op in ops {
                    common::apply(tx, r, op, &m)?;
                    common::apply_model(&mut m, op);
                }
                Ok::<_, Error>(m)
            });
            if let Ok(m) = applied {
                model = m;
            }
            let walked = walk_pool(&mut pool).unwrap();
            let (structures, entries, blocks, owned) = model_counts(&pool);
            prop_assert_eq!((walked.structures, walked.entries, walked.blocks), (structures, entries, blocks));
            prop_assert_eq!(walked.boxes, u64::from(model.b.is_some()));
            prop_assert_eq!(&walked.reachable, &owned);
            let allocated: BTreeSet<u64> =
                pool.allocated_blocks().unwrap().into_iter().map(|(o, _)| o).collect();
            prop_assert_eq!(&walked.reachable, &allocated);
            prop_assert!(walked.unreachable.is_empty());
            let model_entries = model.v.len() + model.m.len() + model.s.len() + model.q.len()
                + model.m2.len() + model.t.len();
            prop_assert_eq!(walked.entries, model_entries as u64);
        }
    }
}

#[derive(Persistent)]
#[repr(C)]
struct Loose {
    list: PCell<PPtr<Node>>,
    /// A block's offset kept in an integer: the schema cannot say it is a pointer.
    raw: PCell<u64>,
    locked: PMutex<PVec<u64>>,
    names: [PString; 2],
}

#[test]
fn what_the_schema_cannot_describe_is_reported_not_guessed() {
    let dir = shm_dir();
    let path = dir.path().join("loose.pool");
    let mut pool = Pool::<Loose>::create(&path, POOL_SIZE, &opts()).unwrap();
    let (raw, vec_buffer) = pool
        .transaction(|tx, r| {
            let mut next = PPtr::null();
            for k in 0..3 {
                let p = tx.alloc_zeroed::<Node>()?;
                // SAFETY: `p` was just allocated as a zeroed `Node` in this transaction.
                let n = unsafe { tx.deref(p)? };
                n.key.set(tx, k)?;
                n.next.set(tx, next)?;
                next = p;
            }
            r.list.set(tx, next)?;
            let raw = tx.alloc_bytes(100)?;
            r.raw.set(tx, raw)?;
            let v = r.locked.lock(tx)?;
            v.extend(tx, 0..10)?;
            r.names[1].push_str(tx, "second")?;
            Ok::<_, Error>((raw, v.buffer_offset(tx).unwrap()))
        })
        .unwrap();
    let size_of_block = |pool: &mut Pool<Loose>, at: u64| {
        let blocks = pool.allocated_blocks().unwrap();
        blocks.into_iter().find(|&(o, _)| o == at).unwrap()
    };
    let walked = walk_pool(&mut pool).unwrap();
    // The locked vector and the two strings (one empty); the 3 nodes through the pointer.
    assert_eq!(
        (walked.structures, walked.entries),
        (3, 10 + "second".len() as u64)
    );
    assert_eq!(walked.pointers, 3);
    assert!(walked.not_walked.is_empty(), "{:?}", walked.not_walked);
    assert_eq!(walked.unreachable, [size_of_block(&mut pool, raw)]);

    // The same bytes described with an unknown type in place of the lock: listed, and the
    // vector's buffer is then unreachable from the schema too; nothing is guessed.
    let schema = ptm::pmem_core::schema::schema_of::<Loose>();
    let text = schema.encode();
    let lock = "PMutex/32<T=PVec/24<T=u64/8>>";
    assert!(text.contains(lock), "{text}");
    let other = TypeSchema::decode(&text.replace(lock, "PFancy/32")).unwrap();
    let walked = walk_schema(pool.region(), &other).unwrap();
    assert_eq!(walked.not_walked, ["PFancy at Loose.locked (layout unknown)"]);
    let mut unreachable = vec![
        size_of_block(&mut pool, raw),
        size_of_block(&mut pool, vec_buffer),
    ];
    unreachable.sort_unstable();
    assert_eq!(walked.unreachable, unreachable);
    assert_eq!(walked.structures, 2);

    // A schema whose struct contains itself without a pointer (only a damaged record can say
    // so) ends, listed once.
    let endless = TypeSchema::decode("Loose/8{x:^Loose/8}").unwrap();
    let walked = walk_schema(pool.region(), &endless).unwrap();
    assert_eq!(walked.not_walked.len(), 1, "{:?}", walked.not_walked);
    assert!(
        walked.not_walked[0].ends_with("(a struct that contains itself)"),
        "{:?}",
        walked.not_walked
    );
    assert_eq!(walked.reachable, BTreeSet::new());

    // A pointer one byte into its node, then one to a node freed while still linked: both
    // named, as `Transaction::deref` would refuse the first and cannot see the second.
    let first = pool.transaction(|tx, r| Ok::<_, Error>(r.list.get(tx))).unwrap();
    let crooked = PPtr::<Node>::from_parts(first.tag(), first.offset() + 1);
    pool.transaction(|tx, r| r.list.set(tx, crooked)).unwrap();
    let what = pointer_error(&mut pool);
    assert!(what.contains("not aligned to 8"), "{what}");
    pool.transaction(|tx, r| {
        r.list.set(tx, first)?;
        tx.free(first)
    })
    .unwrap();
    let what = pointer_error(&mut pool);
    assert!(
        what.contains("neither inside an allocated block nor the root"),
        "{what}"
    );
}

/// The walk's error for `Loose.list`'s pointer.
fn pointer_error(pool: &mut Pool<Loose>) -> String {
    match walk_pool(pool) {
        Err(Error::CorruptCollection { structure, what, .. }) => {
            assert_eq!(structure, "PPtr", "{what}");
            assert!(what.starts_with("Loose.list<T>: "), "{what}");
            what.into_owned()
        }
        other => panic!("{other:?}"),
    }
}

#[derive(Persistent)]
#[repr(C)]
struct Keys {
    by_words: PHashMap<PVec<u64>, PString>,
    by_bytes: PBTreeMap<PVec<u8>, u64>,
    signed: PBTreeSet<i64>,
    wide: PHashMap<u128, u8>,
    chars: PHashSet<[u16; 3]>,
}

impl Verify for Keys {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> ptm::Result<()> {
        self.by_words.verify(tx, report)?;
        for (_, s) in self.by_words.iter_refs(tx) {
            s.verify(tx, report)?;
        }
        self.by_bytes.verify(tx, report)?;
        self.signed.verify(tx, report)?;
        self.wide.verify(tx, report)?;
        self.chars.verify(tx, report)
    }
}

/// Every key kind the walk hashes or orders (vector keys by contents, byte-string order,
/// signed order, 16-byte integers, arrays), through segment splits and tree levels: the walk
/// passes and counts as `verify`; a signed tree whose two keys are swapped is caught.
#[test]
fn every_key_kind_hashes_and_orders_as_the_typed_maps() {
    let dir = shm_dir();
    let path = dir.path().join("k.pool");
    let mut pool = Pool::<Keys>::create(&path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..600u64 {
            let words: Vec<u64> = (0..k % 7).map(|i| i * k).collect();
            r.by_words
                .get_or_insert_new(tx, words)?
                .push_str(tx, &format!("{k},"))?;
            r.by_bytes.insert(tx, k.to_be_bytes()[5..].to_vec(), k)?;
            r.signed.insert(tx, k as i64 - 300)?;
            r.wide.insert(tx, u128::from(k) << 70, 1)?;
            r.chars.insert(tx, [k as u16, 7, (k * 3) as u16])?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let typed = verify(&pool).unwrap();
    let walked = walk_pool(&mut pool).unwrap();
    assert_eq!(
        (walked.structures, walked.entries, walked.blocks),
        (typed.structures, typed.entries, typed.blocks)
    );
    assert_allocated_exactly(&mut pool, &walked.reachable, "key kinds");
    assert!(walked.unreachable.is_empty() && walked.not_walked.is_empty());

    // Two keys of the signed tree's last leaf swapped (keys start at byte 16 of a node).
    let leaf = pool
        .transaction(|tx, r| Ok::<_, Error>(*r.signed.node_offsets(tx)?.last().unwrap()))
        .unwrap();
    pool.close().unwrap();
    let (a, b) = (read_u64(&path, leaf + 16), read_u64(&path, leaf + 24));
    patch(&path, leaf + 16, &[b.to_le_bytes(), a.to_le_bytes()].concat());
    let mut pool = Pool::<Keys>::open(&path, &opts()).unwrap();
    match walk_pool(&mut pool) {
        Err(Error::CorruptCollection { structure, what, .. }) => {
            assert_eq!(structure, "PBTreeMap");
            assert!(
                what.starts_with("Keys.signed: ") && what.contains("keys not strictly increasing"),
                "{what}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A random schema: names the walk knows and some it does not, sizes true or made up, structs
/// whose fields may not add up, `Seen` references to any struct name.
fn any_schema() -> impl Strategy<Value = TypeSchema> {
    let size = || {
        prop_oneof![
            Just(8u64),
            Just(16),
            Just(24),
            Just(32),
            Just(48),
            Just(64),
            0..600u64
        ]
    };
    let leaf = (
        prop::sample::select(vec![
            "u8", "u16", "u32", "u64", "i64", "u128", "f64", "bool", "char", "PString", "PFoo", "unit",
        ]),
        size(),
    )
        .prop_map(|(name, size)| TypeSchema::scalar(name, size as usize));
    let seen = (prop::sample::select(vec!["Root", "Task", "Node"]), size())
        .prop_map(|(name, size)| TypeSchema::decode(&format!("^{name}/{size}")).unwrap());
    prop_oneof![leaf, seen].prop_recursive(4, 40, 4, move |inner| {
        let generic = (
            prop::sample::select(vec![
                "PVec",
                "PQueue",
                "PBox",
                "PPtr",
                "PHashMap",
                "PHashSet",
                "PBTreeMap",
                "PBTreeSet",
                "PConcurrentMap",
                "PCell",
                "PMutex",
                "[3]",
                "Option",
            ]),
            prop::collection::vec(inner.clone(), 0..3),
            size(),
        )
            .prop_map(|(name, args, size)| {
                let labels = ["K", "V", "T"];
                let args = args
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| (labels[i % 3], a))
                    .collect();
                TypeSchema::generic(name, size as usize, args)
            });
        let structure = (
            prop::sample::select(vec!["Root", "Task", "Node"]),
            prop::collection::vec(inner, 0..4),
            prop::option::of(size()),
        )
            .prop_map(|(name, fields, size)| {
                let total = fields.iter().map(|f| f.size).sum::<u64>();
                let fields: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("f{i}:{}", f.encode()))
                    .collect();
                let text = format!("{name}/{}{{{}}}", size.unwrap_or(total), fields.join(","));
                TypeSchema::decode(&text).unwrap()
            });
        prop_oneof![generic, structure]
    })
}

/// One change to a schema tree, at its `at`-th node in pre-order (modulo the node count).
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, TypeSchema),
    Rename(usize, &'static str),
    Resize(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any_schema()).prop_map(|(at, t)| Mutation::Replace(at, t)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "PVec",
                "PQueue",
                "PHashMap",
                "PHashSet",
                "PBTreeMap",
                "PBTreeSet",
                "PString",
                "PBox",
                "PPtr",
                "u8",
                "u32",
                "u64",
                "i64",
                "[2]",
                "PCell",
            ])
        )
            .prop_map(|(at, name)| Mutation::Rename(at, name)),
        (any::<usize>(), 0..2000u64).prop_map(|(at, size)| Mutation::Resize(at, size)),
    ]
}

fn count_nodes(t: &TypeSchema) -> usize {
    1 + match &t.kind {
        SchemaKind::Struct(f) | SchemaKind::Generic(f) => f.iter().map(|(_, t)| count_nodes(t)).sum(),
        _ => 0,
    }
}

/// Applies `m` to the node `*at` counts down to.
fn apply_at(t: &mut TypeSchema, at: &mut usize, m: &Mutation) {
    if *at == 0 {
        match m {
            Mutation::Replace(_, new) => *t = new.clone(),
            Mutation::Rename(_, name) => t.name = (*name).to_owned(),
            Mutation::Resize(_, size) => t.size = *size,
        }
        *at = usize::MAX;
        return;
    }
    *at -= 1;
    if let SchemaKind::Struct(f) | SchemaKind::Generic(f) = &mut t.kind {
        for (_, child) in f {
            if *at == usize::MAX {
                return;
            }
            apply_at(child, at, m);
        }
    }
}

/// The filled user-root pool the schema tests read (made once per test process). A static is
/// never dropped, so its file is unlinked at once: the pool stays mapped, and nothing is left
/// in `/dev/shm` when the process ends (a `TempDir` kept in the static leaked one 8 MiB pool
/// per run).
fn shared_pool() -> std::sync::MutexGuard<'static, Pool<Root>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<Pool<Root>>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let dir = shm_dir();
        let pool = user_root::make(&dir.path().join("any.pool"), &opts());
        dir.close().expect("remove the pool's directory");
        std::sync::Mutex::new(pool)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any schema over the filled user-root pool (its bytes read as the wrong types): the walk
    /// ends with a report or an error that renders, never a panic or a hang.
    #[test]
    fn any_schema_over_real_bytes_ends_cleanly(schema in any_schema()) {
        let guard = shared_pool();
        match walk_schema(guard.region(), &schema) {
            Ok(report) => prop_assert!(report.reachable.len() + report.unreachable.len() > 0),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// The root's real schema with a few nodes replaced, renamed or resized (a damaged or
    /// mismatched record, as `walk_schema` may be handed): the walk reads the real structures
    /// as other types and ends with a report or an error, never a panic or a hang.
    #[test]
    fn a_mutated_root_schema_ends_cleanly(mutations in prop::collection::vec(mutation(), 1..4)) {
        let mut schema = ptm::pmem_core::schema::schema_of::<Root>();
        for m in &mutations {
            let (Mutation::Replace(at, _) | Mutation::Rename(at, _) | Mutation::Resize(at, _)) = m;
            let mut at = at % count_nodes(&schema);
            apply_at(&mut schema, &mut at, m);
        }
        let guard = shared_pool();
        match walk_schema(guard.region(), &schema) {
            Ok(report) => prop_assert!(report.reachable.len() + report.unreachable.len() > 0),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// An operation on the user root (`common/user_root.rs`), from an empty pool.
#[derive(Clone, Debug)]
enum UserOp {
    /// Creates task `k` with a title of `n` letters and `n % 5` tags, or adds a tag.
    Task(u8, u8),
    /// Removes task `k` and frees its title and tags.
    Drop(u8),
    Index(u16),
    Unindex(u16),
    Jobs(u16),
    Pop(u16),
    Share(u8),
    Unshare(u8),
    See(u8),
    Unsee(u8),
    /// Pushes onto the boxed vector (making the box), or frees the box when `false`.
    Box(bool),
    /// Links a fresh node at the list's head, or unlinks and frees the head when `false`.
    Node(bool),
    Name(u8),
}

fn user_op() -> impl Strategy<Value = UserOp> {
    prop_oneof![
        (0..24u8, 0..40u8).prop_map(|(k, n)| UserOp::Task(k, n)),
        (0..24u8).prop_map(UserOp::Drop),
        (0..400u16).prop_map(UserOp::Index),
        (0..400u16).prop_map(UserOp::Unindex),
        (0..3000u16).prop_map(UserOp::Jobs),
        (0..3000u16).prop_map(UserOp::Pop),
        any::<u8>().prop_map(UserOp::Share),
        any::<u8>().prop_map(UserOp::Unshare),
        any::<u8>().prop_map(UserOp::See),
        any::<u8>().prop_map(UserOp::Unsee),
        any::<bool>().prop_map(UserOp::Box),
        any::<bool>().prop_map(UserOp::Node),
        (0..60u8).prop_map(UserOp::Name),
    ]
}

fn apply_user(tx: &Transaction<'_>, r: &Root, op: &UserOp) -> ptm::Result<()> {
    match *op {
        UserOp::Task(k, n) => {
            let fresh = !r.tasks.contains_key(tx, &u64::from(k))?;
            let t = r.tasks.get_or_insert_new(tx, u64::from(k))?;
            if fresh {
                t.title.push_str(tx, &"é".repeat(usize::from(n)))?;
                t.tags.extend(tx, 0..u64::from(n % 5))?;
            } else {
                t.tags.push(tx, u64::from(n))?;
            }
        }
        UserOp::Drop(k) => drop(r.tasks.remove_free(tx, &u64::from(k))?),
        UserOp::Index(w) => drop(r.index.insert(tx, format!("w{w}").as_str(), u64::from(w))?),
        UserOp::Unindex(w) => drop(r.index.remove(tx, format!("w{w}").as_str())?),
        UserOp::Jobs(n) => r.jobs.extend(tx, 0..u64::from(n))?,
        UserOp::Pop(n) => {
            for _ in 0..n {
                r.jobs.pop(tx)?;
            }
        }
        UserOp::Share(k) => drop(r.shared.insert(tx, u64::from(k), 1)?),
        UserOp::Unshare(k) => drop(r.shared.remove(tx, &u64::from(k))?),
        UserOp::See(k) => drop(r.seen.insert(tx, u64::from(k))?),
        UserOp::Unsee(k) => drop(r.seen.remove(tx, &u64::from(k))?),
        UserOp::Box(true) => r.boxed.get_or_init_new(tx)?.push(tx, 7)?,
        UserOp::Box(false) => r.boxed.free(tx)?,
        UserOp::Node(true) => {
            let p = tx.alloc_zeroed::<Node>()?;
            // SAFETY: `p` was just allocated as a zeroed `Node` in this transaction.
            unsafe { tx.deref(p)? }.next.set(tx, r.list.get(tx))?;
            r.list.set(tx, p)?;
        }
        UserOp::Node(false) => {
            let head = r.list.get(tx);
            if !head.is_null() {
                // SAFETY: every node of this list was allocated as a `Node` by `Node(true)`.
                r.list.set(tx, unsafe { tx.deref(head)? }.next.get(tx))?;
                tx.free(head)?;
            }
        }
        UserOp::Name(n) => {
            r.name.clear(tx)?;
            r.name.push_str(tx, &"n".repeat(usize::from(n)))?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random operations on the user root (nested titles and tags removed with their task, a
    /// string-keyed tree through splits and merges, a queue over chunks, the sharded map, the
    /// set, the box made and freed, list nodes allocated and freed): after every transaction
    /// the walk counts as the typed `verify` and reaches exactly the allocated blocks.
    #[test]
    fn the_user_root_walks_as_verify_after_random_operations(
        steps in prop::collection::vec(prop::collection::vec(user_op(), 1..10), 1..8),
    ) {
        let dir = shm_dir();
        let mut pool = Pool::<Root>::create(dir.path().join("u.pool"), POOL_SIZE, &opts()).unwrap();
        for ops in &steps {
            pool.transaction(|tx, r| ops.iter().try_for_each(|op| apply_user(tx, r, op))).unwrap();
            let typed = user_root::typed(&pool);
            let walked = walk_pool(&mut pool).unwrap();
            prop_assert_eq!(
                (walked.structures, walked.entries, walked.blocks),
                (typed.structures, typed.entries, typed.blocks)
            );
            let allocated: BTreeSet<u64> =
                pool.allocated_blocks().unwrap().into_iter().map(|(o, _)| o).collect();
            prop_assert_eq!(&walked.reachable, &allocated);
            prop_assert!(walked.unreachable.is_empty() && walked.not_walked.is_empty());
        }
    }
}
