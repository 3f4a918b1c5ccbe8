//! The crate's only unsafe code: two socket calls nix 0.29 cannot make for
//! us safely.
//!
//! - `recvmsg`: nix's `RecvMsg::cmsgs()` refuses to parse anything once
//!   `MSG_CTRUNC` is set, which would leak the fds that did arrive. Here
//!   every fd the kernel installed becomes an `OwnedFd` before the flags are
//!   even looked at.
//! - `getsockopt(SO_PEERPIDFD)`: nix has no wrapper for it.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libc::{c_int, c_uint};

use crate::MAX_FDS;

/// fds the control buffer has room for. The slack lets a peer that sends a
/// few too many be reported as such rather than as a truncation.
const FD_ROOM: usize = MAX_FDS + 3;
// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const CMSG_BUF_LEN: usize =
    unsafe { libc::CMSG_SPACE((FD_ROOM * size_of::<c_int>()) as c_uint) } as usize;
/// Linux ≥ 6.5; not every libc release exports it.
const SO_PEERPIDFD: c_int = 77;

/// Control message buffer, aligned for `cmsghdr` (size_t-aligned).
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

pub(crate) struct RecvMsg {
    /// Bytes of the frame that fit into the buffer.
    pub len: usize,
    /// Every fd that arrived, whatever the flags say.
    pub fds: Vec<OwnedFd>,
    /// MSG_TRUNC: the frame was larger than the buffer.
    pub truncated: bool,
    /// MSG_CTRUNC: some control data (fds) did not fit and was discarded.
    pub control_truncated: bool,
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC` into `buf`, retried on EINTR.
pub(crate) fn recvmsg(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<RecvMsg> {
    let mut cmsg_buf = CmsgBuf([0; CMSG_BUF_LEN]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data (integers and pointers, some of them
    // padding on musl); all-zero is a valid "no name, no iov, no control".
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BUF_LEN as _;

    let len = loop {
        // SAFETY: `msg` points to `iov` (covering all of `buf`) and to
        // `cmsg_buf` (msg_controllen bytes); all three are live and
        // exclusively borrowed for the duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if let Ok(n) = usize::try_from(n) {
            break n;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };

    let mut fds = Vec::new();
    let control_start = cmsg_buf.0.as_ptr() as usize;
    let control_len = msg.msg_controllen as usize;
    // SAFETY: `msg` was filled in by a successful recvmsg; CMSG_FIRSTHDR
    // returns null or a header inside msg_control[..msg_controllen].
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null cmsg from CMSG_FIRSTHDR/CMSG_NXTHDR points to a
        // whole, aligned header inside `cmsg_buf`, which the kernel wrote.
        let (level, kind, cmsg_len) = unsafe {
            (
                (*cmsg).cmsg_level,
                (*cmsg).cmsg_type,
                (*cmsg).cmsg_len as usize,
            )
        };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // Never read past the end of what the kernel wrote, whatever
            // cmsg_len claims.
            let offset = (cmsg as usize).saturating_sub(control_start);
            let available = control_len.saturating_sub(offset);
            // SAFETY: CMSG_LEN is pure arithmetic on its argument.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = cmsg_len.min(available).saturating_sub(header_len) / size_of::<c_int>();
            // SAFETY: CMSG_DATA points just past the header, inside the buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<c_int>();
            for i in 0..count {
                // SAFETY: i < count, so the int lies inside the buffer (see
                // `available`); CMSG_DATA is not int-aligned in general,
                // hence read_unaligned.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: SCM_RIGHTS just installed `raw` in our fd table for
                // this message; nothing else owns or has seen it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; CMSG_NXTHDR bounds-checks against
        // msg_controllen and returns null at the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }

    Ok(RecvMsg {
        len,
        fds,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// `getsockopt(SOL_SOCKET, SO_PEERPIDFD)`: a pidfd of the peer as of
/// `connect`/`socketpair`, immune to pid reuse.
pub(crate) fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut fd: c_int = -1;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are live locals; `len` holds the size of `fd`,
    // so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_PEERPIDFD returned no fd",
        ));
    }
    // SAFETY: the kernel just installed `fd` (O_CLOEXEC) in our table for
    // this call; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
