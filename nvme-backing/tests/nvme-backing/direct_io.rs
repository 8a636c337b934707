//! Direct I/O (`IoMode`): chosen on a disk file system, data survives close and reopen, a dirty
//! 1 KiB block is written alone (counted by the kernel's per-thread I/O accounting), the page
//! cache holds nothing of the file, and tmpfs falls back to buffered I/O under `Auto` and is
//! refused under `Direct`. (A ptm pool on a direct-I/O region: `pool.rs`.)
//!
//! Set `NVME_BACKING_TEST_4K_DEVICE` to a block device with 4 KiB logical sectors whose contents
//! may be destroyed (as root: `truncate -s 8M img; losetup --sector-size 4096 -f --show img`) to
//! also check writes widened to the device's alignment.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

use nvme_backing::{Error, FaultMode, IoMode, PagedOptions, PagedRegion, BLOCK_SIZE, PAGE_SIZE};

const EXT4_SUPER_MAGIC: i64 = 0xEF53;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// A temporary directory on the disk under `target/` (not tmpfs).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Whether `dir` is on a file system known to do direct I/O (ext4, XFS, btrfs). Elsewhere the
/// tests that need it say so and check nothing.
fn direct_capable(dir: &Path) -> bool {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `st` is plain data filled by the call; `c` is a valid C string.
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        assert_eq!(libc::statfs(c.as_ptr(), &mut st), 0);
        st
    };
    let known = [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC].contains(&(st.f_type as i64));
    if !known {
        eprintln!(
            "{} is on file system type {:#x}, not ext4/XFS/btrfs: direct I/O not checked",
            dir.display(),
            st.f_type
        );
    }
    known
}

fn pattern(i: usize) -> u8 {
    (i * 31 % 251) as u8
}

/// A file of `pages` pages of [`pattern`] in `dir`, not in the page cache.
fn backing(dir: &Path, pages: usize) -> (PathBuf, Vec<u8>) {
    let path = dir.join("backing");
    let contents: Vec<u8> = (0..pages * PAGE_SIZE).map(pattern).collect();
    File::create(&path).unwrap().write_all(&contents).unwrap();
    drop_cache(&path);
    (path, contents)
}

/// Pages of `path` in the page cache (`mincore` of a fresh shared mapping of it).
fn cached_pages(path: &Path) -> usize {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh read-only mapping of an open file, unmapped below; `vec` has one byte per
    // page.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let mut vec = vec![0u8; len.div_ceil(PAGE_SIZE)];
        assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
        libc::munmap(map, len);
        vec.iter().filter(|&&v| v & 1 != 0).count()
    }
}

/// Writes back and drops the page cache of `path`.
fn drop_cache(path: &Path) {
    let file = File::open(path).unwrap();
    for _ in 0..100 {
        file.sync_all().unwrap();
        // SAFETY: advice on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        if cached_pages(path) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("cannot drop the page cache of {}", path.display());
}

/// `(wchar, write_bytes)` of this thread: bytes passed to write system calls, and bytes this
/// thread caused to be written to storage (`/proc/thread-self/io`).
fn thread_writes() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/thread-self/io: {io}"))
    };
    (field("wchar:"), field("write_bytes:"))
}

fn options(mode: FaultMode, io: IoMode) -> PagedOptions {
    PagedRegion::options().fault_mode(mode).io_mode(io)
}

fn auto_chooses_direct_on_disk_and_data_survives_reopen(mode: FaultMode) {
    let dir = disk_dir();
    if !direct_capable(dir.path()) {
        return;
    }
    let path = dir.path().join("backing");
    let pages = 16;
    let len = pages * PAGE_SIZE;
    {
        // A new (sparse) file, 4 resident pages: loads, evictions and write-back all direct.
        let r = PagedRegion::create_with_mode(&path, len, 4, mode).unwrap();
        assert_eq!(r.io_mode(), IoMode::Direct);
        assert_eq!(r.fault_mode(), mode);
        let align = r.direct_io_alignment().expect("an alignment with direct I/O");
        assert!(align.is_power_of_two() && align <= PAGE_SIZE, "{align}");
        let mut zeros = vec![1u8; len];
        r.read_at(0, &mut zeros).unwrap();
        assert!(zeros.iter().all(|&b| b == 0));
        for p in 0..pages {
            for b in 0..PAGE_SIZE {
                let i = p * PAGE_SIZE + b;
                // SAFETY: in bounds; pages fault in (and others are evicted) as needed.
                unsafe { r.as_ptr().add(i).write_volatile(pattern(i)) };
            }
        }
        r.persist(0, len).unwrap();
        r.drain().unwrap();
        assert!(r.stats().evictions >= (pages - 4) as u64);
    }
    let file = std::fs::read(&path).unwrap();
    assert!(file.iter().enumerate().all(|(i, &b)| b == pattern(i)));

    let r = options(mode, IoMode::Direct).open(&path, len, 4).unwrap();
    assert_eq!(r.io_mode(), IoMode::Direct);
    let mut back = vec![0u8; len];
    r.read_at(0, &mut back).unwrap();
    assert!(back.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    r.flush_all().unwrap();
    assert_eq!(r.stats().blocks_written, 0);
    drop(r);
    // Buffered when asked, on the same file.
    let r = options(mode, IoMode::Buffered).open(&path, len, 4).unwrap();
    assert_eq!(r.io_mode(), IoMode::Buffered);
    assert_eq!(r.direct_io_alignment(), None);
}

fn one_dirty_block_writes_only_that_block_direct(mode: FaultMode) {
    let dir = disk_dir();
    if !direct_capable(dir.path()) {
        return;
    }
    let (path, contents) = backing(dir.path(), 4);
    let mut r = options(mode, IoMode::Direct)
        .open(&path, 4 * PAGE_SIZE, 4)
        .unwrap();
    let align = r.direct_io_alignment().unwrap();
    // What one dirty block costs: itself, or the aligned span holding it.
    let span = align.max(BLOCK_SIZE);
    let mut buf = vec![0u8; 4 * PAGE_SIZE];
    r.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, contents);
    // Change 3 bytes inside block 2 of page 1.
    let off = PAGE_SIZE + 2 * BLOCK_SIZE + 10;
    r.write_at(off, b"xyz").unwrap();
    let before = thread_writes();
    r.persist(0, 4 * PAGE_SIZE).unwrap();
    let after = thread_writes();
    r.drain().unwrap();
    let s = r.stats();
    assert_eq!(s.blocks_written, 1);
    assert_eq!(s.pages_written, 1);
    assert_eq!(s.writeback_bytes, span as u64);
    // The kernel agrees: one write system call of that size, and that many bytes sent to storage.
    assert_eq!(after.0 - before.0, span as u64, "wchar");
    assert_eq!(after.1 - before.1, span as u64, "write_bytes");
    let mut expected = contents.clone();
    expected[off..off + 3].copy_from_slice(b"xyz");
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    drop(r);

    // Buffered, the same store dirties the whole cached folio holding the block: the kernel
    // counts at least a page written (and writes it at the drain).
    drop_cache(&path);
    let mut r = options(mode, IoMode::Buffered)
        .open(&path, 4 * PAGE_SIZE, 4)
        .unwrap();
    r.read_at(0, &mut buf).unwrap();
    r.write_at(off, b"abc").unwrap();
    let before = thread_writes();
    r.persist(0, 4 * PAGE_SIZE).unwrap();
    let after = thread_writes();
    assert_eq!(r.stats().writeback_bytes, BLOCK_SIZE as u64);
    assert_eq!(after.0 - before.0, BLOCK_SIZE as u64, "wchar");
    assert!(
        after.1 - before.1 >= PAGE_SIZE as u64,
        "write_bytes {}",
        after.1 - before.1
    );
}

/// Loads every page of a 64-page file through 8 frames, rewrites 10 pages, persists, evicts
/// everything and drains; returns the file's pages in the page cache afterwards.
fn cached_after_a_workout(mode: FaultMode, io: IoMode, path: &Path) -> usize {
    let pages = 64;
    let r = options(mode, io).open(path, pages * PAGE_SIZE, 8).unwrap();
    assert_eq!(r.io_mode(), io);
    let mut buf = vec![0u8; pages * PAGE_SIZE];
    r.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    for p in (0..pages).step_by(6) {
        // SAFETY: in bounds.
        unsafe {
            r.as_ptr()
                .add(p * PAGE_SIZE + 5)
                .write_volatile(!pattern(p * PAGE_SIZE + 5))
        };
    }
    r.flush_all().unwrap();
    r.evict_to(0).unwrap();
    r.drain().unwrap();
    assert_eq!(r.stats().pages_faulted, (pages + 11) as u64);
    assert_eq!(r.stats().blocks_written, 11);
    drop(r);
    cached_pages(path)
}

fn page_cache_stays_empty_with_direct_io(mode: FaultMode) {
    let dir = disk_dir();
    if !direct_capable(dir.path()) {
        return;
    }
    let (path, _) = backing(dir.path(), 64);
    assert_eq!(cached_pages(&path), 0);
    assert_eq!(cached_after_a_workout(mode, IoMode::Direct, &path), 0);
    // The check sees buffered I/O filling the cache.
    let (path, _) = backing(dir.path(), 64);
    let cached = cached_after_a_workout(mode, IoMode::Buffered, &path);
    assert!(cached >= 32, "{cached} pages cached after buffered I/O");
}

fn tmpfs_is_buffered_under_auto_and_refused_under_direct(mode: FaultMode) {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("no /dev/shm: tmpfs fallback not checked");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = dir.path().join("backing");
    {
        let mut r = options(mode, IoMode::Auto)
            .create(&path, 4 * PAGE_SIZE, 2)
            .unwrap();
        assert_eq!(r.io_mode(), IoMode::Buffered);
        assert_eq!(r.direct_io_alignment(), None);
        r.write_at(PAGE_SIZE + 3, b"tmpfs").unwrap();
        r.persist(0, 4 * PAGE_SIZE).unwrap();
        r.drain().unwrap();
    }
    assert_eq!(
        &std::fs::read(&path).unwrap()[PAGE_SIZE + 3..PAGE_SIZE + 8],
        b"tmpfs"
    );
    match options(mode, IoMode::Direct).open(&path, 4 * PAGE_SIZE, 2) {
        Err(e @ Error::DirectIoUnsupported { .. }) => {
            let Error::DirectIoUnsupported { path: p, reason } = &e else {
                unreachable!()
            };
            assert_eq!(p, &path);
            assert!(reason.contains("STATX_DIOALIGN"), "{reason}");
            let text = e.to_string();
            assert!(
                text.contains("direct I/O unavailable") && text.contains("backing"),
                "{text}"
            );
        }
        other => panic!("expected DirectIoUnsupported, got {other:?}"),
    }
}

/// With 4 KiB sectors a dirty 1 KiB block is written as its whole (aligned) page, and dirty blocks
/// of one page go in one write.
fn writes_are_widened_on_a_4k_sector_device(mode: FaultMode) {
    let Some(dev) = std::env::var_os("NVME_BACKING_TEST_4K_DEVICE") else {
        eprintln!("NVME_BACKING_TEST_4K_DEVICE not set: widened writes not checked");
        return;
    };
    // Both modes' tests use the device: one at a time.
    static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = DEVICE.lock().unwrap_or_else(|p| p.into_inner());
    let dev = PathBuf::from(dev);
    let len = 4 * PAGE_SIZE;
    let contents: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .unwrap()
        .write_all(&contents)
        .unwrap();
    {
        let mut r = options(mode, IoMode::Direct).open(&dev, len, 4).unwrap();
        assert_eq!(r.direct_io_alignment(), Some(PAGE_SIZE));
        let mut buf = vec![0u8; len];
        r.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, contents);
        r.write_at(PAGE_SIZE + 2 * BLOCK_SIZE + 10, b"xyz").unwrap();
        r.write_at(3 * PAGE_SIZE + 5, b"a").unwrap();
        r.write_at(4 * PAGE_SIZE - 5, b"b").unwrap();
        let before = thread_writes();
        r.persist(0, len).unwrap();
        let after = thread_writes();
        r.drain().unwrap();
        let s = r.stats();
        assert_eq!((s.blocks_written, s.pages_written), (3, 2));
        assert_eq!(s.writeback_bytes, 2 * PAGE_SIZE as u64);
        assert_eq!(after.0 - before.0, 2 * PAGE_SIZE as u64, "wchar");
    }
    let mut expected = contents;
    expected[PAGE_SIZE + 2 * BLOCK_SIZE + 10..][..3].copy_from_slice(b"xyz");
    expected[3 * PAGE_SIZE + 5] = b'a';
    expected[4 * PAGE_SIZE - 5] = b'b';
    let mut back = vec![0u8; len];
    std::io::Read::read_exact(&mut File::open(&dev).unwrap(), &mut back).unwrap();
    assert_eq!(back, expected);
}

in_both_modes!(
    writes_are_widened_on_a_4k_sector_device,
    auto_chooses_direct_on_disk_and_data_survives_reopen,
    one_dirty_block_writes_only_that_block_direct,
    page_cache_stays_empty_with_direct_io,
    tmpfs_is_buffered_under_auto_and_refused_under_direct
);
