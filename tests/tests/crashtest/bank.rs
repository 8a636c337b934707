//! Guards ptm's failure atomicity and durability under the crash harness: transfers between 16
//! accounts under `PMutex`; at every crash point (and every crash inside recovery) the recovered
//! bank is the state after a prefix of the transfers, a prefix holding every transfer that had
//! returned.

use std::cell::Cell;

use ptm::{PCell, PMutex, Persistent, Pool};
use ptm_crashtest::{ensure, CheckResult, Explorer, FaultModel, Report};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Account {
    balance: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Bank {
    accounts: [PMutex<Account>; ACCOUNTS],
}

const ACCOUNTS: usize = 16;
const INITIAL: u64 = 100;

/// Deterministic transfers `(from, to, amount)` between distinct accounts.
fn transfers(n: usize) -> Vec<(usize, usize, u64)> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let from = (next() % ACCOUNTS as u64) as usize;
            let to = (from + 1 + (next() % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
            (from, to, 1 + next() % 40)
        })
        .collect()
}

/// `states[k]`: the balances after the first `k` transfers.
fn states(ts: &[(usize, usize, u64)]) -> Vec<[u64; ACCOUNTS]> {
    let mut s = [INITIAL; ACCOUNTS];
    let mut out = vec![s];
    for &(from, to, amount) in ts {
        s[from] -= amount;
        s[to] += amount;
        out.push(s);
    }
    out
}

fn balances(pool: &Pool<Bank>) -> Result<[u64; ACCOUNTS], ptm::Error> {
    pool.transaction(|tx, bank| {
        let mut b = [0; ACCOUNTS];
        for (i, a) in bank.accounts.iter().enumerate() {
            b[i] = a.lock(tx)?.balance.get(tx);
        }
        Ok(b)
    })
}

fn setup(pool: &Pool<Bank>) -> CheckResult {
    pool.transaction(|tx, bank| {
        tx.snapshot(|batch| {
            for a in &bank.accounts {
                batch.add(&a.lock(tx)?.balance)?;
            }
            Ok(())
        })?;
        for a in &bank.accounts {
            a.lock(tx)?.balance.set(tx, INITIAL)?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    Ok(())
}

/// Transfer `i`: locks in ascending account order; even transfers log both balances in one
/// batch (2 drains), odd ones one at a time (3 drains).
fn transfer(pool: &Pool<Bank>, i: usize, (from, to, amount): (usize, usize, u64)) -> Result<(), ptm::Error> {
    pool.transaction(|tx, bank| {
        let lo = bank.accounts[from.min(to)].lock(tx)?;
        let hi = bank.accounts[from.max(to)].lock(tx)?;
        let (src, dst) = if from < to { (lo, hi) } else { (hi, lo) };
        if i.is_multiple_of(2) {
            tx.snapshot(|b| {
                b.add(&src.balance)?;
                b.add(&dst.balance)
            })?;
        }
        src.balance.set(tx, src.balance.get(tx) - amount)?;
        dst.balance.set(tx, dst.balance.get(tx) + amount)
    })
}

fn explore(x: Explorer, n: usize) -> Report {
    let ts = transfers(n);
    let expected = states(&ts);
    let done = Cell::new(0usize);
    x.run::<Bank>(
        setup,
        |pool| {
            for (i, &t) in ts.iter().enumerate() {
                transfer(pool, i, t)?;
                done.set(i + 1);
            }
            Ok(())
        },
        |pool| {
            let b = balances(pool)?;
            let total: u64 = b.iter().sum();
            ensure!(total == INITIAL * ACCOUNTS as u64, "total is {total}: {b:?}");
            let k = done.get();
            ensure!(
                expected[k] == b || expected.get(k + 1) == Some(&b),
                "{k} transfers had returned, but the balances are those after {:?} transfers: {b:?}",
                expected.iter().position(|s| *s == b)
            );
            Ok(())
        },
    )
    .unwrap()
}

#[test]
fn transfers_survive_every_crash_and_every_crash_in_recovery() {
    let report = explore(
        Explorer::new().seed(1).double_crash(true).images_per_point(16),
        16,
    );
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
    // 8 batched transfers (2 drains), 8 unbatched (3 drains), open and close.
    assert!(report.crash_points >= 40, "{report}");
    assert!(report.recovery_images_checked > 0);
}

#[test]
fn transfers_survive_every_crash_in_x86_line_mode() {
    let report = explore(Explorer::new().seed(2).fault_model(FaultModel::Lines), 12);
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
