//! Support code of the ptm fuzz targets.
//!
//! `checks` and `image` are also compiled into the stable replay test
//! `pmem-core/tests/pmem-core/fuzz_corpus.rs` through `#[path]`, so they use std and pmem-core only;
//! `txn` (targets `recover_log` and `tx_sequence`) goes into `ptm/tests/ptm/fuzz_corpus.rs` and uses
//! std, ptm and xxhash-rust only; `collections` (target `collections_image`) goes into
//! `collections/tests/collections/fuzz_corpus.rs` and uses std, ptm and ptm-collections only; `checked`
//! (target `checked_values`) goes into `ptm/tests/ptm/checked.rs` and uses std and ptm only.

pub mod checked;
pub mod checks;
pub mod collections;
pub mod image;
pub mod txn;
