//! The virtual TPM (`--tpm=`, `--tpm-state=`), planned as systemd-vmspawn 259 runs it:
//! `swtpm_setup` creates the state (sha256 bank, `--not-overwrite`, the `default-v2` profile,
//! and without it for swtpm older than 0.11), then `swtpm socket` serves the TPM on a control
//! socket that vmspawn binds and passes as an fd. Unlike 259, QEMU does not connect to that
//! socket by path: vmspawn connects while checking that swtpm is ready and hands QEMU the
//! connection. Pure planning; the runner carries it out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, TpmState};
use crate::error::{Error, Result};
use crate::parse::Tristate;
use crate::plan::{HostFacts, SocketPlan, StateDir, USER_DATABASE, program_rules};
use crate::process::{
    EnvPlan, FdName, FdTable, Jail, Lifetime, PassedFd, ProcessPlan, Readiness, Role, StdioPlan,
    Stop,
};
use crate::sandbox::{SandboxRules, SeccompTable};

/// How long swtpm gets to exit after SIGTERM at the end (it normally exits by itself when
/// QEMU shuts the TPM down).
pub const STOP_GRACE: Duration = Duration::from_secs(5);
const PROFILE: &str = "default-v2";
const INSTALL_HINT: &str =
    "Install it (on Debian: apt install swtpm swtpm-tools), or use --tpm=no.";

/// What the VM's TPM adds to the plan.
pub struct TpmPlan {
    pub state_dirs: Vec<StateDir>,
    pub socket: SocketPlan,
    /// swtpm_setup, then swtpm.
    pub processes: Vec<ProcessPlan>,
    /// QEMU's -chardev/-tpmdev/-device words.
    pub qemu_args: Vec<OsString>,
}

/// `--tpm-state=auto`: `<image>.tpmstate` next to the image (or directory).
pub fn auto_state_dir(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(".tpmstate");
    PathBuf::from(name)
}

/// The QEMU TPM device of an architecture; None where 259 offers no TPM.
fn qemu_device(arch: &str) -> Option<&'static str> {
    match arch {
        "x86_64" | "i386" => Some("tpm-tis"),
        "aarch64" => Some("tpm-tis-device"),
        _ => None,
    }
}

/// Why a VM with `--tpm=auto` gets no TPM (for debug output); None when it gets one or
/// `--tpm=no` was asked for.
pub fn why_none(config: &Config, host: &HostFacts) -> Option<String> {
    if config.tpm == Tristate::No {
        return None;
    }
    Some(match (&host.swtpm, qemu_device(&host.qemu_arch)) {
        (_, None) => format!("No TPM: not supported on {}.", host.qemu_arch),
        (None, _) => "No TPM: swtpm is not installed.".into(),
        (Some(s), _) if s.swtpm_setup.is_none() => "No TPM: swtpm_setup is not installed.".into(),
        _ => match (&config.tpm_state, &host.tpm_auto_state_problem) {
            (TpmState::Auto, Some(problem)) => {
                format!("No TPM: the TPM state directory {problem}.")
            }
            _ => return None,
        },
    })
}

/// The TPM part of the plan, or None when the VM has no TPM. `qemu_fds` is QEMU's fd table,
/// which gets the control connection.
pub fn plan(
    config: &Config,
    host: &HostFacts,
    machine: &str,
    qemu_fds: &mut FdTable,
) -> Result<Option<TpmPlan>> {
    let required = config.tpm == Tristate::Yes;
    if config.tpm == Tristate::No {
        return Ok(None);
    }
    let Some(device) = qemu_device(&host.qemu_arch) else {
        if required {
            return Err(Error::new(format!(
                "TPM not supported on {}, refusing.",
                host.qemu_arch
            )));
        }
        return Ok(None);
    };
    let Some(swtpm) = &host.swtpm else {
        if required {
            return Err(Error::new(format!(
                "--tpm=yes: Failed to find swtpm binary: there is no swtpm in $PATH. {INSTALL_HINT}"
            )));
        }
        return Ok(None);
    };
    let Some(swtpm_setup) = &swtpm.swtpm_setup else {
        if required {
            return Err(Error::new(format!(
                "--tpm=yes: Failed to find swtpm_setup binary: there is no swtpm_setup in $PATH. {INSTALL_HINT}"
            )));
        }
        return Ok(None);
    };

    let rd = &host.runtime_dir;
    let (state, persistent) = match &config.tpm_state {
        TpmState::Auto => {
            if let Some(problem) = &host.tpm_auto_state_problem {
                if required {
                    return Err(Error::new(format!(
                        "Failed to create TPM state directory: {problem}. Use --tpm-state=PATH for another \
                         place, or --tpm-state=off for a TPM whose state is discarded with the VM."
                    )));
                }
                return Ok(None);
            }
            (auto_state_dir(host.root.path()), true)
        }
        TpmState::Off => (rd.join(format!("{machine}-tpm")), false),
        TpmState::Path(path) => (path.clone(), true),
    };
    // swtpm's option syntax has no escape for a comma.
    if state.as_os_str().as_encoded_bytes().contains(&b',') {
        return Err(Error::new(format!(
            "TPM state directory '{}' contains a ',', which swtpm cannot take. Use --tpm-state= with \
             another path.",
            state.display()
        )));
    }
    let socket = rd.join("tpm.sock");
    let arch = host.qemu_arch.as_str();
    let confined = !config.unconfined;

    let state_arg = {
        let mut arg = OsString::from("dir=");
        arg.push(&state);
        arg
    };
    // swtpm_setup runs this swtpm itself; with --terminate it ends when swtpm_setup's
    // connection does, so a swtpm_setup killed with vmspawn leaves no swtpm behind. (The value
    // is split on white space.)
    if swtpm
        .swtpm
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(u8::is_ascii_whitespace)
    {
        return Err(Error::new(format!(
            "swtpm's path '{}' contains white space, which swtpm_setup's --tpm option cannot take. \
             Install swtpm in a directory without white space, or use --tpm=no.",
            swtpm.swtpm.display()
        )));
    }
    let setup_tpm = {
        let mut arg = swtpm.swtpm.as_os_str().to_os_string();
        arg.push(" socket --terminate");
        arg
    };
    let setup_args = |profile: bool| {
        let mut args: Vec<OsString> = vec![
            "--tpm".into(),
            setup_tpm.clone(),
            "--tpm-state".into(),
            state.clone().into(),
            "--tpm2".into(),
            "--pcr-banks".into(),
            "sha256".into(),
            "--not-overwrite".into(),
        ];
        if profile {
            args.extend(["--profile-name".into(), PROFILE.into()]);
        }
        args
    };
    // swtpm_setup reads its configuration from /etc and keeps swtpm's pid file in /tmp (a
    // fixed path in swtpm 0.7, whatever $TMPDIR says).
    let mut setup_rules = program_rules(&[swtpm_setup, &swtpm.swtpm], arch);
    setup_rules
        .read
        .push(PathBuf::from("/etc/swtpm_setup.conf"));
    setup_rules.read.extend(USER_DATABASE.map(PathBuf::from));
    for path in ["/etc/localtime", "/usr/share/zoneinfo", "/dev/urandom"] {
        setup_rules.read.push(PathBuf::from(path));
    }
    setup_rules.write = vec![state.clone()];
    setup_rules.scratch_files = vec![PathBuf::from("/tmp")];
    setup_rules.devices = vec![PathBuf::from("/dev/null")];
    let setup = ProcessPlan {
        role: Role::SwtpmSetup,
        name: Role::SwtpmSetup.describe().into(),
        binary: swtpm_setup.clone(),
        args: setup_args(true),
        env: EnvPlan::default(),
        fds: Vec::new(),
        stdio: StdioPlan::Quiet,
        own_process_group: true,
        death_signal: libc::SIGKILL,
        jail: confined.then_some(Jail {
            landlock: setup_rules,
            seccomp: SeccompTable::SwtpmSetup,
        }),
        lifetime: Lifetime::Setup {
            fallback_args: Some(setup_args(false)),
        },
    };

    let control_fd = 3;
    let mut args: Vec<OsString> = vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        state_arg,
        "--ctrl".into(),
        format!("type=unixio,fd={control_fd}").into(),
    ];
    if swtpm.seccomp {
        args.extend(["--seccomp".into(), "action=kill".into()]);
    }
    let mut swtpm_rules: SandboxRules = program_rules(&[&swtpm.swtpm], arch);
    swtpm_rules.read.push(PathBuf::from("/dev/urandom"));
    swtpm_rules.write = vec![state.clone()];
    swtpm_rules.devices = vec![PathBuf::from("/dev/null")];
    let daemon = ProcessPlan {
        role: Role::Swtpm,
        name: Role::Swtpm.describe().into(),
        binary: swtpm.swtpm.clone(),
        args,
        env: EnvPlan::default(),
        fds: vec![PassedFd {
            name: FdName::TpmControlListener,
            number: control_fd,
        }],
        stdio: StdioPlan::NoInput,
        own_process_group: true,
        death_signal: libc::SIGTERM,
        jail: confined.then_some(Jail {
            landlock: swtpm_rules,
            seccomp: SeccompTable::Swtpm,
        }),
        lifetime: Lifetime::Vm {
            readiness: Readiness::SwtpmControl {
                socket: socket.clone(),
                connection: FdName::TpmControlConnection,
            },
            stop: Stop::Signal {
                signal: libc::SIGTERM,
                grace: STOP_GRACE,
            },
        },
    };

    let qemu_fd = qemu_fds.add(FdName::TpmControlConnection);
    let qemu_args = vec![
        "-chardev".into(),
        format!("socket,id=chrtpm,fd={qemu_fd}").into(),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        format!("{device},tpmdev=tpm0").into(),
    ];
    Ok(Some(TpmPlan {
        state_dirs: vec![StateDir {
            path: state,
            what: "TPM state directory",
            persistent,
        }],
        socket: SocketPlan {
            name: FdName::TpmControlListener,
            path: socket,
        },
        processes: vec![setup, daemon],
        qemu_args,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_state_is_next_to_the_image() {
        assert_eq!(
            auto_state_dir(Path::new("/srv/vm/debian.raw")),
            PathBuf::from("/srv/vm/debian.raw.tpmstate")
        );
    }
}
