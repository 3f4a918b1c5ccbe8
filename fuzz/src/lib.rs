//! The bodies of the fuzz targets in `fuzz_targets/`, one module each.
//!
//! Each module is self-contained (it names only the crate it exercises), so the main
//! workspace's tests include the same file with `#[path]` and replay the committed corpus
//! through it on the stable toolchain: `proto/tests/fuzz_corpus.rs` (decode),
//! `policy/tests/fuzz_corpus.rs` (policy), `launcher/tests/fuzz_corpus.rs` (cli_plan),
//! `privhelper/tests/fuzz_corpus.rs` (bus).

pub mod bus;
pub mod cli_plan;
pub mod decode;
pub mod policy;
pub mod replay;
