//! One request handler for both modes: validate, check policy, do the one privileged step,
//! answer. The caller's identity comes from the kernel (the socket), never from the message.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// TAP devices created through this connection (name, ifindex); deleted when the session
    /// ends.
    pub taps: Vec<(String, i32)>,
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
    pub fixed_caller: Option<Resolved>,
    /// In setuid mode the device nodes, opened while the helper was still root (they may be
    /// root-only, and the helper keeps no CAP_DAC_OVERRIDE). Each is good for one request, and
    /// is handed out only after the policy allowed it.
    pub preopened: Mutex<Vec<(&'static str, std::fs::File)>>,
    /// Held (with the records' flock, which threads of one process share) from counting TAPs
    /// to recording a new one, so concurrent callers cannot both pass a quota.
    pub tap_step: Mutex<()>,
    /// The root-owned records of the TAPs helpers made (quotas and lifetimes), or why they
    /// cannot be used (then no TAP is created).
    pub records: Result<crate::taps::Records, String>,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(ProtoError {
        kind,
        message: message.into(),
    })
}

/// FNV-1a (64 bits) of the user and the machine name: a fixed, documented algorithm, only to
/// spread the CIDs VMs start looking from (not for anything an attacker must not predict).
fn spread(uid: u32, machine: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in uid.to_le_bytes().iter().chain(machine.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// How many random names a TAP request tries before giving up (a name is only taken if
/// someone created an interface of that name; 48 random bits make that a guess).
const TAP_NAME_ATTEMPTS: usize = 8;

pub use vmspawn_privhelper::lock;

/// Up to 64 CIDs of `first..=last` to try, in order from a place derived from the user and
/// the machine name (so a VM tends to get the same CID each time).
pub fn vsock_candidates(uid: u32, machine: &str, first: u32, last: u32) -> Vec<u32> {
    let size = u64::from(last.saturating_sub(first)) + 1;
    let start = spread(uid, machine) % size;
    (0..size.min(64))
        .map(|i| first + ((start + i) % size) as u32)
        .collect()
}

/// The caller for the policy, resolved from the kernel-given uid, and why its groups may be
/// incomplete (then every rule that names groups denies).
pub type Resolved = (Caller, Option<String>);

/// Resolves the caller's user and group names (for the policy) from the kernel-given uid.
pub fn resolve_caller(peer: &Peer) -> Result<Resolved, Response> {
    crate::identity::resolve(peer.uid, peer.gid)
        .map_err(|message| error(ErrorKind::Denied, message))
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
        let (caller, groups_unresolved) = match &self.fixed_caller {
            Some(resolved) => resolved.clone(),
            None => resolve_caller(peer)?,
        };
        let policy = self.policy()?;
        let grant = policy
            .check_with(
                &caller,
                &vmspawn_policy::Request {
                    operation,
                    machine,
                    bridge,
                },
                groups_unresolved.as_deref(),
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
    /// caller's QEMU child (see leader.rs). Checks run in this order so a refusal never
    /// reaches machined: names, policy (and polkit), the leader, then the bus.
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
        let how = machined
            .register(machine, uuid, leader.pid, leader.pidfd())
            .map_err(|e| error(ErrorKind::Failed, e))?;
        // Given a pid (machined before 259), machined looked it up: it was the verified
        // process only if that is still alive. (Given the pidfd, machined pinned it itself.)
        if how == crate::machined::Registered::ByPid && !leader.alive() {
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

    /// Runs `step` on the TAP records, locked against other threads and other helpers.
    pub fn with_records<T>(
        &self,
        step: impl FnOnce(&crate::taps::Locked<'_>) -> Result<T, String>,
    ) -> Result<T, String> {
        let records = self.records.as_ref().map_err(Clone::clone)?;
        let _one_thread = lock(&self.tap_step);
        let locked = records.lock()?;
        step(&locked)
    }

    /// The session ended (connection closed and, in service mode, the caller's process gone):
    /// its TAP devices go, whatever their holder did with them.
    pub fn delete_session_taps(&self, session: &mut Session) {
        let taps = std::mem::take(&mut session.taps);
        if taps.is_empty() {
            return;
        }
        let result = self.with_records(|records| {
            for (ifname, ifindex) in &taps {
                records.remove(ifname, *ifindex)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("vmspawn-privhelper: {e}");
        }
    }

    fn create_tap(
        &self,
        peer: &Peer,
        machine: &str,
        bridge: Option<&str>,
        session: &mut Session,
    ) -> Result<(String, OwnedFd), Response> {
        let (grant, policy) =
            self.authorize(peer, Operation::CreateTap, Some(machine), bridge, session)?;
        let Some(start) = peer.start_time.filter(|_| peer.pid != 0) else {
            return Err(error(
                ErrorKind::Denied,
                "the caller's process could not be identified, and a TAP device lives no longer \
                 than the process that asked for it",
            ));
        };
        let caller = crate::taps::Proc {
            pid: peer.pid,
            start,
        };
        let created = self.with_records(|records| {
            records.reconcile()?;
            let (total, mine) = records.count(peer.uid)?;
            if mine >= grant.max_taps {
                return Ok(Err(error(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "you already have {mine} TAP devices, the limit of {} ({})",
                        grant.max_taps, grant.rule
                    ),
                )));
            }
            if total >= policy.max_taps_total() {
                return Ok(Err(error(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "the host already has {total} vmspawn TAP devices, the limit of {}",
                        policy.max_taps_total()
                    ),
                )));
            }
            let (ifname, ifindex, tun) = self.make_tap(peer)?;
            let me = records.identity();
            let record = crate::taps::Record {
                ifname: ifname.clone(),
                ifindex,
                uid: peer.uid,
                netns: me.1,
                holder: me.0,
                session: caller,
            };
            // Recorded before the caller can make it persistent; if recording fails, the
            // device goes with our fd.
            records.add(&record)?;
            session.taps.push((ifname.clone(), ifindex));
            Ok(Ok((ifname, ifindex, tun)))
        });
        let (ifname, ifindex, tun) = match created {
            Ok(Ok(made)) => made,
            Ok(Err(refusal)) => return Err(refusal),
            Err(e) => return Err(error(ErrorKind::Failed, e)),
        };
        if let Err(e) = privileges::with_net_admin(|| set_up_tap(&ifname, bridge)) {
            // Not handed out: delete it now.
            let _ = self.with_records(|records| records.remove(&ifname, ifindex));
            session.taps.retain(|(name, _)| name != &ifname);
            return Err(error(ErrorKind::Failed, e));
        }
        Ok((ifname, tun))
    }

    /// Creates a TAP device with a random free name, owned by the caller: (name, ifindex, fd).
    fn make_tap(&self, peer: &Peer) -> Result<(String, i32, OwnedFd), String> {
        privileges::with_net_admin(|| {
            for _ in 0..TAP_NAME_ATTEMPTS {
                let ifname = crate::taps::random_name()?;
                let tun = match self.take_preopened("/dev/net/tun") {
                    Some(tun) => tun,
                    None => OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                        .open("/dev/net/tun")
                        .map_err(|e| format!("failed to open /dev/net/tun: {e}"))?,
                };
                match sys::tun_create(tun.as_fd(), &ifname) {
                    Ok(()) => {}
                    // Someone made an interface of that name: never touch it; try another.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                    Err(e) => return Err(format!("failed to create TAP {ifname}: {e}")),
                }
                sys::tun_set_owner(tun.as_fd(), peer.uid, peer.gid)
                    .map_err(|e| format!("failed to set the owner of {ifname}: {e}"))?;
                let sock = control_socket()?;
                let index = sys::if_index(sock.as_fd(), &ifname)
                    .map_err(|e| format!("failed to look up {ifname}: {e}"))?;
                return Ok((ifname, index, OwnedFd::from(tun)));
            }
            Err(format!(
                "no free TAP name after {TAP_NAME_ATTEMPTS} random attempts; someone is creating \
                 vt-* interfaces"
            ))
        })
    }
}

fn control_socket() -> Result<OwnedFd, String> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("failed to create a control socket: {e}"))
}

/// Bridge (with qemu-bridge-helper's precautions: a MAC starting with 0xFE, so the bridge,
/// which takes the lowest MAC of its ports, never takes the TAP's; and the bridge's MTU), then
/// up.
fn set_up_tap(ifname: &str, bridge: Option<&str>) -> Result<(), String> {
    let sock = control_socket()?;
    if let Some(bridge) = bridge {
        let mtu = sys::mtu(sock.as_fd(), bridge)
            .map_err(|e| format!("failed to read the MTU of bridge {bridge}: {e}"))?;
        sys::set_mtu(sock.as_fd(), ifname, mtu)
            .map_err(|e| format!("failed to set the MTU of {ifname} to {mtu}: {e}"))?;
        sys::set_mac_first_byte(sock.as_fd(), ifname, 0xfe)
            .map_err(|e| format!("failed to set the MAC address of {ifname}: {e}"))?;
        let index = sys::if_index(sock.as_fd(), ifname)
            .map_err(|e| format!("failed to look up {ifname}: {e}"))?;
        sys::bridge_add(sock.as_fd(), bridge, index)
            .map_err(|e| format!("failed to attach {ifname} to bridge {bridge}: {e}"))?;
    }
    sys::link_up(sock.as_fd(), ifname).map_err(|e| format!("failed to bring {ifname} up: {e}"))
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
    fn cid_spread_is_fixed() {
        // FNV-1a: the same on every build and every run.
        assert_eq!(spread(0, ""), 0x4d25_767f_9dce_13f5);
        assert_ne!(spread(1001, "vm"), spread(1002, "vm"));
    }
}
