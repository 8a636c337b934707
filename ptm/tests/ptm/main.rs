//! ptm's integration tests that run inside this process, as one test binary (one to link
//! instead of one per file). One file per concern, each a module opening with a `//!` line on what
//! it guards: a new concern is a new file here and a `mod` line below. Tests that spawn processes
//! belong in `../serial/`; `../kill.rs` and `../loom.rs` stay binaries of their own (CI runs them by
//! name: `--test kill` with `PTM_KILL_ROUNDS`, `--test loom` under `--cfg ptm_loom`).

#[path = "../common/mod.rs"]
mod common;

mod alloc;
mod alloc_cost;
mod big;
mod capacity;
mod checked;
mod debug_fmt;
mod doom;
mod drains;
mod early_holds;
mod errors;
mod extents;
mod forged_log;
mod format;
mod fuzz_corpus;
mod grow;
mod heap_check;
mod heap_damage;
mod heap_reuse;
mod heap_stats;
mod kept_slabs;
mod lane_release;
mod lanes;
mod lockword;
mod log_append;
mod log_records;
mod log_scan;
mod nested_refs;
mod pool_options;
mod pool_send;
mod recovery;
mod relaxed;
mod root_schema;
mod semantics;
mod slab_span;
mod superblock_geometry;
mod superblock_plan;
mod threads;
