//! Guards the undo record of a kept empty slab's descriptors when it goes back to the free
//! chunks (free chunks made scarce): a crash inside that commit, after some descriptors were
//! stored free and before the commit record, rolls back every chunk of a multi-chunk slab (a
//! record as long as all its descriptors), so the heap is valid and the slab whole.

use ptm::internals::heap::{class_of, metadata_reserve, slab_geom, CHUNK};
use ptm::{PCell, Persistent};
use ptm_crashtest::{ensure, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    link: PCell<u64>,
}

/// A block whose slab spans four chunks.
const SIZE: u64 = 16384;

#[test]
fn a_multi_chunk_kept_slab_going_back_is_rolled_back_whole() {
    let span = slab_geom(class_of(SIZE).unwrap()).chunks;
    assert_eq!(span, 4);
    let report = Explorer::new()
        .seed(7)
        .pool_size(32 << 20)
        .run::<Root>(
            |pool| {
                // Free chunks plentiful: the slab made and emptied is kept for its class.
                pool.transaction(|tx, _| {
                    let o = tx.alloc_bytes(SIZE)?;
                    tx.free_bytes(o)
                })?;
                Ok(())
            },
            |pool| {
                // A run leaving 10 free chunks beyond the reserve (scarce), linked: the drain
                // of the link's snapshot returns the kept slab, stored free at the commit.
                let n = pool.geometry().heap_layout().n_chunks;
                let big = (n - span - metadata_reserve(n) - 10) * CHUNK;
                pool.transaction(|tx, r| {
                    let off = tx.alloc_bytes(big)?;
                    r.link.set(tx, off)
                })?;
                Ok(())
            },
            |pool| -> CheckResult {
                let st = pool.check_heap()?;
                let linked = pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.link.get(tx)))?;
                let slabs = if linked == 0 { span } else { 0 };
                ensure!(st.slab_chunks == slabs, "link {linked}: {st:?}");
                Ok(())
            },
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
