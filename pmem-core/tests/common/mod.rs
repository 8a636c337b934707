//! Helpers shared by pmem-core's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// A temporary directory on tmpfs (`/dev/shm`) when present, else the system temp dir.
pub fn shm_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("tempdir in /dev/shm")
    } else {
        tempfile::tempdir().expect("tempdir")
    }
}

/// A temporary directory on the disk file system (`/tmp` unless `TMPDIR` says otherwise).
pub fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `dir/name`.
pub fn pool_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The file system type name of `path` (from /proc/self/mounts, longest matching mount point).
pub fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mut best = (0usize, String::new());
    for line in mounts.lines() {
        let mut it = line.split_whitespace();
        let (_dev, mnt, ty) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        if path.starts_with(mnt) && mnt.len() >= best.0 {
            best = (mnt.len(), ty.to_owned());
        }
    }
    best.1
}

/// Checks that a journaled region never journals its backup header: the journal grows by the
/// same record for a flush of the last 8 data bytes (at `last`) as for a flush of those bytes
/// and the backup header after them (`what` names the case in the failure).
pub fn assert_backup_header_not_journaled(r: &mut pmem_core::Region, last: u64, what: &str) {
    use pmem_core::internals::header::HEADER_SIZE;
    let hs = HEADER_SIZE as u64;
    r.write_at(last, &[4; 8]).unwrap();
    let bytes = |r: &pmem_core::Region| r.journal_stats().unwrap().bytes;
    let b0 = bytes(r);
    r.flush(last, 8).unwrap();
    r.order().unwrap();
    let b1 = bytes(r);
    r.flush(last, 8 + hs).unwrap();
    r.order().unwrap();
    let b2 = bytes(r);
    assert!(b1 > b0, "{what}: a flush journaled nothing");
    assert_eq!(b2 - b1, b1 - b0, "{what}: the backup header was journaled");
}
