//! The `policy` fuzz target's body (`fuzz/src/policy.rs`) on the stable toolchain: every
//! committed corpus input, and the example policy, go through it without a panic. The
//! fuzzing itself needs nightly (see the README's Tests).

use std::path::Path;

#[path = "../../fuzz/src/policy.rs"]
mod policy;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn corpus_replays_without_panic() {
    replay::replay(root(), "policy", 20, policy::run);
}

#[test]
fn example_policy_passes_the_target_checks() {
    let text = std::fs::read(root().join("policy/policy.example.toml")).unwrap();
    policy::run(&text);
}
