//! pmem-core's integration tests that run inside this process, as one test binary (one to link
//! instead of one per file). One file per concern, each a module opening with a `//!` line on what
//! it guards: a new concern is a new file here and a `mod` line below. Tests that spawn processes
//! belong in `../serial/`.

#[path = "../common/mod.rs"]
mod common;

mod domain;
mod durability;
mod flush;
mod fuzz_corpus;
mod grow;
mod header;
mod header_fields;
mod journal;
mod lock;
mod pptr;
mod stats;
