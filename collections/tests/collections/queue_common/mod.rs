//! Shared fixtures of the `PQueue` tests: a root with a queue of `u64`s (full chunks of 8192
//! elements), a queue of 4 KiB pages and a queue of 4 KiB structs owning a string (full chunks
//! of 16 elements: a chunk boundary every 16 pushes), the std model, and random operations.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeSet, VecDeque};

use proptest::prelude::*;
use ptm::{Error, PCell, Persistent, Pool, Transaction};
use ptm_collections::{PHandle, PQueue, PString, PValue};

use crate::common::{add_block, ModelRoot};

/// A 4 KiB element: a full chunk holds 16.
pub type Page = [u64; 512];

/// The page of `seed`: the seed, then words derived from it (so a misplaced word is caught).
pub fn page(seed: u64) -> Page {
    let mut p = [0u64; 512];
    for (i, w) in (0u64..).zip(p.iter_mut()) {
        *w = if i == 0 {
            seed
        } else {
            seed.wrapping_mul(0x9e37_79b9).wrapping_add(i)
        };
    }
    p
}

/// The seed of a page written by [`page`], or `None` if any word is wrong.
pub fn seed_of(p: &Page) -> Option<u64> {
    Some(p[0]).filter(|&s| *p == page(s))
}

/// A 4 KiB struct of handles owning a string: a full chunk holds 16.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
pub struct Named {
    pub name: PString,
    pub pad: [PCell<u64>; 509],
}

const _: () = assert!(std::mem::size_of::<Named>() == 4096);

impl PValue for Named {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> ptm::Result<()> {
        // SAFETY: `self` is being discarded, so is its string.
        unsafe { self.name.free_owned(tx) }
    }
}

// SAFETY: a `PString` handle and cells: every byte in `PCell`s, all-zero is an empty string
// owning nothing, `!Sync`, and no block records where the handle is.
unsafe impl PHandle for Named {}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
pub struct QRoot {
    pub small: PQueue<u64>,
    pub pages: PQueue<Page>,
    pub named: PQueue<Named>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct QModel {
    pub small: VecDeque<u64>,
    /// Seeds of the pages.
    pub pages: VecDeque<u64>,
    pub named: VecDeque<String>,
}

#[derive(Clone, Debug)]
pub enum QOp {
    /// Pushes `start..start + n` on `small`.
    SPush(u64, u64),
    /// Pops `n` from `small`, checking each value.
    SPop(u64),
    /// Reads `small[i % len]`.
    SGet(u64),
    /// Pushes the pages of seeds `start..start + n`.
    PPush(u64, u64),
    PPop(u64),
    PGet(u64),
    /// `push_new` then `push_str`.
    NPush(String),
    /// Appends to `named[i % len]` through `get_ref`.
    NAppend(u64, String),
    NPopFree(u64),
    /// Clears `small`, `pages` or `named` (0, 1, 2).
    Clear(u8),
}

pub fn q_op() -> impl Strategy<Value = QOp> {
    prop_oneof![
        4 => (any::<u32>(), 0u64..3000).prop_map(|(s, n)| QOp::SPush(u64::from(s), n)),
        3 => (0u64..3000).prop_map(QOp::SPop),
        1 => any::<u64>().prop_map(QOp::SGet),
        4 => (0u64..1000, 0u64..40).prop_map(|(s, n)| QOp::PPush(s, n)),
        3 => (0u64..40).prop_map(QOp::PPop),
        1 => any::<u64>().prop_map(QOp::PGet),
        3 => "[a-z€]{0,5}".prop_map(QOp::NPush),
        1 => (any::<u64>(), "[a-z]{1,4}").prop_map(|(i, s)| QOp::NAppend(i, s)),
        2 => (0u64..20).prop_map(QOp::NPopFree),
        1 => (0u8..3).prop_map(QOp::Clear),
    ]
}

impl ModelRoot for QRoot {
    type Model = QModel;
    type Op = QOp;

    fn apply(tx: &Transaction<'_>, r: &Self, op: &QOp, m: &QModel) -> Result<(), Error> {
        match op {
            QOp::SPush(s, n) => (*s..s + n).try_for_each(|x| r.small.push(tx, x))?,
            QOp::SPop(n) => {
                for i in 0..*n as usize {
                    assert_eq!(r.small.pop(tx)?, m.small.get(i).copied(), "small pop {i}");
                }
            }
            QOp::SGet(i) => {
                let n = m.small.len() as u64;
                let at = if n == 0 { *i } else { i % n };
                assert_eq!(
                    r.small.get(tx, at)?,
                    m.small.get(at as usize).copied(),
                    "small[{at}]"
                );
            }
            QOp::PPush(s, n) => (*s..s + n).try_for_each(|x| r.pages.push(tx, page(x)))?,
            QOp::PPop(n) => {
                for i in 0..*n as usize {
                    let got = r.pages.pop(tx)?;
                    assert_eq!(got, m.pages.get(i).map(|&s| page(s)), "page pop {i}");
                }
            }
            QOp::PGet(i) => {
                let n = m.pages.len() as u64;
                let at = if n == 0 { *i } else { i % n };
                assert_eq!(r.pages.get(tx, at)?, m.pages.get(at as usize).map(|&s| page(s)));
            }
            QOp::NPush(s) => r.named.push_new(tx)?.name.push_str(tx, s)?,
            QOp::NAppend(i, s) => {
                let n = m.named.len() as u64;
                if n > 0 {
                    r.named
                        .get_ref(tx, i % n)?
                        .expect("i < len")
                        .name
                        .push_str(tx, s)?;
                }
            }
            QOp::NPopFree(n) => {
                for i in 0..*n as usize {
                    assert_eq!(r.named.pop_free(tx)?, i < m.named.len(), "pop_free {i}");
                }
            }
            QOp::Clear(0) => r.small.clear(tx)?,
            QOp::Clear(1) => r.pages.clear(tx)?,
            QOp::Clear(_) => r.named.free(tx)?,
        }
        Ok(())
    }

    fn apply_model(m: &mut QModel, op: &QOp) {
        let pop = |q: &mut VecDeque<_>, n: u64| q.drain(..(n as usize).min(q.len())).count();
        match op {
            QOp::SPush(s, n) => m.small.extend(*s..s + n),
            QOp::SPop(n) => {
                pop(&mut m.small, *n);
            }
            QOp::PPush(s, n) => m.pages.extend(*s..s + n),
            QOp::PPop(n) => {
                pop(&mut m.pages, *n);
            }
            QOp::NPush(s) => m.named.push_back(s.clone()),
            QOp::NAppend(i, s) => {
                let n = m.named.len();
                if n > 0 {
                    m.named[(*i % n as u64) as usize].push_str(s);
                }
            }
            QOp::NPopFree(n) => {
                let k = (*n as usize).min(m.named.len());
                m.named.drain(..k);
            }
            QOp::SGet(_) | QOp::PGet(_) => {}
            QOp::Clear(0) => m.small.clear(),
            QOp::Clear(1) => m.pages.clear(),
            QOp::Clear(_) => m.named.clear(),
        }
    }

    fn read(pool: &Pool<Self>) -> QModel {
        pool.transaction(|tx, r| {
            let small = r.small.to_vec(tx)?;
            assert_eq!(r.small.len(tx), small.len() as u64);
            assert_eq!(r.small.peek(tx)?, small.first().copied());
            for (i, x) in (0u64..).zip(&small).step_by(97) {
                assert_eq!(r.small.get(tx, i)?, Some(*x), "small.get({i})");
            }
            assert_eq!(r.small.get(tx, small.len() as u64)?, None);
            let pages = r.pages.to_vec(tx)?;
            let seeds = pages
                .iter()
                .map(|p| seed_of(p).expect("a page as written"))
                .collect::<VecDeque<_>>();
            assert_eq!(r.pages.peek(tx)?, pages.first().copied());
            let mut named = VecDeque::new();
            for i in 0..r.named.len(tx) {
                named.push_back(r.named.get_ref(tx, i)?.expect("i < len").name.as_string(tx)?);
            }
            assert_eq!(
                r.named
                    .front_ref(tx)?
                    .map(|n| n.name.as_string(tx))
                    .transpose()?
                    .as_ref(),
                named.front()
            );
            Ok::<_, Error>(QModel {
                small: small.into(),
                pages: seeds,
                named,
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
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}
