//! The helper's only unsafe code: the TUN and interface ioctls. Each call passes a properly
//! initialised `ifreq` (or an integer) that lives for the whole call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// An `ifreq` naming `ifname`; the name must already be validated (< IFNAMSIZ, no NUL).
fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid interface name",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// SIOCBRADDIF from linux/sockios.h (the libc crate lacks it for glibc targets).
pub const SIOCBRADDIF: libc::c_ulong = 0x89a2;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// TUNSETIFF: creates the TAP `ifname` on an open /dev/net/tun fd. `IFF_TUN_EXCL` makes it
/// fail with EBUSY if an interface of that name exists, so an existing interface is never
/// taken over.
pub fn tun_create(tun: BorrowedFd<'_>, ifname: &str) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL)
            as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives on our stack for the call.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) })
}

/// TUNSETOWNER / TUNSETGROUP: the caller's uid and gid may use the device.
pub fn tun_set_owner(tun: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: both ioctls take an integer argument by value.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong) })?;
    // SAFETY: as above.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETGROUP, gid as libc::c_ulong) })
}

/// The interface index of `ifname`.
pub fn if_index(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<i32> {
    let mut req = ifreq(ifname)?;
    // SAFETY: SIOCGIFINDEX reads and writes one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) })?;
    // SAFETY: the kernel filled in the ifindex member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex })
}

/// Sets IFF_UP on `ifname`.
pub fn link_up(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    // SAFETY: SIOCGIFFLAGS reads and writes one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the kernel filled in the flags member of the union, which we update.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) })
}

/// SIOCBRADDIF: attaches interface `ifindex` to bridge `bridge`.
pub fn bridge_add(sock: BorrowedFd<'_>, bridge: &str, ifindex: i32) -> io::Result<()> {
    let mut req = ifreq(bridge)?;
    req.ifr_ifru.ifru_ifindex = ifindex;
    // SAFETY: SIOCBRADDIF reads one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRADDIF, &mut req) })
}

/// Removes every environment variable: in setuid mode the environment is the caller's.
/// VHOST_VSOCK_SET_GUEST_CID: `_IOW(VHOST_VIRTIO, 0x60, __u64)`.
pub const VHOST_VSOCK_SET_GUEST_CID: libc::c_ulong = 0x4008_af60;

/// Sets the guest CID of a vhost-vsock device fd (EADDRINUSE when another VM has it).
pub fn vhost_vsock_set_guest_cid(vsock: BorrowedFd<'_>, cid: u32) -> io::Result<()> {
    let cid = u64::from(cid);
    // SAFETY: the ioctl reads one u64 through the pointer, which is valid for the call.
    check(unsafe { libc::ioctl(vsock.as_raw_fd(), VHOST_VSOCK_SET_GUEST_CID, &cid) })
}

pub fn clear_environment() {
    let names: Vec<std::ffi::OsString> = std::env::vars_os().map(|(name, _)| name).collect();
    for name in names {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::remove_var(name) };
    }
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if not), so nothing we open later lands
/// on them and gets written to by accident.
pub fn ensure_stdio() -> io::Result<()> {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            let raw = std::os::fd::IntoRawFd::into_raw_fd(null);
            if raw != fd {
                // SAFETY: dup2 onto a free descriptor number, then close the temporary one.
                check(unsafe { libc::dup2(raw, fd) })?;
                // SAFETY: `raw` is ours and no longer needed.
                unsafe { libc::close(raw) };
            }
        }
    }
    Ok(())
}

/// Takes ownership of an fd this process was handed at exec time (socket activation, or the
/// socketpair end the launcher passes in setuid mode).
/// A pidfd of `pid`, for tests.
#[cfg(test)]
pub fn pidfd_open(pid: u32) -> std::os::fd::OwnedFd {
    match try_pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => panic!("pidfd_open({pid}): {e}"),
    }
}

/// A pidfd of `pid` (ESRCH when there is no such process).
pub fn try_pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open only reads its arguments; it returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw as i32) })
}

/// flock(2): `LOCK_EX` to take the lock (waiting for it), `LOCK_UN` to release it.
pub fn flock(file: BorrowedFd<'_>, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only takes an fd and an integer.
        match check(unsafe { libc::flock(file.as_raw_fd(), operation) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// SIOCGIFNAME: the name of interface `ifindex` (ENODEV when there is none).
pub fn if_name(sock: BorrowedFd<'_>, ifindex: i32) -> io::Result<String> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_ifindex = ifindex;
    // SAFETY: SIOCGIFNAME reads and writes one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFNAME, &mut req) })?;
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "interface name"))
}

/// Interface ioctls from linux/sockios.h.
pub const SIOCGIFNAME: libc::c_ulong = 0x8910;
pub const SIOCGIFMTU: libc::c_ulong = 0x8921;
pub const SIOCSIFMTU: libc::c_ulong = 0x8922;
pub const SIOCSIFHWADDR: libc::c_ulong = 0x8924;
pub const SIOCGIFHWADDR: libc::c_ulong = 0x8927;

/// The MTU of `ifname`.
pub fn mtu(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<i32> {
    let mut req = ifreq(ifname)?;
    // SAFETY: SIOCGIFMTU reads and writes one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFMTU, &mut req) })?;
    // SAFETY: the kernel filled in the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu })
}

/// Sets the MTU of `ifname`.
pub fn set_mtu(sock: BorrowedFd<'_>, ifname: &str, mtu: i32) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    req.ifr_ifru.ifru_mtu = mtu;
    // SAFETY: SIOCSIFMTU reads one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFMTU, &mut req) })
}

/// Sets the first byte of the MAC address of `ifname` to `first` (an Ethernet interface).
pub fn set_mac_first_byte(sock: BorrowedFd<'_>, ifname: &str, first: u8) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    // SAFETY: SIOCGIFHWADDR reads and writes one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: the kernel filled in the hwaddr member of the union (a sockaddr), which we
    // update in place and hand back.
    unsafe { req.ifr_ifru.ifru_hwaddr.sa_data[0] = first as libc::c_char };
    // SAFETY: SIOCSIFHWADDR reads one ifreq on our stack.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFHWADDR, &mut req) })
}

/// Fills `buf` from the kernel's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Closes every fd from 3 up except those in `keep` (setuid mode: nothing the caller passed
/// stays open but the serve fd).
pub fn close_fds_except(keep: &[i32]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep {
        if fd > first {
            // SAFETY: close_range only closes descriptors; the helper owns none of these in
            // Rust code (they are the caller's, or were inherited by a forked child).
            check(unsafe { libc::close_range(first, fd - 1, 0) })?;
        }
        first = fd + 1;
    }
    // SAFETY: as above, for every descriptor above the last one kept.
    check(unsafe { libc::close_range(first, u32::MAX, 0) })
}

/// fork(2). Only called while the helper has a single thread.
pub fn fork() -> io::Result<Option<u32>> {
    // SAFETY: the process has one thread (no lock can be held by another thread), and the
    // child only makes system calls and allocates before it exits.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some(p as u32)),
    }
}

pub fn inherited_fd(fd: i32) -> std::os::fd::OwnedFd {
    // SAFETY: the fd was passed to this process for its exclusive use; nothing else owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}
