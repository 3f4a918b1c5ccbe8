//! Registration with systemd-machined (`--register=`). Root talks to the system machined's
//! varlink socket; a regular user uses their own machined when the host runs one, and
//! otherwise the privileged helper, which registers with the system machined on their
//! behalf after checking that the leader is their own child, running a QEMU it executed.
//!
//! vmspawn 259 registers by default and fails if it cannot. Here an unset `--register=` means
//! "when a machined can be reached" (259's later `auto`), so a host without machined still
//! boots VMs; `--register=yes` fails with a clear error instead.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::RuntimeScope;
use crate::error::{Error, Result};
use crate::helper::{self, HelperClient};

/// The system machined's varlink socket (systemd 256 and later).
pub const SYSTEM_VARLINK: &str = "/run/systemd/machine/io.systemd.Machine";
/// The service name we register under.
pub const SERVICE: &str = "vmspawn";
/// Longest varlink reply we accept.
const MAX_REPLY: usize = 64 * 1024;

/// Which machined vmspawn registers with, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registrar {
    /// A machined's varlink socket: the user's own, or (as root) the system's.
    Varlink(PathBuf),
    /// The system machined, through vmspawn-privhelper.
    Helper,
}

/// The user machined's varlink socket, under `$XDG_RUNTIME_DIR`.
pub fn user_varlink(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let runtime = var("XDG_RUNTIME_DIR").filter(|v| !v.is_empty())?;
    Some(Path::new(&runtime).join("systemd/machine/io.systemd.Machine"))
}

/// The scope a VM is registered in: `--system`/`--user`, else what the UID says (root:
/// system).
pub fn effective_scope(scope: Option<RuntimeScope>, is_root: bool) -> RuntimeScope {
    scope.unwrap_or(if is_root {
        RuntimeScope::System
    } else {
        RuntimeScope::User
    })
}

/// Picks the machined to register with. Left to the UID (`scope` None), root uses the system
/// machined's varlink socket, or the helper service; a regular user their own machined, or
/// the helper. `--user` means only the caller's own machined (never the helper); `--system`
/// only the system machined (directly as root, through the helper otherwise). None if there
/// is nothing to register with.
pub fn choose(
    var: &dyn Fn(&str) -> Option<OsString>,
    is_root: bool,
    scope: Option<RuntimeScope>,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<Registrar> {
    let (socket, binary) = helper::locations(var);
    let own = || {
        user_varlink(var)
            .filter(|p| exists(p))
            .map(Registrar::Varlink)
    };
    match (effective_scope(scope, is_root), is_root) {
        (RuntimeScope::User, _) if scope.is_some() => own(),
        (RuntimeScope::System, true) => {
            if exists(Path::new(SYSTEM_VARLINK)) {
                return Some(Registrar::Varlink(PathBuf::from(SYSTEM_VARLINK)));
            }
            // A setuid helper does nothing for root; only the service can.
            exists(&socket).then_some(Registrar::Helper)
        }
        (RuntimeScope::System, false) => {
            (exists(&socket) || exists(&binary)).then_some(Registrar::Helper)
        }
        (RuntimeScope::User, _) => {
            own().or_else(|| (exists(&socket) || exists(&binary)).then_some(Registrar::Helper))
        }
    }
}

/// What `--register=yes` needs, for the error when nothing is there.
pub fn nothing_to_register_with(
    is_root: bool,
    scope: Option<RuntimeScope>,
    var: &dyn Fn(&str) -> Option<OsString>,
) -> Error {
    let (socket, binary) = helper::locations(var);
    let own = || {
        user_varlink(var).map_or_else(
            || "$XDG_RUNTIME_DIR is not set".to_string(),
            |p| format!("{} does not exist", p.display()),
        )
    };
    let hint = match (effective_scope(scope, is_root), is_root) {
        (RuntimeScope::User, _) if scope.is_some() => format!(
            "--user registers only with your own machined, and there is none ({}; vmspawn-privhelper is not \
             used with --user). Use --system to register with the system machined, or --register=no",
            own()
        ),
        (RuntimeScope::System, true) => format!(
            "systemd-machined's varlink socket {SYSTEM_VARLINK} does not exist (machined is not running, or \
             older than systemd 256) and no vmspawn-privhelper service listens on {}",
            socket.display()
        ),
        (RuntimeScope::System, false) => format!(
            "--system registers with the system machined, which a regular user reaches only through \
             vmspawn-privhelper, and there is none (service socket {}, setuid binary {})",
            socket.display(),
            binary.display()
        ),
        (RuntimeScope::User, _) => format!(
            "there is no machined of your own ({}) and no vmspawn-privhelper (service socket {}, setuid \
             binary {})",
            own(),
            socket.display(),
            binary.display()
        ),
    };
    Error::new(format!(
        "--register=yes: cannot register the VM with systemd-machined: {hint}. Use --register=no to run \
         without registration."
    ))
}

/// A varlink connection (NUL-terminated JSON messages on a stream socket).
pub struct Varlink {
    stream: UnixStream,
    path: PathBuf,
}

impl Varlink {
    pub fn connect(path: &Path) -> Result<Varlink> {
        let stream = UnixStream::connect(path).map_err(|e| {
            Error::io(
                format!(
                    "Failed to connect to systemd-machined at {}",
                    path.display()
                ),
                e,
            )
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Varlink {
            stream,
            path: path.to_path_buf(),
        })
    }

    /// Calls `method`; returns the reply's parameters, or the error name and parameters.
    pub fn call(
        &mut self,
        method: &str,
        parameters: serde_json::Value,
    ) -> Result<std::result::Result<serde_json::Value, String>> {
        let mut message = serde_json::to_vec(&serde_json::json!({
            "method": method,
            "parameters": parameters,
        }))
        .map_err(|e| Error::new(format!("Failed to encode a varlink call: {e}")))?;
        message.push(0);
        let failed = |e: std::io::Error| {
            Error::io(
                format!("Varlink call {method} to {} failed", self.path.display()),
                e,
            )
        };
        self.stream.write_all(&message).map_err(failed)?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = self.stream.read(&mut byte).map_err(failed)?;
            if n == 0 {
                return Err(Error::new(format!(
                    "{} closed the connection during {method}",
                    self.path.display()
                )));
            }
            if byte[0] == 0 {
                break;
            }
            if reply.len() >= MAX_REPLY {
                return Err(Error::new(format!(
                    "{} sent an oversized reply to {method}",
                    self.path.display()
                )));
            }
            reply.push(byte[0]);
        }
        let reply: serde_json::Value = serde_json::from_slice(&reply).map_err(|e| {
            Error::new(format!(
                "{} sent an invalid reply to {method}: {e}",
                self.path.display()
            ))
        })?;
        let parameters = reply
            .get("parameters")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let empty = parameters.as_object().is_none_or(|p| p.is_empty());
        match reply.get("error").and_then(|e| e.as_str()) {
            Some(error) if empty => Ok(Err(error.to_string())),
            Some(error) => Ok(Err(format!("{error} {parameters}"))),
            None => Ok(Ok(parameters)),
        }
    }
}

/// A connection that registers, and later unregisters.
pub enum Connection {
    Varlink(Varlink),
    Helper(HelperClient),
}

/// What to register (from the plan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub machine: String,
    pub uuid: Option<[u8; 16]>,
    /// Ask machined to create a scope unit for the VM (varlink only; not with --keep-unit).
    pub allocate_unit: bool,
    pub interactive_auth: bool,
    /// `--directory=`: the VM's root directory (`rootDirectory`; not sent through the
    /// helper, whose protocol has no such field).
    pub root_directory: Option<std::path::PathBuf>,
    /// The guest's vsock CID (`vSockCid`; varlink only).
    pub vsock_cid: Option<u32>,
    /// (`sshAddress`, `sshPrivateKeyPath`): where the guest's sshd is reached and the key it
    /// accepts (varlink only).
    pub ssh: Option<(String, std::path::PathBuf)>,
}

/// A pidfd of our child `pid`.
pub fn pidfd_of_child(pid: u32) -> Result<OwnedFd> {
    crate::sys::pidfd_open(pid).map_err(|e| Error::io("Failed to open a pidfd of QEMU", e))
}

impl Connection {
    /// Registers the VM whose leader is our child `leader_pid`.
    pub fn register(&mut self, request: &Request, leader_pid: u32) -> Result<()> {
        match self {
            Connection::Varlink(varlink) => {
                let mut parameters = serde_json::json!({
                    "name": request.machine,
                    "service": SERVICE,
                    "class": "vm",
                    "leader": leader_pid,
                    "allocateUnit": request.allocate_unit,
                    "allowInteractiveAuthentication": request.interactive_auth,
                });
                if let Some(uuid) = request.uuid {
                    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
                    parameters["id"] = serde_json::Value::String(hex);
                }
                if let Some(cid) = request.vsock_cid {
                    parameters["vSockCid"] = serde_json::Value::from(cid);
                }
                if let Some((address, key)) = &request.ssh {
                    parameters["sshAddress"] = serde_json::Value::String(address.clone());
                    parameters["sshPrivateKeyPath"] =
                        serde_json::Value::String(key.to_string_lossy().into_owned());
                }
                if let Some(dir) = &request.root_directory {
                    parameters["rootDirectory"] =
                        serde_json::Value::String(dir.to_string_lossy().into_owned());
                }
                varlink
                    .call("io.systemd.Machine.Register", parameters)?
                    .map(drop)
                    .map_err(|e| Error::new(format!("Failed to register machine: {e}")))
            }
            Connection::Helper(client) => {
                let pidfd = pidfd_of_child(leader_pid)?;
                client
                    .register_machine(&request.machine, request.uuid, pidfd.as_fd())
                    .map_err(|e| Error::new(format!("Failed to register machine: {}", e.message)))
            }
        }
    }

    pub fn unregister(&mut self, machine: &str) -> Result<()> {
        match self {
            Connection::Varlink(varlink) => varlink
                .call(
                    "io.systemd.Machine.Unregister",
                    serde_json::json!({ "name": machine }),
                )?
                .map(drop)
                .map_err(|e| Error::new(format!("Failed to unregister machine: {e}"))),
            Connection::Helper(client) => client.unregister_machine(machine),
        }
    }

    /// The machined this connection reaches, for messages.
    pub fn describe(&self) -> String {
        match self {
            Connection::Varlink(v) => format!("systemd-machined at {}", v.path.display()),
            Connection::Helper(_) => {
                "the system's systemd-machined, through vmspawn-privhelper".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn user_machined_comes_before_the_helper() {
        let var = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        let all = |_: &Path| true;
        assert_eq!(
            choose(&var, false, None, &all),
            Some(Registrar::Varlink(PathBuf::from(
                "/run/user/1000/systemd/machine/io.systemd.Machine"
            )))
        );
        let no_user = |p: &Path| !p.starts_with("/run/user");
        assert_eq!(choose(&var, false, None, &no_user), Some(Registrar::Helper));
        assert_eq!(choose(&var, false, None, &|_: &Path| false), None);
    }

    #[test]
    fn root_uses_the_system_machined_or_the_helper_service_only() {
        let var = env(&[]);
        assert_eq!(
            choose(&var, true, None, &|_: &Path| true),
            Some(Registrar::Varlink(PathBuf::from(SYSTEM_VARLINK)))
        );
        let only_setuid = |p: &Path| p == Path::new(helper::DEFAULT_SETUID_HELPER);
        assert_eq!(choose(&var, true, None, &only_setuid), None);
        let only_service = |p: &Path| p == Path::new(helper::DEFAULT_SOCKET);
        assert_eq!(
            choose(&var, true, None, &only_service),
            Some(Registrar::Helper)
        );
    }

    #[test]
    fn system_and_user_scopes() {
        use RuntimeScope::{System, User};
        let var = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        let user = Registrar::Varlink(PathBuf::from(
            "/run/user/1000/systemd/machine/io.systemd.Machine",
        ));
        let all = |_: &Path| true;
        let no_user = |p: &Path| !p.starts_with("/run/user");
        // --user: only the caller's own machined, never the helper (root's too).
        assert_eq!(choose(&var, false, Some(User), &all), Some(user.clone()));
        assert_eq!(choose(&var, false, Some(User), &no_user), None);
        assert_eq!(choose(&var, true, Some(User), &all), Some(user));
        assert_eq!(choose(&var, true, Some(User), &no_user), None);
        // --system: the system machined; a regular user's way there is the helper.
        assert_eq!(
            choose(&var, false, Some(System), &all),
            Some(Registrar::Helper)
        );
        assert_eq!(choose(&var, false, Some(System), &|_: &Path| false), None);
        assert_eq!(
            choose(&var, true, Some(System), &all),
            Some(Registrar::Varlink(PathBuf::from(SYSTEM_VARLINK)))
        );
        let e = nothing_to_register_with(false, Some(User), &var).to_string();
        assert!(
            e.contains("--user registers only with your own machined"),
            "{e}"
        );
        let e = nothing_to_register_with(false, Some(System), &var).to_string();
        assert!(e.contains("only through vmspawn-privhelper"), "{e}");
    }
}
