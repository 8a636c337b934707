//! Guards failure atomicity under SIGKILL: a child process runs random bank transfers (small
//! ones, ones rewriting every balance, ones that abort) on several threads and is killed at a
//! random moment, over and over; every reopen must find the total conserved, every reported
//! commit present, and a recovery report that matches.
//!
//! Alone in its binary: it re-executes itself, and a spawned child shares every open descriptor
//! (pool locks included) until it execs (docs/design.md §4).
//!
//! Defaults: 30 kills on a `/dev/shm` pool (cache-flush domain, `force_pmem`) and 10 on each of
//! two pools in the disk temp dir (msync domain, journaled engine). `PTM_KILL_ROUNDS=N` runs N
//! kills on each instead;
//! `PTM_KILL_SEED=S` replays the random choices (delays and workloads) of a printed seed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ptm::{DomainKind, Engine, PCell, PMutex, Persistent, Pool, PoolOptions};

const TEST_NAME: &str = "sigkill_mid_transaction_keeps_the_bank_consistent";
const ACCOUNTS: usize = 16;
/// Worker threads in the child (each runs its own transactions, on its own lane).
const THREADS: usize = 2;
const INITIAL_BALANCE: u64 = 1_000_000;
const TOTAL: u64 = INITIAL_BALANCE * ACCOUNTS as u64;
const LAYOUT: &str = "kill-bank";

const ENV_CHILD: &str = "PTM_KILL_CHILD_POOL";
const ENV_CHILD_FORCE: &str = "PTM_KILL_CHILD_ENGINE";
const ENV_CHILD_SEED: &str = "PTM_KILL_CHILD_SEED";
const ENV_CHILD_PROGRESS: &str = "PTM_KILL_CHILD_PROGRESS";

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Account {
    balance: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Counter {
    commits: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Bank {
    accounts: [PMutex<Account>; ACCOUNTS],
    /// Per child thread: transactions committed so far (bumped inside each transaction).
    commits: [PMutex<Counter>; THREADS],
}

/// xorshift64*: tiny, seedable, good enough to pick delays and workloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn opts(engine: Engine) -> PoolOptions {
    PoolOptions::new()
        .layout(LAYOUT)
        .engine(engine)
        .lock_timeout(Duration::from_secs(20))
}

/// The error of a child transaction: the pool's, or a deliberate abort.
#[derive(Debug)]
enum TxError {
    Ptm(ptm::Error),
    Abort,
}

impl From<ptm::Error> for TxError {
    fn from(e: ptm::Error) -> Self {
        TxError::Ptm(e)
    }
}

/// One random transaction of child thread `t`; returns the thread's commit count if it commits.
fn child_transaction(pool: &Pool<Bank>, t: usize, rng: &mut Rng) -> Result<u64, TxError> {
    let kind = rng.below(16);
    let a = rng.below(ACCOUNTS as u64) as usize;
    let b = (a + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
    let (lo, hi) = (a.min(b), a.max(b));
    let pct = rng.below(101);
    let k = rng.next();
    pool.transaction(|tx, bank| {
        if kind < 5 {
            // Many writes: lock every account (ascending), transfer a -> b, then move amounts
            // inside every pair (2i, 2i+1) back and forth so the total stays the same.
            let accts = bank
                .accounts
                .iter()
                .map(|m| m.lock(tx))
                .collect::<Result<Vec<_>, _>>()?;
            let from = accts[a].balance.get(tx);
            let x = from * pct / 100;
            accts[a].balance.set(tx, from - x)?;
            accts[b].balance.update(tx, |v| v + x)?;
            for (i, pair) in accts.chunks(2).enumerate() {
                let (p, q) = (&pair[0].balance, &pair[1].balance);
                let (vp, vq) = (p.get(tx), q.get(tx));
                let m = (k >> (i * 4)) % 1000;
                let y = if m < 500 { m.min(vq) } else { (m - 500).min(vp) };
                if m < 500 {
                    p.set(tx, vp + y)?;
                    q.set(tx, vq - y)?;
                } else {
                    p.set(tx, vp - y)?;
                    q.set(tx, vq + y)?;
                }
            }
        } else {
            let l = bank.accounts[lo].lock(tx)?;
            let h = bank.accounts[hi].lock(tx)?;
            let (from, to) = if a < b { (l, h) } else { (h, l) };
            let v = from.balance.get(tx);
            let x = v * pct / 100;
            from.balance.set(tx, v - x)?;
            to.balance.set(tx, to.balance.get(tx) + x)?;
            if kind == 5 {
                // Roll back at run time after the writes.
                return Err(TxError::Abort);
            }
        }
        let c = bank.commits[t].lock(tx)?;
        Ok(c.commits.update(tx, |n| n + 1)?)
    })
}

/// The child: open the pool, report, and run transactions on `THREADS` threads until killed.
fn child(path: &str) {
    // A failing worker must end the process with a status the parent does not take for a kill.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
    let engine = Engine::from_name(&std::env::var(ENV_CHILD_FORCE).unwrap()).unwrap();
    let seed: u64 = std::env::var(ENV_CHILD_SEED).unwrap().parse().unwrap();
    let progress = std::fs::OpenOptions::new()
        .write(true)
        .open(std::env::var(ENV_CHILD_PROGRESS).unwrap())
        .unwrap();
    let pool = Pool::<Bank>::open(path, &opts(engine)).unwrap();
    // On a line of its own: libtest may have printed "test <name> ... " without a newline.
    let mut out = std::io::stdout();
    out.write_all(b"\nKILLCHILD ready\n").unwrap();
    out.flush().unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, progress) = (&pool, &progress);
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9));
                loop {
                    match child_transaction(pool, t, &mut rng) {
                        // One 8-byte pwrite(2) per commit: a kill cannot tear it, and the page
                        // cache keeps it after the process dies.
                        Ok(n) => progress.write_all_at(&n.to_le_bytes(), t as u64 * 8).unwrap(),
                        Err(TxError::Abort) => {}
                        Err(TxError::Ptm(e)) => panic!("thread {t}: transaction failed: {e}"),
                    }
                }
            });
        }
    });
}

/// Reads the child's stdout until it ends; signals `ready` when the child has opened the pool.
fn watch_stdout(stdout: impl std::io::Read, ready: mpsc::Sender<()>) -> bool {
    let mut seen = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.trim() == "KILLCHILD ready" && !seen {
            seen = true;
            let _ = ready.send(());
        }
    }
    seen
}

/// The last commit count each child thread reported (each was durable before it was written).
fn read_reported(progress: &Path) -> [u64; THREADS] {
    let bytes = std::fs::read(progress).unwrap();
    std::array::from_fn(|t| u64::from_le_bytes(bytes[t * 8..t * 8 + 8].try_into().unwrap()))
}

/// Balances and per-thread commit counters, read in one transaction.
fn snapshot(pool: &Pool<Bank>) -> ([u64; ACCOUNTS], [u64; THREADS]) {
    pool.transaction(|tx, bank| {
        let mut bal = [0; ACCOUNTS];
        for (i, m) in bank.accounts.iter().enumerate() {
            bal[i] = m.lock(tx)?.balance.get(tx);
        }
        let mut com = [0; THREADS];
        for (i, m) in bank.commits.iter().enumerate() {
            com[i] = m.lock(tx)?.commits.get(tx);
        }
        Ok::<_, ptm::Error>((bal, com))
    })
    .unwrap()
}

fn check_bank(bal: &[u64; ACCOUNTS], ctx: &str) {
    let total: u64 = bal.iter().sum();
    assert_eq!(total, TOTAL, "{ctx}: total changed: balances {bal:?}");
    assert!(
        bal.iter().all(|&b| b <= TOTAL),
        "{ctx}: implausible balance: {bal:?}"
    );
}

struct Variant {
    name: &'static str,
    dir: PathBuf,
    engine: Engine,
    rounds: usize,
    /// Upper bound of the random time the child runs after it reported ready.
    max_delay: Duration,
}

#[derive(Debug, Default)]
struct Tally {
    rounds_with_commits: usize,
    rounds_with_rollback: usize,
    rounds_completed: usize,
    commits: u64,
    entries_undone: u64,
}

fn run_variant(v: &Variant, rng: &mut Rng) -> Tally {
    let path = v.dir.join("bank.pool");
    {
        let pool = Pool::<Bank>::create(&path, 16 << 20, &opts(v.engine)).unwrap();
        let expected = match v.engine {
            Engine::Msync => Some(DomainKind::Msync),
            Engine::Journaled => Some(DomainKind::Journaled),
            _ => None,
        };
        if let Some(k) = expected {
            assert_eq!(pool.domain(), k, "{}: expected the {} domain", v.name, k.name());
        }
        pool.transaction(|tx, bank| {
            for m in &bank.accounts {
                m.lock(tx)?.balance.set(tx, INITIAL_BALANCE)?;
            }
            Ok::<_, ptm::Error>(())
        })
        .unwrap();
    }
    let progress_path = v.dir.join("progress");
    std::fs::write(&progress_path, [0u8; THREADS * 8]).unwrap();
    let mut tally = Tally::default();
    let mut durable = [0u64; THREADS];
    for round in 0..v.rounds {
        let child_seed = rng.next();
        let delay = Duration::from_micros(rng.below(v.max_delay.as_micros() as u64 + 1));
        let ctx = format!("{} round {round} (delay {delay:?})", v.name);
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(ENV_CHILD, &path)
            .env(ENV_CHILD_FORCE, v.engine.name())
            .env(ENV_CHILD_SEED, child_seed.to_string())
            .env(ENV_CHILD_PROGRESS, &progress_path)
            .env_remove("PTM_FORCE_PMEM")
            .env_remove("PTM_EADR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let watcher = std::thread::spawn(move || watch_stdout(stdout, ready_tx));
        let ready = ready_rx.recv_timeout(Duration::from_secs(30)).is_ok();
        if ready {
            std::thread::sleep(delay);
        }
        // std's kill is SIGKILL on Unix.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let saw_ready = watcher.join().unwrap();
        assert!(ready && saw_ready, "{ctx}: child never reported ready ({status})");
        let reported = read_reported(&progress_path);
        assert_eq!(status.signal(), Some(9), "{ctx}: child ended by itself: {status}");

        let started = Instant::now();
        let pool = Pool::<Bank>::open(&path, &opts(v.engine))
            .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        let recovery_time = started.elapsed();
        let report = pool.recovery_report();
        let (bal, com) = snapshot(&pool);
        check_bank(&bal, &ctx);
        assert!(!report.was_clean, "{ctx}: killed pool reported clean: {report:?}");
        assert!(
            report.rolled_back + report.completed <= THREADS,
            "{ctx}: more lanes recovered than transactions in flight: {report:?}"
        );
        assert!(
            report.entries_undone >= report.rolled_back as u64
                && (report.rolled_back > 0 || report.entries_undone == 0),
            "{ctx}: inconsistent report {report:?}"
        );
        for t in 0..THREADS {
            // Every commit the child reported is durable; at most one more (committed, killed
            // before reporting) may be.
            assert!(
                com[t] >= reported[t] && com[t] <= reported[t].max(durable[t]) + 1,
                "{ctx}: thread {t}: {} commits durable, {} reported, {} before this round",
                com[t],
                reported[t],
                durable[t]
            );
            assert!(
                com[t] >= durable[t],
                "{ctx}: thread {t}: durable commits went back"
            );
        }
        let new_commits: u64 = com.iter().zip(&durable).map(|(n, d)| n - d).sum();
        durable = com;
        tally.commits += new_commits;
        tally.rounds_with_commits += usize::from(new_commits > 0);
        tally.rounds_with_rollback += usize::from(report.rolled_back > 0);
        tally.rounds_completed += usize::from(report.completed > 0);
        tally.entries_undone += report.entries_undone;
        if round < 3 || (report.rolled_back > 0 && tally.rounds_with_rollback <= 3) {
            println!("{ctx}: {new_commits} commits, recovery {recovery_time:?}: {report:?}");
        }
        drop(pool);

        // Recovery finished for good: a second open finds a clean pool and the same state.
        let pool = Pool::<Bank>::open(&path, &opts(v.engine)).unwrap();
        let report = pool.recovery_report();
        assert!(
            report.was_clean && report.rolled_back == 0 && report.completed == 0,
            "{ctx}: second open after recovery: {report:?}"
        );
        assert_eq!(
            snapshot(&pool),
            (bal, com),
            "{ctx}: state changed across a clean reopen"
        );
    }
    tally
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

#[test]
fn sigkill_mid_transaction_keeps_the_bank_consistent() {
    if let Ok(path) = std::env::var(ENV_CHILD) {
        child(&path);
        return;
    }
    let seed = env_u64("PTM_KILL_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_secs() ^ u64::from(t.subsec_nanos()) ^ (u64::from(std::process::id()) << 32)
    });
    let rounds = env_u64("PTM_KILL_ROUNDS").map(|n| n as usize);
    println!("kill test seed: PTM_KILL_SEED={seed} (rounds override: {rounds:?})");
    let mut rng = Rng::new(seed);

    let shm = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let disk = tempfile::tempdir().unwrap();
    let variants = [
        Variant {
            name: "shm/force_pmem",
            dir: shm.path().to_owned(),
            engine: Engine::Pmem,
            rounds: rounds.unwrap_or(30),
            max_delay: Duration::from_millis(60),
        },
        Variant {
            name: "disk/msync",
            dir: disk.path().join("msync"),
            engine: Engine::Msync,
            rounds: rounds.unwrap_or(10),
            max_delay: Duration::from_millis(300),
        },
        Variant {
            name: "disk/journaled",
            dir: disk.path().join("journaled"),
            engine: Engine::Journaled,
            rounds: rounds.unwrap_or(10),
            max_delay: Duration::from_millis(300),
        },
    ];
    let mut rollbacks = 0;
    for v in &variants {
        std::fs::create_dir_all(&v.dir).unwrap();
        let started = Instant::now();
        let tally = run_variant(v, &mut rng);
        println!(
            "{}: {} kills in {:?}: {tally:?}",
            v.name,
            v.rounds,
            started.elapsed()
        );
        if v.rounds >= 5 {
            assert!(
                tally.rounds_with_commits > 0,
                "{}: no round committed anything before its kill (seed {seed})",
                v.name
            );
        }
        rollbacks += tally.rounds_with_rollback;
    }
    if variants.iter().map(|v| v.rounds).sum::<usize>() >= 20 {
        assert!(rollbacks > 0, "no kill landed inside a transaction (seed {seed})");
    }
}
