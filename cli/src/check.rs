//! `ptm check`: both header copies, the file length against them, an optional repair from the
//! intact copy, then a trial open; an unsafe shutdown of the device while the pool was in use is
//! reported, and accepted with `--accept-unsafe-shutdown` once the pool's metadata verifies.
//! Once the pool opens, the collections its root reaches are walked from the root schema the
//! pool records (`ptm_collections::walk_schema`), and the blocks they reach are compared with
//! the heap's allocated blocks.

use std::path::Path;

use pmem_core::{
    accept_unsafe_shutdown, inspect_headers, repair_headers, repair_journal, HeaderFault, HeaderProblem,
    HeaderRepair, HeaderReport, JournalOptions, PoolHeader, RegionOptions, ShutdownRecord, FORMAT_VERSION,
};

use crate::journal::{JournalInfo, JournalState};
use crate::report::backing_name;

/// One header copy: intact, or what is wrong with it.
pub(crate) type CopyStatus = Result<PoolHeader, HeaderFault>;

/// What `--repair` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepairDone {
    /// Both copies were intact and equal.
    Nothing,
    /// The primary copy was rewritten from the backup.
    RestoredPrimary,
    /// The backup copy was rewritten from the primary.
    RestoredBackup,
}

impl RepairDone {
    fn from_core(r: HeaderRepair) -> Self {
        match r {
            HeaderRepair::RestoredPrimary => RepairDone::RestoredPrimary,
            HeaderRepair::RestoredBackup => RepairDone::RestoredBackup,
            // `NothingToDo`, and anything a later pmem-core adds that writes nothing we know of.
            _ => RepairDone::Nothing,
        }
    }

    /// For people.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RepairDone::Nothing => "nothing to do",
            RepairDone::RestoredPrimary => "restored the primary header from the backup",
            RepairDone::RestoredBackup => "restored the backup header from the primary",
        }
    }

    /// For JSON.
    pub(crate) fn key(self) -> &'static str {
        match self {
            RepairDone::Nothing => "nothing",
            RepairDone::RestoredPrimary => "restored_primary",
            RepairDone::RestoredBackup => "restored_backup",
        }
    }
}

/// How the pool mapped when opened after the check.
#[derive(Debug, Clone)]
pub(crate) struct OpenSummary {
    /// Persistence domain name.
    pub(crate) domain: &'static str,
    /// Backing name.
    pub(crate) backing: &'static str,
    /// Whether `MAP_SYNC` was accepted.
    pub(crate) map_sync: bool,
}

/// An unsafe shutdown the device counted while the pool was in use (the trial open refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnsafeShutdown {
    /// The count recorded in the pool when it was opened.
    pub(crate) recorded: u64,
    /// The count the device reports now.
    pub(crate) now: u64,
    /// Whether the pool is on other DIMMs than those the count was recorded on.
    pub(crate) device_changed: bool,
}

/// What walking the root from its recorded schema found (`ptm_collections::walk_schema`).
#[derive(Debug)]
pub(crate) enum CollectionsWalk {
    /// The walk ran to the end: counts, reachable and unreachable blocks.
    Walked(ptm_collections::WalkReport),
    /// A collection (or a pointer) is damaged: the error, naming its schema path.
    Corrupt(String),
    /// The pool records no root schema (made by a tool, or before schemas were recorded).
    NoSchema,
    /// The pool records only the schema's fingerprint (its description was too long to keep).
    FingerprintOnly,
    /// A bare pmem-core pool: no transaction layer, no root.
    BarePool,
    /// Lanes hold transactions recovery has not decided yet (the pool was not closed after
    /// them): walking the bytes as they are could report half-made changes.
    RecoveryPending(usize),
    /// The walk could not read what it needs (the heap metadata, the schema record).
    Failed(String),
}

impl CollectionsWalk {
    /// Whether the walk found damage (a corrupt collection, unreadable heap metadata or
    /// schema record).
    pub(crate) fn damaged(&self) -> bool {
        matches!(self, CollectionsWalk::Corrupt(_) | CollectionsWalk::Failed(_))
    }

    /// For JSON.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            CollectionsWalk::Walked(_) => "walked",
            CollectionsWalk::Corrupt(_) => "corrupt",
            CollectionsWalk::NoSchema => "no_schema",
            CollectionsWalk::FingerprintOnly => "fingerprint_only",
            CollectionsWalk::BarePool => "bare_pool",
            CollectionsWalk::RecoveryPending(_) => "recovery_pending",
            CollectionsWalk::Failed(_) => "failed",
        }
    }
}

/// Walks the collections of the pool at `path` (which opened) from its recorded root schema.
fn walk_collections(path: &Path) -> CollectionsWalk {
    let region = match crate::tool_options(path, false).open(path) {
        Ok(r) => r,
        Err(e) => return CollectionsWalk::Failed(e.to_string()),
    };
    match txn_layer(&region) {
        Ok(None) => return CollectionsWalk::BarePool,
        Ok(Some(s)) if s.lanes_with_log > 0 => return CollectionsWalk::RecoveryPending(s.lanes_with_log),
        Ok(Some(_)) => {}
        Err(e) => return CollectionsWalk::Failed(e.to_string()),
    }
    let schema = match ptm::read_root_schema(&region) {
        Ok(ptm::RootSchema::Described(s)) => s,
        Ok(ptm::RootSchema::Fingerprint(_)) => return CollectionsWalk::FingerprintOnly,
        Ok(_) => return CollectionsWalk::NoSchema,
        Err(e) => return CollectionsWalk::Failed(format!("root schema: {e}")),
    };
    match ptm_collections::walk_schema(&region, &schema) {
        Ok(report) => CollectionsWalk::Walked(report),
        Err(e @ ptm::Error::CorruptCollection { .. }) => CollectionsWalk::Corrupt(e.to_string()),
        Err(e) => CollectionsWalk::Failed(e.to_string()),
    }
}

/// Everything `ptm check` found and did.
#[derive(Debug)]
pub(crate) struct CheckOutcome {
    /// File length in bytes.
    pub(crate) file_len: u64,
    /// The primary header copy, as found (before any repair).
    pub(crate) primary: CopyStatus,
    /// The backup header copy, as found (before any repair).
    pub(crate) backup: CopyStatus,
    /// Both copies valid but not byte-identical.
    pub(crate) copies_differ: bool,
    /// The file length disagrees with the intact header.
    pub(crate) size_problem: Option<String>,
    /// Why restoring a header copy cannot fix this pool.
    pub(crate) unrepairable: Option<String>,
    /// What `--repair` did, if it ran.
    pub(crate) repair: Option<RepairDone>,
    /// The pool's journal as found (before any repair), when a header copy is intact.
    pub(crate) journal: Option<JournalInfo>,
    /// Records `--repair` dropped from a corrupt journal, if it repaired one.
    pub(crate) journal_dropped: Option<u64>,
    /// The trial open after the check (or repair); `None` if not attempted because of damage.
    pub(crate) open: Option<Result<OpenSummary, String>>,
    /// The unsafe shutdown the first trial open refused the pool for, if it did.
    pub(crate) unsafe_shutdown: Option<UnsafeShutdown>,
    /// The clean state `--accept-unsafe-shutdown` recorded after the pool verified, if it did.
    pub(crate) shutdown_accepted: Option<ShutdownRecord>,
    /// The walk of the collections from the root schema, once the pool opened.
    pub(crate) walk: Option<CollectionsWalk>,
}

impl CheckOutcome {
    /// Whether anything was wrong before any repair (or, once the pool opened, in its
    /// collections).
    pub(crate) fn damage_found(&self) -> bool {
        self.header_damage()
            || self.journal_damaged()
            || self.unsafe_shutdown.is_some()
            || self.walk.as_ref().is_some_and(CollectionsWalk::damaged)
    }

    /// Whether a header copy or the file length is wrong.
    fn header_damage(&self) -> bool {
        self.primary.is_err() || self.backup.is_err() || self.copies_differ || self.size_problem.is_some()
    }

    /// Whether the journal stops the pool from opening.
    pub(crate) fn journal_damaged(&self) -> bool {
        self.journal.as_ref().is_some_and(JournalInfo::is_damaged)
    }

    /// Whether the pool is now intact and opens, and its collections walked without damage.
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self.open, Some(Ok(_))) && !self.walk.as_ref().is_some_and(CollectionsWalk::damaged)
    }

    /// Which copy a repair would restore (for advice).
    fn repair_target(&self) -> &'static str {
        if !self.header_damage() && self.journal_damaged() {
            "journal's valid prefix (dropping the damaged record and every record after it)"
        } else if self.primary.is_err() {
            "primary header from the backup"
        } else {
            "backup header from the primary"
        }
    }

    /// One-line verdict for the text report.
    pub(crate) fn verdict_text(&self) -> String {
        if self.walk.as_ref().is_some_and(CollectionsWalk::damaged) {
            return "damaged: the pool opens, but a collection (or the heap metadata it is \
                    checked against) is corrupt; `--repair` cannot fix it"
                .into();
        }
        match (&self.open, self.repair) {
            (Some(Ok(_)), Some(RepairDone::RestoredPrimary | RepairDone::RestoredBackup)) => {
                "ok (repaired)".into()
            }
            (Some(Ok(_)), _) if self.journal_dropped.is_some() => "ok (repaired)".into(),
            (Some(Ok(_)), _) if self.shutdown_accepted.is_some() => {
                "ok (unsafe shutdown accepted; the pool's metadata verified)".into()
            }
            (Some(Err(_)), _) if self.unsafe_shutdown.is_some() => {
                "refused: unsafe shutdown while in use; once the data is verified, \
                 `ptm check --accept-unsafe-shutdown` accepts it"
                    .into()
            }
            (Some(Ok(_)), _) => "ok".into(),
            (Some(Err(_)), _) => "the pool does not open".into(),
            (None, _) => match &self.unrepairable {
                Some(reason) => reason.clone(),
                None => format!(
                    "damaged; `ptm check --repair` restores the {}",
                    self.repair_target()
                ),
            },
        }
    }

    /// The `ptm: error:` line when the check did not end well, `None` when it did.
    pub(crate) fn error_message(&self, path: &Path) -> Option<String> {
        if self.is_ok() {
            return None;
        }
        if let Some(Err(e)) = &self.open {
            return Some(e.clone());
        }
        if let Some(CollectionsWalk::Corrupt(e) | CollectionsWalk::Failed(e)) = &self.walk {
            return Some(format!("{}: collections: {e}", path.display()));
        }
        if let Some(reason) = &self.unrepairable {
            return Some(format!("{}: {reason}", path.display()));
        }
        let what = match (&self.primary, &self.backup, &self.journal) {
            (Err(f), _, _) => format!("primary header {}", fault_phrase(f)),
            (_, Err(f), _) => format!("backup header {}", fault_phrase(f)),
            (_, _, Some(j)) if !self.copies_differ && j.is_damaged() => {
                format!("journal {}", j.state_text())
            }
            _ => "the header copies differ".into(),
        };
        Some(format!(
            "{}: {what}; run `ptm check --repair` to restore the {}",
            path.display(),
            self.repair_target()
        ))
    }
}

fn fault_phrase(f: &HeaderFault) -> String {
    match f {
        HeaderFault::Missing => "missing".into(),
        HeaderFault::Version(v) => format!("has unsupported format version {v}"),
        f => format!("damaged: {f}"),
    }
}

/// Judges a header report without touching the file.
fn assess(report: HeaderReport) -> CheckOutcome {
    let HeaderReport {
        file_len,
        primary,
        backup,
        ..
    } = report;
    let copies_differ = matches!((&primary, &backup), (Ok(a), Ok(b)) if a.as_bytes() != b.as_bytes());
    let reference = primary.as_ref().or(backup.as_ref()).ok();
    let size_problem = reference.and_then(|h| {
        if file_len < h.pool_size {
            Some(format!(
                "truncated: the file is {file_len} bytes, the header records a pool of {} bytes",
                h.pool_size
            ))
        } else if file_len > h.pool_size {
            Some(format!(
                "the file is {file_len} bytes but the header records a pool of {} bytes",
                h.pool_size
            ))
        } else {
            None
        }
    });
    let unrepairable = match (&primary, &backup) {
        (Ok(_), _) | (_, Ok(_)) => size_problem
            .as_ref()
            .map(|s| format!("{s}; restoring a header copy cannot fix the file length")),
        (Err(a), Err(b)) => Some(match (a, b) {
            _ if file_len == 0 => "the file is empty: not a ptm pool".into(),
            (HeaderFault::Version(v), _) | (_, HeaderFault::Version(v)) => format!(
                "pool format version {v} is not supported (this build reads version {FORMAT_VERSION})"
            ),
            _ if no_magic(a) && no_magic(b) => {
                "not a ptm pool (no header copy carries the pool magic)".into()
            }
            _ => "both header copies are damaged; there is no intact copy to restore from".into(),
        }),
    };
    CheckOutcome {
        file_len,
        primary,
        backup,
        copies_differ,
        size_problem,
        unrepairable,
        repair: None,
        journal: None,
        journal_dropped: None,
        open: None,
        unsafe_shutdown: None,
        shutdown_accepted: None,
        walk: None,
    }
}

/// Why `--repair` cannot fix the journal, if it cannot: only a damaged record is repairable
/// (by dropping it and what follows), not a journal of another pool, a missing or unreadable
/// one, or one whose both header slots are damaged.
fn journal_unrepairable(j: &JournalInfo) -> Option<String> {
    let p = j.path.display();
    match &j.state {
        JournalState::Corrupt { seq: 0, .. } | JournalState::Mismatch | JournalState::Unreadable(_) => {
            Some(format!(
                "journal {p}: {}; `ptm check --repair` cannot fix it",
                j.state_text()
            ))
        }
        JournalState::Absent if j.flag => Some(format!(
            "journal {p} is missing and the pool header says it may hold committed changes"
        )),
        _ => None,
    }
}

fn no_magic(f: &HeaderFault) -> bool {
    matches!(
        f,
        HeaderFault::Missing | HeaderFault::Damaged(HeaderProblem::BadMagic)
    )
}

/// The transaction layer of `region` ([`ptm::inspect`], read-only), or `None` for a bare
/// pmem-core pool: one whose superblock area was never written (all zero). A superblock that is
/// written but does not decode (a damaged magic included) is an error, not a bare pool.
pub(crate) fn txn_layer(region: &pmem_core::Region) -> Result<Option<ptm::Summary>, ptm::Error> {
    match ptm::inspect(region) {
        Ok(s) => Ok(Some(s)),
        Err(e @ ptm::Error::CorruptMetadata { .. }) => {
            let mut sb = [0u8; 256];
            region.read_at(region.data_range().start, &mut sb)?;
            if sb.iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// Opens the pool with `opts` to prove it opens and its transaction layer reads, and closes it
/// again.
fn try_open(path: &Path, opts: &RegionOptions) -> Result<OpenSummary, ptm::Error> {
    let r = opts.open(path)?;
    // The transaction layer (superblock, chunk table, slab bitmaps) read without writing; a
    // bare pmem-core pool has none.
    txn_layer(&r)?;
    Ok(OpenSummary {
        domain: r.domain().name(),
        backing: backing_name(r.backing()),
        map_sync: r.map_sync(),
    })
}

/// The unsafe shutdown `e` reports, if it is one.
fn unsafe_shutdown_of(e: &ptm::Error) -> Option<UnsafeShutdown> {
    match e {
        ptm::Error::Core(pmem_core::Error::UnsafeShutdown {
            recorded,
            now,
            device_changed,
            ..
        }) => Some(UnsafeShutdown {
            recorded: *recorded,
            now: *now,
            device_changed: *device_changed,
        }),
        _ => None,
    }
}

/// The trial open, and with `accept` the handling of an unsafe shutdown it is refused for:
/// open ignoring it, verify the transaction layer, record the device's current count as the
/// clean state, and open again.
fn open_and_settle(o: &mut CheckOutcome, path: &Path, accept: bool) {
    let opts = crate::tool_options(path, false);
    let first = try_open(path, &opts);
    o.unsafe_shutdown = first.as_ref().err().and_then(unsafe_shutdown_of);
    if o.unsafe_shutdown.is_none() || !accept {
        o.open = Some(first.map_err(|e| e.to_string()));
        return;
    }
    let verified = try_open(path, &opts.clone().ignore_unsafe_shutdown(true))
        .map_err(|e| e.to_string())
        .and_then(|_| accept_unsafe_shutdown(path, &opts).map_err(|e| e.to_string()));
    o.open = Some(match verified {
        Ok(record) => {
            o.shutdown_accepted = Some(record);
            try_open(path, &opts).map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    });
}

/// Runs the check (and the repair if asked and possible; with `accept_unsafe`, the acceptance
/// of an unsafe shutdown once the transaction layer verifies).
///
/// Damage found without `repair`, or damage a header restore cannot fix, skips the trial open:
/// opening would fail, or (for a damaged backup) silently rewrite the backup.
///
/// # Errors
///
/// The pool cannot be read or locked, or the repair's write fails.
pub(crate) fn run(
    path: &Path,
    repair: bool,
    accept_unsafe: bool,
    progress: bool,
) -> Result<CheckOutcome, pmem_core::Error> {
    // A spinner naming the stage on a terminal (stderr), so a long check of a large pool shows
    // that it is working; nothing when output is piped or `--json`.
    let spinner = progress.then(|| {
        let pb = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        pb.enable_steady_tick(std::time::Duration::from_millis(100));
        pb
    });
    let stage = |msg: &'static str| {
        if let Some(pb) = &spinner {
            pb.set_message(msg);
        }
    };
    stage("reading both header copies");
    let mut o = assess(inspect_headers(path)?);
    if o.unrepairable.is_none() {
        stage("reading the journal");
        let reference = o.primary.as_ref().or(o.backup.as_ref()).ok();
        o.journal = reference.map(|h| JournalInfo::read(path, h));
        o.unrepairable = o.journal.as_ref().and_then(journal_unrepairable);
    }
    if o.unrepairable.is_some() || (o.damage_found() && !repair) {
        return Ok(o);
    }
    if repair {
        stage("repairing the header");
        o.repair = Some(RepairDone::from_core(repair_headers(path)?));
        if o.journal_damaged() {
            stage("repairing the journal");
            o.journal_dropped = Some(repair_journal(path, &JournalOptions::new())?);
        }
    }
    stage("checking the transaction layer (superblock, undo logs, chunk table, bitmaps)");
    open_and_settle(&mut o, path, accept_unsafe);
    if o.is_ok() {
        stage("walking the collections from the root schema");
        o.walk = Some(walk_collections(path));
    }
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    Ok(o)
}
