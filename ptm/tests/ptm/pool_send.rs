//! `Pool<R>` is `Send + Sync`: an `Arc<Pool<_>>` goes to other threads and into statics.

use std::sync::{Arc, OnceLock};

use ptm::{PCell, PMutex, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Counter {
    n: PMutex<PCell<u64>>,
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn pool_is_send_and_sync() {
    assert_send_sync::<Pool<Counter>>();
    assert_send_sync::<Pool<()>>();
}

static POOL: OnceLock<Pool<Counter>> = OnceLock::new();

#[test]
fn an_arc_pool_goes_to_spawned_threads_and_a_static_pool_works() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(
        Pool::<Counter>::create(dir.path().join("send.pool"), 8 << 20, &PoolOptions::new()).unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    pool.transaction(|tx, r| r.n.lock(tx)?.update(tx, |v| v + 1).map(|_| ()))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = pool
        .transaction(|tx, r| Ok::<_, ptm::Error>(r.n.lock(tx)?.get(tx)))
        .unwrap();
    assert_eq!(n, 40);

    let other = dir.path().join("static.pool");
    POOL.set(Pool::<Counter>::create(&other, 8 << 20, &PoolOptions::new()).unwrap())
        .ok()
        .unwrap();
    std::thread::spawn(|| {
        POOL.get()
            .unwrap()
            .transaction(|tx, r| r.n.lock(tx)?.set(tx, 7))
            .unwrap();
    })
    .join()
    .unwrap();
    let v = POOL
        .get()
        .unwrap()
        .transaction(|tx, r| Ok::<_, ptm::Error>(r.n.lock(tx)?.get(tx)))
        .unwrap();
    assert_eq!(v, 7);
}
