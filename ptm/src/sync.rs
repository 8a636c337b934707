//! Atomics used by the lock-free parts (lane acquisition, lock words), swapped for loom's under
//! `--cfg ptm_loom` so `tests/loom.rs` can model-check them.

#[cfg(ptm_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(ptm_loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(ptm_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(ptm_loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}
