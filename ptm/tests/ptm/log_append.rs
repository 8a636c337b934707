//! Guards the undo-log writer for a range larger than a log extent: it is split across the
//! lane's area and heap extents (design §7), and every piece must record the bytes it covers,
//! so an abort, and a reopen after a crash, restore the whole range and nothing else. Also the
//! placement rules (design §8.1), read back from the lane's log in the pool file: a range is
//! split only when a fresh extent cannot hold it, never into a piece under 64 bytes at an area's
//! end, extents double, and a record that fits an area with its jump reserve left stays there.

use crate::common;

use ptm::{Error, PCell, PMutex, PPtr, Persistent, Pool, Transaction};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Under a lock, so that threads can share the pool.
    big: PMutex<PCell<u64>>,
}

/// Larger than the first log extent (256 KiB) and the lane's area: split into at least three
/// pieces (lane area, 256 KiB extent, 512 KiB extent).
const BIG: u64 = 600 << 10;

fn opts() -> ptm::PoolOptions {
    common::pmem().lane_size(8192)
}

/// Every 61st byte and the last of `[off, off + BIG)` hold `byte`.
fn check(tx: &Transaction<'_>, off: u64, byte: u8, what: &str) {
    for at in (0..BIG).step_by(61).chain([BIG - 1]) {
        let p: PPtr<u8> = tx.pptr(off + at);
        // SAFETY: a live block of BIG bytes allocated by a committed transaction; nothing else
        // runs.
        let got = *unsafe { tx.deref(p) }.unwrap();
        assert_eq!(got, byte, "{what}: byte {at} of {BIG}");
    }
}

/// A pool whose root links a block of BIG bytes, each 1.
fn pool_with_block(dir: &tempfile::TempDir) -> (Pool<Root>, u64) {
    let pool = Pool::<Root>::create(common::path(dir, "big.pool"), 16 << 20, &opts()).unwrap();
    let off = pool
        .transaction(|tx, r| {
            let off = tx.alloc_bytes(BIG)?;
            // SAFETY: the block was just allocated by this transaction, BIG bytes.
            unsafe { tx.fill_bytes(tx.pptr(off), 1, BIG)? };
            r.big.lock(tx)?.set(tx, off)?;
            Ok::<_, Error>(off)
        })
        .unwrap();
    (pool, off)
}

#[test]
fn a_range_split_across_log_areas_is_restored_whole_on_abort() {
    let dir = common::shm_dir();
    let (pool, off) = pool_with_block(&dir);
    let r: Result<(), Error> = pool.transaction(|tx, _| {
        // SAFETY: the root's block, BIG bytes, reached only by this transaction.
        unsafe { tx.fill_bytes(tx.pptr(off), 2, BIG)? };
        check(tx, off, 2, "inside the transaction");
        Err(Error::InvalidOptions("abort on purpose"))
    });
    assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
    pool.transaction(|tx, _| {
        check(tx, off, 1, "after the abort");
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn a_range_split_across_log_areas_is_restored_whole_after_a_crash() {
    let dir = common::shm_dir();
    let (pool, off) = pool_with_block(&dir);
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, _| {
        // SAFETY: the root's block, BIG bytes, reached only by this transaction.
        unsafe { tx.fill_bytes(tx.pptr(off), 3, BIG)? };
        common::crash_image(&common::path(&dir, "big.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("crash"))
    });
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    recovered
        .transaction(|tx, _| {
            check(tx, off, 1, "after the crash and a reopen");
            Ok::<_, Error>(())
        })
        .unwrap();
}

#[test]
fn aborting_a_split_range_restores_no_byte_past_it() {
    let dir = common::shm_dir();
    let (pool, off) = pool_with_block(&dir);
    // The next block, placed right after the big one's run (a run of its own).
    let next = pool.transaction(|tx, _| tx.alloc_bytes(64 << 10)).unwrap();
    assert!(
        next > off && next - off <= 1 << 20,
        "blocks at {off:#x} and {next:#x}"
    );
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let r: Result<(), Error> = pool.transaction(|tx, _| {
                // SAFETY: the root's block, BIG bytes, reached only by this transaction.
                unsafe { tx.fill_bytes(tx.pptr(off), 2, BIG)? };
                barrier.wait();
                // Meanwhile another thread commits a change to the next block.
                barrier.wait();
                Err(Error::InvalidOptions("abort on purpose"))
            });
            assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
        });
        s.spawn(|| {
            barrier.wait();
            pool.transaction(|tx, _| {
                // SAFETY: the next block, 64 KiB, reached only by this transaction.
                unsafe { tx.fill_bytes(tx.pptr(next), 7, 64 << 10) }
            })
            .unwrap();
            barrier.wait();
        });
    });
    // The abort restored the big block and left the other thread's committed change alone.
    pool.transaction(|tx, _| {
        check(tx, off, 1, "after the abort");
        for at in (0..64 << 10).step_by(61) {
            // SAFETY: the next block, allocated by a committed transaction; nothing else runs.
            let got = *unsafe { tx.deref(tx.pptr::<u8>(next + at)) }?;
            assert_eq!(got, 7, "byte {at} of the next block");
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A root of 64 one-line cells and 256 one-word cells, for filling a lane's log area record by
/// record.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Lines {
    lines: [PCell<[u64; 8]>; 64],
    words: [PCell<u64>; 256],
}

/// How many one-line cells and one-word cells of [`Lines`] fill a lane's log area exactly up to
/// the bytes it keeps for a jump record (each `set` of a new cell is one record of
/// `rec_total(64)` or `rec_total(8)` bytes, in the pool's alignment).
fn fill_plan(g: &ptm::internals::layout::Geometry) -> (usize, usize) {
    fill_plan_after(g, 0)
}

/// [`fill_plan`] for a lane whose transaction logged `used` bytes of records already.
fn fill_plan_after(g: &ptm::internals::layout::Geometry, used: u64) -> (usize, usize) {
    use ptm::internals::layout::REC_ALIGN;
    let (start, end) = g.lane_log(0);
    let room = end - start - REC_ALIGN - used;
    let (line_rec, word_rec) = (g.rec_total(64), g.rec_total(8));
    (0..=64u64)
        .find(|a| (room - a * line_rec).is_multiple_of(word_rec) && (room - a * line_rec) / word_rec < 256)
        .map(|a| (a as usize, ((room - a * line_rec) / word_rec) as usize))
        .expect("a fill of the lane's log area")
}

#[test]
fn a_lane_log_area_is_used_to_its_last_record_before_an_extent_is_taken() {
    let dir = common::shm_dir();
    let lane_size = 8192;
    let pool = Pool::<Lines>::create(
        common::path(&dir, "lines.pool"),
        16 << 20,
        &common::pmem().lane_size(lane_size),
    )
    .unwrap();
    let free = pool.heap_free();
    let (lines, words) = fill_plan(&pool.geometry());
    let used = pool
        .transaction(|tx, r| {
            for l in &r.lines[..lines] {
                l.set(tx, [5; 8])?;
            }
            for w in &r.words[..words] {
                w.set(tx, 6)?;
            }
            Ok::<_, Error>(free - pool.heap_free())
        })
        .unwrap();
    assert_eq!(used, 0, "heap bytes taken by log extents");
    // One record more does need an extent (the test can fail).
    let used = pool
        .transaction(|tx, r| {
            for l in &r.lines[..lines] {
                l.set(tx, [7; 8])?;
            }
            for w in &r.words[..words + 1] {
                w.set(tx, 8)?;
            }
            Ok::<_, Error>(free - pool.heap_free())
        })
        .unwrap();
    assert!(used > 0, "heap bytes taken by log extents");
}

#[test]
fn a_new_slab_made_when_the_lane_area_is_full_logs_nothing_outside_the_lane() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "edge.pool");
    let lane_size = 8192;
    let pool = Pool::<Lines>::create(&path, 16 << 20, &common::pmem().lane_size(lane_size)).unwrap();
    let g = pool.geometry();
    let (lines, words) = fill_plan(&g);
    let before = std::fs::read(&path).unwrap();
    let lane = pool
        .transaction(|tx, r| {
            // Fill the lane's area up to the REC_ALIGN bytes it keeps for a jump record (as in
            // the test above), then make a slab: its bitmap area's new-range record and its
            // descriptor's undo record must go to a log extent, not past the area's end.
            for l in &r.lines[..lines] {
                l.set(tx, [5; 8])?;
            }
            for w in &r.words[..words] {
                w.set(tx, 6)?;
            }
            tx.alloc_bytes(4096)?;
            Ok::<_, Error>(tx.lane() as u64)
        })
        .unwrap();
    let after = std::fs::read(&path).unwrap();
    for other in (0..u64::from(g.lane_count)).filter(|&l| l != lane) {
        let at = (g.lanes_offset + other * g.lane_size) as usize;
        let span = at..at + g.lane_size as usize;
        assert!(
            before[span.clone()] == after[span],
            "lane {other} changed by a transaction on lane {lane}"
        );
    }
}

/// New-range records written back to back at the end of a lane's log area (slab blocks from
/// one bitmap word already logged, written at once because the log is nearly full) each keep
/// room for the jump record that follows: none is written past the area, whose end is the
/// lane's commit record in format 5.
#[test]
fn new_range_records_at_a_full_lane_area_leave_room_for_the_jump() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "new-ranges.pool");
    let pool = Pool::<Lines>::create(&path, 16 << 20, &common::pmem().lane_size(8192).lanes(1)).unwrap();
    let g = pool.geometry();
    // A slab of 64-byte blocks in use, so the blocks below come from its first bitmap word.
    pool.transaction(|tx, _| tx.alloc_bytes(64).map(drop)).unwrap();
    let commit_record = |bytes: &[u8]| bytes[g.lane_commit(0) as usize..][..64].to_vec();
    let before = commit_record(&std::fs::read(&path).unwrap());
    let r = pool.transaction(|tx, r| {
        // One block: at the first drain, its new-range record and its bitmap word's undo record.
        tx.alloc_bytes(64)?;
        let (lines, words) = fill_plan_after(&g, g.rec_total(0) + g.rec_total(8));
        for l in &r.lines[..lines] {
            l.set(tx, [5; 8])?;
        }
        for w in &r.words[..words] {
            w.set(tx, 6)?;
        }
        // 64 bytes left: each of these blocks' new-range records (the word is logged) must go
        // to an extent rather than leave less than a jump record's room.
        for _ in 0..3 {
            tx.alloc_bytes(64)?;
        }
        // The pool is mapped from its tmpfs file: the file shows memory as it is now.
        assert_eq!(
            commit_record(&std::fs::read(&path).unwrap()),
            before,
            "a record was written over the lane's commit record"
        );
        Err::<(), _>(Error::Aborted)
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
}

/// The records of lane `lane`'s current transaction as the pool file at `path` shows them now
/// (a tmpfs file: memory as it is), in log order from the lane's first record, following jump
/// records into extents: `(kind, len, target)` each.
fn log_records(
    path: &std::path::Path,
    g: &ptm::internals::layout::Geometry,
    lane: usize,
) -> Vec<(u8, u64, u64)> {
    use ptm::internals::layout::{KIND_JUMP, KIND_NEW, KIND_UNDO, REC_HEADER};
    let bytes = std::fs::read(path).unwrap();
    let word = |at: u64| u64::from_le_bytes(bytes[at as usize..][..8].try_into().unwrap());
    let (mut pos, mut end) = g.lane_log(lane);
    let seq = word(pos);
    let mut out = Vec::new();
    while seq != 0 && pos + REC_HEADER <= end && word(pos) == seq {
        let kind_len = word(pos + 8);
        let (kind, len, target) = ((kind_len >> 56) as u8, kind_len & ((1 << 56) - 1), word(pos + 16));
        match kind {
            KIND_UNDO => pos += g.rec_total(len),
            KIND_NEW => pos += g.rec_total(0),
            KIND_JUMP => (pos, end) = (target, target + len),
            _ => break,
        }
        out.push((kind, len, target));
    }
    out
}

/// [`log_records`] with the targets of jump records (extent offsets, wherever the heap had
/// room) left out: `(kind, len, target)` with target 0 for a jump.
fn log_shape(
    path: &std::path::Path,
    g: &ptm::internals::layout::Geometry,
    lane: usize,
) -> Vec<(u8, u64, u64)> {
    use ptm::internals::layout::KIND_JUMP;
    log_records(path, g, lane)
        .into_iter()
        .map(|(k, l, t)| (k, l, if k == KIND_JUMP { 0 } else { t }))
        .collect()
}

/// The first log extent (design §8.1: 256 KiB, doubling up to 64 MiB).
const FIRST_EXTENT: u64 = 256 << 10;

/// Data bytes a log area of `room` bytes holds in one undo record: it keeps `REC_ALIGN` bytes
/// for a jump record, and the record has a header.
fn data_room(room: u64) -> u64 {
    use ptm::internals::layout::{REC_ALIGN, REC_HEADER};
    room - REC_ALIGN - REC_HEADER
}

/// A range larger than a fresh extent is split: as much as the lane's area holds, then the
/// first extent (256 KiB) filled, then the rest in the next one, twice as large. Each piece
/// records its own bytes, at most one extent of each size is taken, and the log holds 768 KiB
/// of heap while the transaction runs.
#[test]
fn a_range_larger_than_an_extent_fills_the_lane_area_then_doubling_extents() {
    use ptm::internals::layout::{KIND_JUMP, KIND_UNDO};
    let dir = common::shm_dir();
    let (pool, off) = pool_with_block(&dir);
    let path = common::path(&dir, "big.pool");
    let g = pool.geometry();
    let free = pool.heap_free();
    let r: Result<(), Error> = pool.transaction(|tx, _| {
        // SAFETY: the root's block, BIG bytes, reached only by this transaction.
        unsafe { tx.fill_bytes(tx.pptr(off), 2, BIG)? };
        let (start, end) = g.lane_log(tx.lane());
        let p0 = data_room(end - start);
        let p1 = data_room(FIRST_EXTENT);
        assert_eq!(
            log_shape(&path, &g, tx.lane()),
            [
                (KIND_UNDO, p0, off),
                (KIND_JUMP, FIRST_EXTENT, 0),
                (KIND_UNDO, p1, off + p0),
                (KIND_JUMP, 2 * FIRST_EXTENT, 0),
                (KIND_UNDO, BIG - p0 - p1, off + p0 + p1),
            ]
        );
        assert_eq!(
            free - pool.heap_free(),
            3 * FIRST_EXTENT,
            "heap bytes taken by log extents"
        );
        Err(Error::InvalidOptions("abort on purpose"))
    });
    assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
}

/// A range is split across log areas only when a fresh extent could not hold it whole (design
/// §8.1): one larger than the lane's area that an extent holds goes whole to the extent (also
/// when it fills the extent exactly); one a few bytes too long for it starts in the lane's
/// area, and the rest fills the first extent.
#[test]
fn a_range_is_split_across_log_areas_only_when_a_fresh_extent_cannot_hold_it() {
    use ptm::internals::layout::{KIND_JUMP, KIND_UNDO, REC_HEADER};
    let dir = common::shm_dir();
    let (pool, off) = pool_with_block(&dir);
    let path = common::path(&dir, "big.pool");
    let g = pool.geometry();
    let whole = data_room(FIRST_EXTENT);
    // Longer than a fresh extent holds, shorter than the extent itself less a header.
    let over = whole + REC_HEADER;
    for len in [16 << 10, whole, over] {
        let r: Result<(), Error> = pool.transaction(|tx, _| {
            // SAFETY: the root's block, BIG bytes, reached only by this transaction.
            unsafe { tx.fill_bytes(tx.pptr(off), 2, len)? };
            let (start, end) = g.lane_log(tx.lane());
            let p0 = data_room(end - start);
            let expected = if len <= whole {
                vec![(KIND_JUMP, FIRST_EXTENT, 0), (KIND_UNDO, len, off)]
            } else {
                vec![
                    (KIND_UNDO, p0, off),
                    (KIND_JUMP, FIRST_EXTENT, 0),
                    (KIND_UNDO, len - p0, off + p0),
                ]
            };
            assert_eq!(
                log_shape(&path, &g, tx.lane()),
                expected,
                "a range of {len} bytes"
            );
            Err(Error::InvalidOptions("abort on purpose"))
        });
        assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
    }
}

/// A root of [`Lines`] cells, and a pool of one lane (lane 0) with a block of BIG bytes
/// allocated (not linked: the test keeps its offset).
fn lines_pool_with_block(dir: &tempfile::TempDir, name: &str) -> (Pool<Lines>, u64) {
    let pool = Pool::<Lines>::create(
        common::path(dir, name),
        16 << 20,
        &common::pmem().lane_size(8192).lanes(1),
    )
    .unwrap();
    let off = pool.transaction(|tx, _| tx.alloc_bytes(BIG)).unwrap();
    (pool, off)
}

/// The log records after the fill's when one transaction fills lane 0's area up to its jump
/// reserve and `used` bytes more, then stores [`BIG`] bytes into a block too large for a fresh
/// extent (the transaction is then rolled back): the records, the block's offset and the data
/// room of the first extent.
fn split_range_records(name: &str, used: u64) -> (Vec<(u8, u64, u64)>, u64, u64) {
    let dir = common::shm_dir();
    let (pool, off) = lines_pool_with_block(&dir, name);
    let path = common::path(&dir, name);
    let g = pool.geometry();
    let (lines, words) = fill_plan_after(&g, used);
    let mut tail = Vec::new();
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        for l in &r.lines[..lines] {
            l.set(tx, [5; 8])?;
        }
        for w in &r.words[..words] {
            w.set(tx, 6)?;
        }
        // SAFETY: the block allocated above, BIG bytes, reached only by this transaction.
        unsafe { tx.fill_bytes(tx.pptr(off), 2, BIG)? };
        tail = log_shape(&path, &g, 0)
            .get(lines + words..)
            .expect("the fill's records")
            .to_vec();
        Err(Error::InvalidOptions("abort on purpose"))
    });
    assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
    (tail, off, data_room(FIRST_EXTENT))
}

/// With less than 64 bytes of data room left in the lane's area, a range too large for a
/// fresh extent starts in an extent: no piece of a few bytes is left at the area's end.
#[test]
fn a_split_range_leaves_no_piece_under_64_bytes_at_the_end_of_an_area() {
    use ptm::internals::layout::{KIND_JUMP, KIND_UNDO};
    // The area filled up to its jump reserve and 64 bytes more: 32 bytes of data room.
    let (records, off, p1) = split_range_records("tail.pool", 64);
    assert_eq!(
        records,
        [
            (KIND_JUMP, FIRST_EXTENT, 0),
            (KIND_UNDO, p1, off),
            (KIND_JUMP, 2 * FIRST_EXTENT, 0),
            (KIND_UNDO, BIG - p1, off + p1),
        ]
    );
}

/// A new-range record (a run's allocation) that fits the lane's area with exactly its jump
/// reserve left is written there: no extent is taken for it. With 8 bytes less room it goes to
/// an extent (the test can fail).
#[test]
fn a_new_range_record_that_exactly_fits_the_lane_area_takes_no_extent() {
    use ptm::internals::layout::{KIND_JUMP, KIND_NEW, KIND_UNDO};
    let dir = common::shm_dir();
    let path = common::path(&dir, "run.pool");
    let pool = Pool::<Lines>::create(&path, 16 << 20, &common::pmem().lane_size(8192).lanes(1)).unwrap();
    let g = pool.geometry();
    let chunk = ptm::internals::heap::CHUNK;
    // A run of two chunks: the undo record of its two descriptors, then its new-range record.
    let desc = g.rec_total(16);
    for (short, extent) in [(0, false), (8, true)] {
        let (lines, words) = fill_plan_after(&g, g.rec_total(0) + desc - short);
        let r: Result<(), Error> = pool.transaction(|tx, r| {
            for l in &r.lines[..lines] {
                l.set(tx, [5; 8])?;
            }
            for w in &r.words[..words] {
                w.set(tx, 6)?;
            }
            let run = tx.alloc_bytes(2 * chunk)?;
            let records = log_shape(&path, &g, 0);
            let tail: Vec<u8> = records.iter().skip(lines + words).map(|r| r.0).collect();
            let expected = if extent {
                vec![KIND_UNDO, KIND_JUMP, KIND_NEW]
            } else {
                vec![KIND_UNDO, KIND_NEW]
            };
            assert_eq!(tail, expected, "{short} bytes short of an exact fit");
            assert_eq!(records.last(), Some(&(KIND_NEW, 2 * chunk, run)));
            Err(Error::InvalidOptions("abort on purpose"))
        });
        assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
    }
}

/// A one-byte range keeps the area's jump reserve too (design §8.1): with 96 bytes left in the
/// lane's area (room for its 40-byte record, not for it and the 64 kept), its record goes to an
/// extent; with 104 left it stays in the lane's area (the test can fail).
#[test]
fn a_one_byte_record_keeps_the_jump_reserve_of_the_lane_area() {
    use ptm::internals::layout::{KIND_JUMP, KIND_UNDO, REC_ALIGN};
    let dir = common::shm_dir();
    let (pool, off) = lines_pool_with_block(&dir, "byte.pool");
    let path = common::path(&dir, "byte.pool");
    let g = pool.geometry();
    assert_eq!(g.rec_total(1), 40);
    for (left, extent) in [(96, true), (104, false)] {
        let (lines, words) = fill_plan_after(&g, left - REC_ALIGN);
        let r: Result<(), Error> = pool.transaction(|tx, r| {
            for l in &r.lines[..lines] {
                l.set(tx, [5; 8])?;
            }
            for w in &r.words[..words] {
                w.set(tx, 6)?;
            }
            // SAFETY: the block allocated above, BIG bytes, reached only by this transaction.
            unsafe { tx.fill_bytes(tx.pptr(off), 3, 1)? };
            let records = log_shape(&path, &g, 0);
            let expected = if extent {
                vec![(KIND_JUMP, FIRST_EXTENT, 0), (KIND_UNDO, 1, off)]
            } else {
                vec![(KIND_UNDO, 1, off)]
            };
            assert_eq!(
                records.get(lines + words..),
                Some(&expected[..]),
                "{left} bytes left"
            );
            Err(Error::InvalidOptions("abort on purpose"))
        });
        assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
    }
}

/// With exactly 64 bytes of data room left in the lane's area, a range too large for a fresh
/// extent writes its first piece there, 64 bytes (the smallest piece an area's end may hold),
/// and continues in the extents.
#[test]
fn a_split_range_writes_a_64_byte_first_piece_at_the_end_of_an_area() {
    use ptm::internals::layout::{KIND_JUMP, KIND_UNDO};
    // The area filled up to its jump reserve, a record header and 64 bytes.
    let (records, off, p1) = split_range_records("tail64.pool", 96);
    assert_eq!(
        records,
        [
            (KIND_UNDO, 64, off),
            (KIND_JUMP, FIRST_EXTENT, 0),
            (KIND_UNDO, p1, off + 64),
            (KIND_JUMP, 2 * FIRST_EXTENT, 0),
            (KIND_UNDO, BIG - 64 - p1, off + 64 + p1),
        ]
    );
}
