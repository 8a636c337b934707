//! Guards `ptm info` / `ptm check` on a pool whose undo log holds a record that verifies but
//! points outside the pool: one clear `ptm: error:` line naming the corrupt log, exit 1, no panic.

use std::os::unix::fs::FileExt;
use std::process::Command;

use ptm::internals::layout::{encode_rec, superblock_log_key, KIND_UNDO, MAX_LANES};

#[test]
fn a_corrupt_undo_log_is_reported_in_one_line() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.pool");
    let pool = ptm::Pool::<()>::create_any(&path, 8 << 20, 64, &ptm::PoolOptions::new().lanes(2)).unwrap();
    let geo = pool.geometry();
    drop(pool);
    // Lane 0: a record with a valid hash and a seq beyond `completed`, whose target lies in the
    // lanes area (never a valid undo target).
    // Hashed with the pool's log key (read from the superblock, the page before the lanes), as
    // the pool's own records are: a record without it would not verify at all (see
    // `ptm/tests/ptm/forged_log.rs`).
    let data = [0u8; 8];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut sb = [0u8; 256];
    f.read_exact_at(&mut sb, geo.lanes_offset - 4096).unwrap();
    let rec = encode_rec(
        superblock_log_key(&sb),
        u64::from(MAX_LANES),
        KIND_UNDO,
        8,
        geo.lanes_offset,
        &data,
    );
    let at = geo.lane_log(0).0;
    f.write_all_at(&rec, at).unwrap();
    f.write_all_at(&data, at + 32).unwrap();
    drop(f);
    for cmd in ["info", "check"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ptm"))
            .arg(cmd)
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("ptm: error:"))
            .unwrap_or_else(|| panic!("{cmd}: {err}"));
        assert!(line.contains("corrupt undo log in lane 0"), "{cmd}: {line}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
    // Opening the pool reports the same instead of recovering from a bogus record.
    let e = ptm::Pool::<()>::open_any(&path, &ptm::PoolOptions::new()).unwrap_err();
    assert!(matches!(e, ptm::Error::CorruptLog { lane: 0, .. }), "{e:?}");
}

/// A ptm pool whose superblock magic is damaged is not mistaken for a bare pmem-core pool (one
/// whose superblock area was never written): `info` and `check` fail with a clear error, while
/// a bare pool's `info` still succeeds.
#[test]
fn a_damaged_superblock_is_not_a_bare_pool() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.pool");
    let pool = ptm::Pool::<()>::create_any(&path, 8 << 20, 64, &ptm::PoolOptions::new().lanes(2)).unwrap();
    // The superblock is the 4 KiB page before the lanes; its first bytes are the magic.
    let superblock = pool.geometry().lanes_offset - 4096;
    drop(pool);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"XXXXXXXX", superblock).unwrap();
    drop(f);
    for cmd in ["info", "check"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ptm"))
            .arg(cmd)
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.lines().any(|l| l.starts_with("ptm: error:")), "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }

    let bare = dir.path().join("bare.pool");
    drop(pmem_core::RegionOptions::new().create(&bare, 8 << 20).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_ptm"))
        .arg("info")
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
