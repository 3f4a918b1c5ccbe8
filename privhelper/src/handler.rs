//! One request handler for both modes: validate, check policy, do the one privileged step,
//! answer. The caller's identity comes from the kernel (the socket), never from the message.

use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vmspawn_policy::{Caller, Operation, Policy};
use vmspawn_proto::{ErrorKind, PROTOCOL_VERSION, ProtoError, Request, Response};

use crate::privileges;
use crate::sys;

/// Who is asking, as the kernel told us.
#[derive(Clone, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The caller's start time when it connected, for polkit's pid-reuse check.
    pub start_time: Option<u64>,
    /// The caller's pidfd (SO_PEERPIDFD), which pins `pid` to the caller.
    pub pidfd: Option<Arc<OwnedFd>>,
}

/// What one connection asked for and holds.
#[derive(Default)]
pub struct Session {
    /// polkit may ask the user to authenticate (set by Hello).
    pub interactive_auth: bool,
    /// Machines registered through this connection; unregistered when it ends.
    pub registered: Vec<String>,
}

/// A launcher runs one VM: one registration per connection.
const MAX_REGISTRATIONS_PER_CONNECTION: usize = 1;

pub struct Handler {
    pub policy_path: PathBuf,
    /// polkit and machined on the system bus, when the bus is there.
    pub polkit: Option<crate::polkit::Polkit>,
    pub machined: Option<crate::machined::Machined>,
    /// Why there is no system bus connection, for error messages.
    pub no_bus_reason: String,
    /// In setuid mode the one caller, resolved before the helper confined itself.
    pub fixed_caller: Option<Caller>,
    /// In setuid mode the device nodes, opened while the helper was still root (they may be
    /// root-only, and the helper keeps no CAP_DAC_OVERRIDE). Each is good for one request, and
    /// is handed out only after the policy allowed it.
    pub preopened: Mutex<Vec<(&'static str, std::fs::File)>>,
    /// Held from counting TAPs to creating one, so concurrent callers cannot both pass a quota.
    pub tap_step: Mutex<()>,
    /// Where interfaces are listed (sysfs), for quotas.
    pub net_class: PathBuf,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(ProtoError {
        kind,
        message: message.into(),
    })
}

/// A hash of a user's machine, stable across runs: DefaultHasher::new() is SipHash with fixed
/// keys.
fn machine_hash(uid: u32, machine: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut hasher);
    machine.hash(&mut hasher);
    hasher.finish()
}

/// The TAP name for a user's machine: `vt-` and 8 hex digits of a hash of both. Users cannot
/// choose it, and it never names an interface the helper did not create (IFF_TUN_EXCL).
pub fn tap_name(uid: u32, machine: &str) -> String {
    format!("vt-{:08x}", machine_hash(uid, machine) as u32)
}

/// Locks `mutex`; the helper does not panic while holding a lock, so a poisoned one holds
/// consistent data.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Up to 64 CIDs of `first..=last` to try, in order from a place derived from the user and
/// the machine name (so a VM tends to get the same CID each time).
pub fn vsock_candidates(uid: u32, machine: &str, first: u32, last: u32) -> Vec<u32> {
    let size = u64::from(last.saturating_sub(first)) + 1;
    let start = machine_hash(uid, machine) % size;
    (0..size.min(64))
        .map(|i| first + ((start + i) % size) as u32)
        .collect()
}

/// Resolves the caller's user and group names (for the policy) from the kernel-given uid.
pub fn resolve_caller(peer: &Peer) -> Result<Caller, Response> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
        .ok()
        .flatten()
        .ok_or_else(|| {
            error(
                ErrorKind::Denied,
                format!("uid {} has no user name; the policy names users", peer.uid),
            )
        })?;
    let name = std::ffi::CString::new(user.name.clone())
        .map_err(|_| error(ErrorKind::Denied, "user name contains NUL"))?;
    let gids =
        nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(peer.gid)).unwrap_or_default();
    let groups = gids
        .into_iter()
        .filter_map(|g| {
            nix::unistd::Group::from_gid(g)
                .ok()
                .flatten()
                .map(|g| g.name)
        })
        .collect();
    Ok(Caller {
        uid: peer.uid,
        user: user.name,
        groups,
    })
}

/// How many of our TAPs exist in total, and how many belong to `uid`.
fn count_taps(net_class: &Path, uid: u32) -> (u32, u32) {
    let (mut total, mut mine) = (0, 0);
    for entry in std::fs::read_dir(net_class).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("vt-") {
            continue;
        }
        total += 1;
        let owner = std::fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        if owner.trim().parse::<u32>().ok() == Some(uid) {
            mine += 1;
        }
    }
    (total, mine)
}

impl Handler {
    /// Asks polkit about each action the request needs (a bridge needs attach-bridge too).
    fn polkit_check(
        &self,
        peer: &Peer,
        operation: Operation,
        bridge: bool,
        rule: &str,
        interactive: bool,
    ) -> Result<(), Response> {
        let Some(polkit) = &self.polkit else {
            return Err(error(
                ErrorKind::Denied,
                format!(
                    "{rule} requires polkit, but this helper has no connection to it: {}",
                    self.no_bus_reason
                ),
            ));
        };
        let Some(start_time) = peer.start_time else {
            return Err(error(
                ErrorKind::Denied,
                "the caller's process could not be identified for polkit",
            ));
        };
        let subject = crate::polkit::Subject {
            pid: peer.pid,
            start_time,
            uid: peer.uid,
        };
        let mut actions = vec![format!("org.vmspawn.privhelper.{}", operation.name())];
        if bridge {
            actions.push("org.vmspawn.privhelper.attach-bridge".into());
        }
        for action in actions {
            match polkit.check(&action, subject, interactive) {
                Ok(crate::polkit::Authorization::Authorized) => {}
                Ok(crate::polkit::Authorization::NeedsAuthentication) if interactive => {
                    return Err(error(
                        ErrorKind::Denied,
                        format!(
                            "polkit requires authentication for {action} ({rule} requires polkit), and it \
                             did not succeed: is a polkit agent running for your session?"
                        ),
                    ));
                }
                Ok(crate::polkit::Authorization::NeedsAuthentication) => {
                    return Err(error(
                        ErrorKind::Denied,
                        format!(
                            "polkit requires authentication for {action} ({rule} requires polkit), and \
                             interactive authentication is off: run vmspawn on a terminal without \
                             --no-ask-password"
                        ),
                    ));
                }
                Ok(crate::polkit::Authorization::Denied) => {
                    return Err(error(
                        ErrorKind::Denied,
                        format!(
                            "polkit did not authorize {action} for uid {} ({rule} requires polkit)",
                            peer.uid
                        ),
                    ));
                }
                Err(e) => {
                    return Err(error(
                        ErrorKind::Denied,
                        format!("{e} ({rule} requires polkit)"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn policy(&self) -> Result<Policy, Response> {
        Policy::load(&self.policy_path)
            .map_err(|e| error(ErrorKind::Denied, format!("policy unavailable: {e}")))
    }

    /// Checks the policy; returns the grant or the answer that refuses.
    fn authorize(
        &self,
        peer: &Peer,
        operation: Operation,
        machine: Option<&str>,
        bridge: Option<&str>,
        session: &Session,
    ) -> Result<(vmspawn_policy::Grant, Policy), Response> {
        let caller = match &self.fixed_caller {
            Some(caller) => caller.clone(),
            None => resolve_caller(peer)?,
        };
        let policy = self.policy()?;
        let grant = policy
            .check(
                &caller,
                &vmspawn_policy::Request {
                    operation,
                    machine,
                    bridge,
                },
            )
            .map_err(|denial| error(ErrorKind::Denied, denial.message))?;
        if grant.polkit {
            self.polkit_check(
                peer,
                operation,
                bridge.is_some(),
                &grant.rule,
                session.interactive_auth,
            )?;
        }
        Ok((grant, policy))
    }

    /// Answers one request. `fds` are the descriptors that came with it.
    pub fn handle(
        &self,
        peer: &Peer,
        request: Request,
        fds: Vec<OwnedFd>,
        session: &mut Session,
    ) -> (Response, Option<OwnedFd>) {
        if !fds.is_empty() && !matches!(request, Request::RegisterMachine { .. }) {
            return (
                error(
                    ErrorKind::InvalidRequest,
                    "unexpected file descriptors with the request",
                ),
                None,
            );
        }
        if let Err(e) = vmspawn_proto::validate(&request) {
            return (Response::Error(e), None);
        }
        match request {
            Request::Hello {
                version,
                interactive_auth,
            } if version == PROTOCOL_VERSION => {
                session.interactive_auth = interactive_auth;
                (Response::Hello { version }, None)
            }
            Request::Hello { version, .. } => (
                error(
                    ErrorKind::VersionMismatch,
                    format!(
                        "protocol version {version} is not supported (this helper speaks {PROTOCOL_VERSION})"
                    ),
                ),
                None,
            ),
            Request::CreateTap { machine, bridge } => {
                match self.create_tap(peer, &machine, bridge.as_deref(), session) {
                    Ok((ifname, fd)) => (Response::Tap { ifname }, Some(fd)),
                    Err(response) => (response, None),
                }
            }
            Request::OpenKvm => match self.authorize(peer, Operation::OpenKvm, None, None, session)
            {
                Ok(_) => self.open_device("/dev/kvm", "the kvm module"),
                Err(response) => (response, None),
            },
            Request::OpenVhostVsock { machine, cid } => {
                match self.open_vhost_vsock(peer, &machine, cid, session) {
                    Ok((cid, fd)) => (Response::VsockDevice { cid }, Some(fd)),
                    Err(response) => (response, None),
                }
            }
            Request::RegisterMachine { machine, uuid } => {
                match self.register_machine(peer, &machine, uuid, fds, session) {
                    Ok(()) => (Response::Registered, None),
                    Err(response) => (response, None),
                }
            }
            Request::UnregisterMachine { machine } => {
                match self.unregister_machine(&machine, session) {
                    Ok(()) => (Response::Unregistered, None),
                    Err(response) => (response, None),
                }
            }
        }
    }

    /// Registers `machine` with machined, led by the process `fds` names, which must be the
    /// caller's own child. Checks run in this order so a refusal never reaches machined: names,
    /// policy (and polkit), the leader, then the bus.
    fn register_machine(
        &self,
        peer: &Peer,
        machine: &str,
        uuid: Option<[u8; 16]>,
        mut fds: Vec<OwnedFd>,
        session: &mut Session,
    ) -> Result<(), Response> {
        let (Some(pidfd), true) = (fds.pop(), fds.is_empty()) else {
            return Err(error(
                ErrorKind::InvalidRequest,
                "RegisterMachine needs exactly one fd: a pidfd of the VM process",
            ));
        };
        if session.registered.len() >= MAX_REGISTRATIONS_PER_CONNECTION {
            return Err(error(
                ErrorKind::QuotaExceeded,
                format!(
                    "this connection already registered {}; one connection registers one VM",
                    session.registered.join(", ")
                ),
            ));
        }
        self.authorize(
            peer,
            Operation::RegisterMachine,
            Some(machine),
            None,
            session,
        )?;
        let caller = crate::leader::CallerProcess {
            uid: peer.uid,
            pid: peer.pid,
            pidfd: peer.pidfd.as_deref().map(AsFd::as_fd),
        };
        let leader =
            crate::leader::verify(pidfd, &caller).map_err(|e| error(ErrorKind::Denied, e))?;
        let Some(machined) = &self.machined else {
            return Err(error(
                ErrorKind::Unsupported,
                format!("systemd-machined cannot be reached: {}", self.no_bus_reason),
            ));
        };
        machined
            .register(machine, uuid, leader.pid)
            .map_err(|e| error(ErrorKind::Failed, e))?;
        // machined looked the pid up; it was the verified process only if that is still alive.
        if !leader.alive() {
            let _ = machined.unregister(machine);
            return Err(error(
                ErrorKind::Failed,
                format!(
                    "the leader process {} exited while '{machine}' was being registered",
                    leader.pid
                ),
            ));
        }
        session.registered.push(machine.to_string());
        Ok(())
    }

    fn unregister_machine(&self, machine: &str, session: &mut Session) -> Result<(), Response> {
        let Some(index) = session.registered.iter().position(|m| m == machine) else {
            return Err(error(
                ErrorKind::Denied,
                "that machine was not registered through this connection; a connection can only \
                 unregister what it registered",
            ));
        };
        session.registered.swap_remove(index);
        match &self.machined {
            Some(machined) => machined
                .unregister(machine)
                .map_err(|e| error(ErrorKind::Failed, e)),
            None => Ok(()),
        }
    }

    /// The connection ended: its registrations end with it.
    pub fn end_session(&self, session: &mut Session) {
        let Some(machined) = &self.machined else {
            session.registered.clear();
            return;
        };
        for machine in session.registered.drain(..) {
            if let Err(e) = machined.unregister(&machine) {
                eprintln!("vmspawn-privhelper: {e}");
            }
        }
    }

    /// An fd of /dev/vhost-vsock whose guest CID the helper set from the caller's CID range
    /// (`vsock-cids`): the one asked for, or a free one starting at a place derived from the
    /// user and machine. (The caller holds the fd, so it could set another CID with the same
    /// ioctl; the kernel refuses CIDs in use, so this cannot take a running VM's CID. The
    /// ranges allocate CIDs between users; they are not an isolation boundary.)
    fn open_vhost_vsock(
        &self,
        peer: &Peer,
        machine: &str,
        cid: Option<u32>,
        session: &Session,
    ) -> Result<(u32, OwnedFd), Response> {
        let (grant, _) = self.authorize(
            peer,
            Operation::OpenVhostVsock,
            Some(machine),
            None,
            session,
        )?;
        let Some((first, last)) = grant.vsock_cids else {
            return Err(error(
                ErrorKind::Denied,
                format!("{} gives no vsock-cids range", grant.rule),
            ));
        };
        if let Some(cid) = cid {
            if !(first..=last).contains(&cid) {
                return Err(error(
                    ErrorKind::Denied,
                    format!(
                        "CID {cid} is outside the range {first}-{last} that {} allows you",
                        grant.rule
                    ),
                ));
            }
        }
        let (response, fd) = self.open_device("/dev/vhost-vsock", "the vhost_vsock module");
        let Some(fd) = fd else {
            return Err(response);
        };
        let candidates: Vec<u32> = match cid {
            Some(cid) => vec![cid],
            None => vsock_candidates(peer.uid, machine, first, last),
        };
        for candidate in candidates {
            match sys::vhost_vsock_set_guest_cid(fd.as_fd(), candidate) {
                Ok(()) => return Ok((candidate, fd)),
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && cid.is_none() => {}
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                    return Err(error(
                        ErrorKind::Failed,
                        format!("CID {candidate} is in use by another VM"),
                    ));
                }
                Err(e) => {
                    return Err(error(
                        ErrorKind::Failed,
                        format!("failed to set guest CID {candidate}: {e}"),
                    ));
                }
            }
        }
        Err(error(
            ErrorKind::QuotaExceeded,
            format!(
                "no free CID in the range {first}-{last} that {} allows you",
                grant.rule
            ),
        ))
    }

    fn take_preopened(&self, path: &str) -> Option<std::fs::File> {
        let mut preopened = lock(&self.preopened);
        let index = preopened.iter().position(|(p, _)| *p == path)?;
        Some(preopened.swap_remove(index).1)
    }

    /// Opens a device node the policy allowed.
    fn open_device(&self, path: &str, module: &str) -> (Response, Option<OwnedFd>) {
        if let Some(file) = self.take_preopened(path) {
            return (Response::Device, Some(OwnedFd::from(file)));
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => (Response::Device, Some(OwnedFd::from(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                error(
                    ErrorKind::Failed,
                    format!("{path} does not exist on this host; {module} is not loaded"),
                ),
                None,
            ),
            Err(e) => (
                error(ErrorKind::Failed, format!("failed to open {path}: {e}")),
                None,
            ),
        }
    }

    fn create_tap(
        &self,
        peer: &Peer,
        machine: &str,
        bridge: Option<&str>,
        session: &Session,
    ) -> Result<(String, OwnedFd), Response> {
        let (grant, policy) =
            self.authorize(peer, Operation::CreateTap, Some(machine), bridge, session)?;
        let _one_at_a_time = lock(&self.tap_step);
        let (total, mine) = count_taps(&self.net_class, peer.uid);
        if mine >= grant.max_taps {
            return Err(error(
                ErrorKind::QuotaExceeded,
                format!(
                    "you already have {mine} TAP devices, the limit of {} ({})",
                    grant.max_taps, grant.rule
                ),
            ));
        }
        if total >= policy.max_taps_total() {
            return Err(error(
                ErrorKind::QuotaExceeded,
                format!(
                    "the host already has {total} vmspawn TAP devices, the limit of {}",
                    policy.max_taps_total()
                ),
            ));
        }
        let ifname = tap_name(peer.uid, machine);
        let fd = privileges::with_net_admin(|| {
            let tun = match self.take_preopened("/dev/net/tun") {
                Some(tun) => tun,
                None => OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open("/dev/net/tun")
                    .map_err(|e| format!("failed to open /dev/net/tun: {e}"))?,
            };
            sys::tun_create(tun.as_fd(), &ifname).map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => format!("an interface named {ifname} already exists (is VM '{machine}' already running?)"),
                _ => format!("failed to create TAP {ifname}: {e}"),
            })?;
            sys::tun_set_owner(tun.as_fd(), peer.uid, peer.gid).map_err(|e| format!("failed to set the owner of {ifname}: {e}"))?;
            let sock = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| format!("failed to create a control socket: {e}"))?;
            if let Some(bridge) = bridge {
                let index = sys::if_index(sock.as_fd(), &ifname).map_err(|e| format!("failed to look up {ifname}: {e}"))?;
                sys::bridge_add(sock.as_fd(), bridge, index)
                    .map_err(|e| format!("failed to attach {ifname} to bridge {bridge}: {e}"))?;
            }
            sys::link_up(sock.as_fd(), &ifname).map_err(|e| format!("failed to bring {ifname} up: {e}"))?;
            Ok(OwnedFd::from(tun))
        })
        .map_err(|message| error(ErrorKind::Failed, message))?;
        Ok((ifname, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_candidates_stay_in_range() {
        let all = vsock_candidates(1001, "vm", 10, 19);
        assert_eq!(all.len(), 10);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, (10..=19).collect::<Vec<_>>());
        assert_eq!(all, vsock_candidates(1001, "vm", 10, 19));
        let wide = vsock_candidates(1001, "vm", 3, u32::MAX - 1);
        assert_eq!(wide.len(), 64);
        assert!(wide.iter().all(|c| (3..u32::MAX).contains(c)));
        assert_eq!(vsock_candidates(7, "x", 5, 5), [5]);
    }

    #[test]
    fn tap_names_are_fixed_pattern_and_stable() {
        let a = tap_name(1001, "debian");
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("vt-") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, tap_name(1001, "debian"));
        assert_ne!(a, tap_name(1002, "debian"));
        assert_ne!(a, tap_name(1001, "debian2"));
    }
}
