//! Why a hash-map get is at parity with PMDK's and not ahead: gets timed back to back with
//! independent keys (as the `collections` bench draws them) and with each key depending on the
//! value the previous get returned (so no get can start before the previous one ends).
//!
//! ```text
//! cargo run --release -p ptm-benches --features pmdk --example get_overlap [keys]
//! ```
//!
//! It fills a `PHashMap<u64, u64>` and PMDK's chained hash map (`csrc/pmdk_collections.c`)
//! with the same `keys` entries (default 1 000 000, pools on `/dev/shm`), then runs rounds of
//! 20 000 gets of random present keys, each mode in turn, and prints the minimum and median
//! time per get over the rounds:
//!
//! - `independent`: the next key is drawn without waiting for the last get;
//! - `dependent`: the next key is drawn from the last get's value (it adds 0, but the CPU
//!   cannot know), so the gets run one after another;
//! - for ptm also `one transaction`: the same gets inside one read-only transaction instead of
//!   one each.
//!
//! A ratio near 1 between the dependent and independent times means the CPU overlapped nothing
//! of one get with the next; near 2, two gets were in flight at once. Since the sixteenth
//! session's straight lookup path, gets inside one transaction overlap (about 1.6); a get in a
//! transaction of its own is too long to (README, "The sixteenth session").

use std::hint::black_box;
use std::time::Instant;

use ptm::{Persistent, Pool, PoolOptions};
use ptm_benches::pmdk_collections::{PmdkMap, PmdkMapKind};
use ptm_benches::{pmem_pool_dir, XorShift};
use ptm_collections::PHashMap;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PHashMap<u64, u64>,
}

/// The `i`-th key (scattered, as in the `collections` bench); its value is `i`.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Gets per timed round.
const BATCH: u64 = 20_000;
/// Rounds per mode.
const ROUNDS: usize = 30;

const MODES: [&str; 6] = [
    "ptm independent",
    "ptm dependent",
    "ptm independent, one transaction",
    "ptm dependent, one transaction",
    "PMDK independent",
    "PMDK dependent",
];

fn main() {
    ptm_benches::pmdk::force_pmem_env();
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().expect("a number of keys"));
    let dir = tempfile::Builder::new()
        .prefix("get-overlap-")
        .tempdir_in(pmem_pool_dir())
        .expect("a pool directory");
    let size = (n * 200).next_multiple_of(1 << 20).max(64 << 20);
    let pool = Pool::<Root>::create(
        dir.path().join("ptm.pool"),
        size,
        &PoolOptions::new().layout("get-overlap").force_pmem(true),
    )
    .expect("create the ptm pool");
    let pmdk = PmdkMap::create(PmdkMapKind::Hash, dir.path(), size).expect("create the PMDK map");
    let entries: Vec<(u64, u64)> = (0..n).map(|i| (key(i), i)).collect();
    for c in entries.chunks(1000) {
        pool.transaction(|tx, r| r.m.extend(tx, c.iter().copied()))
            .expect("fill the ptm map");
        pmdk.insert_batch(c).expect("fill the PMDK map");
    }

    let ptm_get = |i: u64| {
        pool.transaction(|tx, r| r.m.get(tx, &black_box(key(i))))
            .expect("ptm get")
            .expect("a present key")
    };
    let pmdk_get = |i: u64| pmdk.get(black_box(key(i))).expect("a present key");
    let mut rng = XorShift::new(42);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for _ in 0..ROUNDS {
        for (mode, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            let mut sum = 0u64;
            // Independent: the next index does not wait for the last value. Dependent: it adds
            // `v - i` (0: the value of key `i` is `i`), which the CPU must wait for.
            let mut run = |get: &dyn Fn(u64) -> u64, dependent: bool| {
                let mut i = rng.below(n);
                for _ in 0..BATCH {
                    let v = get(i);
                    sum = sum.wrapping_add(v);
                    let next = rng.below(n);
                    i = if dependent {
                        next.wrapping_add(v.wrapping_sub(i)) % n
                    } else {
                        next
                    };
                }
            };
            match mode {
                0 | 1 => run(&ptm_get, mode == 1),
                2 | 3 => pool
                    .transaction(|tx, r| {
                        let get = |i: u64| {
                            r.m.get(tx, &black_box(key(i)))
                                .expect("ptm get")
                                .expect("a present key")
                        };
                        run(&get, mode == 3);
                        Ok::<_, ptm::Error>(())
                    })
                    .expect("read transaction"),
                _ => run(&pmdk_get, mode == 5),
            }
            black_box(sum);
            t.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        }
    }
    println!("{n} keys, {ROUNDS} rounds of {BATCH} gets per mode: ns per get");
    let mut med = Vec::new();
    for (name, t) in MODES.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        med.push(t[t.len() / 2]);
        println!("  {name:<34} min {:6.1}  median {:6.1}", t[0], t[t.len() / 2]);
    }
    println!(
        "dependent / independent (medians): ptm {:.2}, ptm in one transaction {:.2}, PMDK {:.2}",
        med[1] / med[0],
        med[3] / med[2],
        med[5] / med[4]
    );
    println!(
        "PMDK / ptm, independent: {:.2}; dependent: {:.2}",
        med[4] / med[0],
        med[5] / med[1]
    );
}
