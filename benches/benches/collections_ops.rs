//! The collection operations issue 16 added, each beside its `std` twin measured in the same
//! run, and `PConcurrentMap` gets with the seeded shard routing beside the fixed routing of a
//! pool made before it.
//!
//! Rows (criterion group / function), every ptm operation one durable transaction (2 drains
//! for a change, 0 for a read; pools on tmpfs, forced into the cache-flush domain):
//!
//! - `deque_push_front`, `deque_pop_back`, `deque_insert_mid` / `PQueue`, `std_VecDeque`: a
//!   `PQueue<u64>` and a `VecDeque<u64>` of [`DEQUE_LEN`] elements. Each timed round of up to
//!   [`CHUNK`] operations is followed by its untimed undoing (pops after `push_front`, pushes
//!   after `pop_back`, removals at the middle after `insert_mid`), so the length stays about
//!   [`DEQUE_LEN`]. `insert_mid` inserts at `len / 2`: both shift half the elements (the
//!   `PQueue` logs the shifted slots, the `VecDeque` moves them in memory).
//! - `btree_range_rev`, `btree_pop_first`, `btree_first_key_value` / `PBTreeMap`,
//!   `std_BTreeMap`: maps of [`TREE_LEN`] `u64 -> u64` entries (keys scattered as in the
//!   `collections` bench). `range_rev` reads the [`RANGE`] entries of a random window backwards
//!   (`range(a..b).rev()`, summed); `pop_first` is followed, untimed, by the reinsertion of the
//!   popped entries; `first_key_value` reads the smallest entry.
//! - `hashmap_reserve_insert` / `PHashMap_reserve`, `PHashMap_no_reserve`, `std_reserve`,
//!   `std_no_reserve`: one transaction (ptm) or one block (std) that inserts [`BATCH`] fresh keys
//!   into an empty map, after `reserve(BATCH)` or without it; the map is cleared, untimed,
//!   after each. Time per inserted key.
//! - `PConcurrentMap_get` / `seeded`, `fixed`: `PConcurrentMap<u64, u64, 16>` of [`TREE_LEN`]
//!   keys, one `get` of a random present key per read-only transaction, in a pool made by this
//!   build (seeded routing) and in a pool whose superblock was rewritten as format 3 (no
//!   routing secret: the fixed routing of earlier builds), each holding only its map, so the
//!   routing's cost shows as a ratio within one run.
//!
//! No PMDK column: the PMDK maps of the `collections` bench (`csrc/pmdk_collections.c`) and the
//! B-tree and hash map examples shipped with libpmemobj have no deque, no smallest-key or
//! reverse-range operation and no reserve.
//!
//! After the criterion runs, an interleaved pass (round-robin over every row, [`ROUNDS`] timed
//! rounds of [`CHUNK`] operations after an untimed one) prints the median time per operation and
//! each ptm row's ratio to its `std` twin (or `fixed` routing).
//!
//! Run with `cargo bench -p ptm-benches --bench collections_ops --features pmdk` (the feature only
//! builds the PMDK shim the other benches use; this one has no PMDK row).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ptm::{Error, Persistent, Pool, PoolOptions};
use ptm_benches::{pmem_pool_dir, XorShift as Rng};
use ptm_collections::{PBTreeMap, PConcurrentMap, PHashMap, PQueue};

/// Elements of the deques.
const DEQUE_LEN: u64 = 10_000;
/// Entries of the B-trees and of the concurrent maps.
const TREE_LEN: u64 = 100_000;
/// Entries read by one `range_rev`.
const RANGE: u64 = 100;
/// Keys inserted by one `hashmap_reserve_insert` operation.
const BATCH: u64 = 1000;
/// Most timed operations before an untimed reset.
const CHUNK: u64 = 500;
/// Timed rounds of the interleaved pass.
const ROUNDS: usize = 15;
/// Size of each pool.
const POOL_SIZE: u64 = 256 << 20;
/// Shards of the concurrent maps.
const SHARDS: usize = 16;

/// The `i`-th key: a bijection on `u64`, so keys come in scattered order.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    c: PConcurrentMap<u64, u64, SHARDS>,
    q: PQueue<u64>,
    t: PBTreeMap<u64, u64>,
    h: PHashMap<u64, u64>,
    /// To the map's 64-byte alignment.
    _pad: [u64; 4],
}

/// A ptm pool in a fresh temporary directory (`pool` first: closed before the directory goes).
struct TempPool {
    pool: Pool<Root>,
    _dir: tempfile::TempDir,
}

fn options() -> PoolOptions {
    PoolOptions::new().layout("collections_ops").force_pmem(true)
}

fn temp_pool(fixed_routing: bool) -> TempPool {
    let dir = tempfile::Builder::new()
        .prefix("ptm-bench-ops-")
        .tempdir_in(pmem_pool_dir())
        .expect("create the pool directory");
    let path = dir.path().join("ops.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &options()).expect("create the pool");
    let pool = if fixed_routing {
        pool.close().expect("close");
        make_format_3(&path);
        Pool::<Root>::open(&path, &options()).expect("reopen as format 3")
    } else {
        pool
    };
    TempPool { pool, _dir: dir }
}

/// Rewrites the closed pool's superblock as a build before the routing secret wrote it: magic
/// `PTMTXN3`, the secret (superblock bytes 72..88) zero, its checksum redone (design §2.3).
fn make_format_3(path: &Path) {
    const SUPERBLOCK: u64 = 4096;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the pool file");
    let mut sb = [0u8; 128];
    f.read_exact_at(&mut sb, SUPERBLOCK).expect("read the superblock");
    assert_eq!(&sb[..8], b"PTMTXN4\0", "a format 4 superblock");
    sb[..8].copy_from_slice(b"PTMTXN3\0");
    sb[72..88].fill(0);
    let hash = xxhash_rust::xxh3::xxh3_64(&sb[..120]);
    sb[120..128].copy_from_slice(&hash.to_le_bytes());
    f.write_all_at(&sb, SUPERBLOCK).expect("write the superblock");
}

/// One measured operation: `round(k)` runs `k <= CHUNK` timed operations, then its untimed
/// reset and checks, and returns the time of the operations (per operation: divided by `k`
/// times `per_op`).
struct Row<'a> {
    group: &'static str,
    name: &'static str,
    /// Units per operation in the reported time (keys per batch for the reserve rows).
    per_op: u64,
    round: Box<dyn FnMut(u64) -> Duration + 'a>,
}

/// Times `k` calls of `op(i)`, `i` in `0..k`.
fn timed(k: u64, mut op: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..k {
        op(i);
    }
    start.elapsed()
}

/// The deque rows of `pool` and of a `VecDeque`.
fn deque_rows<'a>(pool: &'a Pool<Root>, std_q: &'a std::cell::RefCell<VecDeque<u64>>) -> Vec<Row<'a>> {
    pool.transaction(|tx, r| (0..DEQUE_LEN).try_for_each(|i| r.q.push(tx, i)))
        .expect("fill the deque");
    std_q.borrow_mut().extend(0..DEQUE_LEN);
    let len = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>(r.q.len(tx)))
            .expect("len")
    };
    vec![
        Row {
            group: "deque_push_front",
            name: "PQueue",
            per_op: 1,
            round: Box::new(move |k| {
                let t = timed(k, |i| {
                    pool.transaction(|tx, r| r.q.push_front(tx, black_box(i)))
                        .expect("push_front")
                });
                pool.transaction(|tx, r| (0..k).try_for_each(|_| r.q.pop(tx).map(drop)))
                    .expect("pop");
                assert_eq!(len(pool), DEQUE_LEN);
                t
            }),
        },
        Row {
            group: "deque_push_front",
            name: "std_VecDeque",
            per_op: 1,
            round: Box::new(move |k| {
                let q = &mut *std_q.borrow_mut();
                let t = timed(k, |i| q.push_front(black_box(i)));
                q.drain(..k as usize);
                assert_eq!(q.len() as u64, DEQUE_LEN);
                t
            }),
        },
        Row {
            group: "deque_pop_back",
            name: "PQueue",
            per_op: 1,
            round: Box::new(move |k| {
                let mut found = 0;
                let t = timed(k, |_| {
                    let v = pool.transaction(|tx, r| r.q.pop_back(tx)).expect("pop_back");
                    found += u64::from(black_box(v).is_some());
                });
                assert_eq!(found, k);
                pool.transaction(|tx, r| (0..k).try_for_each(|i| r.q.push(tx, i)))
                    .expect("push");
                assert_eq!(len(pool), DEQUE_LEN);
                t
            }),
        },
        Row {
            group: "deque_pop_back",
            name: "std_VecDeque",
            per_op: 1,
            round: Box::new(move |k| {
                let q = &mut *std_q.borrow_mut();
                let mut found = 0;
                let t = timed(k, |_| found += u64::from(black_box(q.pop_back()).is_some()));
                assert_eq!(found, k);
                q.extend(0..k);
                t
            }),
        },
        Row {
            group: "deque_insert_mid",
            name: "PQueue",
            per_op: 1,
            round: Box::new(move |k| {
                let t = timed(k, |i| {
                    pool.transaction(|tx, r| {
                        let mid = r.q.len(tx) / 2;
                        r.q.insert(tx, mid, black_box(i))
                    })
                    .expect("insert");
                });
                pool.transaction(|tx, r| (0..k).try_for_each(|_| r.q.remove(tx, r.q.len(tx) / 2).map(drop)))
                    .expect("remove");
                assert_eq!(len(pool), DEQUE_LEN);
                t
            }),
        },
        Row {
            group: "deque_insert_mid",
            name: "std_VecDeque",
            per_op: 1,
            round: Box::new(move |k| {
                let q = &mut *std_q.borrow_mut();
                let t = timed(k, |i| {
                    let mid = q.len() / 2;
                    q.insert(mid, black_box(i));
                });
                for _ in 0..k {
                    q.remove(q.len() / 2);
                }
                assert_eq!(q.len() as u64, DEQUE_LEN);
                t
            }),
        },
    ]
}

/// Counts the entries of a walk and folds them into one word (so none is optimised away).
fn count_xor((n, x): (u64, u64), (k, v): (u64, u64)) -> (u64, u64) {
    (n + 1, x ^ k ^ v.rotate_left(17))
}

/// The B-tree rows of `pool` and of a `BTreeMap`.
fn btree_rows<'a>(pool: &'a Pool<Root>, std_t: &'a std::cell::RefCell<BTreeMap<u64, u64>>) -> Vec<Row<'a>> {
    for lo in (0..TREE_LEN).step_by(1000) {
        pool.transaction(|tx, r| (lo..lo + 1000).try_for_each(|i| r.t.insert(tx, key(i), i).map(drop)))
            .expect("fill the tree");
    }
    std_t.borrow_mut().extend((0..TREE_LEN).map(|i| (key(i), i)));
    let sorted: Vec<u64> = std_t.borrow().keys().copied().collect();
    let sorted = std::rc::Rc::new(sorted);
    let window = move |rng: &mut Rng| {
        let a = rng.below(TREE_LEN - RANGE) as usize;
        (sorted[a], sorted[a + RANGE as usize])
    };
    let (w1, w2) = (window.clone(), window);
    let tree_len = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>(r.t.len(tx)))
            .expect("len")
    };
    let mut rng_p = Rng::new(0x5EED);
    let mut rng_s = Rng::new(0x5EED);
    vec![
        Row {
            group: "btree_range_rev",
            name: "PBTreeMap",
            per_op: 1,
            round: Box::new(move |k| {
                let mut seen = 0;
                let t = timed(k, |_| {
                    let (a, b) = w1(&mut rng_p);
                    let (n, x) = pool
                        .transaction(|tx, r| {
                            Ok::<_, Error>(r.t.range(tx, a..b)?.rev().fold((0, 0), count_xor))
                        })
                        .expect("range");
                    black_box(x);
                    seen += n;
                });
                assert_eq!(seen, k * RANGE);
                t
            }),
        },
        Row {
            group: "btree_range_rev",
            name: "std_BTreeMap",
            per_op: 1,
            round: Box::new(move |k| {
                let m = &*std_t.borrow();
                let mut seen = 0;
                let t = timed(k, |_| {
                    let (a, b) = w2(&mut rng_s);
                    let (n, x) = m.range(a..b).rev().map(|(&k, &v)| (k, v)).fold((0, 0), count_xor);
                    black_box(x);
                    seen += n;
                });
                assert_eq!(seen, k * RANGE);
                t
            }),
        },
        Row {
            group: "btree_pop_first",
            name: "PBTreeMap",
            per_op: 1,
            round: Box::new(move |k| {
                let mut popped = Vec::with_capacity(k as usize);
                let t = timed(k, |_| {
                    let e = pool.transaction(|tx, r| r.t.pop_first(tx)).expect("pop_first");
                    popped.push(black_box(e).expect("non-empty"));
                });
                pool.transaction(|tx, r| {
                    popped
                        .iter()
                        .try_for_each(|&(k, v)| r.t.insert(tx, k, v).map(drop))
                })
                .expect("reinsert");
                assert_eq!(tree_len(pool), TREE_LEN);
                t
            }),
        },
        Row {
            group: "btree_pop_first",
            name: "std_BTreeMap",
            per_op: 1,
            round: Box::new(move |k| {
                let m = &mut *std_t.borrow_mut();
                let mut popped = Vec::with_capacity(k as usize);
                let t = timed(k, |_| popped.push(black_box(m.pop_first()).expect("non-empty")));
                m.extend(popped);
                assert_eq!(m.len() as u64, TREE_LEN);
                t
            }),
        },
        Row {
            group: "btree_first_key_value",
            name: "PBTreeMap",
            per_op: 1,
            round: Box::new(move |k| {
                let first = *std_t.borrow().keys().next().expect("non-empty");
                timed(k, |_| {
                    let f = pool
                        .transaction(|tx, r| Ok::<_, Error>(r.t.first_key_value(tx)?.map(|(k, _)| k)))
                        .expect("first_key_value");
                    assert_eq!(black_box(f), Some(first));
                })
            }),
        },
        Row {
            group: "btree_first_key_value",
            name: "std_BTreeMap",
            per_op: 1,
            round: Box::new(move |k| {
                let m = &*std_t.borrow();
                let first = *m.keys().next().expect("non-empty");
                timed(k, |_| {
                    assert_eq!(black_box(m.first_key_value()).map(|(k, _)| *k), Some(first))
                })
            }),
        },
    ]
}

/// The hash map rows: a batch of [`BATCH`] fresh keys into an empty map, after `reserve` or
/// not; operations counted per key.
fn hash_rows(pool: &Pool<Root>) -> Vec<Row<'_>> {
    let ptm_batch = move |reserve: bool| {
        move |k: u64| {
            // `k` batches (the criterion iteration count is in keys: see `per_op`).
            let mut total = Duration::ZERO;
            for b in 0..k {
                let start = Instant::now();
                pool.transaction(|tx, r| {
                    if reserve {
                        r.h.reserve(tx, BATCH)?;
                    }
                    (0..BATCH).try_for_each(|i| r.h.insert(tx, key(b * BATCH + i), i).map(drop))
                })
                .expect("batch insert");
                total += start.elapsed();
                let n = pool
                    .transaction(|tx, r| {
                        let n = r.h.len(tx);
                        r.h.clear(tx)?;
                        Ok::<_, Error>(n)
                    })
                    .expect("clear");
                assert_eq!(n, BATCH);
            }
            total
        }
    };
    let std_batch = |reserve: bool| {
        move |k: u64| {
            let mut total = Duration::ZERO;
            for b in 0..k {
                let start = Instant::now();
                let mut m: HashMap<u64, u64> = HashMap::new();
                if reserve {
                    m.reserve(BATCH as usize);
                }
                for i in 0..BATCH {
                    m.insert(key(b * BATCH + i), i);
                }
                let m = black_box(m);
                total += start.elapsed();
                assert_eq!(m.len() as u64, BATCH);
            }
            total
        }
    };
    vec![
        Row {
            group: "hashmap_reserve_insert",
            name: "PHashMap_reserve",
            per_op: BATCH,
            round: Box::new(ptm_batch(true)),
        },
        Row {
            group: "hashmap_reserve_insert",
            name: "PHashMap_no_reserve",
            per_op: BATCH,
            round: Box::new(ptm_batch(false)),
        },
        Row {
            group: "hashmap_reserve_insert",
            name: "std_reserve",
            per_op: BATCH,
            round: Box::new(std_batch(true)),
        },
        Row {
            group: "hashmap_reserve_insert",
            name: "std_no_reserve",
            per_op: BATCH,
            round: Box::new(std_batch(false)),
        },
    ]
}

/// The concurrent-map get rows: `seeded`'s map under the seeded routing, `fixed`'s under the
/// fixed routing of a format 3 pool (two pools holding only these maps, filled alike).
fn conc_rows<'a>(seeded: &'a Pool<Root>, fixed: &'a Pool<Root>) -> Vec<Row<'a>> {
    for lo in (0..TREE_LEN).step_by(1000) {
        for pool in [seeded, fixed] {
            pool.transaction(|tx, r| (lo..lo + 1000).try_for_each(|i| r.c.insert(tx, key(i), i).map(drop)))
                .expect("fill the concurrent map");
        }
    }
    let row = |name, pool: &'a Pool<Root>| {
        let mut rng = Rng::new(0x853C_49E6_748F_EA9B);
        Row {
            group: "PConcurrentMap_get",
            name,
            per_op: 1,
            round: Box::new(move |k| {
                let mut hits = 0;
                let t = timed(k, |_| {
                    let i = rng.below(TREE_LEN);
                    let v = pool
                        .transaction(|tx, r| r.c.get(tx, &black_box(key(i))))
                        .expect("get");
                    hits += u64::from(black_box(v) == Some(i));
                });
                assert_eq!(hits, k, "a get missed a present key");
                t
            }),
        }
    };
    vec![row("seeded", seeded), row("fixed", fixed)]
}

/// The per-unit time of `k` operations of `row`.
fn round_ns(row: &mut Row<'_>, k: u64) -> f64 {
    (row.round)(k).as_nanos() as f64 / (k * row.per_op) as f64
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The interleaved pass: round-robin over `rows`, [`ROUNDS`] timed rounds after an untimed
/// one; prints each row's median time per unit and each ptm row's ratio to the `std` row (or
/// the `fixed` row) of its group.
fn print_interleaved(rows: &mut [Row<'_>]) {
    let mut ns = vec![Vec::new(); rows.len()];
    for round in 0..=ROUNDS {
        for (i, row) in rows.iter_mut().enumerate() {
            // The reserve rows' operation is a whole batch: fewer of them.
            let k = if row.per_op > 1 { 5 } else { CHUNK };
            let t = round_ns(row, k);
            if round > 0 {
                ns[i].push(t);
            }
        }
    }
    let med: Vec<f64> = ns.into_iter().map(median).collect();
    println!("\ninterleaved: median of {ROUNDS} rounds per row (round-robin); ratio = row / its peer");
    println!("{:<24} {:<20} {:>10} {:>8}", "group", "row", "ns/op", "ratio");
    for (i, row) in rows.iter().enumerate() {
        let peer = rows.iter().position(|p| {
            p.group == row.group && (p.name.starts_with("std") || p.name == "fixed") && p.name != row.name
        });
        let peer = peer.filter(|_| !row.name.starts_with("std") && row.name != "fixed");
        let ratio = peer.map_or("-".to_owned(), |p| {
            // The no-reserve rows compare with std's no-reserve row.
            let p = if row.name.ends_with("no_reserve") {
                rows.iter()
                    .position(|q| q.group == row.group && q.name == "std_no_reserve")
                    .unwrap_or(p)
            } else {
                p
            };
            format!("{:.2}x", med[i] / med[p])
        });
        println!("{:<24} {:<20} {:>10.1} {:>8}", row.group, row.name, med[i], ratio);
    }
}

fn main() {
    // Before any libpmemobj call (the feature links the PMDK shim; nothing here calls it).
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();
    println!(
        "collections_ops: deques of {DEQUE_LEN} u64s, B-trees and concurrent maps of {TREE_LEN} \
         entries, reserve batches of {BATCH} keys; files in {}",
        pmem_pool_dir().display()
    );
    let ops = temp_pool(false);
    // The concurrent maps each in a pool of their own, holding nothing else: the two differ
    // only in the routing.
    let seeded = temp_pool(false);
    let fixed = temp_pool(true);
    let std_q = std::cell::RefCell::new(VecDeque::new());
    let std_t = std::cell::RefCell::new(BTreeMap::new());
    let mut rows = deque_rows(&ops.pool, &std_q);
    rows.extend(btree_rows(&ops.pool, &std_t));
    rows.extend(hash_rows(&ops.pool));
    rows.extend(conc_rows(&seeded.pool, &fixed.pool));
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    let mut groups: Vec<&'static str> = rows.iter().map(|r| r.group).collect();
    groups.dedup();
    for group in groups {
        let mut g = c.benchmark_group(group);
        for row in rows.iter_mut().filter(|r| r.group == group) {
            let per_op = row.per_op;
            g.bench_function(row.name, |b| {
                b.iter_custom(|iters| {
                    // `iters` counts units: whole batches for the reserve rows.
                    let ops = iters.div_ceil(per_op).max(1);
                    let mut total = Duration::ZERO;
                    let mut left = ops;
                    while left > 0 {
                        let k = left.min(CHUNK);
                        total += (row.round)(k);
                        left -= k;
                    }
                    total.mul_f64(iters as f64 / (ops * per_op) as f64)
                })
            });
        }
        g.finish();
    }
    print_interleaved(&mut rows);
    c.final_summary();
}
