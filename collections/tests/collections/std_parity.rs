//! `PVec`, `PString` and `PBTreeMap` against their std twins, for the std methods they gained
//! (insert, remove, swap_remove, swap, retain, drain, split_off, append, resize, contains,
//! update, a double-ended exact-size iterator; pop, truncate, insert/insert_str, remove, retain,
//! reserve; first/last_key_value, pop_first/pop_last, keys, values, update, retain, extend):
//! random transactions with reopens, aborts and crash images, and 2 drains per operation.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use common::{add_block, check_abort, check_crash_steps, check_steps, drains, shm_dir, ModelRoot};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PBTreeMap, PHashMap, PQueue, PString, PVec};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    v: PVec<u64>,
    w: PVec<u64>,
    s: PString,
    t: PBTreeMap<u64, u64>,
    ts: PBTreeMap<PString, u64>,
    h: PHashMap<u64, u64>,
    q: PQueue<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    v: Vec<u64>,
    w: Vec<u64>,
    s: String,
    t: BTreeMap<u64, u64>,
    ts: BTreeMap<String, u64>,
    h: HashMap<u64, u64>,
    q: VecDeque<u64>,
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
    TInsert(u64, u64),
    TRemove(u64),
    /// Inserts into both trees (the string tree under the key's decimal digits).
    TExtend(Vec<(u64, u64)>),
    TEnds,
    TPopFirst,
    TPopLast,
    TUpdate(u64, u64),
    /// Keeps the entries whose value is not divisible by the argument (at least 2).
    TRetain(u64),
    HExtend(Vec<(u64, u64)>),
    HRemoveEntry(u64),
    HUpdate(u64, u64),
    HRetain(u64),
    HDrain,
    HReads(u64),
    QExtend(Vec<u64>),
    QPop,
    QUpdate(u64, u64),
    QReads,
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
        (0..64u64, 0..100u64).prop_map(|(k, v)| Op::TInsert(k, v)),
        (0..64u64).prop_map(Op::TRemove),
        prop::collection::vec((0..64u64, 0..100u64), 0..40).prop_map(Op::TExtend),
        Just(Op::TEnds),
        Just(Op::TPopFirst),
        Just(Op::TPopLast),
        (0..64u64, 0..100u64).prop_map(|(k, d)| Op::TUpdate(k, d)),
        (2..5u64).prop_map(Op::TRetain),
        prop::collection::vec((0..64u64, 0..100u64), 0..40).prop_map(Op::HExtend),
        (0..64u64).prop_map(Op::HRemoveEntry),
        (0..64u64, 0..100u64).prop_map(|(k, d)| Op::HUpdate(k, d)),
        (2..5u64).prop_map(Op::HRetain),
        Just(Op::HDrain),
        (0..64u64).prop_map(Op::HReads),
        prop::collection::vec(0..100u64, 0..20).prop_map(Op::QExtend),
        Just(Op::QPop),
        (0..24u64, 0..100u64).prop_map(|(i, d)| Op::QUpdate(i, d)),
        Just(Op::QReads),
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
            Op::TInsert(k, v) => assert_eq!(r.t.insert(tx, *k, *v)?, m.t.get(k).copied()),
            Op::TRemove(k) => assert_eq!(r.t.remove(tx, k)?, m.t.get(k).copied()),
            Op::TExtend(items) => {
                r.t.extend(tx, items.iter().copied())?;
                r.ts.extend(tx, items.iter().map(|&(k, v)| (k.to_string(), v)))?;
            }
            Op::TEnds => {
                assert_eq!(
                    r.t.first_key_value(tx)?,
                    m.t.first_key_value().map(|(k, v)| (*k, *v))
                );
                assert_eq!(
                    r.t.last_key_value(tx)?,
                    m.t.last_key_value().map(|(k, v)| (*k, *v))
                );
                let first =
                    r.ts.first_key_value(tx)?
                        .map(|(k, v)| (k.as_string(tx).unwrap(), v));
                assert_eq!(first, m.ts.first_key_value().map(|(k, v)| (k.clone(), *v)));
                let last =
                    r.ts.last_key_value(tx)?
                        .map(|(k, v)| (k.as_string(tx).unwrap(), v));
                assert_eq!(last, m.ts.last_key_value().map(|(k, v)| (k.clone(), *v)));
                assert!(r.t.keys(tx)?.into_iter().eq(m.t.keys().copied()));
                assert!(r.t.values(tx)?.into_iter().eq(m.t.values().copied()));
                let keys: Vec<String> = r.ts.keys(tx)?.iter().map(|k| k.as_string(tx).unwrap()).collect();
                assert!(keys.iter().eq(m.ts.keys()));
            }
            Op::TPopFirst => {
                assert_eq!(r.t.pop_first(tx)?, m.t.first_key_value().map(|(k, v)| (*k, *v)));
                assert_eq!(
                    r.ts.pop_first(tx)?,
                    m.ts.first_key_value().map(|(k, v)| (k.clone(), *v))
                );
            }
            Op::TPopLast => {
                assert_eq!(r.t.pop_last(tx)?, m.t.last_key_value().map(|(k, v)| (*k, *v)));
                assert_eq!(
                    r.ts.pop_last(tx)?,
                    m.ts.last_key_value().map(|(k, v)| (k.clone(), *v))
                );
            }
            Op::TUpdate(k, d) => assert_eq!(r.t.update(tx, k, |v| *v += d)?, m.t.get(k).map(|v| v + d)),
            Op::TRetain(d) => {
                let mut seen = Vec::new();
                r.t.retain(tx, |k, v| {
                    seen.push(*k);
                    v % d != 0
                })?;
                assert!(seen.iter().eq(m.t.keys()), "called once per entry, in key order");
                r.ts.retain(tx, |_, v| v % d != 0)?;
            }
            Op::HExtend(items) => r.h.extend(tx, items.iter().copied())?,
            Op::HRemoveEntry(k) => assert_eq!(r.h.remove_entry(tx, k)?, m.h.get(k).map(|v| (*k, *v))),
            Op::HUpdate(k, d) => assert_eq!(r.h.update(tx, k, |v| *v += d)?, m.h.get(k).map(|v| v + d)),
            Op::HRetain(d) => {
                let mut seen = BTreeSet::new();
                r.h.retain(tx, |k, v| {
                    assert!(seen.insert(*k), "once per entry");
                    v % d != 0
                })?;
                assert!(seen.iter().eq(m.h.keys().collect::<BTreeSet<_>>()));
            }
            Op::HDrain => {
                let mut got = r.h.drain(tx)?;
                got.sort_unstable();
                let mut want: Vec<(u64, u64)> = m.h.iter().map(|(k, v)| (*k, *v)).collect();
                want.sort_unstable();
                assert_eq!(got, want);
                assert_eq!(
                    r.h.block_offsets(tx)?,
                    Vec::<u64>::new(),
                    "drain frees the blocks"
                );
            }
            Op::HReads(k) => {
                assert_eq!(r.h.get_key_value(tx, k)?, m.h.get(k).map(|v| (*k, *v)));
                let mut vals = r.h.values(tx)?;
                vals.sort_unstable();
                let mut want: Vec<u64> = m.h.values().copied().collect();
                want.sort_unstable();
                assert_eq!(vals, want);
                let it = r.h.iter(tx);
                assert_eq!(it.size_hint(), (m.h.len(), Some(m.h.len())));
                assert_eq!(it.count(), m.h.len());
            }
            Op::QExtend(items) => r.q.extend(tx, items.iter().copied())?,
            Op::QPop => assert_eq!(r.q.pop(tx)?, m.q.front().copied()),
            Op::QUpdate(i, d) => {
                assert_eq!(
                    r.q.update(tx, *i, |v| *v += d)?,
                    m.q.get(*i as usize).map(|v| v + d)
                );
            }
            Op::QReads => {
                assert_eq!(r.q.back(tx)?, m.q.back().copied());
                let it = r.q.iter(tx);
                assert_eq!(it.size_hint(), (m.q.len(), Some(m.q.len())));
                assert!(it.eq(m.q.iter().copied()));
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
            Op::TInsert(k, v) => drop(m.t.insert(*k, *v)),
            Op::TRemove(k) => drop(m.t.remove(k)),
            Op::TExtend(items) => {
                m.t.extend(items.iter().copied());
                m.ts.extend(items.iter().map(|&(k, v)| (k.to_string(), v)));
            }
            Op::TPopFirst => {
                m.t.pop_first();
                m.ts.pop_first();
            }
            Op::TPopLast => {
                m.t.pop_last();
                m.ts.pop_last();
            }
            Op::TUpdate(k, d) => {
                if let Some(v) = m.t.get_mut(k) {
                    *v += d;
                }
            }
            Op::TRetain(d) => {
                m.t.retain(|_, v| *v % d != 0);
                m.ts.retain(|_, v| *v % d != 0);
            }
            Op::HExtend(items) => m.h.extend(items.iter().copied()),
            Op::HRemoveEntry(k) => drop(m.h.remove(k)),
            Op::HUpdate(k, d) => {
                if let Some(v) = m.h.get_mut(k) {
                    *v += d;
                }
            }
            Op::HRetain(d) => m.h.retain(|_, v| *v % d != 0),
            Op::HDrain => m.h.clear(),
            Op::QExtend(items) => m.q.extend(items),
            Op::QPop => drop(m.q.pop_front()),
            Op::QUpdate(i, d) => {
                if let Some(v) = m.q.get_mut(*i as usize) {
                    *v += d;
                }
            }
            _ => {}
        }
    }

    fn read(pool: &Pool<Root>) -> Model {
        pool.transaction(|tx, r| {
            r.t.check_invariants(tx).unwrap();
            r.ts.check_invariants(tx).unwrap();
            Ok::<_, Error>(Model {
                v: r.v.to_vec(tx)?,
                w: r.w.to_vec(tx)?,
                s: r.s.as_string(tx)?,
                t: r.t.to_vec(tx)?.into_iter().collect(),
                ts: r.ts.to_vec(tx)?.into_iter().collect(),
                h: r.h.iter(tx).collect(),
                q: r.q.to_vec(tx)?.into(),
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
            for b in r.h.block_offsets(tx)?.into_iter().chain(r.q.block_offsets(tx)?) {
                add_block(&mut out, Some(b));
            }
            for n in r.t.node_offsets(tx)?.into_iter().chain(r.ts.node_offsets(tx)?) {
                add_block(&mut out, Some(n));
            }
            for k in r.ts.separators(tx)?.into_iter().chain(r.ts.keys(tx)?) {
                add_block(&mut out, k.buffer_offset(tx));
            }
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
        r.t.extend(tx, (0..100).map(|k| (k, k)))?;
        r.ts.extend(tx, (0..100).map(|k| (format!("k{k}"), k)))?;
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
        ("pop_first", 2, Box::new(|tx, r| r.t.pop_first(tx).map(drop))),
        (
            "pop_last of a string key",
            2,
            Box::new(|tx, r| r.ts.pop_last(tx).map(drop)),
        ),
        (
            "update",
            2,
            Box::new(|tx, r| r.t.update(tx, &20, |v| *v += 1).map(drop)),
        ),
        (
            "first and last",
            0,
            Box::new(|tx, r| r.t.first_key_value(tx).and(r.t.last_key_value(tx)).map(drop)),
        ),
    ];
    for (name, want, f) in cases {
        let ((), n) = drains(|| pool.transaction(|tx, r| f(tx, r)).unwrap());
        assert_eq!(n, want, "{name}");
    }
}
