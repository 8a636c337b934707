//! CRC32C (Castagnoli, the iSCSI polynomial) of 1 KiB blocks, as dirty tracking stores it.
//!
//! Two implementations give the same value bit for bit (a unit test checks it on random data,
//! since stored CRCs are compared across versions): `crc-fast`'s CLMUL "fusion" kernels (AVX-512
//! `vpclmulqdq`, AVX-512 or SSE `pclmulqdq`, each with SSE4.2 `crc32`; about twice as fast on a
//! page here) and the `crc32c` crate (SSE4.2 `crc32` only). `crc-fast` is used where it is safe:
//!
//! - Only when its run-time choice is one of those accelerated kernels ([`prime`] checks it once,
//!   outside any signal handler, which also initialises both crates' CPU-feature caches so that a
//!   later call only reads them). On a CPU without them `crc-fast` falls back to a table-driven
//!   loop with a 4 KiB stack frame (`crc_fast::arch::software::update`): that is what overflows
//!   a small alternate signal stack, so the region then keeps `crc32c` everywhere.
//! - In the SIGSEGV handler only with enough stack left ([`StackRoom`]). The handler runs on the
//!   thread's alternate signal stack (`SA_ONSTACK`), which for a Rust thread is std's `SIGSTKSZ`
//!   (8 KiB) from which the kernel's signal frame (3.4 KiB with AVX-512 state,
//!   `AT_MINSIGSTKSZ`) is taken first. How much `crc-fast` needs depends on how it was compiled
//!   (about 0.2 KiB optimised, over 10 KiB at `opt-level = 0`, where its SIMD intrinsics are not
//!   inlined), so [`prime`] measures it once: one call on a thread whose stack is a painted
//!   buffer of ours. The handler takes `crc-fast` when the room left is at least that plus
//!   [`HANDLER_MARGIN`], else `crc32c` (small frames in any build), so a thread whose alternate
//!   stack is small, or an unoptimised build, falls back instead of overflowing.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Stack the signal handler may need besides the CRC itself (its own frames from where it
/// measures the room down to the CRC call, with margin). `handler_stack_use_is_small` (tests in
/// `region.rs`) checks the whole handler fits the CRC's need plus this: it used about 2.5 KiB
/// besides the CRC in a debug build, 0.4 KiB optimised.
const HANDLER_MARGIN: usize = if cfg!(debug_assertions) { 4096 } else { 1024 };

/// Stack `crc-fast` needs in the SIGSEGV handler: what one call on a 1 KiB block used in this
/// build (measured by [`prime`]), plus [`HANDLER_MARGIN`]; `usize::MAX` until measured.
static FAST_STACK_ROOM: AtomicUsize = AtomicUsize::new(usize::MAX);

const UNKNOWN: u8 = 0;
const FAST: u8 = 1;
const PORTABLE: u8 = 2;

/// Which implementation [`prime`] found usable.
static CHOICE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// How much stack the caller has left below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StackRoom {
    /// Ordinary code (a thread's own stack, sized for ordinary calls), or the signal handler on
    /// a stack of unknown extent (a thread without an alternate signal stack: the handler runs
    /// on the thread's stack, as any call it interrupted would).
    Ample,
    /// The signal handler on the alternate signal stack, with this many bytes below the
    /// current frame.
    Bytes(usize),
}

/// `crc-fast` targets (its `get_calculator_target`) that run the CLMUL + `crc32` kernels for
/// CRC-32/ISCSI, with small stack frames.
/// Elsewhere (aarch64 has its own fusion kernels) the region keeps `crc32c`: unmeasured.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn accelerated(target: &str) -> bool {
    matches!(
        target,
        "x86_64-avx512-vpclmulqdq" | "x86_64-avx512-pclmulqdq" | "x86_64-sse-pclmulqdq" | "x86-sse-pclmulqdq"
    ) && std::arch::is_x86_feature_detected!("sse4.2")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn accelerated(_target: &str) -> bool {
    false
}

/// Chooses the implementation, initialises both crates' feature detection and measures the
/// stack `crc-fast` needs. Call outside a signal handler before the handler may run (region
/// open does); the work is done once per process.
pub(crate) fn prime() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = crc32c::crc32c(&[0u8; 8]);
        let _ = crc_fast::crc32_iscsi(&[0u8; 8]);
        let target = crc_fast::get_calculator_target(crc_fast::CrcAlgorithm::Crc32Iscsi);
        let fast = accelerated(&target);
        if fast {
            if let Some(used) = fast_stack_use() {
                FAST_STACK_ROOM.store(used + HANDLER_MARGIN, Ordering::Relaxed);
            }
        }
        CHOICE.store(if fast { FAST } else { PORTABLE }, Ordering::Release);
    });
}

/// The stack `crc-fast` needs in a signal handler, if measured (see [`prime`]); for tests.
#[cfg(test)]
pub(crate) fn fast_stack_room() -> Option<usize> {
    match FAST_STACK_ROOM.load(Ordering::Relaxed) {
        usize::MAX => None,
        n => Some(n),
    }
}

/// Bytes of stack one `crc-fast` call on a 1 KiB block uses: run on a thread whose stack is a
/// buffer of ours painted with a pattern, the depth below the thread function's first frame
/// that was overwritten. `None` if the thread cannot be made.
fn fast_stack_use() -> Option<usize> {
    const STACK: usize = 256 << 10;
    const PAINT: u8 = 0x5a;

    extern "C" fn probe(arg: *mut libc::c_void) -> *mut libc::c_void {
        let block = [0x3cu8; crate::BLOCK_SIZE];
        let entry = &block as *const _ as usize;
        std::hint::black_box(crc_fast::crc32_iscsi(std::hint::black_box(&block)));
        // SAFETY: `arg` is the `usize` the parent passed and reads only after joining us.
        unsafe { *arg.cast::<usize>() = entry };
        std::ptr::null_mut()
    }

    let mut stack = vec![PAINT; STACK];
    let mut entry = 0usize;
    // SAFETY: `attr` is initialised before use and destroyed after; the stack buffer is ours,
    // 16-byte aligned enough for glibc (it aligns the top itself), outlives the thread (joined
    // below) and is not touched by us meanwhile; `entry` outlives the thread too.
    let created = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return None;
        }
        let mut ok = libc::pthread_attr_setstack(&mut attr, stack.as_mut_ptr().cast(), STACK) == 0;
        let mut thread: libc::pthread_t = std::mem::zeroed();
        ok = ok && libc::pthread_create(&mut thread, &attr, probe, (&mut entry as *mut usize).cast()) == 0;
        libc::pthread_attr_destroy(&mut attr);
        ok && libc::pthread_join(thread, std::ptr::null_mut()) == 0
    };
    if !created {
        return None;
    }
    let bottom = stack.as_ptr() as usize;
    let deepest = bottom + stack.iter().position(|&b| b != PAINT)?;
    entry.checked_sub(deepest)
}

/// CRC32C of `data` (a 1 KiB block), with `crc-fast` when [`prime`] chose it and `room` allows,
/// else with `crc32c`. Async-signal-safe once [`prime`] has run (no allocation, no locks: both
/// crates only read their initialised feature caches).
#[inline]
pub(crate) fn crc32c(data: &[u8], room: StackRoom) -> u32 {
    let roomy = match room {
        StackRoom::Ample => true,
        StackRoom::Bytes(n) => n >= FAST_STACK_ROOM.load(Ordering::Relaxed),
    };
    if roomy && CHOICE.load(Ordering::Relaxed) == FAST {
        crc_fast::crc32_iscsi(data)
    } else {
        crc32c::crc32c(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answer() {
        prime();
        eprintln!(
            "crc-fast needs {:?} bytes of stack in the handler",
            fast_stack_room()
        );
        for room in [StackRoom::Ample, StackRoom::Bytes(0)] {
            assert_eq!(super::crc32c(b"123456789", room), 0xe306_9283);
        }
    }

    proptest! {
        // Both implementations agree bit for bit on random data of every length up to a page and
        // at every alignment (stored CRCs are compared across versions and implementations).
        #[test]
        fn crc_fast_matches_crc32c(data in proptest::collection::vec(any::<u8>(), 0..4200), skip in 0usize..64) {
            prime();
            let data = &data[skip.min(data.len())..];
            prop_assert_eq!(crc_fast::crc32_iscsi(data), crc32c::crc32c(data));
            prop_assert_eq!(super::crc32c(data, StackRoom::Ample), crc32c::crc32c(data));
        }
    }

    #[test]
    fn crc_fast_matches_crc32c_on_random_blocks() {
        prime();
        // A fixed-seed generator (xorshift), so a failure reproduces.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut page = vec![0u8; crate::PAGE_SIZE];
        for _ in 0..2000 {
            for b in page.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            for block in page.chunks_exact(crate::BLOCK_SIZE) {
                assert_eq!(crc_fast::crc32_iscsi(block), crc32c::crc32c(block));
            }
            assert_eq!(crc_fast::crc32_iscsi(&page), crc32c::crc32c(&page));
        }
    }
}
