//! Reading a lane's undo log: the scan shared by abort and recovery.
//!
//! A scan starts at the lane's log area and reads records while they are valid (hash verifies)
//! and carry the transaction's seq, following jump records into heap extents. The first valid
//! record fixes the seq (when `want` is `None`, it must exceed the lane's `completed`). The scan
//! stops at the first record that does not verify: a torn tail was never followed by in-place
//! stores, so nothing past it needs undoing.

use std::sync::atomic::Ordering;

use crate::engine::layout::{self, decode_rec, rec_hash_ok, KIND_JUMP, KIND_NEW, KIND_UNDO, REC_HEADER};
use crate::engine::shared::Shared;
use crate::error::{Error, Result};

/// One undo entry found in a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogEntry {
    /// Pool offset of the saved old bytes.
    pub(crate) data_off: u64,
    /// Pool offset of the range they belong to.
    pub(crate) target: u64,
    /// Length of the range.
    pub(crate) len: u64,
    /// False for a new-memory record: hashed at recovery, never restored.
    pub(crate) restore: bool,
}

/// The result of scanning a lane's log.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The transaction seq of the entries (None: nothing valid beyond `completed`).
    pub(crate) seq: Option<u64>,
    /// Its undo entries in log order.
    pub(crate) entries: Vec<LogEntry>,
}

/// Scans lane `lane`. With `want = Some(seq)` only records of that seq count (abort of a running
/// transaction); with `None` the first record must be newer than the lane's `completed`.
pub(crate) fn scan_lane(s: &Shared, lane: usize, want: Option<u64>) -> Result<Scan> {
    let completed = s.completed_word(lane).load(Ordering::Acquire);
    scan_log(&s.region, &s.geometry(), s.log_key, lane, completed, want)
}

/// [`scan_lane`] over any region with the given geometry and completion mark, reading only
/// through [`Region::read_at`](pmem_core::Region::read_at) (also used read-only by `inspect`).
pub(crate) fn scan_log(
    region: &pmem_core::Region,
    geo: &layout::Geometry,
    key: u64,
    lane: usize,
    completed: u64,
    want: Option<u64>,
) -> Result<Scan> {
    let (mut pos, mut end) = geo.lane_log(lane);
    // The smallest record (a header alone, in this pool's alignment).
    let min_rec = geo.rec_total(0);
    let mut data = Vec::new();
    let mut out = Scan {
        seq: want,
        entries: Vec::new(),
    };
    let heap_end = geo.heap_offset + geo.heap_size;
    let mut hops = 0u64;
    loop {
        if end - pos < min_rec {
            return Ok(out);
        }
        let mut h = [0u8; REC_HEADER as usize];
        region.read_at(pos, &mut h)?;
        let r = decode_rec(&h);
        match out.seq {
            Some(seq) if r.seq != seq => return Ok(out),
            None if r.seq <= completed || r.seq % u64::from(layout::MAX_LANES) != lane as u64 => {
                return Ok(out)
            }
            _ => {}
        }
        match r.kind {
            KIND_UNDO => {
                let total = geo.rec_total(r.len);
                if r.len == 0 || total > end - pos {
                    return Ok(out);
                }
                let data_off = pos + REC_HEADER;
                data.resize(r.len as usize, 0);
                region.read_at(data_off, &mut data)?;
                if !rec_hash_ok(key, &r, &data) {
                    return Ok(out);
                }
                if !geo.loggable(r.target, r.len) {
                    return Err(Error::CorruptLog {
                        lane,
                        what: "undo entry targets bytes outside the root and heap",
                    });
                }
                out.seq = Some(r.seq);
                out.entries.push(LogEntry {
                    data_off,
                    target: r.target,
                    len: r.len,
                    restore: true,
                });
                pos += total;
            }
            KIND_NEW => {
                if r.len == 0 || !rec_hash_ok(key, &r, &[]) {
                    return Ok(out);
                }
                if !geo.loggable(r.target, r.len) {
                    return Err(Error::CorruptLog {
                        lane,
                        what: "new-memory record outside the heap",
                    });
                }
                out.seq = Some(r.seq);
                out.entries.push(LogEntry {
                    data_off: 0,
                    target: r.target,
                    len: r.len,
                    restore: false,
                });
                pos += min_rec;
            }
            KIND_JUMP => {
                if !rec_hash_ok(key, &r, &[]) {
                    return Ok(out);
                }
                let ext_end = r.target.checked_add(r.len);
                if r.target < geo.heap_offset
                    || ext_end.is_none_or(|e| e > heap_end)
                    || !r.target.is_multiple_of(4096)
                    || r.len < 4096
                {
                    return Err(Error::CorruptLog {
                        lane,
                        what: "jump record points outside the heap",
                    });
                }
                hops += 1;
                if hops > geo.heap_size / 4096 + 1 {
                    return Err(Error::CorruptLog {
                        lane,
                        what: "jump records form a cycle",
                    });
                }
                out.seq = Some(r.seq);
                pos = r.target;
                end = r.target + r.len;
            }
            _ => return Ok(out),
        }
    }
}

impl Shared {
    /// Restores `entries` (newest first) and makes the lane's transaction `seq` complete:
    /// restore + flush, drain, mark `completed`, flush, drain. Idempotent.
    pub(crate) fn roll_back(&self, lane: usize, seq: u64, entries: &[LogEntry]) -> Result<()> {
        for e in entries.iter().rev().filter(|e| e.restore) {
            // SAFETY: `scan_lane` validated both ranges against the pool geometry; the lane's
            // transaction owns the target ranges (its locks are still held, or we are in
            // single-threaded recovery), and log and target never overlap (log areas lie in the
            // lanes or in extents, targets in root/heap outside any live extent).
            unsafe { std::ptr::copy(self.ptr(e.data_off), self.ptr(e.target), e.len as usize) };
            self.flush(e.target, e.len);
        }
        self.drain()?;
        self.completed_word(lane).store(seq, Ordering::Release);
        self.flush(self.geo.lane(lane), 8);
        self.drain()?;
        self.marks.set_durable(lane, seq);
        Ok(())
    }
}
