//! End-to-end tests of the `ptm` binary, run as a subprocess.
//!
//! They guard the tool's contract: `create`/`info`/`check` print what they claim (text and
//! JSON agree with the pool header), and every bad input — malformed sizes, an existing file,
//! a file that is not a pool, an empty or truncated file, a pool locked by another handle, a
//! corrupted header copy, a missing file — ends in one clear `ptm: error:` line on stderr with
//! a non-zero exit and never a panic or backtrace; `check --repair` restores a damaged copy.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const POOL: u64 = 1 << 20;

/// Runs `ptm` with `args`, in a controlled environment (no forced domain unless asked, and a
/// backtrace requested so that one would show if the tool ever panicked).
fn ptm_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptm"));
    cmd.args(args)
        .env_remove(pmem_core::ENV_FORCE_PMEM)
        .env_remove(pmem_core::ENV_EADR)
        .env_remove(pmem_core::ENV_SYSFS_ROOT)
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ptm")
}

fn ptm(args: &[&str]) -> Output {
    ptm_env(args, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and an empty stderr; returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "expected success, got {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(stderr(&o), "", "stderr of a successful run");
    stdout(&o)
}

/// Asserts an operational failure: exit code 1, exactly one `ptm: error:` line on stderr, no
/// panic. Returns that line.
fn fails(o: Output) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1\nstdout:\n{}\nstderr:\n{err}",
        stdout(&o)
    );
    assert_no_panic(&err);
    assert_eq!(err.lines().count(), 1, "one line on stderr, got:\n{err}");
    assert!(err.starts_with("ptm: error: "), "error prefix: {err}");
    err
}

fn assert_no_panic(err: &str) {
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("backtrace"), "backtrace: {err}");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A fresh directory and a `POOL`-byte pool created by `ptm create` in it.
fn fresh_pool(layout: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("test.pool");
    ok(ptm(&["create", s(&path), "--size", "1M", "--layout", layout]));
    (dir, path)
}

fn flip_byte(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).expect("write");
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
fn create_then_info_text_and_json() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.pool");
    let out = ok(ptm(&[
        "create",
        s(&path),
        "--size",
        "1MiB",
        "--layout",
        "cli-test",
    ]));
    assert!(out.contains(s(&path)), "{out}");
    assert!(out.contains("1 MiB"), "{out}");
    assert!(out.contains("domain"), "{out}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), POOL);

    let text = ok(ptm(&["info", s(&path)]));
    for want in [
        "layout",
        "\"cli-test\"",
        "uuid",
        "version",
        "1 MiB",
        "data area",
        "0x1000..0xff000",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    for want in [
        "backing         file",
        "MAP_SYNC",
        "domain",
        "pointer tag",
        "created",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let v = json(&ok(ptm(&["info", s(&path), "--json"])));
    let h = &v["header"];
    assert_eq!(v["path"], s(&path));
    assert_eq!(h["layout"], "cli-test");
    assert_eq!(h["version"], 1);
    assert_eq!(h["pool_size"], POOL);
    assert_eq!(h["data_offset"], 4096);
    assert_eq!(h["data_size"], POOL - 8192);
    assert_eq!(h["backup_offset"], POOL - 4096);
    assert_eq!(v["backing"], "file");
    let map_sync = v["map_sync"].as_bool().expect("map_sync is a bool");
    let domain = v["domain"].as_str().expect("domain is a string");
    if !map_sync {
        assert_eq!(
            domain, "journaled",
            "a non-DAX file without forcing runs on the journaled engine"
        );
    }
    // The journal flag is set while a journaled engine has the pool open (as `info` does).
    let journal_flag = if domain == "journaled" {
        pmem_core::internals::header::FLAG_JOURNAL
    } else {
        0
    };
    assert_eq!(h["flags"], journal_flag);

    // The JSON agrees with what pmem-core reads (after the subprocess closed the pool).
    let region = pmem_core::Region::open(&path).unwrap();
    let rh = region.header();
    assert_eq!(h["uuid"], pmem_core::internals::header::format_uuid(&rh.uuid));
    assert_eq!(h["pptr_tag"], rh.pptr_tag);
    assert_eq!(h["checksum"], rh.checksum);
    assert_eq!(h["created_secs"], rh.created_secs);
    assert!(text.contains(&pmem_core::internals::header::format_uuid(&rh.uuid)));
}

#[test]
fn force_pmem_flag_and_env_choose_the_flush_domain() {
    let _pools = crate::shared();
    let (_dir, path) = fresh_pool("");
    let Some(insn) = pmem_core::detected_flush_instruction() else {
        return; // no flush instruction: forcing falls back to msync, nothing to compare
    };
    let by_flag = json(&ok(ptm(&["info", s(&path), "--json", "--force-pmem"])));
    assert_eq!(by_flag["domain"], insn.name());
    let by_env = json(&ok(ptm_env(
        &["info", s(&path), "--json"],
        &[("PTM_FORCE_PMEM", "1")],
    )));
    assert_eq!(by_env["domain"], insn.name());
    let text = ok(ptm(&["info", s(&path), "--force-pmem"]));
    assert!(
        text.contains(&format!("domain          {}", insn.name())),
        "{text}"
    );
}

#[test]
fn create_refuses_an_existing_non_empty_file() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, b"do not overwrite me").unwrap();
    let err = fails(ptm(&["create", s(&path), "--size", "1M"]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"do not overwrite me");
}

#[test]
fn create_formats_an_existing_empty_file() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pool");
    std::fs::write(&path, b"").unwrap();
    ok(ptm(&["create", s(&path), "--size", "64K"]));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 10);
    ok(ptm(&["check", s(&path)]));
}

#[test]
fn bad_size_strings_are_usage_errors() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.pool");
    for (size, why) in [
        ("", "empty"),
        ("abc", "not a number"),
        ("64X", "unknown unit `X`"),
        ("64Mi", "unknown unit `Mi`"),
        ("1.5G", "fractional"),
        ("64MB", "decimal unit `MB`"),
        ("99999999999999999999", "too large"),
        ("16777216T", "too large"),
    ] {
        let arg = format!("--size={size}");
        let o = ptm(&["create", s(&path), &arg]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "size {size:?}: {err}");
        assert_no_panic(&err);
        assert!(
            err.contains("invalid value") && err.contains(why),
            "size {size:?}: {err}"
        );
        assert!(!path.exists(), "size {size:?} left a file behind");
    }
}

#[test]
fn impossible_pool_sizes_fail_and_leave_nothing_behind() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.pool");
    for (size, why) in [
        ("0", "smaller than the 16 KiB minimum"),
        ("8K", "smaller than the 16 KiB minimum"),
        ("20000", "not a multiple of 4096"),
    ] {
        let err = fails(ptm(&["create", s(&path), "--size", size]));
        assert!(
            err.contains("invalid pool size") && err.contains(why),
            "{size}: {err}"
        );
        assert!(!path.exists(), "size {size} left a file behind");
    }
    let long = "x".repeat(64);
    let err = fails(ptm(&["create", s(&path), "--size", "1M", "--layout", &long]));
    assert!(err.contains("invalid layout name"), "{err}");
    assert!(!path.exists());
}

#[test]
fn not_a_pool() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    // Deterministic noise that does not start with the pool magic.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert_ne!(&bytes[..7], b"PTMPOOL");
    std::fs::write(&path, &bytes).unwrap();

    let err = fails(ptm(&["info", s(&path)]));
    assert!(err.contains("is not a ptm pool"), "{err}");
    let o = ptm(&["check", s(&path)]);
    assert!(stdout(&o).contains("bad magic"), "{}", stdout(&o));
    let err = fails(o);
    assert!(err.contains("not a ptm pool"), "{err}");
    let err = fails(ptm(&["check", "--repair", s(&path)]));
    assert!(err.contains("not a ptm pool"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a failed check must not write"
    );
}

#[test]
fn empty_file() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    let err = fails(ptm(&["info", s(&path)]));
    assert!(err.contains("is not a ptm pool"), "{err}");
    let err = fails(ptm(&["check", s(&path)]));
    assert!(err.contains("empty"), "{err}");
    let err = fails(ptm(&["check", "--repair", s(&path)]));
    assert!(err.contains("empty"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn truncated_pool() {
    let _pools = crate::shared();
    let (_dir, path) = fresh_pool("");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(POOL / 2).unwrap();
    drop(f);

    let err = fails(ptm(&["info", s(&path)]));
    assert!(
        err.contains("truncated") && err.contains(&POOL.to_string()),
        "{err}"
    );
    let err = fails(ptm(&["check", s(&path)]));
    assert!(err.contains("truncated"), "{err}");
    let o = ptm(&["check", "--repair", "--json", s(&path)]);
    let v = json(&stdout(&o));
    assert_eq!(v["ok"], false);
    assert_eq!(v["primary"]["status"], "ok");
    assert!(v["size_problem"].as_str().unwrap().contains("truncated"), "{v}");
    let err = fails(o);
    assert!(err.contains("cannot fix the file length"), "{err}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        POOL / 2,
        "repair must not regrow the file"
    );
}

#[test]
fn locked_pool() {
    let _pools = crate::exclusive();
    let (_dir, path) = fresh_pool("locked");
    let held = pmem_core::Region::open(&path).unwrap();
    let err = fails(ptm(&["info", s(&path)]));
    assert!(err.contains("is locked"), "{err}");
    let err = fails(ptm(&["check", s(&path)]));
    assert!(err.contains("is locked"), "{err}");
    let err = fails(ptm(&["check", "--repair", s(&path)]));
    assert!(err.contains("is locked"), "{err}");
    drop(held);
    // Another test thread may have forked while `held` was open: its child shares the locked
    // file description until it execs (flock semantics), so the lock can outlive `drop` briefly.
    for _ in 0..100 {
        let o = ptm(&["info", s(&path)]);
        if o.status.success() || !stderr(&o).contains("is locked") {
            ok(o);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("lock not released within 5 s of closing the pool");
}

#[test]
fn corrupted_primary_header_is_found_and_repaired() {
    let _pools = crate::shared();
    let (_dir, path) = fresh_pool("corrupt");
    flip_byte(&path, 100);

    let err = fails(ptm(&["info", s(&path)]));
    assert!(err.contains("pool header is corrupt"), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("backup copy is intact"), "{err}");

    let o = ptm(&["check", s(&path)]);
    let out = stdout(&o);
    assert!(
        out.contains("primary header  damaged: checksum mismatch"),
        "{out}"
    );
    assert!(out.contains("backup header   ok"), "{out}");
    let err = fails(o);
    assert!(err.contains("ptm check --repair"), "{err}");

    let o = ptm(&["check", "--json", s(&path)]);
    let v = json(&stdout(&o));
    fails(o);
    assert_eq!(v["primary"]["status"], "damaged");
    assert_eq!(v["backup"]["status"], "ok");
    assert_eq!(v["damage_found"], true);
    assert_eq!(v["ok"], false);
    assert_eq!(v["repair"], Value::Null);

    let out = ok(ptm(&["check", "--repair", s(&path)]));
    assert!(
        out.contains("restored the primary header from the backup"),
        "{out}"
    );
    assert!(out.contains("open            ok"), "{out}");

    let v = json(&ok(ptm(&["info", "--json", s(&path)])));
    assert_eq!(v["header"]["layout"], "corrupt");
    let v = json(&ok(ptm(&["check", "--json", s(&path)])));
    assert_eq!(v["ok"], true);
    assert_eq!(v["damage_found"], false);
}

#[test]
fn corrupted_backup_header_is_found_and_repaired() {
    let _pools = crate::shared();
    let (_dir, path) = fresh_pool("");
    flip_byte(&path, POOL - 4096 + 100);
    let o = ptm(&["check", s(&path)]);
    assert!(stdout(&o).contains("backup header   damaged"), "{}", stdout(&o));
    let err = fails(o);
    assert!(err.contains("backup header damaged"), "{err}");
    let v = json(&ok(ptm(&["check", "--repair", "--json", s(&path)])));
    assert_eq!(v["repair"], "restored_backup");
    assert_eq!(v["opens"], true);
    assert_eq!(v["ok"], true);
    ok(ptm(&["check", s(&path)]));
}

#[test]
fn check_of_an_intact_pool() {
    let _pools = crate::shared();
    let (_dir, path) = fresh_pool("");
    let out = ok(ptm(&["check", s(&path)]));
    assert!(out.contains("primary header  ok"), "{out}");
    assert!(out.contains("backup header   ok"), "{out}");
    assert!(out.contains("result          ok"), "{out}");
    let out = ok(ptm(&["check", "--repair", s(&path)]));
    assert!(out.contains("repair          nothing to do"), "{out}");
    let v = json(&ok(ptm(&["check", "--repair", "--json", s(&path)])));
    assert_eq!(v["repair"], "nothing");
    assert_eq!(v["file_len"], POOL);
}

#[test]
fn missing_file() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.pool");
    for args in [
        vec!["info"],
        vec!["info", "--json"],
        vec!["check"],
        vec!["check", "--repair"],
    ] {
        let mut args = args;
        args.push(s(&path));
        let err = fails(ptm(&args));
        assert!(
            err.contains("No such file or directory") && err.contains(s(&path)),
            "{err}"
        );
    }
    let err = fails(ptm(&[
        "create",
        s(&dir.path().join("no/such/dir.pool")),
        "--size",
        "1M",
    ]));
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_subcommands() {
    let _pools = crate::shared();
    let o = ptm(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert_no_panic(&stderr(&o));
    let o = ptm(&["create", "x.pool"]);
    assert_eq!(o.status.code(), Some(2), "--size is required");
    assert!(stderr(&o).contains("--size"));
    let help = ok(ptm(&["--help"]));
    for cmd in ["create", "info", "check"] {
        assert!(help.contains(cmd), "{help}");
    }
}

/// A root size so large that laying out the pool overflows: a clean error, no panic, and no
/// file left behind.
#[test]
fn create_with_an_overflowing_root_size_fails_cleanly() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-root.pool");
    let p = path.to_str().unwrap();
    let line = fails(ptm(&[
        "create",
        p,
        "--size",
        "64M",
        "--lanes",
        "1",
        "--root-size",
        "18446744073709477877",
    ]));
    assert!(line.contains("too small"), "{line}");
    assert!(!path.exists(), "the failed create left {p} behind");
}

#[test]
fn create_engine_flag_chooses_the_domain() {
    let _pools = crate::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("journaled", Some("journaled")),
        ("msync", Some("msync")),
        ("auto", None),
    ];
    for (engine, domain) in cases {
        let path = dir.path().join(format!("{engine}.pool"));
        let out = ok(ptm(&["create", s(&path), "--size", "1M", "--engine", engine]));
        if let Some(d) = domain {
            assert!(out.contains(&format!("domain          {d} (")), "{engine}: {out}");
        }
        let journal = pmem_core::internals::journal::default_journal_path(&path);
        assert_eq!(
            journal.exists(),
            out.contains("domain          journaled"),
            "{engine}: journal file beside a journaled pool only\n{out}"
        );
    }
    if let Some(insn) = pmem_core::detected_flush_instruction() {
        for flag in [&["--engine", "pmem"][..], &["--force-pmem"][..]] {
            let path = dir.path().join(format!("pmem{}.pool", flag.len()));
            let mut args = vec!["create", s(&path), "--size", "1M"];
            args.extend_from_slice(flag);
            let out = ok(ptm(&args));
            assert!(out.contains(&format!("domain          {}", insn.name())), "{out}");
        }
    }
    let bad = ptm(&[
        "create",
        s(&dir.path().join("x.pool")),
        "--size",
        "1M",
        "--engine",
        "tape",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("unknown engine"), "{}", stderr(&bad));
    let both = ptm(&[
        "create",
        s(&dir.path().join("y.pool")),
        "--size",
        "1M",
        "--engine",
        "msync",
        "--force-pmem",
    ]);
    assert!(fails(both).contains("--force-pmem"));
}

/// The root of the journaled test pools.
#[derive(ptm::Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Counter {
    n: ptm::PCell<u64>,
}

/// Creates a journaled pool through the library, commits 3 transactions and, while it is still
/// open (its changes only in the journal), copies pool and journal to `<name>.pool` and
/// `<name>.pool.journal` for each of `names`: the files a crash would leave.
fn crashed_journaled_pools(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    let live = dir.join("live.pool");
    let opts = ptm::PoolOptions::new().engine(pmem_core::Engine::Journaled);
    let pool = ptm::Pool::<Counter>::create(&live, 8 << 20, &opts).expect("create journaled pool");
    for i in 1..=3u64 {
        pool.transaction(|tx, root| root.n.set(tx, i)).expect("commit");
    }
    let copies = names
        .iter()
        .map(|name| {
            let copy = dir.join(format!("{name}.pool"));
            std::fs::copy(&live, &copy).expect("copy pool");
            std::fs::copy(
                pmem_core::internals::journal::default_journal_path(&live),
                pmem_core::internals::journal::default_journal_path(&copy),
            )
            .expect("copy journal");
            copy
        })
        .collect();
    drop(pool);
    copies
}

#[test]
fn info_reports_the_journal_before_replaying_it() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let [text_copy, json_copy] =
        <[PathBuf; 2]>::try_from(crashed_journaled_pools(dir.path(), &["t", "j"])).expect("two copies");
    let text = ok(ptm(&["info", s(&text_copy)]));
    assert!(text.contains("journal flag    set"), "{text}");
    assert!(text.contains("journal state   epoch "), "{text}");
    assert!(text.contains("torn tail no"), "{text}");
    let v = json(&ok(ptm(&["info", s(&json_copy), "--json"])));
    let j = &v["journal"];
    assert_eq!(j["status"], "ok", "{v}");
    assert_eq!(j["flag"], true, "{v}");
    assert_eq!(j["torn_tail"], false, "{v}");
    assert!(j["records"].as_u64().expect("records") >= 3, "{v}");
    assert!(j["bytes"].as_u64().expect("bytes") > 0, "{v}");
    assert!(j["epoch"].as_u64().expect("epoch") >= 1, "{v}");
    // Opening replayed it: the journal now starts a new epoch with nothing to replay.
    let after = json(&ok(ptm(&["info", s(&json_copy), "--json"])));
    assert_eq!(after["journal"]["records"], 0, "{after}");
}

#[test]
fn corrupt_journal_is_found_and_repaired() {
    let _pools = crate::exclusive();
    use pmem_core::internals::journal::{default_journal_path, format::RECORD_HEADER, scan};
    let dir = tempfile::tempdir().expect("tempdir");
    let [pool, info_copy] =
        <[PathBuf; 2]>::try_from(crashed_journaled_pools(dir.path(), &["c", "i"])).expect("two copies");
    // Damage the second record of each copy (inside its payload: the checksum no longer holds).
    let headers = pmem_core::inspect_headers(&pool).expect("headers");
    let h = headers.primary.expect("intact primary");
    let data = h.data_offset..h.data_offset + h.data_size;
    let journal = default_journal_path(&pool);
    let bytes = std::fs::read(&journal).expect("read journal");
    let found = scan(&bytes, &h.uuid, data).expect("the copied journal scans");
    assert!(found.records.len() >= 3, "{found:?}");
    let (second, len) = found.records[1];
    assert!(len > RECORD_HEADER as u64);
    for copy in [&pool, &info_copy] {
        flip_byte(&default_journal_path(copy), second + RECORD_HEADER as u64);
    }

    // `info` shows the damage and fails with the named error.
    let o = ptm(&["info", s(&info_copy)]);
    let out = stdout(&o);
    let err = fails(o);
    assert!(out.contains("journal state   corrupt at offset"), "{out}");
    assert!(err.contains("journal is corrupt"), "{err}");
    let o = ptm(&["info", s(&info_copy), "--json"]);
    let v = json(&stdout(&o));
    fails(o);
    assert_eq!(v["journal"]["status"], "corrupt", "{v}");
    assert_eq!(v["journal"]["offset"], second, "{v}");

    // `check` reports it, changes nothing, exits non-zero.
    let o = ptm(&["check", s(&pool)]);
    let out = stdout(&o);
    let err = fails(o);
    assert!(out.contains("journal state   corrupt"), "{out}");
    assert!(out.contains("open            not tried"), "{out}");
    assert!(err.contains("--repair"), "{err}");
    assert_eq!(std::fs::read(&journal).expect("journal"), {
        let mut b = bytes.clone();
        b[(second as usize) + RECORD_HEADER] ^= 0xff;
        b
    });
    let v = json(&stdout(&ptm(&["check", s(&pool), "--json"])));
    assert_eq!(v["damage_found"], true, "{v}");
    assert_eq!(v["journal"]["status"], "corrupt", "{v}");

    // `check --repair` drops the damaged record and the later ones, and the pool opens.
    let out = ok(ptm(&["check", s(&pool), "--repair"]));
    let dropped = found.records.len() - 1;
    assert!(out.contains(&format!("dropped {dropped} records")), "{out}");
    assert!(out.contains("ok (repaired)"), "{out}");
    let v = json(&ok(ptm(&["check", s(&pool), "--json"])));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["damage_found"], false, "{v}");
    let opts = ptm::PoolOptions::new().engine(pmem_core::Engine::Journaled);
    let reopened = ptm::Pool::<Counter>::open(&pool, &opts).expect("the repaired pool opens");
    let n = reopened
        .transaction(|tx, root| Ok::<_, ptm::Error>(root.n.get(tx)))
        .expect("read");
    assert!(n <= 3, "{n}");
}

/// A fake sysfs tree in which the file system holding `dir` is a namespace of libnvdimm
/// `region0` (`memory_controller`) on DIMM `nmem0` whose unsafe-shutdown count is `count`.
fn fake_nvdimm(sysfs: &Path, dir: &Path, count: u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).expect("stat").dev();
    let region = sysfs.join("devices/ndbus0/region0");
    let ns = region.join("namespace0.0/block/pmem0");
    std::fs::create_dir_all(&ns).expect("mkdir");
    std::fs::write(region.join("persistence_domain"), "memory_controller\n").expect("write");
    std::fs::write(region.join("mapping0"), "nmem0,0,1073741824,0\n").expect("write");
    let nfit = sysfs.join("bus/nd/devices/nmem0/nfit");
    std::fs::create_dir_all(&nfit).expect("mkdir");
    std::fs::write(nfit.join("dirty_shutdown"), format!("{count}\n")).expect("write");
    let links = sysfs.join("dev/block");
    std::fs::create_dir_all(&links).expect("mkdir");
    let link = links.join(format!("{}:{}", libc::major(dev), libc::minor(dev)));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&ns, link).expect("symlink");
}

#[test]
fn unsafe_shutdown_is_reported_refused_and_accepted_by_check() {
    let _pools = crate::exclusive();
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = tempfile::tempdir().expect("tempdir");
    fake_nvdimm(sysfs.path(), dir.path(), 5);
    let env = [(pmem_core::ENV_SYSFS_ROOT, s(sysfs.path()))];
    let (path, crashed) = (dir.path().join("p.pool"), dir.path().join("crashed.pool"));
    // A pool on the (fake) NVDIMM, and the image a power loss leaves while it is open.
    let opts = pmem_core::RegionOptions::new()
        .force_pmem(true)
        .sysfs_root(sysfs.path());
    let region = opts.create(&path, POOL).expect("create");
    std::fs::copy(&path, &crashed).expect("copy");
    drop(region);

    let info = ok(ptm_env(&["info", s(&path)], &env));
    assert!(
        info.contains("region0: persistence_domain memory_controller, DIMMs nmem0, unsafe shutdowns 5"),
        "{info}"
    );
    assert!(
        info.contains("unsafe-shutdown count 5 recorded; marked in use by this open"),
        "{info}"
    );
    assert!(info.contains("durability      power-loss"), "{info}");
    let v = json(&ok(ptm_env(&["info", "--json", s(&path)], &env)));
    assert_eq!(v["nvdimm_region"]["unsafe_shutdowns"], 5);
    assert_eq!(v["header"]["shutdown"]["count"], 5);
    assert_eq!(v["durability"], "power-loss");

    // The platform failed to drain at that power loss: the device counted it.
    fake_nvdimm(sysfs.path(), dir.path(), 6);
    let err = fails(ptm_env(&["info", s(&crashed)], &env));
    assert!(err.contains("unsafe shutdown while the pool was in use"), "{err}");
    let out = ptm_env(&["check", s(&crashed)], &env);
    let text = stdout(&out);
    let err = fails(out);
    assert!(err.contains("--accept-unsafe-shutdown"), "{err}");
    assert!(text.contains("(count 5 at open, 6 now)"), "{text}");
    assert!(
        text.contains("unsafe-shutdown count 5 recorded; in use (open, or not closed cleanly)"),
        "{text}"
    );
    let v = json(&stdout(&ptm_env(&["check", "--json", s(&crashed)], &env)));
    assert_eq!(v["unsafe_shutdown"]["recorded"], 5);
    assert_eq!(v["unsafe_shutdown"]["now"], 6);
    assert_eq!(v["ok"], false);
    // `--repair` does not accept it: only the explicit flag does.
    fails(ptm_env(&["check", "--repair", s(&crashed)], &env));

    let text = ok(ptm_env(&["check", "--accept-unsafe-shutdown", s(&crashed)], &env));
    assert!(
        text.contains("unsafe-shutdown count 6 recorded; closed cleanly"),
        "{text}"
    );
    assert!(text.contains("unsafe shutdown accepted"), "{text}");
    let info = ok(ptm_env(&["info", s(&crashed)], &env));
    assert!(info.contains("unsafe shutdowns 6"), "{info}");
    // The pool that was closed before the count moved opens without a word.
    ok(ptm_env(&["check", s(&path)], &env));
}
