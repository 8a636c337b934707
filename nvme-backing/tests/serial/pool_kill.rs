//! Guards crash consistency of a ptm pool on paged memory under real process kills: a child
//! transfers between balances spread over more pages than may be resident (so eviction writes
//! pages back mid-transaction) and is SIGKILLed; the reopened pool keeps the total and every
//! transaction the child reported committed, in both fault modes, on the write-through paged
//! domain and on the journaled engine over paged memory (where eviction waits for the journal).
//! (In the `serial` binary: it spawns processes.)

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use nvme_backing::{pool_memory_with_mode, FaultMode};
use ptm::pmem_core::Engine;
use ptm::{DomainKind, Error, PCell, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    ops: PCell<u64>,
    pad: [u64; 511],
    /// Balance of account i is element 0 of page i.
    pages: [PCell<[u64; 512]>; 64],
}

const TOTAL: u64 = 64 * 1000;

fn opts(mode: FaultMode, engine: Engine) -> PoolOptions {
    PoolOptions::new()
        .layout("paged-kill")
        .lanes(2)
        .engine(engine)
        .external_memory(pool_memory_with_mode(8, mode))
}

fn child(path: &str, mode: FaultMode, engine: Engine) {
    let pool = Pool::<Root>::open(path, &opts(mode, engine)).unwrap();
    let progress = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{path}.progress"))
        .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (a, b, amt) = ((x % 64) as usize, ((x >> 8) % 64) as usize, (x >> 16) % 50);
        let ops = pool
            .transaction(|tx, r| {
                if a != b {
                    let (mut pa, mut pb) = (r.pages[a].get(tx), r.pages[b].get(tx));
                    let m = amt.min(pa[0]);
                    pa[0] -= m;
                    pb[0] += m;
                    r.pages[a].set(tx, pa)?;
                    r.pages[b].set(tx, pb)?;
                }
                r.ops.update(tx, |n| n + 1)
            })
            .unwrap();
        progress.write_all_at(&ops.to_le_bytes(), 0).unwrap();
    }
}

const TEST: &str = "pool_kill::sigkill_on_a_paged_pool_keeps_the_total_in_both_fault_modes";

/// One test for both modes, run one after the other: two tests of one binary run on parallel
/// threads, and a child forked by one of them holds the other's pool lock (shared `flock`
/// description) until it execs, which can make the other's child fail with `PoolLocked`.
#[test]
fn sigkill_on_a_paged_pool_keeps_the_total_in_both_fault_modes() {
    let _serial = crate::serial();
    if let Ok(path) = std::env::var("NVME_KILL_CHILD") {
        let mode = match std::env::var("NVME_KILL_MODE").as_deref() {
            Ok("userfaultfd") => FaultMode::Userfaultfd,
            _ => FaultMode::Signal,
        };
        let engine = match std::env::var("NVME_KILL_ENGINE").as_deref() {
            Ok("journaled") => Engine::Journaled,
            _ => Engine::Auto,
        };
        child(&path, mode, engine);
        return;
    }
    for engine in [Engine::Auto, Engine::Journaled] {
        kills(FaultMode::Signal, engine);
        kills(FaultMode::Userfaultfd, engine);
    }
}

/// Kills a child transacting on a pool opened in `mode` on `engine` (the child re-runs
/// [`TEST`]).
fn kills(mode: FaultMode, engine: Engine) {
    let mode_name = match mode {
        FaultMode::Userfaultfd => "userfaultfd",
        _ => "signal",
    };
    let opts = |mode| opts(mode, engine);
    let dir = tempfile::tempdir().unwrap(); // disk: the paged region writes back with pwrite
    let path = dir.path().join("k.pool");
    let pool = Pool::<Root>::create(&path, 4 << 20, &opts(mode)).unwrap();
    let domain = match engine {
        Engine::Journaled => DomainKind::Journaled,
        _ => DomainKind::Paged,
    };
    assert_eq!(pool.domain(), domain);
    pool.transaction(|tx, r| r.pages.iter().try_for_each(|p| p.set(tx, [1000; 512])))
        .unwrap();
    drop(pool);
    let rounds: u64 = std::env::var("NVME_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut rolled_back = 0;
    // The count of transactions the children reported committed (0 before the first).
    let progress = || {
        let mut b = [0u8; 8];
        std::fs::File::open(format!("{}.progress", path.display()))
            .and_then(|f| f.read_exact_at(&mut b, 0))
            .map(|()| u64::from_le_bytes(b))
            .unwrap_or(0)
    };
    for round in 0..rounds {
        let before = progress();
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture"])
            .env("NVME_KILL_CHILD", &path)
            .env("NVME_KILL_MODE", mode_name)
            .env("NVME_KILL_ENGINE", engine.name())
            .spawn()
            .unwrap();
        // Kill only after the child's first commit (however slow the machine), at a varying
        // moment after it.
        while progress() == before {
            assert!(
                c.try_wait().unwrap().is_none(),
                "round {round}: the child stopped by itself"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(round * 37 % 200));
        assert!(
            c.try_wait().unwrap().is_none(),
            "round {round}: the child stopped by itself"
        );
        c.kill().unwrap();
        c.wait().unwrap();
        let reported = progress();
        let pool = Pool::<Root>::open(&path, &opts(mode)).unwrap();
        rolled_back += pool.recovery_report().rolled_back;
        let (total, ops) = pool
            .transaction(|tx, r| {
                Ok::<_, Error>((r.pages.iter().map(|p| p.get(tx)[0]).sum::<u64>(), r.ops.get(tx)))
            })
            .unwrap();
        assert_eq!(total, TOTAL, "round {round}");
        assert!(
            ops == reported || ops == reported + 1,
            "round {round}: {ops} in the pool, {reported} reported"
        );
        assert!(ops > 0, "round {round}: no transaction committed");
    }
    println!(
        "{mode:?}, {}: {rounds} kills, {rolled_back} rolled back at reopen",
        engine.name()
    );
}
