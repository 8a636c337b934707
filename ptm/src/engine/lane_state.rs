//! The volatile state of a lane's running transaction ([`LaneVolatile`]): where its log stands,
//! the ranges it logged, the locks it holds and its allocator state. It lives in the lane's slot
//! in [`Shared`](crate::engine::shared::Shared) between transactions, so the steady state does
//! not allocate.

use std::sync::atomic::AtomicU64;

use crate::engine::range_index::RangeIndex;

/// Slots of [`LaneVolatile::recent`] (a power of two).
pub(crate) const RECENT: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldKind {
    Mutex,
    Read,
    Write,
    /// Shared hold of a shared/exclusive word ([`PSharedLock`](crate::PSharedLock)).
    SxRead,
    /// Exclusive hold of a shared/exclusive word.
    SxWrite,
}

/// Per-lane volatile state, reused across transactions so the steady state does not allocate.
/// Cache-line aligned: every transaction, read-only ones included, moves it out of its lane slot
/// and back, and neighbouring slots (used by other threads) must not share a line with it.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct LaneVolatile {
    pub(crate) next_seq: u64,
    pub(crate) seq: u64,
    pub(crate) pos: u64,
    pub(crate) end: u64,
    pub(crate) entries: u64,
    /// Logged pieces in log order (offset, len): one per undo record, for commit.
    pub(crate) ranges: Vec<(u64, u64)>,
    /// The ranges callers asked to log (a range may be split into several records), for the
    /// "already logged?" check.
    pub(crate) logical: Vec<(u64, u64)>,
    /// The ranges of `logical` as an exact set, built once there are many.
    pub(crate) index: RangeIndex,
    /// With the index built: the range added last, checked before the index (a store
    /// usually follows the snapshot of its own range). Ranges leave `logical` only while there
    /// is no index, so it stays logged.
    pub(crate) last_cover: (u64, u64),
    /// Bounds of the ranges in `logical`: at most every start (`logical_lo`) and at least every
    /// end (`logical_hi`), widened as ranges are added and reset (to `u64::MAX` and 0) when the
    /// list is emptied at the transaction's start (a range leaving keeps them: loose bounds are
    /// still bounds). A range outside them is not covered: a transaction logging ranges in
    /// address order finds each new one uncovered at once.
    pub(crate) logical_lo: u64,
    pub(crate) logical_hi: u64,
    /// The newest ranges of `logical`, `(start, end)`, each in the slot of its start's cache
    /// line (`RECENT` slots, by line number): a store to the start of a range its transaction
    /// logged (an object snapshotted, then set) is found covered without a scan. A range leaving
    /// `logical` leaves its slot; `(0, 0)` is an empty slot.
    pub(crate) recent: [(u64, u64); RECENT],
    pub(crate) extents: Vec<(u64, u64)>,
    pub(crate) next_extent: u64,
    /// Records appended since the last drain.
    pub(crate) undrained: bool,
    /// Ranges of undo entries appended since the last drain (inside a snapshot batch): a store
    /// into one of them must drain first.
    pub(crate) unordered_undo: Vec<(u64, u64)>,
    /// Start of the current log area (the lane's log or an extent).
    pub(crate) area_start: u64,
    /// Start of the records of the current area not flushed yet: appends write records and
    /// the next drain flushes `[unflushed, pos)` once (packed records share lines).
    pub(crate) unflushed: u64,
    /// `pos` and `end` at the last drain: records after `ordered_pos` in the area ending at
    /// `ordered_end` (or anywhere in a later area) are not ordered yet, so they may be taken
    /// back ([`Transaction::take_back`]).
    pub(crate) ordered_pos: u64,
    pub(crate) ordered_end: u64,
    /// Records were taken back: the log may hold stale copies of them with this seq.
    pub(crate) took_back: bool,
    /// Pool offset of the line holding the lane's `completed` word when the log starts in it
    /// (format 5), else `u64::MAX`.
    pub(crate) mark_line: u64,
    /// This transaction flushed the `completed` line (with a record header written in it)
    /// after taking the lane, so the lane's own pending mark needs no flush of its own.
    pub(crate) mark_line_flushed: bool,
    /// Scratch for the commit: the logged ranges' cache lines (kept for its capacity).
    pub(crate) commit_lines: Vec<(u64, u64)>,
    /// Scratch for the commit: the data hash's gathered input (a fixed buffer kept across
    /// commits, so a commit allocates nothing for it).
    pub(crate) hash_buf: crate::engine::layout::HashBuf,
    pub(crate) batch_depth: u32,
    pub(crate) locks: Vec<(HeldKind, *const AtomicU64)>,
    pub(crate) completions: Vec<(usize, u64)>,
    /// Allocator state of the running transaction (see `alloc.rs`).
    pub(crate) heap: crate::engine::tx_heap::TxHeap,
}
