//! Growing a closed pool file in place, and finishing a grow that a crash interrupted.
//!
//! Protocol ([`grow_file`]): with the pool locked and its headers valid,
//! 1. mark the primary header [`FLAG_GROWING`] with the target size (`grow_target`),
//!    `fdatasync`;
//! 2. extend the file to the target (`posix_fallocate`, so a full file system or a quota refuses
//!    now, not at a later store); on failure cut it back, clear the mark: the pool is unchanged;
//! 3. write the new header (new `pool_size`, `data_size`, `backup_offset`, no mark) as the
//!    backup at the new end, `fdatasync`;
//! 4. write it as the primary, `fdatasync`: the pool has the new size.
//!
//! The old backup page becomes part of the data area (the upper layers see it as free space).
//! An open that finds the mark ([`finish_interrupted_grow`]) finishes the grow if the file has
//! the target length and a valid header naming that length and the pool's UUID at its end
//! (after step 3), and otherwise undoes it: cuts the file back to the old size and clears the
//! mark. So a crash leaves the old or the new size. Without the mark, a file longer than its
//! header says stays a [`SizeMismatch`](crate::Error::SizeMismatch).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use super::headers::validate_headers;
use super::mapping::open_locked;
use crate::error::{Error, Result};
use crate::header::{PoolHeader, FLAG_GROWING, HEADER_SIZE};

/// What [`grow_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrowReport {
    /// The pool size before.
    pub old_size: u64,
    /// The pool size now.
    pub new_size: u64,
}

/// What the open of a pool found of an interrupted grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupted {
    /// No grow was under way.
    None,
    /// The grow was undone: the old size, the mark cleared.
    RolledBack,
    /// The grow was finished: the primary has the new size.
    RolledForward,
}

fn hdr_at(file: &File, off: u64) -> Option<PoolHeader> {
    let mut buf = vec![0u8; HEADER_SIZE];
    file.read_exact_at(&mut buf, off).ok()?;
    PoolHeader::parse(&buf).ok()
}

fn sync(file: &File, path: &Path) -> Result<()> {
    file.sync_data().map_err(|e| Error::io("sync", path, e))?;
    crate::flush::count_fsync();
    Ok(())
}

/// Finishes or undoes a grow of the regular pool file `file` (of length `len`, locked by the
/// caller) that a crash interrupted (see the module docs); returns what it did and the file's
/// length now.
pub(super) fn finish_interrupted_grow(file: &File, path: &Path, len: u64) -> Result<(Interrupted, u64)> {
    let hs = HEADER_SIZE as u64;
    let Some(primary) = hdr_at(file, 0) else {
        return Ok((Interrupted::None, len));
    };
    if primary.flags & FLAG_GROWING == 0 {
        return Ok((Interrupted::None, len));
    }
    let target = primary.grow_target();
    if len == target && len > primary.pool_size {
        if let Some(new) = hdr_at(file, len - hs) {
            if new.uuid == primary.uuid
                && new.pool_size == len
                && new.backup_offset == len - hs
                && new.flags & FLAG_GROWING == 0
            {
                file.write_all_at(new.as_bytes(), 0)
                    .map_err(|e| Error::io("finish the grow of", path, e))?;
                sync(file, path)?;
                return Ok((Interrupted::RolledForward, len));
            }
        }
    }
    if len > primary.pool_size {
        file.set_len(primary.pool_size)
            .map_err(|e| Error::io("undo the grow of", path, e))?;
    }
    let mut old = primary;
    old.set_grow_target(None);
    file.write_all_at(old.as_bytes(), 0)
        .map_err(|e| Error::io("undo the grow of", path, e))?;
    sync(file, path)?;
    Ok((Interrupted::RolledBack, len.min(primary.pool_size)))
}

/// Grows the closed pool at `path` to `new_size` bytes in place (see the module docs for the
/// crash-safe protocol). Data offsets do not change; the data area gains `new_size - old size`
/// bytes at its end. The caller must have closed the pool (the file is locked here).
///
/// # Errors
///
/// [`Error::PoolLocked`] if the pool is open; [`Error::CannotGrow`] for a device-DAX node (its
/// size is the device's) or a new size not larger than the old one; [`Error::InvalidSize`] for a
/// size that is not a multiple of 4 KiB or above the maximum; the header errors of an open;
/// [`Error::Io`] if the file system refuses the space (the pool is unchanged then).
pub fn grow_file(path: impl AsRef<Path>, new_size: u64) -> Result<GrowReport> {
    let path = path.as_ref();
    let file = open_locked(path, false)?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if meta.file_type().is_char_device() {
        return Err(Error::CannotGrow {
            path: path.into(),
            why: "a device-DAX pool is as large as its device",
        });
    }
    if !meta.file_type().is_file() {
        return Err(Error::NotAPool { path: path.into() });
    }
    let (_, len) = finish_interrupted_grow(&file, path, meta.len())?;
    let hdr = validate_headers(path, len, |off, buf| file.read_exact_at(buf, off))?;
    super::options::check_size(new_size)?;
    if new_size <= hdr.pool_size {
        return Err(Error::CannotGrow {
            path: path.into(),
            why: "the new size is not larger than the pool",
        });
    }
    grow_locked(&file, path, &hdr, new_size, |_| Ok(()))?;
    Ok(GrowReport {
        old_size: hdr.pool_size,
        new_size,
    })
}

/// The grow protocol on the locked pool file `file` whose current header is `hdr`: mark,
/// extend, `map(new_size)` (the region maps the new part here; an error undoes the grow),
/// new backup, new primary. Returns the new header.
pub(super) fn grow_locked(
    file: &File,
    path: &Path,
    hdr: &PoolHeader,
    new_size: u64,
    map: impl FnOnce(u64) -> Result<()>,
) -> Result<PoolHeader> {
    super::options::check_size(new_size)?;
    if new_size <= hdr.pool_size {
        return Err(Error::CannotGrow {
            path: path.into(),
            why: "the new size is not larger than the pool",
        });
    }
    let old = hdr.pool_size;
    let hs = HEADER_SIZE as u64;
    let write = |h: &PoolHeader, off: u64, what: &'static str| -> Result<()> {
        file.write_all_at(h.as_bytes(), off)
            .map_err(|e| Error::io(what, path, e))?;
        sync(file, path)
    };
    // 1. The mark.
    let mut marked = *hdr;
    marked.set_grow_target(Some(new_size));
    write(&marked, 0, "mark the grow of")?;
    let undo = |e: Error| -> Error {
        let _ = file.set_len(old);
        let _ = write(hdr, 0, "undo the grow of");
        e
    };
    // 2. The space, or a clean refusal.
    // SAFETY: `file` is an open, writable descriptor; posix_fallocate has no memory effects.
    let rc = unsafe {
        libc::posix_fallocate(
            file.as_raw_fd(),
            old as libc::off_t,
            (new_size - old) as libc::off_t,
        )
    };
    if rc != 0 {
        return Err(undo(Error::io("grow", path, io::Error::from_raw_os_error(rc))));
    }
    map(new_size).map_err(undo)?;
    // 3. The new header as the backup at the new end; 4. as the primary.
    let mut new = *hdr;
    new.pool_size = new_size;
    new.data_size = new_size - 2 * hs;
    new.backup_offset = new_size - hs;
    new.set_grow_target(None);
    write(&new, new_size - hs, "write the grown header of").map_err(undo)?;
    write(&new, 0, "write the grown header of")?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::FLAG_JOURNAL;
    use crate::region::{Engine, RegionOptions};

    /// The mark of step 1 is on the file while the space is taken (the `map` step): the primary
    /// has [`FLAG_GROWING`] and the target, so a crash there is finished or undone at the next
    /// open. After the grow the mark is gone; after a failed `map` the primary is the old one.
    /// The journal flag of an open journaled pool (which grows this way) is kept throughout.
    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn the_mark_is_on_the_file_until_the_new_headers_are_written() {
        const OLD: u64 = 64 << 10;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark.pool");
        drop(
            RegionOptions::new()
                .engine(Engine::Msync)
                .create(&path, OLD)
                .unwrap(),
        );
        let file = open_locked(&path, false).unwrap();
        let mut old = hdr_at(&file, 0).unwrap();
        old.flags = FLAG_JOURNAL;
        old.checksum = old.compute_checksum();
        let new = grow_locked(&file, &path, &old, 2 * OLD, |n| {
            let m = hdr_at(&file, 0).expect("the marked primary parses");
            assert_eq!(m.flags, FLAG_JOURNAL | FLAG_GROWING, "the mark");
            assert_eq!((m.grow_target(), m.pool_size), (n, OLD));
            assert_eq!(file.metadata().unwrap().len(), n, "the space is taken");
            Ok(())
        })
        .unwrap();
        let grown = hdr_at(&file, 0).unwrap();
        assert_eq!(grown.as_bytes(), new.as_bytes());
        assert_eq!(
            (grown.pool_size, grown.flags, grown.grow_target()),
            (2 * OLD, FLAG_JOURNAL, 0)
        );
        assert_eq!(&grown.as_bytes()[176..184], &[0; 8]);
        // A `map` that fails: the grow is undone, the primary the one before.
        let r = grow_locked(&file, &path, &grown, 4 * OLD, |_| {
            Err(Error::CannotGrow {
                path: "x".into(),
                why: "test",
            })
        });
        assert!(matches!(r, Err(Error::CannotGrow { why: "test", .. })));
        assert_eq!(hdr_at(&file, 0).unwrap().as_bytes(), grown.as_bytes());
        assert_eq!(file.metadata().unwrap().len(), 2 * OLD);
    }
}
