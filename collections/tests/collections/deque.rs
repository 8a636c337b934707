//! `PQueue` as a deque against `VecDeque`: push_front, pop_back, insert/remove at a position,
//! truncate, retain, rotate_left/right, reserve/capacity, range (forwards and backwards),
//! front/back, and the handle forms (push_front_new, pop_back_free, back_ref, insert_new,
//! remove_free, retain_free), on a queue of `u64`s (one ring of up to 8192), of 4 KiB pages
//! (chunks of 16: every front and back chunk boundary, directory growth at either end), of
//! 4 KiB structs owning a string (frees across chunk boundaries) and of `PVec<u64>`s (against
//! `VecDeque<Vec<u64>>`).
//! Random transactions across reopens with exact leak checks, aborts, crash images after
//! every operation and after the commit, and 2 drains per operation in every growth case.

use crate::common;
use crate::queue_common;

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Debug;

use common::{add_block, check_abort, check_crash_steps, check_steps, drains, shm_dir, ModelRoot};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PQueue, PVec};
use queue_common::{page, seed_of, Named, Page};

#[derive(Persistent)]
#[repr(C)]
struct DRoot {
    small: PQueue<u64>,
    pages: PQueue<Page>,
    named: PQueue<Named>,
    vecs: PQueue<PVec<u64>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct DModel {
    small: VecDeque<u64>,
    /// Seeds of the pages.
    pages: VecDeque<u64>,
    named: VecDeque<String>,
    vecs: VecDeque<Vec<u64>>,
}

/// Which queue of `Copy` elements an operation works on.
#[derive(Clone, Copy, Debug)]
enum Q {
    Small,
    Pages,
}

#[derive(Clone, Debug)]
enum DOp {
    /// Pushes `start..start + n` at the back.
    Push(Q, u64, u64),
    /// Pushes `start..start + n` at the front, one by one.
    PushFront(Q, u64, u64),
    /// Pops `n` at the back, checking each.
    PopBack(Q, u64),
    /// Pops `n` at the front, checking each.
    PopFront(Q, u64),
    Insert(Q, u64, u64),
    Remove(Q, u64),
    Truncate(Q, u64),
    /// Keeps the elements (seeds) not divisible by the argument (at least 2).
    Retain(Q, u64),
    RotateLeft(Q, u64),
    RotateRight(Q, u64),
    Reserve(Q, u64),
    /// Reads `range(a..b)` forwards and backwards, `front`, `back`, `iter().rev()`.
    Range(Q, u64, u64),
    NPushFront(String),
    NPushBack(String),
    /// Appends to the back element through `back_ref`.
    NBackAppend(String),
    NPopBackFree(u64),
    NTruncate(u64),
    NRotate(u64, bool),
    /// `insert_new` at a position, then the string pushed into it.
    NInsert(u64, String),
    NRemoveFree(u64),
    /// Keeps the structs whose name's length is not divisible by the argument (at least 2).
    NRetainFree(u64),
    VPush(Vec<u64>),
    VPushFront(Vec<u64>),
    /// `insert_new` at a position, then the values pushed into it.
    VInsert(u64, Vec<u64>),
    VRemoveFree(u64),
    /// Keeps the vectors whose length is not divisible by the argument (at least 2); pushes
    /// `7` into every kept one from inside the closure when the flag is set.
    VRetainFree(u64, bool),
    /// Pushes a value into the vector at a position (through `get_ref`).
    VAppend(u64, u64),
}

fn q() -> impl Strategy<Value = Q> {
    prop_oneof![Just(Q::Small), Just(Q::Pages)]
}

fn d_op() -> impl Strategy<Value = DOp> {
    let pos = 0..48u64;
    prop_oneof![
        3 => (q(), 0..1000u64, 0..24u64).prop_map(|(w, s, n)| DOp::Push(w, s, n)),
        3 => (q(), 0..1000u64, 0..24u64).prop_map(|(w, s, n)| DOp::PushFront(w, s, n)),
        2 => (q(), 0..20u64).prop_map(|(w, n)| DOp::PopBack(w, n)),
        1 => (q(), 0..20u64).prop_map(|(w, n)| DOp::PopFront(w, n)),
        3 => (q(), pos.clone(), 0..1000u64).prop_map(|(w, i, x)| DOp::Insert(w, i, x)),
        3 => (q(), pos.clone()).prop_map(|(w, i)| DOp::Remove(w, i)),
        1 => (q(), pos.clone()).prop_map(|(w, n)| DOp::Truncate(w, n)),
        1 => (q(), 2..5u64).prop_map(|(w, k)| DOp::Retain(w, k)),
        1 => (q(), pos.clone()).prop_map(|(w, n)| DOp::RotateLeft(w, n)),
        1 => (q(), pos.clone()).prop_map(|(w, n)| DOp::RotateRight(w, n)),
        1 => (q(), 0..40u64).prop_map(|(w, n)| DOp::Reserve(w, n)),
        1 => (q(), pos.clone(), pos.clone()).prop_map(|(w, a, b)| DOp::Range(w, a, b)),
        2 => "[a-z€]{0,4}".prop_map(DOp::NPushFront),
        2 => "[a-z]{0,4}".prop_map(DOp::NPushBack),
        1 => "[a-z]{1,3}".prop_map(DOp::NBackAppend),
        1 => (0..6u64).prop_map(DOp::NPopBackFree),
        1 => (0..20u64).prop_map(DOp::NTruncate),
        1 => (0..20u64, any::<bool>()).prop_map(|(n, l)| DOp::NRotate(n, l)),
        2 => (pos.clone(), "[a-z]{0,4}").prop_map(|(i, s)| DOp::NInsert(i, s)),
        2 => pos.clone().prop_map(DOp::NRemoveFree),
        1 => (2..5u64).prop_map(DOp::NRetainFree),
        2 => prop::collection::vec(0..1000u64, 0..4).prop_map(DOp::VPush),
        2 => prop::collection::vec(0..1000u64, 0..4).prop_map(DOp::VPushFront),
        3 => (0..24u64, prop::collection::vec(0..1000u64, 0..4)).prop_map(|(i, v)| DOp::VInsert(i, v)),
        3 => (0..24u64).prop_map(DOp::VRemoveFree),
        1 => (2..4u64, any::<bool>()).prop_map(|(k, g)| DOp::VRetainFree(k, g)),
        1 => (0..24u64, 0..1000u64).prop_map(|(i, x)| DOp::VAppend(i, x)),
    ]
}

/// Applies a `Copy`-queue operation to `dq` (elements `elem(seed)`), checking the results
/// against `m`, the seeds before the operation.
fn apply_q<T: Persistent + Copy + PartialEq + Debug>(
    tx: &Transaction<'_>,
    dq: &PQueue<T>,
    m: &VecDeque<u64>,
    op: &DOp,
    elem: impl Fn(u64) -> T,
) -> Result<(), Error> {
    let len = m.len() as u64;
    let at = |i: u64| m.get(i as usize).map(|&s| elem(s));
    match *op {
        DOp::Push(_, s, n) => (s..s + n).try_for_each(|x| dq.push(tx, elem(x)))?,
        DOp::PushFront(_, s, n) => (s..s + n).try_for_each(|x| dq.push_front(tx, elem(x)))?,
        DOp::PopBack(_, n) => {
            for i in 0..n {
                let want = len.checked_sub(i + 1).and_then(at);
                assert_eq!(dq.pop_back(tx)?, want, "pop_back {i}");
            }
        }
        DOp::PopFront(_, n) => {
            for i in 0..n {
                assert_eq!(dq.pop(tx)?, at(i), "pop {i}");
            }
        }
        DOp::Insert(_, i, x) => assert_eq!(dq.insert(tx, i, elem(x))?, i <= len),
        DOp::Remove(_, i) => assert_eq!(dq.remove(tx, i)?, at(i)),
        DOp::Truncate(_, n) => dq.truncate(tx, n)?,
        DOp::Retain(_, k) => {
            let mut seen = Vec::new();
            dq.retain(tx, |x| {
                seen.push(*x);
                m.iter().any(|&s| elem(s) == *x && s % k != 0)
            })?;
            assert!(seen
                .iter()
                .eq(m.iter().map(|&s| elem(s)).collect::<Vec<_>>().iter()));
        }
        DOp::RotateLeft(_, n) => assert_eq!(dq.rotate_left(tx, n)?, n <= len),
        DOp::RotateRight(_, n) => assert_eq!(dq.rotate_right(tx, n)?, n <= len),
        DOp::Reserve(_, n) => {
            let before = dq.capacity(tx);
            dq.reserve(tx, n)?;
            let cap = dq.capacity(tx);
            assert!(cap >= before, "reserve never shrinks");
            // Within one chunk, reserve gives what std gives.
            let chunk = if size_of::<T>() == 8 { 8192 } else { 16 };
            assert!(cap >= (len + n).min(chunk), "capacity {cap} for {len} + {n}");
        }
        DOp::Range(_, a, b) => {
            let (from, to) = ((a.min(len)) as usize, (b.min(len)) as usize);
            let want: Vec<T> = if from < to {
                m.range(from..to).map(|&s| elem(s)).collect()
            } else {
                Vec::new()
            };
            let it = dq.range(tx, a..b);
            assert_eq!(it.len(), want.len());
            assert_eq!(it.collect::<Vec<_>>(), want, "range {a}..{b}");
            let back: Vec<T> = dq.range(tx, a..b).rev().collect();
            assert!(back.iter().eq(want.iter().rev()), "range {a}..{b} reversed");
            let mut it = dq.range(tx, a..=b);
            let (first, last) = (it.next(), it.next_back());
            let incl: Vec<u64> = if a < len && a <= b {
                m.range(a as usize..=b.min(len - 1) as usize).copied().collect()
            } else {
                Vec::new()
            };
            assert_eq!(first, incl.first().map(|&s| elem(s)), "range {a}..={b} front");
            assert_eq!(
                last,
                if incl.len() > 1 {
                    incl.last().map(|&s| elem(s))
                } else {
                    None
                },
                "range {a}..={b} back"
            );
            assert_eq!(dq.front(tx)?, at(0));
            assert_eq!(dq.back(tx)?, len.checked_sub(1).and_then(at));
            assert!(dq.iter(tx).rev().eq(m.iter().rev().map(|&s| elem(s))));
        }
        _ => unreachable!("not an operation on a queue of Copy elements"),
    }
    Ok(())
}

/// Applies a `Copy`-queue operation to the model.
fn apply_model_q(m: &mut VecDeque<u64>, op: &DOp) {
    let len = m.len() as u64;
    match *op {
        DOp::Push(_, s, n) => m.extend(s..s + n),
        DOp::PushFront(_, s, n) => (s..s + n).for_each(|x| m.push_front(x)),
        DOp::PopBack(_, n) => m.truncate(m.len().saturating_sub(n as usize)),
        DOp::PopFront(_, n) => drop(m.drain(..(n as usize).min(m.len()))),
        DOp::Insert(_, i, x) if i <= len => m.insert(i as usize, x),
        DOp::Remove(_, i) => drop(m.remove(i as usize)),
        DOp::Truncate(_, n) => m.truncate(n as usize),
        DOp::Retain(_, k) => m.retain(|s| s % k != 0),
        DOp::RotateLeft(_, n) if n <= len => m.rotate_left(n as usize),
        DOp::RotateRight(_, n) if n <= len => m.rotate_right(n as usize),
        _ => {}
    }
}

impl ModelRoot for DRoot {
    type Model = DModel;
    type Op = DOp;

    fn apply(tx: &Transaction<'_>, r: &Self, op: &DOp, m: &DModel) -> Result<(), Error> {
        let named_len = m.named.len() as u64;
        let vecs_len = m.vecs.len() as u64;
        match op {
            DOp::Push(w, ..)
            | DOp::PushFront(w, ..)
            | DOp::PopBack(w, _)
            | DOp::PopFront(w, _)
            | DOp::Insert(w, ..)
            | DOp::Remove(w, _)
            | DOp::Truncate(w, _)
            | DOp::Retain(w, _)
            | DOp::RotateLeft(w, _)
            | DOp::RotateRight(w, _)
            | DOp::Reserve(w, _)
            | DOp::Range(w, ..) => match w {
                Q::Small => apply_q(tx, &r.small, &m.small, op, |x| x)?,
                Q::Pages => apply_q(tx, &r.pages, &m.pages, op, page)?,
            },
            DOp::NPushFront(s) => r.named.push_front_new(tx)?.name.push_str(tx, s)?,
            DOp::NPushBack(s) => r.named.push_new(tx)?.name.push_str(tx, s)?,
            DOp::NBackAppend(s) => {
                if let Some(n) = r.named.back_ref(tx)? {
                    n.name.push_str(tx, s)?;
                }
            }
            DOp::NPopBackFree(n) => {
                for i in 0..*n {
                    assert_eq!(r.named.pop_back_free(tx)?, i < named_len, "pop_back_free {i}");
                }
            }
            DOp::NTruncate(n) => r.named.truncate(tx, *n)?,
            DOp::NRotate(n, left) => {
                let ok = if *left {
                    r.named.rotate_left(tx, *n)?
                } else {
                    r.named.rotate_right(tx, *n)?
                };
                assert_eq!(ok, *n <= named_len);
            }
            DOp::NInsert(i, s) => match r.named.insert_new(tx, *i)? {
                Some(n) => {
                    assert!(*i <= named_len);
                    assert_eq!(n.name.len(tx), 0, "a new element is empty");
                    n.name.push_str(tx, s)?;
                }
                None => assert!(*i > named_len, "insert_new at {i} of {named_len}"),
            },
            DOp::NRemoveFree(i) => assert_eq!(r.named.remove_free(tx, *i)?, *i < named_len),
            DOp::NRetainFree(k) => {
                let mut seen = Vec::new();
                r.named.retain_free(tx, |n| {
                    let name = n.name.as_string(tx).unwrap();
                    let keep = !(name.len() as u64).is_multiple_of(*k);
                    seen.push(name);
                    keep
                })?;
                assert!(seen.iter().eq(m.named.iter()), "retain_free saw {seen:?}");
            }
            DOp::VPush(v) => r.vecs.push_new(tx)?.extend(tx, v.iter().copied())?,
            DOp::VPushFront(v) => r.vecs.push_front_new(tx)?.extend(tx, v.iter().copied())?,
            DOp::VInsert(i, v) => match r.vecs.insert_new(tx, *i)? {
                Some(n) => {
                    assert!(*i <= vecs_len);
                    assert!(n.is_empty(tx), "a new element is empty");
                    n.extend(tx, v.iter().copied())?;
                }
                None => assert!(*i > vecs_len, "insert_new at {i} of {vecs_len}"),
            },
            DOp::VRemoveFree(i) => assert_eq!(r.vecs.remove_free(tx, *i)?, *i < vecs_len),
            DOp::VRetainFree(k, grow) => {
                let mut seen = Vec::new();
                r.vecs.retain_free(tx, |v| {
                    let items = v.to_vec(tx).unwrap();
                    let keep = !(items.len() as u64).is_multiple_of(*k);
                    seen.push(items);
                    if keep && *grow {
                        v.push(tx, 7).unwrap();
                    }
                    keep
                })?;
                assert!(seen.iter().eq(m.vecs.iter()), "retain_free saw {seen:?}");
            }
            DOp::VAppend(i, x) => {
                if let Some(v) = r.vecs.get_ref(tx, *i)? {
                    v.push(tx, *x)?;
                }
            }
        }
        Ok(())
    }

    fn apply_model(m: &mut DModel, op: &DOp) {
        match op {
            DOp::Push(w, ..)
            | DOp::PushFront(w, ..)
            | DOp::PopBack(w, _)
            | DOp::PopFront(w, _)
            | DOp::Insert(w, ..)
            | DOp::Remove(w, _)
            | DOp::Truncate(w, _)
            | DOp::Retain(w, _)
            | DOp::RotateLeft(w, _)
            | DOp::RotateRight(w, _)
            | DOp::Reserve(w, _)
            | DOp::Range(w, ..) => match w {
                Q::Small => apply_model_q(&mut m.small, op),
                Q::Pages => apply_model_q(&mut m.pages, op),
            },
            DOp::NPushFront(s) => m.named.push_front(s.clone()),
            DOp::NPushBack(s) => m.named.push_back(s.clone()),
            DOp::NBackAppend(s) => {
                if let Some(b) = m.named.back_mut() {
                    b.push_str(s);
                }
            }
            DOp::NPopBackFree(n) => {
                let keep = m.named.len().saturating_sub(*n as usize);
                m.named.truncate(keep);
            }
            DOp::NTruncate(n) => m.named.truncate(*n as usize),
            DOp::NRotate(n, left) => {
                if *n as usize <= m.named.len() {
                    if *left {
                        m.named.rotate_left(*n as usize);
                    } else {
                        m.named.rotate_right(*n as usize);
                    }
                }
            }
            DOp::NInsert(i, s) => {
                if *i as usize <= m.named.len() {
                    m.named.insert(*i as usize, s.clone());
                }
            }
            DOp::NRemoveFree(i) => drop(m.named.remove(*i as usize)),
            DOp::NRetainFree(k) => m.named.retain(|s| !(s.len() as u64).is_multiple_of(*k)),
            DOp::VPush(v) => m.vecs.push_back(v.clone()),
            DOp::VPushFront(v) => m.vecs.push_front(v.clone()),
            DOp::VInsert(i, v) => {
                if *i as usize <= m.vecs.len() {
                    m.vecs.insert(*i as usize, v.clone());
                }
            }
            DOp::VRemoveFree(i) => drop(m.vecs.remove(*i as usize)),
            DOp::VRetainFree(k, grow) => {
                m.vecs.retain(|v| !(v.len() as u64).is_multiple_of(*k));
                if *grow {
                    m.vecs.iter_mut().for_each(|v| v.push(7));
                }
            }
            DOp::VAppend(i, x) => {
                if let Some(v) = m.vecs.get_mut(*i as usize) {
                    v.push(*x);
                }
            }
        }
    }

    fn read(pool: &Pool<Self>) -> DModel {
        pool.transaction(|tx, r| {
            r.small.check(tx)?;
            r.pages.check(tx)?;
            r.named.check(tx)?;
            r.vecs.check(tx)?;
            let mut vecs = VecDeque::new();
            for i in 0..r.vecs.len(tx) {
                vecs.push_back(r.vecs.get_ref(tx, i)?.expect("i < len").to_vec(tx)?);
            }
            let small = r.small.to_vec(tx)?;
            assert!(r.small.iter(tx).eq(small.iter().copied()));
            assert!(r.small.capacity(tx) >= small.len() as u64);
            let pages = r
                .pages
                .iter(tx)
                .map(|p| seed_of(&p).expect("a page as written"))
                .collect::<VecDeque<_>>();
            assert_eq!(r.pages.len(tx), pages.len() as u64);
            let mut named = VecDeque::new();
            for i in 0..r.named.len(tx) {
                named.push_back(r.named.get_ref(tx, i)?.expect("i < len").name.as_string(tx)?);
            }
            assert_eq!(
                r.named
                    .back_ref(tx)?
                    .map(|n| n.name.as_string(tx))
                    .transpose()?
                    .as_ref(),
                named.back()
            );
            Ok::<_, Error>(DModel {
                small: small.into(),
                pages,
                named,
                vecs,
            })
        })
        .unwrap()
    }

    fn reachable(pool: &Pool<Self>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            let blocks = [
                r.small.block_offsets(tx)?,
                r.pages.block_offsets(tx)?,
                r.named.block_offsets(tx)?,
                r.vecs.block_offsets(tx)?,
            ];
            for b in blocks.into_iter().flatten() {
                add_block(&mut out, Some(b));
            }
            for i in 0..r.named.len(tx) {
                add_block(
                    &mut out,
                    r.named.get_ref(tx, i)?.expect("i < len").name.buffer_offset(tx),
                );
            }
            for i in 0..r.vecs.len(tx) {
                add_block(
                    &mut out,
                    r.vecs.get_ref(tx, i)?.expect("i < len").buffer_offset(tx),
                );
            }
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random transactions against `VecDeque`, reopening after some, with exact leak checks
    /// after each.
    #[test]
    fn deque_matches_vecdeque_across_reopens(
        steps in prop::collection::vec((prop::collection::vec(d_op(), 1..6), any::<bool>()), 1..12),
    ) {
        let dir = shm_dir();
        check_steps::<DRoot>(&dir.path().join("d.pool"), &steps);
    }

    /// A failed transaction after any of the operations changes nothing and leaks nothing.
    #[test]
    fn deque_aborts_change_nothing(
        before in prop::collection::vec(d_op(), 0..10),
        ops in prop::collection::vec(d_op(), 1..6),
    ) {
        let dir = shm_dir();
        check_abort::<DRoot>(&dir.path().join("a.pool"), &before, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Crash images after every operation and after the commit recover to the model before or
    /// after the transaction, with exactly the reachable blocks allocated.
    #[test]
    fn deque_crash_images_recover(steps in prop::collection::vec(prop::collection::vec(d_op(), 1..4), 1..6)) {
        let dir = shm_dir();
        check_crash_steps::<DRoot>(&dir.path().join("c.pool"), &steps);
    }
}

/// A deterministic walk through the front-side boundaries of a queue of pages (chunks of 16),
/// each step crash-imaged: a ring grown from the front, a full chunk filled from the front, a
/// new chunk before the front one with and without directory growth, a back chunk freed by
/// pops at the back, a middle insert and remove that cross a chunk boundary, a retain and a
/// truncate that free chunks, and the owning structs freed from the back.
#[test]
fn crash_images_at_front_boundaries() {
    use DOp::*;
    use Q::Pages as P;
    let dir = shm_dir();
    let steps = vec![
        vec![PushFront(P, 0, 4)],                  // first chunk, full ring from the front
        vec![PushFront(P, 4, 1)],                  // the ring doubles, elements in the back half
        vec![PushFront(P, 5, 11), Push(P, 16, 1)], // a full chunk, then a second at the back
        vec![PushFront(P, 17, 1)],                 // a chunk before the front: directory of 4
        vec![PushFront(P, 18, 15), PushFront(P, 33, 1)], // another, into a free directory slot
        vec![Insert(P, 3, 100), Insert(P, 40, 101)], // shifts across chunk boundaries
        vec![Remove(P, 2), Remove(P, 35)],
        vec![PopBack(P, 3), RotateLeft(P, 20), RotateRight(P, 7)],
        vec![Retain(P, 2), Truncate(P, 5)],
        vec![
            NPushFront("a".into()),
            NPushBack("b".into()),
            NPushFront("c".into()),
        ],
        vec![NRotate(1, true), NPopBackFree(1), NTruncate(1)],
        vec![PopBack(P, 10), NTruncate(0)],
    ];
    let (mut pool, model) = check_crash_steps::<DRoot>(&dir.path().join("f.pool"), &steps);
    assert!(model.pages.is_empty() && model.named.is_empty());
    common::assert_reachable_only(&mut pool, "end");
}

type Case = Box<dyn Fn(&Transaction<'_>, &DRoot) -> Result<(), Error>>;

/// Each new operation alone in a transaction costs 2 drains (its snapshot and the commit) in
/// every growth and shrink case, and 0 when it changes nothing.
#[test]
fn two_drains_per_deque_operation() {
    let dir = shm_dir();
    let pool = Pool::<DRoot>::create(dir.path().join("d.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    // Pages, pushed at the front one per transaction: the first chunk (a ring of 4), into
    // the ring, a ring doubling to 8 (elements in its back half), and to a full chunk of 16.
    for x in 0..9 {
        let ((), n) = drains(|| pool.transaction(|tx, r| r.pages.push_front(tx, page(x))).unwrap());
        assert_eq!(n, 2, "push_front {x}");
    }
    let cases: Vec<(&str, u64, Case)> = vec![
        ("pop_back", 2, Box::new(|tx, r| r.pages.pop_back(tx).map(drop))),
        (
            "insert near the front",
            2,
            Box::new(|tx, r| r.pages.insert(tx, 1, page(50)).map(drop)),
        ),
        (
            "insert near the back",
            2,
            Box::new(|tx, r| {
                let n = r.pages.len(tx);
                r.pages.insert(tx, n - 1, page(51)).map(drop)
            }),
        ),
        (
            "remove near the front",
            2,
            Box::new(|tx, r| r.pages.remove(tx, 1).map(drop)),
        ),
        (
            "remove near the back",
            2,
            Box::new(|tx, r| {
                let n = r.pages.len(tx);
                r.pages.remove(tx, n - 2).map(drop)
            }),
        ),
        (
            "rotate_left",
            2,
            Box::new(|tx, r| r.pages.rotate_left(tx, 2).map(drop)),
        ),
        (
            "rotate_right",
            2,
            Box::new(|tx, r| r.pages.rotate_right(tx, 3).map(drop)),
        ),
        (
            "rotate by 0",
            0,
            Box::new(|tx, r| r.pages.rotate_left(tx, 0).map(drop)),
        ),
        (
            "retain keeping all",
            0,
            Box::new(|tx, r| r.pages.retain(tx, |_| true)),
        ),
        (
            "retain",
            2,
            Box::new(|tx, r| r.pages.retain(tx, |x| x[0] % 2 == 0)),
        ),
        (
            "truncate past the end",
            0,
            Box::new(|tx, r| r.pages.truncate(tx, 1000)),
        ),
        ("truncate", 2, Box::new(|tx, r| r.pages.truncate(tx, 2))),
        (
            "range",
            0,
            Box::new(|tx, r| {
                assert_eq!(r.pages.range(tx, ..).rev().count() as u64, r.pages.len(tx));
                Ok(())
            }),
        ),
        ("reserve of a ring", 2, Box::new(|tx, r| r.small.reserve(tx, 100))),
        (
            "reserve within capacity",
            0,
            Box::new(|tx, r| r.small.reserve(tx, 10)),
        ),
        (
            "push_front_new",
            2,
            Box::new(|tx, r| r.named.push_front_new(tx).map(drop)),
        ),
        (
            "pop_back_free",
            2,
            Box::new(|tx, r| r.named.pop_back_free(tx).map(drop)),
        ),
    ];
    for (name, want, f) in cases {
        let ((), n) = drains(|| pool.transaction(|tx, r| f(tx, r)).unwrap());
        assert_eq!(n, want, "{name}");
    }
    // Full chunks: a new chunk before the front one with a directory that grows, then one
    // in a free directory slot; pop_back and truncate freeing chunks.
    pool.transaction(|tx, r| {
        r.pages.clear(tx)?;
        (0..16).try_for_each(|x| r.pages.push(tx, page(x)))
    })
    .unwrap();
    let chunks = |pool: &Pool<DRoot>| pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap().len() - 1;
    let ((), n) = drains(|| {
        pool.transaction(|tx, r| r.pages.push_front(tx, page(100)))
            .unwrap()
    });
    assert_eq!(
        (n, chunks(&pool)),
        (2, 2),
        "a chunk before the front, directory grown"
    );
    let ((), n) = drains(|| pool.transaction(|tx, r| r.pages.truncate(tx, 1)).unwrap());
    assert_eq!((n, chunks(&pool)), (2, 1), "truncate frees the back chunk");
    pool.transaction(|tx, r| (0..15).try_for_each(|x| r.pages.push_front(tx, page(x))))
        .unwrap();
    let ((), n) = drains(|| {
        pool.transaction(|tx, r| r.pages.push_front(tx, page(101)))
            .unwrap()
    });
    assert_eq!(
        (n, chunks(&pool)),
        (2, 2),
        "a chunk before the front, in a free slot"
    );
    let ((), n) = drains(|| pool.transaction(|tx, r| r.pages.pop_back(tx).map(drop)).unwrap());
    assert_eq!((n, chunks(&pool)), (2, 2), "pop_back");
    pool.transaction(|tx, r| (0..14).try_for_each(|_| r.pages.pop_back(tx).map(drop)))
        .unwrap();
    let ((), n) = drains(|| pool.transaction(|tx, r| r.pages.pop_back(tx).map(drop)).unwrap());
    assert_eq!(
        (n, chunks(&pool)),
        (2, 1),
        "pop_back emptying the back chunk frees it"
    );
    assert_eq!(pool.transaction(|tx, r| r.pages.to_vec(tx)).unwrap(), [page(101)]);
}

/// A deterministic walk through `insert_new`, `remove_free` and `retain_free` on the queue of
/// 4 KiB structs owning a string (chunks of 16) and on the ring of `PVec`s, each step
/// crash-imaged with exact leak checks: inserts and removals on either side crossing chunk
/// boundaries (a new chunk before the front or after the back, chunks freed), a retain that
/// frees chunks and the strings of the removed structs, and a ring of vectors doubling under an
/// insert.
#[test]
fn crash_images_of_handle_inserts_and_removals() {
    use DOp::*;
    let dir = shm_dir();
    let names =
        |from: u64, n: u64| -> Vec<DOp> { (from..from + n).map(|i| NPushBack(format!("n{i}"))).collect() };
    let steps = vec![
        names(0, 16),                          // one full chunk
        vec![NInsert(1, "front-side".into())], // a chunk before the front
        vec![NInsert(15, "back-side".into())], // shifts the back half, a chunk after
        vec![NRemoveFree(0), NRemoveFree(16)], // both sides, strings freed
        vec![NRetainFree(2)],                  // even-length names go, chunks freed
        vec![NInsert(3, "x".into()), NRemoveFree(1), NRetainFree(3)],
        vec![
            VPush(vec![1, 2]),
            VPush(vec![3]),
            VPush(vec![]),
            VPush(vec![4, 5, 6]),
        ],
        vec![VInsert(1, vec![9, 9])], // the ring of 4 doubles
        vec![VInsert(4, vec![8]), VRemoveFree(0), VRemoveFree(3)],
        vec![VRetainFree(2, true)],
        vec![NRetainFree(1), VRetainFree(1, false)], // remove everything
    ];
    let (mut pool, model) = check_crash_steps::<DRoot>(&dir.path().join("h.pool"), &steps);
    assert!(model.named.is_empty() && model.vecs.is_empty(), "{model:?}");
    common::assert_reachable_only(&mut pool, "end");
}

/// `retain_free` refuses to go on when its closure changes the queue (the positions it
/// computed are then not the queue's), and keeps what the closure wrote into kept elements.
#[test]
fn retain_free_closure_may_change_elements_not_the_queue() {
    let dir = shm_dir();
    let pool = Pool::<DRoot>::create(dir.path().join("r.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..5u64 {
            r.vecs.push_new(tx)?.extend(tx, 0..i)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let r = pool.transaction(|tx, r| {
        r.vecs.retain_free(tx, |v| {
            if v.len(tx) == 2 {
                r.vecs.push_new(tx).unwrap();
            }
            true
        })
    });
    assert!(matches!(r, Err(Error::StaleReference)), "{r:?}");
    let r = pool.transaction(|tx, r| {
        r.vecs.retain_free(tx, |v| {
            if v.len(tx) == 3 {
                r.vecs.remove_free(tx, 0).unwrap();
            }
            true
        })
    });
    assert!(matches!(r, Err(Error::StaleReference)), "{r:?}");
    // Writes into the elements themselves are kept, and moved with them.
    pool.transaction(|tx, r| {
        r.vecs.retain_free(tx, |v| {
            let keep = v.len(tx) % 2 == 1;
            v.push(tx, 100).unwrap();
            keep
        })
    })
    .unwrap();
    let got = pool
        .transaction(|tx, r| {
            (0..r.vecs.len(tx))
                .map(|i| r.vecs.get_ref(tx, i)?.expect("i < len").to_vec(tx))
                .collect::<Result<Vec<_>, Error>>()
        })
        .unwrap();
    assert_eq!(got, [vec![0, 100], vec![0, 1, 2, 100]]);
    let mut pool = pool;
    common::assert_reachable_only(&mut pool, "after retain_free");
}

/// A reference taken before `insert_new`, `remove_free` or `retain_free` is stale after it.
#[test]
fn handle_inserts_and_removals_make_references_stale() {
    let dir = shm_dir();
    let pool = Pool::<DRoot>::create(dir.path().join("s.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    type Change = fn(&Transaction<'_>, &DRoot) -> Result<(), Error>;
    let changes: [(&str, Change); 3] = [
        ("insert_new", |tx, r| r.vecs.insert_new(tx, 1).map(drop)),
        ("remove_free", |tx, r| r.vecs.remove_free(tx, 2).map(drop)),
        ("retain_free", |tx, r| r.vecs.retain_free(tx, |_| true)),
    ];
    for (name, change) in changes {
        pool.transaction(|tx, r| {
            r.vecs.clear(tx)?;
            for _ in 0..4 {
                r.vecs.push_new(tx)?;
            }
            let first = r.vecs.get_ref(tx, 0)?.expect("4 elements");
            first.push(tx, 1)?;
            change(tx, r)?;
            assert!(
                matches!(first.push(tx, 2), Err(Error::StaleReference)),
                "{name}: a reference from before the change still writes"
            );
            Ok::<_, Error>(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// `insert_new`, `remove_free` and `retain_free` cost 2 drains each (0 when they change
/// nothing), on either side of a queue of structs owning strings and across its chunks.
#[test]
fn two_drains_per_handle_insert_and_removal() {
    let dir = shm_dir();
    let pool = Pool::<DRoot>::create(dir.path().join("d.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..20 {
            r.named.push_new(tx)?.name.push_str(tx, &format!("name-{i}"))?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let cases: Vec<(&str, u64, Case)> = vec![
        (
            "insert_new near the front",
            2,
            Box::new(|tx, r| r.named.insert_new(tx, 2).map(drop)),
        ),
        (
            "insert_new near the back",
            2,
            Box::new(|tx, r| {
                let n = r.named.len(tx);
                r.named.insert_new(tx, n - 2).map(drop)
            }),
        ),
        (
            "insert_new past the end",
            0,
            Box::new(|tx, r| {
                let n = r.named.len(tx);
                r.named.insert_new(tx, n + 1).map(drop)
            }),
        ),
        (
            "remove_free near the front",
            2,
            Box::new(|tx, r| r.named.remove_free(tx, 1).map(drop)),
        ),
        (
            "remove_free near the back",
            2,
            Box::new(|tx, r| {
                let n = r.named.len(tx);
                r.named.remove_free(tx, n - 3).map(drop)
            }),
        ),
        (
            "remove_free past the end",
            0,
            Box::new(|tx, r| r.named.remove_free(tx, 1000).map(drop)),
        ),
        (
            "retain_free keeping all",
            0,
            Box::new(|tx, r| r.named.retain_free(tx, |_| true)),
        ),
        (
            "retain_free",
            2,
            Box::new(|tx, r| r.named.retain_free(tx, |n| n.name.len(tx) % 2 == 0)),
        ),
    ];
    for (name, want, f) in cases {
        let ((), n) = drains(|| pool.transaction(|tx, r| f(tx, r)).unwrap());
        assert_eq!(n, want, "{name}");
    }
}
