//! vmspawn-privhelper: the only privileged part of vmspawn. For an unprivileged caller, after
//! checking the admin's policy, it creates a TAP device owned by the caller, or hands over an fd
//! of /dev/kvm or /dev/vhost-vsock, or registers the caller's VM with systemd-machined. It
//! never runs QEMU and never execs.
//!
//! Modes (one request handler):
//! - service: `--listen PATH`, or socket activation (LISTEN_FDS); many clients, a thread each;
//! - setuid: `--serve-fd N`, started setuid-root by the launcher over a socketpair; serves that
//!   one client (the real uid) and exits when the socket closes.

#![deny(unsafe_code)]

mod confine;
mod handler;
mod identity;
mod leader;
mod machined;
mod polkit;
mod privileges;
mod process;
#[allow(unsafe_code)]
mod sys;
mod taps;

// The D-Bus client is the library's (so the fuzz target parses with the same code).
use vmspawn_privhelper::bus;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use vmspawn_proto::{ErrorKind, ProtoError, Request, Response, wire};

use handler::{Handler, Peer, Session};

/// The system bus a setuid helper uses: never an address from the caller's environment.
const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// A connection that does not finish a request in this time is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A service connection that holds no registration and no TAP is closed this long after it
/// was accepted, however many requests it sends (a request being answered is not cut short).
const MAX_LIFETIME: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 512;
/// How often the service looks for TAP devices whose holder and session are gone.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
/// Per user, the uids it owns through /etc/subuid included.
const MAX_CONNECTIONS_PER_USER: usize = 128;
/// The service's RLIMIT_NOFILE soft limit (up to the hard limit): each connection holds its
/// socket and the caller's pidfd, and the unit's LimitNOFILE matches.
const SERVICE_NOFILE: u64 = 4096;

fn usage() -> &'static str {
    "usage: vmspawn-privhelper --listen PATH [--policy PATH]   (service mode)\n\
     \x20      vmspawn-privhelper [--policy PATH]                 (socket activation)\n\
     \x20      vmspawn-privhelper --serve-fd N                    (setuid mode, started by vmspawn)"
}

enum Mode {
    Listen(PathBuf),
    Activated(OwnedFd),
    Setuid(OwnedFd),
}

struct Options {
    mode: Mode,
    policy: PathBuf,
}

/// LISTEN_FDS handed us exactly one socket (fd 3), and it is meant for us.
fn activated_listener(listen_pid: Option<String>, listen_fds: Option<String>) -> Option<OwnedFd> {
    let pid_ok = listen_pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let one = listen_fds.as_deref() == Some("1");
    (pid_ok && one).then(|| sys::inherited_fd(3))
}

fn parse_options(
    args: &[String],
    setuid: bool,
    activated: Option<OwnedFd>,
) -> Result<Options, String> {
    if args.iter().filter(|a| *a == "--serve-fd").count() > 1 {
        return Err(format!("--serve-fd is given twice\n{}", usage()));
    }
    let mut policy = PathBuf::from(vmspawn_policy::DEFAULT_POLICY_PATH);
    let mut mode = None;
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| {
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| format!("{} needs a value\n{}", args[i], usage()))
        };
        match args[i].as_str() {
            "--listen" => mode = Some(Mode::Listen(PathBuf::from(value(i)?))),
            "--serve-fd" if !setuid => {
                return Err(
                    "--serve-fd is for the setuid mode: the binary must be installed setuid root"
                        .into(),
                );
            }
            "--serve-fd" => {
                let fd: i32 = value(i)?
                    .parse()
                    .map_err(|_| format!("--serve-fd needs a number\n{}", usage()))?;
                if fd < 3 {
                    return Err("--serve-fd must be 3 or more".into());
                }
                let sock = sys::inherited_fd(fd);
                let kind = socket::getsockopt(&sock, socket::sockopt::SockType)
                    .map_err(|e| format!("--serve-fd {fd} is not a socket: {e}"))?;
                if kind != SockType::SeqPacket {
                    return Err(format!("--serve-fd {fd} must be a SOCK_SEQPACKET socket"));
                }
                mode = Some(Mode::Setuid(sock));
            }
            // The caller must never choose the policy: only honoured when not setuid.
            "--policy" if setuid => return Err("--policy cannot be used by a setuid caller".into()),
            "--policy" => policy = PathBuf::from(value(i)?),
            "--help" | "-h" => return Err(usage().into()),
            other => return Err(format!("unknown argument '{other}'\n{}", usage())),
        }
        i += 2;
    }
    let mode = match (mode, activated) {
        (Some(Mode::Setuid(fd)), _) => Mode::Setuid(fd),
        (Some(_), _) if setuid => {
            return Err("a setuid helper only serves its caller (--serve-fd)".into());
        }
        (Some(mode), _) => mode,
        (None, Some(fd)) if !setuid => Mode::Activated(fd),
        _ => return Err(usage().into()),
    };
    Ok(Options { mode, policy })
}

/// Binds the service socket at `path`. Refuses anything at that path that is not a socket
/// (a symlink, a file), and a parent directory others could write to.
fn bind_listener(path: &Path) -> Result<OwnedFd, String> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = std::fs::symlink_metadata(parent)
        .map_err(|e| format!("socket directory {}: {e}", parent.display()))?;
    if !meta.is_dir() || meta.mode() & 0o022 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "socket directory {} must be a real directory owned by the helper's user and not writable by others",
            parent.display()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| format!("failed to remove stale socket {}: {e}", path.display()))?,
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        Err(_) => {}
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("failed to create the service socket: {e}"))?;
    // Bound under a temporary name in the same directory and renamed into place once it
    // listens: a client that finds the path never meets a socket nobody listens on yet.
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let address = UnixAddr::new(&staging)
        .map_err(|e| format!("bad socket path {}: {e}", staging.display()))?;
    socket::bind(fd.as_raw_fd(), &address)
        .map_err(|e| format!("failed to bind {}: {e}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("failed to make {} connectable: {e}", staging.display()))?;
    socket::listen(
        &fd,
        socket::Backlog::new(64).unwrap_or(socket::Backlog::MAXCONN),
    )
    .map_err(|e| format!("failed to listen on {}: {e}", staging.display()))?;
    std::fs::rename(&staging, path).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        format!(
            "failed to move the socket into place at {}: {e}",
            path.display()
        )
    })?;
    Ok(fd)
}

fn reply(sock: BorrowedFd<'_>, response: &Response, fd: Option<&OwnedFd>) -> bool {
    let fds: Vec<BorrowedFd<'_>> = fd.map(AsFd::as_fd).into_iter().collect();
    wire::send_message(sock, response, &fds).is_ok()
}

fn refuse(sock: BorrowedFd<'_>, kind: ErrorKind, message: String) {
    let _ = wire::send_message(sock, &Response::Error(ProtoError { kind, message }), &[]);
}

/// One request from a connection. Returns false when the connection should be closed.
fn serve_one(
    handler: &Handler,
    sock: BorrowedFd<'_>,
    peer: &Peer,
    greeted: &mut bool,
    session: &mut Session,
) -> bool {
    let (request, fds) = match wire::recv_message::<Request>(sock) {
        Ok(received) => received,
        Err(wire::WireError::Closed) => return false,
        Err(e) => {
            refuse(
                sock,
                ErrorKind::InvalidRequest,
                format!("malformed request: {e}"),
            );
            return false;
        }
    };
    if !*greeted && !matches!(request, Request::Hello { .. }) {
        refuse(
            sock,
            ErrorKind::InvalidRequest,
            "the first request must be Hello".into(),
        );
        return false;
    }
    if *greeted && matches!(request, Request::Hello { .. }) {
        refuse(
            sock,
            ErrorKind::InvalidRequest,
            "Hello was already sent on this connection; a connection says Hello once".into(),
        );
        return false;
    }
    let (response, fd) = handler.handle(peer, request, fds, session);
    if matches!(response, Response::Hello { .. }) {
        *greeted = true;
    }
    let keep = !matches!(
        &response,
        Response::Error(ProtoError {
            kind: ErrorKind::VersionMismatch,
            ..
        })
    );
    reply(sock, &response, fd.as_ref()) && keep
}

/// Open connections, in total and per user, to bound what one user can hold. A user is the
/// owner key of `identity::SubuidOwners`: a uid of someone's /etc/subuid range counts as that
/// user.
#[derive(Default)]
struct Occupancy {
    total: usize,
    per_user: std::collections::HashMap<u64, usize>,
}

impl Occupancy {
    fn enter(&mut self, user: u64) -> bool {
        let mine = self.per_user.entry(user).or_default();
        if self.total >= MAX_CONNECTIONS || *mine >= MAX_CONNECTIONS_PER_USER {
            if *mine == 0 {
                self.per_user.remove(&user);
            }
            return false;
        }
        *mine += 1;
        self.total += 1;
        true
    }

    fn leave(&mut self, user: u64) {
        self.total = self.total.saturating_sub(1);
        if let Some(mine) = self.per_user.get_mut(&user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                self.per_user.remove(&user);
            }
        }
    }
}

/// Raises the service's soft RLIMIT_NOFILE (up to its hard limit) so that every connection
/// the caps allow has its fds; says so when the hard limit is too low for that.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = (MAX_CONNECTIONS * 2 + 64) as u64;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let want = SERVICE_NOFILE.min(hard);
            if soft < want {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
            }
            if want < needed {
                eprintln!(
                    "vmspawn-privhelper: RLIMIT_NOFILE is at most {hard}, less than the {needed} \
                     that {MAX_CONNECTIONS} connections need (LimitNOFILE= of the unit)"
                );
            }
        }
        Err(e) => eprintln!("vmspawn-privhelper: getrlimit: {e}"),
    }
}

/// Each connection is served by a thread of its own, so one that waits (for polkit to ask a
/// user for a password, or for machined) holds up no one else.
fn serve_many(handler: Handler, listener: OwnedFd) -> Result<(), String> {
    let handler = Arc::new(handler);
    let occupancy = Arc::new(Mutex::new(Occupancy::default()));
    let mut owners = identity::SubuidOwners::default();
    // TAPs of setuid helpers (and of an earlier service) whose holder and session are gone.
    let reconciler = Arc::clone(&handler);
    std::thread::Builder::new()
        .name("reconcile".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            loop {
                std::thread::sleep(RECONCILE_INTERVAL);
                if let Err(e) = reconciler.with_records(|records| records.reconcile()) {
                    eprintln!("vmspawn-privhelper: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the reconcile thread: {e}"))?;
    loop {
        let raw = match socket::accept4(
            listener.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(raw) => raw,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
            Err(e @ (nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)) => {
                // Out of fds: wait for connections to end rather than spin.
                eprintln!("vmspawn-privhelper: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(format!("accept failed: {e}")),
        };
        let sock = sys::inherited_fd(raw);
        // Identity from the kernel: the uid from SO_PEERCRED, the process through its pidfd.
        let Ok((uid, gid, _)) = wire::peer_credentials(sock.as_fd()) else {
            continue;
        };
        let (pid, start_time, pidfd) = process::peer_process(sock.as_fd());
        let user = owners.owner_of(uid);
        if !handler::lock(&occupancy).enter(user) {
            refuse(
                sock.as_fd(),
                ErrorKind::Denied,
                "too many connections to the helper; try again later".into(),
            );
            continue;
        }
        let peer = Peer {
            uid,
            gid,
            pid,
            start_time,
            pidfd,
        };
        let (thread_handler, thread_occupancy) = (Arc::clone(&handler), Arc::clone(&occupancy));
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_caller(&thread_handler, sock, peer, true);
                handler::lock(&thread_occupancy).leave(user);
            });
        if let Err(e) = spawned {
            // The closure (and with it the socket) is gone: the caller sees the connection end.
            eprintln!("vmspawn-privhelper: cannot serve a connection: {e}");
            handler::lock(&occupancy).leave(user);
        }
    }
}

/// Serves one connection. When it ends, its registrations end; its TAP devices go once the
/// caller's process has exited too (`wait_for_caller`, service mode: vmspawn's launcher lives
/// exactly as long as its VM, and may close the connection early) — in setuid mode the
/// helper's warden waits for that instead, as the launcher waits for the helper to exit.
/// In service mode (`wait_for_caller`) a connection that holds no registration and no TAP
/// is also closed once it is `MAX_LIFETIME` old, whatever it sends.
fn serve_caller(handler: &Handler, sock: OwnedFd, peer: Peer, wait_for_caller: bool) {
    let mut greeted = false;
    let mut session = Session::default();
    let accepted = std::time::Instant::now();
    loop {
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let holds = !session.registered.is_empty() || !session.taps.is_empty();
        let left = MAX_LIFETIME.saturating_sub(accepted.elapsed());
        if wait_for_caller && !holds && left.is_zero() {
            refuse(
                sock.as_fd(),
                ErrorKind::Denied,
                format!(
                    "this connection is {} s old and holds no registration or TAP device; \
                     connect again",
                    MAX_LIFETIME.as_secs()
                ),
            );
            break;
        }
        // The lifetime ends before the idle limit would: wait only until then.
        let lifetime_first = wait_for_caller && !holds && left < IDLE_TIMEOUT;
        // No idle limit while a registration is held: it lasts as long as the VM.
        let timeout = if session.registered.is_empty() {
            let wait = if lifetime_first { left } else { IDLE_TIMEOUT };
            // Rounded up, so the wait does not end before the lifetime does.
            let ms = wait.as_micros().div_ceil(1000).max(1);
            PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX))
                .unwrap_or(PollTimeout::NONE)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            // At the end of its lifetime: said above, on the next turn.
            Ok(0) if lifetime_first => continue,
            Ok(0) => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        if !serve_one(handler, sock.as_fd(), &peer, &mut greeted, &mut session) {
            break;
        }
    }
    drop(sock);
    handler.end_session(&mut session);
    if session.taps.is_empty() || !wait_for_caller {
        return;
    }
    if let Some(pidfd) = &peer.pidfd {
        wait_for_exit(pidfd.as_fd());
    }
    handler.delete_session_taps(&mut session);
}

/// Waits until the process of `pidfd` has exited (a pidfd polls readable then).
fn wait_for_exit(pidfd: BorrowedFd<'_>) {
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// The system bus, for polkit and machined: one connection now (so a missing bus is said at
/// start); with `reconnect` (the service) more as calls need them. The bus client starts no
/// threads.
fn connect_bus(handler: &mut Handler, address: &str, reconnect: bool) {
    match bus::Bus::connect(address, reconnect) {
        Ok(bus) => {
            let bus = Arc::new(bus);
            handler.polkit = Some(polkit::Polkit::new(Arc::clone(&bus)));
            handler.machined = Some(machined::Machined::new(bus));
        }
        Err(e) => {
            eprintln!(
                "vmspawn-privhelper: no system bus; rules that require polkit deny, and machines cannot be \
                 registered: {e}"
            );
            handler.no_bus_reason = e;
        }
    }
}

/// Landlock, then the system bus, then seccomp on all threads. Without a system bus, rules that need polkit deny, with a message.
fn confine_service(
    handler: &mut Handler,
    policy: &Path,
    allow_unconfined: bool,
    bus: &str,
) -> Result<(), String> {
    confine::landlock(policy, allow_unconfined)?;
    connect_bus(handler, bus, true);
    confine::seccomp()
}

/// Resource limits a setuid helper runs with, whatever its caller set: (resource, soft, hard).
/// Called as root, before anything is opened.
/// The caller's limits must not change a decision (a low RLIMIT_NOFILE making counting fail,
/// RLIMIT_FSIZE killing a record write, RLIMIT_NPROC stopping the warden).
fn reset_resource_limits() -> Result<(), String> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let limits = [
        (Resource::RLIMIT_NOFILE, 4096, 4096),
        (Resource::RLIMIT_FSIZE, RLIM_INFINITY, RLIM_INFINITY),
        (Resource::RLIMIT_AS, RLIM_INFINITY, RLIM_INFINITY),
        (Resource::RLIMIT_DATA, RLIM_INFINITY, RLIM_INFINITY),
        (Resource::RLIMIT_STACK, 8 << 20, RLIM_INFINITY),
        (Resource::RLIMIT_NPROC, RLIM_INFINITY, RLIM_INFINITY),
        (Resource::RLIMIT_CPU, RLIM_INFINITY, RLIM_INFINITY),
        (Resource::RLIMIT_MEMLOCK, 8 << 20, 8 << 20),
        (Resource::RLIMIT_SIGPENDING, 1024, 1024),
        (Resource::RLIMIT_CORE, 0, 0),
    ];
    for (resource, soft, hard) in limits {
        let reset = match setrlimit(resource, soft, hard) {
            // Raising a hard limit needs CAP_SYS_RESOURCE, which a container may withhold:
            // then up to the hard limit the caller left (a limit too low makes requests fail,
            // never succeed where they should not).
            Err(nix::errno::Errno::EPERM) => {
                getrlimit(resource).and_then(|(_, max)| setrlimit(resource, soft.min(max), max))
            }
            other => other,
        };
        reset.map_err(|e| format!("failed to reset resource limit {resource:?}: {e}"))?;
    }
    Ok(())
}

/// The one `--serve-fd` value, for closing everything else before anything is opened.
fn serve_fd_argument(args: &[String]) -> Option<i32> {
    let values: Vec<&String> = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| *flag == "--serve-fd")
        .map(|(_, value)| value)
        .collect();
    match values[..] {
        [one] => one.parse().ok().filter(|&fd: &i32| fd >= 3),
        _ => None,
    }
}

/// Setuid mode: the serve fd's peer must be our parent (vmspawn's launcher made the
/// socketpair), running as our real uid. Returns the parent's pidfd, pinned.
fn check_serve_peer(sock: BorrowedFd<'_>, real: u32) -> Result<(OwnedFd, taps::Proc), String> {
    let (uid, _, pid) = wire::peer_credentials(sock)
        .map_err(|e| format!("cannot identify the peer of --serve-fd: {e}"))?;
    let parent = nix::unistd::getppid().as_raw();
    if pid != parent || uid != real {
        return Err(format!(
            "the peer of --serve-fd is pid {pid} (uid {uid}), not this helper's parent (pid {parent}, uid {real}); only vmspawn starts the setuid helper, over a socketpair of its own"
        ));
    }
    let parent = parent as u32;
    let pidfd = sys::try_pidfd_open(parent).map_err(|e| format!("cannot pin the caller: {e}"))?;
    let start = process::start_time(parent);
    // The parent is still the one checked (it did not exit and have its pid reused).
    match (start, nix::unistd::getppid().as_raw() as u32 == parent) {
        (Some(start), true) => Ok((pidfd, taps::Proc { pid: parent, start })),
        _ => Err("the caller exited while the helper started".into()),
    }
}

/// Setuid mode: a root process that outlives this helper (which exits when the launcher closes
/// the connection, or is killed by the user it runs as) and deletes the TAP devices this
/// helper made once the launcher — the VM's session — has exited. It is root again (the user
/// cannot signal it), in a session of its own, with nothing but CAP_NET_ADMIN, confined like
/// the helper. Forked while the helper has one thread.
fn start_warden(
    launcher: &OwnedFd,
    holder: taps::Proc,
    policy: &Path,
    allow_unconfined: bool,
) -> Result<(), String> {
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot start the warden: {e}"))?;
    match sys::fork().map_err(|e| format!("cannot start the warden: {e}"))? {
        Some(_) => {
            drop(ready_write);
            let mut byte = [0u8; 1];
            match nix::unistd::read(ready_read.as_raw_fd(), &mut byte) {
                Ok(1) => Ok(()),
                _ => Err("the helper's warden (which deletes its TAP devices after the VM) did not start"
                    .into()),
            }
        }
        None => {
            let code = match warden(launcher, holder, policy, allow_unconfined, ready_write) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("vmspawn-privhelper (warden): {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn warden(
    launcher: &OwnedFd,
    holder: taps::Proc,
    policy: &Path,
    allow_unconfined: bool,
    ready: OwnedFd,
) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    let parent = sys::try_pidfd_open(holder.pid).map_err(|e| format!("pidfd: {e}"))?;
    if nix::unistd::getppid().as_raw() as u32 != holder.pid {
        return Err("the helper exited before its warden started".into());
    }
    sys::close_fds_except(&[launcher.as_raw_fd(), parent.as_raw_fd(), ready.as_raw_fd()])
        .map_err(|e| format!("close_range: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("setresgid: {e}"))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("setresuid: {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    // Its own open file description: flock does not exclude holders of the same one.
    let records = taps::open_records(Path::new(taps::RUN_DIR), holder)?;
    privileges::drop_for_service()?;
    confine::landlock(policy, allow_unconfined)?;
    confine::seccomp()?;
    nix::unistd::write(&ready, &[1]).map_err(|e| format!("write: {e}"))?;
    drop(ready);
    wait_for_exit(parent.as_fd());
    let held = {
        let locked = records.lock()?;
        locked.held_by(holder)?
    };
    if held == 0 {
        return Ok(());
    }
    wait_for_exit(launcher.as_fd());
    let locked = records.lock()?;
    locked.end_session(holder, false)?;
    locked.reconcile()
}

fn run() -> Result<(), String> {
    let (real, effective) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::geteuid().as_raw(),
    );
    let real_gid = nix::unistd::getgid().as_raw();
    let setuid = effective == 0 && real != 0;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if setuid {
        // Before anything else: the caller (who is the real uid) must not be able to ptrace
        // us or read our memory, pass us fds we keep, or set limits that change a decision.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| format!("failed to make the helper non-dumpable: {e}"))?;
        sys::close_fds_except(&serve_fd_argument(&args).into_iter().collect::<Vec<_>>())
            .map_err(|e| format!("failed to close inherited fds: {e}"))?;
        reset_resource_limits()?;
    }
    sys::ensure_stdio().map_err(|e| format!("failed to set up standard fds: {e}"))?;
    // A setuid helper reads nothing from its (the caller's) environment, in particular no bus
    // address; the service takes these from its service manager.
    let (listen_pid, listen_fds, bus) = if setuid {
        (None, None, String::new())
    } else {
        (
            std::env::var("LISTEN_PID").ok(),
            std::env::var("LISTEN_FDS").ok(),
            std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into()),
        )
    };
    // Nothing from the environment is used after this point.
    sys::clear_environment();
    let options = parse_options(&args, setuid, activated_listener(listen_pid, listen_fds))?;
    if effective != 0 {
        return Err(
            "vmspawn-privhelper must run as root (a system service) or be installed setuid root"
                .into(),
        );
    }

    // Fail early on an unreadable or malformed policy.
    let policy = vmspawn_policy::Policy::load(&options.policy).map_err(|e| e.to_string())?;
    let allow_unconfined = policy.allow_unconfined();
    let max_taps_per_user = policy.max_taps_per_user();
    // The TAP records, opened as root (a setuid helper keeps the fd after dropping to the
    // caller's uid). Without them the helper serves everything but TAP devices.
    let records = taps::me().and_then(|me| taps::open_records(Path::new(taps::RUN_DIR), me));
    if let Err(e) = &records {
        eprintln!("vmspawn-privhelper: no TAP devices can be created: {e}");
    }
    let mut handler = Handler {
        policy_path: options.policy.clone(),
        polkit: None,
        machined: None,
        no_bus_reason: String::new(),
        fixed_caller: None,
        preopened: Mutex::new(Vec::new()),
        tap_step: Mutex::new(()),
        records,
    };
    // Devices left behind by helpers that are gone, for sessions that are gone.
    if handler.records.is_ok() {
        if let Err(e) = handler.with_records(|records| records.reconcile()) {
            eprintln!("vmspawn-privhelper: {e}");
        }
    }
    // Load every NSS module now: after confinement they could not be mapped.
    identity::preload_nss();

    match options.mode {
        Mode::Setuid(sock) => {
            let (launcher, launcher_proc) = check_serve_peer(sock.as_fd(), real)?;
            if let Ok(records) = &handler.records {
                start_warden(&launcher, records.me, &options.policy, allow_unconfined)?;
            }
            let peer = Peer {
                uid: real,
                gid: real_gid,
                pid: launcher_proc.pid,
                start_time: Some(launcher_proc.start),
                pidfd: Some(Arc::new(launcher)),
            };
            // The one caller is known now: resolve its names before confinement.
            // Also when its groups are incomplete: that is kept, and rules by group deny.
            handler.fixed_caller = handler::resolve_caller(&peer).ok();
            // Where /dev/net/tun is root-only, the caller's uid cannot open it later: one fd
            // per TAP the policy could ever let this user hold (at most 256, within the fixed
            // RLIMIT_NOFILE), so a session gets as many TAPs as its quota allows.
            for (device, count) in [
                ("/dev/net/tun", max_taps_per_user.max(1)),
                ("/dev/kvm", 1),
                ("/dev/vhost-vsock", 1),
            ] {
                for _ in 0..count {
                    let opened = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                        .open(device);
                    match opened {
                        Ok(file) => handler::lock(&handler.preopened).push((device, file)),
                        Err(_) => break,
                    }
                }
            }
            confine::landlock(&options.policy, allow_unconfined)?;
            // A bounding set of at most CAP_NET_ADMIN, before any thread exists (bounding sets
            // are per thread; the setuid helper has only its main thread, but stays safe if
            // it ever gets more).
            privileges::limit_bounding_set()?;
            // Connected while still root, so the bus knows the helper as root (machined lets
            // only root register); the address is fixed, never the caller's.
            if Path::new(SYSTEM_BUS_SOCKET).exists() {
                connect_bus(
                    &mut handler,
                    &format!("unix:path={SYSTEM_BUS_SOCKET}"),
                    false,
                );
            } else {
                handler.no_bus_reason = format!("there is no system bus at {SYSTEM_BUS_SOCKET}");
            }
            privileges::drop_for_setuid(real, real_gid)?;
            // Changing uids made us dumpable again if fs.suid_dumpable is 1.
            nix::sys::prctl::set_dumpable(false)
                .map_err(|e| format!("failed to make the helper non-dumpable: {e}"))?;
            confine::seccomp()?;
            serve_caller(&handler, sock, peer, false);
            Ok(())
        }
        Mode::Listen(path) => {
            let listener = bind_listener(&path)?;
            raise_nofile();
            privileges::drop_for_service()?;
            confine_service(&mut handler, &options.policy, allow_unconfined, &bus)?;
            serve_many(handler, listener)
        }
        Mode::Activated(listener) => {
            raise_nofile();
            privileges::drop_for_service()?;
            confine_service(&mut handler, &options.policy, allow_unconfined, &bus)?;
            serve_many(handler, listener)
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vmspawn-privhelper: {message}");
            ExitCode::FAILURE
        }
    }
}
