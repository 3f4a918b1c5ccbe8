//! The processes of a VM as the plan describes them: QEMU and every process next to it
//! (sidecars such as swtpm, and one-shot setup steps such as swtpm_setup). Pure data: the
//! planner fills it in, the golden files show it, `spawn` and `lifecycle` carry it out.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::sandbox::{SandboxRules, SeccompTable};

/// What a process is for. Its confinement and what its exit means follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Qemu,
    /// The virtual TPM.
    Swtpm,
    /// Creates the virtual TPM's state before swtpm runs.
    SwtpmSetup,
    /// Serves one host directory (the root, a --bind share, a bound user's home) over
    /// virtio-fs.
    Virtiofsd,
    /// vhost-device-vsock: the VM's vsock device where the kernel's vhost-vsock is not
    /// available.
    VhostUserVsock,
    /// Creates the ephemeral SSH key pair whose public key the guest's sshd accepts.
    SshKeygen,
    /// systemd-journal-remote: writes the journal the guest forwards (`--forward-journal=`).
    JournalRemote,
}

impl Role {
    /// How messages name the process.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Qemu => "QEMU",
            Role::Swtpm => "swtpm (the virtual TPM)",
            Role::SwtpmSetup => "swtpm_setup (creating the virtual TPM's state)",
            Role::Virtiofsd => "virtiofsd (a host directory over virtio-fs)",
            Role::VhostUserVsock => "vhost-device-vsock (the VM's vsock device)",
            Role::SshKeygen => "ssh-keygen (the VM's SSH key)",
            Role::JournalRemote => "systemd-journal-remote (the guest's forwarded journal)",
        }
    }
}

/// A file descriptor a process gets, by what it is: the runner finds each in what acquisition,
/// materialisation and earlier processes produced, and places it at the number the plan chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FdName {
    /// QEMU's end of the QMP control connection.
    Qmp,
    /// The TAP device from the privileged helper.
    Tap,
    /// /dev/kvm from the privileged helper.
    Kvm,
    /// swtpm's listening control socket (bound by vmspawn).
    TpmControlListener,
    /// A connection to swtpm's control socket, made by vmspawn while checking that swtpm is
    /// ready, then used by QEMU.
    TpmControlConnection,
    /// The listening vhost-user socket of the virtiofsd of share N (bound by vmspawn).
    VirtiofsListener(u16),
    /// vmspawn's connection to that socket, used by QEMU.
    VirtiofsConnection(u16),
    /// /dev/vhost-vsock with the guest CID set (opened by vmspawn or the helper).
    VhostVsock,
    /// vmspawn's connection to vhost-device-vsock's vhost-user socket, used by QEMU.
    VhostUserVsockConnection,
    /// Where the guest's notifications arrive (AF_VSOCK, or the vhost-user port socket);
    /// kept by vmspawn.
    NotifyListener,
    /// Where the guest's journal arrives (AF_VSOCK, or the vhost-user port socket), passed to
    /// systemd-journal-remote by socket activation.
    JournalListener,
    /// The unnamed qcow2 overlay of an `--ephemeral` image (created by vmspawn), read-write.
    EphemeralOverlay,
    /// The same overlay opened read-only: QEMU's fd sets hand out an fd only to an open with
    /// the same access mode, and QEMU opens the image read-only too.
    EphemeralOverlayReadOnly,
}

/// One entry of a process's fd table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedFd {
    pub name: FdName,
    /// The fd number in the process.
    pub number: i32,
}

/// Builds an fd table: numbers are handed out from 3 up, in the order fds are added, and the
/// argv refers to the number `add` returns.
#[derive(Default)]
pub struct FdTable {
    fds: Vec<PassedFd>,
}

impl FdTable {
    pub fn add(&mut self, name: FdName) -> i32 {
        let number = 3 + self.fds.len() as i32;
        self.fds.push(PassedFd { name, number });
        number
    }

    pub fn into_vec(self) -> Vec<PassedFd> {
        self.fds
    }
}

/// The environment a process starts with: built from nothing, so nothing of the user's
/// session (bus addresses, agent sockets, display) reaches it unless listed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvPlan {
    /// Variables copied from vmspawn's own environment, where it has them.
    pub pass: Vec<String>,
    /// Variables set to these values, unless `pass` already gave them one.
    pub set: Vec<(String, String)>,
    /// Socket activation: the names of the fds from 3 up (`LISTEN_FDS`, `LISTEN_FDNAMES`, and
    /// `LISTEN_PID` set to the process's own pid at exec).
    pub listen_fds: Vec<String>,
}

/// Standard input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdioPlan {
    /// The console pseudo-terminal vmspawn forwards (stdin and stdout); stderr is vmspawn's.
    Console,
    /// vmspawn's own stdin, stdout and stderr.
    Terminal,
    /// stdin is /dev/null; stdout and stderr are vmspawn's.
    NoInput,
    /// stdin and stdout are /dev/null; stderr is captured and shown only if the step fails.
    Quiet,
}

/// How vmspawn knows a long-running process is ready for the next one to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Nothing to wait for.
    Started,
    /// swtpm answers CMD_GET_CAPABILITY on its control socket at `socket`; the connection is
    /// kept as `connection` (for QEMU).
    SwtpmControl { socket: PathBuf, connection: FdName },
    /// vmspawn connects to the Unix socket at `socket` as soon as it accepts connections (at
    /// once when vmspawn bound it for the process, else once the process has bound it) and
    /// keeps the connection as `connection` (for QEMU).
    Connect { socket: PathBuf, connection: FdName },
}

/// How a long-running process is stopped at the end, in reverse start order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// QEMU: the guest's ACPI power button, `$VMSPAWN_SHUTDOWN_TIMEOUT_SEC` to power off,
    /// then SIGKILL.
    PowerButton,
    /// `signal`, up to `grace` to exit, then SIGKILL.
    Signal { signal: i32, grace: Duration },
}

/// One-shot step or a process that lives with the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Runs to completion before the VM's processes start; failing is an error, except that
    /// `fallback_args` (when given) are tried once instead.
    Setup {
        fallback_args: Option<Vec<OsString>>,
    },
    /// Runs as long as the VM. QEMU's exit ends the VM with QEMU's verdict; any other such
    /// process exiting ends the VM with an error naming it.
    Vm { readiness: Readiness, stop: Stop },
}

/// What a process runs confined by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jail {
    pub landlock: SandboxRules,
    pub seccomp: SeccompTable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessPlan {
    pub role: Role,
    /// How messages name this process (the role's description, or more precise: which share
    /// a virtiofsd serves).
    pub name: String,
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub env: EnvPlan,
    pub fds: Vec<PassedFd>,
    pub stdio: StdioPlan,
    /// A process group of its own, so the terminal's Ctrl-C reaches only vmspawn.
    pub own_process_group: bool,
    /// Sent to the process if vmspawn dies.
    pub death_signal: i32,
    /// None with $VMSPAWN_UNCONFINED.
    pub jail: Option<Jail>,
    pub lifetime: Lifetime,
}
