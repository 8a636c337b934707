//! The user root `ptm check` and `walk_schema` are tested on (shared by
//! `collections/tests/collections/walk.rs` and, through `#[path]`, `cli/tests/cli/check_walk.rs`):
//! one of every collection, a map of derived values holding a string and a vector, a
//! string-keyed tree, a boxed vector and a linked list through `PPtr` whose last node points back
//! at the first; its `Verify` checks every nested collection too.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{
    verify, PBTreeMap, PBox, PConcurrentMap, PHashMap, PHashSet, PQueue, PString, PValue, PVec, Report,
    Verify,
};

#[derive(Persistent, PValue)]
#[repr(C)]
pub struct Task {
    pub title: PString,
    pub tags: PVec<u64>,
    pub done: PCell<u64>,
}

#[derive(Persistent)]
#[repr(C)]
pub struct Node {
    pub key: PCell<u64>,
    pub next: PCell<PPtr<Node>>,
}

#[derive(Persistent)]
#[repr(C)]
pub struct Root {
    /// First: 64-byte aligned shards, so the root needs no padding.
    pub shared: PConcurrentMap<u64, u64, 4>,
    pub tasks: PHashMap<u64, Task>,
    pub index: PBTreeMap<PString, u64>,
    pub jobs: PQueue<u64>,
    pub seen: PHashSet<u64>,
    pub boxed: PBox<PVec<u64>>,
    pub list: PCell<PPtr<Node>>,
    pub name: PString,
    pub scratch: PVec<u64>,
}

/// Field offsets in `Root` (sums of the sizes before them: a derived root has no padding).
pub const JOBS: u64 = 4 * 64 + 32 + 16;
pub const NAME: u64 = JOBS + 48 + 32 + 8 + 8;
pub const SCRATCH: u64 = NAME + 24;

impl Verify for Root {
    /// Every collection, nested ones included (each task's title and tags, the boxed vector).
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> ptm::Result<()> {
        self.tasks.verify(tx, report)?;
        for (_, task) in self.tasks.iter_refs(tx) {
            task.title.verify(tx, report)?;
            task.tags.verify(tx, report)?;
        }
        self.index.verify(tx, report)?;
        self.jobs.verify(tx, report)?;
        self.shared.verify(tx, report)?;
        self.seen.verify(tx, report)?;
        if let Some(v) = self.boxed.get_ref(tx)? {
            v.verify(tx, report)?;
        }
        self.name.verify(tx, report)?;
        self.scratch.verify(tx, report)
    }
}

pub const TASKS: u64 = 40;
pub const WORDS: u64 = 300;
pub const JOB_COUNT: u64 = 9000;
pub const NODES: u64 = 25;

/// Fills a pool at `path`: tasks with titles and tags, a string-keyed tree big enough to split,
/// a queue over two chunks, a sharded map, a set, a box, a linked list whose last node points
/// back at the first (a cycle), a name and a scratch vector.
pub fn make(path: &Path, opts: &PoolOptions) -> Pool<Root> {
    let pool = Pool::<Root>::create(path, 8 << 20, opts).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..TASKS {
            let t = r.tasks.get_or_insert_new(tx, k)?;
            t.title.push_str(tx, &format!("task é{k}"))?;
            t.tags.extend(tx, 0..k % 5)?;
            t.done.set(tx, k % 2)?;
        }
        for w in 0..WORDS {
            r.index.insert(tx, format!("word-{w:05}").as_str(), w)?;
        }
        r.jobs.extend(tx, 0..JOB_COUNT)?;
        for k in 0..100 {
            r.shared.insert(tx, k, k * 2)?;
        }
        (0..33).try_for_each(|k| r.seen.insert(tx, k).map(drop))?;
        r.boxed.get_or_init_new(tx)?.extend(tx, [7, 8, 9])?;
        let mut first = PPtr::null();
        let mut prev: Option<PPtr<Node>> = None;
        for k in 0..NODES {
            let p = tx.alloc_zeroed::<Node>()?;
            // SAFETY: `p` was just allocated as a zeroed `Node` in this transaction.
            let n = unsafe { tx.deref(p)? };
            n.key.set(tx, k)?;
            match prev {
                // SAFETY: `q` is a `Node` allocated above.
                Some(q) => unsafe { tx.deref(q)? }.next.set(tx, p)?,
                None => first = p,
            }
            prev = Some(p);
        }
        if let Some(last) = prev {
            // SAFETY: as above.
            unsafe { tx.deref(last)? }.next.set(tx, first)?;
        }
        r.list.set(tx, first)?;
        r.name.push_str(tx, "walked")?;
        r.scratch.extend(tx, 0..50)
    })
    .unwrap();
    pool
}

/// The typed verify's report of `pool` (every nested collection included).
pub fn typed(pool: &Pool<Root>) -> Report {
    verify(pool).unwrap()
}

/// Pool offsets of: a B-tree node of `index` (not the root), the last segment of `tasks`, the
/// buffer of task 3's title, the scratch vector's buffer, the boxed vector's buffer and the
/// blocks of `jobs` (directory first).
pub struct Offsets {
    pub node: u64,
    pub title: u64,
    pub segment: u64,
    pub scratch: u64,
    pub boxed: u64,
    pub jobs: Vec<u64>,
}

pub fn offsets(pool: &Pool<Root>) -> Offsets {
    pool.transaction(|tx, r| {
        Ok::<_, Error>(Offsets {
            node: r.index.node_offsets(tx)?[1],
            title: r
                .tasks
                .get_ref(tx, &3)?
                .expect("task 3")
                .title
                .buffer_offset(tx)
                .expect("a title"),
            segment: *r.tasks.block_offsets(tx)?.last().expect("a segment"),
            scratch: r.scratch.buffer_offset(tx).expect("a buffer"),
            boxed: r
                .boxed
                .get_ref(tx)?
                .expect("a box")
                .buffer_offset(tx)
                .expect("a buffer"),
            jobs: r.jobs.block_offsets(tx)?,
        })
    })
    .unwrap()
}
