//! Drain counts per operation (the DESIGN goal: 2 per insert/update/remove, growth included;
//! 0 per read), measured with `ptm::thread_stats()`.

mod common;

use common::*;
use ptm::{Error, Pool};

fn tx_drains<T>(
    pool: &Pool<Root>,
    f: impl for<'t> FnOnce(&'t ptm::Transaction<'t>, &'t Root) -> Result<T, Error>,
) -> u64 {
    drains(|| pool.transaction(f).unwrap()).1
}

#[test]
fn vec_drains() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "d.pool");
    // First push: allocates the buffer (growth from nothing).
    assert_eq!(tx_drains(&pool, |tx, r| r.v.push(tx, 1)), 2, "first push");
    for i in 2..=40u64 {
        let grows = pool
            .transaction(|tx, r| Ok::<_, Error>(r.v.len(tx) == r.v.capacity(tx)))
            .unwrap();
        assert_eq!(
            tx_drains(&pool, |tx, r| r.v.push(tx, i)),
            2,
            "push {i} (growth: {grows})"
        );
    }
    assert_eq!(tx_drains(&pool, |tx, r| r.v.get(tx, 3)), 0, "get");
    assert_eq!(tx_drains(&pool, |tx, r| r.v.to_vec(tx)), 0, "to_vec");
    assert_eq!(tx_drains(&pool, |tx, r| r.v.set(tx, 3, 99)), 2, "set");
    assert_eq!(tx_drains(&pool, |tx, r| r.v.pop(tx)), 2, "pop");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.v.extend(tx, 0..100)),
        2,
        "extend with growth"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.v.extend(tx, 0..3)), 2, "extend");
    assert_eq!(tx_drains(&pool, |tx, r| r.v.assign(tx, 0..5)), 2, "assign");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.v.assign(tx, 0..500)),
        2,
        "assign with growth"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.v.truncate(tx, 3)), 2, "truncate");
    assert_eq!(tx_drains(&pool, |tx, r| r.v.clear(tx)), 2, "clear");
}

#[test]
fn map_drains() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "d.pool");
    let mut growths = 0;
    for k in 0..200u64 {
        let cap = pool
            .transaction(|tx, r| Ok::<_, Error>(r.m.capacity(tx)))
            .unwrap();
        assert_eq!(
            tx_drains(&pool, |tx, r| r.m.insert(tx, k, k)),
            2,
            "insert {k} (capacity {cap})"
        );
        growths += u64::from(
            pool.transaction(|tx, r| Ok::<_, Error>(r.m.capacity(tx)))
                .unwrap()
                != cap,
        );
    }
    assert!(growths >= 5, "{growths} growth steps measured");
    assert_eq!(tx_drains(&pool, |tx, r| r.m.get(tx, &5)), 0, "get hit");
    assert_eq!(tx_drains(&pool, |tx, r| r.m.get(tx, &5000)), 0, "get miss");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.contains_key(tx, &5)),
        0,
        "contains_key"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.m.insert(tx, 5, 6)), 2, "update");
    assert_eq!(tx_drains(&pool, |tx, r| r.m.remove(tx, &5)), 2, "remove");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.remove(tx, &5)),
        0,
        "remove of an absent key"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.insert(tx, 5, 7)),
        2,
        "insert into a freed slot"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.get_or_insert_with(tx, 5, || 0)),
        0,
        "get_or_insert_with, present"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.get_or_insert_with(tx, 777, || 0)),
        2,
        "get_or_insert_with, absent"
    );
    // Remove many: tombstones pile up and an insert rebuilds the table in place: still 2.
    for k in 0..150u64 {
        assert_eq!(tx_drains(&pool, |tx, r| r.m.remove(tx, &k)), 2, "remove {k}");
    }
    for k in 1000..1200u64 {
        assert_eq!(tx_drains(&pool, |tx, r| r.m.insert(tx, k, k)), 2, "insert {k}");
    }
    assert_eq!(tx_drains(&pool, |tx, r| r.m.clear(tx)), 2, "clear");
}

#[test]
fn queue_string_box_drains() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "d.pool");
    for i in 0..40u64 {
        assert_eq!(tx_drains(&pool, |tx, r| r.q.push(tx, i)), 2, "queue push {i}");
        if i % 3 == 0 {
            assert_eq!(tx_drains(&pool, |tx, r| r.q.pop(tx)), 2, "queue pop");
        }
    }
    assert_eq!(tx_drains(&pool, |tx, r| r.q.peek(tx)), 0, "queue peek");
    for i in 0..20 {
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.push_str(tx, "héllo")),
            2,
            "push_str {i}"
        );
    }
    assert_eq!(tx_drains(&pool, |tx, r| r.s.as_string(tx)), 0, "as_string");
    assert_eq!(tx_drains(&pool, |tx, r| r.s.set(tx, "short")), 2, "string set");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.s.set(tx, &"long".repeat(100))),
        2,
        "string set with growth"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.b.set(tx, 1)), 2, "box set (allocates)");
    assert_eq!(tx_drains(&pool, |tx, r| r.b.set(tx, 2)), 2, "box set (in place)");
    assert_eq!(tx_drains(&pool, |tx, r| r.b.get(tx)), 0, "box get");
    assert_eq!(tx_drains(&pool, |tx, r| r.b.free(tx)), 2, "box free");
}

#[test]
fn btree_drains() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "d.pool");
    let mut splits = 0;
    for i in 0..600i32 {
        // Alternate ends and the middle so splits happen at every level.
        let k = if i % 2 == 0 { i } else { -i * 3 };
        let nodes = pool.transaction(|tx, r| r.t.node_offsets(tx)).unwrap().len();
        assert_eq!(tx_drains(&pool, |tx, r| r.t.insert(tx, k, 1)), 2, "insert {k}");
        splits += usize::from(pool.transaction(|tx, r| r.t.node_offsets(tx)).unwrap().len() != nodes);
    }
    assert!(splits > 40, "{splits} splits measured");
    assert_eq!(tx_drains(&pool, |tx, r| r.t.get(tx, &4)), 0, "get");
    assert_eq!(tx_drains(&pool, |tx, r| r.t.insert(tx, 4, 9)), 2, "update");
    assert_eq!(tx_drains(&pool, |tx, r| r.t.remove(tx, &4)), 2, "remove");
    assert_eq!(tx_drains(&pool, |tx, r| r.t.remove(tx, &4)), 0, "remove absent");
    assert_eq!(tx_drains(&pool, |tx, r| r.t.clear(tx)), 2, "clear");
}
