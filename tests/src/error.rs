//! Errors of an exploration (not failures of checked images: those are in the report).

use std::path::PathBuf;

use crate::explorer::BoxError;

/// Why an exploration could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The setup closure failed.
    #[error("setup failed: {0}")]
    Setup(#[source] BoxError),
    /// The workload closure failed.
    #[error("workload failed: {0}")]
    Workload(#[source] BoxError),
    /// Creating, opening or closing the workload's pool failed.
    #[error(transparent)]
    Pool(#[from] ptm::Error),
    /// Creating or opening the workload's region failed (raw workloads).
    #[error(transparent)]
    Region(#[from] ptm::pmem_core::Error),
    /// Writing or reading an image file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
