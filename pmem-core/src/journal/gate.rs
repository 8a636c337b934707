//! The write-ahead gate between a journal and the external memory it journals (nvme-backing's
//! paged region): the memory may write a changed page home only once every journal record
//! appended so far is durable.
//!
//! The memory checks the gate where it writes back, which may be a SIGSEGV handler: so
//! [`WriteAheadGate::wait_durable`] is async-signal-safe. It reads two counters (the last record
//! appended, the last record durable); when they differ it asks the journal's write-ahead
//! thread for a sync (one `write` to an eventfd) and waits, yielding, until the durable counter
//! passes its target. The write-ahead thread syncs without taking any lock a thread may hold
//! while it touches pool memory (see the journal's module docs), so the wait cannot deadlock
//! with the faulting thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const OPEN: u32 = 0;
const FAILED: u32 = 1;
const CLOSED: u32 = 2;

/// Holds back write-back of changed pages until the journal covering them is durable (the
/// write-ahead rule). Made by the region for a journaled pool on external memory and handed to
/// it through [`ExternalMemory::install_write_ahead`](crate::region::ExternalMemory::install_write_ahead).
#[derive(Debug)]
pub struct WriteAheadGate {
    /// Sequence number of the last record appended (in the journal's buffer).
    appended: AtomicU64,
    /// Sequence number of the last record made durable.
    durable: AtomicU64,
    /// `OPEN`, `FAILED` (the journal cannot sync) or `CLOSED` (no write-ahead thread).
    state: AtomicU32,
    /// Requests to the write-ahead thread (an eventfd).
    requests: OwnedFd,
    /// Write-backs that had to wait for a journal sync.
    waits: AtomicU64,
    /// Write-backs of changed data checked against the gate.
    checks: AtomicU64,
}

impl WriteAheadGate {
    /// A gate for a journal whose records up to `durable_seq` are durable.
    pub(crate) fn new(durable_seq: u64) -> io::Result<WriteAheadGate> {
        // SAFETY: eventfd has no memory preconditions; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WriteAheadGate {
            appended: AtomicU64::new(durable_seq),
            durable: AtomicU64::new(durable_seq),
            state: AtomicU32::new(OPEN),
            // SAFETY: `fd` was just created and is owned by nobody else.
            requests: unsafe { OwnedFd::from_raw_fd(fd) },
            waits: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        })
    }

    /// Waits until every journal record appended before the call is durable. Returns `false`
    /// if it never will be (the journal failed, or the pool is closing without a durable
    /// journal): the caller must then not write changed data home.
    ///
    /// Async-signal-safe: only atomics, `write(2)` and `sched_yield(2)`. Call it after the page
    /// to be written can no longer change (sealed): every store in it then follows, in its
    /// thread, the append of the record of its undo entry, so the target read here covers it.
    pub fn wait_durable(&self) -> bool {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let target = self.appended.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= target {
            return true;
        }
        if self.state.load(Ordering::SeqCst) != OPEN {
            return false;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to our eventfd; write(2) is async-signal-safe. A
        // failure (the counter is saturated) still leaves a request pending.
        unsafe { libc::write(self.requests.as_raw_fd(), (&raw const one).cast(), 8) };
        loop {
            if self.durable.load(Ordering::SeqCst) >= target {
                return true;
            }
            if self.state.load(Ordering::SeqCst) != OPEN {
                return self.durable.load(Ordering::SeqCst) >= target;
            }
            // SAFETY: sched_yield is async-signal-safe and has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// Write-backs of changed data that had to wait for a journal sync.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Write-backs of changed data checked against the gate (waiting or not).
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Sequence number of the last record appended.
    pub fn appended_seq(&self) -> u64 {
        self.appended.load(Ordering::SeqCst)
    }

    /// Sequence number of the last record known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    pub(crate) fn set_appended(&self, seq: u64) {
        self.appended.fetch_max(seq, Ordering::SeqCst);
    }

    pub(crate) fn set_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::SeqCst);
    }

    /// The journal failed: waiters give up.
    pub(crate) fn fail(&self) {
        self.state.store(FAILED, Ordering::SeqCst);
        self.poke();
    }

    /// The write-ahead thread is stopping: later waits give up unless already durable.
    pub(crate) fn close(&self) {
        let _ = self
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::SeqCst, Ordering::SeqCst);
        self.poke();
    }

    fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to our eventfd.
        unsafe { libc::write(self.requests.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Blocks until a write-back asks for a sync. Returns `false` once the gate is closed or
    /// failed (the write-ahead thread then ends).
    pub(crate) fn next_request(&self) -> bool {
        loop {
            if self.state.load(Ordering::SeqCst) != OPEN {
                return false;
            }
            let mut n: u64 = 0;
            // SAFETY: reads 8 bytes into a local from our (blocking) eventfd.
            let r = unsafe { libc::read(self.requests.as_raw_fd(), (&raw mut n).cast(), 8) };
            if r == 8 {
                return self.state.load(Ordering::SeqCst) == OPEN;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // Nobody would serve later requests: waiters must not spin forever.
                self.fail();
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    #[cfg_attr(miri, ignore = "eventfd")]
    fn a_durable_gate_passes_and_a_failed_one_refuses_what_is_not_durable() {
        let g = WriteAheadGate::new(5).unwrap();
        assert!(g.wait_durable());
        g.set_appended(6);
        g.fail();
        assert!(!g.wait_durable(), "not durable, and nobody will sync");
        g.set_durable(6);
        assert!(g.wait_durable(), "durable: passes whatever the state");
        assert_eq!((g.checks(), g.waits()), (3, 0));
    }

    #[test]
    #[cfg_attr(miri, ignore = "eventfd")]
    fn a_waiting_write_back_is_served_by_the_write_ahead_thread() {
        let g = Arc::new(WriteAheadGate::new(0).unwrap());
        let server = {
            let g = Arc::clone(&g);
            std::thread::spawn(move || {
                let mut served = 0;
                while g.next_request() {
                    g.set_durable(g.appended_seq());
                    served += 1;
                }
                served
            })
        };
        g.set_appended(3);
        assert!(g.wait_durable());
        assert_eq!((g.waits(), g.durable_seq()), (1, 3));
        g.close();
        assert!(server.join().unwrap() >= 1);
        g.set_appended(4);
        assert!(!g.wait_durable(), "closed: nobody syncs record 4");
    }

    #[test]
    #[cfg_attr(miri, ignore = "eventfd")]
    fn a_write_back_waiting_when_the_journal_fails_is_refused_unless_durable() {
        // The waiter is inside its wait (it asked for a sync) when the journal fails: it gives
        // up, and refuses, since record 6 never became durable.
        // A gate with record 6 appended, 5 durable, and a thread waiting inside `wait_durable`.
        let waiting = || {
            let g = Arc::new(WriteAheadGate::new(5).unwrap());
            g.set_appended(6);
            let waiter = {
                let g = Arc::clone(&g);
                std::thread::spawn(move || g.wait_durable())
            };
            while g.waits() == 0 {
                std::thread::yield_now();
            }
            (g, waiter)
        };
        let (g, waiter) = waiting();
        g.fail();
        assert!(!waiter.join().unwrap(), "record 6 is not durable");
        // Made durable, then closed while a waiter waits for it: it passes.
        let (g, waiter) = waiting();
        g.set_durable(6);
        g.close();
        assert!(waiter.join().unwrap(), "record 6 is durable");
    }
}
