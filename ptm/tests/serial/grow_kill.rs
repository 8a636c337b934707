//! Guards growth under SIGKILL: a child process grows a pool while it is open, step after step,
//! allocating between the steps, and is killed at a random moment, over and over; every reopen
//! finds the pool at one of the sizes it passed through (the old or the new size of the grow it
//! was killed in), its data intact and its heap consistent.
//!
//! In the `serial` binary: it re-executes itself (see `../kill.rs`). `PTM_GROW_KILL_SEED=S` replays
//! the delays of a printed seed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ptm::{Error, PCell, PPtr, Persistent, Pool, PoolOptions};

const TEST_NAME: &str = "grow_kill::sigkill_mid_grow_leaves_the_old_or_the_new_size";
const ENV_CHILD: &str = "PTM_GROW_KILL_CHILD_POOL";
const START: u64 = 8 << 20;
const STEP: u64 = 4 << 20;
const MAX: u64 = 1 << 30;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    marker: PCell<u64>,
    blocks: [PCell<PPtr<[u64; 512]>>; 64],
}

fn opts() -> PoolOptions {
    PoolOptions::new()
        .layout("grow-kill")
        .force_pmem(true)
        .max_size(MAX)
}

/// The child: grows the pool in steps, allocating a block between steps, until killed.
fn child(path: &str) {
    let pool = Pool::<Root>::open(path, &opts()).unwrap();
    // On a line of its own: libtest may have printed "test <name> ... " without a newline.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        out.write_all(b"\nGROWCHILD ready\n").unwrap();
        out.flush().unwrap();
    }
    let mut i = 0usize;
    loop {
        let len = pool.region().len();
        if len + STEP <= MAX {
            pool.grow(len + STEP).unwrap();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        let slot = i % 64;
        let _ = pool.transaction(|tx, r| {
            let old = r.blocks[slot].get(tx);
            if !old.is_null() {
                tx.free(old)?;
            }
            let p = tx.alloc([slot as u64; 512])?;
            r.blocks[slot].set(tx, p)
        });
        i += 1;
    }
}

fn check(path: &std::path::Path) -> u64 {
    let mut pool = Pool::<Root>::open(path, &opts()).unwrap();
    let len = pool.region().len();
    assert_eq!(std::fs::metadata(path).unwrap().len(), len);
    assert!(
        len >= START && (len - START).is_multiple_of(STEP) && len <= MAX,
        "size {len}"
    );
    pool.transaction(|tx, r| {
        assert_eq!(r.marker.get(tx), 0x5EED);
        for (slot, c) in r.blocks.iter().enumerate() {
            let p = c.get(tx);
            if !p.is_null() {
                // SAFETY: blocks linked from the root are live; this process alone uses the pool.
                assert!(unsafe { tx.deref(p)? }.iter().all(|&v| v == slot as u64));
            }
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let mut linked: Vec<u64> = pool
        .transaction(|tx, r| {
            Ok::<_, Error>(
                r.blocks
                    .iter()
                    .map(|c| c.get(tx))
                    .filter(|p| !p.is_null())
                    .map(|p| p.offset())
                    .collect(),
            )
        })
        .unwrap();
    let mut allocated: Vec<u64> = pool
        .allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|b| b.0)
        .collect();
    linked.sort_unstable();
    allocated.sort_unstable();
    assert_eq!(linked, allocated, "leak or dangling block");
    pool.check_heap().unwrap();
    len
}

#[test]
fn sigkill_mid_grow_leaves_the_old_or_the_new_size() {
    let _serial = crate::serial();
    if let Ok(path) = std::env::var(ENV_CHILD) {
        child(&path);
        return;
    }
    let seed = std::env::var("PTM_GROW_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("PTM_GROW_KILL_SEED={seed}");
    let mut rng = seed | 1;
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let path = dir.path().join("grow.pool");
    let pool = Pool::<Root>::create(&path, START, &opts()).unwrap();
    pool.transaction(|tx, r| r.marker.set(tx, 0x5EED)).unwrap();
    pool.close().unwrap();
    let mut last = START;
    for round in 0..12 {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(ENV_CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the child ended before it was ready"
            );
            if line.trim() == "GROWCHILD ready" {
                break;
            }
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(200 + rng % 20_000));
        c.kill().unwrap();
        c.wait().unwrap();
        let len = check(&path);
        assert!(len >= last, "round {round}: the pool shrank from {last} to {len}");
        last = len;
    }
    println!("grew to {last} bytes over the kills");
}
