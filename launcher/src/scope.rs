//! The VM's transient scope unit (without `--keep-unit`): vmspawn asks its service manager
//! (the user manager for a regular user, the system manager for root; `--user`/`--system`
//! choose) over D-Bus for `<machine>.scope` with vmspawn itself in it, so the cleanup process,
//! QEMU and every sidecar started afterwards are in it too. `Slice=` comes from `--slice=`
//! (default `machine.slice`), then the `--property=` assignments (a documented subset, each
//! sent with its D-Bus type). vmspawn is the scope's `Controller`: `systemctl stop` on the
//! scope sends it `RequestStop` (the supervisor powers the guest off, as for SIGTERM) instead
//! of SIGTERM to every process in it. `AddRef` keeps the scope referenced by our connection
//! and `CollectMode=inactive-or-failed` lets it go once the VM has ended.
//!
//! Planning (`plan`, `parse_property`) is pure; `allocate` talks to the manager.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmspawn_bus::{Arg, Call, CallError, Connection};

use crate::config::{Config, RuntimeScope};
use crate::error::{Error, Result};

/// A typed value of a unit property, as sent in StartTransientUnit's `a(sv)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropValue {
    Bool(bool),
    U64(u64),
    I32(i32),
    Str(String),
    /// `ay`: a CPU or NUMA node bitmask.
    Bytes(Vec<u8>),
}

impl PropValue {
    fn arg(&self) -> Arg<'_> {
        match self {
            PropValue::Bool(b) => Arg::Bool(*b),
            PropValue::U64(v) => Arg::U64(*v),
            PropValue::I32(v) => Arg::I32(*v),
            PropValue::Str(s) => Arg::Str(s),
            PropValue::Bytes(b) => Arg::Bytes(b),
        }
    }
}

impl std::fmt::Display for PropValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropValue::Bool(b) => write!(f, "b {b}"),
            PropValue::U64(v) => write!(f, "t {v}"),
            PropValue::I32(v) => write!(f, "i {v}"),
            PropValue::Str(s) => write!(f, "s {s:?}"),
            PropValue::Bytes(b) => {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                write!(f, "ay [{}]", hex.join(" "))
            }
        }
    }
}

/// One `--property=` assignment, as the D-Bus property it becomes (`CPUQuota=` is sent as
/// `CPUQuotaPerSecUSec`, `TimeoutStopSec=` as `TimeoutStopUSec`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitProperty {
    pub name: String,
    pub value: PropValue,
}

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Bytes,
    Tasks,
    Weight,
    CpuWeight,
    Quota,
    CpuSet,
    Time,
    Signal,
    OneOf(&'static [&'static str]),
    Text,
}

/// The `--property=` names vmspawn knows, with how each value is parsed and sent.
const PROPERTIES: &[(&str, Kind)] = &[
    ("MemoryMax", Kind::Bytes),
    ("MemoryHigh", Kind::Bytes),
    ("MemoryLow", Kind::Bytes),
    ("MemoryMin", Kind::Bytes),
    ("MemorySwapMax", Kind::Bytes),
    ("TasksMax", Kind::Tasks),
    ("CPUWeight", Kind::CpuWeight),
    ("StartupCPUWeight", Kind::CpuWeight),
    ("IOWeight", Kind::Weight),
    ("StartupIOWeight", Kind::Weight),
    ("CPUQuota", Kind::Quota),
    ("AllowedCPUs", Kind::CpuSet),
    ("AllowedMemoryNodes", Kind::CpuSet),
    ("Delegate", Kind::Bool),
    ("CPUAccounting", Kind::Bool),
    ("MemoryAccounting", Kind::Bool),
    ("IOAccounting", Kind::Bool),
    ("TasksAccounting", Kind::Bool),
    ("IPAccounting", Kind::Bool),
    ("SendSIGKILL", Kind::Bool),
    ("SendSIGHUP", Kind::Bool),
    ("TimeoutStopSec", Kind::Time),
    ("RuntimeMaxSec", Kind::Time),
    ("KillSignal", Kind::Signal),
    (
        "KillMode",
        Kind::OneOf(&["control-group", "process", "mixed", "none"]),
    ),
    (
        "CollectMode",
        Kind::OneOf(&["inactive", "inactive-or-failed"]),
    ),
    ("OOMPolicy", Kind::OneOf(&["continue", "stop", "kill"])),
    ("ManagedOOMSwap", Kind::OneOf(&["auto", "kill"])),
    ("ManagedOOMMemoryPressure", Kind::OneOf(&["auto", "kill"])),
    ("Description", Kind::Text),
];

/// The names `--property=` takes, for help and error texts.
pub fn supported_names() -> Vec<&'static str> {
    PROPERTIES.iter().map(|(name, _)| *name).collect()
}

fn bad(text: &str, why: &str) -> Error {
    Error::new(format!(
        "Failed to parse --property= assignment '{text}': {why}"
    ))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// A decimal number with at most `max_decimals` fraction digits, scaled by 10^max_decimals.
fn parse_scaled(number: &str, max_decimals: u32) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > max_decimals as usize
    {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..max_decimals as usize {
        frac_value *= 10;
    }
    int.checked_mul(10u128.pow(max_decimals))?
        .checked_add(frac_value)
}

/// Bytes with an optional 1024-based suffix (K, M, G, T, P, E; "1.5G"), or "infinity".
fn parse_bytes(value: &str) -> std::result::Result<u64, &'static str> {
    if value == "infinity" {
        return Ok(u64::MAX);
    }
    if value.ends_with('%') {
        return Err(
            "percentages are not supported by this vmspawn; give a size in bytes (e.g. 512M)",
        );
    }
    let (number, shift) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c {
                'B' => 0,
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                'E' => 60,
                _ if parse_scaled(&value[..i], 3).is_some() => {
                    return Err("unknown size suffix (use K, M, G, T, P or E)");
                }
                _ => return Err("not a size (e.g. 512M, 2G or infinity)"),
            };
            (&value[..i], shift)
        }
        _ => (value, 0),
    };
    let scaled = parse_scaled(number, 3).ok_or("not a size (e.g. 512M, 2G or infinity)")?;
    let bytes = (scaled << shift) / 1000;
    u64::try_from(bytes)
        .ok()
        .filter(|&b| b < u64::MAX)
        .ok_or("the size is too large")
}

/// A time span: "90", "90s", "1min 30s", "500ms", or "infinity"; in microseconds.
fn parse_time(value: &str) -> std::result::Result<u64, &'static str> {
    if value == "infinity" {
        return Ok(u64::MAX);
    }
    let mut total: u128 = 0;
    let mut any = false;
    let mut rest = value.trim();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = parse_scaled(&rest[..digits], 6).ok_or("not a time span (e.g. 90s, 2min)")?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let per_unit: u128 = match &rest[..unit_len] {
            "us" | "usec" => 1,
            "ms" | "msec" => 1_000,
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000,
            "d" | "day" | "days" => 86_400_000_000,
            _ => return Err("unknown time unit (use us, ms, s, min, h or d)"),
        };
        rest = rest[unit_len..].trim_start();
        total = total
            .checked_add(number * per_unit / 1_000_000)
            .ok_or("the time span is too long")?;
        any = true;
    }
    if !any {
        return Err("not a time span (e.g. 90s, 2min)");
    }
    u64::try_from(total)
        .ok()
        .filter(|&t| t < u64::MAX)
        .ok_or("the time span is too long")
}

/// "0-3,5 7" as systemd's CPU set bitmask (bit n%8 of byte n/8).
fn parse_cpu_set(value: &str) -> std::result::Result<Vec<u8>, &'static str> {
    const MAX: u32 = 8192;
    let mut mask = Vec::new();
    let mut any = false;
    for item in value.split([',', ' ']).filter(|s| !s.is_empty()) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) else {
            return Err("not a list of CPU or node numbers and ranges (e.g. 0-3,6)");
        };
        if first > last || last >= MAX {
            return Err("a range is reversed or a number is too large");
        }
        for n in first..=last {
            let byte = (n / 8) as usize;
            if mask.len() <= byte {
                mask.resize(byte + 1, 0);
            }
            mask[byte] |= 1u8 << (n % 8);
        }
        any = true;
    }
    if !any {
        return Err("the list is empty");
    }
    Ok(mask)
}

fn parse_signal(value: &str) -> Option<i32> {
    if let Ok(n) = value.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = if value.starts_with("SIG") {
        value.to_string()
    } else {
        format!("SIG{value}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// Parses one `--property=NAME=VALUE` into the D-Bus property it becomes; refuses names
/// outside the supported subset (listing them) and values of the wrong form.
pub fn parse_property(text: &str) -> Result<UnitProperty> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(bad(text, "expected NAME=VALUE."));
    };
    let Some(&(name, kind)) = PROPERTIES.iter().find(|(n, _)| *n == name) else {
        return Err(bad(
            text,
            &format!(
                "this vmspawn does not support the property '{name}'. Supported: {}.",
                supported_names().join(", ")
            ),
        ));
    };
    if value.is_empty() {
        return Err(bad(text, "the value is empty."));
    }
    let fail = |why: &str| bad(text, &format!("{why}."));
    let property = |name: &str, value: PropValue| UnitProperty {
        name: name.to_string(),
        value,
    };
    Ok(match kind {
        Kind::Bool => property(
            name,
            PropValue::Bool(
                parse_bool(value).ok_or_else(|| fail("expected a boolean (yes or no)"))?,
            ),
        ),
        Kind::Bytes => property(name, PropValue::U64(parse_bytes(value).map_err(fail)?)),
        Kind::Tasks => {
            let n = match value {
                "infinity" => u64::MAX,
                v if v.ends_with('%') => {
                    return Err(fail(
                        "percentages are not supported by this vmspawn; give a number of tasks",
                    ));
                }
                v => v
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0 && n < u64::MAX)
                    .ok_or_else(|| fail("expected a number of tasks or infinity"))?,
            };
            property(name, PropValue::U64(n))
        }
        Kind::Weight | Kind::CpuWeight => {
            let weight = match value {
                "idle" if matches!(kind, Kind::CpuWeight) => 0,
                v => v
                    .parse::<u64>()
                    .ok()
                    .filter(|w| (1..=10000).contains(w))
                    .ok_or_else(|| fail("expected a weight from 1 to 10000"))?,
            };
            property(name, PropValue::U64(weight))
        }
        Kind::Quota => {
            let permyriad = value
                .strip_suffix('%')
                .and_then(|n| parse_scaled(n, 2))
                .filter(|&p| p > 0)
                .ok_or_else(|| fail("expected a percentage above 0 (e.g. 50% or 200%)"))?;
            // Microseconds of CPU time per second: 1% is 10 ms.
            let usec =
                u64::try_from(permyriad * 100).map_err(|_| fail("the quota is too large"))?;
            property("CPUQuotaPerSecUSec", PropValue::U64(usec))
        }
        Kind::CpuSet => property(name, PropValue::Bytes(parse_cpu_set(value).map_err(fail)?)),
        Kind::Time => {
            let usec = parse_time(value).map_err(fail)?;
            let dbus_name = format!("{}USec", name.trim_end_matches("Sec"));
            property(&dbus_name, PropValue::U64(usec))
        }
        Kind::Signal => property(
            name,
            PropValue::I32(
                parse_signal(value)
                    .ok_or_else(|| fail("expected a signal name (SIGTERM) or number"))?,
            ),
        ),
        Kind::OneOf(choices) => {
            if !choices.contains(&value) {
                return Err(fail(&format!("expected one of {}", choices.join(", "))));
            }
            property(name, PropValue::Str(value.to_string()))
        }
        Kind::Text => property(name, PropValue::Str(value.to_string())),
    })
}

/// The scope vmspawn asks for (no `--keep-unit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopePlan {
    /// `<machine>.scope`.
    pub unit: String,
    pub slice: String,
    pub description: String,
    /// The `--property=` assignments, in order, after vmspawn's own properties.
    pub properties: Vec<UnitProperty>,
    /// Whose manager: the user's or the system's.
    pub manager: RuntimeScope,
    /// `--slice=` or `--property=` given: without a manager to ask, vmspawn fails (otherwise
    /// the VM runs in vmspawn's own unit, as before).
    pub required: bool,
}

/// The scope for `config` (None with `--keep-unit`).
pub fn plan(config: &Config, machine: &str, is_root: bool) -> Option<ScopePlan> {
    if config.keep_unit {
        return None;
    }
    Some(ScopePlan {
        unit: format!("{machine}.scope"),
        slice: config
            .slice
            .clone()
            .unwrap_or_else(|| "machine.slice".to_string()),
        description: format!("Virtual Machine {machine}"),
        properties: config.properties.clone(),
        manager: crate::register::effective_scope(config.runtime_scope, is_root),
        required: config.slice.is_some() || !config.properties.is_empty(),
    })
}

/// The bus address of the manager's bus, if there is one to try.
fn bus_path(
    manager: RuntimeScope,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> std::result::Result<PathBuf, String> {
    let from_var = |name: &str| {
        var(name)
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned())
    };
    let address = match manager {
        RuntimeScope::System => from_var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|| "unix:path=/run/dbus/system_bus_socket".to_string()),
        RuntimeScope::User => match from_var("DBUS_SESSION_BUS_ADDRESS") {
            Some(address) => address,
            None => match from_var("XDG_RUNTIME_DIR") {
                Some(dir) => format!("unix:path={dir}/bus"),
                None => {
                    return Err(
                        "neither $DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR is set, so there is no user bus to reach the user's service manager on".into(),
                    );
                }
            },
        },
    };
    vmspawn_bus::socket_path(&address)
}

/// The scope once the manager has started it: our connection to the manager (its `AddRef`
/// and `Controller` last as long as it is open), watched for `RequestStop`.
pub struct Scope {
    connection: Option<Connection>,
    /// The manager's unique bus name: RequestStop counts only from it (anyone on the bus may
    /// send us a signal).
    manager_owner: String,
    pub unit: String,
}

const MANAGER: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn manager_name(manager: RuntimeScope) -> &'static str {
    match manager {
        RuntimeScope::User => "your user service manager",
        RuntimeScope::System => "the system service manager",
    }
}

/// Asks the manager for the scope, with vmspawn (`pid`) in it, and waits for the start job.
/// Ok(None): no manager to ask and none required (said at debug level only).
pub fn allocate(
    plan: &ScopePlan,
    pid: u32,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    debug: bool,
) -> Result<Option<Scope>> {
    let who = manager_name(plan.manager);
    let what = format!("Failed to allocate the scope unit {} ({who})", plan.unit);
    let hint = "--slice=/--property= need a service manager reachable over D-Bus (a user \
                session with a user bus, e.g. the dbus-user-session package); drop them, or \
                use --keep-unit to run in your own unit.";
    let unreachable = |why: String| -> Result<Option<Scope>> {
        if plan.required {
            Err(Error::new(format!("{what}: {why}. {hint}")))
        } else {
            if debug {
                eprintln!("No scope unit for the VM ({why}); it runs in vmspawn's own unit.");
            }
            Ok(None)
        }
    };
    let path = match bus_path(plan.manager, var) {
        Ok(path) => path,
        Err(why) => return unreachable(why),
    };
    if !path.exists() {
        return unreachable(format!("there is no bus at {}", path.display()));
    }
    let bus_name = match plan.manager {
        RuntimeScope::User => "the user bus",
        RuntimeScope::System => "the system bus",
    };
    let mut connection = match Connection::open_named(&path, bus_name) {
        Ok(c) => c,
        Err(why) => return unreachable(why),
    };
    let deadline = Instant::now() + CALL_TIMEOUT;
    let match_rule = format!(
        "type='signal',sender='{MANAGER}',path='{MANAGER_PATH}',interface='{MANAGER_INTERFACE}',member='JobRemoved'"
    );
    let add_match = Call {
        destination: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
        interface: "org.freedesktop.DBus",
        member: "AddMatch",
        args: vec![Arg::Str(&match_rule)],
    };
    if let Err(e) = connection.call(&add_match, &[], deadline) {
        return unreachable(format!("AddMatch on {bus_name} failed: {e}"));
    }
    let controller = connection.unique_name().to_string();
    // A (name, variant) pair of StartTransientUnit's properties.
    fn prop<'a>(name: &'a str, value: Arg<'a>) -> Arg<'a> {
        Arg::Struct(vec![Arg::Str(name), Arg::Variant(Box::new(value))])
    }
    let mut properties = vec![
        prop("PIDs", Arg::Array("u", vec![Arg::U32(pid)])),
        prop("Description", Arg::Str(&plan.description)),
        prop("CollectMode", Arg::Str("inactive-or-failed")),
        prop("AddRef", Arg::Bool(true)),
        prop("Slice", Arg::Str(&plan.slice)),
        prop("Controller", Arg::Str(&controller)),
    ];
    for p in &plan.properties {
        properties.push(prop(&p.name, p.value.arg()));
    }
    let start = Call {
        destination: MANAGER,
        path: MANAGER_PATH,
        interface: MANAGER_INTERFACE,
        member: "StartTransientUnit",
        args: vec![
            Arg::Str(&plan.unit),
            Arg::Str("fail"),
            Arg::Array("(sv)", properties),
            Arg::Array("(sa(sv))", Vec::new()),
        ],
    };
    let job = match connection.call(&start, &[], deadline) {
        Ok(reply) => reply
            .body()
            .string()
            .map_err(|e| Error::new(format!("{what}: the manager's answer is unreadable: {e}")))?,
        Err(CallError::Method { name, .. })
            if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            return unreachable(format!("no service manager on {bus_name} ({name})"));
        }
        Err(e) => {
            let message = format!("{what}: {e}");
            if plan.required {
                return Err(Error::new(format!(
                    "{message}. Without --slice=/--property=, vmspawn runs the VM in its own unit instead."
                )));
            }
            eprintln!("Warning: {message}; the VM runs in vmspawn's own unit.");
            return Ok(None);
        }
    };
    // The start job's end (JobRemoved: id, job, unit, result).
    loop {
        let message = connection.next_message(deadline).map_err(|e| {
            Error::new(format!(
                "{what}: waiting for its start job {job} failed: {e}"
            ))
        })?;
        if message.kind != vmspawn_bus::SIGNAL
            || message.member.as_deref() != Some("JobRemoved")
            || message.signature != "uoss"
        {
            continue;
        }
        let mut body = message.body();
        let fields = (|| -> std::result::Result<(String, String), String> {
            body.u32()?;
            let path = body.string()?;
            body.string()?;
            Ok((path, body.string()?))
        })();
        let Ok((path, result)) = fields else { continue };
        if path != job {
            continue;
        }
        if result != "done" {
            return Err(Error::new(format!(
                "{what}: its start job ended with result '{result}' (see `journalctl{} -u {}`).",
                if plan.manager == RuntimeScope::User {
                    " --user"
                } else {
                    ""
                },
                plan.unit
            )));
        }
        break;
    }
    // JobRemoved signals of other jobs are of no more use.
    let remove_match = Call {
        member: "RemoveMatch",
        ..add_match
    };
    let _ = connection.call(&remove_match, &[], deadline);
    let get_owner = Call {
        destination: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
        interface: "org.freedesktop.DBus",
        member: "GetNameOwner",
        args: vec![Arg::Str(MANAGER)],
    };
    let manager_owner = connection
        .call(&get_owner, &[], deadline)
        .map_err(|e| e.to_string())
        .and_then(|reply| reply.body().string())
        .map_err(|e| {
            Error::new(format!(
                "{what}: could not find out which connection on {bus_name} is the service manager: {e}"
            ))
        })?;
    if debug {
        eprintln!(
            "The VM runs in the scope unit {} in {} ({who}); vmspawn ({controller}) is its controller.",
            plan.unit, plan.slice
        );
    }
    Ok(Some(Scope {
        connection: Some(connection),
        manager_owner,
        unit: plan.unit.clone(),
    }))
}

impl Scope {
    /// The connection to poll for `RequestStop` (None once it is lost).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.connection.as_ref().map(|c| c.as_fd())
    }

    /// Reads what has arrived; true if the manager asked us to stop (`systemctl stop` on the
    /// scope). A lost connection is said once and then no longer polled.
    pub fn stop_requested(&mut self) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        match connection.read_pending() {
            Ok(messages) => messages
                .iter()
                .any(|m| is_request_stop(m, &self.manager_owner)),
            Err(e) => {
                eprintln!(
                    "Warning: lost the connection to the service manager of {} ({e}); `systemctl stop` on it now sends SIGTERM to its processes.",
                    self.unit
                );
                self.connection = None;
                false
            }
        }
    }
}

/// The manager's `RequestStop` for our scope (sent to us as its controller).
fn is_request_stop(message: &vmspawn_bus::Message, manager_owner: &str) -> bool {
    message.kind == vmspawn_bus::SIGNAL
        && message.sender.as_deref() == Some(manager_owner)
        && message.interface.as_deref() == Some("org.freedesktop.systemd1.Scope")
        && message.member.as_deref() == Some("RequestStop")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> (String, PropValue) {
        let p = parse_property(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (p.name, p.value)
    }

    fn error(text: &str) -> String {
        parse_property(text).unwrap_err().to_string()
    }

    #[test]
    fn request_stop_only_from_the_manager() {
        let signal = |member: &str| {
            let call = Call {
                destination: ":1.42",
                path: "/org/freedesktop/systemd1/unit/vm_2escope",
                interface: "org.freedesktop.systemd1.Scope",
                member,
                args: Vec::new(),
            };
            let mut bytes = vmspawn_bus::encode_call(&call, 7, 0).unwrap();
            bytes[1] = vmspawn_bus::SIGNAL;
            vmspawn_bus::decode(&bytes).unwrap()
        };
        let mut message = signal("RequestStop");
        assert!(!is_request_stop(&message, ":1.1"), "no sender");
        message.sender = Some(":1.1".into());
        assert!(is_request_stop(&message, ":1.1"));
        assert!(!is_request_stop(&message, ":1.9"), "another peer");
        let mut other = signal("Other");
        other.sender = Some(":1.1".into());
        assert!(!is_request_stop(&other, ":1.1"));
    }

    #[test]
    fn typed_properties() {
        assert_eq!(
            value("MemoryMax=512M"),
            ("MemoryMax".into(), PropValue::U64(512 << 20))
        );
        assert_eq!(
            value("MemoryHigh=1.5G"),
            ("MemoryHigh".into(), PropValue::U64(3 << 29))
        );
        assert_eq!(
            value("MemoryLow=4096"),
            ("MemoryLow".into(), PropValue::U64(4096))
        );
        assert_eq!(
            value("MemoryMax=infinity"),
            ("MemoryMax".into(), PropValue::U64(u64::MAX))
        );
        assert_eq!(
            value("TasksMax=64"),
            ("TasksMax".into(), PropValue::U64(64))
        );
        assert_eq!(
            value("CPUWeight=idle"),
            ("CPUWeight".into(), PropValue::U64(0))
        );
        assert_eq!(
            value("IOWeight=10000"),
            ("IOWeight".into(), PropValue::U64(10000))
        );
        assert_eq!(
            value("CPUQuota=50%"),
            ("CPUQuotaPerSecUSec".into(), PropValue::U64(500_000))
        );
        assert_eq!(
            value("CPUQuota=200.5%"),
            ("CPUQuotaPerSecUSec".into(), PropValue::U64(2_005_000))
        );
        assert_eq!(
            value("AllowedCPUs=0-3,9"),
            ("AllowedCPUs".into(), PropValue::Bytes(vec![0x0f, 0x02]))
        );
        assert_eq!(
            value("Delegate=yes"),
            ("Delegate".into(), PropValue::Bool(true))
        );
        assert_eq!(
            value("TimeoutStopSec=1min 30s"),
            ("TimeoutStopUSec".into(), PropValue::U64(90_000_000))
        );
        assert_eq!(
            value("RuntimeMaxSec=500ms"),
            ("RuntimeMaxUSec".into(), PropValue::U64(500_000))
        );
        assert_eq!(
            value("KillSignal=SIGINT"),
            ("KillSignal".into(), PropValue::I32(2))
        );
        assert_eq!(
            value("KillMode=mixed"),
            ("KillMode".into(), PropValue::Str("mixed".into()))
        );
        assert_eq!(
            value("Description=a b=c"),
            ("Description".into(), PropValue::Str("a b=c".into()))
        );
    }

    #[test]
    fn refused_properties() {
        let e = error("DeviceAllow=/dev/null rw");
        assert!(
            e.contains("does not support the property 'DeviceAllow'") && e.contains("MemoryMax"),
            "{e}"
        );
        assert!(error("memorymax=1G").contains("does not support"));
        assert!(error("CPUWeight").contains("expected NAME=VALUE"));
        for (text, why) in [
            ("MemoryMax=", "empty"),
            ("MemoryMax=50%", "percentages"),
            ("MemoryMax=12Q", "suffix"),
            ("MemoryMax=lots", "not a size"),
            ("MemoryMax=99999999E", "too large"),
            ("TasksMax=0", "number of tasks"),
            ("CPUWeight=0", "1 to 10000"),
            ("IOWeight=idle", "1 to 10000"),
            ("CPUQuota=50", "percentage"),
            ("CPUQuota=0%", "percentage"),
            ("AllowedCPUs=3-1", "reversed"),
            ("AllowedCPUs=a", "list"),
            ("Delegate=maybe", "boolean"),
            ("TimeoutStopSec=5 fortnights", "unit"),
            ("KillSignal=SIGNOPE", "signal"),
            ("KillMode=all", "one of"),
        ] {
            let e = error(text);
            assert!(e.contains(why) && e.contains(text), "{text}: {e}");
        }
    }
}
