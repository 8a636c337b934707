//! `PHashMap`'s growth rules at their boundaries (design §13.4): a full-size segment splits
//! only when each side of its split bit gets more than 1/8 of the entries (the new key
//! counted), else it overflows (is rebuilt alone, bigger); the directory doubles only while it
//! stays within 8 entries per full-size segment's worth of slots; an overflowed segment splits
//! into halves sized for their entries. Keys here are their own hash (whatever the seed), so
//! every split bit is chosen; every map is checked against std's `HashMap`, before and after a
//! reopen, with its structure verified.

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use common::{opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool, Result, Transaction};
use ptm_collections::{AsKey, PHashMap, PKey, PValue};

/// A `u64` key whose hash, under any seed, is its value.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Hashed {
    h: u64,
}

impl PValue for Hashed {
    const OWNS: bool = false;

    unsafe fn free_owned(&self, _tx: &Transaction<'_>) -> Result<()> {
        Ok(())
    }
}

// SAFETY: a plain `u64` owning nothing, moved by its bytes; `Ref` is a copy taken at once;
// `key_hash`, `key_eq` and `key_new` only read; a stored key hashes as its borrowed form.
unsafe impl PKey for Hashed {
    type Borrowed = u64;
    type Ref<'a> = u64;

    fn borrowed_hash(b: &u64) -> u64 {
        *b
    }

    fn key_hash(&self, _tx: &Transaction<'_>) -> Result<u64> {
        Ok(self.h)
    }

    fn seeded_borrowed_hash(b: &u64, _seed: u64) -> u64 {
        *b
    }

    fn seeded_key_hash(&self, _tx: &Transaction<'_>, _seed: u64) -> Result<u64> {
        Ok(self.h)
    }

    fn key_eq(&self, _tx: &Transaction<'_>, b: &u64) -> Result<bool> {
        Ok(self.h == *b)
    }

    unsafe fn key_new(_tx: &Transaction<'_>, b: &u64) -> Result<Hashed> {
        Ok(Hashed { h: *b })
    }

    fn key_ref(&self) -> u64 {
        self.h
    }
}

impl AsKey<Hashed> for u64 {
    fn as_key(&self) -> &u64 {
        self
    }
}

/// 512-byte values: 520-byte pairs, so a full-size segment has 64 slots (3/4 full at 48).
type Val = [u64; 64];
const FULL_SIZE: u64 = 64;
const ROOM: u64 = 48;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PHashMap<Hashed, Val>,
}

/// The `i`th key whose hash starts with the `bits` bits of `prefix` (the rest spread by a
/// multiplicative hash of `i`).
fn key(prefix: u64, bits: u32, i: u64) -> u64 {
    let low = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> bits;
    (prefix << (64 - bits)) | low
}

/// A map and the std model it must equal.
struct Map {
    pool: Pool<Root>,
    model: HashMap<u64, u64>,
}

impl Map {
    fn new(path: &Path) -> Map {
        let pool = Pool::<Root>::create(path, POOL_SIZE, &opts()).unwrap();
        Map {
            pool,
            model: HashMap::new(),
        }
    }

    /// Inserts each key (new) in its own transaction, its value derived from it.
    fn insert(&mut self, keys: impl IntoIterator<Item = u64>) {
        for k in keys {
            let old = self
                .pool
                .transaction(|tx, r| r.m.insert(tx, k, [!k; 64]))
                .unwrap_or_else(|e| panic!("insert {k:#018x}: {e}"));
            assert_eq!(old, None, "key {k:#018x} was new");
            self.model.insert(k, !k);
        }
    }

    /// (segments, slots over all segments), the structure verified and the contents equal to
    /// the model.
    fn shape(&self) -> (usize, u64) {
        self.pool
            .transaction(|tx, r| {
                r.m.check_invariants(tx)?;
                let mut seen = HashMap::new();
                for (k, v) in r.m.iter(tx) {
                    assert!(v.iter().all(|&w| w == v[0]), "value of {k:#x} torn");
                    assert!(seen.insert(k, v[0]).is_none(), "key {k:#x} twice");
                }
                assert_eq!(seen, self.model, "contents");
                for (&k, &v) in &self.model {
                    assert_eq!(r.m.get(tx, &k)?.map(|x| x[0]), Some(v), "get {k:#x}");
                }
                let blocks = r.m.block_offsets(tx)?.len();
                let segments = if blocks > 1 { blocks - 1 } else { blocks };
                Ok::<_, Error>((segments, r.m.capacity(tx)))
            })
            .unwrap()
    }

    /// Closes and reopens the pool: the same contents and shape.
    fn reopen(self, path: &Path) -> Map {
        let before = self.shape();
        let Map { pool, model } = self;
        pool.close().unwrap();
        let pool = Pool::<Root>::open(path, &opts()).unwrap();
        let map = Map { pool, model };
        assert_eq!(map.shape(), before, "after reopen");
        map
    }
}

/// One segment of 64 slots holding `zeros` keys whose top hash bit is clear and `ones` whose
/// top bit is set (`zeros + ones = 48`: full), then one more key (top bit `new_bit`): returns
/// the shape after that insert.
fn grow_once(path: &Path, zeros: u64, ones: u64, new_bit: u64) -> (usize, u64) {
    assert_eq!(zeros + ones, ROOM);
    let mut m = Map::new(path);
    m.insert((0..zeros).map(|i| key(0, 1, i)));
    m.insert((0..ones).map(|i| key(1, 1, 100 + i)));
    assert_eq!(m.shape(), (1, FULL_SIZE), "one full-size segment, 3/4 full");
    m.insert([key(new_bit, 1, 500)]);
    let m = m.reopen(path);
    m.shape()
}

/// 7 of 49 entries on the smaller side (more than 1/8): the segment splits in two full-size
/// halves, whichever side the new key takes; 6 of 49 (not more than 1/8): it overflows into one
/// segment of 128 slots.
#[test]
fn a_split_needs_more_than_an_eighth_on_each_side() {
    let dir = shm_dir();
    let p = |n: &str| dir.path().join(n);
    let split = (2, 2 * FULL_SIZE);
    let overflow = (1, 2 * FULL_SIZE);
    // The new key makes the smaller side 7.
    assert_eq!(grow_once(&p("a.pool"), 42, 6, 1), split, "6 ones + a new one");
    assert_eq!(grow_once(&p("b.pool"), 6, 42, 0), split, "6 zeros + a new zero");
    // The new key joins the larger side: the smaller stays at 6.
    assert_eq!(grow_once(&p("c.pool"), 42, 6, 0), overflow, "6 ones, new zero");
    assert_eq!(grow_once(&p("d.pool"), 6, 42, 1), overflow, "6 zeros, new one");
    // Far from the boundary.
    assert_eq!(grow_once(&p("e.pool"), 24, 24, 1), split, "even");
    assert_eq!(grow_once(&p("f.pool"), 48, 0, 0), overflow, "all zeros");
}

/// An overflowed segment (163 keys of one top bit, in 256 slots) that becomes balanced splits
/// into halves sized for their own entries: 64 slots for the 30 keys of the other bit, 512 for
/// the 163 (twice them, rounded up to a power of two).
#[test]
fn an_overflowed_segment_splits_into_halves_sized_for_their_entries() {
    let dir = shm_dir();
    let path = dir.path().join("o.pool");
    let mut m = Map::new(&path);
    m.insert((0..163).map(|i| key(1, 1, i)));
    assert_eq!(m.shape(), (1, 256), "overflowed: one segment of 256 slots");
    m.insert((0..29).map(|i| key(0, 1, 1000 + i)));
    assert_eq!(m.shape(), (1, 256), "192 entries: 3/4 full");
    // 30 of 193 on the smaller side: balanced, and the directory (2 entries) is within bounds.
    m.insert([key(0, 1, 2000)]);
    assert_eq!(m.shape(), (2, 64 + 512), "split into 64 + 512 slots");
    let mut m = m.reopen(&path);
    // Both halves take more keys without another growth step until 3/4 full.
    m.insert((0..17).map(|i| key(0, 1, 3000 + i)));
    m.insert((0..100).map(|i| key(1, 1, 4000 + i)));
    assert_eq!(m.shape(), (2, 64 + 512), "47 and 263 keys: no growth");
}

/// A chain of splits down one side (8 keys of prefix `1`, `01`, `001`, ... and the rest
/// `000000...`) doubles the directory while it stays within 8 entries per 64 slots: depths 1 to
/// 5 (6 segments, 384 slots: 48 directory entries allowed); the sixth split would need 64, so
/// the deepest segment overflows instead. A shallow segment still splits (its directory
/// range halves; the directory does not grow).
#[test]
fn the_directory_doubles_only_within_eight_entries_per_full_segment() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let mut m = Map::new(&path);
    // Prefixes `1`, `01`, ..., `000001`: 8 keys each, 48 in one full segment.
    for j in 0..6u32 {
        m.insert((0..8).map(|i| key(1, j + 1, u64::from(j) * 100 + i)));
    }
    assert_eq!(m.shape(), (1, FULL_SIZE));
    let mut bulk = (0..).map(|i| key(0, 6, 10_000 + i));
    // Each split leaves the deep side with 41 entries: 7 more fill it, the next splits it.
    m.insert(bulk.by_ref().take(1));
    assert_eq!(m.shape(), (2, 2 * FULL_SIZE), "depth 1");
    for depth in 2..=5 {
        m.insert(bulk.by_ref().take(8));
        assert_eq!(
            m.shape(),
            (depth + 1, (depth as u64 + 1) * FULL_SIZE),
            "depth {depth}"
        );
    }
    // At depth 5 the deepest segment (local depth 5) fills again; doubling to 64 directory
    // entries would pass 8 per 64 slots (6 × 8 = 48): it overflows into 128 slots.
    m.insert(bulk.by_ref().take(8));
    assert_eq!(m.shape(), (6, 5 * FULL_SIZE + 128), "overflow, no doubling");
    let mut m = m.reopen(&path);
    // The segment of prefix `1` (local depth 1 < 5) fills with keys of prefix `10` and `11`
    // and splits: one more segment, no directory doubling needed.
    let more = (0..ROOM - 8 + 1).map(|i| key(2 + (i & 1), 2, 20_000 + i));
    m.insert(more);
    assert_eq!(m.shape(), (7, 6 * FULL_SIZE + 128), "the shallow segment split");
}
