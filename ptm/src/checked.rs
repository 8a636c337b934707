//! Checked reads of cells holding [`Checked<T>`] (enums, `bool`, `char`, `Option`): a stored
//! value that is not a `T` is [`Error::CorruptData`](crate::Error::CorruptData), never an
//! invalid `T`.

use pmem_core::{Checked, Encoded};

use crate::cell::PCell;
use crate::error::Result;
use crate::tx::Transaction;

impl<T: Encoded> PCell<Checked<T>> {
    /// The stored value, decoded and checked.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptData`](crate::Error::CorruptData) when the stored bytes are no `T` (an
    /// enum discriminant no variant has, a `bool` byte other than 0 or 1, a bad `Option` tag).
    ///
    /// # Examples
    ///
    /// ```
    /// use ptm::{Checked, PBool, PCell, Persistent, Pool, PoolOptions, POption};
    ///
    /// #[derive(Persistent, Clone, Copy, Debug, PartialEq)]
    /// #[repr(u8)]
    /// enum State {
    ///     Todo,
    ///     Done,
    /// }
    ///
    /// #[derive(Persistent)]
    /// #[repr(C)]
    /// struct Root {
    ///     state: PCell<Checked<State>>,
    ///     urgent: PCell<PBool>,
    ///     _pad: [u8; 6],
    ///     due: PCell<POption<u64>>,
    /// }
    ///
    /// # fn main() -> ptm::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let pool = Pool::<Root>::create(dir.path().join("t.pool"), 8 << 20, &PoolOptions::new())?;
    /// pool.transaction(|tx, r| {
    ///     // All-zero is `Todo`, `false` and `None`.
    ///     assert_eq!(r.state.load(tx)?, State::Todo);
    ///     r.state.store(tx, State::Done)?;
    ///     r.urgent.store(tx, true)?;
    ///     r.due.store(tx, Some(1_700_000_000))
    /// })?;
    /// let (state, due) = pool.transaction(|tx, r| Ok::<_, ptm::Error>((r.state.load(tx)?, r.due.load(tx)?)))?;
    /// assert_eq!((state, due), (State::Done, Some(1_700_000_000)));
    /// # Ok(()) }
    /// ```
    pub fn load(&self, tx: &Transaction<'_>) -> Result<T> {
        Ok(self.get(tx).get()?)
    }

    /// Stores `value` (logged first, as [`set`](PCell::set)).
    ///
    /// # Errors
    ///
    /// As [`set`](PCell::set).
    pub fn store(&self, tx: &Transaction<'_>, value: T) -> Result<()> {
        self.set(tx, Checked::new(value))
    }
}
