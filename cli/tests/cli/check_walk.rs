//! `ptm check` walks the user's collections from the root schema the pool records: on the user
//! root of `collections/tests/collections/common/user_root.rs` (every collection, nested values,
//! a `PPtr` cycle) its counts are the typed `verify`'s, a corrupt B-tree node or map segment
//! fails the check naming its schema path, a block whose only handle was overwritten is reported
//! as unreachable, and a pool without a schema, or with a transaction recovery has not decided
//! yet, says why it is not walked.

use std::path::Path;
use std::process::{Command, Output};

use ptm::{Pool, PoolOptions};
use ptm_collections::walk_pool;

#[path = "../../../collections/tests/collections/common/user_root.rs"]
mod user_root;

use user_root::{NODES, SCRATCH};

fn opts() -> PoolOptions {
    PoolOptions::new().force_pmem(true)
}

/// A filled user-root pool at `path`, closed; returns the typed report, the in-process walk's
/// reachable block count, the root's offset and the offsets the fixture notes.
fn make(path: &Path) -> (ptm_collections::Report, usize, u64, user_root::Offsets) {
    let mut pool = user_root::make(path, &opts());
    let typed = user_root::typed(&pool);
    let reachable = walk_pool(&mut pool).unwrap().reachable.len();
    let (root, at) = (pool.geometry().root_offset, user_root::offsets(&pool));
    pool.close().unwrap();
    (typed, reachable, root, at)
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
    let (typed, reachable, ..) = make(&path);

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
        (&c["unreachable_blocks"], &c["pointers"], &c["boxes"]),
        (&0.into(), &NODES.into(), &1.into())
    );
}

#[test]
fn check_fails_on_a_corrupt_collection_naming_its_path() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    for (what, path_in_schema) in [("node", "Root.index"), ("segment", "Root.tasks")] {
        let path = dir.path().join(format!("{what}.pool"));
        let (.., at) = make(&path);
        // A node's length word, a segment's `len` header word.
        let word = if what == "node" { at.node } else { at.segment + 24 };
        patch(&path, word, &77u64.to_le_bytes());
        let o = check(&path, false);
        assert!(!o.status.success(), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("collections: corrupt "), "{what}: {err}");
        assert!(err.contains(&format!("{path_in_schema}: ")), "{what}: {err}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("collections     corrupt:"), "{text}");
        let o = check(&path, true);
        assert!(!o.status.success());
        let v = json_of(&o);
        assert_eq!(
            (&v["collections"]["status"], &v["ok"], &v["damage_found"]),
            (&"corrupt".into(), &false.into(), &true.into())
        );
    }
}

#[test]
fn check_reports_a_block_no_handle_reaches() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leak.pool");
    let (_, _, root, at) = make(&path);
    let scratch_block = {
        let mut pool = Pool::<user_root::Root>::open(&path, &opts()).unwrap();
        let blocks = pool.allocated_blocks().unwrap();
        blocks.into_iter().find(|&(o, _)| o == at.scratch).unwrap().1
    };
    // The scratch vector's handle zeroed behind the library's back: its buffer stays allocated.
    patch(&path, root + SCRATCH, &[0u8; 24]);
    let o = check(&path, false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "a leak alone does not fail the check: {text}");
    let want = format!("1 block, {scratch_block} bytes unreachable from the schema");
    assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    let v = json_of(&check(&path, true));
    assert_eq!(
        (
            &v["collections"]["unreachable_blocks"],
            &v["collections"]["unreachable_bytes"]
        ),
        (&1.into(), &scratch_block.into())
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

#[test]
fn check_does_not_walk_a_pool_recovery_has_not_decided() {
    use ptm::internals::layout::{encode_rec, superblock_log_key, KIND_UNDO, MAX_LANES};
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pending.pool");
    let (_, _, root, _) = make(&path);
    let (lanes, log) = {
        let pool = Pool::<user_root::Root>::open(&path, &opts()).unwrap();
        let g = pool.geometry();
        (g.lanes_offset, g.lane_log(0).0)
    };
    // Lane 0: an undo record of 8 root bytes with a sequence far beyond the lane's completion
    // mark (sequences of lane 0 are multiples of MAX_LANES), as a crash in the middle of a
    // transaction leaves it.
    // Hashed with the pool's log key (the superblock is the page before the lanes).
    let mut sb = [0u8; 256];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&path).unwrap(), &mut sb, lanes - 4096)
        .unwrap();
    let old = [0u8; 8];
    let rec = encode_rec(
        superblock_log_key(&sb),
        u64::from(MAX_LANES) << 32,
        KIND_UNDO,
        8,
        root,
        &old,
    );
    patch(&path, log, &rec);
    patch(&path, log + 32, &old);
    let o = check(&path, false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("not walked: recovery has not decided the transactions of 1 lane(s) yet"),
        "{text}"
    );
    let v = json_of(&check(&path, true));
    assert_eq!(
        (&v["collections"]["status"], &v["collections"]["lanes_with_log"]),
        (&"recovery_pending".into(), &1.into())
    );
}
