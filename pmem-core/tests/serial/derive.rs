//! Guards `#[derive(Persistent)]`: it must accept exactly the structs whose every byte is a
//! valid, pointer-free, padding-free field (compile-pass / compile-fail cases under `tests/ui`,
//! each failure pinned to its `.stderr`), and derived types must round-trip through
//! `bytes_of` / `read_from_bytes`.

use core::marker::PhantomData;
use core::mem::size_of;

use pmem_core::{bytes_of, read_from_bytes, Persistent};

#[test]
fn ui() {
    let _serial = crate::serial();
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail_*.rs");
    t.pass("tests/ui/pass_*.rs");
}

#[derive(Persistent, Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Header {
    magic: u32,
    version: u16,
    flags: u16,
}

#[derive(Persistent, Debug, Clone, Copy, PartialEq)]
#[repr(transparent)]
struct Offset(u64);

#[derive(Persistent, Debug, Clone, Copy, PartialEq)]
#[repr(transparent)]
struct Typed<T, Tag: 'static> {
    value: T,
    tag: PhantomData<Tag>,
}

#[derive(Persistent, Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Record {
    header: Header,
    root: Offset,
    slots: [Header; 3],
    weight: f64,
    delta: i32,
    _pad: [u8; 4],
    typed: Typed<u64, Header>,
}

#[derive(Persistent, Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Point(i32, i32);

#[derive(Persistent, Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Marker;

fn sample() -> Record {
    let header = Header {
        magic: 0x504d_454d,
        version: 3,
        flags: 0x8001,
    };
    Record {
        header,
        root: Offset(0x1000),
        slots: [
            header,
            Header {
                magic: 1,
                version: 2,
                flags: 3,
            },
            Header {
                magic: u32::MAX,
                version: u16::MAX,
                flags: 0,
            },
        ],
        weight: -1.5,
        delta: -42,
        _pad: [0; 4],
        typed: Typed {
            value: u64::MAX - 7,
            tag: PhantomData,
        },
    }
}

#[test]
fn sizes_are_the_sum_of_the_fields() {
    let _serial = crate::serial();
    assert_eq!(size_of::<Header>(), 8);
    assert_eq!(size_of::<Offset>(), 8);
    assert_eq!(size_of::<Typed<u64, Header>>(), 8);
    assert_eq!(size_of::<Record>(), 8 + 8 + 3 * 8 + 8 + 4 + 4 + 8);
    assert_eq!(size_of::<Point>(), 8);
    assert_eq!(size_of::<Marker>(), 0);
}

#[test]
fn nested_struct_round_trips_through_bytes() {
    let _serial = crate::serial();
    let record = sample();
    let bytes = bytes_of(&record);
    assert_eq!(bytes.len(), size_of::<Record>());
    let back: Record = read_from_bytes(bytes).expect("enough bytes");
    assert_eq!(back, record);
}

#[test]
fn round_trips_from_unaligned_bytes() {
    let _serial = crate::serial();
    let record = sample();
    let mut buffer = vec![0xA5u8; size_of::<Record>() + 1];
    buffer[1..].copy_from_slice(bytes_of(&record));
    let back: Record = read_from_bytes(&buffer[1..]).expect("enough bytes");
    assert_eq!(back, record);
}

#[test]
fn bytes_follow_the_declared_layout() {
    let _serial = crate::serial();
    let header = Header {
        magic: 0x0403_0201,
        version: 0x0605,
        flags: 0x0807,
    };
    let mut expected = Vec::new();
    expected.extend_from_slice(&header.magic.to_ne_bytes());
    expected.extend_from_slice(&header.version.to_ne_bytes());
    expected.extend_from_slice(&header.flags.to_ne_bytes());
    assert_eq!(bytes_of(&header), &expected[..]);

    let point = Point(-1, 2);
    let back: Point = read_from_bytes(bytes_of(&point)).expect("enough bytes");
    assert_eq!(back, point);
}

#[test]
fn every_bit_pattern_reads_back() {
    let _serial = crate::serial();
    let bytes = [0xFFu8; size_of::<Record>()];
    let record: Record = read_from_bytes(&bytes).expect("enough bytes");
    assert_eq!(record.header.magic, u32::MAX);
    assert_eq!(record.root, Offset(u64::MAX));
    assert!(record.weight.is_nan());
    assert_eq!(bytes_of(&record), &bytes[..]);
}

#[test]
fn short_input_is_rejected() {
    let _serial = crate::serial();
    let header = Header {
        magic: 1,
        version: 2,
        flags: 3,
    };
    let bytes = bytes_of(&header);
    assert_eq!(read_from_bytes::<Header>(&bytes[..7]), None);
    assert_eq!(read_from_bytes::<Marker>(&[]), Some(Marker));
}
