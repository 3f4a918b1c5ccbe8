//! The `cli_plan` fuzz target's body (`fuzz/src/cli_plan.rs`) on the stable toolchain: every
//! committed corpus input, and every golden case's command line, environment and host facts,
//! go through it without a panic. The fuzzing itself needs nightly (see the README's Tests).

use std::path::Path;

#[path = "../../fuzz/src/cli_plan.rs"]
mod cli_plan;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use cli_plan::{Input, encode};
use vmspawn::parse::split_words;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn corpus_replays_without_panic() {
    replay::replay(root(), "cli_plan", 20, cli_plan::run);
}

/// The golden cases' headers (`# args:`, `# facts:`, `# env:`), encoded as fuzz inputs: the
/// encoding round-trips, and the body takes each of them.
#[test]
fn golden_cases_as_inputs() {
    let dir = root().join("launcher/tests/golden");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let (mut args, mut facts, mut env) = (Vec::new(), Vec::new(), Vec::new());
        for line in text.lines().map_while(|l| l.strip_prefix("# ")) {
            if let Some(a) = line.strip_prefix("args:") {
                args = split_words(a).unwrap();
            } else if let Some(f) = line.strip_prefix("facts:") {
                facts = f.split_whitespace().collect();
            } else if let Some(e) = line.strip_prefix("env:") {
                env.push(e.trim().split_once('=').unwrap());
            }
        }
        let env: Vec<(&str, &[u8])> = env.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let data = encode(&facts, &env, &args);
        let input = Input::decode(&data).unwrap();
        assert_eq!(input.args.len(), args.len(), "{}", path.display());
        for switch in &facts {
            assert!(
                input.switches.contains(switch),
                "{}: {switch}",
                path.display()
            );
        }
        assert_eq!(input.env.len(), env.len(), "{}", path.display());
        cli_plan::run(&data);
        count += 1;
    }
    assert!(
        count >= 20,
        "expected the golden cases in {}",
        dir.display()
    );
}
