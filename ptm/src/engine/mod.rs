//! The transaction engine: everything below the public front (`Pool`, `Transaction`, the cells
//! and locks). Its modules import only each other, downward, and the crate's leaves (`error`,
//! `sync`), never the front; `tests/tests/layers.rs` checks the order (docs/design.md §1).
//!
//! - [`lockword`]: the persistent lock words' protocol;
//! - [`completions`]: completion marks in memory (pending flushes, known durable);
//! - [`lanes`]: lane acquisition;
//! - [`heap`]: the persistent heap's chunk table, slab geometry and volatile index;
//! - [`layout`]: the on-media format (pool geometry, lane headers, log records, commit records);
//! - `tx_heap`: a running transaction's allocator state (`TxHeap`);
//! - `range_index`: the exact set of ranges a large transaction logged (`RangeIndex`);
//! - `lane_state`: a lane's volatile transaction state (`LaneVolatile`);
//! - `nested_refs`: the registry behind `Nested` guards (`NestedRefs`);
//! - `shared`: the state of one open pool (`Shared`, `LaneSlot`) and its raw accessors;
//! - `log`: reading a lane's undo log back (recovery, abort, inspection) and rolling it back.
//!
//! `completions`, `heap`, `lanes`, `layout` and `lockword` are reachable by the workspace's tools through
//! `ptm::internals` (not covered by semver).

pub mod completions;
pub mod heap;
pub(crate) mod lane_state;
pub mod lanes;
pub mod layout;
pub mod lockword;
pub(crate) mod log;
pub(crate) mod nested_refs;
pub(crate) mod range_index;
pub(crate) mod shared;
pub(crate) mod tx_heap;

/// Rounds `x` up to a multiple of `a` (a power of two).
pub(crate) const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}
