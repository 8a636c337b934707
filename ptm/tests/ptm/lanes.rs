//! Guards lane choice (docs/design.md §8.6): a lane map holds the lanes it was made with, each
//! taken once until released, and threads start their scan at different lanes, so threads that
//! do not contend for a lane do not queue on one.

use crate::common;

use ptm::internals::lanes::LaneMap;
use ptm::{PCell, PMutex, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    value: PMutex<PCell<u64>>,
}

#[test]
fn a_lane_map_has_its_lanes_each_taken_once() {
    let map = LaneMap::new(3);
    assert_eq!(
        map.try_acquire(2),
        Some(2),
        "the scan starts at the lane asked for"
    );
    assert!(map.is_busy(2) && !map.is_busy(0));
    map.release(2);
    assert!(!map.is_busy(2));
    assert_eq!(map.len(), 3);
    assert!(!map.is_empty());
    assert!(LaneMap::new(0).is_empty());
    let mut taken: Vec<usize> = (0..3).map(|_| map.try_acquire(1).unwrap()).collect();
    assert_eq!(map.try_acquire(0), None, "a fourth lane out of three");
    taken.sort_unstable();
    assert_eq!(taken, [0, 1, 2]);
    map.release(1);
    assert_eq!(
        map.try_acquire(2),
        Some(1),
        "the scan wraps around to the freed lane"
    );
}

/// A scan asked to start at or past the last lane starts at `start % n` (the wrap the scan
/// makes by comparison, made once up front by division): lane 0 for `start == n`, lane 2 for
/// `start == 5` on three lanes. Indexing at `start` itself, or reducing it any other way,
/// panics out of bounds or starts elsewhere.
#[test]
fn a_scan_starting_past_the_last_lane_wraps_to_start_modulo_n() {
    let map = LaneMap::new(3);
    assert_eq!(map.try_acquire(3), Some(0), "start 3 of 3 lanes");
    map.release(0);
    assert_eq!(map.try_acquire(5), Some(2), "start 5 of 3 lanes");
    assert_eq!(map.try_acquire(5), Some(0), "lane 2 taken: on to 0");
    map.release(0);
    map.release(2);
    assert_eq!(map.try_acquire(usize::MAX), Some(usize::MAX % 3));
}

/// Two threads, one after the other, each run a transaction on a pool with a prime number of
/// lanes: each thread is handed its own starting lane (consecutive ones, unless more than a
/// thousand other threads of this test binary started transactions in between), so with no
/// contention their transactions run on different lanes. A choice that sent every thread to
/// lane 0 would pass every correctness test and serialise all threads on one lane's scan.
#[test]
fn threads_start_on_different_lanes() {
    const LANES: u32 = 1021;
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(LANES).lane_size(8192);
    let pool = Pool::<Root>::create(common::path(&dir, "lanes.pool"), 16 << 20, &opts).unwrap();
    let lane_of_a_new_thread = || {
        std::thread::scope(|s| {
            s.spawn(|| pool.transaction(|tx, _| Ok::<_, ptm::Error>(tx.lane())).unwrap())
                .join()
                .unwrap()
        })
    };
    let first = lane_of_a_new_thread();
    let second = lane_of_a_new_thread();
    assert_ne!(first, second, "two threads started on lane {first}");
}

/// A read-only transaction takes no lane (it takes one at its first log record, allocation or
/// exclusive lock; shared holds need none): with every lane of the pool held by this thread's pending relaxed commits, a
/// read-only transaction still runs (it settles them first; they keep their lanes). Before
/// lanes were taken lazily it waited for a lane forever: a watchdog ends the test process
/// then, instead of letting it hang (the read takes microseconds; the watchdog is not a speed
/// budget).
#[test]
fn a_read_only_transaction_needs_no_lane() {
    #[derive(Persistent)]
    #[persistent(crate = "ptm::pmem_core")]
    #[repr(C)]
    struct Cells {
        a: PCell<u64>,
        b: PCell<u64>,
        rw: ptm::PRwLock<u64>,
    }
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(2).lane_size(8192);
    let pool = Pool::<Cells>::create(common::path(&dir, "lazy.pool"), 8 << 20, &opts).unwrap();
    let ((), first) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 7)).unwrap();
    let ((), second) = pool.transaction_relaxed(|tx, r| r.b.set(tx, 9)).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        for _ in 0..1200 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
        eprintln!("a read-only transaction waited for a lane while all were held");
        std::process::exit(101);
    });
    // Shared holds need no lane either (a PRwLock read).
    let read = pool
        .transaction(|tx, r| Ok::<_, ptm::Error>((r.a.get(tx), r.b.get(tx), r.rw.read(tx)?)))
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(read, (7, 9, 0));
    assert!(
        first.is_settled() && second.is_settled(),
        "the read settled them first"
    );
    first.complete().unwrap();
    second.complete().unwrap();
    // A writer takes a lane again once they are free.
    pool.transaction(|tx, r| r.a.set(tx, 1)).unwrap();
    let read = pool
        .transaction(|tx, r| Ok::<_, ptm::Error>(r.a.get(tx)))
        .unwrap();
    assert_eq!(read, 1);
}
