//! [`RegionOptions`]: the builder that creates or opens a [`Region`], and the choice of its
//! persistence domain.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::domain::{DirtyPages, Domain, ExternalMemory, JournalDomain};
use super::headers::{judge_shutdown, validate_headers, write_headers_to_file};
use super::mapping::{
    devdax_geometry, open_locked, probe_map_sync, random_bytes, sync_parent_dir, Backing, Mapping,
    TagRegistration,
};
use super::sysfs::{self, DeviceNumber, NvdimmRegion, PlatformDomain};
use super::{Region, HUGE_ALIGN, PAGE};
use crate::error::{Error, Result};
use crate::flush;
use crate::header::{self, PoolHeader, ShutdownRecord, FLAG_JOURNAL, MAX_POOL_SIZE, MIN_POOL_SIZE};
use crate::journal::{self, format::JournalHeader, Journal, JournalOptions, ReplayReport, WriteAheadGate};

/// Which persistence engine a pool on a regular file runs on (see the table in
/// docs/design.md §3). Device-DAX nodes and DAX files accepting `MAP_SYNC` are persistent
/// memory whatever is asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// Persistent memory where the file is (DAX with `MAP_SYNC`, device-DAX, or forced with
    /// [`RegionOptions::force_pmem`] / `PTM_FORCE_PMEM=1`); on any other file, the journaled
    /// engine. The default.
    #[default]
    Auto,
    /// The file is persistent memory (cache-flush or eADR domain), as
    /// [`force_pmem(true)`](RegionOptions::force_pmem): for tmpfs emulation.
    Pmem,
    /// The journaled disk engine: memory mapped copy-on-write, every ordering point a record
    /// appended to a journal, one `fdatasync` per durability point shared by concurrent
    /// committers, changed pages written home by checkpoints (see [`JournalOptions`](crate::JournalOptions)). With
    /// [`RegionOptions::external`] memory (nvme-backing's paged region) the same journal runs
    /// over that memory, whose eviction of a changed page waits until the journal is durable
    /// ([`crate::journal::WriteAheadGate`]); without this engine, external memory runs its own
    /// write-through domain.
    Journaled,
    /// A shared file mapping made durable by `msync(MS_SYNC)` at every ordering and durability
    /// point (two or more device flushes per transaction). Kept for comparison.
    Msync,
}

impl Engine {
    /// `auto`, `pmem`, `journaled` or `msync`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Pmem => "pmem",
            Engine::Journaled => "journaled",
            Engine::Msync => "msync",
        }
    }

    /// Parses [`name`](Engine::name)'s output.
    pub fn from_name(s: &str) -> Option<Engine> {
        [Engine::Auto, Engine::Pmem, Engine::Journaled, Engine::Msync]
            .into_iter()
            .find(|e| e.name() == s)
    }
}

/// Environment variable that, set to `1`, treats every pool as persistent memory (cache-flush
/// domain), as on tmpfs `/dev/shm` emulation. `0` disables it. An explicit
/// [`RegionOptions::force_pmem`] wins over the variable.
pub const ENV_FORCE_PMEM: &str = "PTM_FORCE_PMEM";
/// Environment variable that, set to `1`, declares the platform eADR (caches inside the
/// persistence domain): flushes become no-ops, drains stay; set to `0`, declares it absent. An
/// explicit [`RegionOptions::eadr`] wins over the variable, and the variable over what sysfs
/// reports (`persistence_domain`).
pub const ENV_EADR: &str = "PTM_EADR";
/// Environment variable naming the sysfs root read at open instead of `/sys` (for tests of
/// the hardware detection on fake trees). [`RegionOptions::sysfs_root`] wins over it.
pub const ENV_SYSFS_ROOT: &str = "PTM_SYSFS_ROOT";

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
    engine: Engine,
    journal: JournalOptions,
    sysfs_root: Option<PathBuf>,
    ignore_unsafe_shutdown: bool,
    grow_room: Option<u64>,
}

impl RegionOptions {
    /// Address space reserved at open for the pool to grow into while open
    /// ([`Region::grow`](super::Region::grow)): a pool file is mapped at an address with
    /// `bytes` (at least its size) free after it, `PROT_NONE` and `MAP_NORESERVE` (no memory,
    /// no swap). Default: 64 times the pool size, at least 1 GiB, at most 256 TiB.
    pub fn grow_room(mut self, bytes: u64) -> Self {
        self.grow_room = Some(bytes);
        self
    }

    fn grow_room_for(&self, len: usize) -> usize {
        let default = (len as u64).saturating_mul(64).max(1 << 30);
        self.grow_room
            .unwrap_or(default)
            .min(MAX_POOL_SIZE)
            .max(len as u64) as usize
    }

    /// The persistence engine for a pool on a regular file (default [`Engine::Auto`]).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Options of the journaled engine (journal path, bound, buffered durability). The journal
    /// options are also used by other engines to find a journal to replay at open.
    pub fn journal(mut self, opts: JournalOptions) -> Self {
        self.journal = opts;
        self
    }

    /// Reads the platform's description of the pool's device (libnvdimm region, persistence
    /// domain, unsafe-shutdown counts) under `root` instead of `/sys`. For tests, which build
    /// fake sysfs trees; overrides `PTM_SYSFS_ROOT`.
    #[doc(hidden)]
    pub fn sysfs_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.sysfs_root = Some(root.into());
        self
    }

    /// Opens the pool even if its device counted an unsafe shutdown while the pool was in use
    /// ([`Error::UnsafeShutdown`]), to verify it. The pool's recorded shutdown state is left as
    /// it was: the next open without this option refuses again, until
    /// [`accept_unsafe_shutdown`](super::accept_unsafe_shutdown) records the new count. Has no
    /// effect on `create`.
    pub fn ignore_unsafe_shutdown(mut self, yes: bool) -> Self {
        self.ignore_unsafe_shutdown = yes;
        self
    }

    /// The libnvdimm region under a pool of `backing` with metadata `meta`, from sysfs; `None`
    /// for simulated regions (the harness models the hardware itself) or when there is none.
    fn platform(&self, meta: &std::fs::Metadata, backing: Backing) -> Option<NvdimmRegion> {
        if self.simulated() {
            return None;
        }
        let device = match backing {
            Backing::DeviceDax => DeviceNumber::Char(meta.rdev()),
            Backing::File => DeviceNumber::Block(meta.dev()),
        };
        sysfs::find_region(&self.sysfs(), device)
    }

    /// The sysfs root: the option, else `PTM_SYSFS_ROOT`, else `/sys`.
    fn sysfs(&self) -> PathBuf {
        sysfs::sysfs_root(self.sysfs_root.as_deref())
    }

    /// At open: what the pool's shutdown record should become (`None`: leave it), or
    /// [`Error::UnsafeShutdown`]. See [`judge_shutdown`].
    fn shutdown_on_open(
        &self,
        path: &Path,
        hdr: &PoolHeader,
        platform: Option<&NvdimmRegion>,
    ) -> Result<Option<ShutdownRecord>> {
        if self.ignore_unsafe_shutdown {
            return Ok(None);
        }
        judge_shutdown(path, hdr.shutdown_record(), platform)
    }

    /// Whether a regular file opened with these options runs on the journaled engine. With
    /// external memory only when asked for ([`Engine::Journaled`]); otherwise the memory's own
    /// write-through domain ([`DomainKind::Paged`](super::DomainKind::Paged)).
    fn journaled(&self, file: &File) -> bool {
        if self.simulated() {
            return false;
        }
        if self.external.is_some() {
            return self.engine == Engine::Journaled;
        }
        match self.engine {
            Engine::Journaled => true,
            Engine::Pmem | Engine::Msync => false,
            Engine::Auto => !self.forced() && !probe_map_sync(file.as_raw_fd()),
        }
    }
    /// Backs the pool with memory from `source` instead of mapping the file (a regular file
    /// only). The domain becomes [`DomainKind::Paged`](super::DomainKind::Paged) (the memory's
    /// own flush and drain), or with [`Engine::Journaled`] the journaled engine over that
    /// memory: ordering points append journal records, a durability point is one shared
    /// `fdatasync`, the memory writes a changed page home (eviction) only once the journal is
    /// durable ([`crate::journal::WriteAheadGate`]), and checkpoints write changed pages home
    /// through the memory. The memory must accept the gate
    /// ([`ExternalMemory::install_write_ahead`]), else opening fails with
    /// [`Error::Unsupported`].
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
    ) -> Result<Mapped> {
        match (&self.external, backing) {
            (Some(src), Backing::File) => {
                let ext = (src.0)(path, len).map_err(|e| Error::io("attach external memory to", path, e))?;
                if ext.len() < len {
                    return Err(Error::InvalidSize {
                        size: ext.len() as u64,
                        reason: "external memory smaller than the pool",
                    });
                }
                Ok(Mapped {
                    map: Mapping::borrowed(ext.base(), len),
                    map_sync: false,
                    external: Some(ext),
                    private: false,
                    journaled: self.journaled(file),
                })
            }
            (Some(_), Backing::DeviceDax) => Err(Error::Unsupported {
                what: "external memory for a device-DAX pool",
            }),
            (None, _) => {
                let private = backing == Backing::File && self.journaled(file);
                let room = if backing == Backing::File {
                    self.grow_room_for(len)
                } else {
                    len
                };
                let mut m = Mapped::own(Mapping::new(file, path, len, align, backing, private, room)?);
                m.private = private;
                m.journaled = private;
                Ok(m)
            }
        }
    }

    /// The persistence domain of a region opened with these options over `mapped` (see the
    /// table in the [module docs](super)): simulated if a simulation is set, external if the
    /// memory came from a provider, else cache flush / eADR for persistent memory and msync
    /// for the rest.
    fn choose_domain(
        &self,
        mapped: &mut Mapped,
        backing: Backing,
        platform: Option<&NvdimmRegion>,
        journal: Option<StartJournal<'_>>,
    ) -> Result<Domain> {
        #[cfg(feature = "simulate")]
        if let Some(sim) = &self.simulation {
            let map = &mapped.map;
            return Ok(Domain::Simulated(sim.attach(map.len(), |buf| {
                // SAFETY: the mapping is `map.len()` bytes, just created; nothing else uses it yet.
                unsafe { map.read_bytes(0, buf) }
            })));
        }
        if !mapped.journaled {
            if let Some(ext) = mapped.external.take() {
                return Ok(Domain::External(ext));
            }
        }
        if mapped.journaled {
            let j = journal.ok_or(Error::Unsupported {
                what: "a journaled pool without its journal",
            })?;
            let jfile = j.jfile;
            let home = j
                .home
                .try_clone()
                .map_err(|e| Error::io("duplicate the descriptor of", j.jpath, e))?;
            // SAFETY: the mapping is `map.len()` bytes at `map.base`, owned by the region this
            // domain goes into, which drops the domain (and so the journal) before the mapping
            // (`Region`'s field order and its `Drop`) — or external memory, which the journal
            // keeps alive itself (`over_external` below); it maps the pool file `home` whose data
            // area is `data`.
            let journal = unsafe {
                Journal::start(
                    Box::new(jfile),
                    Box::new(home),
                    j.jpath,
                    j.uuid,
                    mapped.map.base.as_ptr(),
                    mapped.map.len() as u64,
                    j.data,
                    j.previous,
                    j.next_seq,
                    &self.journal,
                )
            }
            .map_err(|e| Error::io("start journal", j.jpath, e))?
            .reserve_growth(mapped.map.reserved() as u64);
            let Some(ext) = mapped.external.take() else {
                return Ok(Domain::Journaled(JournalDomain::new(
                    journal,
                    self.journal.buffered_period(),
                )));
            };
            // Journaled external memory: its write-back waits for the journal from now on
            // (nothing has been written to the memory yet).
            let gate = Arc::new(
                WriteAheadGate::new(j.next_seq.saturating_sub(1))
                    .map_err(|e| Error::io("create the write-ahead gate of", j.jpath, e))?,
            );
            if !ext.install_write_ahead(&gate) {
                return Err(Error::Unsupported {
                    what: "the journaled engine on external memory that cannot hold back its write-back",
                });
            }
            let journal = journal.over_external(ext, Arc::clone(&gate));
            return JournalDomain::over_external(journal, gate, self.journal.buffered_period())
                .map(Domain::Journaled)
                .map_err(|e| Error::io("start the write-ahead thread of", j.jpath, e));
        }
        let pmem = mapped.map_sync
            || backing == Backing::DeviceDax
            || match self.engine {
                Engine::Pmem => true,
                Engine::Msync | Engine::Journaled => false,
                Engine::Auto => self.forced(),
            };
        Ok(match (pmem, flush::detected_flush_instruction()) {
            (true, _) if self.eadr_on(platform) => Domain::Eadr,
            (true, Some(insn)) => Domain::CacheFlush(insn),
            // No flush instruction known: fall back to msync, which is always correct for files.
            _ => Domain::Msync(DirtyPages::default()),
        })
    }

    /// Open (or, at create, truncate) the journal file at `jpath`.
    fn open_journal_file(jpath: &Path, truncate: bool) -> Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(truncate)
            .truncate(truncate)
            .custom_flags(libc::O_CLOEXEC)
            .open(jpath)
            .map_err(|e| Error::io("open journal", jpath, e))
    }

    /// At open: replays the journal of the pool at `path` (header `hdr`) onto the pool file if
    /// there is one. Returns the journal file and where its sequence continues, or `None`.
    fn replay_journal(&self, file: &File, path: &Path, hdr: &PoolHeader) -> Result<Option<Replayed>> {
        let jpath = self.journal.journal_path(path);
        if !jpath.exists() {
            if hdr.flags & FLAG_JOURNAL != 0 {
                return Err(Error::JournalMissing {
                    pool: path.to_owned(),
                    journal: jpath,
                });
            }
            return Ok(None);
        }
        let jfile = Self::open_journal_file(&jpath, false)?;
        let data = hdr.data_offset..hdr.data_offset + hdr.data_size;
        let (previous, next_seq, report) =
            journal::replay(&jfile, file, &hdr.uuid, data).map_err(|e| Error::from_replay(&jpath, e))?;
        Ok(Some(Replayed {
            jfile,
            jpath,
            previous,
            next_seq,
            report,
        }))
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

    /// Declare the platform eADR (`true`) or not (`false`): with eADR flushes are skipped in
    /// the cache-flush domain. Without this option, `PTM_EADR` (`1` or `0`) decides, and
    /// without that, sysfs: a pool on a libnvdimm region whose `persistence_domain` is
    /// `cpu_cache` runs eADR, any other (or none found) flushes. Has no effect on the other
    /// domains.
    pub fn eadr(mut self, yes: bool) -> Self {
        self.eadr = Some(yes);
        self
    }

    /// Opens or creates the region in the simulated persistence domain driven by `sim` (feature
    /// `simulate`; see [`Simulation`](crate::Simulation)): the file is mapped as usual, and `sim` keeps a durable
    /// image (the file's contents at open) that only flush + drain change. Overrides
    /// `force_pmem` and `eadr`.
    ///
    /// A simulated region does not claim its pointer tag in the process's registry of open
    /// pools: the harness opens crash images of a pool (same tag) while the pool is open.
    /// Use a simulated region from one thread at a time (see [`Simulation`](crate::Simulation)).
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

    /// Refuses a simulation that drives another open region, or one combined with external
    /// memory (the simulated domain owns no provider to keep that memory alive).
    fn check_simulation(&self) -> Result<()> {
        #[cfg(feature = "simulate")]
        if let Some(sim) = &self.simulation {
            if sim.is_attached() {
                return Err(Error::Unsupported {
                    what: "a simulation already attached to an open region",
                });
            }
            if self.external.is_some() {
                return Err(Error::Unsupported {
                    what: "a simulated region over external memory",
                });
            }
        }
        Ok(())
    }

    fn forced(&self) -> bool {
        self.force_pmem.unwrap_or_else(|| env_flag(ENV_FORCE_PMEM))
    }

    fn eadr_on(&self, platform: Option<&NvdimmRegion>) -> bool {
        self.eadr
            .or_else(|| env_switch(ENV_EADR))
            .unwrap_or_else(|| platform.is_some_and(|p| p.domain == PlatformDomain::CpuCache))
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
            let (dev_size, align) = devdax_geometry(&self.sysfs(), meta.rdev())
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
        let platform = self.platform(&meta, backing);
        let mut mapped = self.map_pool(&file, path, pool_size as usize, align, backing)?;
        if backing == Backing::DeviceDax {
            // SAFETY: the mapping is `pool_size >= MIN_POOL_SIZE` bytes; we hold the pool lock.
            let existing: PoolHeader = unsafe { mapped.map.read_struct(0) };
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
        let mut hdr = PoolHeader::new(pool_size, layout, random_uuid(), tag.tag, unix_now());
        // On a device that counts unsafe shutdowns, the pool starts with the count recorded and
        // marked in use (cleared at a clean close).
        let armed = match judge_shutdown(path, ShutdownRecord::default(), platform.as_ref())? {
            Some(record) => {
                hdr.set_shutdown_record(record);
                true
            }
            None => false,
        };
        let jpath = self.journal.journal_path(path);
        let start = if mapped.journaled {
            // A journal left by an earlier pool at this path is not ours: start from empty.
            hdr.flags |= FLAG_JOURNAL;
            hdr.checksum = hdr.compute_checksum();
            Some(StartJournal {
                jfile: Self::open_journal_file(&jpath, true)?,
                home: &file,
                jpath: &jpath,
                uuid: hdr.uuid,
                data: hdr.data_offset..hdr.data_offset + hdr.data_size,
                previous: None,
                next_seq: 1,
            })
        } else {
            None
        };
        let domain = self.choose_domain(&mut mapped, backing, platform.as_ref(), start)?;
        let mut region = Region::assemble(file, path, mapped.map, domain, mapped.map_sync, backing, hdr, tag);
        region.platform = platform;
        region.shutdown_armed = armed;
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
        let mut replayed = None;
        let platform = self.platform(
            &meta,
            if meta.file_type().is_char_device() {
                Backing::DeviceDax
            } else {
                Backing::File
            },
        );
        let arm;
        let (backing, mut hdr, mut mapped) = if meta.file_type().is_char_device() {
            // device-DAX supports no read(): validate through the mapping.
            let (dev_size, align) = devdax_geometry(&self.sysfs(), meta.rdev())
                .map_err(|e| Error::io("read device-DAX geometry of", path, e))?;
            let len = dev_size & !(PAGE as u64 - 1);
            if len < MIN_POOL_SIZE {
                return Err(Error::Truncated {
                    path: path.into(),
                    len,
                    expected: MIN_POOL_SIZE,
                });
            }
            let mapped = Mapped::own(Mapping::new(
                &file,
                path,
                len as usize,
                align,
                Backing::DeviceDax,
                false,
                len as usize,
            )?);
            let hdr = validate_headers(path, len, |off, buf| {
                // SAFETY: `validate_headers` reads only within `[0, len)`, the mapped length.
                unsafe { mapped.map.read_bytes(off, buf) };
                Ok(())
            })?;
            self.check_layout(path, &hdr)?;
            arm = self.shutdown_on_open(path, &hdr, platform.as_ref())?;
            (Backing::DeviceDax, hdr, mapped)
        } else if meta.file_type().is_file() {
            // A grow a crash interrupted is finished (or undone) first.
            let (_, len) = super::grow::finish_interrupted_grow(&file, path, meta.len())?;
            let hdr = validate_headers(path, len, |off, buf| file.read_exact_at(buf, off))?;
            self.check_layout(path, &hdr)?;
            // Before anything writes the pool: a refused pool stays as the crash left it.
            arm = self.shutdown_on_open(path, &hdr, platform.as_ref())?;
            replayed = self.replay_journal(&file, path, &hdr)?;
            let mapped = self.map_pool(
                &file,
                path,
                hdr.pool_size as usize,
                huge_align(hdr.pool_size),
                Backing::File,
            )?;
            (Backing::File, hdr, mapped)
        } else {
            return Err(Error::NotAPool {
                path: path.to_owned(),
            });
        };
        let tag = self.claim_tag(hdr.pptr_tag)?;
        let report = replayed.as_ref().map(|r| r.report).unwrap_or_default();
        let start = match replayed {
            Some(r) if mapped.journaled => Some((r.jfile, r.jpath, r.previous, r.next_seq)),
            Some(r) => {
                // Another engine: the pool file now holds everything; the journal goes.
                drop(r.jfile);
                std::fs::remove_file(&r.jpath)
                    .map_err(|e| Error::io("remove replayed journal", &r.jpath, e))?;
                None
            }
            None if mapped.journaled => {
                let jpath = self.journal.journal_path(path);
                Some((Self::open_journal_file(&jpath, true)?, jpath, None, 1))
            }
            None => None,
        };
        let want_flag = if mapped.journaled { FLAG_JOURNAL } else { 0 };
        let domain = match &start {
            Some((jfile, jpath, previous, next_seq)) => {
                let jfile = jfile
                    .try_clone()
                    .map_err(|e| Error::io("duplicate the descriptor of", jpath, e))?;
                self.choose_domain(
                    &mut mapped,
                    backing,
                    platform.as_ref(),
                    Some(StartJournal {
                        jfile,
                        home: &file,
                        jpath,
                        uuid: hdr.uuid,
                        data: hdr.data_offset..hdr.data_offset + hdr.data_size,
                        previous: *previous,
                        next_seq: *next_seq,
                    }),
                )?
            }
            None => self.choose_domain(&mut mapped, backing, platform.as_ref(), None)?,
        };
        let mut flag_rewrote_backup = false;
        if backing == Backing::File && hdr.flags & FLAG_JOURNAL != want_flag {
            // Set once the journal exists (a crash before leaves a flag-less pool beside an
            // empty journal); cleared once another engine has taken everything home. Both
            // copies are written, so a differing backup is rewritten here.
            let mut old_backup = [0u8; header::HEADER_SIZE];
            flag_rewrote_backup = file.read_exact_at(&mut old_backup, hdr.backup_offset).is_err()
                || old_backup != hdr.as_bytes();
            hdr.flags = (hdr.flags & !FLAG_JOURNAL) | want_flag;
            hdr.checksum = hdr.compute_checksum();
            write_headers_to_file(&file, path, &hdr)?;
        }
        let mut region = Region::assemble(file, path, mapped.map, domain, mapped.map_sync, backing, hdr, tag);
        region.replay = report;
        // SAFETY: the backup offset was validated against the pool size (geometry check), and
        // the mapping covers the whole pool.
        let backup: PoolHeader = unsafe { region.map.read_struct(hdr.backup_offset as usize) };
        if backup.as_bytes() != hdr.as_bytes() {
            region.write_header_copy(hdr.backup_offset, &hdr)?;
            region.backup_rewritten = true;
        }
        region.backup_rewritten |= flag_rewrote_backup;
        region.platform = platform;
        if let Some(record) = arm {
            // Marked in use before the caller can write anything; cleared at a clean close.
            region.set_shutdown_record(record)?;
            region.shutdown_armed = true;
        }
        Ok(region)
    }
}

impl RegionOptions {
    fn check_layout(&self, path: &Path, hdr: &PoolHeader) -> Result<()> {
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
        Ok(())
    }
}

/// What [`RegionOptions::choose_domain`] needs to start a journal.
struct StartJournal<'a> {
    jfile: File,
    home: &'a File,
    jpath: &'a Path,
    uuid: [u8; 16],
    data: std::ops::Range<u64>,
    previous: Option<JournalHeader>,
    next_seq: u64,
}

/// A journal replayed at open.
struct Replayed {
    jfile: File,
    jpath: std::path::PathBuf,
    previous: Option<JournalHeader>,
    next_seq: u64,
    report: ReplayReport,
}

/// Whether the variable `name` is set to `1`.
fn env_flag(name: &str) -> bool {
    flag_value(std::env::var_os(name).as_deref())
}

/// `true` for `1`; anything else, or nothing, is `false`.
fn flag_value(v: Option<&std::ffi::OsStr>) -> bool {
    v.is_some_and(|v| v == "1")
}

/// The variable `name` as a switch (see [`switch_value`]).
fn env_switch(name: &str) -> Option<bool> {
    switch_value(std::env::var_os(name).as_deref())
}

/// `Some(true)` for `1`, `Some(false)` for `0`, else `None`.
fn switch_value(v: Option<&std::ffi::OsStr>) -> Option<bool> {
    match v {
        Some(v) if v == "1" => Some(true),
        Some(v) if v == "0" => Some(false),
        _ => None,
    }
}

pub(super) fn check_size(size: u64) -> Result<()> {
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

/// The pool's memory as mapped at open, before its domain is chosen.
struct Mapped {
    map: Mapping,
    /// Whether the kernel accepted `MAP_SYNC`.
    map_sync: bool,
    /// The provider of the memory, if it is external (moved into the domain).
    external: Option<Arc<dyn ExternalMemory>>,
    /// A copy-on-write mapping for the journaled domain.
    private: bool,
    /// The journaled domain: over the copy-on-write mapping or over external memory.
    journaled: bool,
}

impl Mapped {
    /// Our own mapping, as returned by [`Mapping::new`].
    fn own((map, map_sync): (Mapping, bool)) -> Mapped {
        Mapped {
            map,
            map_sync,
            external: None,
            private: false,
            journaled: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::DomainKind;

    #[test]
    fn engine_names_parse_back_and_nothing_else_does() {
        for e in [Engine::Auto, Engine::Pmem, Engine::Journaled, Engine::Msync] {
            assert_eq!(Engine::from_name(e.name()), Some(e), "{e:?}");
        }
        for junk in ["", "disk", "Pmem", "journaled "] {
            assert_eq!(Engine::from_name(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn an_external_memory_source_prints_its_name() {
        let source = ExternalMemorySource(Arc::new(|_: &Path, _| Err(io::Error::other("none"))));
        assert_eq!(format!("{source:?}"), "ExternalMemorySource(..)");
    }

    #[test]
    fn the_default_grow_room_is_64_times_the_pool_at_least_1_gib() {
        let opts = RegionOptions::new();
        assert_eq!(opts.grow_room_for(1 << 16), 1 << 30);
        assert_eq!(opts.grow_room_for(1 << 30), 64 << 30);
        assert_eq!(opts.clone().grow_room(1 << 20).grow_room_for(1 << 16), 1 << 20);
        assert_eq!(
            opts.grow_room(1 << 10).grow_room_for(1 << 16),
            1 << 16,
            "at least the pool"
        );
    }

    #[test]
    fn environment_switches_read_1_and_0_and_nothing_else() {
        // The values as read (the variables themselves are set only in child processes: the
        // `serial` binary's `domain_env`).
        use std::ffi::OsStr;
        for (value, on, state) in [
            (None, false, None),
            (Some("1"), true, Some(true)),
            (Some("0"), false, Some(false)),
            (Some("yes"), false, None),
            (Some(""), false, None),
        ] {
            let v = value.map(OsStr::new);
            assert_eq!(flag_value(v), on, "{value:?}");
            assert_eq!(switch_value(v), state, "{value:?}");
        }
    }

    #[test]
    fn pool_sizes_are_whole_pages_from_16_kib_to_256_tib() {
        for ok in [MIN_POOL_SIZE, MIN_POOL_SIZE + PAGE as u64, MAX_POOL_SIZE] {
            assert!(check_size(ok).is_ok(), "{ok}");
        }
        for bad in [
            0,
            MIN_POOL_SIZE - PAGE as u64,
            MIN_POOL_SIZE + 1,
            MAX_POOL_SIZE + PAGE as u64,
        ] {
            assert!(
                matches!(check_size(bad), Err(Error::InvalidSize { size, .. }) if size == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn pools_of_2_mib_and_more_are_mapped_2_mib_aligned() {
        assert_eq!(huge_align(HUGE_ALIGN as u64), HUGE_ALIGN);
        assert_eq!(huge_align(1 << 30), HUGE_ALIGN);
        assert_eq!(huge_align(HUGE_ALIGN as u64 - PAGE as u64), PAGE);
        assert_eq!(huge_align(MIN_POOL_SIZE), PAGE);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /dev/urandom")]
    fn pool_uuids_are_random_version_4() {
        let uuids: Vec<[u8; 16]> = (0..64).map(|_| random_uuid()).collect();
        for u in &uuids {
            assert_eq!(u[6] >> 4, 4, "version: {u:02x?}");
            assert_eq!(u[8] >> 6, 0b10, "variant: {u:02x?}");
        }
        // And they are not all one value.
        assert!(uuids.iter().any(|u| u != &uuids[0]));
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_failed_create_removes_the_file_it_made_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(RegionOptions::new().create(&path, 1 << 16).unwrap());
        let pool = std::fs::read(&path).unwrap();
        let e = RegionOptions::new().create(&path, 1 << 16).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            pool,
            "the existing pool was touched"
        );
        // A new file whose journal cannot be made: the file goes too.
        let new = dir.path().join("q");
        let e = RegionOptions::new()
            .engine(Engine::Journaled)
            .journal(JournalOptions::new().path(dir.path().join("no/such/dir/j")))
            .create(&new, 1 << 16)
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(!new.exists(), "the new file stayed");
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn creating_a_pool_file_syncs_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let before = crate::flush::thread_stats();
        // The cache-flush domain syncs nothing else at create (its header writes are flushed
        // lines): the one fsync is the directory's.
        let r = RegionOptions::new()
            .force_pmem(true)
            .eadr(false)
            .create(dir.path().join("p"), 1 << 16)
            .unwrap();
        let fsyncs = crate::flush::thread_stats().since(&before).fsyncs;
        if let DomainKind::CacheFlush(_) = r.domain() {
            assert_eq!(fsyncs, 1);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_pool_records_when_it_was_created() {
        let dir = tempfile::tempdir().unwrap();
        let before = unix_now_for_test();
        let r = RegionOptions::new()
            .create(dir.path().join("p"), 1 << 16)
            .unwrap();
        let after = unix_now_for_test();
        let created = r.header().created_secs;
        assert!((before..=after).contains(&created), "{before} {created} {after}");
    }

    /// The clock as `unix_now` reads it, computed independently.
    fn unix_now_for_test() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}
