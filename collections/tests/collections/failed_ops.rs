//! Operations that fail, then a caller that goes on and commits (the crate promises such a
//! caller leaks nothing and keeps its data whole). Each operation is run after a growing number
//! of one-record log fillers, in a pool whose heap has no free chunk left (so the undo log
//! cannot grow past its 8 KiB lane: each transaction first tries to allocate, so it may not use
//! the reserve kept for the logs of removal-only transactions), until the operation itself runs out of log space
//! (`OutOfSpace`) at every record of its snapshot batch in turn; every failure is committed.
//! After each: every block the collections reach is still allocated (no free of a block still
//! linked), nothing else was freed or leaked, and the contents are as before. A failure in the
//! middle of several frees may instead doom the transaction (`Error::Aborted`, nothing
//! committed).

use crate::common;

use std::cell::Cell;
use std::collections::BTreeSet;

use common::{add_block, drains, opts, shm_dir};
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PBTreeMap, PBox, PHashMap, PQueue, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Log filler: `set(k)` costs one undo record (40 bytes in a format 5 lane: an 8 KiB lane
    /// holds about 200).
    fill: PVec<u64>,
    v: PVec<u64>,
    vs: PVec<PString>,
    s: PString,
    q: PQueue<u64>,
    qs: PQueue<PString>,
    t: PBTreeMap<u64, u64>,
    ts: PBTreeMap<PString, PVec<u64>>,
    b: PBox<u64>,
    bs: PBox<PVec<PString>>,
    m: PHashMap<PString, PVec<u64>>,
}

const FILL: u64 = 300;

fn strings(tx: &Transaction<'_>, s: &PString) -> Result<String, Error> {
    s.as_string(tx)
}

/// Every block the collections reach (each once).
fn reached(tx: &Transaction<'_>, r: &Root) -> Result<BTreeSet<u64>, Error> {
    let mut out = BTreeSet::new();
    add_block(&mut out, r.fill.buffer_offset(tx));
    add_block(&mut out, r.v.buffer_offset(tx));
    add_block(&mut out, r.vs.buffer_offset(tx));
    for i in 0..r.vs.len(tx) {
        add_block(&mut out, r.vs.get_ref(tx, i)?.unwrap().buffer_offset(tx));
    }
    add_block(&mut out, r.s.buffer_offset(tx));
    for b in r.q.block_offsets(tx)? {
        add_block(&mut out, Some(b));
    }
    for b in r.qs.block_offsets(tx)? {
        add_block(&mut out, Some(b));
    }
    for i in 0..r.qs.len(tx) {
        add_block(&mut out, r.qs.get_ref(tx, i)?.unwrap().buffer_offset(tx));
    }
    for b in r.t.node_offsets(tx)? {
        add_block(&mut out, Some(b));
    }
    for b in r.ts.node_offsets(tx)? {
        add_block(&mut out, Some(b));
    }
    for (k, v) in r.ts.iter_refs(tx)? {
        add_block(&mut out, k.buffer_offset(tx));
        add_block(&mut out, v.buffer_offset(tx));
    }
    for k in r.ts.separators(tx)? {
        add_block(&mut out, k.buffer_offset(tx));
    }
    add_block(&mut out, r.b.offset(tx));
    add_block(&mut out, r.bs.offset(tx));
    if let Some(v) = r.bs.get_ref(tx)? {
        add_block(&mut out, v.buffer_offset(tx));
        for i in 0..v.len(tx) {
            add_block(&mut out, v.get_ref(tx, i)?.unwrap().buffer_offset(tx));
        }
    }
    for b in r.m.block_offsets(tx)? {
        add_block(&mut out, Some(b));
    }
    for (k, v) in r.m.iter_refs(tx) {
        add_block(&mut out, k.buffer_offset(tx));
        add_block(&mut out, v.buffer_offset(tx));
    }
    Ok(out)
}

/// The contents of every collection but the filler, checked for consistency.
fn contents(tx: &Transaction<'_>, r: &Root) -> Result<String, Error> {
    r.t.check_invariants(tx).unwrap();
    r.ts.check_invariants(tx).unwrap();
    r.m.check_invariants(tx).unwrap();
    let vs = (0..r.vs.len(tx))
        .map(|i| strings(tx, &r.vs.get_ref(tx, i)?.unwrap()))
        .collect::<Result<Vec<_>, _>>()?;
    let qs = (0..r.qs.len(tx))
        .map(|i| strings(tx, &r.qs.get_ref(tx, i)?.unwrap()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ts = Vec::new();
    for (k, v) in r.ts.iter_refs(tx)? {
        ts.push((k.as_string(tx)?, v.to_vec(tx)?));
    }
    let bs = match r.bs.get_ref(tx)? {
        Some(v) => Some(
            (0..v.len(tx))
                .map(|i| strings(tx, &v.get_ref(tx, i)?.unwrap()))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let mut m = Vec::new();
    for (k, v) in r.m.iter_refs(tx) {
        m.push((k.as_string(tx)?, v.to_vec(tx)?));
    }
    m.sort();
    Ok(format!(
        "v {:?}\nvs {vs:?}\ns {:?}\nq {:?}\nqs {qs:?}\nt {:?}\nts {ts:?}\nb {:?}\nbs {bs:?}\nm {m:?}",
        r.v.to_vec(tx)?,
        r.s.as_string(tx)?,
        r.q.to_vec(tx)?,
        r.t.to_vec(tx)?,
        r.b.get(tx)?,
    ))
}

fn live(pool: &mut Pool<Root>) -> BTreeSet<u64> {
    pool.allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

/// A pool (8 KiB lanes) holding what `setup` builds, with a free block of every slab class
/// (where the operations' fresh blocks go) and then no free chunk: the undo log cannot grow.
fn pool(
    dir: &tempfile::TempDir,
    setup: impl FnOnce(&Transaction<'_>, &Root) -> Result<(), Error>,
) -> Pool<Root> {
    let opts = opts().lane_size(8192);
    let pool = Pool::<Root>::create(dir.path().join("f.pool"), 8 << 20, &opts).unwrap();
    pool.transaction(|tx, r| r.fill.extend(tx, 0..FILL)).unwrap();
    pool.transaction(setup).unwrap();
    pool.transaction(|tx, _| {
        for size in [64u64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096] {
            tx.alloc_bytes(size)?;
        }
        for size in [6144u64, 8192, 12288, 16384, 24576, 32768, 49152, 65536] {
            tx.alloc_bytes(size)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, _| {
        while tx.alloc_bytes(256 << 10).is_ok() {}
        Ok::<_, Error>(())
    })
    .unwrap();
    pool
}

#[derive(Debug, Default)]
struct Counts {
    /// Failures committed by the caller (the state must be whole).
    committed: u32,
    /// Failures that doomed the transaction (nothing committed).
    doomed: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    None,
    Succeeded,
    Failed,
    FillerRanOut,
}

/// Runs `op` after `j` filler records for `j = 0, 1, ...` until the fillers alone run out of
/// log space; rolls back every success, commits every failure, and checks the state after each.
fn sweep(
    pool: &mut Pool<Root>,
    what: &str,
    op: impl Fn(&Transaction<'_>, &Root) -> Result<(), Error>,
) -> Counts {
    let (reached0, contents0) = pool
        .transaction(|tx, r| Ok::<_, Error>((reached(tx, r)?, contents(tx, r)?)))
        .unwrap();
    let live0 = live(pool);
    assert!(reached0.is_subset(&live0), "{what}: setup reaches a free block");
    let others: BTreeSet<u64> = live0.difference(&reached0).copied().collect();
    let mut counts = Counts::default();
    for j in 0..FILL {
        let outcome = Cell::new(Outcome::None);
        let err = Cell::new(None);
        let r = pool.transaction(|tx, r| {
            // A transaction that has not allocated may take log extents from the heap's
            // metadata reserve (removals never run out of space): an allocation attempt, which
            // fails on this full heap, makes this one an ordinary transaction whose log cannot
            // grow past its lane.
            assert!(matches!(tx.alloc_bytes(1 << 30), Err(Error::OutOfSpace { .. })));
            for k in 0..j {
                if r.fill.set(tx, k, j).is_err() {
                    outcome.set(Outcome::FillerRanOut);
                    return Err(Error::Aborted);
                }
            }
            match op(tx, r) {
                Ok(()) => {
                    outcome.set(Outcome::Succeeded);
                    Err(Error::Aborted)
                }
                Err(e) => {
                    outcome.set(Outcome::Failed);
                    err.set(Some(e.to_string()));
                    Ok(())
                }
            }
        });
        match outcome.get() {
            Outcome::FillerRanOut => break,
            Outcome::Succeeded => {
                assert!(matches!(r, Err(Error::Aborted)), "{what} j={j}: {r:?}");
                continue;
            }
            Outcome::None => panic!("{what} j={j}: {r:?}"),
            Outcome::Failed => match r {
                Ok(()) => counts.committed += 1,
                Err(Error::Aborted) => counts.doomed += 1,
                Err(e) => panic!("{what} j={j}: {e}"),
            },
        }
        let e = err.take().unwrap_or_default();
        let (reached1, contents1) = pool
            .transaction(|tx, r| Ok::<_, Error>((reached(tx, r)?, contents(tx, r)?)))
            .unwrap();
        let live1 = live(pool);
        let dangling: Vec<_> = reached1.difference(&live1).collect();
        assert!(
            dangling.is_empty(),
            "{what} j={j} ({e}, then {r:?}): reaches freed blocks {dangling:x?}"
        );
        let others1: BTreeSet<u64> = live1.difference(&reached1).copied().collect();
        let leaked: Vec<_> = others1.difference(&others).collect();
        let lost: Vec<_> = others.difference(&others1).collect();
        assert!(
            leaked.is_empty() && lost.is_empty(),
            "{what} j={j} ({e}): blocks leaked {leaked:x?}, blocks freed {lost:x?}"
        );
        assert_eq!(contents1, contents0, "{what} j={j} ({e}): contents changed");
    }
    assert!(
        counts.committed + counts.doomed > 0,
        "{what}: the operation never ran out of log space: the test does not test"
    );
    counts
}

/// A string of `n` bytes (distinct lengths land in distinct slab classes, so their frees log
/// distinct allocator records).
fn text(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Lengths in eight distinct slab classes.
const SIZES: [usize; 8] = [10, 100, 150, 200, 300, 500, 700, 1000];

/// `PVec::reserve_tail` freed the old buffer before its snapshot: a growth whose batch failed
/// left the vector on a freed buffer (and leaked the fresh one).
#[test]
fn vec_growth() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        r.v.reserve(tx, 32)?;
        r.v.extend(tx, 0..32)?;
        for i in 0..16 {
            r.vs.push_new(tx)?.set(tx, &text(SIZES[i % 8], 'a'))?;
        }
        Ok(())
    });
    pool.transaction(|tx, r| {
        assert_eq!((r.v.len(tx), r.v.capacity(tx)), (32, 32));
        assert_eq!((r.vs.len(tx), r.vs.capacity(tx)), (16, 16));
        Ok::<_, Error>(())
    })
    .unwrap();
    sweep(&mut pool, "PVec::push growth", |tx, r| r.v.push(tx, 99));
    sweep(&mut pool, "PVec::push_new growth", |tx, r| {
        r.vs.push_new(tx).map(drop)
    });
    sweep(&mut pool, "PVec::reserve", |tx, r| r.v.reserve(tx, 1000));
}

/// `pop_free`, `truncate` and `clear` freed what the elements own before their snapshot.
#[test]
fn vec_removals() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        r.v.extend(tx, 0..10)?;
        for (i, &n) in SIZES.iter().enumerate() {
            r.vs.push_new(tx)?.set(tx, &text(n, char::from(b'a' + i as u8)))?;
        }
        Ok(())
    });
    sweep(&mut pool, "PVec::pop_free", |tx, r| r.vs.pop_free(tx).map(drop));
    let c = sweep(&mut pool, "PVec::truncate", |tx, r| r.vs.truncate(tx, 1));
    assert!(c.doomed > 0, "truncate never failed between two frees: {c:?}");
    let c = sweep(&mut pool, "PVec::clear", |tx, r| r.vs.clear(tx));
    assert!(c.doomed > 0, "clear never failed between two frees: {c:?}");
    sweep(&mut pool, "PVec<u64>::clear", |tx, r| r.v.clear(tx));
}

/// `PString` is a `PVec<u8>`: its growth and its clear.
#[test]
fn string_growth_and_clear() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        r.s.set(tx, &text(60, 's'))?;
        Ok(())
    });
    sweep(&mut pool, "PString::push_str growth", |tx, r| {
        r.s.push_str(tx, &text(100, 't'))
    });
    sweep(&mut pool, "PString::clear", |tx, r| r.s.clear(tx));
}

/// The first push (a fresh directory and chunk), a ring doubling (the old chunk was freed
/// before the batch), and `clear`.
#[test]
fn queue_first_push_ring_doubling_and_clear() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        for &n in &SIZES {
            r.qs.push_new(tx)?.set(tx, &text(n, 'q'))?;
        }
        Ok(())
    });
    sweep(&mut pool, "PQueue first push", |tx, r| r.q.push(tx, 1));
    sweep(&mut pool, "PQueue ring doubling", |tx, r| {
        r.qs.push_new(tx).map(drop)
    });
    sweep(&mut pool, "PQueue::pop_free", |tx, r| r.qs.pop_free(tx).map(drop));
    let c = sweep(&mut pool, "PQueue::clear", |tx, r| r.qs.clear(tx));
    assert!(c.doomed > 0, "clear never failed between two frees: {c:?}");
}

/// A new chunk with a directory doubling (the old directory was freed before the batch), and a
/// pop that frees the front chunk.
#[test]
fn queue_chunks() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        for i in 0..8192 {
            r.q.push(tx, i)?;
        }
        Ok(())
    });
    sweep(&mut pool, "PQueue new chunk and directory", |tx, r| {
        r.q.push(tx, 1)
    });
    // The fill left no room for the back chunk the next push makes (a 64 KiB block, whose
    // class has no free block left: its slabs span 4 chunks): one filler run goes first.
    let filler = pool
        .allocated_blocks()
        .unwrap()
        .into_iter()
        .find(|&(_, len)| len == 256 << 10)
        .unwrap()
        .0;
    pool.transaction(|tx, _| tx.free_bytes(filler)).unwrap();
    pool.transaction(|tx, r| {
        r.q.push(tx, 8192)?;
        for _ in 0..8191 {
            r.q.pop(tx)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    sweep(&mut pool, "PQueue pop freeing the front chunk", |tx, r| {
        r.q.pop(tx).map(drop)
    });
}

/// Sixteen keys: two leaves of 8 under a root; the caller removes two more to leave both at
/// the minimum, so the next removal merges them and collapses the root.
fn keys16() -> Vec<String> {
    (0..16).map(|i| format!("key-{i:02}")).collect()
}

/// `remove_entry` freed the key, the separator, the value and the merged nodes before its
/// snapshot; `clear` freed the whole tree before its snapshot.
#[test]
fn btree_merge_and_clear() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        for i in 0..16 {
            r.t.insert(tx, i, i)?;
        }
        r.t.remove(tx, &0)?;
        r.t.remove(tx, &15)?;
        for (i, k) in keys16().iter().enumerate() {
            r.ts.get_or_insert_new(tx, k.as_str())?
                .extend(tx, 0..(SIZES[i % 8] as u64 / 4))?;
        }
        let k = keys16();
        r.ts.remove_free(tx, &k[0])?;
        r.ts.remove_free(tx, &k[15])?;
        Ok(())
    });
    pool.transaction(|tx, r| {
        assert_eq!(r.t.node_offsets(tx)?.len(), 3);
        assert_eq!(r.ts.node_offsets(tx)?.len(), 3);
        Ok::<_, Error>(())
    })
    .unwrap();
    sweep(&mut pool, "PBTreeMap::remove merging", |tx, r| {
        r.t.remove(tx, &1).map(drop)
    });
    let c = sweep(&mut pool, "PBTreeMap::remove_free merging", |tx, r| {
        r.ts.remove_free(tx, "key-01").map(drop)
    });
    assert!(c.doomed > 0, "remove_free never failed between two frees: {c:?}");
    sweep(&mut pool, "PBTreeMap::remove_free", |tx, r| {
        r.ts.remove_free(tx, "key-09").map(drop)
    });
    let c = sweep(&mut pool, "PBTreeMap::clear", |tx, r| r.ts.clear(tx));
    assert!(c.doomed > 0, "clear never failed between two frees: {c:?}");
    sweep(&mut pool, "PBTreeMap<u64, u64>::clear", |tx, r| r.t.clear(tx));
}

/// The blocks an operation makes before its snapshot batch (a split's fresh nodes, a string
/// key's buffer, the separator copy a leaf split or a borrow makes) are freed again when the
/// batch fails: an insert that splits the root leaf (two fresh nodes, the key, a separator
/// copy) and a removal that borrows from a sibling leaf (a separator copy).
#[test]
fn btree_split_and_borrow_free_their_fresh_blocks() {
    let dir = shm_dir();
    let k = keys16();
    let mut pool = pool(&dir, |tx, r| {
        for i in 0..15 {
            r.t.insert(tx, i, i)?;
            r.ts.get_or_insert_new(tx, k[i as usize].as_str())?.push(tx, i)?;
        }
        Ok(())
    });
    pool.transaction(|tx, r| {
        assert_eq!(r.t.check_invariants(tx).unwrap(), [vec![15]]);
        assert_eq!(r.ts.check_invariants(tx).unwrap(), [vec![15]]);
        Ok::<_, Error>(())
    })
    .unwrap();
    sweep(&mut pool, "PBTreeMap::insert splitting the root leaf", |tx, r| {
        r.t.insert(tx, 15, 15).map(drop)
    });
    sweep(
        &mut pool,
        "PBTreeMap<PString, _>::get_or_insert_new splitting the root leaf",
        |tx, r| r.ts.get_or_insert_new(tx, "key-15").map(drop),
    );
    // Two leaves of 8, the left one down to 7: one more removal there borrows from the right.
    pool.transaction(|tx, r| {
        r.ts.get_or_insert_new(tx, "key-15")?.push(tx, 15)?;
        r.ts.remove_free(tx, "key-00")?;
        assert_eq!(r.ts.check_invariants(tx).unwrap(), [vec![1], vec![7, 8]]);
        Ok::<_, Error>(())
    })
    .unwrap();
    sweep(&mut pool, "PBTreeMap::remove_free borrowing", |tx, r| {
        r.ts.remove_free(tx, "key-01").map(drop)
    });
}

/// `PBox::free` freed before logging its pointer; `set` and `get_or_init_new` on an empty box
/// leaked the fresh block when logging the pointer failed.
#[test]
fn box_free_and_init() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        r.b.set(tx, 5)?;
        let v = r.bs.get_or_init_new(tx)?;
        for &n in &SIZES {
            v.push_new(tx)?.set(tx, &text(n, 'b'))?;
        }
        Ok(())
    });
    sweep(&mut pool, "PBox::free", |tx, r| r.b.free(tx));
    let c = sweep(&mut pool, "PBox::free nested", |tx, r| r.bs.free(tx));
    assert!(c.doomed > 0, "free never failed between two frees: {c:?}");
    pool.transaction(|tx, r| {
        r.b.free(tx)?;
        r.bs.free(tx)
    })
    .unwrap();
    sweep(&mut pool, "PBox::set on an empty box", |tx, r| r.b.set(tx, 7));
    sweep(&mut pool, "PBox::get_or_init_new", |tx, r| {
        r.bs.get_or_init_new(tx).map(drop)
    });
}

/// `PHashMap` removals free the key, then the value (`free_owned`): a value free that fails
/// after the key's was recorded dooms the transaction.
#[test]
fn map_removal_between_key_and_value() {
    let dir = shm_dir();
    let mut pool = pool(&dir, |tx, r| {
        for (i, &n) in SIZES.iter().enumerate() {
            r.m.get_or_insert_new(tx, format!("m{i}"))?
                .extend(tx, 0..n as u64)?;
        }
        Ok(())
    });
    let c = sweep(&mut pool, "PHashMap::remove_free", |tx, r| {
        r.m.remove_free(tx, "m5").map(drop)
    });
    assert!(c.doomed > 0, "remove_free never failed between two frees: {c:?}");
}

/// The fixes keep every operation at 2 drains.
#[test]
fn still_two_drains() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("d.pool"), 8 << 20, &opts()).unwrap();
    let two = |what: &str, f: &dyn Fn(&Transaction<'_>, &Root) -> Result<(), Error>| {
        let (r, d) = drains(|| pool.transaction(|tx, r| f(tx, r)));
        r.unwrap();
        assert_eq!(d, 2, "{what}");
    };
    two("vec growth", &|tx, r| r.v.extend(tx, 0..5));
    two("vec of strings", &|tx, r| {
        r.vs.push_new(tx).map(drop)?;
        Ok(())
    });
    two("string", &|tx, r| r.vs.get_ref(tx, 0)?.unwrap().set(tx, "abc"));
    two("vec pop_free", &|tx, r| r.vs.pop_free(tx).map(drop));
    two("vec clear", &|tx, r| r.v.clear(tx));
    for i in 0..5 {
        two("queue push", &|tx, r| r.q.push(tx, i));
    }
    two("queue pop", &|tx, r| r.q.pop(tx).map(drop));
    two("queue clear", &|tx, r| r.q.clear(tx));
    two("box set", &|tx, r| r.b.set(tx, 1));
    two("box free", &|tx, r| r.b.free(tx));
    two("box init", &|tx, r| r.bs.get_or_init_new(tx).map(drop));
    two("box nested free", &|tx, r| r.bs.free(tx));
    for i in 0..20 {
        two("btree insert", &|tx, r| r.t.insert(tx, i, i).map(drop));
    }
    for i in 0..20 {
        two("btree remove", &|tx, r| r.t.remove(tx, &i).map(drop));
    }
}
