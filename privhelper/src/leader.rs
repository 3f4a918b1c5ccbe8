//! The leader of a machine a caller registers must be the caller's own child, running as the
//! caller: its VM process (QEMU). A caller must never get its shell, its parent or another
//! user's process registered (systemd 258-rc had that hole). The leader arrives as a pidfd, so
//! a pid reused after the process exited is never taken for it: /proc is read only between
//! two checks that the pidfd still names a live process with that pid.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::process::pidfd_pid;

/// A verified leader: its pid, pinned by its pidfd.
pub struct Leader {
    pub pid: u32,
    pidfd: OwnedFd,
}

impl Leader {
    /// Whether the pid still names the verified process (it has not exited).
    pub fn alive(&self) -> bool {
        pidfd_pid(self.pidfd.as_fd()) == Some(self.pid)
    }
}

/// Who asks, as the kernel reported it.
pub struct CallerProcess<'a> {
    pub uid: u32,
    pub pid: u32,
    /// The caller's pidfd (SO_PEERPIDFD), to check that `pid` is still the caller.
    pub pidfd: Option<BorrowedFd<'a>>,
}

fn is_pidfd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).is_ok_and(|target| {
        let target = target.to_string_lossy();
        target == "anon_inode:[pidfd]" || target.starts_with("pidfd:")
    })
}

/// The value of `key` in /proc/PID/status, split on whitespace.
fn status_field<'s>(status: &'s str, key: &str) -> Option<Vec<&'s str>> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .map(|rest| rest.split_whitespace().collect())
}

/// Checks that `pidfd` names a live process that runs as `caller.uid` (real, effective, saved
/// and filesystem uid) and whose parent is the caller, and that it is not this helper.
pub fn verify(pidfd: OwnedFd, caller: &CallerProcess<'_>) -> Result<Leader, String> {
    if !is_pidfd(pidfd.as_fd()) {
        return Err("the leader must be passed as a pidfd (pidfd_open of the VM process)".into());
    }
    let Some(pid) = pidfd_pid(pidfd.as_fd()) else {
        return Err("the leader process has exited (or is in another pid namespace)".into());
    };
    if pid == std::process::id() {
        return Err("the helper itself cannot lead a machine".into());
    }
    let mut status_file = std::fs::File::open(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot inspect the leader process {pid}: {e}"))?;
    // Opened while the pidfd still named this pid: the file is that process's.
    if pidfd_pid(pidfd.as_fd()) != Some(pid) {
        return Err(format!("the leader process {pid} exited during the check"));
    }
    let mut status = String::new();
    status_file
        .read_to_string(&mut status)
        .map_err(|e| format!("cannot inspect the leader process {pid}: {e}"))?;
    let state = status_field(&status, "State:").unwrap_or_default();
    if state
        .first()
        .is_none_or(|s| s.starts_with('Z') || s.starts_with('X'))
    {
        return Err(format!("the leader process {pid} has exited"));
    }
    let uids = status_field(&status, "Uid:").unwrap_or_default();
    let owner = uids.first().copied().unwrap_or("?");
    if uids.len() != 4
        || uids
            .iter()
            .any(|u| u.parse::<u32>().ok() != Some(caller.uid))
    {
        return Err(format!(
            "the leader process {pid} runs as uid {owner}, not as you (uid {}); only your own VM process \
             can lead your machine",
            caller.uid
        ));
    }
    let parent = status_field(&status, "PPid:")
        .and_then(|v| v.first().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(0);
    if parent != caller.pid || caller.pid == 0 {
        return Err(format!(
            "the leader process {pid} is not your child (its parent is pid {parent}, you are pid {}); \
             only the VM process vmspawn started can lead your machine",
            caller.pid
        ));
    }
    // The parent pid is the caller's only if the caller is still the process it was.
    if caller
        .pidfd
        .is_some_and(|caller_pidfd| pidfd_pid(caller_pidfd) != Some(caller.pid))
    {
        return Err("the calling process has exited".into());
    }
    Ok(Leader { pid, pidfd })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::pidfd_open as pidfd_of;

    fn me() -> CallerProcess<'static> {
        CallerProcess {
            uid: nix::unistd::getuid().as_raw(),
            pid: std::process::id(),
            pidfd: None,
        }
    }

    #[test]
    fn own_child_is_accepted_and_tracked() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let leader = verify(pidfd_of(child.id()), &me()).unwrap();
        assert_eq!(leader.pid, child.id());
        assert!(leader.alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!leader.alive());
    }

    #[test]
    fn self_parent_and_reaped_child_are_refused() {
        let err = verify(pidfd_of(std::process::id()), &me()).err().unwrap();
        assert!(err.contains("helper itself"), "{err}");
        let parent = nix::unistd::getppid().as_raw() as u32;
        let err = verify(pidfd_of(parent), &me()).err().unwrap();
        assert!(
            err.contains("not your child") || err.contains("not as you"),
            "{err}"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = pidfd_of(child.id());
        // A zombie, then a reaped child whose pid may be reused.
        while std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .is_ok_and(|s| !s.contains("State:\tZ"))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let zombie = pidfd.try_clone().unwrap();
        let err = verify(zombie, &me()).err().unwrap();
        assert!(err.contains("exited"), "{err}");
        child.wait().unwrap();
        let err = verify(pidfd, &me()).err().unwrap();
        assert!(err.contains("exited"), "{err}");
    }

    #[test]
    fn a_non_pidfd_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = verify(OwnedFd::from(file), &me()).err().unwrap();
        assert!(err.contains("pidfd"), "{err}");
    }
}
