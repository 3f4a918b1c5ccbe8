//! The part of the helper that other crates may call: the D-Bus client (now the
//! `vmspawn-bus` crate, shared with the launcher, re-exported here as `bus` so the fuzz target
//! and `tests/fuzz_corpus.rs` keep calling `vmspawn_privhelper::bus`), with the one lock
//! helper the rest of the helper uses.

#![deny(unsafe_code)]

pub use vmspawn_bus as bus;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`; the helper does not panic while holding a lock, so a poisoned one holds
/// consistent data.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
