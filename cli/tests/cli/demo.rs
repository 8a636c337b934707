//! Guards `ptm demo`, the README's main command: the kill/recover/verify loop runs on tmpfs
//! (cache-flush domain) and on a file on disk (journaled engine), every check passes, and the
//! kills are accounted for: each landed either between transactions or inside one (rolled back at
//! reopen, with or without undo entries to apply, or committed before the kill took effect), and
//! the counts add up. Where
//! each kill lands depends on timing, so no test asserts how many land where.

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ptm"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The leading number of the row labelled `label` (its value column starts at 28).
fn count(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.len() > 28 && l[..28].trim_end() == label)
        .unwrap_or_else(|| panic!("no row {label:?}:\n{out}"));
    line[28..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("row {label:?} has no count:\n{out}"))
}

/// Every kill is classified once and every check passed.
fn assert_kills_add_up(out: &str, kills: u64) {
    assert_eq!(count(out, "SIGKILLs"), kills, "{out}");
    assert_eq!(count(out, "reopens with recovery"), kills, "{out}");
    assert!(
        out.contains(&format!("invariant checks passed     {kills}/{kills}")),
        "{out}"
    );
    let mid = count(out, "kills mid-transaction");
    assert_eq!(mid + count(out, "kills between transactions"), kills, "{out}");
    let rolled_back = count(out, "  rolled back at reopen");
    assert_eq!(
        rolled_back + count(out, "  committed before the kill"),
        mid,
        "{out}"
    );
    assert!(count(out, "    with nothing to undo") <= rolled_back, "{out}");
    assert!(count(out, "transactions committed") > 0, "{out}");
}

#[test]
fn demo_survives_kills_on_tmpfs_and_on_a_plain_file() {
    let _pools = crate::shared();
    let (ok, out, err) = demo(&["--kills", "4", "--seed", "7"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_kills_add_up(&out, 4);
    assert!(!err.contains("panicked"), "{err}");
    if std::path::Path::new("/dev/shm").is_dir() {
        assert!(
            out.contains("(clwb)") || out.contains("(clflushopt)") || out.contains("(clflush)"),
            "{out}"
        );
    }

    let disk = tempfile::tempdir().unwrap();
    let (ok, out, err) = demo(&["--disk", "--kills", "2", "--dir", disk.path().to_str().unwrap()]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_kills_add_up(&out, 2);
    assert!(out.contains("(journaled)"), "{out}");
}

/// With the hidden `--kill-self`, each child sends itself SIGKILL inside a transaction, after its
/// stores and before its commit: every kill is mid-transaction, none committed, every one rolled
/// back. On tmpfs the stores and undo entries are in the pool, so recovery applies undo entries;
/// the journaled engine journals nothing before the commit, so there nothing survived to undo.
#[test]
fn demo_kills_inside_transactions_are_rolled_back() {
    let _pools = crate::shared();
    let (ok, out, err) = demo(&["--kills", "3", "--seed", "11", "--kill-self"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_kills_add_up(&out, 3);
    assert_eq!(count(&out, "kills mid-transaction"), 3, "{out}");
    assert_eq!(count(&out, "  committed before the kill"), 0, "{out}");
    if std::path::Path::new("/dev/shm").is_dir() {
        assert_eq!(count(&out, "  rolled back at reopen"), 3, "{out}");
        let undone = out
            .lines()
            .find(|l| l.starts_with("  rolled back at reopen"))
            .and_then(|l| l.split(" undo entries applied").next())
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(undone.unwrap_or(0) >= 3, "{out}");
    }

    let disk = tempfile::tempdir().unwrap();
    let dir = disk.path().to_str().unwrap();
    let (ok, out, err) = demo(&[
        "--disk",
        "--kills",
        "2",
        "--seed",
        "11",
        "--kill-self",
        "--dir",
        dir,
    ]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_kills_add_up(&out, 2);
    assert_eq!(count(&out, "kills mid-transaction"), 2, "{out}");
    assert_eq!(count(&out, "  committed before the kill"), 0, "{out}");
    assert_eq!(count(&out, "  rolled back at reopen"), 2, "{out}");
    assert_eq!(count(&out, "    with nothing to undo"), 2, "{out}");
}

#[test]
fn demo_reports_a_bad_directory_in_one_line() {
    let _pools = crate::shared();
    let (ok, out, err) = demo(&["--dir", "/nonexistent/ptm-demo-dir", "--kills", "1"]);
    assert!(!ok, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ptm: error: "), "{err}");
}
