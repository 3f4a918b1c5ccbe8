//! No fd survives a rejected frame. Counting /proc/self/fd is only exact
//! with nothing else running, so this binary holds a single test.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use vmspawn_proto::wire::{self, WireError};
use vmspawn_proto::{MAX_FRAME, Request};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn raw_send(sock: BorrowedFd<'_>, frame: &[u8], fds: &[RawFd]) {
    let rights = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(frame)],
        &rights,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

#[test]
fn rejected_frames_leak_no_fds() {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let file = File::open("/dev/null").unwrap();
    let fd = file.as_raw_fd();
    let before = open_fds();

    raw_send(a.as_fd(), b"x", &[fd; 2]);
    assert!(matches!(
        wire::recv(b.as_fd(), &mut [0; MAX_FRAME]),
        Err(WireError::TooManyFds { count: 2 })
    ));

    raw_send(a.as_fd(), b"x", &[fd; 200]);
    assert!(matches!(
        wire::recv(b.as_fd(), &mut [0; MAX_FRAME]),
        Err(WireError::ControlTruncated)
    ));

    raw_send(a.as_fd(), &[0; MAX_FRAME + 1], &[fd]);
    assert!(matches!(
        wire::recv(b.as_fd(), &mut [0; MAX_FRAME]),
        Err(WireError::Truncated)
    ));

    raw_send(a.as_fd(), &[], &[fd]);
    assert!(matches!(
        wire::recv(b.as_fd(), &mut [0; MAX_FRAME]),
        Err(WireError::Closed)
    ));

    raw_send(a.as_fd(), &99u32.to_le_bytes(), &[fd]);
    assert!(matches!(
        wire::recv_message::<Request>(b.as_fd()),
        Err(WireError::Codec(_))
    ));

    assert_eq!(open_fds(), before, "a received fd was leaked");

    // The accepted path hands the fd over, and dropping it closes it.
    raw_send(a.as_fd(), &wire_hello(), &[fd]);
    let (_, fds) = wire::recv_message::<Request>(b.as_fd()).unwrap();
    assert_eq!(open_fds(), before + 1);
    drop(fds);
    assert_eq!(open_fds(), before);
}

fn wire_hello() -> Vec<u8> {
    vmspawn_proto::codec::encode(&Request::Hello {
        version: 1,
        interactive_auth: false,
    })
    .unwrap()
}
