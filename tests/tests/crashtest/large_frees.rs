//! Guards large frees and aborts under two threads (issue 19, class "large frees and aborts"):
//! random small and large (multi-chunk run) allocations and frees, committed or aborted, by two
//! threads against a model allocator, with reopens. The interleaving is fixed by barriers, not
//! by timing: in every step one thread (the *freer*) frees and allocates inside a transaction
//! and stops before its end; the other thread (the *taker*) then runs a whole transaction that
//! allocates (often until the heap is full) and frees its own runs; then the freer commits or
//! aborts. So a chunk run the freer freed is on offer to the taker exactly while its freeing
//! transaction is still open, and a run whose free was aborted is on offer right after.
//!
//! Checked: each thread finds its own blocks' first and last words intact at the start of every
//! transaction (a block handed to the other thread gets overwritten); after each segment of
//! steps (between reopens, and at the end) the heap metadata checks, no two allocated blocks
//! overlap, and the allocated blocks are exactly the ones the root links (no leak, nothing
//! linked that is free).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Barrier;
use std::time::Duration;

use proptest::prelude::*;
use ptm::internals::heap::{CHUNK, CLASSES};
use ptm::{Error, PCell, PMutex, PPtr, Persistent, Pool, PoolOptions, Transaction};

/// The largest slab class: a block above it is a run of whole chunks.
const SLAB_MAX: u64 = CLASSES[CLASSES.len() - 1];
/// The smallest run (one byte over the largest slab class: two chunks).
const RUN: u64 = SLAB_MAX + 1;

/// Slots per thread.
const SLOTS: usize = 10;
/// A small heap, so the taker's fills reach every free chunk.
const POOL: u64 = 6 << 20;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Slots {
    blocks: [PCell<PPtr<u64>>; SLOTS],
    sizes: [PCell<u64>; SLOTS],
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Thread t's blocks, under its own lock (the other thread never takes it).
    threads: [PMutex<Slots>; 2],
}

/// Slot -> size of the block it links.
type State = BTreeMap<usize, u64>;

#[derive(Debug, Clone)]
enum Op {
    /// Allocate `size` bytes into the slot (if empty).
    Alloc(usize, u64),
    /// Free the slot's block (if any). The taker frees only runs (a slab chunk's metadata
    /// lock may be held by the parked freer, and waiting for it would only time out).
    Free(usize),
    /// Allocate the smallest runs ([`RUN`] bytes) into every empty slot until the heap is full.
    Fill,
}

#[derive(Debug, Clone)]
struct Turn {
    ops: Vec<Op>,
    commit: bool,
}

#[derive(Debug, Clone)]
enum Step {
    /// Thread `freer` runs `first` up to its end, the other thread runs `second` whole, then
    /// `first` ends.
    Pair {
        freer: usize,
        first: Turn,
        second: Turn,
    },
    Reopen,
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 1u64..=4096,
        1 => 4097u64..=65536,
        4 => RUN..=(3 * CHUNK).max(3 * RUN),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SLOTS, size()).prop_map(|(s, n)| Op::Alloc(s, n)),
        3 => (0..SLOTS).prop_map(Op::Free),
        1 => Just(Op::Fill),
    ]
}

fn turn() -> impl Strategy<Value = Turn> {
    (prop::collection::vec(op(), 1..6), prop::bool::weighted(0.7))
        .prop_map(|(ops, commit)| Turn { ops, commit })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..2usize, turn(), turn()).prop_map(|(freer, first, second)| Step::Pair { freer, first, second }),
        1 => Just(Step::Reopen),
    ]
}

fn opts() -> PoolOptions {
    PoolOptions::new()
        .layout("large-frees")
        .lanes(4)
        .lane_size(16 << 10)
        .force_pmem(true)
        // Only a broken build waits for a lock here (the taker never needs one the parked
        // freer holds); a short timeout makes it fail fast. Passing never depends on it.
        .lock_timeout(Duration::from_millis(300))
}

/// The words a block of thread `t`, `slot` and `size` holds first and last.
fn stamp(t: usize, slot: usize, size: u64) -> u64 {
    (t as u64) << 56 | (slot as u64) << 48 | size
}

/// Offset of the last stamped word of a block of `size` bytes (the first if it has one word).
fn last_word(size: u64) -> u64 {
    (size.max(8) - 8) & !7
}

/// Reads the word at pool offset `off` through the transaction.
fn read_word(tx: &Transaction<'_>, off: u64) -> Result<u64, Error> {
    let p: PPtr<u64> = tx.pptr(off);
    // SAFETY: `off` lies in a live block the caller's thread owns (the model says so); a block
    // wrongly handed to the other thread is still pool memory, only with other contents.
    Ok(*unsafe { tx.deref(p)? })
}

/// Writes `v` at pool offset `off`, inside a block this transaction allocated (fresh memory:
/// no undo record needed).
fn write_word(tx: &Transaction<'_>, off: u64, v: u64) -> Result<(), Error> {
    let cell: PPtr<PCell<u64>> = tx.pptr(off);
    // SAFETY: the block was allocated by this transaction, so no one else uses it.
    unsafe { tx.deref(cell)? }.set(tx, v)
}

/// Checks that thread `t`'s blocks hold their stamps.
fn verify_own(tx: &Transaction<'_>, s: &Slots, t: usize, state: &State) -> Result<(), Error> {
    for (&slot, &size) in state {
        let p = s.blocks[slot].get(tx);
        assert!(!p.is_null(), "thread {t} slot {slot}: link lost");
        assert_eq!(s.sizes[slot].get(tx), size, "thread {t} slot {slot}: size");
        let want = stamp(t, slot, size);
        assert_eq!(
            read_word(tx, p.offset())?,
            want,
            "thread {t} slot {slot} at {:#x}: first word overwritten",
            p.offset()
        );
        assert_eq!(
            read_word(tx, p.offset() + last_word(size))?,
            want,
            "thread {t} slot {slot} at {:#x}: last word overwritten",
            p.offset()
        );
    }
    Ok(())
}

/// Allocates `size` bytes into `slot` of thread `t`; `false` when the heap has no room.
fn alloc_into(
    tx: &Transaction<'_>,
    s: &Slots,
    t: usize,
    slot: usize,
    size: u64,
    state: &mut State,
) -> Result<bool, Error> {
    let off = match tx.alloc_bytes(size) {
        Ok(off) => off,
        Err(Error::OutOfSpace { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    write_word(tx, off, stamp(t, slot, size))?;
    write_word(tx, off + last_word(size), stamp(t, slot, size))?;
    s.blocks[slot].set(tx, tx.pptr(off))?;
    s.sizes[slot].set(tx, size)?;
    state.insert(slot, size);
    Ok(true)
}

/// Applies `ops` for thread `t` (the taker frees runs only).
fn apply(
    tx: &Transaction<'_>,
    s: &Slots,
    t: usize,
    ops: &[Op],
    taker: bool,
    state: &mut State,
) -> Result<(), Error> {
    for op in ops {
        match *op {
            Op::Alloc(slot, size) if !state.contains_key(&slot) => {
                alloc_into(tx, s, t, slot, size, state)?;
            }
            Op::Free(slot) if state.get(&slot).is_some_and(|&n| !taker || n > SLAB_MAX) => {
                // (A block over the largest slab class is a run.)
                tx.free(s.blocks[slot].get(tx))?;
                s.blocks[slot].set(tx, PPtr::null())?;
                s.sizes[slot].set(tx, 0)?;
                state.remove(&slot);
            }
            Op::Fill => {
                for slot in 0..SLOTS {
                    if !state.contains_key(&slot) && !alloc_into(tx, s, t, slot, RUN, state)? {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// One transaction of thread `t`: verify its blocks, apply `turn`, call `park` before the
/// transaction ends (the freer waits there for the taker), then commit or abort. Returns the
/// thread's new state. `park` runs exactly once, also when something panics (so the other
/// thread is never left waiting at the rendezvous).
fn run_turn(
    pool: &Pool<Root>,
    t: usize,
    turn: &Turn,
    taker: bool,
    state: &State,
    park: impl FnOnce(),
) -> State {
    let mut next = state.clone();
    let park = RefCell::new(Some(park));
    let park_once = || {
        if let Some(p) = park.borrow_mut().take() {
            p();
        }
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        pool.transaction(|tx, root| {
            let applied = catch_unwind(AssertUnwindSafe(|| {
                root.threads[t].lock(tx).and_then(|s| {
                    verify_own(tx, s, t, state)?;
                    apply(tx, s, t, &turn.ops, taker, &mut next)
                })
            }));
            park_once();
            match applied {
                Ok(a) => a?,
                Err(p) => resume_unwind(p),
            }
            if turn.commit {
                Ok(())
            } else {
                Err(Error::InvalidOptions("abort"))
            }
        })
    }));
    park_once();
    match r {
        Ok(Ok(())) => next,
        Ok(Err(Error::InvalidOptions("abort"))) => state.clone(),
        Ok(Err(e)) => panic!("thread {t} ({}): {e}", if taker { "taker" } else { "freer" }),
        Err(p) => resume_unwind(p),
    }
}

/// Checks the pool against the model states of both threads (no transaction running).
fn check(pool: &mut Pool<Root>, states: &[State; 2]) {
    pool.check_heap().unwrap();
    let links = pool
        .transaction(|tx, root| {
            let mut links = Vec::new();
            for (t, state) in states.iter().enumerate() {
                let s = root.threads[t].lock(tx)?;
                verify_own(tx, s, t, state)?;
                for slot in 0..SLOTS {
                    let p = s.blocks[slot].get(tx);
                    assert_eq!(
                        p.is_null(),
                        !state.contains_key(&slot),
                        "thread {t} slot {slot}: link"
                    );
                    if !p.is_null() {
                        links.push(p.offset());
                    }
                }
            }
            Ok::<_, Error>(links)
        })
        .unwrap();
    crate::heap_links::assert_allocated_are_exactly_the_linked(pool, links);
}

/// Runs the steps of one segment (no reopen) with two threads. A thread that failed keeps
/// meeting the other at the rendezvous (doing nothing else) and panics at the end.
fn run_segment(pool: &Pool<Root>, steps: &[Step], states: &mut [State; 2]) {
    let barrier = Barrier::new(2);
    let [s0, s1] = states;
    std::thread::scope(|scope| {
        for (t, state) in [(0usize, s0), (1, s1)] {
            let barrier = &barrier;
            scope.spawn(move || {
                let mut failure = None;
                for step in steps {
                    let Step::Pair { freer, first, second } = step else {
                        continue;
                    };
                    if failure.is_some() {
                        barrier.wait();
                        barrier.wait();
                        continue;
                    }
                    let r = if *freer == t {
                        // Parked inside the transaction: after the frees, before the commit.
                        catch_unwind(AssertUnwindSafe(|| {
                            run_turn(pool, t, first, false, state, || {
                                barrier.wait();
                                barrier.wait();
                            })
                        }))
                    } else {
                        barrier.wait();
                        let r =
                            catch_unwind(AssertUnwindSafe(|| run_turn(pool, t, second, true, state, || {})));
                        barrier.wait();
                        r
                    };
                    match r {
                        Ok(next) => *state = next,
                        Err(p) => failure = Some(p),
                    }
                }
                if let Some(p) = failure {
                    resume_unwind(p);
                }
            });
        }
    });
}

fn run(steps: &[Step]) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("large.pool");
    let mut pool = Pool::<Root>::create(&path, POOL, &opts()).unwrap();
    let mut states = [State::new(), State::new()];
    for segment in steps.split(|s| matches!(s, Step::Reopen)) {
        run_segment(&pool, segment, &mut states);
        check(&mut pool, &states);
        drop(pool);
        pool = Pool::<Root>::open(&path, &opts()).unwrap();
        check(&mut pool, &states);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn large_frees_and_aborts_with_two_threads_match_a_model(steps in prop::collection::vec(step(), 1..30)) {
        run(&steps);
    }
}

/// The cases that matter, in a fixed order: a run freed and then committed while the other
/// thread fills the heap; a run freed and aborted while the other fills it (and again after a
/// reopen); frees of runs by both threads.
#[test]
fn large_frees_fixed_walk() {
    use Op::*;
    let pair = |freer, first: Vec<Op>, commit, second: Vec<Op>| Step::Pair {
        freer,
        first: Turn { ops: first, commit },
        second: Turn {
            ops: second,
            commit: true,
        },
    };
    let steps = vec![
        pair(
            0,
            vec![Alloc(0, 2 * CHUNK), Alloc(1, 3 * CHUNK), Alloc(2, 100)],
            true,
            vec![Alloc(0, RUN)],
        ),
        // Thread 0 frees a 2-chunk run, thread 1 fills the heap meanwhile; 0 aborts.
        pair(0, vec![Free(0)], false, vec![Fill]),
        // Thread 1 gives back its fill; thread 0 frees the run again and commits.
        pair(
            1,
            vec![Free(1), Free(2), Free(3), Free(4), Free(5)],
            true,
            vec![Free(0), Alloc(9, 64)],
        ),
        pair(0, vec![Free(1), Free(2)], true, vec![Fill]),
        Step::Reopen,
        pair(1, vec![Free(0), Free(1)], false, vec![Fill, Alloc(8, 3 * CHUNK)]),
        pair(1, vec![Free(0), Alloc(7, 2 * CHUNK)], true, vec![Fill]),
    ];
    run(&steps);
}
