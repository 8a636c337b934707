//! Guards pool growth (issue 14): a closed pool grows in place (data and offsets unchanged, the
//! new space is free heap), on every engine; a crash at any step of the grow leaves the old or
//! the new size; sizes the pool cannot take are named errors and leave it unchanged.

use crate::common;

use std::os::unix::fs::FileExt;

use ptm::internals::heap::CHUNK;
use ptm::{Engine, Error, PCell, PPtr, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    blocks: [PCell<PPtr<[u64; 512]>>; 8],
}

/// Fills slot `i` with a 4 KiB block holding `i` everywhere.
fn put(pool: &Pool<Root>, i: usize) -> u64 {
    pool.transaction(|tx, r| {
        let p = tx.alloc([i as u64; 512])?;
        r.blocks[i].set(tx, p)?;
        Ok::<_, Error>(p.offset())
    })
    .unwrap()
}

fn assert_blocks(pool: &Pool<Root>, offsets: &[u64]) {
    pool.transaction(|tx, r| {
        for (i, &off) in offsets.iter().enumerate() {
            let p = r.blocks[i].get(tx);
            assert_eq!(p.offset(), off, "slot {i} moved");
            // SAFETY: the block is live (linked from the root) and only this thread uses it.
            assert!(unsafe { tx.deref(p)? }.iter().all(|&v| v == i as u64));
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

fn grow_and_check(opts: PoolOptions) {
    let dir = common::shm_dir();
    let path = common::path(&dir, "g.pool");
    let mut pool = Pool::<Root>::create(&path, 8 << 20, &opts).unwrap();
    let before = pool.heap_stats().unwrap().chunks;
    let offsets: Vec<u64> = (0..4).map(|i| put(&pool, i)).collect();
    pool.close().unwrap();
    let report = ptm::grow_pool(&path, 64 << 20, &opts).unwrap();
    assert_eq!((report.old_size, report.new_size), (8 << 20, 64 << 20));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 20);
    let mut pool = Pool::<Root>::open(&path, &opts).unwrap();
    assert_eq!(pool.region().len(), 64 << 20);
    assert_blocks(&pool, &offsets);
    let st = pool.check_heap().unwrap();
    assert!(st.chunks >= before + 56 * 4 - 1, "{before} -> {}", st.chunks);
    // The new space is usable, as one run with the free chunks before it.
    let big = pool.transaction(|tx, _| tx.alloc_bytes(48 << 20)).unwrap();
    assert!(big + (48 << 20) <= pool.region().data_range().end);
    assert_blocks(&pool, &offsets);
    pool.check_heap().unwrap();
}

#[test]
fn a_closed_pool_grows_in_place() {
    grow_and_check(common::pmem());
}

#[test]
fn a_journaled_pool_grows_in_place() {
    grow_and_check(PoolOptions::new().layout("test").engine(Engine::Journaled));
}

#[test]
fn an_msync_pool_grows_in_place() {
    grow_and_check(PoolOptions::new().layout("test").engine(Engine::Msync));
}

/// `primary` (a header's bytes) marked as growing to `target`, checksum updated.
fn marked(primary: &[u8], target: u64) -> Vec<u8> {
    let mut b = primary.to_vec();
    let flags =
        u64::from_le_bytes(b[64..72].try_into().unwrap()) | ptm::pmem_core::internals::header::FLAG_GROWING;
    b[64..72].copy_from_slice(&flags.to_le_bytes());
    b[176..184].copy_from_slice(&target.to_le_bytes()); // `grow_target` (design §2.1)
    let h: ptm::pmem_core::PoolHeader = ptm::pmem_core::read_from_bytes(&b).unwrap();
    b[4092..].copy_from_slice(&h.compute_checksum().to_le_bytes());
    b
}

fn write_at(path: &std::path::Path, off: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, off)
        .unwrap();
}

/// The states a crash can leave, made by hand: the primary marked (with the file as it was, or
/// extended): undone at open; the new backup header written too: finished at open; all done.
#[test]
fn a_crash_mid_grow_leaves_the_old_or_the_new_size() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "g.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    let offsets: Vec<u64> = (0..3).map(|i| put(&pool, i)).collect();
    pool.close().unwrap();
    let mut old_primary = vec![0u8; 4096];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut old_primary, 0)
        .unwrap();
    let mark = marked(&old_primary, 32 << 20);

    let open_at = |p: &std::path::Path, size: u64| {
        let mut pool = Pool::<Root>::open(p, &common::pmem()).unwrap();
        assert_eq!(pool.region().len(), size, "{}", p.display());
        assert_eq!(
            pool.region().header().flags & ptm::pmem_core::internals::header::FLAG_GROWING,
            0
        );
        assert_blocks(&pool, &offsets);
        pool.check_heap().unwrap();
        drop(pool);
        assert_eq!(std::fs::metadata(p).unwrap().len(), size);
    };
    // After step 1: marked only.
    let only_marked = common::path(&dir, "marked.pool");
    std::fs::copy(&path, &only_marked).unwrap();
    write_at(&only_marked, 0, &mark);
    open_at(&only_marked, 8 << 20);
    // After step 2: marked and extended.
    let extended = common::path(&dir, "extended.pool");
    std::fs::copy(&path, &extended).unwrap();
    write_at(&extended, 0, &mark);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&extended)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    open_at(&extended, 8 << 20);
    // Without the mark, a longer file is a size mismatch (not a grow).
    let longer = common::path(&dir, "longer.pool");
    std::fs::copy(&path, &longer).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&longer)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    assert!(matches!(
        Pool::<Root>::open(&longer, &common::pmem()),
        Err(Error::Core(ptm::pmem_core::Error::SizeMismatch { .. }))
    ));
    // After step 3: the new backup at the end, the marked old primary.
    ptm::grow_pool(&path, 32 << 20, &common::pmem()).unwrap();
    let half = common::path(&dir, "half.pool");
    std::fs::copy(&path, &half).unwrap();
    write_at(&half, 0, &mark);
    open_at(&half, 32 << 20);
    open_at(&path, 32 << 20);
}

#[test]
fn impossible_grows_are_named_errors_and_change_nothing() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "g.pool");
    let opts = common::pmem().max_size(64 << 20);
    Pool::<Root>::create(&path, 8 << 20, &opts)
        .unwrap()
        .close()
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let cannot =
        |r: Result<_, Error>| matches!(r, Err(Error::Core(ptm::pmem_core::Error::CannotGrow { .. })));
    assert!(cannot(ptm::grow_pool(&path, 8 << 20, &opts)));
    assert!(cannot(ptm::grow_pool(&path, 4 << 20, &opts)));
    // Beyond what the chunk table was made for.
    assert!(cannot(ptm::grow_pool(&path, 1 << 30, &opts)));
    assert!(matches!(
        ptm::grow_pool(&path, (16 << 20) + 100, &opts),
        Err(Error::Core(ptm::pmem_core::Error::InvalidSize { .. }))
    ));
    // An open pool is locked.
    let pool = Pool::<Root>::open(&path, &opts).unwrap();
    assert!(matches!(
        ptm::pmem_core::grow_file(&path, 16 << 20),
        Err(ptm::pmem_core::Error::PoolLocked { .. })
    ));
    drop(pool);
    assert_eq!(std::fs::read(&path).unwrap().len(), before.len());
    // Up to the table's room works.
    let max = ptm::max_pool_size(&Pool::<Root>::open(&path, &opts).unwrap().geometry());
    assert!(max >= 64 << 20);
    ptm::grow_pool(&path, 64 << 20, &opts).unwrap();
    let mut pool = Pool::<Root>::open(&path, &opts).unwrap();
    let st = pool.check_heap().unwrap();
    assert!(st.chunks * CHUNK > 56 << 20);
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Blob {
    next: PCell<PPtr<Blob>>,
    n: PCell<u64>,
    fill: [u64; 8190],
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Chain {
    head: PCell<PPtr<Blob>>,
    count: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct ChainRoot {
    chain: ptm::PMutex<Chain>,
}

/// Pushes blob `n` (64 KiB) onto the chain; `OutOfSpace` if it does not fit (yet).
fn push_blob(pool: &Pool<ChainRoot>, n: u64) -> Result<(), Error> {
    pool.transaction(|tx, r| {
        let chain = r.chain.lock(tx)?;
        let p = tx.alloc_zeroed::<Blob>()?;
        // SAFETY: a fresh block of this transaction.
        let b = unsafe { tx.deref(p)? };
        b.n.set(tx, n)?;
        b.next.set(tx, chain.head.get(tx))?;
        chain.head.set(tx, p)?;
        chain.count.set(tx, n + 1)
    })
}

/// Blob numbers along the chain, newest first.
fn chain(pool: &Pool<ChainRoot>) -> Vec<u64> {
    pool.transaction(|tx, r| {
        let chain = r.chain.lock(tx)?;
        let mut out = Vec::new();
        let mut p = chain.head.get(tx);
        while !p.is_null() {
            // SAFETY: chain blobs are live; the chain's lock is held.
            let b = unsafe { tx.deref(p)? };
            out.push(b.n.get(tx));
            p = b.next.get(tx);
        }
        Ok::<_, Error>(out)
    })
    .unwrap()
}

/// One thread keeps inserting 64 KiB blobs while another grows the pool 8 MiB -> 1 GiB in
/// steps, and a third holds a reference into the pool across the first grow: the base address
/// never moves, the reference reads the same value after the grow, the inserter ends up with
/// far more than the first 8 MiB could hold, and the chain and heap check out, also after a
/// reopen. (No timing: the inserter retries `OutOfSpace` until the grower is done.)
#[test]
fn one_thread_inserts_while_another_grows_the_pool_to_1_gib() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Barrier;
    const BLOBS: u64 = 2000; // 125 MiB of blobs
    let dir = common::shm_dir();
    let path = common::path(&dir, "load.pool");
    let pool = Pool::<ChainRoot>::create(&path, 8 << 20, &common::pmem()).unwrap();
    push_blob(&pool, 0).unwrap();
    let p0 = pool
        .transaction(|tx, r| Ok::<_, Error>(r.chain.lock(tx)?.head.get(tx)))
        .unwrap();
    let base = pool.region().base().as_ptr() as usize;
    let grown = AtomicBool::new(false);
    let first_grow = Barrier::new(2);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut n = 1;
            while n < BLOBS {
                match push_blob(&pool, n) {
                    Ok(()) => n += 1,
                    Err(Error::OutOfSpace { .. }) if !grown.load(Ordering::Acquire) => {
                        std::thread::yield_now()
                    }
                    Err(e) => panic!("blob {n}: {e}"),
                }
            }
        });
        sc.spawn(|| {
            pool.transaction(|tx, _| {
                // SAFETY: blob 0 stays live, and nobody writes it after its insertion.
                let first = unsafe { tx.deref(p0)? };
                let before = first as *const Blob;
                first_grow.wait(); // the pool grows now
                first_grow.wait(); // it has grown
                assert_eq!(first as *const Blob, before);
                assert_eq!(first.n.get(tx), 0);
                Ok::<_, Error>(())
            })
            .unwrap();
        });
        sc.spawn(|| {
            let mut size = 8u64 << 20;
            first_grow.wait();
            while size < 1 << 30 {
                size *= 2;
                pool.grow(size).unwrap();
                assert_eq!(pool.region().base().as_ptr() as usize, base, "the pool moved");
                if size == 16 << 20 {
                    first_grow.wait();
                }
            }
            grown.store(true, Ordering::Release);
        });
    });
    assert_eq!(pool.region().len(), 1 << 30);
    let got = chain(&pool);
    assert_eq!(got, (0..BLOBS).rev().collect::<Vec<_>>());
    drop(pool);
    let mut pool = Pool::<ChainRoot>::open(&path, &common::pmem()).unwrap();
    assert_eq!(pool.region().len(), 1 << 30);
    assert_eq!(chain(&pool).len() as u64, BLOBS);
    let st = pool.check_heap().unwrap();
    assert!(st.used_bytes >= BLOBS * 65536, "{st:?}");
}

/// Growing while open on the disk engines, then a reopen: the new space holds data.
#[test]
fn the_disk_engines_grow_while_open() {
    for engine in [Engine::Journaled, Engine::Msync] {
        let dir = common::shm_dir();
        let path = common::path(&dir, "disk.pool");
        let opts = PoolOptions::new().layout("test").engine(engine);
        let pool = Pool::<ChainRoot>::create(&path, 8 << 20, &opts).unwrap();
        pool.grow(32 << 20).unwrap();
        for n in 0..200 {
            push_blob(&pool, n).unwrap_or_else(|e| panic!("{engine:?} blob {n}: {e}"));
        }
        drop(pool);
        let mut pool = Pool::<ChainRoot>::open(&path, &opts).unwrap();
        assert_eq!(pool.region().len(), 32 << 20, "{engine:?}");
        assert_eq!(chain(&pool), (0..200).rev().collect::<Vec<_>>(), "{engine:?}");
        pool.check_heap().unwrap();
    }
}

/// Growing while open is refused beyond the address space reserved at open, and beyond the
/// chunk table, with the pool unchanged and usable.
#[test]
fn growing_while_open_has_limits() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "lim.pool");
    let opts = common::pmem().max_size(32 << 20);
    let pool = Pool::<ChainRoot>::create(&path, 8 << 20, &opts).unwrap();
    let cannot =
        |r: Result<(), Error>| matches!(r, Err(Error::Core(ptm::pmem_core::Error::CannotGrow { .. })));
    assert!(cannot(pool.grow(8 << 20)));
    assert!(cannot(pool.grow(1 << 30)));
    assert!(pool.region().grow_room() >= 32 << 20);
    pool.grow(32 << 20).unwrap();
    assert!(cannot(pool.grow(64 << 20)));
    assert_eq!(pool.region().len(), 32 << 20);
    push_blob(&pool, 0).unwrap();
}

/// `PoolOptions::auto_grow` grows the pool when the heap is full instead of failing, up to its
/// maximum; then `OutOfSpace`.
#[test]
fn auto_grow_grows_on_out_of_space_up_to_its_maximum() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "auto.pool");
    let opts = common::pmem().auto_grow(48 << 20);
    let pool = Pool::<ChainRoot>::create(&path, 8 << 20, &opts).unwrap();
    let mut n = 0;
    let err = loop {
        match push_blob(&pool, n) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::OutOfSpace { .. }), "{err}");
    assert_eq!(pool.region().len(), 48 << 20);
    assert!(n > 500, "only {n} blobs of 64 KiB fit");
    drop(pool);
    let pool = Pool::<ChainRoot>::open(&path, &common::pmem()).unwrap();
    assert_eq!(chain(&pool).len() as u64, n);
}
