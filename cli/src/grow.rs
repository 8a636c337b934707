//! `ptm grow`: grows a closed pool file in place (see `ptm::grow_pool`).

use std::path::Path;

use crate::size::format_size;
use crate::Failure;

/// Grows the pool at `path` to `size` bytes; returns the text to print.
pub(crate) fn run(path: &Path, size: u64, force_pmem: bool) -> Result<String, Failure> {
    let mut opts = ptm::PoolOptions::new();
    if force_pmem {
        opts = opts.force_pmem(true).engine(pmem_core::Engine::Pmem);
    }
    let report = ptm::grow_pool(path, size, &opts).map_err(|e| Failure(e.to_string()))?;
    Ok(format!(
        "grew {} from {} to {} (the new {} are free heap)\n",
        path.display(),
        format_size(report.old_size),
        format_size(report.new_size),
        format_size(report.new_size - report.old_size)
    ))
}
