//! Cache-line arithmetic, flush instructions chosen once by CPUID, drains, non-temporal copy and
//! the per-thread persistence counters.
//!
//! A flush of `[p, p + len)` covers exactly the lines `[align_down(p, 64), align_up(p + len, 64))`
//! ([`line_span`]); a zero-length range flushes nothing.

use std::cell::Cell;
use std::sync::OnceLock;

// Miri cannot run inline assembly: it checks the portable fallback (plain copies, no flush
// instruction) so the surrounding pointer arithmetic is still verified.
#[cfg_attr(all(target_arch = "x86_64", not(miri)), path = "arch/x86_64.rs")]
#[cfg_attr(any(not(target_arch = "x86_64"), miri), path = "arch/fallback.rs")]
mod arch;

/// Size of a CPU cache line, the unit of flushing.
pub const CACHE_LINE: usize = 64;

/// A cache-line write-back instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushInstruction {
    /// `clwb`: writes the line back and may keep it cached (preferred).
    Clwb,
    /// `clflushopt`: writes back and evicts; weakly ordered.
    ClflushOpt,
    /// `clflush`: writes back and evicts; strongly ordered (slowest).
    Clflush,
}

impl FlushInstruction {
    /// The instruction's mnemonic.
    pub fn name(self) -> &'static str {
        match self {
            FlushInstruction::Clwb => "clwb",
            FlushInstruction::ClflushOpt => "clflushopt",
            FlushInstruction::Clflush => "clflush",
        }
    }
}

/// The best flush instruction of this CPU (clwb > clflushopt > clflush), probed once.
pub fn detected_flush_instruction() -> Option<FlushInstruction> {
    static DETECTED: OnceLock<Option<FlushInstruction>> = OnceLock::new();
    *DETECTED.get_or_init(arch::detect)
}

/// The 64-byte-aligned span `[align_down(addr), align_up(addr + len))` that a flush of
/// `[addr, addr + len)` must cover, as `(first_line_start, end)`. Empty when `len == 0`.
#[inline]
pub fn line_span(addr: usize, len: usize) -> (usize, usize) {
    if len == 0 {
        return (addr & !(CACHE_LINE - 1), addr & !(CACHE_LINE - 1));
    }
    let start = addr & !(CACHE_LINE - 1);
    let end = (addr + len + CACHE_LINE - 1) & !(CACHE_LINE - 1);
    (start, end)
}

/// Number of cache lines a flush of `[addr, addr + len)` touches.
#[inline]
pub fn lines_in(addr: usize, len: usize) -> usize {
    let (s, e) = line_span(addr, len);
    (e - s) / CACHE_LINE
}

/// Writes back every cache line of `[addr, addr + len)` with `insn`, counting lines.
///
/// # Safety
///
/// - every byte of `[align_down(addr, 64), align_up(addr + len, 64))` is mapped memory;
/// - `insn` is supported by this CPU (came from [`detected_flush_instruction`]).
#[inline]
pub unsafe fn flush_range(insn: FlushInstruction, addr: *const u8, len: usize) {
    let (s, e) = line_span(addr as usize, len);
    if s == e {
        return;
    }
    let start = addr.wrapping_sub(addr as usize - s);
    let end = start.wrapping_add(e - s);
    // SAFETY: the caller vouched that these whole lines are mapped and `insn` is supported;
    // `start` is 64-aligned by construction.
    unsafe { arch::flush_lines(insn, start, end) };
    let lines = ((e - s) / CACHE_LINE) as u64;
    count(|st| st.lines_flushed += lines);
}

/// Store fence: orders earlier flushes and non-temporal stores of this thread before its later
/// stores. Counted as one drain.
#[inline]
pub fn drain_fence() {
    arch::store_fence();
    count(|s| s.drains += 1);
}

/// Asks the CPU to start loading the cache line holding `p`, so a later read of it overlaps
/// with other work. A hint: it reads nothing, cannot fault, and any address may be given.
#[inline]
pub fn prefetch(p: *const u8) {
    arch::prefetch(p);
}

/// Copies `len` bytes from `src` to `dst`, using non-temporal stores for the 16-byte-aligned
/// middle and flushing the (cached) head and tail lines with `insn`, if any. The copy is durable
/// after the next [`drain_fence`].
///
/// # Safety
///
/// - `src` is valid for `len` bytes of reads, `dst` for `len` bytes of writes, no overlap;
/// - when `insn` is `Some`, the lines spanning `dst..dst + len` are mapped and `insn` is
///   supported by this CPU.
pub unsafe fn copy_nontemporal(dst: *mut u8, src: *const u8, len: usize, insn: Option<FlushInstruction>) {
    /// The CPU's own streaming stores and flush instruction.
    struct Cpu(Option<FlushInstruction>);
    impl NontemporalSink for Cpu {
        unsafe fn stream(&mut self, dst: *mut u8, src: *const u8, len: usize) {
            // SAFETY: forwarded contract of `stream`.
            unsafe { arch::stream_copy_16(dst, src, len) }
        }
        unsafe fn flush(&mut self, ptr: *const u8, len: usize) {
            if let Some(insn) = self.0 {
                // SAFETY: the range lies inside the destination, whose lines the caller of
                // `copy_nontemporal` vouched are mapped; `insn` is supported (same caller).
                unsafe { flush_range(insn, ptr, len) }
            }
        }
    }
    // SAFETY: forwarded caller contract; `Cpu` streams and flushes as the trait requires.
    unsafe { copy_nontemporal_via(dst, src, len, &mut Cpu(insn)) }
}

/// Where the two kinds of store of a non-temporal copy go: streaming stores for the aligned
/// body, write-backs of the cached head and tail. The CPU (in [`copy_nontemporal`]) and the
/// simulated domain (which records what each makes durable, byte by byte) implement it, so both
/// run the one split in [`copy_nontemporal_via`].
pub(crate) trait NontemporalSink {
    /// Copies `len` bytes with streaming stores (durable at the next drain, without a flush).
    ///
    /// # Safety
    ///
    /// `dst` is 16-aligned and valid for `len` bytes of writes, `src` for `len` reads, no
    /// overlap; `len` is a multiple of 16.
    unsafe fn stream(&mut self, dst: *mut u8, src: *const u8, len: usize);

    /// Writes back the cache lines of `[ptr, ptr + len)` (durable at the next drain).
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` lies inside the destination of the copy being made.
    unsafe fn flush(&mut self, ptr: *const u8, len: usize);
}

/// The split of a non-temporal copy of `len` bytes to `dst`: `(head, body, tail)` lengths, the
/// body 16-aligned and a multiple of 16 bytes, head and tail plain (cached) stores.
#[inline]
pub(crate) fn nontemporal_split(dst: usize, len: usize) -> (usize, usize, usize) {
    let head = ((16 - (dst & 15)) & 15).min(len);
    let body = (len - head) & !15;
    (head, body, len - head - body)
}

/// [`copy_nontemporal`] through `sink`: plain copies of the head and tail, the body streamed,
/// then the head and tail flushed. Counts the streamed bytes.
///
/// # Safety
///
/// `src` is valid for `len` bytes of reads, `dst` for `len` bytes of writes, no overlap; and
/// what `sink`'s methods require of the ranges they are given.
pub(crate) unsafe fn copy_nontemporal_via(
    dst: *mut u8,
    src: *const u8,
    len: usize,
    sink: &mut impl NontemporalSink,
) {
    let (head, body, tail) = nontemporal_split(dst as usize, len);
    // SAFETY: all three pieces lie within `[0, len)` of both buffers, which the caller vouched
    // for; the body starts 16-aligned at `dst + head` and its length is a multiple of 16.
    unsafe {
        core::ptr::copy_nonoverlapping(src, dst, head);
        sink.stream(dst.add(head), src.add(head), body);
        core::ptr::copy_nonoverlapping(src.add(head + body), dst.add(head + body), tail);
    }
    // SAFETY: head and tail lie inside the destination.
    unsafe {
        if head > 0 {
            sink.flush(dst, head);
        }
        if tail > 0 {
            sink.flush(dst.add(head + body), tail);
        }
    }
    count(|s| s.nt_bytes += body as u64);
}

/// Per-thread counters of persistence work, read with [`thread_stats`].
///
/// Counting is always on and costs a thread-local add. The drain count per transaction is a
/// deterministic performance figure: read the counters before and after and subtract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersistStats {
    /// Cache lines written back with clwb/clflushopt/clflush.
    pub lines_flushed: u64,
    /// Drains: ordering points ([`Region::order`](crate::Region::order)) and durability
    /// points ([`Region::drain`](crate::Region::drain)) alike — store fences, msync rounds in
    /// the msync domain, crash points in the simulated domain.
    pub drains: u64,
    /// Pages passed to `msync` (msync domain).
    pub pages_synced: u64,
    /// Bytes written with non-temporal stores.
    pub nt_bytes: u64,
    /// File syncs issued for durability: one per order/drain round of the msync domain that
    /// called `msync` at least once, and one per `fdatasync`/`fsync` (nvme-backing's drain,
    /// header repair, the directory sync at create).
    pub fsyncs: u64,
}

impl PersistStats {
    /// Counters accumulated since `earlier` (field-wise difference).
    pub fn since(&self, earlier: &PersistStats) -> PersistStats {
        PersistStats {
            lines_flushed: self.lines_flushed - earlier.lines_flushed,
            drains: self.drains - earlier.drains,
            pages_synced: self.pages_synced - earlier.pages_synced,
            nt_bytes: self.nt_bytes - earlier.nt_bytes,
            fsyncs: self.fsyncs - earlier.fsyncs,
        }
    }
}

thread_local! {
    static STATS: Cell<PersistStats> = const {
        Cell::new(PersistStats { lines_flushed: 0, drains: 0, pages_synced: 0, nt_bytes: 0, fsyncs: 0 })
    };
}

#[inline]
pub(crate) fn count(f: impl FnOnce(&mut PersistStats)) {
    STATS.with(|c| {
        let mut s = c.get();
        f(&mut s);
        c.set(s);
    });
}

/// Counts one file sync ([`PersistStats::fsyncs`]) on this thread: for code outside pmem-core
/// that calls `fdatasync`/`fsync` to make a pool durable (nvme-backing's drain). Not a stable
/// API.
#[doc(hidden)]
#[inline]
pub fn count_fsync() {
    count(|s| s.fsyncs += 1);
}

/// This thread's persistence counters since it started (or since [`reset_thread_stats`]).
pub fn thread_stats() -> PersistStats {
    STATS.with(Cell::get)
}

/// Zeroes this thread's persistence counters.
pub fn reset_thread_stats() {
    STATS.with(|c| c.set(PersistStats::default()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_span_edges() {
        assert_eq!(line_span(0, 0), (0, 0));
        assert_eq!(line_span(65, 0), (64, 64));
        assert_eq!(line_span(63, 2), (0, 128));
        assert_eq!(lines_in(4096, 4096), 64);
    }

    #[test]
    fn nontemporal_copy_matches_plain_copy_at_every_alignment() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        let offsets: &[usize] = if cfg!(miri) {
            &[0, 1, 15, 16]
        } else {
            &[0, 1, 2, 3, 7, 8, 15, 16, 17, 19]
        };
        for &dst_off in offsets {
            for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200] {
                let mut dst = vec![0xEEu8; 320];
                // SAFETY: `dst_off + len <= 220 < 320` and `len <= 300`: both ranges are in
                // bounds; the buffers are distinct allocations; no flush instruction is used.
                unsafe { copy_nontemporal(dst.as_mut_ptr().add(dst_off), src.as_ptr(), len, None) };
                assert_eq!(&dst[dst_off..dst_off + len], &src[..len]);
                assert!(dst[..dst_off].iter().all(|&b| b == 0xEE));
                assert!(dst[dst_off + len..].iter().all(|&b| b == 0xEE));
            }
        }
    }

    #[test]
    fn stats_difference() {
        reset_thread_stats();
        let a = thread_stats();
        count(|s| {
            s.drains += 2;
            s.lines_flushed += 5;
        });
        let d = thread_stats().since(&a);
        assert_eq!((d.drains, d.lines_flushed), (2, 5));
    }
}
