//! `PHashMap`'s structural updates at their edges (issue 19, the mutation pass over insert,
//! removal, clear and the seed): what a filtered mutation run showed no test pinning.

use crate::common;

use common::{create, drains, opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PHashMap, PString};

/// `set_hash_seed` takes a seed in `1..2^56` on a map without a block, and nothing else: a
/// refused call changes nothing, an accepted one is the seed the first insert keeps.
#[test]
fn set_hash_seed_needs_an_empty_map_and_a_seed_below_2_56() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "seed.pool");
    pool.transaction(|tx, r| {
        for bad in [0, 1 << 56, u64::MAX] {
            assert!(
                matches!(r.m.set_hash_seed(tx, bad), Err(Error::InvalidOptions(_))),
                "seed {bad:#x} refused"
            );
            assert_eq!(r.m.hash_seed(tx), 0, "a refused seed {bad:#x} is not stored");
        }
        // The largest seed, then a small one: both accepted while the map holds no block.
        let max = (1 << 56) - 1;
        r.m.set_hash_seed(tx, max)?;
        assert_eq!(r.m.hash_seed(tx), max);
        r.m.set_hash_seed(tx, 0x1234)?;
        assert_eq!(r.m.hash_seed(tx), 0x1234);
        r.m.insert(tx, 1, 1)?;
        assert_eq!(r.m.hash_seed(tx), 0x1234, "the first insert keeps the seed set");
        // A map with a block refuses any seed, a valid one too.
        assert!(matches!(
            r.m.set_hash_seed(tx, 0x99),
            Err(Error::InvalidOptions(_))
        ));
        assert_eq!(r.m.hash_seed(tx), 0x1234);
        r.m.check_invariants(tx)?;
        assert_eq!(r.m.get(tx, &1)?, Some(1));
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A removal whose next slot is empty marks its slot empty, not a tombstone (no probe runs
/// through it): a map that never holds more than one key keeps its first segment however many
/// distinct keys come and go. Were each removal to leave a tombstone, the segment would fill
/// with them and be rebuilt (a new block) within a few keys.
#[test]
fn a_removal_before_an_empty_slot_leaves_no_tombstone() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "churn.pool");
    pool.transaction(|tx, r| r.m.insert(tx, 0, 0).map(drop)).unwrap();
    let first = pool
        .transaction(|tx, r| Ok::<_, Error>((r.m.block_offsets(tx)?, r.m.capacity(tx))))
        .unwrap();
    assert_eq!(first.0.len(), 1, "one segment, no directory");
    pool.transaction(|tx, r| r.m.remove(tx, &0).map(drop)).unwrap();
    for k in 1..200u64 {
        pool.transaction(|tx, r| {
            assert_eq!(r.m.insert(tx, k, k)?, None);
            assert_eq!(r.m.remove(tx, &k)?, Some(k));
            assert_eq!(
                (r.m.block_offsets(tx)?, r.m.capacity(tx)),
                first,
                "key {k}: the segment was rebuilt (tombstones left behind)"
            );
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    pool.transaction(|tx, r| {
        assert!(r.m.is_empty(tx));
        r.m.check_invariants(tx)
    })
    .unwrap();
}

/// `reserve` does nothing (no block, no drain) for 0 more entries, even on an empty map, and
/// on a map of several segments (a directory), whatever it is asked.
#[test]
fn reserve_of_nothing_or_on_a_directory_changes_nothing() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "reserve.pool");
    let blocks = |pool: &ptm::Pool<common::Root>| {
        pool.transaction(|tx, r| {
            Ok::<_, Error>((r.m.block_offsets(tx)?, r.m.capacity(tx), r.m.hash_seed(tx)))
        })
        .unwrap()
    };
    let (r, n) = drains(|| pool.transaction(|tx, r| r.m.reserve(tx, 0)));
    r.unwrap();
    assert_eq!(
        (n, blocks(&pool)),
        (0, (vec![], 0, 0)),
        "reserve(0) of an empty map"
    );
    pool.transaction(|tx, r| (0..3000u64).try_for_each(|k| r.m.insert(tx, k, k).map(drop)))
        .unwrap();
    let before = blocks(&pool);
    assert!(before.0.len() >= 3, "a directory and segments: {:?}", before.0);
    for more in [0, 1, 1000] {
        let (r, n) = drains(|| pool.transaction(|tx, r| r.m.reserve(tx, more)));
        r.unwrap();
        assert_eq!(
            (n, blocks(&pool)),
            (0, before.clone()),
            "reserve({more}) with a directory"
        );
    }
    pool.transaction(|tx, r| {
        r.m.check_invariants(tx)?;
        assert_eq!(r.m.len(tx), 3000);
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Maps whose keys own blocks and whose values do not, and the reverse.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Owning {
    keys: PHashMap<PString, u64>,
    values: PHashMap<u64, PString>,
}

/// A word no map writes: what the reused blocks held.
const JUNK: u64 = 0xA5C3_5A3C_A5C3_5A3C;

/// A fresh segment holds no stale bytes where a key or value may be read as a handle: when
/// keys or values own blocks, everything past the header is zeroed, not only the control bytes.
/// The segments here are made in blocks that held junk (blocks of every small size, filled
/// with a pattern and freed before the maps' first inserts); no word of the pattern may be left
/// in the header, control bytes or slots of a segment.
#[test]
fn a_fresh_segment_of_owning_keys_or_values_keeps_no_stale_bytes() {
    let dir = shm_dir();
    let path = dir.path().join("stale.pool");
    let pool = Pool::<Owning>::create(&path, POOL_SIZE, &opts()).unwrap();
    // Blocks of every size up to 1 KiB (the first segments are smaller), three of each.
    let junk: Vec<(u64, u64)> = pool
        .transaction(|tx, _| {
            let mut out = Vec::new();
            for size in (8..=1024u64).step_by(8) {
                for _ in 0..3 {
                    out.push((tx.alloc_bytes(size)?, size));
                }
            }
            Ok::<_, Error>(out)
        })
        .unwrap();
    pool.close().unwrap();
    let mut img = std::fs::read(&path).unwrap();
    for &(off, size) in &junk {
        for w in img[off as usize..(off + size) as usize].chunks_exact_mut(8) {
            w.copy_from_slice(&JUNK.to_le_bytes());
        }
    }
    std::fs::write(&path, img).unwrap();
    let pool = Pool::<Owning>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, _| junk.iter().try_for_each(|&(off, _)| tx.free(tx.pptr::<u8>(off))))
        .unwrap();
    // One segment each, of 8 slots (5 keys keep it under 3/4 full).
    let segs = pool
        .transaction(|tx, r| {
            for k in 0..5u64 {
                r.keys.insert(tx, format!("key {k}").as_str(), k)?;
                r.values
                    .get_or_insert_new(tx, k)?
                    .set(tx, &format!("value {k}"))?;
            }
            let mut segs = Vec::new();
            for (blocks, cap) in [
                (r.keys.block_offsets(tx)?, r.keys.capacity(tx)),
                (r.values.block_offsets(tx)?, r.values.capacity(tx)),
            ] {
                assert_eq!((blocks.len(), cap), (1, 8), "one segment of 8 slots");
                segs.push(blocks[0]);
            }
            Ok::<_, Error>(segs)
        })
        .unwrap();
    for &s in &segs {
        assert!(
            junk.iter().any(|&(off, _)| off == s),
            "the segment at {s} is not in a reused block: the test needs one"
        );
    }
    pool.close().unwrap();
    let img = std::fs::read(&path).unwrap();
    // At least the header, 8 control bytes and 8 key-value pairs.
    let bytes = 32 + 8 + 8 * (std::mem::size_of::<PString>() as u64 + 8);
    for (s, what) in segs.iter().zip(["string keys", "string values"]) {
        let seg = &img[*s as usize..(*s + bytes) as usize];
        let stale = seg.chunks_exact(8).position(|w| w == JUNK.to_le_bytes());
        assert_eq!(
            stale, None,
            "the segment of the map of {what} kept a stale word (word index)"
        );
    }
}

/// A growth step logs the old segment's array of key-value pairs (string keys own blocks) and
/// nothing past it: the bytes copied into the undo log by non-temporal stores (the records of
/// 1 KiB or more) are at most that array, however the keys are laid out.
#[test]
fn a_growth_step_logs_the_old_pairs_and_nothing_past_them() {
    let dir = shm_dir();
    let pool = Pool::<Owning>::create(dir.path().join("grow.pool"), POOL_SIZE, &opts()).unwrap();
    let mut grown = 0;
    for k in 0..200u64 {
        let cap = pool
            .transaction(|tx, r| Ok::<_, Error>(r.keys.capacity(tx)))
            .unwrap();
        let before = ptm::thread_stats();
        pool.transaction(|tx, r| r.keys.insert(tx, format!("key {k:03}").as_str(), k).map(drop))
            .unwrap();
        let nt = ptm::thread_stats().since(&before).nt_bytes;
        let cap2 = pool
            .transaction(|tx, r| Ok::<_, Error>(r.keys.capacity(tx)))
            .unwrap();
        // The old segment's pairs: `cap` slots of a string key and a `u64`.
        let pairs = cap * (std::mem::size_of::<PString>() as u64 + 8);
        assert!(
            nt <= pairs,
            "insert {k} (capacity {cap} -> {cap2}): {nt} bytes streamed into the log, pairs {pairs}"
        );
        if cap2 != cap && nt > 0 {
            grown += 1;
        }
    }
    // Pairs of 1 KiB or more are streamed (capacities 32 to 256 here): the bound is tested.
    assert!(
        grown >= 3,
        "only {grown} growth steps streamed their pairs into the log"
    );
}
