//! Loops to count instructions per operation with callgrind: a deterministic count (the same
//! binary, input and environment give the same total, however loaded the machine is), where a
//! timed benchmark needs a quiet machine. Only the `measured` function is counted:
//!
//! ```sh
//! cargo build --release -p ptm-benches --example instructions
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='instructions::measured' \
//!     target/release/examples/instructions hash-get 100000 50000
//! ```
//!
//! The last line's `I refs` divided by the operation count (the third argument) is the
//! instructions per operation. Modes:
//! - `tx1 0 N`: N one-word durable transactions;
//! - `tx8 0 N`: N transactions snapshotting 8 words (a batch, one `add` each) and setting them;
//! - `tx8-all 0 N`: the same with the batch's `add_all` (as `ptm bench` and the tx bench);
//! - `hash-get K N`, `btree-get K N`: a `PHashMap<u64, u64>` or `PBTreeMap<u64, u64>` of K keys,
//!   then N gets of present keys, each its own read-only transaction (the fill is not counted);
//! - `hash-insert K N`, `btree-insert K N`: the same maps of K keys, then N inserts of fresh
//!   keys, each its own durable transaction (2 drains each).
//!
//! The pool is a file in `/dev/shm` (256 MiB: valgrind cannot reserve the address space of much
//! larger ones), cache-flush mode.

use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_collections::{PBTreeMap, PHashMap};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    words: [PCell<u64>; 64],
    hash: PHashMap<u64, u64>,
    tree: PBTreeMap<u64, u64>,
}

/// The `i`-th key (as the collections benchmark spreads them).
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Tx1,
    Tx8,
    Tx8All,
    HashGet,
    BTreeGet,
    HashInsert,
    BTreeInsert,
}

fn main() {
    let usage =
        "usage: instructions <tx1|tx8|tx8-all|hash-get|btree-get|hash-insert|btree-insert> <keys> <operations>";
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("tx1") => Mode::Tx1,
        Some("tx8") => Mode::Tx8,
        Some("tx8-all") => Mode::Tx8All,
        Some("hash-get") => Mode::HashGet,
        Some("btree-get") => Mode::BTreeGet,
        Some("hash-insert") => Mode::HashInsert,
        Some("btree-insert") => Mode::BTreeInsert,
        _ => panic!("{usage}"),
    };
    let mut number = || -> u64 { args.next().and_then(|a| a.parse().ok()).expect(usage) };
    let (keys, ops) = (number(), number());
    let dir = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
    let opts = PoolOptions::new().force_pmem(true);
    let pool = Pool::<Root>::create(dir.path().join("i.pool"), 256 << 20, &opts).expect("pool");
    // A fixed hash seed: the map's splits, and so the counts, are the same in every run (with a
    // drawn seed a `hash-insert` count moved by ±5% from run to run).
    pool.transaction(|tx, r| r.hash.set_hash_seed(tx, 0x5eed_1457))
        .expect("seed");
    let all: Vec<u64> = (0..keys).collect();
    for chunk in all.chunks(1000) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                match mode {
                    Mode::HashGet | Mode::HashInsert => r.hash.insert(tx, key(i), i).map(drop)?,
                    Mode::BTreeGet | Mode::BTreeInsert => r.tree.insert(tx, key(i), i).map(drop)?,
                    Mode::Tx1 | Mode::Tx8 | Mode::Tx8All => {}
                }
            }
            Ok::<_, ptm::Error>(())
        })
        .expect("fill");
    }
    println!("{}", measured(&pool, mode, keys, ops));
}

/// The counted loop: `ops` operations; returns a checksum so nothing is optimised away.
#[inline(never)]
fn measured(pool: &Pool<Root>, mode: Mode, keys: u64, ops: u64) -> u64 {
    let mut sum = 0u64;
    for j in 0..ops {
        sum = sum.wrapping_add(
            match mode {
                Mode::Tx1 => pool.transaction(|tx, r| r.words[0].set(tx, j).map(|()| j)),
                Mode::Tx8 | Mode::Tx8All => pool.transaction(|tx, r| {
                    let words = || r.words.iter().step_by(8);
                    if mode == Mode::Tx8All {
                        tx.snapshot(|b| b.add_all(words()))?;
                    } else {
                        tx.snapshot(|b| words().try_for_each(|w| b.add(w)))?;
                    }
                    words().try_for_each(|w| w.set(tx, j))?;
                    Ok(j)
                }),
                Mode::HashInsert | Mode::BTreeInsert => {
                    let i = keys + j;
                    pool.transaction(|tx, r| {
                        let old = if mode == Mode::HashInsert {
                            r.hash.insert(tx, key(i), i)?
                        } else {
                            r.tree.insert(tx, key(i), i)?
                        };
                        assert!(old.is_none(), "a fresh key");
                        Ok::<_, ptm::Error>(i)
                    })
                }
                Mode::HashGet | Mode::BTreeGet => {
                    let i = j.wrapping_mul(7919) % keys.max(1);
                    pool.transaction(|tx, r| {
                        let v = if mode == Mode::HashGet {
                            r.hash.get(tx, &key(i))?
                        } else {
                            r.tree.get(tx, &key(i))?
                        };
                        Ok::<_, ptm::Error>(v.expect("a present key"))
                    })
                }
            }
            .expect("an operation"),
        );
    }
    sum
}
