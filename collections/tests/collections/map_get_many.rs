//! `PHashMap::get_many` answers as one `get` per key, in order: present and absent keys,
//! repeated keys, an empty map, maps of several segments, string keys, and keys whose lookups
//! run past their home group (tombstones), with the lookahead's prefetches in between.

use std::collections::HashMap;

use crate::common::*;
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PHashMap, PString};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Names {
    m: PHashMap<PString, u64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    #[cfg_attr(miri, ignore = "pools are files")]
    fn get_many_answers_as_get(
        entries in prop::collection::vec((0..3000u64, any::<u64>()), 0..2500),
        removed in prop::collection::vec(0..3000u64, 0..300),
        keys in prop::collection::vec(0..3200u64, 0..200),
    ) {
        let dir = shm_dir();
        let (pool, _) = create(&dir, "many.pool");
        pool.transaction(|tx, r| {
            r.m.extend(tx, entries.iter().copied())?;
            for k in &removed {
                r.m.remove(tx, k)?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
        let mut model: HashMap<u64, u64> = entries.iter().copied().collect();
        for k in &removed {
            model.remove(k);
        }
        let (many, one) = pool
            .transaction(|tx, r| {
                let many = r.m.get_many(tx, &keys)?;
                let one = keys.iter().map(|k| r.m.get(tx, k)).collect::<ptm::Result<Vec<_>>>()?;
                Ok::<_, Error>((many, one))
            })
            .unwrap();
        let want: Vec<Option<u64>> = keys.iter().map(|k| model.get(k).copied()).collect();
        prop_assert_eq!(&many, &one);
        prop_assert_eq!(many, want);
    }
}

#[test]
fn get_many_of_an_empty_map_and_of_no_keys() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "empty.pool");
    pool.transaction(|tx, r| {
        assert_eq!(r.m.get_many(tx, &[1u64, 2, 3])?, vec![None, None, None]);
        assert_eq!(r.m.get_many(tx, &[] as &[u64])?, Vec::new());
        r.m.insert(tx, 2, 20)?;
        assert_eq!(
            r.m.get_many(tx, &[1u64, 2, 2, 3])?,
            vec![None, Some(20), Some(20), None]
        );
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn get_many_with_string_keys_borrowed_as_str() {
    let dir = shm_dir();
    let pool = Pool::<Names>::create(dir.path().join("names.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..500u64 {
            r.m.insert(tx, format!("name-{i}").as_str(), i)?;
        }
        let keys: Vec<String> = (490..510).map(|i| format!("name-{i}")).collect();
        let strs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = r.m.get_many(tx, &strs)?;
        let want: Vec<Option<u64>> = (490..510).map(|i| (i < 500).then_some(i)).collect();
        assert_eq!(got, want);
        Ok::<_, Error>(())
    })
    .unwrap();
}
