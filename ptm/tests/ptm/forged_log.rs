//! Guards the log against bytes a user stored: undo data (and freed heap chunks that later hold
//! log extents) is user-chosen, so a stale record's data can hold a well-formed record header.
//! Record hashes are keyed with the pool's secret (design §8.1), so such a planted record never
//! verifies and recovery never applies it. Without the key, recovery would scan past the crashed
//! transaction's own records into the planted one and "restore" attacker-chosen bytes at an
//! attacker-chosen offset.

use std::os::unix::fs::FileExt;

use ptm::internals::layout::{encode_rec, KIND_UNDO, MAX_LANES, REC_HEADER};
use ptm::{PCell, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    /// Written by a transaction, then logged whole (128 bytes of undo data) by the next one.
    block: PCell<[u64; 16]>,
    /// What the planted record targets.
    victim: PCell<u64>,
    /// What the crashed transaction changes.
    other: PCell<u64>,
}

const VICTIM: u64 = 7;
const EVIL: u64 = 0xE71_E71;

/// The completion mark of lane 0: the seq of its last completed transaction.
fn completed(path: &std::path::Path, lanes_offset: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, lanes_offset).unwrap();
    u64::from_le_bytes(w)
}

/// Builds a crash image of a transaction that logged one word, on a lane whose previous record
/// carried a planted record (hashed with `plant_key`) at the position right after, then opens it
/// and returns the victim's value after recovery.
fn victim_after_recovery(plant_key: impl FnOnce(&[u8]) -> u64) -> u64 {
    // A pool mapped straight from its file (tmpfs, cache-flush domain), so that a copy of the
    // file is the memory as a crash would leave it.
    let dir = crate::common::shm_dir();
    let path = dir.path().join("forged.pool");
    let image = dir.path().join("crash.pool");
    let opts = PoolOptions::new().lanes(1).force_pmem(true);
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts).unwrap();
    let geo = pool.geometry();
    let mut sb = [0u8; 256];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut sb, geo.lanes_offset - 4096)
        .unwrap();
    let key = plant_key(&sb);
    pool.transaction(|tx, r| r.victim.set(tx, VICTIM)).unwrap();
    // Seqs on lane 0 go up by MAX_LANES: the planting transaction, the logging one, the crashed one.
    let m = u64::from(MAX_LANES);
    let crashed_seq = completed(&path, geo.lanes_offset) + 3 * m;
    let victim_off = geo.root_offset + 16 * 8;
    let header = encode_rec(key, crashed_seq, KIND_UNDO, 8, victim_off, &EVIL.to_le_bytes());
    // The logging transaction's record sits at the lane's log start, its data 32 bytes in. The
    // crashed transaction's first record (8 bytes of data) takes `rec_total(8)` bytes from the
    // log start, so its second would go there: the block's words from `(rec_total(8) - 32) / 8`
    // land at that position (the planted header), and the word right after is its data.
    let first = ((geo.rec_total(8) - REC_HEADER) / 8) as usize;
    let mut planted = [0u64; 16];
    for (w, chunk) in planted[first..first + 4].iter_mut().zip(header.chunks_exact(8)) {
        *w = u64::from_le_bytes(chunk.try_into().unwrap());
    }
    planted[first + 4] = EVIL;
    pool.transaction(|tx, r| r.block.set(tx, planted)).unwrap();
    pool.transaction(|tx, r| r.block.set(tx, [1; 16])).unwrap();
    // The crashed transaction: one 8-byte record at the log start, then a crash (the
    // file as it is: every store reached it, nothing after).
    let r = pool.transaction(|tx, r| {
        r.other.set(tx, 99)?;
        assert_eq!(
            completed(&path, geo.lanes_offset) + m,
            crashed_seq,
            "seq prediction"
        );
        crate::common::crash_image(&path, &image);
        Err::<(), _>(ptm::Error::Aborted)
    });
    assert!(r.is_err());
    drop(pool);
    // The planted record really is at the position recovery reads next.
    let mut at = [0u8; 32];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut at, geo.lane_log(0).0 + geo.rec_total(8))
        .unwrap();
    assert_eq!(at, header, "the planted record is not where the scan continues");
    let pool = Pool::<Root>::open(&image, &PoolOptions::new().force_pmem(true)).unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.other.get(tx), 0, "the crashed transaction was not rolled back");
        Ok::<_, ptm::Error>(r.victim.get(tx))
    })
    .unwrap()
}

#[test]
fn a_record_planted_in_user_data_is_never_applied() {
    // The attacker does not know the pool's secret: the best they can do is the unkeyed hash (or
    // any other key).
    assert_eq!(victim_after_recovery(|_| 0), VICTIM);
    assert_eq!(victim_after_recovery(|_| 0x1234_5678), VICTIM);
}

#[test]
fn the_scenario_reaches_recovery() {
    // Control: the same plant hashed with the pool's own key is applied (so the test above fails
    // if records stop being keyed, and does not pass for a reason unrelated to the key).
    let applied = victim_after_recovery(ptm::internals::layout::superblock_log_key);
    assert_eq!(applied, EVIL);
}
