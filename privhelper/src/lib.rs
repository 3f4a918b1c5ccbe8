//! The part of the helper that other crates may call: the D-Bus client's message parser is
//! fuzzed (`fuzz/src/bus.rs`, replayed on stable by `tests/fuzz_corpus.rs`), with the one lock
//! helper it shares with the rest of the helper. The binary uses
//! this same `bus` module (`use vmspawn_privhelper::bus` in `main.rs`), so it is compiled once.

#![deny(unsafe_code)]

pub mod bus;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`; the helper does not panic while holding a lock, so a poisoned one holds
/// consistent data.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
