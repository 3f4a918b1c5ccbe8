//! Framing and fd passing over a `SOCK_SEQPACKET` Unix socket.
//!
//! SEQPACKET keeps message boundaries, so one `sendmsg` is one frame and
//! the fds that came with it belong to exactly that frame. Frames are at
//! most [`MAX_FRAME`] bytes and carry at most [`MAX_FDS`] fds; anything
//! else is an error and every fd that did arrive is closed.

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, MsgFlags, sockopt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::{MAX_FDS, MAX_FRAME, sys};

/// One received frame: `buf[..len]` plus the fds that came with it.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
}

#[derive(Debug)]
pub enum WireError {
    /// The socket call failed.
    Io(io::Error),
    /// Refused to send a frame larger than [`MAX_FRAME`].
    FrameTooLarge { len: usize },
    /// Refused to send an empty frame: the peer would read it as a hang-up.
    EmptyFrame,
    /// More than [`MAX_FDS`] fds, to send or received (those were closed).
    TooManyFds { count: usize },
    /// The kernel took only part of the frame (not a SEQPACKET socket?).
    ShortSend { sent: usize, len: usize },
    /// MSG_TRUNC: the received frame was larger than [`MAX_FRAME`].
    Truncated,
    /// MSG_CTRUNC: the peer sent more fds than fit; all were closed.
    ControlTruncated,
    /// The peer closed the connection (a zero-length read).
    Closed,
    /// The frame did not hold a valid message.
    Codec(CodecError),
}

/// Sends `frame` and `fds` with one `sendmsg`, all fds in one SCM_RIGHTS.
pub fn send(sock: BorrowedFd<'_>, frame: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), WireError> {
    if frame.is_empty() {
        return Err(WireError::EmptyFrame);
    }
    if frame.len() > MAX_FRAME {
        return Err(WireError::FrameTooLarge { len: frame.len() });
    }
    if fds.len() > MAX_FDS {
        return Err(WireError::TooManyFds { count: fds.len() });
    }
    let raw_fds: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw_fds)];
    let cmsgs: &[ControlMessage<'_>] = if raw_fds.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(frame)];
    let sent = loop {
        // MSG_NOSIGNAL: a vanished peer is an EPIPE error, not a SIGPIPE.
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            result => break result?,
        }
    };
    if sent != frame.len() {
        return Err(WireError::ShortSend {
            sent,
            len: frame.len(),
        });
    }
    Ok(())
}

/// Receives one frame into `buf`, with its fds (close-on-exec).
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8; MAX_FRAME]) -> Result<Received, WireError> {
    let msg = sys::recvmsg(sock, buf)?;
    // Every early return drops `msg.fds`, closing whatever fds arrived.
    if msg.control_truncated {
        return Err(WireError::ControlTruncated);
    }
    if msg.truncated {
        return Err(WireError::Truncated);
    }
    if msg.len == 0 {
        return Err(WireError::Closed);
    }
    if msg.fds.len() > MAX_FDS {
        return Err(WireError::TooManyFds {
            count: msg.fds.len(),
        });
    }
    Ok(Received {
        len: msg.len,
        fds: msg.fds,
    })
}

/// Encodes `msg` and sends it with `fds` as one frame.
pub fn send_message<T: Serialize>(
    sock: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    send(sock, &codec::encode(msg)?, fds)
}

/// Receives and decodes one message. The caller must still check the
/// number of fds against what the message type expects.
pub fn recv_message<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut buf = [0; MAX_FRAME];
    let received = recv(sock, &mut buf)?;
    let frame = buf.get(..received.len).ok_or(WireError::Truncated)?;
    Ok((codec::decode(frame)?, received.fds))
}

/// `(uid, gid, pid)` of the peer, from SO_PEERCRED, as of
/// `connect`/`socketpair`. The uid is trustworthy; the pid may since have
/// been reused, so use [`peer_pidfd`] to act on the process.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32, i32)> {
    let cred = socket::getsockopt(&sock, sockopt::PeerCredentials)?;
    Ok((cred.uid(), cred.gid(), cred.pid()))
}

/// A pidfd of the peer, from SO_PEERPIDFD (Linux ≥ 6.5).
pub fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    sys::peer_pidfd(sock)
}

impl From<io::Error> for WireError {
    fn from(err: io::Error) -> Self {
        WireError::Io(err)
    }
}

impl From<Errno> for WireError {
    fn from(errno: Errno) -> Self {
        WireError::Io(errno.into())
    }
}

impl From<CodecError> for WireError {
    fn from(err: CodecError) -> Self {
        WireError::Codec(err)
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(err) => write!(f, "socket error: {err}"),
            WireError::FrameTooLarge { len } => {
                write!(f, "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")
            }
            WireError::EmptyFrame => f.write_str("refusing to send an empty frame"),
            WireError::TooManyFds { count } => {
                write!(f, "{count} fds in one message, at most {MAX_FDS} allowed")
            }
            WireError::ShortSend { sent, len } => write!(
                f,
                "sent only {sent} of {len} bytes (is the socket SOCK_SEQPACKET?)"
            ),
            WireError::Truncated => {
                write!(f, "received a frame larger than {MAX_FRAME} bytes")
            }
            WireError::ControlTruncated => {
                f.write_str("peer sent more fds than fit in the control buffer")
            }
            WireError::Closed => f.write_str("peer closed the connection"),
            WireError::Codec(err) => write!(f, "bad message: {err}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(err) => Some(err),
            WireError::Codec(err) => Some(err),
            _ => None,
        }
    }
}
