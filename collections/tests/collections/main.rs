//! ptm-collections' integration tests, as one test binary (one to link instead of one per file).
//! One file per concern, each a module opening with a `//!` line on what it guards: a new concern
//! is a new file here and a `mod` line below (helpers shared by several files live in `common/`
//! and `queue_common/`). `../compile.rs`, the trybuild UI tests, stays a binary of its own: it
//! spawns cargo, and a spawned child holds copies of this process's pool locks until it execs.

mod common;
mod queue_common;

mod box_ops;
mod btree_corrupt;
mod btree_crash;
mod btree_damage;
mod btree_keys;
mod btree_keys_corrupt;
mod btree_parity;
mod btree_reads;
mod btree_remove;
mod btree_verify;
mod btree_wide;
mod capacity;
mod concurrent;
mod concurrent_keys;
mod concurrent_owned;
mod concurrent_rw;
mod crash;
mod deque;
mod derived_value;
mod drains;
mod entry;
mod failed_ops;
mod flood;
mod fuzz_corpus;
mod key_forms;
mod keys;
mod log_bytes;
mod map_corrupt;
mod map_extend;
mod map_failures;
mod map_fast_path;
mod map_get_many;
mod map_growth_rules;
mod map_layout;
mod map_reads;
mod map_reserve;
mod map_segments;
mod map_updates;
mod map_verifier;
mod model;
mod nested;
mod queue_corrupt;
mod queue_crash;
mod queue_growth;
mod queue_model;
mod queue_mut_t;
mod queue_mut_u;
mod queue_positions_and_damage;
mod range;
mod release_walks;
mod schema;
mod set_ops;
mod sets;
mod std_parity;
mod string_ops;
mod threads;
mod vec_reserve;
mod verify;
mod walk;
mod walk_generic;
mod walk_maps;
