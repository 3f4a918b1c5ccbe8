//! Target `cli_plan`: arbitrary bytes as a vmspawn command line, its environment and the host
//! it runs on, through the launcher's pure pipeline: `cli::parse` → `plan::needs` → (a
//! simulated acquisition) → `plan::plan`. None of them may panic on any input; errors are
//! fine.
//!
//! The input (see [`encode`]):
//! - 4 bytes, little-endian: a bit per entry of [`SWITCHES`], the host facts and acquisition
//!   outcomes of the golden tests (`launcher/tests/golden.rs`, `# facts:` lines);
//! - then words separated by NUL bytes. A word starting with byte 1, 2, 3 or 4 sets
//!   `$SYSTEMD_VMSPAWN_QEMU_EXTRA`, `$SYSTEMD_VMSPAWN_NETWORK_MAC`, `$VMSPAWN_UNCONFINED` or
//!   `$RUNTIME_DIRECTORY` to the rest of the word (any bytes); every other word is an argument
//!   (any bytes, not only UTF-8).
//!
//! No other variable is set (so `--load-credential=ID:NAME` never finds
//! `$CREDENTIALS_DIRECTORY`). `--load-credential` with a path reads that file or connects to
//! that socket while parsing, the only file access of the pipeline; inputs that could ask for
//! it (an argument starting with `--lo`, the shortest unambiguous prefix, and a `/` in any
//! argument) are skipped, so the fuzzer never reads `/dev/zero` or connects to a host socket.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use vmspawn::cli::{self, Action, ParseEnv};
use vmspawn::plan;
use vmspawn::testing;

/// Bit `i` of the input's first four bytes sets `SWITCHES[i]`: the host facts and
/// acquisition outcomes the golden tests use (`vmspawn::testing`).
pub use vmspawn::testing::SWITCHES;
const SWITCH_BYTES: usize = 4;
const _: () = assert!(
    SWITCHES.len() <= SWITCH_BYTES * 8,
    "more switches than mask bits"
);

/// The environment variables an input can set, by the marker byte that starts the word.
pub const VARIABLES: [(u8, &str); 4] = [
    (1, "SYSTEMD_VMSPAWN_QEMU_EXTRA"),
    (2, "SYSTEMD_VMSPAWN_NETWORK_MAC"),
    (3, "VMSPAWN_UNCONFINED"),
    (4, "RUNTIME_DIRECTORY"),
];

/// A decoded input.
#[derive(Debug, PartialEq, Eq)]
pub struct Input {
    pub switches: Vec<&'static str>,
    pub env: Vec<(&'static str, OsString)>,
    pub args: Vec<OsString>,
}

impl Input {
    pub fn decode(data: &[u8]) -> Option<Input> {
        let (mask, rest) = data.split_first_chunk::<SWITCH_BYTES>()?;
        let mask = u32::from_le_bytes(*mask);
        let switches = SWITCHES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, s)| *s)
            .collect();
        let mut env = Vec::new();
        let mut args = Vec::new();
        if !rest.is_empty() {
            for word in rest.split(|&b| b == 0) {
                match VARIABLES.iter().find(|(m, _)| word.first() == Some(m)) {
                    // A later setting of the same variable replaces an earlier one.
                    Some((_, name)) => {
                        env.retain(|(n, _)| n != name);
                        env.push((*name, OsString::from_vec(word[1..].to_vec())));
                    }
                    None => args.push(OsString::from_vec(word.to_vec())),
                }
            }
        }
        Some(Input {
            switches,
            env,
            args,
        })
    }

    fn var(&self, name: &str) -> Option<OsString> {
        self.env
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    /// Whether parsing could read a file or connect to a socket (see the module doc).
    fn may_load_credential_from_path(&self) -> bool {
        self.args.iter().any(|a| a.as_bytes().starts_with(b"--lo"))
            && self.args.iter().any(|a| a.as_bytes().contains(&b'/'))
    }
}

/// The input that [`Input::decode`] turns into these switches, variables and arguments.
/// Unknown switches are ignored; an argument must not contain NUL nor start with a marker
/// byte (1, 2 or 3).
pub fn encode(switches: &[&str], env: &[(&str, &[u8])], args: &[&[u8]]) -> Vec<u8> {
    let mask = SWITCHES
        .iter()
        .enumerate()
        .filter(|(_, s)| switches.contains(s))
        .fold(0u32, |m, (i, _)| m | 1 << i);
    let mut words: Vec<Vec<u8>> = Vec::new();
    for (name, value) in env {
        if let Some((marker, _)) = VARIABLES.iter().find(|(_, n)| n == name) {
            words.push([&[*marker], *value].concat());
        }
    }
    words.extend(args.iter().map(|a| a.to_vec()));
    let mut out = mask.to_le_bytes()[..SWITCH_BYTES].to_vec();
    out.extend(words.join(&0u8));
    out
}

pub fn run(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if input.may_load_credential_from_path() {
        return;
    }
    let var = |name: &str| input.var(name);
    let env = ParseEnv {
        cwd: Path::new("/home/user"),
        var: &var,
    };
    let config = match cli::parse(&input.args, &env) {
        Ok(Action::Run(config)) => config,
        Ok(_) => return,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut facts = testing::host_facts(&input.switches, &config);
    // $RUNTIME_DIRECTORY, as host::discover takes it.
    if let Some(dir) = vmspawn::host::managed_runtime_dir(&var) {
        facts.runtime_dir = dir;
        facts.runtime_dir_managed = true;
    }
    let needs = match plan::needs(&config, &facts) {
        Ok(needs) => needs,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let Ok(acquired) = testing::simulate_acquire(&needs, &input.switches) else {
        return;
    };
    let plan = match plan::plan(&config, &facts, &acquired) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // What the runner and the golden files show of a plan.
    assert_eq!(
        plan.machine, needs.machine,
        "needs and plan name the machine differently"
    );
    for process in &plan.processes {
        let _ = plan::render_argv(&process.binary, &process.args);
        if let Some(jail) = &process.jail {
            let _ = jail.landlock.describe();
            let _ = jail.seccomp.denied();
        }
    }
    if let Some(rules) = &plan.launcher_jail {
        let _ = rules.describe();
    }
}
