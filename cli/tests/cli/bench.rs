//! End-to-end tests of `ptm bench --quick`, run as a subprocess: one JSON object with the ptm,
//! SQLite, LMDB and write+fsync rows of both updates (positive times, ptm at 2 drains per durable update), or the
//! text table; no progress output when stdout is not a terminal.

use std::process::{Command, Output};

use serde_json::Value;

fn ptm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ptm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run ptm")
}

#[test]
fn bench_quick_json_has_ptm_sqlite_and_lmdb_rows() {
    let _pools = crate::shared();
    let o = ptm(&["bench", "--quick", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.is_empty(), "progress or errors on stderr: {err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["quick"], true, "{out}");
    assert!(v["batches"].as_u64().unwrap() >= 3, "{out}");
    assert!(v["ops_per_batch"].as_u64().unwrap() > 0, "{out}");
    for key in ["cpu", "fs", "flush_instruction", "dir"] {
        assert!(
            v["machine"][key].as_str().is_some_and(|s| !s.is_empty()),
            "{key}: {out}"
        );
    }
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1, "{out}");
    let rows = v["results"].as_array().expect("results");
    let row = |op: &str, system: &str| {
        rows.iter()
            .find(|r| r["operation"] == op && r["system"] == system)
            .unwrap_or_else(|| panic!("no {op} {system} row: {out}"))
    };
    for op in ["1-word", "8-word"] {
        let p = row(op, "ptm");
        let ptm_ns = p["ns_per_op"].as_f64().unwrap();
        assert!(ptm_ns > 0.0, "{out}");
        assert_eq!(p["ratio_to_ptm"].as_f64(), Some(1.0), "{out}");
        assert_eq!(p["drains_per_op"].as_f64(), Some(2.0), "{out}");
        for system in ["SQLite", "LMDB", "write+fsync"] {
            let r = row(op, system);
            let ns = r["ns_per_op"].as_f64().unwrap();
            assert!(ns > 0.0, "{out}");
            let ratio = r["ratio_to_ptm"].as_f64().unwrap();
            assert!((ratio - ns / ptm_ns).abs() < 1e-6 * ratio, "{out}");
            assert!(r["drains_per_op"].is_null(), "{out}");
        }
    }
    if cfg!(feature = "pmdk") {
        assert_eq!(v["pmdk"], "built", "{out}");
        assert!(row("1-word", "PMDK")["ns_per_op"].as_f64().unwrap() > 0.0);
    } else {
        assert!(
            v["pmdk"].as_str().unwrap().starts_with("PMDK: not built"),
            "{out}"
        );
        assert!(!rows.iter().any(|r| r["system"] == "PMDK"), "{out}");
    }
}

#[test]
fn bench_quick_prints_the_table() {
    let _pools = crate::shared();
    let o = ptm(&["bench", "--quick"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.is_empty(), "progress or errors on stderr: {err}");
    assert!(out.lines().nth(1).unwrap().starts_with("machine: "), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("update"))
        .unwrap_or_else(|| panic!("no header: {out}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["update", "system", "ns/op", "vs", "ptm", "drains/op"]
    );
    for op in ["1-word", "8-word"] {
        let ptm_row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with(op) && l.split_whitespace().nth(1) == Some("ptm"))
            .unwrap_or_else(|| panic!("no {op} ptm row: {out}"))
            .split_whitespace()
            .collect();
        assert!(ptm_row[2].parse::<f64>().unwrap() > 0.0, "{out}");
        assert_eq!(ptm_row[3], "1.00x", "{out}");
        assert_eq!(ptm_row[4], "2.00", "{out}");
        for system in ["SQLite", "LMDB"] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(op) && l.split_whitespace().nth(1) == Some(system)),
                "{op} {system}: {out}"
            );
        }
    }
    if !cfg!(feature = "pmdk") {
        assert!(
            out.contains("PMDK: not built (cargo run --release -p ptm-cli --features pmdk -- bench)"),
            "{out}"
        );
    }
}

#[test]
fn bench_reports_a_bad_directory_in_one_line() {
    let _pools = crate::shared();
    let o = ptm(&["bench", "--quick", "--dir", "/nonexistent/ptm-bench-dir"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ptm: error: "), "{err}");
}
