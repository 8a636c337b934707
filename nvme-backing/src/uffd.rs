//! The userfaultfd fault mode: the kernel interface (`linux/userfaultfd.h`, which `libc` does not
//! cover); the fault-service thread is in `service.rs`.
//!
//! The application's range is an anonymous private mapping registered `MISSING | WP`. A first
//! access to a page blocks the accessing thread in the kernel and queues a *missing* message; the
//! service thread reads it, loads the page through the shared state machine
//! ([`Shared::serve_fault`]) into a staging buffer, installs it with `UFFDIO_COPY` (which maps it
//! atomically) and, once the page is `RESIDENT`, wakes the waiters. Eviction write-protects the page (`UFFDIO_WRITEPROTECT`)
//! before its write-back, so a store racing with it blocks with a *write-protect* message until
//! the page is gone (`MADV_DONTNEED`) and the evictor has woken it; the store then faults the page
//! back in. See docs/design.md §12.

use std::io;

use crate::error::{Error, Result};
use crate::sys::errno;
use crate::PAGE_SIZE;

const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xAA00;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_WAKE: libc::c_ulong = 0x8010_aa02;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;
// Bit numbers of the ioctls in `uffdio_register::ioctls`.
const IOCTL_WAKE: u64 = 1 << 0x02;
const IOCTL_COPY: u64 = 1 << 0x03;
const IOCTL_WRITEPROTECT: u64 = 1 << 0x06;
const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
pub(crate) const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub(crate) const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// `struct uffd_msg` with the page-fault member of its union spelled out (32 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UffdMsg {
    pub(crate) event: u8,
    pub(crate) _reserved1: u8,
    pub(crate) _reserved2: u16,
    pub(crate) _reserved3: u32,
    pub(crate) flags: u64,
    pub(crate) address: u64,
    pub(crate) ptid: u32,
    pub(crate) _pad: u32,
}

const _: () = assert!(std::mem::size_of::<UffdMsg>() == 32);

/// Runs an ioctl on the userfaultfd, retrying `EINTR` and `EAGAIN` (the address space is being
/// changed by another thread).
///
/// # Safety
/// `arg` must point to the argument structure of `req`.
unsafe fn ioctl_retry<T>(uffd: libc::c_int, req: libc::c_ulong, arg: *mut T) -> Result<(), i32> {
    loop {
        // SAFETY: per the contract.
        if unsafe { libc::ioctl(uffd, req, arg) } == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR | libc::EAGAIN => std::hint::spin_loop(),
            e => return Err(e),
        }
    }
}

/// Wakes the threads waiting on faults in `[addr, addr + len)`.
pub(crate) fn wake(uffd: libc::c_int, addr: usize, len: usize) {
    let mut range = UffdioRange {
        start: addr as u64,
        len: len as u64,
    };
    // SAFETY: the argument is a `uffdio_range`. A failure (EINVAL: range not registered) leaves
    // nobody waiting that we could wake.
    let _ = unsafe { ioctl_retry(uffd, UFFDIO_WAKE, &mut range) };
}

/// Write-protects (`protect`) or unprotects one page; unprotecting wakes its waiters.
pub(crate) fn write_protect(uffd: libc::c_int, addr: usize, protect: bool) -> Result<(), i32> {
    let mut wp = UffdioWriteprotect {
        range: UffdioRange {
            start: addr as u64,
            len: PAGE_SIZE as u64,
        },
        mode: if protect { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 },
    };
    // SAFETY: the argument is a `uffdio_writeprotect`.
    unsafe { ioctl_retry(uffd, UFFDIO_WRITEPROTECT, &mut wp) }
}

/// Maps a copy of the page at `src` at the missing page `dst` without waking its waiters (the
/// caller wakes them with [`wake`] once the page is `RESIDENT`).
///
/// # Safety
/// `src` must be valid for `PAGE_SIZE` reads.
pub(crate) unsafe fn copy_page(uffd: libc::c_int, dst: usize, src: *const u8) -> Result<(), i32> {
    let mut copy = UffdioCopy {
        dst: dst as u64,
        src: src as u64,
        len: PAGE_SIZE as u64,
        mode: UFFDIO_COPY_MODE_DONTWAKE,
        copy: 0,
    };
    loop {
        // SAFETY: the argument is a `uffdio_copy`; `src` is readable per the contract.
        if unsafe { libc::ioctl(uffd, UFFDIO_COPY, &mut copy) } == 0 {
            return Ok(());
        }
        match errno() {
            // Interrupted or raced with an address-space change: `copy` tells how much was done
            // (nothing or the whole page, since one page is copied).
            libc::EINTR | libc::EAGAIN if copy.copy != PAGE_SIZE as i64 => copy.copy = 0,
            libc::EINTR | libc::EAGAIN => return Ok(()),
            e => return Err(e),
        }
    }
}

/// Creates a userfaultfd (`O_CLOEXEC | O_NONBLOCK`): the system call; if that is not permitted,
/// `/dev/userfaultfd`; then the system call restricted to user-mode faults.
fn create_fd() -> io::Result<libc::c_int> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the userfaultfd system call takes one integer argument.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        return Ok(fd as libc::c_int);
    }
    let first = io::Error::last_os_error();
    if first.raw_os_error() != Some(libc::EPERM) {
        return Err(first);
    }
    // SAFETY: valid C string literal.
    let dev = unsafe { libc::open(c"/dev/userfaultfd".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if dev >= 0 {
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its argument.
        let fd = unsafe { libc::ioctl(dev, USERFAULTFD_IOC_NEW, flags) };
        // SAFETY: `dev` is ours.
        unsafe { libc::close(dev) };
        if fd >= 0 {
            return Ok(fd);
        }
    }
    // Unprivileged fallback: faults taken inside system calls are then not served (EFAULT).
    // SAFETY: as above.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY) };
    if fd >= 0 {
        return Ok(fd as libc::c_int);
    }
    Err(first)
}

/// Opens a userfaultfd with the write-protect and thread-id features and registers
/// `[base, base + len)` (an anonymous private mapping) for missing and write-protect faults.
/// Returns the descriptor.
pub(crate) fn open_registered(base: usize, len: usize) -> Result<libc::c_int> {
    let err = |op: &'static str, source: io::Error| Error::Userfaultfd { op, source };
    let uffd = create_fd().map_err(|e| err("userfaultfd", e))?;
    let close_with = |op: &'static str, source: io::Error| {
        // SAFETY: `uffd` is ours and not yet handed out.
        unsafe { libc::close(uffd) };
        err(op, source)
    };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID,
        ioctls: 0,
    };
    // SAFETY: the argument is a `uffdio_api`.
    if unsafe { libc::ioctl(uffd, UFFDIO_API, &mut api) } != 0 {
        return Err(close_with(
            "UFFDIO_API (write-protect and thread-id features)",
            io::Error::last_os_error(),
        ));
    }
    let mut reg = UffdioRegister {
        range: UffdioRange {
            start: base as u64,
            len: len as u64,
        },
        mode: UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: the argument is a `uffdio_register`.
    if unsafe { libc::ioctl(uffd, UFFDIO_REGISTER, &mut reg) } != 0 {
        return Err(close_with("UFFDIO_REGISTER", io::Error::last_os_error()));
    }
    let needed = IOCTL_WAKE | IOCTL_COPY | IOCTL_WRITEPROTECT;
    if reg.ioctls & needed != needed {
        return Err(close_with(
            "UFFDIO_REGISTER (copy, wake and write-protect ioctls)",
            io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        ));
    }
    Ok(uffd)
}
