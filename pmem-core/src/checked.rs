//! Checked storage for types that are **not** valid for every bit pattern: `bool`, `char`,
//! fieldless enums and `Option<T>`.
//!
//! [`Persistent`] promises that every bit pattern is a valid value, so that reading a corrupted
//! pool can never be undefined behaviour. `bool` (only 0 and 1), an enum (only its
//! discriminants) and `Option<T>` break that promise, so they are not `Persistent`. They are
//! [`Encoded`] instead: stored as a `Persistent` raw form ([`Encoded::Raw`]), and decoded
//! *checked* on every read. [`Checked<T>`] is that raw form as a field type: it is `Persistent`
//! (its bytes are the raw form's), and [`Checked::get`] returns the value or an
//! [`InvalidValue`] error, never an invalid `T`.
//!
//! | value type          | stored as (`Raw`)                 | invalid when                            |
//! |---------------------|-----------------------------------|-----------------------------------------|
//! | `bool` ([`PBool`])  | `u8`: 0 false, 1 true             | any other byte                          |
//! | `char`              | `u32`: the scalar value           | a surrogate or above `0x10FFFF`         |
//! | `#[derive(Persistent)] #[repr(uN)] enum E` | `uN`: the discriminant | no variant has it        |
//! | `Option<T>` ([`POption<T>`]) | [`OptionRaw<T::Raw>`]: a tag the size of `T::Raw`, then `T::Raw` | not all-zero (None) and the tag not `1, 0, 0, ...` (Some), or a Some's `T` is invalid |
//! | any `T: Persistent + Copy` | `T` itself                 | never                                   |
//!
//! ```
//! use pmem_core::{Checked, Encoded, Persistent, PBool, POption};
//!
//! #[derive(Persistent, Clone, Copy, Debug, PartialEq)]
//! #[repr(u8)]
//! enum State {
//!     Todo = 1,
//!     Done = 2,
//! }
//!
//! #[derive(Persistent)]
//! #[repr(C)]
//! struct Task {
//!     state: Checked<State>,
//!     urgent: PBool,
//!     _pad: [u8; 6],
//!     due: POption<u64>,
//! }
//!
//! let t = Task {
//!     state: Checked::new(State::Done),
//!     urgent: Checked::new(true),
//!     _pad: [0; 6],
//!     due: Checked::new(Some(17)),
//! };
//! assert_eq!(t.state.get(), Ok(State::Done));
//! assert_eq!(t.due.get(), Ok(Some(17)));
//! // A corrupted discriminant is an error, not undefined behaviour.
//! let bad: Checked<State> = Checked::from_raw(7);
//! assert!(bad.get().is_err());
//! ```

use core::marker::PhantomData;

use crate::persistent::{bytes_of, Persistent};
use crate::schema::{Describer, Schema, TypeSchema};

/// A value stored through a `Persistent` raw form and decoded, checked, on every read.
///
/// `#[derive(Persistent)]` on a fieldless `#[repr(uN)]` enum implements it (with `Raw = uN`).
/// Every `Persistent + Copy` type implements it with `Raw = Self` (decoding never fails), so
/// `POption<u64>` and `POption<MyStruct>` work.
pub trait Encoded: Schema + Copy + Sized {
    /// The stored form: valid for every bit pattern.
    type Raw: Persistent + Copy;

    /// The stored form of `self`.
    fn encode(self) -> Self::Raw;

    /// The value `raw` stores, or `None` when `raw` is not the encoding of any value.
    fn decode(raw: Self::Raw) -> Option<Self>;
}

impl<T: Persistent + Copy> Encoded for T {
    type Raw = T;

    fn encode(self) -> T {
        self
    }

    fn decode(raw: T) -> Option<T> {
        Some(raw)
    }
}

impl Schema for bool {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar("bool", 1)
    }
}

impl Encoded for bool {
    type Raw = u8;

    fn encode(self) -> u8 {
        u8::from(self)
    }

    fn decode(raw: u8) -> Option<bool> {
        match raw {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Schema for char {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar("char", 4)
    }
}

impl Encoded for char {
    type Raw = u32;

    fn encode(self) -> u32 {
        u32::from(self)
    }

    fn decode(raw: u32) -> Option<char> {
        char::from_u32(raw)
    }
}

/// The stored form of an `Option<T>`: a tag of the size of `R`, then the value. `None` is all
/// zero (tag and value); `Some` has a tag of first byte 1, the rest zero. Making the tag as large as the value keeps the
/// `repr(C)` struct free of padding whatever `R` is.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OptionRaw<R> {
    tag: R,
    value: R,
}

impl<R> core::fmt::Debug for OptionRaw<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OptionRaw { .. }")
    }
}

// SAFETY: `repr(C)` of two fields of the same `Persistent` type: the size of a type is a multiple
// of its alignment, so the second field starts right after the first and nothing follows it (no
// padding); every bit pattern of each field is valid; no pointer.
unsafe impl<R: Persistent> Persistent for OptionRaw<R> {
    const __LAYOUT_CHECK: () = {
        let () = R::__LAYOUT_CHECK;
        assert!(
            core::mem::size_of::<R>() > 0,
            "POption<T> needs a stored form of at least one byte to hold its tag"
        );
    };
}

impl<R: Persistent> Schema for OptionRaw<R> {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic(
            "OptionRaw",
            core::mem::size_of::<Self>(),
            vec![("R", d.of::<R>())],
        )
    }
}

/// The all-zero `R` (valid: `R: Persistent`).
fn zeroed<R: Persistent>() -> R {
    // SAFETY: every bit pattern, all-zero included, is a valid `R` (`R: Persistent`).
    unsafe { core::mem::zeroed() }
}

impl<T: Encoded> Schema for Option<T> {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic(
            "Option",
            core::mem::size_of::<OptionRaw<T::Raw>>(),
            vec![("T", d.of::<T>())],
        )
    }
}

impl<T: Encoded> Encoded for Option<T> {
    type Raw = OptionRaw<T::Raw>;

    fn encode(self) -> OptionRaw<T::Raw> {
        let () = <OptionRaw<T::Raw> as Persistent>::__LAYOUT_CHECK;
        match self {
            None => OptionRaw {
                tag: zeroed(),
                value: zeroed(),
            },
            Some(v) => {
                let mut tag = zeroed::<T::Raw>();
                // SAFETY: `T::Raw` is at least one byte (the layout check above), so its first
                // byte is inside `tag`; every bit pattern of it is valid (`Persistent`).
                unsafe { (&mut tag as *mut T::Raw).cast::<u8>().write(1) };
                OptionRaw {
                    tag,
                    value: v.encode(),
                }
            }
        }
    }

    fn decode(raw: OptionRaw<T::Raw>) -> Option<Option<T>> {
        let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
        match bytes_of(&raw.tag).split_first() {
            // `None` is stored all-zero, value included: other bytes there are damage.
            Some((0, rest)) if zero(rest) && zero(bytes_of(&raw.value)) => Some(None),
            Some((1, rest)) if zero(rest) => T::decode(raw.value).map(Some),
            _ => None,
        }
    }
}

/// A stored value read back as a [`Checked`] type held something that is not a value of it (a
/// corrupted discriminant, a `bool` byte of 7, a bad `Option` tag): damaged pool data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// The type that was read (`core::any::type_name`).
    pub type_name: &'static str,
    /// The first (at most 16) stored bytes, for the report.
    pub bytes: Vec<u8>,
}

impl core::fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "corrupt data: stored bytes ")?;
        for b in &self.bytes {
            write!(f, "{b:02x}")?;
        }
        write!(f, " are not a valid `{}`", self.type_name)
    }
}

impl std::error::Error for InvalidValue {}

/// A `T` stored in its raw form: the field type for enums, `bool`, `char` and `Option` in a
/// `Persistent` struct (and, inside a `PCell`, a mutable one). Reading it decodes, checked.
#[repr(transparent)]
pub struct Checked<T: Encoded> {
    raw: T::Raw,
    _value: PhantomData<fn() -> T>,
}

/// A checked `bool` (stored as one byte, 0 or 1).
pub type PBool = Checked<bool>;

/// A checked `Option<T>` (stored as [`OptionRaw`]: a tag as large as `T`'s stored form, then
/// the value).
pub type POption<T> = Checked<Option<T>>;

impl<T: Encoded> Clone for Checked<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Encoded> Copy for Checked<T> {}

impl<T: Encoded + core::fmt::Debug> core::fmt::Debug for Checked<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.get() {
            Ok(v) => f.debug_tuple("Checked").field(&v).finish(),
            Err(e) => f.debug_tuple("Checked").field(&format_args!("{e}")).finish(),
        }
    }
}

impl<T: Encoded> Default for Checked<T> {
    /// The all-zero stored form (`false`, `None`, discriminant 0 — which need not be a variant).
    fn default() -> Self {
        Checked::from_raw(zeroed())
    }
}

impl<T: Encoded> PartialEq for Checked<T> {
    fn eq(&self, other: &Self) -> bool {
        bytes_of(&self.raw) == bytes_of(&other.raw)
    }
}

impl<T: Encoded> Eq for Checked<T> {}

// SAFETY: `repr(transparent)` over `T::Raw` (a zero-sized `PhantomData` beside it), which is
// `Persistent`: same bytes, valid for every bit pattern (decoding is checked), no padding, no
// pointer.
unsafe impl<T: Encoded> Persistent for Checked<T> {
    const __LAYOUT_CHECK: () = <T::Raw as Persistent>::__LAYOUT_CHECK;
}

impl<T: Encoded> Schema for Checked<T> {
    /// The value type's own schema: a `Checked<State>` field reads as `State`.
    fn describe(d: &mut Describer) -> TypeSchema {
        d.of::<T>()
    }
}

impl<T: Encoded> Checked<T> {
    /// Stores `value`.
    pub fn new(value: T) -> Self {
        Checked::from_raw(value.encode())
    }

    /// Wraps a raw stored form as it is (it may not be a valid `T`: [`get`](Checked::get)
    /// checks).
    pub fn from_raw(raw: T::Raw) -> Self {
        Checked {
            raw,
            _value: PhantomData,
        }
    }

    /// The raw stored form.
    pub fn raw(self) -> T::Raw {
        self.raw
    }

    /// The stored value.
    ///
    /// # Errors
    ///
    /// [`InvalidValue`] when the stored bytes are not the encoding of any `T` (damaged data).
    pub fn get(self) -> Result<T, InvalidValue> {
        T::decode(self.raw).ok_or_else(|| InvalidValue {
            type_name: core::any::type_name::<T>(),
            bytes: bytes_of(&self.raw).iter().copied().take(16).collect(),
        })
    }
}

impl<T: Encoded> From<T> for Checked<T> {
    fn from(value: T) -> Self {
        Checked::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_encodings_are_the_documented_bytes() {
        let some = Checked::new(Some(0x0102_u16));
        assert_eq!(bytes_of(&some), [1, 0, 2, 1]);
        assert_eq!(bytes_of(&Checked::<Option<u16>>::new(None)), [0; 4]);
        assert_eq!(some.get(), Ok(Some(0x0102)));
        // A None with bytes in its value, a tag of 2 or a tag with a second byte: damage.
        for raw in [[0u8, 0, 0, 1], [2, 0, 0, 0], [1, 1, 0, 0]] {
            let bad = Checked::<Option<u16>>::from_raw(crate::read_from_bytes(&raw).unwrap());
            assert_eq!(bad.get().unwrap_err().bytes, raw);
        }
        let nested = Checked::new(Some(Some(true)));
        assert_eq!(bytes_of(&nested), [1, 0, 1, 1]);
        assert_eq!(nested.get(), Ok(Some(Some(true))));
        assert_eq!(
            Checked::<bool>::from_raw(2).get().unwrap_err().to_string(),
            "corrupt data: stored bytes 02 are not a valid `bool`"
        );
    }
}
