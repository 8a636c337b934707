//! Errors of paged regions.

use std::io;
use std::path::PathBuf;

/// Why opening, persisting or evicting a [`PagedRegion`](crate::PagedRegion) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backing file or device is shorter than the requested region.
    #[error("backing file {} is {actual} bytes, the region needs {required}", path.display())]
    BackingTooSmall {
        /// The backing file.
        path: PathBuf,
        /// Its size in bytes.
        actual: u64,
        /// The region length in bytes.
        required: u64,
    },
    /// A system call on the backing file failed.
    #[error("{op} on {}: {source}", path.display())]
    Io {
        /// The backing file.
        path: PathBuf,
        /// The operation that failed (`open`, `pwrite`, `fdatasync`, `mprotect`, ...).
        op: &'static str,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// Reserving the virtual range (or its shadow mapping) failed: address space exhausted.
    #[error("cannot map {len} bytes of address space: {source}")]
    AddressSpace {
        /// Bytes requested.
        len: usize,
        /// The `mmap` error.
        #[source]
        source: io::Error,
    },
    /// The process-wide table of paged regions is full.
    #[error("too many paged regions open at once (at most {max})")]
    TooManyRegions {
        /// Capacity of the table.
        max: usize,
    },
    /// Installing the process-wide SIGSEGV handler failed.
    #[error("cannot install the SIGSEGV handler: {0}")]
    Handler(#[source] io::Error),
    /// [`FaultMode::Userfaultfd`](crate::FaultMode::Userfaultfd) is not available: the kernel has
    /// no userfaultfd (`ENOSYS`), the process may not create one (`EPERM`: needs
    /// `CAP_SYS_PTRACE`, `vm.unprivileged_userfaultfd = 1` or access to `/dev/userfaultfd`), it
    /// lacks write-protect support for anonymous memory, or its service thread cannot start.
    #[error("userfaultfd fault mode unavailable: {op}: {source}")]
    Userfaultfd {
        /// The step that failed (`userfaultfd`, `UFFDIO_API ...`, `UFFDIO_REGISTER`, ...).
        op: &'static str,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// [`IoMode::Direct`](crate::IoMode::Direct) was asked for, but the backing file cannot do
    /// direct I/O of whole 4 KiB pages (see
    /// [`PagedOptions::io_mode`](crate::PagedOptions::io_mode) for the conditions).
    #[error("direct I/O unavailable for {}: {reason}", path.display())]
    DirectIoUnsupported {
        /// The backing file.
        path: PathBuf,
        /// Which condition failed.
        reason: String,
    },
    /// An argument is out of range (zero or unaligned length, zero resident limit, range outside
    /// the region, page size other than 4 KiB).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
