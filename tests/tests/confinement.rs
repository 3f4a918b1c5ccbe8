//! Confinement: escape attempts from inside QEMU's domain are blocked (files, devices, exec,
//! signals, the user's bus, the helper's and ssh-agent's sockets, every socket family QEMU
//! does not need, namespaces, io_uring, TIOCSTI, the launcher's memory and fds), QEMU's
//! environment holds nothing of the user's session, a real guest still has TCP with
//! --network-user-mode, a real QEMU cannot open files outside its rules, and every thread of
//! the launcher and of QEMU runs under seccomp with no_new_privs during a real boot.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);

/// The user's session variables the test gives vmspawn; none may reach QEMU.
const SESSION_VARIABLES: &[&str] = &[
    "DBUS_SESSION_BUS_ADDRESS",
    "SSH_AUTH_SOCK",
    "WAYLAND_DISPLAY",
    "DISPLAY",
    "XDG_RUNTIME_DIR",
    "VMSPAWN_TEST_MARKER",
    "HOME",
    "TMPDIR",
    "PATH",
];

/// What QEMU's environment may hold (without --console=gui).
const QEMU_ENVIRONMENT: &[&str] = &["LANG", "LC_ALL", "LC_CTYPE", "TERM"];

/// What --console=gui adds, every value set by vmspawn (HOME and the XDG directories are in
/// the VM's runtime directory, not the user's).
const GUI_ENVIRONMENT: &[&str] = &[
    "GDK_BACKEND",
    "DISPLAY",
    "XAUTHORITY",
    "HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_RUNTIME_DIR",
    "NO_AT_BRIDGE",
];

/// The gui plan's own attempts: its display paths reachable, their neighbours not.
const GUI_CONTROLS: &[&str] = &[
    "connect-x11-socket",
    "read-xauthority",
    "read-fontconfig",
    "write-private-home",
];
const GUI_ESCAPES: &[(&str, &str)] = &[
    ("list-x11-socket-dir", "blocked EACCES"),
    ("read-usr-share-doc", "blocked EACCES"),
    ("read-etc-hostname", "blocked EACCES"),
];

/// With --console=gui QEMU may make AF_UNIX sockets (for the display server), and Landlock
/// (ABI <= 8) does not restrict connecting to a named Unix socket: the README's one exception.
const GUI_UNIX_SOCKETS: &[&str] = &[
    "connect-user-bus",
    "connect-helper-socket",
    "connect-ssh-agent",
];

/// How the probe was run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Confined,
    /// Confined, with --network-user-mode (QEMU may make AF_INET/AF_INET6 sockets).
    UserModeNetwork,
    /// VMSPAWN_UNCONFINED=1.
    Unconfined,
    /// --console=gui on an X server (a listener at /tmp/.X11-unix/XN, no abstract socket).
    Gui,
    /// The same on an X server that also listens on `@/tmp/.X11-unix/XN` (as Xorg does).
    GuiAbstractX11,
}

impl Mode {
    fn gui(self) -> bool {
        matches!(self, Mode::Gui | Mode::GuiAbstractX11)
    }
}

/// A listening socket standing in for one of the user's session or the host's (the user's
/// bus, the helper's socket, an ssh-agent), owned by the test user.
struct Service {
    name: &'static str,
    path: PathBuf,
    listener: UnixListener,
}

impl Service {
    fn bind(name: &'static str, path: PathBuf, mode: u32) -> Service {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Service {
            name,
            path,
            listener,
        }
    }

    /// Whether anybody connected (non-blocking accept).
    fn was_connected(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept on {}: {e}", self.path.display()),
        }
    }
}

/// What the probe reported, and what the test's listeners saw of it.
struct ProbeRun {
    out: Finished,
    lines: Vec<String>,
    /// The services (by name) and the UDP and TCP ports that received something.
    reached: Vec<&'static str>,
}

/// Runs vmspawn with the escape probe as its QEMU and returns the probe's report lines.
fn run_probe(user: User, mode: Mode) -> ProbeRun {
    let work = Workdir::new(
        match mode {
            Mode::Confined => "probe",
            Mode::UserModeNetwork => "probe-usernet",
            Mode::Unconfined => "probe-unconfined",
            Mode::Gui => "probe-gui",
            Mode::GuiAbstractX11 => "probe-gui-abstract",
        },
        user,
    );
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "44444444-2222-4333-8444-555555555555",
    );
    std::fs::create_dir_all(work.file("bin")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_escape-probe"),
        work.file("bin/qemu-system-x86_64"),
    )
    .unwrap();
    let canary = work.write("home/canary", b"secret");
    // The user's runtime directory (vmspawn's runtime directory goes there, too) with the
    // session bus in it, an ssh-agent socket, and the helper's socket (world-connectable,
    // like /run/vmspawn/privhelper.socket).
    let run_dir = work.file("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let services = [
        Service::bind("bus", run_dir.join("bus"), 0o666),
        Service::bind("helper", work.file("privhelper.socket"), 0o666),
        Service::bind("ssh-agent", work.file("ssh-agent/agent.sock"), 0o600),
    ];
    std::fs::set_permissions(
        work.file("ssh-agent"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    work.chown_all();

    // The gui plan's X server: its path socket (world-connectable, like Xorg's) and the user's
    // X authority file.
    let x11 = mode.gui().then(|| {
        std::fs::create_dir_all("/tmp/.X11-unix").unwrap();
        let number = (300..400)
            .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
            .unwrap();
        let service = Service::bind("x11", format!("/tmp/.X11-unix/X{number}").into(), 0o777);
        let xauthority = work.write("home/.Xauthority", b"cookie");
        (number, service, xauthority)
    });
    let _x11_abstract =
        x11.as_ref()
            .filter(|_| mode == Mode::GuiAbstractX11)
            .map(|(number, _, _)| {
                let name = format!("/tmp/.X11-unix/X{number}");
                UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap()
            });

    let abstract_name = format!("vmspawn-probe-{}-{mode:?}", std::process::id());
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(&abstract_name).unwrap()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    // A process of the same user, outside vmspawn's domains.
    let mut target = std::process::Command::new("sleep");
    target.arg("120");
    if user == User::Tester {
        let (uid, gid) = tester_ids();
        target.uid(uid).gid(gid);
    }
    let mut target = target.spawn().unwrap();

    // The probe's targets travel on QEMU's command line: its environment is built from nothing.
    let targets = [
        ("CANARY", canary.display().to_string()),
        ("WRITE_DIR", work.file("home").display().to_string()),
        ("ABSTRACT", abstract_name.clone()),
        ("SIGNAL_PID", target.id().to_string()),
        ("TCP_PORT", tcp.local_addr().unwrap().port().to_string()),
        ("UDP_PORT", udp.local_addr().unwrap().port().to_string()),
        ("BUS", services[0].path.display().to_string()),
        ("HELPER", services[1].path.display().to_string()),
        ("SSH_AGENT", services[2].path.display().to_string()),
    ];
    let mut targets = targets.to_vec();
    if let Some((_, service, xauthority)) = &x11 {
        targets.push(("X11_SOCKET", service.path.display().to_string()));
        targets.push(("XAUTHORITY", xauthority.display().to_string()));
    }
    let extra: Vec<String> = targets
        .iter()
        .map(|(key, value)| format!("-probe {key}={value}"))
        .collect();

    let mut cmd = work.vmspawn();
    cmd.env(
        "PATH",
        format!("{}:/usr/bin:/bin", work.file("bin").display()),
    )
    .env("SYSTEMD_VMSPAWN_QEMU_EXTRA", extra.join(" "))
    // The user's session, which must not reach QEMU.
    .env("XDG_RUNTIME_DIR", &run_dir)
    .env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", services[0].path.display()),
    )
    .env("SSH_AUTH_SOCK", &services[2].path)
    .env("VMSPAWN_TEST_MARKER", "must-not-reach-qemu")
    .env("TERM", "xterm-256color")
    .args(tcg())
    .arg(format!("--linux={}", image("vmlinuz").display()))
    // UEFI, with the variable store copied into the runtime directory: the probe finds that
    // directory through the vars drive, and QEMU's domain then has the most to cover.
    .args(["--firmware=uefi", "--efi-nvram-state=off"])
    // vmspawn itself would connect to the session bus for its scope unit before QEMU starts,
    // and the listener cannot tell who connected: the test's bus is left to the probe.
    .arg("--keep-unit")
    .args(["-i", "guest.raw"]);
    match &x11 {
        // vmspawn picks Wayland first; this session has only X11.
        Some((number, _, xauthority)) => {
            cmd.env("DISPLAY", format!(":{number}"))
                .env("XAUTHORITY", xauthority)
                .arg("--console=gui");
        }
        None => {
            cmd.env("WAYLAND_DISPLAY", "wayland-0")
                .env("DISPLAY", ":0")
                .arg("--console=read-only");
        }
    }
    match mode {
        Mode::Gui | Mode::GuiAbstractX11 => {}
        Mode::Confined => {}
        Mode::UserModeNetwork => {
            cmd.arg("--network-user-mode");
        }
        Mode::Unconfined => {
            cmd.env("VMSPAWN_UNCONFINED", "1");
        }
    }
    let out = run(cmd, Duration::from_secs(60));
    let _ = target.kill();
    let _ = target.wait();
    drop(listener);
    out.assert_success();
    let lines: Vec<String> = out
        .stdout
        .lines()
        // Anywhere in the line: where TIOCSTI got through, the terminal echoes the character
        // it pushed in front of the probe's next line.
        .filter_map(|l| {
            l.find("PROBE ")
                .map(|i| l[i + 6..].trim_end_matches('\r').to_string())
        })
        .collect();
    assert!(
        lines.contains(&"end".to_string()),
        "probe did not finish: {}",
        out.stdout
    );
    assert!(
        !work.file("home/escaped").exists() || mode == Mode::Unconfined,
        "a file was written outside the runtime directory"
    );
    let mut reached: Vec<&'static str> = services
        .iter()
        .chain(x11.as_ref().map(|(_, service, _)| service))
        .filter(|s| s.was_connected())
        .map(|s| s.name)
        .collect();
    if let Some((_, service, _)) = &x11 {
        let _ = std::fs::remove_file(&service.path);
    }
    let mut datagram = [0u8; 64];
    match udp.recv(&mut datagram) {
        Ok(_) => reached.push("udp"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("recv on the UDP socket: {e}"),
    }
    match tcp.accept() {
        Ok(_) => reached.push("tcp"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("accept on the TCP socket: {e}"),
    }
    work.assert_no_leftovers();
    let runtime_base = run_dir.join("systemd");
    if runtime_base.exists() {
        let left: Vec<_> = std::fs::read_dir(&runtime_base)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "runtime directory left behind: {left:?}");
    }
    ProbeRun {
        out,
        lines,
        reached,
    }
}

/// Escape attempts and the verdicts that count as blocked, when QEMU runs confined.
/// Landlock refuses file access and TCP with EACCES, its IPC scopes with EPERM; seccomp
/// refuses with EPERM (clone3 with ENOSYS, so that the C library falls back to clone, whose
/// namespace flags are refused).
const ESCAPES: &[(&str, &[&str])] = &[
    ("read-home-canary", &["blocked EACCES"]),
    ("write-outside-runtime-dir", &["blocked EACCES"]),
    ("read-etc-passwd", &["blocked EACCES"]),
    ("open-dev-kvm", &["blocked EACCES"]),
    ("open-dev-net-tun", &["blocked EACCES"]),
    ("exec-shell", &["blocked EACCES"]),
    ("connect-host-abstract-socket", &["blocked EPERM"]),
    ("signal-process-outside-domain", &["blocked EPERM"]),
    ("signal-launcher", &["blocked EPERM"]),
    // No AF_UNIX socket() of QEMU's own: not to the user's bus, the helper or ssh-agent.
    ("connect-user-bus", &["blocked EPERM"]),
    ("connect-helper-socket", &["blocked EPERM"]),
    ("connect-ssh-agent", &["blocked EPERM"]),
    // No AF_INET socket() without --network-user-mode (see USER_MODE_NETWORK below).
    ("bind-tcp-port", &["blocked EPERM"]),
    ("connect-tcp-loopback", &["blocked EPERM"]),
    ("udp-sendto-loopback", &["blocked EPERM"]),
    ("vsock-socket", &["blocked EPERM"]),
    ("netlink-socket", &["blocked EPERM"]),
    ("packet-socket", &["blocked EPERM"]),
    ("alg-socket", &["blocked EPERM"]),
    ("ptrace-launcher", &["blocked EPERM"]),
    ("process-vm-readv", &["blocked EPERM"]),
    // Landlock (no rule for /proc) before the kernel's ptrace check.
    ("open-launcher-mem", &["blocked EACCES", "blocked EPERM"]),
    ("pidfd-getfd-launcher", &["blocked EPERM"]),
    ("process-madvise", &["blocked EPERM"]),
    ("load-kernel-module", &["blocked EPERM"]),
    ("mount-tmpfs", &["blocked EPERM"]),
    ("bpf", &["blocked EPERM"]),
    ("clone-new-user", &["blocked EPERM"]),
    ("clone3-new-user", &["blocked ENOSYS", "blocked EPERM"]),
    ("io-uring-setup", &["blocked EPERM"]),
    ("personality-change", &["blocked EPERM"]),
    ("tiocsti-console", &["blocked EPERM"]),
    ("keyctl", &["blocked EPERM"]),
    ("perf-event-open", &["blocked EPERM"]),
    ("userfaultfd", &["blocked EPERM"]),
    ("kexec-load", &["blocked EPERM"]),
    ("unshare-user-namespace", &["blocked EPERM"]),
];

/// With --network-user-mode QEMU (slirp) makes its own AF_INET sockets: TCP connect and UDP
/// are the plan's documented exception, TCP bind is still refused by Landlock.
const USER_MODE_NETWORK: &[(&str, Option<&str>)] = &[
    ("bind-tcp-port", Some("blocked EACCES")),
    ("connect-tcp-loopback", None),
    ("udp-sendto-loopback", None),
];

const CONTROLS: &[&str] = &[
    "open-image-read-write",
    "create-file-in-runtime-dir",
    "read-kernel",
    "read-dev-urandom",
];

fn verdict<'a>(lines: &'a [String], attempt: &str) -> &'a str {
    let line = lines
        .iter()
        .find(|l| l.starts_with(&format!("{attempt} ")))
        .unwrap_or_else(|| panic!("no result for {attempt}: {lines:?}"));
    &line[attempt.len() + 1..]
}

/// The names in the probe's `environment [A,B,...]` line.
fn environment(lines: &[String]) -> Vec<String> {
    let line = lines
        .iter()
        .find_map(|l| l.strip_prefix("environment ["))
        .unwrap_or_else(|| panic!("no environment line: {lines:?}"));
    line.trim_end_matches(']')
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// QEMU's environment holds nothing of the user's session: only the locale and TERM. The
/// problems found, if any.
fn environment_problems(lines: &[String], mode: Mode) -> Vec<String> {
    let names = environment(lines);
    let gui: &[&str] = if mode.gui() { GUI_ENVIRONMENT } else { &[] };
    let mut problems = Vec::new();
    for variable in SESSION_VARIABLES {
        if names.iter().any(|n| n == variable) && !gui.contains(variable) {
            problems.push(format!("{variable} reached QEMU"));
        }
    }
    for name in &names {
        if !QEMU_ENVIRONMENT.contains(&name.as_str())
            && !gui.contains(&name.as_str())
            && !SESSION_VARIABLES.contains(&name.as_str())
        {
            problems.push(format!(
                "QEMU's environment has {name}, which the plan does not list"
            ));
        }
    }
    for expected in ["LANG", "TERM"] {
        if !names.iter().any(|n| n == expected) {
            problems.push(format!("{expected} (vmspawn has it) did not reach QEMU"));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("QEMU's environment: {names:?}"));
    }
    problems
}

/// Every attempt blocked (all failures reported together), every control working, the
/// listeners reached by nobody, and the kernel's view of the confinement.
fn check_all_blocked(run: &ProbeRun, mode: Mode) {
    let lines = &run.lines;
    let mut failures = Vec::new();
    for control in CONTROLS {
        if !lines.contains(&format!("{control} ok")) {
            failures.push(format!(
                "QEMU lost a right it needs: {control}: {}",
                verdict(lines, control)
            ));
        }
    }
    for (escape, expected) in ESCAPES {
        let exception = USER_MODE_NETWORK
            .iter()
            .find(|(name, _)| name == escape)
            .filter(|_| mode == Mode::UserModeNetwork);
        let expected: Vec<&str> = match exception {
            _ if mode.gui() && GUI_UNIX_SOCKETS.contains(escape) => vec!["ESCAPED"],
            // The one case where abstract sockets are not scoped (an X server with an abstract socket).
            _ if mode == Mode::GuiAbstractX11 && *escape == "connect-host-abstract-socket" => {
                vec!["ESCAPED"]
            }
            Some((_, Some(instead))) => vec![instead],
            Some((_, None)) => continue,
            None => expected.to_vec(),
        };
        let got = verdict(lines, escape);
        if !expected.contains(&got) {
            failures.push(format!("{escape}: {got} (expected {expected:?})"));
        }
    }
    let reached: Vec<&str> = run
        .reached
        .iter()
        .copied()
        .filter(|r| !(mode == Mode::UserModeNetwork && ["udp", "tcp"].contains(r)))
        .filter(|r| !(mode.gui() && ["x11", "bus", "helper", "ssh-agent"].contains(r)))
        .collect();
    if mode.gui() && !run.reached.contains(&"x11") {
        failures.push("the probe did not reach the X server's socket".to_string());
    }
    if !reached.is_empty() {
        failures.push(format!("the probe reached the test's sockets: {reached:?}"));
    }
    if !lines.contains(&"status no_new_privs=1 seccomp=2".to_string()) {
        failures.push("QEMU does not run with no_new_privs and seccomp".to_string());
    }
    if mode.gui() {
        for control in GUI_CONTROLS {
            if !lines.contains(&format!("{control} ok")) {
                failures.push(format!(
                    "the gui plan lost a display path: {control}: {}",
                    verdict(lines, control)
                ));
            }
        }
        for (escape, expected) in GUI_ESCAPES {
            let got = verdict(lines, escape);
            if got != *expected {
                failures.push(format!("{escape}: {got} (expected {expected})"));
            }
        }
    }
    failures.extend(environment_problems(lines, mode));
    assert!(
        failures.is_empty(),
        "{} problem(s):\n  {}\nprobe report: {lines:?}\nstderr:\n{}",
        failures.len(),
        failures.join("\n  "),
        run.out.stderr
    );
}

#[test]
fn escape_attempts_from_qemus_domain_are_blocked_as_user() {
    let run = run_probe(User::Tester, Mode::Confined);
    check_all_blocked(&run, Mode::Confined);
}

#[test]
fn escape_attempts_from_qemus_domain_are_blocked_as_root() {
    // Root passes every permission check Landlock and seccomp do not make (TIOCSTI without a
    // controlling terminal, AF_PACKET, ptrace, /proc/PID/mem): this shows the blocks come
    // from the confinement, not from file modes or capabilities.
    let run = run_probe(User::Root, Mode::Confined);
    check_all_blocked(&run, Mode::Confined);
}

#[test]
fn escape_attempts_with_user_mode_networking_are_blocked_as_user() {
    // QEMU may make AF_INET sockets for slirp, and nothing more: still no Unix, vsock or
    // netlink sockets of its own, and Landlock still refuses TCP bind.
    let run = run_probe(User::Tester, Mode::UserModeNetwork);
    check_all_blocked(&run, Mode::UserModeNetwork);
}

#[test]
fn escape_attempts_under_the_gui_plan_reach_only_the_display() {
    // QEMU's domain with --console=gui: the X socket, the X authority file, fontconfig's files
    // and a private home, and not the rest of /etc, /usr/share or /tmp/.X11-unix; abstract
    // sockets stay scoped (this X server has none); every other rule as without gui.
    let run = run_probe(User::Tester, Mode::Gui);
    check_all_blocked(&run, Mode::Gui);
}

#[test]
fn gui_plan_on_an_x_server_with_an_abstract_socket_leaves_abstract_sockets_unscoped() {
    // libxcb connects to the abstract socket first and does not fall back to the path socket
    // when Landlock refuses it (EPERM), so with such an X server (Xorg's default) the gui plan
    // leaves abstract sockets unscoped: the README's exception, and nothing else changes.
    let run = run_probe(User::Tester, Mode::GuiAbstractX11);
    check_all_blocked(&run, Mode::GuiAbstractX11);
}

#[test]
fn the_probe_detects_escapes_when_unconfined() {
    let run = run_probe(User::Tester, Mode::Unconfined);
    let lines = &run.lines;
    assert!(
        run.out.stderr.contains("VMSPAWN_UNCONFINED is set"),
        "{}",
        run.out.stderr
    );
    let mut missed = Vec::new();
    for escape in [
        "read-home-canary",
        "write-outside-runtime-dir",
        "exec-shell",
        "connect-host-abstract-socket",
        "signal-launcher",
        "bind-tcp-port",
        "connect-tcp-loopback",
        "ptrace-launcher",
        "unshare-user-namespace",
        "connect-user-bus",
        "connect-helper-socket",
        "connect-ssh-agent",
        "udp-sendto-loopback",
        "vsock-socket",
        "netlink-socket",
        "open-launcher-mem",
        "pidfd-getfd-launcher",
        "process-madvise",
        "clone-new-user",
        "clone3-new-user",
        "io-uring-setup",
        "personality-change",
        "tiocsti-console",
    ] {
        if verdict(lines, escape) != "ESCAPED" {
            missed.push(format!("{escape}: {}", verdict(lines, escape)));
        }
    }
    assert!(
        missed.is_empty(),
        "the probe did not get through unconfined: {missed:?}\n{lines:?}"
    );
    // The test's listeners see what got through.
    let mut reached = run.reached.clone();
    reached.sort_unstable();
    assert_eq!(
        reached,
        ["bus", "helper", "ssh-agent", "tcp", "udp"],
        "{lines:?}"
    );
    assert!(
        lines.contains(&"status no_new_privs=0 seccomp=0".to_string()),
        "{lines:?}"
    );
    // The environment is planned, confined or not.
    let problems = environment_problems(lines, Mode::Unconfined);
    assert!(problems.is_empty(), "{problems:?}");
}

/// A one-request HTTP server on 127.0.0.1 that answers `body`; returns the port and a handle
/// that yields how many requests it served.
fn http_server(body: String) -> (u16, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + BOOT;
        let mut served = 0;
        while std::time::Instant::now() < deadline && served == 0 {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut request = [0u8; 1024];
                    let n = stream.read(&mut request).unwrap_or(0);
                    if request[..n].starts_with(b"GET / ") {
                        let response = format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
                            body.len() + 1
                        );
                        let _ = stream.write_all(response.as_bytes());
                        served += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        served
    });
    (port, handle)
}

#[test]
fn guest_has_working_tcp_with_user_mode_networking() {
    // The positive control of QEMU's socket rules: with --network-user-mode, a real guest
    // reaches a server on the host's loopback over TCP through slirp (10.0.2.2 is the host).
    let work = Workdir::new("usernet-tcp", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "88888888-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let token = format!("vmspawn-tcp-{}", std::process::id());
    let (port, server) = http_server(token.clone());
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args([
            "-i",
            "guest.raw",
            "--console=read-only",
            "--tpm=no",
            "--network-user-mode",
        ])
        .arg(format!("test.mode=fetch=10.0.2.15/24@10.0.2.2:{port}"));
    let out = run(cmd, BOOT);
    out.assert_success();
    assert!(
        out.has(&format!("fetch-ok 10.0.2.2:{port} {token}")),
        "the guest did not fetch the page over TCP: {:?}\nstderr:\n{}",
        out.vmtest(),
        out.stderr
    );
    assert_eq!(
        server.join().unwrap(),
        1,
        "the host's server was not reached"
    );
    work.assert_no_leftovers();
}

#[test]
fn real_qemu_cannot_open_a_file_outside_its_rules() {
    let work = Workdir::new("qemu-canary", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "55555555-2222-4333-8444-555555555555",
    );
    let canary = work.write("home/canary.raw", &vec![0u8; 1 << 20]);
    work.chown_all();
    let mut cmd = work.vmspawn();
    // -fw_cfg's file= is not one of the drive options whose files vmspawn allows.
    cmd.env(
        "SYSTEMD_VMSPAWN_QEMU_EXTRA",
        format!("-fw_cfg name=opt/vmspawn.canary,file={}", canary.display()),
    )
    .args(busybox_boot(false))
    .args(["-i", "guest.raw", "test.mode="]);
    let out = run(cmd, BOOT);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let path = canary.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "$SYSTEMD_VMSPAWN_QEMU_EXTRA refers to '{path}', which QEMU cannot open"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("-fw_cfg") && l.contains(&path) && l.contains("Permission denied")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("QEMU runs confined (Landlock and seccomp)"),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}

fn thread_status(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        out.push((
            task.file_name().to_string_lossy().into_owned(),
            field("Seccomp:"),
            field("NoNewPrivs:"),
        ));
    }
    out
}

#[test]
fn every_thread_of_launcher_and_qemu_is_confined_during_a_boot() {
    let work = Workdir::new("threads", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "66666666-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "--cpus=2",
        "-i",
        "guest.raw",
        "--console=read-only",
        "test.mode=sleep=8",
    ]);
    let mut vm = Background::start(cmd);
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    // vmspawn's children: QEMU, and the TPM sidecar and the cleanup process.
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(qemu.len(), 1, "{qemu:?} of {:?}", children_of(launcher));
    let launcher_threads = thread_status(launcher);
    let qemu_threads = thread_status(qemu[0]);
    assert!(
        qemu_threads.len() >= 3,
        "expected QEMU's vCPU and I/O threads: {qemu_threads:?}"
    );
    for (tid, seccomp, nnp) in launcher_threads.iter().chain(&qemu_threads) {
        assert_eq!(
            (seccomp.as_str(), nnp.as_str()),
            ("2", "1"),
            "thread {tid} is not confined"
        );
    }
    let exe = std::fs::read_link(format!("/proc/{}/exe", qemu[0])).unwrap();
    assert!(exe.starts_with(Path::new("/usr/bin")), "{}", exe.display());
    let out = vm.finish(BOOT);
    out.assert_success();
    work.assert_no_leftovers();
}
