//! [`PagedRegion`] and its options; the per-page state machine it shares with the fault paths is in `engine.rs`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use pmem_core::WriteAheadGate;

use crate::checksum::{self, StackRoom};
use crate::engine::{pread_exact, PageBuf, Shared, ABSENT, FRAME_CLAIMED, FRAME_EMPTY};
use crate::error::{Error, Result};
use crate::handler;
use crate::service;
use crate::sys::SignalBlock;
use crate::uffd;
use crate::{BLOCKS_PER_PAGE, BLOCK_SIZE, PAGE_SIZE};

/// How a [`PagedRegion`] learns about first accesses to its pages (and stops stores during
/// eviction). Both modes share the page state machine, CRC32C dirty tracking, clock eviction and
/// the persist/drain contract; they differ in who loads a page and how its mapping changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultMode {
    /// A process-wide SIGSEGV handler loads the page in the faulting thread and makes it
    /// accessible with `mprotect`; eviction makes it `PROT_NONE` again. The default.
    #[default]
    Signal,
    /// The range is registered with a userfaultfd (missing and write-protect faults); a
    /// per-region service thread loads pages with `UFFDIO_COPY` while the faulting thread sleeps
    /// in the kernel; eviction write-protects the page (`UFFDIO_WRITEPROTECT`), writes it back and
    /// drops it (`MADV_DONTNEED`). System calls given region memory work in this mode (the
    /// kernel waits for the page), unless only user-mode faults may be handled (an unprivileged
    /// process without `/dev/userfaultfd` access).
    Userfaultfd,
}

/// How a [`PagedRegion`] reads and writes its backing file. [`PagedRegion::io_mode`] tells which
/// of `Buffered` and `Direct` was chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoMode {
    /// `Direct` when the backing file allows it, else `Buffered`. The default.
    #[default]
    Auto,
    /// Plain `pread`/`pwrite` through the page cache: the file's pages are cached by the kernel
    /// as well as by the region, and a 1 KiB `pwrite` dirties (and later writes) whole cached
    /// folios.
    Buffered,
    /// `O_DIRECT`: page loads read 4 KiB straight into the page frame, write-back writes the
    /// changed 1 KiB blocks (widened to the device's alignment when that is larger) straight to
    /// the device, and the page cache holds nothing of the file. Opening fails with
    /// [`Error::DirectIoUnsupported`] if the file cannot do it: see [`PagedOptions::io_mode`].
    Direct,
}

/// How to open a [`PagedRegion`]: its [`FaultMode`] and [`IoMode`] (both default). Made by
/// [`PagedRegion::options`]:
///
/// ```no_run
/// use nvme_backing::{FaultMode, IoMode, PagedRegion};
/// let region = PagedRegion::options()
///     .fault_mode(FaultMode::Userfaultfd)
///     .io_mode(IoMode::Direct)
///     .create("/var/tmp/data", 1 << 20, 64)?;
/// assert_eq!(region.io_mode(), IoMode::Direct);
/// # Ok::<(), nvme_backing::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PagedOptions {
    fault_mode: FaultMode,
    io_mode: IoMode,
}

impl PagedOptions {
    /// The defaults: [`FaultMode::Signal`], [`IoMode::Auto`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How faults are served.
    pub fn fault_mode(mut self, mode: FaultMode) -> Self {
        self.fault_mode = mode;
        self
    }

    /// How the backing file is read and written.
    ///
    /// Direct I/O is used when the kernel reports the file's direct-I/O alignment (a block
    /// device's logical block size, `ioctl(BLKSSZGET)`; a regular file's `statx`
    /// `STATX_DIOALIGN`, Linux 6.1 or later, which file systems without a direct path such as
    /// tmpfs leave at zero), that alignment is at most 4 KiB (in memory and on the file), the
    /// file opens with `O_DIRECT`, and a first direct 4 KiB read works. Otherwise
    /// [`IoMode::Auto`] uses buffered I/O and [`IoMode::Direct`] fails with
    /// [`Error::DirectIoUnsupported`] saying which condition failed.
    pub fn io_mode(mut self, mode: IoMode) -> Self {
        self.io_mode = mode;
        self
    }

    /// Opens `path` (a file or block device of at least `len` bytes) read-write and maps its
    /// first `len` bytes as a paged region with at most `resident_limit` resident pages.
    ///
    /// `len` must be a non-zero multiple of 4 KiB; `resident_limit` must be at least 2 (an access
    /// may straddle two pages) and is capped at the page count. Forward progress is guaranteed
    /// when it is at least twice the number of threads faulting at once; below that, threads
    /// still progress in practice but may evict each other's pages repeatedly.
    ///
    /// [`FaultMode::Userfaultfd`] fails with [`Error::Userfaultfd`] if the kernel has no
    /// userfaultfd (`ENOSYS`), the process may not create one (`EPERM`), or it lacks
    /// write-protect support for anonymous memory.
    pub fn open(&self, path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<PagedRegion> {
        PagedRegion::open_impl(path.as_ref(), len, resident_limit, *self)
    }

    /// Creates (or extends) `path` to at least `len` bytes, then [`open`](Self::open)s it.
    pub fn create(&self, path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<PagedRegion> {
        let path = path.as_ref();
        let io_err = |op: &'static str, source: io::Error| Error::Io {
            path: path.to_owned(),
            op,
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("open", e))?;
        let size = file.metadata().map_err(|e| io_err("stat", e))?.len();
        if size < len as u64 {
            file.set_len(len as u64).map_err(|e| io_err("ftruncate", e))?;
        }
        drop(file);
        self.open(path, len, resident_limit)
    }
}

/// Counters of a [`PagedRegion`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PagedStats {
    /// Pages read from the backing file by the fault handler.
    pub pages_faulted: u64,
    /// Changed 1 KiB blocks written back (by persist or eviction).
    pub blocks_written: u64,
    /// Pages with at least one block written back, counted once per write-back.
    pub pages_written: u64,
    /// Pages evicted (by the clock on a fault, or by [`PagedRegion::evict_to`]).
    pub evictions: u64,
    /// Bytes written to the backing file: `blocks_written` × 1 KiB, more when direct writes are
    /// widened to an alignment above 1 KiB ([`PagedRegion::direct_io_alignment`]).
    pub writeback_bytes: u64,
}

/// Switches `fd` (the backing file, opened without it) to `O_DIRECT` if the file allows direct
/// I/O of whole pages, returning the alignment it needs (a power of two, at most `PAGE_SIZE`).
/// The same descriptor is kept, so the file checked at open is the file used. The alignment is what the kernel reports: `BLKSSZGET` for a block
/// device, `statx` `STATX_DIOALIGN` (offset and memory alignment) for a regular file. A first
/// direct read of page 0 must succeed. On failure, says why and leaves `fd` buffered.
fn enable_direct(fd: libc::c_int) -> Result<usize, String> {
    // SAFETY: `st` is plain data filled by the call; fd is open.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(format!("fstat: {}", io::Error::last_os_error()));
        }
        st
    };
    let align = match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK => {
            let mut size: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int.
            if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut size) } != 0 {
                return Err(format!("ioctl(BLKSSZGET): {}", io::Error::last_os_error()));
            }
            size as usize
        }
        libc::S_IFREG => {
            // SAFETY: `stx` is plain data filled by the call; an empty path with AT_EMPTY_PATH
            // names `fd` itself.
            let stx = unsafe {
                let mut stx: libc::statx = std::mem::zeroed();
                if libc::statx(
                    fd,
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH,
                    libc::STATX_DIOALIGN,
                    &mut stx,
                ) != 0
                {
                    return Err(format!("statx: {}", io::Error::last_os_error()));
                }
                stx
            };
            let (mem, off) = (stx.stx_dio_mem_align as usize, stx.stx_dio_offset_align as usize);
            if stx.stx_mask & libc::STATX_DIOALIGN == 0 || mem == 0 || off == 0 {
                return Err(
                    "the file system reports no direct-I/O alignment (statx STATX_DIOALIGN: \
                     no direct I/O, e.g. tmpfs, whose O_DIRECT is served from the page cache, or \
                     a kernel older than 6.1)"
                        .to_owned(),
                );
            }
            mem.max(off)
        }
        _ => return Err("not a regular file or block device".to_owned()),
    };
    if !align.is_power_of_two() || align > PAGE_SIZE {
        return Err(format!(
            "direct I/O needs {align}-byte alignment; pages are {PAGE_SIZE} bytes"
        ));
    }
    // SAFETY: fcntl on an open descriptor; F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(format!("fcntl(F_GETFL): {}", io::Error::last_os_error()));
    }
    // SAFETY: as above; F_SETFL takes the new status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } != 0 {
        return Err(format!(
            "fcntl(F_SETFL, O_DIRECT): {}",
            io::Error::last_os_error()
        ));
    }
    let mut probe = Box::new(PageBuf([0; PAGE_SIZE]));
    // SAFETY: `probe` is a writable, page-aligned page.
    if let Err(e) = unsafe { pread_exact(fd, probe.0.as_mut_ptr(), PAGE_SIZE, 0) } {
        // SAFETY: as above: back to the flags the descriptor had.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
        return Err(format!(
            "a direct read of the first 4 KiB failed: {}",
            io::Error::from_raw_os_error(e)
        ));
    }
    Ok(align)
}

/// A range of virtual memory backed page by page by a file or block device.
///
/// Pages are read in on first access (by a SIGSEGV handler or a userfaultfd service thread, see
/// [`FaultMode`]), tracked by CRC32C per 1 KiB block, written back by
/// [`persist`](Self::persist) / [`flush_all`](Self::flush_all) (dirty blocks only) and made
/// durable by [`drain`](Self::drain). At most `resident_limit` pages are resident; a fault beyond
/// that evicts a victim chosen by the clock (written back first). See the crate documentation for
/// the concurrency rules.
#[derive(Debug)]
pub struct PagedRegion {
    shared: NonNull<Shared>,
    /// Signal mode: the handler-table slot.
    slot: Option<usize>,
    /// Userfaultfd mode: the fault-service thread.
    service: Option<service::Service>,
    mode: FaultMode,
    /// `Buffered` or `Direct`, as chosen at open.
    io: IoMode,
    /// The direct-I/O alignment (`Direct` only).
    dio_align: Option<usize>,
    path: PathBuf,
    len: usize,
    limit: usize,
    /// The write-ahead gate installed by [`hold_write_back_for`](Self::hold_write_back_for),
    /// kept alive for `Shared::gate`.
    write_ahead: OnceLock<Arc<WriteAheadGate>>,
}

// SAFETY: all state reachable from `Shared` is either immutable after open or atomic; the raw
// pointers name mappings owned by the region for its whole life.
unsafe impl Send for PagedRegion {}
// SAFETY: as above; every `&self` method synchronises through the page state words.
unsafe impl Sync for PagedRegion {}

impl PagedRegion {
    /// Options to open a region with another [`FaultMode`] or [`IoMode`] than the defaults.
    pub fn options() -> PagedOptions {
        PagedOptions::new()
    }

    /// Opens `path` (a file or block device of at least `len` bytes) read-write and maps its first
    /// `len` bytes as a paged region with at most `resident_limit` resident pages.
    ///
    /// `len` must be a non-zero multiple of 4 KiB; `resident_limit` must be at least 2 (an access
    /// may straddle two pages) and is capped at the page count. Forward progress is guaranteed
    /// when it is at least twice the number of threads faulting at once; below that, threads
    /// still progress in practice but may evict each other's pages repeatedly.
    ///
    /// Faults are served in [`FaultMode::Signal`], I/O is [`IoMode::Auto`] (direct when the file
    /// allows it); see [`options`](Self::options) for others.
    pub fn open(path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<Self> {
        PagedOptions::new().open(path, len, resident_limit)
    }

    /// [`open`](Self::open) with the given fault mode ([`IoMode::Auto`]). [`FaultMode::Userfaultfd`]
    /// fails with [`Error::Userfaultfd`] if the kernel has no userfaultfd (`ENOSYS`), the process
    /// may not create one (`EPERM`), or it lacks write-protect support for anonymous memory.
    pub fn open_with_mode(
        path: impl AsRef<Path>,
        len: usize,
        resident_limit: usize,
        mode: FaultMode,
    ) -> Result<Self> {
        PagedOptions::new()
            .fault_mode(mode)
            .open(path, len, resident_limit)
    }

    fn open_impl(path: &Path, len: usize, resident_limit: usize, options: PagedOptions) -> Result<Self> {
        let mode = options.fault_mode;
        // SAFETY: sysconf has no preconditions.
        if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != PAGE_SIZE as libc::c_long {
            return Err(Error::InvalidArgument("the system page size is not 4 KiB"));
        }
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidArgument(
                "length must be a non-zero multiple of 4 KiB",
            ));
        }
        let npages = len / PAGE_SIZE;
        // One instruction may touch two pages (an access straddling a page boundary): with a
        // single frame it would evict one to load the other forever.
        if resident_limit < 2 {
            return Err(Error::InvalidArgument(
                "resident limit must be at least two pages",
            ));
        }
        let limit = resident_limit.min(npages);
        let io_err = |op: &'static str, source: io::Error| Error::Io {
            path: path.to_owned(),
            op,
            source,
        };

        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidArgument("path contains a NUL byte"))?;
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io_err("open", io::Error::last_os_error()));
        }
        let mut guard = Resources {
            fd,
            memfd: -1,
            uffd: -1,
            base: std::ptr::null_mut(),
            alias: std::ptr::null_mut(),
            len,
        };
        // lseek works for block devices too (fstat reports size 0 for them).
        // SAFETY: fd is open.
        let size = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
        if size < 0 {
            return Err(io_err("lseek", io::Error::last_os_error()));
        }
        if (size as u64) < len as u64 {
            return Err(Error::BackingTooSmall {
                path: path.to_owned(),
                actual: size as u64,
                required: len as u64,
            });
        }

        let (io, dio_align) = match options.io_mode {
            IoMode::Buffered => (IoMode::Buffered, None),
            wanted => match enable_direct(fd) {
                Ok(align) => (IoMode::Direct, Some(align)),
                Err(_) if wanted == IoMode::Auto => (IoMode::Buffered, None),
                Err(reason) => {
                    return Err(Error::DirectIoUnsupported {
                        path: path.to_owned(),
                        reason,
                    })
                }
            },
        };
        let fd = guard.fd;

        let addr_err = |source: io::Error| Error::AddressSpace { len, source };
        let uffd_mode = mode == FaultMode::Userfaultfd;
        // The application's range. Userfaultfd mode: read-write, and only pages installed by
        // UFFDIO_COPY are present. Signal mode: a reservation, replaced below by the memfd.
        let prot = if uffd_mode {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: a fresh anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(addr_err(io::Error::last_os_error()));
        }
        guard.base = base.cast();
        if uffd_mode {
            // 4 KiB pages only (eviction drops single pages), and no copy in a forked child (it
            // would see zero pages where ours are not resident; with DONTFORK it faults).
            // Both are advice: failing them changes nothing about correctness here.
            // SAFETY: our own mapping.
            unsafe {
                libc::madvise(base, len, libc::MADV_NOHUGEPAGE);
                libc::madvise(base, len, libc::MADV_DONTFORK);
            }
            guard.uffd = uffd::open_registered(base as usize, len)?;
            guard.alias = base.cast();
        } else {
            // SAFETY: valid C string literal.
            let memfd = unsafe { libc::memfd_create(c"nvme-backing".as_ptr(), libc::MFD_CLOEXEC) };
            if memfd < 0 {
                return Err(io_err("memfd_create", io::Error::last_os_error()));
            }
            guard.memfd = memfd;
            // SAFETY: memfd is open.
            if unsafe { libc::ftruncate(memfd, len as libc::off_t) } != 0 {
                return Err(io_err("ftruncate(memfd)", io::Error::last_os_error()));
            }
            // Put the memfd under the reservation, still inaccessible.
            // SAFETY: replaces exactly the reservation we own.
            let view = unsafe {
                libc::mmap(
                    base,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    memfd,
                    0,
                )
            };
            if view == libc::MAP_FAILED {
                return Err(addr_err(io::Error::last_os_error()));
            }
            // SAFETY: a fresh shared mapping of our memfd.
            let alias = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_NORESERVE,
                    memfd,
                    0,
                )
            };
            if alias == libc::MAP_FAILED {
                return Err(addr_err(io::Error::last_os_error()));
            }
            guard.alias = alias.cast();
        }

        // Choose the CRC32C implementation and prime its CPU-feature detection outside the
        // signal handler.
        checksum::prime();

        let shared = Box::new(Shared {
            base: guard.base,
            alias: guard.alias,
            len,
            fd,
            write_unit: dio_align.map_or(BLOCK_SIZE, |a| a.max(BLOCK_SIZE)),
            memfd: guard.memfd,
            uffd: guard.uffd,
            states: (0..npages).map(|_| AtomicU32::new(ABSENT)).collect(),
            crcs: (0..npages * BLOCKS_PER_PAGE).map(|_| AtomicU32::new(0)).collect(),
            frames: (0..limit).map(|_| AtomicUsize::new(FRAME_EMPTY)).collect(),
            hand: AtomicUsize::new(0),
            resident: AtomicUsize::new(0),
            pages_faulted: AtomicU64::new(0),
            blocks_written: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            writeback_bytes: AtomicU64::new(0),
            gate: AtomicPtr::new(std::ptr::null_mut()),
        });
        let shared = NonNull::from(Box::leak(shared));
        let (slot, service) = if uffd_mode {
            // SAFETY: `shared` lives until `close`, which stops the service first.
            match unsafe { service::Service::start(shared.as_ptr(), guard.uffd) } {
                Ok(service) => (None, Some(service)),
                Err(e) => {
                    // SAFETY: the thread was not started, so only we hold the pointer.
                    drop(unsafe { Box::from_raw(shared.as_ptr()) });
                    return Err(e);
                }
            }
        } else {
            match handler::register(shared.as_ptr(), guard.base as usize, len) {
                Ok(slot) => (Some(slot), None),
                Err(e) => {
                    // SAFETY: never registered, so only we hold the pointer.
                    drop(unsafe { Box::from_raw(shared.as_ptr()) });
                    return Err(e);
                }
            }
        };
        std::mem::forget(guard);
        Ok(PagedRegion {
            shared,
            slot,
            service,
            mode,
            io,
            dio_align,
            path: path.to_owned(),
            len,
            limit,
            write_ahead: OnceLock::new(),
        })
    }

    /// Creates (or extends) `path` to at least `len` bytes, then [`open`](Self::open)s it
    /// ([`FaultMode::Signal`], [`IoMode::Auto`]).
    pub fn create(path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<Self> {
        PagedOptions::new().create(path, len, resident_limit)
    }

    /// Creates (or extends) `path` to at least `len` bytes, then
    /// [`open_with_mode`](Self::open_with_mode)s it ([`IoMode::Auto`]).
    pub fn create_with_mode(
        path: impl AsRef<Path>,
        len: usize,
        resident_limit: usize,
        mode: FaultMode,
    ) -> Result<Self> {
        PagedOptions::new()
            .fault_mode(mode)
            .create(path, len, resident_limit)
    }

    fn shared(&self) -> &Shared {
        // SAFETY: owned by `self` until drop.
        unsafe { self.shared.as_ref() }
    }

    /// Start of the region. Any access within `len()` bytes is valid (it faults the page in).
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared().base
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a region is at least one page); for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How faults are served.
    pub fn fault_mode(&self) -> FaultMode {
        self.mode
    }

    /// How the backing file is read and written: [`IoMode::Direct`] or [`IoMode::Buffered`]
    /// (what [`IoMode::Auto`] chose), never `Auto`.
    pub fn io_mode(&self) -> IoMode {
        self.io
    }

    /// With direct I/O, the alignment the backing file needs for buffer addresses, file offsets
    /// and lengths (the larger of the two the kernel reports; at most 4 KiB). Write-back writes
    /// the changed 1 KiB blocks alone when it is at most 1 KiB, else the aligned spans holding
    /// them. `None` with buffered I/O.
    pub fn direct_io_alignment(&self) -> Option<usize> {
        self.dio_align
    }

    /// The resident-set limit in pages.
    pub fn resident_limit(&self) -> usize {
        self.limit
    }

    /// Pages currently occupying a frame (resident, or being loaded).
    pub fn resident_pages(&self) -> usize {
        self.shared().resident.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> PagedStats {
        let s = self.shared();
        PagedStats {
            pages_faulted: s.pages_faulted.load(Ordering::Relaxed),
            blocks_written: s.blocks_written.load(Ordering::Relaxed),
            pages_written: s.pages_written.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            writeback_bytes: s.writeback_bytes.load(Ordering::Relaxed),
        }
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::InvalidArgument("range outside the region")),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the region (faulting pages in as needed).
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: in bounds; the handler makes the pages accessible on first touch.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the region at `offset` (not durable until persisted and drained).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: in bounds; `&mut self` excludes other safe accessors.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len()) };
        Ok(())
    }

    /// Writes back the dirty 1 KiB blocks of the resident pages overlapping
    /// `[offset, offset + len)` (`pwrite`; durable after [`drain`](Self::drain)). Clean blocks and
    /// non-resident pages are not written.
    pub fn persist(&self, offset: usize, len: usize) -> Result<()> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let first = offset / PAGE_SIZE;
        let last = (offset + len - 1) / PAGE_SIZE;
        for page in first..=last {
            self.shared().persist_page(page).map_err(|e| Error::Io {
                path: self.path.clone(),
                op: "pwrite",
                source: io::Error::from_raw_os_error(e),
            })?;
        }
        Ok(())
    }

    /// [`persist`](Self::persist) of the whole region.
    pub fn flush_all(&self) -> Result<()> {
        self.persist(0, self.len)
    }

    /// Makes everything written back so far durable (`fdatasync` of the backing file).
    pub fn drain(&self) -> Result<()> {
        // SAFETY: fd is open for the region's life.
        if unsafe { libc::fdatasync(self.shared().fd) } != 0 {
            return Err(Error::Io {
                path: self.path.clone(),
                op: "fdatasync",
                source: io::Error::last_os_error(),
            });
        }
        pmem_core::internals::flush::count_fsync();
        Ok(())
    }

    /// Evicts resident pages (writing dirty blocks back first) until at most `target` remain,
    /// ignoring reference bits; returns how many were evicted. Pages being loaded or written
    /// back by other threads are skipped, so fewer may be evicted. Safe to call while other
    /// threads access the region: they fault and reload.
    pub fn evict_to(&self, target: usize) -> Result<usize> {
        let _block = SignalBlock::new();
        let s = self.shared();
        let mut evicted = 0;
        for f in 0..s.frames.len() {
            if s.resident.load(Ordering::Relaxed) <= target {
                break;
            }
            let v = s.frames[f].load(Ordering::Acquire);
            if v == FRAME_EMPTY || v == FRAME_CLAIMED {
                continue;
            }
            match s.try_evict(f, v, false, StackRoom::Ample) {
                Ok(true) => {
                    s.resident.fetch_sub(1, Ordering::Relaxed);
                    s.frames[f].store(FRAME_EMPTY, Ordering::Release);
                    evicted += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        op: "evict (mprotect/pwrite)",
                        source: io::Error::from_raw_os_error(e),
                    })
                }
            }
        }
        Ok(evicted)
    }

    /// Makes every later write-back of changed blocks (eviction, [`persist`](Self::persist),
    /// the write-back at drop) first wait until `gate` says the journal is durable
    /// ([`WriteAheadGate::wait_durable`]); a write-back it refuses fails with `EIO` and writes
    /// nothing (in the fault handler: the process aborts, as for any write-back error).
    /// Clean pages are still dropped without I/O or waiting. Returns `false` if a gate was
    /// installed already (the first one stays).
    pub fn hold_write_back_for(&self, gate: Arc<WriteAheadGate>) -> bool {
        let ptr = Arc::as_ptr(&gate).cast_mut();
        if self.write_ahead.set(gate).is_err() {
            return false;
        }
        self.shared().gate.store(ptr, Ordering::Release);
        true
    }

    /// The write-ahead gate, if one was installed.
    pub fn write_ahead_gate(&self) -> Option<&Arc<WriteAheadGate>> {
        self.write_ahead.get()
    }

    /// Closes the region without writing anything back (as if the process had crashed): data not
    /// yet persisted is lost. Dropping the region writes everything back instead.
    pub fn abandon(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        this.close();
        // SAFETY: `this` is never used again; drop the remaining owned fields.
        unsafe {
            std::ptr::drop_in_place(&mut this.path);
            std::ptr::drop_in_place(&mut this.service);
            std::ptr::drop_in_place(&mut this.write_ahead);
        }
    }

    fn close(&mut self) {
        if let Some(slot) = self.slot {
            handler::unregister(slot);
        }
        if let Some(service) = &mut self.service {
            service.stop();
        }
        // SAFETY: unregistered / service stopped, so no handler uses `shared` any more; we are
        // its only owner.
        let shared = unsafe { Box::from_raw(self.shared.as_ptr()) };
        // Closing the userfaultfd (in `Resources::drop`) unregisters the range and wakes any
        // thread still waiting on it (a caller bug: see the crate documentation).
        drop(Resources {
            fd: shared.fd,
            memfd: shared.memfd,
            uffd: shared.uffd,
            base: shared.base,
            alias: shared.alias,
            len: shared.len,
        });
    }
}

impl Drop for PagedRegion {
    /// Writes back every dirty block and syncs (errors are ignored: call
    /// [`flush_all`](Self::flush_all) and [`drain`](Self::drain) first to see them), then unmaps.
    fn drop(&mut self) {
        let _ = self.flush_all();
        let _ = self.drain();
        self.close();
    }
}

/// Owned descriptors and mappings, released on drop (also on the error paths of `open`).
struct Resources {
    fd: libc::c_int,
    memfd: libc::c_int,
    uffd: libc::c_int,
    base: *mut u8,
    /// The alias mapping; equal to `base` in userfaultfd mode (then unmapped once).
    alias: *mut u8,
    len: usize,
}

impl Drop for Resources {
    fn drop(&mut self) {
        // SAFETY: each resource is owned and released once; null / negative means absent.
        unsafe {
            if !self.alias.is_null() && self.alias != self.base {
                libc::munmap(self.alias.cast(), self.len);
            }
            if !self.base.is_null() {
                libc::munmap(self.base.cast(), self.len);
            }
            // After the unmap: a thread still waiting on a fault (a caller bug) is woken by the
            // close and then finds no mapping (SIGSEGV) rather than a fresh zero page.
            if self.uffd >= 0 {
                libc::close(self.uffd);
            }
            if self.memfd >= 0 {
                libc::close(self.memfd);
            }
            if self.fd >= 0 {
                libc::close(self.fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::write_spans;

    fn memfd_bytes(r: &PagedRegion) -> u64 {
        // SAFETY: `st` is plain data; the memfd is open while `r` lives.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(r.shared().memfd, &mut st), 0);
            st.st_blocks as u64 * 512
        }
    }

    #[test]
    fn write_spans_cover_the_units_holding_dirty_blocks_merged() {
        for unit in [BLOCK_SIZE, 2 * BLOCK_SIZE, PAGE_SIZE] {
            for mask in 0u32..1 << BLOCKS_PER_PAGE {
                let dirty: [bool; BLOCKS_PER_PAGE] = std::array::from_fn(|b| mask & 1 << b != 0);
                // The model: which units hold a dirty block, as maximal runs of units.
                let per_unit = unit / BLOCK_SIZE;
                let hit: Vec<bool> = (0..PAGE_SIZE / unit)
                    .map(|u| dirty[u * per_unit..(u + 1) * per_unit].iter().any(|&d| d))
                    .collect();
                let mut expected = Vec::new();
                let mut u = 0;
                while u < hit.len() {
                    if hit[u] {
                        let start = u;
                        while u < hit.len() && hit[u] {
                            u += 1;
                        }
                        expected.push((start * unit, u * unit));
                    } else {
                        u += 1;
                    }
                }
                let got: Vec<_> = write_spans(&dirty, unit).into_iter().flatten().collect();
                assert_eq!(got, expected, "unit {unit}, dirty {dirty:?}");
            }
        }
    }

    /// Stack the fault handler uses on an alternate signal stack, above the kernel's signal
    /// frame: a painted 64 KiB alternate stack, faults that load (CRC of four blocks) and evict
    /// dirty pages (CRC again, `pwrite`), then the deepest byte changed. The room the handler
    /// requires before it uses `crc-fast` must cover it.
    #[test]
    fn handler_stack_use_is_small() {
        const ALT: usize = 64 << 10;
        const PAINT: u8 = 0xa5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let used = std::thread::spawn(move || {
            let r = PagedRegion::create(&path, 64 * PAGE_SIZE, 4).unwrap();
            let mut alt = vec![PAINT; ALT];
            // SAFETY: `alt` outlives its use as the alternate stack (restored below); the
            // structs are plain data.
            let old = unsafe {
                let new = libc::stack_t {
                    ss_sp: alt.as_mut_ptr().cast(),
                    ss_flags: 0,
                    ss_size: ALT,
                };
                let mut old: libc::stack_t = std::mem::zeroed();
                assert_eq!(libc::sigaltstack(&new, &mut old), 0);
                old
            };
            for p in 0..64 {
                // SAFETY: inside the region; every fault runs the handler on `alt`.
                unsafe { r.as_ptr().add(p * PAGE_SIZE).write_volatile(p as u8 + 1) };
            }
            // SAFETY: restores the thread's previous alternate stack before `alt` is freed.
            assert_eq!(unsafe { libc::sigaltstack(&old, std::ptr::null_mut()) }, 0);
            assert!(r.stats().evictions >= 60 && r.stats().blocks_written >= 60);
            ALT - alt.iter().position(|&b| b != PAINT).unwrap()
        })
        .join()
        .unwrap();
        // SAFETY: getauxval has no preconditions; 0 if the kernel does not say.
        let frame = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        eprintln!("handler stack use: {used} bytes in all, kernel signal frame about {frame}");
        // The handler, crc-fast included, fits the room it requires before choosing crc-fast.
        if let Some(room) = checksum::fast_stack_room() {
            eprintln!("room required for crc-fast in the handler: {room} bytes");
            assert!(used.saturating_sub(frame) <= room, "{used} - {frame} > {room}");
        }
    }

    #[test]
    fn eviction_frees_the_memory_of_evicted_pages() {
        let dir = tempfile::tempdir().unwrap();
        let r = PagedRegion::create(dir.path().join("f"), 64 * PAGE_SIZE, 64).unwrap();
        let mut buf = vec![0u8; 64 * PAGE_SIZE];
        r.read_at(0, &mut buf).unwrap();
        // Keeps the copy (optimised builds may drop a copy into a buffer nobody reads).
        std::hint::black_box(&buf);
        assert_eq!(r.resident_pages(), 64);
        assert_eq!(memfd_bytes(&r), 64 * PAGE_SIZE as u64);
        assert_eq!(r.evict_to(4).unwrap(), 60);
        assert_eq!(r.resident_pages(), 4);
        assert_eq!(memfd_bytes(&r), 4 * PAGE_SIZE as u64);
    }
}
