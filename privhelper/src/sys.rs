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
    // SAFETY: pidfd_open only reads its arguments; it returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    assert!(
        raw >= 0,
        "pidfd_open({pid}): {}",
        io::Error::last_os_error()
    );
    // SAFETY: the fd was just created and nothing else owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) }
}

pub fn inherited_fd(fd: i32) -> std::os::fd::OwnedFd {
    // SAFETY: the fd was passed to this process for its exclusive use; nothing else owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}
