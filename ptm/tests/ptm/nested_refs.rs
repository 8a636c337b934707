//! Guards stale [`Nested`](ptm::Nested) references at ptm's level (design: `nested.rs`): once
//! the container a reference was taken from is invalidated, writes through the reference (and
//! through references taken through it) fail with `StaleReference` while it is alive, writes
//! elsewhere do not, and dropping it lifts the check. The collections' tests cover the same
//! through their `get_ref`-style methods.

use crate::common;

use ptm::{Error, PCell, Persistent, Pool};

#[derive(Persistent, Clone, Copy)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Pair {
    a: u64,
    b: u64,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Stands in for a container's handle (its address identifies the container).
    container: PCell<u64>,
    /// Handles "stored in" the container.
    items: [PCell<Pair>; 4],
    other: PCell<u64>,
}

fn pool(dir: &tempfile::TempDir, name: &str) -> Pool<Root> {
    Pool::<Root>::create(common::path(dir, name), 8 << 20, &common::pmem()).unwrap()
}

#[test]
fn a_write_through_a_stale_nested_reference_fails_until_it_is_dropped() {
    let dir = common::shm_dir();
    let pool = pool(&dir, "nested.pool");
    pool.transaction(|tx, r| {
        let item = tx.nested(&r.container, &r.items[1]);
        item.set(tx, Pair { a: 1, b: 2 })?;
        tx.check_live(&*item)?;
        tx.invalidate_nested(&r.container);
        assert!(matches!(
            item.set(tx, Pair { a: 3, b: 4 }),
            Err(Error::StaleReference)
        ));
        assert!(matches!(tx.check_live(&*item), Err(Error::StaleReference)));
        assert_eq!(item.get(tx).a, 1, "the refused write stored nothing");
        // Other handles of the container, and other data, stay writable.
        r.items[0].set(tx, Pair { a: 5, b: 6 })?;
        r.items[2].set(tx, Pair { a: 7, b: 8 })?;
        r.other.set(tx, 9)?;
        drop(item);
        r.items[1].set(tx, Pair { a: 10, b: 11 })?;
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.items[1].get(tx).a, 10);
        assert_eq!(r.other.get(tx), 9);
        Ok::<_, Error>(())
    })
    .unwrap();
}
