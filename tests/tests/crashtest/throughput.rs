//! Measures the harness's throughput (images recovered and checked per second) on a 4 MiB pool
//! (16 lanes of 64 KiB) and on a small one (one 16 KiB lane), with and without crashes in recovery. Prints
//! the figures (the README quotes the release build):
//!
//! ```text
//! cargo test -p ptm-crashtest --release --test crashtest throughput:: -- --nocapture
//! ```

use std::cell::Cell;

use ptm::{PCell, PMutex, Persistent, PoolOptions};
use ptm_crashtest::{ensure, Explorer, Report};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    counters: [PMutex<PCell<u64>>; 8],
}

/// 10 transactions, each adding 1 to two counters; the sum is twice the committed count.
fn measure(x: Explorer) -> Report {
    let done = Cell::new(0u64);
    let report = x
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for i in 0..10usize {
                    pool.transaction(|tx, r| {
                        for c in [i % 8, (i * 3 + 1) % 8] {
                            let c = r.counters[c].lock(tx)?;
                            c.set(tx, c.get(tx) + 1)?;
                        }
                        Ok::<_, ptm::Error>(())
                    })?;
                    done.set(done.get() + 1);
                }
                Ok(())
            },
            |pool| {
                let sum = pool.transaction(|tx, r| {
                    r.counters
                        .iter()
                        .map(|c| c.lock(tx).map(|c| c.get(tx)))
                        .sum::<Result<u64, _>>()
                })?;
                let n = done.get();
                ensure!(
                    sum == 2 * n || sum == 2 * n + 2,
                    "sum {sum} after {n} transactions"
                );
                Ok(())
            },
        )
        .unwrap();
    assert!(report.failures.is_empty(), "{report}");
    report
}

#[test]
fn images_per_second() {
    let four_mib = PoolOptions::new().layout("throughput").lanes(16);
    let small = PoolOptions::new()
        .layout("throughput")
        .lanes(1)
        .lane_size(16 << 10);
    println!("pool     lanes  double crash  crash points  images  images/s");
    for (name, size, opts, double) in [
        ("4 MiB", 4u64 << 20, &four_mib, false),
        ("4 MiB", 4 << 20, &four_mib, true),
        ("256 KiB", 256 << 10, &small, false),
        ("256 KiB", 256 << 10, &small, true),
    ] {
        let r = measure(
            Explorer::new()
                .seed(9)
                .double_crash(double)
                .pool_size(size)
                .pool_options(opts.clone()),
        );
        let lanes = if size > 1 << 20 { 16 } else { 1 };
        println!(
            "{name:<8} {lanes:>5}  {:>12}  {:>12}  {:>6}  {:>8.0}",
            if double { "yes" } else { "no" },
            r.crash_points,
            r.images_checked,
            r.images_per_second()
        );
        assert!(r.is_complete(), "{r}");
    }
}
