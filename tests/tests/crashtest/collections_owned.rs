//! Guards the ptm-collections not covered by `collections.rs` under the crash harness: a
//! `PQueue` wrapping around and growing, `PString`s growing, reassigned, moved and cleared,
//! `PBox`es allocated, replaced and freed, and nested collections (a `PVec` and a `PHashMap` of
//! pointers to heap `PString`s, in a heap block of their own) whose removals free what the
//! removed element owns and whose whole-collection drop frees everything; aborted transactions
//! in each. After every crash (double crash included) each structure equals its model before or
//! after the operation under way, every pointer it holds designates an allocated block that
//! nothing else reaches, and every allocated block is reached: no leak, no dangling pointer.
//! Nested removals split over two transactions (a user bug) are caught: the leak, or the
//! dangling pointer, in the crash window between them. A deque of nested vectors (a ring, and
//! 4 KiB structs owning one in chunks of 16) takes `insert_new`, `remove_free` and
//! `retain_free` on either side, across ring doublings and chunk boundaries, with the moved
//! handles' vectors intact and the removed ones' buffers freed.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;

use ptm::{PCell, PPtr, Persistent, Pool, Transaction};
use ptm_collections::{PBox, PHashMap, PQueue, PString, PValue, PVec};
use ptm_crashtest::{ensure, BoxError, CheckResult, Explorer, Failure, Report};

// ---------------------------------------------------------------------------------------------
// The driver: model states, the workload, and the check of every crash image.

/// The blocks a structure reaches, checked against the allocated ones while the check walks it.
struct Owned {
    /// Every allocated block: offset → size.
    allocated: BTreeMap<u64, u64>,
    reached: BTreeSet<u64>,
}

impl Owned {
    /// Records that the structure holds a pointer to `off` (nothing for `None`): it must be an
    /// allocated block of at least `min` bytes, reached by no other pointer.
    fn reach(&mut self, what: &str, off: Option<u64>, min: u64) -> Result<(), String> {
        let Some(off) = off else {
            return Ok(());
        };
        match self.allocated.get(&off) {
            None => return Err(format!("dangling: {what} at {off:#x} is not an allocated block")),
            Some(&size) if size < min => {
                return Err(format!(
                    "{what} at {off:#x} is a block of {size} bytes, not {min}"
                ));
            }
            Some(_) => {}
        }
        if !self.reached.insert(off) {
            return Err(format!("shared: {what} at {off:#x} is reached twice"));
        }
        Ok(())
    }

    /// Allocated blocks nothing reached, as "offset (size)".
    fn leaked(&self) -> Vec<String> {
        let unreached = |(off, _): &(&u64, &u64)| !self.reached.contains(off);
        let show = |(off, size): (&u64, &u64)| format!("{off:#x} ({size} bytes)");
        self.allocated.iter().filter(unreached).map(show).collect()
    }
}

/// Error message of the transactions aborted on purpose.
const ABORT: &str = "abort on purpose";

/// Runs `f` in a transaction that then aborts; fails unless it aborted with [`ABORT`].
fn aborted<R: Persistent>(
    pool: &Pool<R>,
    f: impl FnOnce(&Transaction<'_>, &R) -> ptm::Result<()>,
) -> CheckResult {
    let r: Result<(), BoxError> = pool.transaction(|tx, r| {
        f(tx, r)?;
        Err(ABORT.into())
    });
    match r {
        Err(e) if e.to_string() == ABORT => Ok(()),
        Err(e) => Err(e),
        Ok(()) => Err("the aborted transaction committed".into()),
    }
}

/// Explores `ops` applied in turn by `apply` (which gets the model state before the operation,
/// to check what the operation returns). At every crash image, `read` walks the structure,
/// reporting every pointer it follows to [`Owned`] before dereferencing it; the state read must
/// be the model's after the operations that returned or after one more, and every allocated
/// block must have been reached.
fn explore<R: Persistent, S: Clone + Debug + Default + PartialEq, O: Copy + Debug>(
    x: Explorer,
    ops: &[O],
    model: impl Fn(&mut S, O),
    apply: impl Fn(&Pool<R>, O, &S) -> CheckResult,
    read: impl Fn(&Transaction<'_>, &R, &mut Owned) -> Result<S, BoxError>,
) -> Report {
    let mut states = vec![S::default()];
    for &op in ops {
        let mut s = states[states.len() - 1].clone();
        model(&mut s, op);
        states.push(s);
    }
    let done = Cell::new(0usize);
    x.run::<R>(
        |_| Ok(()),
        |pool| {
            for (i, &op) in ops.iter().enumerate() {
                apply(pool, op, &states[i]).map_err(|e| format!("operation {i} ({op:?}): {e}"))?;
                done.set(i + 1);
            }
            Ok(())
        },
        |pool| {
            let done = done.get();
            let next = ops.get(done);
            pool.check_heap()?;
            let mut owned = Owned {
                allocated: pool.allocated_blocks()?.into_iter().collect(),
                reached: BTreeSet::new(),
            };
            let s = pool
                .transaction(|tx, r| read(tx, r, &mut owned))
                .map_err(|e| format!("after {done} operations (next {next:?}): {e}"))?;
            let after = states.get(done + 1);
            ensure!(
                s == states[done] || after == Some(&s),
                "after {done} operations (next {next:?}): {s:?}, expected {:?} or (after the next) {}",
                states[done],
                after.map_or("nothing".to_owned(), |a| format!("{a:?}"))
            );
            let leaked = owned.leaked();
            ensure!(
                leaked.is_empty(),
                "leaked after {done} operations (next {next:?}): blocks {leaked:?} are allocated but \
                 unreachable"
            );
            Ok(())
        },
    )
    .unwrap()
}

/// [`explore`] with double crash, seed `seed` and pools of `pool_size` bytes; asserts that every
/// crash point was explored and every image passed.
fn assert_passes<R: Persistent, S: Clone + Debug + Default + PartialEq, O: Copy + Debug>(
    seed: u64,
    pool_size: u64,
    ops: &[O],
    model: impl Fn(&mut S, O),
    apply: impl Fn(&Pool<R>, O, &S) -> CheckResult,
    read: impl Fn(&Transaction<'_>, &R, &mut Owned) -> Result<S, BoxError>,
) {
    let x = Explorer::new().seed(seed).double_crash(true).pool_size(pool_size);
    let report = explore(x, ops, model, apply, read);
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}

// ---------------------------------------------------------------------------------------------
// PQueue: a ring buffer that wraps around, grows with a wrapped ring, is cleared and regrows.

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct QRoot {
    q: PQueue<u64>,
}

#[derive(Debug, Clone, Copy)]
enum QOp {
    /// Push, and whether it must reallocate the buffer.
    Push(u64, bool),
    Pop,
    /// Push then pop in one transaction.
    PushPop(u64),
    /// Push this many values (from 100) in a transaction that aborts.
    AbortedPushes(u64),
    Clear,
}

fn q_model(s: &mut VecDeque<u64>, op: QOp) {
    match op {
        QOp::Push(v, _) => s.push_back(v),
        QOp::Pop => {
            s.pop_front();
        }
        QOp::PushPop(v) => {
            s.push_back(v);
            s.pop_front();
        }
        QOp::AbortedPushes(_) => {}
        QOp::Clear => s.clear(),
    }
}

fn q_apply(pool: &Pool<QRoot>, op: QOp, before: &VecDeque<u64>) -> CheckResult {
    match op {
        QOp::Push(v, grows) => {
            let (old, new) = pool.transaction(|tx, r| {
                let old = r.q.block_offsets(tx)?;
                r.q.push(tx, v)?;
                Ok::<_, ptm::Error>((old, r.q.block_offsets(tx)?))
            })?;
            ensure!(
                (old != new) == grows,
                "blocks {old:x?} -> {new:x?}, expected growth: {grows}"
            );
        }
        QOp::Pop => {
            let v = pool.transaction(|tx, r| r.q.pop(tx))?;
            ensure!(
                v == before.front().copied(),
                "popped {v:?}, not the front of {before:?}"
            );
        }
        QOp::PushPop(v) => {
            let front = pool.transaction(|tx, r| {
                r.q.push(tx, v)?;
                r.q.pop(tx)
            })?;
            ensure!(
                front == before.front().copied(),
                "popped {front:?} from {before:?}"
            );
        }
        QOp::AbortedPushes(n) => aborted(pool, |tx, r| (100..100 + n).try_for_each(|v| r.q.push(tx, v)))?,
        QOp::Clear => pool.transaction(|tx, r| r.q.clear(tx))?,
    }
    Ok(())
}

fn q_read(tx: &Transaction<'_>, r: &QRoot, owned: &mut Owned) -> Result<VecDeque<u64>, BoxError> {
    let len = r.q.len(tx);
    // The directory, then the chunks (one here: the ring of at most 8 elements).
    for (i, b) in r.q.block_offsets(tx)?.into_iter().enumerate() {
        let (what, min) = if i == 0 {
            ("queue directory", 8)
        } else {
            ("queue chunk", len * 8)
        };
        owned.reach(what, Some(b), min)?;
    }
    let v = r.q.to_vec(tx)?;
    ensure!(r.q.peek(tx)? == v.first().copied(), "peek disagrees with {v:?}");
    Ok(v.into())
}

#[test]
fn queue_wraps_grows_and_clears_through_every_crash() {
    use QOp::*;
    let ops = [
        // The first push allocates 4 slots; fill them.
        Push(1, true),
        Push(2, false),
        Push(3, false),
        Push(4, false),
        Pop,
        Pop,
        // The head is at slot 2: these fill slots 0 and 1 (wrap-around, no growth).
        Push(5, false),
        Push(6, false),
        // Full with a wrapped ring: grows to 8, copying in order.
        Push(7, true),
        Pop,
        Pop,
        Pop,
        // [6, 7] from slot 3: these wrap past slot 7.
        Push(8, false),
        Push(9, false),
        Push(10, false),
        Push(11, false),
        Push(12, false),
        PushPop(13),
        // Fills the ring and grows it, then aborts: the new buffer must not leak.
        AbortedPushes(2),
        Clear,
        Push(20, true),
        Pop,
        Clear,
    ];
    assert_passes(61, 1 << 20, &ops, q_model, q_apply, q_read);
}

// ---------------------------------------------------------------------------------------------
// PQueue of 4 KiB pages: full chunks of 16, so a few dozen pushes cross chunk boundaries. The
// ring doubles to a full chunk, chunks are added (the directory doubling from 1 slot to 8, once
// while wrapped around) and freed by pops, an aborted push adds a chunk that must not leak.

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct PagesRoot {
    q: PQueue<[u64; 512]>,
}

/// The page of `seed`.
fn page(seed: u64) -> [u64; 512] {
    let mut p = [seed; 512];
    p[511] = !seed;
    p
}

#[derive(Debug, Clone, Copy)]
enum PgOp {
    /// Push the pages `from..to`, one transaction.
    Push(u64, u64),
    /// Pop this many, one transaction.
    Pop(u64),
    /// Push this many pages in a transaction that aborts.
    AbortedPushes(u64),
    Clear,
}

fn pg_model(s: &mut VecDeque<u64>, op: PgOp) {
    match op {
        PgOp::Push(a, b) => s.extend(a..b),
        PgOp::Pop(n) => {
            s.drain(..(n as usize).min(s.len()));
        }
        PgOp::AbortedPushes(_) => {}
        PgOp::Clear => s.clear(),
    }
}

fn pg_apply(pool: &Pool<PagesRoot>, op: PgOp, before: &VecDeque<u64>) -> CheckResult {
    match op {
        PgOp::Push(a, b) => pool.transaction(|tx, r| (a..b).try_for_each(|i| r.q.push(tx, page(i))))?,
        PgOp::Pop(n) => {
            let got =
                pool.transaction(|tx, r| (0..n).map(|_| r.q.pop(tx)).collect::<ptm::Result<Vec<_>>>())?;
            for (i, g) in got.iter().enumerate() {
                let want = before.get(i).map(|&s| page(s));
                ensure!(*g == want, "pop {i} of {before:?}: {:?}", g.map(|p| p[0]));
            }
        }
        PgOp::AbortedPushes(n) => {
            aborted(pool, |tx, r| (0..n).try_for_each(|i| r.q.push(tx, page(900 + i))))?
        }
        PgOp::Clear => pool.transaction(|tx, r| r.q.clear(tx))?,
    }
    Ok(())
}

fn pg_read(tx: &Transaction<'_>, r: &PagesRoot, owned: &mut Owned) -> Result<VecDeque<u64>, BoxError> {
    for (i, b) in r.q.block_offsets(tx)?.into_iter().enumerate() {
        let (what, min) = if i == 0 {
            ("directory", 8)
        } else {
            ("chunk", 4 * 4096)
        };
        owned.reach(what, Some(b), min)?;
    }
    let mut out = VecDeque::new();
    for p in r.q.to_vec(tx)? {
        ensure!(p == page(p[0]), "a torn page {}", p[0]);
        out.push_back(p[0]);
    }
    ensure!(
        r.q.peek(tx)?.map(|p| p[0]) == out.front().copied(),
        "peek disagrees"
    );
    Ok(out)
}

#[test]
fn queue_chunks_through_every_crash() {
    use PgOp::*;
    let ops = [
        Push(0, 4), // the first chunk: a ring of 4
        Pop(2),
        Push(4, 7),   // wraps around, then doubles to 8 while wrapped
        Push(7, 17),  // doubles to 16 (a full chunk)
        Push(17, 20), // a second chunk: the directory doubles to 2
        Push(20, 34), // a third: 4 slots
        Pop(14),      // frees the front chunk
        Push(34, 66), // two more chunks: the directory wraps around
        AbortedPushes(20),
        Push(66, 67), // the directory doubles while wrapped
        Pop(100),     // empties it: the last chunk stays
        Push(67, 68),
        Clear,
    ];
    assert_passes(62, 2 << 20, &ops, pg_model, pg_apply, pg_read);
}

// ---------------------------------------------------------------------------------------------
// PString: growth through several size classes, multibyte chars, reassignment, a move between
// two strings in one transaction, clear and regrowth.

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct SRoot {
    s: PString,
    t: PString,
}

/// 60 bytes.
const L60: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX";
/// 150 bytes.
const L150: &str = concat!(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
    "zyxwvutsrqponmlkjihgfedcba",
    "--------"
);

#[derive(Debug, Clone, Copy)]
enum SOp {
    /// Appends to `s`, and whether its buffer must be reallocated.
    PushStr(&'static str, bool),
    Push(char, bool),
    Set(&'static str, bool),
    /// `push_str` in a transaction that aborts.
    AbortedPushStr(&'static str),
    /// `t = s; s.clear()` in one transaction.
    MoveToT,
    Clear,
    ClearT,
}

fn s_model(s: &mut (String, String), op: SOp) {
    match op {
        SOp::PushStr(x, _) => s.0.push_str(x),
        SOp::Push(c, _) => s.0.push(c),
        SOp::Set(x, _) => s.0 = x.to_owned(),
        SOp::AbortedPushStr(_) => {}
        SOp::MoveToT => s.1 = std::mem::take(&mut s.0),
        SOp::Clear => s.0.clear(),
        SOp::ClearT => s.1.clear(),
    }
}

/// Runs `f` on `s` in a transaction; fails unless it reallocated the buffer exactly if `grows`.
fn s_change(
    pool: &Pool<SRoot>,
    grows: bool,
    f: impl FnOnce(&Transaction<'_>, &PString) -> ptm::Result<()>,
) -> CheckResult {
    let (old, new) = pool.transaction(|tx, r| {
        let old = r.s.buffer_offset(tx);
        f(tx, &r.s)?;
        Ok::<_, ptm::Error>((old, r.s.buffer_offset(tx)))
    })?;
    ensure!(
        (old != new) == grows,
        "buffer {old:x?} -> {new:x?}, expected growth: {grows}"
    );
    Ok(())
}

fn s_apply(pool: &Pool<SRoot>, op: SOp, _: &(String, String)) -> CheckResult {
    match op {
        SOp::PushStr(x, grows) => s_change(pool, grows, |tx, s| s.push_str(tx, x))?,
        SOp::Push(c, grows) => s_change(pool, grows, |tx, s| s.push(tx, c))?,
        SOp::Set(x, grows) => s_change(pool, grows, |tx, s| s.set(tx, x))?,
        SOp::AbortedPushStr(x) => aborted(pool, |tx, r| r.s.push_str(tx, x))?,
        SOp::MoveToT => pool.transaction(|tx, r| {
            r.t.set(tx, &r.s.as_string(tx)?)?;
            r.s.clear(tx)
        })?,
        SOp::Clear => pool.transaction(|tx, r| r.s.clear(tx))?,
        SOp::ClearT => pool.transaction(|tx, r| r.t.free(tx))?,
    }
    Ok(())
}

fn s_read(tx: &Transaction<'_>, r: &SRoot, owned: &mut Owned) -> Result<(String, String), BoxError> {
    owned.reach("s's buffer", r.s.buffer_offset(tx), r.s.len(tx))?;
    owned.reach("t's buffer", r.t.buffer_offset(tx), r.t.len(tx))?;
    Ok((r.s.as_string(tx)?, r.t.as_string(tx)?))
}

#[test]
fn strings_grow_move_and_clear_through_every_crash() {
    use SOp::*;
    let ops = [
        PushStr("ab", true),
        // 5 bytes: grows from 4 to 8.
        PushStr("cde", true),
        Push('é', false),
        // 11 bytes: grows to 16.
        Push('𝄞', true),
        // 71 bytes: a 128-byte block.
        PushStr(L60, true),
        // Shorter: keeps the buffer.
        Set("short", false),
        // 150 bytes: a 192-byte block.
        Set(L150, true),
        // 300 bytes, then aborted: the 384-byte block must not leak.
        AbortedPushStr(L150),
        MoveToT,
        PushStr("again", true),
        Clear,
        ClearT,
    ];
    assert_passes(62, 1536 << 10, &ops, s_model, s_apply, s_read);
}

// ---------------------------------------------------------------------------------------------
// PBox: allocation, replacement in place, take, free, and both in one transaction.

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct BRoot {
    a: PBox<[u64; 4]>,
    b: PBox<u64>,
}

#[derive(Debug, Clone, Copy)]
enum BOp {
    SetA([u64; 4]),
    SetB(u64),
    TakeA,
    /// `a.set` in a transaction that aborts.
    AbortedSetA([u64; 4]),
    /// `a.set` and `b.free` in one transaction.
    SetAFreeB([u64; 4]),
    FreeBoth,
}

type BState = (Option<[u64; 4]>, Option<u64>);

fn b_model(s: &mut BState, op: BOp) {
    match op {
        BOp::SetA(v) => s.0 = Some(v),
        BOp::SetB(v) => s.1 = Some(v),
        BOp::TakeA => s.0 = None,
        BOp::AbortedSetA(_) => {}
        BOp::SetAFreeB(v) => *s = (Some(v), None),
        BOp::FreeBoth => *s = (None, None),
    }
}

fn b_apply(pool: &Pool<BRoot>, op: BOp, before: &BState) -> CheckResult {
    match op {
        BOp::SetA(v) => pool.transaction(|tx, r| r.a.set(tx, v))?,
        BOp::SetB(v) => pool.transaction(|tx, r| r.b.set(tx, v))?,
        BOp::TakeA => {
            let v = pool.transaction(|tx, r| r.a.take(tx))?;
            ensure!(v == before.0, "took {v:?} out of {:?}", before.0);
        }
        BOp::AbortedSetA(v) => aborted(pool, |tx, r| r.a.set(tx, v))?,
        BOp::SetAFreeB(v) => pool.transaction(|tx, r| {
            r.a.set(tx, v)?;
            r.b.free(tx)
        })?,
        BOp::FreeBoth => pool.transaction(|tx, r| {
            r.a.free(tx)?;
            r.b.free(tx)
        })?,
    }
    Ok(())
}

fn b_read(tx: &Transaction<'_>, r: &BRoot, owned: &mut Owned) -> Result<BState, BoxError> {
    owned.reach("a's block", r.a.offset(tx), 32)?;
    owned.reach("b's block", r.b.offset(tx), 8)?;
    ensure!(
        r.a.is_null(tx) == r.a.offset(tx).is_none(),
        "a: is_null disagrees with offset"
    );
    Ok((r.a.get(tx)?, r.b.get(tx)?))
}

#[test]
fn boxes_allocate_replace_and_free_through_every_crash() {
    use BOp::*;
    let ops = [
        SetA([1; 4]),
        // In place.
        SetA([2, 3, 4, 5]),
        SetB(7),
        TakeA,
        // Empty: nothing to free.
        TakeA,
        AbortedSetA([9; 4]),
        SetAFreeB([6; 4]),
        SetB(8),
        FreeBoth,
        FreeBoth,
    ];
    assert_passes(63, 1 << 20, &ops, b_model, b_apply, b_read);
}

// ---------------------------------------------------------------------------------------------
// Nested: the root points to a heap block holding a `PVec` and a `PHashMap` of pointers to heap
// `PString`s. Each element owns its string's handle block and buffer: replacing, removing or
// truncating frees them, clearing the map frees all of its strings, dropping the whole block
// frees everything.

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Inner {
    v: PVec<PPtr<PString>>,
    m: PHashMap<u64, PPtr<PString>>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct NRoot {
    inner: PCell<PPtr<Inner>>,
}

#[derive(Debug, Clone, Copy)]
enum NOp {
    /// Allocates the inner block (empty collections).
    Create,
    Push(&'static str),
    /// Pops the last string and frees it.
    Pop,
    /// Replaces element `i` by a new string, freeing the old one.
    SetElem(u64, &'static str),
    /// Appends to element `i`'s string in place.
    Append(u64, &'static str),
    /// Truncates the vector, freeing the strings cut off.
    Truncate(u64),
    /// Inserts a new string at `k`, freeing the one it replaces.
    Insert(u64, &'static str),
    /// Reassigns the string at `k` in place.
    Edit(u64, &'static str),
    /// Removes `k` and frees its string.
    Remove(u64),
    /// Frees every string of the map, then its table.
    ClearMap,
    /// Push, insert over `k` and remove `k + 1`, in a transaction that aborts.
    AbortedMix(u64, &'static str),
    /// Frees everything: every string, both collections and the inner block.
    Drop,
    /// No change: asserts the vector's and the map's capacities.
    Capacities(u64, u64),
    /// BUG: removes `k` in one transaction, frees its string in the next (a leak in between).
    RemoveThenFree(u64),
    /// BUG: frees `k`'s string in one transaction, removes `k` in the next (a dangling pointer
    /// in between).
    FreeThenRemove(u64),
}

type NState = Option<(Vec<String>, BTreeMap<u64, String>)>;

fn n_model(s: &mut NState, op: NOp) {
    if let NOp::Create = op {
        *s = Some(Default::default());
        return;
    }
    let (v, m) = s.as_mut().expect("the workload creates the collections first");
    match op {
        NOp::Create => unreachable!(),
        NOp::Push(x) => v.push(x.to_owned()),
        NOp::Pop => {
            v.pop();
        }
        NOp::SetElem(i, x) => v[i as usize] = x.to_owned(),
        NOp::Append(i, x) => v[i as usize].push_str(x),
        NOp::Truncate(n) => v.truncate(n as usize),
        NOp::Insert(k, x) | NOp::Edit(k, x) => {
            m.insert(k, x.to_owned());
        }
        NOp::Remove(k) | NOp::RemoveThenFree(k) | NOp::FreeThenRemove(k) => {
            m.remove(&k);
        }
        NOp::ClearMap => m.clear(),
        NOp::AbortedMix(..) | NOp::Capacities(..) => {}
        NOp::Drop => *s = None,
    }
}

/// The inner block, if any.
fn inner<'t>(tx: &'t Transaction<'_>, r: &'t NRoot) -> ptm::Result<Option<&'t Inner>> {
    let p = r.inner.get(tx);
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the root owns the inner block: it is allocated with the pointer's store and freed
    // with its reset, in one transaction; the pool is used by this thread alone, and the block
    // is accessed only through the collections' cells.
    unsafe { tx.deref(p) }.map(Some)
}

/// The inner block, which the operation needs.
fn live<'t>(tx: &'t Transaction<'_>, r: &'t NRoot) -> ptm::Result<&'t Inner> {
    inner(tx, r)?.ok_or(ptm::Error::InvalidOptions("the collections were not created"))
}

/// The string `p` points to.
fn string<'t>(tx: &'t Transaction<'_>, p: PPtr<PString>) -> ptm::Result<&'t PString> {
    // SAFETY: `p` was read from an element of the inner collections (or just allocated), which
    // own their string: the block is freed only in a transaction that also unlinks it (except in
    // the deliberately buggy operations, which touch it in no later transaction); the pool is
    // used by this thread alone, and the handle is accessed only through its cells.
    unsafe { tx.deref(p) }
}

/// A new heap `PString` holding `s`.
fn new_string(tx: &Transaction<'_>, s: &str) -> ptm::Result<PPtr<PString>> {
    let p = tx.alloc_zeroed::<PString>()?;
    string(tx, p)?.push_str(tx, s)?;
    Ok(p)
}

/// Frees the string `p` points to: its buffer, then its handle block.
fn free_string(tx: &Transaction<'_>, p: PPtr<PString>) -> ptm::Result<()> {
    string(tx, p)?.free(tx)?;
    tx.free(p)
}

fn n_apply(pool: &Pool<NRoot>, op: NOp, _: &NState) -> CheckResult {
    match op {
        NOp::Create => pool.transaction(|tx, r| {
            let p = tx.alloc_zeroed::<Inner>()?;
            r.inner.set(tx, p)
        })?,
        NOp::Push(x) => pool.transaction(|tx, r| live(tx, r)?.v.push(tx, new_string(tx, x)?))?,
        NOp::Pop => pool.transaction(|tx, r| match live(tx, r)?.v.pop(tx)? {
            Some(p) => free_string(tx, p),
            None => Ok(()),
        })?,
        NOp::SetElem(i, x) => pool.transaction(|tx, r| {
            let new = new_string(tx, x)?;
            let old = live(tx, r)?.v.set(tx, i, new)?;
            free_string(tx, old.ok_or(ptm::Error::InvalidOptions("no such element"))?)
        })?,
        NOp::Append(i, x) => pool.transaction(|tx, r| {
            let p = live(tx, r)?.v.get(tx, i)?;
            string(tx, p.ok_or(ptm::Error::InvalidOptions("no such element"))?)?.push_str(tx, x)
        })?,
        NOp::Truncate(n) => pool.transaction(|tx, r| {
            let v = &live(tx, r)?.v;
            for i in n..v.len(tx) {
                free_string(tx, v.get(tx, i)?.expect("i < len"))?;
            }
            v.truncate(tx, n)
        })?,
        NOp::Insert(k, x) => pool.transaction(|tx, r| {
            let new = new_string(tx, x)?;
            match live(tx, r)?.m.insert(tx, k, new)? {
                Some(old) => free_string(tx, old),
                None => Ok(()),
            }
        })?,
        NOp::Edit(k, x) => pool.transaction(|tx, r| {
            let p = live(tx, r)?.m.get(tx, &k)?;
            string(tx, p.ok_or(ptm::Error::InvalidOptions("no such key"))?)?.set(tx, x)
        })?,
        NOp::Remove(k) => pool.transaction(|tx, r| match live(tx, r)?.m.remove(tx, &k)? {
            Some(p) => free_string(tx, p),
            None => Ok(()),
        })?,
        NOp::ClearMap => pool.transaction(|tx, r| {
            let m = &live(tx, r)?.m;
            let strings: Vec<_> = m.iter(tx).map(|(_, p)| p).collect();
            strings.into_iter().try_for_each(|p| free_string(tx, p))?;
            m.clear(tx)
        })?,
        NOp::AbortedMix(k, x) => aborted(pool, |tx, r| {
            let inner = live(tx, r)?;
            inner.v.push(tx, new_string(tx, x)?)?;
            if let Some(old) = inner.m.insert(tx, k, new_string(tx, x)?)? {
                free_string(tx, old)?;
            }
            if let Some(old) = inner.m.remove(tx, &(k + 1))? {
                free_string(tx, old)?;
            }
            Ok(())
        })?,
        NOp::Drop => pool.transaction(|tx, r| {
            let inner = live(tx, r)?;
            let strings: Vec<_> = inner.v.iter(tx).chain(inner.m.iter(tx).map(|(_, p)| p)).collect();
            strings.into_iter().try_for_each(|p| free_string(tx, p))?;
            inner.v.free(tx)?;
            inner.m.free(tx)?;
            tx.free(r.inner.get(tx))?;
            r.inner.set(tx, PPtr::null())
        })?,
        NOp::Capacities(v, m) => {
            let caps = pool.transaction(|tx, r| {
                let inner = live(tx, r)?;
                Ok::<_, ptm::Error>((inner.v.capacity(tx), inner.m.capacity(tx)))
            })?;
            ensure!(
                caps == (v, m),
                "capacities (vector, map) are {caps:?}, not {:?}",
                (v, m)
            );
        }
        NOp::RemoveThenFree(k) => {
            let p = pool.transaction(|tx, r| live(tx, r)?.m.remove(tx, &k))?;
            pool.transaction(|tx, _| free_string(tx, p.expect("present")))?;
        }
        NOp::FreeThenRemove(k) => {
            pool.transaction(|tx, r| free_string(tx, live(tx, r)?.m.get(tx, &k)?.expect("present")))?;
            pool.transaction(|tx, r| live(tx, r)?.m.remove(tx, &k))?;
        }
    }
    Ok(())
}

/// Reads the string `p` points to, after checking it owns its blocks.
fn read_string(tx: &Transaction<'_>, p: PPtr<PString>, owned: &mut Owned) -> Result<String, BoxError> {
    owned.reach(
        "string handle",
        (!p.is_null()).then(|| p.offset()),
        size_of::<PString>() as u64,
    )?;
    // SAFETY: `reach` checked that `p` is an allocated block large enough for a `PString` that
    // no other pointer of the structure reaches; this check is the pool's only user.
    let s = unsafe { tx.deref(p) }?;
    owned.reach("string buffer", s.buffer_offset(tx), s.len(tx))?;
    Ok(s.as_string(tx)?)
}

fn n_read(tx: &Transaction<'_>, r: &NRoot, owned: &mut Owned) -> Result<NState, BoxError> {
    let p = r.inner.get(tx);
    owned.reach(
        "inner block",
        (!p.is_null()).then(|| p.offset()),
        size_of::<Inner>() as u64,
    )?;
    // `reach` checked the inner block (the pointer's target) is allocated and large enough.
    let Some(inner) = inner(tx, r)? else {
        return Ok(None);
    };
    owned.reach("vector buffer", inner.v.buffer_offset(tx), inner.v.len(tx) * 8)?;
    for b in inner.m.block_offsets(tx)? {
        owned.reach("map directory or segment", Some(b), 8)?;
    }
    let v = inner.v.iter(tx).collect::<Vec<_>>();
    ensure!(
        v.len() as u64 == inner.v.len(tx),
        "the vector's iteration stopped early"
    );
    let v = v
        .into_iter()
        .map(|p| read_string(tx, p, owned))
        .collect::<Result<_, _>>()?;
    let entries: Vec<_> = inner.m.iter(tx).collect();
    ensure!(
        entries.len() as u64 == inner.m.len(tx),
        "the map has {} entries, not its length",
        entries.len()
    );
    let mut m = BTreeMap::new();
    for (k, p) in entries {
        ensure!(
            m.insert(k, read_string(tx, p, owned)?).is_none(),
            "key {k} twice in the map"
        );
    }
    Ok(Some((v, m)))
}

fn nested_ops() -> Vec<NOp> {
    use NOp::*;
    vec![
        Create,
        Push("a0"),
        Push("a1"),
        Push(L60),
        Insert(1, "one"),
        Insert(2, "two"),
        Insert(3, "three"),
        Capacities(4, 8),
        // 120 bytes: the string grows into a 128-byte block.
        Append(2, L60),
        SetElem(1, "replaced"),
        // Over an existing key: the old string is freed.
        Insert(2, "deux"),
        Edit(3, L150),
        Insert(4, "four"),
        Insert(5, "five"),
        Insert(6, "six"),
        // The seventh key grows the table.
        Insert(7, "seven"),
        Capacities(4, 16),
        Remove(2),
        Remove(5),
        // Into the slot `5` left.
        Insert(5, "cinq"),
        Pop,
        Push("a3"),
        // The fifth element grows the vector.
        Push("a4"),
        Push("a5"),
        Capacities(8, 16),
        Truncate(2),
        AbortedMix(3, "aborted"),
        ClearMap,
        Insert(9, "nine"),
        Drop,
        Create,
        Push("again"),
        Insert(1, "again"),
        Drop,
    ]
}

fn n_explore(x: Explorer, ops: &[NOp]) -> Report {
    explore(x, ops, n_model, n_apply, n_read)
}

/// Room for the slabs of 64-, 128-, 192- and 384-byte blocks.
const NESTED_POOL: u64 = 1536 << 10;

fn n_explorer() -> Explorer {
    Explorer::new().seed(64).pool_size(NESTED_POOL)
}

#[test]
fn nested_collections_free_what_they_own_through_every_crash() {
    assert_passes(64, NESTED_POOL, &nested_ops(), n_model, n_apply, n_read);
}

/// Runs a short nested workload ending with `bug`, expects failures whose messages start with
/// `expected`, and checks the first one reproduces from its line.
fn assert_caught(bug: NOp, expected: &str) {
    let ops = [NOp::Create, NOp::Insert(1, "one"), NOp::Insert(2, "two"), bug];
    let report = n_explore(n_explorer(), &ops);
    println!("{bug:?}: {} failures", report.failures_total);
    assert!(!report.failures.is_empty(), "{bug:?} was not caught: {report}");
    assert!(
        report.failures.iter().all(|f| f.message.starts_with(expected)),
        "{report}"
    );
    let f: &Failure = &report.failures[0];
    let again = n_explore(n_explorer().only_point(f.id.point).only_image(f.id.image), &ops);
    assert_eq!(again.failures_total, 1, "{again}");
    assert_eq!(again.failures[0].message, f.message);
}

#[test]
fn a_removal_split_so_the_free_comes_later_is_caught_as_a_leak() {
    assert_caught(
        NOp::RemoveThenFree(1),
        "leaked after 3 operations (next Some(RemoveThenFree(1)))",
    );
}

#[test]
fn a_removal_split_so_the_free_comes_first_is_caught_as_a_dangling_pointer() {
    assert_caught(
        NOp::FreeThenRemove(1),
        "after 3 operations (next Some(FreeThenRemove(1))): dangling: string handle",
    );
}

// ---------------------------------------------------------------------------------------------
// PQueue of nested vectors: `insert_new`, `remove_free` and `retain_free` move handles by their
// bytes on the shorter side and free what the removed ones own. A ring of `PVec<u64>` handles
// (24 bytes: a ring of 4 doubling to 8 and 16) and a queue of 4 KiB structs owning a vector
// (full chunks of 16: inserts and removals that add a chunk before the front or after the back,
// and free emptied ones).

/// A 4 KiB element owning a vector: a full chunk holds 16.
#[derive(Persistent, PValue)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Big {
    v: PVec<u64>,
    pad: PCell<[u64; 509]>,
}

const _: () = assert!(size_of::<Big>() == 4096);

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct HRoot {
    ring: PQueue<PVec<u64>>,
    big: PQueue<Big>,
}

/// Which queue an operation works on.
#[derive(Debug, Clone, Copy)]
enum W {
    Ring,
    Big,
}

#[derive(Debug, Clone, Copy)]
enum HOp {
    /// Pushes vectors `[x]` for `x` in `from..to` at the back (one transaction).
    Push(W, u64, u64),
    /// `insert_new` at a position, then `[x, x + 1]` pushed into it.
    Insert(W, u64, u64),
    RemoveFree(W, u64),
    /// Keeps the vectors whose first value is not divisible by the argument.
    RetainFree(W, u64),
    /// An insert and a removal in a transaction that aborts.
    AbortedInsertRemove(W, u64),
    Clear(W),
}

type HState = (VecDeque<Vec<u64>>, VecDeque<Vec<u64>>);

fn h_side(s: &mut HState, w: W) -> &mut VecDeque<Vec<u64>> {
    match w {
        W::Ring => &mut s.0,
        W::Big => &mut s.1,
    }
}

fn h_model(s: &mut HState, op: HOp) {
    match op {
        HOp::Push(w, a, b) => h_side(s, w).extend((a..b).map(|x| vec![x])),
        HOp::Insert(w, i, x) => {
            let q = h_side(s, w);
            if i as usize <= q.len() {
                q.insert(i as usize, vec![x, x + 1]);
            }
        }
        HOp::RemoveFree(w, i) => drop(h_side(s, w).remove(i as usize)),
        HOp::RetainFree(w, k) => h_side(s, w).retain(|v| v.first().is_none_or(|x| x % k != 0)),
        HOp::AbortedInsertRemove(..) => {}
        HOp::Clear(w) => h_side(s, w).clear(),
    }
}

fn h_insert(tx: &Transaction<'_>, r: &HRoot, w: W, i: u64, x: u64) -> ptm::Result<bool> {
    match w {
        W::Ring => match r.ring.insert_new(tx, i)? {
            Some(v) => v.extend(tx, [x, x + 1]).map(|()| true),
            None => Ok(false),
        },
        W::Big => match r.big.insert_new(tx, i)? {
            Some(b) => b.v.extend(tx, [x, x + 1]).map(|()| true),
            None => Ok(false),
        },
    }
}

fn h_remove(tx: &Transaction<'_>, r: &HRoot, w: W, i: u64) -> ptm::Result<bool> {
    match w {
        W::Ring => r.ring.remove_free(tx, i),
        W::Big => r.big.remove_free(tx, i),
    }
}

fn h_apply(pool: &Pool<HRoot>, op: HOp, before: &HState) -> CheckResult {
    let len = |w| match w {
        W::Ring => before.0.len() as u64,
        W::Big => before.1.len() as u64,
    };
    match op {
        HOp::Push(w, a, b) => pool.transaction(|tx, r| {
            for x in a..b {
                match w {
                    W::Ring => r.ring.push_new(tx)?.push(tx, x)?,
                    W::Big => r.big.push_new(tx)?.v.push(tx, x)?,
                }
            }
            Ok::<_, ptm::Error>(())
        })?,
        HOp::Insert(w, i, x) => {
            let done = pool.transaction(|tx, r| h_insert(tx, r, w, i, x))?;
            ensure!(done == (i <= len(w)), "insert_new at {i} of {}: {done}", len(w));
        }
        HOp::RemoveFree(w, i) => {
            let done = pool.transaction(|tx, r| h_remove(tx, r, w, i))?;
            ensure!(done == (i < len(w)), "remove_free at {i} of {}: {done}", len(w));
        }
        HOp::RetainFree(w, k) => pool.transaction(|tx, r| {
            let keep = |v: &PVec<u64>| v.get(tx, 0).ok().flatten().is_none_or(|x| x % k != 0);
            match w {
                W::Ring => r.ring.retain_free(tx, keep),
                W::Big => r.big.retain_free(tx, |b| keep(&b.v)),
            }
        })?,
        HOp::AbortedInsertRemove(w, i) => aborted(pool, |tx, r| {
            h_insert(tx, r, w, i, 500)?;
            h_remove(tx, r, w, 0).map(drop)
        })?,
        HOp::Clear(w) => pool.transaction(|tx, r| match w {
            W::Ring => r.ring.clear(tx),
            W::Big => r.big.clear(tx),
        })?,
    }
    Ok(())
}

fn h_read(tx: &Transaction<'_>, r: &HRoot, owned: &mut Owned) -> Result<HState, BoxError> {
    let mut state = HState::default();
    for w in [W::Ring, W::Big] {
        let (blocks, len, elem) = match w {
            W::Ring => (r.ring.block_offsets(tx)?, r.ring.len(tx), 24),
            W::Big => (r.big.block_offsets(tx)?, r.big.len(tx), 4096),
        };
        match w {
            W::Ring => r.ring.check(tx)?,
            W::Big => r.big.check(tx)?,
        }
        for (i, b) in blocks.into_iter().enumerate() {
            let (what, min) = if i == 0 { ("directory", 8) } else { ("chunk", elem) };
            owned.reach(what, Some(b), min)?;
        }
        let out = h_side(&mut state, w);
        for i in 0..len {
            let missing = || format!("element {i} of {len} is missing");
            let (ring, big) = match w {
                W::Ring => (Some(r.ring.get_ref(tx, i)?.ok_or_else(missing)?), None),
                W::Big => (None, Some(r.big.get_ref(tx, i)?.ok_or_else(missing)?)),
            };
            let v: &PVec<u64> = match (&ring, &big) {
                (Some(v), _) => v,
                (_, Some(b)) => &b.v,
                _ => unreachable!(),
            };
            owned.reach("element buffer", v.buffer_offset(tx), v.len(tx) * 8)?;
            out.push_back(v.to_vec(tx)?);
        }
    }
    Ok(state)
}

#[test]
fn deque_handle_inserts_and_removals_through_every_crash() {
    use HOp::*;
    use W::{Big as B, Ring as R};
    let ops = [
        Push(R, 0, 4),    // the ring of 4, full
        Insert(R, 1, 10), // front side: the ring doubles to 8
        Insert(R, 4, 20), // back side
        RemoveFree(R, 0), // front side
        RemoveFree(R, 4), // back side
        RemoveFree(R, 9), // past the end: nothing
        RetainFree(R, 2), // even first values go
        AbortedInsertRemove(R, 1),
        Push(R, 30, 36), // doubles to 16 with holes moved
        Insert(R, 9, 40),
        RetainFree(R, 1),  // everything goes
        Push(B, 0, 16),    // one full chunk
        Insert(B, 1, 50),  // a chunk before the front
        Insert(B, 15, 60), // the back half shifts: a chunk after the back
        RemoveFree(B, 0),  // the front chunk's last element
        RemoveFree(B, 16), // the back chunk empties: freed
        RetainFree(B, 3),  // removals across the chunk boundary
        AbortedInsertRemove(B, 2),
        Clear(B),
        Clear(R),
    ];
    assert_passes(65, 2 << 20, &ops, h_model, h_apply, h_read);
}
