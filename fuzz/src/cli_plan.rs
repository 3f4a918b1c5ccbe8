//! Target `cli_plan`: arbitrary bytes as a vmspawn command line, its environment and the host
//! it runs on, through the launcher's pure pipeline: `cli::parse` → `plan::needs` → (a
//! simulated acquisition) → `plan::plan`. None of them may panic on any input; errors are
//! fine.
//!
//! The input (see [`encode`]):
//! - 3 bytes, little-endian: a bit per entry of [`SWITCHES`], the host facts and acquisition
//!   outcomes of the golden tests (`launcher/tests/golden.rs`, `# facts:` lines);
//! - then words separated by NUL bytes. A word starting with byte 1, 2 or 3 sets
//!   `$SYSTEMD_VMSPAWN_QEMU_EXTRA`, `$SYSTEMD_VMSPAWN_NETWORK_MAC` or `$VMSPAWN_UNCONFINED` to
//!   the rest of the word (any bytes); every other word is an argument (any bytes, not only
//!   UTF-8).
//!
//! No other variable is set (so `--load-credential=ID:NAME` never finds
//! `$CREDENTIALS_DIRECTORY`). `--load-credential` with a path reads that file or connects to
//! that socket while parsing, the only file access of the pipeline; inputs that could ask for
//! it (an argument starting with `--lo`, the shortest unambiguous prefix, and a `/` in any
//! argument) are skipped, so the fuzzer never reads `/dev/zero` or connects to a host socket.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use vmspawn::acquire::{Acquired, KvmAccess, KvmNeed, Needs, NetworkSetup, TapFacts};
use vmspawn::cli::{self, Action, ParseEnv};
use vmspawn::config::Network;
use vmspawn::disk::{ImageFormat, RootKind, RootPartition};
use vmspawn::firmware::Firmware;
use vmspawn::plan::{self, DriveInfo, HostFacts, ImageInfo, SwtpmFacts};
use vmspawn::register::Registrar;

/// Host facts and acquisition outcomes, as in the golden tests; bit `i` of the input's first
/// three bytes sets `SWITCHES[i]`.
pub const SWITCHES: [&str; 18] = [
    "aarch64",
    "plain-firmware",
    "kvm",
    "kvm-from-helper",
    "helper",
    "tap-by-qemu",
    "tap-from-helper",
    "qcow2",
    "block-image",
    "no-root-partition",
    "usr-partition",
    "tty",
    "swtpm",
    "swtpm-no-setup",
    "swtpm-no-seccomp",
    "tpm-state-unwritable",
    "registrar-helper",
    "registrar-user",
];
const SWITCH_BYTES: usize = 3;

/// The environment variables an input can set, by the marker byte that starts the word.
pub const VARIABLES: [(u8, &str); 3] = [
    (1, "SYSTEMD_VMSPAWN_QEMU_EXTRA"),
    (2, "SYSTEMD_VMSPAWN_NETWORK_MAC"),
    (3, "VMSPAWN_UNCONFINED"),
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
        let mask = u32::from_le_bytes([mask[0], mask[1], mask[2], 0]);
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

    fn has(&self, switch: &str) -> bool {
        self.switches.contains(&switch)
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
    let facts = host_facts(&input, &config.extra_drives, config.image.as_deref());
    let needs = match plan::needs(&config, &facts) {
        Ok(needs) => needs,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let Some(acquired) = simulate_acquire(&needs, &input) else {
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

/// Synthetic host facts, as `host_facts` in `launcher/tests/golden.rs` makes them.
fn host_facts(input: &Input, extra_drives: &[PathBuf], image: Option<&Path>) -> HostFacts {
    let has = |s: &str| input.has(s);
    let secure_boot = !has("plain-firmware");
    HostFacts {
        qemu_arch: if has("aarch64") {
            "aarch64".into()
        } else {
            "x86_64".into()
        },
        qemu_binary: PathBuf::from("/usr/bin/qemu-system-x86_64"),
        firmware: Firmware {
            descriptor: PathBuf::from("/usr/share/qemu/firmware/50-edk2-x86_64-secure.json"),
            code: PathBuf::from(if secure_boot {
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
            } else {
                "/usr/share/OVMF/OVMF_CODE_4M.fd"
            }),
            code_format: "raw".into(),
            vars_template: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
            vars_format: "raw".into(),
            secure_boot,
        },
        kvm_usable: has("kvm"),
        helper_installed: has("kvm-from-helper") || has("helper"),
        net_admin: has("tap-by-qemu"),
        image: ImageInfo {
            path: image.map_or_else(|| PathBuf::from("/none"), Path::to_path_buf),
            format: if has("qcow2") {
                ImageFormat::Qcow2
            } else {
                ImageFormat::Raw
            },
            is_block_device: has("block-image"),
            root_partition: if has("no-root-partition") {
                None
            } else if has("usr-partition") {
                Some(RootPartition {
                    kind: RootKind::Usr,
                    partuuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                })
            } else {
                Some(RootPartition {
                    kind: RootKind::Root,
                    partuuid: "4f68bce3-0000-4000-8000-000000000001".into(),
                })
            },
        },
        extra_drives: extra_drives
            .iter()
            .map(|p| DriveInfo {
                path: p.clone(),
                format: if p.extension().is_some_and(|e| e == "qcow2") {
                    ImageFormat::Qcow2
                } else {
                    ImageFormat::Raw
                },
                is_block_device: p.starts_with("/dev"),
            })
            .collect(),
        runtime_dir: PathBuf::from("/run/user/1000/systemd/vmspawn.0123456789abcdef"),
        hostname: "buildhost".into(),
        vmgenid: *b"\x11\x22\x33\x44\x55\x66\x47\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00",
        display_paths: vec![PathBuf::from("/home/user/.Xauthority")],
        stdin_is_tty: has("tty"),
        swtpm: (has("swtpm") || has("swtpm-no-setup") || has("swtpm-no-seccomp")).then(|| {
            SwtpmFacts {
                swtpm: PathBuf::from("/usr/bin/swtpm"),
                swtpm_setup: (!has("swtpm-no-setup"))
                    .then(|| PathBuf::from("/usr/bin/swtpm_setup")),
                seccomp: !has("swtpm-no-seccomp"),
            }
        }),
        tpm_auto_state_problem: has("tpm-state-unwritable").then(|| {
            "'/home/user/d.raw.tpmstate' cannot be created in '/home/user': Permission denied"
                .to_string()
        }),
    }
}

/// Acquisition as the switches say it went (`simulate_acquire` in `launcher/tests/golden.rs`);
/// None where the real acquisition would fail.
fn simulate_acquire(needs: &Needs, input: &Input) -> Option<Acquired> {
    let has = |s: &str| input.has(s);
    let network = match needs.network {
        Network::None => NetworkSetup::None,
        Network::UserMode => NetworkSetup::UserMode,
        Network::Tap if has("tap-by-qemu") => NetworkSetup::Tap(TapFacts::QemuCreates {
            ifname: "vt-d".into(),
            mac: [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc],
        }),
        Network::Tap if has("tap-from-helper") => NetworkSetup::Tap(TapFacts::FromHelper {
            ifname: "vt-0123abcd".into(),
            mac: [0x22, 0x34, 0x56, 0x78, 0x9a, 0xbc],
        }),
        Network::Tap => return None,
    };
    let kvm = match needs.kvm {
        KvmNeed::Off => KvmAccess::Off,
        KvmNeed::Device => KvmAccess::Device,
        KvmNeed::FromHelper { .. } if has("kvm-from-helper") => KvmAccess::HelperFd,
        KvmNeed::FromHelper { required: true } => return None,
        KvmNeed::FromHelper { required: false } => KvmAccess::Off,
    };
    let registrar = needs.registration.and_then(|_| {
        if has("registrar-helper") {
            Some(Registrar::Helper)
        } else if has("registrar-user") {
            Some(Registrar::Varlink(PathBuf::from(
                "/run/user/1000/systemd/machine/io.systemd.Machine",
            )))
        } else {
            None
        }
    });
    Some(Acquired {
        network,
        kvm,
        registrar,
    })
}
