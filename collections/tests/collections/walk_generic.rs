//! `walk_schema`'s generic walk and its pointer checks (`Walker::generic`, `slot`, `may_point`,
//! `owns`, `pointer` in `collections/src/walk.rs`; the mutW pass in docs/mutation-notes.md):
//! schemas built by hand over a real pool, as a damaged or mismatched schema record hands them
//! to `ptm check`. A `PPtr` target is checked against its type's alignment (enums, locks, sharded
//! maps, handles, arrays; none for a type whose alignment the walk does not know) and must fit
//! its block or lie inside the root; an unknown generic is a leaf unless it may hold a pointer;
//! a lock, cell, array or handle whose size does not match its contents is listed, not read;
//! damage inside a lock or a later array element is named at its own pool offset; a tree's spare
//! value slots are checked exactly when its values own blocks; and every one of these type
//! computations stops at the same depth (128 levels of nesting).

use ptm::pmem_core::schema::{schema_of, SchemaKind, TypeSchema};
use ptm::{Error, PCell, PMutex, PPtr, Persistent, Pool};
use ptm_collections::{walk_pool, walk_schema, PBTreeMap, PConcurrentMap, PString, PVec, WalkReport};

use crate::common::{corrupt, opts, shm_dir, POOL_SIZE};

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    /// The pointer under test: each schema describes it as its own `PPtr<T>` (or another
    /// 8-byte type).
    p: PCell<PPtr<u8>>,
    /// Words set by each test and described as whatever it needs (handles, locks, arrays).
    words: [PCell<u64>; 16],
    /// A tree of plain values, some removed: its spare slots keep stale bytes.
    plain: PBTreeMap<u64, u64>,
}

/// Bytes of a lock's word, before the value it guards.
const LOCK_WORD: u64 = (std::mem::size_of::<PMutex<u64>>() - 8) as u64;
/// Bytes of the block `p` points into.
const BLOCK: u64 = 4096;

struct Fixture {
    _dir: tempfile::TempDir,
    pool: Pool<Holder>,
    tag: u16,
    /// A zeroed `BLOCK`-byte block.
    block: u64,
    /// The real root schema.
    real: TypeSchema,
}

fn fixture() -> Fixture {
    let dir = shm_dir();
    let pool = Pool::<Holder>::create(dir.path().join("g.pool"), POOL_SIZE, &opts()).unwrap();
    let block = pool
        .transaction(|tx, r| {
            for k in 1..=10u64 {
                r.plain.insert(tx, k, k * 1000)?;
            }
            for k in 6..=10u64 {
                r.plain.remove(tx, &k)?;
            }
            tx.alloc_zeroed::<[u64; (BLOCK / 8) as usize]>()
        })
        .unwrap();
    Fixture {
        _dir: dir,
        pool,
        tag: block.tag(),
        block: block.offset(),
        real: schema_of::<Holder>(),
    }
}

impl Fixture {
    /// Points `p` at pool offset `at`.
    fn point(&mut self, at: u64) {
        let p = PPtr::from_parts(self.tag, at);
        self.pool.transaction(|tx, r| r.p.set(tx, p)).unwrap();
    }

    /// Sets the 16 words (the rest zero).
    fn words(&mut self, values: &[u64]) {
        self.pool
            .transaction(|tx, r| {
                for (i, w) in r.words.iter().enumerate() {
                    w.set(tx, values.get(i).copied().unwrap_or(0))?;
                }
                Ok::<_, Error>(())
            })
            .unwrap();
    }

    /// Pool offset of the root field `name`.
    fn offset_of(&self, name: &str) -> u64 {
        let SchemaKind::Struct(fields) = &self.real.kind else {
            unreachable!()
        };
        let mut off = self.pool.geometry().root_offset;
        for (n, f) in fields {
            if n == name {
                return off;
            }
            off += f.size;
        }
        panic!("no field {name}")
    }

    /// The root schema with field `name` described as `ty` (of the field's size).
    fn with(&self, name: &str, ty: TypeSchema) -> TypeSchema {
        let mut s = self.real.clone();
        let SchemaKind::Struct(fields) = &mut s.kind else {
            unreachable!()
        };
        let f = &mut fields.iter_mut().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(f.size, ty.size, "{name} described as {}", ty.short());
        *f = ty;
        s
    }

    fn walk(&self, schema: &TypeSchema) -> ptm::Result<WalkReport> {
        walk_schema(self.pool.region(), schema)
    }
}

fn scalar(name: &str, size: u64) -> TypeSchema {
    TypeSchema::scalar(name, size as usize)
}

fn u64s() -> TypeSchema {
    scalar("u64", 8)
}

fn generic(name: &str, size: u64, args: Vec<(&str, TypeSchema)>) -> TypeSchema {
    TypeSchema::generic(name, size as usize, args)
}

fn one(name: &str, size: u64, t: TypeSchema) -> TypeSchema {
    generic(name, size, vec![("T", t)])
}

fn ptr(t: TypeSchema) -> TypeSchema {
    one("PPtr", 8, t)
}

fn array(n: u64, t: TypeSchema) -> TypeSchema {
    let size = n * t.size;
    one(&format!("[{n}]"), size, t)
}

fn structure(name: &str, fields: Vec<(&str, TypeSchema)>) -> TypeSchema {
    TypeSchema {
        name: name.to_owned(),
        size: fields.iter().map(|(_, f)| f.size).sum(),
        kind: SchemaKind::Struct(fields.into_iter().map(|(n, f)| (n.to_owned(), f)).collect()),
    }
}

/// An enum of `size` bytes.
fn enumeration(size: u64) -> TypeSchema {
    TypeSchema::enumeration("E", size as usize, vec![("A", 0), ("B", 1)])
}

/// The wrappers a type computation goes through, one level each.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    Cell,
    Mutex,
    Array,
    Struct,
}

const WRAPS: [Wrap; 4] = [Wrap::Cell, Wrap::Mutex, Wrap::Array, Wrap::Struct];

/// `leaf` inside `levels` wrappers: the leaf lies at depth `levels` from the outermost type.
fn chain(wrap: Wrap, levels: usize, leaf: TypeSchema) -> TypeSchema {
    (0..levels).fold(leaf, |t, i| match wrap {
        Wrap::Cell => one("PCell", t.size, t),
        Wrap::Mutex => one("PMutex", t.size + LOCK_WORD, t),
        Wrap::Array => array(1, t),
        Wrap::Struct => structure(&format!("S{i}"), vec![("f", t)]),
    })
}

/// A `PPtr<T>` target must be aligned for `T` when the walk knows `T`'s alignment (scalars,
/// enums, structs, cells, locks, handles, pointers, arrays, sharded maps), and is not checked
/// when it does not (an unknown generic, a type nested deeper than 128 levels).
#[test]
fn pointer_targets_are_checked_against_their_types_alignment() {
    let mut f = fixture();
    let map = schema_of::<PConcurrentMap<u64, u64, 1>>();
    assert_eq!(map.size, 64);
    let cases: Vec<(&str, TypeSchema, u64, Option<&str>)> = vec![
        ("u64", u64s(), 4, Some("not aligned to 8")),
        ("an enum", enumeration(4), 2, Some("not aligned to 4")),
        ("an enum", enumeration(4), 4, None),
        ("a lock", schema_of::<PMutex<u64>>(), 4, Some("not aligned to 8")),
        ("a sharded map", map.clone(), 8, Some("not aligned to 64")),
        ("a sharded map", map, 64, None),
        ("a vector", schema_of::<PVec<u64>>(), 4, Some("not aligned to 8")),
        ("a pointer", ptr(u64s()), 4, Some("not aligned to 8")),
        ("an array of u64", array(2, u64s()), 4, Some("not aligned to 8")),
        ("an array of bytes", array(16, scalar("u8", 1)), 1, None),
        ("an unknown generic", one("Foo", 8, u64s()), 4, None),
    ];
    for (what, target, at, expected) in cases {
        f.point(f.block + at);
        let schema = f.with("p", ptr(target));
        match expected {
            Some(e) => {
                let (named, offset, msg) = corrupt(f.walk(&schema));
                assert_eq!((named, offset), ("PPtr", f.block + at), "{what}: {msg}");
                assert!(
                    msg.starts_with("Holder.p<T>: ") && msg.contains(e),
                    "{what}: {msg}"
                );
            }
            None => {
                let r = f.walk(&schema).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(r.pointers, 1, "{what}");
                assert!(r.reachable.contains(&f.block), "{what}");
            }
        }
    }
    // The depth limit: a `u64` under 128 wrappers of each kind is known (checked), under 129
    // it is not (its alignment unknown, the target is not checked).
    for wrap in WRAPS {
        f.point(f.block + 4);
        let (_, _, msg) = corrupt(f.walk(&f.with("p", ptr(chain(wrap, 128, u64s())))));
        assert!(msg.contains("not aligned to 8"), "{wrap:?}: {msg}");
        let r = f.walk(&f.with("p", ptr(chain(wrap, 129, u64s()))));
        assert!(r.is_ok(), "{wrap:?}: {r:?}");
    }
}

/// A `PPtr` target must lie wholly inside one allocated block or wholly inside the root.
#[test]
fn pointer_targets_must_fit_their_block_or_the_root() {
    let mut f = fixture();
    let bytes = |n: u64| array(n, scalar("u8", 1));
    // The last 8 bytes of the block, read as 16.
    f.point(f.block + BLOCK - 8);
    let (named, offset, msg) = corrupt(f.walk(&f.with("p", ptr(bytes(16)))));
    assert_eq!((named, offset), ("PPtr", f.block + BLOCK - 8));
    assert!(
        msg.contains("a 16-byte target") && msg.contains("overruns its block"),
        "{msg}"
    );
    // Exactly the last 8 bytes.
    let r = f.walk(&f.with("p", ptr(bytes(8)))).unwrap();
    assert_eq!(r.pointers, 1);
    // Just past the block (free space follows it).
    let after = f.block + BLOCK;
    let blocks = f.pool.allocated_blocks().unwrap();
    assert!(
        blocks.iter().all(|&(o, n)| after < o || after >= o + n),
        "{blocks:?}"
    );
    f.point(after);
    let (named, offset, msg) = corrupt(f.walk(&f.with("p", ptr(bytes(8)))));
    assert_eq!((named, offset), ("PPtr", after));
    assert!(
        msg.contains("neither inside an allocated block nor the root"),
        "{msg}"
    );

    // Inside the root: the root's words, then its last 8 bytes.
    let g = f.pool.geometry();
    let root_end = g.root_offset + g.root_size;
    f.point(f.offset_of("words"));
    let r = f.walk(&f.with("p", ptr(array(16, u64s())))).unwrap();
    assert_eq!(r.pointers, 1);
    assert!(!r.reachable.contains(&f.offset_of("words")));
    f.point(root_end - 8);
    let r = f.walk(&f.with("p", ptr(bytes(8)))).unwrap();
    assert_eq!(r.pointers, 1);
    // Across the root's end.
    let (named, offset, msg) = corrupt(f.walk(&f.with("p", ptr(bytes(16)))));
    assert_eq!((named, offset), ("PPtr", root_end - 8));
    assert!(
        msg.contains("neither inside an allocated block nor the root"),
        "{msg}"
    );
}

/// An unknown generic (`Foo<T>`) is a leaf when nothing in `T` can point (scalars, enums, plain
/// structs, arrays and cells of them) and is listed as not walked otherwise, as an unknown
/// collection-like name (`PFoo<T>`) holding a string is.
#[test]
fn an_unknown_generic_is_a_leaf_unless_it_may_hold_a_pointer() {
    let f = fixture();
    let foo = |t: TypeSchema| one("Foo", 8, t);
    let leaves = [
        u64s(),
        enumeration(8),
        structure("Plain", vec![("a", u64s()), ("b", enumeration(4))]),
        array(2, u64s()),
        one("PCell", 8, u64s()),
    ];
    for t in leaves {
        let name = t.short();
        let r = f.walk(&f.with("p", foo(t))).unwrap();
        assert_eq!(r.not_walked, Vec::<String>::new(), "Foo<{name}>");
    }
    let listed = [
        schema_of::<PString>(),
        schema_of::<PVec<u64>>(),
        ptr(u64s()),
        schema_of::<PConcurrentMap<u64, u64, 1>>(),
        scalar("PFoo", 8),
        structure("Holds", vec![("s", schema_of::<PString>())]),
        one("PCell", 24, schema_of::<PString>()),
        one("Bar", 8, schema_of::<PString>()),
    ];
    for t in listed {
        let name = t.short();
        let r = f.walk(&f.with("p", foo(t))).unwrap();
        assert_eq!(
            r.not_walked,
            [format!("Foo<{name}> at Holder.p (layout unknown)")],
            "Foo<{name}>"
        );
    }
    let r = f
        .walk(&f.with("p", one("PFoo", 8, schema_of::<PString>())))
        .unwrap();
    assert_eq!(r.not_walked, ["PFoo<PString> at Holder.p (an unexpected layout)"]);
    // The depth limit: a `u64` under 128 wrappers is known to hold no pointer, under 129 it
    // may hold one.
    for wrap in WRAPS {
        let r = f.walk(&f.with("p", foo(chain(wrap, 128, u64s())))).unwrap();
        assert_eq!(r.not_walked, Vec::<String>::new(), "{wrap:?}");
        let r = f.walk(&f.with("p", foo(chain(wrap, 129, u64s())))).unwrap();
        assert_eq!(r.not_walked.len(), 1, "{wrap:?}");
        assert!(
            r.not_walked[0].ends_with("at Holder.p (layout unknown)"),
            "{wrap:?}"
        );
    }
}

/// A cell, lock, array or handle whose size does not match its contents (a damaged schema
/// record) is listed as not walked and its bytes are not read as the contents; a zero-sized
/// array element is not walked either.
#[test]
fn wrappers_and_handles_of_an_unexpected_size_are_listed_not_read() {
    let mut f = fixture();
    // Words that read as a vector or string with no buffer and length 7 at every third word:
    // damage, if read as one.
    let sevens: Vec<u64> = (0..16).map(|i| if i % 3 == 0 { 0 } else { 7 }).collect();
    f.words(&sevens);
    let base = f.walk(&f.real).unwrap();
    let s = schema_of::<PString>();
    let kv = |name: &str, size: u64| generic(name, size, vec![("K", u64s()), ("V", u64s())]);
    // 128 bytes: `t`, padded.
    let fill = |t: TypeSchema| {
        let pad = 128 - t.size;
        if pad == 0 {
            t
        } else {
            structure("W", vec![("h", t), ("pad", scalar("gap", pad))])
        }
    };
    let cases: Vec<(TypeSchema, &str)> = vec![
        (one("PCell", 128, s.clone()), "an unexpected layout"),
        (one("PMutex", 128, s.clone()), "an unexpected layout"),
        (one("[3]", 128, s.clone()), "layout unknown"),
        (one("PPtr", 128, s.clone()), "an unexpected layout"),
        (one("PBox", 128, s.clone()), "an unexpected layout"),
        (one("PVec", 128, s.clone()), "an unexpected layout"),
        (one("PQueue", 128, s.clone()), "an unexpected layout"),
        (kv("PHashMap", 128), "an unexpected handle size"),
        (kv("PBTreeMap", 128), "an unexpected handle size"),
        (kv("PConcurrentMap", 96), "an unexpected layout"),
    ];
    for (t, why) in cases {
        let name = t.short();
        let r = f
            .walk(&f.with("words", fill(t)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.not_walked.len(), 1, "{name}: {:?}", r.not_walked);
        let listed = &r.not_walked[0];
        assert!(
            listed.starts_with(&format!("{name} at Holder.words")) && listed.ends_with(&format!("({why})")),
            "{name}: {listed}"
        );
        assert_eq!(
            (r.structures, r.entries, r.boxes, r.pointers),
            (base.structures, base.entries, base.boxes, base.pointers),
            "{name}"
        );
    }
    // The control: a vector of the right size is read, and the words are damage.
    let (named, _, msg) = corrupt(f.walk(&f.with("words", fill(schema_of::<PVec<u64>>()))));
    assert_eq!(named, "PVec");
    assert!(msg.contains("no buffer, but length 7"), "{msg}");
    // Zero-sized elements that may point: an array of them holds nothing to walk.
    let zero = structure(
        "W",
        vec![("h", array(4, scalar("PFoo", 0))), ("pad", scalar("gap", 128))],
    );
    let r = f.walk(&f.with("words", zero)).unwrap();
    assert_eq!(r.not_walked, Vec::<String>::new());
}

/// Damage inside a lock or in an array's second element is named at that value's own pool
/// offset (past the lock word; one element on).
#[test]
fn damage_inside_a_lock_or_an_array_element_is_named_at_its_offset() {
    let mut f = fixture();
    let words = f.offset_of("words");
    let s = schema_of::<PString>();
    let v = schema_of::<PVec<u64>>();
    let layout = structure(
        "W",
        vec![
            ("m", one("PMutex", LOCK_WORD + v.size, v)),
            ("a", array(2, s)),
            ("pad", scalar("gap", 128 - LOCK_WORD - 24 - 48)),
        ],
    );
    let schema = f.with("words", layout);
    // The locked vector: no buffer, length 5.
    f.words(&[0, 0, 5, 5]);
    let (named, offset, msg) = corrupt(f.walk(&schema));
    assert_eq!((named, offset), ("PVec", words + LOCK_WORD), "{msg}");
    assert!(
        msg.starts_with("Holder.words.m: ") && msg.contains("no buffer, but length 5"),
        "{msg}"
    );
    // The second string of the array: no buffer, length 3.
    let second = ((LOCK_WORD + 24 + 24) / 8) as usize;
    let mut ws = vec![0u64; 16];
    ws[second + 1] = 3;
    ws[second + 2] = 3;
    f.words(&ws);
    let (named, offset, msg) = corrupt(f.walk(&schema));
    assert_eq!((named, offset), ("PString", words + LOCK_WORD + 24 + 24), "{msg}");
    assert!(
        msg.starts_with("Holder.words.a<T>: ") && msg.contains("no buffer, but length 3"),
        "{msg}"
    );
}

#[derive(Persistent)]
#[repr(C)]
struct Trees {
    owning: PBTreeMap<u64, PString>,
    plain: PBTreeMap<u64, u64>,
}

/// `schema` with the value type of its field `name` (a tree) described as `v`.
fn tree_values(schema: &TypeSchema, name: &str, v: TypeSchema) -> TypeSchema {
    let mut s = schema.clone();
    let SchemaKind::Struct(fields) = &mut s.kind else {
        unreachable!()
    };
    let tree = &mut fields.iter_mut().find(|(n, _)| n == name).unwrap().1;
    let SchemaKind::Generic(args) = &mut tree.kind else {
        unreachable!()
    };
    let slot = &mut args.iter_mut().find(|(l, _)| l == "V").unwrap().1;
    assert_eq!(slot.size, v.size, "{}", v.short());
    *slot = v;
    s
}

/// A tree's spare value slots are checked for zeros exactly when its values own blocks: a
/// string, and anything holding one in a struct, cell, array or up to 128 levels of them (the
/// walk's depth limit; deeper, the value's layout is unknown and the tree is not walked); a
/// tree of plain values keeps stale bytes there (removals leave them) and walks clean however
/// its values are described.
#[test]
fn spare_value_slots_are_checked_exactly_when_the_values_own_blocks() {
    let dir = shm_dir();
    let path = dir.path().join("t.pool");
    let mut pool = Pool::<Trees>::create(&path, POOL_SIZE, &opts()).unwrap();
    let (owning, plain) = pool
        .transaction(|tx, r| {
            for k in 1..=3u64 {
                r.owning.get_or_insert_new(tx, k)?.push_str(tx, "v")?;
            }
            for k in 1..=10u64 {
                r.plain.insert(tx, k, k * 1000)?;
            }
            for k in 6..=10u64 {
                r.plain.remove(tx, &k)?;
            }
            Ok::<_, Error>((r.owning.node_offsets(tx)?, r.plain.node_offsets(tx)?))
        })
        .unwrap();
    assert_eq!((owning.len(), plain.len()), (1, 1), "root leaves");
    let schema = schema_of::<Trees>();
    // A leaf: `[len][1][keys: u64; 15][values; 15][children: 16]`; the plain leaf's value
    // slot 5 (the first spare) keeps the removed entry's value.
    let word =
        |img: &[u8], at: u64| u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap());
    let plain_spare = plain[0] + 16 + 15 * 8 + 5 * 8;
    let stale = {
        let region = pool.region();
        let mut b = [0u8; 8];
        region.read_at(plain_spare, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    assert_ne!(
        stale, 0,
        "a removal leaves the plain tree's spare value slot as it was"
    );
    let cell = |t: TypeSchema| one("PCell", t.size, t);
    let plain_values = [
        u64s(),
        cell(u64s()),
        structure("Plain", vec![("a", u64s())]),
        array(1, u64s()),
        enumeration(8),
    ];
    for v in plain_values {
        let name = v.short();
        let r = walk_schema(pool.region(), &tree_values(&schema, "plain", v));
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    assert!(walk_pool(&mut pool).is_ok());
    pool.close().unwrap();

    // The owning leaf's last value slot, its last word (a spare slot: 3 entries of 15).
    let mut img = std::fs::read(&path).unwrap();
    let last = owning[0] + 16 + 15 * 8 + 15 * 24 - 8;
    assert_eq!(word(&img, last), 0);
    img[last as usize..last as usize + 8].copy_from_slice(&1u64.to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let pool = Pool::<Trees>::open(&path, &opts()).unwrap();
    let s = schema_of::<PString>();
    let owning_values = [
        s.clone(),
        structure("Holds", vec![("s", s.clone())]),
        cell(s.clone()),
        array(1, s.clone()),
        one("PVec", 24, scalar("u8", 1)),
        chain(Wrap::Cell, 128, s.clone()),
        chain(Wrap::Struct, 128, s.clone()),
        chain(Wrap::Array, 128, s.clone()),
    ];
    for v in owning_values {
        let name = v.short();
        let (named, offset, msg) = corrupt(walk_schema(pool.region(), &tree_values(&schema, "owning", v)));
        assert_eq!(named, "PBTreeMap", "{name}: {msg}");
        assert_eq!(offset, owning[0], "{name}: {msg}");
        assert!(
            msg.starts_with("Trees.owning: ") && msg.contains("a spare value slot is not zero"),
            "{name}: {msg}"
        );
    }
    // Deeper, the value's layout is unknown: the tree is listed, not walked (so `owns`, which
    // runs only once the layout is known, never meets its own depth limit).
    for wrap in [Wrap::Cell, Wrap::Struct, Wrap::Array] {
        let r = walk_schema(
            pool.region(),
            &tree_values(&schema, "owning", chain(wrap, 129, s.clone())),
        )
        .unwrap_or_else(|e| panic!("{wrap:?}: {e}"));
        assert_eq!(
            r.not_walked,
            ["PBTreeMap at Trees.owning (key or value layout unknown)"],
            "{wrap:?}"
        );
    }
}

/// A box's contents are walked whatever their type: a scalar, an enum or a plain array there is
/// a leaf (nothing listed, nothing counted but the box), as is a root described as a scalar.
#[test]
fn a_box_of_a_plain_value_is_a_leaf() {
    let mut f = fixture();
    let base = f.walk(&f.real).unwrap();
    f.point(f.block);
    for t in [u64s(), enumeration(8), array(4, u64s()), scalar("unit", 0)] {
        let name = t.short();
        let r = f.walk(&f.with("p", one("PBox", 8, t))).unwrap();
        assert_eq!(r.not_walked, Vec::<String>::new(), "PBox<{name}>");
        assert_eq!(
            (r.structures, r.entries, r.boxes),
            (base.structures, base.entries, 1),
            "PBox<{name}>"
        );
        assert!(r.reachable.contains(&f.block), "PBox<{name}>");
    }
    let r = f.walk(&u64s()).unwrap();
    assert_eq!((r.structures, r.not_walked.len()), (0, 0));
}

/// A struct described in full only deep inside the schema (as a `^Name` reference elsewhere):
/// found at up to 128 levels of nesting (the `PPtr` to it is then checked for its alignment),
/// not deeper (the reference is then a type described nowhere: listed, not guessed).
#[test]
fn a_struct_described_deep_in_the_schema_is_found_down_to_128_levels() {
    let mut f = fixture();
    f.point(f.block + 4);
    let deep = structure("Deep", vec![("w", array(16, u64s()))]);
    assert_eq!(deep.size, 128);
    let seen = TypeSchema::decode("^Deep/128").unwrap();
    for wrap in [Wrap::Cell, Wrap::Array, Wrap::Struct] {
        let at = |levels: usize| {
            let s = f.with("p", ptr(seen.clone()));
            let SchemaKind::Struct(mut fields) = s.kind else {
                unreachable!()
            };
            fields.iter_mut().find(|(n, _)| n == "words").unwrap().1 = chain(wrap, levels, deep.clone());
            TypeSchema {
                kind: SchemaKind::Struct(fields),
                ..s
            }
        };
        // `words` is at depth 1 in the root: `Deep` at 1 + 127 = 128.
        let (_, _, msg) = corrupt(f.walk(&at(127)));
        assert!(msg.contains("not aligned to 8"), "{wrap:?}: {msg}");
        let r = f.walk(&at(128)).unwrap_or_else(|e| panic!("{wrap:?}: {e}"));
        assert_eq!(
            r.not_walked,
            ["Deep at Holder.p<T> (a type described nowhere in the schema)"],
            "{wrap:?}"
        );
    }
}

/// A tree's root pointer damaged to the data area's first bytes or its last 16 (where no block
/// lies): the node header the walk reads first is inside the data area, so the damage is named
/// by the tree's own checks; 8 bytes before the end the header would run past the data area,
/// and that read is refused.
#[test]
fn reads_are_refused_exactly_outside_the_data_area() {
    let mut f = fixture();
    let data = f.pool.region().data_range();
    let tree = generic("PBTreeMap", 16, vec![("K", u64s()), ("V", u64s())]);
    let schema = f.with(
        "words",
        structure("W", vec![("t", tree), ("pad", scalar("gap", 112))]),
    );
    for (root, outside) in [(data.start, false), (data.end - 16, false), (data.end - 8, true)] {
        f.words(&[PPtr::<u8>::from_parts(f.tag, root).to_raw(), 1]);
        let (named, _, msg) = corrupt(f.walk(&schema));
        assert_eq!(named, "PBTreeMap", "{root:#x}: {msg}");
        assert!(msg.starts_with("Holder.words.t: "), "{root:#x}: {msg}");
        assert_eq!(
            msg.contains("outside the pool's data area"),
            outside,
            "{root:#x}: {msg}"
        );
    }
}
