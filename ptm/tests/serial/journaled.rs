//! Guards the journaled disk engine end to end through ptm: one `fdatasync` per durable
//! transaction, crash images (a copy of the pool and its journal taken while open) that recover
//! every commit, a prefix (no hole) after SIGKILL in buffered mode, named errors for damaged or
//! foreign journals, an empty journal after a clean close, the checkpoint bound, and 4 threads.
//!
//! Pools live on the disk the tests are built on (under `target/`), not tmpfs. They are in the
//! `serial` binary (one test at a time): three of them re-execute this binary, and a spawned
//! child shares every open descriptor (pool locks included) until it execs.
//!
//! `PTM_KILL_ROUNDS=N` sets the buffered-mode SIGKILL rounds (default 5); `PTM_KILL_SEED=S`
//! replays the random delays of a printed seed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::serial;
use ptm::pmem_core::internals::journal::{self, format::RECORD_HEADER};
use ptm::{thread_stats, DomainKind, Engine, JournalOptions, PCell, PMutex, Persistent, Pool, PoolOptions};

const SLOTS: usize = 64;
const THREADS: usize = 4;
const LAYOUT: &str = "journaled-test";
const POOL_SIZE: u64 = 8 << 20;

const ENV_CHILD: &str = "PTM_JOURNALED_CHILD_POOL";
const ENV_CHILD_MODE: &str = "PTM_JOURNALED_CHILD_MODE";

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    counter: PCell<u64>,
    slots: [PCell<u64>; SLOTS],
}

/// The root of the concurrent test (shared by threads: only locks), as `ptm bench --disk` builds
/// it.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Keys {
    keys: [PMutex<PCell<u64>>; THREADS],
}

/// A fresh directory on the disk the tests are built on (under `target/`).
fn disk_dir() -> tempfile::TempDir {
    let exe = std::env::current_exe().unwrap();
    tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
}

fn opts(engine: Engine) -> PoolOptions {
    PoolOptions::new()
        .layout(LAYOUT)
        .engine(engine)
        .lock_timeout(Duration::from_secs(20))
}

fn journaled() -> PoolOptions {
    opts(Engine::Journaled)
}

fn journal_of(pool: &Path) -> PathBuf {
    journal::default_journal_path(pool)
}

fn create(path: &Path, o: &PoolOptions) -> Pool<Root> {
    Pool::<Root>::create(path, POOL_SIZE, o).unwrap()
}

/// Transaction `i` of the sequential workloads: `counter = i`, `slots[i % 64] = i`.
fn step(pool: &Pool<Root>, i: u64) {
    pool.transaction(|tx, r| {
        r.counter.set(tx, i)?;
        r.slots[i as usize % SLOTS].set(tx, i)
    })
    .unwrap();
}

/// `(counter, slots)` read in one transaction.
fn state(pool: &Pool<Root>) -> (u64, [u64; SLOTS]) {
    pool.transaction(|tx, r| {
        let slots = std::array::from_fn(|s| r.slots[s].get(tx));
        Ok::<_, ptm::Error>((r.counter.get(tx), slots))
    })
    .unwrap()
}

/// Asserts that the pool holds exactly the effect of transactions `1..=k` of [`step`] for its
/// `counter = k`: no later transaction partly there, no earlier one missing (no hole). Returns k.
fn check_prefix(pool: &Pool<Root>, ctx: &str) -> u64 {
    let (k, slots) = state(pool);
    for (s, &v) in slots.iter().enumerate() {
        // The last i <= k with i % 64 == s, or 0 if none (i starts at 1).
        let expected = if (k as usize) < s || (s == 0 && k < SLOTS as u64) {
            0
        } else {
            k - ((k as usize - s) % SLOTS) as u64
        };
        assert_eq!(
            v, expected,
            "{ctx}: counter {k}, slot {s} holds {v}, expected {expected}"
        );
    }
    k
}

/// A crash image: byte copies of the pool file and its journal as they are now (the pool still
/// open), into `dst_dir` under the same names. Returns the copied pool's path.
fn crash_copy(pool_path: &Path, dst_dir: &Path) -> PathBuf {
    let dst = dst_dir.join(pool_path.file_name().unwrap());
    std::fs::copy(pool_path, &dst).unwrap();
    std::fs::copy(journal_of(pool_path), journal_of(&dst)).unwrap();
    dst
}

fn core_error(e: &ptm::Error) -> Option<&ptm::pmem_core::Error> {
    match e {
        ptm::Error::Core(c) => Some(c),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. fsync counts

/// `(fsyncs, drains)` added by one transaction on this thread.
fn cost(pool: &Pool<Root>, f: impl FnOnce(&ptm::Transaction<'_>, &Root) -> ptm::Result<()>) -> (u64, u64) {
    let before = thread_stats();
    pool.transaction(f).unwrap();
    let d = thread_stats().since(&before);
    (d.fsyncs, d.drains)
}

fn one_word(pool: &Pool<Root>, v: u64) -> (u64, u64) {
    cost(pool, |tx, r| r.counter.set(tx, v))
}

fn eight_words(pool: &Pool<Root>, v: u64) -> (u64, u64) {
    cost(pool, |tx, r| {
        tx.snapshot(|b| r.slots[..8].iter().try_for_each(|c| b.add(c)))?;
        r.slots[..8]
            .iter()
            .enumerate()
            .try_for_each(|(i, c)| c.set(tx, v + i as u64))
    })
}

#[test]
fn durable_transaction_costs_one_fdatasync() {
    let _g = serial();
    let dir = disk_dir();
    let path = dir.path().join("cost.pool");
    let pool = create(&path, &journaled());
    assert_eq!(pool.domain(), DomainKind::Journaled);
    // Warm up (first touches of lanes and journal growth are not what is measured).
    for i in 0..3 {
        step(&pool, i + 1);
    }
    for i in 0..20u64 {
        assert_eq!(
            one_word(&pool, i),
            (1, 2),
            "journaled 1-word transaction {i}: (fsyncs, drains)"
        );
        assert_eq!(
            eight_words(&pool, i),
            (1, 2),
            "journaled 8-word transaction {i}: (fsyncs, drains)"
        );
        let (fsyncs, _) = cost(&pool, |tx, r| {
            let _ = r.counter.get(tx);
            Ok(())
        });
        assert_eq!(fsyncs, 0, "journaled read-only transaction {i}");
    }
    drop(pool);

    // For contrast: the msync engine syncs at both drains.
    let path = dir.path().join("cost-msync.pool");
    let pool = create(&path, &opts(Engine::Msync));
    assert_eq!(pool.domain(), DomainKind::Msync);
    step(&pool, 1);
    for i in 0..5u64 {
        let (f1, _) = one_word(&pool, i);
        let (f8, _) = eight_words(&pool, i);
        assert!(
            f1 >= 2 && f8 >= 2,
            "msync transaction {i}: fsyncs {f1} (1-word), {f8} (8-word)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Crash image = copy while open

#[test]
fn copy_while_open_recovers_every_commit_only_with_its_journal() {
    let _g = serial();
    let dir = disk_dir();
    let path = dir.path().join("copy.pool");
    let pool = create(&path, &journaled());
    const N: u64 = 200;
    for i in 1..=N {
        step(&pool, i);
    }
    let crash = tempfile::tempdir_in(dir.path()).unwrap();
    let copy = crash_copy(&path, crash.path());
    drop(pool);

    // The pool file alone does not hold the commits: opening it without its journal must fail.
    let bare = tempfile::tempdir_in(dir.path()).unwrap();
    let bare_pool = bare.path().join("copy.pool");
    std::fs::copy(&copy, &bare_pool).unwrap();
    match Pool::<Root>::open(&bare_pool, &journaled()) {
        Err(e) if matches!(core_error(&e), Some(ptm::pmem_core::Error::JournalMissing { .. })) => {}
        Err(e) => panic!("open without the journal: expected JournalMissing, got {e}"),
        Ok(_) => panic!("open without the journal succeeded"),
    }

    let pool = Pool::<Root>::open(&copy, &journaled()).unwrap_or_else(|e| panic!("reopen of the copy: {e}"));
    assert_eq!(
        check_prefix(&pool, "copy"),
        N,
        "a committed transaction is missing"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL

const KILL_BUFFERED: &str = "journaled::buffered_mode_keeps_a_prefix_after_sigkill";
const KILL_DURABLE: &str = "journaled::durable_mode_keeps_every_reported_commit_after_sigkill";

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn child_opts(mode: &str) -> PoolOptions {
    match mode {
        "buffered" => journaled().journal(JournalOptions::new().buffered(Duration::from_millis(5))),
        _ => journaled(),
    }
}

/// The child: open, say ready, then run [`step`] for i = 1.. until killed. In durable mode it
/// reports each commit (a line `C i`) after the transaction returned.
fn child(path: &str) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
    let mode = std::env::var(ENV_CHILD_MODE).unwrap();
    let pool = Pool::<Root>::open(path, &child_opts(&mode)).unwrap();
    let start = state(&pool).0;
    let mut out = std::io::stdout();
    out.write_all(format!("\nJCHILD ready {start}\n").as_bytes())
        .unwrap();
    out.flush().unwrap();
    let report = mode == "durable";
    for i in start + 1.. {
        step(&pool, i);
        if report {
            out.write_all(format!("C {i}\n").as_bytes()).unwrap();
            out.flush().unwrap();
        }
    }
}

/// Runs the child on `path` in `mode`, kills it after `delay` from ready; returns the highest
/// commit it reported (durable mode) and the counter it started from.
fn run_and_kill(path: &Path, mode: &str, test: &str, delay: Duration, ctx: &str) -> (u64, u64) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ENV_CHILD, path)
        .env(ENV_CHILD_MODE, mode)
        .env_remove("PTM_FORCE_PMEM")
        .env_remove("PTM_EADR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let reported = Arc::new(AtomicU64::new(0));
    let rep = Arc::clone(&reported);
    let watcher = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            if let Some(s) = line.strip_prefix("JCHILD ready ") {
                let _ = ready_tx.send(s.parse::<u64>().unwrap());
            } else if let Some(n) = line.strip_prefix("C ") {
                rep.fetch_max(n.parse().unwrap(), Ordering::Relaxed);
            }
        }
    });
    let start = ready_rx.recv_timeout(Duration::from_secs(30));
    if start.is_ok() {
        std::thread::sleep(delay);
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    watcher.join().unwrap();
    let start = start.unwrap_or_else(|_| panic!("{ctx}: child never reported ready ({status})"));
    assert_eq!(status.signal(), Some(9), "{ctx}: child ended by itself: {status}");
    (reported.load(Ordering::Relaxed), start)
}

fn kill_seed() -> u64 {
    std::env::var("PTM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64)
}

#[test]
fn buffered_mode_keeps_a_prefix_after_sigkill() {
    if let Ok(p) = std::env::var(ENV_CHILD) {
        child(&p);
        return;
    }
    let _g = serial();
    let rounds: usize = std::env::var("PTM_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed = kill_seed();
    println!("buffered SIGKILL: seed {seed} (PTM_KILL_SEED), {rounds} rounds");
    let mut rng = Rng::new(seed);
    let dir = disk_dir();
    let path = dir.path().join("kill.pool");
    drop(create(&path, &child_opts("buffered")));
    let mut last = 0;
    for round in 0..rounds {
        let delay = Duration::from_millis(50 + rng.next() % 251);
        let ctx = format!("buffered round {round} (seed {seed}, delay {delay:?})");
        let (_, start) = run_and_kill(&path, "buffered", KILL_BUFFERED, delay, &ctx);
        assert_eq!(
            start, last,
            "{ctx}: the child started from another counter than the last reopen"
        );
        let pool = Pool::<Root>::open(&path, &child_opts("buffered"))
            .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        let k = check_prefix(&pool, &ctx);
        assert!(k >= start, "{ctx}: counter went back from {start} to {k}");
        println!("{ctx}: {} commits survived", k - start);
        last = k;
    }
}

#[test]
fn durable_mode_keeps_every_reported_commit_after_sigkill() {
    if let Ok(p) = std::env::var(ENV_CHILD) {
        child(&p);
        return;
    }
    let _g = serial();
    let seed = kill_seed();
    let mut rng = Rng::new(seed);
    let dir = disk_dir();
    let path = dir.path().join("kill-durable.pool");
    drop(create(&path, &journaled()));
    let delay = Duration::from_millis(50 + rng.next() % 251);
    let ctx = format!("durable round (seed {seed}, delay {delay:?})");
    let (reported, _) = run_and_kill(&path, "durable", KILL_DURABLE, delay, &ctx);
    let pool = Pool::<Root>::open(&path, &journaled()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let k = check_prefix(&pool, &ctx);
    assert!(reported > 0, "{ctx}: the child reported no commit");
    // A transaction may have committed without being reported: k may be one past.
    assert!(
        k >= reported,
        "{ctx}: reported commit {reported} missing (counter {k})"
    );
    assert!(
        k <= reported + 1,
        "{ctx}: counter {k} is more than one past the last report {reported}"
    );
}

const KILL_REPLAY: &str = "journaled::replay_killed_part_way_runs_again_at_the_next_open";

/// The replay child: say it is opening, open (replaying the journal), say it opened, then wait
/// to be killed.
fn replay_child(path: &str) {
    let mut out = std::io::stdout();
    out.write_all(b"\nJCHILD opening\n").unwrap();
    out.flush().unwrap();
    let pool = Pool::<Root>::open(path, &journaled()).unwrap();
    out.write_all(b"\nJCHILD opened\n").unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
    drop(pool);
}

/// Recovery that is killed part-way is re-run at the next open: a crash copy with a large
/// journal is opened by child processes killed at random moments of their open (many inside
/// replay, which writes the home file), then opened here: every transaction is there. Whether a
/// kill landed inside replay depends on timing and is only reported; the check holds either way.
#[test]
fn replay_killed_part_way_runs_again_at_the_next_open() {
    if let Ok(p) = std::env::var(ENV_CHILD) {
        replay_child(&p);
        return;
    }
    let _g = serial();
    let seed = kill_seed();
    let mut rng = Rng::new(seed);
    let dir = disk_dir();
    let crash = disk_dir();
    let path = dir.path().join("replay.pool");
    // Buffered, so that filling a journal of some megabytes takes no sync per transaction.
    let fill = journaled().journal(JournalOptions::new().buffered(Duration::from_secs(3600)));
    let pool = create(&path, &fill);
    let n = 30_000u64;
    for i in 1..=n {
        step(&pool, i);
    }
    pool.sync().unwrap();
    let live = pool.region().journal_stats().unwrap().live_bytes;
    assert!(
        live > 1 << 20,
        "a journal of {live} bytes is too small to be killed in"
    );
    let copy = crash_copy(&path, crash.path());
    drop(pool);
    let rounds = 6;
    let mut inside = 0;
    for round in 0..rounds {
        let delay = Duration::from_micros(rng.next() % 60_000);
        let ctx = format!("replay kill round {round} (seed {seed}, delay {delay:?})");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", KILL_REPLAY, "--nocapture", "--test-threads=1"])
            .env(ENV_CHILD, &copy)
            .env_remove("PTM_FORCE_PMEM")
            .env_remove("PTM_EADR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let watcher = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(what) = line.trim().strip_prefix("JCHILD ") {
                    let _ = tx.send(what.to_owned());
                }
            }
        });
        // Wait until it starts opening, then kill it `delay` later.
        let first = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(first.as_deref(), Ok("opening"), "{ctx}");
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        watcher.join().unwrap();
        let opened = rx.try_iter().any(|w| w == "opened");
        if !opened {
            inside += 1;
        }
        assert_eq!(status.signal(), Some(9), "{ctx}: child ended by itself: {status}");
    }
    println!("replay kills: {inside} of {rounds} landed before the open finished (seed {seed})");
    let pool = Pool::<Root>::open(&copy, &journaled()).unwrap();
    assert_eq!(check_prefix(&pool, "after the killed replays"), n);
}

// ---------------------------------------------------------------------------------------------
// 4. Bad journals

/// A pool with `n` committed transactions and its crash copy in `crash`; returns the copy's path
/// and the pool's UUID and data range.
fn crashed_pool(dir: &Path, name: &str, n: u64, crash: &Path) -> (PathBuf, [u8; 16], std::ops::Range<u64>) {
    let path = dir.join(name);
    let pool = create(&path, &journaled());
    for i in 1..=n {
        step(&pool, i);
    }
    let uuid = pool.region().header().uuid;
    let data = pool.region().data_range();
    let copy = crash_copy(&path, crash);
    drop(pool);
    (copy, uuid, data)
}

fn records(journal: &Path, uuid: &[u8; 16], data: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(journal).unwrap();
    journal::scan(&bytes, uuid, data).unwrap().records
}

fn flip_byte(file: &Path, at: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at as usize] ^= 0x5A;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn damaged_synced_record_is_named_corruption() {
    let _g = serial();
    let dir = disk_dir();
    let crash = tempfile::tempdir_in(dir.path()).unwrap();
    let (copy, uuid, data) = crashed_pool(dir.path(), "mid.pool", 5, crash.path());
    let recs = records(&journal_of(&copy), &uuid, data);
    assert!(
        recs.len() >= 6,
        "expected at least 2 records per transaction: {recs:?}"
    );
    let (off, len) = recs[recs.len() / 2];
    assert!(len > RECORD_HEADER as u64, "record without payload: {recs:?}");
    flip_byte(
        &journal_of(&copy),
        off + RECORD_HEADER as u64 + (len - RECORD_HEADER as u64) / 2,
    );
    match Pool::<Root>::open(&copy, &journaled()) {
        Err(e) if matches!(core_error(&e), Some(ptm::pmem_core::Error::CorruptJournal { .. })) => {}
        Err(e) => panic!("expected CorruptJournal, got {e}"),
        Ok(p) => panic!(
            "open of a journal with a damaged synced record succeeded: {:?}",
            state(&p)
        ),
    }
}

/// Every record that a later record saw synced (all but the last transaction's), damaged in its
/// header or in its payload, is named corruption, never a silently shorter prefix.
#[test]
fn any_damaged_synced_record_is_named_corruption() {
    let _g = serial();
    let dir = disk_dir();
    let pristine = tempfile::tempdir_in(dir.path()).unwrap();
    let (copy, uuid, data) = crashed_pool(dir.path(), "every.pool", 5, pristine.path());
    let recs = records(&journal_of(&copy), &uuid, data);
    // The last transaction's records (at most 3 here) are not covered by a later durable_seq.
    let covered = recs.len().saturating_sub(4);
    assert!(covered >= 6, "too few records: {recs:?}");
    for (j, &(off, len)) in recs[..covered].iter().enumerate() {
        for (what, at) in [("seq byte", off + 16), ("last payload byte", off + len - 1)] {
            let trial = tempfile::tempdir_in(dir.path()).unwrap();
            let t = crash_copy(&copy, trial.path());
            flip_byte(&journal_of(&t), at);
            match Pool::<Root>::open(&t, &journaled()) {
                Err(e) if matches!(core_error(&e), Some(ptm::pmem_core::Error::CorruptJournal { .. })) => {}
                Err(e) => panic!(
                    "record {j} of {}, {what} flipped: expected CorruptJournal, got {e}",
                    recs.len()
                ),
                Ok(p) => panic!(
                    "record {j} of {}, {what} flipped: open succeeded with {:?}",
                    recs.len(),
                    state(&p).0
                ),
            }
        }
    }
}

#[test]
fn damaged_last_record_is_a_torn_tail() {
    let _g = serial();
    let dir = disk_dir();
    let crash = tempfile::tempdir_in(dir.path()).unwrap();
    const N: u64 = 5;
    let (copy, uuid, data) = crashed_pool(dir.path(), "tail.pool", N, crash.path());
    let recs = records(&journal_of(&copy), &uuid, data);
    let &(off, len) = recs.last().unwrap();
    flip_byte(&journal_of(&copy), off + len - 1);
    let pool = Pool::<Root>::open(&copy, &journaled()).unwrap_or_else(|e| panic!("torn tail must open: {e}"));
    let k = check_prefix(&pool, "torn tail");
    assert!(
        k == N || k == N - 1,
        "torn tail: counter {k}, expected {} or {N}",
        N - 1
    );
}

#[test]
fn journal_of_another_pool_is_a_mismatch() {
    let _g = serial();
    let dir = disk_dir();
    let crash_a = tempfile::tempdir_in(dir.path()).unwrap();
    let crash_b = tempfile::tempdir_in(dir.path()).unwrap();
    let (copy_a, _, _) = crashed_pool(dir.path(), "a.pool", 3, crash_a.path());
    let (copy_b, _, _) = crashed_pool(dir.path(), "b.pool", 3, crash_b.path());
    std::fs::copy(journal_of(&copy_b), journal_of(&copy_a)).unwrap();
    match Pool::<Root>::open(&copy_a, &journaled()) {
        Err(e)
            if matches!(
                core_error(&e),
                Some(ptm::pmem_core::Error::JournalMismatch { .. })
            ) => {}
        Err(e) => panic!("expected JournalMismatch, got {e}"),
        Ok(p) => panic!("open with another pool's journal succeeded: {:?}", state(&p)),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Clean close

#[test]
fn clean_close_leaves_an_empty_journal_and_a_complete_pool_file() {
    let _g = serial();
    let dir = disk_dir();
    let path = dir.path().join("close.pool");
    let pool = create(&path, &journaled());
    const N: u64 = 100;
    for i in 1..=N {
        step(&pool, i);
    }
    let uuid = pool.region().header().uuid;
    let data = pool.region().data_range();
    pool.close().unwrap();
    let bytes = std::fs::read(journal_of(&path)).unwrap();
    let scan = journal::scan(&bytes, &uuid, data).unwrap();
    assert!(
        scan.records.is_empty(),
        "records left after close: {:?}",
        scan.records
    );
    let pool = Pool::<Root>::open(&path, &opts(Engine::Msync)).unwrap_or_else(|e| panic!("msync open: {e}"));
    assert_eq!(pool.domain(), DomainKind::Msync);
    assert_eq!(check_prefix(&pool, "after close"), N);
}

// ---------------------------------------------------------------------------------------------
// 6. Checkpoint bound

#[test]
fn journal_stays_under_its_bound() {
    let _g = serial();
    let dir = disk_dir();
    let path = dir.path().join("bound.pool");
    const BOUND: u64 = 256 << 10;
    // One record's worth of slack: a transaction here journals two small records (undo entries,
    // data, commit line), each well under 4 KiB.
    const SLACK: u64 = 4 << 10;
    let o = journaled().journal(JournalOptions::new().max_bytes(BOUND));
    let pool = create(&path, &o);
    const N: u64 = 5000;
    let mut max_live = 0;
    for i in 1..=N {
        step(&pool, i);
        let s = pool.region().journal_stats().unwrap();
        max_live = max_live.max(s.live_bytes);
        assert!(
            s.live_bytes <= BOUND + SLACK,
            "after transaction {i}: {} live journal bytes, bound {BOUND}: {s:?}",
            s.live_bytes
        );
    }
    let s = pool.region().journal_stats().unwrap();
    assert!(s.checkpoints > 0, "no checkpoint in {N} transactions: {s:?}");
    println!("max live bytes {max_live}, {s:?}");
    let crash = tempfile::tempdir_in(dir.path()).unwrap();
    let copy = crash_copy(&path, crash.path());
    drop(pool);
    let pool = Pool::<Root>::open(&copy, &o).unwrap();
    assert_eq!(check_prefix(&pool, "after checkpoints"), N);
}

// ---------------------------------------------------------------------------------------------
// 7. Threads

#[test]
fn four_threads_commit_durably_with_shared_syncs() {
    let _g = serial();
    let dir = disk_dir();
    let path = dir.path().join("threads.pool");
    const PER_THREAD: u64 = 300;
    let pool = Pool::<Keys>::create(&path, POOL_SIZE, &journaled()).unwrap();
    let fsyncs: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let before = thread_stats();
                    for i in 1..=PER_THREAD {
                        pool.transaction(|tx, r| r.keys[t].lock(tx)?.set(tx, i)).unwrap();
                    }
                    thread_stats().since(&before).fsyncs
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let total = THREADS as u64 * PER_THREAD;
    println!("{fsyncs} fsyncs for {total} transactions");
    assert!(fsyncs <= total, "{fsyncs} fsyncs for {total} transactions");
    let crash = tempfile::tempdir_in(dir.path()).unwrap();
    let copy = crash_copy(&path, crash.path());
    drop(pool);
    let pool = Pool::<Keys>::open(&copy, &journaled()).unwrap();
    let keys = pool
        .transaction(|tx, r| {
            r.keys
                .iter()
                .map(|m| Ok(m.lock(tx)?.get(tx)))
                .collect::<ptm::Result<Vec<u64>>>()
        })
        .unwrap();
    assert_eq!(
        keys,
        vec![PER_THREAD; THREADS],
        "a thread's last commit is missing after a crash"
    );
}
