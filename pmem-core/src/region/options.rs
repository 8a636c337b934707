//! [`RegionOptions`]: the builder that creates or opens a [`Region`], and the choice of its
//! persistence domain.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::domain::{DirtyPages, Domain, ExternalMemory, JournalDomain};
use super::headers::{validate_headers, write_headers_to_file};
use super::mapping::{
    devdax_geometry, open_locked, probe_map_sync, random_bytes, sync_parent_dir, Backing, Mapping,
    TagRegistration,
};
use super::{Region, HUGE_ALIGN, PAGE};
use crate::error::{Error, Result};
use crate::flush;
use crate::header::{self, PoolHeader, FLAG_JOURNAL, MAX_POOL_SIZE, MIN_POOL_SIZE};
use crate::journal::{self, format::JournalHeader, Journal, JournalOptions, ReplayReport};

/// Which persistence engine a pool on a regular file runs on (see the table in the
/// [module docs](super)). Device-DAX nodes and DAX files accepting `MAP_SYNC` are persistent
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
    /// committers, changed pages written home by checkpoints (see [`crate::journal`]).
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
/// persistence domain): flushes become no-ops, drains stay. An explicit [`RegionOptions::eadr`]
/// wins over the variable.
pub const ENV_EADR: &str = "PTM_EADR";

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

    /// Whether a regular file opened with these options runs on the journaled engine.
    fn journaled(&self, file: &File) -> bool {
        if self.external.is_some() || self.simulated() {
            return false;
        }
        match self.engine {
            Engine::Journaled => true,
            Engine::Pmem | Engine::Msync => false,
            Engine::Auto => !self.forced() && !probe_map_sync(file.as_raw_fd()),
        }
    }
    /// Backs the pool with memory from `source` instead of mapping the file (a regular file
    /// only): the domain becomes [`DomainKind::Paged`](super::DomainKind::Paged).
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
        if let Some(ext) = mapped.external.take() {
            return Ok(Domain::External(ext));
        }
        if mapped.private {
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
            // (`Region`'s field order and its `Drop`); it maps the pool file `home` whose data
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
            return Ok(Domain::Journaled(JournalDomain::new(
                journal,
                self.journal.buffered_period(),
            )));
        }
        let pmem = mapped.map_sync
            || backing == Backing::DeviceDax
            || match self.engine {
                Engine::Pmem => true,
                Engine::Msync | Engine::Journaled => false,
                Engine::Auto => self.forced(),
            };
        Ok(match (pmem, flush::detected_flush_instruction()) {
            (true, _) if self.eadr_on() => Domain::Eadr,
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
        let jpath = self.journal.journal_path(path);
        let start = if mapped.private {
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
        let domain = self.choose_domain(&mut mapped, backing, start)?;
        let mut region = Region::assemble(file, path, mapped.map, domain, mapped.map_sync, backing, hdr, tag);
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
        let (backing, mut hdr, mut mapped) = if meta.file_type().is_char_device() {
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
            (Backing::DeviceDax, hdr, mapped)
        } else if meta.file_type().is_file() {
            // A grow a crash interrupted is finished (or undone) first.
            let (_, len) = super::grow::finish_interrupted_grow(&file, path, meta.len())?;
            let hdr = validate_headers(path, len, |off, buf| file.read_exact_at(buf, off))?;
            self.check_layout(path, &hdr)?;
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
        self.check_layout(path, &hdr)?;
        let tag = self.claim_tag(hdr.pptr_tag)?;
        let report = replayed.as_ref().map(|r| r.report).unwrap_or_default();
        let start = match replayed {
            Some(r) if mapped.private => Some((r.jfile, r.jpath, r.previous, r.next_seq)),
            Some(r) => {
                // Another engine: the pool file now holds everything; the journal goes.
                drop(r.jfile);
                std::fs::remove_file(&r.jpath)
                    .map_err(|e| Error::io("remove replayed journal", &r.jpath, e))?;
                None
            }
            None if mapped.private => {
                let jpath = self.journal.journal_path(path);
                Some((Self::open_journal_file(&jpath, true)?, jpath, None, 1))
            }
            None => None,
        };
        let want_flag = if mapped.private { FLAG_JOURNAL } else { 0 };
        let domain = match &start {
            Some((jfile, jpath, previous, next_seq)) => {
                let jfile = jfile
                    .try_clone()
                    .map_err(|e| Error::io("duplicate the descriptor of", jpath, e))?;
                self.choose_domain(
                    &mut mapped,
                    backing,
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
            None => self.choose_domain(&mut mapped, backing, None)?,
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

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
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
}

impl Mapped {
    /// Our own mapping, as returned by [`Mapping::new`].
    fn own((map, map_sync): (Mapping, bool)) -> Mapped {
        Mapped {
            map,
            map_sync,
            external: None,
            private: false,
        }
    }
}
