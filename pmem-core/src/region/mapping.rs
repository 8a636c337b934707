//! The memory side of a region: the shared mapping of the pool (device-DAX geometry, the
//! `MAP_SYNC` probe, 2 MiB alignment), opening and locking the pool file, and the registry of
//! pointer tags of the pools open in this process.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;

use super::{HUGE_ALIGN, PAGE};
use crate::error::{Error, Result};
use crate::persistent::Persistent;

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

/// Opens (with `create`: creates if missing) the pool file read-write and takes its `flock`.
pub(super) fn open_locked(path: &Path, create: bool) -> Result<File> {
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

/// Makes a newly created pool file's directory entry durable.
pub(super) fn sync_parent_dir(path: &Path) -> Result<()> {
    let parent = parent_dir(path);
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", parent, e))?;
    crate::flush::count_fsync();
    Ok(())
}

/// The directory holding `path`: its parent, or `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `N` random bytes from `/dev/urandom` (time and address entropy if it cannot be read).
pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    bytes_or_fallback(|b| File::open("/dev/urandom").and_then(|f| f.read_exact_at(b, 0)))
}

/// `N` bytes filled by `read`, or if it fails, from time and address entropy: identity, not
/// secrecy, is what is needed.
fn bytes_or_fallback<const N: usize>(read: impl FnOnce(&mut [u8]) -> io::Result<()>) -> [u8; N] {
    let mut b = [0u8; N];
    if read(&mut b).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (&b as *const _ as usize as u128);
        xorshift_fill(&mut b, seed as u64);
    }
    b
}

/// Fills `b` with the low bytes of successive xorshift64 (13, 7, 17) states from `seed`, made
/// odd (the generator never leaves 0).
fn xorshift_fill(b: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for byte in b {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
}

/// Reads `(size, align)` of a device-DAX node from sysfs under `sysfs_root` (normally `/sys`):
/// `dev/char/MAJ:MIN/size` and `dev/char/MAJ:MIN/device/align` (falling back to 2 MiB).
pub(super) fn devdax_geometry(sysfs_root: &Path, rdev: u64) -> io::Result<(u64, usize)> {
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
pub(super) fn probe_map_sync(fd: libc::c_int) -> bool {
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

/// The pool's memory: a shared mapping of the whole pool, unmapped on drop, or memory owned by an
/// external provider (see [`ExternalMemory`](super::ExternalMemory)), which the provider keeps
/// alive through the region's domain and which is not unmapped here.
#[derive(Debug)]
pub(super) struct Mapping {
    pub(super) base: NonNull<u8>,
    /// Bytes mapped (grows with [`Mapping::extend`]).
    len: std::sync::atomic::AtomicUsize,
    /// Bytes of address space owned from `base`: the mapping, then a `PROT_NONE` reservation
    /// the pool can grow into in place.
    reserved: usize,
    /// The `mmap` flags of the file mapping (for its extensions); 0 if not ours.
    flags: libc::c_int,
    /// Whether `base..base + reserved` is our own mapping, unmapped on drop.
    owned: bool,
}

// SAFETY: the mapping is plain shared memory; who may access which bytes is governed by `Region`
// (reads through `&self`, writes through `&mut self`, raw access under the caller's contract).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at an `align`-aligned address. For regular files
    /// `MAP_SHARED_VALIDATE | MAP_SYNC` is tried first; returns whether it was accepted. With
    /// `private`, the mapping is `MAP_PRIVATE` (copy-on-write: stores never reach the file; the
    /// journaled domain writes pages home itself) and MAP_SYNC is not tried.
    ///
    /// The address space up to `reserve_to` bytes from the base (at least `len`) stays reserved
    /// (`PROT_NONE`, `MAP_NORESERVE`: no memory, no swap), so the pool can grow in place
    /// ([`Mapping::extend`]).
    pub(super) fn new(
        file: &File,
        path: &Path,
        len: usize,
        align: usize,
        backing: Backing,
        private: bool,
        reserve_to: usize,
    ) -> Result<(Mapping, bool)> {
        let fd = file.as_raw_fd();
        let reserve_to = reserve_to.max(len);
        let reserve = reserve_to + align;
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
        let map_sync = !private && backing == Backing::File && probe_map_sync(fd);
        let flags = if private {
            libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_FIXED
        } else if map_sync {
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
        // Trim the unused ends of the reservation (keeping room to grow after the mapping).
        let head = aligned - res_addr;
        let tail = reserve - head - reserve_to;
        // SAFETY: both ranges are parts of our reservation outside the file mapping and the
        // room kept after it.
        unsafe {
            if head > 0 {
                libc::munmap(res, head);
            }
            if tail > 0 {
                libc::munmap(want.cast::<u8>().add(reserve_to).cast(), tail);
            }
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| Error::io("mmap", path, io::Error::other("null mapping")))?;
        Ok((
            Mapping {
                base,
                len: len.into(),
                reserved: reserve_to,
                flags,
                owned: true,
            },
            map_sync,
        ))
    }

    /// Bytes mapped.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes of address space the mapping may grow into in place.
    pub(super) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Maps `[len, new_len)` of `file` (the file this mapping maps, already that long) in place
    /// after the current mapping, inside the reservation, with the same flags. The length does
    /// not change until [`publish`](Mapping::publish). The caller serializes extensions.
    pub(super) fn extend(&self, file: &File, path: &Path, new_len: usize) -> Result<()> {
        let old = self.len();
        if !self.owned || new_len > self.reserved || new_len < old {
            return Err(Error::Unsupported {
                what: "growing this mapping in place",
            });
        }
        if new_len == old {
            return Ok(());
        }
        // SAFETY: `[base + old, base + new_len)` lies in the reservation we own (checked
        // `new_len <= reserved`), still `PROT_NONE`: nothing refers to it. MAP_FIXED replaces
        // exactly that part of the reservation with the file's pages at the same offsets.
        let addr = unsafe {
            libc::mmap(
                self.base.as_ptr().add(old).cast(),
                new_len - old,
                libc::PROT_READ | libc::PROT_WRITE,
                self.flags,
                file.as_raw_fd(),
                old as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::io(
                "map the grown part of",
                path,
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Makes `[0, new_len)` (mapped by [`extend`](Mapping::extend)) the mapping's length.
    pub(super) fn publish(&self, new_len: usize) {
        debug_assert!(new_len <= self.reserved);
        self.len.store(new_len, std::sync::atomic::Ordering::Release);
    }

    /// Memory of `len` bytes at `base` owned by someone else (an external provider): never
    /// unmapped here.
    pub(super) fn borrowed(base: NonNull<u8>, len: usize) -> Mapping {
        Mapping {
            base,
            len: len.into(),
            reserved: len,
            flags: 0,
            owned: false,
        }
    }

    /// Copies `buf.len()` bytes at `off` out of the mapping.
    ///
    /// # Safety
    ///
    /// `off + buf.len() <= self.len()`, and no other thread writes those bytes concurrently.
    pub(super) unsafe fn read_bytes(&self, off: u64, buf: &mut [u8]) {
        // SAFETY: in bounds per the caller; `buf` is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(off as usize), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Reads a `T` at `off` (any alignment).
    ///
    /// # Safety
    ///
    /// `off + size_of::<T>() <= self.len()`, and no other thread writes those bytes
    /// concurrently.
    pub(super) unsafe fn read_struct<T: Persistent>(&self, off: usize) -> T {
        // SAFETY: in bounds per the caller; `T: Persistent` accepts every bit pattern.
        unsafe { std::ptr::read_unaligned(self.base.as_ptr().add(off).cast::<T>()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.owned {
            return; // the provider owns (and writes back) its memory
        }
        // SAFETY: unmapping exactly the range owned since `new` (the file mapping, its
        // extensions and the reservation after them); the `Region` that owned the mapping is
        // being dropped, so no reference into it remains.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.reserved) };
    }
}

/// Pointer tags of the pools open in this process (so no two of them share a tag).
static OPEN_TAGS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

#[derive(Debug)]
pub(super) struct TagRegistration {
    pub(super) tag: u16,
    /// False for a simulated region's tag, which is not entered in `OPEN_TAGS`.
    registered: bool,
}

impl TagRegistration {
    pub(super) fn claim(tag: u16) -> Result<Self> {
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
    pub(super) fn unregistered(tag: u16) -> Self {
        TagRegistration {
            tag,
            registered: false,
        }
    }

    pub(super) fn new_random() -> Result<Self> {
        Self::first_free(|| u16::from_le_bytes(random_bytes()))
    }

    /// Registers the first of 64 tags drawn from `draw` that is neither 0 nor open.
    fn first_free(mut draw: impl FnMut() -> u16) -> Result<Self> {
        let mut open = OPEN_TAGS.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..64 {
            let tag = draw();
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
    fn backings_are_named() {
        assert_eq!(Backing::File.name(), "file");
        assert_eq!(Backing::DeviceDax.name(), "devdax");
    }

    #[test]
    fn the_fallback_bytes_are_xorshift64_from_an_odd_seed() {
        let from = |seed| {
            let mut b = [0u8; 16];
            xorshift_fill(&mut b, seed);
            b
        };
        // Marsaglia's xorshift64 (13, 7, 17) from state 1 (seed 0 made odd) and from
        // 0x1234_5678_9abc_def1 (computed apart from this code).
        let one = [
            0x41, 0x41, 0x29, 0x25, 0x65, 0x01, 0x71, 0x0d, 0xff, 0x2e, 0xe4, 0x89, 0xe6, 0xa3, 0xe4, 0x7b,
        ];
        assert_eq!(from(0), one);
        assert_eq!(from(1), one);
        assert_eq!(
            from(0x1234_5678_9abc_def0),
            [
                0x0c, 0x7a, 0xea, 0x01, 0x29, 0x85, 0x26, 0x20, 0x18, 0x26, 0x3c, 0x50, 0x38, 0xee, 0xa3,
                0x02
            ]
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the system clock")]
    fn random_bytes_are_what_was_read_else_the_fallback() {
        let read: [u8; 16] = bytes_or_fallback(|b| {
            b.fill(7);
            Ok(())
        });
        assert_eq!(read, [7; 16]);
        let fallback: [u8; 16] = bytes_or_fallback(|_| Err(io::Error::other("no /dev/urandom")));
        assert_ne!(fallback, [0; 16]);
    }

    #[test]
    fn a_random_tag_is_neither_0_nor_open_and_64_misses_give_up() {
        // A tag held here (the first one no other test holds).
        let held = (1..=u16::MAX)
            .find_map(|t| TagRegistration::claim(t).ok())
            .unwrap();
        let mut draws = [0, held.tag, held.tag].into_iter().chain(1..=u16::MAX);
        let fresh = TagRegistration::first_free(|| draws.next().unwrap()).unwrap();
        assert!(fresh.tag != 0 && fresh.tag != held.tag, "{}", fresh.tag);
        assert!(OPEN_TAGS.lock().unwrap().contains(&fresh.tag));
        let e = TagRegistration::first_free(|| held.tag).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = TagRegistration::first_free(|| 0).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }

    /// A file of `pages` pages, its `i`-th page filled with `i + 1`.
    fn paged_file(dir: &Path, pages: usize) -> (File, PathBuf) {
        let path = dir.join("pool");
        let mut bytes = Vec::new();
        for i in 0..pages {
            bytes.extend(std::iter::repeat_n(i as u8 + 1, PAGE));
        }
        std::fs::write(&path, bytes).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        (file, path)
    }

    /// The address ranges mapping `path` in this process (from `/proc/self/maps`).
    fn mapped_ranges_of(path: &Path) -> Vec<std::ops::Range<usize>> {
        let path = path.to_str().unwrap();
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.ends_with(path))
            .map(|l| {
                let (start, rest) = l.split_once('-').unwrap();
                let end = rest.split_once(' ').unwrap().0;
                let hex = |h: &str| usize::from_str_radix(h, 16).unwrap();
                hex(start)..hex(end)
            })
            .collect()
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap")]
    fn a_mapping_extends_in_place_inside_its_reservation_only() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = paged_file(dir.path(), 16);
        let (map, _) = Mapping::new(&file, &path, 4 * PAGE, PAGE, Backing::File, false, 16 * PAGE).unwrap();
        let base = map.base.as_ptr() as usize;
        assert_eq!((map.len(), map.reserved()), (4 * PAGE, 16 * PAGE));
        // Past the reservation, shrinking: refused. The same length: nothing to do.
        for len in [17 * PAGE, 2 * PAGE] {
            assert!(
                matches!(map.extend(&file, &path, len), Err(Error::Unsupported { .. })),
                "{len}"
            );
        }
        map.extend(&file, &path, 4 * PAGE).unwrap();
        assert_eq!(mapped_ranges_of(&path), vec![(base..base + 4 * PAGE)]);
        // Growing maps exactly the new pages, at the file offsets they have; the length waits
        // for `publish`.
        map.extend(&file, &path, 8 * PAGE).unwrap();
        let ranges = mapped_ranges_of(&path);
        assert_eq!(ranges.iter().map(|r| r.start).min(), Some(base));
        assert_eq!(ranges.iter().map(|r| r.end).max(), Some(base + 8 * PAGE));
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 8 * PAGE);
        assert_eq!(map.len(), 4 * PAGE);
        map.publish(8 * PAGE);
        assert_eq!(map.len(), 8 * PAGE);
        let mut page = vec![0u8; PAGE];
        for i in 0..8 {
            // SAFETY: page `i` of the 8 mapped pages; nothing writes the mapping.
            unsafe { map.read_bytes((i * PAGE) as u64, &mut page) };
            assert!(page.iter().all(|&b| b == i as u8 + 1), "page {i}");
        }
        // Up to the whole reservation.
        map.extend(&file, &path, 16 * PAGE).unwrap();
        drop(map);
        assert_eq!(mapped_ranges_of(&path), []);
        // Memory someone else owns is never extended.
        let mut buf = vec![0u8; 8 * PAGE];
        let borrowed = Mapping::borrowed(NonNull::new(buf.as_mut_ptr()).unwrap(), 4 * PAGE);
        assert!(matches!(
            borrowed.extend(&file, &path, 4 * PAGE),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn a_new_pool_file_syncs_the_directory_it_is_in() {
        assert_eq!(parent_dir(Path::new("/pools/a.pool")), Path::new("/pools"));
        assert_eq!(parent_dir(Path::new("pools/a.pool")), Path::new("pools"));
        assert_eq!(parent_dir(Path::new("a.pool")), Path::new("."));
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
        // A power of two below a page, a multiple of a page that is no power of two, an
        // alignment that is no number: refused, not replaced by the default.
        for (minor, align) in [(7, "2048"), (8, "12288"), (9, "2M")] {
            let rdev = fake_sysfs(root.path(), 251, minor, "dax", "4096", Some(align));
            assert_eq!(
                devdax_geometry(root.path(), rdev).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{align}"
            );
        }
        let missing = libc::makedev(251, 99);
        assert_eq!(
            devdax_geometry(root.path(), missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
