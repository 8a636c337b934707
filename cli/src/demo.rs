//! `ptm demo`: a persistent hash map that survives `kill -9`.
//!
//! The parent creates a pool (tmpfs treated as persistent memory, or a plain file on disk with
//! `--disk`), then repeatedly starts a child process (this binary, `ptm demo-child`) that runs
//! hash-map transactions as fast as it can, kills it with SIGKILL after a random delay, reopens
//! the pool (recovery runs) and checks the invariants:
//! - the sum of the map's values equals the `sum` recorded in the same transactions;
//! - the number of committed operations in the pool is at least what the child reported as
//!   committed (nothing committed is lost) and at most one more (the one in flight at the kill).

use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// One transaction of the workload: 1 to 8 inserts/updates/removes, keeping `sum` and `ops`.
fn step(pool: &Pool<DemoRoot>, rng: &mut Rng) -> ptm::Result<u64> {
    let n = 1 + rng.next() % 8;
    let ops: Vec<(u64, bool, u64)> = (0..n)
        .map(|_| (rng.next() % KEYS, rng.next().is_multiple_of(4), rng.next() % 1000))
        .collect();
    pool.transaction(|tx, r| {
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
        r.ops.update(tx, |n| n + 1)
    })
}

/// The child: runs transactions until killed, writing the committed count after each commit.
pub(crate) fn child(path: &Path, seed: u64, force_pmem: bool) -> Result<(), Failure> {
    let pool = Pool::<DemoRoot>::open(path, &opts(force_pmem)).map_err(|e| Failure(e.to_string()))?;
    let progress = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(progress_path(path))
        .map_err(|e| Failure(format!("progress file: {e}")))?;
    let mut rng = Rng(seed | 1);
    loop {
        let ops = step(&pool, &mut rng).map_err(|e| Failure(e.to_string()))?;
        progress
            .write_all_at(&ops.to_le_bytes(), 0)
            .map_err(|e| Failure(format!("progress file: {e}")))?;
    }
}

/// What one reopen found.
struct Check {
    ops: u64,
    keys: u64,
    report: ptm::RecoveryReport,
}

fn verify(path: &Path, force_pmem: bool, reported: u64) -> Result<Check, String> {
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
    if ops < reported || ops > reported + 1 {
        return Err(format!(
            "{ops} operations in the pool, but the child reported {reported} committed"
        ));
    }
    Ok(Check { ops, keys, report })
}

/// Options of `ptm demo`.
pub(crate) struct DemoArgs {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) kills: u32,
    pub(crate) seed: Option<u64>,
    pub(crate) disk: bool,
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
    let (mut total_ops, mut recoveries, mut checks, mut last) = (0u64, 0usize, 0u32, None);
    for round in 0..a.kills {
        let mut child = Command::new(&exe)
            .arg("demo-child")
            .arg(&path)
            .arg("--seed")
            .arg(rng.next().to_string())
            .args(force_pmem.then_some("--force-pmem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Failure(format!("starting the child: {e}")))?;
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 300));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure(format!(
                "round {round}: the child stopped by itself ({status})"
            )));
        }
        child
            .kill()
            .map_err(|e| Failure(format!("killing the child: {e}")))?; // SIGKILL
        let _ = child.wait();
        let mut b = [0u8; 8];
        let reported = std::fs::File::open(progress_path(&path))
            .and_then(|f| f.read_exact_at(&mut b, 0))
            .map(|()| u64::from_le_bytes(b))
            .unwrap_or(0);
        let c = verify(&path, force_pmem, reported)
            .map_err(|e| Failure(format!("round {round} (seed {seed}): {e}")))?;
        total_ops = c.ops;
        recoveries += c.report.rolled_back;
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
        format!("{recoveries} (rolled back at reopen)"),
    );
    row("invariant checks passed", format!("{checks}/{}", a.kills));
    row("keys in the map", last.unwrap_or(0).to_string());
    row("time", format!("{:.1} s", started.elapsed().as_secs_f64()));
    row(
        "result",
        "all invariants held: nothing committed was lost, nothing uncommitted survived".into(),
    );
    Ok(out)
}
