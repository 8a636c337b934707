//! Support code of the ptm fuzz targets.
//!
//! Both modules are also compiled into the stable replay test
//! `pmem-core/tests/fuzz_corpus.rs` through `#[path]`, so they use std and pmem-core only.

pub mod checks;
pub mod image;
