//! The `bus` fuzz target's body (`fuzz/src/bus.rs`) on the stable toolchain: every committed
//! corpus input goes through it without a panic. The fuzzing itself needs nightly (see the
//! README's Tests).

use std::path::Path;

#[path = "../../fuzz/src/bus.rs"]
mod bus;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn corpus_replays_without_panic() {
    replay::replay(root(), "bus", 15, bus::run);
}

/// The corpus is not only malformed input: it holds messages that decode in both byte
/// orders, and a polkit reply the helper accepts.
#[test]
fn corpus_holds_messages_that_decode() {
    let dir = root().join("fuzz/corpus/bus");
    let (mut little, mut big, mut polkit) = (0, 0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let Ok(message) = vmspawn_privhelper::bus::decode(&data) else {
            continue;
        };
        match data[0] {
            b'B' => big += 1,
            _ => little += 1,
        }
        if message.signature == "(bba{ss})" {
            let mut body = message.body();
            if body.bool().is_ok() && body.bool().is_ok() {
                polkit += 1;
            }
        }
    }
    assert!(
        little >= 3 && big >= 2 && polkit >= 2,
        "{}: {little} little-endian and {big} big-endian messages that decode, {polkit} polkit replies",
        dir.display()
    );
}
