//! The journal of the journaled persistence domain: flushed ranges become checksummed records
//! appended to a file; durability points share one `fdatasync` (group commit); checkpoints
//! write changed pages home and reclaim the journal.
//!
//! The protocol (docs/design.md has the whole of it):
//! - **flush** records a line-aligned range as pending (no I/O);
//! - **order** (an ordering point) turns the pending ranges into one record holding their
//!   current bytes, appended to an in-memory buffer under the append lock: no device wait.
//!   Records are numbered; the journal is a log, so a crash keeps a prefix of them;
//! - **drain** (a durability point) orders, then waits until a `fdatasync` covers its record. The
//!   thread that finds no sync in progress becomes the leader: it writes the whole buffer
//!   (its own and every other thread's records) and syncs once; the others wait on a condition
//!   variable (not on the I/O lock, so a thread whose record the sync covered leaves as soon as
//!   it ends). Before writing, the leader waits briefly (at most half its last sync's time, and
//!   never when one thread commits alone) until as many durability points as threads recently
//!   waited at once have appended: threads released by the previous sync are about to append,
//!   and without the wait they would form a second, smaller group that syncs separately;
//! - **checkpoint**, when the journal passes its bound (and at close): with appends held, make
//!   the journal durable, write every page changed since the last checkpoint home, `fdatasync`
//!   the home file, then start a new epoch (records of older epochs are stale);
//! - **replay**, at open: apply the valid prefix of records to the home file, `fdatasync` it,
//!   then start a new epoch. A crash during replay replays again (records hold absolute bytes).
//!
//! Home pages are never written while their records may not be durable (the write-ahead rule):
//! over the copy-on-write mapping the home file is written only by a checkpoint, after the
//! journal is synced, while no record can be appended; every store in memory then follows (in
//! its thread) the ordering point that appended the record of its undo entry. Over external
//! (paged) memory, which also writes pages home when it evicts them, each such write first waits
//! at a [`WriteAheadGate`] until every record appended so far is durable; a write-ahead thread
//! serves those waits. Because the waiting thread may hold the appender lock (it faulted while
//! an ordering point copied pool memory), completed records sit in an *outbox* with its own
//! lock, and making them durable never takes the appender lock. Lock order: appender, I/O,
//! outbox.

pub mod file;
pub mod format;
mod gate;

pub use gate::WriteAheadGate;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use file::{read_all, JournalFile};
use format::{
    begin_record, finish_record, parse_ranges, pick_header, push_range_header, JournalHeader, RecordHeader,
    SlotProblem, RECORDS_OFFSET, RECORD_HEADER, SLOT_OFFSETS, SLOT_SIZE,
};

/// Default bound on journal bytes before a checkpoint (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The journal file grows in steps of this many zero bytes, so that appends overwrite
/// allocated blocks and `fdatasync` has no size change to write.
const GROW_STEP: u64 = 4 << 20;
/// Records buffered beyond this are written out (without a sync) by the thread that ordered.
const WRITE_OUT_AT: usize = 16 << 20;
const PAGE: u64 = 4096;
/// Bytes per line: flushed ranges are widened to whole lines, as a CPU cache writes them back.
const LINE: u64 = 64;

/// Options of the journaled persistence domain (builder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalOptions {
    path: Option<PathBuf>,
    max_bytes: Option<u64>,
    buffered: Option<Duration>,
    #[cfg(any(test, feature = "simulate"))]
    faults: Option<file::sim::IoFaults>,
}

impl JournalOptions {
    /// Defaults: the journal beside the pool (`<pool>.journal`), a 64 MiB bound, durable
    /// commits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts the journal at `path` (for example on another device). A pool whose journal is
    /// elsewhere must be opened with the same path; opening it without one fails with
    /// [`Error::JournalMissing`](crate::Error::JournalMissing) while the journal holds changes.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Checkpoints when the journal holds more than `bytes` (at least 64 KiB is used).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// **Buffered durability**: a durability point returns once its records are in the journal
    /// buffer; a background thread syncs every `period`, and `Region::sync` syncs at once.
    /// After a crash the pool holds a prefix of the commit order (never a hole), possibly
    /// missing the commits of the last `period`.
    pub fn buffered(mut self, period: Duration) -> Self {
        self.buffered = Some(period);
        self
    }

    /// Injects `faults` into the journal and the pool's home file (feature `simulate`): for
    /// tests of what the engine does after a failed write or `fdatasync`.
    #[cfg(any(test, feature = "simulate"))]
    pub fn faults(mut self, faults: file::sim::IoFaults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The journal path for a pool at `pool`: the configured one, or `<pool>.journal`.
    pub fn journal_path(&self, pool: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| default_journal_path(pool))
    }

    /// The bound on journal bytes.
    pub fn bound(&self) -> u64 {
        self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).max(64 << 10)
    }

    /// The buffered-mode sync period, if buffered.
    pub fn buffered_period(&self) -> Option<Duration> {
        self.buffered
    }
}

/// `<pool>.journal`, beside the pool file.
pub fn default_journal_path(pool: &Path) -> PathBuf {
    let mut name = pool.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".journal");
    pool.with_file_name(name)
}

/// Why a journal could not be replayed.
#[derive(Debug)]
pub enum ReplayError {
    /// I/O on the journal (`journal: true`) or the home file failed.
    Io {
        /// Which file.
        journal: bool,
        /// The error.
        source: io::Error,
    },
    /// The journal belongs to another pool.
    Mismatch,
    /// Neither header slot is valid but the file is not empty.
    BadHeader([SlotProblem; 2]),
    /// A record inside the synced range is damaged.
    Corrupt {
        /// File offset of the damaged record.
        offset: u64,
        /// Its expected sequence number.
        seq: u64,
        /// Records after it that were valid (lost if the journal is repaired).
        later_records: u64,
    },
}

/// What a scan of a journal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalScan {
    /// The active header, if any slot was valid.
    pub header: Option<JournalHeader>,
    /// Valid records of the current epoch, in order: `(file offset, record length)`.
    pub records: Vec<(u64, u64)>,
    /// File offset just past the valid prefix.
    pub end: u64,
    /// The sequence number the next record would take.
    pub next_seq: u64,
    /// Bytes of the valid records.
    pub bytes: u64,
    /// Whether bytes past the valid prefix looked like a torn record of this epoch.
    pub torn_tail: bool,
}

/// Reads a journal: its header and the valid prefix of its records. `data` is the pool's data
/// area (ranges outside it make a record invalid).
///
/// # Errors
///
/// [`ReplayError::Mismatch`], [`ReplayError::BadHeader`], [`ReplayError::Corrupt`] (a synced
/// record is damaged).
pub fn scan(bytes: &[u8], uuid: &[u8; 16], data: std::ops::Range<u64>) -> Result<JournalScan, ReplayError> {
    let mut out = scan_prefix(bytes, uuid, &data)?;
    let Some(header) = out.header else {
        return Ok(out);
    };
    // Past the prefix: a valid record of this epoch that had seen the failed one synced means
    // the failed one was damaged after it reached the disk.
    let pos = out.end as usize;
    let mut later = 0u64;
    let mut corrupt = false;
    let mut at = pos + 8;
    while at + RECORD_HEADER <= bytes.len() {
        if let Some(h) = RecordHeader::decode(&bytes[at..]) {
            if h.epoch == header.epoch && h.seq > out.next_seq {
                let end = at as u64 + RECORD_HEADER as u64 + h.payload_len;
                if end <= bytes.len() as u64 && h.checksum_ok(&bytes[at..end as usize]) {
                    out.torn_tail = true;
                    later += 1;
                    if h.durable_seq >= out.next_seq {
                        corrupt = true;
                    }
                    at = end as usize;
                    continue;
                }
            }
        }
        at += 8;
    }
    if RecordHeader::decode(&bytes[pos.min(bytes.len())..]).is_some_and(|h| h.epoch == header.epoch) {
        out.torn_tail = true;
    }
    if corrupt {
        return Err(ReplayError::Corrupt {
            offset: pos as u64,
            seq: out.next_seq,
            later_records: later,
        });
    }
    Ok(out)
}

/// The header and the valid prefix of records, without looking past it.
fn scan_prefix(
    bytes: &[u8],
    uuid: &[u8; 16],
    data: &std::ops::Range<u64>,
) -> Result<JournalScan, ReplayError> {
    let slot = |i: usize| -> [u8; SLOT_SIZE] {
        let at = SLOT_OFFSETS[i] as usize;
        let mut s = [0u8; SLOT_SIZE];
        if bytes.len() >= at + SLOT_SIZE {
            s.copy_from_slice(&bytes[at..at + SLOT_SIZE]);
        }
        s
    };
    let header = match pick_header([&slot(0), &slot(1)]) {
        Ok(h) => h,
        // Never got past creation: nothing to replay.
        Err([SlotProblem::Empty, SlotProblem::Empty]) => return Ok(JournalScan::default()),
        Err(p) => return Err(ReplayError::BadHeader(p)),
    };
    if &header.pool_uuid != uuid {
        return Err(ReplayError::Mismatch);
    }
    let mut out = JournalScan {
        header: Some(header),
        end: RECORDS_OFFSET,
        next_seq: header.start_seq,
        ..Default::default()
    };
    let mut pos = RECORDS_OFFSET as usize;
    while let Some(len) = valid_record_at(bytes, pos, &header, out.next_seq, data) {
        out.records.push((pos as u64, len as u64));
        out.bytes += len as u64;
        pos += len;
        out.next_seq += 1;
    }
    out.end = pos as u64;
    Ok(out)
}

/// The length of the record at `pos` if it is the valid record `seq` of `header`'s epoch.
fn valid_record_at(
    bytes: &[u8],
    pos: usize,
    header: &JournalHeader,
    seq: u64,
    data: &std::ops::Range<u64>,
) -> Option<usize> {
    let h = RecordHeader::decode(bytes.get(pos..)?)?;
    if h.epoch != header.epoch || h.seq != seq {
        return None;
    }
    let len = RECORD_HEADER + h.payload_len as usize;
    let rec = bytes.get(pos..pos + len)?;
    if !h.checksum_ok(rec) {
        return None;
    }
    parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, data.start, data.end)?;
    Some(len)
}

/// Applies the scanned records of `bytes` to `home` and syncs it. Pages are gathered in memory
/// and written in runs, so a journal of many small records costs few writes.
///
/// # Errors
///
/// I/O errors on the home file.
pub fn apply(
    bytes: &[u8],
    scan: &JournalScan,
    home: &dyn JournalFile,
    data: std::ops::Range<u64>,
) -> io::Result<()> {
    if scan.records.is_empty() {
        return Ok(());
    }
    let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for &(off, len) in &scan.records {
        let rec = &bytes[off as usize..(off + len) as usize];
        let h = RecordHeader::decode(rec).expect("scanned record");
        let ranges =
            parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, data.start, data.end).expect("scanned record");
        for r in ranges {
            let mut at = r.offset;
            let end = r.offset + r.bytes.len() as u64;
            while at < end {
                let page = at / PAGE;
                let buf = match pages.entry(page) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let mut p = vec![0u8; PAGE as usize];
                        home.read_at(&mut p, page * PAGE)?;
                        v.insert(p)
                    }
                };
                let piece_end = ((page + 1) * PAGE).min(end);
                let src = &r.bytes[(at - r.offset) as usize..(piece_end - r.offset) as usize];
                buf[(at - page * PAGE) as usize..(piece_end - page * PAGE) as usize].copy_from_slice(src);
                at = piece_end;
            }
        }
    }
    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0u64;
    let mut next = u64::MAX;
    for (page, bytes) in pages {
        if page != next && !run.is_empty() {
            home.write_all_at(&run, run_start * PAGE)?;
            run.clear();
        }
        if run.is_empty() {
            run_start = page;
        }
        run.extend_from_slice(&bytes);
        next = page + 1;
        if run.len() >= 8 << 20 {
            home.write_all_at(&run, run_start * PAGE)?;
            run.clear();
            next = u64::MAX;
        }
    }
    if !run.is_empty() {
        home.write_all_at(&run, run_start * PAGE)?;
    }
    counted_sync(home)
}

/// What replay did at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Records applied to the home file.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether a torn record was ignored at the end.
    pub torn_tail: bool,
}

/// Replays the journal in `jfile` onto `home` (a no-op for an empty journal) and returns the
/// header to continue from: `(epoch, next sequence number)` of the replayed journal, or `None`
/// if it had no valid header.
///
/// # Errors
///
/// As [`scan`], and I/O errors.
pub fn replay(
    jfile: &dyn JournalFile,
    home: &dyn JournalFile,
    uuid: &[u8; 16],
    data: std::ops::Range<u64>,
) -> Result<(Option<JournalHeader>, u64, ReplayReport), ReplayError> {
    let bytes = read_all(jfile).map_err(|source| ReplayError::Io {
        journal: true,
        source,
    })?;
    let s = scan(&bytes, uuid, data.clone())?;
    apply(&bytes, &s, home, data).map_err(|source| ReplayError::Io {
        journal: false,
        source,
    })?;
    let report = ReplayReport {
        records: s.records.len() as u64,
        bytes: s.bytes,
        torn_tail: s.torn_tail,
    };
    Ok((s.header, s.next_seq.max(1), report))
}

/// Drops the damaged record and everything after it: replays the valid prefix onto `home`, then
/// starts a new epoch. Returns the records dropped (the damaged one and later valid ones).
///
/// # Errors
///
/// I/O errors, [`ReplayError::Mismatch`] and [`ReplayError::BadHeader`].
pub fn repair(
    jfile: &dyn JournalFile,
    home: &dyn JournalFile,
    uuid: &[u8; 16],
    data: std::ops::Range<u64>,
) -> Result<u64, ReplayError> {
    let bytes = read_all(jfile).map_err(|source| ReplayError::Io {
        journal: true,
        source,
    })?;
    let (s, dropped) = match scan(&bytes, uuid, data.clone()) {
        Ok(s) => (s, 0),
        Err(ReplayError::Corrupt { later_records, .. }) => {
            // Rescan without the corruption check: the valid prefix is what survives.
            let s = scan_prefix(&bytes, uuid, &data)?;
            (s, later_records + 1)
        }
        Err(e) => return Err(e),
    };
    apply(&bytes, &s, home, data).map_err(|source| ReplayError::Io {
        journal: false,
        source,
    })?;
    if let Some(h) = s.header {
        write_header(
            jfile,
            &JournalHeader {
                pool_uuid: *uuid,
                epoch: h.epoch + 1,
                start_seq: s.next_seq,
            },
        )
        .map_err(|source| ReplayError::Io {
            journal: true,
            source,
        })?;
    }
    Ok(dropped)
}

/// Writes `h` to its slot and syncs the journal.
pub(crate) fn write_header(jfile: &dyn JournalFile, h: &JournalHeader) -> io::Result<()> {
    jfile.write_all_at(&h.encode(), SLOT_OFFSETS[h.slot_index()])?;
    counted_sync(jfile)
}

/// `sync_data`, counted in this thread's [`PersistStats::fsyncs`](crate::PersistStats).
fn counted_sync(f: &dyn JournalFile) -> io::Result<()> {
    crate::flush::count_fsync();
    f.sync_data()
}

/// Counters of a journal since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalStats {
    /// Records appended.
    pub records: u64,
    /// Bytes appended (record headers included).
    pub bytes: u64,
    /// `fdatasync`s of the journal for durability points.
    pub syncs: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Bytes in the journal now (since the last checkpoint).
    pub live_bytes: u64,
    /// Current epoch.
    pub epoch: u64,
    /// Highest sequence number known durable.
    pub durable_seq: u64,
}

/// The append side: sequence numbers and the record being built. Held while a record's bytes
/// are copied from pool memory (which may fault, and on paged memory evict: see
/// [`WriteAheadGate`]), so nothing that makes records durable may need it.
#[derive(Debug)]
struct Appender {
    next_seq: u64,
    epoch: u64,
    /// Scratch for the ranges of the record being built.
    ranges: Vec<(u64, u64)>,
    /// The record being built.
    record: Vec<u8>,
}

/// Completed records not yet written to the file. Never held while pool memory is touched.
#[derive(Debug)]
struct Outbox {
    /// Encoded records not yet written to the file.
    buf: Vec<u8>,
    /// File offset where `buf[0]` goes.
    buf_offset: u64,
    /// Sequence number of the last record in (or written from) `buf`.
    last_seq: u64,
}

/// Where a checkpoint writes changed pages: the pool file (from the copy-on-write mapping), or
/// through the external memory itself (its own write-back of changed blocks, then its drain).
#[derive(Debug)]
enum Home {
    File(Box<dyn JournalFile>),
    Memory(Arc<dyn crate::region::ExternalMemory>),
}

#[derive(Debug)]
struct IoState {
    /// The journal file is zero-filled up to here.
    allocated: u64,
    /// A spare buffer, so the appender's buffer keeps its capacity across write-outs.
    spare: Vec<u8>,
}

/// A journal attached to a region's memory.
#[derive(Debug)]
pub(crate) struct Journal {
    file: Box<dyn JournalFile>,
    home: Home,
    /// External memory: the gate its write-back waits at (the write-ahead rule).
    gate: Option<Arc<WriteAheadGate>>,
    path: PathBuf,
    uuid: [u8; 16],
    /// The region's memory: `len` bytes at `base` (both grow with the pool, see
    /// [`Journal::grow`]).
    base: usize,
    len: AtomicU64,
    data: std::ops::Range<u64>,
    /// The end of the data area now (`data.end` at start).
    data_end: AtomicU64,
    bound: u64,
    buffered: bool,
    /// Line-aligned ranges flushed since the last ordering point.
    pending: Mutex<Vec<(u64, u64)>>,
    appender: Mutex<Appender>,
    outbox: Mutex<Outbox>,
    io: Mutex<IoState>,
    durable: AtomicU64,
    failed: AtomicBool,
    /// Durability points whose records were appended since the buffer was last written out
    /// (changed only under the `outbox` lock, read without it): the group forming for the
    /// next sync.
    arrivals: AtomicU32,
    /// Whether a thread leads a sync now; followers wait on the condition variable until it
    /// ends, then find their record durable or lead the next sync.
    leader: (Mutex<bool>, Condvar),
    /// The leader flag, readable without the mutex (for followers spinning through a sync).
    syncing: AtomicBool,
    /// Threads inside [`sync_to`](Self::sync_to): waiting for a sync, or syncing.
    inside: AtomicU32,
    /// How many threads recently waited for syncs at once: the group a leader waits for.
    group: AtomicU32,
    /// Nanoseconds the last journal sync took: bounds a leader's wait for its group.
    last_sync_ns: AtomicU64,
    /// Pages changed by records since the last checkpoint, one bit each.
    dirty: Box<[AtomicU64]>,
    stats: Mutex<JournalStats>,
    /// Buffered mode: wakes the sync thread to stop.
    stop: (Mutex<bool>, Condvar),
}

/// The longest a follower spins through a running sync before sleeping.
const MAX_SPIN: Duration = Duration::from_millis(1);
/// The longest a group-commit leader waits for its group.
const MAX_GATHER: Duration = Duration::from_micros(200);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// Starts a journal over memory `[base, base + len)`: writes a fresh header (epoch after
    /// `previous`, sequence numbers continuing at `next_seq`) and syncs it. The home file must
    /// already hold every replayed record.
    ///
    /// # Safety
    ///
    /// - `[base, base + len)` is mapped readable for the journal's whole life;
    /// - it holds the pool whose home file is `home`, with the data area `data`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn start(
        file: Box<dyn JournalFile>,
        home: Box<dyn JournalFile>,
        path: &Path,
        uuid: [u8; 16],
        base: *mut u8,
        len: u64,
        data: std::ops::Range<u64>,
        previous: Option<JournalHeader>,
        next_seq: u64,
        opts: &JournalOptions,
    ) -> io::Result<Journal> {
        let epoch = previous.map_or(1, |h| h.epoch + 1);
        let header = JournalHeader {
            pool_uuid: uuid,
            epoch,
            start_seq: next_seq,
        };
        #[cfg(any(test, feature = "simulate"))]
        let (file, home) = match &opts.faults {
            Some(f) => (f.wrap(file), f.wrap(home)),
            None => (file, home),
        };
        let allocated = file.len()?.max(RECORDS_OFFSET);
        write_header(&*file, &header)?;
        let pages = len.div_ceil(PAGE);
        Ok(Journal {
            file,
            home: Home::File(home),
            gate: None,
            path: path.to_owned(),
            uuid,
            base: base as usize,
            len: AtomicU64::new(len),
            data_end: AtomicU64::new(data.end),
            data,
            bound: opts.bound(),
            buffered: opts.buffered.is_some(),
            pending: Mutex::new(Vec::new()),
            appender: Mutex::new(Appender {
                next_seq,
                epoch,
                ranges: Vec::new(),
                record: Vec::new(),
            }),
            outbox: Mutex::new(Outbox {
                buf: Vec::with_capacity(64 << 10),
                buf_offset: RECORDS_OFFSET,
                last_seq: next_seq.saturating_sub(1),
            }),
            io: Mutex::new(IoState {
                allocated,
                spare: Vec::new(),
            }),
            durable: AtomicU64::new(next_seq.saturating_sub(1)),
            failed: AtomicBool::new(false),
            arrivals: AtomicU32::new(0),
            inside: AtomicU32::new(0),
            leader: (Mutex::new(false), Condvar::new()),
            syncing: AtomicBool::new(false),
            group: AtomicU32::new(1),
            last_sync_ns: AtomicU64::new(0),
            dirty: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            stats: Mutex::new(JournalStats {
                epoch,
                durable_seq: next_seq.saturating_sub(1),
                ..Default::default()
            }),
            stop: (Mutex::new(false), Condvar::new()),
        })
    }

    /// Makes this journal the one of external memory `memory` (the memory at `base` given to
    /// [`start`](Self::start)): checkpoints write changed pages home through the memory's own
    /// write-back (`flush` of the changed pages, then `drain`) instead of from the mapping to
    /// the file, and `gate` learns of every append and sync. The caller installs `gate` in
    /// `memory` and runs [`serve_write_ahead`](Self::serve_write_ahead) on a thread.
    pub(crate) fn over_external(
        mut self,
        memory: Arc<dyn crate::region::ExternalMemory>,
        gate: Arc<WriteAheadGate>,
    ) -> Journal {
        self.home = Home::Memory(memory);
        self.gate = Some(gate);
        self
    }

    /// The write-ahead thread's loop: on each request from a write-back waiting at the gate,
    /// makes every record appended so far durable. Never takes the appender lock (a thread
    /// holding it may be the one waiting) and never checkpoints. Returns when the gate closes
    /// or fails.
    pub(crate) fn serve_write_ahead(&self) {
        let Some(gate) = &self.gate else {
            return;
        };
        while gate.next_request() {
            if self.lead_or_follow(gate.appended_seq()).is_err() {
                gate.fail();
                return;
            }
        }
    }

    /// The journal file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn check_failed(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the journal failed earlier (an I/O error at write or sync); reopen the pool to recover",
            ));
        }
        Ok(())
    }

    fn fail(&self, e: io::Error) -> io::Error {
        self.failed.store(true, Ordering::Release);
        if let Some(g) = &self.gate {
            g.fail();
        }
        e
    }

    /// Room for the pool to grow to `capacity` bytes: the dirty-page bitmap covers that many
    /// (the region calls it right after [`start`](Journal::start), before any record).
    pub(crate) fn reserve_growth(mut self, capacity: u64) -> Journal {
        let pages = capacity.div_ceil(PAGE);
        if pages.div_ceil(64) as usize > self.dirty.len() {
            self.dirty = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        }
        self
    }

    /// The pool grew: the memory is `len` bytes at the same base now, the data area ends at
    /// `data_end`.
    ///
    /// # Safety
    ///
    /// `[base, base + len)` is mapped readable for the journal's whole life and holds the pool
    /// (as the contract of [`start`](Journal::start)), and `len` is within the capacity given
    /// to [`reserve_growth`](Journal::reserve_growth).
    pub(crate) unsafe fn grow(&self, len: u64, data_end: u64) {
        debug_assert!(len.div_ceil(PAGE).div_ceil(64) as usize <= self.dirty.len());
        self.len.store(len, Ordering::Release);
        self.data_end.store(data_end, Ordering::Release);
    }

    /// Records `[offset, offset + len)` (widened to whole lines) for the next ordering point.
    pub(crate) fn flush(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let start = offset & !(LINE - 1);
        let end = (offset + len).div_ceil(LINE) * LINE;
        let end = end.min(self.len.load(Ordering::Acquire));
        lock(&self.pending).push((start, end - start));
    }

    /// An ordering point: appends one record with the current bytes of every pending range.
    /// Returns the sequence number a durability point must wait for (the last record appended
    /// so far).
    pub(crate) fn order(&self) -> io::Result<u64> {
        self.append(false)
    }

    /// [`order`](Self::order); `arrive`: for a durability point, which joins the group forming
    /// for the next sync if its record is not durable yet.
    fn append(&self, arrive: bool) -> io::Result<u64> {
        self.check_failed()?;
        let mut guard = lock(&self.appender);
        {
            let mut p = lock(&self.pending);
            std::mem::swap(&mut *p, &mut guard.ranges);
        }
        if guard.ranges.is_empty() {
            let seq = guard.next_seq - 1;
            if arrive && self.durable.load(Ordering::Acquire) < seq {
                let _outbox = lock(&self.outbox);
                self.arrive();
            }
            return Ok(seq);
        }
        let a = &mut *guard;
        a.ranges.sort_unstable();
        // Coalesce overlapping and adjacent ranges in place.
        let mut w = 0;
        for i in 1..a.ranges.len() {
            let (s, l) = a.ranges[i];
            let (ws, wl) = a.ranges[w];
            if s <= ws + wl {
                a.ranges[w].1 = (s + l).max(ws + wl) - ws;
            } else {
                w += 1;
                a.ranges[w] = (s, l);
            }
        }
        a.ranges.truncate(w + 1);
        let seq = a.next_seq;
        a.record.clear();
        let start = begin_record(&mut a.record, a.epoch, seq, self.durable.load(Ordering::Acquire));
        let mut n = 0u32;
        for &(off, len) in &a.ranges {
            // Ranges outside the data area (header copies) are never journaled: the region
            // writes headers to the home file directly.
            let s = off.max(self.data.start);
            let e = (off + len).min(self.data_end.load(Ordering::Acquire));
            if s >= e {
                continue;
            }
            push_range_header(&mut a.record, s, e - s);
            let at = a.record.len();
            a.record.resize(at + (e - s) as usize, 0);
            // SAFETY: `[s, e)` lies inside the data area, inside the mapping of `len` bytes at
            // `base` (contract of `start`); `a.record[at..]` is a distinct allocation of that many
            // bytes. Bytes another thread is storing concurrently may be copied old or new, as a
            // CPU cache may write back a line at any moment; the undo protocol above makes
            // either outcome correct.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (self.base as *const u8).add(s as usize),
                    a.record.as_mut_ptr().add(at),
                    (e - s) as usize,
                );
            }
            self.mark_dirty(s, e);
            n += 1;
        }
        a.ranges.clear();
        finish_record(&mut a.record, start, n);
        a.next_seq += 1;
        let big = {
            let mut outbox = lock(&self.outbox);
            outbox.buf.extend_from_slice(&a.record);
            outbox.last_seq = seq;
            if arrive {
                self.arrive();
            }
            outbox.buf.len() >= WRITE_OUT_AT
        };
        if let Some(g) = &self.gate {
            // Before the appender lock is released and before this thread's next store: every
            // store a write-back may carry that depends on this record follows this.
            g.set_appended(seq);
        }
        {
            let mut st = lock(&self.stats);
            st.records += 1;
            st.bytes += (a.record.len() - start) as u64;
        }
        if a.record.capacity() > WRITE_OUT_AT {
            a.record = Vec::new();
        }
        drop(guard);
        if big {
            // Keep memory bounded for huge transactions: write (without syncing) what is buffered.
            let mut io = lock(&self.io);
            self.write_out(&mut io, false)?;
        }
        Ok(seq)
    }

    fn mark_dirty(&self, start: u64, end: u64) {
        for page in start / PAGE..end.div_ceil(PAGE) {
            let bit = 1u64 << (page % 64);
            let word = &self.dirty[(page / 64) as usize];
            if word.load(Ordering::Relaxed) & bit == 0 {
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// A durability point: orders, then waits for a sync covering the record (in buffered mode,
    /// only orders).
    pub(crate) fn drain(&self) -> io::Result<()> {
        let seq = self.append(!self.buffered)?;
        if self.buffered {
            return Ok(());
        }
        self.sync_to(seq)?;
        self.checkpoint_if_full()
    }

    /// Makes every record appended so far durable (whatever the mode).
    pub(crate) fn sync(&self) -> io::Result<()> {
        let seq = self.append(true)?;
        self.sync_to(seq)?;
        self.checkpoint_if_full()
    }

    /// Checkpoints if the journal holds more than its bound. Called after a sync, outside the
    /// leader role and without the I/O lock: a checkpoint takes the appender lock first, and a
    /// thread holding that lock may be waiting (at the write-ahead gate) for a sync.
    fn checkpoint_if_full(&self) -> io::Result<()> {
        if self.used() <= self.bound {
            return Ok(());
        }
        let mut appender = lock(&self.appender);
        if self.used() <= self.bound {
            return Ok(());
        }
        let mut io = lock(&self.io);
        self.check_failed()?;
        self.checkpoint_locked(&mut appender, &mut io)
    }

    /// Waits until record `seq` is durable, syncing as the leader if no one else is.
    pub(crate) fn sync_to(&self, seq: u64) -> io::Result<()> {
        if self.durable.load(Ordering::Acquire) >= seq {
            return self.check_failed();
        }
        let inside = self.inside.fetch_add(1, Ordering::AcqRel) + 1;
        self.group.fetch_max(inside, Ordering::Relaxed);
        let r = self.lead_or_follow(seq);
        self.inside.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Returns once record `seq` is durable: waits while another thread leads a sync, and leads
    /// one itself when none is running and its record is not yet covered.
    fn lead_or_follow(&self, seq: u64) -> io::Result<()> {
        // Spin (yielding) through a running sync first: a sleeping follower wakes tens of
        // microseconds after the sync ends, which would stretch every group's cycle.
        if self.syncing.load(Ordering::Acquire) {
            let limit = Duration::from_nanos(self.last_sync_ns.load(Ordering::Relaxed) * 2).min(MAX_SPIN);
            let start = Instant::now();
            while self.syncing.load(Ordering::Acquire)
                && self.durable.load(Ordering::Acquire) < seq
                && start.elapsed() < limit
            {
                std::thread::yield_now();
            }
        }
        {
            let mut leading = lock(&self.leader.0);
            loop {
                self.check_failed()?;
                if self.durable.load(Ordering::Acquire) >= seq {
                    return Ok(());
                }
                if !*leading {
                    *leading = true;
                    self.syncing.store(true, Ordering::Release);
                    break;
                }
                leading = self.leader.1.wait(leading).unwrap_or_else(|p| p.into_inner());
            }
        }
        let r = self.lead();
        self.syncing.store(false, Ordering::Release);
        *lock(&self.leader.0) = false;
        self.leader.1.notify_all();
        r
    }

    /// The leader's part: gathers its group, writes every buffered record and syncs once.
    fn lead(&self) -> io::Result<()> {
        self.gather();
        let mut io = lock(&self.io);
        self.check_failed()?;
        let started = Instant::now();
        self.write_out(&mut io, true)?;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_sync_ns.store(took, Ordering::Relaxed);
        Ok(())
    }

    /// One more durability point in the group forming for the next sync (outbox lock held).
    fn arrive(&self) {
        let n = self.arrivals.load(Ordering::Relaxed) + 1;
        self.arrivals.store(n, Ordering::Release);
    }

    /// The leader's wait for its group: until as many durability points as threads recently
    /// waited for syncs at once have appended their records since the last write-out, or half
    /// the last sync's time (at most [`MAX_GATHER`]) has passed. A wait that runs out shrinks
    /// the group to the points that came, so a thread that stopped committing costs one bounded
    /// wait.
    fn gather(&self) {
        let want = self.group.load(Ordering::Relaxed);
        if want <= 1 || self.arrivals.load(Ordering::Acquire) >= want {
            return;
        }
        let limit = Duration::from_nanos(self.last_sync_ns.load(Ordering::Relaxed) / 2).min(MAX_GATHER);
        let start = Instant::now();
        loop {
            std::thread::yield_now();
            let came = self.arrivals.load(Ordering::Acquire);
            if came >= want {
                return;
            }
            if start.elapsed() >= limit {
                self.group.store(came.max(1), Ordering::Relaxed);
                return;
            }
        }
    }

    /// Journal bytes in use (since the last checkpoint).
    fn used(&self) -> u64 {
        let outbox = lock(&self.outbox);
        outbox.buf_offset + outbox.buf.len() as u64 - RECORDS_OFFSET
    }

    /// Writes the buffered records to the file, and syncs if `sync`.
    fn write_out(&self, io: &mut IoState, sync: bool) -> io::Result<()> {
        let (buf, offset, last) = {
            let mut outbox = lock(&self.outbox);
            let mut spare = std::mem::take(&mut io.spare);
            spare.clear();
            let buf = std::mem::replace(&mut outbox.buf, spare);
            self.arrivals.store(0, Ordering::Release);
            let offset = outbox.buf_offset;
            outbox.buf_offset += buf.len() as u64;
            (buf, offset, outbox.last_seq)
        };
        let r = self.write_buf(io, &buf, offset, sync);
        io.spare = buf;
        r?;
        if sync {
            self.durable.fetch_max(last, Ordering::AcqRel);
            if let Some(g) = &self.gate {
                g.set_durable(last);
            }
            let mut st = lock(&self.stats);
            st.syncs += 1;
            st.durable_seq = last;
        }
        Ok(())
    }

    fn write_buf(&self, io: &mut IoState, buf: &[u8], offset: u64, sync: bool) -> io::Result<()> {
        if !buf.is_empty() {
            let end = offset + buf.len() as u64;
            self.file.write_all_at(buf, offset).map_err(|e| self.fail(e))?;
            if end > io.allocated {
                // Grow with zeros so later appends overwrite allocated blocks; the sync below
                // (or the next one) writes the new size once.
                let step = GROW_STEP.min(self.bound / 4).max(PAGE);
                let new_end = (end + step).div_ceil(step) * step;
                let zeros = vec![0u8; (new_end - end) as usize];
                self.file.write_all_at(&zeros, end).map_err(|e| self.fail(e))?;
                io.allocated = new_end;
            }
        }
        if sync {
            counted_sync(&*self.file).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Checkpoints now: makes the journal durable, writes changed pages home, syncs home and
    /// starts a new epoch.
    pub(crate) fn checkpoint(&self) -> io::Result<()> {
        self.check_failed()?;
        self.order()?;
        let mut appender = lock(&self.appender);
        let mut io = lock(&self.io);
        self.check_failed()?;
        self.checkpoint_locked(&mut appender, &mut io)
    }

    /// The checkpoint, with appends held for its whole length (see the module docs for why
    /// this is enough). Lock order: appender, then I/O, then outbox. With appends held, every
    /// record is durable once the buffer is synced, so a write-back reaching the write-ahead
    /// gate meanwhile (the pages written home below, on external memory) passes at once.
    fn checkpoint_locked(&self, a: &mut Appender, io: &mut IoState) -> io::Result<()> {
        self.write_out(io, true)?;
        self.write_home().map_err(|e| self.fail(e))?;
        let header = JournalHeader {
            pool_uuid: self.uuid,
            epoch: a.epoch + 1,
            start_seq: a.next_seq,
        };
        write_header(&*self.file, &header).map_err(|e| self.fail(e))?;
        a.epoch += 1;
        lock(&self.outbox).buf_offset = RECORDS_OFFSET;
        for w in self.dirty.iter() {
            w.store(0, Ordering::Relaxed);
        }
        let mut st = lock(&self.stats);
        st.checkpoints += 1;
        st.epoch = a.epoch;
        st.durable_seq = a.next_seq - 1;
        Ok(())
    }

    /// Writes every dirty page home (in runs of contiguous pages) and syncs the home file.
    /// External memory writes the runs itself: only its resident pages' changed blocks (an
    /// evicted page was written home when it left), then it syncs.
    fn write_home(&self) -> io::Result<()> {
        let mut bounce: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut run_len = 0u64;
        let flush_run = |bounce: &mut Vec<u8>, start: u64, len: u64| -> io::Result<()> {
            if len == 0 {
                return Ok(());
            }
            let from = start * PAGE;
            let bytes = (len * PAGE).min(self.len.load(Ordering::Acquire) - from);
            let home = match &self.home {
                Home::File(f) => f,
                Home::Memory(m) => {
                    m.flush(from as usize, bytes as usize);
                    return Ok(());
                }
            };
            bounce.resize(bytes as usize, 0);
            // SAFETY: `[from, from + bytes)` lies inside the mapping (contract of `start`);
            // `bounce` is a distinct allocation. Concurrent stores may be copied old or new (see
            // `order`).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (self.base as *const u8).add(from as usize),
                    bounce.as_mut_ptr(),
                    bytes as usize,
                )
            };
            home.write_all_at(bounce, from)
        };
        for (wi, w) in self.dirty.iter().enumerate() {
            let mut bits = w.load(Ordering::Relaxed);
            if bits == 0 {
                continue;
            }
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let page = wi as u64 * 64 + b;
                if run_len > 0 && page == run_start + run_len && run_len < 2048 {
                    run_len += 1;
                } else {
                    flush_run(&mut bounce, run_start, run_len)?;
                    run_start = page;
                    run_len = 1;
                }
            }
        }
        flush_run(&mut bounce, run_start, run_len)?;
        match &self.home {
            Home::File(f) => counted_sync(&**f),
            // Reports the first error of the flushes above too.
            Home::Memory(m) => m.drain(),
        }
    }

    /// Counters since open.
    pub(crate) fn stats(&self) -> JournalStats {
        let mut s = *lock(&self.stats);
        s.live_bytes = self.used();
        s
    }

    /// Buffered mode: syncs every `period` until [`stop_syncer`](Self::stop_syncer).
    pub(crate) fn run_syncer(self: &Arc<Self>, period: Duration) -> std::thread::JoinHandle<()> {
        let j = Arc::clone(self);
        std::thread::Builder::new()
            .name("ptm-journal-sync".into())
            .spawn(move || loop {
                {
                    let stop = lock(&j.stop.0);
                    let (stop, _) = j
                        .stop
                        .1
                        .wait_timeout_while(stop, period, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    if *stop {
                        return;
                    }
                }
                // An error is sticky in the journal: the next durability point reports it.
                let _ = j.sync();
            })
            .expect("spawn the journal sync thread")
    }

    /// Stops the buffered-mode sync thread.
    pub(crate) fn stop_syncer(&self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
    }
}

#[cfg(test)]
mod tests;
