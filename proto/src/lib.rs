//! The wire protocol between the unprivileged launcher and the privileged
//! helper `vmspawn-privhelper`.
//!
//! One bincode-encoded message per `SOCK_SEQPACKET` frame of at most
//! [`MAX_FRAME`] bytes, fds passed with `SCM_RIGHTS`. Messages carry no
//! uid, gid or pid: the helper learns who is calling only from the kernel
//! ([`wire::peer_credentials`], [`wire::peer_pidfd`]).
//!
//! The helper decodes untrusted input with this crate, so nothing here
//! panics on input: every failure is a typed error.

#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod codec;
#[allow(unsafe_code)]
mod sys;
mod validate;
pub mod wire;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use validate::{validate, validate_ifname, validate_machine_name};

pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side sends or accepts, in bytes.
pub const MAX_FRAME: usize = 4096;
/// Most fds any message carries.
pub const MAX_FDS: usize = 1;

/// Launcher → helper.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// First message on every connection. `interactive_auth`: polkit may ask the user to
    /// authenticate (vmspawn without `--no-ask-password`, on a terminal).
    Hello {
        version: u32,
        interactive_auth: bool,
    },
    /// A TAP device for VM `machine`, optionally attached to `bridge`.
    /// Reply: Response::Tap + the TAP fd.
    CreateTap {
        machine: String,
        bridge: Option<String>,
    },
    /// Reply: Response::Device + an fd of /dev/kvm.
    OpenKvm,
    /// An fd of /dev/vhost-vsock for VM `machine`, its guest CID already set
    /// by the helper from the caller's CID range: `cid`, or one the helper
    /// picks. Reply: Response::VsockDevice + the fd.
    OpenVhostVsock { machine: String, cid: Option<u32> },
    /// Register VM `machine` (class `vm`) with the system's systemd-machined;
    /// the request carries exactly one fd: a pidfd of the leader, which must
    /// be the caller's own child (QEMU). The registration ends with the
    /// connection at the latest. Reply: Response::Registered.
    RegisterMachine {
        machine: String,
        uuid: Option<[u8; 16]>,
    },
    /// Ends a registration made on this connection. Reply: Response::Unregistered.
    UnregisterMachine { machine: String },
}

/// Helper → launcher.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Hello {
        version: u32,
    },
    Tap {
        ifname: String,
    },
    Device,
    Registered,
    Unregistered,
    Error(ProtoError),
    /// The guest CID set on the vhost-vsock fd that comes with this answer.
    VsockDevice {
        cid: u32,
    },
}

/// An error the helper reports to the launcher.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    VersionMismatch,
    InvalidRequest,
    Denied,
    QuotaExceeded,
    Unsupported,
    Failed,
}

impl ProtoError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::VersionMismatch => "protocol version mismatch",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::Denied => "permission denied",
            ErrorKind::QuotaExceeded => "quota exceeded",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Failed => "failed",
        })
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ProtoError {}
