//! What an exploration found: counts, throughput, and the failures with their reproduction.

use std::fmt;
use std::time::Duration;

use ptm::pmem_core::{FaultModel, RedundantPersistence};

use crate::images::{ImageId, ImageKind};

/// Which budget stopped an exploration early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Budget {
    /// [`Explorer::max_points`](crate::Explorer::max_points).
    CrashPoints,
    /// [`Explorer::max_images`](crate::Explorer::max_images).
    Images,
    /// [`Explorer::max_time`](crate::Explorer::max_time).
    Time,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Budget::CrashPoints => "crash-point budget",
            Budget::Images => "image budget",
            Budget::Time => "time budget",
        })
    }
}

/// Where a checked image failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Opening the image (recovery) returned an error.
    Recovery,
    /// Opening the image (recovery) panicked.
    RecoveryPanic,
    /// The invariant check returned an error.
    Check,
    /// The invariant check panicked.
    CheckPanic,
    /// The follow-up workload ([`Explorer::run_then`](crate::Explorer::run_then)) failed or
    /// panicked on the recovered image.
    Followup,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Recovery => "recovery failed",
            Stage::RecoveryPanic => "recovery panicked",
            Stage::Check => "check failed",
            Stage::CheckPanic => "check panicked",
            Stage::Followup => "follow-up workload failed",
        })
    }
}

/// One crash image: where it was taken and which pending units it persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashImage {
    /// The crash point: the drain's index (in the workload, or in the recovery of the outer
    /// image for a double crash).
    pub point: u64,
    /// The image's number at that crash point.
    pub image: u32,
    /// How the subset of pending units was chosen.
    pub kind: ImageKind,
    /// Pool offsets of every unit (word or line) pending at the crash point, ascending.
    pub pending: Vec<u64>,
    /// Pool offsets of the pending units this image persisted (the others kept their old
    /// contents).
    pub persisted: Vec<u64>,
}

/// A crash image whose recovery or check failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The image's identity (what [`Explorer::only_point`](crate::Explorer::only_point) and
    /// friends select).
    pub id: ImageId,
    /// The crash in the workload.
    pub crash: CrashImage,
    /// The crash during recovery of `crash` (double crash), if any.
    pub recovery_crash: Option<CrashImage>,
    /// The crash in the follow-up workload run on `crash` once recovered
    /// ([`Explorer::run_then`](crate::Explorer::run_then)), if any.
    pub followup_crash: Option<CrashImage>,
    /// The fault model of the units.
    pub fault_model: FaultModel,
    /// What failed.
    pub stage: Stage,
    /// The error or panic message.
    pub message: String,
    /// An explorer that checks exactly this image (with the same pool settings), as code.
    pub reproduction: String,
}

/// At most this many unit offsets are printed per list.
const SHOWN_UNITS: usize = 12;

struct Offsets<'a>(&'a [u64]);

impl fmt::Display for Offsets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, o) in self.0.iter().take(SHOWN_UNITS).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{o:#x}")?;
        }
        if self.0.len() > SHOWN_UNITS {
            write!(f, " … ({} more)", self.0.len() - SHOWN_UNITS)?;
        }
        Ok(())
    }
}

impl CrashImage {
    fn describe(&self, f: &mut fmt::Formatter<'_>, what: &str, unit: &str) -> fmt::Result {
        let lost: Vec<u64> = self
            .pending
            .iter()
            .copied()
            .filter(|o| self.persisted.binary_search(o).is_err())
            .collect();
        writeln!(
            f,
            "    {what} {}, image {}: {}; {} of {} pending {unit}s persisted",
            self.point,
            self.image,
            self.kind,
            self.persisted.len(),
            self.pending.len()
        )?;
        writeln!(f, "      persisted: {}", Offsets(&self.persisted))?;
        writeln!(f, "      lost:      {}", Offsets(&lost))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.fault_model {
            FaultModel::Lines => "line",
            _ => "word",
        };
        writeln!(f, "  {} at {}: {}", self.stage, self.id, self.message)?;
        self.crash.describe(f, "crash point", unit)?;
        if let Some(r) = &self.recovery_crash {
            r.describe(f, "then, in its recovery, crash point", unit)?;
        }
        if let Some(r) = &self.followup_crash {
            r.describe(f, "then, recovered, in the follow-up workload, crash point", unit)?;
        }
        writeln!(f, "    reproduce: {}", self.reproduction)
    }
}

/// The result of an exploration.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// Crash points of the workload: its drains, plus the crash after its last drain.
    pub crash_points: u64,
    /// Crash points for which images were built (all of them unless a budget or `only_point`
    /// restricted the exploration).
    pub points_explored: u64,
    /// Crash points inside recoveries (double crash) for which images were built.
    pub recovery_points: u64,
    /// Images recovered and checked, in the workload and (double crash) in recoveries.
    pub images_checked: u64,
    /// Of those, images taken during a recovery (double crash).
    pub recovery_images_checked: u64,
    /// Crash points in follow-up workloads ([`Explorer::run_then`](crate::Explorer::run_then))
    /// for which images were built.
    pub followup_points: u64,
    /// Of the images checked, those taken during a follow-up workload.
    pub followup_images_checked: u64,
    /// Images skipped because an identical image had been checked already.
    pub duplicates: u64,
    /// The most units pending at one crash point.
    pub max_pending: usize,
    /// Wall time of the whole exploration (setup, workload and checks).
    pub elapsed: Duration,
    /// The budget that stopped the exploration early, if any.
    pub truncated: Option<Budget>,
    /// The failures found (at most [`Explorer::max_failures`](crate::Explorer::max_failures)).
    pub failures: Vec<Failure>,
    /// All failures found, including those not kept.
    pub failures_total: u64,
    /// Failures of images taken inside the recovery of a workload image that failed itself
    /// (double crash): not in `failures` nor `failures_total`, as they add nothing to it.
    pub failures_in_failed_recoveries: u64,
    /// Redundant persistence of the workload run (from its open to its close): flushes of lines
    /// no store had changed, drains with nothing pending. A performance finding, not a
    /// failure.
    pub redundant: RedundantPersistence,
}

impl Report {
    /// Images checked per second of exploration.
    pub fn images_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.images_checked as f64 / s
        } else {
            0.0
        }
    }

    /// Whether every crash point was explored (no budget hit and no `only_point` restriction).
    pub fn is_complete(&self) -> bool {
        self.truncated.is_none() && self.points_explored == self.crash_points
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash exploration: {} crash points ({} explored)",
            self.crash_points, self.points_explored
        )?;
        if self.recovery_points > 0 {
            write!(f, " + {} in recoveries", self.recovery_points)?;
        }
        write!(f, "; {} images checked", self.images_checked)?;
        if self.recovery_images_checked > 0 {
            write!(f, " ({} after a crash in recovery)", self.recovery_images_checked)?;
        }
        if self.followup_images_checked > 0 {
            write!(
                f,
                " ({} at {} crash points of follow-up workloads)",
                self.followup_images_checked, self.followup_points
            )?;
        }
        writeln!(
            f,
            ", {} duplicates skipped; at most {} units pending; {:.2} s, {:.0} images/s",
            self.duplicates,
            self.max_pending,
            self.elapsed.as_secs_f64(),
            self.images_per_second()
        )?;
        writeln!(f, "workload: {}", self.redundant)?;
        if let Some(b) = self.truncated {
            writeln!(f, "stopped early by the {b}")?;
        }
        if self.failures_total == 0 {
            return writeln!(f, "no failures");
        }
        writeln!(f, "{} failures", self.failures_total)?;
        for fl in &self.failures {
            fl.fmt(f)?;
        }
        if self.failures_in_failed_recoveries > 0 {
            writeln!(
                f,
                "  (and {} failures after crashes inside the recovery of those images, not listed)",
                self.failures_in_failed_recoveries
            )?;
        }
        if (self.failures.len() as u64) < self.failures_total {
            writeln!(
                f,
                "  … {} more not kept",
                self.failures_total - self.failures.len() as u64
            )?;
        }
        Ok(())
    }
}
