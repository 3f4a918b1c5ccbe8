//! The VM's vsock device and the guest → host notification channel (`--vsock=`,
//! `--vsock-cid=`), three ways:
//! - the kernel's vhost-vsock: an fd of /dev/vhost-vsock (opened by vmspawn, or by the
//!   privileged helper from the policy's CID range) with the guest CID set, and an AF_VSOCK
//!   listener for the guest's notifications, as 259 does;
//! - vhost-user vsock where there is no /dev/vhost-vsock (containers, CI runners): a
//!   `vhost-device-vsock` sidecar whose host side is a Unix socket `<uds>`; the guest's
//!   connections to host port P arrive on `<uds>_P`, where vmspawn listens for the notification
//!   port, and host programs reach guest port P by connecting to `<uds>` and sending
//!   `CONNECT P\n` (what `vmspawn-vsock-proxy` does for ssh).
//!
//! The guest learns the notification address from the `vmm.notify_socket` credential, as 259
//! passes it (`vsock-stream:2:<port>`). Pure planning here (plus 259's CID derivation); the
//! kernel device and listener are acquired by `acquire`, the channel is read by `supervise`.

use std::ffi::OsString;
use std::hash::Hasher;
use std::path::PathBuf;
use std::time::Duration;

use siphasher::sip::SipHasher24;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::parse::Tristate;
use crate::plan::{HostFacts, SocketPlan, StateDir, check_socket_path, program_rules};
use crate::process::{
    EnvPlan, FdName, FdTable, Jail, Lifetime, ProcessPlan, Readiness, Role, StdioPlan, Stop,
};
use crate::sandbox::SeccompTable;

/// The host's CID, to which the guest connects.
pub const HOST_CID: u32 = 2;
/// The port vmspawn listens on for notifications over vhost-user vsock (over the kernel device
/// the kernel picks one). Any port works: the listener is private to this VM.
pub const VHOST_USER_NOTIFY_PORT: u32 = 0x7665_6e76; // "venv"
/// The largest notification batch 259 accepts (PIPE_BUF).
pub const NOTIFY_MAX: usize = 4096;
/// How long vhost-device-vsock gets to exit after SIGTERM at the end.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
const CID_KEY: [u8; 16] = [
    0x03, 0xad, 0xf0, 0xa4, 0x59, 0x2c, 0x77, 0x11, 0xda, 0x39, 0x0c, 0xba, 0xf5, 0x4c, 0x80, 0x52,
];
/// Candidates lie in 3 … u32::MAX − 2.
const CID_SPAN: u64 = u32::MAX as u64 - 4;

/// What the host offers for vsock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockFacts {
    /// Socket activation passed an fd of /dev/vhost-vsock (named `vhost-vsock`).
    pub passed_device: bool,
    /// /dev/vhost-vsock can be opened read-write by this process.
    pub kernel_device: bool,
    /// /dev/vhost-vsock exists (else the helper cannot open it either, and is not asked).
    pub kernel_device_exists: bool,
    /// vhost-device-vsock, if installed.
    pub vhost_user: Option<PathBuf>,
}

/// How the VM is to get its vsock device (`plan::needs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VsockNeed {
    Off,
    /// The passed vhost-vsock fd, else /dev/vhost-vsock opened by vmspawn, with the CID set
    /// (`--vsock-cid`, else 259's derivation).
    Kernel {
        cid: Option<u32>,
    },
    /// An fd from the helper; if it refuses, `fallback_vhost_user` says whether to use
    /// vhost-user instead, else `required` fails and otherwise the VM has no vsock.
    FromHelper {
        cid: Option<u32>,
        required: bool,
        fallback_vhost_user: bool,
    },
    /// vhost-device-vsock.
    VhostUser,
}

/// The VM's vsock, as acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VsockAccess {
    Off,
    /// A vhost-vsock fd with guest CID `cid` (`FdName::VhostVsock`), an AF_VSOCK listener
    /// on `notify_port` (`FdName::NotifyListener`), and with `--forward-journal=` one on
    /// `journal_port` (`FdName::JournalListener`).
    Kernel {
        cid: u32,
        notify_port: u32,
        journal_port: Option<u32>,
    },
    /// vhost-device-vsock, planned in full by `plan`.
    VhostUser,
}

/// 259's automatic CID candidates for `machine`: SipHash-2-4 of the name, then of each index.
pub fn cid_candidate(machine: &str, index: u32) -> u32 {
    let mut hasher = SipHasher24::new_with_key(&CID_KEY);
    hasher.write(machine.as_bytes());
    hasher.write(&index.to_ne_bytes());
    cid_from(hasher.finish())
}

/// A regular CID (3 … u32::MAX − 2) from 64 random or hashed bits, as 259 maps them.
pub fn cid_from(bits: u64) -> u32 {
    3 + (bits % CID_SPAN) as u32
}

/// What vsock needs, from the configuration and host facts.
pub fn needs(config: &Config, host: &HostFacts) -> Result<VsockNeed> {
    let required = config.vsock == Tristate::Yes;
    let vhost_user = host.vsock.vhost_user.is_some();
    Ok(match config.vsock {
        Tristate::No => VsockNeed::Off,
        _ if host.vsock.passed_device || host.vsock.kernel_device => VsockNeed::Kernel {
            cid: config.vsock_cid,
        },
        _ if host.helper_installed && host.vsock.kernel_device_exists => VsockNeed::FromHelper {
            cid: config.vsock_cid,
            required,
            fallback_vhost_user: vhost_user,
        },
        _ if vhost_user => VsockNeed::VhostUser,
        Tristate::Auto => VsockNeed::Off,
        Tristate::Yes => {
            return Err(Error::new(
                "--vsock=yes: there is no way to give this VM a vsock device: /dev/vhost-vsock does not exist or \
                 cannot be opened by you, no privileged helper is installed to hand out an fd of it, and \
                 vhost-device-vsock (vsock without the kernel device) is not installed. Install vhost-device-vsock \
                 (cargo install vhost-device-vsock) or ask the administrator for access to /dev/vhost-vsock \
                 (the 'kvm' group, or an open-vhost-vsock rule in the helper's policy); or use --vsock=no.",
            ));
        }
    })
}

/// What the vsock device adds to the plan.
#[derive(Default)]
pub struct VsockPlan {
    pub state_dirs: Vec<StateDir>,
    pub sockets: Vec<SocketPlan>,
    pub processes: Vec<ProcessPlan>,
    /// QEMU's device words.
    pub qemu_args: Vec<OsString>,
    /// The SMBIOS string that tells the guest where to send notifications.
    pub notify_credential: Option<String>,
    /// The guest's CID (vhost-user: the CID the guest believes it has).
    pub cid: Option<u32>,
    /// vhost-user: the Unix socket host programs connect to (`CONNECT <port>`).
    pub uds: Option<PathBuf>,
    /// Kernel device: the port of the AF_VSOCK listener for the guest's journal.
    pub journal_port: Option<u32>,
    /// The device is a vhost-user device: QEMU needs shared guest memory.
    pub needs_shared_memory: bool,
}

/// The vsock part of the plan; `qemu_fds` is QEMU's fd table.
pub fn plan(
    config: &Config,
    host: &HostFacts,
    machine: &str,
    access: VsockAccess,
    qemu_fds: &mut FdTable,
) -> Result<VsockPlan> {
    let credential = |port: u32| {
        format!("io.systemd.credential:vmm.notify_socket=vsock-stream:{HOST_CID}:{port}")
    };
    match access {
        VsockAccess::Off => Ok(VsockPlan::default()),
        VsockAccess::Kernel {
            cid,
            notify_port,
            journal_port,
        } => {
            let fd = qemu_fds.add(FdName::VhostVsock);
            Ok(VsockPlan {
                qemu_args: vec![
                    "-device".into(),
                    format!("vhost-vsock-pci,guest-cid={cid},vhostfd={fd}").into(),
                ],
                notify_credential: Some(credential(notify_port)),
                cid: Some(cid),
                journal_port,
                ..VsockPlan::default()
            })
        }
        VsockAccess::VhostUser => {
            let Some(binary) = &host.vsock.vhost_user else {
                return Err(Error::new(
                    "internal error: vhost-user vsock planned without vhost-device-vsock",
                ));
            };
            let cid = config
                .vsock_cid
                .unwrap_or_else(|| cid_candidate(machine, 0));
            let dir = host.runtime_dir.join("vsock");
            let vhost_socket = dir.join("vhost.sock");
            let uds = dir.join("uds");
            let mut listener = uds.clone().into_os_string();
            listener.push(format!("_{VHOST_USER_NOTIFY_PORT}"));
            let listener = PathBuf::from(listener);
            // The longest of its sockets.
            check_socket_path(&listener, "vsock notification socket")?;
            let mut rules = program_rules(&[binary], &host.qemu_arch);
            // It creates its vhost-user socket and the host-side socket there, and connects
            // to the guest's ports' sockets next to them.
            rules.write.push(dir.clone());
            let process = ProcessPlan {
                role: Role::VhostUserVsock,
                name: Role::VhostUserVsock.describe().into(),
                binary: binary.clone(),
                args: vec![
                    "--guest-cid".into(),
                    cid.to_string().into(),
                    "--socket".into(),
                    vhost_socket.clone().into(),
                    "--uds-path".into(),
                    uds.clone().into(),
                ],
                env: EnvPlan::default(),
                fds: Vec::new(),
                stdio: StdioPlan::NoInput,
                own_process_group: true,
                death_signal: libc::SIGTERM,
                jail: (!config.unconfined).then_some(Jail {
                    landlock: rules,
                    seccomp: SeccompTable::VhostUserVsock,
                }),
                lifetime: Lifetime::Vm {
                    readiness: Readiness::Connect {
                        socket: vhost_socket,
                        connection: FdName::VhostUserVsockConnection,
                    },
                    stop: Stop::Signal {
                        signal: libc::SIGTERM,
                        grace: STOP_GRACE,
                    },
                },
            };
            let fd = qemu_fds.add(FdName::VhostUserVsockConnection);
            Ok(VsockPlan {
                state_dirs: vec![StateDir {
                    path: dir,
                    what: "vsock socket directory",
                    persistent: false,
                }],
                sockets: vec![SocketPlan {
                    name: FdName::NotifyListener,
                    path: listener,
                }],
                processes: vec![process],
                qemu_args: vec![
                    "-chardev".into(),
                    format!("socket,id=vsock,fd={fd}").into(),
                    "-device".into(),
                    "vhost-user-vsock-pci,chardev=vsock".into(),
                ],
                notify_credential: Some(credential(VHOST_USER_NOTIFY_PORT)),
                cid: Some(cid),
                uds: Some(uds),
                journal_port: None,
                needs_shared_memory: true,
            })
        }
    }
}

/// What one notification batch from the guest asks of vmspawn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// Messages for vmspawn's own `$NOTIFY_SOCKET`.
    pub forward: Vec<String>,
    /// The guest's `EXIT_STATUS=`, if the batch had a valid one.
    pub exit_status: Option<u8>,
    /// Lines for the user (e.g. an unparsable exit status).
    pub warnings: Vec<String>,
}

/// Parses a batch as 259 does: tags split on newlines; `STATUS=` is forwarded as
/// "VM running: …", `READY=1` as is (with "VM running." when the batch had no status), the
/// last `EXIT_STATUS=` is kept; everything else is ignored.
pub fn parse_notification(batch: &[u8]) -> Notification {
    let text = String::from_utf8_lossy(batch);
    let mut out = Notification::default();
    let mut status = None;
    let mut ready = false;
    for tag in text.split(['\n', '\r']).filter(|t| !t.is_empty()) {
        if let Some(s) = tag.strip_prefix("STATUS=") {
            status = Some(s.to_string());
        } else if tag == "READY=1" {
            ready = true;
        } else if let Some(code) = tag.strip_prefix("EXIT_STATUS=") {
            match code.parse::<u8>() {
                Ok(code) => out.exit_status = Some(code),
                Err(_) => out.warnings.push(format!(
                    "Failed to parse exit status from {code}, ignoring: Invalid argument"
                )),
            }
        }
    }
    match (status, ready) {
        (Some(s), true) => out.forward.push(format!("STATUS=VM running: {s}\nREADY=1")),
        (Some(s), false) => out.forward.push(format!("STATUS=VM running: {s}")),
        (None, true) => out.forward.push("STATUS=VM running.\nREADY=1".into()),
        (None, false) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_candidates_are_regular_and_stable() {
        for i in 0..64 {
            let cid = cid_candidate("vm", i);
            assert!((3..u32::MAX - 1).contains(&cid));
        }
        assert_eq!(cid_candidate("vm", 0), cid_candidate("vm", 0));
        assert_ne!(cid_candidate("vm", 0), cid_candidate("vm", 1));
        assert_ne!(cid_candidate("vm", 0), cid_candidate("other", 0));
    }

    #[test]
    fn notifications_parse_like_259() {
        let n = parse_notification(b"STATUS=Starting\nX_SYSTEMD_UNIT_ACTIVE=a\n");
        assert_eq!(n.forward, ["STATUS=VM running: Starting"]);
        let n = parse_notification(b"READY=1\n");
        assert_eq!(n.forward, ["STATUS=VM running.\nREADY=1"]);
        let n = parse_notification(b"EXIT_STATUS=3\nEXIT_STATUS=42\n");
        assert_eq!(n.exit_status, Some(42));
        assert!(n.forward.is_empty());
        let n = parse_notification(b"EXIT_STATUS=300\n");
        assert_eq!(n.exit_status, None);
        assert_eq!(n.warnings.len(), 1);
    }
}
