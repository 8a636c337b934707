//! Mutable persistent state: [`PCell`] (single-threaded, like `Cell`), [`PMutex`], [`PRwLock`]
//! and [`PSharedLock`] (held until the transaction ends, reset on reopen). Every mutation goes through a
//! transaction, which logs the old bytes first.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::atomic::AtomicU64;

use pmem_core::Persistent;

use crate::error::Result;
use crate::tx::{Loggable, Transaction};

/// A persistent `Cell`: a `Copy` value read and replaced inside transactions.
///
/// `!Sync` like `Cell`: share it between threads by putting it under a [`PMutex`].
#[repr(transparent)]
pub struct PCell<T> {
    value: UnsafeCell<T>,
}

// SAFETY: `repr(transparent)` over `UnsafeCell<T>`, itself `repr(transparent)` over `T`, which is
// `Persistent`: same bytes, same validity, no padding, no pointers.
unsafe impl<T: Persistent> Persistent for PCell<T> {
    const __LAYOUT_CHECK: () = T::__LAYOUT_CHECK;
}

// SAFETY: the range is the cell's own bytes (inside the `UnsafeCell`); `PCell` is `!Sync`, so only
// the owning thread can reach it.
unsafe impl<T: Persistent> Loggable for PCell<T> {
    fn log_range(&self) -> (usize, usize) {
        (self.value.get() as usize, size_of::<T>())
    }
}

impl<T: Persistent + Copy> PCell<T> {
    /// The current value.
    pub fn get(&self, _tx: &Transaction<'_>) -> T {
        // SAFETY: the cell is `!Sync`, so no other thread writes it; no reference into it is
        // ever handed out, so reading a copy cannot alias a `&mut`; any bit pattern is a `T`.
        unsafe { self.value.get().read() }
    }

    /// Replaces the value: logs the old one (one drain unless already logged in this
    /// transaction; inside a [`snapshot`](Transaction::snapshot) closure that drain also covers
    /// what the batch has added so far, so the store never precedes its undo entry), then stores.
    ///
    /// # Errors
    ///
    /// [`Error::NotInPool`](crate::Error::NotInPool) if the cell is not in `tx`'s pool;
    /// [`Error::OutOfSpace`](crate::Error::OutOfSpace) when the log cannot grow;
    /// [`Error::StaleReference`](crate::Error::StaleReference) if the cell is reached through a
    /// stale [`Nested`](crate::Nested) reference (a field of a handle its collection moved).
    pub fn set(&self, tx: &Transaction<'_>, value: T) -> Result<()> {
        tx.check_live_addr(self.value.get() as usize)?;
        tx.log_addr(self.value.get() as usize, size_of::<T>())?;
        // SAFETY: logged and ordered (`log_addr` drains even inside a batch); `!Sync` excludes
        // other threads; no reference into the cell exists.
        unsafe { self.value.get().write(value) };
        Ok(())
    }

    /// As [`set`](PCell::set), without the stale-reference check: for a collection moving the
    /// handles it stores, whose bytes may still be covered by a stale [`Nested`](crate::Nested)
    /// reference it has just invalidated (the collection checked itself, at the start of the
    /// operation, with [`Transaction::check_live`]). Everything else uses `set`.
    ///
    /// # Errors
    ///
    /// As [`set`](PCell::set), except `StaleReference`.
    pub fn set_unchecked(&self, tx: &Transaction<'_>, value: T) -> Result<()> {
        tx.log_addr(self.value.get() as usize, size_of::<T>())?;
        // SAFETY: logged and ordered (`log_addr` drains even inside a batch); `!Sync` excludes
        // other threads; no reference into the cell exists.
        unsafe { self.value.get().write(value) };
        Ok(())
    }

    /// Replaces the value with `f(old)` and returns the new value.
    ///
    /// # Errors
    ///
    /// As [`set`](PCell::set).
    pub fn update(&self, tx: &Transaction<'_>, f: impl FnOnce(T) -> T) -> Result<T> {
        let v = f(self.get(tx));
        self.set(tx, v)?;
        Ok(v)
    }
}

impl<T> std::fmt::Debug for PCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PCell { .. }")
    }
}

/// A persistent lock over a `T`, generic over its lock word's protocol `R` (lock_api's pattern:
/// one lock algorithm, the word's protocol as a parameter). Use it through its three aliases:
/// [`PMutex`] (exclusive holds), [`PRwLock`] (shared reads of a copy, exclusive writes) and
/// [`PSharedLock`] (shared or exclusive holds handing out references).
///
/// Every hold lasts until the transaction ends (two-phase locking), so no other transaction sees
/// uncommitted changes. The lock word is volatile state: every reopen of the pool frees all locks
/// (the word carries the open generation). On media it is 8 bytes of lock word followed by the
/// value, whatever `R` is.
#[repr(C)]
pub struct PLock<R: RawLock, T> {
    word: AtomicU64,
    value: UnsafeCell<T>,
    _raw: PhantomData<R>,
}

mod sealed {
    use std::sync::atomic::AtomicU64;

    use crate::error::Result;
    use crate::tx::Transaction;

    /// The lock word operations behind [`RawLock`](super::RawLock) (sealed: only ptm's lock
    /// words implement it).
    pub trait Sealed {
        /// The alias's name, for `Debug` and layout errors.
        const NAME: &'static str;
        /// The layout check's message when `T` would leave padding.
        const PADDING: &'static str;
        /// Takes the exclusive hold of `word` for the rest of `tx`.
        fn lock_exclusive(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()>;
        /// Takes a shared hold of `word` (or a stronger one) for the rest of `tx`.
        fn lock_shared(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()>;
    }
}

/// The protocol of a persistent lock word: what [`PLock`] is generic over. Sealed: the
/// implementations are [`MutexWord`], [`RwWord`] and [`SxWord`].
///
/// # Safety
///
/// - an exclusive hold, once granted, excludes every hold of other transactions until the
///   holding transaction ends;
/// - a shared hold excludes exclusive holds of other transactions until the holding transaction
///   ends;
/// - any bit pattern of the word is a valid state (a foreign generation means unlocked; a garbage
///   holder only makes holds time out), so the word may be read from an untrusted pool image.
pub unsafe trait RawLock: sealed::Sealed + Send + Sync + 'static {}

/// The lock word of a [`PMutex`]: exclusive holds only.
#[derive(Debug)]
pub enum MutexWord {}

/// The lock word of a [`PRwLock`]: shared holds for reads, an exclusive hold for writes.
#[derive(Debug)]
pub enum RwWord {}

/// The lock word of a [`PSharedLock`]: shared/exclusive holds, writer-preferring (see
/// [`PSharedLock`]).
#[derive(Debug)]
pub enum SxWord {}

impl sealed::Sealed for MutexWord {
    const NAME: &'static str = "PMutex";
    const PADDING: &'static str = "PMutex<T> needs size_of::<T>() to be a multiple of 8 (pad T explicitly)";
    fn lock_exclusive(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()> {
        tx.lock_mutex(word)
    }
    fn lock_shared(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()> {
        tx.lock_mutex(word)
    }
}
// SAFETY: `lock_mutex` grants exclusive holds only, kept until the transaction ends (released
// at commit or abort); a word of another generation reads as unlocked.
unsafe impl RawLock for MutexWord {}

impl sealed::Sealed for RwWord {
    const NAME: &'static str = "PRwLock";
    const PADDING: &'static str = "PRwLock<T> needs size_of::<T>() to be a multiple of 8 (pad T explicitly)";
    fn lock_exclusive(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()> {
        tx.lock_write(word)
    }
    fn lock_shared(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()> {
        tx.lock_read(word)
    }
}
// SAFETY: `lock_write` grants a hold that excludes all others, `lock_read` one that excludes
// writers, both kept until the transaction ends; a word of another generation reads as unlocked.
unsafe impl RawLock for RwWord {}

impl sealed::Sealed for SxWord {
    const NAME: &'static str = "PSharedLock";
    const PADDING: &'static str =
        "PSharedLock<T> needs size_of::<T>() to be a multiple of 8 (pad T explicitly)";
    fn lock_exclusive(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()> {
        tx.lock_exclusive(word)
    }
    fn lock_shared(tx: &Transaction<'_>, word: &AtomicU64) -> Result<()> {
        tx.lock_shared(word)
    }
}
// SAFETY: `lock_exclusive` grants a hold that excludes all others, `lock_shared` one that
// excludes exclusive holds, both kept until the transaction ends; a word of another generation
// reads as unlocked.
unsafe impl RawLock for SxWord {}

// SAFETY: `repr(C)` of a `u64`-sized atomic (any bit pattern: see `RawLock`'s contract), then
// `T: Persistent` (a zero-sized marker adds nothing); the word is 8-byte aligned, and `T`'s size
// is asserted (on use) to keep the struct free of padding.
unsafe impl<R: RawLock, T: Persistent> Persistent for PLock<R, T> {
    const __LAYOUT_CHECK: () = {
        let () = T::__LAYOUT_CHECK;
        if size_of::<PLock<R, T>>() != 8 + size_of::<T>() {
            panic!("{}", R::PADDING);
        }
    };
}

impl<R: RawLock, T: Persistent> PLock<R, T> {
    /// Checks `T`'s layout and that the lock lies in `tx`'s pool.
    fn check(&self, tx: &Transaction<'_>) -> Result<()> {
        let () = <Self as Persistent>::__LAYOUT_CHECK;
        tx.shared()
            .offset_of(self as *const Self as usize, size_of::<Self>())
            .map(|_| ())
    }

    /// Takes the exclusive hold for the rest of the transaction and returns the value.
    fn exclusive<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        self.check(tx)?;
        R::lock_exclusive(tx, &self.word)?;
        // SAFETY: the exclusive hold excludes every other transaction until this one ends
        // (`RawLock`'s contract), and the reference cannot outlive `'t` (bounded by the
        // transaction).
        Ok(unsafe { self.value_unchecked() })
    }

    /// Takes a shared hold for the rest of the transaction and returns the value.
    ///
    /// # Safety
    ///
    /// Other transactions may hold the lock shared at the same time: until the transaction ends,
    /// the reference must be used only to read (or `T` must be `Sync` and read only through
    /// `&T`), and writes of this transaction need the exclusive hold first.
    unsafe fn shared<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        self.check(tx)?;
        R::lock_shared(tx, &self.word)?;
        // SAFETY: the shared hold excludes writers of other transactions until this one ends
        // (`RawLock`'s contract); the caller only reads through the reference.
        Ok(unsafe { self.value_unchecked() })
    }

    /// The value, without taking a hold.
    ///
    /// # Safety
    ///
    /// - this transaction holds the lock (shared or exclusive) until the reference's lifetime
    ///   ends, and
    /// - under a shared hold, the caller only reads through the reference.
    unsafe fn value_unchecked(&self) -> &T {
        // SAFETY: the caller holds the lock as the contract above says, so no other
        // transaction writes the value while the reference lives.
        unsafe { &*self.value.get() }
    }
}

impl<R: RawLock, T> std::fmt::Debug for PLock<R, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {{ .. }}", R::NAME)
    }
}

/// A persistent mutex. [`lock`](PLock::lock) holds it until the transaction ends (two-phase
/// locking), so no other transaction sees uncommitted changes. Its lock word is volatile state:
/// every reopen of the pool frees all locks (the word carries the open generation).
///
/// Deadlock: lock in a consistent order (e.g. ascending address); otherwise a waiting
/// transaction fails with [`Error::LockTimeout`](crate::Error::LockTimeout) after the pool's lock
/// timeout and rolls back.
pub type PMutex<T> = PLock<MutexWord, T>;

const _: () = assert!(size_of::<PMutex<u64>>() == 16);

// SAFETY: the lock gives one transaction (one thread) at a time access to `T`, as `std::Mutex`.
unsafe impl<T: Send> Sync for PMutex<T> {}

impl<T: Persistent> PMutex<T> {
    /// Locks the mutex for the rest of the transaction and returns the protected value. Locking
    /// again in the same transaction returns at once.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout),
    /// [`Error::NotInPool`](crate::Error::NotInPool) for a mutex outside `tx`'s pool.
    pub fn lock<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        self.exclusive(tx)
    }
}

/// A persistent reader-writer lock over a `Copy` value: many transactions may read it at once,
/// one may write. Holds are kept until the transaction ends and reset on reopen, like
/// [`PMutex`]. Reads return copies, so no reference can alias a write.
pub type PRwLock<T> = PLock<RwWord, T>;

// SAFETY: readers only copy `T` out under a shared hold, writers store under the exclusive hold.
unsafe impl<T: Send + Sync> Sync for PRwLock<T> {}

impl<T: Persistent + Copy> PRwLock<T> {
    /// Takes a shared hold (until the transaction ends) and returns a copy of the value.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout), [`Error::NotInPool`](crate::Error::NotInPool).
    pub fn read(&self, tx: &Transaction<'_>) -> Result<T> {
        // SAFETY: only read (copied out) here; this transaction's own writes happen only inside
        // `write`, under the exclusive hold.
        Ok(*unsafe { self.shared(tx) }?)
    }

    /// Takes the exclusive hold (upgrading this transaction's shared hold if it has one),
    /// logs the old value and stores `value`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout), [`Error::LockUpgrade`](crate::Error::LockUpgrade),
    /// [`Error::NotInPool`](crate::Error::NotInPool), [`Error::OutOfSpace`](crate::Error::OutOfSpace).
    pub fn write(&self, tx: &Transaction<'_>, value: T) -> Result<()> {
        self.exclusive(tx)?;
        tx.log_addr(self.value.get() as usize, size_of::<T>())?;
        // SAFETY: the exclusive hold excludes every other transaction; logged first.
        unsafe { self.value.get().write(value) };
        Ok(())
    }

    /// Exclusive hold, then `value = f(value)`; returns the new value.
    ///
    /// # Errors
    ///
    /// As [`write`](PLock::write).
    pub fn update(&self, tx: &Transaction<'_>, f: impl FnOnce(T) -> T) -> Result<T> {
        let v = f(*self.exclusive(tx)?);
        self.write(tx, v)?;
        Ok(v)
    }
}

/// A persistent reader-writer lock over any persistent value, for concurrent collections: many
/// transactions may hold it shared at once, or one exclusively. Holds are kept until the
/// transaction ends and reset on reopen, like [`PMutex`]; the on-media layout is a [`PMutex`]'s
/// (an 8-byte volatile lock word, then the value), so one can replace the other in a format.
///
/// Unlike [`PRwLock`] it hands out references, not copies: [`lock`](PLock::lock) gives
/// `&T` under the exclusive hold (as a [`PMutex`]'s); a shared hold gives `&T` safely only
/// when `T: Sync` ([`read`](PLock::read)). For a `!Sync` value such as a collection, whose
/// reads go through [`PCell`]s, [`read_unchecked`](PLock::read_unchecked) is `unsafe`:
/// the caller promises to only read through the reference, so concurrent readers never race.
///
/// **Fairness.** While a transaction waits for the exclusive hold, no new shared hold is
/// granted, so a stream of readers cannot starve writers.
///
/// **Upgrades.** [`lock`](PLock::lock) in a transaction that holds the lock shared waits
/// for the other readers to leave. If another transaction is already waiting to upgrade its own
/// shared hold, the two would wait for each other, so the later one fails at once with
/// [`Error::LockUpgrade`](crate::Error::LockUpgrade) (and rolls back, releasing its hold).
/// Read-modify-write transactions that can run concurrently avoid that by taking the exclusive
/// hold first.
///
/// Deadlock between different locks: lock in a consistent order; otherwise a waiting transaction
/// fails with [`Error::LockTimeout`](crate::Error::LockTimeout) after the pool's lock timeout.
pub type PSharedLock<T> = PLock<SxWord, T>;

const _: () = assert!(size_of::<PSharedLock<u64>>() == 16);

// SAFETY: the exclusive hold gives one transaction (one thread) at a time `&T`, as `PMutex`
// (hence `T: Send`); shared holds give `&T` to several threads only through `read` (which needs
// `T: Sync`) or the `unsafe` `read_unchecked`, whose callers promise to only read.
unsafe impl<T: Send> Sync for PSharedLock<T> {}

impl<T: Persistent> PSharedLock<T> {
    /// Takes the exclusive hold for the rest of the transaction (upgrading this transaction's
    /// shared hold if it has one) and returns the value. Again in the same transaction: returns
    /// at once.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout),
    /// [`Error::LockUpgrade`](crate::Error::LockUpgrade) (another transaction is upgrading its own
    /// shared hold; see the type docs), [`Error::NotInPool`](crate::Error::NotInPool).
    pub fn lock<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        self.exclusive(tx)
    }

    /// Takes a shared hold for the rest of the transaction (or keeps this transaction's
    /// exclusive hold) and returns the value.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout), [`Error::NotInPool`](crate::Error::NotInPool).
    pub fn read<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T>
    where
        T: Sync,
    {
        // SAFETY: `T: Sync`: sharing `&T` between the threads of the readers is sound by itself.
        unsafe { self.read_unchecked(tx) }
    }

    /// [`read`](PLock::read) for any `T`: a shared hold and `&T`, which other transactions
    /// holding the lock shared read at the same time.
    ///
    /// # Safety
    ///
    /// Until the transaction ends, the returned reference (and everything reached through it)
    /// must be used only to read: no store through an interior-mutable part ([`PCell::set`],
    /// logging, freeing, any method that writes). To write, take the exclusive hold with
    /// [`lock`](PLock::lock) and write through the reference it returns.
    ///
    /// # Errors
    ///
    /// As [`read`](PLock::read).
    pub unsafe fn read_unchecked<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        // SAFETY: the caller only reads through the reference (concurrent reads do not race);
        // writes of this transaction need `lock`, which waits until it is the only holder.
        unsafe { self.shared(tx) }
    }
}
