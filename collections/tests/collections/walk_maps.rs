//! `walk_schema`'s hash-map and queue walks (`Walker::hash_map`, `Walker::queue`, issue 19's
//! mutation pass): on maps under a directory with tombstones, string keys, an empty map, a map
//! in the key-array/value-array layout, and queues of strings whose front moved (a chunked
//! queue and a wrapped ring) the walk agrees with the typed `verify` and with the allocator;
//! damage to a map's handle (global depth, an empty map's counts), a segment header (capacity,
//! local depth, layout flags, the directory range), a key in another segment's range, an entry
//! moved past an empty slot, or a string handle inside a map or a queue is `CorruptCollection`
//! naming what is wrong (and, for a string handle, its pool offset); a map schema with a
//! zero-sized value is refused.

use std::path::{Path, PathBuf};

use ptm::pmem_core::schema::TypeSchema;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{
    verify, walk_pool, walk_schema, write_legacy_segments, PHashMap, PQueue, PString, Report, Verify,
    WalkReport,
};

use crate::common::{assert_allocated_exactly, corrupt, opts, patch, poke, shm_dir};

#[derive(Persistent)]
#[repr(C)]
struct Maps {
    /// Several segments under a directory, with tombstones; values walked.
    words: PHashMap<u64, PString>,
    /// String keys (each owns a buffer).
    names: PHashMap<PString, u64>,
    /// One segment, no directory.
    small: PHashMap<u64, u64>,
    /// Never written: a null root.
    empty: PHashMap<u64, u64>,
    /// Written in the layout of builds before the pair layout.
    legacy: PHashMap<u64, PString>,
    /// Full chunks, its front popped past the first chunk.
    long: PQueue<PString>,
    /// One chunk under the full size (a ring), wrapped.
    ring: PQueue<PString>,
}

/// Field offsets in `Maps` (a derived `repr(C)` root of 32- and 48-byte handles: no padding).
const WORDS: u64 = 0;
const EMPTY_MAP: u64 = 96;
const LONG: u64 = 160;
const RING: u64 = 208;

const WORD_KEYS: u64 = 6000;
const QUEUED: u64 = 5000;
const POPPED: u64 = 2100;

impl Verify for Maps {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> ptm::Result<()> {
        self.words.verify(tx, report)?;
        for (_, s) in self.words.iter_refs(tx) {
            s.verify(tx, report)?;
        }
        self.names.verify(tx, report)?;
        self.small.verify(tx, report)?;
        self.empty.verify(tx, report)?;
        self.legacy.verify(tx, report)?;
        for (_, s) in self.legacy.iter_refs(tx) {
            s.verify(tx, report)?;
        }
        for q in [&self.long, &self.ring] {
            q.verify(tx, report)?;
            for pos in 0..q.len(tx) {
                q.get_ref(tx, pos)?.expect("an element").verify(tx, report)?;
            }
        }
        Ok(())
    }
}

/// A closed pool of `Maps`: its directory (kept alive), path and root offset.
struct Closed {
    _dir: tempfile::TempDir,
    path: PathBuf,
    root: u64,
}

fn make() -> (Pool<Maps>, Closed) {
    let dir = shm_dir();
    let path = dir.path().join("m.pool");
    let pool = Pool::<Maps>::create(&path, 16 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..WORD_KEYS {
            r.words.get_or_insert_new(tx, k)?.push_str(tx, &format!("w{k}"))?;
        }
        // Tombstones: removals from full probe runs.
        for k in (0..WORD_KEYS).step_by(3) {
            assert!(r.words.remove_free(tx, &k)?);
        }
        for k in 0..300u64 {
            r.names.insert(tx, format!("name {k}").as_str(), k)?;
        }
        for k in 0..5u64 {
            r.small.insert(tx, k, k * k)?;
        }
        for k in 0..QUEUED {
            r.long.push_new(tx)?.push_str(tx, &format!("q{k}"))?;
        }
        for _ in 0..POPPED {
            assert!(r.long.pop_free(tx)?);
        }
        for k in 0..3 {
            r.ring.push_new(tx)?.push_str(tx, &format!("r{k}"))?;
        }
        for _ in 0..2 {
            assert!(r.ring.pop_free(tx)?);
        }
        for k in 3..6 {
            r.ring.push_new(tx)?.push_str(tx, &format!("r{k}"))?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    write_legacy_segments(true);
    let legacy = pool.transaction(|tx, r| {
        (0..50u64).try_for_each(|k| r.legacy.get_or_insert_new(tx, k)?.push_str(tx, &format!("l{k}")))
    });
    write_legacy_segments(false);
    legacy.unwrap();
    let root = pool.geometry().root_offset;
    (
        pool,
        Closed {
            _dir: dir,
            path,
            root,
        },
    )
}

/// A fresh filled pool, closed.
fn closed() -> Closed {
    let (pool, c) = make();
    pool.close().unwrap();
    c
}

fn image(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn word(img: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap())
}

fn walk_file(path: &Path) -> ptm::Result<WalkReport> {
    let mut pool = Pool::<Maps>::open(path, &opts())?;
    walk_pool(&mut pool)
}

/// Writes `v` at `at` of the closed pool and returns the walk's `CorruptCollection`: structure,
/// offset and message (which must start with the schema path `path_in_schema`).
fn damaged(c: &Closed, at: u64, v: u64, path_in_schema: &str) -> (&'static str, u64, String) {
    poke(&c.path, at, v);
    let (structure, offset, what) = corrupt(walk_file(&c.path));
    assert!(what.starts_with(&format!("{path_in_schema}: ")), "{what}");
    (structure, offset, what)
}

/// The blocks of a map (directory first when the global depth is above 0) and of a queue
/// (directory, then the chunks from the front).
struct Blocks {
    words: Vec<u64>,
    names: Vec<u64>,
    long: Vec<u64>,
    ring: Vec<u64>,
}

fn blocks(pool: &Pool<Maps>) -> Blocks {
    pool.transaction(|tx, r| {
        Ok::<_, Error>(Blocks {
            words: r.words.block_offsets(tx)?,
            names: r.names.block_offsets(tx)?,
            long: r.long.block_offsets(tx)?,
            ring: r.ring.block_offsets(tx)?,
        })
    })
    .unwrap()
}

/// The full slots of the pair-layout segment at `seg` whose pairs are `stride` bytes with the
/// value `voff` bytes in: `(slot, key word, pool offset of the key, of the value)`.
fn full_slots(img: &[u8], seg: u64, stride: u64, voff: u64) -> Vec<(u64, u64, u64, u64)> {
    let cap = word(img, seg);
    let ko = (seg + 32 + cap).next_multiple_of(64);
    (0..cap)
        .filter(|&i| img[(seg + 32 + i) as usize] == 1)
        .map(|i| {
            let at = ko + i * stride;
            (i, word(img, at), at, at + voff)
        })
        .collect()
}

/// The global depth of the map whose handle is at `at`.
fn global_depth(img: &[u8], at: u64) -> u64 {
    word(img, at + 8) & 0xff
}

/// On these maps and queues the walk counts as the typed verify, reaches exactly the allocated
/// blocks, and the fixture has what the walk's branches need: a directory, tombstones, an
/// empty map, both segment layouts, a queue whose front left its first chunk and slot, a
/// wrapped ring.
#[test]
fn maps_and_queues_walk_as_the_typed_verify_counts() {
    let (mut pool, c) = make();
    let typed = verify(&pool).unwrap();
    let walked = walk_pool(&mut pool).unwrap();
    assert_eq!(
        (walked.structures, walked.entries, walked.blocks),
        (typed.structures, typed.entries, typed.blocks),
        "{walked:?}"
    );
    assert_eq!(walked.key_blocks, 300);
    assert!(walked.not_walked.is_empty(), "{:?}", walked.not_walked);
    assert!(walked.unreachable.is_empty(), "{:?}", walked.unreachable);
    assert_allocated_exactly(&mut pool, &walked.reachable, "maps and queues");
    let (layouts, b) = (
        pool.transaction(|tx, r| {
            Ok::<_, Error>((r.legacy.segment_layouts(tx)?, r.words.segment_layouts(tx)?))
        })
        .unwrap(),
        blocks(&pool),
    );
    assert_eq!(layouts, ((1, 0), (0, b.words.len() as u64 - 1)));
    pool.close().unwrap();

    let img = image(&c.path);
    assert!(global_depth(&img, c.root + WORDS) >= 2, "a directory");
    let tombstones = b.words[1..]
        .iter()
        .map(|&s| {
            let cap = word(&img, s);
            img[(s + 32) as usize..(s + 32 + cap) as usize]
                .iter()
                .filter(|&&x| x > 1)
                .count()
        })
        .sum::<usize>();
    assert!(tombstones > 0, "tombstones");
    assert_eq!(word(&img, c.root + EMPTY_MAP), 0, "a null root");
    let q = |at: u64| [8, 16, 24, 32, 40].map(|o| word(&img, c.root + at + o));
    let [dcap, dhead, _, head, len] = q(LONG);
    assert!(dhead > 0 && head > 0 && len == QUEUED - POPPED, "{:?}", q(LONG));
    assert!(
        dcap > b.long.len() as u64 - 1,
        "a directory slot past the chunks: {:?}",
        q(LONG)
    );
    let [_, _, ccap, head, len] = q(RING);
    assert!(ccap == 4 && head + len > ccap, "a wrapped ring: {:?}", q(RING));
    assert_eq!(b.ring.len(), 2);
}

/// A map's global depth above the 32 it may have is named; a depth of exactly 32 is not (its
/// directory, 2^32 pointers, is then longer than the block); an empty map's root must come with
/// a length and a capacity of 0.
#[test]
fn a_damaged_map_handle_is_named() {
    let c = closed();
    let img = image(&c.path);
    let dw = word(&img, c.root + WORDS + 8);
    let (s, _, what) = damaged(&c, c.root + WORDS + 8, (dw & !0xff) | 40, "Maps.words");
    assert_eq!(s, "PHashMap handle or directory");
    assert!(what.contains("global depth 40 above 32"), "{what}");

    std::fs::write(&c.path, &img).unwrap();
    let (s, at, what) = damaged(&c, c.root + WORDS + 8, (dw & !0xff) | 32, "Maps.words");
    assert_eq!(
        (s, at),
        (
            "PHashMap handle or directory",
            word(&img, c.root + WORDS) & ((1 << 48) - 1)
        )
    );
    assert!(
        what.contains(&format!("the structure needs {}", 8u64 << 32)),
        "{what}"
    );

    std::fs::write(&c.path, &img).unwrap();
    let (s, _, what) = damaged(&c, c.root + EMPTY_MAP + 16, 3, "Maps.empty");
    assert_eq!(s, "PHashMap handle or directory");
    assert!(what.contains("no segment, but len 3 and capacity 0"), "{what}");
}

/// Each segment header word the walk checks, damaged in the segment at directory index 0: a
/// capacity below the minimum or not a power of two, an unknown layout flag, a local depth above
/// the global one, and a local depth one less (the segment then claims its buddy's directory
/// range too).
#[test]
fn a_damaged_segment_header_is_named() {
    let (pool, c) = make();
    let seg = blocks(&pool).words[1];
    pool.close().unwrap();
    let img = image(&c.path);
    let (g, dw) = (global_depth(&img, c.root + WORDS), word(&img, seg + 8));
    let l = dw & 0xff;
    assert!(
        l >= 1 && dw & !0xff == 1 << 8,
        "a pair-layout segment of local depth {l}"
    );
    let cases: [(u64, u64, String); 5] = [
        (seg, 4, "capacity 4 is not a power of two of at least 8".into()),
        (seg, 12, "capacity 12 is not a power of two of at least 8".into()),
        (
            seg + 8,
            dw | 1 << 9,
            "unknown layout flags 0x300 in the depth word".into(),
        ),
        (
            seg + 8,
            (dw & !0xff) | (g + 1),
            format!("local depth {} above the global depth {g}", g + 1),
        ),
        (
            seg + 8,
            dw - 1,
            "the segment at directory index 0 does not own exactly its range".into(),
        ),
    ];
    for (at, v, expected) in cases {
        std::fs::write(&c.path, &img).unwrap();
        let (s, offset, what) = damaged(&c, at, v, "Maps.words");
        assert!(what.ends_with(&expected), "{what}");
        let expected_s = if expected.contains("directory index") {
            "PHashMap handle or directory"
        } else {
            "PHashMap segment"
        };
        assert_eq!((s, offset), (expected_s, seg), "{what}");
    }
}

/// A key written into a segment whose directory range its hash is not in: the first
/// segment's slot given a key of the last segment (an index above the range), the last
/// segment's given one of the first (below it).
#[test]
fn a_key_in_another_segments_range_is_named() {
    let (pool, c) = make();
    let b = blocks(&pool);
    pool.close().unwrap();
    let img = image(&c.path);
    let (first, last) = (b.words[1], *b.words.last().unwrap());
    let (f, l) = (full_slots(&img, first, 32, 8), full_slots(&img, last, 32, 8));
    for (seg, slot, key, why) in [
        (first, f[0], l[0].1, "a last-segment key in the first segment"),
        (last, l[0], f[0].1, "a first-segment key in the last segment"),
    ] {
        std::fs::write(&c.path, &img).unwrap();
        let (s, offset, what) = damaged(&c, slot.2, key, "Maps.words");
        assert_eq!((s, offset), ("PHashMap segment", seg), "{why}: {what}");
        assert!(
            what.contains(&format!("slot {} holds a key of directory index ", slot.0)),
            "{why}: {what}"
        );
        // "... directory index {i}, outside {lo}..{hi}": below the last segment's range, at or
        // above the first segment's (which starts at 0). The first segment may own more than
        // index 0 (its local depth below the global one), so the index itself varies with the
        // map's random hash seed.
        let tail = what.rsplit("directory index ").next().unwrap();
        let nums: Vec<u64> = tail
            .split(|ch: char| !ch.is_ascii_digit())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap())
            .collect();
        let [i, lo, hi] = nums[..] else {
            panic!("{why}: {what}");
        };
        if seg == last {
            assert!(i < lo, "{why}: {what}");
        } else {
            assert!(lo == 0 && i >= hi, "{why}: {what}");
        }
    }
}

/// An entry moved (control byte, key and value) to an empty slot that follows another empty
/// slot: linear probing from its home slot meets an empty slot before reaching it.
#[test]
fn an_entry_moved_past_an_empty_slot_is_named() {
    let (pool, c) = make();
    let seg = blocks(&pool).words[1];
    pool.close().unwrap();
    let img = image(&c.path);
    let cap = word(&img, seg);
    let ctrl = |i: u64| img[(seg + 32 + i) as usize];
    let e = (1..cap)
        .find(|&e| ctrl(e) == 0 && ctrl(e - 1) == 0)
        .expect("two empty slots in a row");
    let (i, _, key_at, _) = full_slots(&img, seg, 32, 8)[0];
    let ko = (seg + 32 + cap).next_multiple_of(64);
    let pair = img[key_at as usize..key_at as usize + 32].to_vec();
    patch(&c.path, seg + 32 + e, &[1]);
    patch(&c.path, seg + 32 + i, &[0]);
    patch(&c.path, ko + e * 32, &pair);
    let (structure, offset, what) = corrupt(walk_file(&c.path));
    assert_eq!((structure, offset), ("PHashMap segment", seg), "{what}");
    assert!(what.contains("unreachable from its home slot"), "{what}");
}

/// A string handle (buffer pointer cleared, length kept) as a map value, a map key, and a
/// queue element (the chunked queue's front and back, the ring's wrapped back) is named with
/// the handle's pool offset.
#[test]
fn a_damaged_string_in_a_map_or_queue_is_named_at_its_offset() {
    let (pool, c) = make();
    let b = blocks(&pool);
    let (front, back, ring_back) = pool
        .transaction(|tx, r| {
            let buf = |q: &PQueue<PString>, pos: u64| {
                Ok::<_, Error>(q.get_ref(tx, pos)?.unwrap().buffer_offset(tx).unwrap())
            };
            Ok::<_, Error>((
                buf(&r.long, 0)?,
                buf(&r.long, QUEUED - POPPED - 1)?,
                buf(&r.ring, 3)?,
            ))
        })
        .unwrap();
    pool.close().unwrap();
    let img = image(&c.path);
    let q = |at: u64| [24, 32, 40].map(|o| word(&img, c.root + at + o));
    // Where position `pos` of a queue is: the chunk `(head + pos) / ccap` from the front for
    // full chunks, slot `(head + pos) % ccap` (also the ring's slot).
    let element = |at: u64, chunks: &[u64], pos: u64| {
        let [ccap, head, _] = q(at);
        let (k, i) = ((head + pos) / ccap, (head + pos) % ccap);
        chunks[if at == RING { 0 } else { k as usize }] + i * 24
    };
    let v = full_slots(&img, b.words[2], 32, 8)[3].3;
    let k = full_slots(&img, *b.names.last().unwrap(), 32, 24)[5].2;
    let cases = [
        (v, "Maps.words<V>", None),
        (k, "Maps.names<K>", None),
        (element(LONG, &b.long[1..], 0), "Maps.long<T>", Some(front)),
        (
            element(LONG, &b.long[1..], QUEUED - POPPED - 1),
            "Maps.long<T>",
            Some(back),
        ),
        (element(RING, &b.ring[1..], 3), "Maps.ring<T>", Some(ring_back)),
    ];
    for (at, path, buffer) in cases {
        let handle = word(&img, at);
        if let Some(buffer) = buffer {
            assert_eq!(handle & ((1 << 48) - 1), buffer, "{path}: the element's handle");
        }
        let len = word(&img, at + 8);
        assert!(handle != 0 && len > 0, "{path}: a string with a buffer");
        std::fs::write(&c.path, &img).unwrap();
        let (s, offset, what) = damaged(&c, at, 0, path);
        assert_eq!((s, offset), ("PString", at), "{what}");
        assert!(what.ends_with(&format!("no buffer, but length {len}")), "{what}");
    }
}

/// A map schema whose value type is zero-sized (only a damaged record says so) is refused
/// before any segment is read.
#[test]
fn a_map_schema_with_a_zero_sized_value_is_refused() {
    let (mut pool, _c) = make();
    let text = ptm::pmem_core::schema::schema_of::<Maps>().encode();
    let names = "names:PHashMap/32<K=PString/24,V=u64/8>";
    assert!(text.contains(names), "{text}");
    let schema = TypeSchema::decode(&text.replace(names, "names:PHashMap/32<K=PString/24,V=u64/0>")).unwrap();
    match walk_schema(pool.region(), &schema) {
        Err(Error::CorruptCollection { structure, what, .. }) => {
            assert_eq!(structure, "PHashMap handle or directory", "{what}");
            assert_eq!(what, "Maps.names: a zero-sized key or value");
        }
        other => panic!("{other:?}"),
    }
    drop(walk_pool(&mut pool).unwrap());
}
