//! `PBox`'s small methods: `is_null` before a value, after `set`, after `take` and after
//! `free`; `take` returns the value, empties the box and frees its block; `Debug` names the
//! type without reading the value (that needs a transaction).

use crate::common::*;
use ptm::Error;

/// Allocated blocks of every slab class (a box's block is a slab block).
fn blocks(pool: &mut ptm::Pool<Root>) -> u64 {
    pool.check_heap().unwrap().per_class.iter().sum()
}

#[test]
fn take_returns_the_value_empties_the_box_and_frees_its_block() {
    let dir = shm_dir();
    let (mut pool, _) = create(&dir, "b.pool");
    let state = |pool: &ptm::Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>((r.b.is_null(tx), r.b.get(tx)?)))
            .unwrap()
    };
    assert_eq!(state(&pool), (true, None), "a new box");
    assert_eq!(
        pool.transaction(|tx, r| r.b.take(tx)).unwrap(),
        None,
        "take of an empty box"
    );
    let empty = blocks(&mut pool);
    for v in [7u64, 9] {
        pool.transaction(|tx, r| r.b.set(tx, v)).unwrap();
        assert_eq!(state(&pool), (false, Some(v)), "after set({v})");
        assert_eq!(blocks(&mut pool), empty + 1, "a full box holds one block");
        if v == 7 {
            assert_eq!(pool.transaction(|tx, r| r.b.take(tx)).unwrap(), Some(7), "take");
        } else {
            pool.transaction(|tx, r| r.b.free(tx)).unwrap();
        }
        assert_eq!(state(&pool), (true, None), "after taking or freeing {v}");
        assert_eq!(blocks(&mut pool), empty, "the block was freed");
    }
}

#[test]
fn debug_names_the_type_without_its_value() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "b.pool");
    pool.transaction(|tx, r| r.b.set(tx, 5)).unwrap();
    let printed = pool
        .transaction(|_, r| Ok::<_, Error>(format!("{:?}", r.b)))
        .unwrap();
    assert_eq!(printed, "PBox { .. }");
}
