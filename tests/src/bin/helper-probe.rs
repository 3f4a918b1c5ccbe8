//! A hostile (or plain) client of vmspawn-privhelper, for tests that run it as an unprivileged
//! user where the helper serves, e.g. inside a container with a real systemd-machined.
//!
//! usage: helper-probe TARGET ACTION [ARG]
//!   TARGET is the service socket's path, or `setuid:BINARY` to start the setuid helper over a
//!   socketpair as vmspawn does.
//!   register-parent       offer our parent (the user's shell) as the leader
//!   register-self         offer ourselves
//!   register-pid1         offer PID 1 (another user's process)
//!   register-grandchild   offer a child of our child
//!   register-child        offer our child `sleep 120` (not QEMU)
//!   register-fork         offer a child we forked that never called execve (a copy of us)
//!   register-child-and-exit
//!                         register our child (an idle QEMU) properly, then exit without
//!                         unregistering: the registration must end with the connection
//!   persist-and-exit      create a TAP, make it persistent (TUNSETPERSIST) and give it to
//!                         uid 0 (TUNSETOWNER), close it and exit: it must not outlive us
//!   reown-quota UID       create TAPs until refused, making each persistent and giving it to
//!                         UID; then ask for one more (a quota counts what we created)
//!   hold                  create a TAP and keep it until stdin closes
//!   rlimit-sweep FROM TO  (setuid) one helper per RLIMIT_NOFILE value FROM..=TO, each asked
//!                         for a TAP; all kept until the end
//!   stdio-closed          (setuid) start the helper with fds 0-2 closed, ask for a TAP
//!   forged-peer           (setuid) start the helper through `sh`, so the serve fd's peer is
//!                         not its parent
//!
//!   flood N               open N connections, each with a Hello; print `SERVED k REFUSED m
//!                         OTHER o`, then keep the served ones busy (a request a second) until
//!                         stdin closes
//!   request-flood         Hello, then a request every 100 ms until the helper closes the
//!                         connection; print `CLOSED <ms> <answers> <last answer>`
//!   hello-twice           Hello, then Hello again; print the second answer and whether the
//!                         connection was closed
//!   open-mem PID...       try to open /proc/PID/task/*/mem of each PID (and each thread) for
//!                         reading; print `OPENED <path>` or `REFUSED <path> <error>`
//!   without-landlock PROG ARGS...
//!                         (as root) exec PROG with a seccomp filter under which the Landlock
//!                         system calls fail with ENOSYS, as on a kernel without Landlock
//!
//! Prints `ANSWER <response>` lines (`TAP <name>` after each TAP created).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use vmspawn_proto::{PROTOCOL_VERSION, Request, Response, wire};

fn pidfd_of(pid: u32) -> OwnedFd {
    vmspawn_tests::pidfd_open(pid, 0)
}

/// A connection to the helper, and the setuid helper's process if we started one.
struct Conn {
    sock: OwnedFd,
    child: Option<Child>,
}

#[derive(Default, Clone, Copy)]
struct Start {
    nofile: Option<u64>,
    close_stdio: bool,
    through_shell: bool,
}

fn connect(target: &str, start: Start) -> Conn {
    if let Some(binary) = target.strip_prefix("setuid:") {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let raw = theirs.as_raw_fd();
        let mut cmd = if start.through_shell {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("{binary} --serve-fd 3; true"));
            cmd
        } else {
            let mut cmd = Command::new(binary);
            cmd.args(["--serve-fd", "3"]);
            cmd
        };
        cmd.env_clear().stdin(Stdio::null());
        // SAFETY: dup2, fcntl, setrlimit and close are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(n) = start.nofile {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
                if start.close_stdio {
                    for fd in 0..3 {
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start the setuid helper");
        drop(theirs);
        return Conn {
            sock: ours,
            child: Some(child),
        };
    }
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    socket::connect(sock.as_raw_fd(), &UnixAddr::new(target).expect("path"))
        .expect("connect to the helper");
    Conn { sock, child: None }
}

/// The answer, or None when the helper closed the connection (or is gone).
fn try_call(
    sock: &OwnedFd,
    request: &Request,
    fd: Option<&OwnedFd>,
) -> Option<(Response, Vec<OwnedFd>)> {
    let fds: Vec<_> = fd.map(AsFd::as_fd).into_iter().collect();
    wire::send_message(sock.as_fd(), request, &fds).ok()?;
    wire::recv_message::<Response>(sock.as_fd()).ok()
}

fn call(sock: &OwnedFd, request: &Request, fd: Option<&OwnedFd>) -> Response {
    try_call(sock, request, fd).expect("answer").0
}

fn hello(conn: &Conn) -> bool {
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        interactive_auth: false,
    };
    matches!(
        try_call(&conn.sock, &hello, None),
        Some((Response::Hello { .. }, _))
    )
}

/// Asks for a TAP; prints `TAP <name>` when one came, and returns the answer and its fd.
fn create_tap(conn: &Conn, machine: &str) -> (Option<Response>, Option<OwnedFd>) {
    let request = Request::CreateTap {
        machine: machine.into(),
        bridge: None,
    };
    match try_call(&conn.sock, &request, None) {
        Some((response, mut fds)) => {
            if let Response::Tap { ifname } = &response {
                println!("TAP {ifname}");
            }
            (Some(response), fds.pop())
        }
        None => (None, None),
    }
}

/// What a user may do with a TAP fd without any capability.
fn persist_and_reown(fd: &OwnedFd, uid: u32) {
    // SAFETY: both ioctls take an integer argument.
    unsafe {
        assert_eq!(libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1), 0);
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong),
            0,
            "TUNSETOWNER: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Sends `request` and reads the answer — or first reads what the helper sent unasked (a
/// refusal before it closed the connection): sending to a closed SOCK_SEQPACKET peer would
/// discard it.
fn ask(sock: &OwnedFd, request: &Request) -> Option<Response> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 0 {
        wire::send_message(sock.as_fd(), request, &[]).ok()?;
    }
    wire::recv_message::<Response>(sock.as_fd())
        .ok()
        .map(|(r, _)| r)
}

const HELLO: Request = Request::Hello {
    version: PROTOCOL_VERSION,
    interactive_auth: false,
};

/// Waits up to `ms` for stdin to close; true when it has.
fn stdin_closed(ms: u16) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => false,
        Ok(_) => {
            let mut byte = [0u8; 64];
            matches!(
                nix::unistd::read(stdin.as_raw_fd(), &mut byte),
                Ok(0) | Err(_)
            )
        }
        Err(_) => true,
    }
}

fn resource_actions(target: &str, action: &str, arg: Option<&String>) -> bool {
    match action {
        "flood" => {
            let n: usize = arg.and_then(|a| a.parse().ok()).expect("N");
            let (mut served, mut refused, mut other) = (Vec::new(), 0, Vec::new());
            for _ in 0..n {
                let conn = connect(target, Start::default());
                match ask(&conn.sock, &HELLO) {
                    Some(Response::Hello { .. }) => served.push(conn),
                    // Refused with a message, or closed before the message could be read.
                    Some(Response::Error(e)) if e.message.contains("too many connections") => {
                        refused += 1
                    }
                    None => refused += 1,
                    answer => other.push(format!("{answer:?}")),
                }
            }
            println!(
                "SERVED {} REFUSED {refused} OTHER {} {other:?}",
                served.len(),
                other.len()
            );
            let _ = std::io::stdout().flush();
            // Kept from the idle limit by a request the helper refuses before any lookup
            // (an empty machine name), every half second.
            let keep = Request::CreateTap {
                machine: String::new(),
                bridge: None,
            };
            let mut alive = served.len();
            while !stdin_closed(500) {
                alive = served
                    .iter()
                    .filter(|c| ask(&c.sock, &keep).is_some())
                    .count();
            }
            println!("ALIVE {alive}");
        }
        "request-flood" => {
            let conn = connect(target, Start::default());
            assert!(hello(&conn));
            let start = std::time::Instant::now();
            let mut answers = 0;
            let last = loop {
                match ask(&conn.sock, &Request::OpenKvm) {
                    Some(Response::Error(e)) if e.message.contains("holds no registration") => {
                        break format!("{e:?}");
                    }
                    Some(_) if start.elapsed().as_secs() < 120 => answers += 1,
                    other => break format!("{other:?}"),
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            // After that answer the connection is closed.
            let closed = ask(&conn.sock, &Request::OpenKvm).is_none();
            println!(
                "CLOSED {} {answers} {closed} {last}",
                start.elapsed().as_millis()
            );
        }
        "hello-twice" => {
            let conn = connect(target, Start::default());
            assert!(hello(&conn));
            let second = ask(&conn.sock, &HELLO);
            let closed = ask(&conn.sock, &Request::OpenKvm).is_none();
            println!("ANSWER {second:?}");
            println!("CLOSED {closed}");
        }
        _ => return false,
    }
    true
}

/// Execs `args` with the Landlock system calls answering ENOSYS (x86_64): a kernel without
/// Landlock, for the helper's refusal to run unconfined. Root installs the filter without
/// no_new_privs, so a setuid program started below it still gains its privileges.
fn exec_without_landlock(args: &[String]) -> ! {
    let (nr_first, nr_last) = (444u32, 446u32); // landlock_create_ruleset .. restrict_self
    let errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, nr_first, 0, 2),
        jump(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K, nr_last, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, errno),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program points to a live filter of `len` instructions.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
    let error = Command::new(&args[0]).args(&args[1..]).exec();
    panic!("exec {}: {error}", args[0]);
}

fn tap_actions(target: &str, action: &str, arg: Option<&String>) {
    if resource_actions(target, action, arg) {
        return;
    }
    match action {
        "persist-and-exit" => {
            let conn = connect(target, Start::default());
            assert!(hello(&conn));
            let (answer, fd) = create_tap(&conn, "vm");
            println!("ANSWER {answer:?}");
            if let Some(fd) = fd {
                persist_and_reown(&fd, 0);
            }
        }
        "reown-quota" => {
            let uid: u32 = arg.and_then(|a| a.parse().ok()).expect("UID");
            let conn = connect(target, Start::default());
            assert!(hello(&conn));
            for i in 0..8 {
                let (answer, fd) = create_tap(&conn, &format!("vm{i}"));
                let Some(fd) = fd else {
                    println!("ANSWER {answer:?}");
                    break;
                };
                persist_and_reown(&fd, uid);
            }
        }
        "hold" => {
            let conn = connect(target, Start::default());
            let answer = if hello(&conn) {
                create_tap(&conn, "vm")
            } else {
                (None, None)
            };
            println!("ANSWER {:?}", answer.0);
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(answer);
            finish(conn);
        }
        "rlimit-sweep" => {
            let bound = |a: Option<&String>| -> u64 { a.and_then(|v| v.parse().ok()).expect("N") };
            let args: Vec<String> = std::env::args().collect();
            let (from, to) = (bound(arg), bound(args.get(4)));
            let mut kept = Vec::new();
            for n in from..=to {
                let conn = connect(
                    target,
                    Start {
                        nofile: Some(n),
                        ..Start::default()
                    },
                );
                let answer = if hello(&conn) {
                    create_tap(&conn, "vm")
                } else {
                    (None, None)
                };
                match answer.0 {
                    Some(response) => println!("ANSWER {n} {response:?}"),
                    None => {
                        // The helper refused to start, or died: say how it ended.
                        let status = conn.child.map(|mut c| c.wait());
                        println!("ANSWER {n} None {status:?}");
                        continue;
                    }
                }
                kept.push((conn, answer.1));
            }
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        "stdio-closed" | "forged-peer" => {
            let start = Start {
                close_stdio: action == "stdio-closed",
                through_shell: action == "forged-peer",
                ..Start::default()
            };
            let conn = connect(target, start);
            let answer = if hello(&conn) {
                create_tap(&conn, "vm").0
            } else {
                None
            };
            println!("ANSWER {answer:?}");
            finish(conn);
        }
        other => {
            eprintln!("unknown action {other}");
            std::process::exit(2);
        }
    }
}

/// Closes the connection and reaps the setuid helper, printing how it ended.
fn finish(mut conn: Conn) {
    let _ = socket::shutdown(conn.sock.as_raw_fd(), socket::Shutdown::Both);
    if let Some(child) = conn.child.as_mut() {
        let status = child.wait().expect("wait for the helper");
        // The test may have stopped reading.
        let _ = writeln!(std::io::stdout(), "HELPER {status}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("without-landlock") {
        exec_without_landlock(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("open-mem") {
        for pid in &args[2..] {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
            for task in tasks.into_iter().flatten().flatten() {
                let path = task.path().join("mem");
                match std::fs::File::open(&path) {
                    Ok(_) => println!("OPENED {}", path.display()),
                    Err(e) => println!("REFUSED {} {e}", path.display()),
                }
            }
        }
        return;
    }
    let (Some(target), Some(action)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: helper-probe TARGET ACTION [ARG]");
        std::process::exit(2);
    };
    if !action.starts_with("register-") {
        tap_actions(target, action, args.get(3));
        return;
    }
    let machine = args.get(3).cloned().unwrap_or_else(|| "vm".into());
    let conn = connect(target, Start::default());
    let sock = &conn.sock;
    assert!(hello(&conn));
    let register = Request::RegisterMachine {
        machine,
        uuid: None,
    };
    let mut keep_alive = None;
    let leader = match action.as_str() {
        "register-parent" => pidfd_of(nix::unistd::getppid().as_raw() as u32),
        "register-self" => pidfd_of(std::process::id()),
        "register-pid1" => pidfd_of(1),
        "register-grandchild" => {
            let mut child = Command::new("sh")
                .args(["-c", "sleep 120 & echo $!; wait"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("grandchild pid");
            let grandchild: u32 = line.trim().parse().expect("pid");
            keep_alive = Some((child, grandchild));
            pidfd_of(grandchild)
        }
        "register-child" => {
            let child = Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("spawn sleep");
            println!("CHILD {}", child.id());
            let pidfd = pidfd_of(child.id());
            std::mem::forget(child);
            pidfd
        }
        "register-fork" => {
            // SAFETY: the child only calls pause(), which is async-signal-safe, until it is
            // killed.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                nix::unistd::ForkResult::Child => loop {
                    nix::unistd::pause();
                },
                nix::unistd::ForkResult::Parent { child } => {
                    println!("CHILD {child}");
                    pidfd_of(child.as_raw() as u32)
                }
            }
        }
        "register-child-and-exit" => {
            let child = Command::new("qemu-system-x86_64")
                .args(["-machine", "none", "-nodefaults", "-display", "none", "-S"])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn qemu-system-x86_64");
            println!("CHILD {}", child.id());
            let pidfd = pidfd_of(child.id());
            // The child is left running: only the connection ends.
            std::mem::forget(child);
            pidfd
        }
        other => {
            eprintln!("unknown action {other}");
            std::process::exit(2);
        }
    };
    let answer = call(sock, &register, Some(&leader));
    println!("ANSWER {answer:?}");
    if let Some((mut child, grandchild)) = keep_alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
