//! `nvme-backing`: paged memory over a file or block device, with fault-driven loading, CRC32C
//! dirty tracking per 1 KiB block and clock eviction under a resident-set limit.
//!
//! A [`PagedRegion`] reserves a virtual range `PROT_NONE`. The first access to a page raises
//! SIGSEGV; a process-wide handler (installed once, `SA_SIGINFO | SA_ONSTACK`, all signals blocked
//! while it runs, chaining to the previous handler for addresses that are not ours) reads the
//! 4 KiB page from the backing file (`pread`, with `O_DIRECT` where the file allows it: see
//! "I/O" below), records the CRC32C of its four 1 KiB blocks and makes it read-write.
//! [`PagedRegion::persist`] writes back (`pwrite`) only the blocks whose CRC changed;
//! [`PagedRegion::drain`] makes them durable (`fdatasync`).
//!
//! That is [`FaultMode::Signal`], the default, which the sections below describe. In
//! [`FaultMode::Userfaultfd`] ([`PagedRegion::create_with_mode`], [`pool_memory_with_mode`]) the
//! range is an anonymous mapping registered with a userfaultfd; a per-region service thread loads
//! missing pages (`pread` into a buffer, `UFFDIO_COPY`) while the faulting thread sleeps in the
//! kernel, and eviction write-protects a page (`UFFDIO_WRITEPROTECT`) instead of making it
//! `PROT_NONE`, writes it back and drops it (`MADV_DONTNEED`); a store blocked on the
//! write-protected page is woken once the page is gone and faults it back in. The state machine,
//! CRC tracking, clock and persist/drain contract are shared. A load error there sends `SIGBUS`
//! to the faulting thread instead of aborting. System calls given non-resident region memory work
//! in that mode, and the region table limit ([`MAX_REGIONS`]) does not apply. See
//! docs/design.md §12.2.
//!
//! # I/O
//! [`IoMode::Auto`], the default of every constructor and of [`pool_memory`], opens the backing
//! file with `O_DIRECT` when the kernel reports a direct-I/O alignment for it (`ioctl(BLKSSZGET)`
//! for a block device, `statx` `STATX_DIOALIGN` for a regular file) of at most 4 KiB and a first
//! direct 4 KiB read works; otherwise it uses buffered I/O. tmpfs reports none (its `O_DIRECT`
//! is served from the page cache), so it is buffered. [`IoMode::Direct`] fails with
//! [`Error::DirectIoUnsupported`] instead of falling back, [`IoMode::Buffered`] never tries;
//! [`PagedRegion::options`] chooses ([`PagedOptions`]), [`PagedRegion::io_mode`] tells.
//!
//! With direct I/O a load reads the whole page straight into its frame (the memfd page in
//! signal mode, the service thread's page-aligned staging page in userfaultfd mode), write-back
//! writes from the page (eviction) or a page-aligned snapshot (persist), and the page cache holds
//! nothing of the file: no second copy of resident pages, no dirtying of whole cached folios for
//! a 1 KiB write. A dirty 1 KiB block is written alone when the alignment is at most 1 KiB (ext4
//! on a 512-byte-sector device: 512); with a larger alignment (4 KiB-sector devices) each run of
//! dirty blocks is widened to the aligned span holding it
//! ([`PagedRegion::direct_io_alignment`], [`PagedStats::writeback_bytes`]). `drain` still
//! `fdatasync`s: direct writes bypass the page cache but neither flush the device's write cache
//! nor make allocation metadata durable.
//!
//! # Under a journal
//! A journaled pool on this memory (`Engine::Journaled` with [`pool_memory`]) installs a
//! write-ahead gate ([`PagedRegion::hold_write_back_for`]): every write-back of changed blocks
//! (eviction in the fault handler or by [`PagedRegion::evict_to`], `persist`, the write-back at
//! drop) waits at it, after the page is sealed or snapshotted and before its first `pwrite`,
//! until the journal is durable. The wait is async-signal-safe. Clean pages still go without I/O.
//!
//! # Memory layout
//! The pages live in an anonymous memfd mapped twice: the application's view (reserved with
//! `mmap(PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`, then the memfd mapped over it
//! `PROT_NONE`), and a second, always read-write *alias* used only by this crate. Loading reads into the
//! alias while the application's view is still inaccessible, so no thread can see a half-read
//! page; eviction first makes the application's view `PROT_NONE` and then writes back from the
//! alias, so no thread can modify a page while it is written back. Eviction frees the memory with
//! `madvise(MADV_REMOVE)`.
//!
//! # Concurrency rules
//! Each page has an atomic state word: `ABSENT → LOADING → RESIDENT ⇄ WRITING`, and
//! `RESIDENT → EVICTING → ABSENT`. The thread that moves a page out of `ABSENT` or `RESIDENT` by
//! compare-and-swap owns it until it stores the next stable state; every other thread that faults
//! on it waits (yielding) for that. Hence:
//! - Faults from any number of threads on any pages are safe, and so is eviction while other
//!   threads access the region: the victim is made `PROT_NONE` *before* its write-back (the
//!   `mprotect` TLB shootdown guarantees no thread can still store to it), concurrent accessors
//!   fault and wait until it is `ABSENT`, then reload it.
//! - Eviction happens in the faulting thread's handler when all frames of the resident set are
//!   taken (clock with second chance), or explicitly through [`PagedRegion::evict_to`]. The
//!   reference bit is set when a page is loaded and cleared by the sweeping hand (there is no
//!   hardware access bit from user space), so the clock degrades to FIFO with a second chance.
//! - `persist` snapshots a page with word-sized atomic loads and writes the snapshot, so the CRC
//!   stored always describes exactly the bytes on the file. Bytes modified concurrently with a
//!   `persist` of the same range may or may not be included (as with cache-line flushes); data
//!   written *before* `persist` is called is always included.
//! - Eviction may write a page back at any time (like a CPU cache evicting a line), so data can
//!   reach the file before it is persisted; it is only *guaranteed* there after `persist` +
//!   `drain`. Persist ordering holds: whatever was persisted before a `drain` is durable when the
//!   drain returns, and later writes are issued after it.
//! - The handler is async-signal-safe: it allocates nothing and takes no locks; it only uses
//!   atomics, the preallocated tables, and `pread`, `pwrite`, `mprotect`, `madvise`,
//!   `sched_yield`. I/O errors inside the handler cannot be reported to the faulting code: the
//!   handler writes a message to stderr and aborts.
//!
//! # What is not supported
//! - Signal mode: system calls given region memory directly (`read(fd, region_ptr, n)`, ...)
//!   fail with `EFAULT` on pages that are not resident: the kernel does not raise SIGSEGV for
//!   them. Copy through a buffer ([`PagedRegion::read_at`] / [`PagedRegion::write_at`]), or use
//!   the userfaultfd mode.
//! - Asynchronous signals are blocked while [`PagedRegion::evict_to`] owns a page, and all
//!   signals while the fault handler runs, so a signal handler touching the region cannot wait
//!   for its own thread. Signal handlers may touch the region otherwise (they fault like any
//!   code).
//! - `fork`: the child shares the memfd with the parent (signal mode) or has no mapping of the
//!   region (userfaultfd mode, `MADV_DONTFORK`); it must not touch the region.
//! - Two regions over the same pages of one file overwrite each other's blocks at write-back:
//!   use one region per file (or per disjoint page range).
//! - Signal mode: each resident page that is not adjacent to another resident page is its own
//!   VMA: keep the resident limit well below `vm.max_map_count` (65 530 by default).
//! - Metadata is 20 bytes per page (state word, four CRCs) plus 8 bytes per frame.
//! - Faults on addresses of a region being dropped are not served (they reach the previous
//!   handler, or find the range unmapped, and usually kill the process); dropping while other
//!   threads still access the region is a bug in the caller.
#![deny(unsafe_op_in_unsafe_fn)]

mod checksum;
mod engine;
mod error;
mod handler;
mod pool;
mod region;
mod service;
mod sys;
mod uffd;

pub use error::{Error, Result};
pub use handler::MAX_REGIONS;
pub use pool::{pool_memory, pool_memory_with_mode, pool_memory_with_options, PoolMemory};
pub use region::{FaultMode, IoMode, PagedOptions, PagedRegion, PagedStats};

/// Page size handled by the fault handler (the region requires a 4 KiB system page size).
pub const PAGE_SIZE: usize = 4096;
/// Granularity of dirty tracking and write-back.
pub const BLOCK_SIZE: usize = 1024;
/// CRC blocks per page.
pub const BLOCKS_PER_PAGE: usize = PAGE_SIZE / BLOCK_SIZE;
