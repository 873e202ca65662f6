//! Minimal synchronisation for a kernel without an allocator or scheduler.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A test-and-set spin lock around a value.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new unlocked lock.
    pub const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Runs `f` with the lock held.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        r
    }

    /// Releases the lock without an owner: used by the panic and fatal
    /// exception paths, which must print even if the lock holder died.
    pub fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

/// A global that kernels mutate from one CPU at a time (the boot CPU, or a
/// handler running on it). Access is `unsafe`; the caller guarantees there is
/// no concurrent access.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: users promise single-CPU, non-reentrant access (see `get`).
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    /// Wraps a value.
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    /// Raw pointer to the value.
    pub const fn as_ptr(&self) -> *mut T {
        self.0.get()
    }

    /// Mutable access.
    ///
    /// # Safety
    /// No other reference to the value may be live, on this CPU or another.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: caller's contract.
        unsafe { &mut *self.0.get() }
    }
}
