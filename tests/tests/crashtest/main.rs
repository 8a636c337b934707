//! ptm-crashtest's integration tests (the crash harness applied to ptm and its collections, and
//! the harness's own checks), as one test binary (one to link instead of one per file). One file
//! per concern, each a module opening with a `//!` line on what it guards: a new concern is a new
//! file here and a `mod` line below.

mod alloc;
mod bank;
mod broken_protocols;
mod btree_keys;
mod btree_remove;
mod btree_wide_remove;
mod budgets;
mod collections;
mod collections_owned;
mod completion_marks;
mod concurrent_map;
mod failed_abort_locks;
mod failed_durability;
mod heap_links;
mod heap_model;
mod kept_slabs;
mod large_frees;
mod large_transaction;
mod layers;
mod map_extend;
mod map_overflow;
mod map_segments;
mod nested_and_aborted;
mod overlapping_ranges;
mod relaxed;
mod reopen_generation;
mod schema_record;
mod simulated_domain;
mod store_inside_snapshot;
mod throughput;
mod user_bugs;
