//! Crash images: the pool file copied in the middle of a transaction (on tmpfs the copy holds
//! every store made so far, as if power failed there) reopens with the collections equal to the
//! model before the transaction; copied after the commit, equal to the model after. Either way,
//! no block leaks: every allocated block is owned by a collection.

use crate::common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use ptm::{Error, Pool};

const SIZE: u64 = 4 << 20;

/// Opens the image (running recovery), checks it against `expected`, then deletes it.
/// `rollback`: whether recovery must have rolled a transaction back (`None`: either way).
fn check_image(img: &Path, expected: &Model, what: &str, rollback: Option<bool>) {
    let mut pool = Pool::<Root>::open(img, &opts()).unwrap();
    let report = pool.recovery_report();
    assert!(!report.was_clean, "{what}: an image of an open pool is not clean");
    if let Some(r) = rollback {
        assert_eq!(report.rolled_back, usize::from(r), "{what}: {report:?}");
    }
    assert_eq!(&read(&pool), expected, "{what}");
    assert_no_leak(&mut pool);
    drop(pool);
    std::fs::remove_file(img).unwrap();
}

/// Runs `ops` in one transaction, copying the pool file after the first `cut` of them (before
/// the commit) and again after the commit; checks both images.
fn step(pool: Pool<Root>, path: &Path, model: &mut Model, ops: &[Op], cut: usize) -> Pool<Root> {
    let mid = path.with_extension("mid");
    let after = path.with_extension("after");
    let mut m = model.clone();
    pool.transaction(|tx, r| {
        for (i, op) in ops.iter().enumerate() {
            if i == cut {
                std::fs::copy(path, &mid).unwrap();
            }
            apply(tx, r, op, &m)?;
            apply_model(&mut m, op);
        }
        if cut >= ops.len() {
            std::fs::copy(path, &mid).unwrap();
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    std::fs::copy(path, &after).unwrap();
    // An image has the pool's pointer tag: open it only while the pool is closed.
    drop(pool);
    // With every operation applied and a visible change, the image must need a rollback.
    let must_roll_back = (cut >= ops.len() && m != *model).then_some(true);
    let what = format!("image inside the transaction, before op {cut} of {ops:?}");
    check_image(&mid, model, &what, must_roll_back);
    *model = m;
    check_image(
        &after,
        model,
        &format!("image after committing {ops:?}"),
        Some(false),
    );
    Pool::open(path, &opts()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn crash_images_roll_back_or_keep(
        steps in prop::collection::vec((prop::collection::vec(op(), 1..5), 0usize..6), 1..20),
    ) {
        let dir = shm_dir();
        let path = dir.path().join("crash.pool");
        let mut pool = Pool::<Root>::create(&path, SIZE, &opts()).unwrap();
        let mut model = Model::default();
        for (ops, cut) in &steps {
            pool = step(pool, &path, &mut model, ops, *cut);
        }
        prop_assert_eq!(&read(&pool), &model);
    }
}

/// Growth of every collection (each step crashed inside and after the transaction): the old
/// buffer is intact and owned, the new one not leaked.
#[test]
fn crash_during_growth() {
    let dir = shm_dir();
    let path = dir.path().join("grow.pool");
    let mut pool = Pool::<Root>::create(&path, SIZE, &opts()).unwrap();
    let mut model = Model::default();
    for i in 0..70u64 {
        let ops = [
            Op::VPush(i),
            Op::MInsert(i, !i),
            Op::QPush(i),
            Op::SPush("ab".into()),
            Op::M2Insert(i as u8, 1),
        ];
        pool = step(pool, &path, &mut model, &ops, ops.len());
    }
    assert_eq!(read(&pool), model);
    assert_no_leak(&mut pool);
    // Freeing everything, crashed before and after the commit.
    let frees = [Op::VClear, Op::MClear, Op::SClear, Op::BFree, Op::TClear];
    pool = step(pool, &path, &mut model, &frees, frees.len());
    assert_no_leak(&mut pool);
}
