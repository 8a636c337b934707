//! A check shared by the model-based allocator tests (`heap_model`, `large_frees`,
//! `failed_durability`): the heap's allocated blocks are exactly the ones the root links.

use ptm::{Persistent, Pool};

/// No two allocated blocks overlap, and the allocated blocks are exactly `links` (no leak, and
/// nothing linked that is free).
pub(crate) fn assert_allocated_are_exactly_the_linked<R: Persistent>(
    pool: &mut Pool<R>,
    mut links: Vec<u64>,
) {
    let mut blocks = pool.allocated_blocks().unwrap();
    blocks.sort_unstable();
    for w in blocks.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {w:x?}");
    }
    let mut allocated: Vec<u64> = blocks.iter().map(|b| b.0).collect();
    allocated.sort_unstable();
    links.sort_unstable();
    assert_eq!(
        allocated, links,
        "allocated blocks differ from the linked ones (leak, or a linked block free)"
    );
}
