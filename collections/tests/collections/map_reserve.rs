//! `PHashMap::reserve`: after reserving, that many inserts rebuild nothing (the capacity and
//! the blocks stay as they are), the reserve itself costs 2 drains (0 when there is room or
//! the map has a directory), an empty map draws its seed there, the contents survive, and an
//! aborted reserve changes nothing.

use crate::common;

use common::{create, drains, shm_dir, Root};
use ptm::{Error, Pool};

fn state(pool: &Pool<Root>) -> (u64, Vec<u64>, Vec<(u64, u64)>) {
    pool.transaction(|tx, r| {
        let mut entries: Vec<(u64, u64)> = r.m.iter(tx).collect();
        entries.sort_unstable();
        r.m.check_invariants(tx)?;
        Ok::<_, Error>((r.m.capacity(tx), r.m.block_offsets(tx)?, entries))
    })
    .unwrap()
}

#[test]
fn reserved_inserts_rebuild_nothing() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "r.pool");
    // An empty map: the segment is made here, with the seed.
    let ((), n) = drains(|| pool.transaction(|tx, r| r.m.reserve(tx, 300)).unwrap());
    assert_eq!(n, 2, "reserve of an empty map");
    let seed = pool
        .transaction(|tx, r| Ok::<_, Error>(r.m.hash_seed(tx)))
        .unwrap();
    assert_ne!(seed, 0, "the seed is drawn by the reserve");
    let (cap, blocks, _) = state(&pool);
    assert!(cap * 3 >= 300 * 4, "capacity {cap} for 300 entries");
    for k in 0..300 {
        pool.transaction(|tx, r| r.m.insert(tx, k, k * 2)).unwrap();
    }
    let (cap2, blocks2, entries) = state(&pool);
    assert_eq!((cap2, &blocks2), (cap, &blocks), "no insert rebuilt the segment");
    assert_eq!(entries, (0..300).map(|k| (k, k * 2)).collect::<Vec<_>>());
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, Error>(r.m.hash_seed(tx)))
            .unwrap(),
        seed
    );
    // Room already: nothing to do.
    let ((), n) = drains(|| pool.transaction(|tx, r| r.m.reserve(tx, 10)).unwrap());
    assert_eq!((n, state(&pool).1), (0, blocks));
}

#[test]
fn reserve_rebuilds_a_small_map_and_aborts_cleanly() {
    let dir = shm_dir();
    let (mut pool, _) = create(&dir, "r.pool");
    pool.transaction(|tx, r| r.m.extend(tx, (0..20).map(|k| (k, k))))
        .unwrap();
    let before = state(&pool);
    let r = pool.transaction(|tx, r| {
        r.m.reserve(tx, 500)?;
        assert!(r.m.capacity(tx) * 3 >= 520 * 4);
        Err::<(), _>(Error::Aborted)
    });
    assert!(matches!(r, Err(Error::Aborted)));
    assert_eq!(state(&pool), before, "an aborted reserve changes nothing");
    let ((), n) = drains(|| pool.transaction(|tx, r| r.m.reserve(tx, 500)).unwrap());
    assert_eq!(n, 2, "a rebuild of the one segment");
    let (cap, blocks, entries) = state(&pool);
    assert_eq!(entries, before.2, "the entries moved intact");
    assert_eq!(blocks.len(), 1);
    for k in 20..520 {
        pool.transaction(|tx, r| r.m.insert(tx, k, k)).unwrap();
    }
    assert_eq!(state(&pool).0, cap, "500 more inserts rebuilt nothing");
    let owned = blocks_of(&pool);
    common::assert_allocated_exactly(&mut pool, &owned, "after the reserve");
}

fn blocks_of(pool: &Pool<Root>) -> std::collections::BTreeSet<u64> {
    state(pool).1.into_iter().collect()
}
