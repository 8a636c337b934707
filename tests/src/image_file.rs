//! The file an image is written to before it is opened: mapped once, and rewritten only in the
//! 4 KiB blocks that differ from what it holds (the previous image, as changed by its recovery
//! and check), so an image costs a comparison of the pool instead of a full write.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::ptr::NonNull;

use crate::Error;

const BLOCK: usize = 4096;

/// An image file in the explorer's private directory.
#[derive(Debug)]
pub(crate) struct ImageFile {
    path: PathBuf,
    file: File,
    /// Shared read-write mapping of the whole file, `len` bytes.
    map: Option<(NonNull<u8>, usize)>,
}

impl ImageFile {
    pub(crate) fn create(path: PathBuf) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        Ok(ImageFile {
            path,
            file,
            map: None,
        })
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Makes the file hold exactly `image`.
    ///
    /// Must not be called while the file is open as a pool (the explorer opens an image only
    /// after writing it and closes it before writing the next one).
    pub(crate) fn write(&mut self, image: &[u8]) -> Result<(), Error> {
        let (base, len) = match self.map {
            Some((base, len)) if len == image.len() => (base, len),
            _ => self.remap(image.len())?,
        };
        // SAFETY: `base` maps the whole file read-write (`len` bytes, `remap`); the file lives in
        // the explorer's private directory and nothing else maps or writes it while this runs
        // (pools opened on it are closed before the next image is written, single thread).
        let mapped = unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), len) };
        for (dst, src) in mapped.chunks_mut(BLOCK).zip(image.chunks(BLOCK)) {
            if dst != src {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// (Re)maps the file at length `len` (its contents become zeros).
    fn remap(&mut self, len: usize) -> Result<(NonNull<u8>, usize), Error> {
        self.unmap();
        self.file.set_len(0).map_err(|e| self.io(e))?;
        self.file.set_len(len as u64).map_err(|e| self.io(e))?;
        // SAFETY: a fresh shared mapping of our own descriptor, at a kernel-chosen address; no
        // memory is accessed.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(self.io(std::io::Error::last_os_error()));
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| self.io(std::io::Error::other("null mapping")))?;
        self.map = Some((base, len));
        Ok((base, len))
    }

    fn unmap(&mut self) {
        if let Some((base, len)) = self.map.take() {
            // SAFETY: unmapping exactly the mapping made in `remap`; no slice into it outlives
            // `write`.
            unsafe { libc::munmap(base.as_ptr().cast(), len) };
        }
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        self.unmap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_each_image_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = ImageFile::create(dir.path().join("img")).unwrap();
        let mut image = vec![0u8; 5 * BLOCK + 100];
        image[10] = 1;
        f.write(&image).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), image);
        // Changed behind our back (as recovery does), and a new image.
        use std::os::unix::fs::FileExt;
        let other = File::options().write(true).open(&f.path).unwrap();
        other.write_all_at(&vec![7u8; image.len()], 0).unwrap();
        image[3 * BLOCK + 5] = 9;
        f.write(&image).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), image);
        // Another size.
        f.write(&[3u8; 2 * BLOCK]).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), vec![3u8; 2 * BLOCK]);
    }
}
