//! What only the userfaultfd fault mode does: evicted pages give their memory back, system calls
//! may fill non-resident pages (in signal mode they get `EFAULT`), and a kernel or process without
//! userfaultfd gives a clear error (simulated with a seccomp filter on one thread).

use std::os::unix::fs::FileExt;

use nvme_backing::{Error, FaultMode, PagedRegion, PAGE_SIZE};

/// Pages of `[ptr, ptr + pages * PAGE_SIZE)` present in memory (`mincore`).
fn present_pages(ptr: *mut u8, pages: usize) -> usize {
    let mut vec = vec![0u8; pages];
    // SAFETY: the range is one mapping of `pages` pages; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(ptr.cast(), pages * PAGE_SIZE, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

#[test]
fn evicted_pages_give_their_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = PagedRegion::create_with_mode(dir.path().join("f"), 64 * PAGE_SIZE, 64, FaultMode::Userfaultfd)
        .unwrap();
    assert_eq!(r.fault_mode(), FaultMode::Userfaultfd);
    assert_eq!(present_pages(r.as_ptr(), 64), 0);
    let mut buf = vec![0u8; 64 * PAGE_SIZE];
    r.read_at(0, &mut buf).unwrap();
    assert_eq!(r.resident_pages(), 64);
    assert_eq!(present_pages(r.as_ptr(), 64), 64);
    assert_eq!(r.evict_to(4).unwrap(), 60);
    assert_eq!(r.resident_pages(), 4);
    assert_eq!(present_pages(r.as_ptr(), 64), 4);
    // The evicted pages fault back in with their contents.
    r.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(r.stats().pages_faulted, 64 + 60);
}

#[test]
fn system_calls_fill_non_resident_pages_in_userfaultfd_mode_only() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::write(&source, vec![0x5Au8; PAGE_SIZE]).unwrap();
    let source = std::fs::File::open(&source).unwrap();
    for mode in [FaultMode::Signal, FaultMode::Userfaultfd] {
        let path = dir.path().join(format!("{mode:?}"));
        let r = PagedRegion::create_with_mode(&path, 4 * PAGE_SIZE, 2, mode).unwrap();
        // SAFETY: page 1 of the region, PAGE_SIZE bytes, not otherwise accessed meanwhile.
        let dst = unsafe { std::slice::from_raw_parts_mut(r.as_ptr().add(PAGE_SIZE), PAGE_SIZE) };
        let got = source.read_at(dst, 0);
        match mode {
            FaultMode::Signal => {
                let e = got.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EFAULT), "{e}");
                assert_eq!(r.stats().pages_faulted, 0);
            }
            _ => {
                assert_eq!(got.unwrap(), PAGE_SIZE);
                assert_eq!(r.stats().pages_faulted, 1);
                r.flush_all().unwrap();
                assert_eq!(r.stats().blocks_written, 4);
                let file = std::fs::read(&path).unwrap();
                assert!(file[PAGE_SIZE..2 * PAGE_SIZE].iter().all(|&b| b == 0x5A));
            }
        }
    }
}

/// How the seccomp filter of [`with_denied_userfaultfd`] answers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Deny {
    /// errno for the `userfaultfd` system call.
    syscall: i32,
    /// Also fail `ioctl(USERFAULTFD_IOC_NEW)` on `/dev/userfaultfd` with `EPERM`.
    dev_ioctl: bool,
}

#[cfg(target_arch = "x86_64")]
impl Deny {
    fn syscall(errno: i32) -> Deny {
        Deny {
            syscall: errno,
            dev_ioctl: false,
        }
    }
}

/// Runs `f` on a new thread whose `userfaultfd` system calls fail as `deny` says (a seccomp
/// filter, which dies with the thread).
#[cfg(target_arch = "x86_64")]
fn with_denied_userfaultfd<T: Send>(deny: Deny, f: impl FnOnce() -> T + Send) -> T {
    const USERFAULTFD_IOC_NEW: u32 = 0xAA00;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut prog = vec![
        // seccomp_data.nr
        stmt(load, 0),
        jeq(libc::SYS_userfaultfd as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | deny.syscall as u32),
    ];
    if deny.dev_ioctl {
        prog.extend([
            jeq(libc::SYS_ioctl as u32, 0, 3),
            // Low half of seccomp_data.args[1], the request.
            stmt(load, 24),
            jeq(USERFAULTFD_IOC_NEW, 0, 1),
            stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ]);
    }
    prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    std::thread::scope(|s| {
        s.spawn(|| {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr().cast_mut(),
            };
            // SAFETY: `fprog` points at a valid filter program that outlives the calls; the
            // filter applies to this thread only (no TSYNC).
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
                assert_eq!(
                    libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        0,
                        &fprog as *const libc::sock_fprog
                    ),
                    0,
                    "{}",
                    std::io::Error::last_os_error()
                );
            }
            f()
        })
        .join()
        .unwrap()
    })
}

/// Creates a 4-page userfaultfd-mode region at `path` on a thread denied as `deny` says.
#[cfg(target_arch = "x86_64")]
fn create_denied(deny: Deny, path: &std::path::Path) -> nvme_backing::Result<PagedRegion> {
    with_denied_userfaultfd(deny, || {
        PagedRegion::create_with_mode(path, 4 * PAGE_SIZE, 2, FaultMode::Userfaultfd)
    })
}

/// Asserts that creating the userfaultfd failed with `errno`.
#[cfg(target_arch = "x86_64")]
fn assert_no_userfaultfd(r: nvme_backing::Result<PagedRegion>, errno: i32) {
    match r {
        Err(e @ Error::Userfaultfd { .. }) => {
            let Error::Userfaultfd { op, source } = &e else {
                unreachable!()
            };
            assert_eq!(*op, "userfaultfd");
            assert_eq!(source.raw_os_error(), Some(errno));
            assert!(
                e.to_string().contains("userfaultfd fault mode unavailable"),
                "{e}"
            );
        }
        other => panic!("expected Error::Userfaultfd, got {other:?}"),
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_kernel_without_userfaultfd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let deny = Deny::syscall(libc::ENOSYS);
    assert_no_userfaultfd(create_denied(deny, &path), libc::ENOSYS);
    // Signal mode does not need it.
    let r = with_denied_userfaultfd(deny, || PagedRegion::create(&path, 4 * PAGE_SIZE, 2));
    r.unwrap().write_at(0, b"ok").unwrap();
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_denied_userfaultfd_system_call_falls_back_to_dev_userfaultfd_or_fails_with_eperm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let only_syscall = Deny::syscall(libc::EPERM);
    let opened = create_denied(only_syscall, &path);
    // /dev/userfaultfd (Linux 6.1+) needs read-write access to the device.
    let dev_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")
        .is_ok();
    if dev_usable {
        let mut r = opened.unwrap();
        r.write_at(PAGE_SIZE, b"through /dev/userfaultfd").unwrap();
        r.persist(PAGE_SIZE, 24).unwrap();
        assert_eq!(r.stats().pages_faulted, 1);
    } else {
        assert!(matches!(opened, Err(Error::Userfaultfd { .. })), "{opened:?}");
    }
    let everything = Deny {
        syscall: libc::EPERM,
        dev_ioctl: true,
    };
    assert_no_userfaultfd(create_denied(everything, &path), libc::EPERM);
}
