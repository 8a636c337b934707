//! Whole reads of maps whose keys and values are not `Copy`: `PConcurrentMap::to_vec_owned`
//! (through each shard's `PHashMap::to_vec_owned`) copies out `PString` keys and
//! `PString`/`PVec` values under shared holds, without a reference into a shard; checked
//! against std maps across reopens and aborts, and while readers in other threads read the
//! whole map at once.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{add_block, check_abort, check_steps, shm_dir, ModelRoot};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PConcurrentMap, PString, PVec};

#[derive(Persistent)]
#[repr(C)]
struct ORoot {
    names: PConcurrentMap<PString, PString, 4>,
    /// Read out through its shards' `PHashMap::to_vec_owned`.
    lists: PConcurrentMap<u64, PVec<u64>, 2>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct OModel {
    names: BTreeMap<String, String>,
    lists: BTreeMap<u64, Vec<u64>>,
}

#[derive(Clone, Debug)]
enum OOp {
    /// Appends the text to the value of the key (inserting it empty first).
    Append(u8, String),
    Remove(u8),
    /// Pushes onto the list of the key.
    Push(u64, u64),
    ReadAll,
}

fn o_op() -> impl Strategy<Value = OOp> {
    prop_oneof![
        3 => (0..30u8, "[a-zé]{0,6}").prop_map(|(k, s)| OOp::Append(k, s)),
        1 => (0..30u8).prop_map(OOp::Remove),
        2 => (0..10u64, 0..100u64).prop_map(|(k, v)| OOp::Push(k, v)),
        1 => Just(OOp::ReadAll),
    ]
}

fn key(k: u8) -> String {
    format!("name-{k}")
}

impl ModelRoot for ORoot {
    type Model = OModel;
    type Op = OOp;

    fn apply(tx: &Transaction<'_>, r: &Self, op: &OOp, m: &OModel) -> Result<(), Error> {
        match op {
            OOp::Append(k, s) => r.names.get_or_insert_new(tx, key(*k))?.push_str(tx, s)?,
            OOp::Remove(k) => assert_eq!(r.names.remove_free(tx, &key(*k))?, m.names.contains_key(&key(*k))),
            OOp::Push(k, v) => r.lists.get_or_insert_new(tx, *k)?.push(tx, *v)?,
            OOp::ReadAll => {
                let names: BTreeMap<String, String> = r.names.to_vec_owned(tx)?.into_iter().collect();
                assert_eq!(names, m.names);
                let lists: BTreeMap<u64, Vec<u64>> = r.lists.to_vec_owned(tx)?.into_iter().collect();
                assert_eq!(lists, m.lists);
            }
        }
        Ok(())
    }

    fn apply_model(m: &mut OModel, op: &OOp) {
        match op {
            OOp::Append(k, s) => m.names.entry(key(*k)).or_default().push_str(s),
            OOp::Remove(k) => drop(m.names.remove(&key(*k))),
            OOp::Push(k, v) => m.lists.entry(*k).or_default().push(*v),
            OOp::ReadAll => {}
        }
    }

    fn read(pool: &Pool<Self>) -> OModel {
        pool.transaction(|tx, r| {
            Ok::<_, Error>(OModel {
                names: r.names.to_vec_owned(tx)?.into_iter().collect(),
                lists: r.lists.to_vec_owned(tx)?.into_iter().collect(),
            })
        })
        .unwrap()
    }

    fn reachable(pool: &Pool<Self>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            for b in r
                .names
                .block_offsets(tx)?
                .into_iter()
                .chain(r.lists.block_offsets(tx)?)
            {
                add_block(&mut out, Some(b));
            }
            for i in 0..4 {
                let shard = r.names.lock_shard(tx, i)?;
                for (k, v) in shard.iter_refs(tx) {
                    add_block(&mut out, k.buffer_offset(tx));
                    add_block(&mut out, v.buffer_offset(tx));
                }
            }
            for i in 0..2 {
                let shard = r.lists.lock_shard(tx, i)?;
                assert_eq!(shard.to_vec_owned(tx)?.len() as u64, shard.len(tx));
                for (_, v) in shard.iter_refs(tx) {
                    add_block(&mut out, v.buffer_offset(tx));
                }
            }
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random transactions against std maps, reopening after some, with exact leak checks.
    #[test]
    fn owned_reads_match_std(
        steps in prop::collection::vec((prop::collection::vec(o_op(), 1..8), any::<bool>()), 1..10),
    ) {
        let dir = shm_dir();
        check_steps::<ORoot>(&dir.path().join("o.pool"), &steps);
    }

    /// A failed transaction changes nothing.
    #[test]
    fn owned_reads_after_aborts(
        before in prop::collection::vec(o_op(), 0..10),
        ops in prop::collection::vec(o_op(), 1..6),
    ) {
        let dir = shm_dir();
        check_abort::<ORoot>(&dir.path().join("a.pool"), &before, &ops);
    }
}

/// Readers in other threads copy the whole map out while one thread writes: every read sees a
/// committed state (each transaction of the writer appends one letter to every name, so all
/// names of one read have the same length), whatever the interleaving.
#[test]
fn whole_reads_from_many_threads_see_committed_states() {
    let dir = shm_dir();
    let pool = Arc::new(
        Pool::<ORoot>::create(
            dir.path().join("t.pool"),
            common::POOL_SIZE,
            &common::opts().lanes(4),
        )
        .unwrap(),
    );
    pool.transaction(|tx, r| (0..12).try_for_each(|k| r.names.get_or_insert_new(tx, key(k)).map(drop)))
        .unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let names = pool.transaction(|tx, r| r.names.to_vec_owned(tx)).unwrap();
                    assert_eq!(names.len(), 12);
                    let lens: BTreeSet<usize> = names.iter().map(|(_, v)| v.len()).collect();
                    assert_eq!(lens.len(), 1, "one committed state: {names:?}");
                }
            })
        })
        .collect();
    // The writer locks the shards in ascending order, as the readers do: no lock-order wait.
    let mut keys: Vec<String> = (0..12).map(key).collect();
    keys.sort_by_key(|k| pool.transaction(|tx, r| r.names.shard_index(tx, k)).unwrap());
    for _ in 0..20 {
        pool.transaction(|tx, r| {
            keys.iter()
                .try_for_each(|k| r.names.get_or_insert_new(tx, k)?.push_str(tx, "x"))
        })
        .unwrap();
    }
    for t in readers {
        t.join().unwrap();
    }
}
