//! `PQueue` cases the mutation pass over `queue.rs`'s reads, iteration, insertions, rotations,
//! reservation and chunk sizing (issue 19, mutU pass) found untested: each test pins a
//! behaviour some surviving mutant changed (docs/mutation-notes.md, "`queue.rs` part 2").

use crate::common;

use common::{opts, shm_dir};
use ptm::{Error, Persistent, Pool};
use ptm_collections::PQueue;

/// A 5 KiB element: 12 fit 64 KiB, so a full chunk holds the minimum of 16 (not 8).
type Big = [u64; 640];

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct BigRoot {
    q: PQueue<Big>,
}

fn big(x: u64) -> Big {
    let mut b = [x; 640];
    b[639] = !x;
    b
}

/// Elements over 4 KiB still get full chunks of 16 (`chunk_elems`' floor, design §13): 17
/// pushes fill one chunk of 16 and start a second, so the capacity is 32 and the queue owns a
/// directory and 2 chunks (chunks of 8 would give 24 and 3 chunks).
#[test]
fn elements_over_4_kib_get_chunks_of_16() {
    let dir = shm_dir();
    let pool = Pool::<BigRoot>::create(dir.path().join("b.pool"), 16 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| (0..17).try_for_each(|i| r.q.push(tx, big(i))))
        .unwrap();
    let (cap, blocks, all) = pool
        .transaction(|tx, r| {
            Ok::<_, Error>((r.q.capacity(tx), r.q.block_offsets(tx)?.len(), r.q.to_vec(tx)?))
        })
        .unwrap();
    assert_eq!((cap, blocks), (32, 3), "capacity and blocks (directory + chunks)");
    assert!(all.iter().zip(0..).all(|(b, i)| *b == big(i)), "contents");
}
