//! pmem-core (work in progress)
#![deny(unsafe_op_in_unsafe_fn)]
extern crate self as pmem_core;

pub mod persistent;
pub use persistent::{bytes_of, read_from_bytes, Persistent};
pub use pmem_derive::Persistent;
