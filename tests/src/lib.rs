//! # ptm-crashtest
//!
//! A crash-recovery harness: it runs a workload on a *simulated* persistence domain, treats every
//! drain as a possible power failure, builds the pool images such a failure could leave, opens
//! each one (running recovery) and checks your invariants on it.
//!
//! ## Fault model
//!
//! At a crash:
//!
//! - everything made durable by flush + drain survives: the simulation keeps a *durable image*
//!   of the pool beside the mapping, and a drain copies into it the lines flushed before it, as
//!   they were when flushed (a store made after a line's flush is not made durable by the drain);
//! - every **8-byte word** written since it was last made durable may independently survive with
//!   its old or its new value ([`FaultModel::Words`], the default). This is stricter than x86,
//!   which never tears an aligned word and persists a line's stores in order, so a protocol that
//!   passes here passes on weaker platforms too;
//! - in the x86 mode ([`FaultModel::Lines`]) every 64-byte **line** survives whole, with its old
//!   or its new contents.
//!
//! Stores that never reach a flush (lock words, volatile bookkeeping kept in the pool) are
//! pending forever: they may or may not survive any crash, as on real hardware.
//!
//! ## How a workload is explored
//!
//! - **Setup** creates the pool and builds the initial state; it is not explored.
//! - **Workload**: the pool is reopened on the simulated domain. Every drain from that open to the
//!   close after the workload is a *crash point*, numbered from 0; the state after the last drain
//!   is one more.
//! - At a crash point the *pending units* are the words (or lines) in which the mapping differs
//!   from the durable image. The images are: nothing pending persisted, everything pending
//!   persisted, and [`images_per_point`](Explorer::images_per_point) seeded random subsets drawn
//!   with varied strategies (each unit with probability 1/2, 1/8 or 7/8, exactly one unit, all but
//!   one, a contiguous run) — or every subset when at most
//!   [`exhaustive_units`](Explorer::exhaustive_units) units are pending. Images identical to one
//!   already checked are skipped (by a 128-bit hash of their contents).
//! - Each image is written to a file on tmpfs and opened with `Pool::open`, which runs recovery;
//!   then the **check** runs on the recovered pool. An error or a panic in either is a
//!   [`Failure`].
//! - **Double crash** ([`double_crash`](Explorer::double_crash)): the image is opened on a
//!   simulated domain too, so recovery's own drains are crash points. Their images (nothing,
//!   everything and [`recovery_images_per_point`](Explorer::recovery_images_per_point) random
//!   subsets) are recovered again normally and checked: recovery must be idempotent.
//! - **Budgets**: crash points and images ([`max_points`](Explorer::max_points),
//!   [`max_images`](Explorer::max_images)), and a time budget only when asked for
//!   ([`max_time`](Explorer::max_time)): by default, whether an exploration completes depends on
//!   counts alone, never on how fast or loaded the machine is. `PTM_CRASHTEST_SCALE=N` multiplies
//!   budgets and random images per point for a longer run. A report says whether a budget cut the
//!   exploration short ([`Report::is_complete`]).
//!
//! The check runs synchronously inside the workload's drain, so state the workload shares with it
//! (a `Cell` counting the transactions that returned) tells it what must have survived: a
//! transaction that returned before the crash must be present (durability), one that had not may
//! be present or not, but never in part (atomicity).
//!
//! ## Example
//!
//! ```
//! use std::cell::Cell;
//!
//! use ptm::{PCell, Persistent};
//! use ptm_crashtest::{ensure, Explorer, FaultModel};
//!
//! #[derive(Persistent)]
//! #[persistent(crate = "ptm::pmem_core")]
//! #[repr(C)]
//! struct Root {
//!     a: PCell<u64>,
//!     b: PCell<u64>,
//! }
//!
//! # fn main() -> Result<(), ptm_crashtest::Error> {
//! let moved = Cell::new(0); // transfers that returned: they must survive
//! let report = Explorer::new()
//!     .images_per_point(8)
//!     .seed(42)
//!     .fault_model(FaultModel::Words)
//!     .double_crash(true)
//!     .run::<Root>(
//!         |pool| Ok(pool.transaction(|tx, r| r.a.set(tx, 100))?),
//!         |pool| {
//!             for _ in 0..3 {
//!                 pool.transaction(|tx, r| {
//!                     r.a.set(tx, r.a.get(tx) - 10)?;
//!                     r.b.set(tx, r.b.get(tx) + 10)
//!                 })?;
//!                 moved.set(moved.get() + 10);
//!             }
//!             Ok(())
//!         },
//!         |pool| {
//!             let (a, b) = pool.transaction(|tx, r| Ok::<_, ptm::Error>((r.a.get(tx), r.b.get(tx))))?;
//!             ensure!(a + b == 100, "money created or lost: a = {a}, b = {b}");
//!             ensure!(b >= moved.get(), "a returned transfer was lost: b = {b}");
//!             Ok(())
//!         },
//!     )?;
//! assert!(report.failures.is_empty(), "{report}");
//! assert!(report.is_complete());
//! # Ok(()) }
//! ```
//!
//! ## Raw regions
//!
//! [`Explorer::run_raw`] explores a protocol written directly against a pmem-core
//! [`Region`](ptm::pmem_core::Region) (a toy log, a layer below ptm): setup and workload get the
//! region, and one closure recovers and checks each image.
//!
//! ## Reproducing a failure
//!
//! A failure names its crash point (drain number), the image there and how it was chosen (seed
//! and strategy, or the exhaustive mask), the pending words or lines (pool offsets) and which of
//! them persisted, the check's message, and a reproduction line such as
//! `Explorer::new().seed(42).only_point(3).only_image(5)`: with the same pool settings it checks
//! exactly that image again. Reproduction needs a deterministic workload; with ptm, keep one lane
//! (the default here), since the lane a transaction takes depends on the threads that ran before.
//!
//! ## Limits
//!
//! - Single-threaded workloads: only drains of the thread that runs the workload are crash
//!   points, and the simulated domain must not be stored into by other threads while it drains.
//! - Images are whole pool files: throughput falls with the pool size (see the `throughput` test).
//! - What a workload does not do is not explored: protocols between lanes (ptm's completion marks)
//!   need a workload that holds several lanes at once, e.g. with relaxed commits outstanding
//!   (each keeps its lane, so the thread's next transaction takes the next one).
//! - A crash image is reopened, which rebuilds ptm's in-memory state; to exercise that state
//!   after recovery, and recovery's own writes, give [`Explorer::run_then`] a follow-up
//!   workload: it runs on each recovered image in the same process, and its drains are crash
//!   points in turn.
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod explorer;
mod image_file;
mod images;
mod report;

pub use error::Error;
pub use explorer::{
    BoxError, CheckResult, Explorer, DEFAULT_EXHAUSTIVE_UNITS, DEFAULT_IMAGES_PER_POINT,
    DEFAULT_MAX_FAILURES, DEFAULT_MAX_IMAGES, DEFAULT_MAX_POINTS, DEFAULT_POOL_SIZE,
    DEFAULT_RECOVERY_IMAGES_PER_POINT, ENV_SCALE,
};
pub use images::{ImageId, ImageKind};
pub use ptm::pmem_core::{CrashPoint, FaultModel, Simulation, SubsetStrategy};
pub use report::{Budget, CrashImage, Failure, Report, Stage};

/// Checks the usual crash-consistency property of a sequence of transactions: `state`, read
/// from a recovered image, is `states[done]` (the model after the `done` transactions that
/// returned) or `states[done + 1]` (the one in flight committed too).
///
/// ```
/// let states = [0, 1, 2];
/// assert!(ptm_crashtest::ensure_prefix(&1, &states, 1).is_ok());
/// assert!(ptm_crashtest::ensure_prefix(&2, &states, 1).is_ok());
/// assert!(ptm_crashtest::ensure_prefix(&0, &states, 1).is_err());
/// ```
pub fn ensure_prefix<S: PartialEq + std::fmt::Debug>(state: &S, states: &[S], done: usize) -> CheckResult {
    ensure!(
        states.get(done) == Some(state) || states.get(done + 1) == Some(state),
        "after {done} transactions: {state:?}"
    );
    Ok(())
}

/// Checks that the pool's allocated blocks (their offsets) are exactly `owned`, the blocks a
/// structure reaches: no block leaked, none reachable freed.
pub fn ensure_heap_owns<R: ptm::Persistent>(
    pool: &mut ptm::Pool<R>,
    owned: &std::collections::BTreeSet<u64>,
) -> CheckResult {
    let allocated: std::collections::BTreeSet<u64> =
        pool.allocated_blocks()?.into_iter().map(|(off, _)| off).collect();
    ensure!(
        &allocated == owned,
        "allocated {allocated:x?}, but the structure owns {owned:x?}"
    );
    Ok(())
}

/// Returns `Err(format!(...).into())` from the enclosing check unless `cond` holds.
///
/// ```
/// fn check(total: u64) -> ptm_crashtest::CheckResult {
///     ptm_crashtest::ensure!(total == 100, "total is {total}");
///     Ok(())
/// }
/// assert!(check(100).is_ok());
/// assert_eq!(check(7).unwrap_err().to_string(), "total is 7");
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return ::core::result::Result::Err(::std::format!($($fmt)+).into());
        }
    };
}
