//! Schema fingerprints: a pool created with one root type refuses to open as another (a field
//! added, a field's type changed, the element type of a nested collection changed), naming the
//! first difference; the same type reopens with its data; pools with no schema recorded open
//! and record one; a damaged record is an error; tools open any pool.

use ptm::pmem_core::schema::schema_of;
use ptm::{Error, Pool, PoolOptions, RootSchema};

fn opts() -> PoolOptions {
    PoolOptions::new().layout("schema").force_pmem(true).lanes(2)
}

fn dir() -> tempfile::TempDir {
    if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

const SIZE: u64 = 8 << 20;

/// The schema the pool was created with.
mod v1 {
    use ptm::{PCell, Persistent};
    use ptm_collections::{PHashMap, PString, PValue, PVec};

    #[derive(Persistent, PValue)]
    #[repr(C)]
    pub(crate) struct Task {
        pub(crate) title: PString,
        pub(crate) tags: PVec<PString>,
        pub(crate) priority: PCell<u64>,
    }

    #[derive(Persistent)]
    #[repr(C)]
    pub(crate) struct Root {
        pub(crate) tasks: PHashMap<u64, Task>,
        pub(crate) next_id: PCell<u64>,
    }
}

/// A field added to the nested struct.
mod field_added {
    use ptm::{PCell, Persistent};
    use ptm_collections::{PHashMap, PString, PValue, PVec};

    #[derive(Persistent, PValue)]
    #[repr(C)]
    pub(crate) struct Task {
        pub(crate) title: PString,
        pub(crate) tags: PVec<PString>,
        pub(crate) priority: PCell<u64>,
        pub(crate) due: PCell<u64>,
    }

    #[derive(Persistent)]
    #[repr(C)]
    pub(crate) struct Root {
        pub(crate) tasks: PHashMap<u64, Task>,
        pub(crate) next_id: PCell<u64>,
    }
}

/// A field's type changed, keeping every size (so the old size check could not see it).
mod field_retyped {
    use ptm::{PCell, Persistent};
    use ptm_collections::{PHashMap, PString, PValue, PVec};

    #[derive(Persistent, PValue)]
    #[repr(C)]
    pub(crate) struct Task {
        pub(crate) title: PString,
        pub(crate) tags: PVec<PString>,
        pub(crate) priority: PCell<f64>,
    }

    #[derive(Persistent)]
    #[repr(C)]
    pub(crate) struct Root {
        pub(crate) tasks: PHashMap<u64, Task>,
        pub(crate) next_id: PCell<u64>,
    }
}

/// The element type of a nested collection changed (same sizes again).
mod element_changed {
    use ptm::{PCell, Persistent};
    use ptm_collections::{PHashMap, PString, PValue, PVec};

    #[derive(Persistent, PValue)]
    #[repr(C)]
    pub(crate) struct Task {
        pub(crate) title: PString,
        pub(crate) tags: PVec<u64>,
        pub(crate) priority: PCell<u64>,
    }

    #[derive(Persistent)]
    #[repr(C)]
    pub(crate) struct Root {
        pub(crate) tasks: PHashMap<u64, Task>,
        pub(crate) next_id: PCell<u64>,
    }
}

/// A root field renamed (same type and size).
mod field_renamed {
    use ptm::{PCell, Persistent};
    use ptm_collections::PHashMap;

    #[derive(Persistent)]
    #[repr(C)]
    pub(crate) struct Root {
        pub(crate) tasks: PHashMap<u64, super::v1::Task>,
        pub(crate) counter: PCell<u64>,
    }
}

fn create_v1(path: &std::path::Path) {
    let pool = Pool::<v1::Root>::create(path, SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        let t = r.tasks.get_or_insert_new(tx, 7)?;
        t.title.set(tx, "write the schema test")?;
        t.tags.push_new(tx)?.set(tx, "ptm")?;
        t.priority.set(tx, 3)?;
        r.next_id.set(tx, 8)
    })
    .unwrap();
}

fn mismatch<R: ptm::Persistent>(path: &std::path::Path) -> (String, String, String) {
    match Pool::<R>::open(path, &opts()) {
        Err(Error::SchemaMismatch {
            at,
            stored,
            expected,
            stored_fingerprint,
            expected_fingerprint,
            ..
        }) => {
            assert_ne!(stored_fingerprint, expected_fingerprint);
            assert_eq!(expected_fingerprint, schema_of::<R>().fingerprint());
            (at, stored, expected)
        }
        Err(e) => panic!("expected SchemaMismatch, got {e}"),
        Ok(_) => panic!("opened a pool as a type with another schema"),
    }
}

#[test]
fn another_schema_is_refused_naming_the_first_difference_and_the_same_reopens() {
    let d = dir();
    let path = d.path().join("tasks.pool");
    create_v1(&path);

    let (at, stored, expected) = mismatch::<field_added::Root>(&path);
    assert_eq!(
        (at.as_str(), stored.as_str(), expected.as_str()),
        (
            "Root.tasks<V>.due",
            "nothing (the field is new)",
            "PCell<u64> (8 bytes)"
        )
    );

    let (at, stored, expected) = mismatch::<field_retyped::Root>(&path);
    assert_eq!(
        (at.as_str(), stored.as_str(), expected.as_str()),
        ("Root.tasks<V>.priority<T>", "u64 (8 bytes)", "f64 (8 bytes)")
    );

    let (at, stored, expected) = mismatch::<element_changed::Root>(&path);
    assert_eq!(
        (at.as_str(), stored.as_str(), expected.as_str()),
        ("Root.tasks<V>.tags<T>", "PString (24 bytes)", "u64 (8 bytes)")
    );

    let (at, stored, expected) = mismatch::<field_renamed::Root>(&path);
    assert_eq!(at, "Root.counter");
    assert_eq!(
        (stored.as_str(), expected.as_str()),
        ("field `next_id`: PCell<u64>", "field `counter`: PCell<u64>")
    );

    // Another root type altogether (here of the same size).
    let (at, stored, _) = mismatch::<[u64; 5]>(&path);
    assert_eq!((at.as_str(), stored.as_str()), ("[u64; 5]", "Root (40 bytes)"));

    // The error message names the place and says how to go on.
    let msg = Pool::<element_changed::Root>::open(&path, &opts())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("schema mismatch at `Root.tasks<V>.tags<T>`") && msg.contains("migrate"),
        "{msg}"
    );

    // The same type reopens, with its data.
    let pool = Pool::<v1::Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        let t = r.tasks.get_ref(tx, &7)?.expect("task 7");
        assert_eq!(t.title.as_string(tx)?, "write the schema test");
        assert_eq!(t.tags.get_ref(tx, 0)?.expect("a tag").as_string(tx)?, "ptm");
        assert_eq!((t.priority.get(tx), r.next_id.get(tx)), (3, 8));
        Ok::<_, Error>(())
    })
    .unwrap();
    let recorded = ptm::read_root_schema(pool.region()).unwrap();
    assert_eq!(recorded, RootSchema::Described(schema_of::<v1::Root>()));
    drop(pool);

    // Tools open it whatever its root.
    let any = Pool::<()>::open_any(&path, &opts()).unwrap();
    assert_eq!(ptm::read_root_schema(any.region()).unwrap(), recorded);
}

/// Superblock offset of the schema record inside the pool file (data area at 4096).
const RECORD: u64 = 4096 + 1024;

fn patch(path: &std::path::Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn a_pool_without_a_recorded_schema_opens_and_records_the_first_type() {
    let d = dir();
    let path = d.path().join("old.pool");
    create_v1(&path);
    // What a pool made before schemas were recorded holds there.
    patch(&path, RECORD, &[0u8; 3072]);
    let pool = Pool::<()>::open_any(&path, &opts()).unwrap();
    assert_eq!(
        ptm::read_root_schema(pool.region()).unwrap(),
        RootSchema::NotRecorded
    );
    drop(pool);

    // Opens as a same-sized type: nothing to check against, so it opens and records it.
    let pool = Pool::<field_retyped::Root>::open(&path, &opts()).unwrap();
    drop(pool);
    let (at, _, _) = mismatch::<v1::Root>(&path);
    assert_eq!(at, "Root.tasks<V>.priority<T>");
    Pool::<field_retyped::Root>::open(&path, &opts()).unwrap();

    // With nothing recorded, a root of another size is still refused by the size check (and
    // nothing is recorded).
    patch(&path, RECORD, &[0u8; 8]);
    assert!(matches!(
        Pool::<[u64; 6]>::open(&path, &opts()),
        Err(Error::RootMismatch { .. })
    ));
    let pool = Pool::<()>::open_any(&path, &opts()).unwrap();
    assert_eq!(
        ptm::read_root_schema(pool.region()).unwrap(),
        RootSchema::NotRecorded
    );
}

#[test]
fn a_recording_cut_short_before_the_fingerprint_counts_as_not_recorded() {
    let d = dir();
    let path = d.path().join("torn.pool");
    create_v1(&path);
    // What a crash between the two persists of the first open's recording leaves: the
    // fingerprint still 0, the other bytes (here of another schema, and torn) written.
    let other = ptm::pmem_core::schema::schema_of::<element_changed::Root>().encode();
    let mut torn = vec![0u8; 24];
    torn[8..12].copy_from_slice(&(other.len() as u32).to_le_bytes());
    torn[12] = 1;
    torn.extend_from_slice(&other.as_bytes()[..other.len() / 2]);
    patch(&path, RECORD, &torn);
    let pool = Pool::<()>::open_any(&path, &opts()).unwrap();
    assert_eq!(
        ptm::read_root_schema(pool.region()).unwrap(),
        RootSchema::NotRecorded
    );
    drop(pool);
    // The next open records its type in full.
    drop(Pool::<v1::Root>::open(&path, &opts()).unwrap());
    let pool = Pool::<()>::open_any(&path, &opts()).unwrap();
    assert_eq!(
        ptm::read_root_schema(pool.region()).unwrap(),
        RootSchema::Described(schema_of::<v1::Root>())
    );
}

#[test]
fn created_by_a_tool_the_first_open_records_the_schema() {
    let d = dir();
    let path = d.path().join("tool.pool");
    let root_size = size_of::<v1::Root>() as u64;
    drop(Pool::<()>::create_any(&path, SIZE, root_size, &opts()).unwrap());
    drop(Pool::<v1::Root>::open(&path, &opts()).unwrap());
    let (at, _, _) = mismatch::<element_changed::Root>(&path);
    assert_eq!(at, "Root.tasks<V>.tags<T>");
}

#[test]
fn a_damaged_schema_record_is_corrupt_metadata() {
    let d = dir();
    let path = d.path().join("damaged.pool");
    create_v1(&path);
    // One flipped byte in the text.
    patch(&path, RECORD + 24 + 3, b"X");
    match Pool::<v1::Root>::open(&path, &opts()) {
        Err(Error::CorruptMetadata { what, .. }) => assert_eq!(what, "schema record checksum mismatch"),
        other => panic!("expected CorruptMetadata, got {:?}", other.map(|_| ())),
    }
}
