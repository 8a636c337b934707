//! Guards transactions larger than their lane: with 8 KiB lanes, transactions that log 100 KiB
//! continue their undo log in heap extents (jump records); every crash point of a committed, an
//! aborted and another committed large transaction, crashes in recovery included, recovers to
//! a whole generation of the data.

use std::cell::Cell;

use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_crashtest::{ensure, BoxError, Explorer};

const BLOCKS: usize = 25;
const WORDS: usize = 512;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// 25 × 4 KiB = 100 KiB.
    blocks: [PCell<[u64; WORDS]>; BLOCKS],
}

/// The contents of block `b` in generation `g` (generation 0: setup).
fn pattern(g: u64, b: usize) -> [u64; WORDS] {
    let mut v = [0u64; WORDS];
    for (w, x) in v.iter_mut().enumerate() {
        *x = g << 48 | (b as u64) << 32 | w as u64;
    }
    v
}

/// Writes generation `g`: the first half of the blocks logged in one batch, the rest one by one
/// (a drain each). Fails with `Err` after writing everything when `abort` is set.
fn write_generation(pool: &Pool<Root>, g: u64, abort: bool) -> Result<u64, ptm::Error> {
    let before = pool.heap_free();
    pool.transaction(|tx, root| {
        tx.snapshot(|b| {
            for cell in &root.blocks[..BLOCKS / 2] {
                b.add(cell)?;
            }
            Ok(())
        })?;
        for (i, cell) in root.blocks.iter().enumerate() {
            cell.set(tx, pattern(g, i))?;
        }
        let in_use = before - pool.heap_free();
        if abort {
            return Err(ptm::Error::InvalidOptions("abort on purpose"));
        }
        Ok(in_use)
    })
}

/// The generation the pool holds, if every block is a whole copy of one.
fn generation(pool: &Pool<Root>) -> Result<u64, BoxError> {
    pool.transaction(|tx, root| {
        let g = root.blocks[0].get(tx)[0] >> 48;
        for (i, cell) in root.blocks.iter().enumerate() {
            let v = cell.get(tx);
            if v != pattern(g, i) {
                let w = (0..WORDS).find(|&w| v[w] != pattern(g, i)[w]).unwrap_or(0);
                return Err(format!("block {i} is not generation {g}: word {w} is {:#x}", v[w]).into());
            }
        }
        Ok(g)
    })
}

#[test]
fn large_transactions_overflowing_their_lane_recover_whole() {
    let step = Cell::new(0u32);
    let extent_bytes = Cell::new(0u64);
    let report = Explorer::new()
        .seed(3)
        .double_crash(true)
        .pool_size(2 << 20)
        .pool_options(PoolOptions::new().layout("large").lanes(1).lane_size(8 << 10))
        .run::<Root>(
            |pool| {
                pool.transaction(|tx, root| {
                    for (i, cell) in root.blocks.iter().enumerate() {
                        cell.set(tx, pattern(0, i))?;
                    }
                    Ok::<_, ptm::Error>(())
                })?;
                Ok(())
            },
            |pool| {
                extent_bytes.set(write_generation(pool, 1, false)?);
                step.set(1);
                let aborted = write_generation(pool, 2, true);
                ensure!(aborted.is_err(), "the aborted transaction committed");
                step.set(2);
                write_generation(pool, 3, false)?;
                step.set(3);
                Ok(())
            },
            |pool| {
                let g = generation(pool)?;
                let allowed: &[u64] = match step.get() {
                    0 => &[0, 1],
                    1 => &[1], // generation 2 is aborted: rolled back by the abort or by recovery
                    2 => &[1, 3],
                    _ => &[3],
                };
                ensure!(allowed.contains(&g), "generation {g} after step {}", step.get());
                Ok(())
            },
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
    assert!(
        extent_bytes.get() >= 256 << 10,
        "the log did not move into a heap extent: {} bytes",
        extent_bytes.get()
    );
    // 3 transactions × (1 batch + 13 single drains + commit or 2 abort drains).
    assert!(report.crash_points >= 45, "{report}");
    assert!(
        report.max_pending > 8 << 10,
        "100 KiB of stores pending at commit: {report}"
    );
}
