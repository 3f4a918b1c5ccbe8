//! polkit, for policy rules that ask for it: CheckAuthorization on the system bus with the
//! caller as a `unix-process` subject: pid and start time as the kernel reported them when the
//! caller connected, uid as a signed 32-bit integer (polkit ignores a wrongly typed uid and
//! falls back to a racy lookup). polkit < 124 has no pidfd subjects, so none is sent.

use std::collections::HashMap;

use zbus::zvariant::Value;

pub struct Polkit {
    connection: zbus::blocking::Connection,
}

/// How long a call to polkit or machined may take (a user typing a password for polkit
/// included): a connection's thread never waits longer.
const BUS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects to the system bus at `address` (polkit and machined both live there).
pub fn connect_system_bus(address: &str) -> Result<zbus::blocking::Connection, String> {
    zbus::blocking::connection::Builder::address(address)
        .map(|b| b.method_timeout(BUS_CALL_TIMEOUT))
        .and_then(|b| b.build())
        .map_err(|e| format!("failed to connect to the system bus at {address}: {e}"))
}

/// The caller as polkit identifies it.
#[derive(Clone, Copy, Debug)]
pub struct Subject {
    pub pid: u32,
    pub start_time: u64,
    pub uid: u32,
}

/// The `unix-process` subject's details: polkit reads `uid` only as an int32.
fn subject_details(pid: u32, start_time: u64, uid: i32) -> HashMap<&'static str, Value<'static>> {
    HashMap::from([
        ("pid", Value::U32(pid)),
        ("start-time", Value::U64(start_time)),
        ("uid", Value::I32(uid)),
    ])
}

/// polkit's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorization {
    Authorized,
    /// Authorized only after the user authenticates, which was not allowed (no interaction)
    /// or not possible (no agent).
    NeedsAuthentication,
    Denied,
}

/// polkit's CheckAuthorizationFlags: AllowUserInteraction.
const ALLOW_USER_INTERACTION: u32 = 1;

impl Polkit {
    pub fn new(connection: zbus::blocking::Connection) -> Polkit {
        Polkit { connection }
    }

    /// Asks polkit whether `action` is authorized for `subject`; with `interactive`, polkit may
    /// ask the user to authenticate through their agent.
    pub fn check(
        &self,
        action: &str,
        subject: Subject,
        interactive: bool,
    ) -> Result<Authorization, String> {
        let Ok(uid) = i32::try_from(subject.uid) else {
            return Err(format!("uid {} does not fit polkit's int32", subject.uid));
        };
        let details = subject_details(subject.pid, subject.start_time, uid);
        let no_details: HashMap<&str, &str> = HashMap::new();
        let flags = if interactive {
            ALLOW_USER_INTERACTION
        } else {
            0
        };
        let reply = self
            .connection
            .call_method(
                Some("org.freedesktop.PolicyKit1"),
                "/org/freedesktop/PolicyKit1/Authority",
                Some("org.freedesktop.PolicyKit1.Authority"),
                "CheckAuthorization",
                &(("unix-process", details), action, no_details, flags, ""),
            )
            .map_err(|e| format!("polkit CheckAuthorization failed: {e}"))?;
        let (authorized, challenge, _details): (bool, bool, HashMap<String, String>) = reply
            .body()
            .deserialize()
            .map_err(|e| format!("unexpected answer from polkit: {e}"))?;
        Ok(match (authorized, challenge) {
            (true, _) => Authorization::Authorized,
            (false, true) => Authorization::NeedsAuthentication,
            (false, false) => Authorization::Denied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_types_are_what_polkit_reads() {
        // A uid of another type is silently ignored by polkit (CVE-2026-78422 class).
        let details = subject_details(42, 7, 1001);
        assert_eq!(details["uid"].value_signature().to_string(), "i");
        assert_eq!(details["pid"].value_signature().to_string(), "u");
        assert_eq!(details["start-time"].value_signature().to_string(), "t");
    }
}
