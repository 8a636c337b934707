//! The two header copies of a pool: validation at open, inspection and repair for `ptm check`,
//! and writing a copy through a region.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::mapping::open_locked;
use super::sysfs::NvdimmRegion;
use super::{Region, RegionOptions};
use crate::error::{Error, HeaderProblem, Result};
use crate::flush;
use crate::header::{
    self, ParseFailure, PoolHeader, ShutdownRecord, FORMAT_VERSION, HEADER_SIZE, MIN_POOL_SIZE,
};
use crate::journal::{self, JournalOptions};
use crate::persistent::read_from_bytes;

/// Reads and validates the header copies of a pool of `len` bytes through `read(offset, buf)`.
///
/// Returns the primary header when it is valid and the length matches it; otherwise the error
/// that names what is wrong (see [`Error`]).
pub(super) fn validate_headers(
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
            .map_err(|e| Error::io("write header of", path, e))?;
        flush::count_fsync();
        Ok(())
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

/// Resolves a corrupt journal of a pool file ([`Error::CorruptJournal`] at open): applies the
/// valid prefix of its records to the pool file, drops the damaged record and every record after
/// it, and starts a new journal epoch, so that the pool opens again. Returns how many records
/// were dropped: 0 when the journal was intact (its valid prefix is then replayed, as an open
/// would) or when there is no journal and the pool header does not ask for one.
///
/// The journal is looked for where `opts` puts it ([`JournalOptions::journal_path`]). The pool
/// file is locked as by an open for the whole repair. The dropped records held committed
/// changes: the pool is consistent afterwards (recovery rolls back any transaction the prefix
/// ends inside) but loses the transactions they carried.
///
/// # Errors
///
/// The errors of validating the pool headers at open ([`Error::NotAPool`],
/// [`Error::Truncated`], [`Error::SizeMismatch`], [`Error::UnsupportedVersion`],
/// [`Error::CorruptHeader`]), [`Error::PoolLocked`], [`Error::JournalMissing`] (the header says
/// the journal may hold changes and there is no file), [`Error::JournalMismatch`],
/// [`Error::CorruptJournal`] when both journal header slots are damaged (there is no epoch to
/// continue from), and [`Error::Io`].
pub fn repair_journal(pool_path: impl AsRef<Path>, opts: &JournalOptions) -> Result<u64> {
    let path = pool_path.as_ref();
    let file = open_locked(path, false)?;
    let file_len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let hdr = validate_headers(path, file_len, |off, buf| file.read_exact_at(buf, off))?;
    let jpath = opts.journal_path(path);
    if !jpath.exists() {
        if hdr.flags & header::FLAG_JOURNAL != 0 {
            return Err(Error::JournalMissing {
                pool: path.to_owned(),
                journal: jpath,
            });
        }
        return Ok(0);
    }
    let jfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&jpath)
        .map_err(|e| Error::io("open journal", &jpath, e))?;
    let data = hdr.data_offset..hdr.data_offset + hdr.data_size;
    journal::repair(&jfile, &file, &hdr.uuid, data).map_err(|e| Error::from_replay(&jpath, e))
}

/// Decides, at open or create, what a pool's unsafe-shutdown record becomes, given what it
/// records (`recorded`) and the region the device belongs to now (`platform`):
///
/// - the device reports no count (no region, or a DIMM without a readable count): `None`, the
///   record is left as it is (a dirty mark from an earlier crash stays for a later open that
///   can read the count again);
/// - the pool was dirty (in use at the last shutdown) and the count moved, or the count was
///   recorded on other DIMMs: [`Error::UnsafeShutdown`];
/// - otherwise (count unchanged, or moved while the pool was closed, or nothing recorded yet):
///   the current count, marked dirty — the pool is about to be in use.
pub(super) fn judge_shutdown(
    path: &Path,
    recorded: ShutdownRecord,
    platform: Option<&NvdimmRegion>,
) -> Result<Option<ShutdownRecord>> {
    let Some((now, device_id)) = platform.and_then(|p| Some((p.unsafe_shutdowns?, p.device_id))) else {
        return Ok(None);
    };
    if let (Some(before), true) = (recorded.count, recorded.dirty) {
        let device_changed = recorded.device_id != 0 && device_id != 0 && recorded.device_id != device_id;
        if before != now || device_changed {
            return Err(Error::UnsafeShutdown {
                path: path.to_owned(),
                recorded: before,
                now,
                device_changed,
            });
        }
    }
    Ok(Some(ShutdownRecord {
        count: Some(now),
        device_id,
        dirty: true,
    }))
}

/// Accepts an unsafe shutdown of the pool at `path` ([`Error::UnsafeShutdown`] at open) after
/// its contents were verified: records the count its device reports now (or nothing, if it
/// reports none) as the pool's clean state, so that it opens again. Returns the record written.
///
/// The pool is opened with `opts` and [`RegionOptions::ignore_unsafe_shutdown`] (its journal,
/// if any, is replayed as at every open) and closed again. What to verify first is the
/// caller's business: `ptm check --accept-unsafe-shutdown` checks the transaction layer's
/// metadata; only the application can tell whether its own data is whole.
///
/// # Errors
///
/// The errors of [`RegionOptions::open`] (other than [`Error::UnsafeShutdown`]), and
/// [`Error::Io`] writing the header.
pub fn accept_unsafe_shutdown(path: impl AsRef<Path>, opts: &RegionOptions) -> Result<ShutdownRecord> {
    let mut region = opts.clone().ignore_unsafe_shutdown(true).open(path)?;
    let record = ShutdownRecord {
        count: region.nvdimm_region().and_then(|p| p.unsafe_shutdowns),
        device_id: region.nvdimm_region().map_or(0, |p| p.device_id),
        dirty: false,
    };
    region.set_shutdown_record(record)?;
    Ok(region.header.shutdown_record())
}

impl Region {
    /// Stores `record` in both header copies (backup first) unless the header holds it already.
    pub(super) fn set_shutdown_record(&mut self, record: ShutdownRecord) -> Result<()> {
        let mut h = self.header;
        h.set_shutdown_record(record);
        if h.as_bytes() == self.header.as_bytes() {
            return Ok(());
        }
        self.write_header_copy(h.backup_offset, &h)?;
        self.write_header_copy(0, &h)?;
        self.header = h;
        Ok(())
    }

    /// Writes header copy `h` at `offset` (0 or the backup offset) and persists it.
    pub(super) fn write_header_copy(&mut self, offset: u64, h: &PoolHeader) -> Result<()> {
        self.check_mapped(offset, HEADER_SIZE as u64)?;
        // SAFETY: in bounds (checked); `&mut self` excludes other access.
        unsafe {
            std::ptr::copy_nonoverlapping(
                h.as_bytes().as_ptr(),
                self.map.base.as_ptr().add(offset as usize),
                HEADER_SIZE,
            )
        };
        if self.domain.kind() == super::DomainKind::Journaled {
            // The mapping is copy-on-write and the journal carries only the data area: header
            // copies go to the file directly.
            self._file
                .write_all_at(h.as_bytes(), offset)
                .and_then(|()| self._file.sync_data())
                .map_err(|e| Error::io("write pool header of", &self.path, e))?;
            crate::flush::count_fsync();
            return Ok(());
        }
        self.persist(offset, HEADER_SIZE as u64)
    }
}

/// Writes both header copies of `h` to `file` (the backup first), then syncs it.
pub(super) fn write_headers_to_file(file: &File, path: &Path, h: &PoolHeader) -> Result<()> {
    file.write_all_at(h.as_bytes(), h.backup_offset)
        .and_then(|()| file.write_all_at(h.as_bytes(), 0))
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io("write pool header of", path, e))?;
    crate::flush::count_fsync();
    Ok(())
}
