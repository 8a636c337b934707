//! Drain counts per operation (the DESIGN goal: 2 per insert/update/remove, growth included;
//! 0 per read), measured with `ptm::thread_stats()`.

use crate::common;

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

/// Drains and lines flushed by one transaction running `f`.
fn tx_cost<T>(
    pool: &Pool<Root>,
    f: impl for<'t> FnOnce(&'t ptm::Transaction<'t>, &'t Root) -> Result<T, Error>,
) -> (u64, u64) {
    let before = ptm::thread_stats();
    pool.transaction(f).unwrap();
    let d = ptm::thread_stats().since(&before);
    (d.drains, d.lines_flushed)
}

/// Vector operations that move no element cost no more than the length change they make:
/// `split_off` at the length changes nothing (0 drains, as documented), and `swap_remove` of
/// the last element is a `pop` (the same drains and lines: nothing moves into its slot).
#[test]
fn vec_operations_that_move_nothing_cost_only_their_length_change() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "d.pool");
    pool.transaction(|tx, r| r.v.extend(tx, 0..40)).unwrap();
    let at_len = tx_cost(&pool, |tx, r| r.v.split_off(tx, r.v.len(tx)));
    assert_eq!(at_len, (0, 0), "split_off at the length");
    for round in 0..4 {
        let popped = tx_cost(&pool, |tx, r| r.v.pop(tx));
        let swapped = tx_cost(&pool, |tx, r| r.v.swap_remove(tx, r.v.len(tx) - 1));
        assert_eq!(
            swapped, popped,
            "round {round}: swap_remove of the last element, pop"
        );
    }
    let left = pool.transaction(|tx, r| r.v.to_vec(tx)).unwrap();
    assert_eq!(left, (0..32).collect::<Vec<u64>>());
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

/// The shape of the B-tree (keys per node, level by level), after checking its invariants.
fn tree_shape(pool: &Pool<Root>) -> Vec<Vec<usize>> {
    pool.transaction(|tx, r| Ok::<_, Error>(r.t.check_invariants(tx)))
        .unwrap()
        .unwrap_or_else(|e| panic!("B-tree invariant: {e}"))
}

/// What one removal did to the tree's shape.
#[derive(Debug, Default)]
struct RemoveEvents {
    plain: usize,
    borrows: usize,
    merges: usize,
    /// Merges of leaves after which two internal nodes shared their keys.
    inner_borrows: usize,
    collapses: usize,
}

impl RemoveEvents {
    fn record(&mut self, before: &[Vec<usize>], after: &[Vec<usize>]) {
        let nodes = |s: &[Vec<usize>]| s.iter().map(Vec::len).sum::<usize>();
        // Nodes whose key count changed on level `l` (when it kept its node count).
        let changed = |l: usize| match (before.get(l), after.get(l)) {
            (Some(b), Some(a)) if a.len() == b.len() => b.iter().zip(a).filter(|(x, y)| x != y).count(),
            _ => 0,
        };
        if after.len() < before.len() {
            self.collapses += 1;
        } else if nodes(after) < nodes(before) {
            self.merges += 1;
            if before.len() >= 3 && changed(before.len() - 2) > 1 {
                self.inner_borrows += 1;
            }
        } else {
            // Same nodes: one leaf lost a key, or two leaves shared theirs (a borrow).
            if changed(before.len() - 1) > 1 {
                self.borrows += 1;
            } else {
                self.plain += 1;
            }
        }
    }
}

#[test]
fn btree_remove_drains() {
    let dir = shm_dir();
    let (mut pool, _) = create(&dir, "d.pool");
    // Ascending keys leave half-full leaves: a 3-level tree of mostly 8-key leaves under wide
    // internal nodes of 32 children.
    pool.transaction(|tx, r| {
        for k in 0..1200i32 {
            r.t.insert(tx, k, k as u64)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(tree_shape(&pool).len(), 3, "a 3-level tree");
    let mut events = RemoveEvents::default();
    // Every other key first (borrows and merges from half-full leaves), then the rest from both
    // ends and the middle, down to the empty tree.
    let order: Vec<i32> = (0..1200)
        .step_by(2)
        .chain((1..1200).step_by(2).rev().filter(|k| (k / 2) % 3 == 0))
        .chain((1..1200).step_by(2).filter(|k| (k / 2) % 3 != 0))
        .collect();
    for k in order {
        let before = tree_shape(&pool);
        assert_eq!(
            tx_drains(&pool, |tx, r| r.t.remove(tx, &k)),
            2,
            "remove {k} from {before:?}"
        );
        events.record(&before, &tree_shape(&pool));
        assert_eq!(
            tx_drains(&pool, |tx, r| r.t.remove(tx, &k)),
            0,
            "remove {k} again"
        );
    }
    println!("{events:?}");
    assert!(events.borrows >= 5, "{events:?}");
    assert!(events.merges >= 20, "{events:?}");
    assert!(events.inner_borrows >= 1, "{events:?}");
    // 3 levels -> 2 -> 1 -> no node.
    assert_eq!(events.collapses, 3, "{events:?}");
    assert!(tree_shape(&pool).is_empty());
    assert_eq!(pool.allocated_blocks().unwrap(), vec![], "every node freed");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.t.get(tx, &3)),
        0,
        "get in an empty tree"
    );
}
