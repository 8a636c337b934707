//! End-to-end tests of `ptm bench --pauses`, run as a subprocess: one JSON object with a row per
//! structure (ordered latency statistics, `ops` inserts each, the growth of the doubling
//! structures counted and bounded by doubling), or the text table; `--ops` needs `--pauses`
//! and must be positive. No timing ratio is asserted.

use std::process::{Command, Output};

use serde_json::Value;

const OPS: u64 = 20_000;

fn ptm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ptm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run ptm")
}

/// The structures every build measures, and whether their capacity is visible.
const ALWAYS: [(&str, bool); 7] = [
    ("PHashMap", true),
    ("std HashMap", true),
    ("PBTreeMap", false),
    ("std BTreeMap", false),
    ("PVec", true),
    ("PQueue", true),
    ("std Vec", true),
];

#[test]
fn pauses_json_has_every_structure_with_ordered_statistics_and_growth() {
    let _pools = crate::shared();
    let ops = OPS.to_string();
    let o = ptm(&["bench", "--pauses", "--ops", &ops, "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.is_empty(), "progress or errors on stderr: {err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["workload"], "pauses", "{out}");
    assert_eq!(v["ops"].as_u64(), Some(OPS), "{out}");
    for key in ["cpu", "fs", "flush_instruction", "dir", "ptm_domain"] {
        assert!(
            v["machine"][key].as_str().is_some_and(|s| !s.is_empty()),
            "{key}: {out}"
        );
    }
    let rows = v["results"].as_array().expect("results");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["structure"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {out}"))
    };
    let mut expected: Vec<(&str, bool)> = ALWAYS.to_vec();
    if cfg!(feature = "pmdk") {
        assert_eq!(v["pmdk"], "built", "{out}");
        assert_eq!(v["machine"]["pmdk_is_pmem"], true, "{out}");
        expected.push(("PMDK hash map", true));
    } else {
        assert!(
            v["pmdk"].as_str().unwrap().starts_with("PMDK: not built"),
            "{out}"
        );
        assert!(v["machine"]["pmdk_is_pmem"].is_null(), "{out}");
    }
    assert_eq!(rows.len(), expected.len(), "{out}");

    // Doubling from empty: at most about log2(ops) + 2 capacity changes. `PHashMap` grows by
    // segments (more, smaller steps); `PQueue` doubles a small ring, then adds chunks.
    let doublings = u64::from(64 - OPS.leading_zeros()) + 2;
    let segmented = |name: &str| name == "PHashMap" || name == "PQueue";
    for (name, tracked) in expected {
        let r = row(name);
        let u = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{name} {k}: {out}"));
        assert_eq!(u("ops"), OPS, "{name}: {out}");
        let (p50, p99, p999, max) = (u("p50_ns"), u("p99_ns"), u("p999_ns"), u("max_ns"));
        assert!(p50 > 0, "{name}: {out}");
        assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{name}: {out}");
        assert!(u("max_at") < OPS, "{name}: {out}");
        let (mean, total) = (r["mean_ns"].as_f64().unwrap(), u("total_ns"));
        assert!(mean > 0.0 && mean <= max as f64, "{name}: {out}");
        assert!(
            (mean * OPS as f64 - total as f64).abs() <= 1e-6 * total as f64 + 1.0,
            "{name}: {out}"
        );
        let peer = r["peer"].as_str().unwrap();
        assert!(peer.starts_with("std "), "{name}: {out}");
        let pr = row(peer);
        let ratio = r["max_to_peer"].as_f64().unwrap();
        assert!(
            (ratio - max as f64 / pr["max_ns"].as_f64().unwrap()).abs() < 1e-9 * ratio,
            "{out}"
        );
        assert_eq!(r["durable"], !name.starts_with("std "), "{name}: {out}");
        // Cache lines flushed by one insert: counted for ptm only. A segmented structure's
        // largest step is two 64 KiB segments (a chunk) plus a small directory; a doubling
        // vector's last growth copies half its final contents.
        let max_lines = r["max_lines"].as_u64();
        assert_eq!(
            max_lines.is_some(),
            name.starts_with('P') && !name.starts_with("PMDK"),
            "{name}: {out}"
        );
        if segmented(name) {
            assert!(max_lines.unwrap() <= 2 * 1024 + 128, "{name}: {out}");
        }
        if name == "PVec" {
            let half = 1u64 << (63 - OPS.leading_zeros());
            assert!(max_lines.unwrap() >= half * 8 / 64, "{name}: {out}");
        }
        if tracked {
            let at: Vec<u64> = r["growth_at"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} growth_at: {out}"))
                .iter()
                .map(|i| i.as_u64().unwrap())
                .collect();
            assert_eq!(u("growths"), at.len() as u64, "{name}: {out}");
            // The first insert allocates; the later growths come in order, below `ops`.
            assert_eq!(at.first(), Some(&0), "{name}: {out}");
            assert!(at.len() >= 2, "{name} never grew after its first insert: {out}");
            assert!(
                at.windows(2).all(|w| w[0] < w[1]) && at.iter().all(|&i| i < OPS),
                "{out}"
            );
            if name == "PHashMap" {
                assert!(at.len() as u64 > doublings, "{name}: too few growth steps: {out}");
            } else if name != "PQueue" {
                assert!(
                    at.len() as u64 <= doublings,
                    "{name}: more growths than doubling allows: {out}"
                );
            }
            // The slowest growing insert is one of them, no slower than the slowest of all.
            assert!(at.contains(&u("growth_max_at")), "{name}: {out}");
            assert!(u("growth_max_ns") <= max, "{name}: {out}");
        } else {
            for k in ["growths", "growth_at", "growth_max_ns", "growth_max_at"] {
                assert!(r[k].is_null(), "{name} {k}: {out}");
            }
        }
    }
}

#[test]
fn pauses_prints_the_table() {
    let _pools = crate::shared();
    let o = ptm(&["bench", "--pauses", "--ops", "2000"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.is_empty(), "progress or errors on stderr: {err}");
    assert!(out.lines().nth(1).unwrap().starts_with("machine: "), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("structure"))
        .unwrap_or_else(|| panic!("no header: {out}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "structure",
            "ops",
            "total",
            "ms",
            "mean",
            "p50",
            "p99",
            "p99.9",
            "max",
            "max",
            "at",
            "growths",
            "grow",
            "max",
            "grow",
            "at",
            "max",
            "lines",
            "max/p50",
            "peer",
            "max/peer",
            "p99/peer"
        ]
    );
    for name in ["PHashMap", "PBTreeMap", "PVec", "PQueue"] {
        let cells: Vec<&str> = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row: {out}"))
            .split_whitespace()
            .collect();
        assert_eq!(cells[1], "2000", "{out}");
    }
    let std_vec = out
        .lines()
        .find(|l| l.starts_with("std Vec"))
        .unwrap_or_else(|| panic!("no std Vec row: {out}"));
    assert!(std_vec.trim_end().ends_with("1.00x     1.00x"), "{out}");
    if !cfg!(feature = "pmdk") {
        assert!(out.contains("PMDK: not built"), "{out}");
    }
}

#[test]
fn pauses_rejects_bad_ops() {
    let _pools = crate::shared();
    for args in [
        &["bench", "--ops", "10"][..],
        &["bench", "--pauses", "--ops", "0"],
        &["bench", "--pauses", "--ops", "many"],
    ] {
        let o = ptm(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--ops") || err.contains("--pauses"),
            "{args:?}: {err}"
        );
    }
}
