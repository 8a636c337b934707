//! Guards the root schema record (design §8.1 "Schema record", §5 "Schemas"): the bytes
//! `create` writes at superblock offset 1024 (fingerprint, length, format, check, text), what
//! `read_root_schema` reads back, the 3048-byte limit of the text (longer: the fingerprint
//! alone), each change of the root type refused at open with `SchemaMismatch` naming what
//! differs, and a damaged or forged record named by `CorruptMetadata`, never misread.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ptm::pmem_core::schema::{Describer, Schema, TypeSchema};
use ptm::{Error, PCell, Persistent, Pool, RootSchema};

use crate::common;

/// Pool offset of the schema record (superblock at 4096, record at its offset 1024).
const RECORD: u64 = 4096 + 1024;
/// Bytes of the record before the text.
const HEADER: usize = 24;
/// The longest text kept (the superblock's 4096 bytes less 1024 and the header).
const MAX_TEXT: usize = 3048;

/// FNV-1a-64 of `text`, 0 mapped to 1 (design §5), computed here.
fn fnv(text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The check of a record: xxh3-64 of its bytes 0..16 followed by the text.
fn check_of(head: &[u8], text: &[u8]) -> u64 {
    let mut v = head[..16].to_vec();
    v.extend_from_slice(text);
    xxhash_rust::xxh3::xxh3_64(&v)
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The pool's schema area (superblock bytes 1024..4096).
fn record(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; 4096 - 1024];
    f.read_exact_at(&mut b, RECORD).unwrap();
    b
}

fn write_record(path: &Path, b: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(b, RECORD).unwrap();
}

/// Redoes the check of record `b` (its length from bytes 8..12), as a build would have.
fn recheck(b: &mut [u8]) {
    let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let c = check_of(&b[..16], &b[HEADER..(HEADER + len).min(b.len())]);
    b[16..24].copy_from_slice(&c.to_le_bytes());
}

fn opts() -> ptm::PoolOptions {
    common::pmem().lanes(2).lane_size(8192)
}

fn create<R: Persistent>(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let p = common::path(dir, name);
    Pool::<R>::create(&p, 1 << 20, &opts()).unwrap().close().unwrap();
    p
}

/// The `CorruptMetadata` description opening `path` as `R` reports (panics otherwise).
fn corrupt<R: Persistent>(path: &Path) -> &'static str {
    match Pool::<R>::open(path, &opts()) {
        Err(Error::CorruptMetadata { what, .. }) => what,
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened"),
    }
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Inner {
    x: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    count: PCell<u64>,
    limits: [u32; 4],
    inner: Inner,
}

/// A root type of 8 bytes whose schema encoding is exactly `N` bytes long: a scalar whose
/// name is `N - 2` letters (`aaa…/8`).
#[repr(transparent)]
struct Len<const N: usize>(u64);

// SAFETY: a `u64` (transparent): every bit pattern is valid, no padding, no pointer.
unsafe impl<const N: usize> Persistent for Len<N> {}

impl<const N: usize> Schema for Len<N> {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar(&"a".repeat(N - 2), 8)
    }
}

/// As [`Len`], another name of the same length (`bbb…/8`).
#[repr(transparent)]
struct Other<const N: usize>(u64);

// SAFETY: as for `Len`.
unsafe impl<const N: usize> Persistent for Other<N> {}

impl<const N: usize> Schema for Other<N> {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar(&"b".repeat(N - 2), 8)
    }
}

#[test]
fn create_writes_the_documented_record() {
    let dir = common::shm_dir();
    let p = create::<Root>(&dir, "r.pool");
    let b = record(&p);
    let text = ptm::pmem_core::schema::schema_of::<Root>().encode();
    assert!(text.starts_with("Root/"), "{text}");
    let len = text.len();
    assert_eq!(word(&b, 0), fnv(text.as_bytes()), "fingerprint at 1024");
    assert_eq!(&b[8..12], &(len as u32).to_le_bytes(), "schema_len at 1032");
    assert_eq!(&b[12..16], &1u32.to_le_bytes(), "schema_format at 1036");
    assert_eq!(
        word(&b, 16),
        check_of(&b, text.as_bytes()),
        "schema_check at 1040"
    );
    assert_eq!(&b[HEADER..HEADER + len], text.as_bytes(), "schema_text at 1048");
    assert!(
        b[HEADER + len..].iter().all(|&x| x == 0),
        "nothing after the text"
    );
}

#[test]
fn read_root_schema_returns_the_record_and_its_fingerprint() {
    let dir = common::shm_dir();
    let schema = ptm::pmem_core::schema::schema_of::<Root>();
    let p = create::<Root>(&dir, "r.pool");
    let pool = Pool::<()>::open_any(&p, &opts()).unwrap();
    let r = ptm::read_root_schema(pool.region()).unwrap();
    assert_eq!(r, RootSchema::Described(schema.clone()));
    assert_eq!(r.fingerprint(), Some(schema.fingerprint()));
    assert_eq!(r.fingerprint(), Some(fnv(schema.encode().as_bytes())));
    drop(pool);
    // Kept as a fingerprint (too long).
    let long = ptm::pmem_core::schema::schema_of::<Len<3100>>();
    let p = create::<Len<3100>>(&dir, "long.pool");
    let pool = Pool::<()>::open_any(&p, &opts()).unwrap();
    let r = ptm::read_root_schema(pool.region()).unwrap();
    assert_eq!(r, RootSchema::Fingerprint(long.fingerprint()));
    assert_eq!(r.fingerprint(), Some(fnv(long.encode().as_bytes())));
    drop(pool);
    // Not recorded.
    let p = common::path(&dir, "any.pool");
    let pool = Pool::<()>::create_any(&p, 1 << 20, 8, &opts()).unwrap();
    let r = ptm::read_root_schema(pool.region()).unwrap();
    assert_eq!((r.clone(), r.fingerprint()), (RootSchema::NotRecorded, None));
}

/// Texts of up to 3048 bytes are kept whole; from 3049 bytes, the fingerprint alone (length
/// 0). Either way the pool opens again as its type and refuses another of the same length.
#[test]
fn texts_up_to_3048_bytes_are_kept_longer_ones_as_their_fingerprint() {
    assert_eq!(ptm::internals::layout::SCHEMA_MAX_TEXT, MAX_TEXT);
    fn case<const N: usize>(dir: &tempfile::TempDir) {
        let schema = ptm::pmem_core::schema::schema_of::<Len<N>>();
        assert_eq!(schema.encode().len(), N);
        let p = create::<Len<N>>(dir, &format!("s{N}.pool"));
        let b = record(&p);
        let kept = if N <= MAX_TEXT { N } else { 0 };
        assert_eq!(&b[8..12], &(kept as u32).to_le_bytes(), "{N}");
        assert_eq!(word(&b, 0), schema.fingerprint(), "{N}");
        let pool = Pool::<Len<N>>::open(&p, &opts()).unwrap();
        let r = ptm::read_root_schema(pool.region()).unwrap();
        if N <= MAX_TEXT {
            assert_eq!(r, RootSchema::Described(schema), "{N}");
        } else {
            assert_eq!(r, RootSchema::Fingerprint(schema.fingerprint()), "{N}");
        }
        drop(pool);
        let e = Pool::<Other<N>>::open(&p, &opts()).err();
        assert!(matches!(e, Some(Error::SchemaMismatch { .. })), "{N}: {e:?}");
    }
    let dir = common::shm_dir();
    case::<100>(&dir);
    case::<3047>(&dir);
    case::<3048>(&dir);
    case::<3049>(&dir);
    case::<3072>(&dir);
    case::<3096>(&dir);
    case::<3097>(&dir);
    case::<4100>(&dir);
}

/// The root type a pool is made as (`Root` in every module below, with an `Inner`).
mod v1 {
    use ptm::{PCell, Persistent};
    #[derive(Persistent)]
    #[persistent(crate = "ptm::pmem_core")]
    #[repr(C)]
    pub(super) struct Inner {
        pub(super) x: PCell<u64>,
    }
    #[derive(Persistent)]
    #[persistent(crate = "ptm::pmem_core")]
    #[repr(C)]
    pub(super) struct Root {
        pub(super) a: PCell<u64>,
        pub(super) b: PCell<u64>,
        pub(super) inner: Inner,
    }
}

/// Defines module `$m` with a `Root` and an `Inner` whose fields are given.
macro_rules! variant {
    ($m:ident { $($rf:ident: $rt:ty),* } { $($if:ident: $it:ty),* }) => {
        mod $m {
            #[allow(unused_imports)]
            use ptm::{PCell, Persistent};
            #[derive(Persistent)]
            #[persistent(crate = "ptm::pmem_core")]
            #[repr(C)]
            pub(super) struct Inner {
                $(pub(super) $if: $it),*
            }
            #[derive(Persistent)]
            #[persistent(crate = "ptm::pmem_core")]
            #[repr(C)]
            pub(super) struct Root {
                $(pub(super) $rf: $rt),*
            }
        }
    };
}

variant!(added { a: PCell<u64>, b: PCell<u64>, inner: Inner, c: PCell<u64> } { x: PCell<u64> });
variant!(removed { a: PCell<u64>, inner: Inner } { x: PCell<u64> });
variant!(retyped { a: PCell<u64>, b: PCell<i64>, inner: Inner } { x: PCell<u64> });
variant!(resized { a: PCell<u64>, b: PCell<u32>, c: PCell<u32>, inner: Inner } { x: PCell<u64> });
variant!(reordered { b: PCell<u64>, a: PCell<u64>, inner: Inner } { x: PCell<u64> });
variant!(renamed { a: PCell<u64>, c: PCell<u64>, inner: Inner } { x: PCell<u64> });
variant!(nested { a: PCell<u64>, b: PCell<u64>, inner: Inner } { x: PCell<f64> });
variant!(nested_added { a: PCell<u64>, b: PCell<u64>, inner: Inner } { x: PCell<u64>, y: PCell<u64> });

/// `(at, stored, expected)` of the `SchemaMismatch` opening `path` as `R`.
fn mismatch<R: Persistent>(path: &Path) -> (String, String, String) {
    let expected_fp = ptm::pmem_core::schema::schema_of::<R>().fingerprint();
    let stored_fp = ptm::pmem_core::schema::schema_of::<v1::Root>().fingerprint();
    match Pool::<R>::open(path, &opts()) {
        Err(Error::SchemaMismatch {
            at,
            stored,
            expected,
            stored_fingerprint,
            expected_fingerprint,
            ..
        }) => {
            assert_eq!(
                (stored_fingerprint, expected_fingerprint),
                (stored_fp, expected_fp)
            );
            (at, stored, expected)
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn each_schema_change_is_refused_naming_what_differs() {
    let dir = common::shm_dir();
    let p = create::<v1::Root>(&dir, "v1.pool");
    let t = |a: &str, s: &str, e: &str| (a.to_owned(), s.to_owned(), e.to_owned());
    let got = [
        mismatch::<added::Root>(&p),
        mismatch::<removed::Root>(&p),
        mismatch::<retyped::Root>(&p),
        mismatch::<resized::Root>(&p),
        mismatch::<reordered::Root>(&p),
        mismatch::<renamed::Root>(&p),
        mismatch::<nested::Root>(&p),
        mismatch::<nested_added::Root>(&p),
    ];
    let want = [
        // A field added (at the end), removed, retyped (same size), resized.
        t("Root.c", "nothing (the field is new)", "PCell<u64> (8 bytes)"),
        t("Root.inner", "field `b`: PCell<u64>", "field `inner`: Inner"),
        t("Root.b<T>", "u64 (8 bytes)", "i64 (8 bytes)"),
        t("Root.b<T>", "u64 (8 bytes)", "u32 (4 bytes)"),
        // Two fields swapped, one renamed.
        t("Root.b", "field `a`: PCell<u64>", "field `b`: PCell<u64>"),
        t("Root.c", "field `b`: PCell<u64>", "field `c`: PCell<u64>"),
        // A nested struct's field retyped, one added to it.
        t("Root.inner.x<T>", "u64 (8 bytes)", "f64 (8 bytes)"),
        t(
            "Root.inner.y",
            "nothing (the field is new)",
            "PCell<u64> (8 bytes)",
        ),
    ];
    assert_eq!(got, want);
    // The pool still opens as its own type, and was not changed by the refusals.
    let before = record(&p);
    Pool::<v1::Root>::open(&p, &opts()).unwrap().close().unwrap();
    assert_eq!(record(&p), before);
}

#[test]
fn a_damaged_record_is_named_never_misread() {
    let dir = common::shm_dir();
    let p = create::<Root>(&dir, "r.pool");
    let good = record(&p);
    let len = u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
    // Each byte of the record with one bit flipped, as a torn or decayed write would leave it.
    for i in 0..HEADER + len {
        for bit in [0x01u8, 0x80] {
            let mut b = good.clone();
            b[i] ^= bit;
            write_record(&p, &b);
            let what = corrupt::<Root>(&p);
            let want = match i {
                12..16 => "unknown schema record format",
                8..12 if u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize > MAX_TEXT => {
                    "schema record length is impossible"
                }
                _ => "schema record checksum mismatch",
            };
            assert_eq!(what, want, "byte {i} bit {bit:#x}");
        }
    }
    // Forged with a valid check: another text under the old fingerprint; bytes that are not
    // UTF-8; a text that is no schema (with its own fingerprint); a length beyond the limit.
    let forge = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        edit(&mut b);
        recheck(&mut b);
        write_record(&p, &b);
        corrupt::<Root>(&p)
    };
    assert_eq!(
        forge(&|b| b[HEADER] = b'Q'),
        "schema record fingerprint does not match its text"
    );
    assert_eq!(forge(&|b| b[HEADER + 1] = 0xff), "schema record is not UTF-8");
    assert_eq!(
        forge(&|b| {
            b[HEADER] = b'{';
            let fp = fnv(&b[HEADER..HEADER + len]);
            b[0..8].copy_from_slice(&fp.to_le_bytes());
        }),
        "schema record text is not a schema"
    );
    assert_eq!(
        forge(&|b| b[8..12].copy_from_slice(&(MAX_TEXT as u32 + 1).to_le_bytes())),
        "schema record length is impossible"
    );
    assert_eq!(
        forge(&|b| b[8..12].copy_from_slice(&u32::MAX.to_le_bytes())),
        "schema record length is impossible"
    );
    // The record restored: the pool opens.
    write_record(&p, &good);
    Pool::<Root>::open(&p, &opts()).unwrap().close().unwrap();
}

/// A record of the fingerprint alone (length 0) is checked too: a flipped fingerprint bit is
/// a damaged record, not another schema (which would refuse the right type) or none (which
/// would record the next type opened).
#[test]
fn a_damaged_fingerprint_only_record_is_named() {
    let dir = common::shm_dir();
    let p = create::<Len<3100>>(&dir, "long.pool");
    let good = record(&p);
    assert_eq!(&good[8..12], &[0; 4]);
    assert_eq!(word(&good, 16), check_of(&good, &[]));
    for i in 0..HEADER {
        let mut b = good.clone();
        b[i] ^= 0x02;
        write_record(&p, &b);
        let want = match i {
            12..16 => "unknown schema record format",
            8..12 if u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize > MAX_TEXT => {
                "schema record length is impossible"
            }
            _ => "schema record checksum mismatch",
        };
        assert_eq!(corrupt::<Len<3100>>(&p), want, "byte {i}");
    }
    // A fingerprint of zero: nothing recorded, whatever the rest holds; the next typed open
    // records its own schema.
    let mut b = good.clone();
    b[0..8].fill(0);
    write_record(&p, &b);
    Pool::<Len<3100>>::open(&p, &opts()).unwrap().close().unwrap();
    assert_eq!(record(&p), good);
}
