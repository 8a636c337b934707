//! Guards recovery against being killed itself: a pool left with an uncommitted 16 MiB
//! transaction is opened by child processes that are SIGKILLed at random moments of the open
//! (mid-rollback included), again and again; the final open must find exactly the last committed
//! contents, and a committed transaction of the same size must survive.
//!
//! In the `serial` binary: it re-executes itself, and a spawned child shares every open descriptor
//! (pool locks included) until it execs (docs/design.md §4).
//!
//! Each episode restarts from the crash image and kills up to `PTM_KILL_ROUNDS` (default 8) opens,
//! each after a random delay within the measured duration of a full recovery; 4 episodes, more
//! (up to 20) until some kill has landed mid-rollback. `PTM_KILL_SEED=S` replays the delays of a
//! printed seed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ptm::{PCell, Persistent, Pool, PoolOptions};

const TEST_NAME: &str = "kill_recovery::recovery_killed_at_any_point_converges";
const CELLS: usize = 4096;
const WORDS: usize = 512;
const CELL_BYTES: usize = WORDS * 8;
const POOL_SIZE: u64 = 64 << 20;
const LAYOUT: &str = "kill-recovery";
const EPISODES: usize = 4;

const ENV_MODE: &str = "PTM_KR_CHILD_MODE";
const ENV_POOL: &str = "PTM_KR_CHILD_POOL";
const ENV_MARKER: &str = "PTM_KR_CHILD_MARKER";

/// 16 MiB of root: 4096 cells of one page each.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Big {
    cells: [PCell<[u64; WORDS]>; CELLS],
}

/// Pattern `generation` of word `w` of cell `c` (distinct across generations, cells and words).
fn pat(generation: u64, c: usize, w: usize) -> u64 {
    let mut z = (generation << 48 ^ (c as u64) << 16 ^ w as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn cell_pattern(generation: u64, c: usize) -> [u64; WORDS] {
    std::array::from_fn(|w| pat(generation, c, w))
}

fn opts() -> PoolOptions {
    PoolOptions::new().layout(LAYOUT).force_pmem(true).lanes(4)
}

/// Commits pattern `generation` into every cell, one logged `set` (one drain) per cell.
fn commit_pattern(pool: &Pool<Big>, generation: u64) {
    pool.transaction(|tx, big| {
        for (c, cell) in big.cells.iter().enumerate() {
            cell.set(tx, cell_pattern(generation, c))?;
        }
        Ok::<_, ptm::Error>(())
    })
    .unwrap();
}

/// Which cells hold pattern `generation` (checked through transactions).
fn assert_pattern(pool: &Pool<Big>, generation: u64, ctx: &str) {
    let bad: Vec<usize> = pool
        .transaction(|tx, big| {
            Ok::<_, ptm::Error>(
                (0..CELLS)
                    .filter(|&c| big.cells[c].get(tx) != cell_pattern(generation, c))
                    .collect(),
            )
        })
        .unwrap();
    assert!(
        bad.is_empty(),
        "{ctx}: {} cells do not hold pattern {generation} (first: {:?})",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

/// Cell states read straight from the file (no recovery): how many cells hold the committed
/// pattern, the uncommitted one, or neither (a cell torn by a kill mid-copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raw {
    committed: usize,
    uncommitted: usize,
    torn: usize,
}

fn raw_state(path: &Path, root_offset: u64, committed: u64, uncommitted: u64) -> Raw {
    let f = std::fs::File::open(path).unwrap();
    let mut bytes = vec![0u8; CELLS * CELL_BYTES];
    f.read_exact_at(&mut bytes, root_offset).unwrap();
    let mut raw = Raw {
        committed: 0,
        uncommitted: 0,
        torn: 0,
    };
    for (c, cell) in bytes.chunks_exact(CELL_BYTES).enumerate() {
        let word = |w: usize| u64::from_le_bytes(cell[w * 8..w * 8 + 8].try_into().unwrap());
        if (0..WORDS).all(|w| word(w) == pat(committed, c, w)) {
            raw.committed += 1;
        } else if (0..WORDS).all(|w| word(w) == pat(uncommitted, c, w)) {
            raw.uncommitted += 1;
        } else {
            raw.torn += 1;
        }
    }
    raw
}

/// Child "big": commit pattern 1, then rewrite everything with pattern 2 and stop inside that
/// transaction (marker file, then sleep until killed).
fn child_big(path: &str) {
    let marker = std::env::var(ENV_MARKER).unwrap();
    let pool = Pool::<Big>::open(path, &opts()).unwrap();
    commit_pattern(&pool, 1);
    pool.transaction(|tx, big| -> Result<(), ptm::Error> {
        // The other logging path: every cell logged behind one drain, then stored.
        tx.snapshot(|batch| big.cells.iter().try_for_each(|cell| batch.add(cell)))?;
        for (c, cell) in big.cells.iter().enumerate() {
            cell.set(tx, cell_pattern(2, c))?;
        }
        std::fs::write(&marker, b"in transaction").unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    })
    .unwrap();
}

/// Child "open": say when it starts, open (recovery runs), say when done, close.
fn child_open(path: &str) {
    let mut out = std::io::stdout();
    // On lines of their own: libtest may have printed "test <name> ... " without a newline.
    out.write_all(b"\nKRCHILD start\n").unwrap();
    out.flush().unwrap();
    let pool = Pool::<Big>::open(path, &opts()).unwrap();
    out.write_all(b"\nKRCHILD opened\n").unwrap();
    out.flush().unwrap();
    drop(pool);
}

/// xorshift64*, seeded through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(pat(0xFFFF, 0, seed as usize) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn spawn_child(mode: &str, pool: &Path, marker: Option<&Path>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(ENV_MODE, mode)
        .env(ENV_POOL, pool)
        .env_remove("PTM_FORCE_PMEM")
        .env_remove("PTM_EADR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(m) = marker {
        cmd.env(ENV_MARKER, m);
    }
    cmd.spawn().unwrap()
}

/// Forwards the child's "KRCHILD <event>" lines with their arrival time until its stdout ends.
fn watch(child: &mut Child) -> (mpsc::Receiver<(String, Instant)>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ev) = line.trim().strip_prefix("KRCHILD ") {
                let _ = tx.send((ev.to_owned(), Instant::now()));
            }
        }
    });
    (rx, h)
}

fn wait_event(rx: &mpsc::Receiver<(String, Instant)>, want: &str, ctx: &str) -> Instant {
    let (ev, at) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{ctx}: no '{want}' from the child: {e}"));
    assert_eq!(ev, want, "{ctx}");
    at
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

#[test]
fn recovery_killed_at_any_point_converges() {
    let _serial = crate::serial();
    if let Ok(mode) = std::env::var(ENV_MODE) {
        let path = std::env::var(ENV_POOL).unwrap();
        match mode.as_str() {
            "big" => child_big(&path),
            "open" => child_open(&path),
            m => panic!("unknown child mode {m}"),
        }
        return;
    }
    let test_started = Instant::now();
    let seed = env_u64("PTM_KILL_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_secs() ^ u64::from(t.subsec_nanos()) ^ (u64::from(std::process::id()) << 32)
    });
    let rounds = env_u64("PTM_KILL_ROUNDS").unwrap_or(8) as usize;
    println!("kill_recovery seed: PTM_KILL_SEED={seed}, {EPISODES} episodes x {rounds} kills");
    let mut rng = Rng::new(seed);

    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    let path = at("big.pool");
    let root_offset = {
        let pool = Pool::<Big>::create(&path, POOL_SIZE, &opts()).unwrap();
        pool.geometry().root_offset
    };

    // 1. A child commits pattern 1 and is killed inside the transaction writing pattern 2.
    let marker = at("marker");
    let mut child = spawn_child("big", &path, Some(&marker));
    let started = Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the big-transaction child ended by itself: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "big transaction too slow"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "big child: {status}");
    let crashed = raw_state(&path, root_offset, 1, 2);
    println!("crash image after {:?}: {crashed:?}", started.elapsed());
    assert_eq!(
        crashed.uncommitted, CELLS,
        "the uncommitted writes are not all in place"
    );
    let image = at("crashed.img");
    std::fs::copy(&path, &image).unwrap();

    // 2. How long a child takes from its start to the end of a full recovery (on a copy; the
    // fastest of three, so that random delays below it mostly interrupt the recovery).
    let probe = at("probe.pool");
    let mut window = Duration::MAX;
    for _ in 0..3 {
        std::fs::copy(&image, &probe).unwrap();
        let mut child = spawn_child("open", &probe, None);
        let (rx, watcher) = watch(&mut child);
        let t0 = wait_event(&rx, "start", "probe");
        let t1 = wait_event(&rx, "opened", "probe");
        let status = child.wait().unwrap();
        watcher.join().unwrap();
        assert!(status.success(), "probe child: {status}");
        window = window.min(t1 - t0);
        assert_eq!(
            raw_state(&probe, root_offset, 1, 2).committed,
            CELLS,
            "a full recovery did not restore pattern 1"
        );
    }
    std::fs::remove_file(&probe).unwrap();
    println!("full recovery (child start to opened): {window:?}");

    // 3. Episodes: from the crash image, open-and-kill repeatedly, then recover for good. More
    // episodes (up to 5x) if no kill has landed mid-rollback yet.
    let mut states = Vec::new();
    let mid_rollback = |states: &[Raw]| {
        states
            .iter()
            .filter(|r| r.committed > 0 && r.committed < CELLS)
            .count()
    };
    let mut episode = 0;
    while episode < EPISODES || (mid_rollback(&states) == 0 && episode < 5 * EPISODES) {
        std::fs::copy(&image, &path).unwrap();
        let mut finished = false;
        for round in 0..rounds {
            let ctx = format!("episode {episode} round {round}");
            let delay = Duration::from_nanos(rng.below(window.as_nanos() as u64 + 1));
            let mut child = spawn_child("open", &path, None);
            let (rx, watcher) = watch(&mut child);
            let t0 = wait_event(&rx, "start", &ctx);
            std::thread::sleep(delay);
            child.kill().unwrap();
            let status = child.wait().unwrap();
            watcher.join().unwrap();
            let opened = rx.try_iter().find(|(ev, _)| ev == "opened");
            let raw = raw_state(&path, root_offset, 1, 2);
            assert!(raw.torn <= 1, "{ctx}: more than one cell torn: {raw:?}");
            if status.signal() == Some(9) && opened.is_none() {
                states.push(raw);
            } else {
                assert!(
                    status.success() || opened.is_some(),
                    "{ctx}: child failed: {status}"
                );
                assert_eq!(raw.committed, CELLS, "{ctx}: a finished recovery left {raw:?}");
                finished = true;
                if let Some((_, t1)) = opened {
                    // Recovery can be faster than the probes said: aim below this one.
                    window = window.min(t1 - t0);
                }
                println!("{ctx}: recovery finished before the kill (delay {delay:?})");
                break;
            }
        }
        let pool = Pool::<Big>::open(&path, &opts()).unwrap();
        let report = pool.recovery_report();
        assert!(!report.was_clean || finished, "episode {episode}: {report:?}");
        assert!(
            report.rolled_back <= 1 && report.completed == 0,
            "episode {episode}: {report:?}"
        );
        if report.rolled_back == 1 {
            assert!(
                report.entries_undone >= CELLS as u64,
                "episode {episode}: {report:?}"
            );
        }
        assert_pattern(&pool, 1, &format!("episode {episode}"));
        println!("episode {episode}: final open {report:?}");
        drop(pool);
        episode += 1;
    }
    let kills = states.len();
    let mid = mid_rollback(&states);
    let untouched = states.iter().filter(|r| r.uncommitted == CELLS).count();
    println!(
        "{kills} kills during recovery: {untouched} before the rollback started, {mid} \
         mid-rollback, {} after it",
        kills - untouched - mid
    );
    assert!(
        mid > 0,
        "no kill landed mid-rollback in {episode} episodes (seed {seed})"
    );

    // 4. A committed transaction of the same size survives a reopen, and so does the state.
    {
        let pool = Pool::<Big>::open(&path, &opts()).unwrap();
        assert!(pool.recovery_report().was_clean);
        commit_pattern(&pool, 3);
    }
    let pool = Pool::<Big>::open(&path, &opts()).unwrap();
    let report = pool.recovery_report();
    assert!(report.was_clean && report.rolled_back == 0, "{report:?}");
    assert_pattern(&pool, 3, "after a committed big transaction");
    println!("total {:?}", test_started.elapsed());
}
