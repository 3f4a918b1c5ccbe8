//! The client side of vmspawn-privhelper: privileges a regular user lacks (a TAP device, an
//! fd of /dev/kvm) come from the helper, before the launcher confines itself. The service
//! socket is tried first, then the setuid binary.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use vmspawn_proto::{PROTOCOL_VERSION, Request, Response, wire};

use crate::error::{Error, Result};
use crate::spawn;

pub const DEFAULT_SOCKET: &str = "/run/vmspawn/privhelper.socket";
pub const DEFAULT_SETUID_HELPER: &str = "/usr/libexec/vmspawn/vmspawn-privhelper";

/// The fd number the setuid helper gets its end of the socketpair on.
const SETUID_SERVE_FD: i32 = 3;

/// Where the helper service socket and the setuid helper are: the defaults, or
/// `$VMSPAWN_PRIVHELPER_SOCKET` / `$VMSPAWN_PRIVHELPER` (the launcher is unprivileged, so these
/// only choose which helper it talks to).
pub fn locations(var: &dyn Fn(&str) -> Option<OsString>) -> (PathBuf, PathBuf) {
    let path = |name: &str, default: &str| {
        var(name)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    (
        path("VMSPAWN_PRIVHELPER_SOCKET", DEFAULT_SOCKET),
        path("VMSPAWN_PRIVHELPER", DEFAULT_SETUID_HELPER),
    )
}

/// Whether a helper is installed at all (service socket or setuid binary).
pub fn installed(var: &dyn Fn(&str) -> Option<OsString>) -> bool {
    let (socket, binary) = locations(var);
    socket.exists() || binary.exists()
}

pub struct HelperClient {
    sock: OwnedFd,
    child: Option<Child>,
    via: String,
    /// `$VMSPAWN_PRIVHELPER_BRIDGE`: the bridge TAP devices are to join (the helper's policy
    /// decides whether they may).
    bridge: Option<String>,
}

fn install_hint(socket: &Path, binary: &Path) -> String {
    format!(
        "no helper service listens on {} and there is no setuid helper at {}. Ask an administrator \
         to install vmspawn-privhelper (see the README, \"Installing the privileged helper\")",
        socket.display(),
        binary.display()
    )
}

/// Connects to the helper service's socket.
fn connect_service(path: &Path) -> std::result::Result<OwnedFd, nix::errno::Errno> {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let address = UnixAddr::new(path)?;
    socket::connect(sock.as_raw_fd(), &address)?;
    Ok(sock)
}

impl HelperClient {
    /// Connects to the helper service, or starts the setuid helper; `why` names the feature
    /// that needs it, for error messages. `interactive_auth`: polkit may ask the user to
    /// authenticate.
    pub fn connect(
        var: &dyn Fn(&str) -> Option<OsString>,
        why: &str,
        interactive_auth: bool,
    ) -> Result<Self> {
        let (socket_path, binary) = locations(var);
        let bridge = var("VMSPAWN_PRIVHELPER_BRIDGE")
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned());
        let setuid_installed = std::fs::metadata(&binary)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o4000 != 0);
        let service = if socket_path.exists() {
            match connect_service(&socket_path) {
                Ok(sock) => Some(sock),
                // A socket nobody listens on (the service is stopped): the setuid helper may
                // still serve.
                Err(nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::ENOENT)
                    if setuid_installed =>
                {
                    None
                }
                Err(e) => {
                    return Err(Error::new(format!(
                        "{why} needs the privileged helper, but connecting to {} failed: {e}. Is the \
                         vmspawn-privhelper service running?",
                        socket_path.display()
                    )));
                }
            }
        } else {
            None
        };
        let mut client = if let Some(sock) = service {
            HelperClient {
                sock,
                child: None,
                via: format!("the helper service at {}", socket_path.display()),
                bridge,
            }
        } else if setuid_installed {
            let (ours, theirs) = socket::socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| {
                Error::io(
                    "Failed to create a socket pair for the privileged helper",
                    e,
                )
            })?;
            let mut cmd = Command::new(&binary);
            cmd.arg("--serve-fd")
                .arg(SETUID_SERVE_FD.to_string())
                .env_clear()
                .stdin(Stdio::null());
            let child = spawn::launch(
                &mut cmd,
                spawn::Launch {
                    fds: vec![(theirs, SETUID_SERVE_FD)],
                    own_process_group: false,
                    death_signal: 0,
                    jail: None,
                    exec: None,
                },
            )
            .map_err(|e| {
                Error::io(
                    format!("Failed to start the setuid helper {}", binary.display()),
                    e,
                )
            })?;
            HelperClient {
                sock: ours,
                child: Some(child),
                via: format!("the setuid helper {}", binary.display()),
                bridge,
            }
        } else {
            return Err(Error::new(format!(
                "{why} needs the privileged helper, but {}.",
                install_hint(&socket_path, &binary)
            )));
        };
        match client.call(&Request::Hello {
            version: PROTOCOL_VERSION,
            interactive_auth,
        })? {
            (Response::Hello { .. }, _) => Ok(client),
            (other, _) => Err(client.refusal("say hello", other)),
        }
    }

    fn call(&mut self, request: &Request) -> Result<(Response, Vec<OwnedFd>)> {
        self.call_with_fd(request, None)
    }

    fn call_with_fd(
        &mut self,
        request: &Request,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        wire::send_message(self.sock.as_fd(), request, &fds)
            .map_err(|e| Error::new(format!("Failed to send a request to {}: {e}", self.via)))?;
        wire::recv_message::<Response>(self.sock.as_fd())
            .map_err(|e| Error::new(format!("Failed to read the answer of {}: {e}", self.via)))
    }

    fn refusal(&self, what: &str, response: Response) -> Error {
        match response {
            Response::Error(e) => Error::new(format!(
                "The privileged helper refused to {what}: {}",
                e.message
            )),
            other => Error::new(format!(
                "Unexpected answer from {} to the request to {what}: {other:?}",
                self.via
            )),
        }
    }

    fn one_fd(&self, what: &str, mut fds: Vec<OwnedFd>) -> Result<OwnedFd> {
        match (fds.pop(), fds.is_empty()) {
            (Some(fd), true) => Ok(fd),
            _ => Err(Error::new(format!(
                "{} answered the request to {what} without exactly one fd",
                self.via
            ))),
        }
    }

    /// A TAP device for `machine`, owned by us (on the bridge of `$VMSPAWN_PRIVHELPER_BRIDGE`
    /// if set); returns its name and fd.
    pub fn create_tap(&mut self, machine: &str) -> Result<(String, OwnedFd)> {
        let what = "create a TAP device";
        match self.call(&Request::CreateTap {
            machine: machine.to_string(),
            bridge: self.bridge.clone(),
        })? {
            (Response::Tap { ifname }, fds) => Ok((ifname, self.one_fd(what, fds)?)),
            (other, _) => Err(self.refusal(what, other)),
        }
    }

    /// Registers `machine` with the system's machined, led by our child `leader` (a pidfd).
    /// The registration lasts until [`Self::unregister_machine`] or until this connection
    /// closes.
    pub fn register_machine(
        &mut self,
        machine: &str,
        uuid: Option<[u8; 16]>,
        leader: BorrowedFd<'_>,
    ) -> std::result::Result<(), vmspawn_proto::ProtoError> {
        let request = Request::RegisterMachine {
            machine: machine.to_string(),
            uuid,
        };
        let failed = |message: String| {
            vmspawn_proto::ProtoError::new(vmspawn_proto::ErrorKind::Failed, message)
        };
        match self.call_with_fd(&request, Some(leader)) {
            Ok((Response::Registered, _)) => Ok(()),
            Ok((Response::Error(e), _)) => Err(e),
            Ok((other, _)) => Err(failed(format!(
                "unexpected answer from {}: {other:?}",
                self.via
            ))),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    pub fn unregister_machine(&mut self, machine: &str) -> Result<()> {
        let what = "unregister the machine";
        match self.call(&Request::UnregisterMachine {
            machine: machine.to_string(),
        })? {
            (Response::Unregistered, _) => Ok(()),
            (other, _) => Err(self.refusal(what, other)),
        }
    }

    /// An fd of /dev/vhost-vsock with the guest CID set: `cid`, or one the helper picks from
    /// the policy's range. Returns the CID and the fd.
    pub fn open_vhost_vsock(&mut self, machine: &str, cid: Option<u32>) -> Result<(u32, OwnedFd)> {
        let what = "open /dev/vhost-vsock";
        match self.call(&Request::OpenVhostVsock {
            machine: machine.to_string(),
            cid,
        })? {
            (Response::VsockDevice { cid }, fds) => Ok((cid, self.one_fd(what, fds)?)),
            (other, _) => Err(self.refusal(what, other)),
        }
    }

    /// An fd of /dev/kvm.
    pub fn open_kvm(&mut self) -> Result<OwnedFd> {
        let what = "open /dev/kvm";
        match self.call(&Request::OpenKvm)? {
            (Response::Device, fds) => self.one_fd(what, fds),
            (other, _) => Err(self.refusal(what, other)),
        }
    }
}

impl Drop for HelperClient {
    fn drop(&mut self) {
        // Closing our end ends the setuid helper; reap it.
        let _ = socket::shutdown(self.sock.as_raw_fd(), socket::Shutdown::Both);
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }
}
