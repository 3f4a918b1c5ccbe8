//! systemd-machined on the system bus: register a VM for a caller, and unregister it. The
//! class is always `vm`: machined offers shells and namespace access only for containers, and
//! a caller must never be able to ask for that on a process of its own.

const DESTINATION: &str = "org.freedesktop.machine1";
const PATH: &str = "/org/freedesktop/machine1";
const INTERFACE: &str = "org.freedesktop.machine1.Manager";
/// The service name machined records for registrations made through the helper.
const SERVICE: &str = "vmspawn";

pub struct Machined {
    connection: zbus::blocking::Connection,
}

fn describe(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(message), _) => format!("{message} ({name})"),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        other => other.to_string(),
    }
}

impl Machined {
    pub fn new(connection: zbus::blocking::Connection) -> Machined {
        Machined { connection }
    }

    /// RegisterMachine(name, id, service, class, leader, root_directory). The D-Bus call takes
    /// the leader as a pid; the caller re-checks afterwards that the pid still names the
    /// verified process.
    pub fn register(&self, name: &str, uuid: Option<[u8; 16]>, leader: u32) -> Result<(), String> {
        let id: Vec<u8> = uuid.map(Vec::from).unwrap_or_default();
        self.connection
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(INTERFACE),
                "RegisterMachine",
                &(name, id, SERVICE, "vm", leader, ""),
            )
            .map(drop)
            .map_err(|e| {
                format!(
                    "systemd-machined refused to register '{name}': {}",
                    describe(e)
                )
            })
    }

    pub fn unregister(&self, name: &str) -> Result<(), String> {
        self.connection
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(INTERFACE),
                "UnregisterMachine",
                &(name,),
            )
            .map(drop)
            .map_err(|e| {
                format!(
                    "systemd-machined refused to unregister '{name}': {}",
                    describe(e)
                )
            })
    }
}
