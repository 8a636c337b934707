//! x86-64 cache-line flush and store-fence instructions, selected at run time by CPUID.

use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count, __m128i, _mm_loadu_si128, _mm_stream_si128};

use crate::flush::FlushInstruction;

/// The best flush instruction this CPU has: clwb, else clflushopt, else clflush.
pub(crate) fn detect() -> Option<FlushInstruction> {
    // Leaf 7 exists only up to the highest leaf (leaf 0's eax): above it a CPU answers with
    // another leaf's words.
    let leaf7_ebx = (__cpuid(0).eax >= 7).then(|| __cpuid_count(7, 0).ebx);
    choose(leaf7_ebx, __cpuid(1).edx)
}

/// The best flush instruction the CPUID words name: leaf 7's `ebx` (`None`: the CPU has no
/// leaf 7), bit 24 clwb, bit 23 clflushopt; else leaf 1's `edx`, bit 19 clflush.
fn choose(leaf7_ebx: Option<u32>, leaf1_edx: u32) -> Option<FlushInstruction> {
    let ebx = leaf7_ebx.unwrap_or(0);
    if ebx & (1 << 24) != 0 {
        Some(FlushInstruction::Clwb)
    } else if ebx & (1 << 23) != 0 {
        Some(FlushInstruction::ClflushOpt)
    } else if leaf1_edx & (1 << 19) != 0 {
        Some(FlushInstruction::Clflush)
    } else {
        None
    }
}

/// Writes back (and possibly evicts) each 64-byte line in `[start, end)` with `insn`.
///
/// # Safety
///
/// - `start` is 64-byte aligned and every line in `[start, end)` lies in mapped memory;
/// - `insn` is supported by this CPU (as returned by [`detect`]).
#[inline]
pub(crate) unsafe fn flush_lines(insn: FlushInstruction, start: *const u8, end: *const u8) {
    let mut p = start;
    match insn {
        FlushInstruction::Clwb => {
            while p < end {
                // SAFETY: caller guarantees the line is mapped and clwb is supported; clwb does
                // not modify memory contents visible to the program.
                unsafe { asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags)) };
                p = p.wrapping_add(64);
            }
        }
        FlushInstruction::ClflushOpt => {
            while p < end {
                // SAFETY: as above, for clflushopt.
                unsafe { asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags)) };
                p = p.wrapping_add(64);
            }
        }
        FlushInstruction::Clflush => {
            while p < end {
                // SAFETY: as above, for clflush (baseline on x86-64).
                unsafe { asm!("clflush [{0}]", in(reg) p, options(nostack, preserves_flags)) };
                p = p.wrapping_add(64);
            }
        }
    }
}

/// Orders all earlier flushes and non-temporal stores before later stores (`sfence`).
#[inline]
pub(crate) fn store_fence() {
    // SAFETY: sfence is part of SSE, baseline on x86-64; it touches no memory or registers.
    unsafe { asm!("sfence", options(nostack, preserves_flags)) };
}

/// Starts loading the cache line holding `p` into every cache level (`prefetcht0`).
#[inline]
pub(crate) fn prefetch(p: *const u8) {
    // SAFETY: a prefetch is a hint: it never faults (not even on an unmapped address), reads
    // nothing architecturally and changes no register or flag.
    unsafe { asm!("prefetcht0 [{}]", in(reg) p, options(nostack, preserves_flags, readonly)) };
}

/// Copies `len` bytes with non-temporal 16-byte stores.
///
/// # Safety
///
/// - `dst` is 16-byte aligned, `len` is a multiple of 16;
/// - `src` is valid for `len` bytes of reads and `dst` for `len` bytes of writes; they do not
///   overlap.
#[inline]
pub(crate) unsafe fn stream_copy_16(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    while i < len {
        // SAFETY: `i + 16 <= len`, so both accesses are within the ranges the caller vouched
        // for; `dst + i` is 16-aligned because `dst` is and `i` is a multiple of 16; SSE2 is
        // baseline on x86-64. `loadu` tolerates any source alignment.
        unsafe {
            let v: __m128i = _mm_loadu_si128(src.add(i).cast());
            _mm_stream_si128(dst.add(i).cast(), v);
        }
        i += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLWB: u32 = 1 << 24;
    const CLFLUSHOPT: u32 = 1 << 23;
    const CLFLUSH: u32 = 1 << 19;

    /// CPUs with every instruction, with one of them, with none (this machine's CPU shows only
    /// one of these cases, which `detect` reads).
    #[test]
    fn the_best_instruction_the_cpuid_words_name_is_chosen() {
        use FlushInstruction::{Clflush, ClflushOpt, Clwb};
        assert_eq!(choose(Some(CLWB | CLFLUSHOPT), CLFLUSH), Some(Clwb));
        assert_eq!(choose(Some(CLWB), 0), Some(Clwb));
        assert_eq!(choose(Some(CLFLUSHOPT), CLFLUSH), Some(ClflushOpt));
        assert_eq!(choose(Some(0), CLFLUSH), Some(Clflush));
        assert_eq!(choose(None, CLFLUSH), Some(Clflush));
        assert_eq!(choose(Some(0), 0), None);
        assert_eq!(choose(None, 0), None);
        // Every other bit names nothing.
        assert_eq!(choose(Some(!(CLWB | CLFLUSHOPT)), !CLFLUSH), None);
    }
}
