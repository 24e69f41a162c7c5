//! The blocking primitives the single-flight code waits with: a `Mutex` and a `Condvar`.
//!
//! Normally they are `parking_lot`'s (no poisoning, small, fast when uncontended). Under
//! the `shuttle` feature they are `shuttle::sync`'s instead, so the very same
//! [`crate::flight`] code runs under shuttle's randomized scheduler, which picks the
//! thread interleavings and reports a deadlock when every thread is blocked. That is the
//! whole point of this module: the flight code names `crate::sync::Mutex`, never a
//! concrete lock, so the code that is tested is the code that ships.
//!
//! The two backends have different shapes (parking_lot waits on `&mut guard` and never
//! poisons; shuttle follows `std`, taking the guard by value and returning a
//! `LockResult`), so both are wrapped behind the std-like, poison-free surface below.
//!
//! Left out: atomics and `Arc` (the flight code's atomics carry no ordering that matters
//! to a waiter, and `std::sync::Arc` is fine under shuttle), and `RwLock` (nothing here
//! reads more than it writes).
//!
//! Under `shuttle`, these locks only work inside a shuttle test (`shuttle::check_*`):
//! build with that feature only to run `tests/shuttle.rs`.

#[cfg(not(feature = "shuttle"))]
mod backend {
    /// A mutual-exclusion lock that does not poison (parking_lot).
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// A condition variable paired with [`Mutex`] (parking_lot).
    #[derive(Debug)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(parking_lot::Condvar::new())
        }

        /// Releases the guard's lock, sleeps until notified, and takes the lock again.
        /// Wakeups can be spurious: callers loop on their condition.
        pub(crate) fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(feature = "shuttle")]
mod backend {
    use std::sync::PoisonError;

    /// A mutual-exclusion lock (shuttle's, so the scheduler sees every acquisition).
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(shuttle::sync::Mutex::new(value))
        }

        /// Poisoning is ignored, as parking_lot does: the flight code never runs a loader
        /// while holding one of these locks, so a poisoned lock still guards consistent
        /// state.
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// A condition variable paired with [`Mutex`] (shuttle's).
    #[derive(Debug)]
    pub(crate) struct Condvar(shuttle::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(shuttle::sync::Condvar::new())
        }

        /// Releases the guard's lock, sleeps until notified, and takes the lock again.
        pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use backend::{Condvar, Mutex};
