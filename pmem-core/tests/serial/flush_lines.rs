//! Guards the flush instructions themselves (`flush.rs`'s `arch/x86_64.rs`, which the simulated
//! domain never runs): a flush of a range writes back exactly the lines the range touches, no
//! fewer and no more, with each flush instruction this CPU has.
//!
//! clwb, clflushopt and clflush check access to their line as a load does, so a flush that
//! reaches a page mapped without access faults. A forked child flushes one range next to such a
//! page and exits; the parent tells from the child's death by SIGSEGV, or its clean exit,
//! whether a line of that page was flushed. Neither timing nor durability is observed (neither
//! can be here): only which lines the instructions are given. (In the `serial` binary: a forked
//! child holds a copy of every descriptor of this process.)

use std::collections::HashSet;

use pmem_core::internals::flush::flush_range;
use pmem_core::FlushInstruction;

const PAGE: usize = 4096;

/// Three anonymous pages: readable, no access (the fence), readable.
struct Fenced {
    base: *mut u8,
}

impl Fenced {
    fn new() -> Fenced {
        // SAFETY: a new private anonymous mapping (no address hint), checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        let base = base.cast::<u8>();
        // SAFETY: the middle page of the mapping just made, page-aligned.
        let r = unsafe { libc::mprotect(base.add(PAGE).cast(), PAGE, libc::PROT_NONE) };
        assert_eq!(r, 0, "mprotect");
        Fenced { base }
    }

    /// The address `off` bytes from the start of the fence page (negative: before it).
    fn at(&self, off: isize) -> *const u8 {
        self.base.wrapping_add(PAGE).wrapping_offset(off)
    }
}

impl Drop for Fenced {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once.
        unsafe { libc::munmap(self.base.cast(), 3 * PAGE) };
    }
}

/// Whether flushing `len` bytes at `addr` with `insn` touches a line of a page without access:
/// a forked child makes the flush and exits, and dies of SIGSEGV if the flush faulted.
fn faults(insn: FlushInstruction, addr: *const u8, len: usize) -> bool {
    // SAFETY: the child runs only async-signal-safe work before `_exit`: `setrlimit`, the flush
    // instructions and a thread-local counter of plain integers (`flush_range`), no allocation
    // and no lock. Every line of the range lies in the three mapped pages (the tests keep their
    // ranges inside them) and `insn` is one this CPU has (`cpu_flags`); a line of the fence page
    // faults, which kills the child only: that is what the parent looks for.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            flush_range(insn, addr, len);
            libc::_exit(0)
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        assert_eq!(libc::WEXITSTATUS(status), 0, "the child failed");
        false
    } else {
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
            "the child ended with status {status:#x}, not by a fault"
        );
        true
    }
}

/// The CPU's feature flags as Linux reports them (`/proc/cpuinfo`'s first `flags` line).
fn cpu_flags() -> HashSet<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, flags)| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn each_flush_instruction_flushes_exactly_the_lines_of_its_range() {
    let _serial = crate::serial();
    let flags = cpu_flags();
    let instructions = [
        (FlushInstruction::Clwb, "clwb"),
        (FlushInstruction::ClflushOpt, "clflushopt"),
        (FlushInstruction::Clflush, "clflush"),
    ];
    let page = PAGE as isize;
    // (start relative to the fence page, length, whether a line of the fence is flushed)
    let cases: &[(isize, usize, bool)] = &[
        // Ending at the fence: its first line is not flushed (a loop bound one line too far).
        (-64, 64, false),
        (-128, 128, false),
        (-192, 192, false),
        (-100, 100, false),
        (-1, 1, false),
        // Reaching one byte into the fence from 1, 2 and 3 lines before it: its first line is
        // flushed (the last line of a range skipped, a stride of two lines).
        (-64, 65, true),
        (-128, 129, true),
        (-192, 193, true),
        (-1, 2, true),
        (0, 1, true),
        // Starting after the fence: its last line is not flushed (a range started a line early);
        // starting in its last byte: that line is flushed (the first line of a range skipped).
        (page, 64, false),
        (page, 200, false),
        (page + 1, 63, false),
        (page - 1, 2, true),
        (page - 1, 129, true),
        (page - 64, 192, true),
    ];
    let fenced = Fenced::new();
    let mut tested = 0;
    for (insn, flag) in instructions {
        if !flags.contains(flag) {
            eprintln!("this CPU has no {flag}: not tested");
            continue;
        }
        tested += 1;
        for &(off, len, fence_flushed) in cases {
            assert_eq!(
                faults(insn, fenced.at(off), len),
                fence_flushed,
                "{flag} of {len} bytes at {off} from the fence"
            );
        }
    }
    if tested == 0 {
        eprintln!("no flush instruction reported in /proc/cpuinfo: nothing tested");
    }
}
