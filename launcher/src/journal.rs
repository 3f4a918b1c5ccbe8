//! `--forward-journal=FILE|DIR`: the guest's journald forwards its journal over vsock (the
//! `journal.forward_to_socket` credential) to a systemd-journal-remote sidecar that writes it
//! on the host, as systemd-vmspawn 259 does. Unlike 259, vmspawn binds the listening socket
//! itself and passes it by socket activation (no systemd-socket-activate), the sidecar is
//! confined to its output, and a VM without vsock is an error rather than the unusable address
//! `vsock:2:4294967295`. Pure planning.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, Credential};
use crate::error::{Error, Result};
use crate::plan::{HostFacts, SocketPlan, StateDir, check_socket_path, program_rules};
use crate::process::{
    EnvPlan, FdName, Jail, Lifetime, PassedFd, ProcessPlan, Readiness, Role, StdioPlan, Stop,
};
use crate::sandbox::SeccompTable;
use crate::vsock::{HOST_CID, VsockPlan};

/// The port journal-remote listens on over vhost-user vsock (over the kernel device the kernel
/// picks one). Private to this VM, like the notification port.
pub const VHOST_USER_JOURNAL_PORT: u32 = 0x6a72_6e6c; // "jrnl"
/// How long journal-remote gets to write what it has after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What journal forwarding adds to the plan.
pub struct JournalPlan {
    /// DIR mode: the output directory (created with its parents).
    pub state_dir: Option<StateDir>,
    /// vhost-user: the listening socket vmspawn binds (over the kernel device, acquisition
    /// made an AF_VSOCK listener).
    pub socket: Option<SocketPlan>,
    pub process: ProcessPlan,
    pub credential: Credential,
}

/// The split mode 259 picks: one file for `*.journal`, else one file per sending host.
pub fn is_single_file(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().ends_with(b".journal")
}

/// The journal part of the plan, or None without `--forward-journal=`.
pub fn plan(config: &Config, host: &HostFacts, vsock: &VsockPlan) -> Result<Option<JournalPlan>> {
    let Some(output) = &config.forward_journal else {
        return Ok(None);
    };
    let Some(binary) = &host.journal_remote else {
        return Err(Error::new(
            "--forward-journal=: Failed to find systemd-journal-remote binary: it is neither in /usr/lib/systemd \
             nor in $PATH. Install it (on Debian: apt install systemd-journal-remote), or drop --forward-journal=.",
        ));
    };
    if let Some(problem) = &host.journal_output_problem {
        return Err(Error::new(format!(
            "--forward-journal={}: {problem}",
            output.display()
        )));
    }
    let (port, socket) = match (&vsock.uds, vsock.journal_port) {
        (Some(uds), _) => {
            let mut path = uds.clone().into_os_string();
            path.push(format!("_{VHOST_USER_JOURNAL_PORT}"));
            let path = PathBuf::from(path);
            check_socket_path(&path, "journal socket")?;
            (
                VHOST_USER_JOURNAL_PORT,
                Some(SocketPlan {
                    name: FdName::JournalListener,
                    path,
                }),
            )
        }
        (None, Some(port)) => (port, None),
        (None, None) => {
            return Err(Error::new(
                "--forward-journal= needs a vsock device, over which the guest sends its journal, but this VM has none \
                 (--vsock=no, or no way to one: see --vsock=yes for what is missing). Enable vsock, or drop \
                 --forward-journal=.",
            ));
        }
    };
    let single = is_single_file(output);
    let mut rules = program_rules(&[binary], &host.qemu_arch);
    // Its configuration (journal-remote.conf and drop-ins), if any, and the host's machine
    // ID, which every journal file's header records.
    for path in ["/etc/systemd", "/usr/lib/systemd", "/etc/machine-id"] {
        rules.read.push(PathBuf::from(path));
    }
    if single {
        // journal-remote creates the file and, finding it damaged, renames it and starts anew,
        // both in its directory: regular files there, nothing else.
        rules.scratch_files = vec![output.parent().unwrap_or(Path::new("/")).to_path_buf()];
    } else {
        rules.write = vec![output.clone()];
    }
    rules.devices = vec![PathBuf::from("/dev/null")];
    let mut args: Vec<OsString> = vec![
        "--output".into(),
        output.clone().into(),
        "--split-mode".into(),
        if single { "none" } else { "host" }.into(),
    ];
    args.extend(limit_args(config, host, binary)?);
    let process = ProcessPlan {
        role: Role::JournalRemote,
        name: Role::JournalRemote.describe().into(),
        binary: binary.clone(),
        args,
        env: EnvPlan {
            pass: Vec::new(),
            // Its messages go to vmspawn's stderr, not to a journal socket it may not open.
            set: vec![
                ("SYSTEMD_LOG_TARGET".into(), "console".into()),
                ("SYSTEMD_LOG_LEVEL".into(), "warning".into()),
            ],
            listen_fds: vec!["vmspawn-journal".into()],
        },
        fds: vec![PassedFd {
            name: FdName::JournalListener,
            number: 3,
        }],
        stdio: StdioPlan::NoInput,
        own_process_group: true,
        death_signal: libc::SIGTERM,
        jail: (!config.unconfined).then_some(Jail {
            landlock: rules,
            seccomp: SeccompTable::JournalRemote,
        }),
        lifetime: Lifetime::Vm {
            readiness: Readiness::Started,
            stop: Stop::Signal {
                signal: libc::SIGTERM,
                grace: STOP_GRACE,
            },
        },
    };
    Ok(Some(JournalPlan {
        state_dir: (!single).then(|| StateDir {
            path: output.clone(),
            what: "forwarded journal directory",
            persistent: true,
        }),
        socket,
        process,
        credential: Credential {
            id: "journal.forward_to_socket".into(),
            data: format!("vsock:{HOST_CID}:{port}").into_bytes(),
        },
    }))
}

/// `--forward-journal-max-use=` and friends as systemd-journal-remote options, as 262 passes
/// them, where the installed journal-remote takes them; an error where it does not.
fn limit_args(config: &Config, host: &HostFacts, binary: &Path) -> Result<Vec<OsString>> {
    let limits = &config.journal_limits;
    if !limits.any() {
        return Ok(Vec::new());
    }
    match &host.journal_remote_limits {
        Some(l) if l.takes_options => {}
        other => {
            let version = other
                .as_ref()
                .map(|l| l.version.as_str())
                .filter(|v| !v.is_empty())
                .unwrap_or("of unknown version");
            return Err(Error::new(format!(
                "--forward-journal-max-use=/--forward-journal-keep-free=/--forward-journal-max-file-size=/\
                 --forward-journal-max-files= need a systemd-journal-remote that takes these limits as options \
                 (--max-use= etc., newer than systemd 254), but {} is {version} and has no such options: it \
                 reads them only from /etc/systemd/journal-remote.conf (MaxUse=, KeepFree=, MaxFileSize=, \
                 MaxFiles=), which the administrator sets for every user and which applies to --forward-journal= \
                 as it is. Drop these options, or ask the administrator to set the limits there.",
                binary.display()
            )));
        }
    }
    Ok([
        ("--max-use", limits.max_use),
        ("--keep-free", limits.keep_free),
        ("--max-file-size", limits.max_file_size),
        ("--max-files", limits.max_files),
    ]
    .into_iter()
    .filter_map(|(option, value)| value.map(|v| OsString::from(format!("{option}={v}"))))
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_options_where_journal_remote_takes_them() {
        let mut config = Config {
            forward_journal: Some(PathBuf::from("/var/log/vm")),
            ..Config::default()
        };
        config.journal_limits.max_file_size = Some(1 << 20);
        config.journal_limits.max_files = Some(3);
        let mut host = crate::testing::host_facts(&["journal-remote"], &config);
        let binary = Path::new("/usr/lib/systemd/systemd-journal-remote");
        // Debian 12's 254: refused, naming the configuration file that has these limits.
        let e = limit_args(&config, &host, binary).unwrap_err().to_string();
        assert!(
            e.contains("systemd 254") && e.contains("MaxFileSize="),
            "{e}"
        );
        host.journal_remote_limits = Some(crate::plan::JournalRemoteLimits {
            takes_options: true,
            version: "systemd 262".into(),
        });
        assert_eq!(
            limit_args(&config, &host, binary).unwrap(),
            vec![
                OsString::from("--max-file-size=1048576"),
                OsString::from("--max-files=3")
            ]
        );
        config.journal_limits = Default::default();
        assert!(limit_args(&config, &host, binary).unwrap().is_empty());
    }

    #[test]
    fn split_mode_follows_the_suffix() {
        assert!(is_single_file(Path::new("/var/log/vm.journal")));
        assert!(!is_single_file(Path::new("/var/log/vm")));
        assert!(!is_single_file(Path::new("/var/log/vm.journal/")));
    }
}
