//! Checks on the names a request carries, applied after decoding.
//!
//! Each check tests the length before looking at any byte, so an overlong
//! name is never compared, copied or scanned (the CVE-2019-13164 class).
//! Error messages never echo the name: it is untrusted input.

use crate::{ErrorKind, ProtoError, Request};

/// systemd's limit for machine names (HOST_NAME_MAX).
const MACHINE_NAME_MAX: usize = 64;
/// IFNAMSIZ - 1: the kernel's limit for interface names.
const IFNAME_MAX: usize = 15;

/// Checks every name in `req`; the error names the offending field.
pub fn validate(req: &Request) -> Result<(), ProtoError> {
    let invalid = |field: &str, reason: String| {
        ProtoError::new(ErrorKind::InvalidRequest, format!("{field}: {reason}"))
    };
    match req {
        Request::Hello { .. } | Request::OpenKvm => Ok(()),
        Request::OpenVhostVsock { machine, cid } => {
            validate_machine_name(machine).map_err(|e| invalid("machine", e))?;
            match cid {
                Some(cid) if !(3..u32::MAX).contains(cid) => Err(invalid(
                    "cid",
                    format!("{cid} is not a regular guest CID (3 to 4294967294)"),
                )),
                _ => Ok(()),
            }
        }
        Request::CreateTap { machine, bridge } => {
            validate_machine_name(machine).map_err(|e| invalid("machine", e))?;
            match bridge {
                Some(bridge) => validate_ifname(bridge).map_err(|e| invalid("bridge", e)),
                None => Ok(()),
            }
        }
        Request::RegisterMachine { machine, .. } | Request::UnregisterMachine { machine } => {
            validate_machine_name(machine).map_err(|e| invalid("machine", e))
        }
    }
}

/// 1..=64 bytes of `[A-Za-z0-9_-]` in labels separated by single dots.
pub fn validate_machine_name(name: &str) -> Result<(), String> {
    check_length("machine name", name, MACHINE_NAME_MAX)?;
    check_bytes("machine name", name, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
    })?;
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err("machine name must not start or end with '.' or contain '..'".to_owned());
    }
    Ok(())
}

/// 1..=15 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    check_length("interface name", name, IFNAME_MAX)?;
    check_bytes("interface name", name, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
    })?;
    if name == "." || name == ".." {
        return Err("interface name must not be '.' or '..'".to_owned());
    }
    Ok(())
}

fn check_length(what: &str, name: &str, max: usize) -> Result<(), String> {
    let len = name.len();
    if len == 0 || len > max {
        return Err(format!("{what} must be 1 to {max} bytes long, got {len}"));
    }
    Ok(())
}

fn check_bytes(what: &str, name: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    match name.bytes().enumerate().find(|&(_, b)| !allowed(b)) {
        Some((offset, byte)) => Err(format!(
            "{what} has a byte {byte:#04x} at offset {offset} that is not allowed"
        )),
        None => Ok(()),
    }
}
