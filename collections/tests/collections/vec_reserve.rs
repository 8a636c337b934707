//! `PVec::reserve`: one growth (2 drains) makes room for `additional` more elements, after
//! which that many pushes never grow the buffer; nothing (0 drains) when they already fit.

use crate::common;

use common::*;
use ptm::Error;

#[test]
fn reserve_grows_once_then_pushes_fit() {
    let dir = shm_dir();
    let (mut pool, _) = create(&dir, "r.pool");
    pool.transaction(|tx, r| r.v.extend(tx, 0..10)).unwrap();
    let cap = |pool: &ptm::Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>((r.v.len(tx), r.v.capacity(tx))))
            .unwrap()
    };
    let (r, d) = drains(|| pool.transaction(|tx, r| r.v.reserve(tx, 1000)));
    r.unwrap();
    assert_eq!(d, 2, "reserve with growth");
    let (len, reserved) = cap(&pool);
    assert_eq!(len, 10, "reserve keeps the length");
    assert!(reserved >= 1010, "capacity {reserved}");
    let (r, d) = drains(|| pool.transaction(|tx, r| r.v.reserve(tx, 1000)));
    r.unwrap();
    assert_eq!(d, 0, "reserve that fits");
    for i in 10..1010u64 {
        pool.transaction(|tx, r| r.v.push(tx, i)).unwrap();
    }
    assert_eq!(cap(&pool), (1010, reserved), "no growth after reserve");
    let v = pool.transaction(|tx, r| r.v.to_vec(tx)).unwrap();
    assert_eq!(v, (0..1010).collect::<Vec<_>>());
    // Small reserves still double, like `Vec::reserve`.
    pool.transaction(|tx, r| r.v.reserve(tx, reserved - 1010 + 1))
        .unwrap();
    assert!(cap(&pool).1 >= reserved * 2);
    assert_no_leak(&mut pool);
    let r = pool.transaction(|tx, r| r.v.reserve(tx, u64::MAX));
    assert!(r.is_err(), "overflow: {r:?}");
}

#[test]
fn reserve_moves_owning_handles() {
    use ptm_collections::{PString, PVec};
    #[derive(ptm::Persistent)]
    #[persistent(crate = "ptm::pmem_core")]
    #[repr(C)]
    struct R {
        v: PVec<PString>,
    }
    let dir = shm_dir();
    let pool = ptm::Pool::<R>::create(dir.path().join("s.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| (0..5).try_for_each(|i| r.v.push_new(tx)?.push_str(tx, &i.to_string())))
        .unwrap();
    let (r, d) = drains(|| pool.transaction(|tx, r| r.v.reserve(tx, 100)));
    r.unwrap();
    assert_eq!(d, 2);
    let got = pool
        .transaction(|tx, r| {
            assert!(r.v.capacity(tx) >= 105);
            (0..r.v.len(tx))
                .map(|i| r.v.get_ref(tx, i)?.expect("i < len").as_string(tx))
                .collect::<Result<Vec<_>, Error>>()
        })
        .unwrap();
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
}
