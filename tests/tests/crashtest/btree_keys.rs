//! Guards `PBTreeMap<PString, PVec<u64>>` under the crash harness: string keys (each owning its
//! buffer) with nested vector values, through a leaf split (a separator copy allocated), nested
//! pushes, a leaf borrow (a new separator copy, the old one freed), a merge that collapses the
//! root (a separator freed, a node freed and zeroed), a transaction whose inserts split nodes
//! that its removals merge again, a clear that frees everything at every depth, and regrowth.
//! After every crash (double crash included) the map equals its contents before or after the
//! transaction that was running, satisfies the B-tree invariants (spare handle slots zero
//! included), and the heap holds exactly the blocks the tree reaches: its nodes, every leaf key
//! and separator buffer, every vector buffer (none reached twice, none leaked).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{PBTreeMap, PString, PVec};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    t: PBTreeMap<PString, PVec<u64>>,
}

type State = BTreeMap<String, Vec<u64>>;

/// Keys longer than a word (compared over several words), in the order of `i`.
fn key(i: u64) -> String {
    format!("user/{i:03}/profile")
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// `get_or_insert_new(key(i))`, then push `i`, for `i` in the range.
    Insert(u64, u64),
    /// Pushes `x` onto the vectors of the keys in the range.
    Push(u64, u64, u64),
    /// `remove_free` of the keys in the range.
    Remove(u64, u64),
    Clear,
}

/// One transaction: its steps in order, and the tree's shape after it (`None`: not checked).
type Txn = (&'static [Step], Option<&'static [&'static [usize]]>);

fn transactions() -> Vec<Txn> {
    use Step::*;
    vec![
        // The 16th key splits the full leaf 8 + 8: a separator copy is allocated.
        (&[Insert(15, 16)], Some(&[&[1], &[8, 8]])),
        // Nested pushes (no node changes), and a ninth key in the right leaf.
        (&[Push(0, 16, 100), Insert(16, 17)], Some(&[&[1], &[8, 9]])),
        // The left leaf falls to 6 and borrows from the right one (15 keys shared 7 + 8): the
        // separator is replaced by a new copy, the old one freed.
        (&[Remove(0, 2)], Some(&[&[1], &[7, 8]])),
        // The right leaf falls to 6 and merges into the left one; the root collapses (freed,
        // with the separator and the right leaf).
        (&[Remove(15, 17), Remove(9, 10)], Some(&[&[12]])),
        // Splits that allocate nodes and separators, then removals that merge them away.
        (&[Insert(20, 60), Remove(20, 58)], None),
        (&[Clear], Some(&[])),
        (&[Insert(100, 118), Push(100, 104, 7)], Some(&[&[1], &[8, 10]])),
    ]
}

fn model(s: &mut State, step: Step) {
    match step {
        Step::Insert(a, b) => (a..b).for_each(|i| s.entry(key(i)).or_default().push(i)),
        Step::Push(a, b, x) => (a..b).for_each(|i| {
            if let Some(v) = s.get_mut(&key(i)) {
                v.push(x);
            }
        }),
        Step::Remove(a, b) => (a..b).for_each(|i| {
            s.remove(&key(i));
        }),
        Step::Clear => s.clear(),
    }
}

fn apply(tx: &Transaction<'_>, r: &Root, step: Step) -> Result<(), BoxError> {
    match step {
        Step::Insert(a, b) => {
            for i in a..b {
                r.t.get_or_insert_new(tx, key(i))?.push(tx, i)?;
            }
        }
        Step::Push(a, b, x) => {
            for i in a..b {
                if let Some(v) = r.t.get_ref(tx, key(i).as_str())? {
                    v.push(tx, x)?;
                }
            }
        }
        Step::Remove(a, b) => {
            for i in a..b {
                ensure!(r.t.remove_free(tx, key(i).as_str())?, "key {i} missing");
            }
        }
        Step::Clear => r.t.clear(tx)?,
    }
    Ok(())
}

/// `states[k]`: the contents after the first `k` transactions.
fn states(start: &State, txns: &[Txn]) -> Vec<State> {
    let mut s = start.clone();
    let mut out = vec![s.clone()];
    for (steps, _) in txns {
        steps.iter().for_each(|&st| model(&mut s, st));
        out.push(s.clone());
    }
    out
}

fn shape(pool: &Pool<Root>) -> Result<Vec<Vec<usize>>, BoxError> {
    Ok(pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.t.check_invariants(tx)))??)
}

/// The contents, and every block the tree reaches (an error if one is reached twice).
fn read(tx: &Transaction<'_>, r: &Root) -> Result<(State, BTreeSet<u64>), BoxError> {
    let mut owned = BTreeSet::new();
    let mut reach = |off: Option<u64>| -> CheckResult {
        if let Some(o) = off {
            ensure!(owned.insert(o), "block {o:#x} reached twice");
        }
        Ok(())
    };
    for n in r.t.node_offsets(tx)? {
        reach(Some(n))?;
    }
    for k in r.t.separators(tx)? {
        reach(k.buffer_offset(tx))?;
    }
    let mut s = State::new();
    for (k, v) in r.t.iter_refs(tx)? {
        reach(k.buffer_offset(tx))?;
        reach(v.buffer_offset(tx))?;
        ensure!(s.insert(k.as_string(tx)?, v.to_vec(tx)?).is_none(), "a key twice");
    }
    ensure!(
        s.len() as u64 == r.t.len(tx),
        "{} entries, len {}",
        s.len(),
        r.t.len(tx)
    );
    Ok((s, owned))
}

fn check(pool: &mut Pool<Root>, expected: &[State], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (s, owned) = pool.transaction(read)?;
    ensure_prefix(&s, expected, done)?;
    shape(pool)?;
    ensure_heap_owns(pool, &owned)
}

#[test]
fn string_keyed_tree_of_vectors_survives_every_crash() {
    let txns = transactions();
    let mut start = State::new();
    model(&mut start, Step::Insert(0, 15));
    let expected = states(&start, &txns);
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(11)
        .double_crash(true)
        .pool_size(2 << 20)
        .pool_options(PoolOptions::new().layout("btree-keys").lanes(1))
        .run::<Root>(
            |pool| {
                pool.transaction(|tx, r| apply(tx, r, Step::Insert(0, 15)))?;
                let s = shape(pool)?;
                ensure!(s == [vec![15]], "setup built {s:?}");
                Ok(())
            },
            |pool| {
                let (got, _) = pool.transaction(read)?;
                ensure!(got == expected[0], "setup left {got:?}");
                for (i, (steps, want)) in txns.iter().enumerate() {
                    pool.transaction(|tx, r| steps.iter().try_for_each(|&st| apply(tx, r, st)))?;
                    done.set(i + 1);
                    let s = shape(pool)?;
                    if let Some(w) = want {
                        ensure!(
                            s == *w,
                            "transaction {i} ({steps:?}) left the shape {s:?}, not {w:?}"
                        );
                    }
                    let (got, _) = pool.transaction(read)?;
                    ensure!(got == expected[i + 1], "transaction {i}: {got:?}");
                }
                Ok(())
            },
            |pool| check(pool, &expected, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
