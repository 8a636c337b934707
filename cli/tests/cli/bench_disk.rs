//! End-to-end tests of `ptm bench --disk DIR`, run as a subprocess: one JSON object with a row
//! for every engine and workload, and sync calls counted for every engine (the interposed
//! `fsync`/`fdatasync`/`msync` see SQLite's and LMDB's C code as well as Rust's); bad
//! directories and option mixes fail cleanly. No timing is asserted.

use std::process::{Command, Output};

use serde_json::Value;

const ENGINES: [&str; 7] = [
    "ptm-journaled",
    "ptm-buffered",
    "ptm-msync",
    "ptm-paged",
    "SQLite",
    "LMDB",
    "redb",
];
const WORKLOADS: [&str; 3] = ["1-word", "8-word", "4 threads"];

fn ptm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ptm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove(pmem_core::ENV_FORCE_PMEM)
        .output()
        .expect("run ptm")
}

#[test]
fn disk_json_has_every_engine_and_workload_with_sync_counts() {
    let _pools = crate::shared();
    // Under target/ (a real disk here), not the system temp dir, which may be tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.path().to_str().expect("utf-8 path");
    let o = ptm(&["bench", "--disk", path, "--ops", "20", "--rounds", "1", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.is_empty(), "progress or errors on stderr: {err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["workload"], "disk", "{out}");
    assert_eq!(v["rounds"], 1, "{out}");
    assert_eq!(v["ops_per_round"], 20, "{out}");
    assert_eq!(v["sync_counting"], true, "{out}");
    assert!(
        v["machine"]["fs"].as_str().is_some_and(|s| !s.is_empty()),
        "{out}"
    );
    // The bench cleans up after itself.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left files behind"
    );

    // Recovery: a full journal (near the 64 MiB default bound) replayed at open, for small and
    // large transactions.
    let recovery = v["recovery"].as_array().expect("recovery rows");
    assert_eq!(recovery.len(), 2, "{out}");
    for r in recovery {
        assert!(r["journal_bytes"].as_u64().unwrap() >= 48 << 20, "{out}");
        assert!(r["records"].as_u64().unwrap() > 0, "{out}");
        assert!(r["open_ms"].as_f64().unwrap() > 0.0, "{out}");
    }

    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), ENGINES.len() * WORKLOADS.len(), "{out}");
    for engine in ENGINES {
        for workload in WORKLOADS {
            let row = rows
                .iter()
                .find(|r| r["engine"] == engine && r["workload"] == workload)
                .unwrap_or_else(|| panic!("no {engine} {workload} row: {out}"));
            assert!(
                row["us_per_tx"].as_f64().unwrap() > 0.0,
                "{engine} {workload}: {out}"
            );
            assert!(
                row["ratio_to_sqlite"].as_f64().unwrap() > 0.0,
                "{engine} {workload}: {out}"
            );
            assert_eq!(
                row["throughput_vs_one_thread"].is_null(),
                workload != "4 threads",
                "{engine} {workload}: {out}"
            );
            // Every engine but the buffered one is durable: each transaction syncs at least
            // once. A missing count (null) would mean the interposer did not see the syncs.
            if engine == "ptm-buffered" {
                // Commits return once journaled in memory; a sync every 10 ms covers many.
                if let Some(syncs) = row["syncs_per_tx"].as_f64() {
                    assert!(syncs < 1.0, "{engine} {workload}: {syncs} syncs/tx: {out}");
                }
                continue;
            }
            let syncs = row["syncs_per_tx"]
                .as_f64()
                .unwrap_or_else(|| panic!("{engine} {workload}: syncs not counted: {out}"));
            if engine == "ptm-journaled" {
                // One fdatasync per durable transaction; threads may share one (group commit).
                // (The buffered pool's sync thread may add one at a case switch.)
                assert!(syncs <= 1.5, "{engine} {workload}: {syncs} syncs/tx: {out}");
                if workload != "4 threads" {
                    assert!(syncs >= 1.0, "{engine} {workload}: {syncs} syncs/tx: {out}");
                }
                continue;
            }
            assert!(syncs >= 1.0, "{engine} {workload}: {syncs} syncs/tx: {out}");
            if engine == "ptm-msync" || engine == "ptm-paged" {
                // Two durability points per transaction (undo log, then commit).
                assert!(syncs >= 2.0, "{engine} {workload}: {syncs} syncs/tx: {out}");
            }
            if engine == "SQLite" && workload != "4 threads" {
                // WAL with synchronous=FULL: one fsync of the WAL per commit (no checkpoint
                // within 20 transactions).
                assert!(syncs < 1.5, "SQLite {workload}: {syncs} syncs/tx: {out}");
            }
        }
    }
    let calls = |engine: &str, kind: &str| {
        rows.iter()
            .filter(|r| r["engine"] == engine)
            .map(|r| r["sync_calls"][kind].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(calls("ptm-msync", "msync") > 0, "{out}");
    assert!(calls("ptm-journaled", "fdatasync") > 0, "{out}");
    assert_eq!(calls("ptm-journaled", "msync"), 0, "{out}");
    assert!(calls("ptm-paged", "fdatasync") > 0, "{out}");
    assert!(calls("SQLite", "fsync") > 0, "SQLite syncs with fsync: {out}");
    assert!(calls("LMDB", "fdatasync") > 0, "{out}");
    assert!(
        calls("redb", "fdatasync") > 0,
        "redb syncs with File::sync_data: {out}"
    );
}

#[test]
fn disk_reports_a_missing_directory_in_one_line() {
    let _pools = crate::shared();
    let o = ptm(&["bench", "--disk", "/nonexistent/ptm-disk-bench", "--ops", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ptm: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn disk_rejects_option_mixes() {
    let _pools = crate::shared();
    for args in [
        &["bench", "--disk"][..],
        &["bench", "--rounds", "3"],
        &["bench", "--disk", "target", "--pauses"],
        &["bench", "--disk", "target", "--quick"],
        &["bench", "--disk", "target", "--dir", "target"],
        &["bench", "--disk", "target", "--rounds", "0"],
    ] {
        let o = ptm(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    }
}
