//! `ptm info` prints the root schema a pool records (text and JSON), and says when none is
//! recorded.

use std::process::Command;

use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_collections::{PHashMap, PString, PVec};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    names: PVec<PString>,
    scores: PHashMap<u64, [u32; 2]>,
    count: PCell<u64>,
}

fn info(path: &std::path::Path, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptm"));
    cmd.arg("info").arg(path).arg("--force-pmem");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn info_prints_the_recorded_schema() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pool");
    let opts = PoolOptions::new().force_pmem(true);
    drop(Pool::<Root>::create(&path, 8 << 20, &opts).unwrap());
    let expected = ptm::pmem_core::schema::schema_of::<Root>();

    let text = info(&path, false);
    let fingerprint = format!("{:#018x}", expected.fingerprint());
    for want in [
        format!("root schema     fingerprint {fingerprint}"),
        "  Root (64 bytes)".to_owned(),
        "    names: PVec<PString> (24 bytes)".to_owned(),
        "    scores: PHashMap<u64, [u32; 2]> (32 bytes)".to_owned(),
        "    count: PCell<u64> (8 bytes)".to_owned(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }

    let v: serde_json::Value = serde_json::from_str(&info(&path, true)).unwrap();
    assert_eq!(v["schema"]["fingerprint"], fingerprint);
    assert_eq!(v["schema"]["encoding"], expected.encode());
    // A new pool's lanes hold packed logs (superblock format 5).
    assert!(
        text.contains("lane logs       packed (superblock format 5)"),
        "{text}"
    );
    assert_eq!(v["transactions"]["packed_log"], true, "{v}");

    // A damaged record is reported, and the rest of `info` still printed.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"?", 4096 + 1024 + 24).unwrap();
    }
    let text = info(&path, false);
    assert!(
        text.contains("root schema     damaged:") && text.contains("schema record checksum mismatch"),
        "{text}"
    );
    assert!(text.contains("lanes") && text.contains("root"), "{text}");

    // Created by a tool: nothing recorded yet.
    let bare = dir.path().join("bare.pool");
    drop(Pool::<()>::create_any(&bare, 8 << 20, 64, &opts).unwrap());
    let text = info(&bare, false);
    assert!(text.contains("root schema     not recorded"), "{text}");
}
