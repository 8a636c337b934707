//! Mutable persistent state: [`PCell`] (single-threaded, like `Cell`), [`PMutex`] and
//! [`PRwLock`] (held until the transaction ends, reset on reopen). Every mutation goes through a
//! transaction, which logs the old bytes first.

use std::cell::UnsafeCell;
use std::mem::size_of;
use std::sync::atomic::AtomicU64;

use pmem_core::Persistent;

use crate::error::Result;
use crate::tx::Transaction;

/// An object whose bytes a transaction may log and then change.
///
/// # Safety
///
/// `log_range` returns the address and length of bytes inside `self` that are interior-mutable
/// (inside an `UnsafeCell`) and that only the thread holding `&self` can reach while its
/// transaction runs (the type is `!Sync`, or access is guarded by a lock held by that
/// transaction): rolling them back must not race with any other thread.
pub unsafe trait Loggable {
    /// `(address, length)` of the bytes to log.
    fn log_range(&self) -> (usize, usize);
}

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
    /// transaction or inside a [`snapshot`](Transaction::snapshot) batch), then stores.
    ///
    /// # Errors
    ///
    /// [`Error::NotInPool`](crate::Error::NotInPool) if the cell is not in `tx`'s pool;
    /// [`Error::OutOfSpace`](crate::Error::OutOfSpace) when the log cannot grow.
    pub fn set(&self, tx: &Transaction<'_>, value: T) -> Result<()> {
        tx.log_addr(self.value.get() as usize, size_of::<T>())?;
        // SAFETY: logged and durable (or batched: drained before the batch returns... see
        // `snapshot`); `!Sync` excludes other threads; no reference into the cell exists.
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
