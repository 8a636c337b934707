//! `PHashMap` outside its structural updates and its verifier (issue 19, the mutation pass over
//! the rest of `map.rs`): the seeds fresh maps draw, and what lookups and iteration give.

use crate::common;

use std::collections::HashSet;

use common::{create, shm_dir};
use ptm::Error;

/// Each map draws its own seed at its first insert: nonzero, below `2^56`, and different from
/// map to map (two maps of one root, and the same map in two pools), so that no two maps share
/// a hash function an attacker could learn from one of them (design §13.3).
#[test]
fn each_map_draws_its_own_seed() {
    let dir = shm_dir();
    let mut seeds = HashSet::new();
    for name in ["a.pool", "b.pool", "c.pool"] {
        let (pool, _) = create(&dir, name);
        let (m, m2) = pool
            .transaction(|tx, r| {
                r.m.insert(tx, 1, 1)?;
                r.m2.insert(tx, [1, 2, 3], 4)?;
                Ok::<_, Error>((r.m.hash_seed(tx), r.m2.hash_seed(tx)))
            })
            .unwrap();
        for s in [m, m2] {
            assert!(s != 0 && s >> 56 == 0, "seed {s:#x}");
            assert!(seeds.insert(s), "seed {s:#x} drawn twice");
        }
    }
}
