//! Acquisition: obtains exactly what the planner said the VM needs (`plan::needs`) — a TAP
//! device, an fd of /dev/kvm, a connection to register the VM with machined — by itself where
//! this user may, otherwise through the privileged helper. Runs before any confinement.
//!
//! The result is two halves: `Acquired`, plain facts the planner renders the QEMU command line
//! from, and `Resources`, the fds and connections the runner hands to the VM's processes.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::helper::HelperClient;
use crate::network;
use crate::process::FdName;
use crate::register::{self, Registrar};
use crate::spawn::FdStore;
use crate::vsock::{VsockAccess, VsockNeed};

/// How the VM gets its TAP device (`--network-tap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapFacts {
    /// The launcher has CAP_NET_ADMIN: QEMU creates the TAP itself, named and addressed as 259 does.
    QemuCreates { ifname: String, mac: [u8; 6] },
    /// The privileged helper created `ifname`; its fd is passed to QEMU. `mac` is the guest's,
    /// derived as for `QemuCreates`.
    FromHelper { ifname: String, mac: [u8; 6] },
}

/// The VM's network, as acquired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkSetup {
    None,
    UserMode,
    Tap(TapFacts),
}

/// How QEMU reaches KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmAccess {
    /// Software emulation (TCG).
    Off,
    /// QEMU opens /dev/kvm itself.
    Device,
    /// An fd of /dev/kvm (from the privileged helper, or passed by socket activation).
    Fd,
}

/// What the KVM part of the VM needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmNeed {
    Off,
    /// Socket activation passed an fd of /dev/kvm.
    Passed,
    /// This user can open /dev/kvm.
    Device,
    /// An fd from the helper; without one, `required` fails and otherwise TCG is used.
    FromHelper {
        required: bool,
    },
}

/// What the VM needs from the host beyond files: computed by `plan::needs`, pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needs {
    pub machine: String,
    /// `--network-tap` (None/UserMode need nothing acquired).
    pub network: crate::config::Network,
    pub kvm: KvmNeed,
    /// Registration with machined: `Some(required)`.
    pub registration: Option<bool>,
    /// polkit may ask the user for a password.
    pub interactive_auth: bool,
    pub vsock: VsockNeed,
    /// `--forward-journal=`: a vsock listener for the guest's journal too.
    pub forward_journal: bool,
    /// `--system`/`--user`: which machined registration may use.
    pub runtime_scope: Option<crate::config::RuntimeScope>,
}

/// The planner's view of what was acquired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    pub network: NetworkSetup,
    pub kvm: KvmAccess,
    /// The machined the VM will be registered with, when a connection to it was made.
    pub registrar: Option<Registrar>,
    pub vsock: VsockAccess,
}

/// The fds (TAP, /dev/kvm) for the VM's processes, the connection that registers the VM once
/// QEMU runs, and the connection to the helper, held while the VM runs: the helper's TAP lives
/// as long as that session.
#[derive(Default)]
pub struct Resources {
    pub fds: FdStore,
    pub registration: Option<register::Connection>,
    pub helper: Option<HelperClient>,
}

/// What acquisition reads of the environment, and whether this process has CAP_NET_ADMIN
/// (then QEMU creates the TAP itself).
pub struct Env<'a> {
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
    pub is_root: bool,
    pub net_admin: bool,
}

fn machine_id() -> Result<[u8; 16]> {
    let text = std::fs::read_to_string("/etc/machine-id").map_err(|e| {
        Error::io(
            "Failed to read /etc/machine-id (needed for the TAP's MAC address)",
            e,
        )
    })?;
    crate::parse::parse_uuid(text.trim())
        .ok_or_else(|| Error::new("/etc/machine-id is not a valid machine ID"))
}

/// Obtains what `needs` lists. The helper is started (or connected to) at most once.
pub fn acquire(
    needs: &Needs,
    env: &Env,
    mut passed: crate::activation::PassedFds,
) -> Result<(Acquired, Resources)> {
    let mut resources = Resources::default();
    let mut client: Option<HelperClient> = None;
    let interactive = needs.interactive_auth;

    let network = match needs.network {
        crate::config::Network::None => NetworkSetup::None,
        crate::config::Network::UserMode => NetworkSetup::UserMode,
        crate::config::Network::Tap if env.net_admin => NetworkSetup::Tap(TapFacts::QemuCreates {
            ifname: network::tap_ifname(&needs.machine),
            mac: network::tap_mac(&machine_id()?, &needs.machine),
        }),
        crate::config::Network::Tap => {
            let mac = network::tap_mac(&machine_id()?, &needs.machine);
            let helper = client.insert(HelperClient::connect(
                env.var,
                "--network-tap",
                interactive,
            )?);
            let (ifname, fd) = helper.create_tap(&needs.machine)?;
            resources.fds.insert(FdName::Tap, fd);
            NetworkSetup::Tap(TapFacts::FromHelper { ifname, mac })
        }
    };

    let kvm = match needs.kvm {
        KvmNeed::Off => KvmAccess::Off,
        KvmNeed::Passed => {
            let fd = passed
                .kvm
                .take()
                .ok_or_else(|| Error::new("internal error: no passed kvm fd"))?;
            resources.fds.insert(FdName::Kvm, fd);
            KvmAccess::Fd
        }
        KvmNeed::Device => KvmAccess::Device,
        KvmNeed::FromHelper { required } => {
            let helper = connected(
                &mut client,
                env,
                "--kvm=yes without access to /dev/kvm",
                interactive,
            );
            match helper.and_then(HelperClient::open_kvm) {
                Ok(fd) => {
                    resources.fds.insert(FdName::Kvm, fd);
                    KvmAccess::Fd
                }
                // Auto falls back to software emulation; an explicit --kvm=yes must not.
                Err(e) if required => return Err(e),
                Err(_) => KvmAccess::Off,
            }
        }
    };

    let vsock = match &needs.vsock {
        VsockNeed::Off => VsockAccess::Off,
        VsockNeed::VhostUser => VsockAccess::VhostUser,
        VsockNeed::Kernel { cid } => {
            let device = match passed.vhost_vsock.take() {
                Some(device) => device,
                None => open_vhost_vsock()?,
            };
            let cid = assign_cid(device.as_fd(), &needs.machine, *cid)?;
            resources.fds.insert(FdName::VhostVsock, device);
            kernel_vsock(cid, needs.forward_journal, &mut resources)?
        }
        VsockNeed::FromHelper {
            cid,
            required,
            fallback_vhost_user,
        } => {
            let helper = connected(&mut client, env, "--vsock=yes", interactive);
            match helper.and_then(|h| h.open_vhost_vsock(&needs.machine, *cid)) {
                Ok((cid, device)) => {
                    resources.fds.insert(FdName::VhostVsock, device);
                    kernel_vsock(cid, needs.forward_journal, &mut resources)?
                }
                Err(_) if *fallback_vhost_user => VsockAccess::VhostUser,
                Err(e) if *required => return Err(e),
                Err(_) => VsockAccess::Off,
            }
        }
    };

    // Connect now, while the launcher may still start the setuid helper; the registration
    // itself needs QEMU's pid and happens once it runs.
    let mut registrar = None;
    if let Some(required) = needs.registration {
        let chosen = register::choose(env.var, env.is_root, needs.runtime_scope, &|p: &Path| {
            p.exists()
        });
        let connection = match &chosen {
            None if required => {
                return Err(register::nothing_to_register_with(
                    env.is_root,
                    needs.runtime_scope,
                    env.var,
                ));
            }
            None => None,
            Some(Registrar::Varlink(path)) => {
                Some(register::Varlink::connect(path).map(register::Connection::Varlink))
            }
            Some(Registrar::Helper) => Some(
                match client.take() {
                    Some(helper) => Ok(helper),
                    None => HelperClient::connect(env.var, "--register=yes", interactive),
                }
                .map(register::Connection::Helper),
            ),
        };
        match connection {
            Some(Ok(connection)) => {
                registrar = chosen;
                resources.registration = Some(connection);
            }
            Some(Err(e)) if required => return Err(e),
            // Unset --register=: run unregistered.
            Some(Err(_)) | None => {}
        }
    }
    // The helper's TAP lives as long as this connection's session; a connection that only
    // handed over a /dev/kvm fd (or failed to) need not stay open.
    if matches!(network, NetworkSetup::Tap(TapFacts::FromHelper { .. })) {
        resources.helper = client;
    }
    Ok((
        Acquired {
            network,
            kvm,
            registrar,
            vsock,
        },
        resources,
    ))
}

/// The connection to the helper: the one already made, or a new one (for `why`, in messages).
fn connected<'a>(
    client: &'a mut Option<HelperClient>,
    env: &Env,
    why: &str,
    interactive: bool,
) -> Result<&'a mut HelperClient> {
    match client {
        Some(helper) => Ok(helper),
        None => Ok(client.insert(HelperClient::connect(env.var, why, interactive)?)),
    }
}

/// Opens /dev/vhost-vsock.
fn open_vhost_vsock() -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/vhost-vsock")
        .map_err(|e| Error::io("Failed to open /dev/vhost-vsock as read/write", e))?
        .into())
}

/// Sets the guest CID of a vhost-vsock fd: `cid`, or 259's candidates for the machine name (64
/// derived ones, then 64 random ones), skipping those other VMs have.
fn assign_cid(device: BorrowedFd<'_>, machine: &str, cid: Option<u32>) -> Result<u32> {
    let fixed = |e: std::io::Error| Error::io("Failed to fix CID for the guest VSOCK socket", e);
    if let Some(cid) = cid {
        crate::sys::vhost_vsock_set_guest_cid(device, cid).map_err(fixed)?;
        return Ok(cid);
    }
    let derived = (0..64).map(|i| crate::vsock::cid_candidate(machine, i));
    let random = (0..64)
        .map(|_| crate::vsock::cid_from(u64::from_ne_bytes(crate::host::random_bytes::<8>())));
    for candidate in derived.chain(random) {
        match crate::sys::vhost_vsock_set_guest_cid(device, candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            Err(e) => return Err(fixed(e)),
        }
    }
    Err(Error::new(
        "Failed to fix CID for the guest VSOCK socket: Failed to assign a CID to the guest vsock (all candidates are taken).",
    ))
}

/// An AF_VSOCK listener on a port the kernel picks, and that port.
fn vsock_listener(what: &str) -> Result<(OwnedFd, u32)> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, VsockAddr, bind, getsockname, listen, socket,
    };
    let failed = |e: nix::errno::Errno| Error::io(format!("Failed to create the {what}"), e);
    let listener = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(failed)?;
    bind(
        listener.as_raw_fd(),
        &VsockAddr::new(libc::VMADDR_CID_ANY, libc::VMADDR_PORT_ANY),
    )
    .map_err(failed)?;
    listen(&listener, Backlog::MAXCONN).map_err(failed)?;
    let port = getsockname::<VsockAddr>(listener.as_raw_fd())
        .map_err(failed)?
        .port();
    Ok((listener, port))
}

/// The AF_VSOCK listeners for the guest's notifications and, with `--forward-journal=`, its
/// journal.
fn kernel_vsock(cid: u32, journal: bool, resources: &mut Resources) -> Result<VsockAccess> {
    let (listener, notify_port) = vsock_listener("vsock notification listener")?;
    resources.fds.insert(FdName::NotifyListener, listener);
    let journal_port = if journal {
        let (listener, port) = vsock_listener("vsock listener for the forwarded journal")?;
        resources.fds.insert(FdName::JournalListener, listener);
        Some(port)
    } else {
        None
    };
    Ok(VsockAccess::Kernel {
        cid,
        notify_port,
        journal_port,
    })
}
