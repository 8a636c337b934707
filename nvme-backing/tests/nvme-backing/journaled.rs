//! Guards the journaled engine on paged memory (`Engine::Journaled` + `external_memory`): one
//! `fdatasync` per durable transaction, the write-ahead rule at eviction (a dirty page reaches
//! the file only once the journal records before it are durable: crash copies taken right after
//! such evictions recover to the committed state), and a pool whose updated data is 8× its
//! resident limit taking random durable updates, with the journal inside its bound, reopened
//! from crash copies and after a clean close with every committed value present, and four
//! threads doing so at once (no deadlock between a fault under the journal's appender lock and
//! the sync it waits for). Each case runs in both fault modes, on tmpfs (buffered) and, except
//! the threads, with direct I/O on the disk under `target/`.

use std::path::{Path, PathBuf};

use nvme_backing::{pool_memory_with_options, FaultMode, IoMode, PagedOptions};
use ptm::pmem_core::{Engine, JournalOptions};
use ptm::{thread_stats, DomainKind, Error, PCell, PMutex, Persistent, Pool, PoolOptions};

/// Pages of updated data.
const DATA_PAGES: usize = 128;
/// Resident limit: the updated data is 8× this.
const RESIDENT: usize = DATA_PAGES / 8;
const WORDS: usize = 512;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    counter: PCell<u64>,
    pad: [u64; 511],
    /// One 4 KiB page per row.
    pages: [[PCell<u64>; WORDS]; DATA_PAGES],
}

const THREADS: usize = 4;

/// The same data split into one stripe per thread, each behind a lock.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Striped {
    stripes: [PMutex<Stripe>; THREADS],
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Stripe {
    pages: [[PCell<u64>; WORDS]; DATA_PAGES / THREADS],
}

#[derive(Clone, Copy)]
enum Storage {
    Tmpfs,
    DiskDirect,
}

fn dir(storage: Storage) -> tempfile::TempDir {
    match storage {
        Storage::DiskDirect => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
        Storage::Tmpfs if Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm").unwrap(),
        Storage::Tmpfs => tempfile::tempdir().unwrap(),
    }
}

fn journaled(mode: FaultMode, storage: Storage, bound: u64) -> PoolOptions {
    let io = match storage {
        Storage::Tmpfs => IoMode::Auto,
        Storage::DiskDirect => IoMode::Direct,
    };
    PoolOptions::new()
        .layout("jpaged")
        .lanes(2)
        .engine(Engine::Journaled)
        .journal(JournalOptions::new().max_bytes(bound))
        .external_memory(pool_memory_with_options(
            RESIDENT,
            PagedOptions::new().fault_mode(mode).io_mode(io),
        ))
}

/// Copies the pool file and its journal, as a process crash would leave them.
fn crash_copy(path: &Path, to: &Path) {
    std::fs::copy(path, to).unwrap();
    std::fs::copy(journal_of(path), journal_of(to)).unwrap();
}

fn journal_of(path: &Path) -> PathBuf {
    ptm::pmem_core::internals::journal::default_journal_path(path)
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn set(pool: &Pool<Root>, page: usize, word: usize, value: u64) {
    pool.transaction(|tx, r| r.pages[page][word].set(tx, value))
        .unwrap();
}

/// Every word equals the model.
fn check(pool: &Pool<Root>, model: &[u64], what: &str) {
    pool.transaction(|tx, r| {
        for (i, want) in model.iter().enumerate() {
            let got = r.pages[i / WORDS][i % WORDS].get(tx);
            assert_eq!(got, *want, "{what}: page {} word {}", i / WORDS, i % WORDS);
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

fn one_fdatasync_per_durable_transaction(mode: FaultMode) {
    for storage in [Storage::Tmpfs, Storage::DiskDirect] {
        let d = dir(storage);
        let path = d.path().join("cost.pool");
        let pool = Pool::<Root>::create(&path, 4 << 20, &journaled(mode, storage, 64 << 20)).unwrap();
        assert_eq!(pool.domain(), DomainKind::Journaled);
        assert!(pool.region().write_ahead_gate().is_some());
        for i in 0..3 {
            pool.transaction(|tx, r| r.counter.set(tx, i)).unwrap();
        }
        for i in 0..10u64 {
            let before = thread_stats();
            pool.transaction(|tx, r| r.counter.set(tx, 100 + i)).unwrap();
            let spent = thread_stats().since(&before);
            assert_eq!(
                (spent.fsyncs, spent.drains),
                (1, 2),
                "1-word transaction {i} on journaled paged memory: (fsyncs, drains)"
            );
        }
    }
}

fn eviction_waits_for_the_journal_and_crash_copies_recover(mode: FaultMode) {
    for storage in [Storage::Tmpfs, Storage::DiskDirect] {
        let d = dir(storage);
        let path = d.path().join("wal.pool");
        let image = d.path().join("image.pool");
        let pool = Pool::<Root>::create(&path, 4 << 20, &journaled(mode, storage, 64 << 20)).unwrap();
        let mut model = vec![0u64; DATA_PAGES * WORDS];
        for p in 0..DATA_PAGES {
            set(&pool, p, 7, p as u64 + 1);
            model[p * WORDS + 7] = p as u64 + 1;
        }
        let gate = pool.region().write_ahead_gate().unwrap().clone();
        let base = pool.region().base().as_ptr() as usize;
        let mut offset = 0;
        let waits_before = gate.waits();
        let syncs_before = pool.region().journal_stats().unwrap().syncs;
        // A transaction changes page 0, then reads every other page: the clock evicts page 0,
        // dirty with an uncommitted value whose undo record was only ordered (appended, not
        // synced). The eviction must wait for a journal sync first.
        let _ = pool.transaction(|tx, r| {
            r.pages[0][7].set(tx, 0xDEAD)?;
            offset = &r.pages[0][7] as *const PCell<u64> as usize - base;
            let mut sum = 0u64;
            for p in 1..DATA_PAGES {
                sum = sum.wrapping_add(r.pages[p][7].get(tx));
            }
            assert_ne!(sum, 0);
            let st = pool.region().journal_stats().unwrap();
            assert!(
                st.syncs > syncs_before,
                "the journal was synced inside the transaction (by the write-ahead gate)"
            );
            assert!(gate.waits() > waits_before, "an eviction waited for the journal");
            crash_copy(&path, &image);
            Err::<(), _>(Error::InvalidOptions("crash"))
        });
        // The crash copy's home file holds the uncommitted value (the eviction wrote it), so
        // only the journal's durable records let recovery roll it back.
        let mut word = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&image).unwrap(),
            &mut word,
            offset as u64,
        )
        .unwrap();
        assert_eq!(
            u64::from_le_bytes(word),
            0xDEAD,
            "eviction wrote the dirty page home"
        );
        check(&pool, &model, "after the abort");
        drop(pool);
        let recovered = Pool::<Root>::open(&image, &journaled(mode, storage, 64 << 20)).unwrap();
        assert_eq!(recovered.recovery_report().rolled_back, 1);
        check(&recovered, &model, "crash copy taken after the eviction");
    }
}

fn pool_eight_times_its_resident_limit(mode: FaultMode) {
    const BOUND: u64 = 64 << 10;
    const UPDATES: usize = 1200;
    const COPY_EVERY: usize = 300;
    for storage in [Storage::Tmpfs, Storage::DiskDirect] {
        let d = dir(storage);
        let path = d.path().join("big.pool");
        let opts = journaled(mode, storage, BOUND);
        let pool = Pool::<Root>::create(&path, 4 << 20, &opts).unwrap();
        let mut model = vec![0u64; DATA_PAGES * WORDS];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut copies: Vec<(PathBuf, Vec<u64>)> = Vec::new();
        let mut max_live = 0;
        for i in 0..UPDATES {
            let slot = (rng.next() % (DATA_PAGES * WORDS) as u64) as usize;
            let value = rng.next() | 1;
            set(&pool, slot / WORDS, slot % WORDS, value);
            model[slot] = value;
            max_live = max_live.max(pool.region().journal_stats().unwrap().live_bytes);
            if (i + 1) % COPY_EVERY == 0 {
                let to = d.path().join(format!("copy{i}.pool"));
                crash_copy(&path, &to);
                copies.push((to, model.clone()));
            }
        }
        let st = pool.region().journal_stats().unwrap();
        assert!(st.checkpoints > 0, "the bound forced checkpoints: {st:?}");
        // A durability point checkpoints once the journal passes the bound, so it never holds
        // more than the bound plus the records of one transaction.
        assert!(
            max_live <= BOUND + (8 << 10),
            "journal within its bound: {max_live} bytes"
        );
        let gate = pool.region().write_ahead_gate().unwrap();
        assert!(gate.checks() > 0, "dirty pages were evicted");
        check(&pool, &model, "before close");
        drop(pool);
        // A clean close leaves everything home and an empty journal.
        let pool = Pool::<Root>::open(&path, &opts).unwrap();
        assert_eq!(
            pool.region().replay_report().records,
            0,
            "clean close left an empty journal"
        );
        check(&pool, &model, "after a clean close");
        drop(pool);
        for (copy, model) in &copies {
            let pool = Pool::<Root>::open(copy, &opts).unwrap();
            check(&pool, model, &format!("crash copy {}", copy.display()));
        }
    }
}

/// Four threads transact at once on their own stripes of the data (8× the resident limit) with
/// a 64 KiB journal bound: faults (and evictions waiting at the gate) happen while other threads
/// append records, lead syncs and checkpoint. Guards against a deadlock between a thread that
/// faults while holding the journal's appender lock and the write-ahead sync it waits for (a
/// deadlock hangs this test), and checks every thread's last values after a reopen.
fn threads_with_evictions_and_checkpoints(mode: FaultMode) {
    const PER_THREAD: usize = 300;
    let d = dir(Storage::Tmpfs);
    let path = d.path().join("threads.pool");
    let opts = journaled(mode, Storage::Tmpfs, 64 << 10).lanes(THREADS as u32);
    let pool = Pool::<Striped>::create(&path, 4 << 20, &opts).unwrap();
    let stripe = DATA_PAGES * WORDS / THREADS;
    let models: Vec<Vec<(usize, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (t as u64 + 1) << 32);
                    let mut writes = Vec::new();
                    for _ in 0..PER_THREAD {
                        // Two cells on two random pages of this thread's stripe per transaction.
                        let a = (rng.next() % stripe as u64) as usize;
                        let b = (rng.next() % stripe as u64) as usize;
                        let v = rng.next() | 1;
                        pool.transaction(|tx, r| {
                            let mine = r.stripes[t].lock(tx)?;
                            mine.pages[a / WORDS][a % WORDS].set(tx, v)?;
                            mine.pages[b / WORDS][b % WORDS].set(tx, v + 1)
                        })
                        .unwrap();
                        writes.push((t * stripe + a, v));
                        writes.push((t * stripe + b, v + 1));
                    }
                    writes
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let st = pool.region().journal_stats().unwrap();
    assert!(st.checkpoints > 0, "checkpoints ran during the run: {st:?}");
    let mut model = vec![0u64; DATA_PAGES * WORDS];
    for writes in &models {
        for &(cell, v) in writes {
            model[cell] = v;
        }
    }
    let check = |pool: &Pool<Striped>, what: &str| {
        pool.transaction(|tx, r| {
            for (i, want) in model.iter().enumerate() {
                let (t, cell) = (i / stripe, i % stripe);
                let got = r.stripes[t].lock(tx)?.pages[cell / WORDS][cell % WORDS].get(tx);
                assert_eq!(got, *want, "{what}: thread {t} cell {cell}");
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    };
    check(&pool, "after the threads");
    drop(pool);
    let pool = Pool::<Striped>::open(&path, &opts).unwrap();
    check(&pool, "reopened");
}

in_both_modes!(
    one_fdatasync_per_durable_transaction,
    eviction_waits_for_the_journal_and_crash_copies_recover,
    pool_eight_times_its_resident_limit,
    threads_with_evictions_and_checkpoints,
);
