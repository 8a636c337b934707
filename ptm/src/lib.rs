//! `ptm`: pools, failure-atomic undo-log transactions, recovery and the persistent allocator.
//!
//! **Status: not implemented yet.** This crate currently only re-exports [`pmem_core`], the layer
//! it will be built on (mapping, persistence domains, flushing, the pool header, offset pointers
//! and the `Persistent` trait). Transactions arrive with the transactions issue; nothing here
//! offers failure atomicity today.
#![deny(unsafe_op_in_unsafe_fn)]

pub use pmem_core;
