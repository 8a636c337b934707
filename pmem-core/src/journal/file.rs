//! The files under a journaled region: the journal itself and the pool's home file, behind one
//! small I/O trait so that tests can put a simulated disk under them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The I/O the journal needs from a file: positioned reads and writes, and `fdatasync`.
pub trait JournalFile: Send + Sync + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (extending the file if needed).
    ///
    /// # Errors
    ///
    /// The operating system's error (`ENOSPC`, `EIO`, ...).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl JournalFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// Reads the whole file into memory.
pub(crate) fn read_all(f: &dyn JournalFile) -> io::Result<Vec<u8>> {
    let len = f.len()?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("journal larger than memory"))?;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

/// A simulated disk file for crash tests: writes land in a volatile image and become durable
/// only at `sync_data`; a crash keeps the durable image plus any subset of the writes since the
/// last sync, each torn at 512-byte sector granularity.
#[cfg(any(test, feature = "simulate"))]
pub mod sim {
    use super::JournalFile;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// Sector size of the simulated disk: a write survives a crash sector by sector.
    pub const SECTOR: usize = 512;

    #[derive(Debug, Default)]
    struct State {
        /// What a read sees.
        current: Vec<u8>,
        /// What survives a crash for sure.
        durable: Vec<u8>,
        /// Writes since the last sync, in order: `(offset, bytes)`.
        unsynced: Vec<(u64, Vec<u8>)>,
        /// Fail the next `n`-th I/O call (write or sync) with EIO (0: never).
        fail_after: u64,
        calls: u64,
        syncs: u64,
        /// While set, `sync_data` waits (see [`SimFile::hold_syncs`]).
        hold: bool,
        /// `sync_data` calls waiting because of `hold`.
        held: u64,
    }

    /// A shared handle to one simulated file (clones see the same file).
    #[derive(Debug, Clone, Default)]
    pub struct SimFile(Arc<Mutex<State>>);

    fn put(img: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        if img.len() < end {
            img.resize(end, 0);
        }
        img[offset as usize..end].copy_from_slice(bytes);
    }

    impl SimFile {
        /// An empty file.
        pub fn new() -> Self {
            Self::default()
        }

        /// A file holding `bytes`, all durable.
        pub fn with_contents(bytes: Vec<u8>) -> Self {
            let f = SimFile::new();
            {
                let mut s = f.0.lock().unwrap();
                s.current = bytes.clone();
                s.durable = bytes;
            }
            f
        }

        /// The current contents (what a read sees).
        pub fn contents(&self) -> Vec<u8> {
            self.0.lock().unwrap().current.clone()
        }

        /// Writes since the last sync.
        pub fn unsynced_writes(&self) -> usize {
            self.0.lock().unwrap().unsynced.len()
        }

        /// `sync_data` calls so far.
        pub fn syncs(&self) -> u64 {
            self.0.lock().unwrap().syncs
        }

        /// Makes `sync_data` wait until [`release_syncs`](Self::release_syncs): a sync that
        /// takes as long as a test needs.
        pub fn hold_syncs(&self) {
            self.0.lock().unwrap().hold = true;
        }

        /// Lets held and later syncs complete.
        pub fn release_syncs(&self) {
            self.0.lock().unwrap().hold = false;
        }

        /// `sync_data` calls waiting now because syncs are held.
        pub fn held_syncs(&self) -> u64 {
            self.0.lock().unwrap().held
        }

        /// Makes the I/O call `n` calls from now (1: the next) fail with EIO; 0 disables.
        pub fn fail_in(&self, n: u64) {
            let mut s = self.0.lock().unwrap();
            s.fail_after = if n == 0 { 0 } else { s.calls + n };
        }

        /// The file a crash could leave: the durable image plus, for each sector of each write
        /// since the last sync, that sector if `keep(write_index, sector_index)` says so.
        pub fn crash_image(&self, mut keep: impl FnMut(usize, usize) -> bool) -> SimFile {
            let s = self.0.lock().unwrap();
            let mut img = s.durable.clone();
            for (w, (offset, bytes)) in s.unsynced.iter().enumerate() {
                // Sectors are aligned to the file, as on a disk.
                let mut at = *offset as usize;
                let end = at + bytes.len();
                let mut sector = 0;
                while at < end {
                    let next = ((at / SECTOR) + 1) * SECTOR;
                    let piece_end = next.min(end);
                    if keep(w, sector) {
                        put(
                            &mut img,
                            at as u64,
                            &bytes[at - *offset as usize..piece_end - *offset as usize],
                        );
                    } else if img.len() < piece_end {
                        img.resize(piece_end, 0);
                    }
                    at = piece_end;
                    sector += 1;
                }
            }
            SimFile::with_contents(img)
        }

        fn fail_now(s: &mut State) -> io::Result<()> {
            s.calls += 1;
            if s.fail_after != 0 && s.calls == s.fail_after {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            Ok(())
        }
    }

    /// A fault [`IoFaults`] injects into a journaled pool's files.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum IoFault {
        /// A write fails with `EIO` and writes nothing.
        Write,
        /// A sync fails with `EIO`; the file keeps the writes since its last sync (reads and a
        /// reopen see them: the kernel may still write the pages back).
        Sync,
        /// A sync fails with `EIO` and the writes since the file's last successful sync are lost
        /// (the kernel dropped the dirty pages, as in PostgreSQL's "fsyncgate"); a later sync
        /// would succeed without them.
        SyncLosingWrites,
    }

    #[derive(Debug, Default)]
    struct Faults {
        /// The armed fault and how many more calls of its kind pass before it fires (0: this one).
        armed: Option<(IoFault, u64)>,
        fired: u64,
        writes: u64,
        syncs: u64,
    }

    /// Faults injected into the journal and the home file of a journaled pool
    /// ([`JournalOptions::faults`](crate::JournalOptions::faults)): the `n`-th write or sync
    /// from now, counted over both files, fails with `EIO`. Clones share one plan.
    #[derive(Debug, Clone, Default)]
    pub struct IoFaults(Arc<Mutex<Faults>>);

    impl PartialEq for IoFaults {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
    }

    impl Eq for IoFaults {}

    impl IoFaults {
        /// No fault armed.
        pub fn new() -> Self {
            Self::default()
        }

        /// Arms `fault` at the `n`-th call of its kind from now (writes for [`IoFault::Write`],
        /// syncs for the others; 1: the next), replacing any armed fault; 0 disarms. A fault
        /// fires once.
        pub fn arm(&self, fault: IoFault, n: u64) {
            self.0.lock().unwrap().armed = n.checked_sub(1).map(|left| (fault, left));
        }

        /// Faults fired so far.
        pub fn fired(&self) -> u64 {
            self.0.lock().unwrap().fired
        }

        /// Whether a fault is armed and has not fired yet.
        pub fn armed(&self) -> bool {
            self.0.lock().unwrap().armed.is_some()
        }

        /// Writes and syncs so far (failed ones included), over both files.
        pub fn calls(&self) -> (u64, u64) {
            let f = self.0.lock().unwrap();
            (f.writes, f.syncs)
        }

        /// `file`, with this plan's faults injected.
        pub fn wrap(&self, file: Box<dyn JournalFile>) -> Box<dyn JournalFile> {
            Box::new(FaultyFile {
                inner: file,
                faults: self.clone(),
                unsynced: Mutex::new(Vec::new()),
            })
        }

        /// Counts one call and returns the fault it triggers, if any.
        fn hit(&self, sync: bool) -> Option<IoFault> {
            let mut f = self.0.lock().unwrap();
            if sync {
                f.syncs += 1;
            } else {
                f.writes += 1;
            }
            let (fault, left) = f.armed?;
            if (fault == IoFault::Write) == sync {
                return None;
            }
            if left > 0 {
                f.armed = Some((fault, left - 1));
                return None;
            }
            f.armed = None;
            f.fired += 1;
            Some(fault)
        }
    }

    /// A file with [`IoFaults`] injected. Keeps the bytes each write replaced until the next
    /// sync, to undo them for [`IoFault::SyncLosingWrites`].
    #[derive(Debug)]
    struct FaultyFile {
        inner: Box<dyn JournalFile>,
        faults: IoFaults,
        /// Writes since the last sync, in order: offset, the bytes they replaced, their length.
        unsynced: Mutex<Vec<(u64, Vec<u8>, usize)>>,
    }

    fn eio() -> io::Error {
        io::Error::from_raw_os_error(5)
    }

    impl JournalFile for FaultyFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.inner.read_at(buf, offset)
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if self.faults.hit(false).is_some() {
                return Err(eio());
            }
            let mut old = vec![0u8; buf.len()];
            let n = self.inner.read_at(&mut old, offset)?;
            old.truncate(n);
            self.unsynced.lock().unwrap().push((offset, old, buf.len()));
            self.inner.write_all_at(buf, offset)
        }

        fn sync_data(&self) -> io::Result<()> {
            let mut unsynced = self.unsynced.lock().unwrap();
            match self.faults.hit(true) {
                None => {
                    self.inner.sync_data()?;
                    unsynced.clear();
                    Ok(())
                }
                Some(IoFault::SyncLosingWrites) => {
                    // Newest first: the oldest write's old bytes are what the file held.
                    for (offset, old, len) in unsynced.drain(..).rev() {
                        self.inner.write_all_at(&old, offset)?;
                        // Bytes the write added past the end read as zeros (an allocated,
                        // never written extent).
                        let zeros = vec![0u8; len - old.len()];
                        self.inner.write_all_at(&zeros, offset + old.len() as u64)?;
                    }
                    self.inner.sync_data()?;
                    Err(eio())
                }
                Some(_) => Err(eio()),
            }
        }

        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
    }

    impl JournalFile for SimFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let s = self.0.lock().unwrap();
            let start = (offset as usize).min(s.current.len());
            let n = buf.len().min(s.current.len() - start);
            buf[..n].copy_from_slice(&s.current[start..start + n]);
            Ok(n)
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut s = self.0.lock().unwrap();
            SimFile::fail_now(&mut s)?;
            put(&mut s.current, offset, buf);
            s.unsynced.push((offset, buf.to_vec()));
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            let mut s = self.0.lock().unwrap();
            if s.hold {
                s.held += 1;
                while s.hold {
                    drop(s);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    s = self.0.lock().unwrap();
                }
                s.held -= 1;
            }
            SimFile::fail_now(&mut s)?;
            s.durable = s.current.clone();
            s.unsynced.clear();
            s.syncs += 1;
            Ok(())
        }

        fn len(&self) -> io::Result<u64> {
            Ok(self.0.lock().unwrap().current.len() as u64)
        }
    }
}
