//! A mapped pool region: create/open a pool file or device-DAX node, lock it, validate its
//! header, map it and pick its persistence domain.
//!
//! Domain selection at open (visible as [`Region::domain`]):
//!
//! | backing                                   | mapping                           | domain                 |
//! |-------------------------------------------|-----------------------------------|------------------------|
//! | device-DAX node (`/dev/daxX.Y`)           | `MAP_SHARED`, size/align from sysfs | cache flush (or eADR) |
//! | file on a DAX file system                 | `MAP_SHARED_VALIDATE \| MAP_SYNC`   | cache flush (or eADR) |
//! | any other file, forced (option or `PTM_FORCE_PMEM=1`) | `MAP_SHARED` (MAP_SYNC refused) | cache flush (or eADR) |
//! | any other file                            | `MAP_SHARED`                      | msync                  |
//! | any file, with [`RegionOptions::simulate`] (feature `simulate`) | as above        | simulated              |

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::error::{Error, HeaderProblem, Result};
use crate::flush::{self, FlushInstruction};
use crate::header::{
    self, ParseFailure, PoolHeader, FORMAT_VERSION, HEADER_SIZE, MAX_POOL_SIZE, MIN_POOL_SIZE,
};
use crate::persistent::{read_from_bytes, Persistent};
use crate::pptr::PPtr;

/// Environment variable that, set to `1`, treats every pool as persistent memory (cache-flush
/// domain), as on tmpfs `/dev/shm` emulation. `0` disables it. An explicit
/// [`RegionOptions::force_pmem`] wins over the variable.
pub const ENV_FORCE_PMEM: &str = "PTM_FORCE_PMEM";
/// Environment variable that, set to `1`, declares the platform eADR (caches inside the
/// persistence domain): flushes become no-ops, drains stay. An explicit [`RegionOptions::eadr`]
/// wins over the variable.
pub const ENV_EADR: &str = "PTM_EADR";

const PAGE: usize = 4096;
const HUGE_ALIGN: usize = 2 << 20;

/// How stores reach durability in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DomainKind {
    /// Persistent memory: flush lines (clwb/clflushopt/clflush), drain with sfence.
    CacheFlush(FlushInstruction),
    /// Persistent memory on an eADR platform: flush is a no-op, drain is sfence.
    Eadr,
    /// A plain file: flush records dirty pages, drain `msync(MS_SYNC)`s them.
    Msync,
    /// Memory supplied by an [`ExternalMemory`] (e.g. nvme-backing's paged region): flush and
    /// drain are delegated to it.
    Paged,
    /// The crash-recovery harness's simulated domain (feature `simulate`): flush records lines,
    /// drain calls the crash-point hook and then makes the recorded lines durable in the
    /// simulation's durable image (see [`crate::sim`]).
    #[cfg(feature = "simulate")]
    Simulated,
}

impl DomainKind {
    /// A short name: `clwb`, `clflushopt`, `clflush`, `eadr`, `msync` (or `simulated`).
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::CacheFlush(i) => i.name(),
            DomainKind::Eadr => "eadr",
            DomainKind::Msync => "msync",
            DomainKind::Paged => "paged",
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => "simulated",
        }
    }
}

/// What the pool lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backing {
    /// A regular file (on any file system).
    File,
    /// A device-DAX character device.
    DeviceDax,
}

impl Backing {
    /// `file` or `devdax`.
    pub fn name(self) -> &'static str {
        match self {
            Backing::File => "file",
            Backing::DeviceDax => "devdax",
        }
    }
}

/// Memory for a pool supplied by another crate instead of a file mapping — for example
/// nvme-backing's paged region over the pool file. The region still opens, locks, sizes and
/// validates the pool file itself; the memory must present the file's contents.
///
/// # Safety
///
/// Implementers promise that:
/// - `base()` is valid for reads and writes of `len()` bytes for as long as the value lives,
///   and those bytes show the pool file's contents (loaded on demand is fine);
/// - bytes written there and passed to `flush` reach the file before a later `drain` returns
///   `Ok` (write-back of other bytes at any time is allowed, like a CPU cache's eviction);
/// - `flush` and `drain` may be called from any thread at once.
pub unsafe trait ExternalMemory: Send + Sync + std::fmt::Debug {
    /// Start of the memory.
    fn base(&self) -> NonNull<u8>;
    /// Its length in bytes (the pool size).
    fn len(&self) -> usize;
    /// Whether it is empty (never, for a pool).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts making `[offset, offset + len)` durable. Errors are reported by the next `drain`.
    fn flush(&self, offset: usize, len: usize);
    /// Waits until every flushed range is durable.
    ///
    /// # Errors
    ///
    /// The first error of the flushes or of the drain itself.
    fn drain(&self) -> io::Result<()>;
}

/// Builds the [`ExternalMemory`] of a pool from its path and size, once the region has opened,
/// locked, sized and validated the file.
pub type ExternalFactory = dyn Fn(&Path, usize) -> io::Result<Arc<dyn ExternalMemory>> + Send + Sync;

/// A shared [`ExternalFactory`] (cloneable, printable) for [`RegionOptions::external`].
#[derive(Clone)]
pub struct ExternalMemorySource(pub Arc<ExternalFactory>);

impl std::fmt::Debug for ExternalMemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalMemorySource(..)")
    }
}

/// Options for creating or opening a [`Region`] (builder).
#[derive(Debug, Clone, Default)]
pub struct RegionOptions {
    layout: Option<String>,
    force_pmem: Option<bool>,
    eadr: Option<bool>,
    #[cfg(feature = "simulate")]
    simulation: Option<crate::sim::Simulation>,
    external: Option<ExternalMemorySource>,
}

impl RegionOptions {
    /// Backs the pool with memory from `source` instead of mapping the file (a regular file
    /// only): the domain becomes [`DomainKind::Paged`].
    pub fn external(mut self, source: ExternalMemorySource) -> Self {
        self.external = Some(source);
        self
    }

    /// Maps `len` bytes of the pool file: through the external source if one is set.
    fn map_pool(
        &self,
        file: &File,
        path: &Path,
        len: usize,
        align: usize,
        backing: Backing,
    ) -> Result<(Mapping, bool)> {
        match (&self.external, backing) {
            (Some(src), Backing::File) => {
                let ext = (src.0)(path, len).map_err(|e| Error::io("attach external memory to", path, e))?;
                if ext.len() < len {
                    return Err(Error::InvalidSize {
                        size: ext.len() as u64,
                        reason: "external memory smaller than the pool",
                    });
                }
                Ok((
                    Mapping {
                        base: ext.base(),
                        len,
                        external: Some(ext),
                    },
                    false,
                ))
            }
            (Some(_), Backing::DeviceDax) => Err(Error::Unsupported {
                what: "external memory for a device-DAX pool",
            }),
            (None, _) => Mapping::new(file, path, len, align, backing),
        }
    }
    /// Default options: layout unchecked (empty at create), domain from the file kind and the
    /// environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layout name written at create and required at open.
    pub fn layout(mut self, name: &str) -> Self {
        self.layout = Some(name.to_owned());
        self
    }

    /// Treat the file as persistent memory (cache-flush domain) even when it is not DAX.
    /// Overrides `PTM_FORCE_PMEM`.
    pub fn force_pmem(mut self, yes: bool) -> Self {
        self.force_pmem = Some(yes);
        self
    }

    /// Declare the platform eADR: flushes are skipped in the cache-flush domain. Overrides
    /// `PTM_EADR`. Has no effect in the msync domain.
    pub fn eadr(mut self, yes: bool) -> Self {
        self.eadr = Some(yes);
        self
    }

    /// Opens or creates the region in the simulated persistence domain driven by `sim` (feature
    /// `simulate`; see [`crate::sim`]): the file is mapped as usual, and `sim` keeps a durable
    /// image (the file's contents at open) that only flush + drain change. Overrides
    /// `force_pmem` and `eadr`.
    ///
    /// A simulated region does not claim its pointer tag in the process's registry of open
    /// pools: the harness opens crash images of a pool (same tag) while the pool is open.
    /// Use a simulated region from one thread at a time (see [`crate::sim`]).
    #[cfg(feature = "simulate")]
    pub fn simulate(mut self, sim: crate::sim::Simulation) -> Self {
        self.simulation = Some(sim);
        self
    }

    #[cfg(feature = "simulate")]
    fn simulated(&self) -> bool {
        self.simulation.is_some()
    }

    #[cfg(not(feature = "simulate"))]
    fn simulated(&self) -> bool {
        false
    }

    /// The pointer-tag registration of a pool opened with these options: claimed in the
    /// registry, except for simulated regions.
    fn claim_tag(&self, tag: u16) -> Result<TagRegistration> {
        if self.simulated() {
            Ok(TagRegistration::unregistered(tag))
        } else {
            TagRegistration::claim(tag)
        }
    }

    /// Refuses a simulation that drives another open region.
    fn check_simulation(&self) -> Result<()> {
        #[cfg(feature = "simulate")]
        if self.simulation.as_ref().is_some_and(|s| s.is_attached()) {
            return Err(Error::Unsupported {
                what: "a simulation already attached to an open region",
            });
        }
        Ok(())
    }

    fn forced(&self) -> bool {
        self.force_pmem.unwrap_or_else(|| env_flag(ENV_FORCE_PMEM))
    }

    fn eadr_on(&self) -> bool {
        self.eadr.unwrap_or_else(|| env_flag(ENV_EADR))
    }

    /// Creates a pool of `size` bytes at `path` and maps it.
    ///
    /// A regular file is created if missing (an existing empty file is used; a non-empty one is
    /// refused); `size` must be a multiple of 4096 of at least 16 KiB. On a device-DAX node the
    /// pool takes the whole device and `size` must be 0 or the device size.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`], [`Error::InvalidSize`], [`Error::InvalidLayoutName`],
    /// [`Error::PoolLocked`], [`Error::Io`].
    pub fn create(&self, path: impl AsRef<Path>, size: u64) -> Result<Region> {
        let path = path.as_ref();
        self.check_simulation()?;
        let layout = self.layout.as_deref().unwrap_or("");
        header::validate_layout(layout).map_err(|reason| Error::InvalidLayoutName { reason })?;
        let existed = path.exists();
        let is_device = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device());
        if !is_device {
            check_size(size)?;
        }
        let result = self.create_inner(path, size, layout);
        if result.is_err() && !existed {
            // Leave nothing behind: the file is ours and holds no pool.
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn create_inner(&self, path: &Path, size: u64, layout: &str) -> Result<Region> {
        let file = open_locked(path, true)?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let (backing, pool_size, align) = if meta.file_type().is_char_device() {
            let (dev_size, align) = devdax_geometry(Path::new("/sys"), meta.rdev())
                .map_err(|e| Error::io("read device-DAX geometry of", path, e))?;
            let pool_size = dev_size & !(PAGE as u64 - 1);
            if size != 0 && size != pool_size {
                return Err(Error::InvalidSize {
                    size,
                    reason: "a device-DAX pool takes the whole device",
                });
            }
            (Backing::DeviceDax, pool_size, align)
        } else if meta.file_type().is_file() {
            if meta.len() != 0 {
                return Err(Error::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            check_size(size)?;
            file.set_len(size)
                .map_err(|e| Error::io("set length of", path, e))?;
            (Backing::File, size, huge_align(size))
        } else {
            return Err(Error::Unsupported {
                what: "pool on something that is neither a regular file nor a device-DAX node",
            });
        };
        check_size(pool_size)?;
        let (map, map_sync) = self.map_pool(&file, path, pool_size as usize, align, backing)?;
        if backing == Backing::DeviceDax {
            // SAFETY: the mapping is `pool_size >= MIN_POOL_SIZE` bytes; we hold the pool lock.
            let existing: PoolHeader = unsafe { map.read_struct(0) };
            if existing.magic == header::MAGIC {
                return Err(Error::AlreadyExists {
                    path: path.to_owned(),
                });
            }
        }
        let mut tag = TagRegistration::new_random()?;
        if self.simulated() {
            tag = TagRegistration::unregistered(tag.tag);
        }
        let hdr = PoolHeader::new(pool_size, layout, random_uuid(), tag.tag, unix_now());
        let mut region = Region::assemble(file, path, map, map_sync, backing, hdr, tag, self);
        // The backup first, the primary last: a crash mid-create leaves no valid primary.
        region.write_header_copy(hdr.backup_offset, &hdr)?;
        region.write_header_copy(0, &hdr)?;
        if backing == Backing::File {
            sync_parent_dir(path)?;
        }
        Ok(region)
    }

    /// Opens an existing pool, validating its header.
    ///
    /// If the primary header is intact but the backup copy is not, the backup is rewritten.
    ///
    /// # Errors
    ///
    /// [`Error::NotAPool`], [`Error::Truncated`], [`Error::SizeMismatch`],
    /// [`Error::UnsupportedVersion`], [`Error::CorruptHeader`], [`Error::LayoutMismatch`],
    /// [`Error::PoolLocked`], [`Error::TagCollision`], [`Error::Io`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Region> {
        let path = path.as_ref();
        self.check_simulation()?;
        let file = open_locked(path, false)?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let (backing, hdr, map, map_sync) = if meta.file_type().is_char_device() {
            // device-DAX supports no read(): validate through the mapping.
            let (dev_size, align) = devdax_geometry(Path::new("/sys"), meta.rdev())
                .map_err(|e| Error::io("read device-DAX geometry of", path, e))?;
            let len = dev_size & !(PAGE as u64 - 1);
            if len < MIN_POOL_SIZE {
                return Err(Error::Truncated {
                    path: path.into(),
                    len,
                    expected: MIN_POOL_SIZE,
                });
            }
            let (map, map_sync) = Mapping::new(&file, path, len as usize, align, Backing::DeviceDax)?;
            let hdr = validate_headers(path, len, |off, buf| {
                // SAFETY: `validate_headers` reads only within `[0, len)`, the mapped length.
                unsafe { map.read_bytes(off, buf) };
                Ok(())
            })?;
            (Backing::DeviceDax, hdr, map, map_sync)
        } else if meta.file_type().is_file() {
            let len = meta.len();
            let hdr = validate_headers(path, len, |off, buf| file.read_exact_at(buf, off))?;
            let (map, map_sync) = self.map_pool(
                &file,
                path,
                hdr.pool_size as usize,
                huge_align(hdr.pool_size),
                Backing::File,
            )?;
            (Backing::File, hdr, map, map_sync)
        } else {
            return Err(Error::NotAPool {
                path: path.to_owned(),
            });
        };
        if let Some(expected) = &self.layout {
            let found = hdr.layout_name();
            if &found != expected {
                return Err(Error::LayoutMismatch {
                    path: path.to_owned(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
        let tag = self.claim_tag(hdr.pptr_tag)?;
        let mut region = Region::assemble(file, path, map, map_sync, backing, hdr, tag, self);
        // SAFETY: the backup offset was validated against the pool size (geometry check), and
        // the mapping covers the whole pool.
        let backup: PoolHeader = unsafe { region.map.read_struct(hdr.backup_offset as usize) };
        if backup.as_bytes() != hdr.as_bytes() {
            region.write_header_copy(hdr.backup_offset, &hdr)?;
            region.backup_rewritten = true;
        }
        Ok(region)
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

fn check_size(size: u64) -> Result<()> {
    if size < MIN_POOL_SIZE {
        return Err(Error::InvalidSize {
            size,
            reason: "smaller than the 16 KiB minimum",
        });
    }
    if size > MAX_POOL_SIZE {
        return Err(Error::InvalidSize {
            size,
            reason: "larger than the 256 TiB maximum",
        });
    }
    if !size.is_multiple_of(PAGE as u64) {
        return Err(Error::InvalidSize {
            size,
            reason: "not a multiple of 4096",
        });
    }
    Ok(())
}

fn huge_align(size: u64) -> usize {
    if size >= HUGE_ALIGN as u64 {
        HUGE_ALIGN
    } else {
        PAGE
    }
}

fn open_locked(path: &Path, create: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    // SAFETY: `file` is an open descriptor owned by this function; flock has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::PoolLocked {
                path: path.to_owned(),
            });
        }
        return Err(Error::io("lock", path, e));
    }
    Ok(file)
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", parent, e))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let filled = File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .is_ok();
    if !filled {
        // Fall back to time and address entropy: identity, not secrecy, is what is needed.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (&b as *const _ as usize as u128);
        let mut x = seed as u64 | 1;
        for byte in &mut b {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
    }
    b
}

fn random_uuid() -> [u8; 16] {
    let mut u: [u8; 16] = random_bytes();
    u[6] = (u[6] & 0x0f) | 0x40; // version 4
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    u
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads and validates the header copies of a pool of `len` bytes through `read(offset, buf)`.
///
/// Returns the primary header when it is valid and the length matches it; otherwise the error
/// that names what is wrong (see [`Error`]).
pub(crate) fn validate_headers(
    path: &Path,
    len: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> Result<PoolHeader> {
    let hs = HEADER_SIZE as u64;
    let mut buf = vec![0u8; HEADER_SIZE];
    if len < hs {
        let n = len as usize;
        read(0, &mut buf[..n]).map_err(|e| Error::io("read header of", path, e))?;
        if n >= 8 && buf[..8] == header::MAGIC {
            let expected = if n >= 40 {
                read_from_bytes::<u64>(&buf[32..]).unwrap_or(MIN_POOL_SIZE)
            } else {
                MIN_POOL_SIZE
            };
            return Err(Error::Truncated {
                path: path.into(),
                len,
                expected: expected.max(MIN_POOL_SIZE),
            });
        }
        return Err(Error::NotAPool { path: path.into() });
    }
    read(0, &mut buf).map_err(|e| Error::io("read header of", path, e))?;
    match PoolHeader::parse(&buf) {
        Ok(h) => {
            if len < h.pool_size {
                Err(Error::Truncated {
                    path: path.into(),
                    len,
                    expected: h.pool_size,
                })
            } else if len > h.pool_size {
                Err(Error::SizeMismatch {
                    path: path.into(),
                    header: h.pool_size,
                    file: len,
                })
            } else {
                Ok(h)
            }
        }
        Err(ParseFailure::Version { found, checksum_ok }) => {
            // A bad checksum with a "newer" version is more likely a damaged version field when
            // the backup copy is an intact pool of our version.
            if !checksum_ok && matches!(read_backup(len, &mut read), Some(Ok(_))) {
                let h: PoolHeader = read_from_bytes(&buf).expect("buffer holds a whole header");
                let problem = HeaderProblem::ChecksumMismatch {
                    stored: h.checksum,
                    computed: h.compute_checksum(),
                };
                return Err(Error::CorruptHeader {
                    path: path.into(),
                    problem,
                    backup_intact: true,
                });
            }
            Err(Error::UnsupportedVersion {
                path: path.into(),
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(ParseFailure::Problem(problem)) => {
            let backup = read_backup(len, &mut read);
            if problem == HeaderProblem::BadMagic && backup.is_none() {
                return Err(Error::NotAPool { path: path.into() });
            }
            let backup_intact = matches!(backup, Some(Ok(_)));
            Err(Error::CorruptHeader {
                path: path.into(),
                problem,
                backup_intact,
            })
        }
    }
}

/// The backup copy at the end of a `len`-byte pool: `None` if there is no magic there (or no
/// room), else its parse result.
fn read_backup(
    len: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> Option<Result<PoolHeader, ParseFailure>> {
    let hs = HEADER_SIZE as u64;
    let end = len & !(hs - 1);
    if end < 2 * hs {
        return None;
    }
    let mut buf = vec![0u8; HEADER_SIZE];
    read(end - hs, &mut buf).ok()?;
    if buf[..8] != header::MAGIC {
        return None;
    }
    Some(PoolHeader::parse(&buf).and_then(|h| {
        if h.backup_offset == end - hs {
            Ok(h)
        } else {
            Err(ParseFailure::Problem(HeaderProblem::BadGeometry {
                field: "backup_offset",
            }))
        }
    }))
}

/// State of both header copies of a pool file, as found by [`inspect_headers`].
#[derive(Debug)]
#[non_exhaustive]
pub struct HeaderReport {
    /// File length in bytes.
    pub file_len: u64,
    /// The primary copy, or what is wrong with it.
    pub primary: Result<PoolHeader, HeaderFault>,
    /// The backup copy, or what is wrong with it.
    pub backup: Result<PoolHeader, HeaderFault>,
}

/// Why one header copy is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderFault {
    /// The file is too short to hold this copy.
    Missing,
    /// The copy is damaged.
    Damaged(HeaderProblem),
    /// The copy is of an unsupported format version.
    Version(u32),
}

impl std::fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderFault::Missing => write!(f, "missing (file too short)"),
            HeaderFault::Damaged(p) => write!(f, "{p}"),
            HeaderFault::Version(v) => write!(f, "unsupported format version {v}"),
        }
    }
}

/// What [`repair_headers`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderRepair {
    /// Both copies were intact and equal.
    NothingToDo,
    /// The primary copy was restored from the backup.
    RestoredPrimary,
    /// The backup copy was rewritten from the primary.
    RestoredBackup,
}

fn fault(r: Result<PoolHeader, ParseFailure>) -> Result<PoolHeader, HeaderFault> {
    r.map_err(|f| match f {
        ParseFailure::Problem(p) => HeaderFault::Damaged(p),
        ParseFailure::Version { found, .. } => HeaderFault::Version(found),
    })
}

/// Reads both header copies of a pool file without mapping it (takes the pool lock while
/// reading). For `ptm check`.
///
/// # Errors
///
/// [`Error::PoolLocked`] or [`Error::Io`]; damage is reported in the [`HeaderReport`].
pub fn inspect_headers(path: impl AsRef<Path>) -> Result<HeaderReport> {
    let path = path.as_ref();
    let file = open_locked(path, false)?;
    inspect_file(&file, path)
}

fn inspect_file(file: &File, path: &Path) -> Result<HeaderReport> {
    let file_len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let hs = HEADER_SIZE as u64;
    let mut buf = vec![0u8; HEADER_SIZE];
    let primary = if file_len < hs {
        Err(HeaderFault::Missing)
    } else {
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| Error::io("read header of", path, e))?;
        fault(PoolHeader::parse(&buf))
    };
    let mut read = |off, b: &mut [u8]| file.read_exact_at(b, off);
    let backup = match read_backup(file_len, &mut read) {
        None if file_len & !(hs - 1) < 2 * hs => Err(HeaderFault::Missing),
        None => Err(HeaderFault::Damaged(HeaderProblem::BadMagic)),
        Some(r) => fault(r),
    };
    Ok(HeaderReport {
        file_len,
        primary,
        backup,
    })
}

/// Restores a damaged header copy of a pool file from the intact one.
///
/// # Errors
///
/// [`Error::CorruptHeader`] (with `backup_intact: false`) when neither copy is intact,
/// [`Error::NotAPool`] when neither has the magic, [`Error::PoolLocked`], [`Error::Io`].
pub fn repair_headers(path: impl AsRef<Path>) -> Result<HeaderRepair> {
    let path = path.as_ref();
    let file = open_locked(path, false)?;
    let file_len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let write = |off: u64, h: &PoolHeader| {
        file.write_all_at(h.as_bytes(), off)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("write header of", path, e))
    };
    // Decide exactly as `open` does, so repair acts only where open reports a damaged primary
    // with an intact backup, and otherwise returns the error open would give.
    match validate_headers(path, file_len, |off, buf| file.read_exact_at(buf, off)) {
        Ok(primary) => {
            let report = inspect_file(&file, path)?;
            match report.backup {
                Ok(b) if b.as_bytes() == primary.as_bytes() => Ok(HeaderRepair::NothingToDo),
                _ => {
                    write(primary.backup_offset, &primary)?;
                    Ok(HeaderRepair::RestoredBackup)
                }
            }
        }
        Err(Error::CorruptHeader {
            backup_intact: true, ..
        }) => {
            let report = inspect_file(&file, path)?;
            let Ok(backup) = report.backup else {
                return Err(Error::CorruptHeader {
                    path: path.into(),
                    problem: HeaderProblem::BadMagic,
                    backup_intact: false,
                });
            };
            // Never restore a header that would not open: the file must be the backup's size.
            if file_len < backup.pool_size {
                return Err(Error::Truncated {
                    path: path.into(),
                    len: file_len,
                    expected: backup.pool_size,
                });
            }
            if file_len > backup.pool_size {
                return Err(Error::SizeMismatch {
                    path: path.into(),
                    header: backup.pool_size,
                    file: file_len,
                });
            }
            write(0, &backup)?;
            Ok(HeaderRepair::RestoredPrimary)
        }
        Err(e) => Err(e),
    }
}

/// Reads `(size, align)` of a device-DAX node from sysfs under `sysfs_root` (normally `/sys`):
/// `dev/char/MAJ:MIN/size` and `dev/char/MAJ:MIN/device/align` (falling back to 2 MiB).
pub(crate) fn devdax_geometry(sysfs_root: &Path, rdev: u64) -> io::Result<(u64, usize)> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let dir = sysfs_root.join(format!("dev/char/{major}:{minor}"));
    let subsystem = std::fs::read_link(dir.join("subsystem"))?;
    if subsystem.file_name().is_none_or(|n| n != "dax") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "character device is not a device-DAX node",
        ));
    }
    let read_num = |p: PathBuf| -> io::Result<u64> {
        let s = std::fs::read_to_string(&p)?;
        s.trim().parse::<u64>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a number: {s:?}", p.display()),
            )
        })
    };
    let size = read_num(dir.join("size"))?;
    let align = match read_num(dir.join("device/align")) {
        Ok(a) if a.is_power_of_two() && a >= PAGE as u64 => a as usize,
        Ok(a) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad device-DAX alignment {a}"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => HUGE_ALIGN,
        Err(e) => return Err(e),
    };
    Ok((size, align))
}

/// Whether the kernel accepts `MAP_SHARED_VALIDATE | MAP_SYNC` for `fd` (a file on a DAX file
/// system), tried on one page at a kernel-chosen address and unmapped again.
fn probe_map_sync(fd: libc::c_int) -> bool {
    // SAFETY: a fresh mapping at an address the kernel chooses (no MAP_FIXED), of one page of an
    // open, read-write file; nothing else refers to it and it is unmapped right away.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        libc::munmap(p, PAGE);
        true
    }
}

/// A shared mapping of the whole pool, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// Memory owned by an external provider (not unmapped here).
    external: Option<Arc<dyn ExternalMemory>>,
}

// SAFETY: the mapping is plain shared memory; who may access which bytes is governed by `Region`
// (reads through `&self`, writes through `&mut self`, raw access under the caller's contract).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at an `align`-aligned address. For regular files
    /// `MAP_SHARED_VALIDATE | MAP_SYNC` is tried first; returns whether it was accepted.
    fn new(file: &File, path: &Path, len: usize, align: usize, backing: Backing) -> Result<(Mapping, bool)> {
        let fd = file.as_raw_fd();
        let reserve = len + align;
        // SAFETY: an anonymous PROT_NONE reservation at a kernel-chosen address; no memory is
        // accessed.
        let res = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if res == libc::MAP_FAILED {
            return Err(Error::io(
                "reserve address space for",
                path,
                io::Error::last_os_error(),
            ));
        }
        let res_addr = res as usize;
        let aligned = (res_addr + align - 1) & !(align - 1);
        // SAFETY: `aligned..aligned+len` lies inside the reservation we own (aligned - res_addr < align).
        let want = unsafe { res.cast::<u8>().add(aligned - res_addr) }.cast::<libc::c_void>();
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // Probe MAP_SYNC with a one-page mapping at an address of the kernel's choosing. A
        // refused MAP_FIXED attempt inside the reservation can leave a hole there (the kernel
        // may unmap the range before it checks the flags), which another thread's mmap could
        // take and our retry would then clobber.
        let map_sync = backing == Backing::File && probe_map_sync(fd);
        let flags = if map_sync {
            libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC | libc::MAP_FIXED
        } else {
            libc::MAP_SHARED | libc::MAP_FIXED
        };
        // SAFETY: MAP_FIXED over our own reservation; the fd is open read-write.
        let addr = unsafe { libc::mmap(want, len, prot, flags, fd, 0) };
        if addr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping the reservation we created above.
            unsafe { libc::munmap(res, reserve) };
            return Err(Error::io("mmap", path, e));
        }
        // Trim the unused ends of the reservation.
        let head = aligned - res_addr;
        let tail = reserve - head - len;
        // SAFETY: both ranges are parts of our reservation outside the file mapping.
        unsafe {
            if head > 0 {
                libc::munmap(res, head);
            }
            if tail > 0 {
                libc::munmap(want.cast::<u8>().add(len).cast(), tail);
            }
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| Error::io("mmap", path, io::Error::other("null mapping")))?;
        Ok((
            Mapping {
                base,
                len,
                external: None,
            },
            map_sync,
        ))
    }

    /// Copies `buf.len()` bytes at `off` out of the mapping.
    ///
    /// # Safety
    ///
    /// `off + buf.len() <= self.len`, and no other thread writes those bytes concurrently.
    unsafe fn read_bytes(&self, off: u64, buf: &mut [u8]) {
        // SAFETY: in bounds per the caller; `buf` is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(off as usize), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Reads a `T` at `off` (any alignment).
    ///
    /// # Safety
    ///
    /// `off + size_of::<T>() <= self.len`, and no other thread writes those bytes concurrently.
    unsafe fn read_struct<T: Persistent>(&self, off: usize) -> T {
        // SAFETY: in bounds per the caller; `T: Persistent` accepts every bit pattern.
        unsafe { std::ptr::read_unaligned(self.base.as_ptr().add(off).cast::<T>()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.external.is_some() {
            return; // the provider owns (and writes back) its memory
        }
        // SAFETY: unmapping exactly the range mapped in `new`; the `Region` that owned the
        // mapping is being dropped, so no reference into it remains.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Pointer tags of the pools open in this process (so no two of them share a tag).
static OPEN_TAGS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct TagRegistration {
    tag: u16,
    /// False for a simulated region's tag, which is not entered in `OPEN_TAGS`.
    registered: bool,
}

impl TagRegistration {
    fn claim(tag: u16) -> Result<Self> {
        let mut open = OPEN_TAGS.lock().unwrap_or_else(|p| p.into_inner());
        if open.contains(&tag) {
            return Err(Error::TagCollision { tag });
        }
        open.push(tag);
        Ok(TagRegistration {
            tag,
            registered: true,
        })
    }

    /// A tag not entered in the registry (simulated regions).
    fn unregistered(tag: u16) -> Self {
        TagRegistration {
            tag,
            registered: false,
        }
    }

    fn new_random() -> Result<Self> {
        let mut open = OPEN_TAGS.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..64 {
            let tag = u16::from_le_bytes(random_bytes());
            if tag != 0 && !open.contains(&tag) {
                open.push(tag);
                return Ok(TagRegistration {
                    tag,
                    registered: true,
                });
            }
        }
        Err(Error::Unsupported {
            what: "no free pointer tag (too many pools open in this process)",
        })
    }
}

impl Drop for TagRegistration {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let mut open = OPEN_TAGS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = open.iter().position(|&t| t == self.tag) {
            open.swap_remove(i);
        }
    }
}

/// An open, locked, mapped pool.
///
/// The region is the raw layer: it hands out offsets, [`PPtr`]s resolved to raw pointers, and
/// byte copies, and makes ranges durable with [`flush`](Region::flush) +
/// [`drain`](Region::drain). Byte access through `&self` only reads and through `&mut self`
/// writes; code that writes through [`base`](Region::base) must itself rule out concurrent access
/// to the same bytes. Dropping the region unmaps and unlocks the pool; it does not drain.
#[derive(Debug)]
pub struct Region {
    map: Mapping,
    path: PathBuf,
    header: PoolHeader,
    domain: DomainKind,
    backing: Backing,
    map_sync: bool,
    /// Page ranges `[start, end)` (byte offsets) flushed but not yet msynced (msync domain).
    pending: Mutex<Vec<(usize, usize)>>,
    backup_rewritten: bool,
    /// The simulation driving a simulated region.
    #[cfg(feature = "simulate")]
    sim: Option<crate::sim::Attachment>,
    _tag: TagRegistration,
    // Declared last: dropped (closing the descriptor, releasing the lock) after the unmap.
    _file: File,
}

impl Region {
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        file: File,
        path: &Path,
        map: Mapping,
        map_sync: bool,
        backing: Backing,
        header: PoolHeader,
        tag: TagRegistration,
        opts: &RegionOptions,
    ) -> Region {
        let pmem = map_sync || backing == Backing::DeviceDax || opts.forced();
        #[allow(unused_mut)]
        let mut domain = match (pmem, flush::detected_flush_instruction()) {
            (true, _) if opts.eadr_on() => DomainKind::Eadr,
            (true, Some(insn)) => DomainKind::CacheFlush(insn),
            // No flush instruction known: fall back to msync, which is always correct for files.
            _ => DomainKind::Msync,
        };
        if map.external.is_some() {
            domain = DomainKind::Paged;
        }
        #[cfg(feature = "simulate")]
        let sim = opts.simulation.as_ref().map(|s| {
            domain = DomainKind::Simulated;
            s.attach(map.len, |buf| {
                // SAFETY: the mapping is `map.len` bytes, just created; nothing else uses it yet.
                unsafe { map.read_bytes(0, buf) }
            })
        });
        Region {
            map,
            path: path.to_owned(),
            header,
            domain,
            backing,
            map_sync,
            pending: Mutex::new(Vec::new()),
            backup_rewritten: false,
            #[cfg(feature = "simulate")]
            sim,
            _tag: tag,
            _file: file,
        }
    }

    /// Creates a pool with default options (see [`RegionOptions::create`]).
    ///
    /// # Errors
    ///
    /// As [`RegionOptions::create`].
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Region> {
        RegionOptions::new().create(path, size)
    }

    /// Opens a pool with default options (see [`RegionOptions::open`]).
    ///
    /// # Errors
    ///
    /// As [`RegionOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Region> {
        RegionOptions::new().open(path)
    }

    /// The persistence domain chosen at open.
    pub fn domain(&self) -> DomainKind {
        self.domain
    }

    /// What the pool lives on.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Whether the kernel accepted `MAP_SYNC` (the file is on a DAX file system).
    pub fn map_sync(&self) -> bool {
        self.map_sync
    }

    /// Whether open found the backup header differing from the valid primary and rewrote it.
    pub fn backup_rewritten(&self) -> bool {
        self.backup_rewritten
    }

    /// The pool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool header as validated at open.
    pub fn header(&self) -> &PoolHeader {
        &self.header
    }

    /// Total mapped bytes (the pool size).
    pub fn len(&self) -> u64 {
        self.map.len as u64
    }

    /// Always false: a pool is at least 16 KiB.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The data area `[start, end)` available to upper layers (between the two header copies).
    pub fn data_range(&self) -> std::ops::Range<u64> {
        self.header.data_offset..self.header.data_offset + self.header.data_size
    }

    /// Base address of the mapping.
    ///
    /// Writing through it is the caller's responsibility: no other access to the same bytes
    /// may run concurrently, and the bytes of both header copies must not be written.
    pub fn base(&self) -> NonNull<u8> {
        self.map.base
    }

    /// Checks that `[offset, offset + len)` lies in the data area.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let r = self.data_range();
        match offset.checked_add(len) {
            Some(end) if offset >= r.start && end <= r.end => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                start: r.start,
                end: r.end,
            }),
        }
    }

    /// A [`PPtr`] to the `T` at `offset`, checked for bounds and alignment.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`], [`Error::Misaligned`].
    pub fn pptr_at<T: Persistent>(&self, offset: u64) -> Result<PPtr<T>> {
        let () = T::__LAYOUT_CHECK;
        self.check_range(offset, core::mem::size_of::<T>() as u64)?;
        let align = core::mem::align_of::<T>() as u64;
        if !offset.is_multiple_of(align) {
            return Err(Error::Misaligned { offset, align });
        }
        Ok(PPtr::from_parts(self.header.pptr_tag, offset))
    }

    /// Turns a [`PPtr`] into an address in this mapping, checking null, the pool tag, bounds
    /// and alignment.
    ///
    /// # Errors
    ///
    /// [`Error::NullPointer`], [`Error::WrongPool`], [`Error::OutOfBounds`], [`Error::Misaligned`].
    pub fn resolve<T: Persistent>(&self, p: PPtr<T>) -> Result<NonNull<T>> {
        if p.is_null() {
            return Err(Error::NullPointer);
        }
        if p.tag() != self.header.pptr_tag {
            return Err(Error::WrongPool {
                expected: self.header.pptr_tag,
                found: p.tag(),
            });
        }
        let offset = p.offset();
        self.pptr_at::<T>(offset)?;
        // SAFETY: `offset + size_of::<T>()` lies within the mapping (checked just above).
        Ok(unsafe { self.resolve_unchecked(p) })
    }

    /// Turns a [`PPtr`] into an address without any check.
    ///
    /// # Safety
    ///
    /// `p` must belong to this pool and `p.offset() + size_of::<T>()` must not exceed
    /// [`len`](Region::len); the result is only as aligned as the offset.
    pub unsafe fn resolve_unchecked<T>(&self, p: PPtr<T>) -> NonNull<T> {
        // SAFETY: the caller guarantees the offset lies inside the mapping, so the sum stays
        // within the mapped allocation and is non-null.
        unsafe { self.map.base.add(p.offset() as usize).cast() }
    }

    fn check_mapped(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                start: 0,
                end: self.len(),
            }),
        }
    }

    /// Copies bytes at `offset` (anywhere in the pool, headers included) into `buf`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_mapped(offset, buf.len() as u64)?;
        // SAFETY: in bounds (checked); writers need `&mut self` or uphold `base`'s contract.
        unsafe { self.map.read_bytes(offset, buf) };
        Ok(())
    }

    /// Copies `data` into the data area at `offset` (not yet durable: flush and drain).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        // SAFETY: in bounds of the data area (checked); `&mut self` excludes other access.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.base.as_ptr().add(offset as usize),
                data.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the data area at `offset` with non-temporal stores and flushes its
    /// partial head and tail lines: durable after the next [`drain`](Region::drain).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn write_nontemporal_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        // SAFETY: in bounds of the data area (checked); `&mut self` excludes other access, and
        // `data` is a distinct allocation.
        unsafe {
            self.copy_nontemporal_ptr(
                self.map.base.as_ptr().add(offset as usize),
                data.as_ptr(),
                data.len(),
            )
        };
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` inside the mapping the way the domain wants bulk
    /// writes: non-temporal stores with partial head/tail lines flushed (cache-flush, eADR), or
    /// a plain copy with its pages recorded (msync). Durable after the next
    /// [`drain`](Region::drain).
    ///
    /// # Safety
    ///
    /// - `[dst, dst + len)` lies inside this region's mapping and `src` is valid for `len` reads;
    /// - the ranges do not overlap and no other thread accesses `[dst, dst + len)` meanwhile.
    pub unsafe fn copy_nontemporal_ptr(&self, dst: *mut u8, src: *const u8, len: usize) {
        match self.domain {
            // SAFETY: forwarded caller contract; `insn` was detected on this CPU.
            DomainKind::CacheFlush(insn) => unsafe { flush::copy_nontemporal(dst, src, len, Some(insn)) },
            // SAFETY: forwarded caller contract; eADR needs no flush, the drain orders the stores.
            DomainKind::Eadr => unsafe { flush::copy_nontemporal(dst, src, len, None) },
            DomainKind::Msync => {
                // SAFETY: forwarded caller contract.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                self.record_pages(dst as usize - self.map.base.as_ptr() as usize, len);
            }
            DomainKind::Paged => {
                // SAFETY: forwarded caller contract.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                self.external_flush(dst, len);
            }
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => {
                // SAFETY: forwarded caller contract.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                // SAFETY: `[dst, dst + len)` lies in the mapping (caller), so do its lines (the
                // mapping is page-aligned and page-sized); the caller excludes concurrent writers.
                unsafe { self.sim_record(dst, len) };
                flush::count(|s| s.nt_bytes += len as u64);
            }
        }
    }

    /// Records `[ptr, ptr + len)`'s lines in the simulation.
    ///
    /// # Safety
    ///
    /// The range lies inside the mapping and no other thread writes its lines meanwhile.
    #[cfg(feature = "simulate")]
    unsafe fn sim_record(&self, ptr: *const u8, len: usize) {
        if let Some(att) = &self.sim {
            let offset = ptr as usize - self.map.base.as_ptr() as usize;
            // SAFETY: forwarded; the simulation was attached to this mapping at open.
            unsafe { att.sim().record(self.map.base.as_ptr(), offset, len) };
        }
    }

    /// Starts making `[offset, offset + len)` durable: writes back its cache lines (cache-flush
    /// domain), nothing (eADR), or records its pages (msync). Durable after [`drain`](Region::drain).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] if the range leaves the mapping.
    #[inline]
    pub fn flush(&self, offset: u64, len: u64) -> Result<()> {
        self.check_mapped(offset, len)?;
        // SAFETY: the range lies inside the mapping (checked).
        unsafe { self.flush_ptr(self.map.base.as_ptr().add(offset as usize), len as usize) };
        Ok(())
    }

    /// [`flush`](Region::flush) by address, without the bounds check.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` lies inside this region's mapping.
    #[inline]
    pub unsafe fn flush_ptr(&self, ptr: *const u8, len: usize) {
        match self.domain {
            // SAFETY: the caller guarantees the range is mapped; cache lines containing it lie in
            // the same page-aligned mapping; `insn` was detected on this CPU.
            DomainKind::CacheFlush(insn) => unsafe { flush::flush_range(insn, ptr, len) },
            DomainKind::Eadr => {}
            DomainKind::Msync => self.record_pages(ptr as usize - self.map.base.as_ptr() as usize, len),
            DomainKind::Paged => self.external_flush(ptr, len),
            // SAFETY: the caller guarantees the range is mapped; the simulated domain's
            // single-thread rule (see `RegionOptions::simulate`) excludes concurrent writers.
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => unsafe { self.sim_record(ptr, len) },
        }
    }

    fn external_flush(&self, ptr: *const u8, len: usize) {
        if let Some(ext) = &self.map.external {
            ext.flush(ptr as usize - self.map.base.as_ptr() as usize, len);
        }
    }

    fn record_pages(&self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        let start = offset & !(PAGE - 1);
        let end = (offset + len + PAGE - 1) & !(PAGE - 1);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((start, end));
    }

    /// Waits until every range flushed so far by this thread (msync: by any thread) is durable.
    ///
    /// Cache-flush and eADR domains: one `sfence`. Msync domain: `msync(MS_SYNC)` of the
    /// recorded pages, coalesced; drains are serialized so a drain never returns while another
    /// thread's msync of the same pages is still in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `msync` fails (msync domain only).
    #[inline]
    pub fn drain(&self) -> Result<()> {
        match self.domain {
            DomainKind::CacheFlush(_) | DomainKind::Eadr => {
                flush::drain_fence();
                Ok(())
            }
            DomainKind::Msync => self.drain_msync(),
            DomainKind::Paged => {
                flush::count(|s| s.drains += 1);
                match &self.map.external {
                    Some(ext) => ext.drain().map_err(|e| Error::io("drain", &self.path, e)),
                    None => Ok(()),
                }
            }
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => {
                if let Some(att) = &self.sim {
                    // SAFETY: the simulation was attached to this mapping at open; the simulated
                    // domain's single-thread rule excludes concurrent writers.
                    unsafe { att.sim().drain(self.map.base.as_ptr()) };
                }
                Ok(())
            }
        }
    }

    fn drain_msync(&self) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.sort_unstable();
        let mut pages = 0u64;
        let mut result = Ok(());
        let mut i = 0;
        while i < pending.len() {
            let (start, mut end) = pending[i];
            i += 1;
            while i < pending.len() && pending[i].0 <= end {
                end = end.max(pending[i].1);
                i += 1;
            }
            // SAFETY: `[start, end)` are page-aligned offsets recorded from in-bounds flushes, so
            // the range lies in the mapping; msync does not modify memory.
            let rc = unsafe {
                libc::msync(
                    self.map.base.as_ptr().add(start).cast(),
                    end - start,
                    libc::MS_SYNC,
                )
            };
            if rc != 0 && result.is_ok() {
                result = Err(Error::io("msync", &self.path, io::Error::last_os_error()));
            }
            pages += ((end - start) / PAGE) as u64;
        }
        pending.clear();
        flush::count(|s| {
            s.drains += 1;
            s.pages_synced += pages;
        });
        result
    }

    /// [`flush`](Region::flush) then [`drain`](Region::drain).
    ///
    /// # Errors
    ///
    /// As both.
    pub fn persist(&self, offset: u64, len: u64) -> Result<()> {
        self.flush(offset, len)?;
        self.drain()
    }

    fn write_header_copy(&mut self, offset: u64, h: &PoolHeader) -> Result<()> {
        self.check_mapped(offset, HEADER_SIZE as u64)?;
        // SAFETY: in bounds (checked); `&mut self` excludes other access.
        unsafe {
            std::ptr::copy_nonoverlapping(
                h.as_bytes().as_ptr(),
                self.map.base.as_ptr().add(offset as usize),
                HEADER_SIZE,
            )
        };
        self.persist(offset, HEADER_SIZE as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `root/dev/char/MAJ:MIN/{size, device/align, subsystem -> .../dax}`.
    fn fake_sysfs(
        root: &Path,
        major: u32,
        minor: u32,
        subsystem: &str,
        size: &str,
        align: Option<&str>,
    ) -> u64 {
        let dir = root.join(format!("dev/char/{major}:{minor}"));
        std::fs::create_dir_all(dir.join("device")).unwrap();
        std::fs::create_dir_all(root.join("class").join(subsystem)).unwrap();
        std::os::unix::fs::symlink(root.join("class").join(subsystem), dir.join("subsystem")).unwrap();
        std::fs::write(dir.join("size"), size).unwrap();
        if let Some(a) = align {
            std::fs::write(dir.join("device/align"), a).unwrap();
        }
        libc::makedev(major, minor)
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn devdax_geometry_reads_size_and_alignment_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let rdev = fake_sysfs(root.path(), 251, 3, "dax", "17179869184\n", Some("1073741824\n"));
        assert_eq!(
            devdax_geometry(root.path(), rdev).unwrap(),
            (17_179_869_184, 1 << 30)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn devdax_geometry_defaults_to_2mib_alignment() {
        let root = tempfile::tempdir().unwrap();
        let rdev = fake_sysfs(root.path(), 251, 4, "dax", "4294967296", None);
        assert_eq!(
            devdax_geometry(root.path(), rdev).unwrap(),
            (4_294_967_296, 2 << 20)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn devdax_geometry_rejects_other_devices_and_bad_values() {
        let root = tempfile::tempdir().unwrap();
        let tty = fake_sysfs(root.path(), 4, 1, "tty", "0", None);
        assert_eq!(
            devdax_geometry(root.path(), tty).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let bad = fake_sysfs(root.path(), 251, 5, "dax", "lots", None);
        assert_eq!(
            devdax_geometry(root.path(), bad).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let odd = fake_sysfs(root.path(), 251, 6, "dax", "4096", Some("3000"));
        assert_eq!(
            devdax_geometry(root.path(), odd).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let missing = libc::makedev(251, 99);
        assert_eq!(
            devdax_geometry(root.path(), missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
