//! The `decode` fuzz target's body (`fuzz/src/decode.rs`) on the stable toolchain: every
//! committed corpus input goes through it without a panic. The fuzzing itself needs nightly
//! (see the README's Tests).

use std::path::Path;

#[path = "../../fuzz/src/decode.rs"]
mod decode;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn corpus_replays_without_panic() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    replay::replay(root, "decode", 20, decode::run);
}
