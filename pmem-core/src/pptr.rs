//! [`PPtr<T>`]: an 8-byte persistent pointer that survives remapping.
//!
//! Bit layout of the stored `u64`:
//!
//! | bits   | field                                                                 |
//! |--------|-----------------------------------------------------------------------|
//! | 0..48  | byte offset from the pool base (the pool header occupies 0..4096, so 0 is never a valid object) |
//! | 48..64 | the pool's `pptr_tag` (non-zero, from the pool header)                |
//!
//! The all-zero value is null. A pointer is turned into an address only by
//! [`Region::resolve`](crate::Region::resolve), which checks the tag (cross-pool misuse gives
//! [`Error::WrongPool`](crate::Error::WrongPool)), the bounds of the data area and the alignment.
//! Pools open at the same time in one process always have distinct tags: opening a pool whose tag
//! collides with an open one fails with [`Error::TagCollision`](crate::Error::TagCollision).

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;

use crate::persistent::Persistent;

/// Bits of a `PPtr` that hold the offset.
pub const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// An offset pointer to a `T` inside a pool: 8 bytes, null-able, valid at any mapping address.
#[repr(transparent)]
pub struct PPtr<T> {
    raw: u64,
    _points_to: PhantomData<fn() -> T>,
}

const _: () = assert!(core::mem::size_of::<PPtr<[u8; 4096]>>() == 8);

// SAFETY: `repr(transparent)` over a `u64`: every bit pattern is a valid (possibly dangling or
// foreign) pointer value, which `Region::resolve` checks before any use; no padding; it is an
// offset, not a virtual address.
unsafe impl<T: Persistent> Persistent for PPtr<T> {}

impl<T> PPtr<T> {
    /// The null pointer.
    pub const fn null() -> Self {
        PPtr {
            raw: 0,
            _points_to: PhantomData,
        }
    }

    /// Rebuilds a pointer from its stored `u64` (no check; checks happen at resolve).
    pub const fn from_raw(raw: u64) -> Self {
        PPtr {
            raw,
            _points_to: PhantomData,
        }
    }

    /// Builds a pointer from a pool tag and an offset (no check; checks happen at resolve).
    /// Offsets are truncated to 48 bits.
    pub const fn from_parts(tag: u16, offset: u64) -> Self {
        PPtr::from_raw(((tag as u64) << OFFSET_BITS) | (offset & OFFSET_MASK))
    }

    /// The stored `u64`.
    pub const fn to_raw(self) -> u64 {
        self.raw
    }

    /// Whether this is null.
    pub const fn is_null(self) -> bool {
        self.raw == 0
    }

    /// Byte offset from the pool base.
    pub const fn offset(self) -> u64 {
        self.raw & OFFSET_MASK
    }

    /// The pool tag carried in the high bits.
    pub const fn tag(self) -> u16 {
        (self.raw >> OFFSET_BITS) as u16
    }

    /// The same address viewed as a pointer to `U`.
    pub const fn cast<U>(self) -> PPtr<U> {
        PPtr::from_raw(self.raw)
    }
}

impl<T> Clone for PPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PPtr<T> {}
impl<T> PartialEq for PPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl<T> Eq for PPtr<T> {}
impl<T> Hash for PPtr<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.hash(state);
    }
}
impl<T> Default for PPtr<T> {
    fn default() -> Self {
        PPtr::null()
    }
}
impl<T> fmt::Debug for PPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_null() {
            write!(f, "PPtr(null)")
        } else {
            write!(f, "PPtr({:#06x}:{:#x})", self.tag(), self.offset())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_layout() {
        let p = PPtr::<u64>::from_parts(0xffff, (1 << 48) + 5);
        assert_eq!(
            (p.tag(), p.offset()),
            (0xffff, 5),
            "offsets are truncated to 48 bits"
        );
        assert!(PPtr::<u64>::null().is_null());
        assert_eq!(crate::read_from_bytes::<PPtr<u64>>(crate::bytes_of(&p)), Some(p));
    }
}
