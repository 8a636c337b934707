//! `ptm check` walks the user's collections from the root schema the pool records: its counts
//! are the typed `verify`'s, a corrupt B-tree node or map segment fails the check naming its
//! schema path, a block whose only handle was overwritten is reported as unreachable, and a
//! pool without a schema says so.

use std::path::Path;
use std::process::{Command, Output};

use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{
    verify, walk_pool, PBTreeMap, PHashMap, PQueue, PString, PValue, PVec, Report, Verify,
};

#[derive(Persistent, PValue)]
#[repr(C)]
struct Task {
    title: PString,
    tags: PVec<u64>,
}

#[derive(Persistent)]
#[repr(C)]
struct Node {
    key: PCell<u64>,
    next: PCell<PPtr<Node>>,
}

#[derive(Persistent)]
#[repr(C)]
struct Root {
    tasks: PHashMap<u64, Task>,
    index: PBTreeMap<PString, u64>,
    jobs: PQueue<u64>,
    list: PCell<PPtr<Node>>,
    scratch: PVec<u64>,
}

/// Offset of `scratch` in the root.
const SCRATCH: u64 = 32 + 16 + 48 + 8;

impl Verify for Root {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> ptm::Result<()> {
        self.tasks.verify(tx, report)?;
        for (_, task) in self.tasks.iter_refs(tx) {
            task.title.verify(tx, report)?;
            task.tags.verify(tx, report)?;
        }
        self.index.verify(tx, report)?;
        self.jobs.verify(tx, report)?;
        self.scratch.verify(tx, report)
    }
}

fn opts() -> PoolOptions {
    PoolOptions::new().force_pmem(true)
}

/// What `make` noted before closing the pool.
struct Made {
    /// The typed verify's report.
    typed: Report,
    /// Blocks the in-process walk reached.
    reachable: usize,
    root: u64,
    /// A B-tree node of `index`, a segment of `tasks`.
    node: u64,
    segment: u64,
    /// Bytes of the scratch vector's buffer block.
    scratch_block: u64,
}

/// A filled pool at `path`, closed.
fn make(path: &Path) -> Made {
    let mut pool = Pool::<Root>::create(path, 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..30u64 {
            let t = r.tasks.get_or_insert_new(tx, k)?;
            t.title.push_str(tx, &format!("task {k}"))?;
            t.tags.extend(tx, 0..k % 4)?;
        }
        for w in 0..100u64 {
            r.index.insert(tx, format!("w{w:03}").as_str(), w)?;
        }
        r.jobs.extend(tx, 0..500)?;
        let mut next = PPtr::null();
        for k in 0..10 {
            let p = tx.alloc_zeroed::<Node>()?;
            // SAFETY: `p` was just allocated as a zeroed `Node` in this transaction.
            let n = unsafe { tx.deref(p)? };
            n.key.set(tx, k)?;
            n.next.set(tx, next)?;
            next = p;
        }
        r.list.set(tx, next)?;
        r.scratch.extend(tx, 0..20)
    })
    .unwrap();
    let typed = verify(&pool).unwrap();
    let reachable = walk_pool(&mut pool).unwrap().reachable.len();
    let (node, segment, scratch) = pool
        .transaction(|tx, r| {
            Ok::<_, Error>((
                r.index.node_offsets(tx)?[1],
                *r.tasks.block_offsets(tx)?.last().unwrap(),
                r.scratch.buffer_offset(tx).unwrap(),
            ))
        })
        .unwrap();
    let scratch_block = pool
        .allocated_blocks()
        .unwrap()
        .into_iter()
        .find(|&(o, _)| o == scratch)
        .unwrap()
        .1;
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    Made {
        typed,
        reachable,
        root,
        node,
        segment,
        scratch_block,
    }
}

fn check(path: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptm"));
    cmd.arg("check").arg(path);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap()
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn check_walks_the_root_and_counts_as_verify() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.pool");
    let Made { typed, reachable, .. } = make(&path);

    let o = check(&path, false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    let want = format!(
        "{} structures, {} entries, {} blocks walked from the root schema",
        typed.structures, typed.entries, typed.blocks
    );
    assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    assert!(
        text.contains("none: every allocated block is reachable"),
        "{text}"
    );

    let o = check(&path, true);
    assert!(o.status.success());
    let c = &json_of(&o)["collections"];
    assert_eq!(c["status"], "walked");
    assert_eq!(
        (&c["structures"], &c["entries"], &c["blocks"]),
        (
            &typed.structures.into(),
            &typed.entries.into(),
            &typed.blocks.into()
        )
    );
    assert_eq!(c["reachable_blocks"], reachable as u64);
    assert_eq!(
        (&c["unreachable_blocks"], &c["pointers"]),
        (&0.into(), &10.into())
    );
}

#[test]
fn check_fails_on_a_corrupt_collection_naming_its_path() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    for (what, at_field, path_in_schema) in [("node", 0, "Root.index"), ("segment", 24, "Root.tasks")] {
        let path = dir.path().join(format!("{what}.pool"));
        let made = make(&path);
        let block = if what == "node" { made.node } else { made.segment };
        patch(&path, block + at_field, &77u64.to_le_bytes());
        let o = check(&path, false);
        assert!(!o.status.success(), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("{path_in_schema}: ")), "{what}: {err}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("collections     corrupt:"), "{text}");
        let o = check(&path, true);
        assert!(!o.status.success());
        let v = json_of(&o);
        assert_eq!(
            (&v["collections"]["status"], &v["ok"]),
            (&"corrupt".into(), &false.into())
        );
    }
}

#[test]
fn check_reports_a_block_no_handle_reaches() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leak.pool");
    let made = make(&path);
    // The scratch vector's handle zeroed behind the library's back: its buffer stays allocated.
    patch(&path, made.root + SCRATCH, &[0u8; 24]);
    let o = check(&path, false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "a leak alone does not fail the check: {text}");
    let want = format!(
        "1 blocks, {} bytes unreachable from the schema",
        made.scratch_block
    );
    assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    let v = json_of(&check(&path, true));
    assert_eq!(
        (
            &v["collections"]["unreachable_blocks"],
            &v["collections"]["unreachable_bytes"]
        ),
        (&1.into(), &made.scratch_block.into())
    );

    let bare = dir.path().join("bare.pool");
    drop(Pool::<()>::create_any(&bare, 8 << 20, 64, &opts()).unwrap());
    let o = check(&bare, false);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("no schema recorded: collections not walked"),
        "{text}"
    );
}
