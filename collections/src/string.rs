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

    /// Number of bytes the buffer holds without growing.
    pub fn capacity(&self, tx: &Transaction<'_>) -> u64 {
        self.bytes.capacity(tx)
    }

    /// Makes room for at least `additional` more bytes (`String::reserve`). 2 drains when it
    /// grows, 0 when not.
    ///
    /// # Errors
    ///
    /// As [`PVec::reserve`].
    pub fn reserve(&self, tx: &Transaction<'_>, additional: u64) -> Result<()> {
        raw::mutating(tx, self)?;
        self.bytes.reserve(tx, additional)
    }

    /// The contents and whether `at` is a char boundary of them (`at <= len`).
    fn at_boundary(&self, tx: &Transaction<'_>, at: u64) -> Result<(String, bool)> {
        let s = self.as_string(tx)?;
        let ok = usize::try_from(at).is_ok_and(|a| s.is_char_boundary(a));
        Ok((s, ok))
    }

    /// Removes the last char and returns it (`String::pop`). 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// As [`PVec::truncate`].
    pub fn pop(&self, tx: &Transaction<'_>) -> Result<Option<char>> {
        raw::mutating(tx, self)?;
        let s = self.as_string(tx)?;
        let Some(c) = s.chars().next_back() else {
            return Ok(None);
        };
        self.bytes.truncate(tx, (s.len() - c.len_utf8()) as u64)?;
        Ok(Some(c))
    }

    /// Shortens the string to `new_len` bytes (`String::truncate`; nothing happens if it is not
    /// longer). Returns `false` and changes nothing if `new_len` is not on a char boundary
    /// (where std panics). 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PVec::truncate`].
    pub fn truncate(&self, tx: &Transaction<'_>, new_len: u64) -> Result<bool> {
        raw::mutating(tx, self)?;
        if new_len >= self.len(tx) {
            return Ok(true);
        }
        if !self.at_boundary(tx, new_len)?.1 {
            return Ok(false);
        }
        self.bytes.truncate(tx, new_len)?;
        Ok(true)
    }

    /// Inserts `s` at byte position `at` (`String::insert_str`). Returns `false` and changes
    /// nothing if `at` is past the end or not on a char boundary (where std panics). 2 drains;
    /// the bytes after `at` are logged.
    ///
    /// # Errors
    ///
    /// As [`PVec::insert`].
    pub fn insert_str(&self, tx: &Transaction<'_>, at: u64, s: &str) -> Result<bool> {
        raw::mutating(tx, self)?;
        if at > self.len(tx) || !self.at_boundary(tx, at)?.1 {
            return Ok(false);
        }
        let tail = self.bytes.copy_range(tx, at, self.len(tx))?;
        self.bytes.write_tail(tx, at, s.bytes().chain(tail).collect())?;
        Ok(true)
    }

    /// Inserts `c` at byte position `at` (`String::insert`); `false` as for
    /// [`insert_str`](PString::insert_str).
    ///
    /// # Errors
    ///
    /// As [`PVec::insert`].
    pub fn insert(&self, tx: &Transaction<'_>, at: u64, c: char) -> Result<bool> {
        self.insert_str(tx, at, c.encode_utf8(&mut [0; 4]))
    }

    /// Removes the char at byte position `at` and returns it (`String::remove`); `None` if
    /// `at` is not the start of a char (where std panics). 2 drains; the bytes after it are
    /// logged.
    ///
    /// # Errors
    ///
    /// As [`PVec::remove`].
    pub fn remove(&self, tx: &Transaction<'_>, at: u64) -> Result<Option<char>> {
        raw::mutating(tx, self)?;
        let (s, ok) = self.at_boundary(tx, at)?;
        let Some(c) = s.get(at as usize..).and_then(|t| t.chars().next()).filter(|_| ok) else {
            return Ok(None);
        };
        self.bytes.drain(tx, at..at + c.len_utf8() as u64)?;
        Ok(Some(c))
    }

    /// Keeps only the chars for which `keep` returns `true` (`String::retain`; called once per
    /// char, in order). 2 drains (0 when it keeps everything).
    ///
    /// # Errors
    ///
    /// As [`PVec::retain`].
    pub fn retain(&self, tx: &Transaction<'_>, mut keep: impl FnMut(char) -> bool) -> Result<()> {
        raw::mutating(tx, self)?;
        let s = self.as_string(tx)?;
        let kept: String = s.chars().filter(|&c| keep(c)).collect();
        if kept.len() == s.len() {
            return Ok(());
        }
        let common = s.bytes().zip(kept.bytes()).take_while(|(a, b)| a == b).count();
        self.bytes
            .write_tail(tx, common as u64, kept.bytes().skip(common).collect())
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

    /// Calls `f` with the contents as a `&str` (a scoped `String::as_str`) and returns what it
    /// returns. 0 drains. The `&str` is a **copy** of the bytes, never a view of pool memory
    /// (which a store of this transaction, made from `f` itself, could change while it is
    /// borrowed): up to 256 bytes are read into a buffer on the stack, so a short string is
    /// read without allocating; longer ones into one heap buffer. Bytes that are not UTF-8 (only
    /// in a damaged pool) are replaced as by [`as_string`](PString::as_string).
    ///
    /// ```
    /// # use ptm::{Error, Persistent, Pool};
    /// # use ptm_collections::PString;
    /// # #[derive(Persistent)]
    /// # #[repr(C)]
    /// # struct Root { name: PString }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let pool = Pool::<Root>::create(dir.path().join("s.pool"), 8 << 20, &Default::default())?;
    /// pool.transaction(|tx, r| {
    ///     r.name.push_str(tx, "ada lovelace")?;
    ///     assert!(r.name.with_str(tx, |s| s.starts_with("ada"))?);
    ///     Ok::<_, Error>(())
    /// })?;
    /// # Ok::<_, Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn with_str<R>(&self, tx: &Transaction<'_>, f: impl FnOnce(&str) -> R) -> Result<R> {
        tx.check_live(self)?;
        let len = self.bytes.len(tx);
        let mut stack = [0u8; 256];
        let heap;
        let bytes: &[u8] = match usize::try_from(len) {
            Ok(n) if n <= stack.len() => {
                self.bytes.contents_into(tx, &mut stack[..n])?;
                &stack[..n]
            }
            _ => {
                heap = self.bytes.to_vec(tx)?;
                &heap
            }
        };
        Ok(match std::str::from_utf8(bytes) {
            Ok(s) => f(s),
            Err(_) => f(&String::from_utf8_lossy(bytes)),
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
