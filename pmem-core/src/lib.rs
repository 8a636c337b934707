//! # pmem-core
//!
//! The bottom layer of ptm: persistent memory mapped into the process, and the primitives that
//! make stores durable.
//!
//! - [`Region`]: create or open a pool on a DAX file (`MAP_SYNC`), a device-DAX node, a plain
//!   file (msync domain), or any file forced to be treated as persistent memory (tmpfs
//!   emulation, `PTM_FORCE_PMEM=1`). It is `flock`ed while open and its [`PoolHeader`] (with a
//!   backup copy) is validated at open, every defect with its own [`Error`].
//! - Persistence domains ([`DomainKind`]): cache-line flush with the best instruction the CPU
//!   has (clwb > clflushopt > clflush, chosen once by CPUID) and an `sfence` drain; eADR (no
//!   flush); msync. `persist = flush + drain`; non-temporal copies for bulk writes.
//! - The hardware as sysfs describes it ([`NvdimmRegion`]): a libnvdimm region whose
//!   `persistence_domain` is `cpu_cache` runs eADR; the DIMMs' unsafe-shutdown count is recorded
//!   in the pool header ([`ShutdownRecord`]) and a count that moved while the pool was in use
//!   refuses it ([`Error::UnsafeShutdown`], [`accept_unsafe_shutdown`]). [`Durability`] says
//!   whether a region's durable data survives power loss or only the death of the process.
//! - With the `simulate` feature, a simulated domain for the crash-recovery harness
//!   (module `sim`, feature `simulate`): a durable image beside the mapping, changed only by flush + drain, and a hook
//!   called at every drain (a crash point) that can build the images a crash could leave.
//! - Per-thread counters of lines flushed and drains issued ([`thread_stats`]): the drain count
//!   per operation is a deterministic performance figure.
//! - [`PPtr<T>`]: 8-byte offset pointers, bounds- and pool-checked at resolution.
//! - [`Persistent`] and `#[derive(Persistent)]`: what may be stored in a pool.
//! - [`schema`]: every stored type's shape ([`Schema`](schema::Schema)), which pools record and check at open;
//!   [`Checked<T>`]: checked storage for `bool`, `char`, enums and `Option`.
//!
//! ## Bugs the types prevent
//!
//! | bug                                                    | prevented by                                   |
//! |--------------------------------------------------------|------------------------------------------------|
//! | a volatile pointer (`&T`, `Box`, `Vec`, `Rc`) stored in a pool | `Persistent` bound, checked by the derive at compile time |
//! | UB from reading a corrupted pool (`bool` = 7, bad enum) | `Persistent` types accept every bit pattern; `bool`, enums and `Option` are read through [`Checked<T>`], which returns an error |
//! | a pool read as another type than it was written with | the root's [`schema`] fingerprint, recorded and checked by ptm |
//! | a pointer into pool A dereferenced in pool B           | the pool tag in every `PPtr`, checked at resolve |
//! | a pointer past the end of the pool                     | bounds check at resolve                        |
//! | two processes writing one pool                         | `flock` at open ([`Error::PoolLocked`])        |
//!
//! ## Example
//!
//! ```
//! use pmem_core::{Region, RegionOptions, thread_stats};
//!
//! # fn main() -> Result<(), pmem_core::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("example.pool");
//! let mut region = RegionOptions::new().layout("example").create(&path, 1 << 20)?;
//! let off = region.data_range().start;
//! region.write_at(off, b"hello, persistent world")?;
//! let before = thread_stats();
//! region.persist(off, 23)?;
//! assert_eq!(thread_stats().since(&before).drains, 1);
//! drop(region);
//!
//! let region = RegionOptions::new().layout("example").open(&path)?;
//! let mut buf = [0u8; 23];
//! region.read_at(off, &mut buf)?;
//! assert_eq!(&buf, b"hello, persistent world");
//! # Ok(()) }
//! ```
//!
//! ## One path per item
//!
//! Every public item is re-exported here at the crate root; the modules are private, except
//! [`schema`] (the schema model that `#[derive(Persistent)]` writes). The workspace's tools reach
//! the journal format, header flags, flush helpers and the crash model's subset generators
//! through the hidden `pmem_core::internals` module, which is **not covered by semver**.
#![deny(unsafe_op_in_unsafe_fn)]

extern crate self as pmem_core;

mod checked;
mod error;
mod flush;
mod header;
mod journal;
mod persistent;
mod pptr;
mod region;
pub mod schema;
#[cfg(feature = "simulate")]
mod sim;

pub use checked::{Checked, Encoded, InvalidValue, OptionRaw, PBool, POption};
pub use error::{Error, HeaderProblem, Result};
pub use flush::{
    detected_flush_instruction, reset_thread_stats, thread_stats, FlushInstruction, PersistStats, CACHE_LINE,
};
pub use header::ShutdownRecord;
pub use header::{PoolHeader, FORMAT_VERSION, HEADER_SIZE, MIN_POOL_SIZE};
#[cfg(feature = "simulate")]
pub use journal::file::sim::{IoFault, IoFaults};
pub use journal::{JournalOptions, JournalStats, ReplayReport, WriteAheadGate};
pub use persistent::{bytes_of, read_from_bytes, Persistent};
/// `#[derive(PValue)]`, re-exported by `ptm_collections` next to its trait.
#[doc(hidden)]
pub use pmem_derive::PValue;
pub use pmem_derive::Persistent;
pub use pptr::PPtr;
pub use region::{
    accept_unsafe_shutdown, grow_file, inspect_headers, repair_headers, repair_journal, Backing, DomainKind,
    Durability, Engine, ExternalFactory, ExternalMemory, ExternalMemorySource, GrowReport, HeaderFault,
    HeaderRepair, HeaderReport, NvdimmRegion, PlatformDomain, Region, RegionOptions, ENV_EADR,
    ENV_FORCE_PMEM, ENV_SYSFS_ROOT,
};
#[cfg(feature = "simulate")]
pub use sim::{CrashPoint, FaultModel, RedundantPersistence, Simulation, SubsetStrategy};

/// What the workspace's tools reach below the public API: the journal's format and scan (the
/// `ptm` CLI, the fuzzers), header flags, flush helpers and the crash model's subset
/// generators (the crash-recovery harness). **Not covered by semver**: it changes with the
/// tools, in any release.
#[doc(hidden)]
pub mod internals {
    /// The pool header's format (`header.rs`).
    pub mod header {
        pub use crate::header::*;
    }
    /// The write-ahead journal of the journaled engine (`journal/`).
    pub mod journal {
        pub use crate::journal::*;
    }
    /// Cache-line flushes, fences and their counters (`flush.rs`).
    pub mod flush {
        pub use crate::flush::*;
    }
    /// Offset pointers (`pptr.rs`).
    pub mod pptr {
        pub use crate::pptr::*;
    }
    /// The simulated persistence domain and the crash model (`sim.rs`).
    #[cfg(feature = "simulate")]
    pub mod sim {
        pub use crate::sim::*;
    }
}
