//! Counts the calls that make file data durable — `fsync`, `fdatasync`, `msync(MS_SYNC)` — made
//! by anything linked into the `ptm` binary: Rust's std (`File::sync_all`, `sync_data`), ptm's
//! msync domain, nvme-backing, and the C code of the bundled SQLite and LMDB. `ptm bench --disk`
//! reports them per transaction for every engine from the one set of counters.
//!
//! **How.** This module defines the C symbols `fsync`, `fdatasync` and `msync` in the
//! executable. The static linker binds every reference made by the executable's own objects (the
//! Rust crates, `libsqlite3.a`, liblmdb) to a definition in the executable before it considers
//! shared libraries, so those calls land here instead of in glibc. Calls made from inside a
//! shared library (glibc itself, say) still reach glibc's functions; none of the measured
//! engines syncs that way, and `ptm bench --disk` prints `n/a` for an engine whose transactions
//! show no sync at all rather than a wrong zero. What is not counted: writes to a file opened
//! with `O_DSYNC`/`O_SYNC` (LMDB writes its meta page that way, one per commit).
//!
//! **Why it is sound.** Each function bumps a relaxed atomic counter and then makes the very
//! system call glibc's wrapper makes, with the caller's arguments unchanged, through
//! `libc::syscall`, which returns the kernel's result and sets `errno` the same way (`-1` and
//! `errno` on failure). Callers therefore see exactly glibc's behaviour, except that these are
//! not pthread cancellation points (nothing in the binary cancels threads). An atomic add and a
//! raw system call are async-signal-safe, so a sync from a signal handler (nvme-backing's fault
//! handler may write back) stays safe.

use std::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

static FSYNC: AtomicU64 = AtomicU64::new(0);
static FDATASYNC: AtomicU64 = AtomicU64::new(0);
static MSYNC: AtomicU64 = AtomicU64::new(0);

/// Calls counted so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SyncCounts {
    pub(crate) fsync: u64,
    pub(crate) fdatasync: u64,
    /// `msync` calls with `MS_SYNC` (an `MS_ASYNC` call waits for nothing and is not counted).
    pub(crate) msync: u64,
}

impl SyncCounts {
    /// The counts of the whole process so far.
    pub(crate) fn now() -> Self {
        SyncCounts {
            fsync: FSYNC.load(Ordering::Relaxed),
            fdatasync: FDATASYNC.load(Ordering::Relaxed),
            msync: MSYNC.load(Ordering::Relaxed),
        }
    }

    /// The calls made since `earlier`.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        SyncCounts {
            fsync: self.fsync - earlier.fsync,
            fdatasync: self.fdatasync - earlier.fdatasync,
            msync: self.msync - earlier.msync,
        }
    }

    /// `self + other`.
    pub(crate) fn plus(&self, other: &Self) -> Self {
        SyncCounts {
            fsync: self.fsync + other.fsync,
            fdatasync: self.fdatasync + other.fdatasync,
            msync: self.msync + other.msync,
        }
    }

    /// All calls together.
    pub(crate) fn total(&self) -> u64 {
        self.fsync + self.fdatasync + self.msync
    }
}

/// Whether calls from Rust code reach the counters: makes one `fsync` and one `fdatasync` on an
/// invalid descriptor (both fail with `EBADF`, touching nothing) and checks that both counted.
pub(crate) fn counting() -> bool {
    let before = SyncCounts::now();
    // SAFETY: fsync/fdatasync of -1 only fail with EBADF; no memory is passed.
    unsafe {
        libc::fsync(-1);
        libc::fdatasync(-1);
    }
    let d = SyncCounts::now().since(&before);
    d.fsync >= 1 && d.fdatasync >= 1
}

/// Converts `libc::syscall`'s `c_long` result to the `int` of the wrapped function (the kernel
/// returns 0 or -1 for these calls).
fn to_int(r: c_long) -> c_int {
    r as c_int
}

/// `fsync(2)`, counted.
///
/// # Safety
///
/// None beyond the C function's: any `fd` value is allowed (a bad one fails with `EBADF`).
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    FSYNC.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the fsync system call with the caller's descriptor, as glibc makes it; it reads no
    // memory of ours.
    to_int(unsafe { libc::syscall(libc::SYS_fsync, fd) })
}

/// `fdatasync(2)`, counted.
///
/// # Safety
///
/// None beyond the C function's: any `fd` value is allowed (a bad one fails with `EBADF`).
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    FDATASYNC.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the fdatasync system call with the caller's descriptor, as glibc makes it.
    to_int(unsafe { libc::syscall(libc::SYS_fdatasync, fd) })
}

/// `msync(2)`, counted when `flags` has `MS_SYNC`.
///
/// # Safety
///
/// As the C function's: the kernel checks the range (an unmapped one fails with `ENOMEM`); msync
/// does not modify memory.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn msync(addr: *mut c_void, len: libc::size_t, flags: c_int) -> c_int {
    if flags & libc::MS_SYNC != 0 {
        MSYNC.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: the msync system call with the caller's arguments unchanged, as glibc makes it;
    // the kernel validates the range and only writes back pages, never changing their contents.
    to_int(unsafe { libc::syscall(libc::SYS_msync, addr, len, flags) })
}
