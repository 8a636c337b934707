//! Guards the allocator under the crash harness: allocations and frees linked from the root,
//! in committed and aborted transactions, small (slab) and large (chunk run) blocks; after every
//! crash (double crash included) the heap metadata is consistent, the blocks allocated are exactly
//! those the root points to (no leak, no dangling pointer), and their contents are intact.

use std::cell::Cell;
use std::collections::BTreeSet;

use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions};
use ptm_crashtest::{ensure, ensure_heap_owns, BoxError, CheckResult, Explorer};

type Small = [u64; 8];
type Large = [u64; 16384]; // 128 KiB: a chunk run

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    small: [PCell<PPtr<Small>>; 6],
    large: PCell<PPtr<Large>>,
}

fn small_value(slot: usize) -> Small {
    [slot as u64 + 1; 8]
}

fn put_small(tx: &ptm::Transaction<'_>, r: &Root, slot: usize) -> ptm::Result<()> {
    let p = tx.alloc(small_value(slot))?;
    r.small[slot].set(tx, p)
}

fn free_small(tx: &ptm::Transaction<'_>, r: &Root, slot: usize) -> ptm::Result<()> {
    tx.free(r.small[slot].get(tx))?;
    r.small[slot].set(tx, PPtr::null())
}

fn step(pool: &Pool<Root>, i: usize) -> Result<(), BoxError> {
    match i {
        0 => pool.transaction(|tx, r| put_small(tx, r, 0))?,
        1 => pool.transaction(|tx, r| {
            put_small(tx, r, 1)?;
            put_small(tx, r, 2)
        })?,
        2 => pool.transaction(|tx, r| {
            free_small(tx, r, 0)?;
            put_small(tx, r, 3)
        })?,
        // Aborted: its allocation must not leak.
        3 => {
            let r: Result<(), Error> = pool.transaction(|tx, r| {
                put_small(tx, r, 4)?;
                Err(Error::InvalidOptions("abort on purpose"))
            });
            ensure!(r.is_err(), "the aborted transaction committed");
        }
        4 => pool.transaction(|tx, r| {
            let p = tx.alloc_zeroed::<Large>()?;
            r.large.set(tx, p)
        })?,
        5 => pool.transaction(|tx, r| {
            tx.free(r.large.get(tx))?;
            r.large.set(tx, PPtr::null())?;
            free_small(tx, r, 1)?;
            // Allocated and freed in the same transaction.
            let p = tx.alloc(small_value(5))?;
            tx.free(p)
        })?,
        _ => unreachable!(),
    }
    Ok(())
}

const STEPS: usize = 6;

/// Slots in use after `k` steps (small slots 0..6, the large one as 6).
fn expected(k: usize) -> BTreeSet<usize> {
    let sets: [&[usize]; STEPS + 1] = [
        &[],
        &[0],
        &[0, 1, 2],
        &[1, 2, 3],
        &[1, 2, 3],
        &[1, 2, 3, 6],
        &[2, 3],
    ];
    sets[k].iter().copied().collect()
}

fn check(pool: &mut Pool<Root>, done: usize) -> CheckResult {
    pool.check_heap()?;
    let (small, large) = pool.transaction(|tx, r| {
        Ok::<_, Error>((
            r.small.iter().map(|c| c.get(tx)).collect::<Vec<_>>(),
            r.large.get(tx),
        ))
    })?;
    let mut used = BTreeSet::new();
    let mut reachable = BTreeSet::new();
    for (slot, p) in small.iter().enumerate() {
        if !p.is_null() {
            used.insert(slot);
            reachable.insert(p.offset());
            let mut v = [0u8; 64];
            pool.region().read_at(p.offset(), &mut v)?;
            let want: Vec<u8> = small_value(slot).iter().flat_map(|w| w.to_le_bytes()).collect();
            ensure!(
                v[..] == want[..],
                "slot {slot}: block {:#x} holds {v:?}",
                p.offset()
            );
        }
    }
    if !large.is_null() {
        used.insert(6);
        reachable.insert(large.offset());
    }
    ensure!(
        used == expected(done) || (done < STEPS && used == expected(done + 1)),
        "slots {used:?} in use after {done} steps"
    );
    ensure_heap_owns(pool, &reachable)?;
    Ok(())
}

#[test]
fn allocations_never_leak_nor_dangle_across_crashes() {
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(6)
        .double_crash(true)
        .pool_size(2 << 20)
        .pool_options(PoolOptions::new().layout("alloc").lanes(1))
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for i in 0..STEPS {
                    step(pool, i)?;
                    done.set(i + 1);
                }
                Ok(())
            },
            |pool| check(pool, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
