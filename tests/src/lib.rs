//! `ptm-crashtest`: the crash-recovery harness.
//!
//! **Status: not implemented yet.** This crate is an empty placeholder in the workspace.
#![deny(unsafe_op_in_unsafe_fn)]
