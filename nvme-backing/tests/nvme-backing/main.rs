//! nvme-backing's integration tests that run inside this process, as one test binary (one to link
//! instead of one per file). One file per concern, each a module opening with a `//!` line on what
//! it guards: a new concern is a new file here and a `mod` line below. Tests that spawn processes
//! or depend on process-wide state (the region table, the count of service threads) belong in
//! `../serial/`.

#[macro_use]
mod common;

mod direct_io;
mod dirty_blocks;
mod errors;
mod journaled;
mod model;
mod persist_reopen;
mod pool;
mod threads;
mod uffd;
mod working_set;
