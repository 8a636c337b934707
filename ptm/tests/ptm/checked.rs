//! Enums, `bool` and `Option` in a pool through `Checked<T>`: values round-trip (also across
//! reopen); a corrupted discriminant, `bool` byte or `Option` tag reads as
//! `Error::CorruptData`, never as an invalid value; arbitrary stored bytes decode exactly as the
//! documented format says (proptest, and the `checked_values` fuzz corpus replayed).

use std::path::Path;

use proptest::prelude::*;
use ptm::{Checked, Error, PBool, PCell, POption, Persistent, Pool, PoolOptions};

#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/checked.rs"]
mod fuzz_checked;
use crate::fuzz_corpus::corpus;

use fuzz_checked::{Level, State};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    state: PCell<Checked<State>>,
    urgent: PCell<PBool>,
    level: PCell<Checked<Level>>,
    _pad: [u8; 4],
    due: PCell<POption<u64>>,
    next: PCell<POption<State>>,
    _pad2: [u8; 6],
}

fn opts() -> PoolOptions {
    PoolOptions::new().force_pmem(true).lanes(2)
}

fn dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

type Values = (State, bool, Level, Option<u64>, Option<State>);

fn load(pool: &Pool<Root>) -> Result<Values, Error> {
    pool.transaction(|tx, r| {
        Ok((
            r.state.load(tx)?,
            r.urgent.load(tx)?,
            r.level.load(tx)?,
            r.due.load(tx)?,
            r.next.load(tx)?,
        ))
    })
}

#[test]
fn values_round_trip_and_corruption_is_corrupt_data() {
    let d = dir();
    let path = d.path().join("checked.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    // `State` has no variant 0: a fresh (zeroed) root is not a valid `State` ...
    assert!(matches!(load(&pool), Err(Error::CorruptData(_))));
    let want = (
        State::Done,
        true,
        Level::Low,
        Some(u64::MAX - 3),
        Some(State::Doing),
    );
    pool.transaction(|tx, r| {
        r.state.store(tx, want.0)?;
        r.urgent.store(tx, want.1)?;
        r.level.store(tx, want.2)?;
        r.due.store(tx, want.3)?;
        r.next.store(tx, want.4)
    })
    .unwrap();
    assert_eq!(load(&pool).unwrap(), want);
    // ... and an aborted store leaves the old value.
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        r.state.store(tx, State::Todo)?;
        r.due.store(tx, None)?;
        Err(Error::Aborted)
    });
    assert!(r.is_err());
    assert_eq!(load(&pool).unwrap(), want);
    let root = pool.geometry().root_offset;
    drop(pool);
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    assert_eq!(load(&pool).unwrap(), want);
    drop(pool);

    // Each field damaged in the file, one at a time.
    let at = |field: usize| root + field as u64;
    let cases: [(usize, &[u8], &str); 6] = [
        (std::mem::offset_of!(Root, state), &[3], "State"),
        (std::mem::offset_of!(Root, urgent), &[2], "bool"),
        (std::mem::offset_of!(Root, level), &1i16.to_le_bytes(), "Level"),
        (std::mem::offset_of!(Root, due), &[2], "Option<u64>"),
        (std::mem::offset_of!(Root, due) + 1, &[1], "Option<u64>"),
        (std::mem::offset_of!(Root, next) + 1, &[4], "Option"),
    ];
    for (off, bad, type_name) in cases {
        let mut good = vec![0u8; bad.len()];
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(&path).unwrap();
            f.read_exact_at(&mut good, at(off)).unwrap();
        }
        patch(&path, at(off), bad);
        let pool = Pool::<Root>::open(&path, &opts()).unwrap();
        match load(&pool) {
            Err(Error::CorruptData(e)) => {
                assert!(e.type_name.contains(type_name), "{} for {type_name}", e.type_name);
                assert!(e.to_string().starts_with("corrupt data: stored bytes"), "{e}");
            }
            other => panic!("byte {off} = {bad:?}: expected CorruptData, got {other:?}"),
        }
        drop(pool);
        patch(&path, at(off), &good);
        assert_eq!(load(&Pool::<Root>::open(&path, &opts()).unwrap()).unwrap(), want);
    }
}

#[test]
fn the_schema_names_enum_variants() {
    use ptm::pmem_core::schema::schema_of;
    let s = schema_of::<Root>().encode();
    assert!(
        s.contains("state:PCell/1<T=State/1(Todo=1,Doing=2,Done=5)>"),
        "{s}"
    );
    assert!(
        s.contains("level:PCell/2<T=Level/2(Low=-300,Mid=0,High=300)>"),
        "{s}"
    );
    assert!(s.contains("urgent:PCell/1<T=bool/1>"), "{s}");
    assert!(s.contains("due:PCell/16<T=Option/16<T=u64/8>>"), "{s}");
}

#[test]
fn checked_values_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (path, data) in corpus::inputs(&fuzz, "checked_values") {
        eprintln!("checked_values {}", path.display());
        fuzz_checked::check_checked_values(&data);
    }
}

proptest! {
    /// Any stored bytes: decoded exactly as the format says (the fuzz target's check).
    #[test]
    fn arbitrary_bytes_decode_as_the_format_says(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        fuzz_checked::check_checked_values(&bytes);
    }

    /// Bytes near valid encodings (mostly zeros, small tags) reach the valid branches too.
    #[test]
    fn sparse_bytes_decode_as_the_format_says(bytes in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(5u8), any::<u8>()], 0..40)) {
        fuzz_checked::check_checked_values(&bytes);
    }

    /// Every value of the std types round-trips through its stored form.
    #[test]
    fn std_values_round_trip(v in any::<Option<u64>>(), b in any::<Option<bool>>(), c in any::<Option<char>>()) {
        prop_assert_eq!(Checked::new(v).get(), Ok(v));
        prop_assert_eq!(Checked::new(b).get(), Ok(b));
        prop_assert_eq!(Checked::new(c).get(), Ok(c));
    }
}
