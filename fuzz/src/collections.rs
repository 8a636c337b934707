//! The `collections_image` fuzz target: a pool whose root holds populated persistent collections
//! (ptm-collections), its collection handles and heap blocks mutated as the input says, then a
//! script of collection operations run in transactions on it, and reopens.
//!
//! Shared through `#[path]` with the stable replay test `collections/tests/collections/fuzz_corpus.rs`, so it
//! depends on std, ptm and ptm-collections only.
//!
//! ## The template
//!
//! [`make_template`] builds one pool per process (tmpfs scratch, `force_pmem`) whose [`Root`]
//! holds a `PVec<u64>`, a `PHashMap<u64, u64>` with tombstones, a 3-level `PBTreeMap<u64, u64>`
//! (after merges), a multi-byte `PString`, a wrapped-around `PQueue<u64>`, a `PBox<u64>`, a
//! `PVec<PString>` that popped (stale handles past its length) and a `PHashMap<u64, PVec<u64>>`
//! with removed entries (stale handles in vacated slots), and a `PHashMap<u16, [u64; 32]>` of
//! several segments under a directory, with tombstones. Two sentinel cells and two guards (a
//! string and a vector allocated after those removals, so they may reuse the stale handles'
//! blocks) are never touched by the script nor (except by "anywhere" records) mutated.
//!
//! The mutation targets ([`Template::regions`]) are the 9 handles in the root (in field order
//! `v m t s q b vs mv big`), then every heap block the collections own (the blocks of `v m s b vs
//! mv` in that order, the queue's directory and chunk, the directory and segments of `big`, the
//! B-tree nodes, the nested strings' and vectors' buffers), then the segment of the hash set
//! `hs` and the leaf of the ordered set `bs`, then those two sets' handles (added last, so the
//! earlier regions keep their indices). The maps' hash seeds are fixed ([`SEEDS`]).
//!
//! ## Input
//!
//! Every byte string is valid; missing bytes read as 0.
//!
//! | bytes | meaning |
//! |-------|---------|
//! | 0     | number of mutation records, modulo 33 |
//! | 1..   | 5-byte records `(sel: u8, at: u24 LE, mask: u8)`: `sel < 0xf0` xors byte `at mod len` of region `sel mod regions` with `mask`; `sel >= 0xf0` xors byte `at mod len` of the root and heap (metadata included) |
//! | then  | operations, 2 bytes each `(op, arg)`, decoded by [`decode_script`] (at most [`MAX_OPS`]) |
//!
//! ## Checks
//!
//! Always: no panic, no hang; every operation returns `Ok` or an `Err` whose message renders;
//! opens fail only with a clean error; a read-only sweep of every collection after the script
//! and after a final reopen terminates; the schema-driven walk `ptm check` runs
//! (`ptm_collections::walk_pool`) returns a report or a clean error at the first open and the
//! final reopen, and on the unmutated template reaches every allocated block.
//!
//! When no record touched a word the collections cannot validate (an *unchecked* word, see
//! [`Template::unchecked`]: pointers, capacities, depths of map handles, map directories and
//! segment capacities, B-tree leaf flags, wide internal nodes' length words and child
//! pointers, and the pointer and capacity words
//! of nested handles, including stale ones) and no record went
//! "anywhere", the image is *strict*: every open must succeed, and after the script and a
//! reopen the sentinels and guards keep their values, the guards' buffers are still allocated,
//! and `check_heap` passes — nothing
//! committed outside the damaged collections is lost.

use std::collections::BTreeSet;
use std::mem::offset_of;
use std::ops::Range;
use std::path::Path;

use ptm::{Error, PCell, Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{PBTreeMap, PBTreeSet, PBox, PHashMap, PHashSet, PQueue, PString, PVec};

/// The root of the template pool.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
pub struct Root {
    /// Never touched by the script.
    pub sentinel: PCell<u64>,
    /// A plain vector.
    pub v: PVec<u64>,
    /// A hash map with tombstones.
    pub m: PHashMap<u64, u64>,
    /// A B+ tree of 3 levels.
    pub t: PBTreeMap<u64, u64>,
    /// A string with multi-byte characters.
    pub s: PString,
    /// A queue wrapped around its ring.
    pub q: PQueue<u64>,
    /// A box.
    pub b: PBox<u64>,
    /// Nested strings, with stale handles past the length.
    pub vs: PVec<PString>,
    /// Nested vectors, with stale handles in vacated slots.
    pub mv: PHashMap<u64, PVec<u64>>,
    /// A map of several segments (128-slot segments: big values) under a directory, with
    /// tombstones.
    pub big: PHashMap<u16, [u64; 32]>,
    /// Never touched by the script; allocated after `vs` popped, so it may reuse the buffer of
    /// one of the stale strings.
    pub guard_s: PString,
    /// Never touched by the script; allocated after `mv` removed entries, so it may reuse the
    /// buffer of one of the stale vectors.
    pub guard_v: PVec<u64>,
    /// Never touched by the script.
    pub sentinel2: PCell<u64>,
    /// A hash set of one segment.
    pub hs: PHashSet<u64>,
    /// An ordered set of one leaf.
    pub bs: PBTreeSet<u64>,
}

/// Layout name of the template pool.
pub const LAYOUT: &str = "fuzz-collections";
/// Size of the template pool.
pub const POOL_SIZE: u64 = 4 << 20;
/// Value of `sentinel` (`sentinel2` holds its complement).
pub const SENTINEL: u64 = 0x5e47_1e11_c0ff_ee01;
/// Most operations a script runs.
pub const MAX_OPS: usize = 96;
/// Most mutation records an input applies.
pub const MAX_RECORDS: usize = 32;
/// Number of handle regions (the first regions).
pub const HANDLES: usize = 9;
/// Blocks of `big`: its directory and segments (regions `HANDLES + 8 ..`; `make_seeds.py`
/// counts on it).
pub const BIG_BLOCKS: usize = 5;

/// Bytes of a `PBTreeMap<u64, u64>` leaf: `[len][leaf][15 keys][15 values][16 children]`.
const NODE_SIZE: usize = 16 + 15 * 8 + 15 * 8 + 16 * 8;
/// Offset of the children in a leaf.
const NODE_KIDS: usize = 16 + 15 * 8 + 15 * 8;
/// Bytes of a wide internal node of the same tree: `[len | tag][0][63 keys][64 children]`.
const WIDE_SIZE: usize = 16 + 63 * 8 + 64 * 8;
/// Offset of the children in a wide internal node.
const WIDE_KIDS: usize = 16 + 63 * 8;

/// Pool options of the target.
pub fn options() -> PoolOptions {
    PoolOptions::new()
        .layout(LAYOUT)
        .lanes(2)
        .lane_size(16 << 10)
        .force_pmem(true)
}

/// What `guard_s` holds (in the smallest block class, like the strings `vs` pops).
pub const GUARD_S: &str = "guard: committed text €€€€";

/// What `guard_v` holds (as long as the vector `mv` loses with key 7).
pub fn guard_v_contents() -> Vec<u64> {
    (1..=22).map(|i| i * 0x1111).collect()
}

/// The template image and where the collections live in it (pool offsets).
#[derive(Debug, Clone)]
pub struct Template {
    /// The pool file.
    pub image: Vec<u8>,
    /// Mutation targets: the handles, then the heap blocks the collections own.
    pub regions: Vec<Range<usize>>,
    /// Offsets of 8-byte words whose corruption the collections cannot detect.
    pub unchecked: BTreeSet<usize>,
    /// The root and the heap.
    pub area: Range<usize>,
}

/// Hash seeds of the template's maps (`m`, `mv`, `big`): fixed, so that every process builds
/// the same template (a fresh map draws a random seed); `big`'s gives it 4 segments
/// ([`BIG_BLOCKS`]).
pub const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0004];

fn populate(pool: &Pool<Root>) -> Result<(), Error> {
    pool.transaction(|tx, r| {
        r.m.set_hash_seed(tx, SEEDS[0])?;
        r.mv.set_hash_seed(tx, SEEDS[1])?;
        r.big.set_hash_seed(tx, SEEDS[2])?;
        r.hs.set_hash_seed(tx, SEEDS[0])?;
        for k in 0..12 {
            r.hs.insert(tx, k * 5)?;
            r.bs.insert(tx, k * 5)?;
        }
        r.hs.remove(tx, &10)?;
        r.bs.remove(tx, &10)?;
        r.sentinel.set(tx, SENTINEL)?;
        r.sentinel2.set(tx, !SENTINEL)?;
        r.v.extend(tx, (0..40).map(|i| i * 7 + 1))?;
        for k in 0..40 {
            r.m.insert(tx, k, k * k + 1)?;
        }
        r.s.set(tx, "hello, persistent world — ✓ ü")?;
        r.b.set(tx, 0xb0b)
    })?;
    // 600 keys in ascending order: 75 half-full leaves under two wide internal nodes (64
    // children each at most) and a root.
    for part in 0..4u64 {
        pool.transaction(|tx, r| {
            for k in part * 150..(part + 1) * 150 {
                r.t.insert(tx, k * 3, k)?;
            }
            Ok::<_, Error>(())
        })?;
    }
    pool.transaction(|tx, r| {
        for k in 5..12 {
            r.m.remove(tx, &k)?;
        }
        for k in 120..160 {
            r.t.remove(tx, &(k * 3))?;
        }
        for i in 1..=6 {
            r.q.push(tx, i)?;
        }
        for _ in 0..4 {
            r.q.pop(tx)?;
        }
        for i in 7..=11 {
            r.q.push(tx, i)?;
        }
        Ok::<_, Error>(())
    })?;
    pool.transaction(|tx, r| {
        for i in 0..8u64 {
            let s = r.vs.push_new(tx)?;
            s.push_str(tx, &"ab€".repeat(i as usize + 1))?;
        }
        for k in 0..12u64 {
            r.mv.get_or_insert_new(tx, k)?
                .extend(tx, (0..=k * 3).map(|x| x * 100 + k))?;
        }
        Ok::<_, Error>(())
    })?;
    pool.transaction(|tx, r| {
        r.vs.pop_free(tx)?;
        r.vs.pop_free(tx)?;
        r.mv.remove_free(tx, &3)?;
        r.mv.remove_free(tx, &7)?;
        Ok::<_, Error>(())
    })?;
    for part in 0..20u16 {
        pool.transaction(|tx, r| {
            for k in part * 20..(part + 1) * 20 {
                r.big.insert(tx, k, [u64::from(k); 32])?;
            }
            for k in (part * 20..(part + 1) * 20).filter(|k| k % 7 == 0) {
                r.big.remove(tx, &k)?;
            }
            Ok::<_, Error>(())
        })?;
    }
    pool.transaction(|tx, r| {
        r.guard_s.set(tx, GUARD_S)?;
        r.guard_v.extend(tx, guard_v_contents())
    })?;
    // Later allocations may reuse the blocks freed above.
    pool.transaction(|tx, r| {
        r.v.extend(tx, 100..130)?;
        r.s.push_str(tx, " and more text to grow it")?;
        r.vs.get_ref(tx, 0)?.expect("vs[0]").push_str(tx, "xyz")?;
        Ok::<_, Error>(())
    })
}

/// Pushes the 8-byte words `off + at` for each `at` into `set`.
fn words(set: &mut BTreeSet<usize>, off: usize, ats: impl IntoIterator<Item = usize>) {
    set.extend(ats.into_iter().map(|a| off + a));
}

/// Builds the template pool in `dir` (see the module docs).
pub fn make_template(dir: &Path) -> Template {
    let path = dir.join("collections-template.pool");
    let _ = std::fs::remove_file(&path);
    let mut pool = Pool::<Root>::create(&path, POOL_SIZE, &options()).expect("create the template");
    populate(&pool).expect("populate the template");
    let g = pool.geometry();
    let root = g.root_offset as usize;
    let live: std::collections::BTreeMap<u64, u64> = pool
        .allocated_blocks()
        .expect("allocated blocks")
        .into_iter()
        .collect();
    let handle = |field: usize, size: usize| root + field..root + field + size;
    let mut regions = vec![
        handle(offset_of!(Root, v), 24),
        handle(offset_of!(Root, m), 32),
        handle(offset_of!(Root, t), 16),
        handle(offset_of!(Root, s), 24),
        handle(offset_of!(Root, q), 48),
        handle(offset_of!(Root, b), 8),
        handle(offset_of!(Root, vs), 24),
        handle(offset_of!(Root, mv), 32),
        handle(offset_of!(Root, big), 32),
    ];
    let mut unchecked = BTreeSet::new();
    // Pointer and capacity words of the handles in the root.
    for (i, ats) in [
        (0, &[0, 16][..]),
        (1, &[0, 8]),
        (2, &[0]),
        (3, &[0, 16]),
        (4, &[0, 8, 24]),
        (5, &[0]),
        (6, &[0, 16]),
        (7, &[0, 8]),
        (8, &[0, 8]),
    ] {
        words(&mut unchecked, regions[i].start, ats.iter().copied());
    }
    let mut owned = Vec::new();
    pool.transaction(|tx, r| {
        let tops = [
            r.v.buffer_offset(tx),
            r.m.block_offsets(tx)?.first().copied(),
            r.s.buffer_offset(tx),
            r.b.offset(tx),
            r.vs.buffer_offset(tx),
            r.mv.block_offsets(tx)?.first().copied(),
        ];
        for off in tops {
            owned.push(off.expect("every collection owns a block"));
        }
        // Map segments start with their capacity word; `m` and `mv` have one segment each.
        assert!(r.m.block_offsets(tx)?.len() == 1 && r.mv.block_offsets(tx)?.len() == 1);
        words(&mut unchecked, owned[1] as usize, [0]);
        words(&mut unchecked, owned[5] as usize, [0]);
        // The queue's directory (its chunk pointers are unchecked words) and its one chunk.
        let q_blocks = r.q.block_offsets(tx)?;
        assert!(q_blocks.len() == 2, "a queue of one chunk");
        words(&mut unchecked, q_blocks[0] as usize, [0]);
        owned.extend(q_blocks);
        // `big`: a directory (every word a pointer), then its segments.
        let big = r.big.block_offsets(tx)?;
        assert!(
            big.len() == BIG_BLOCKS,
            "a directory and {} segments",
            big.len() - 1
        );
        let dir = big[0] as usize;
        words(&mut unchecked, dir, (0..live[&big[0]] as usize).step_by(8));
        for &seg in &big[1..] {
            words(&mut unchecked, seg as usize, [0]);
        }
        owned.extend(big);
        let nodes = r.t.node_offsets(tx)?;
        assert!(nodes.len() > 20, "a B-tree of many nodes");
        let levels = r.t.check_invariants(tx).expect("B-tree invariants");
        assert!(levels.len() == 3, "a 3-level B-tree");
        for n in &nodes {
            // The leaf flag and the children; in a wide node the length word too, whose tag
            // chooses its layout as the flag does.
            if live[n] >= WIDE_SIZE as u64 {
                words(&mut unchecked, *n as usize, [0, 8]);
                words(&mut unchecked, *n as usize, (WIDE_KIDS..WIDE_SIZE).step_by(8));
            } else {
                words(&mut unchecked, *n as usize, [8]);
                words(&mut unchecked, *n as usize, (NODE_KIDS..NODE_SIZE).step_by(8));
            }
        }
        owned.extend(nodes);
        // Nested strings: every slot of the buffer (stale ones past the length too).
        let vs_buf = r.vs.buffer_offset(tx).expect("vs buffer") as usize;
        assert!(r.vs.len(tx) < r.vs.capacity(tx), "stale handles in vs");
        for i in 0..r.vs.capacity(tx) as usize {
            words(&mut unchecked, vs_buf + i * 24, [0, 16]);
        }
        for i in 0..r.vs.len(tx) {
            let s = r.vs.get_ref(tx, i)?.expect("i < len");
            owned.push(s.buffer_offset(tx).expect("a non-empty string"));
        }
        // Nested vectors: the values of the segment's pairs (a 32-byte header, control bytes,
        // then, from a 64-byte boundary, 32-byte `(u64 key, PVec<u64> value)` pairs; design
        // §13.4).
        let cap = r.mv.capacity(tx) as usize;
        let table = owned[5] as usize;
        let po = (32 + cap).div_ceil(64) * 64;
        for i in 0..cap {
            words(&mut unchecked, table + po + i * 32 + 8, [0, 16]);
        }
        let mut keys: Vec<u64> = r.mv.keys(tx)?;
        keys.sort_unstable();
        assert!(keys.len() == 10, "10 nested vectors");
        for k in keys {
            let v = r.mv.get_ref(tx, &k)?.expect("present");
            owned.push(v.buffer_offset(tx).expect("a non-empty vector"));
        }
        assert!(r.q.len(tx) == 7, "queue length");
        // The sets (regions after all the above): the hash set's one segment (its capacity
        // word unchecked) and the B-tree set's one leaf (its leaf flag unchecked).
        let hs = r.hs.block_offsets(tx)?;
        let bs = r.bs.node_offsets(tx)?;
        assert!(hs.len() == 1 && bs.len() == 1, "one block per set");
        words(&mut unchecked, hs[0] as usize, [0]);
        words(&mut unchecked, bs[0] as usize, [8]);
        owned.extend(hs);
        owned.extend(bs);
        let mut all: Vec<u64> = owned.clone();
        all.extend(r.guard_s.buffer_offset(tx));
        all.extend(r.guard_v.buffer_offset(tx));
        all.sort_unstable();
        let want: Vec<u64> = live.keys().copied().collect();
        assert!(all == want, "the collections own exactly the live blocks");
        Ok::<_, Error>(())
    })
    .expect("walk the template");
    for off in owned {
        let size = live[&off] as usize;
        regions.push(off as usize..off as usize + size);
    }
    // The sets' handles last, so that the regions above keep their indices.
    for (field, size, ats) in [
        (offset_of!(Root, hs), 32, &[0, 8][..]),
        (offset_of!(Root, bs), 16, &[0][..]),
    ] {
        regions.push(handle(field, size));
        words(&mut unchecked, root + field, ats.iter().copied());
    }
    let area = root..(g.heap_offset + g.heap_size) as usize;
    pool.close().expect("close the template");
    let image = std::fs::read(&path).expect("read the template");
    std::fs::remove_file(&path).expect("remove the template");
    assert!(area.end <= image.len());
    Template {
        image,
        regions,
        unchecked,
        area,
    }
}

/// Applies the mutation records of `input` to a copy of the template. Returns the image, whether
/// it is strict (see the module docs), and the rest of the input (the script).
pub fn decode_image<'a>(t: &Template, input: &'a [u8]) -> (Vec<u8>, bool, &'a [u8]) {
    let mut img = t.image.clone();
    let n = usize::from(input.first().copied().unwrap_or(0)) % (MAX_RECORDS + 1);
    let rest = input.get(1..).unwrap_or(&[]);
    let recs = rest.len().min(n * 5);
    let mut strict = true;
    for rec in rest[..recs].chunks(5) {
        let b = |i: usize| rec.get(i).copied().unwrap_or(0);
        let (sel, at, mask) = (b(0), u32::from_le_bytes([b(1), b(2), b(3), 0]) as usize, b(4));
        let region = if sel >= 0xf0 {
            &t.area
        } else {
            &t.regions[usize::from(sel) % t.regions.len()]
        };
        let pos = region.start + at % region.len();
        if mask == 0 {
            continue;
        }
        img[pos] ^= mask;
        if sel >= 0xf0 || t.unchecked.contains(&(pos & !7)) {
            strict = false;
        }
    }
    (img, strict, &rest[recs..])
}

/// An operation of the script. `a` is the argument byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A collection operation (index into the table of [`run_op`]) with its argument.
    Coll(u8, u8),
    /// Commit the running transaction (and start another).
    Commit,
    /// Abort the running transaction.
    Abort,
    /// Close and reopen the pool (commits the running transaction first).
    Reopen,
}

/// Number of collection operations ([`run_op`]).
pub const COLL_OPS: u8 = 48;

/// Decodes the script: pairs `(op, arg)`; `op % 51` below [`COLL_OPS`] is a collection
/// operation, 48 commits, 49 aborts, 50 reopens. Operation 47 is the read-only sweep for an
/// argument below 128, else a set operation (argument bits 0..2: insert into or remove from
/// `hs` or `bs`; bits 2..7: the key). With an argument of 128 or more, operation 13 walks a
/// range of `t` from both ends and operation 46 is a deque operation on `q` (argument bits
/// 0..3: push_front, pop_back, insert, remove, rotate_left, truncate, retain, rotate_right).
pub fn decode_script(bytes: &[u8]) -> Vec<Op> {
    bytes
        .chunks(2)
        .take(MAX_OPS)
        .map(|c| {
            let (op, a) = (c[0] % 51, c.get(1).copied().unwrap_or(0));
            match op {
                48 => Op::Commit,
                49 => Op::Abort,
                50 => Op::Reopen,
                _ => Op::Coll(op, a),
            }
        })
        .collect()
}

/// Discards a result, making sure an error renders.
fn seen<T>(r: Result<T, Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error without a message: {e:?}");
            Err(e)
        }
    }
}

/// Runs collection operation `op` with argument `a`.
pub fn run_op(tx: &Transaction<'_>, r: &Root, op: u8, a: u8) -> Result<(), Error> {
    let k = u64::from(a);
    let x = k.wrapping_mul(0x0101_0101_0101_0101);
    match op {
        0 => seen(r.v.get(tx, k)),
        1 => {
            let n = r.v.iter(tx).count() as u64;
            assert!(n <= r.v.len(tx), "iter yielded {n} of {}", r.v.len(tx));
            seen(r.v.to_vec(tx))
        }
        2 => r.v.push(tx, x),
        3 => seen(r.v.pop(tx)),
        4 => seen(r.v.set(tx, k % 80, x)),
        5 => r.v.extend(tx, [x, x ^ 1, x ^ 2]),
        6 => r.v.clear(tx),
        7 => seen(r.m.get(tx, &(k % 64))),
        8 => {
            let n = r.m.iter(tx).count() as u64;
            if r.m.check_invariants(tx).is_ok() {
                assert!(n <= r.m.capacity(tx), "map iter yielded {n} entries");
            }
            seen(r.m.keys(tx))
        }
        9 => seen(r.m.insert(tx, k % 64, x)),
        10 => seen(r.m.remove(tx, &(k % 64))),
        11 => r.m.clear(tx),
        12 => seen(r.t.get(tx, &(k * 3))),
        13 if a < 128 => seen(r.t.to_vec(tx)),
        // A range of the B-tree walked from both ends (argument bits 0..3 pick the bounds and
        // the order of `next`/`next_back`): keys come out in order from each end, never twice.
        13 => {
            let lo = u64::from(a & 7) * 40;
            let mut it = r.t.range(tx, lo..lo + 200)?;
            let mut got = Vec::new();
            for step in 0..400u32 {
                let from_back = (step >> (a & 3)) & 1 == 1;
                match if from_back { it.next_back() } else { it.next() } {
                    Some((k, _)) => got.push(k),
                    None => break,
                }
            }
            if let Some(e) = it.error() {
                // The transaction is doomed; the error must render.
                assert!(!e.to_string().is_empty(), "an error without a message: {e:?}");
                return Ok(());
            }
            if r.t.check_invariants(tx).is_ok() {
                let back: Vec<u64> = r.t.range(tx, lo..lo + 200)?.rev().map(|(k, _)| k).collect();
                assert!(
                    back.windows(2).all(|w| w[0] > w[1]),
                    "B-tree range rev order: {back:?}"
                );
                got.sort_unstable();
                assert!(
                    got.iter().eq(back.iter().rev()),
                    "the two ends yield each key once: {got:?}"
                );
            }
            Ok(())
        }
        14 => {
            let lo = k * 3;
            let mut it = r.t.range(tx, lo..)?;
            // On a damaged tree the keys may be anything (out of order, out of the range).
            let _ = it.by_ref().take(64).count();
            if let Some(e) = it.error() {
                assert!(!e.to_string().is_empty());
            }
            Ok(())
        }
        15 => seen(r.t.insert(tx, k * 3 + u64::from(a & 1), x)),
        16 => seen(r.t.remove(tx, &(k * 3))),
        17 => {
            if let Err(e) = r.t.check_invariants(tx) {
                assert!(!e.is_empty());
            }
            seen(r.t.node_offsets(tx))
        }
        18 => r.t.clear(tx),
        19 => seen(r.s.as_string(tx)),
        20 => r.s.push_str(tx, "é✓x"),
        21 => r.s.set(tx, &"z".repeat(usize::from(a % 40))),
        22 => r.s.clear(tx),
        23 => seen(r.q.to_vec(tx)),
        24 => r.q.push(tx, x),
        25 => seen(r.q.pop(tx)),
        26 => seen(r.q.get(tx, k % 16)),
        27 => r.q.clear(tx),
        28 => seen(r.b.get(tx)),
        29 => r.b.set(tx, x),
        30 => seen(r.b.take(tx)),
        31 => match r.vs.get_ref(tx, k % 10)? {
            Some(s) => seen(s.as_string(tx)),
            None => Ok(()),
        },
        32 => r.vs.push_new(tx)?.push_str(tx, "new"),
        33 => seen(r.vs.pop_free(tx)),
        34 => r.vs.truncate(tx, k % 10),
        35 => match r.vs.get_ref(tx, k % 10)? {
            Some(s) => s.push_str(tx, "+"),
            None => Ok(()),
        },
        36 => r.vs.clear(tx),
        37 => match r.mv.get_ref(tx, &(k % 16))? {
            Some(v) => seen(v.to_vec(tx)),
            None => Ok(()),
        },
        38 => r.mv.get_or_insert_new(tx, k % 16)?.push(tx, x),
        39 => seen(r.mv.remove_free(tx, &(k % 16))),
        40 => {
            let mut n = 0u64;
            for (_, v) in r.mv.iter_refs(tx) {
                n += 1;
                seen(v.to_vec(tx))?;
            }
            if r.mv.check_invariants(tx).is_ok() {
                assert!(n <= r.mv.capacity(tx), "iter_refs yielded {n} entries");
            }
            Ok(())
        }
        41 => r.mv.clear(tx),
        42 => match r.mv.get_ref(tx, &(k % 16))? {
            Some(v) => seen(v.pop(tx)),
            None => Ok(()),
        },
        43 => {
            let lens = [
                r.v.len(tx),
                r.m.len(tx),
                r.t.len(tx),
                r.s.len(tx),
                r.q.len(tx),
                r.vs.len(tx),
                r.mv.len(tx),
            ];
            assert!(r.v.len(tx) <= r.v.capacity(tx), "{lens:?}");
            assert!(r.vs.len(tx) <= r.vs.capacity(tx), "{lens:?}");
            Ok(())
        }
        // Enough keys to split segments and double the directory.
        44 => (0..8u16).try_for_each(|i| seen(r.big.insert(tx, u16::from(a) * 8 + i, [x; 32]))),
        45 => (0..8u16).try_for_each(|i| seen(r.big.remove(tx, &(u16::from(a) * 8 + i)))),
        // The deque operations on `q` (argument bits 0..3 pick one, the rest the position).
        46 if a >= 128 => {
            let (pos, x) = (k >> 3 & 15, x);
            let len = r.q.len(tx);
            match a & 7 {
                0 => r.q.push_front(tx, x)?,
                1 => seen(r.q.pop_back(tx))?,
                2 => seen(r.q.insert(tx, pos, x))?,
                3 => seen(r.q.remove(tx, pos))?,
                4 => seen(r.q.rotate_left(tx, pos % 8))?,
                5 => r.q.truncate(tx, pos)?,
                6 => r.q.retain(tx, |v| v % 3 != 0)?,
                _ => seen(r.q.rotate_right(tx, pos % 8))?,
            }
            if r.q.check(tx).is_ok() {
                let fwd: Vec<u64> = r.q.range(tx, ..).collect();
                let mut back: Vec<u64> = r.q.iter(tx).rev().collect();
                back.reverse();
                assert_eq!(fwd, back, "deque iteration from both ends");
                assert!(
                    r.q.len(tx) <= len + 1,
                    "a deque operation grew the queue by more than one"
                );
            }
            Ok(())
        }
        46 => {
            let n = r.big.iter(tx).count() as u64;
            if r.big.check_invariants(tx).is_ok() {
                assert!(n <= r.big.capacity(tx), "big iter yielded {n} entries");
            }
            seen(r.big.get(tx, &u16::from(a)))
        }
        // The sets: argument bits 0..2 pick the operation, bits 2..7 the key.
        _ if a >= 128 => {
            let k = u64::from(a >> 2 & 31);
            match a & 3 {
                0 => seen(r.hs.insert(tx, k)),
                1 => seen(r.hs.remove(tx, &k)),
                2 => seen(r.bs.insert(tx, k)),
                _ => seen(r.bs.remove(tx, &k)),
            }?;
            let n = r.hs.iter(tx).count() as u64;
            if r.hs.check_invariants(tx).is_ok() {
                assert!(n == r.hs.len(tx), "hash set iter yielded {n} keys");
            }
            let _ = seen(r.hs.contains(tx, &k));
            let _ = seen(r.bs.contains(tx, &k));
            if r.bs.check_invariants(tx).is_ok() {
                let keys: Vec<u64> = r.bs.iter(tx)?.collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "B-tree set order: {keys:?}");
            }
            Ok(())
        }
        _ => {
            // Everything read-only, in one go.
            sweep(tx, r);
            Ok(())
        }
    }
}

/// Reads every collection (results ignored): must terminate without panicking.
pub fn sweep(tx: &Transaction<'_>, r: &Root) {
    let _ = seen(r.v.to_vec(tx));
    let _ = seen(r.m.keys(tx));
    let _ = r.m.iter(tx).count();
    let _ = seen(r.t.to_vec(tx));
    let _ = r.t.check_invariants(tx);
    if let Ok(it) = r.t.range(tx, ..) {
        let _ = it.take(1000).count();
    }
    let _ = seen(r.s.as_string(tx));
    let _ = seen(r.q.to_vec(tx));
    let _ = r.q.iter(tx).rev().take(1000).count();
    let _ = seen(r.q.check(tx));
    if let Ok(it) = r.t.range(tx, ..) {
        let _ = it.rev().take(1000).count();
    }
    let _ = seen(r.b.get(tx));
    for i in 0..r.vs.len(tx).min(16) {
        if let Ok(Some(s)) = r.vs.get_ref(tx, i) {
            let _ = seen(s.as_string(tx));
        }
    }
    for (_, v) in r.mv.iter_refs(tx).take(64) {
        let _ = seen(v.to_vec(tx));
    }
    let _ = r.big.iter(tx).count();
    let _ = seen(r.big.block_offsets(tx));
    let _ = r.hs.iter(tx).take(1000).count();
    let _ = r.hs.check_invariants(tx);
    if let Ok(it) = r.bs.range(tx, ..) {
        let _ = it.take(1000).count();
    }
    let _ = r.bs.check_invariants(tx);
}

#[derive(Debug)]
enum TxError {
    Ptm(Error),
    Abort,
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Ptm(e)
    }
}

/// What must hold after the script on a strict image: the sentinels and the guards keep their
/// values, the guards' buffers are still allocated, and the heap checks.
fn check_untouched(pool: &mut Pool<Root>, when: &str) {
    let (s1, s2, gs, gv, bufs) = pool
        .transaction(|tx, r| {
            Ok::<_, Error>((
                r.sentinel.get(tx),
                r.sentinel2.get(tx),
                r.guard_s.as_string(tx),
                r.guard_v.to_vec(tx),
                [r.guard_s.buffer_offset(tx), r.guard_v.buffer_offset(tx)],
            ))
        })
        .unwrap_or_else(|e| panic!("{when}: read the root: {e:?}"));
    assert_eq!((s1, s2), (SENTINEL, !SENTINEL), "{when}: the sentinels changed");
    assert_eq!(gs.ok().as_deref(), Some(GUARD_S), "{when}: guard_s changed");
    assert_eq!(gv.ok(), Some(guard_v_contents()), "{when}: guard_v changed");
    let live = pool
        .allocated_blocks()
        .unwrap_or_else(|e| panic!("{when}: allocated_blocks: {e:?}"));
    for b in bufs {
        let b = b.unwrap_or_else(|| panic!("{when}: a guard lost its buffer"));
        assert!(
            live.iter().any(|&(off, _)| off == b),
            "{when}: the buffer of a guard ({b:#x}) was freed"
        );
    }
    if let Err(e) = pool.check_heap() {
        panic!("{when}: check_heap: {e:?}");
    }
}

/// Opens the image at `path`: strict images must open, others may fail cleanly.
fn open(path: &Path, strict: bool, when: &str) -> Option<Pool<Root>> {
    match Pool::<Root>::open(path, &options()) {
        Ok(p) => Some(p),
        Err(e) => {
            assert!(!strict, "{when}: a strict image does not open: {e:?}");
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// `collections_image`: see the module docs. The inputs named `stale-*` in
/// `fuzz/regressions/collections_image/` are a fixed bug: a damaged length of a `PVec` of handles,
/// or a damaged control byte of a `PHashMap` with handle values, exposed handles discarded earlier
/// (never zeroed) whose blocks other collections had reused, and `pop_free`/`truncate`/
/// `remove_free` then freed those live blocks. Discarded and spare handle slots are now zeroed.
pub fn check_collections_image(dir: &Path, t: &Template, input: &[u8]) {
    let (img, strict, script) = decode_image(t, input);
    let path = dir.join("collections.pool");
    std::fs::write(&path, &img).expect("write the image");
    let ops = decode_script(script);
    // No mutation record at all: the template as made.
    let pristine = input.first().is_none_or(|&n| n % 33 == 0);
    run_script(&path, strict, pristine, &ops);
    std::fs::remove_file(&path).expect("remove the image");
}

/// The schema-driven walk `ptm check` runs (`walk_pool`) over the image as it is: a report or
/// a clean error, never a panic; on the pristine template it reaches exactly the allocated
/// blocks and walks every collection.
fn walk(pool: &mut Pool<Root>, pristine: bool) {
    match ptm_collections::walk_pool(pool) {
        Ok(report) => {
            if pristine {
                assert!(
                    report.unreachable.is_empty(),
                    "unreachable {:x?}",
                    report.unreachable
                );
                assert!(report.not_walked.is_empty(), "not walked {:?}", report.not_walked);
                assert!(report.structures > 0);
            }
        }
        Err(e) => {
            assert!(!pristine, "the pristine template does not walk: {e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

fn run_script(path: &Path, strict: bool, pristine: bool, ops: &[Op]) {
    let Some(mut pool) = open(path, strict, "first open") else {
        return;
    };
    walk(&mut pool, pristine);
    let mut i = 0;
    while i <= ops.len() {
        // One transaction: the collection operations up to the next commit, abort or reopen.
        let end = ops[i..]
            .iter()
            .position(|o| !matches!(o, Op::Coll(..)))
            .map_or(ops.len(), |p| i + p);
        let body = &ops[i..end];
        let commit = !matches!(ops.get(end), Some(Op::Abort));
        if !body.is_empty() {
            let res: Result<(), TxError> = pool.transaction(|tx, r| {
                for op in body {
                    if let Op::Coll(o, a) = op {
                        run_op(tx, r, *o, *a)?;
                    }
                }
                if commit {
                    Ok(())
                } else {
                    Err(TxError::Abort)
                }
            });
            match res {
                Ok(()) | Err(TxError::Abort) => {}
                Err(TxError::Ptm(e)) => assert!(!e.to_string().is_empty()),
            }
        }
        if matches!(ops.get(end), Some(Op::Reopen)) {
            if let Err(e) = pool.close() {
                assert!(!strict, "close: {e:?}");
            }
            pool = match open(path, strict, "reopen") {
                Some(p) => p,
                None => return,
            };
        }
        i = end + 1;
    }
    let _ = pool.transaction(|tx, r| {
        sweep(tx, r);
        Ok::<_, Error>(())
    });
    if strict {
        check_untouched(&mut pool, "after the script");
    }
    if let Err(e) = pool.close() {
        assert!(!strict, "close: {e:?}");
    }
    let Some(mut pool) = open(path, strict, "final reopen") else {
        return;
    };
    walk(&mut pool, false);
    let _ = pool.transaction(|tx, r| {
        sweep(tx, r);
        Ok::<_, Error>(())
    });
    if strict {
        check_untouched(&mut pool, "after a reopen");
    } else if let Err(e) = pool.check_heap() {
        assert!(!e.to_string().is_empty());
    }
    let _ = pool.close();
}
