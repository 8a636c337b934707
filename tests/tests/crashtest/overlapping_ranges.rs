//! Guards the bug class "partially overlapping ranges": a transaction logs and stores to random
//! byte ranges of one block that overlap, touch, contain or straddle ranges it logged before
//! (cells of 1 to 64 bytes at any offset, snapshots ahead of stores), then aborts, commits or
//! crashes. The block must equal a `Vec<u8>` model: before the transaction after an abort or an
//! uncommitted crash, after it on commit. A store whose range is only partly covered by an undo
//! record (an overlap taken for containment) leaves bytes of an aborted transaction behind.

use std::cell::Cell;

use proptest::prelude::*;
use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions, Transaction};
use ptm_crashtest::{ensure_prefix, Explorer};

/// Bytes in the block the transactions change.
const BLOCK: usize = 192;
/// Cell lengths (each range is a `PCell<[u8; N]>` at any byte offset).
const LENS: [usize; 12] = [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 40, 64];

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    block: PCell<PPtr<[u8; BLOCK]>>,
}

/// One step inside a transaction.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Stores `value` to every byte of `[off, off + len)` (logged first unless covered).
    Store { off: usize, len: usize, value: u8 },
    /// Logs `[off, off + len)` in a snapshot batch, storing nothing.
    Snapshot { off: usize, len: usize },
}

impl Op {
    fn apply(self, model: &mut [u8]) {
        if let Op::Store { off, len, value } = self {
            model[off..off + len].fill(value);
        }
    }
}

/// Offsets are drawn near each other, so ranges overlap, touch and nest often.
fn op() -> impl Strategy<Value = Op> {
    (
        any::<bool>(),
        0..BLOCK / 2,
        prop::sample::select(&LENS[..]),
        any::<u8>(),
    )
        .prop_map(|(store, off, len, value)| {
            let off = off.min(BLOCK - len);
            if store {
                Op::Store { off, len, value }
            } else {
                Op::Snapshot { off, len }
            }
        })
}

/// `PCell<[u8; N]>` at byte `off` of the block, for an `N` in [`LENS`].
macro_rules! with_cell {
    ($tx:expr, $block:expr, $off:expr, $len:expr, |$cell:ident, $n:ident| $body:expr) => {
        match $len {
            1 => with_cell!(@ $tx, $block, $off, 1, $cell, $n, $body),
            2 => with_cell!(@ $tx, $block, $off, 2, $cell, $n, $body),
            3 => with_cell!(@ $tx, $block, $off, 3, $cell, $n, $body),
            4 => with_cell!(@ $tx, $block, $off, 4, $cell, $n, $body),
            7 => with_cell!(@ $tx, $block, $off, 7, $cell, $n, $body),
            8 => with_cell!(@ $tx, $block, $off, 8, $cell, $n, $body),
            9 => with_cell!(@ $tx, $block, $off, 9, $cell, $n, $body),
            15 => with_cell!(@ $tx, $block, $off, 15, $cell, $n, $body),
            16 => with_cell!(@ $tx, $block, $off, 16, $cell, $n, $body),
            17 => with_cell!(@ $tx, $block, $off, 17, $cell, $n, $body),
            40 => with_cell!(@ $tx, $block, $off, 40, $cell, $n, $body),
            64 => with_cell!(@ $tx, $block, $off, 64, $cell, $n, $body),
            other => unreachable!("length {other} not in LENS"),
        }
    };
    (@ $tx:expr, $block:expr, $off:expr, $len:literal, $cell:ident, $n:ident, $body:expr) => {{
        const $n: usize = $len;
        let p: PPtr<PCell<[u8; $len]>> = PPtr::<u8>::from_parts($block.tag(), $block.offset() + $off as u64).cast();
        // SAFETY: the block is a live allocation of BLOCK bytes and `off + len <= BLOCK`; a
        // `PCell` of bytes has alignment 1 and any bit pattern; this thread's transaction is the
        // only one touching the block, and every access goes through cells, which may overlap
        // (interior mutability, one thread).
        let $cell = unsafe { $tx.deref(p)? };
        $body
    }};
}

fn run_op(tx: &Transaction<'_>, block: PPtr<[u8; BLOCK]>, op: Op) -> Result<(), Error> {
    match op {
        Op::Store { off, len, value } => with_cell!(tx, block, off, len, |cell, N| cell.set(tx, [value; N])),
        Op::Snapshot { off, len } => with_cell!(tx, block, off, len, |cell, _N| tx.snapshot(|b| b.add(cell))),
    }
}

fn read_block(tx: &Transaction<'_>, block: PPtr<[u8; BLOCK]>) -> Result<Vec<u8>, Error> {
    let cell: PPtr<PCell<[u8; BLOCK]>> = block.cast();
    // SAFETY: as in `with_cell!`, the whole block as one cell.
    Ok(unsafe { tx.deref(cell)? }.get(tx).to_vec())
}

fn block_of(pool: &Pool<Root>) -> Result<PPtr<[u8; BLOCK]>, Error> {
    pool.transaction(|tx, r| Ok(r.block.get(tx)))
}

fn contents(pool: &Pool<Root>) -> Result<Vec<u8>, Error> {
    let block = block_of(pool)?;
    pool.transaction(|tx, _| read_block(tx, block))
}

/// Creates a pool whose block holds `initial`.
fn create(path: &std::path::Path, opts: &PoolOptions, initial: &[u8]) -> Pool<Root> {
    let pool = Pool::<Root>::create(path, 1 << 20, opts).unwrap();
    let mut bytes = [0u8; BLOCK];
    bytes.copy_from_slice(initial);
    pool.transaction(|tx, r| {
        let b = tx.alloc(bytes)?;
        r.block.set(tx, b)
    })
    .unwrap();
    pool
}

/// Runs `ops` in one transaction that commits when `commit`, else returns `Err` (abort).
fn transaction(pool: &Pool<Root>, ops: &[Op], commit: bool) -> Result<(), Error> {
    let block = block_of(pool)?;
    let r = pool.transaction(|tx, _| {
        for &op in ops {
            run_op(tx, block, op)?;
        }
        if commit {
            Ok(())
        } else {
            Err(Error::InvalidOptions("aborted by the test"))
        }
    });
    match (r, commit) {
        (Ok(()), true) | (Err(Error::InvalidOptions(_)), false) => Ok(()),
        (Err(e), _) => Err(e),
        (Ok(()), false) => unreachable!("an Err closure committed"),
    }
}

fn shm_dir() -> tempfile::TempDir {
    if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Transactions of overlapping, adjacent and nested ranges, each committed or aborted,
    /// against the model; the pool is reopened at the end and compared again.
    #[test]
    fn overlapping_ranges_then_abort_match_the_model(
        initial in prop::collection::vec(any::<u8>(), BLOCK),
        txs in prop::collection::vec((prop::collection::vec(op(), 1..64), any::<bool>()), 1..6),
    ) {
        let dir = shm_dir();
        let path = dir.path().join("overlap.pool");
        let opts = PoolOptions::new().layout("overlap").force_pmem(true).lanes(2);
        let pool = create(&path, &opts, &initial);
        let mut model = initial.clone();
        for (ops, commit) in &txs {
            transaction(&pool, ops, *commit).unwrap();
            if *commit {
                ops.iter().for_each(|op| op.apply(&mut model));
            }
            prop_assert_eq!(&contents(&pool).unwrap(), &model, "after {:?} ({})", ops, if *commit { "commit" } else { "abort" });
        }
        pool.close().unwrap();
        let pool = Pool::<Root>::open(&path, &opts).unwrap();
        prop_assert_eq!(contents(&pool).unwrap(), model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Three transactions of overlapping ranges (commit, abort, commit) under the crash
    /// harness: at every drain, every crash image recovers to the block after the transactions
    /// that had returned, or also the one running.
    #[test]
    fn overlapping_ranges_then_crash_match_the_model(
        initial in prop::collection::vec(any::<u8>(), BLOCK),
        txs in prop::collection::vec(prop::collection::vec(op(), 1..40), 3),
    ) {
        let plan = [(&txs[0], true), (&txs[1], false), (&txs[2], true)];
        let mut states = vec![initial.clone()];
        let mut model = initial.clone();
        for (ops, commit) in plan {
            if commit {
                ops.iter().for_each(|op| op.apply(&mut model));
            }
            states.push(model.clone());
        }
        let done = Cell::new(0usize);
        let mut bytes = [0u8; BLOCK];
        bytes.copy_from_slice(&initial);
        let report = Explorer::new()
            .seed(0x0e1a)
            .double_crash(true)
            .pool_options(PoolOptions::new().layout("overlap").lanes(1))
            .run::<Root>(
                |pool| {
                    pool.transaction(|tx, r| {
                        let b = tx.alloc(bytes)?;
                        r.block.set(tx, b)
                    })?;
                    Ok(())
                },
                |pool| {
                    for (i, (ops, commit)) in plan.iter().enumerate() {
                        transaction(pool, ops, *commit)?;
                        done.set(i + 1);
                    }
                    Ok(())
                },
                |pool| ensure_prefix(&contents(pool)?, &states, done.get()),
            )
            .unwrap();
        prop_assert!(report.failures_total == 0, "{}", report);
        prop_assert!(report.is_complete(), "{}", report);
    }
}
