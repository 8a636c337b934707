//! Recording the root schema at the first open of a pool that has none (a pool made before
//! schemas were recorded) is crash-safe: at every drain of that open, crash images (nothing
//! pending, everything, each pending word alone, random subsets; 8-byte word fault model) open
//! with the data intact and either no schema recorded or exactly the opening type's, never a
//! damaged record; where it is recorded, another type is refused. The record `create` writes
//! is durable when `create` returns.

use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ptm::pmem_core::schema::schema_of;
use ptm::{Error, PCell, Persistent, Pool, PoolOptions, RootSchema};
use ptm_crashtest::{FaultModel, Simulation};

#[derive(Persistent)]
#[repr(C)]
struct V1 {
    a: PCell<u64>,
    b: PCell<u64>,
}

/// The same size, another schema.
#[derive(Persistent)]
#[repr(C)]
struct V2 {
    a: PCell<u64>,
    c: PCell<f64>,
}

fn opts() -> PoolOptions {
    PoolOptions::new().force_pmem(true).lanes(2)
}

/// Checks one crash image; returns whether it has the schema recorded.
fn check_image(path: &Path) -> bool {
    let any = Pool::<()>::open_any(path, &opts()).expect("a crash image opens");
    let recorded = ptm::read_root_schema(any.region()).expect("the schema record is never damaged");
    drop(any);
    let has = match recorded {
        RootSchema::NotRecorded => false,
        RootSchema::Described(s) => {
            assert_eq!(s, schema_of::<V1>());
            assert!(matches!(
                Pool::<V2>::open(path, &opts()),
                Err(Error::SchemaMismatch { .. })
            ));
            true
        }
        other => panic!("unexpected record {other:?}"),
    };
    let pool = Pool::<V1>::open(path, &opts()).expect("opens as its type");
    let ab = pool
        .transaction(|tx, r| Ok::<_, Error>((r.a.get(tx), r.b.get(tx))))
        .unwrap();
    assert_eq!(ab, (7, 9));
    has
}

#[test]
fn recording_a_schema_at_open_survives_a_crash_at_every_drain() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("old.pool");
    let pool = Pool::<V1>::create(&path, 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.a.set(tx, 7)?;
        r.b.set(tx, 9)
    })
    .unwrap();
    pool.close().unwrap();
    // A pool made before schemas were recorded: zeros in the superblock from offset 1024.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 3072], 4096 + 1024).unwrap();
    drop(f);

    let image = dir.path().join("image.pool");
    let seen = RefCell::new((0u32, 0u32, 0u32)); // (points, images without, images with)
    let sim = Simulation::new();
    let sim_opts = opts().simulation(sim.clone());
    let mut buf = Vec::new();
    sim.with_hook(
        &mut |cp| {
            let model = FaultModel::Words;
            let pending = cp.pending(model);
            let mut subsets: Vec<Vec<u64>> = vec![Vec::new(), pending.clone()];
            subsets.extend(pending.iter().take(64).map(|&u| vec![u]));
            for seed in 0..8u64 {
                let pick = ptm::pmem_core::internals::sim::random_subset(pending.len(), seed);
                subsets.push(pick.into_iter().map(|i| pending[i]).collect());
            }
            seen.borrow_mut().0 += 1;
            for units in subsets {
                cp.image_into(model, &units, &mut buf);
                std::fs::write(&image, &buf).unwrap();
                let has = check_image(&image);
                let mut s = seen.borrow_mut();
                if has {
                    s.2 += 1;
                } else {
                    s.1 += 1;
                }
            }
        },
        || Pool::<V1>::open(&path, &sim_opts).unwrap().close().unwrap(),
    );
    let (points, without, with) = *seen.borrow();
    // The exploration went through the recording: images from before and after it.
    assert!(
        points >= 3 && without > 0 && with > 0,
        "{points} points, {without} / {with}"
    );
    assert!(check_image(&path));
}

/// The schema record `create` writes is durable when `create` returns: a crash right after it
/// (the durable image, nothing pending) opens as the type it was created for and refuses
/// another of the same size.
#[test]
fn a_created_pools_schema_record_is_durable_when_create_returns() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("new.pool");
    let sim = Simulation::new();
    let pool = Pool::<V1>::create(&path, 8 << 20, &opts().simulation(sim.clone())).unwrap();
    let image = dir.path().join("image.pool");
    std::fs::write(&image, sim.durable_image()).unwrap();
    drop(pool);
    let any = Pool::<()>::open_any(&image, &opts()).expect("the crash image opens");
    let recorded = ptm::read_root_schema(any.region()).expect("the schema record is never damaged");
    drop(any);
    assert!(
        matches!(&recorded, RootSchema::Described(s) if *s == schema_of::<V1>()),
        "{recorded:?}"
    );
    assert!(matches!(
        Pool::<V2>::open(&image, &opts()),
        Err(Error::SchemaMismatch { .. })
    ));
}
