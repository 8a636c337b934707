//! `ptm-collections`: persistent `PBox`, `PVec`, `PString`, `PHashMap`, `PBTreeMap`, `PQueue`.
//!
//! **Status: not implemented yet.** The collections need transactions and the allocator from
//! [`ptm`]; this crate is an empty placeholder in the workspace until then.
#![deny(unsafe_op_in_unsafe_fn)]
