//! Guards the on-media encoding of the undo log (design §8.1, §8.2, §8.4): the log key is the
//! documented function of the pool's secret, a log record's header and hash and a commit line
//! are the bytes older builds wrote and later builds must read, the `data_hash` a commit records
//! is xxh3-64 of `(offset, len, new bytes)` per logged range in log order (gathered or
//! streamed), every single-bit flip of a record in a pool file ends the log there, and a commit
//! line damaged or forged in a pool file leads recovery to the verdict §8.4 names.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ptm::internals::layout::{
    commit_hash, encode_rec, log_key, superblock_log_key, Geometry, KIND_JUMP, KIND_NEW, KIND_UNDO, MAX_LANES,
};
use ptm::{Error, PCell, Persistent, Pool, PoolOptions};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::common;

#[derive(Persistent)]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    /// 640 bytes: more than the data hasher gathers before it streams (512).
    big: PCell<[u64; 80]>,
    c: PCell<u64>,
}

fn opts() -> PoolOptions {
    common::pmem().lanes(2)
}

fn read(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at).unwrap();
    b
}

fn write(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The superblock's first 256 bytes (pool offset 4096).
fn superblock(path: &Path) -> Vec<u8> {
    read(path, 4096, 256)
}

/// A new pool whose three cells hold 1, `[1; 80]` and 1 (committed and marked complete).
fn setup(dir: &tempfile::TempDir) -> (Pool<Root>, PathBuf, Geometry) {
    let path = common::path(dir, "rec.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.a.set(tx, 1)?;
        r.big.set(tx, [1; 80])?;
        r.c.set(tx, 1)
    })
    .unwrap();
    let geo = pool.geometry();
    (pool, path, geo)
}

fn values(pool: &Pool<Root>) -> (u64, [u64; 80], u64) {
    pool.transaction(|tx, r| Ok::<_, Error>((r.a.get(tx), r.big.get(tx), r.c.get(tx))))
        .unwrap()
}

/// The pool offsets of the cells `a`, `big`, `c`.
fn cells(geo: &Geometry) -> (u64, u64, u64) {
    (geo.root_offset, geo.root_offset + 8, geo.root_offset + 8 + 640)
}

#[test]
fn the_log_key_is_the_documented_function_of_the_secret() {
    // §8.1: `max(1, xxh3-64(secret[0] ‖ secret[1] as 16 LE bytes, seed 0x6C6F676B6579))`, and 0
    // (unkeyed, format 3) for a pool without a secret.
    assert_eq!(log_key([0, 0]), 0);
    for secret in [
        [1, 0],
        [0, 1],
        [0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210],
        [u64::MAX; 2],
    ] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&secret[0].to_le_bytes());
        b[8..].copy_from_slice(&secret[1].to_le_bytes());
        assert_eq!(
            log_key(secret),
            xxh3_64_with_seed(&b, 0x6C6F_676B_6579).max(1),
            "{secret:x?}"
        );
    }
    // A real pool's key comes from the secret at superblock offset 72; two pools' keys differ.
    let dir = common::shm_dir();
    let mut keys = Vec::new();
    for name in ["k1.pool", "k2.pool"] {
        let path = common::path(&dir, name);
        Pool::<Root>::create(&path, 8 << 20, &opts())
            .unwrap()
            .close()
            .unwrap();
        let sb = superblock(&path);
        let key = superblock_log_key(&sb);
        assert_eq!(key, log_key([word(&sb, 72), word(&sb, 80)]));
        assert_ne!(key, 0);
        assert_ne!(key, 1, "the key of a pool with a secret is a hash of it");
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1], "two pools share a log key");
}

#[test]
fn record_headers_are_the_bytes_older_builds_wrote() {
    // Golden values (computed at format 5 by this build): a change to the header layout or to
    // the hash's seed makes every record an older build left in a pool file fail to verify.
    let data = *b"old bytes, 24 bytes long";
    // (key, seq, kind, len, target, data, hash)
    type Case<'a> = (u64, u64, u8, u64, u64, &'a [u8], u64);
    let cases: [Case<'_>; 4] = [
        (0, 7 * 1024 + 3, KIND_UNDO, 24, 0x2_0000, &data, GOLDEN[0]),
        (
            0x5DEE_CE66_D1CE_4E5B,
            7 * 1024 + 3,
            KIND_UNDO,
            24,
            0x2_0000,
            &data,
            GOLDEN[1],
        ),
        (
            0x5DEE_CE66_D1CE_4E5B,
            1 << 40,
            KIND_JUMP,
            256 << 10,
            0x40_0000,
            &[],
            GOLDEN[2],
        ),
        (u64::MAX, 5, KIND_NEW, 4096, 0x123_4000, &[], GOLDEN[3]),
    ];
    for (key, seq, kind, len, target, data, hash) in cases {
        let h = encode_rec(key, seq, kind, len, target, data);
        assert_eq!(word(&h, 0), seq);
        assert_eq!(word(&h, 8), (u64::from(kind) << 56) | len);
        assert_eq!(word(&h, 16), target);
        assert_eq!(
            word(&h, 24),
            hash,
            "record hash of {key:x} {seq} {kind} {len} {target:x}"
        );
    }
}

/// The record hashes of [`record_headers_are_the_bytes_older_builds_wrote`]'s cases.
const GOLDEN: [u64; 4] = [
    0x62b6_1054_ab8f_a25a,
    0x197f_a3f4_b451_2114,
    0x4688_fca9_8b3f_7c86,
    0x1145_5954_75a5_4849,
];

#[test]
fn commit_lines_are_hashed_as_documented() {
    // §8.1: `record_hash` @56 is xxh3-64 of bytes 0..56 xor a constant.
    let mut b = [0u8; 64];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i * 37 + 11) as u8;
    }
    assert_eq!(commit_hash(&b), xxh3_64(&b[..56]) ^ 0x434F_4D4D_4954);
    assert_eq!(commit_hash(&[0u8; 64]), xxh3_64(&[0u8; 56]) ^ 0x434F_4D4D_4954);
}

/// The `data_hash` §8.2 documents: xxh3-64 (seed 0) of `offset LE, len LE, bytes` per range.
fn documented_data_hash(ranges: &[(u64, Vec<u8>)]) -> u64 {
    let mut all = Vec::new();
    for (off, bytes) in ranges {
        all.extend_from_slice(&off.to_le_bytes());
        all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        all.extend_from_slice(bytes);
    }
    xxh3_64(&all)
}

fn le(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn a_commit_line_holds_seq_entries_and_the_documented_data_hash() {
    let dir = common::shm_dir();
    let (pool, path, geo) = setup(&dir);
    let (a, big, c) = cells(&geo);
    let big_new: [u64; 80] = std::array::from_fn(|i| 1000 + i as u64);
    // Small ranges only (gathered), a big range first (streamed from the start), and small
    // ranges around a big one (gathered, then streamed, then a small one after the switch).
    type Case = (
        fn(&ptm::Transaction<'_>, &Root, [u64; 80]) -> ptm::Result<()>,
        Vec<(u64, Vec<u8>)>,
    );
    let cases: Vec<Case> = vec![
        (
            |tx, r, _| {
                r.a.set(tx, 2)?;
                r.c.set(tx, 3)
            },
            vec![(a, le(&[2])), (c, le(&[3]))],
        ),
        (
            |tx, r, b| {
                r.big.set(tx, b)?;
                r.a.set(tx, 4)
            },
            vec![(big, le(&big_new)), (a, le(&[4]))],
        ),
        (
            |tx, r, b| {
                r.c.set(tx, 5)?;
                r.big.set(tx, b.map(|w| w * 3))?;
                r.a.set(tx, 6)
            },
            vec![(c, le(&[5])), (big, le(&big_new.map(|w| w * 3))), (a, le(&[6]))],
        ),
    ];
    for (i, (body, ranges)) in cases.into_iter().enumerate() {
        let lane = pool
            .transaction(|tx, r| {
                body(tx, r, big_new)?;
                Ok::<_, Error>(tx.lane())
            })
            .unwrap();
        let line = read(&path, geo.lane_commit(lane), 64);
        let seq = word(&read(&path, geo.lane(lane), 8), 0);
        assert_eq!(
            word(&line, 0),
            seq,
            "case {i}: the commit line's seq is the completed one"
        );
        assert_eq!(word(&line, 8), ranges.len() as u64, "case {i}: n_entries");
        assert_eq!(
            word(&line, 16),
            documented_data_hash(&ranges),
            "case {i}: data_hash"
        );
        assert!(line[24..56].iter().all(|&b| b == 0), "case {i}: reserved bytes");
        assert_eq!(
            word(&line, 56),
            xxh3_64(&line[..56]) ^ 0x434F_4D4D_4954,
            "case {i}"
        );
    }
}

/// Every single-bit flip of the first record of an uncommitted transaction (its 32-byte header
/// and its 8 bytes of data), in a crash image: the record no longer verifies and the log ends
/// before it, so `inspect` finds no transaction to recover on that lane (intact: one). The hash
/// covers every bit of seq, kind, length, target and data.
#[test]
fn every_single_bit_flip_of_a_record_ends_the_log() {
    let dir = common::shm_dir();
    let (pool, path, geo) = setup(&dir);
    let image = common::path(&dir, "image.pool");
    let lane = std::cell::Cell::new(usize::MAX);
    let r = pool.transaction(|tx, r| {
        r.a.set(tx, 77)?;
        lane.set(tx.lane());
        common::crash_image(&path, &image);
        Err::<(), _>(Error::Aborted)
    });
    assert!(r.is_err());
    drop(pool);
    let lane = lane.get();
    let at = geo.lane_log(lane).0;
    let rec = read(&image, at, 40);
    assert_eq!(
        word(&rec, 8),
        (u64::from(KIND_UNDO) << 56) | 8,
        "one 8-byte undo record"
    );
    assert_eq!(word(&rec, 16), geo.root_offset);
    let region = ptm::pmem_core::RegionOptions::new().open(&image).unwrap();
    let with_log = || ptm::inspect(&region).map(|s| s.lanes_with_log);
    assert_eq!(
        with_log().unwrap(),
        1,
        "the intact record is a transaction to recover"
    );
    for bit in 0..40 * 8 {
        let mut b = rec.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        write(&image, at, &b);
        assert_eq!(
            with_log().unwrap(),
            0,
            "byte {} bit {} flipped: the record still counts",
            bit / 8,
            bit % 8
        );
    }
    write(&image, at, &rec);
    drop(region);
    // Control: the image recovers (the transaction rolled back).
    let pool = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(pool.recovery_report().rolled_back, 1);
    assert_eq!(values(&pool).0, 1);
}

/// A crash image right after a commit that wrote `a = 2` and `c = 2`, whose lane's completion
/// mark did not reach the media: `(image, lane's commit line offset, seq, geometry)`.
fn committed_unmarked(dir: &tempfile::TempDir) -> (PathBuf, u64, u64, Geometry) {
    let (pool, path, geo) = setup(dir);
    let lane = pool
        .transaction(|tx, r| {
            r.a.set(tx, 2)?;
            r.c.set(tx, 2)?;
            Ok::<_, Error>(tx.lane())
        })
        .unwrap();
    let image = common::path(dir, "image.pool");
    common::crash_image(&path, &image);
    drop(pool);
    let completed_at = geo.lane(lane);
    let seq = word(&read(&image, completed_at, 8), 0);
    write(&image, completed_at, &(seq - u64::from(MAX_LANES)).to_le_bytes());
    (image, geo.lane_commit(lane), seq, geo)
}

/// Opens the image: `(kept, rolled back)`, checking the cells hold all of the commit or none.
fn recover(image: &Path) -> (bool, bool) {
    let pool = Pool::<Root>::open(image, &opts()).unwrap();
    let rep = pool.recovery_report();
    let (a, big, c) = values(&pool);
    assert_eq!(big, [1; 80]);
    assert!(
        (a, c) == (2, 2) || (a, c) == (1, 1),
        "neither all nor nothing: {a} {c}"
    );
    ((a, c) == (2, 2), rep.rolled_back == 1)
}

/// Rewrites the commit line with `edit` applied to its first 56 bytes and a valid hash.
fn forge(image: &Path, at: u64, edit: impl FnOnce(&mut [u8])) {
    let mut line = read(image, at, 64);
    edit(&mut line[..56]);
    let h = commit_hash(&line);
    line[56..].copy_from_slice(&h.to_le_bytes());
    write(image, at, &line);
}

#[test]
fn a_commit_line_with_any_damaged_word_does_not_count_and_the_commit_is_rolled_back() {
    // Intact: complete (only the mark was lost).
    let dir = common::shm_dir();
    let (image, _, _, _) = committed_unmarked(&dir);
    assert_eq!(recover(&image), (true, false));
    // One bit flipped in each of the line's 8 words (seq, n_entries, data_hash, the reserved
    // bytes, record_hash): the line fails its hash, so recovery has no commit record and rolls
    // the transaction back (the reserved bytes are hashed too).
    for w in 0..8 {
        let dir = common::shm_dir();
        let (image, at, _, _) = committed_unmarked(&dir);
        let mut line = read(&image, at, 64);
        line[w * 8 + (w % 8)] ^= 1 << ((3 * w) % 8);
        write(&image, at, &line);
        assert_eq!(recover(&image), (false, true), "word {w} damaged");
    }
}

#[test]
fn a_forged_commit_line_leads_to_the_documented_verdict() {
    let run = |edit: fn(&mut [u8], u64)| {
        let dir = common::shm_dir();
        let (image, at, seq, _) = committed_unmarked(&dir);
        forge(&image, at, |b| edit(b, seq));
        recover(&image)
    };
    // Re-hashed unchanged: complete.
    assert_eq!(run(|_, _| {}), (true, false));
    // Another transaction's seq (the lane's next, or its previous): not this transaction's
    // commit, roll back.
    assert_eq!(
        run(|b, s| b[..8].copy_from_slice(&(s + u64::from(MAX_LANES)).to_le_bytes())),
        (false, true)
    );
    assert_eq!(
        run(|b, s| b[..8].copy_from_slice(&(s - u64::from(MAX_LANES)).to_le_bytes())),
        (false, true)
    );
    // Seq 0 with a valid hash: a line never written, roll back.
    assert_eq!(
        run(|b, _| b[..8].copy_from_slice(&0u64.to_le_bytes())),
        (false, true)
    );
    // Another data hash: the data does not match what was committed, roll back.
    assert_eq!(run(|b, _| b[16] ^= 1), (false, true));
    // More entries than the log holds: the lane's next transaction overwrote the rest of the
    // log, which it only does after this one completed: complete, whatever the data hash.
    assert_eq!(
        run(|b, _| b[8..16].copy_from_slice(&3u64.to_le_bytes())),
        (true, false)
    );
    assert_eq!(
        run(|b, _| {
            b[8..16].copy_from_slice(&3u64.to_le_bytes());
            b[16] ^= 1;
        }),
        (true, false)
    );
    // As many entries as the log holds but a different data hash: roll back. Fewer entries
    // than found: the data hash decides (it matches: complete).
    assert_eq!(
        run(|b, _| b[8..16].copy_from_slice(&1u64.to_le_bytes())),
        (true, false)
    );
    assert_eq!(
        run(|b, _| {
            b[8..16].copy_from_slice(&1u64.to_le_bytes());
            b[16] ^= 1;
        }),
        (false, true)
    );
}
