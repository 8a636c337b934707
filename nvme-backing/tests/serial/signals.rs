//! The SIGSEGV handler chains faults that are not ours and aborts on I/O errors it cannot report;
//! the userfaultfd service thread sends SIGBUS to the faulting thread instead (as a file `mmap`
//! does on a read error).
//!
//! Each case re-runs this test binary as a child process (selected by an environment variable)
//! and checks how the child died.

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "NVME_BACKING_SIGNAL_CHILD";

/// Re-runs test `test` of this module (its name in the binary: `signals::test`) as a child.
fn run_child(test: &str, case: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("signals::{test}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, case)
        .output()
        .unwrap()
}

fn child_case() -> Option<String> {
    std::env::var(CHILD).ok()
}

#[test]
fn foreign_fault_still_kills_the_process() {
    let _serial = crate::serial();
    if child_case().as_deref() == Some("foreign") {
        let dir = tempfile::tempdir().unwrap();
        let r = PagedRegion::create(dir.path().join("f"), 4 * PAGE_SIZE, 2).unwrap();
        // Our region works...
        // SAFETY: in bounds.
        unsafe { r.as_ptr().write_volatile(1) };
        // ...and a fault elsewhere is not swallowed.
        let bad = 16usize as *mut u8;
        // SAFETY: not safe at all: this is the fault under test, in a child process.
        unsafe { bad.write_volatile(1) };
        std::process::exit(0);
    }
    let out = run_child("foreign_fault_still_kills_the_process", "foreign");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
}

/// In a child: opens a 4-page region in `mode`, shrinks the file to one page behind its back and
/// touches page 3, whose load hits end of file.
fn touch_past_the_shrunk_file(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let r = PagedRegion::create_with_mode(&path, 4 * PAGE_SIZE, 2, mode).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(PAGE_SIZE as u64)
        .unwrap();
    // SAFETY: in bounds of the region; the fault cannot be served.
    unsafe { r.as_ptr().add(3 * PAGE_SIZE).write_volatile(1) };
    std::process::exit(0);
}

#[test]
fn read_error_in_the_handler_aborts_with_a_message() {
    let _serial = crate::serial();
    if child_case().as_deref() == Some("shrunk") {
        touch_past_the_shrunk_file(FaultMode::Signal);
    }
    let out = run_child("read_error_in_the_handler_aborts_with_a_message", "shrunk");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nvme-backing: pread"), "{stderr}");
}

#[test]
fn read_error_in_the_userfaultfd_service_sends_sigbus_with_a_message() {
    let _serial = crate::serial();
    let test = "read_error_in_the_userfaultfd_service_sends_sigbus_with_a_message";
    if child_case().as_deref() == Some("shrunk-uffd") {
        touch_past_the_shrunk_file(FaultMode::Userfaultfd);
    }
    let out = run_child(test, "shrunk-uffd");
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nvme-backing: pread"), "{stderr}");
}
