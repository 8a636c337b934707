//! Async-signal-safe process helpers used by every layer of the paged region: `errno`, `fatal`
//! and blocking asynchronous signals.

use std::io;

/// Writes `msg` to stderr and aborts: the handler cannot report an error to the faulting code.
pub(crate) fn fatal(msg: &str) -> ! {
    // SAFETY: write(2) and abort(3) are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

/// The calling thread's `errno` (`EIO` if none is set).
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Blocks asynchronous signals on this thread until dropped (an eviction in normal context owns a page
/// that a signal handler on this thread could otherwise fault on and wait for forever).
pub(crate) struct SignalBlock(libc::sigset_t);

impl SignalBlock {
    pub(crate) fn new() -> Self {
        // SAFETY: sigset_t is plain data; the calls get valid pointers.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            // Synchronous signals stay deliverable (blocking them would turn a crash into a
            // silent kill); this code does not touch the application's view of the region.
            for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
                libc::sigdelset(&mut all, sig);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalBlock(old)
        }
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}
