//! ptm-raft's in-process integration tests (the log store and state machine), as one test binary
//! (one to link instead of one per file). One file per concern, each a module opening with a
//! `//!` line: a new concern is a new file here and a `mod` line below. `../cluster.rs` stays a
//! binary of its own: it spawns `ptm-kv` processes, and a spawned child holds copies of this
//! process's pool locks until it execs.

mod conformance;
mod store;
