//! The release walks (`unsafe fn`s, mutated by hand in the mutD pass): sets stored in a vector
//! and a box (their `free_owned`, which only a nested set runs), each freed with what holds it,
//! every block released; and `PValue::free_owned` called directly on a damaged handle of each
//! collection, which must doom the transaction (the crate docs: "Every `PValue::free_owned`
//! that fails dooms the transaction") even when it failed before freeing anything.

use crate::common::{opts, shm_dir};

use ptm::{Error, PCell, Persistent, Pool};
use ptm_collections::{PBTreeMap, PBTreeSet, PBox, PHashMap, PHashSet, PQueue, PString, PValue, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    hv: PVec<PHashSet<PString>>,
    bv: PVec<PBTreeSet<PString>>,
    hb: PBox<PHashSet<u64>>,
    bb: PBox<PBTreeSet<u64>>,
    qv: PVec<PQueue<PString>>,
    mv: PVec<PHashMap<PString, PString>>,
    tv: PVec<PBTreeMap<PString, PString>>,
    bx: PBox<PBox<PString>>,
}

fn create(name: &str) -> (tempfile::TempDir, Pool<Root>) {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join(name), 8 << 20, &opts()).unwrap();
    (dir, pool)
}

/// Sets of strings in vectors and sets of numbers in boxes, large enough for a hash set's
/// directory of segments and a B-tree set's internal nodes, and queues (one of them a full
/// ring), maps and trees of strings in
/// vectors, a box of a string in a box: freeing the vectors and boxes frees every set's table
/// or nodes, every queue's directory and chunks, every map's and tree's blocks and every
/// key's, value's and element's buffer.
#[test]
fn collections_nested_in_vectors_and_boxes_are_freed_with_them() {
    let (_dir, mut pool) = create("n.pool");
    pool.transaction(|tx, r| {
        for i in 0..3u64 {
            let h = r.hv.push_new(tx)?;
            let b = r.bv.push_new(tx)?;
            for k in 0..150 {
                h.insert(tx, format!("set-{i}-key-{k}"))?;
                b.insert(tx, format!("set-{i}-key-{k}").as_str())?;
            }
        }
        let (h, b) = (r.hb.get_or_init_new(tx)?, r.bb.get_or_init_new(tx)?);
        // Past one segment's 64 KiB: a directory of segments.
        for k in 0..20_000u64 {
            h.insert(tx, k)?;
        }
        for k in 0..300u64 {
            b.insert(tx, k)?;
        }
        for i in 0..2u64 {
            let (q, m, t) = (r.qv.push_new(tx)?, r.mv.push_new(tx)?, r.tv.push_new(tx)?);
            // The first queue's ring exactly full (64 of 64 slots), the second's not.
            for k in 0..[64, 100][i as usize] {
                q.push_new(tx)?.push_str(tx, &format!("queue-{i}-element-{k}"))?;
                m.get_or_insert_new(tx, format!("key-{i}-{k}"))?
                    .push_str(tx, "value")?;
                t.get_or_insert_new(tx, format!("key-{i}-{k}"))?
                    .push_str(tx, "value")?;
            }
        }
        r.bx.get_or_init_new(tx)?
            .get_or_init_new(tx)?
            .push_str(tx, "boxed twice")?;
        Ok::<_, Error>(())
    })
    .unwrap();
    let blocks = pool.allocated_blocks().unwrap().len();
    assert!(blocks > 1500, "tables, nodes, chunks and buffers: {blocks}");
    pool.transaction(|tx, r| {
        assert_eq!(r.hv.get_ref(tx, 2)?.expect("3 sets").len(tx), 150);
        assert_eq!(r.bb.get_ref(tx)?.expect("a set").len(tx), 300);
        assert_eq!(r.qv.get_ref(tx, 1)?.expect("2 queues").len(tx), 100);
        assert!(
            r.hb.get_ref(tx)?.expect("a set").capacity(tx) > 20_000,
            "several segments"
        );
        r.hv.free(tx)?;
        r.bv.free(tx)?;
        r.hb.free(tx)?;
        r.bb.free(tx)?;
        r.qv.free(tx)?;
        r.mv.free(tx)?;
        r.tv.free(tx)?;
        r.bx.free(tx)
    })
    .unwrap();
    assert_eq!(pool.allocated_blocks().unwrap(), vec![], "every block freed");
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Handles {
    s: PString,
    v: PVec<u64>,
    m: PHashMap<u64, u64>,
    q: PQueue<u64>,
    b: PBox<u64>,
    t: PBTreeMap<u64, u64>,
}

/// The first word of a collection handle: its pointer (buffer, table or directory, block,
/// root node).
fn pointer_cell<H: PValue>(h: &H) -> &PCell<u64> {
    // SAFETY: every collection handle is `repr(C)` (or `repr(transparent)` over one) and opens
    // with a `PCell` of a `PPtr`, one `u64` word; a `PCell<u64>` has the same layout, and the
    // handle is read and written here only through cells, in this thread's transaction.
    unsafe { &*(h as *const H).cast::<PCell<u64>>() }
}

/// `p` (a pointer word: the pool's tag in the top 16 bits, the offset below) made to name
/// another pool (another nonzero tag): every read or free through it fails.
fn foreign(p: u64) -> u64 {
    let tag = if p >> 48 == 0xbeef { 0xbeee } else { 0xbeef };
    (tag << 48) | (p & ((1 << 48) - 1))
}

/// `h`'s `free_owned`, called directly after its pointer was made to name another pool: it
/// fails, and the transaction is doomed (rolled back, the damage with it).
fn damaged_free_dooms<H: PValue>(pool: &Pool<Handles>, what: &str, pick: fn(&Handles) -> &H) {
    let r = pool.transaction(|tx, r| {
        let h = pick(r);
        let cell = pointer_cell(h);
        cell.set(tx, foreign(cell.get(tx)))?;
        // SAFETY: the handle is discarded: this transaction rolls back (asserted below), and a
        // mutant that lets it commit has freed nothing and fails the test.
        let e = unsafe { h.free_owned(tx) };
        assert!(
            e.is_err(),
            "{what}: a pointer into another pool is refused: {e:?}"
        );
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{what}: {r:?}");
}

/// Each collection's `free_owned`, called directly on a handle whose pointer names another
/// pool: it fails before freeing anything (the block is refused, or the table, directory or
/// root cannot be read) and dooms the transaction all the same, so that the caller's commit is
/// refused. Each damage is rolled back with its transaction: the collections stay as they were.
#[test]
fn free_owned_of_a_damaged_handle_dooms_the_transaction() {
    let dir = shm_dir();
    let mut pool = Pool::<Handles>::create(dir.path().join("d.pool"), 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.s.push_str(tx, "a string in its own buffer")?;
        r.v.extend(tx, 0..40)?;
        (0..40).try_for_each(|k| r.m.insert(tx, k, k).map(drop))?;
        r.q.extend(tx, 0..40)?;
        r.b.set(tx, 7)?;
        (0..40).try_for_each(|k| r.t.insert(tx, k, k).map(drop))
    })
    .unwrap();
    let blocks = pool.allocated_blocks().unwrap();
    damaged_free_dooms(&pool, "PString", |r| &r.s);
    damaged_free_dooms(&pool, "PVec", |r| &r.v);
    damaged_free_dooms(&pool, "PHashMap", |r| &r.m);
    damaged_free_dooms(&pool, "PQueue", |r| &r.q);
    damaged_free_dooms(&pool, "PBox", |r| &r.b);
    damaged_free_dooms(&pool, "PBTreeMap", |r| &r.t);
    assert_eq!(pool.allocated_blocks().unwrap(), blocks, "nothing freed");
    pool.transaction(|tx, r| {
        assert_eq!(r.s.as_string(tx)?, "a string in its own buffer");
        assert_eq!(r.v.len(tx), 40);
        assert_eq!(r.m.get(tx, &39)?, Some(39));
        assert_eq!(r.q.len(tx), 40);
        assert_eq!(r.b.get(tx)?, Some(7));
        assert_eq!(r.t.get(tx, &39)?, Some(39));
        Ok::<_, Error>(())
    })
    .unwrap();
}
