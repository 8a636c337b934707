//! `ptm grow`: grows a pool in place (info shows the new size and heap), and a grow the file
//! system refuses (here a file-size limit, as a quota or a full disk would) fails with one
//! error line and leaves the pool unchanged.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

fn ptm(args: &[&str], file_limit: Option<u64>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptm"));
    cmd.args(args)
        .env_remove(pmem_core::ENV_FORCE_PMEM)
        .env("RUST_BACKTRACE", "1");
    if let Some(limit) = file_limit {
        // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit) run.
        unsafe {
            cmd.pre_exec(move || {
                // Writes past the limit then fail with EFBIG instead of killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    cmd.output().expect("run ptm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn grow_then_info_and_a_refused_grow() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.pool");
    let p = path.to_str().unwrap();
    let o = ptm(&["create", p, "--size", "8M"], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = ptm(&["grow", p, "--size", "64M"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("from 8 MiB to 64 MiB"), "{}", text(&o));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 20);
    let o = ptm(&["info", p, "--json"], None);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let chunks = v["transactions"]["heap_stats"]["chunks"].as_u64().unwrap();
    assert!(chunks > 200, "{chunks} chunks after the grow");
    // Refused by the file system: one error line, the pool as it was.
    let before = std::fs::read(&path).unwrap();
    let o = ptm(&["grow", p, "--size", "256M"], Some(128 << 20));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("ptm: error:") && err.lines().count() == 1,
        "{err}"
    );
    // Unchanged: its length and both header copies (opening it first bumped only the
    // transaction layer's open generation).
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "the refused grow changed the pool's length"
    );
    let n = before.len();
    assert!(after[..4096] == before[..4096], "the primary header changed");
    assert!(
        after[n - 4096..] == before[n - 4096..],
        "the backup header changed"
    );
    let o = ptm(&["info", p], None);
    assert!(o.status.success(), "{}", text(&o));
    // A size the pool cannot take.
    let o = ptm(&["grow", p, "--size", "32M"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot grow"),
        "{}",
        text(&o)
    );
}
