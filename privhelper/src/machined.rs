//! systemd-machined on the system bus: register a VM for a caller, and unregister it. The
//! class is always `vm`: machined offers shells and namespace access only for containers, and
//! a caller must never be able to ask for that on a process of its own.
//!
//! Where machined has `RegisterMachineEx` (systemd 259 and later) the leader goes to it as a
//! pidfd (`LeaderPIDFD`), so machined pins the very process the helper verified. Older
//! machined (Debian 12's 252 and 254) answer that method with UnknownMethod; then, and from
//! then on, the helper uses `RegisterMachine`, which takes a pid, and re-checks afterwards that
//! the pid still names the verified process.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::bus::{Arg, Bus, Call, CallError, UNKNOWN_METHOD};

const DESTINATION: &str = "org.freedesktop.machine1";
const PATH: &str = "/org/freedesktop/machine1";
const INTERFACE: &str = "org.freedesktop.machine1.Manager";
/// The service name machined records for registrations made through the helper.
const SERVICE: &str = "vmspawn";

/// What the helper knows of machined's methods.
const EX_UNTRIED: u8 = 0;
const EX_AVAILABLE: u8 = 1;
const EX_MISSING: u8 = 2;

pub struct Machined {
    bus: Arc<Bus>,
    ex: AtomicU8,
}

/// How a registration was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// RegisterMachineEx with the leader's pidfd.
    ByPidfd,
    /// RegisterMachine with the leader's pid.
    ByPid,
}

fn call<'a>(member: &'a str, args: Vec<Arg<'a>>) -> Call<'a> {
    Call {
        destination: DESTINATION,
        path: PATH,
        interface: INTERFACE,
        member,
        args,
    }
}

/// RegisterMachineEx(name, properties): the leader is fd 0 of the message (and its pid,
/// which machined checks against the pidfd).
pub fn register_ex_call<'a>(name: &'a str, uuid: Option<&'a [u8; 16]>, leader: u32) -> Call<'a> {
    let property = |key: &'a str, value: Arg<'a>| {
        Arg::Struct(vec![Arg::Str(key), Arg::Variant(Box::new(value))])
    };
    let mut properties = Vec::new();
    if let Some(uuid) = uuid {
        properties.push(property("Id", Arg::Bytes(uuid)));
    }
    properties.extend([
        property("Service", Arg::Str(SERVICE)),
        property("Class", Arg::Str("vm")),
        property("LeaderPID", Arg::U32(leader)),
        property("LeaderPIDFD", Arg::Fd(0)),
    ]);
    call(
        "RegisterMachineEx",
        vec![Arg::Str(name), Arg::Array("(sv)", properties)],
    )
}

/// RegisterMachine(name, id, service, class, leader, root_directory).
pub fn register_call<'a>(name: &'a str, uuid: Option<&'a [u8; 16]>, leader: u32) -> Call<'a> {
    call(
        "RegisterMachine",
        vec![
            Arg::Str(name),
            Arg::Bytes(uuid.map_or(&[][..], |u| &u[..])),
            Arg::Str(SERVICE),
            Arg::Str("vm"),
            Arg::U32(leader),
            Arg::Str(""),
        ],
    )
}

impl Machined {
    pub fn new(bus: Arc<Bus>) -> Machined {
        Machined {
            bus,
            ex: AtomicU8::new(EX_UNTRIED),
        }
    }

    /// Registers `name` led by the process of `pidfd` (whose pid is `leader`).
    pub fn register(
        &self,
        name: &str,
        uuid: Option<[u8; 16]>,
        leader: u32,
        pidfd: BorrowedFd<'_>,
    ) -> Result<Registered, String> {
        let refused = |e: CallError| format!("systemd-machined refused to register '{name}': {e}");
        let timeout = crate::polkit::BUS_CALL_TIMEOUT;
        if self.bus.unix_fds && self.ex.load(Ordering::Relaxed) != EX_MISSING {
            let ex = register_ex_call(name, uuid.as_ref(), leader);
            match self.bus.call(&ex, &[pidfd.as_fd()], timeout) {
                Ok(_) => {
                    self.ex.store(EX_AVAILABLE, Ordering::Relaxed);
                    return Ok(Registered::ByPidfd);
                }
                Err(CallError::Method { name: error, .. }) if error == UNKNOWN_METHOD => {
                    if self.ex.swap(EX_MISSING, Ordering::Relaxed) != EX_MISSING {
                        eprintln!(
                            "vmspawn-privhelper: systemd-machined has no RegisterMachineEx \
                             (systemd before 259): registering leaders by pid, each checked \
                             to be alive after its registration"
                        );
                    }
                }
                Err(e) => return Err(refused(e)),
            }
        }
        self.bus
            .call(&register_call(name, uuid.as_ref(), leader), &[], timeout)
            .map(|_| Registered::ByPid)
            .map_err(refused)
    }

    pub fn unregister(&self, name: &str) -> Result<(), String> {
        self.bus
            .call(
                &call("UnregisterMachine", vec![Arg::Str(name)]),
                &[],
                crate::polkit::BUS_CALL_TIMEOUT,
            )
            .map(drop)
            .map_err(|e| format!("systemd-machined refused to unregister '{name}': {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{decode, encode_call};

    #[test]
    fn register_machine_ex_carries_the_leader_as_a_pidfd() {
        let uuid = [7u8; 16];
        let message =
            decode(&encode_call(&register_ex_call("vm1", Some(&uuid), 42), 3, 1).unwrap()).unwrap();
        assert_eq!(message.signature, "sa(sv)");
        assert_eq!(message.unix_fds, 1, "the header announces the one fd");
        let Call { args, member, .. } = register_ex_call("vm1", Some(&uuid), 42);
        assert_eq!(member, "RegisterMachineEx");
        assert_eq!(args[0], Arg::Str("vm1"));
        let Arg::Array(element, properties) = &args[1] else {
            panic!("{args:?}")
        };
        assert_eq!(*element, "(sv)");
        let shown: Vec<(String, String)> = properties
            .iter()
            .map(|p| match p {
                Arg::Struct(kv) => match (&kv[0], &kv[1]) {
                    (Arg::Str(key), Arg::Variant(value)) => (
                        key.to_string(),
                        format!("{}={:?}", value.signature(), value),
                    ),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("Id".to_string(), format!("ay={:?}", Arg::Bytes(&uuid))),
                ("Service".to_string(), "s=Str(\"vmspawn\")".to_string()),
                ("Class".to_string(), "s=Str(\"vm\")".to_string()),
                ("LeaderPID".to_string(), "u=U32(42)".to_string()),
                ("LeaderPIDFD".to_string(), "h=Fd(0)".to_string()),
            ]
        );
        // Without a UUID there is no Id (machined takes none as the null ID).
        let Call { args, .. } = register_ex_call("vm1", None, 42);
        let Arg::Array(_, properties) = &args[1] else {
            panic!()
        };
        assert_eq!(properties.len(), 4);
    }

    #[test]
    fn register_machine_is_what_machined_254_takes() {
        let message = decode(&encode_call(&register_call("vm1", None, 42), 3, 0).unwrap()).unwrap();
        assert_eq!(message.signature, "sayssus");
        assert_eq!(message.unix_fds, 0);
    }
}
