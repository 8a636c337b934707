//! Guards what happens after a failed durability point (issue 19, "workloads that keep
//! allocating in the same process after a failed drain"): on the journaled disk engine, with
//! I/O faults injected into the journal and the pool file (`JournalOptions::faults`: a failed
//! write, a failed `fdatasync`, or a failed `fdatasync` that also loses the writes since the
//! last good one, as in PostgreSQL's "fsyncgate"), random transactions allocate, fill and free
//! blocks, commit or abort, against a model.
//!
//! The engine's promise (docs/design.md §8.2): a transaction whose durability point fails
//! returns the I/O error and the pool is *poisoned* (every later transaction, `sync` and
//! `close` in this process fails with [`Error::Poisoned`]); reopening recovers from what
//! reached the media, where the failed transaction is either wholly present or wholly absent
//! and every transaction that returned `Ok` is present. Checked here, then the same process
//! goes on allocating and freeing on the reopened pool (and may fail again). A fault that
//! fired is never reported as success; after every reopen the heap checks, no two allocated
//! blocks overlap and the allocated blocks are exactly the linked ones.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use ptm::pmem_core::{Engine, IoFault, IoFaults, JournalOptions};
use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions, Transaction};

const SLOTS: usize = 8;
const POOL: u64 = 8 << 20;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    blocks: [PCell<PPtr<u8>>; SLOTS],
    sizes: [PCell<u64>; SLOTS],
    /// The byte every byte of the slot's block holds.
    fills: [PCell<u64>; SLOTS],
}

/// Slot -> (size, fill byte) of the block it links.
type State = BTreeMap<usize, (u64, u8)>;

#[derive(Debug, Clone)]
enum Op {
    /// Allocate `size` bytes into the slot (if empty) and fill them.
    Alloc(usize, u64, u8),
    /// Fill the slot's block (if any) with a new byte: an undo record of the whole block.
    Fill(usize, u8),
    /// Free the slot's block (if any).
    Free(usize),
}

#[derive(Debug, Clone)]
struct Step {
    /// A fault armed before the transaction: at the `n`-th write or sync from then on (it may
    /// fire in this transaction, a later one, or a checkpoint).
    fault: Option<(IoFault, u64)>,
    ops: Vec<Op>,
    commit: bool,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![3 => 1u64..=512, 1 => 513u64..=40_000];
    prop_oneof![
        3 => (0..SLOTS, size, any::<u8>()).prop_map(|(s, n, b)| Op::Alloc(s, n, b)),
        2 => (0..SLOTS, any::<u8>()).prop_map(|(s, b)| Op::Fill(s, b)),
        2 => (0..SLOTS).prop_map(Op::Free),
    ]
}

fn fault() -> impl Strategy<Value = Option<(IoFault, u64)>> {
    prop_oneof![
        4 => Just(None),
        1 => (1u64..=3).prop_map(|n| Some((IoFault::Sync, n))),
        1 => (1u64..=3).prop_map(|n| Some((IoFault::SyncLosingWrites, n))),
        1 => (1u64..=6).prop_map(|n| Some((IoFault::Write, n))),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        fault(),
        prop::collection::vec(op(), 1..5),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(fault, ops, commit)| Step { fault, ops, commit })
}

fn opts(faults: &IoFaults) -> PoolOptions {
    PoolOptions::new()
        .layout("failed-durability")
        .lanes(2)
        .lane_size(16 << 10)
        .engine(Engine::Journaled)
        // The smallest bound: checkpoints (writes and syncs of the pool file) happen within a
        // few transactions, so faults land in them too.
        .journal(JournalOptions::new().max_bytes(64 << 10).faults(faults.clone()))
}

/// The block of `state`'s slot holds `fill` in every byte (read every 61st byte and the last).
fn check_block(tx: &Transaction<'_>, slot: usize, p: PPtr<u8>, size: u64, fill: u8) -> Result<(), Error> {
    let offsets = (0..size).step_by(61).chain([size - 1]);
    for at in offsets {
        let b: PPtr<u8> = tx.pptr(p.offset() + at);
        // SAFETY: `[p, p + size)` is a live block the root links (the model says so); nothing
        // else runs.
        let got = *unsafe { tx.deref(b)? };
        assert_eq!(got, fill, "slot {slot} at {:#x} + {at}: byte", p.offset());
    }
    Ok(())
}

/// What the root links now, with each block's contents checked uniform.
fn read_state(pool: &Pool<Root>) -> Result<State, Error> {
    pool.transaction(|tx, root| {
        let mut st = State::new();
        for slot in 0..SLOTS {
            let p = root.blocks[slot].get(tx);
            if p.is_null() {
                continue;
            }
            let size = root.sizes[slot].get(tx);
            let fill = root.fills[slot].get(tx) as u8;
            check_block(tx, slot, p, size, fill)?;
            st.insert(slot, (size, fill));
        }
        Ok(st)
    })
}

/// The heap checks, no two blocks overlap, the allocated blocks are exactly the linked ones.
fn check_heap(pool: &mut Pool<Root>) {
    pool.check_heap().unwrap();
    let links = pool
        .transaction(|tx, root| {
            Ok::<_, Error>(
                (0..SLOTS)
                    .map(|s| root.blocks[s].get(tx))
                    .filter(|p| !p.is_null())
                    .map(|p| p.offset())
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap();
    crate::heap_links::assert_allocated_are_exactly_the_linked(pool, links);
}

/// Applies `ops` in `tx`, updating `next`.
fn apply(tx: &Transaction<'_>, root: &Root, ops: &[Op], next: &mut State) -> Result<(), Error> {
    for op in ops {
        match *op {
            Op::Alloc(slot, size, fill) if !next.contains_key(&slot) => {
                let off = match tx.alloc_bytes(size) {
                    Ok(off) => off,
                    Err(Error::OutOfSpace { .. }) => continue,
                    Err(e) => return Err(e),
                };
                // SAFETY: the block was just allocated by this transaction, `size` bytes.
                unsafe { tx.fill_bytes(tx.pptr(off), fill, size)? };
                root.blocks[slot].set(tx, tx.pptr(off))?;
                root.sizes[slot].set(tx, size)?;
                root.fills[slot].set(tx, u64::from(fill))?;
                next.insert(slot, (size, fill));
            }
            Op::Fill(slot, fill) => {
                let Some(&(size, _)) = next.get(&slot) else {
                    continue;
                };
                // SAFETY: the slot's live block, `size` bytes, reached only by this transaction.
                unsafe { tx.fill_bytes(root.blocks[slot].get(tx), fill, size)? };
                root.fills[slot].set(tx, u64::from(fill))?;
                next.insert(slot, (size, fill));
            }
            Op::Free(slot) if next.contains_key(&slot) => {
                tx.free(root.blocks[slot].get(tx))?;
                root.blocks[slot].set(tx, PPtr::null())?;
                root.sizes[slot].set(tx, 0)?;
                root.fills[slot].set(tx, 0)?;
                next.remove(&slot);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reopens after a failed durability point: the state must be `before` or `after` the failed
/// transaction (`None`: it aborted, so only `before`). Returns the state found.
fn reopen(path: &Path, faults: &IoFaults, before: &State, after: Option<&State>) -> (Pool<Root>, State) {
    faults.arm(IoFault::Write, 0);
    let mut pool = Pool::<Root>::open(path, &opts(faults)).unwrap();
    let found = read_state(&pool).unwrap();
    assert!(
        found == *before || Some(&found) == after,
        "after the failed durability point and a reopen: {found:?}, expected {before:?} or {after:?}"
    );
    check_heap(&mut pool);
    (pool, found)
}

fn run(steps: &[Step]) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("failed.pool");
    let faults = IoFaults::new();
    let mut pool = Pool::<Root>::create(&path, POOL, &opts(&faults)).unwrap();
    let mut model = State::new();
    let mut failures = 0;
    for (i, step) in steps.iter().enumerate() {
        if let Some((fault, n)) = step.fault {
            faults.arm(fault, n);
        }
        let fired = faults.fired();
        let mut next = model.clone();
        let r = pool.transaction(|tx, root| {
            apply(tx, root, &step.ops, &mut next)?;
            if step.commit {
                Ok(())
            } else {
                Err(Error::InvalidOptions("abort"))
            }
        });
        let failed = match r {
            Ok(()) => {
                assert_eq!(
                    faults.fired(),
                    fired,
                    "step {i}: a fault fired and the commit returned Ok"
                );
                model = next;
                continue;
            }
            Err(Error::InvalidOptions("abort")) if faults.fired() == fired => continue,
            // The abort's own drains failed: the pool is poisoned as well.
            Err(Error::InvalidOptions("abort")) => None,
            Err(Error::Poisoned) => panic!("step {i}: poisoned before any failure"),
            Err(e) => {
                assert!(
                    faults.fired() > fired,
                    "step {i}: failed with no fault fired: {e}"
                );
                assert!(
                    matches!(e, Error::Core(ptm::pmem_core::Error::Io { .. })),
                    "step {i}: {e}"
                );
                step.commit.then_some(next)
            }
        };
        failures += 1;
        // Poisoned: nothing more in this process, whatever it is.
        let again = pool.transaction(|tx, root| root.sizes[0].set(tx, 7));
        assert!(
            matches!(again, Err(Error::Poisoned)),
            "step {i}: after the failure: {again:?}"
        );
        assert!(
            matches!(pool.sync(), Err(Error::Poisoned)),
            "step {i}: sync after the failure"
        );
        assert!(
            matches!(pool.close(), Err(Error::Poisoned)),
            "step {i}: close after the failure"
        );
        let (reopened, found) = reopen(&path, &faults, &model, failed.as_ref());
        pool = reopened;
        model = found;
    }
    // No fault pending: a clean close, and the model holds after the last reopen.
    faults.arm(IoFault::Write, 0);
    check_heap(&mut pool);
    pool.close().unwrap();
    let pool = Pool::<Root>::open(&path, &opts(&faults)).unwrap();
    assert_eq!(
        read_state(&pool).unwrap(),
        model,
        "after {failures} failures and a clean close"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn failed_durability_points_poison_the_pool_and_reopen_to_the_model(steps in prop::collection::vec(step(), 1..24)) {
        run(&steps);
    }
}

/// Each fault kind once, at the first sync or write of a committing transaction that fills a
/// block, then more work on the reopened pool.
#[test]
fn each_fault_kind_at_a_commit_then_more_work() {
    let fill = |b| {
        vec![
            Op::Alloc(0, 3000, 1),
            Op::Fill(0, b),
            Op::Alloc(1, 100, b),
            Op::Free(2),
        ]
    };
    let mut steps = vec![Step {
        fault: None,
        ops: vec![Op::Alloc(2, 20_000, 9)],
        commit: true,
    }];
    for (k, kind) in [IoFault::Sync, IoFault::SyncLosingWrites, IoFault::Write]
        .into_iter()
        .enumerate()
    {
        steps.push(Step {
            fault: Some((kind, 1)),
            ops: fill(k as u8 + 2),
            commit: true,
        });
        steps.push(Step {
            fault: None,
            ops: vec![Op::Free(0), Op::Free(1), Op::Alloc(2, 5000, 3)],
            commit: true,
        });
    }
    run(&steps);
}
