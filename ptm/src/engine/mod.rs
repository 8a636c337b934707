//! The transaction engine: everything below the public front (`Pool`, `Transaction`, the cells
//! and locks). Its modules import only each other and the crate's leaves (`error`, `sync`),
//! never the front.
//!
//! - [`layout`]: the on-media format (pool geometry, lane headers, log records, commit records);
//! - [`heap`]: the persistent heap's chunk table, slab geometry and volatile index;
//! - [`lanes`]: lane acquisition;
//! - [`lockword`]: the persistent lock words' protocol;
//! - [`log`]: reading a lane's undo log back (recovery, abort, inspection).

pub mod heap;
pub(crate) mod lane_state;
pub mod lanes;
pub mod layout;
pub mod lockword;
pub(crate) mod log;
pub(crate) mod nested_refs;
pub(crate) mod shared;
pub(crate) mod tx_heap;

/// Rounds `x` up to a multiple of `a` (a power of two).
pub(crate) const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}
