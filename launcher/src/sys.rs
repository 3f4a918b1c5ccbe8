//! The launcher's only `unsafe` code: thin wrappers around system calls that nix and the
//! standard library do not offer safely, and the code that runs in a forked child between
//! fork and exec. Everything else in the crate is `#![deny(unsafe_code)]`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Standard input, which stays open for the whole life of the process.
pub fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is never closed by vmspawn.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

/// Standard output, which stays open for the whole life of the process.
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 is never closed by vmspawn.
    unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) }
}

fn owned(raw: libc::c_long) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller passes the result of a system call that just created this fd, so
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// A duplicate of `fd` numbered `min` or higher, close-on-exec.
pub fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads its integer arguments and returns a new fd.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) }.into())
}

/// A pidfd of process `pid` (our child, so the pid cannot have been reused while it is unreaped).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open only reads its integer arguments and returns a new fd.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })
}

/// Sends `signal` to the process behind `pidfd`; a process that has exited is not an error.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: integer arguments only; a NULL siginfo means "as kill(2) would".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    match rc {
        0 => Ok(()),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Fills `buf` from the kernel's random number generator.
pub fn getrandom(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let tail = &mut buf[filled..];
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let got = unsafe { libc::getrandom(tail.as_mut_ptr().cast(), tail.len(), 0) };
        if got > 0 {
            filled += got as usize;
        }
    }
}

/// The kernel's Landlock ABI version, 0 when Landlock is unavailable.
pub fn landlock_abi() -> i32 {
    // SAFETY: with a NULL attribute, size 0 and the VERSION flag, the call only returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, /* LANDLOCK_CREATE_RULESET_VERSION */
        )
    };
    if version < 0 { 0 } else { version as i32 }
}

/// The window size of the terminal `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

/// Accepts a connection on a listening socket, non-blocking and close-on-exec.
pub fn accept_nonblocking(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: no address is asked for (null pointers are allowed); on success the kernel
    // returns a new fd that nothing else owns.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VHOST_VSOCK_SET_GUEST_CID`, `_IOW(0xAF, 0x60, __u64)`.
const VHOST_VSOCK_SET_GUEST_CID: libc::c_ulong = 0x4008_af60;

/// Sets the guest CID of a vhost-vsock device; EADDRINUSE when another VM has it.
pub fn vhost_vsock_set_guest_cid(vsock: BorrowedFd<'_>, cid: u32) -> io::Result<()> {
    let cid = u64::from(cid);
    // SAFETY: the ioctl reads one u64 through the pointer, which is valid for the call.
    if unsafe { libc::ioctl(vsock.as_raw_fd(), VHOST_VSOCK_SET_GUEST_CID, &cid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we pass.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) };
}

/// Names the calling thread (what `ps` and /proc/PID/comm show), at most 15 bytes.
pub fn set_process_name(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Forks; the child runs `child` and exits with its status without returning (no destructors,
/// no atexit handlers of the parent's state). Returns the child's pid in the parent.
///
/// The launcher is single-threaded when it calls this, so the child inherits no lock held by
/// another thread.
pub fn fork_child(child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: see above: no other thread exists, so the child's memory is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = child();
            // SAFETY: _exit never returns and runs nothing of the parent's.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

/// Takes ownership of fd `number`, which socket activation passed to this process, and marks
/// it close-on-exec. Fails if no such fd is open.
pub fn adopt_passed_fd(number: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on any number is harmless; F_GETFD fails with EBADF when it is not open.
    let flags = unsafe { libc::fcntl(number, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(number, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open, and nothing else in this process owns it: it was inherited for
    // vmspawn, and this is called once per passed fd, before anything else opens fds.
    Ok(unsafe { OwnedFd::from_raw_fd(number) })
}

/// What a forked child does between fork and exec, decided in the parent so the child only
/// makes async-signal-safe system calls.
pub struct ChildSetup {
    /// Become the leader of a new process group (so the terminal's Ctrl-C reaches only vmspawn).
    pub own_process_group: bool,
    /// Sent to the child when vmspawn dies.
    pub death_signal: i32,
    /// vmspawn's pid: if it died before the death signal was set, the child must not run on.
    pub parent: libc::pid_t,
    /// (source, target): each source is dup2'ed onto its target number; sources are above
    /// every target, so no dup2 overwrites a source still needed.
    pub fds: Vec<(RawFd, RawFd)>,
    /// Every fd from this number up is closed at exec (stdio and `fds` are below it).
    pub close_from: RawFd,
    /// Enter the Landlock domain `ruleset` (a ruleset fd; None when the kernel has none) and
    /// install the seccomp `filters` last.
    pub confined: bool,
    pub ruleset: Option<RawFd>,
    pub filters: Vec<seccompiler::BpfProgram>,
    /// Exec this instead of the Command's own program, with `LISTEN_PID` set to the child's
    /// pid (socket activation: the pid is known only after fork).
    pub exec: Option<ListenPidExec>,
}

/// A program, its argv and its environment, prepared in the parent so the child only writes
/// its pid into one preallocated entry and calls execve.
pub struct ListenPidExec {
    program: std::ffi::CString,
    _argv: Vec<std::ffi::CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<std::ffi::CString>,
    /// "LISTEN_PID=" followed by room for the digits and the terminating NUL.
    listen_pid: Vec<u8>,
    envp_ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into buffers this struct owns and never reallocates; the child
// that uses them is a single thread after fork.
unsafe impl Send for ListenPidExec {}
// SAFETY: as above; nothing mutates it except the forked child, which owns its own copy.
unsafe impl Sync for ListenPidExec {}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

impl ListenPidExec {
    /// `env` are NAME=VALUE entries (without LISTEN_PID). Fails on a NUL byte in any word.
    pub fn new(
        program: &std::ffi::OsStr,
        argv: &[&std::ffi::OsStr],
        env: &[std::ffi::OsString],
    ) -> io::Result<ListenPidExec> {
        use std::os::unix::ffi::OsStrExt;
        let c = |s: &std::ffi::OsStr| {
            std::ffi::CString::new(s.as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
        };
        let program = c(program)?;
        let argv: Vec<std::ffi::CString> = argv.iter().map(|a| c(a)).collect::<io::Result<_>>()?;
        let envp: Vec<std::ffi::CString> = env.iter().map(|e| c(e)).collect::<io::Result<_>>()?;
        let mut listen_pid = LISTEN_PID_PREFIX.to_vec();
        listen_pid.resize(LISTEN_PID_PREFIX.len() + 11, 0);
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(listen_pid.as_ptr().cast());
        envp_ptrs.push(std::ptr::null());
        Ok(ListenPidExec {
            program,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            listen_pid,
            envp_ptrs,
        })
    }

    /// In the forked child: writes its pid into LISTEN_PID= and execs; returns only on failure.
    fn exec(&mut self) -> io::Error {
        // SAFETY: getpid has no preconditions.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; 10];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        let start = LISTEN_PID_PREFIX.len();
        for i in 0..n {
            self.listen_pid[start + i] = digits[n - 1 - i];
        }
        self.listen_pid[start + n] = 0;
        // SAFETY: program, argv and envp are NUL-terminated strings in NULL-terminated arrays,
        // all owned by self, which outlives the call.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
        }
        io::Error::last_os_error()
    }
}

/// The signal systemd sends to ask for a shutdown (`systemctl halt` in a container, and what 259
/// handles like SIGTERM): SIGRTMIN+4. nix's `Signal` has no real-time signals.
pub fn sigrtmin_plus_4() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Adds a signal nix's `Signal` cannot name (a real-time one) to `set`.
pub fn add_raw_signal(set: &mut nix::sys::signal::SigSet, signal: libc::c_int) {
    let mut raw = *set.as_ref();
    // SAFETY: `raw` is an initialised sigset_t (a copy of `set`'s); sigaddset only fails for an
    // invalid signal number, which leaves it unchanged.
    unsafe {
        libc::sigaddset(&mut raw, signal);
        *set = nix::sys::signal::SigSet::from_sigset_t_unchecked(raw);
    }
}

/// Arranges for `cmd`'s child to carry out `setup` right before exec.
pub fn set_child_setup(cmd: &mut Command, mut setup: ChildSetup) {
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // system calls (sigprocmask, setpgid, prctl, dup2, fcntl, close_range, landlock, seccomp,
    // getpid, execve); it allocates nothing (the filter was compiled and the exec prepared in
    // the parent).
    unsafe {
        cmd.pre_exec(move || {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if setup.own_process_group {
                libc::setpgid(0, 0);
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, setup.death_signal as libc::c_ulong);
            if setup.death_signal != 0 && libc::getppid() != setup.parent {
                // vmspawn was killed between fork and prctl: nobody would stop this process.
                libc::_exit(1);
            }
            for &(source, target) in &setup.fds {
                if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Nothing the plan does not list reaches the program. Marked close-on-exec rather
            // than closed, so the standard library can still report a failed exec.
            if libc::syscall(
                libc::SYS_close_range,
                setup.close_from as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if setup.confined {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = setup.ruleset
                    && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for filter in &setup.filters {
                    seccompiler::apply_filter(filter)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                }
            }
            if let Some(exec) = &mut setup.exec {
                return Err(exec.exec());
            }
            Ok(())
        });
    }
}

/// The names of the extended attributes of `path` (not following a symlink).
pub fn list_xattrs(path: &std::ffi::CStr) -> io::Result<Vec<std::ffi::CString>> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the size the list needs.
        let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // it grew meanwhile
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .filter_map(|n| std::ffi::CString::new(n).ok())
            .collect());
    }
}

/// The value of the extended attribute `name` of `path` (not following a symlink).
pub fn get_xattr(path: &std::ffi::CStr, name: &std::ffi::CStr) -> io::Result<Vec<u8>> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the value's size.
        let size =
            unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

/// Sets the extended attribute `name` of `path` (not following a symlink) to `value`.
pub fn set_xattr(path: &std::ffi::CStr, name: &std::ffi::CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: value is readable for value.len() bytes; the strings are NUL-terminated.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling (single-threaded) process into a new user namespace.
pub fn unshare_user_namespace() -> io::Result<()> {
    // SAFETY: an integer argument only.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
