//! See `src/bus.rs` for what this target checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmspawn_fuzz::bus::run(data));
