//! `PHashMap`'s structural updates at their edges (issue 19, the mutation pass over insert,
//! removal, clear and the seed): what a filtered mutation run showed no test pinning.

use crate::common;

use common::{create, shm_dir};
use ptm::Error;

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
        assert!(matches!(r.m.set_hash_seed(tx, 0x99), Err(Error::InvalidOptions(_))));
        assert_eq!(r.m.hash_seed(tx), 0x1234);
        r.m.check_invariants(tx)?;
        assert_eq!(r.m.get(tx, &1)?, Some(1));
        Ok::<_, Error>(())
    })
    .unwrap();
}
