//! Ctrl-C and SIGTERM: stop the benchmark cleanly instead of dying mid-way.
//!
//! The harness is synchronous (it spends its time waiting for child processes), so
//! the handler does the one thing a signal handler may safely do: set a flag. Every
//! wait loop polls [`check`] and unwinds with [`BenchError::Interrupted`]; on the way
//! out the guards of [`crate::process`] kill the servers and clients.
//!
//! A second Ctrl-C exits at once (status 130). The children do not outlive that
//! either: they asked the kernel to kill them when their parent dies.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::BenchError;

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap and _exit.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        unsafe { libc::_exit(130) };
    }
}

/// Installs the SIGINT and SIGTERM handlers for the rest of the process's life.
/// Idempotent.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls _exit, both of which are
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Whether the user asked to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once the user asked to stop.
pub fn check() -> Result<(), BenchError> {
    if requested() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}
