//! `PBTreeMap::check` and `check_invariants` on node bytes damaged one word at a time: each
//! invariant they list (leaf flags 0 or 1, lengths at most 15, keys strictly increasing and
//! inside the range the parent's separators give, zeroed spare key, value and child slots up to
//! the array's last slot) is reported as that violation, and a full node passes.

use crate::common;

use std::path::PathBuf;

use common::{opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PBTreeMap, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// 100 even keys: a root of 12 keys over 13 leaves.
    t: PBTreeMap<u64, u64>,
    /// Keys and values that own blocks: 40 entries, two levels.
    o: PBTreeMap<PString, PVec<u64>>,
    /// 15 keys: one full leaf.
    f: PBTreeMap<u64, u64>,
}

/// Leaf layout (design §13.2): length word, leaf flag word, 15 keys, 15 values, 16 children.
/// `PBTreeMap<u64, u64>`: keys at 16, values at 136, children at 256.
const T_KEYS: usize = 16;
const T_KIDS: usize = 256;
/// Its internal nodes are wide: length word (with the tag in its high half), 0, 63 keys, 64
/// children (at 520).
const T_WIDE_KIDS: usize = 16 + 63 * 8;
/// `PBTreeMap<PString, PVec<u64>>`: 24-byte keys at 16, 24-byte values at 376 (leaves); its
/// wide internal nodes' children at 16 + 63 × 24.
const O_KEYS: usize = 16;
const O_VALS: usize = 16 + 15 * 24;
const O_WIDE_KIDS: usize = 16 + 63 * 24;

/// A pool image to damage, and the nodes of its trees (pre-order: the root first).
struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clean: Vec<u8>,
    /// `t`'s nodes.
    t: Vec<u64>,
    /// `o`'s nodes.
    o: Vec<u64>,
    /// `f`'s single leaf.
    f: u64,
}

fn key(i: u64) -> String {
    format!("key number {i:03}")
}

fn image() -> Image {
    let dir = shm_dir();
    let path = dir.path().join("v.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let (t, o, f) = pool
        .transaction(|tx, r| {
            r.t.extend(tx, (0..100).map(|k| (2 * k, k)))?;
            for i in 0..40 {
                r.o.get_or_insert_new(tx, key(i))?.extend(tx, [i, i + 1])?;
            }
            r.f.extend(tx, (0..15).map(|k| (k, k)))?;
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "{shape:?}");
            assert!(shape[1][..3].iter().all(|&n| n < 15), "{shape:?}");
            let shape = r.o.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "{shape:?}");
            assert!(shape[1][0] < 15, "{shape:?}");
            let f = r.f.node_offsets(tx)?;
            assert_eq!(f.len(), 1);
            Ok::<_, Error>((r.t.node_offsets(tx)?, r.o.node_offsets(tx)?, f[0]))
        })
        .unwrap();
    drop(pool);
    let clean = std::fs::read(&path).unwrap();
    Image {
        _dir: dir,
        path,
        clean,
        t,
        o,
        f,
    }
}

impl Image {
    fn word(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.clean[at..at + 8].try_into().unwrap())
    }

    /// The clean image with the word at `at` set to `v`, opened; the tree picked by `tree`
    /// checked by both checks, which must agree. `Ok` or the violation reported.
    fn check_with(&self, at: usize, v: u64, tree: fn(&Root) -> &PBTreeMap<u64, u64>) -> Result<(), String> {
        self.poke(at, v);
        let pool = Pool::<Root>::open(&self.path, &opts()).unwrap();
        let (typed, shape) = pool
            .transaction(|tx, r| Ok::<_, Error>((tree(r).check(tx), tree(r).check_invariants(tx))))
            .unwrap();
        Self::agree(typed, shape)
    }

    /// As [`check_with`](Self::check_with), for `o`.
    fn check_o_with(&self, at: usize, v: u64) -> Result<(), String> {
        self.poke(at, v);
        let pool = Pool::<Root>::open(&self.path, &opts()).unwrap();
        let (typed, shape) = pool
            .transaction(|tx, r| Ok::<_, Error>((r.o.check(tx), r.o.check_invariants(tx))))
            .unwrap();
        Self::agree(typed, shape)
    }

    fn poke(&self, at: usize, v: u64) {
        let mut img = self.clean.clone();
        img[at..at + 8].copy_from_slice(&v.to_le_bytes());
        std::fs::write(&self.path, &img).unwrap();
    }

    fn agree(typed: ptm::Result<()>, shape: Result<Vec<Vec<usize>>, String>) -> Result<(), String> {
        match (typed, shape) {
            (Ok(()), Ok(_)) => Ok(()),
            (Err(Error::CorruptCollection { structure, what, .. }), Err(s)) => {
                assert_eq!(structure, "PBTreeMap");
                assert_eq!(what, s);
                Err(s)
            }
            (typed, shape) => panic!("the checks disagree: {typed:?} / {shape:?}"),
        }
    }
}

fn t(r: &Root) -> &PBTreeMap<u64, u64> {
    &r.t
}

fn f(r: &Root) -> &PBTreeMap<u64, u64> {
    &r.f
}

fn reports(r: Result<(), String>, what: &str) {
    match r {
        Err(s) => assert!(s.contains(what), "expected {what:?}, got {s:?}"),
        Ok(()) => panic!("not reported: {what}"),
    }
}

#[test]
fn a_full_node_passes_and_a_length_over_15_or_a_leaf_flag_over_1_is_reported() {
    let img = image();
    // Unchanged bytes: both trees pass, `f`'s single leaf holding 15 keys.
    assert_eq!(img.check_with(0, img.word(0), f), Ok(()));
    let pool = Pool::<Root>::open(&img.path, &opts()).unwrap();
    let shape = pool
        .transaction(|tx, r| Ok::<_, Error>(r.f.check_invariants(tx)))
        .unwrap();
    assert_eq!(shape, Ok(vec![vec![15]]));
    drop(pool);
    assert_eq!(img.check_with(0, img.word(0), t), Ok(()));
    let leaf = img.t[1] as usize;
    // A length word of 16 (node reads clamp it to 15).
    reports(img.check_with(leaf, 16, t), "length 16");
    // A leaf flag of 2 (node reads take any non-zero flag as a leaf).
    reports(img.check_with(leaf + 8, 2, t), "leaf flag 2");
}

#[test]
fn keys_out_of_order_or_outside_their_separators_are_reported() {
    let img = image();
    let (l0, l1, l2) = (img.t[1] as usize, img.t[2] as usize, img.t[3] as usize);
    let len0 = img.word(l0) as usize;
    let k = |leaf: usize, i: usize| img.word(leaf + T_KEYS + 8 * i);
    // The keys are the even numbers in order, each leaf's first key its separator.
    assert_eq!(k(l1, 0), k(l0, len0 - 1) + 2);
    // A key repeated in its leaf.
    reports(
        img.check_with(l1 + T_KEYS + 8, k(l1, 0), t),
        "keys not strictly increasing",
    );
    // The first leaf's last key equal to the separator after it (its upper bound, excluded).
    reports(
        img.check_with(l0 + T_KEYS + 8 * (len0 - 1), k(l1, 0), t),
        "outside the range its parent gives",
    );
    // The third leaf's first key one under its separator (its lower bound), still above every
    // key of the second leaf and under the third leaf's next key.
    reports(
        img.check_with(l2 + T_KEYS, k(l2, 0) - 1, t),
        "outside the range its parent gives",
    );
}

#[test]
fn a_non_zero_spare_child_slot_is_reported_at_either_end_of_the_array() {
    let img = image();
    let (root, leaf) = (img.t[0] as usize, img.t[1] as usize);
    // The root is wide: the low half of its length word is its key count.
    let kids = (img.word(root) & 0xffff_ffff) as usize + 1;
    assert!(kids < 63);
    // A leaf's whole child array is spare: its first and last slots.
    reports(img.check_with(leaf + T_KIDS, 1, t), "spare child slot");
    reports(img.check_with(leaf + T_KIDS + 8 * 15, 1, t), "spare child slot");
    // An internal node's slots past its children: the first and the last.
    reports(
        img.check_with(root + T_WIDE_KIDS + 8 * kids, 1, t),
        "spare child slot",
    );
    reports(
        img.check_with(root + T_WIDE_KIDS + 8 * 63, 1, t),
        "spare child slot",
    );
}

#[test]
fn a_non_zero_spare_key_or_value_slot_is_reported_when_they_own_blocks() {
    let img = image();
    let (root, leaf) = (img.o[0] as usize, img.o[1] as usize);
    let len = img.word(leaf) as usize;
    assert!(len < 15);
    // The last word of a slot, so that a check of fewer bytes than the spare slots hold misses it.
    let last_word = |base: usize, slot: usize| base + 24 * slot + 16;
    reports(img.check_o_with(leaf + O_KEYS + 24 * len, 1), "spare key slot");
    reports(
        img.check_o_with(leaf + last_word(O_KEYS, 14), 1),
        "spare key slot",
    );
    reports(img.check_o_with(leaf + O_VALS + 24 * len, 1), "spare value slot");
    reports(
        img.check_o_with(leaf + last_word(O_VALS, 14), 1),
        "spare value slot",
    );
    // The root is a wide internal node, without values: its key slots past its keys are spare,
    // the first and the last (62).
    let rlen = (img.word(root) & 0xffff_ffff) as usize;
    assert!(rlen + 1 < 63);
    reports(img.check_o_with(root + O_KEYS + 24 * rlen, 1), "spare key slot");
    reports(
        img.check_o_with(root + last_word(O_KEYS, 62), 1),
        "spare key slot",
    );
    // Its child array past its children, as in `t`.
    reports(
        img.check_o_with(root + O_WIDE_KIDS + 8 * (rlen + 1), 1),
        "spare child slot",
    );
    reports(
        img.check_o_with(root + O_WIDE_KIDS + 8 * 63, 1),
        "spare child slot",
    );
}

#[test]
fn an_empty_root_leaf_is_reported_and_iterates_as_empty() {
    let img = image();
    let leaf = img.f as usize;
    // The single leaf's length word 0: a root leaf holds at least one key.
    reports(img.check_with(leaf, 0, f), "0 keys, fewer than 1");
    // The same image (left by `check_with`): reading the leaf gives no entry, and no panic.
    let pool = Pool::<Root>::open(&img.path, &opts()).unwrap();
    let (all, keys) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.f.iter(tx)?.count(), r.f.keys(tx)?.len())))
        .unwrap();
    assert_eq!((all, keys), (0, 0));
}
