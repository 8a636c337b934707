//! Guards the harness on ptm workloads: a bug in the user's use of transactions (a transfer split
//! into two transactions) is caught at the first crash point where it shows, the failure
//! reproduces from its line (also in a double-crash run), and a correct twin passes. (Failures
//! found only by a crash inside recovery, and their reproduction, are in `broken_protocols.rs`.)

use std::cell::Cell;

use ptm::{PCell, Persistent, Pool};
use ptm_crashtest::{ensure, CheckResult, Explorer, Failure, ImageKind, Report};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<u64>,
}

fn run(x: Explorer, split: bool) -> Report {
    let halves = Cell::new(0u32);
    x.run::<Root>(
        |pool| Ok(pool.transaction(|tx, r| r.a.set(tx, 100))?),
        |pool: &Pool<Root>| {
            for _ in 0..2 {
                if split {
                    // BUG: the debit and the credit are separate transactions.
                    pool.transaction(|tx, r| r.a.set(tx, r.a.get(tx) - 10))?;
                    halves.set(halves.get() + 1);
                    pool.transaction(|tx, r| r.b.set(tx, r.b.get(tx) + 10))?;
                    halves.set(halves.get() + 1);
                } else {
                    pool.transaction(|tx, r| {
                        r.a.set(tx, r.a.get(tx) - 10)?;
                        r.b.set(tx, r.b.get(tx) + 10)
                    })?;
                    halves.set(halves.get() + 2);
                }
            }
            Ok(())
        },
        |pool| -> CheckResult {
            let (a, b) = pool.transaction(|tx, r| Ok::<_, ptm::Error>((r.a.get(tx), r.b.get(tx))))?;
            ensure!(
                a + b == 100,
                "money lost: a = {a}, b = {b} ({} halves returned)",
                halves.get()
            );
            Ok(())
        },
    )
    .unwrap()
}

fn explorer() -> Explorer {
    Explorer::new().seed(11)
}

fn assert_reproduces(f: &Failure, double: bool) {
    let mut x = explorer()
        .double_crash(double)
        .only_point(f.id.point)
        .only_image(f.id.image);
    let mut line = format!(
        "Explorer::new().seed(11).only_point({}).only_image({})",
        f.id.point, f.id.image
    );
    if let Some((p, i)) = f.id.recovery {
        x = x.only_recovery(p, i);
        line.push_str(&format!(".only_recovery({p}, {i})"));
    }
    assert_eq!(f.reproduction, line);
    let again = run(x, true);
    assert_eq!(again.failures_total, 1, "{again}");
    let g = &again.failures[0];
    assert_eq!((g.id, &g.message, &g.crash), (f.id, &f.message, &f.crash));
    assert_eq!(g.recovery_crash, f.recovery_crash);
}

#[test]
fn a_transfer_split_in_two_transactions_is_caught_and_reproduces() {
    let report = run(explorer(), true);
    assert!(!report.failures.is_empty(), "{report}");
    let f = &report.failures[0];
    // First seen at the commit drain of the debit: the image in which the commit record and
    // the new balance persisted (the debit had not returned yet).
    assert_eq!(
        f.message, "money lost: a = 90, b = 0 (0 halves returned)",
        "{report}"
    );
    assert!(
        matches!(f.crash.kind, ImageKind::All | ImageKind::Exhaustive { .. }),
        "{report}"
    );
    // Between the two halves, images fail too (those identical to one already checked are
    // skipped).
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.message.ends_with("(1 halves returned)")),
        "{report}"
    );
    assert!(report.to_string().contains(&f.reproduction));
    assert_reproduces(f, false);
}

#[test]
fn failures_inside_recovery_are_not_listed_for_images_that_fail_anyway() {
    let single = run(explorer(), true);
    let report = run(explorer().double_crash(true), true);
    assert!(
        report.failures.iter().all(|f| f.id.recovery.is_none()),
        "{report}"
    );
    assert_eq!(report.failures_total, single.failures_total, "{report}");
    assert!(report.failures_in_failed_recoveries > 0, "{report}");
    assert_reproduces(&report.failures[0], true);
}

#[test]
fn the_transfer_in_one_transaction_passes() {
    let report = run(explorer().double_crash(true), false);
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete());
}
