//! Guards the undo-log scan of recovery (`ptm/src/engine/log.rs`) on crafted logs: a record is
//! trusted only inside its log area, and a jump record only into whole pages of the heap (the
//! first and the last page included), never in a cycle. Each case writes lane 0's log of a
//! closed pool by hand and reopens it: either recovery restores what the log says (the scan
//! followed it) or opening fails with `CorruptLog`, and nothing else.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ptm::internals::layout::{
    encode_rec, superblock_log_key, Geometry, KIND_JUMP, KIND_NEW, KIND_UNDO, MAX_LANES,
};
use ptm::{Error, Pool, PoolOptions};

use crate::common;

/// A seq for lane 0 newer than any `completed` word of a fresh pool.
const SEQ: u64 = 1000 * MAX_LANES as u64;
/// What the crafted undo records restore into the root.
const OLD: [u8; 8] = *b"restored";

fn opts() -> PoolOptions {
    common::pmem().lanes(2).lane_size(8192)
}

/// A closed pool with a 64-byte root, and its geometry.
fn pool(dir: &tempfile::TempDir) -> (PathBuf, Geometry) {
    let path = common::path(dir, "log.pool");
    let pool = Pool::<()>::create_any(&path, 4 << 20, 64, &opts()).unwrap();
    let geo = pool.geometry();
    pool.close().unwrap();
    (path, geo)
}

fn write(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at).unwrap();
    b
}

/// The pool's log key (records are hashed with it), from its superblock at pool offset 4096.
fn key(path: &Path) -> u64 {
    superblock_log_key(&read(path, 4096, 256))
}

/// Writes a record of transaction [`SEQ`] at `at`: header, then `data`.
fn record(path: &Path, at: u64, kind: u8, len: u64, target: u64, data: &[u8]) {
    record_of(SEQ, path, at, kind, len, target, data);
}

/// [`record`] of transaction `seq`.
fn record_of(seq: u64, path: &Path, at: u64, kind: u8, len: u64, target: u64, data: &[u8]) {
    write(path, at, &encode_rec(key(path), seq, kind, len, target, data));
    write(path, at + 32, data);
}

/// An undo record at `at` restoring [`OLD`] into the root.
fn undo_root(path: &Path, geo: &Geometry, at: u64) {
    record(path, at, KIND_UNDO, OLD.len() as u64, geo.root_offset, &OLD);
}

/// Reopens: `Ok(true)` if recovery restored the root from the crafted record.
fn reopen(path: &Path, geo: &Geometry) -> Result<bool, Error> {
    let pool = Pool::<()>::open_any(path, &opts())?;
    drop(pool);
    Ok(read(path, geo.root_offset, OLD.len()) == OLD)
}

/// Lane 0's log: a jump record to `[target, target + len)`, where an undo record of the root
/// waits (written only if the extent lies in the file). Returns the reopen's outcome.
fn jump(target: impl Fn(&Geometry) -> u64, len: u64) -> Result<bool, Error> {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let t = target(&geo);
    record(&path, geo.lane_log(0).0, KIND_JUMP, len, t, &[]);
    if t >= geo.heap_offset && t + 64 <= geo.heap_offset + geo.heap_size {
        undo_root(&path, &geo, t);
    }
    reopen(&path, &geo)
}

/// Where a crafted jump record points, in a pool of geometry `g`.
type Target = fn(&Geometry) -> u64;

fn heap_end(g: &Geometry) -> u64 {
    g.heap_offset + g.heap_size
}

#[test]
fn an_undo_record_in_the_lane_log_is_restored() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    undo_root(&path, &geo, geo.lane_log(0).0);
    assert!(reopen(&path, &geo).unwrap());
}

/// A record whose data would run past the end of its lane's log area (into the lane's commit
/// record, format 5, or the next lane's header, formats 3 and 4) ends the log, even with a hash
/// that verifies over those bytes.
#[test]
fn a_record_running_past_its_lane_is_not_trusted() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let (at, lane_end) = geo.lane_log(0);
    // Data from the record's header to 64 bytes past the log area.
    let len = lane_end + 64 - (at + 32);
    let target = geo.heap_offset + geo.heap_size / 2;
    write(&path, at + 32, &vec![0xab; (lane_end - at - 32) as usize]);
    let data = read(&path, at + 32, len as usize);
    let before = read(&path, target, len as usize);
    write(
        &path,
        at,
        &encode_rec(key(&path), SEQ, KIND_UNDO, len, target, &data),
    );
    assert!(!reopen(&path, &geo).unwrap());
    assert_eq!(
        read(&path, target, len as usize),
        before,
        "bytes restored from past the lane"
    );
}

#[test]
fn a_jump_to_the_first_or_last_heap_page_is_followed() {
    assert!(jump(|g| g.heap_offset, 4096).unwrap(), "first page");
    assert!(jump(|g| heap_end(g) - 4096, 4096).unwrap(), "last page");
    assert!(jump(|g| heap_end(g) - 8192, 8192).unwrap(), "last two pages");
}

#[test]
fn a_jump_outside_whole_heap_pages_is_a_corrupt_log() {
    let cases: [(&str, Target, u64); 5] = [
        ("before the heap", |g| g.heap_offset - 4096, 4096),
        ("past the heap's end", |g| heap_end(g) - 4096, 8192),
        ("shorter than a page", |g| g.heap_offset + 4096, 4095),
        ("not page-aligned", |g| g.heap_offset + 4096 + 64, 4096),
        ("wrapping around", |g| g.heap_offset + 4096, u64::MAX - 4095),
    ];
    for (what, target, len) in cases {
        match jump(target, len) {
            Err(Error::CorruptLog { lane: 0, .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn jump_records_in_a_cycle_are_a_corrupt_log() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let page = geo.heap_offset + 4096;
    record(&path, geo.lane_log(0).0, KIND_JUMP, 4096, page, &[]);
    // The extent's first record jumps back to the extent itself.
    record(&path, page, KIND_JUMP, 4096, page, &[]);
    match reopen(&path, &geo) {
        Err(Error::CorruptLog { lane: 0, what }) => assert!(what.contains("cycle"), "{what}"),
        other => panic!("{other:?}"),
    }
}

/// A log that fills its lane's log area to the last byte ends there: bytes after it (the
/// lane's commit record, here crafted to read as a jump record of the same transaction) are
/// not part of it.
#[test]
fn a_log_that_fills_its_lane_ends_at_the_lane_end() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let (at, lane_end) = geo.lane_log(0);
    // One undo record whose size is exactly the rest of the log area.
    let len = lane_end - at - 32;
    let target = geo.heap_offset + geo.heap_size / 2;
    record(&path, at, KIND_UNDO, len, target, &vec![0xab; len as usize]);
    // After it, where the commit record is: a jump to an extent holding an undo record of the
    // root.
    let page = geo.heap_offset + 4096;
    record(&path, lane_end, KIND_JUMP, 4096, page, &[]);
    undo_root(&path, &geo, page);
    assert!(!reopen(&path, &geo).unwrap(), "followed a record past the lane");
    assert_eq!(read(&path, target, 8), [0xab; 8], "the lane's own record");
}

/// A verified record whose seq belongs to another lane (seqs of lane `l` are `l` modulo
/// `MAX_LANES`) is not a transaction of this lane.
#[test]
fn a_record_with_another_lanes_seq_is_ignored() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let at = geo.lane_log(0).0;
    record_of(
        SEQ + 1,
        &path,
        at,
        KIND_UNDO,
        OLD.len() as u64,
        geo.root_offset,
        &OLD,
    );
    assert!(!reopen(&path, &geo).unwrap());
}

/// A new-memory record that does not verify (torn) ends the log: a record after it, valid or
/// not, is never undone.
#[test]
fn a_torn_new_memory_record_ends_the_log() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let at = geo.lane_log(0).0;
    let mut torn = encode_rec(key(&path), SEQ, KIND_NEW, 64, geo.heap_offset + 4096, &[]);
    torn[24] ^= 1;
    write(&path, at, &torn);
    undo_root(&path, &geo, at + geo.rec_total(0));
    assert!(!reopen(&path, &geo).unwrap());
}

/// A log continued through several extents (a jump at the start of each) is followed to its
/// end: the cycle bound counts hops, never stopping a chain of distinct pages.
#[test]
fn a_chain_of_jumps_is_followed() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let pages: Vec<u64> = (1..=3).map(|i| geo.heap_offset + i * 4096).collect();
    record(&path, geo.lane_log(0).0, KIND_JUMP, 4096, pages[0], &[]);
    record(&path, pages[0], KIND_JUMP, 4096, pages[1], &[]);
    record(&path, pages[1], KIND_JUMP, 4096, pages[2], &[]);
    undo_root(&path, &geo, pages[2]);
    assert!(reopen(&path, &geo).unwrap());
}

/// A log that fills its extent to the last byte ends there, as one filling its lane does: the
/// page after the extent is not part of it.
#[test]
fn a_log_that_fills_its_extent_ends_at_the_extent_end() {
    let dir = common::shm_dir();
    let (path, geo) = pool(&dir);
    let extent = geo.heap_offset + 4096;
    record(&path, geo.lane_log(0).0, KIND_JUMP, 4096, extent, &[]);
    let len = 4096 - 32;
    let target = geo.heap_offset + geo.heap_size / 2;
    record(&path, extent, KIND_UNDO, len, target, &vec![0xcd; len as usize]);
    undo_root(&path, &geo, extent + 4096);
    assert!(!reopen(&path, &geo).unwrap(), "followed a record past the extent");
    assert_eq!(read(&path, target, 8), [0xcd; 8], "the extent's own record");
}

/// A lane whose sequence numbers reach past half their range (so the next one computed from
/// them could overflow) is a corrupt log; half the range itself is still a sequence number.
#[test]
fn a_sequence_number_past_half_the_range_is_a_corrupt_log() {
    for (completed, corrupt) in [(u64::MAX / 2 + 1, true), (u64::MAX / 2, false)] {
        let dir = common::shm_dir();
        let (path, geo) = pool(&dir);
        // Lane 0's `completed` word, the first word of its header.
        write(&path, geo.lanes_offset, &completed.to_le_bytes());
        match reopen(&path, &geo) {
            Err(Error::CorruptLog { lane: 0, what }) if corrupt => {
                assert!(what.contains("sequence number"), "{what}")
            }
            Ok(false) if !corrupt => {}
            other => panic!("completed {completed:#x}: {other:?}"),
        }
    }
}

/// A verified undo or new-range record is trusted only if its range lies in the root and heap
/// (`Geometry::loggable`): from the root's first byte to the heap's last, both included. One
/// byte outside, before the root (in the lanes) or past the heap's end, is a corrupt log.
#[test]
fn a_record_is_trusted_only_inside_the_root_and_heap() {
    // (where the 8-byte range starts, relative to the geometry; whether it is inside)
    let cases: [(Target, bool); 5] = [
        (|g| g.root_offset, true),
        (|g| heap_end(g) - 8, true),
        (|g| g.root_offset - 8, false),
        (|g| g.root_offset - 1, false),
        (|g| heap_end(g) - 7, false),
    ];
    for (i, (target, inside)) in cases.into_iter().enumerate() {
        for kind in [KIND_UNDO, KIND_NEW] {
            let dir = common::shm_dir();
            let (path, geo) = pool(&dir);
            let t = target(&geo);
            let at = geo.lane_log(0).0;
            if kind == KIND_UNDO {
                record(&path, at, KIND_UNDO, 8, t, &OLD);
            } else {
                record(&path, at, KIND_NEW, 8, t, &[]);
            }
            let before = read(&path, t, 8);
            match (Pool::<()>::open_any(&path, &opts()).map(drop), inside) {
                (Ok(()), true) => {
                    let now = read(&path, t, 8);
                    if kind == KIND_UNDO {
                        assert_eq!(now, OLD, "case {i}: the undo record was not applied");
                    } else {
                        assert_eq!(now, before, "case {i}: a new-range record restores nothing");
                    }
                }
                (Err(Error::CorruptLog { lane: 0, what }), false) => {
                    assert!(what.contains("outside"), "case {i} kind {kind}: {what}")
                }
                (other, _) => panic!("case {i} kind {kind}: {other:?}"),
            }
        }
    }
}
