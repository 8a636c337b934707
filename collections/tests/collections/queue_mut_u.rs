//! `PQueue` cases the mutation pass over `queue.rs`'s reads, verifier, iteration, insertions,
//! ring growth, reservation and chunk sizing (issue 19, mutU pass) found untested: each test
//! pins a behaviour some surviving mutant changed (docs/mutation-notes.md, "`queue.rs` part 2").

use crate::common;
use crate::queue_common;

use common::{drains, opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::PQueue;
use queue_common::{page, QRoot};

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

/// Elements over 4 KiB still get full chunks of 16 (`chunk_elems`' floor, `MIN_CHUNK`): 17
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

/// An iteration that meets a damaged chunk (a null pointer in the directory) stops there and
/// keeps the error for `error()`, from either end; the transaction is doomed. An iteration of
/// a sound queue has no error.
#[test]
fn an_iteration_error_is_kept_for_error() {
    let dir = shm_dir();
    let path = dir.path().join("e.pool");
    let pool = Pool::<QRoot>::create(&path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| (0..40).try_for_each(|i| r.pages.push(tx, page(i))))
        .unwrap();
    let blocks = pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap();
    assert_eq!(blocks.len(), 4, "a directory and 3 chunks of 16");
    pool.transaction(|tx, r| {
        let mut it = r.pages.iter(tx);
        assert!(it.by_ref().map(|p| p[0]).eq(0..40));
        assert!(it.error().is_none(), "no error on a sound queue");
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.close().unwrap();
    // Null the second chunk's directory slot (positions 16..32).
    let mut img = std::fs::read(&path).unwrap();
    let at = blocks[0] as usize + 8;
    img[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    std::fs::write(&path, img).unwrap();
    let pool = Pool::<QRoot>::open(&path, &opts()).unwrap();
    let mut seen = (Vec::new(), Vec::new(), false);
    let r = pool.transaction(|tx, r| {
        let mut it = r.pages.iter(tx);
        seen.0 = it.by_ref().map(|p| p[0]).collect();
        seen.2 = it.error().is_some();
        let mut back = r.pages.range(tx, 20..40);
        seen.1 = back.by_ref().rev().map(|p| p[0]).collect();
        seen.2 &= back.error().is_some();
        Ok::<_, Error>(())
    });
    assert!(r.is_err(), "the transaction is doomed: {r:?}");
    assert_eq!(
        seen.0,
        (0..16).collect::<Vec<u64>>(),
        "forwards up to the damaged chunk"
    );
    assert_eq!(
        seen.1,
        (32..40).rev().collect::<Vec<u64>>(),
        "backwards down to it"
    );
    assert!(seen.2, "both iterations keep their error");
}

/// `PQueue`'s and `QueueIter`'s `Debug`: the handle prints no contents, the iterator its
/// positions.
#[test]
fn debug_forms() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("d.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.small.extend(tx, 0..5)?;
        assert_eq!(format!("{:?}", r.small), "PQueue { .. }");
        let mut it = r.small.range(tx, 1..4);
        it.next();
        assert_eq!(format!("{it:?}"), "QueueIter { pos: 2, end: 4 }");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `is_empty` follows the length: true without a chunk and once emptied, false in between.
#[test]
fn is_empty_follows_the_length() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("i.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        assert!(r.small.is_empty(tx), "a new queue");
        r.small.push(tx, 7)?;
        assert!(!r.small.is_empty(tx), "one element");
        r.small.pop(tx)?;
        assert!(r.small.is_empty(tx), "emptied (its chunk kept)");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `check` accepts a sound queue and names a non-null directory slot past the chunks in use
/// (here the spare fourth slot of a directory of 4 holding 3 chunks, pointed at the first).
#[test]
fn check_rejects_a_spare_directory_slot_in_use() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let pool = Pool::<QRoot>::create(&path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| (0..40).try_for_each(|i| r.pages.push(tx, page(i))))
        .unwrap();
    let blocks = pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap();
    assert_eq!(blocks.len(), 4, "a directory and 3 chunks of 16");
    pool.transaction(|tx, r| r.pages.check(tx)).unwrap();
    pool.close().unwrap();
    let mut img = std::fs::read(&path).unwrap();
    let (slot0, slot3) = (blocks[0] as usize, blocks[0] as usize + 24);
    let first: [u8; 8] = img[slot0..slot0 + 8].try_into().unwrap();
    assert_eq!(img[slot3..slot3 + 8], [0; 8], "the spare slot is null");
    img[slot3..slot3 + 8].copy_from_slice(&first);
    std::fs::write(&path, img).unwrap();
    let pool = Pool::<QRoot>::open(&path, &opts()).unwrap();
    let r = pool.transaction(|tx, r| r.pages.check(tx));
    let e = r.expect_err("check of a directory with a spare slot in use");
    assert!(e.to_string().contains("directory slot 3"), "{e}");
    assert_eq!(
        pool.transaction(|tx, r| r.pages.to_vec(tx)).unwrap().len(),
        40,
        "reads still work"
    );
}

/// A ring doubled by a push at the front puts its elements in the back half of the new chunk
/// (`grow_ring`), so the front pushes that follow fill the front half: 16 pages pushed at the
/// front (rings of 4 and 8, then a full chunk of 16 at the 9th) fit one chunk. Elements put
/// anywhere lower would need a second chunk before the front one.
#[test]
fn front_pushes_fill_the_chunk_a_ring_doubled_into() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("f.pool"), POOL_SIZE, &opts()).unwrap();
    for x in 0..16 {
        pool.transaction(|tx, r| r.pages.push_front(tx, page(x))).unwrap();
    }
    let (cap, blocks, firsts) = pool
        .transaction(|tx, r| {
            let firsts: Vec<u64> = r.pages.iter(tx).map(|p| p[0]).collect();
            Ok::<_, Error>((r.pages.capacity(tx), r.pages.block_offsets(tx)?.len(), firsts))
        })
        .unwrap();
    assert_eq!(firsts, (0..16).rev().collect::<Vec<u64>>());
    assert_eq!((cap, blocks), (16, 2), "one full chunk (and the directory)");
}

/// A ring of handles grown by `reserve` while empty logs nothing of its old chunk (no element
/// to move or zero, `move_ring`): the transaction flushes the new chunk of 8 × 4 KiB (512
/// lines, zeroed fresh memory) and a transaction's fixed cost, not also an undo copy of the old
/// chunk's 4 × 4 KiB (256 lines more).
#[test]
fn an_empty_ring_of_handles_grows_without_logging_its_old_chunk() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("g.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for _ in 0..3 {
            r.named.push_new(tx)?;
        }
        (0..3).try_for_each(|_| r.named.pop_free(tx).map(drop))
    })
    .unwrap();
    let cap = |pool: &Pool<QRoot>| {
        pool.transaction(|tx, r| Ok::<_, Error>(r.named.capacity(tx)))
            .unwrap()
    };
    assert_eq!(cap(&pool), 4, "an empty ring of 4 kept");
    let before = ptm::thread_stats();
    pool.transaction(|tx, r| r.named.reserve(tx, 8)).unwrap();
    let lines = ptm::thread_stats().since(&before).lines_flushed;
    assert_eq!(cap(&pool), 8, "grown to 8");
    assert!(lines <= 512 + 64, "{lines} lines flushed");
}

/// `insert` shifts the shorter side, so it takes the free slot at that end instead of adding
/// a chunk at the other (`insert_bytes`). (On a tie either side is a correct choice of equal
/// cost; nothing here depends on which.) Pages (chunks of 16):
/// each case ends with the queue's chunk count and contents checked against the model.
#[test]
fn insert_shifts_the_shorter_side_into_its_free_slot() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("s.pool"), POOL_SIZE, &opts()).unwrap();
    let chunks = |pool: &Pool<QRoot>| pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap().len() - 1;
    let check = |pool: &Pool<QRoot>, want: &[u64], chunks_want: usize, what: &str| {
        let got: Vec<u64> = pool
            .transaction(|tx, r| Ok::<_, Error>(r.pages.iter(tx).map(|p| p[0]).collect()))
            .unwrap();
        assert_eq!(got, want, "{what}: contents");
        assert_eq!(chunks(pool), chunks_want, "{what}: chunks");
    };
    let reset = |pool: &Pool<QRoot>, n: u64| {
        pool.transaction(|tx, r| {
            r.pages.clear(tx)?;
            (0..n).try_for_each(|i| r.pages.push(tx, page(i)))
        })
        .unwrap();
    };
    // 20 pages from slot 0 of 2 chunks: 12 free slots at the back, none at the front.
    reset(&pool, 20);
    pool.transaction(|tx, r| r.pages.insert(tx, 19, page(100)))
        .unwrap();
    let mut want: Vec<u64> = (0..20).collect();
    want.insert(19, 100);
    check(&pool, &want, 2, "near the back: the back shifts");
    // 31 pages from slot 1 of 2 full chunks: one free slot at the front, none at the back.
    reset(&pool, 32);
    pool.transaction(|tx, r| r.pages.pop(tx).map(drop)).unwrap();
    pool.transaction(|tx, r| r.pages.insert(tx, 1, page(102)))
        .unwrap();
    let mut want: Vec<u64> = (1..32).collect();
    want.insert(1, 102);
    check(&pool, &want, 2, "near the front: the front shifts");
}

/// `reserve` that needs nothing new changes nothing (0 drains, the same blocks): `reserve(0)`
/// of a queue without a chunk allocates none, and a reservation a ring already holds exactly
/// (5 + 3 in a ring of 8) does not move it to a new chunk of the same size.
#[test]
fn reserve_of_nothing_new_changes_nothing() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("r.pool"), POOL_SIZE, &opts()).unwrap();
    let state = |pool: &Pool<QRoot>| {
        pool.transaction(|tx, r| Ok::<_, Error>((r.small.capacity(tx), r.small.block_offsets(tx)?)))
            .unwrap()
    };
    let ((), n) = drains(|| pool.transaction(|tx, r| r.small.reserve(tx, 0)).unwrap());
    assert_eq!(
        (n, state(&pool)),
        (0, (0, vec![])),
        "reserve(0) of a queue without a chunk"
    );
    pool.transaction(|tx, r| r.small.extend(tx, 0..5)).unwrap();
    let before = state(&pool);
    assert_eq!(before.0, 8, "a ring of 8");
    let ((), n) = drains(|| pool.transaction(|tx, r| r.small.reserve(tx, 3)).unwrap());
    assert_eq!((n, state(&pool)), (0, before), "reserve(3) of 5 in a ring of 8");
    let ((), n) = drains(|| pool.transaction(|tx, r| r.small.reserve(tx, 4)).unwrap());
    assert_eq!(
        (n, state(&pool).0),
        (2, 16),
        "reserve(4) of 5 in a ring of 8 grows it"
    );
}

/// `update` changes the element at a position in place and returns it; past the end it
/// returns `None` without calling the closure.
#[test]
fn update_changes_one_element_in_place() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("u.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| r.small.extend(tx, 0..10)).unwrap();
    let (new, past, all) = pool
        .transaction(|tx, r| {
            let new = r.small.update(tx, 7, |x| *x += 100)?;
            let past = r.small.update(tx, 10, |_| panic!("called past the end"))?;
            Ok::<_, Error>((new, past, r.small.to_vec(tx)?))
        })
        .unwrap();
    assert_eq!((new, past), (Some(107), None));
    let mut want: Vec<u64> = (0..10).collect();
    want[7] = 107;
    assert_eq!(all, want);
}
