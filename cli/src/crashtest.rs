//! `ptm crashtest`: runs the crash-recovery harness (crate ptm-crashtest) on built-in workloads
//! and prints one row per workload: crash points explored, images checked, failures, images per
//! second. Any failure makes the command exit 1 (after the table and the failure reports).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_collections::{PBTreeMap, PHashMap, PVec};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer, Report};
use serde_json::json;

use crate::Failure;

/// One workload's result.
struct Row {
    name: &'static str,
    report: Report,
}

/// Runs every workload at `scale` and renders the table (or JSON). Returns the output and
/// the total number of failures.
pub(crate) fn run(scale: u32, json: bool) -> Result<(String, u64), Failure> {
    let show = !json && std::io::stdout().is_terminal();
    let workloads: [(&'static str, Workload); 3] =
        [("bank", bank), ("collections", collections), ("btree", btree)];
    let mut rows = Vec::new();
    for (name, workload) in workloads {
        let bar = if show {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {pos} images checked ({per_sec}) {elapsed}")
                .map_err(|e| Failure(format!("progress style: {e}")))?,
        );
        bar.set_prefix(name);
        if show {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        let explorer = Explorer::new().scale(scale).seed(0x5eed).double_crash(true);
        let report = workload(&explorer, &bar).map_err(|e| Failure(format!("crashtest {name}: {e}")))?;
        bar.finish_and_clear();
        rows.push(Row { name, report });
    }
    let failures = rows.iter().map(|r| r.report.failures_total).sum();
    let text = if json {
        let v = json!({
            "scale": scale,
            "failures": failures,
            "workloads": rows.iter().map(|r| json!({
                "workload": r.name,
                "crash_points": r.report.crash_points,
                "points_explored": r.report.points_explored,
                "recovery_points": r.report.recovery_points,
                "images_checked": r.report.images_checked,
                "recovery_images_checked": r.report.recovery_images_checked,
                "duplicates": r.report.duplicates,
                "failures": r.report.failures_total,
                "images_per_second": r.report.images_per_second(),
                "elapsed_seconds": r.report.elapsed.as_secs_f64(),
                "complete": r.report.is_complete(),
                "line_flushes": r.report.redundant.line_flushes,
                "redundant_line_flushes": r.report.redundant.redundant_line_flushes,
                "drains": r.report.redundant.drains,
                "empty_drains": r.report.redundant.empty_drains,
                "failure_reports": r.report.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&v).map_err(|e| Failure(format!("encoding JSON: {e}")))? + "\n"
    } else {
        table(scale, &rows)
    };
    Ok((text, failures))
}

fn table(scale: u32, rows: &[Row]) -> String {
    let mut s = format!("crash exploration (scale {scale}, double crash, word fault model)\n");
    s.push_str(&format!(
        "{:<12} {:>14} {:>14} {:>9} {:>10}  {}\n",
        "workload", "crash points", "images", "failures", "images/s", "complete"
    ));
    for r in rows {
        let p = &r.report;
        s.push_str(&format!(
            "{:<12} {:>14} {:>14} {:>9} {:>10.0}  {}\n",
            r.name,
            format!("{}/{}", p.points_explored, p.crash_points),
            p.images_checked,
            p.failures_total,
            p.images_per_second(),
            if p.is_complete() {
                "yes".to_owned()
            } else {
                p.truncated
                    .map_or_else(|| "no".to_owned(), |b| format!("no ({b})"))
            }
        ));
    }
    for r in rows.iter().filter(|r| r.report.failures_total > 0) {
        s.push_str(&format!("\n{}:\n{}", r.name, r.report));
    }
    s
}

type Workload = fn(&Explorer, &ProgressBar) -> Result<Report, ptm_crashtest::Error>;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Bank {
    accounts: [PCell<u64>; 4],
}

const ACCOUNTS: usize = 4;
const OPENING: u64 = 1000;
const TRANSFERS: usize = 12;

/// The balances after `k` transfers (transfer `k` moves `10 + k` from `k % 4` to `(k + 1) % 4`).
fn bank_states() -> Vec<[u64; ACCOUNTS]> {
    let mut s = [OPENING; ACCOUNTS];
    let mut out = vec![s];
    for k in 0..TRANSFERS {
        let amount = 10 + k as u64;
        s[k % ACCOUNTS] -= amount;
        s[(k + 1) % ACCOUNTS] += amount;
        out.push(s);
    }
    out
}

/// Transfers between accounts: the total never changes, every transfer that returned survives,
/// none survives in part.
fn bank(explorer: &Explorer, bar: &ProgressBar) -> Result<Report, ptm_crashtest::Error> {
    let states = bank_states();
    let done = Cell::new(0usize);
    explorer
        .clone()
        .pool_options(PoolOptions::new().layout("crashtest-bank").lanes(1))
        .run::<Bank>(
            |pool| {
                pool.transaction(|tx, r| r.accounts.iter().try_for_each(|a| a.set(tx, OPENING)))?;
                Ok(())
            },
            |pool| {
                for k in 0..TRANSFERS {
                    pool.transaction(|tx, r| {
                        let amount = 10 + k as u64;
                        let (from, to) = (&r.accounts[k % ACCOUNTS], &r.accounts[(k + 1) % ACCOUNTS]);
                        from.set(tx, from.get(tx) - amount)?;
                        to.set(tx, to.get(tx) + amount)
                    })?;
                    done.set(k + 1);
                }
                Ok(())
            },
            |pool| {
                bar.inc(1);
                let got = pool.transaction(|tx, r| {
                    let mut b = [0u64; ACCOUNTS];
                    for (v, a) in b.iter_mut().zip(&r.accounts) {
                        *v = a.get(tx);
                    }
                    Ok::<_, ptm::Error>(b)
                })?;
                let d = done.get();
                ensure!(
                    got.iter().sum::<u64>() == OPENING * ACCOUNTS as u64,
                    "money created or lost: {got:?}"
                );
                ensure_prefix(&got, &states, d)
            },
        )
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Collections {
    v: PVec<u64>,
    m: PHashMap<u64, u64>,
}

const OPS: u64 = 16;

/// Operation `i`: every fifth removes (pop, remove key `i - 3`), the others add.
fn is_remove(i: u64) -> bool {
    i % 5 == 4
}

type CollState = (Vec<u64>, Vec<(u64, u64)>);

fn collection_states() -> Vec<CollState> {
    let (mut v, mut m) = (Vec::new(), std::collections::BTreeMap::new());
    let mut out = vec![(Vec::new(), Vec::new())];
    for i in 0..OPS {
        if is_remove(i) {
            v.pop();
            m.remove(&(i - 3));
        } else {
            v.push(i * 7);
            m.insert(i, i * i);
        }
        out.push((v.clone(), m.iter().map(|(&k, &x)| (k, x)).collect()));
    }
    out
}

/// A `PVec` and a `PHashMap` growing (reallocating) and shrinking, one operation on both per
/// transaction: after a crash they hold a prefix of the operations including every one that
/// returned, and the heap holds exactly their buffers.
fn collections(explorer: &Explorer, bar: &ProgressBar) -> Result<Report, ptm_crashtest::Error> {
    let states = collection_states();
    let done = Cell::new(0usize);
    explorer
        .clone()
        // Every size class in use takes a slab of 64-256 KiB.
        .pool_size(4 << 20)
        .pool_options(PoolOptions::new().layout("crashtest-collections").lanes(1))
        .run::<Collections>(
            |_| Ok(()),
            |pool| {
                for i in 0..OPS {
                    apply(pool, i)?;
                    done.set(i as usize + 1);
                }
                Ok(())
            },
            |pool| {
                bar.inc(1);
                check_collections(pool, &states, done.get())
            },
        )
}

fn apply(pool: &Pool<Collections>, i: u64) -> Result<(), BoxError> {
    pool.transaction(|tx, r| {
        if is_remove(i) {
            r.v.pop(tx)?;
            r.m.remove(tx, &(i - 3))?;
        } else {
            r.v.push(tx, i * 7)?;
            r.m.insert(tx, i, i * i)?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    Ok(())
}

fn check_collections(pool: &mut Pool<Collections>, states: &[CollState], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (state, buffers) = pool.transaction(|tx, r| {
        let mut m: Vec<(u64, u64)> = r.m.iter(tx).collect();
        m.sort_unstable();
        let buffers: BTreeSet<u64> =
            r.v.buffer_offset(tx)
                .into_iter()
                .chain(r.m.block_offsets(tx)?)
                .collect();
        Ok::<_, ptm::Error>(((r.v.to_vec(tx)?, m), buffers))
    })?;
    ensure_prefix(&state, states, done)?;
    ensure_heap_owns(pool, &buffers)
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Tree {
    t: PBTreeMap<u64, u64>,
}

/// Keys the B-tree workload inserts (enough for two levels: leaves split, a root appears).
const TREE_KEYS: u64 = 48;

/// Operation `i` of the B-tree workload: inserts of keys `0..TREE_KEYS` in a scattered order,
/// then removals in another scattered order down to empty (borrows, merges, root collapses).
fn tree_op(i: u64) -> (bool, u64) {
    if i < TREE_KEYS {
        (true, (i * 29) % TREE_KEYS)
    } else {
        (false, ((i - TREE_KEYS) * 17) % TREE_KEYS)
    }
}

/// A `PBTreeMap` through splits, then borrows, merges and root collapses down to empty, one
/// key per transaction: after a crash it holds a prefix of the operations including every one
/// that returned, its invariants hold (every node but the root at least half full, leaves at
/// one depth), and the heap holds exactly its nodes.
fn btree(explorer: &Explorer, bar: &ProgressBar) -> Result<Report, ptm_crashtest::Error> {
    let mut states = vec![Vec::new()];
    let mut model = std::collections::BTreeMap::new();
    for i in 0..2 * TREE_KEYS {
        match tree_op(i) {
            (true, k) => model.insert(k, k * 3),
            (false, k) => model.remove(&k),
        };
        states.push(model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
    }
    let done = Cell::new(0usize);
    explorer
        .clone()
        .pool_size(4 << 20)
        .pool_options(PoolOptions::new().layout("crashtest-btree").lanes(1))
        .run::<Tree>(
            |_| Ok(()),
            |pool| {
                for i in 0..2 * TREE_KEYS {
                    pool.transaction(|tx, r| {
                        match tree_op(i) {
                            (true, k) => r.t.insert(tx, k, k * 3)?,
                            (false, k) => r.t.remove(tx, &k)?,
                        };
                        Ok::<_, ptm::Error>(())
                    })?;
                    done.set(i as usize + 1);
                }
                Ok(())
            },
            |pool| {
                bar.inc(1);
                pool.check_heap()?;
                let (state, nodes, shape) = pool.transaction(|tx, r| {
                    let nodes: BTreeSet<u64> = r.t.node_offsets(tx)?.into_iter().collect();
                    Ok::<_, ptm::Error>((r.t.to_vec(tx)?, nodes, r.t.check_invariants(tx)))
                })?;
                let d = done.get();
                ensure!(
                    shape.is_ok(),
                    "after {d} operations the tree is malformed: {shape:?}"
                );
                ensure_prefix(&state, &states, d)?;
                ensure_heap_owns(pool, &nodes)
            },
        )
}
