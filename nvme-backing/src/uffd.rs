//! The userfaultfd fault mode: the kernel interface (`linux/userfaultfd.h`, which `libc` does not
//! cover) and the fault-service thread.
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
use std::thread::JoinHandle;

use crate::checksum::StackRoom;
use crate::error::{Error, Result};
use crate::region::{errno, fatal, PageBuf, Shared};
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
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;

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
struct UffdMsg {
    event: u8,
    _reserved1: u8,
    _reserved2: u16,
    _reserved3: u32,
    flags: u64,
    address: u64,
    ptid: u32,
    _pad: u32,
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

/// The region's state as handed to the service thread.
struct SharedPtr(*const Shared);

// SAFETY: `Shared` is only mutated through atomics and outlives the thread (joined in
// `Service::stop` before the region frees it).
unsafe impl Send for SharedPtr {}

/// The fault-service thread of one region and the eventfd that stops it.
#[derive(Debug)]
pub(crate) struct Service {
    stop: libc::c_int,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts serving the faults of `shared` (whose userfaultfd is `uffd`).
    ///
    /// # Safety
    /// `shared` must stay valid until [`stop`](Self::stop) returns.
    pub(crate) unsafe fn start(shared: *const Shared, uffd: libc::c_int) -> Result<Service> {
        // SAFETY: plain eventfd creation.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(Error::Userfaultfd {
                op: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        let ptr = SharedPtr(shared);
        // The thread inherits a mask blocking asynchronous signals: a handler run on it could
        // touch the region, and nobody would serve that fault.
        let spawned = {
            let _block = crate::region::SignalBlock::new();
            std::thread::Builder::new()
                .name("nvme-backing-uffd".into())
                .spawn(move || {
                    let ptr = ptr;
                    // SAFETY: valid until `stop` joins us.
                    serve(unsafe { &*ptr.0 }, uffd, stop)
                })
        };
        match spawned {
            Ok(thread) => Ok(Service {
                stop,
                thread: Some(thread),
            }),
            Err(source) => {
                // SAFETY: ours.
                unsafe { libc::close(stop) };
                Err(Error::Userfaultfd {
                    op: "spawn the fault-service thread",
                    source,
                })
            }
        }
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&mut self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd (cannot block: EFD_NONBLOCK, counter far from
        // overflow).
        unsafe { libc::write(self.stop, (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            // The thread does not panic (its failures abort or signal the faulting thread).
            let _ = t.join();
        }
        // SAFETY: ours, closed once.
        unsafe { libc::close(self.stop) };
        self.stop = -1;
    }
}

/// The service loop: waits for messages on `uffd` until `stop` is signalled.
fn serve(shared: &Shared, uffd: libc::c_int, stop: libc::c_int) {
    // The staging page: loads are read into it (page-aligned, as direct I/O needs), then copied
    // in by `UFFDIO_COPY`.
    let mut staging = Box::new(PageBuf([0; PAGE_SIZE]));
    let mut msgs = [UffdMsg {
        event: 0,
        _reserved1: 0,
        _reserved2: 0,
        _reserved3: 0,
        flags: 0,
        address: 0,
        ptid: 0,
        _pad: 0,
    }; 16];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: uffd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            fatal("nvme-backing: poll on the userfaultfd failed\n");
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & libc::POLLIN == 0 {
            if fds[0].revents != 0 {
                fatal("nvme-backing: the userfaultfd reported an error\n");
            }
            continue;
        }
        // SAFETY: reading whole messages into a buffer of `UffdMsg`s.
        let got = unsafe { libc::read(uffd, msgs.as_mut_ptr().cast(), std::mem::size_of_val(&msgs)) };
        if got < 0 {
            match errno() {
                libc::EAGAIN | libc::EINTR => continue,
                _ => fatal("nvme-backing: read from the userfaultfd failed\n"),
            }
        }
        let count = got as usize / std::mem::size_of::<UffdMsg>();
        for msg in &msgs[..count] {
            if msg.event != UFFD_EVENT_PAGEFAULT {
                continue;
            }
            let addr = (msg.address as usize) & !(PAGE_SIZE - 1);
            let page = addr.wrapping_sub(shared.base_addr()) / PAGE_SIZE;
            if msg.flags & UFFD_PAGEFAULT_FLAG_WP != 0 {
                // A store hit a page being evicted: once the eviction is over (the page is gone,
                // or restored on a failed write-back), let the store retry.
                shared.wait_not_evicting(page);
                wake(uffd, addr, PAGE_SIZE);
                continue;
            }
            // Loaded now, or present already (a stale message for a page loaded meanwhile):
            // either way the page is RESIDENT, so the woken threads see it as in signal mode.
            // The service thread's own stack: ample for either CRC32C implementation.
            match shared.serve_fault(page, staging.0.as_mut_ptr(), StackRoom::Ample) {
                Ok(()) => wake(uffd, addr, PAGE_SIZE),
                Err(text) => fail_thread(text, msg.ptid),
            }
        }
    }
}

/// Reports a fault that cannot be served: the message goes to stderr and the faulting thread gets
/// `SIGBUS` (as for an I/O error under a file `mmap`; by default it kills the process). Without a
/// thread id the process aborts.
fn fail_thread(msg: &str, tid: u32) {
    if tid == 0 {
        fatal(msg);
    }
    // SAFETY: write(2) of a valid buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    // SAFETY: tgkill with our own process id and a thread id the kernel reported.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::pid_t, libc::SIGBUS) };
}
