//! [`PString`]: a growable UTF-8 string in the pool.

use std::fmt;

use ptm::{Persistent, Result, Transaction};

use crate::{raw, PVec};

/// A persistent string (a pool's `String`): a [`PVec<u8>`] that only ever receives whole UTF-8
/// strings. Same costs as [`PVec`]: 2 drains per change, growth included; reads 0.
///
/// `!Sync`: share it under a [`PMutex`](ptm::PMutex).
#[repr(transparent)]
pub struct PString {
    bytes: PVec<u8>,
}

// SAFETY: `repr(transparent)` over `PVec<u8>`, which is `Persistent`. Any bytes are accepted:
// reading converts lossily, so corrupted contents cannot produce an invalid `String`.
unsafe impl Persistent for PString {}

impl PString {
    /// Length in bytes.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.bytes.len(tx)
    }

    /// Whether the string is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.bytes.is_empty(tx)
    }

    /// Appends `s`. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PVec::extend`].
    pub fn push_str(&self, tx: &Transaction<'_>, s: &str) -> Result<()> {
        raw::mutating(tx, self)?;
        self.bytes.extend(tx, s.bytes())
    }

    /// Appends `c`. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PVec::extend`].
    pub fn push(&self, tx: &Transaction<'_>, c: char) -> Result<()> {
        raw::mutating(tx, self)?;
        self.push_str(tx, c.encode_utf8(&mut [0; 4]))
    }

    /// Replaces the contents with `s`, keeping the buffer when it is large enough. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PVec::extend`].
    pub fn set(&self, tx: &Transaction<'_>, s: &str) -> Result<()> {
        raw::mutating(tx, self)?;
        self.bytes.assign(tx, s.bytes())
    }

    /// A copy of the contents (invalid UTF-8, only possible in a corrupted pool, is replaced by
    /// U+FFFD).
    ///
    /// # Errors
    ///
    /// As [`PVec::get`].
    pub fn as_string(&self, tx: &Transaction<'_>) -> Result<String> {
        tx.check_live(self)?;
        let v = self.bytes.to_vec(tx)?;
        Ok(match String::from_utf8(v) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Empties the string and frees its buffer (at commit). 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PVec::clear`].
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.bytes.clear(tx)
    }

    /// Frees everything the string owns (the same as [`clear`](PString::clear)).
    ///
    /// # Errors
    ///
    /// As [`PVec::clear`].
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.bytes.clear(tx)
    }

    /// Frees the buffer without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`](crate::PValue::free_owned): the string is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.bytes.release(tx) }
    }

    /// The bytes, as the vector they are.
    pub(crate) fn as_bytes_vec(&self) -> &PVec<u8> {
        &self.bytes
    }

    /// The string whose bytes are `bytes` (which must hold UTF-8).
    pub(crate) fn from_bytes_vec(bytes: PVec<u8>) -> Self {
        PString { bytes }
    }

    /// The pool offset of the buffer, if any (for reachability checks).
    pub fn buffer_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        self.bytes.buffer_offset(tx)
    }
}

impl fmt::Debug for PString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PString { .. }")
    }
}
