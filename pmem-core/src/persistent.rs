//! The [`Persistent`] marker: what may be stored in a pool.
//!
//! A pool outlives the process that wrote it and may be reopened at another address, by another
//! build, or after corruption. A value stored in it must therefore be meaningful as plain bytes:
//!
//! | stored type            | why it is rejected                                              |
//! |------------------------|-----------------------------------------------------------------|
//! | `&T`, `&mut T`, `*const T`, `*mut T` | a virtual address, meaningless after remap (cross-heap pollution) |
//! | `Box`, `Vec`, `String`, `Rc`, `Arc`   | owns volatile heap memory                          |
//! | `File`, sockets, guards | a handle to a volatile resource                                |
//! | `bool`, `char`, enums, `Option<T>` | not every bit pattern is a valid value: a corrupt pool would be UB; store them as [`Checked<T>`](crate::Checked), decoded checked |
//! | structs with padding   | padding bytes are uninitialised: logging or checksumming them is UB |
//!
//! Use [`PPtr`](crate::PPtr) for links inside a pool and `#[derive(Persistent)]` for your own
//! `#[repr(C)]` structs: the derive checks every field and the absence of padding at compile time.

use core::marker::PhantomData;
use core::num::Wrapping;

/// A type whose values may be stored in persistent memory.
///
/// Implement it with `#[derive(Persistent)]` on a `#[repr(C)]` or `#[repr(transparent)]` struct
/// whose fields are all `Persistent`; the derive rejects anything else at compile time. The
/// derive also implements the supertrait [`Schema`](crate::schema::Schema), the description of
/// the stored shape that pools check at open; a manual `unsafe impl Persistent` needs a manual
/// `Schema` impl beside it.
///
/// # Safety
///
/// Implementing `Persistent` for a type `T` promises all of:
/// - **every bit pattern** of `size_of::<T>()` bytes is a valid `T` (reading a corrupted pool
///   through the safe API must never be undefined behaviour);
/// - `T` has **no padding bytes**, so its storage can be copied, logged and checksummed as bytes;
/// - `T` holds **no virtual address** (reference, raw pointer, function pointer) and **owns no
///   volatile resource** (heap memory, file descriptor, lock guard), directly or in any field;
/// - `T` has a fixed, declared layout (`#[repr(C)]`, `#[repr(transparent)]`, a primitive or an
///   array), so the bytes mean the same thing to every build that opens the pool.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in persistent memory",
    label = "`{Self}` is not `Persistent`",
    note = "pool data must be valid for every bit pattern and hold no virtual addresses or volatile resources: \
            use `PPtr<T>` instead of references, pointers, `Box`, `Vec`, `String`, `Rc` or `Arc`, \
            and `Checked<T>` (`PBool`, `POption<T>`, a derived `#[repr(u8)]` enum) for `bool`, `char`, \
            enums and `Option`: they are checked when read"
)]
pub unsafe trait Persistent: crate::schema::Schema + Sized + 'static {
    /// Compile-time layout check, evaluated (as a post-monomorphization assertion) wherever a
    /// value is viewed as bytes. Generic wrappers whose layout depends on their parameters
    /// (`PMutex<T>`) assert here that they have no padding; the derive and the array impl
    /// include their fields'. Not part of the public API.
    #[doc(hidden)]
    const __LAYOUT_CHECK: () = ();
}

macro_rules! persistent_primitives {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: a primitive integer or float: every bit pattern is valid, no padding, no pointer.
        unsafe impl Persistent for $t {}
    )*};
}

persistent_primitives!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

// SAFETY: zero-sized; no bytes, hence no invalid bit pattern, padding or pointer.
unsafe impl Persistent for () {}

// SAFETY: an array of `Persistent` elements has no padding between elements (size is a multiple
// of alignment), every element accepts every bit pattern, and none holds a pointer.
unsafe impl<T: Persistent, const N: usize> Persistent for [T; N] {
    const __LAYOUT_CHECK: () = T::__LAYOUT_CHECK;
}

// SAFETY: zero-sized marker; stores nothing.
unsafe impl<T: ?Sized + 'static> Persistent for PhantomData<T> {}

// SAFETY: `Wrapping<T>` is `#[repr(transparent)]` over `T`, which is `Persistent`.
unsafe impl<T: Persistent> Persistent for Wrapping<T> {
    const __LAYOUT_CHECK: () = T::__LAYOUT_CHECK;
}

/// Views a `Persistent` value as its bytes.
///
/// Sound for every `Persistent` type because the trait promises there are no padding bytes.
pub fn bytes_of<T: Persistent>(value: &T) -> &[u8] {
    let () = T::__LAYOUT_CHECK;
    // SAFETY: `T: Persistent` has no padding, so all `size_of::<T>()` bytes behind `value` are
    // initialised; the slice borrows `value` and so cannot outlive it.
    unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
}

/// Reads a `T` from the start of `bytes`, whatever their alignment.
///
/// Returns `None` when `bytes` is shorter than `size_of::<T>()`.
pub fn read_from_bytes<T: Persistent>(bytes: &[u8]) -> Option<T> {
    let () = T::__LAYOUT_CHECK;
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above; `read_unaligned` tolerates any alignment; every bit
    // pattern is a valid `T` because `T: Persistent`.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}
