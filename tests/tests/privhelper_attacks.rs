//! Adversarial cases against a running vmspawn-privhelper: each one must be refused with its
//! specific error, leave nothing behind (no TAP, no leaked fd), and leave the helper serving.
//! (The protocol crate's and the policy crate's own tests add the decoder and ACL cases.)

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use vmspawn_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response, codec, wire};
use vmspawn_tests::*;

const POLICY: &str = "[[allow]]\nusers = [\"root\"]\noperations = [\"create-tap\", \"register-machine\", \"open-vhost-vsock\"]\nvsock-cids = \"10000-10009\"\nbridges = [\"abcdefghijklmno\"]\nmax-taps = 2\npolkit = \"no\"\n";

fn connect(helper: &HelperService) -> OwnedFd {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::connect(sock.as_raw_fd(), &UnixAddr::new(&helper.socket).unwrap()).unwrap();
    sock.as_fd();
    sock
}

fn send_raw(sock: &OwnedFd, frame: &[u8], fds: &[i32]) {
    let iov = [IoSlice::new(frame)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
}

fn answer(sock: &OwnedFd) -> Result<(Response, Vec<OwnedFd>), wire::WireError> {
    socket::setsockopt(
        sock,
        socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(10, 0),
    )
    .unwrap();
    wire::recv_message::<Response>(sock.as_fd())
}

fn hello(sock: &OwnedFd) {
    send_raw(
        sock,
        &codec::encode(&Request::Hello {
            version: PROTOCOL_VERSION,
            interactive_auth: false,
        })
        .unwrap(),
        &[],
    );
    assert!(matches!(answer(sock), Ok((Response::Hello { .. }, _))));
}

/// Expects an error answer of `kind` whose message contains `text`.
fn expect_error(sock: &OwnedFd, kind: ErrorKind, text: &str) -> Result<(), String> {
    match answer(sock) {
        Ok((Response::Error(e), fds))
            if e.kind == kind && e.message.contains(text) && fds.is_empty() =>
        {
            Ok(())
        }
        other => Err(format!(
            "expected {kind:?} containing '{text}', got {other:?}"
        )),
    }
}

fn expect_closed(sock: &OwnedFd) -> Result<(), String> {
    match answer(sock) {
        Err(wire::WireError::Closed) => Ok(()),
        other => Err(format!(
            "expected the helper to close the connection, got {other:?}"
        )),
    }
}

fn create_tap(machine: &str, bridge: Option<&str>) -> Vec<u8> {
    codec::encode(&Request::CreateTap {
        machine: machine.into(),
        bridge: bridge.map(str::to_string),
    })
    .unwrap()
}

type Check = Box<dyn Fn(&HelperService, &Netns) -> Result<(), String>>;
type Case = (&'static str, Check);

fn protocol_cases() -> Vec<Case> {
    let invalid = |frame: Vec<u8>, text: &'static str| -> Check {
        Box::new(move |h, _| {
            let s = connect(h);
            hello(&s);
            send_raw(&s, &frame, &[]);
            expect_error(&s, ErrorKind::InvalidRequest, text)
        })
    };
    let mut trailing = codec::encode(&Request::Hello {
        version: PROTOCOL_VERSION,
        interactive_auth: false,
    })
    .unwrap();
    trailing.extend_from_slice(&1001u32.to_le_bytes()); // a would-be uid field
    let mut bad_tag = 1u32.to_le_bytes().to_vec();
    bad_tag.extend_from_slice(&1u64.to_le_bytes());
    bad_tag.push(b'a');
    bad_tag.push(7); // Option tag 7
    let mut huge = 1u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    vec![
        (
            "request-before-hello",
            Box::new(|h, _| {
                let s = connect(h);
                send_raw(&s, &create_tap("vm", None), &[]);
                expect_error(&s, ErrorKind::InvalidRequest, "first request must be Hello")?;
                expect_closed(&s)
            }),
        ),
        (
            "hello-with-wrong-version",
            Box::new(|h, _| {
                let s = connect(h);
                send_raw(
                    &s,
                    &codec::encode(&Request::Hello {
                        version: 999,
                        interactive_auth: false,
                    })
                    .unwrap(),
                    &[],
                );
                expect_error(&s, ErrorKind::VersionMismatch, "999")?;
                expect_closed(&s)
            }),
        ),
        (
            "garbage-frame",
            invalid(vec![0xff; 64], "malformed request"),
        ),
        (
            "trailing-bytes-spoofing-a-uid",
            invalid(trailing, "malformed request"),
        ),
        (
            "unknown-variant",
            invalid(99u32.to_le_bytes().to_vec(), "malformed request"),
        ),
        ("invalid-option-tag", invalid(bad_tag, "malformed request")),
        ("huge-length-prefix", invalid(huge, "malformed request")),
        (
            "truncated-frame",
            invalid(create_tap("vm", None)[..7].to_vec(), "malformed request"),
        ),
        (
            "oversized-frame",
            Box::new(|h, _| {
                let s = connect(h);
                hello(&s);
                send_raw(&s, &vec![0u8; 8192], &[]);
                expect_error(&s, ErrorKind::InvalidRequest, "malformed request")
            }),
        ),
        (
            "unexpected-fd",
            Box::new(|h, _| {
                let s = connect(h);
                hello(&s);
                let file = std::fs::File::open("/etc/hostname").unwrap();
                send_raw(
                    &s,
                    &codec::encode(&Request::OpenKvm).unwrap(),
                    &[file.as_raw_fd()],
                );
                expect_error(&s, ErrorKind::InvalidRequest, "unexpected file descriptors")
            }),
        ),
        (
            "fd-flood",
            Box::new(|h, _| {
                let before = h.open_fds();
                let s = connect(h);
                hello(&s);
                let files: Vec<_> = (0..200)
                    .map(|_| std::fs::File::open("/etc/hostname").unwrap())
                    .collect();
                let raw: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
                send_raw(&s, &codec::encode(&Request::OpenKvm).unwrap(), &raw);
                expect_error(&s, ErrorKind::InvalidRequest, "malformed request")?;
                drop(s);
                std::thread::sleep(Duration::from_millis(200));
                let after = h.open_fds();
                if after > before {
                    Err(format!(
                        "the helper kept fds: {before} before, {after} after"
                    ))
                } else {
                    Ok(())
                }
            }),
        ),
        (
            "empty-frame-is-a-hangup",
            Box::new(|h, _| {
                let s = connect(h);
                hello(&s);
                send_raw(&s, &[], &[]);
                expect_closed(&s)
            }),
        ),
    ]
}

fn request_cases() -> Vec<Case> {
    let refused = |frame: Vec<u8>, kind: ErrorKind, text: &'static str| -> Check {
        Box::new(move |h, netns| {
            let s = connect(h);
            hello(&s);
            send_raw(&s, &frame, &[]);
            expect_error(&s, kind, text)?;
            if netns.taps().is_empty() {
                Ok(())
            } else {
                Err(format!("a TAP was created: {:?}", netns.taps()))
            }
        })
    };
    use ErrorKind::{Denied, InvalidRequest};
    vec![
        (
            "machine-name-empty",
            refused(create_tap("", None), InvalidRequest, "machine"),
        ),
        (
            "machine-name-slash",
            refused(create_tap("a/b", None), InvalidRequest, "machine"),
        ),
        (
            "machine-name-dotdot",
            refused(create_tap("..", None), InvalidRequest, "machine"),
        ),
        (
            "machine-name-nul",
            refused(create_tap("a\0b", None), InvalidRequest, "machine"),
        ),
        (
            "machine-name-whitespace",
            refused(create_tap("a b", None), InvalidRequest, "machine"),
        ),
        (
            "machine-name-overlong",
            refused(create_tap(&"m".repeat(65), None), InvalidRequest, "machine"),
        ),
        (
            "machine-name-non-ascii",
            refused(create_tap("vm\u{202e}", None), InvalidRequest, "machine"),
        ),
        (
            "bridge-name-16-bytes",
            refused(
                create_tap("vm", Some("abcdefghijklmnop")),
                InvalidRequest,
                "bridge",
            ),
        ),
        (
            "bridge-name-4096-bytes",
            refused(
                create_tap("vm", Some(&"b".repeat(3000))),
                InvalidRequest,
                "bridge",
            ),
        ),
        (
            "bridge-name-slash",
            refused(create_tap("vm", Some("br/0")), InvalidRequest, "bridge"),
        ),
        (
            "bridge-not-in-policy",
            refused(create_tap("vm", Some("br9")), Denied, "br9"),
        ),
        (
            "operation-not-in-policy",
            refused(
                codec::encode(&Request::OpenKvm).unwrap(),
                Denied,
                "open-kvm",
            ),
        ),
        (
            "vsock-cid-outside-the-users-range",
            refused(
                codec::encode(&Request::OpenVhostVsock {
                    machine: "vm".into(),
                    cid: Some(10010),
                })
                .unwrap(),
                Denied,
                "CID 10010 is outside the range 10000-10009",
            ),
        ),
        (
            "vsock-without-cid-gets-one-from-the-range",
            Box::new(|h, _| {
                let s = connect(h);
                hello(&s);
                let request = Request::OpenVhostVsock {
                    machine: "vm".into(),
                    cid: None,
                };
                send_raw(&s, &codec::encode(&request).unwrap(), &[]);
                // Hosts without vhost_vsock (like the test machines) answer with a clear error;
                // where the device exists, only a CID from the range will do.
                let device = std::path::Path::new("/dev/vhost-vsock").exists();
                match answer(&s) {
                    Ok((Response::VsockDevice { cid }, fds))
                        if device && (10000..=10009).contains(&cid) && fds.len() == 1 =>
                    {
                        Ok(())
                    }
                    Ok((Response::Error(e), fds))
                        if !device
                            && e.kind == ErrorKind::Failed
                            && e.message.contains("/dev/vhost-vsock does not exist")
                            && fds.is_empty() =>
                    {
                        Ok(())
                    }
                    other => Err(format!("unexpected answer {other:?}")),
                }
            }),
        ),
        (
            "vsock-cid-not-regular",
            refused(
                codec::encode(&Request::OpenVhostVsock {
                    machine: "vm".into(),
                    cid: Some(2),
                })
                .unwrap(),
                InvalidRequest,
                "not a regular guest CID",
            ),
        ),
        (
            "tap-quota-and-fresh-names",
            Box::new(|h, netns| {
                let s = connect(h);
                hello(&s);
                send_raw(&s, &create_tap("one", None), &[]);
                let Ok((Response::Tap { ifname: a }, first)) = answer(&s) else {
                    return Err("first TAP refused".into());
                };
                // The same machine again gets another, random name.
                send_raw(&s, &create_tap("one", None), &[]);
                let Ok((Response::Tap { ifname: b }, second)) = answer(&s) else {
                    return Err("second TAP refused".into());
                };
                if a == b || a.len() != 15 || !a.starts_with("vt-") {
                    return Err(format!("names {a} and {b}"));
                }
                send_raw(&s, &create_tap("three", None), &[]);
                expect_error(&s, ErrorKind::QuotaExceeded, "the limit of 2")?;
                if netns.taps().len() != 2 {
                    return Err(format!("expected exactly 2 TAPs, found {:?}", netns.taps()));
                }
                drop((first, second));
                let deadline = Instant::now() + Duration::from_secs(5);
                while !netns.taps().is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !netns.taps().is_empty() {
                    return Err("TAPs outlived their fds".into());
                }
                // Devices that are gone no longer count.
                send_raw(&s, &create_tap("four", None), &[]);
                match answer(&s) {
                    Ok((Response::Tap { .. }, _)) => Ok(()),
                    other => Err(format!("a TAP after the others were gone: {other:?}")),
                }
            }),
        ),
        (
            "bridge-port-gets-fe-mac-and-bridge-mtu",
            Box::new(|h, netns| {
                let bridge = "abcdefghijklmno";
                netns.ip(&["link", "add", bridge, "type", "bridge"]);
                netns.ip(&["link", "set", bridge, "mtu", "1400"]);
                let s = connect(h);
                hello(&s);
                send_raw(&s, &create_tap("br", Some(bridge)), &[]);
                let result = match answer(&s) {
                    Ok((Response::Tap { ifname }, fds)) => {
                        let link = netns.ip(&["-o", "link", "show", "dev", &ifname]);
                        drop(fds);
                        if link.contains("mtu 1400")
                            && link.contains(&format!("master {bridge}"))
                            && link.contains("link/ether fe:")
                        {
                            Ok(())
                        } else {
                            Err(format!("bridge port: {link}"))
                        }
                    }
                    other => Err(format!("TAP on the bridge refused: {other:?}")),
                };
                netns.ip(&["link", "del", bridge]);
                result
            }),
        ),
        (
            "slow-client-times-out",
            Box::new(|h, _| {
                let s = connect(h);
                let start = Instant::now();
                expect_closed(&s)?;
                let waited = start.elapsed();
                if waited < Duration::from_secs(4) {
                    Err(format!("closed too early ({waited:?})"))
                } else {
                    Ok(())
                }
            }),
        ),
        (
            "a-hundred-concurrent-clients",
            Box::new(|h, _| {
                let clients: Vec<OwnedFd> = (0..100).map(|_| connect(h)).collect();
                for c in &clients {
                    send_raw(
                        c,
                        &codec::encode(&Request::Hello {
                            version: PROTOCOL_VERSION,
                            interactive_auth: false,
                        })
                        .unwrap(),
                        &[],
                    );
                }
                for c in &clients {
                    if !matches!(answer(c), Ok((Response::Hello { .. }, _))) {
                        return Err("a client got no answer".into());
                    }
                }
                let hwm: u64 = h
                    .status("VmHWM:")
                    .trim_end_matches(" kB")
                    .trim()
                    .parse()
                    .unwrap_or(u64::MAX);
                if hwm > 20 * 1024 {
                    Err(format!("helper peak RSS {hwm} kB > 20 MiB"))
                } else {
                    Ok(())
                }
            }),
        ),
    ]
}

fn register(machine: &str) -> Vec<u8> {
    codec::encode(&Request::RegisterMachine {
        machine: machine.into(),
        uuid: None,
    })
    .unwrap()
}

/// A child that lives until it is killed (dropped).
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start(cmd: &mut Command) -> Sleeper {
        Sleeper(cmd.stdout(Stdio::piped()).spawn().unwrap())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Registering a machine: the leader must be the caller's own live QEMU child, running as the
/// caller. Each case offers another process, and is refused before machined is asked.
fn register_cases() -> Vec<Case> {
    use ErrorKind::{Denied, InvalidRequest, Unsupported};
    let offered = |sock: &OwnedFd, frame: &[u8], leader: &OwnedFd, kind: ErrorKind, text: &str| {
        send_raw(sock, frame, &[leader.as_raw_fd()]);
        expect_error(sock, kind, text)
    };
    vec![
        (
            "register-without-leader-fd",
            Box::new(|h, _| {
                let s = connect(h);
                hello(&s);
                send_raw(&s, &register("vm"), &[]);
                expect_error(&s, InvalidRequest, "exactly one fd")
            }),
        ),
        (
            "register-leader-not-a-pidfd",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
                offered(
                    &s,
                    &register("vm"),
                    &null,
                    Denied,
                    "must be passed as a pidfd",
                )
            }),
        ),
        (
            "register-the-caller-itself",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let me = pidfd_open(std::process::id(), 0);
                offered(&s, &register("vm"), &me, Denied, "is not your child")
            }),
        ),
        (
            "register-the-callers-parent-shell",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let parent = pidfd_open(nix::unistd::getppid().as_raw() as u32, 0);
                offered(&s, &register("vm"), &parent, Denied, "is not your child")
            }),
        ),
        (
            "register-pid-1",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let init = pidfd_open(1, 0);
                offered(&s, &register("vm"), &init, Denied, "is not your child")
            }),
        ),
        (
            "register-another-users-process",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let (uid, gid) = tester_ids();
                let child = Sleeper::start(Command::new("sleep").arg("30").uid(uid).gid(gid));
                let leader = pidfd_open(child.0.id(), 0);
                offered(
                    &s,
                    &register("vm"),
                    &leader,
                    Denied,
                    &format!("runs as uid {uid}, not as you"),
                )
            }),
        ),
        (
            "register-a-grandchild",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let mut child =
                    Sleeper::start(Command::new("sh").args(["-c", "sleep 30 & echo $!; wait"]));
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.0.stdout.as_mut().unwrap()),
                    &mut line,
                )
                .unwrap();
                let grandchild: u32 = line.trim().parse().unwrap();
                let leader = pidfd_open(grandchild, 0);
                let result = offered(&s, &register("vm"), &leader, Denied, "is not your child");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(grandchild as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                result
            }),
        ),
        (
            "register-a-thread-of-the-caller",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let (tx, rx) = std::sync::mpsc::channel();
                let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
                let thread = std::thread::spawn(move || {
                    tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
                    let _ = done_rx.recv();
                });
                let tid = rx.recv().unwrap();
                // PIDFD_THREAD (O_EXCL): a pidfd of one thread.
                let leader = pidfd_open(tid, libc::O_EXCL as u32);
                let result = offered(&s, &register("vm"), &leader, Denied, "is not your child");
                done_tx.send(()).unwrap();
                thread.join().unwrap();
                result
            }),
        ),
        (
            "register-a-zombie-child",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let mut child = Command::new("true").spawn().unwrap();
                let leader = pidfd_open(child.id(), 0);
                let status = format!("/proc/{}/status", child.id());
                while std::fs::read_to_string(&status).is_ok_and(|s| !s.contains("State:\tZ")) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let result = offered(&s, &register("vm"), &leader, Denied, "has exited");
                child.wait().unwrap();
                result
            }),
        ),
        (
            "register-a-reaped-child-pid-reuse",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let mut child = Command::new("true").spawn().unwrap();
                let leader = pidfd_open(child.id(), 0);
                child.wait().unwrap();
                // Whoever has that pid now, the pidfd still names the exited child.
                offered(&s, &register("vm"), &leader, Denied, "has exited")
            }),
        ),
        (
            "register-with-a-bad-machine-name",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let child = Sleeper::start(Command::new("sleep").arg("30"));
                let leader = pidfd_open(child.0.id(), 0);
                offered(&s, &register("../etc"), &leader, InvalidRequest, "machine")
            }),
        ),
        (
            "register-a-child-that-is-not-qemu",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let child = Sleeper::start(Command::new("sleep").arg("30"));
                let leader = pidfd_open(child.0.id(), 0);
                offered(
                    &s,
                    &register("vm"),
                    &leader,
                    Denied,
                    "runs 'sleep', which is not QEMU",
                )
            }),
        ),
        (
            "register-a-forked-copy-of-the-caller",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                // SAFETY: the child only calls pause(), which is async-signal-safe, until it
                // is killed below.
                let child = match unsafe { nix::unistd::fork() }.unwrap() {
                    nix::unistd::ForkResult::Child => loop {
                        nix::unistd::pause();
                    },
                    nix::unistd::ForkResult::Parent { child } => child,
                };
                let leader = pidfd_open(child.as_raw() as u32, 0);
                let result = offered(
                    &s,
                    &register("vm"),
                    &leader,
                    Denied,
                    "has not started a program since you forked it",
                );
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                result
            }),
        ),
        (
            "register-a-real-qemu-child-without-machined",
            Box::new(move |h, _| {
                let s = connect(h);
                hello(&s);
                let child = Sleeper::start(
                    Command::new("qemu-system-x86_64")
                        .args(["-machine", "none", "-nodefaults", "-display", "none", "-S"])
                        .stdin(Stdio::null()),
                );
                let leader = pidfd_open(child.0.id(), 0);
                offered(
                    &s,
                    &register("vm"),
                    &leader,
                    Unsupported,
                    "systemd-machined cannot be reached",
                )
            }),
        ),
        (
            "unregister-a-machine-of-another-connection",
            Box::new(|h, _| {
                let s = connect(h);
                hello(&s);
                send_raw(
                    &s,
                    &codec::encode(&Request::UnregisterMachine {
                        machine: "someone-else".into(),
                    })
                    .unwrap(),
                    &[],
                );
                expect_error(&s, Denied, "not registered through this connection")
            }),
        ),
    ]
}

#[test]
fn running_helper_refuses_every_adversarial_request() {
    let netns = Netns::new("attacks");
    let helper = HelperService::start(&netns, "attacks", POLICY);
    let mut failures = Vec::new();
    let cases: Vec<Case> = protocol_cases()
        .into_iter()
        .chain(request_cases())
        .chain(register_cases())
        .collect();
    assert!(cases.len() >= 46, "{}", cases.len());
    for (name, case) in &cases {
        match case(&helper, &netns) {
            Ok(()) => println!("case {name}: refused as expected"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        // After every case the helper still serves, with no capability in effect.
        let s = connect(&helper);
        hello(&s);
        assert_eq!(helper.status("CapEff:"), "0000000000000000", "after {name}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn start_helper(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(privhelper_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn helper_refuses_unsafe_setups() {
    let dir = std::path::PathBuf::from(format!("/run/vmspawn-it-{}-setup", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("open")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("link.socket")).unwrap();
    let p = policy.to_str().unwrap();

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "socket-path-is-a-symlink",
            vec![
                "--listen".into(),
                dir.join("link.socket").display().to_string(),
                "--policy".into(),
                p.into(),
            ],
            "is not a socket; refusing",
        ),
        (
            "socket-dir-writable-by-others",
            vec![
                "--listen".into(),
                dir.join("open/s").display().to_string(),
                "--policy".into(),
                p.into(),
            ],
            "not writable by others",
        ),
        (
            "serve-fd-without-setuid",
            vec!["--serve-fd".into(), "3".into()],
            "setuid",
        ),
        (
            "missing-policy",
            vec![
                "--listen".into(),
                dir.join("s").display().to_string(),
                "--policy".into(),
                dir.join("none.toml").display().to_string(),
            ],
            "none.toml",
        ),
        (
            "unknown-argument",
            vec!["--bogus".into()],
            "unknown argument '--bogus'",
        ),
    ];
    let mut failures = Vec::new();
    for (name, args, text) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = start_helper(&args, &dir);
        if code != Some(1) || !stderr.contains(text) {
            failures.push(format!("{name}: exit {code:?}, stderr: {stderr}"));
        }
    }
    // A policy file others can write is not trusted.
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stderr) = start_helper(
        &["--listen", dir.join("s").to_str().unwrap(), "--policy", p],
        &dir,
    );
    if code != Some(1) || !stderr.contains("writable") {
        failures.push(format!(
            "world-writable-policy: exit {code:?}, stderr: {stderr}"
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Attacks by the unprivileged test user, against the service and against the setuid helper.

fn tester_policy(max_taps: u32) -> String {
    format!(
        "[[allow]]\nusers = [\"{TEST_USER}\"]\noperations = [\"create-tap\"]\nmax-taps = {max_taps}\npolkit = \"no\"\n"
    )
}

/// The helper under attack: the service in the namespace, or the setuid binary.
enum Target {
    Service(HelperService),
    Setuid(SetuidHelper),
}

impl Target {
    fn start(setuid: bool, netns: &Netns, tag: &str, policy: &str) -> Target {
        if setuid {
            Target::Setuid(SetuidHelper::install(policy))
        } else {
            Target::Service(HelperService::start(netns, tag, policy))
        }
    }

    fn arg(&self) -> String {
        match self {
            Target::Service(h) => h.socket.display().to_string(),
            Target::Setuid(h) => format!("setuid:{}", h.binary.display()),
        }
    }
}

/// helper-probe as the test user inside `netns`.
fn probe(netns: &Netns, target: &Target, args: &[&str]) -> Command {
    probe_in(&netns.name, &target.arg(), args)
}

fn probe_in(netns: &str, target: &str, args: &[&str]) -> Command {
    let (uid, gid) = tester_ids();
    probe_as(netns, target, uid, gid, args)
}

/// helper-probe as any uid (with no supplementary groups) inside `netns`.
fn probe_as(netns: &str, target: &str, uid: u32, gid: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_helper-probe"))
        .arg(target)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/");
    cmd
}

fn probe_output(netns: &Netns, target: &Target, args: &[&str]) -> (String, String) {
    let out = probe(netns, target, args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The helper's records of TAPs it made (one line per used slot of /run/vmspawn/taps).
fn tap_records() -> Vec<String> {
    std::fs::read_to_string("/run/vmspawn/taps")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits until no TAP (but those in `keep`) is left in the namespace, and the helper has
/// retired its records of them too: the next case's quota must start from nothing.
fn wait_no_taps(netns: &Netns, keep: &[&str], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left: Vec<String> = netns
            .taps()
            .into_iter()
            .filter(|t| !keep.contains(&t.as_str()))
            .collect();
        left.extend(tap_records().into_iter().map(|r| format!("record {r}")));
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("TAP devices outlived their session: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn taps_created(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TAP "))
        .map(str::to_string)
        .collect()
}

/// Runs one probe that holds a TAP until its stdin closes; returns it and its ANSWER line.
fn start_holder(netns: &str, target: &str) -> (std::process::Child, String) {
    let mut child = probe_in(netns, target, &["hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut lines, &mut line).unwrap_or(0) == 0 {
            break;
        }
        text.push_str(&line);
        if line.starts_with("ANSWER") {
            break;
        }
    }
    (child, text)
}

type UserCase = (
    &'static str,
    fn(&Netns, &Target, bool) -> Result<(), String>,
);

fn user_cases() -> Vec<UserCase> {
    vec![
        ("persist-and-close", |netns, target, _| {
            let (stdout, stderr) = probe_output(netns, target, &["persist-and-exit"]);
            if taps_created(&stdout).len() != 1 {
                return Err(format!("no TAP: {stdout} {stderr}"));
            }
            wait_no_taps(netns, &[], Duration::from_secs(15))
        }),
        ("re-own-does-not-dodge-the-quota", |netns, target, _| {
            let (stdout, stderr) = probe_output(netns, target, &["reown-quota", "0"]);
            let made = taps_created(&stdout);
            if made.len() != 2 || !stdout.contains("QuotaExceeded") {
                return Err(format!(
                    "expected 2 TAPs, then the quota: {stdout} {stderr}"
                ));
            }
            wait_no_taps(netns, &[], Duration::from_secs(15))
        }),
        ("pre-created-victim-name", |netns, target, _| {
            let victim = "vt-000000000000";
            netns.ip(&["tuntap", "add", "dev", victim, "mode", "tap", "user", "0"]);
            let (stdout, stderr) = probe_output(netns, target, &["persist-and-exit"]);
            let made = taps_created(&stdout);
            let result = if made.len() != 1 || made[0] == victim {
                Err(format!("unexpected TAPs {made:?}: {stdout} {stderr}"))
            } else {
                wait_no_taps(netns, &[victim], Duration::from_secs(15))
            };
            // The victim's device is untouched: still there, still root's.
            let details = netns.ip(&["-d", "link", "show", victim]);
            netns.ip(&["link", "del", victim]);
            result?;
            if details.contains("user root") || details.contains("user 0") {
                Ok(())
            } else {
                Err(format!("the victim's TAP changed: {details}"))
            }
        }),
        ("twenty-parallel-callers-max-taps-2", |netns, target, _| {
            // All started at once: each setuid helper checks the quota under the lock.
            let holders: Vec<_> = (0..20)
                .map(|_| {
                    let (name, arg) = (netns.name.clone(), target.arg());
                    std::thread::spawn(move || start_holder(&name, &arg))
                })
                .collect();
            let mut children = Vec::new();
            let mut granted = 0;
            for h in holders {
                let (child, text) = h.join().unwrap();
                if text.contains("Some(Tap") {
                    granted += 1;
                } else if !text.contains("QuotaExceeded") {
                    return Err(format!("a caller got neither a TAP nor the quota: {text}"));
                }
                children.push(child);
            }
            let present = netns.taps().len();
            for mut child in children {
                drop(child.stdin.take());
                let _ = child.wait();
            }
            if granted != 2 || present != 2 {
                return Err(format!(
                    "{granted} TAPs granted, {present} present; the limit is 2"
                ));
            }
            wait_no_taps(netns, &[], Duration::from_secs(15))
        }),
        ("rlimit-nofile-sweep-3-to-64", |netns, target, setuid| {
            if !setuid {
                return Ok(());
            }
            let mut child = probe(netns, target, &["rlimit-sweep", "3", "64"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut answers = Vec::new();
            while answers.len() < 62 {
                let mut line = String::new();
                if std::io::BufRead::read_line(&mut lines, &mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line.starts_with("ANSWER") {
                    answers.push(line);
                }
            }
            let present = netns.taps().len();
            drop(child.stdin.take());
            let _ = child.wait();
            // Where the helper can raise the limits again (CAP_SYS_RESOURCE) every answer is a
            // TAP or the quota. Where it cannot, a low limit may make it refuse instead — an
            // error, exit status 1 with a message, or 127 when the dynamic loader cannot even
            // open its libraries — never more TAPs, never a crash.
            let granted = answers.iter().filter(|a| a.contains("Tap {")).count();
            let clean = answers.iter().all(|a| {
                a.contains("Tap {")
                    || a.contains("Error(")
                    || a.contains("unix_wait_status(256)")
                    || a.contains("unix_wait_status(32512)")
            });
            let refused = answers
                .iter()
                .filter(|a| a.contains("QuotaExceeded"))
                .count();
            if answers.len() != 62 || granted != 2 || !clean || refused < 40 || present > 2 {
                return Err(format!(
                    "{granted} granted, {refused} refused, {present} present: {answers:?}"
                ));
            }
            wait_no_taps(netns, &[], Duration::from_secs(15))
        }),
        ("stdio-closed-at-exec", |netns, target, setuid| {
            if !setuid {
                return Ok(());
            }
            let (stdout, stderr) = probe_output(netns, target, &["stdio-closed"]);
            if !stdout.contains("Some(Tap") {
                return Err(format!("with fds 0-2 closed: {stdout} {stderr}"));
            }
            wait_no_taps(netns, &[], Duration::from_secs(15))?;
            // The records were not written over by anything meant for stderr.
            let (stdout, stderr) = probe_output(netns, target, &["persist-and-exit"]);
            if taps_created(&stdout).len() != 1 {
                return Err(format!("after the stdio-closed run: {stdout} {stderr}"));
            }
            wait_no_taps(netns, &[], Duration::from_secs(15))
        }),
        ("serve-fd-given-twice", |netns, target, _| {
            let Target::Setuid(helper) = target else {
                return Ok(());
            };
            let (uid, gid) = tester_ids();
            let out = Command::new("ip")
                .args(["netns", "exec", &netns.name, "setpriv"])
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .args(["--clear-groups", "--"])
                .arg(&helper.binary)
                .args(["--serve-fd", "3", "--serve-fd", "3"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() == Some(1) && stderr.contains("--serve-fd is given twice") {
                Ok(())
            } else {
                Err(format!("exit {:?}: {stderr}", out.status.code()))
            }
        }),
        (
            "every-helper-thread-bounded-to-net-admin",
            |netns, target, setuid| {
                if !setuid {
                    return Ok(());
                }
                let (mut child, text) = start_holder(&netns.name, &target.arg());
                let helpers = children_of(child.id());
                let mut problems = Vec::new();
                for pid in &helpers {
                    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                        .unwrap()
                        .flatten()
                    {
                        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
                        let field = |name: &str| {
                            status
                                .lines()
                                .find_map(|l| l.strip_prefix(name))
                                .map(|v| v.trim().to_string())
                                .unwrap_or_default()
                        };
                        if field("CapBnd:") != format!("{:016x}", 1u64 << 12)
                            || field("CapEff:") != "0000000000000000"
                            || field("NoNewPrivs:") != "1"
                        {
                            problems.push(format!("{pid}/{:?}: {status}", task.file_name()));
                        }
                    }
                }
                drop(child.stdin.take());
                let _ = child.wait();
                if helpers.len() != 1 || !text.contains("Tap {") || !problems.is_empty() {
                    return Err(format!("helpers {helpers:?}, {text}, {problems:?}"));
                }
                wait_no_taps(netns, &[], Duration::from_secs(15))
            },
        ),
        ("forged-serve-fd-peer", |netns, target, setuid| {
            if !setuid {
                return Ok(());
            }
            let (stdout, stderr) = probe_output(netns, target, &["forged-peer"]);
            if stdout.contains("ANSWER None") && stderr.contains("not this helper's parent") {
                Ok(())
            } else {
                Err(format!(
                    "a serve fd from another process: {stdout} {stderr}"
                ))
            }
        }),
    ]
}

/// The line of `stdout` that starts with `prefix`, without it.
fn line_after<'a>(stdout: &'a str, prefix: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(prefix))
}

/// `flood N` probes as each of `uids`, all holding their connections at once: the answers'
/// `SERVED k REFUSED m OTHER o` lines, and the probes (closing their stdin ends them).
/// A `flood` probe and the rest of its output.
type Flood = (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
);

fn floods(netns: &Netns, target: &Target, uids: &[u32], n: usize) -> (Vec<String>, Vec<Flood>) {
    let mut children = Vec::new();
    let mut lines = Vec::new();
    for &uid in uids {
        let mut child = probe_as(
            &netns.name,
            &target.arg(),
            uid,
            uid,
            &["flood", &n.to_string()],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut out, &mut line);
        lines.push(line.trim().to_string());
        children.push((child, out));
    }
    (lines, children)
}

fn count(line: &str, word: &str) -> usize {
    line.split_whitespace()
        .skip_while(|w| *w != word)
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn resource_cases() -> Vec<UserCase> {
    vec![
        (
            "endless-requests-closed-after-the-lifetime",
            |netns, target, setuid| {
                if setuid {
                    return Ok(());
                }
                let (stdout, stderr) = probe_output(netns, target, &["request-flood"]);
                let Some(line) = line_after(&stdout, "CLOSED ") else {
                    return Err(format!("{stdout} {stderr}"));
                };
                let fields: Vec<&str> = line.splitn(4, ' ').collect();
                let ms: u64 = fields[0].parse().unwrap_or(0);
                let answers: u64 = fields.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
                // Requests every 100 ms for 30 s, each answered; then the closing answer.
                if (29_000..45_000).contains(&ms)
                    && answers >= 100
                    && fields.get(2) == Some(&"true")
                    && line.contains("30 s old and holds no registration or TAP")
                {
                    Ok(())
                } else {
                    Err(format!("request flood: {line}"))
                }
            },
        ),
        ("repeated-hello-is-a-protocol-error", |netns, target, _| {
            let (stdout, stderr) = probe_output(netns, target, &["hello-twice"]);
            let answer = line_after(&stdout, "ANSWER ").unwrap_or_default();
            if answer.contains("InvalidRequest")
                && answer.contains("Hello was already sent")
                && line_after(&stdout, "CLOSED ") == Some("true")
            {
                Ok(())
            } else {
                Err(format!("a second Hello: {stdout} {stderr}"))
            }
        }),
        (
            "subuid-flood-counts-as-one-user",
            |netns, target, setuid| {
                if setuid {
                    return Ok(());
                }
                // The service read /etc/subuid when tester's range was added (it re-reads the
                // file when it changes); 4 uids of tester's range x 40 connections.
                let range = SubuidRange::add(TEST_USER, 300_000, 10);
                let uids: Vec<u32> = (1..=4).map(|i| range.first + i).collect();
                let (lines, mut children) = floods(netns, target, &uids, 40);
                // tester itself is the same user: refused; another user is still served.
                let (uid, _) = tester_ids();
                let (mine, mut mine_children) = floods(netns, target, &[uid], 1);
                let other_user = TempUsers::create("vmspflood", 1);
                let (other_uid, _) = TempUsers::ids(&other_user.names[0]);
                let (other, mut other_children) = floods(netns, target, &[other_uid], 1);
                children.append(&mut mine_children);
                children.append(&mut other_children);
                // Each probe says how many of its connections were still served at the end.
                let mut alive = Vec::new();
                for (mut child, mut out) in children {
                    drop(child.stdin.take());
                    let mut rest = String::new();
                    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
                    let _ = child.wait();
                    alive.push(rest.trim().to_string());
                }
                drop(range);
                let served: usize = lines.iter().map(|l| count(l, "SERVED")).sum();
                let refused: usize = lines.iter().map(|l| count(l, "REFUSED")).sum();
                if served == 128
                    && refused == 160 - 128
                    && count(&mine[0], "REFUSED") == 1
                    && count(&other[0], "SERVED") == 1
                {
                    Ok(())
                } else {
                    Err(format!(
                        "subuid flood: {lines:?}; tester: {mine:?}; another user: {other:?}; \
                         at the end: {alive:?}"
                    ))
                }
            },
        ),
    ]
}

/// fs.suid_dumpable set to 1 for a test, put back on drop.
struct SuidDumpable(String);

impl SuidDumpable {
    const PATH: &str = "/proc/sys/fs/suid_dumpable";

    fn set(value: &str) -> SuidDumpable {
        let saved = std::fs::read_to_string(Self::PATH).unwrap();
        std::fs::write(Self::PATH, value).unwrap();
        SuidDumpable(saved.trim().to_string())
    }
}

impl Drop for SuidDumpable {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

fn dumpable_cases() -> Vec<UserCase> {
    vec![(
        "suid-dumpable-1-mem-of-every-helper-thread",
        |netns, target, setuid| {
            if !setuid {
                return Ok(());
            }
            let dumpable = SuidDumpable::set("1");
            let (mut child, text) = start_holder(&netns.name, &target.arg());
            // The helper, and its warden (its child until the helper exits).
            let mut pids = children_of(child.id());
            for pid in pids.clone() {
                pids.extend(children_of(pid));
            }
            let threads: usize = pids
                .iter()
                .map(|pid| {
                    std::fs::read_dir(format!("/proc/{pid}/task"))
                        .map(|d| d.count())
                        .unwrap_or(0)
                })
                .sum();
            let args: Vec<String> = std::iter::once("open-mem".to_string())
                .chain(pids.iter().map(u32::to_string))
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (uid, gid) = tester_ids();
            let out = Command::new("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .args(["--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_helper-probe"))
                .args(&args)
                .output()
                .unwrap();
            drop(child.stdin.take());
            let _ = child.wait();
            drop(dumpable);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let refused = stdout.lines().filter(|l| l.starts_with("REFUSED")).count();
            if text.contains("Tap {")
                && pids.len() == 2
                && threads >= 2
                && refused == threads
                && !stdout.contains("OPENED")
            {
                Ok(())
            } else {
                Err(format!(
                    "helper {pids:?} ({threads} threads), {text}: {stdout}"
                ))
            }
        },
    )]
}

/// Cases of the service's own resources; a setuid helper serves only its one caller.
const SERVICE_ONLY: [&str; 2] = [
    "endless-requests-closed-after-the-lifetime",
    "subuid-flood-counts-as-one-user",
];

/// Attacks on how the setuid helper is started; the service is not started by its caller.
const SETUID_ONLY: [&str; 6] = [
    "suid-dumpable-1-mem-of-every-helper-thread",
    "rlimit-nofile-sweep-3-to-64",
    "stdio-closed-at-exec",
    "serve-fd-given-twice",
    "every-helper-thread-bounded-to-net-admin",
    "forged-serve-fd-peer",
];

fn run_user_cases(setuid: bool) {
    let netns = Netns::new(if setuid { "usr-suid" } else { "usr-svc" });
    let target = Target::start(setuid, &netns, "usr-svc", &tester_policy(2));
    let cases: Vec<UserCase> = user_cases()
        .into_iter()
        .chain(resource_cases())
        .chain(dumpable_cases())
        .collect();
    let mut failures = Vec::new();
    for (name, case) in &cases {
        if !setuid && SETUID_ONLY.contains(name) {
            println!("case {name}: setuid mode only");
            continue;
        }
        if setuid && SERVICE_ONLY.contains(name) {
            println!("case {name}: service mode only");
            continue;
        }
        match case(&netns, &target, setuid) {
            Ok(()) => println!("case {name}: refused as expected"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        let _ = wait_no_taps(&netns, &[], Duration::from_secs(15));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_test_user_attacks_the_helper_service() {
    run_user_cases(false);
}

#[test]
fn the_test_user_attacks_the_setuid_helper() {
    run_user_cases(true);
}

// ---------------------------------------------------------------------------------------------
// Identity: group rules never fail open, a uid without a user entry is a clear denial.

const NSS_GROUP: &str = "vmspawn-nss-deny";
const NSS_GID: u32 = 61_234;

fn group_deny_policy() -> String {
    format!(
        "{}[[deny]]\ngroups = [\"{NSS_GROUP}\"]\noperations = [\"create-tap\"]\n",
        tester_policy(2)
    )
}

/// One TAP request by `uid`: its ANSWER line.
fn tap_answer(netns: &Netns, target: &Target, uid: u32, gid: u32) -> String {
    let out = probe_as(&netns.name, &target.arg(), uid, gid, &["persist-and-exit"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = wait_no_taps(netns, &[], Duration::from_secs(15));
    format!(
        "{} {}",
        line_after(&stdout, "ANSWER ").unwrap_or("no answer"),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn helper_alive(target: &Target) -> bool {
    match target {
        Target::Service(h) => {
            let s = connect(h);
            send_raw(
                &s,
                &codec::encode(&Request::Hello {
                    version: PROTOCOL_VERSION,
                    interactive_auth: false,
                })
                .unwrap(),
                &[],
            );
            matches!(answer(&s), Ok((Response::Hello { .. }, _)))
        }
        Target::Setuid(_) => true,
    }
}

/// A `[[deny]]` by a group that only systemd's NSS source (`/run/userdb`) knows tester is in.
/// Started before that source existed, the confined service cannot read it: tester's groups are
/// incomplete, so the rule by group denies (never fails open). Started after, the service (and
/// the setuid helper) resolve the membership and the rule denies as written. A uid without a
/// user entry gets a clear denial and the service keeps serving.
#[test]
fn group_deny_with_an_unavailable_nss_source() {
    let (uid, gid) = tester_ids();
    let netns = Netns::new("nss");
    let mut failures = Vec::new();
    let mut answers = Vec::new();
    let nobody_uid = 4242;
    {
        let target = Target::Service(HelperService::start(&netns, "nss", &group_deny_policy()));
        // Not in the group yet: allowed (so the denials below are the group's doing).
        let before = tap_answer(&netns, &target, uid, gid);
        answers.push(format!("before: {before}"));
        if !before.contains("Some(Tap") {
            failures.push(format!("before the membership: {before}"));
        }
        let userdb = UserdbGroup::create(NSS_GROUP, NSS_GID, TEST_USER);
        let id = Command::new("id").arg(TEST_USER).output().unwrap();
        assert!(
            String::from_utf8_lossy(&id.stdout).contains(NSS_GROUP),
            "NSS does not see the membership: {}",
            String::from_utf8_lossy(&id.stdout)
        );
        let after = tap_answer(&netns, &target, uid, gid);
        answers.push(format!("after: {after}"));
        if !(after.contains("Denied")
            && after.contains("could not be resolved completely")
            && after.contains("/run/userdb")
            && after.contains("names groups"))
        {
            failures.push(format!("service started before /run/userdb: {after}"));
        }
        drop(target);
        // Started with /run/userdb there: the membership is resolved under confinement.
        let target = Target::Service(HelperService::start(&netns, "nss2", &group_deny_policy()));
        let resolved = tap_answer(&netns, &target, uid, gid);
        answers.push(format!("resolved: {resolved}"));
        if !(resolved.contains("Denied")
            && resolved.contains("[[deny]]")
            && resolved.contains("denied by"))
        {
            failures.push(format!("service started with /run/userdb: {resolved}"));
        }
        let unnamed = tap_answer(&netns, &target, nobody_uid, nobody_uid);
        answers.push(format!("unnamed: {unnamed}"));
        if !(unnamed.contains("Denied") && unnamed.contains("has no entry in the user database")) {
            failures.push(format!("service, uid without a user entry: {unnamed}"));
        }
        if !helper_alive(&target) {
            failures.push("the service stopped serving".into());
        }
        drop(target);
        let target = Target::Setuid(SetuidHelper::install(&group_deny_policy()));
        let setuid = tap_answer(&netns, &target, uid, gid);
        answers.push(format!("setuid: {setuid}"));
        if !(setuid.contains("Denied") && setuid.contains("denied by")) {
            failures.push(format!("setuid helper: {setuid}"));
        }
        let unnamed = tap_answer(&netns, &target, nobody_uid, nobody_uid);
        answers.push(format!("unnamed: {unnamed}"));
        if !(unnamed.contains("Denied") && unnamed.contains("has no entry in the user database")) {
            failures.push(format!("setuid, uid without a user entry: {unnamed}"));
        }
        drop(userdb);
    }
    println!("{}", answers.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Confinement: no Landlock, no helper (unless the policy says otherwise).

#[test]
fn helper_refuses_to_run_without_landlock() {
    let probe = env!("CARGO_BIN_EXE_helper-probe");
    let dir =
        std::path::PathBuf::from(format!("/run/vmspawn-it-{}-nolandlock", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = dir.join("policy.toml");
    let write_policy = |text: &str| {
        std::fs::write(&policy, text).unwrap();
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    let socket = dir.join("s");
    let service = || {
        let mut cmd = Command::new(probe);
        cmd.arg("without-landlock")
            .arg(privhelper_bin())
            .arg("--listen")
            .arg(&socket)
            .arg("--policy")
            .arg(&policy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let mut failures = Vec::new();
    write_policy(&tester_policy(2));
    let out = service().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(1)
        || !stderr.contains("refusing to start: this kernel has no Landlock")
        || !stderr.contains("allow-unconfined = true under [limits]")
    {
        failures.push(format!(
            "service without Landlock: {:?} {stderr}",
            out.status
        ));
    }
    // The administrator allows it: the service starts, and says so.
    write_policy(&format!(
        "[limits]\nallow-unconfined = true\n{}",
        tester_policy(2)
    ));
    let _ = std::fs::remove_file(&socket);
    let mut child = service().spawn().unwrap();
    let started = wait_for_path(&socket, Duration::from_secs(10));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !started || !stderr.contains("warning: this kernel has no Landlock") {
        failures.push(format!(
            "service allowed to run unconfined: started {started}, {stderr}"
        ));
    }
    // The setuid helper, started by tester below the same filter (installed by root, so the
    // setuid bit still works), refuses too.
    let helper = SetuidHelper::install(&tester_policy(2));
    let (uid, gid) = tester_ids();
    let out = Command::new(probe)
        .arg("without-landlock")
        .arg("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(probe)
        .arg(format!("setuid:{}", helper.binary.display()))
        .arg("hold")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if !stdout.contains("ANSWER None")
        || !stderr.contains("refusing to start: this kernel has no Landlock")
    {
        failures.push(format!("setuid helper without Landlock: {stdout} {stderr}"));
    }
    drop(helper);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
