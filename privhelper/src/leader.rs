//! The leader of a machine a caller registers must be the caller's VM process: the QEMU that
//! vmspawn started. A caller must never get its shell, its parent, a copy of itself or
//! another user's process registered (systemd 258-rc had that hole). The leader arrives as a
//! pidfd, so a pid reused after the process exited is never taken for it: /proc is read only
//! between two checks that the pidfd still names a live process with that pid.
//!
//! What the helper checks is what the kernel says in /proc/PID/stat and /proc/PID/status,
//! which every process may read: the leader runs as the caller (all four uids), its parent is
//! the caller (pinned by the caller's pidfd), it has called execve since it was forked
//! (PF_FORKNOEXEC is clear: it is not a copy of the caller), and the name execve gave it is a
//! QEMU system emulator's (`qemu-system-*`, `qemu-kvm`, `qemu`, the names vmspawn runs).
//! The executable itself (/proc/PID/exe) cannot be checked: reading it needs ptrace access,
//! which Landlock refuses for any process outside the helper's domain, and the service has no
//! CAP_SYS_PTRACE (it must not). The name is the process's to change (PR_SET_NAME, or execve
//! of any program under a QEMU name), so it refuses mistaken and naive requests, not a caller
//! set on lying; nothing could, since the caller is its leader's parent and user and may
//! ptrace it. What bounds such a caller is what machined does for a `vm`: see machined.rs.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::process::pidfd_pid;

/// A verified leader: its pid, pinned by its pidfd.
pub struct Leader {
    pub pid: u32,
    pidfd: OwnedFd,
}

impl Leader {
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

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

/// PF_FORKNOEXEC (linux/sched.h): forked, and has not called execve since.
const PF_FORKNOEXEC: u64 = 0x40;

/// The command name (which execve sets from the program's file name, up to 15 bytes) and the
/// flags of /proc/PID/stat.
fn stat_fields(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    // The fields after the name start with the state (field 3); the flags are field 9.
    let flags = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some((comm, flags))
}

/// Whether `comm` is the name execve gives a QEMU that vmspawn runs (qemu-system-ARCH,
/// truncated to 15 bytes, qemu-kvm or qemu).
pub fn is_qemu_name(comm: &str) -> bool {
    comm == "qemu" || comm == "qemu-kvm" || comm.starts_with("qemu-system-")
}

/// Checks that `pidfd` names a live process that runs as `caller.uid` (real, effective, saved
/// and filesystem uid), whose parent is the caller, that has run a program since it was
/// forked, and whose name is QEMU's; and that it is not this helper.
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
    let open = |file: &str| {
        std::fs::File::open(format!("/proc/{pid}/{file}"))
            .map_err(|e| format!("cannot inspect the leader process {pid}: {e}"))
    };
    let (mut status_file, mut stat_file) = (open("status")?, open("stat")?);
    // Opened while the pidfd still named this pid: the files are that process's.
    if pidfd_pid(pidfd.as_fd()) != Some(pid) {
        return Err(format!("the leader process {pid} exited during the check"));
    }
    let (mut status, mut stat) = (String::new(), String::new());
    status_file
        .read_to_string(&mut status)
        .and_then(|_| stat_file.read_to_string(&mut stat))
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
    let Some((comm, flags)) = stat_fields(&stat) else {
        return Err(format!(
            "cannot inspect the leader process {pid}: unexpected /proc/{pid}/stat"
        ));
    };
    if flags & PF_FORKNOEXEC != 0 {
        return Err(format!(
            "the leader process {pid} has not started a program since you forked it (it is a \
             copy of you, not a VM); only the QEMU process vmspawn started can lead your machine"
        ));
    }
    if !is_qemu_name(comm) {
        return Err(format!(
            "the leader process {pid} runs '{comm}', which is not QEMU (qemu-system-*, qemu-kvm \
             or qemu); only the QEMU process vmspawn started can lead your machine"
        ));
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

    /// A QEMU that does nothing until it is killed.
    fn idle_qemu() -> std::process::Child {
        std::process::Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none", "-S"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("QEMU (qemu-system-x86) must be installed for this test")
    }

    #[test]
    fn own_qemu_child_is_accepted_and_tracked() {
        let mut child = idle_qemu();
        let leader = verify(pidfd_of(child.id()), &me()).unwrap();
        assert_eq!(leader.pid, child.id());
        assert!(leader.alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!leader.alive());
    }

    #[test]
    fn a_child_that_is_not_qemu_is_refused() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let err = verify(pidfd_of(child.id()), &me()).err().unwrap();
        assert!(err.contains("runs 'sleep', which is not QEMU"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_forked_copy_of_the_caller_is_refused() {
        let Some(pid) = crate::sys::fork().unwrap() else {
            // The child: a copy of the test process that never calls execve.
            loop {
                nix::unistd::pause();
            }
        };
        let err = verify(pidfd_of(pid), &me()).err().unwrap();
        let child = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        assert!(
            err.contains("has not started a program since you forked it"),
            "{err}"
        );
    }

    #[test]
    fn stat_lines_and_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194368 1 0 0 0";
        assert_eq!(stat_fields(stat), Some(("a) b (c)", 4194368)));
        assert_eq!(stat_fields("42 (x"), None);
        assert!(is_qemu_name("qemu-system-x86"));
        assert!(is_qemu_name("qemu-kvm"));
        assert!(!is_qemu_name("qemu-img"));
        assert!(!is_qemu_name("bash"));
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
