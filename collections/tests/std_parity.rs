//! `PVec` and `PString` against their std twins, for the std methods they gained (insert,
//! remove, swap_remove, swap, retain, drain, split_off, append, resize, contains, update, a
//! double-ended exact-size iterator; pop, truncate, insert/insert_str, remove, retain, reserve):
//! random transactions with reopens, aborts and crash images, and 2 drains per operation.

mod common;

use std::collections::BTreeSet;

use common::{add_block, check_abort, check_crash_steps, check_steps, drains, shm_dir, ModelRoot};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PString, PVec};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    v: PVec<u64>,
    w: PVec<u64>,
    s: PString,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    v: Vec<u64>,
    w: Vec<u64>,
    s: String,
}

#[derive(Clone, Debug)]
enum Op {
    Push(u64),
    Insert(u64, u64),
    Remove(u64),
    SwapRemove(u64),
    Swap(u64, u64),
    /// Keeps the elements not divisible by the argument (at least 2).
    Retain(u64),
    Drain(u64, u64),
    SplitOff(u64),
    /// Appends `w` to `v`, after pushing the listed values onto `w`.
    Append(Vec<u64>),
    Resize(u64, u64),
    Update(u64, u64),
    Contains(u64),
    Truncate(u64),
    IterBack,
    SPush(String),
    SPop,
    STruncate(u64),
    SInsert(u64, char),
    SInsertStr(u64, String),
    SRemove(u64),
    /// Drops every char whose code is divisible by the argument (at least 2).
    SRetain(u32),
    SReserve(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..12u64;
    prop_oneof![
        (0..100u64).prop_map(Op::Push),
        (i.clone(), 0..100u64).prop_map(|(i, v)| Op::Insert(i, v)),
        i.clone().prop_map(Op::Remove),
        i.clone().prop_map(Op::SwapRemove),
        (i.clone(), i.clone()).prop_map(|(a, b)| Op::Swap(a, b)),
        (2..5u64).prop_map(Op::Retain),
        (i.clone(), i.clone()).prop_map(|(a, b)| Op::Drain(a, b)),
        i.clone().prop_map(Op::SplitOff),
        prop::collection::vec(0..100u64, 0..4).prop_map(Op::Append),
        (i.clone(), 0..100u64).prop_map(|(n, v)| Op::Resize(n, v)),
        (i.clone(), 0..100u64).prop_map(|(i, d)| Op::Update(i, d)),
        (0..100u64).prop_map(Op::Contains),
        i.clone().prop_map(Op::Truncate),
        Just(Op::IterBack),
        "[a-zé€😀]{0,5}".prop_map(Op::SPush),
        Just(Op::SPop),
        (0..16u64).prop_map(Op::STruncate),
        (0..16u64, prop::char::range('a', 'é')).prop_map(|(i, c)| Op::SInsert(i, c)),
        (0..16u64, "[xy😀]{0,3}").prop_map(|(i, s)| Op::SInsertStr(i, s)),
        (0..16u64).prop_map(Op::SRemove),
        (2..4u32).prop_map(Op::SRetain),
        (0..40u64).prop_map(Op::SReserve),
    ]
}

fn clamp(a: u64, b: u64, len: usize) -> (usize, usize) {
    ((a as usize).min(len), (b as usize).min(len))
}

impl ModelRoot for Root {
    type Model = Model;
    type Op = Op;

    fn apply(tx: &Transaction<'_>, r: &Root, op: &Op, m: &Model) -> Result<(), Error> {
        let len = m.v.len() as u64;
        let s = &m.s;
        match op {
            Op::Push(x) => r.v.push(tx, *x)?,
            Op::Insert(i, x) => assert_eq!(r.v.insert(tx, *i, *x)?, *i <= len),
            Op::Remove(i) => assert_eq!(r.v.remove(tx, *i)?, m.v.get(*i as usize).copied()),
            Op::SwapRemove(i) => assert_eq!(r.v.swap_remove(tx, *i)?, m.v.get(*i as usize).copied()),
            Op::Swap(a, b) => assert_eq!(r.v.swap(tx, *a, *b)?, *a < len && *b < len),
            Op::Retain(k) => {
                let mut seen = Vec::new();
                r.v.retain(tx, |x| {
                    seen.push(*x);
                    x % k != 0
                })?;
                assert_eq!(seen, m.v, "called once per element, in order");
            }
            Op::Drain(a, b) => {
                let (a, b) = clamp(*a, *b, m.v.len());
                let want = if a < b { m.v[a..b].to_vec() } else { Vec::new() };
                assert_eq!(r.v.drain(tx, a as u64..b as u64)?, want);
            }
            Op::SplitOff(at) => {
                let want = m.v.get(*at as usize..).map(<[u64]>::to_vec);
                assert_eq!(r.v.split_off(tx, *at)?, want);
            }
            Op::Append(extra) => {
                r.w.extend(tx, extra.iter().copied())?;
                r.v.append(tx, &r.w)?;
                assert!(
                    r.w.is_empty(tx) && r.w.capacity(tx) == 0,
                    "append empties and frees"
                );
            }
            Op::Resize(n, x) => r.v.resize(tx, *n, *x)?,
            Op::Update(i, d) => {
                let want = m.v.get(*i as usize).map(|x| x + d);
                assert_eq!(r.v.update(tx, *i, |x| *x += d)?, want);
            }
            Op::Contains(x) => assert_eq!(r.v.contains(tx, x)?, m.v.contains(x)),
            Op::Truncate(n) => r.v.truncate(tx, *n)?,
            Op::IterBack => {
                let it = r.v.iter(tx);
                assert_eq!(it.len(), m.v.len());
                let back: Vec<u64> = it.rev().collect();
                assert!(back.iter().eq(m.v.iter().rev()));
                let mut it = r.v.iter(tx);
                let (front, last) = (it.next(), it.next_back());
                assert_eq!(front, m.v.first().copied());
                assert_eq!(last, if m.v.len() > 1 { m.v.last().copied() } else { None });
            }
            Op::SPush(t) => r.s.push_str(tx, t)?,
            Op::SPop => assert_eq!(r.s.pop(tx)?, s.chars().next_back()),
            Op::STruncate(n) => {
                let ok = *n as usize >= s.len() || s.is_char_boundary(*n as usize);
                assert_eq!(r.s.truncate(tx, *n)?, ok);
            }
            Op::SInsert(at, c) => {
                let ok = *at as usize <= s.len() && s.is_char_boundary(*at as usize);
                assert_eq!(r.s.insert(tx, *at, *c)?, ok);
            }
            Op::SInsertStr(at, t) => {
                let ok = *at as usize <= s.len() && s.is_char_boundary(*at as usize);
                assert_eq!(r.s.insert_str(tx, *at, t)?, ok);
            }
            Op::SRemove(at) => {
                let want = s.get(*at as usize..).and_then(|t| t.chars().next());
                assert_eq!(r.s.remove(tx, *at)?, want);
            }
            Op::SRetain(k) => {
                let mut seen = String::new();
                r.s.retain(tx, |c| {
                    seen.push(c);
                    u32::from(c) % k != 0
                })?;
                assert_eq!(&seen, s);
            }
            Op::SReserve(n) => {
                r.s.reserve(tx, *n)?;
                assert!(r.s.capacity(tx) >= s.len() as u64 + n);
            }
        }
        Ok(())
    }

    fn apply_model(m: &mut Model, op: &Op) {
        let len = m.v.len();
        let s = &mut m.s;
        match op {
            Op::Push(x) => m.v.push(*x),
            Op::Insert(i, x) if (*i as usize) <= len => m.v.insert(*i as usize, *x),
            Op::Remove(i) if (*i as usize) < len => drop(m.v.remove(*i as usize)),
            Op::SwapRemove(i) if (*i as usize) < len => drop(m.v.swap_remove(*i as usize)),
            Op::Swap(a, b) if (*a as usize) < len && (*b as usize) < len => {
                m.v.swap(*a as usize, *b as usize)
            }
            Op::Retain(k) => m.v.retain(|x| x % k != 0),
            Op::Drain(a, b) => {
                let (a, b) = clamp(*a, *b, len);
                if a < b {
                    m.v.drain(a..b);
                }
            }
            Op::SplitOff(at) if (*at as usize) <= len => drop(m.v.split_off(*at as usize)),
            Op::Append(extra) => {
                m.w.extend(extra);
                m.v.append(&mut m.w);
            }
            Op::Resize(n, x) => m.v.resize(*n as usize, *x),
            Op::Update(i, d) => {
                if let Some(x) = m.v.get_mut(*i as usize) {
                    *x += d;
                }
            }
            Op::Truncate(n) => m.v.truncate(*n as usize),
            Op::SPush(t) => s.push_str(t),
            Op::SPop => {
                s.pop();
            }
            Op::STruncate(n) if *n as usize >= s.len() || s.is_char_boundary(*n as usize) => {
                s.truncate(*n as usize)
            }
            Op::SInsert(at, c) if *at as usize <= s.len() && s.is_char_boundary(*at as usize) => {
                s.insert(*at as usize, *c)
            }
            Op::SInsertStr(at, t) if *at as usize <= s.len() && s.is_char_boundary(*at as usize) => {
                s.insert_str(*at as usize, t)
            }
            Op::SRemove(at) if s.get(*at as usize..).is_some_and(|t| !t.is_empty()) => {
                s.remove(*at as usize);
            }
            Op::SRetain(k) => s.retain(|c| u32::from(c) % k != 0),
            _ => {}
        }
    }

    fn read(pool: &Pool<Root>) -> Model {
        pool.transaction(|tx, r| {
            Ok::<_, Error>(Model {
                v: r.v.to_vec(tx)?,
                w: r.w.to_vec(tx)?,
                s: r.s.as_string(tx)?,
            })
        })
        .unwrap()
    }

    fn reachable(pool: &Pool<Root>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            add_block(&mut out, r.v.buffer_offset(tx));
            add_block(&mut out, r.w.buffer_offset(tx));
            add_block(&mut out, r.s.buffer_offset(tx));
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random transactions against the std twins, reopening the pool after some, with exact
    /// leak checks after each.
    #[test]
    fn matches_std_across_reopens(
        steps in prop::collection::vec((prop::collection::vec(op(), 1..6), any::<bool>()), 1..12),
    ) {
        let dir = shm_dir();
        check_steps::<Root>(&dir.path().join("p.pool"), &steps);
    }

    /// A failed transaction after any of the operations changes nothing.
    #[test]
    fn aborts_change_nothing(
        before in prop::collection::vec(op(), 0..10),
        ops in prop::collection::vec(op(), 1..6),
    ) {
        let dir = shm_dir();
        check_abort::<Root>(&dir.path().join("a.pool"), &before, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Crash images after every operation and after the commit recover to the model before or
    /// after the transaction, with exactly the reachable blocks allocated.
    #[test]
    fn crash_images_recover(steps in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..6)) {
        let dir = shm_dir();
        check_crash_steps::<Root>(&dir.path().join("c.pool"), &steps);
    }
}

type Case = Box<dyn Fn(&Transaction<'_>, &Root) -> Result<(), Error>>;

/// Each operation alone in a transaction costs 2 drains (the snapshot and the commit), growth
/// included, except `append` (two vectors: 3) and reads (0: a read-only transaction drains
/// nothing).
#[test]
fn two_drains_per_operation() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("d.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    pool.transaction(|tx, r| {
        r.v.extend(tx, 0..40)?;
        r.w.extend(tx, [1, 2])?;
        r.s.push_str(tx, "héllo wörld")
    })
    .unwrap();
    let cases: Vec<(&str, u64, Case)> = vec![
        ("insert", 2, Box::new(|tx, r| r.v.insert(tx, 3, 7).map(drop))),
        ("remove", 2, Box::new(|tx, r| r.v.remove(tx, 5).map(drop))),
        (
            "swap_remove",
            2,
            Box::new(|tx, r| r.v.swap_remove(tx, 1).map(drop)),
        ),
        ("swap", 2, Box::new(|tx, r| r.v.swap(tx, 1, 9).map(drop))),
        ("retain", 2, Box::new(|tx, r| r.v.retain(tx, |x| x % 3 != 0))),
        ("drain", 2, Box::new(|tx, r| r.v.drain(tx, 2..5).map(drop))),
        ("split_off", 2, Box::new(|tx, r| r.v.split_off(tx, 20).map(drop))),
        ("resize up", 2, Box::new(|tx, r| r.v.resize(tx, 30, 1))),
        ("resize down", 2, Box::new(|tx, r| r.v.resize(tx, 25, 1))),
        (
            "update",
            2,
            Box::new(|tx, r| r.v.update(tx, 4, |x| *x += 1).map(drop)),
        ),
        ("append", 3, Box::new(|tx, r| r.v.append(tx, &r.w))),
        ("contains", 0, Box::new(|tx, r| r.v.contains(tx, &4).map(drop))),
        ("pop", 2, Box::new(|tx, r| r.s.pop(tx).map(drop))),
        ("truncate", 2, Box::new(|tx, r| r.s.truncate(tx, 5).map(drop))),
        (
            "insert_str",
            2,
            Box::new(|tx, r| r.s.insert_str(tx, 1, "ab").map(drop)),
        ),
        ("remove char", 2, Box::new(|tx, r| r.s.remove(tx, 0).map(drop))),
        ("retain chars", 2, Box::new(|tx, r| r.s.retain(tx, |c| c != 'l'))),
    ];
    for (name, want, f) in cases {
        let ((), n) = drains(|| pool.transaction(|tx, r| f(tx, r)).unwrap());
        assert_eq!(n, want, "{name}");
    }
}
