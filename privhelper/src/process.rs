//! Who a process is, from the kernel: pids through pidfds, so a pid that was reused after its
//! process exited is never taken for that process.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use vmspawn_proto::wire;

/// The start time of `pid` (field 22 of /proc/PID/stat), which polkit compares to detect a
/// reused pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are plain.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The pid a pidfd refers to (from /proc/self/fdinfo), None once that process is gone.
pub fn pidfd_pid(pidfd: BorrowedFd<'_>) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    let pid: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    u32::try_from(pid).ok().filter(|&p| p > 0)
}

/// A process's pid and start time, through its pidfd: the pidfd pins the process, so if it
/// still refers to the same live pid after the start time was read, that start time is this
/// process's and not a later one's that reused the pid.
pub fn identify(pidfd: BorrowedFd<'_>) -> Option<(u32, u64)> {
    let pid = pidfd_pid(pidfd)?;
    let start = start_time(pid)?;
    (pidfd_pid(pidfd) == Some(pid)).then_some((pid, start))
}

/// The process at the other end of `sock`: pid, start time and pidfd (SO_PEERPIDFD). A
/// caller whose pidfd no longer names a live process gets pid 0 (nothing will accept it);
/// only a kernel without SO_PEERPIDFD makes the helper fall back to SO_PEERCRED's pid.
pub fn peer_process(sock: BorrowedFd<'_>) -> (u32, Option<u64>, Option<Arc<OwnedFd>>) {
    match wire::peer_pidfd(sock) {
        Ok(pidfd) => match identify(pidfd.as_fd()) {
            Some((pid, start)) => (pid, Some(start), Some(Arc::new(pidfd))),
            None => (0, None, None),
        },
        Err(_) => {
            let pid = wire::peer_credentials(sock)
                .map_or(0, |(_, _, pid)| u32::try_from(pid).unwrap_or(0));
            (pid, start_time(pid), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_through_a_pidfd() {
        let pidfd = crate::sys::pidfd_open(std::process::id());
        let (pid, start) = identify(pidfd.as_fd()).unwrap();
        assert_eq!(pid, std::process::id());
        assert_eq!(Some(start), start_time(pid));
    }

    #[test]
    fn start_time_of_ourselves() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn peer_process_of_a_socketpair() {
        let (ours, _theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (pid, start, pidfd) = peer_process(ours.as_fd());
        assert_eq!(pid, std::process::id());
        assert_eq!(start, start_time(pid));
        assert!(pidfd.is_some());
    }
}
