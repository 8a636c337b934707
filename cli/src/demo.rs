//! `ptm demo`: a persistent hash map that survives `kill -9`.
//!
//! The parent creates a pool (tmpfs treated as persistent memory, or a file on disk with
//! `--disk`), then repeatedly starts a child process (this binary, `ptm demo-child`) that runs
//! hash-map transactions as fast as it can until it is killed with SIGKILL after a random amount
//! of its own CPU time ([`arm_cpu_kill`]), reopens the pool (recovery runs) and checks the
//! invariants:
//! - the sum of the map's values equals the `sum` recorded in the same transactions;
//! - the number of committed operations in the pool is at least what the child reported as
//!   committed (nothing committed is lost) and at most one more (the one in flight at the kill),
//!   and exactly that when the kill landed between transactions.
//!
//! The child reports its progress through a shared mapping of a small file ([`Progress`]): two
//! counters it stores to before and after each transaction, with no system call, so a kill
//! lands wherever the child spends its time, which is inside transactions. (Writing the counts
//! with a system call after each commit, as the demo once did, put most kills in that call.)
//! After the kill the parent reads the counters and classifies the kill: mid-transaction (the
//! transaction was rolled back at reopen, or had already committed when the kill landed) or
//! between transactions.
//!
//! On a plain file (the journaled engine) a commit waits milliseconds in `fdatasync`, so the
//! child runs transactions of 1 to 64 operations (1 to 8 on persistent memory), as a disk
//! workload batches, and the kill is timed in user CPU time, not wall-clock time: a wall-clock
//! kill lands in that wait nearly every time, after the commit's records reached the page cache,
//! and shows only committed transactions.

use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_collections::PHashMap;

use crate::Failure;

/// Keys the workload touches.
const KEYS: u64 = 512;
const LAYOUT: &str = "ptm-demo";

/// The demo's root object.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct DemoRoot {
    map: PHashMap<u64, u64>,
    sum: PCell<u64>,
    ops: PCell<u64>,
}

fn opts(force_pmem: bool) -> PoolOptions {
    PoolOptions::new().layout(LAYOUT).force_pmem(force_pmem).lanes(4)
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn progress_path(pool: &Path) -> PathBuf {
    pool.with_extension("progress")
}

/// Word indices of the progress file (little-endian `u64`s).
const BEGUN: usize = 0;
/// Transactions that returned `Ok` (the pool's `ops` after the last commit).
const COMMITTED: usize = 1;
/// Set to 1 once the child has opened the pool and set the counters.
const READY: usize = 2;
/// Length of the progress file: one page.
const PROGRESS_LEN: usize = 4096;

/// The child's end of the progress file: a shared mapping, so a count is reported with a plain
/// store, no system call. A store is in the file's page as soon as it executes: the parent reads
/// it after the child is killed.
struct Progress {
    words: *const AtomicU64,
}

impl Progress {
    /// Maps the progress file `path` (created by the parent, [`PROGRESS_LEN`] bytes).
    fn map(path: &Path) -> Result<Progress, Failure> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Failure(format!("progress file {}: {e}", path.display())))?;
        let len = file
            .metadata()
            .map_err(|e| Failure(format!("progress file: {e}")))?
            .len();
        if len < PROGRESS_LEN as u64 {
            return Err(Failure(format!("progress file: {len} bytes, not {PROGRESS_LEN}")));
        }
        // SAFETY: a new shared read-write mapping of the first PROGRESS_LEN bytes of an open file
        // at least that long; no existing memory is affected. The mapping outlives `file` (the
        // kernel keeps its own reference).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PROGRESS_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Failure(format!(
                "progress file: mmap: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Progress {
            words: p.cast::<AtomicU64>(),
        })
    }

    /// Word `i` of the mapping.
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < READY + 1);
        // SAFETY: `words` is a live, page-aligned mapping of PROGRESS_LEN bytes (unmapped only in
        // drop, and the reference is tied to `&self`), so word `i < 3` is in bounds and aligned;
        // every bit pattern is a valid AtomicU64. The other party changing it (the parent, which
        // only writes the file while no child runs) goes through the file, never while this
        // process is alive, so atomic access is all that is needed.
        unsafe { &*self.words.add(i) }
    }

    fn set(&self, i: usize, v: u64) {
        // SeqCst: in program order with the transaction's own stores and fences, so a count the
        // parent reads tells where the child was.
        self.word(i).store(v, Ordering::SeqCst);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into it outlives
        // `&self`.
        unsafe {
            libc::munmap(self.words.cast_mut().cast(), PROGRESS_LEN);
        }
    }
}

/// The parent's end: creates (or resets) the progress file and reads it with `pread`.
fn progress_reset(path: &Path) -> Result<File, Failure> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Failure(format!("progress file {}: {e}", path.display())))?;
    f.set_len(PROGRESS_LEN as u64)
        .map_err(|e| Failure(format!("progress file: {e}")))?;
    Ok(f)
}

fn progress_read(f: &File, i: usize) -> Result<u64, Failure> {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (i * 8) as u64)
        .map_err(|e| Failure(format!("progress file: {e}")))?;
    Ok(u64::from_le_bytes(b))
}

/// One transaction of the workload: 1 to `max_ops` inserts/updates/removes, keeping `sum` and `ops`.
/// Reports the transaction as begun (after drawing its operations, before it starts) and as
/// committed (once it returned) in `progress`. With `kill_self`, the process sends itself
/// SIGKILL after the transaction's stores, before its commit.
fn step(
    pool: &Pool<DemoRoot>,
    rng: &mut Rng,
    progress: &Progress,
    committed: u64,
    max_ops: u64,
    kill_self: bool,
) -> ptm::Result<u64> {
    let n = 1 + rng.next() % max_ops;
    let ops: Vec<(u64, bool, u64)> = (0..n)
        .map(|_| (rng.next() % KEYS, rng.next().is_multiple_of(4), rng.next() % 1000))
        .collect();
    progress.set(BEGUN, committed + 1);
    let ops = pool.transaction(|tx, r| {
        let mut sum = r.sum.get(tx);
        for &(k, remove, v) in &ops {
            let old = if remove {
                r.map.remove(tx, &k)?
            } else {
                r.map.insert(tx, k, v)?
            };
            sum = sum - old.unwrap_or(0) + if remove { 0 } else { v };
        }
        r.sum.set(tx, sum)?;
        r.ops.update(tx, |n| n + 1)?;
        if kill_self {
            // SAFETY: raise(2) with a valid signal number; no memory is passed.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        Ok::<_, ptm::Error>(r.ops.get(tx))
    })?;
    progress.set(COMMITTED, ops);
    Ok(ops)
}

/// The child: runs transactions until killed, counting them in the progress mapping; with
/// `kill_self_after`, kills itself inside the transaction after that many; with
/// `kill_after_cpu_us`, arms a CPU-time timer that delivers SIGKILL once the workload has run
/// that many microseconds on the CPU ([`arm_cpu_kill`]).
pub(crate) fn child(
    path: &Path,
    seed: u64,
    force_pmem: bool,
    kill_self_after: Option<u64>,
    kill_after_cpu_us: Option<u64>,
) -> Result<(), Failure> {
    let pool = Pool::<DemoRoot>::open(path, &opts(force_pmem)).map_err(|e| Failure(e.to_string()))?;
    let progress = Progress::map(&progress_path(path))?;
    let mut committed = pool
        .transaction(|tx, r| Ok::<_, ptm::Error>(r.ops.get(tx)))
        .map_err(|e| Failure(e.to_string()))?;
    progress.set(BEGUN, committed);
    progress.set(COMMITTED, committed);
    progress.set(READY, 1);
    if let Some(us) = kill_after_cpu_us {
        arm_cpu_kill(us)?;
    }
    let mut rng = Rng(seed | 1);
    let max_ops = if force_pmem { 8 } else { 64 };
    for done in 0.. {
        let kill_self = kill_self_after == Some(done);
        committed = step(&pool, &mut rng, &progress, committed, max_ops, kill_self)
            .map_err(|e| Failure(e.to_string()))?;
    }
    Ok(())
}

/// Arms a timer on this process's user CPU time (`ITIMER_VIRTUAL`) that kills it with SIGKILL
/// once it has run `us` more microseconds of its own code.
///
/// Why user CPU time, not a wall-clock delay in the parent: the kernel advances the timer at its
/// tick while the process runs its own code, so the kill lands at a point drawn from where the
/// child spends that time: the transactions' work. On the journaled engine a commit spends
/// milliseconds in `fdatasync` (after its one `pwrite`, which puts its records in the page
/// cache, where a process kill cannot lose them), against microseconds for the transaction's
/// work: a kill after a wall-clock delay lands in that wait nearly every time, and the
/// transaction is committed. On persistent memory, where the child never waits, the two are
/// alike. The timer's signal (SIGVTALRM) runs [`on_cpu_timer`], which raises SIGKILL: the
/// process dies at the instruction the timer interrupted, with no unwinding and no flush.
fn arm_cpu_kill(us: u64) -> Result<(), Failure> {
    let handler: extern "C" fn(libc::c_int) = on_cpu_timer;
    // SAFETY: installs a handler for SIGVTALRM, which nothing else in this process uses; the
    // handler only calls raise(2), which is async-signal-safe.
    if unsafe { libc::signal(libc::SIGVTALRM, handler as libc::sighandler_t) } == libc::SIG_ERR {
        return Err(Failure(format!(
            "signal(SIGVTALRM): {}",
            std::io::Error::last_os_error()
        )));
    }
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_usec: (us % 1_000_000) as libc::suseconds_t,
        },
    };
    // SAFETY: setitimer(2) reads `timer`; a null old value is allowed.
    if unsafe { libc::setitimer(libc::ITIMER_VIRTUAL, &timer, std::ptr::null_mut()) } != 0 {
        return Err(Failure(format!("setitimer: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// SIGVTALRM: the child's CPU-time kill ([`arm_cpu_kill`]).
extern "C" fn on_cpu_timer(_: libc::c_int) {
    // SAFETY: raise(2) with a valid signal number is async-signal-safe; SIGKILL ends the process
    // here.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
}

/// Where a kill landed, as the child's counters and the reopened pool tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    /// Between two transactions: the pool holds exactly the reported ones.
    Between,
    /// Inside a transaction that recovery rolled back.
    RolledBack,
    /// Inside a transaction none of whose writes had reached the pool (killed before its first
    /// undo entry was written; on the disk engine, before its first drain journaled one): it
    /// vanished with nothing to roll back.
    NothingToUndo,
    /// Inside a transaction whose commit was durable before the kill took effect (it had not
    /// yet returned to the child).
    Committed,
}

/// What one reopen found.
struct Check {
    ops: u64,
    keys: u64,
    landed: Landed,
    report: ptm::RecoveryReport,
}

/// Reopens the pool after a kill and checks it against the child's counters: `committed`
/// transactions had returned, `begun` had started (equal, or one more when the kill landed
/// inside a transaction).
fn verify(path: &Path, force_pmem: bool, begun: u64, committed: u64) -> Result<Check, String> {
    let pool = Pool::<DemoRoot>::open(path, &opts(force_pmem)).map_err(|e| format!("reopen failed: {e}"))?;
    let report = pool.recovery_report();
    let (sum, total, ops, keys) = pool
        .transaction(|tx, r| {
            let total: u64 = r.map.iter(tx).map(|(_, v)| v).sum();
            Ok::<_, ptm::Error>((r.sum.get(tx), total, r.ops.get(tx), r.map.len(tx)))
        })
        .map_err(|e| format!("reading the map failed: {e}"))?;
    if sum != total {
        return Err(format!("sum of values {total} != recorded sum {sum}"));
    }
    if begun != committed && begun != committed + 1 {
        return Err(format!(
            "the child's counters are inconsistent: {begun} begun, {committed} committed"
        ));
    }
    let landed = match (begun == committed, ops) {
        (true, o) if o == committed => Landed::Between,
        (false, o) if o == committed && report.rolled_back > 0 => Landed::RolledBack,
        (false, o) if o == committed => Landed::NothingToUndo,
        (false, o) if o == committed + 1 => Landed::Committed,
        _ => {
            return Err(format!(
                "{ops} operations in the pool, but the child had {committed} committed and \
                 {} in flight",
                begun - committed
            ))
        }
    };
    if landed == Landed::Between && report.rolled_back > 0 {
        return Err(format!(
            "killed between transactions, yet recovery rolled back {} lanes",
            report.rolled_back
        ));
    }
    Ok(Check {
        ops,
        keys,
        landed,
        report,
    })
}

/// Starts a child and waits until it has opened the pool and set its counters (so the kill
/// lands in the workload, not in process start-up or recovery).
fn start_child(
    exe: &Path,
    path: &Path,
    seed: u64,
    force_pmem: bool,
    kill_self_after: Option<u64>,
    kill_after_cpu_us: Option<u64>,
    progress: &File,
) -> Result<Child, Failure> {
    let mut child = Command::new(exe)
        .arg("demo-child")
        .arg(path)
        .arg("--seed")
        .arg(seed.to_string())
        .args(force_pmem.then_some("--force-pmem"))
        .args(kill_self_after.map(|n| format!("--kill-self-after={n}")))
        .args(kill_after_cpu_us.map(|n| format!("--kill-after-cpu-us={n}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure(format!("starting the child: {e}")))?;
    while progress_read(progress, READY)? == 0 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure(format!("the child stopped before it started ({status})")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(child)
}

/// On persistent memory, the least user CPU time a child runs before its kill, in microseconds.
const CPU_KILL_MIN_US: u64 = 2_000;
/// On persistent memory, the spread of the CPU time before a kill: uniform in
/// `MIN..MIN + SPREAD` microseconds.
const CPU_KILL_SPREAD_US: u64 = 18_000;
/// On disk, the CPU time before a kill is uniform in `1..=DISK_CPU_KILL_MAX_US` microseconds:
/// there the child's user time is a small part of its wall time (it waits in `fdatasync`), and
/// the kernel checks the timer at its tick, so even 1 µs lands some ticks in.
const DISK_CPU_KILL_MAX_US: u64 = 500;
/// A child not dead by then (its CPU-time kill never came) is killed from outside.
const WALL_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the child dies of its kill (its own, or its CPU-time timer's); past
/// [`WALL_LIMIT`], kills it with SIGKILL from here (such a kill lands wherever the child is, and
/// is classified as any other).
fn wait_for_kill(child: &mut Child) -> Result<std::process::ExitStatus, Failure> {
    let limit = Instant::now() + WALL_LIMIT;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Failure(format!("waiting for the child: {e}")))?
        {
            return Ok(status);
        }
        if Instant::now() >= limit {
            child
                .kill()
                .map_err(|e| Failure(format!("killing the child: {e}")))?; // SIGKILL
            return child
                .wait()
                .map_err(|e| Failure(format!("waiting for the child: {e}")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Options of `ptm demo`.
pub(crate) struct DemoArgs {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) kills: u32,
    pub(crate) seed: Option<u64>,
    pub(crate) disk: bool,
    /// Children kill themselves mid-transaction instead of being killed at random moments.
    pub(crate) kill_self: bool,
}

/// Runs the demo and prints its table.
pub(crate) fn run(a: DemoArgs) -> Result<String, Failure> {
    let shm = Path::new("/dev/shm");
    let (base, force_pmem) = match (&a.dir, a.disk) {
        (Some(d), _) => (d.clone(), !a.disk),
        (None, false) if shm.is_dir() => (shm.to_path_buf(), true),
        (None, _) => (std::env::temp_dir(), false),
    };
    let dir = tempfile::Builder::new()
        .prefix("ptm-demo.")
        .tempdir_in(&base)
        .map_err(|e| Failure(format!("temporary directory in {}: {e}", base.display())))?;
    let path = dir.path().join("demo.pool");
    let pool =
        Pool::<DemoRoot>::create(&path, 32 << 20, &opts(force_pmem)).map_err(|e| Failure(e.to_string()))?;
    let domain = pool.domain().name();
    drop(pool);
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let mut rng = Rng(seed | 1);
    let exe = std::env::current_exe().map_err(|e| Failure(format!("own executable: {e}")))?;
    let started = Instant::now();
    let progress = progress_reset(&progress_path(&path))?;
    let (mut total_ops, mut checks, mut last) = (0u64, 0u32, None);
    let (mut between, mut rolled_back, mut nothing_to_undo, mut committed_at_kill) = (0u32, 0u32, 0u32, 0u32);
    let mut entries_undone = 0u64;
    for round in 0..a.kills {
        let kill_self_after = a.kill_self.then(|| rng.next() % 100);
        let cpu_us = (!a.kill_self).then(|| {
            if force_pmem {
                CPU_KILL_MIN_US + rng.next() % CPU_KILL_SPREAD_US
            } else {
                1 + rng.next() % DISK_CPU_KILL_MAX_US
            }
        });
        let seed = rng.next();
        let mut child = start_child(&exe, &path, seed, force_pmem, kill_self_after, cpu_us, &progress)?;
        let status = wait_for_kill(&mut child)?;
        if status.signal() != Some(libc::SIGKILL) {
            return Err(Failure(format!(
                "round {round}: the child was to be killed, but ended with {status}"
            )));
        }
        let (begun, committed) = (
            progress_read(&progress, BEGUN)?,
            progress_read(&progress, COMMITTED)?,
        );
        progress
            .write_all_at(&[0u8; 8], (READY * 8) as u64)
            .map_err(|e| Failure(format!("progress file: {e}")))?;
        let c = verify(&path, force_pmem, begun, committed)
            .map_err(|e| Failure(format!("round {round} (seed {seed}): {e}")))?;
        match c.landed {
            Landed::Between => between += 1,
            Landed::RolledBack => rolled_back += 1,
            Landed::NothingToUndo => nothing_to_undo += 1,
            Landed::Committed => committed_at_kill += 1,
        }
        entries_undone += c.report.entries_undone;
        total_ops = c.ops;
        checks += 1;
        last = Some(c.keys);
    }
    let mut out = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<28}{v}");
    };
    row("pool", format!("{} ({domain})", path.display()));
    row("seed", seed.to_string());
    row("transactions committed", total_ops.to_string());
    row("SIGKILLs", a.kills.to_string());
    row("reopens with recovery", a.kills.to_string());
    row(
        "kills mid-transaction",
        (rolled_back + nothing_to_undo + committed_at_kill).to_string(),
    );
    row(
        "  rolled back at reopen",
        format!(
            "{} (the pool reopened without them; {entries_undone} undo entries applied)",
            rolled_back + nothing_to_undo
        ),
    );
    row(
        "    with nothing to undo",
        if force_pmem {
            format!("{nothing_to_undo} (killed before their first write reached the pool)")
        } else {
            format!(
                "{nothing_to_undo} (their records had not reached the journal: a transaction's \
                 only write is at its commit)"
            )
        },
    );
    row(
        "  committed before the kill",
        format!("{committed_at_kill} (durable, not yet returned)"),
    );
    row("kills between transactions", between.to_string());
    row("invariant checks passed", format!("{checks}/{}", a.kills));
    row("keys in the map", last.unwrap_or(0).to_string());
    row("time", format!("{:.1} s", started.elapsed().as_secs_f64()));
    row(
        "result",
        "all invariants held: nothing committed was lost, nothing uncommitted survived".into(),
    );
    Ok(out)
}
