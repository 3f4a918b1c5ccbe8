//! Socket activation (§5.3 of the behaviour reference): a service manager or a privileged
//! wrapper may pass vmspawn fds named `kvm` and `vhost-vsock` (`$LISTEN_FDS`,
//! `$LISTEN_FDNAMES`, `$LISTEN_PID`), which then replace opening /dev/kvm and
//! /dev/vhost-vsock. Other passed fds are closed. vmspawn's children never see these
//! variables: their environments are built from nothing.

use std::ffi::OsString;
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};

/// The first passed fd (SD_LISTEN_FDS_START).
const FIRST_FD: i32 = 3;
/// More would be a mistake of the caller (sd_listen_fds has no limit; the fds are closed).
const MAX_FDS: u32 = 64;

/// The fds socket activation passed, by what vmspawn uses them for.
#[derive(Debug, Default)]
pub struct PassedFds {
    pub kvm: Option<OwnedFd>,
    pub vhost_vsock: Option<OwnedFd>,
}

/// Which passed fd (index from 0) has which name, from the variables; empty when they are not
/// for this process (`$LISTEN_PID` is another pid), as sd_listen_fds(3) decides.
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Vec<(u32, String)>> {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(own_pid) {
        return Ok(Vec::new());
    }
    let count: u32 = count
        .parse()
        .ok()
        .filter(|n| *n <= MAX_FDS)
        .ok_or_else(|| {
            Error::new(format!(
                "Invalid $LISTEN_FDS '{count}': expected a number of passed fds up to {MAX_FDS}."
            ))
        })?;
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    Ok((0..count)
        .map(|i| {
            let name = names.get(i as usize).copied().unwrap_or("unknown");
            (i, name.to_string())
        })
        .collect())
}

/// Takes the passed fds `kvm` and `vhost-vsock` (the first of each name) and closes the rest.
pub fn take(var: &dyn Fn(&str) -> Option<OsString>) -> Result<PassedFds> {
    let text = |name: &str| var(name).and_then(|v| v.into_string().ok());
    let entries = parse(
        text("LISTEN_PID").as_deref(),
        text("LISTEN_FDS").as_deref(),
        text("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    let mut passed = PassedFds::default();
    for (index, name) in entries {
        let number = FIRST_FD + index as i32;
        let fd = crate::sys::adopt_passed_fd(number).map_err(|e| {
            Error::io(
                format!("Failed to take passed fd {number} ('{name}') from $LISTEN_FDS"),
                e,
            )
        })?;
        let slot = match name.as_str() {
            "kvm" => &mut passed.kvm,
            "vhost-vsock" => &mut passed.vhost_vsock,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(fd);
        }
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_fds_and_other_pids_mean_none() {
        assert_eq!(
            parse(Some("7"), Some("2"), Some("kvm:vhost-vsock"), 7).unwrap(),
            [(0, "kvm".to_string()), (1, "vhost-vsock".to_string())]
        );
        assert_eq!(
            parse(Some("7"), Some("2"), Some("kvm"), 7).unwrap(),
            [(0, "kvm".to_string()), (1, "unknown".to_string())]
        );
        assert!(
            parse(Some("8"), Some("2"), Some("kvm"), 7)
                .unwrap()
                .is_empty()
        );
        assert!(parse(None, Some("2"), Some("kvm"), 7).unwrap().is_empty());
        assert!(parse(Some("7"), Some("lots"), None, 7).is_err());
        assert!(parse(Some("7"), Some("65"), None, 7).is_err());
    }
}
