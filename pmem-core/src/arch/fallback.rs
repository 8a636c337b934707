//! Platforms without a known cache-flush instruction: only the msync domain is available.

use crate::flush::FlushInstruction;

/// No flush instruction is known on this architecture.
pub(crate) fn detect() -> Option<FlushInstruction> {
    None
}

/// Never called: [`detect`] returns `None`, so no cache-flush domain is ever built.
///
/// # Safety
///
/// Same contract as the x86-64 version; unreachable in practice.
pub(crate) unsafe fn flush_lines(_insn: FlushInstruction, _start: *const u8, _end: *const u8) {
    unreachable!("no cache-flush domain exists on this architecture")
}

/// A full fence stands in for a store fence.
pub(crate) fn store_fence() {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// No prefetch instruction is used on this architecture (or under Miri).
#[inline]
pub(crate) fn prefetch(_p: *const u8) {}

/// Plain copy (no non-temporal stores on this architecture).
///
/// # Safety
///
/// `src` valid for `len` reads, `dst` for `len` writes, no overlap.
pub(crate) unsafe fn stream_copy_16(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: forwarded caller contract.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, len) }
}
