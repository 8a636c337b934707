//! Target `checked_values`: arbitrary stored bytes read back through `Checked<T>` (derived
//! enums with `u8` and `i16` discriminants, `bool`, `char`, `Option<u64>`, `Option<State>`):
//! no panic; the value exactly when the bytes are a valid encoding (checked against decoders
//! written here from the documented format, not the library's), otherwise an `InvalidValue`
//! naming the bytes, which converts to `ptm::Error::CorruptData`; a decoded value encodes back
//! to the same bytes.
//!
//! Also compiled into `ptm/tests/ptm/checked.rs` through `#[path]`: std and ptm only.

use std::fmt::Debug;

use ptm::pmem_core::{read_from_bytes, Checked, Encoded, Persistent};

/// A `u8` enum with gaps between its discriminants.
#[derive(Persistent, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// 1.
    Todo = 1,
    /// 2.
    Doing = 2,
    /// 5.
    Done = 5,
}

/// An `i16` enum with negative discriminants.
#[derive(Persistent, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i16)]
pub enum Level {
    /// -300.
    Low = -300,
    /// 0.
    Mid = 0,
    /// 300.
    High = 300,
}

fn state(b: &[u8]) -> Option<State> {
    match b[0] {
        1 => Some(State::Todo),
        2 => Some(State::Doing),
        5 => Some(State::Done),
        _ => None,
    }
}

fn level(b: &[u8]) -> Option<Level> {
    match i16::from_le_bytes([b[0], b[1]]) {
        -300 => Some(Level::Low),
        0 => Some(Level::Mid),
        300 => Some(Level::High),
        _ => None,
    }
}

/// `Option<T>` as docs/design.md §5 stores it: a tag of `n` bytes then the value's `n` bytes;
/// None is all zero, Some has the tag 1 then zeros.
fn option<T>(b: &[u8], n: usize, inner: impl Fn(&[u8]) -> Option<T>) -> Option<Option<T>> {
    let (tag, value) = b.split_at(n);
    if b.iter().all(|&x| x == 0) {
        Some(None)
    } else if tag[0] == 1 && tag[1..].iter().all(|&x| x == 0) {
        inner(value).map(Some)
    } else {
        None
    }
}

/// Reads the start of `data` as a `Checked<T>` and compares with `model`.
fn check<T: Encoded + PartialEq + Debug>(data: &[u8], model: impl Fn(&[u8]) -> Option<T>) {
    let size = size_of::<T::Raw>();
    let Some(raw) = read_from_bytes::<T::Raw>(data) else {
        return;
    };
    let bytes = &data[..size];
    match (Checked::<T>::from_raw(raw).get(), model(bytes)) {
        (Ok(got), Some(want)) => {
            assert_eq!(got, want, "bytes {bytes:02x?}");
            let again = Checked::new(got).raw();
            assert_eq!(ptm::pmem_core::bytes_of(&again), bytes, "{got:?} re-encoded");
        }
        (Err(e), None) => {
            assert_eq!(e.bytes, bytes[..size.min(16)], "the error names the stored bytes");
            assert!(e.to_string().contains(e.type_name));
            let e: ptm::Error = e.into();
            assert!(matches!(e, ptm::Error::CorruptData(_)), "{e}");
        }
        (got, want) => panic!("bytes {bytes:02x?}: decoded {got:?}, the format says {want:?}"),
    }
}

/// The target's check (see the module docs).
pub fn check_checked_values(data: &[u8]) {
    check::<State>(data, state);
    check::<Level>(data, level);
    check::<bool>(data, |b| match b[0] {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    });
    check::<char>(data, |b| {
        char::from_u32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    });
    check::<Option<u64>>(data, |b| {
        option(b, 8, |v| Some(u64::from_le_bytes(v.try_into().unwrap())))
    });
    check::<Option<State>>(data, |b| option(b, 1, state));
    check::<Option<Level>>(data, |b| option(b, 2, level));
}
