//! Crash images of `PQueue` transactions at chunk boundaries: taken after every operation and
//! after the commit of pushes that double the ring, add a chunk, double the directory (also
//! while it wraps around) and of pops that free a chunk, for 4 KiB pages and for owning
//! 4 KiB structs. Each image recovers to the model before or after, with exactly the
//! reachable blocks allocated.

use crate::common;
use crate::queue_common;

use common::*;
use queue_common::*;

#[test]
fn crash_images_at_chunk_boundaries() {
    use QOp::*;
    let dir = shm_dir();
    let steps = vec![
        vec![PPush(0, 4)],                       // first chunk, full ring
        vec![PPop(2), PPush(4, 2), PPush(6, 1)], // wrapped ring doubles
        vec![PPush(7, 9)],                       // doubles to a full chunk
        vec![PPush(16, 1), PPush(17, 1)],        // second chunk, directory of 2
        vec![PPush(18, 15), PPush(33, 1)],       // third chunk, directory of 4
        vec![PPop(15), PPop(1), PPop(1)],        // the front chunk freed
        vec![PPush(34, 31), PPush(65, 1)],       // directory wraps around
        vec![PPush(66, 15), PPush(81, 1)],       // directory doubles while wrapped
        vec![
            NPush("a".into()),
            NPush("b".into()),
            NPush("c".into()),
            NPush("d".into()),
        ],
        vec![NPush("e".into()), NPopFree(2), NPush("f".into())],
        vec![PPop(100), PPush(500, 1)], // emptied, then one more
        vec![Clear(1), Clear(2)],
    ];
    let (mut pool, model) = check_crash_steps::<QRoot>(&dir.path().join("c.pool"), &steps);
    assert_eq!(model, QModel::default());
    assert_reachable_only(&mut pool, "end");
}
