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

/// `PCell::set_unchecked`, for a collection moving the handles it stores, skips only the stale
/// check: it stores through a stale reference, logs the old value first (an abort restores it),
/// and the value is there for the rest of the transaction and after commit.
#[test]
fn set_unchecked_stores_through_a_stale_reference_and_logs_the_old_value() {
    let dir = common::shm_dir();
    let pool = pool(&dir, "unchecked.pool");
    pool.transaction(|tx, r| r.items[3].set(tx, Pair { a: 1, b: 1 }))
        .unwrap();
    let aborted: Result<(), Error> = pool.transaction(|tx, r| {
        let item = tx.nested(&r.container, &r.items[3]);
        tx.invalidate_nested(&r.container);
        item.set_unchecked(tx, Pair { a: 2, b: 2 })?;
        assert_eq!(item.get(tx).a, 2, "stored");
        Err(Error::InvalidOptions("abort on purpose"))
    });
    assert!(matches!(aborted, Err(Error::InvalidOptions(_))));
    pool.transaction(|tx, r| {
        assert_eq!(r.items[3].get(tx).a, 1, "rolled back: logged before the store");
        let item = tx.nested(&r.container, &r.items[3]);
        tx.invalidate_nested(&r.container);
        item.set_unchecked(tx, Pair { a: 3, b: 3 })
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.items[3].get(tx).a, 3, "committed");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Staleness spreads to references taken through a stale reference's bytes, and only those: a
/// reference taken from the handle right after a stale one's bytes (the next element) stays
/// live.
#[test]
fn a_reference_taken_from_the_next_handle_stays_live() {
    let dir = common::shm_dir();
    let pool = pool(&dir, "adjacent.pool");
    pool.transaction(|tx, r| {
        // `items[1]`, a handle of the container, and `items[2]`, the next one, 16 bytes on.
        let first = tx.nested(&r.container, &r.items[1]);
        let through = tx.nested(&*first, &r.items[0]);
        let next = tx.nested(&r.items[2], &r.other);
        tx.invalidate_nested(&r.container);
        assert!(matches!(
            through.set(tx, Pair { a: 1, b: 1 }),
            Err(Error::StaleReference)
        ));
        next.set(tx, 5)?;
        assert_eq!(next.get(tx), 5);
        drop((first, through, next));
        Ok::<_, Error>(())
    })
    .unwrap();
}
