//! Mutable persistent state: [`PCell`] (single-threaded, like `Cell`), [`PMutex`], [`PRwLock`]
//! and [`PSharedLock`] (held until the transaction ends, reset on reopen). Every mutation goes through a
//! transaction, which logs the old bytes first.

use std::cell::UnsafeCell;
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

/// A persistent mutex. [`lock`](PMutex::lock) holds it until the transaction ends (two-phase
/// locking), so no other transaction sees uncommitted changes. Its lock word is volatile state:
/// every reopen of the pool frees all locks (the word carries the open generation).
///
/// Deadlock: lock in a consistent order (e.g. ascending address); otherwise a waiting
/// transaction fails with [`Error::LockTimeout`](crate::Error::LockTimeout) after the pool's lock
/// timeout and rolls back.
#[repr(C)]
pub struct PMutex<T> {
    word: AtomicU64,
    value: UnsafeCell<T>,
}

const _: () = assert!(size_of::<PMutex<u64>>() == 16);

// SAFETY: `repr(C)` of a `u64`-sized atomic (any bit pattern: a foreign generation means
// unlocked, a garbage owner only makes `lock` time out) and `T: Persistent`; the word is 8-byte
// aligned, and `T`'s size is asserted (on use) to keep the struct free of padding.
unsafe impl<T: Persistent> Persistent for PMutex<T> {
    const __LAYOUT_CHECK: () = {
        let () = T::__LAYOUT_CHECK;
        assert!(
            size_of::<PMutex<T>>() == 8 + size_of::<T>(),
            "PMutex<T> needs size_of::<T>() to be a multiple of 8 (pad T explicitly)"
        );
    };
}
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
        let () = <Self as Persistent>::__LAYOUT_CHECK;
        tx.shared()
            .offset_of(self as *const Self as usize, size_of::<Self>())?;
        tx.lock_mutex(&self.word)?;
        // SAFETY: this transaction holds the lock until it ends, and the reference cannot
        // outlive `'t` (bounded by the transaction); other transactions wait for the lock.
        Ok(unsafe { &*self.value.get() })
    }
}

impl<T> std::fmt::Debug for PMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PMutex { .. }")
    }
}

/// A persistent reader-writer lock over a `Copy` value: many transactions may read it at once,
/// one may write. Holds are kept until the transaction ends and reset on reopen, like
/// [`PMutex`]. Reads return copies, so no reference can alias a write.
#[repr(C)]
pub struct PRwLock<T> {
    word: AtomicU64,
    value: UnsafeCell<T>,
}

// SAFETY: as for `PMutex`.
unsafe impl<T: Persistent> Persistent for PRwLock<T> {
    const __LAYOUT_CHECK: () = {
        let () = T::__LAYOUT_CHECK;
        assert!(
            size_of::<PRwLock<T>>() == 8 + size_of::<T>(),
            "PRwLock<T> needs size_of::<T>() to be a multiple of 8 (pad T explicitly)"
        );
    };
}
// SAFETY: readers only copy `T` out under a shared hold, writers store under the exclusive hold.
unsafe impl<T: Send + Sync> Sync for PRwLock<T> {}

impl<T: Persistent + Copy> PRwLock<T> {
    fn check(&self, tx: &Transaction<'_>) -> Result<()> {
        let () = <Self as Persistent>::__LAYOUT_CHECK;
        tx.shared()
            .offset_of(self as *const Self as usize, size_of::<Self>())
            .map(|_| ())
    }

    /// Takes a shared hold (until the transaction ends) and returns a copy of the value.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout), [`Error::NotInPool`](crate::Error::NotInPool).
    pub fn read(&self, tx: &Transaction<'_>) -> Result<T> {
        self.check(tx)?;
        tx.lock_read(&self.word)?;
        // SAFETY: a shared or exclusive hold of this transaction excludes writers of other
        // transactions; this transaction's own writes happen only inside `write`.
        Ok(unsafe { self.value.get().read() })
    }

    /// Takes the exclusive hold (upgrading this transaction's shared hold if it has one),
    /// logs the old value and stores `value`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](crate::Error::LockTimeout), [`Error::LockUpgrade`](crate::Error::LockUpgrade),
    /// [`Error::NotInPool`](crate::Error::NotInPool), [`Error::OutOfSpace`](crate::Error::OutOfSpace).
    pub fn write(&self, tx: &Transaction<'_>, value: T) -> Result<()> {
        self.check(tx)?;
        tx.lock_write(&self.word)?;
        tx.log_addr(self.value.get() as usize, size_of::<T>())?;
        // SAFETY: the exclusive hold excludes every other transaction; logged first.
        unsafe { self.value.get().write(value) };
        Ok(())
    }

    /// Exclusive hold, then `value = f(value)`; returns the new value.
    ///
    /// # Errors
    ///
    /// As [`write`](PRwLock::write).
    pub fn update(&self, tx: &Transaction<'_>, f: impl FnOnce(T) -> T) -> Result<T> {
        self.check(tx)?;
        tx.lock_write(&self.word)?;
        // SAFETY: exclusive hold.
        let v = f(unsafe { self.value.get().read() });
        self.write(tx, v)?;
        Ok(v)
    }
}

impl<T> std::fmt::Debug for PRwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PRwLock { .. }")
    }
}

/// A persistent reader-writer lock over any persistent value, for concurrent collections: many
/// transactions may hold it shared at once, or one exclusively. Holds are kept until the
/// transaction ends and reset on reopen, like [`PMutex`]; the on-media layout is a [`PMutex`]'s
/// (an 8-byte volatile lock word, then the value), so one can replace the other in a format.
///
/// Unlike [`PRwLock`] it hands out references, not copies: [`lock`](PSharedLock::lock) gives
/// `&T` under the exclusive hold (as [`PMutex::lock`]); a shared hold gives `&T` safely only
/// when `T: Sync` ([`read`](PSharedLock::read)). For a `!Sync` value such as a collection, whose
/// reads go through [`PCell`]s, [`read_unchecked`](PSharedLock::read_unchecked) is `unsafe`:
/// the caller promises to only read through the reference, so concurrent readers never race.
///
/// **Fairness.** While a transaction waits for the exclusive hold, no new shared hold is
/// granted, so a stream of readers cannot starve writers.
///
/// **Upgrades.** [`lock`](PSharedLock::lock) in a transaction that holds the lock shared waits
/// for the other readers to leave. If another transaction is already waiting to upgrade its own
/// shared hold, the two would wait for each other, so the later one fails at once with
/// [`Error::LockUpgrade`](crate::Error::LockUpgrade) (and rolls back, releasing its hold).
/// Read-modify-write transactions that can run concurrently avoid that by taking the exclusive
/// hold first.
///
/// Deadlock between different locks: lock in a consistent order; otherwise a waiting transaction
/// fails with [`Error::LockTimeout`](crate::Error::LockTimeout) after the pool's lock timeout.
#[repr(C)]
pub struct PSharedLock<T> {
    word: AtomicU64,
    value: UnsafeCell<T>,
}

const _: () = assert!(size_of::<PSharedLock<u64>>() == 16);

// SAFETY: as for `PMutex`: a `u64`-sized atomic (any bit pattern: a foreign generation means
// unlocked, garbage holders only make holds time out) and `T: Persistent`, no padding (asserted).
unsafe impl<T: Persistent> Persistent for PSharedLock<T> {
    const __LAYOUT_CHECK: () = {
        let () = T::__LAYOUT_CHECK;
        assert!(
            size_of::<PSharedLock<T>>() == 8 + size_of::<T>(),
            "PSharedLock<T> needs size_of::<T>() to be a multiple of 8 (pad T explicitly)"
        );
    };
}
// SAFETY: the exclusive hold gives one transaction (one thread) at a time `&T`, as `PMutex`
// (hence `T: Send`); shared holds give `&T` to several threads only through `read` (which needs
// `T: Sync`) or the `unsafe` `read_unchecked`, whose callers promise to only read.
unsafe impl<T: Send> Sync for PSharedLock<T> {}

impl<T: Persistent> PSharedLock<T> {
    fn check(&self, tx: &Transaction<'_>) -> Result<()> {
        let () = <Self as Persistent>::__LAYOUT_CHECK;
        tx.shared()
            .offset_of(self as *const Self as usize, size_of::<Self>())
            .map(|_| ())
    }

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
        self.check(tx)?;
        tx.lock_exclusive(&self.word)?;
        // SAFETY: the exclusive hold excludes every other transaction until this one ends, and
        // the reference cannot outlive `'t` (bounded by the transaction).
        Ok(unsafe { &*self.value.get() })
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

    /// [`read`](PSharedLock::read) for any `T`: a shared hold and `&T`, which other transactions
    /// holding the lock shared read at the same time.
    ///
    /// # Safety
    ///
    /// Until the transaction ends, the returned reference (and everything reached through it)
    /// must be used only to read: no store through an interior-mutable part ([`PCell::set`],
    /// logging, freeing, any method that writes). To write, take the exclusive hold with
    /// [`lock`](PSharedLock::lock) and write through the reference it returns.
    ///
    /// # Errors
    ///
    /// As [`read`](PSharedLock::read).
    pub unsafe fn read_unchecked<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        self.check(tx)?;
        tx.lock_shared(&self.word)?;
        // SAFETY: the shared hold excludes writers of other transactions until this one ends;
        // the caller only reads through the reference (concurrent reads do not race); writes
        // of this transaction need `lock`, which waits until it is the only holder.
        Ok(unsafe { &*self.value.get() })
    }
}

impl<T> std::fmt::Debug for PSharedLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PSharedLock { .. }")
    }
}
