//! End-to-end tests of `ptm crashtest`, run as a subprocess: at the smallest scale it explores
//! the built-in workloads without a failure, exits 0, and prints the table (text) or one JSON
//! object whose numbers agree with each other; no progress output when stdout is not a terminal.
//! Completeness is asserted by count: the explorer has no time budget, so a loaded machine only
//! makes the run slower.

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
fn crashtest_prints_a_table_and_exits_0() {
    let _pools = crate::shared();
    let o = ptm(&["crashtest", "--scale", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.is_empty(), "progress or errors on stderr: {err}");
    let mut lines = out.lines().skip(1);
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["workload", "crash", "points", "images", "failures", "images/s", "complete"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for (row, name) in rows.iter().zip(["bank", "collections", "btree"]) {
        assert_eq!(row[0], name, "{out}");
        let (explored, total) = row[1].split_once('/').expect("explored/total");
        assert_eq!(explored, total, "{out}");
        assert!(total.parse::<u64>().unwrap() > 10, "{out}");
        assert!(row[2].parse::<u64>().unwrap() > 100, "{out}");
        assert_eq!(row[3], "0", "{out}");
        assert!(row[4].parse::<f64>().unwrap() > 0.0, "{out}");
        assert_eq!(row[5], "yes", "{out}");
    }
}

#[test]
fn crashtest_json_is_valid() {
    let _pools = crate::shared();
    let o = ptm(&["crashtest", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["scale"], 1);
    assert_eq!(v["failures"], 0);
    let w = v["workloads"].as_array().expect("workloads");
    let names: Vec<&str> = w.iter().map(|w| w["workload"].as_str().unwrap()).collect();
    assert_eq!(names, ["bank", "collections", "btree"]);
    for w in w {
        assert_eq!(w["failures"], 0);
        assert_eq!(w["complete"], true);
        assert_eq!(w["points_explored"], w["crash_points"]);
        assert!(w["images_checked"].as_u64().unwrap() > 100);
        assert!(w["recovery_images_checked"].as_u64().unwrap() > 0);
        assert!(w["images_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(w["failure_reports"].as_array().map(Vec::len), Some(0));
        // Redundant persistence of the workload run: no drain with nothing pending; redundant
        // line flushes are findings (see tests/tests/crashtest/simulated_domain.rs), counted.
        assert_eq!(w["empty_drains"], 0, "{w}");
        assert_eq!(
            w["drains"].as_u64(),
            w["crash_points"].as_u64().map(|c| c - 1),
            "{w}"
        );
        assert!(
            w["redundant_line_flushes"].as_u64() <= w["line_flushes"].as_u64(),
            "{w}"
        );
    }
}

#[test]
fn crashtest_rejects_scale_0() {
    let _pools = crate::shared();
    let o = ptm(&["crashtest", "--scale", "0"]);
    assert_eq!(o.status.code(), Some(2));
}
