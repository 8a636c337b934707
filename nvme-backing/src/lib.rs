//! `nvme-backing`: paged memory over a file or block device with fault handling and CRC32C dirty
//! tracking.
//!
//! **Status: not implemented yet.** This crate is an empty placeholder in the workspace.
#![deny(unsafe_op_in_unsafe_fn)]
