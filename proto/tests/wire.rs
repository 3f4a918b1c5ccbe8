//! Framing, fd passing and peer identity on real SEQPACKET socketpairs.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use nix::sys::stat::fstat;
use vmspawn_proto::codec::CodecError;
use vmspawn_proto::wire::{self, WireError};
use vmspawn_proto::{MAX_FDS, MAX_FRAME, Request, Response};

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// Sends bypassing `wire::send`'s checks, as a hostile peer would.
fn raw_send(sock: BorrowedFd<'_>, frame: &[u8], fds: &[RawFd]) {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(frame)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, frame.len());
}

fn recv(sock: BorrowedFd<'_>) -> Result<wire::Received, WireError> {
    wire::recv(sock, &mut [0; MAX_FRAME])
}

fn some_file() -> File {
    File::open("/dev/null").unwrap()
}

#[test]
fn message_with_fd_round_trips() {
    let (a, b) = seqpacket_pair();
    let file = some_file();
    let req = Request::RegisterMachine {
        machine: "vm".to_owned(),
        uuid: Some([9; 16]),
    };
    wire::send_message(a.as_fd(), &req, &[file.as_fd()]).unwrap();

    let (got, fds): (Request, _) = wire::recv_message(b.as_fd()).unwrap();
    assert_eq!(got, req);
    assert_eq!(fds.len(), MAX_FDS);
    let (sent, received) = (
        fstat(file.as_raw_fd()).unwrap(),
        fstat(fds[0].as_raw_fd()).unwrap(),
    );
    assert_eq!(
        (sent.st_dev, sent.st_ino),
        (received.st_dev, received.st_ino)
    );
    let flags = FdFlag::from_bits_truncate(fcntl(fds[0].as_raw_fd(), FcntlArg::F_GETFD).unwrap());
    assert!(
        flags.contains(FdFlag::FD_CLOEXEC),
        "MSG_CMSG_CLOEXEC not applied"
    );
}

#[test]
fn message_without_fds_round_trips() {
    let (a, b) = seqpacket_pair();
    let resp = Response::Tap {
        ifname: "vt-0123abcd".to_owned(),
    };
    wire::send_message(a.as_fd(), &resp, &[]).unwrap();
    let (got, fds): (Response, _) = wire::recv_message(b.as_fd()).unwrap();
    assert_eq!(got, resp);
    assert!(fds.is_empty());
}

#[test]
fn frame_of_exactly_max_frame_received() {
    let (a, b) = seqpacket_pair();
    wire::send(a.as_fd(), &[7; MAX_FRAME], &[]).unwrap();
    let mut buf = [0; MAX_FRAME];
    let got = wire::recv(b.as_fd(), &mut buf).unwrap();
    assert_eq!(got.len, MAX_FRAME);
    assert!(buf.iter().all(|&byte| byte == 7));
}

#[test]
fn frame_of_max_frame_plus_one_is_truncated() {
    let (a, b) = seqpacket_pair();
    raw_send(a.as_fd(), &[7; MAX_FRAME + 1], &[]);
    assert!(matches!(recv(b.as_fd()), Err(WireError::Truncated)));

    // The rest of the oversized frame is gone, not read as the next one.
    wire::send_message(a.as_fd(), &Request::OpenKvm, &[]).unwrap();
    let (got, _): (Request, _) = wire::recv_message(b.as_fd()).unwrap();
    assert_eq!(got, Request::OpenKvm);
}

#[test]
fn two_fds_rejected() {
    let (a, b) = seqpacket_pair();
    let file = some_file();
    raw_send(a.as_fd(), b"x", &[file.as_raw_fd(); 2]);
    assert!(matches!(
        recv(b.as_fd()),
        Err(WireError::TooManyFds { count: 2 })
    ));
}

#[test]
fn fd_flood_rejected() {
    let (a, b) = seqpacket_pair();
    let file = some_file();
    raw_send(a.as_fd(), b"x", &[file.as_raw_fd(); 200]);
    assert!(matches!(recv(b.as_fd()), Err(WireError::ControlTruncated)));
}

#[test]
fn empty_frame_reads_as_closed() {
    let (a, b) = seqpacket_pair();
    raw_send(a.as_fd(), &[], &[]);
    assert!(matches!(recv(b.as_fd()), Err(WireError::Closed)));
}

#[test]
fn peer_hang_up_is_closed() {
    let (a, b) = seqpacket_pair();
    drop(a);
    assert!(matches!(recv(b.as_fd()), Err(WireError::Closed)));
}

#[test]
fn garbage_frame_is_a_codec_error() {
    let (a, b) = seqpacket_pair();
    wire::send(a.as_fd(), &99u32.to_le_bytes(), &[]).unwrap();
    let err = wire::recv_message::<Request>(b.as_fd()).unwrap_err();
    assert!(
        matches!(err, WireError::Codec(CodecError::Invalid(_))),
        "{err}"
    );
}

#[test]
fn send_refuses_oversized_empty_and_fd_heavy_frames() {
    let (a, _b) = seqpacket_pair();
    let (f1, f2) = (some_file(), some_file());
    assert!(matches!(
        wire::send(a.as_fd(), &[0; MAX_FRAME + 1], &[]),
        Err(WireError::FrameTooLarge { len }) if len == MAX_FRAME + 1
    ));
    assert!(matches!(
        wire::send(a.as_fd(), &[], &[]),
        Err(WireError::EmptyFrame)
    ));
    assert!(matches!(
        wire::send(a.as_fd(), b"x", &[f1.as_fd(), f2.as_fd()]),
        Err(WireError::TooManyFds { count: 2 })
    ));
}

#[test]
fn send_message_refuses_oversized_message() {
    let (a, _b) = seqpacket_pair();
    let huge = Request::UnregisterMachine {
        machine: "a".repeat(MAX_FRAME),
    };
    assert!(matches!(
        wire::send_message(a.as_fd(), &huge, &[]),
        Err(WireError::Codec(CodecError::TooLarge))
    ));
}

#[test]
fn send_to_closed_peer_is_an_error_not_a_signal() {
    let (a, b) = seqpacket_pair();
    drop(b);
    let err = wire::send(a.as_fd(), b"x", &[]).unwrap_err();
    assert!(
        matches!(&err, WireError::Io(e) if e.raw_os_error() == Some(libc::EPIPE)),
        "{err}"
    );
}

/// The effective id (second field) of a `Uid:`/`Gid:` line of /proc/self/status.
fn effective_id(status: &str, key: &str) -> u32 {
    let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn peer_credentials_are_ours() {
    let (a, _b) = seqpacket_pair();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let expected = (
        effective_id(&status, "Uid:"),
        effective_id(&status, "Gid:"),
        i32::try_from(std::process::id()).unwrap(),
    );
    assert_eq!(wire::peer_credentials(a.as_fd()).unwrap(), expected);
}

#[test]
fn peer_pidfd_is_ours() {
    let (a, _b) = seqpacket_pair();
    let pidfd = wire::peer_pidfd(a.as_fd()).unwrap();
    let fdinfo =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
    let pid = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .expect("pidfd fdinfo has a Pid: line")
        .trim();
    assert_eq!(pid, std::process::id().to_string());
}

#[test]
fn errors_display_clearly() {
    assert_eq!(WireError::Closed.to_string(), "peer closed the connection");
    assert_eq!(
        WireError::TooManyFds { count: 2 }.to_string(),
        "2 fds in one message, at most 1 allowed"
    );
    assert_eq!(
        WireError::Codec(CodecError::TooLarge).to_string(),
        "bad message: message larger than 4096 bytes"
    );
}
