//! polkit, for policy rules that ask for it: CheckAuthorization on the system bus with the
//! caller as a `unix-process` subject: pid and start time as the kernel reported them when the
//! caller connected, uid as a signed 32-bit integer (polkit ignores a wrongly typed uid and
//! falls back to a racy lookup). polkit < 124 has no pidfd subjects, so none is sent.

use std::sync::Arc;

use crate::bus::{Arg, Bus, Call};

pub struct Polkit {
    bus: Arc<Bus>,
}

/// How long a call to polkit or machined may take (a user typing a password for polkit
/// included): a connection's thread never waits longer.
pub const BUS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The caller as polkit identifies it.
#[derive(Clone, Copy, Debug)]
pub struct Subject {
    pub pid: u32,
    pub start_time: u64,
    pub uid: u32,
}

/// The `unix-process` subject: polkit reads `uid` only as an int32.
fn subject_arg(pid: u32, start_time: u64, uid: i32) -> Arg<'static> {
    let detail = |key: &'static str, value: Arg<'static>| {
        Arg::Entry(
            Box::new(Arg::Str(key)),
            Box::new(Arg::Variant(Box::new(value))),
        )
    };
    Arg::Struct(vec![
        Arg::Str("unix-process"),
        Arg::Array(
            "{sv}",
            vec![
                detail("pid", Arg::U32(pid)),
                detail("start-time", Arg::U64(start_time)),
                detail("uid", Arg::I32(uid)),
            ],
        ),
    ])
}

/// CheckAuthorization(subject, action, details, flags, cancellation_id).
fn check_authorization<'a>(action: &'a str, subject: Arg<'a>, flags: u32) -> Call<'a> {
    Call {
        destination: "org.freedesktop.PolicyKit1",
        path: "/org/freedesktop/PolicyKit1/Authority",
        interface: "org.freedesktop.PolicyKit1.Authority",
        member: "CheckAuthorization",
        args: vec![
            subject,
            Arg::Str(action),
            Arg::Array("{ss}", Vec::new()),
            Arg::U32(flags),
            Arg::Str(""),
        ],
    }
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
    pub fn new(bus: Arc<Bus>) -> Polkit {
        Polkit { bus }
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
        let flags = if interactive {
            ALLOW_USER_INTERACTION
        } else {
            0
        };
        let call = check_authorization(
            action,
            subject_arg(subject.pid, subject.start_time, uid),
            flags,
        );
        let reply = self
            .bus
            .call(&call, &[], BUS_CALL_TIMEOUT)
            .map_err(|e| format!("polkit CheckAuthorization failed: {e}"))?;
        if reply.signature != "(bba{ss})" {
            return Err(format!(
                "unexpected answer from polkit (signature '{}')",
                reply.signature
            ));
        }
        let mut body = reply.body();
        let (authorized, challenge) = body
            .bool()
            .and_then(|a| body.bool().map(|c| (a, c)))
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
        let subject = subject_arg(42, 7, 1001);
        assert_eq!(subject.signature(), "(sa{sv})");
        let Arg::Struct(members) = &subject else {
            panic!("{subject:?}")
        };
        let Arg::Array(_, details) = &members[1] else {
            panic!("{members:?}")
        };
        let types: Vec<(String, String)> = details
            .iter()
            .map(|d| match d {
                Arg::Entry(key, value) => match (&**key, &**value) {
                    (Arg::Str(k), Arg::Variant(v)) => (k.to_string(), v.signature()),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            types,
            [
                ("pid".to_string(), "u".to_string()),
                ("start-time".to_string(), "t".to_string()),
                ("uid".to_string(), "i".to_string()),
            ]
        );
        let call = check_authorization("a.b", subject, ALLOW_USER_INTERACTION);
        let message = crate::bus::decode(&crate::bus::encode_call(&call, 1, 0).unwrap()).unwrap();
        assert_eq!(message.signature, "(sa{sv})sa{ss}us");
    }
}
