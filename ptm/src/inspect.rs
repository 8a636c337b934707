//! Read-only inspection of a transactional pool for tools (`ptm info`, `ptm check`): nothing is
//! written, no recovery runs.

use pmem_core::Region;

use crate::engine::heap::{scan_stats, HeapStats};
use crate::engine::layout::{self, Geometry};
use crate::error::{Error, Result};

/// What a transactional pool holds, read without changing it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Summary {
    /// Lanes, root and heap geometry.
    pub geometry: Geometry,
    /// Open generation recorded by the last open.
    pub generation: u64,
    /// Whether the pool was closed cleanly.
    pub clean: bool,
    /// Lanes whose log holds a transaction newer than their completion mark (recovery at the
    /// next open decides whether it committed).
    pub lanes_with_log: usize,
    /// Heap usage from the chunk table and slab bitmaps.
    pub heap: HeapStats,
}

/// Reads the transaction layer of an open region.
///
/// # Errors
///
/// [`Error::UnsupportedFormat`] for a pool of an older superblock format,
/// [`Error::CorruptMetadata`] if the superblock is damaged or missing (a bare pmem-core pool),
/// [`Error::CorruptHeap`] if the chunk table is malformed, [`Error::Core`] for read errors.
pub fn inspect(region: &Region) -> Result<Summary> {
    let data = region.data_range();
    let mut sb = [0u8; 256];
    region.read_at(data.start, &mut sb)?;
    if let Some(found) = crate::engine::layout::old_format(&sb) {
        return Err(Error::UnsupportedFormat {
            path: region.path().to_owned(),
            found,
            supported: crate::engine::layout::SB_FORMAT,
        });
    }
    let geometry = Geometry::decode(&sb, data.start, data.end).map_err(|what| Error::CorruptMetadata {
        path: region.path().to_owned(),
        what,
    })?;
    let read = |off: u64| {
        let mut b = [0u8; 8];
        region
            .read_at(off, &mut b)
            .map(|()| u64::from_le_bytes(b))
            .unwrap_or(u64::MAX)
    };
    let key = crate::engine::layout::superblock_log_key(&sb);
    let mut lanes_with_log = 0;
    for lane in 0..geometry.lane_count as usize {
        // The same scan recovery runs, read-only: a verified record pointing outside the pool
        // is `CorruptLog`; a torn tail simply ends the log.
        let scan =
            crate::engine::log::scan_log(region, &geometry, key, lane, read(geometry.lane(lane)), None)?;
        if scan.seq.is_some() {
            lanes_with_log += 1;
        }
    }
    let heap = scan_stats(&geometry.heap_layout(), read)?;
    Ok(Summary {
        geometry,
        generation: layout::get(&sb, layout::SB_GENERATION as usize),
        clean: layout::get(&sb, layout::SB_CLEAN as usize) == 1,
        lanes_with_log,
        heap,
    })
}
