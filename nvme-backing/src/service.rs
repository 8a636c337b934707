//! The userfaultfd fault-service thread: reads the kernel's fault messages and serves them
//! through the page state machine (`engine.rs`), installing pages with the ioctls of `uffd.rs`.
//! See `uffd.rs` for the mode as a whole.

use std::io;
use std::thread::JoinHandle;

use crate::checksum::StackRoom;
use crate::engine::{PageBuf, Shared};
use crate::error::{Error, Result};
use crate::sys::{errno, fatal};
use crate::uffd::{wake, UffdMsg, UFFD_EVENT_PAGEFAULT, UFFD_PAGEFAULT_FLAG_WP};
use crate::PAGE_SIZE;

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
            let _block = crate::sys::SignalBlock::new();
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
