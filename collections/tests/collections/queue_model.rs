//! `PQueue` against `VecDeque`: random pushes, pops, reads, nested handles and clears on a queue
//! of `u64`s (chunks of 8192: wrap-arounds of the small ring, ring doublings, chunk boundaries)
//! and on queues of 4 KiB elements (chunks of 16: many chunk boundaries, directory growth and
//! wrap-around), across reopens, with no leak after each step.

use crate::common;
use crate::queue_common;

use common::*;
use proptest::prelude::*;
use queue_common::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn queues_equal_vecdeque_across_reopen(
        steps in prop::collection::vec((prop::collection::vec(q_op(), 1..5), any::<bool>()), 1..24)
    ) {
        let dir = shm_dir();
        check_steps::<QRoot>(&dir.path().join("q.pool"), &steps);
    }
}

/// A deterministic walk through every case: the small ring wrapping and doubling up to a full
/// chunk, chunk after chunk, the front chunk freed, the directory wrapping around and doubling
/// while wrapped, emptied (the last chunk kept), cleared and regrown; reopened and checked for
/// leaks after each step.
#[test]
fn pages_cross_every_boundary() {
    use QOp::*;
    let steps: Vec<(Vec<QOp>, bool)> = vec![
        (vec![PPush(0, 4), PPop(3), PPush(4, 3)], true), // ring of 4, wrapped
        (vec![PPush(7, 1)], false),                      // doubles to 8 while wrapped
        (vec![PPop(4), PPush(8, 6)], true),              // ring of 8 wrapped
        (vec![PPush(14, 3)], false),                     // doubles to 16: a full chunk
        (vec![PPush(17, 8)], true),                      // second chunk, directory of 2
        (vec![PPush(25, 16), PGet(20)], false),          // third chunk, directory of 4
        (vec![PPop(16)], true),                          // the front chunk freed
        (vec![PPush(41, 40), PGet(33)], true),           // directory wraps around
        (vec![PPush(81, 30)], false),                    // directory doubles while wrapped
        (vec![PPop(200), PPush(200, 1), PPop(1)], true), // emptied, one chunk kept
        (vec![Clear(1), PPush(300, 2)], true),           // cleared, regrown from 4
        (vec![NPush("a".into()); 20], false),
        (
            vec![NAppend(17, "b".into()), NPopFree(16), NPush("c".into())],
            true,
        ),
        (vec![NPopFree(3), Clear(2)], true),
    ];
    let dir = shm_dir();
    let (mut pool, model) = check_steps::<QRoot>(&dir.path().join("q.pool"), &steps);
    assert_eq!(model.pages, [300, 301]);
    assert_eq!(
        pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap().len(),
        2,
        "a directory and one chunk"
    );
    assert_reachable_only(&mut pool, "end");
}

/// Tens of thousands of `u64`s through a queue of chunks of 8192, with the front chasing the
/// back: many chunk allocations and frees, directory wrap-arounds; checked against the model.
#[test]
fn u64s_cross_many_chunks() {
    use QOp::*;
    let mut steps = Vec::new();
    for round in 0..6u64 {
        steps.push((
            vec![SPush(round * 10_000, 10_000), SGet(round * 977)],
            round % 2 == 0,
        ));
        steps.push((vec![SPop(7_000), SGet(round)], false));
    }
    steps.push((vec![SPop(100_000)], true));
    let dir = shm_dir();
    let (_pool, model) = check_steps::<QRoot>(&dir.path().join("q.pool"), &steps);
    assert!(model.small.is_empty());
}
