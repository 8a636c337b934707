//! Guards the simulated domain under ptm: transactions cost the drains they cost in the
//! cache-flush domain, the explorer's recoveries and checks (run inside the workload's drains)
//! leave no trace in the workload thread's persistence counters, and the crash points are
//! exactly the drains (plus the state after the last one).

use std::cell::RefCell;

use ptm::{thread_stats, DomainKind, PCell, Persistent, Pool};
use ptm_crashtest::{CheckResult, Explorer, Report};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    cells: [PCell<u64>; 8],
}

/// Runs `n` one-word transactions and one 8-range batched transaction; returns the report and
/// the drains and lines each transaction cost, seen from the workload thread.
fn run(n: u64) -> (Report, Vec<(u64, u64)>) {
    let costs = RefCell::new(Vec::new());
    let report = Explorer::new()
        .double_crash(true)
        .run::<Root>(
            |_| Ok(()),
            |pool: &Pool<Root>| -> CheckResult {
                assert_eq!(pool.domain(), DomainKind::Simulated);
                for i in 0..n {
                    let before = thread_stats();
                    pool.transaction(|tx, r| r.cells[0].set(tx, i + 1))?;
                    let d = thread_stats().since(&before);
                    costs.borrow_mut().push((d.drains, d.lines_flushed));
                }
                let before = thread_stats();
                pool.transaction(|tx, r| {
                    tx.snapshot(|b| r.cells.iter().try_for_each(|c| b.add(c)))?;
                    r.cells.iter().try_for_each(|c| c.set(tx, 9))
                })?;
                let d = thread_stats().since(&before);
                costs.borrow_mut().push((d.drains, d.lines_flushed));
                Ok(())
            },
            |pool| {
                pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.cells[0].get(tx)))?;
                Ok(())
            },
        )
        .unwrap();
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.images_checked > 0);
    (report, costs.into_inner())
}

#[test]
fn drains_and_crash_points_match_the_cache_flush_domain() {
    let (few, few_costs) = run(1);
    let (more, more_costs) = run(4);
    // 2 drains per durable transaction, batched or not, whatever the checks did meanwhile.
    assert!(
        few_costs.iter().chain(&more_costs).all(|&(d, _)| d == 2),
        "{few_costs:?} {more_costs:?}"
    );
    assert!(more_costs.iter().all(|&(_, lines)| lines > 0));
    // Every extra transaction adds exactly its drains as crash points.
    assert_eq!(more.crash_points - few.crash_points, 2 * 3, "{few}\n{more}");
}

/// Redundant persistence as a finding: the explorer reports the workload's flushes of lines no
/// store had changed and its drains with nothing pending. Bank transfers (two accounts in one
/// cache line per transaction) used to cost one redundant line flush per transaction (the commit
/// flushed each logged range on its own, so the line holding both accounts was written back
/// twice) and one per open (recovery stored and flushed the superblock's clean word, already 0).
/// Both are fixed: the workload has no redundant flush and no empty drain.
#[test]
fn redundant_persistence_is_reported_for_a_workload() {
    const TRANSFERS: u64 = 6;
    let report = Explorer::new()
        .max_points(1)
        .run::<Root>(
            |pool| {
                pool.transaction(|tx, r| r.cells.iter().try_for_each(|c| c.set(tx, 100)))?;
                Ok(())
            },
            |pool| {
                for k in 0..TRANSFERS as usize {
                    pool.transaction(|tx, r| {
                        let (from, to) = (&r.cells[k % 4], &r.cells[(k + 1) % 4]);
                        from.set(tx, from.get(tx) - 1)?;
                        to.set(tx, to.get(tx) + 1)
                    })?;
                }
                Ok(())
            },
            |_| Ok(()),
        )
        .unwrap();
    let r = report.redundant;
    println!("bank transfers: {r}");
    assert_eq!(r.empty_drains, 0, "{r}");
    assert_eq!(r.drains, report.crash_points - 1, "{r}");
    assert_eq!(r.redundant_line_flushes, 0, "redundant flushes: {r}");
    assert!(r.line_flushes > r.redundant_line_flushes, "{r}");
    assert!(report.to_string().contains("line flushes redundant"), "{report}");
}
