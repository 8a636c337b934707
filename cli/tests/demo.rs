//! Guards `ptm demo`, the README's main command: the kill/recover/verify loop runs on tmpfs
//! (cache-flush domain) and on a plain file (msync domain) and reports every check passed.

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

#[test]
fn demo_survives_kills_on_tmpfs_and_on_a_plain_file() {
    let (ok, out, err) = demo(&["--kills", "4", "--seed", "7"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("invariant checks passed     4/4"), "{out}");
    assert!(out.contains("SIGKILLs                    4"), "{out}");
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
    assert!(out.contains("invariant checks passed     2/2"), "{out}");
    assert!(out.contains("(journaled)"), "{out}");
}

#[test]
fn demo_reports_a_bad_directory_in_one_line() {
    let (ok, out, err) = demo(&["--dir", "/nonexistent/ptm-demo-dir", "--kills", "1"]);
    assert!(!ok, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ptm: error: "), "{err}");
}
