//! The journal of a pool as `ptm info` and `ptm check` see it: read from the file with
//! [`pmem_core::internals::journal::scan`] before the pool is opened (opening replays the journal and starts
//! a new epoch, so afterwards there is nothing left to show).

use std::path::{Path, PathBuf};

use pmem_core::internals::header::FLAG_JOURNAL;
use pmem_core::internals::journal::{default_journal_path, scan, ReplayError};
use pmem_core::PoolHeader;
use serde_json::{json, Value};

use crate::report::Table;

/// What reading the journal file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JournalState {
    /// No file at the journal path.
    Absent,
    /// The file exists but never got a header (nothing to replay).
    Empty,
    /// The valid prefix of the current epoch.
    Valid {
        /// The active header's epoch.
        epoch: u64,
        /// Records in the valid prefix.
        records: u64,
        /// Their bytes (record headers included).
        bytes: u64,
        /// Whether a torn record follows the prefix.
        torn_tail: bool,
    },
    /// The journal belongs to another pool.
    Mismatch,
    /// The journal is damaged where a crash cannot explain it.
    Corrupt {
        /// File offset of the damage.
        offset: u64,
        /// Sequence number of the damaged record (0: the header slots).
        seq: u64,
        /// What is wrong.
        what: String,
    },
    /// The file could not be read.
    Unreadable(String),
}

/// The journal of a pool: where it is, what the pool header says, what the file holds.
#[derive(Debug, Clone)]
pub(crate) struct JournalInfo {
    /// The journal file (`<pool>.journal`).
    pub(crate) path: PathBuf,
    /// Whether the pool header's [`FLAG_JOURNAL`] is set.
    pub(crate) flag: bool,
    /// What the file holds.
    pub(crate) state: JournalState,
}

impl JournalInfo {
    /// Reads the journal of the pool at `pool`, whose intact header is `h`, without opening the
    /// pool.
    pub(crate) fn read(pool: &Path, h: &PoolHeader) -> Self {
        let path = default_journal_path(pool);
        let flag = h.flags & FLAG_JOURNAL != 0;
        let state = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JournalState::Absent,
            Err(e) => JournalState::Unreadable(e.to_string()),
            Ok(bytes) => {
                let data = h.data_offset..h.data_offset + h.data_size;
                match scan(&bytes, &h.uuid, data) {
                    Ok(s) => match s.header {
                        None => JournalState::Empty,
                        Some(jh) => JournalState::Valid {
                            epoch: jh.epoch,
                            records: s.records.len() as u64,
                            bytes: s.bytes,
                            torn_tail: s.torn_tail,
                        },
                    },
                    Err(ReplayError::Mismatch) => JournalState::Mismatch,
                    Err(ReplayError::BadHeader(p)) => JournalState::Corrupt {
                        offset: 0,
                        seq: 0,
                        what: format!("both header slots are damaged ({:?}, {:?})", p[0], p[1]),
                    },
                    Err(ReplayError::Corrupt {
                        offset,
                        seq,
                        later_records,
                    }) => JournalState::Corrupt {
                        offset,
                        seq,
                        what: format!(
                            "record {seq} was synced but is damaged ({later_records} valid records follow it)"
                        ),
                    },
                    Err(ReplayError::Io { source, .. }) => JournalState::Unreadable(source.to_string()),
                }
            }
        };
        JournalInfo { path, flag, state }
    }

    /// Whether the journal stops the pool from opening (and is worth reporting as damage).
    pub(crate) fn is_damaged(&self) -> bool {
        matches!(
            self.state,
            JournalState::Mismatch | JournalState::Corrupt { .. } | JournalState::Unreadable(_)
        ) || (self.flag && self.state == JournalState::Absent)
    }

    /// One line for people: the state of the file.
    pub(crate) fn state_text(&self) -> String {
        match &self.state {
            JournalState::Absent if self.flag => {
                "missing: the header says it may hold committed changes".into()
            }
            JournalState::Absent => "none".into(),
            JournalState::Empty => "empty (no header yet)".into(),
            JournalState::Valid {
                epoch,
                records,
                bytes,
                torn_tail,
            } => format!(
                "epoch {epoch}, {records} records ({bytes} bytes) to replay, torn tail {}",
                if *torn_tail { "yes" } else { "no" }
            ),
            JournalState::Mismatch => "mismatch: the journal belongs to another pool".into(),
            JournalState::Corrupt { offset, what, .. } => format!("corrupt at offset {offset}: {what}"),
            JournalState::Unreadable(e) => format!("unreadable: {e}"),
        }
    }

    /// The text rows.
    pub(crate) fn rows(&self, t: &mut Table) {
        t.row("journal", self.path.display());
        t.row("journal flag", if self.flag { "set" } else { "not set" });
        t.row("journal state", self.state_text());
    }

    /// The JSON object.
    pub(crate) fn json(&self) -> Value {
        let mut v = json!({
            "path": self.path.to_string_lossy(),
            "flag": self.flag,
            "exists": !matches!(self.state, JournalState::Absent),
            "status": match &self.state {
                JournalState::Absent if self.flag => "missing",
                JournalState::Absent => "none",
                JournalState::Empty => "empty",
                JournalState::Valid { .. } => "ok",
                JournalState::Mismatch => "mismatch",
                JournalState::Corrupt { .. } => "corrupt",
                JournalState::Unreadable(_) => "unreadable",
            },
            "epoch": null,
            "records": null,
            "bytes": null,
            "torn_tail": null,
            "error": null,
        });
        match &self.state {
            JournalState::Valid {
                epoch,
                records,
                bytes,
                torn_tail,
            } => {
                v["epoch"] = json!(epoch);
                v["records"] = json!(records);
                v["bytes"] = json!(bytes);
                v["torn_tail"] = json!(torn_tail);
            }
            JournalState::Corrupt { offset, seq, what } => {
                v["error"] = json!(what);
                v["offset"] = json!(offset);
                v["seq"] = json!(seq);
            }
            JournalState::Mismatch | JournalState::Unreadable(_) => v["error"] = json!(self.state_text()),
            JournalState::Absent if self.flag => v["error"] = json!(self.state_text()),
            JournalState::Absent | JournalState::Empty => {}
        }
        v
    }
}

/// The journal of the pool at `path`, read before opening it: `None` when neither header copy
/// is intact (the open reports that).
///
/// # Errors
///
/// The pool cannot be read or is locked.
pub(crate) fn inspect(path: &Path) -> Result<Option<JournalInfo>, pmem_core::Error> {
    let report = pmem_core::inspect_headers(path)?;
    let h = report.primary.as_ref().or(report.backup.as_ref()).ok();
    Ok(h.map(|h| JournalInfo::read(path, h)))
}
