//! A hostile (or plain) client of vmspawn-privhelper, for tests that run it as an unprivileged
//! user where the helper serves, e.g. inside a container with a real systemd-machined.
//!
//! usage: helper-probe SOCKET ACTION MACHINE
//!   register-parent       offer our parent (the user's shell) as the leader
//!   register-self         offer ourselves
//!   register-pid1         offer PID 1 (another user's process)
//!   register-grandchild   offer a child of our child
//!   register-child-and-exit
//!                         register our child (`sleep 120`) properly, then exit without
//!                         unregistering: the registration must end with the connection
//!
//! Prints one line: `ANSWER <response>`, and for register-child-and-exit `CHILD <pid>` first.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use vmspawn_proto::{PROTOCOL_VERSION, Request, Response, wire};

fn pidfd_of(pid: u32) -> OwnedFd {
    vmspawn_tests::pidfd_open(pid, 0)
}

fn call(sock: &OwnedFd, request: &Request, fd: Option<&OwnedFd>) -> Response {
    let fds: Vec<_> = fd.map(AsFd::as_fd).into_iter().collect();
    wire::send_message(sock.as_fd(), request, &fds).expect("send");
    wire::recv_message::<Response>(sock.as_fd())
        .expect("answer")
        .0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket_path, action, machine] = &args[..] else {
        eprintln!("usage: helper-probe SOCKET ACTION MACHINE");
        std::process::exit(2);
    };
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    socket::connect(
        sock.as_raw_fd(),
        &UnixAddr::new(socket_path.as_str()).expect("path"),
    )
    .expect("connect to the helper");
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        interactive_auth: false,
    };
    assert!(matches!(call(&sock, &hello, None), Response::Hello { .. }));
    let register = Request::RegisterMachine {
        machine: machine.clone(),
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
        "register-child-and-exit" => {
            let child = Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("spawn sleep");
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
    let answer = call(&sock, &register, Some(&leader));
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
