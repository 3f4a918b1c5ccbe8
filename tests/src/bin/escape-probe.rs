//! Stands in for `qemu-system-x86_64` (the tests put it first in $PATH), so it runs with exactly
//! QEMU's confinement, and tries to break out. One line per attempt on stdout:
//! `PROBE <name> blocked <errno>` or `PROBE <name> ESCAPED`. Positive controls — things QEMU must
//! still be able to do — print `PROBE <name> ok` or `PROBE <name> FAILED <errno>`.
//! Targets come from `-probe KEY=VALUE` words on the command line: the test passes them in
//! $SYSTEMD_VMSPAWN_QEMU_EXTRA, whose words vmspawn appends to QEMU's argv (QEMU's environment
//! is built from nothing, so it cannot carry them). The probe also reports the names of the
//! variables in its environment, so the test can check that none of the user's session
//! reached it.
//!
//! With `-probe MODE=stub` it is a stub QEMU instead, for tests that start many VMs: it prints
//! `STUB-EXEC <CLOCK_MONOTONIC ns>` when it runs, answers QMP on the fd vmspawn passed, and
//! exits when asked to power off (or when killed); see `stub_main`.
//!
//! Asked `-display help`, `-device help` or `-chardev help` (vmspawn does, for `--console=gui`),
//! it answers as a QEMU with the GTK display, the gui devices and qemu-vdagent. Given an
//! `X11_SOCKET` target (the gui plan), it also tries the display's paths and the ones next to
//! them.
//!
//! Copied as `swtpm` (and `swtpm_setup`), it stands in for the TPM sidecar instead; see
//! `swtpm_main`. Copied as `virtiofsd`, it stands in for the virtio-fs sidecar; see
//! `virtiofsd_main`.

use std::ffi::CString;
use std::io::Write;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOTTY => "ENOTTY".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::EIO => "EIO".into(),
        other => format!("errno{other}"),
    }
}

fn report(name: &str, rc: i64) {
    let line = if rc < 0 {
        format!("PROBE {name} blocked {}", errno_name(errno()))
    } else {
        format!("PROBE {name} ESCAPED")
    };
    println!("{line}");
}

fn control(name: &str, rc: i64) {
    let line = if rc < 0 {
        format!("PROBE {name} FAILED {}", errno_name(errno()))
    } else {
        format!("PROBE {name} ok")
    };
    println!("{line}");
}

/// A raw system call with pointers to live memory or null/invalid values only.
fn sys(nr: i64, args: [i64; 6]) -> i64 {
    // SAFETY: callers pass only pointers to live, NUL-terminated strings or null/invalid values.
    unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in path")
}

/// The probe's targets: the `-probe KEY=VALUE` pairs of its command line.
struct Targets(Vec<(String, String)>);

impl Targets {
    fn from_args(args: &[String]) -> Targets {
        let mut pairs = Vec::new();
        for pair in args.windows(2) {
            if pair[0] == "-probe"
                && let Some((key, value)) = pair[1].split_once('=')
            {
                pairs.push((key.to_string(), value.to_string()));
            }
        }
        Targets(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no '-probe {key}=...' on the command line"))
    }
}

/// Runs `f` with errno preserved across the cleanup that follows it.
fn keep_errno<T>(value: T, cleanup: impl FnOnce()) -> T {
    let saved = errno();
    cleanup();
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = saved };
    value
}

/// Closes `fd` if it is one, keeping errno.
fn close_keep_errno(fd: i64) {
    if fd >= 0 {
        keep_errno((), || {
            // SAFETY: closing an fd this probe opened.
            unsafe { libc::close(fd as i32) };
        });
    }
}

/// `socket(domain, kind | SOCK_CLOEXEC, protocol)`, then `then(fd)` if that worked; the fd is
/// closed afterwards. Returns socket()'s result if it failed (errno from socket()), else
/// then's, so a blocked socket() shows its own errno rather than a later EBADF.
fn with_socket(domain: i32, kind: i32, protocol: i32, then: impl FnOnce(i32) -> i64) -> i64 {
    // SAFETY: socket() has no memory arguments.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return -1;
    }
    let rc = then(fd);
    close_keep_errno(fd.into());
    rc
}

/// connect() to a Unix socket: a path, or an abstract name (`abstract_name`).
fn connect_unix(name: &str, abstract_name: bool) -> i64 {
    with_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0, |fd| {
        // SAFETY: a zeroed sockaddr_un we fill in within its bounds.
        unsafe {
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as u16;
            let offset = usize::from(abstract_name);
            let bytes = name.as_bytes();
            assert!(offset + bytes.len() < addr.sun_path.len(), "name too long");
            for (i, b) in bytes.iter().enumerate() {
                addr.sun_path[i + offset] = *b as libc::c_char;
            }
            let len = (std::mem::size_of::<libc::sa_family_t>() + offset + bytes.len()) as u32;
            libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) as i64
        }
    })
}

fn loopback(port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as u16;
    addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    addr.sin_port = port.to_be();
    addr
}

/// TCP on 127.0.0.1: bind to `port`, or connect to it.
fn tcp(port: u16, bind: bool) -> i64 {
    with_socket(libc::AF_INET, libc::SOCK_STREAM, 0, |fd| {
        let addr = loopback(port);
        let ptr = (&addr as *const libc::sockaddr_in).cast();
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        // SAFETY: a valid sockaddr_in and its length.
        (unsafe {
            if bind {
                libc::bind(fd, ptr, len)
            } else {
                libc::connect(fd, ptr, len)
            }
        }) as i64
    })
}

/// One UDP datagram to 127.0.0.1:`port`.
fn udp_sendto(port: u16) -> i64 {
    with_socket(libc::AF_INET, libc::SOCK_DGRAM, 0, |fd| {
        let addr = loopback(port);
        let message = b"escape-probe";
        // SAFETY: a live buffer and a valid sockaddr_in with their lengths.
        (unsafe {
            libc::sendto(
                fd,
                message.as_ptr().cast(),
                message.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        }) as i64
    })
}

/// The outcome of a fork()ed attempt: the child exits with 0 when the attempt worked and with
/// its errno when it did not.
fn child_verdict(pid: i32) -> String {
    if pid < 0 {
        return format!("blocked {}", errno_name(errno()));
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
        format!("blocked {}", errno_name(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS {
        // A seccomp filter whose action kills the calling thread.
        "blocked SIGSYS".to_string()
    } else {
        "ESCAPED".to_string()
    }
}

/// A new process in a new user namespace: `clone(CLONE_NEWUSER)` (`clone3` false) or
/// `clone3` with CLONE_NEWUSER. Neither shares memory with the probe (no CLONE_VM, no new
/// stack: the child runs on a copy of this stack, as after fork), and a child that comes to
/// exist leaves at once through exit_group, so success cannot disturb the probe.
fn clone_new_user(clone3: bool) -> String {
    let flags = libc::CLONE_NEWUSER as u64;
    let rc = if clone3 {
        // struct clone_args (CLONE_ARGS_SIZE_VER2: 11 u64 fields).
        let mut args = [0u64; 11];
        args[0] = flags;
        args[4] = libc::SIGCHLD as u64; // exit_signal
        // SAFETY: a live clone_args of the size passed; fork-like semantics (see above).
        unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88usize) }
    } else {
        // x86-64 argument order: flags, stack, parent_tid, child_tid, tls.
        // SAFETY: no stack and no tid pointers: fork-like semantics (see above).
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as u64,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        }
    };
    if rc == 0 {
        // The child: leave without running anything of the parent's.
        // SAFETY: exit_group never returns.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
        unreachable!();
    }
    child_verdict(rc as i32)
}

/// TIOCSTI on the console (stdin): pushes a character into the terminal's input as if it had
/// been typed. The kernel only allows it on one's controlling terminal (or with
/// CAP_SYS_ADMIN), so a child first makes the console its controlling terminal in a new
/// session, as a compromised QEMU could; then the only thing left to stop it is QEMU's seccomp.
fn tiocsti_console() -> String {
    // SAFETY: the child only makes async-signal-safe calls and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; the byte lives on this stack.
        unsafe {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            let byte: libc::c_char = b' ' as libc::c_char;
            let rc = libc::ioctl(0, libc::TIOCSTI, &byte);
            libc::_exit(if rc < 0 { errno() } else { 0 });
        }
    }
    child_verdict(pid)
}

fn pidfd_open(pid: i64) -> i64 {
    sys(libc::SYS_pidfd_open, [pid, 0, 0, 0, 0, 0])
}

/// pidfd_open(launcher) and pidfd_getfd of its fd 0: a copy of one of the launcher's fds.
fn pidfd_getfd_launcher(launcher: i64) -> i64 {
    let pidfd = pidfd_open(launcher);
    if pidfd < 0 {
        return pidfd;
    }
    let fd = sys(libc::SYS_pidfd_getfd, [pidfd, 0, 0, 0, 0, 0]);
    close_keep_errno(fd);
    close_keep_errno(pidfd);
    fd
}

/// process_madvise(MADV_COLD) on a page of this probe's own, through a pidfd of itself.
fn process_madvise_self() -> i64 {
    // SAFETY: an anonymous private mapping of one page, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return -1;
    }
    // SAFETY: getpid has no arguments.
    let pidfd = pidfd_open(unsafe { libc::getpid() }.into());
    let rc = if pidfd < 0 {
        pidfd
    } else {
        let iov = libc::iovec {
            iov_base: page,
            iov_len: 4096,
        };
        let rc = sys(
            libc::SYS_process_madvise,
            [
                pidfd,
                (&iov as *const libc::iovec) as i64,
                1,
                20, /* MADV_COLD */
                0,
                0,
            ],
        );
        close_keep_errno(pidfd);
        rc
    };
    keep_errno((), || {
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(page, 4096) };
    });
    rc
}

/// mount(2) of a tmpfs on a new directory in the runtime directory. Where it works (root,
/// unconfined), it is unmounted again at once, so nothing of the host is ever covered.
fn mount_tmpfs(runtime_dir: &str) -> i64 {
    let dir = cstr(&format!("{runtime_dir}/probe-mnt"));
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::mkdir(dir.as_ptr(), 0o700) };
    let rc = sys(
        libc::SYS_mount,
        [
            c"none".as_ptr() as i64,
            dir.as_ptr() as i64,
            c"tmpfs".as_ptr() as i64,
            0,
            0,
            0,
        ],
    );
    keep_errno((), || {
        // SAFETY: valid NUL-terminated paths.
        unsafe {
            if rc == 0 {
                libc::umount2(dir.as_ptr(), libc::MNT_DETACH);
            }
            libc::rmdir(dir.as_ptr());
        }
    });
    rc
}

/// io_uring_setup with one entry; the ring is closed again if it was created.
fn io_uring_setup() -> i64 {
    // struct io_uring_params is 120 bytes; all zero asks for the defaults.
    let mut params = [0u8; 120];
    let fd = sys(
        libc::SYS_io_uring_setup,
        [1, params.as_mut_ptr() as i64, 0, 0, 0, 0],
    );
    close_keep_errno(fd);
    fd
}

/// personality(ADDR_NO_RANDOMIZE) (turning off ASLR for what it runs next); the old
/// persona is put back if the change went through.
fn personality_change() -> i64 {
    // SAFETY: personality only takes a number; 0xffffffff queries.
    let old = unsafe { libc::personality(0xffff_ffff) };
    // SAFETY: as above.
    let rc = unsafe { libc::personality(old as libc::c_ulong | 0x0040000) };
    if rc >= 0 {
        // SAFETY: as above.
        unsafe { libc::personality(old as libc::c_ulong) };
    }
    rc as i64
}

/// AF_VSOCK: a socket, bound to VMADDR_CID_ANY (a local operation). Not connected: the test
/// machines have no vsock loopback, so a connect, even to VMADDR_CID_LOCAL, would go out to
/// the machine's own hypervisor. Creating the socket is the escape; seccomp stops socket().
fn vsock() -> i64 {
    with_socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0, |fd| {
        // SAFETY: sockaddr_vm is plain data.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as u16;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        addr.svm_port = libc::VMADDR_PORT_ANY;
        // SAFETY: a valid sockaddr_vm and its length.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as u32,
            )
        };
        let result = if rc < 0 {
            errno_name(errno())
        } else {
            "bound".into()
        };
        println!("PROBE detail vsock-bind {result}");
        0
    })
}

fn open(path: &str, flags: i32) -> i64 {
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(cstr(path).as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd >= 0 {
        // SAFETY: closing the fd we just opened.
        unsafe { libc::close(fd) };
    }
    fd as i64
}

/// The value of `key=` inside the QEMU option that follows `flag` and contains `needle`.
fn qemu_option_value(args: &[String], needle: &str, key: &str) -> Option<String> {
    args.iter().find(|a| a.contains(needle)).and_then(|a| {
        a.split(',')
            .find_map(|part| part.strip_prefix(key).map(str::to_string))
    })
}

/// The file name this probe was started as (argv[0], else the executable's name).
fn invoked_as(args: &[String]) -> String {
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let from_argv = args
        .first()
        .map(|a| name(std::path::Path::new(a)))
        .unwrap_or_default();
    if from_argv == "swtpm" || from_argv == "swtpm_setup" || from_argv == "virtiofsd" {
        return from_argv;
    }
    std::env::current_exe()
        .map(|p| name(&p))
        .unwrap_or(from_argv)
}

/// Forks; the child runs `/bin/sh -c 'exit 0'` and reports how that went.
fn exec_shell() -> String {
    // SAFETY: the child only calls execve and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let (sh, dash_c, script) = (cstr("/bin/sh"), cstr("-c"), cstr("exit 0"));
        let argv = [
            sh.as_ptr(),
            dash_c.as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        // SAFETY: valid argv/envp arrays.
        unsafe {
            libc::execve(sh.as_ptr(), argv.as_ptr(), [std::ptr::null()].as_ptr());
            libc::_exit(errno());
        }
    }
    child_verdict(pid)
}

/// The probe as the swtpm sidecar. The sidecar gets a clean environment, so its targets come
/// from its own command line: the state directory from `--tpmstate dir=PATH`; the test puts the
/// canary `canary` in PATH's parent, which swtpm's rules do not cover. It prints its report on
/// stdout (inherited from vmspawn) and exits without ever answering on its control socket, so
/// vmspawn fails with "... before it was ready".
fn swtpm_main(args: &[String]) {
    // vmspawn asks for the capabilities while looking at the host (unconfined): no attempts
    // then, and no seccomp profile to offer.
    if args.iter().any(|a| a == "--print-capabilities") {
        println!(r#"{{ "type": "swtpm", "features": [], "version": "0.7.1" }}"#);
        return;
    }
    let state = args
        .iter()
        .position(|a| a == "--tpmstate")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--tpmstate=").map(str::to_string))
        })
        .and_then(|value| {
            value
                .split(',')
                .find_map(|part| part.strip_prefix("dir=").map(str::to_string))
        });
    let Some(state) = state else {
        println!("PROBE swtpm-without-tpmstate {args:?}");
        println!("PROBE end");
        let _ = std::io::stdout().flush();
        return;
    };
    let parent = std::path::Path::new(&state)
        .parent()
        .expect("state directory has a parent")
        .to_str()
        .unwrap()
        .to_string();

    // Positive control: swtpm keeps its state.
    control(
        "create-file-in-state-dir",
        open(
            &format!("{state}/probe-scratch"),
            libc::O_CREAT | libc::O_WRONLY,
        ),
    );

    report(
        "read-canary",
        open(&format!("{parent}/canary"), libc::O_RDONLY),
    );
    report(
        "write-outside-state-dir",
        open(&format!("{parent}/escaped"), libc::O_CREAT | libc::O_WRONLY),
    );
    report("read-etc-passwd", open("/etc/passwd", libc::O_RDONLY));
    report("read-etc-shadow", open("/etc/shadow", libc::O_RDONLY));
    report("read-root-home", open("/root/.profile", libc::O_RDONLY));
    // SAFETY: getppid has no arguments.
    let launcher = unsafe { libc::getppid() };
    report(
        "read-launcher-environ",
        open(&format!("/proc/{launcher}/environ"), libc::O_RDONLY),
    );
    println!("PROBE exec-shell {}", exec_shell());
    let attached = sys(
        libc::SYS_ptrace,
        [libc::PTRACE_ATTACH.into(), launcher.into(), 0, 0, 0, 0],
    );
    report("ptrace-launcher", attached);
    if attached == 0 {
        sys(
            libc::SYS_wait4,
            [launcher.into(), 0, libc::__WALL.into(), 0, 0, 0],
        );
        sys(
            libc::SYS_ptrace,
            [libc::PTRACE_DETACH.into(), launcher.into(), 0, 0, 0, 0],
        );
    }

    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    println!("PROBE environment [{}]", names.join(","));
    // SAFETY: prctl queries and getuid have no memory arguments.
    let (uid, nnp, seccomp) = unsafe {
        (
            libc::getuid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0),
        )
    };
    println!("PROBE status uid={uid} no_new_privs={nnp} seccomp={seccomp}");
    println!("PROBE end");
    let _ = std::io::stdout().flush();
}

/// The value of a `--NAME VALUE` or `--NAME=VALUE` option.
fn option_value(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
        })
}

/// The probe as virtiofsd. vmspawn first runs `virtiofsd --help` unconfined (with a clean
/// environment, while it looks at the host) to learn which options it has: the probe then
/// prints a help text naming the options vmspawn looks for and makes no attempts. In the real
/// run (confined, `--fd=3 --shared-dir DIR ...`) it takes its targets from its command line:
/// the share is `--shared-dir`; the test puts the canary `canary`, the directory
/// `other-user/` (a world-readable file `file` of another user) and nothing else in the
/// share's parent, which the share's rules do not cover. It prints its report on stdout
/// (inherited from vmspawn) and exits without serving the vhost-user socket, so the VM
/// cannot start.
fn virtiofsd_main(args: &[String]) {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "virtiofsd backend (escape probe)\n\nUsage: virtiofsd [OPTIONS]\n\nOptions:\n  \
             --shared-dir <SHARED_DIR>\n  --readonly\n  --sandbox <SANDBOX>\n  --fd <FD>\n  \
             --xattr\n  --no-announce-submounts\n  --log-level <LOG_LEVEL>\n  \
             --inode-file-handles <INODE_FILE_HANDLES>\n  --translate-uid <TRANSLATE_UID>\n  \
             --translate-gid <TRANSLATE_GID>\n  -h, --help"
        );
        return;
    }
    let Some(share) = option_value(args, "--shared-dir") else {
        println!("PROBE virtiofsd-without-shared-dir {args:?}");
        println!("PROBE end");
        let _ = std::io::stdout().flush();
        return;
    };
    let share = share.trim_end_matches('/').to_string();
    let read_only = args.iter().any(|a| a == "--readonly");
    let parent = std::path::Path::new(&share)
        .parent()
        .expect("the share has a parent")
        .to_str()
        .unwrap()
        .to_string();
    println!(
        "PROBE share {share} {}",
        if read_only { "read-only" } else { "read-write" }
    );

    // Positive controls: what virtiofsd needs keeps working.
    control(
        "read-file-in-share",
        open(&format!("{share}/inside"), libc::O_RDONLY),
    );
    if read_only {
        report(
            "write-in-read-only-share",
            open(
                &format!("{share}/probe-scratch"),
                libc::O_CREAT | libc::O_WRONLY,
            ),
        );
    } else {
        control(
            "create-file-in-share",
            open(
                &format!("{share}/probe-scratch"),
                libc::O_CREAT | libc::O_WRONLY,
            ),
        );
    }
    // Each virtiofsd thread unshares its working directory (CLONE_FS): no namespace.
    control(
        "unshare-fs",
        sys(libc::SYS_unshare, [libc::CLONE_FS.into(), 0, 0, 0, 0, 0]),
    );

    // Filesystem (Landlock): only the share.
    report(
        "read-canary",
        open(&format!("{parent}/canary"), libc::O_RDONLY),
    );
    report(
        "write-outside-share",
        open(&format!("{parent}/escaped"), libc::O_CREAT | libc::O_WRONLY),
    );
    report(
        "read-other-users-file",
        open(&format!("{parent}/other-user/file"), libc::O_RDONLY),
    );
    report("read-etc-passwd", open("/etc/passwd", libc::O_RDONLY));
    report("read-etc-shadow", open("/etc/shadow", libc::O_RDONLY));
    report("read-root-home", open("/root/.profile", libc::O_RDONLY));
    // SAFETY: getppid has no arguments.
    let launcher = unsafe { libc::getppid() };
    report(
        "read-launcher-environ",
        open(&format!("/proc/{launcher}/environ"), libc::O_RDONLY),
    );
    println!("PROBE exec-shell {}", exec_shell());

    // Sockets (seccomp): it serves the socket vmspawn passed, and makes none of its own.
    report(
        "unix-socket",
        with_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0, |_| 0),
    );
    report(
        "inet-socket",
        with_socket(libc::AF_INET, libc::SOCK_STREAM, 0, |_| 0),
    );
    let mut pair = [-1i32; 2];
    let rc = sys(
        libc::SYS_socketpair,
        [
            libc::AF_UNIX.into(),
            libc::SOCK_STREAM.into(),
            0,
            pair.as_mut_ptr() as i64,
            0,
            0,
        ],
    );
    report("socketpair", rc);
    if rc == 0 {
        close_keep_errno(pair[0].into());
        close_keep_errno(pair[1].into());
    }
    // Invalid fd and address: a call that got through would fail with EBADF instead.
    report("connect", sys(libc::SYS_connect, [-1, 0, 0, 0, 0, 0]));
    report("bind", sys(libc::SYS_bind, [-1, 0, 0, 0, 0, 0]));
    report("listen", sys(libc::SYS_listen, [-1, 0, 0, 0, 0, 0]));

    // Processes (Landlock scopes, seccomp).
    let attached = sys(
        libc::SYS_ptrace,
        [libc::PTRACE_ATTACH.into(), launcher.into(), 0, 0, 0, 0],
    );
    report("ptrace-launcher", attached);
    if attached == 0 {
        sys(
            libc::SYS_wait4,
            [launcher.into(), 0, libc::__WALL.into(), 0, 0, 0],
        );
        sys(
            libc::SYS_ptrace,
            [libc::PTRACE_DETACH.into(), launcher.into(), 0, 0, 0, 0],
        );
    }
    report(
        "process-vm-readv",
        sys(libc::SYS_process_vm_readv, [launcher.into(), 0, 0, 0, 0, 0]),
    );
    println!("PROBE clone-new-user {}", clone_new_user(false));
    println!("PROBE clone3-new-user {}", clone_new_user(true));

    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    println!("PROBE environment [{}]", names.join(","));
    // SAFETY: prctl queries and getuid have no memory arguments.
    let (uid, nnp, seccomp) = unsafe {
        (
            libc::getuid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0),
        )
    };
    println!("PROBE status uid={uid} no_new_privs={nnp} seccomp={seccomp}");
    // Last: where these work, the probe is in new namespaces from here on (a new user
    // namespace first, in which the others would then work for anyone).
    for (name, flag) in [
        ("unshare-user-namespace", libc::CLONE_NEWUSER),
        ("unshare-mount-namespace", libc::CLONE_NEWNS),
        ("unshare-network-namespace", libc::CLONE_NEWNET),
    ] {
        report(name, sys(libc::SYS_unshare, [flag.into(), 0, 0, 0, 0, 0]));
    }
    println!("PROBE end");
    let _ = std::io::stdout().flush();
}

/// The probe as a stub QEMU (`-probe MODE=stub`): prints `STUB-EXEC <CLOCK_MONOTONIC in ns>`
/// on its stdout (the console vmspawn forwards) the moment it runs, then serves QMP on the fd
/// of `-chardev socket,id=vmspawn-qmp,fd=N`: the greeting, `{"return": {}}` to every command,
/// and after `system_powerdown` it exits 0, as a guest that powers off. Killed otherwise.
fn stub_main(args: &[String]) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    println!("STUB-EXEC {}", now.tv_sec * 1_000_000_000 + now.tv_nsec);
    let _ = std::io::stdout().flush();
    let qmp: i32 = qemu_option_value(args, "id=vmspawn-qmp", "fd=")
        .and_then(|fd| fd.parse().ok())
        .expect("-chardev socket,id=vmspawn-qmp,fd=N in argv");
    let write = |text: &[u8]| {
        // SAFETY: a live buffer and its length.
        unsafe { libc::write(qmp, text.as_ptr().cast(), text.len()) }
    };
    write(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 10, \"minor\": 0, \"micro\": 0}, \"package\": \"stub\"}, \"capabilities\": []}}\n");
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: a live buffer and its length.
        let n = unsafe { libc::read(qmp, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            // vmspawn is gone (it would have sent SIGTERM first, through the death signal).
            std::process::exit(0);
        }
        pending.extend_from_slice(&buf[..n as usize]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if !line.contains("\"execute\"") {
                continue;
            }
            write(b"{\"return\": {}}\n");
            if line.contains("system_powerdown") {
                write(b"{\"event\": \"POWERDOWN\", \"data\": {}, \"timestamp\": {\"seconds\": 0, \"microseconds\": 0}}\n");
                println!("STUB-POWERDOWN");
                let _ = std::io::stdout().flush();
                std::process::exit(0);
            }
        }
    }
}

/// What a QEMU with the GTK display, the gui devices and qemu-vdagent prints for `OPTION help`.
fn qemu_help(option: &str) {
    match option {
        "-display" => println!("Available display backend types:\nnone\ngtk\n"),
        "-device" => {
            for (name, bus) in [
                ("virtio-vga", "PCI"),
                ("virtio-serial-pci", "PCI"),
                ("virtserialport", "virtio-serial-bus"),
                ("qemu-xhci", "PCI"),
                ("usb-kbd", "usb-bus"),
            ] {
                println!("name \"{name}\", bus {bus}");
            }
        }
        "-chardev" => println!("Available chardev backend types: \n  socket\n  qemu-vdagent"),
        _ => {}
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match invoked_as(&args).as_str() {
        // The state "exists": vmspawn goes on to start swtpm.
        "swtpm_setup" => return,
        "swtpm" => return swtpm_main(&args),
        "virtiofsd" => return virtiofsd_main(&args),
        _ => {}
    }
    if let [_, option, help] = args.as_slice()
        && help == "help"
    {
        return qemu_help(option);
    }
    let targets = Targets::from_args(&args);
    if targets.get("MODE") == Some("stub") {
        return stub_main(&args);
    }

    // Positive controls: what QEMU needs keeps working.
    let image = qemu_option_value(&args, "id=vmspawn,", "file=").expect("image drive in argv");
    control("open-image-read-write", open(&image, libc::O_RDWR));
    let vars = qemu_option_value(&args, "ovmf-vars.fd", "file=").expect("vars drive in argv");
    let runtime_dir = std::path::Path::new(&vars)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    control(
        "create-file-in-runtime-dir",
        open(
            &format!("{runtime_dir}/probe-scratch"),
            libc::O_CREAT | libc::O_WRONLY,
        ),
    );
    let kernel_index = args
        .iter()
        .position(|a| a == "-kernel")
        .expect("-kernel in argv");
    control("read-kernel", open(&args[kernel_index + 1], libc::O_RDONLY));
    control("read-dev-urandom", open("/dev/urandom", libc::O_RDONLY));

    // Filesystem (Landlock).
    report(
        "read-home-canary",
        open(targets.require("CANARY"), libc::O_RDONLY),
    );
    report(
        "write-outside-runtime-dir",
        open(
            &format!("{}/escaped", targets.require("WRITE_DIR")),
            libc::O_CREAT | libc::O_WRONLY,
        ),
    );
    report("read-etc-passwd", open("/etc/passwd", libc::O_RDONLY));
    report("open-dev-kvm", open("/dev/kvm", libc::O_RDWR));
    report("open-dev-net-tun", open("/dev/net/tun", libc::O_RDWR));

    // Executing anything but QEMU (Landlock Execute), in a child so we survive success.
    println!("PROBE exec-shell {}", exec_shell());

    // IPC scopes (Landlock ABI 6): abstract sockets and signals outside the domain.
    report(
        "connect-host-abstract-socket",
        connect_unix(targets.require("ABSTRACT"), true),
    );
    let target: i32 = targets.require("SIGNAL_PID").parse().unwrap();
    // SAFETY: signal 0 only checks permission.
    report(
        "signal-process-outside-domain",
        unsafe { libc::kill(target, 0) } as i64,
    );
    // SAFETY: as above.
    report("signal-launcher", unsafe { libc::kill(libc::getppid(), 0) }
        as i64);

    // Named Unix sockets of the user's session and of the host (Landlock ABI <= 7 does not
    // restrict connecting to them; QEMU's seccomp allows no socket() of its own).
    report(
        "connect-user-bus",
        connect_unix(targets.require("BUS"), false),
    );
    report(
        "connect-helper-socket",
        connect_unix(targets.require("HELPER"), false),
    );
    report(
        "connect-ssh-agent",
        connect_unix(targets.require("SSH_AGENT"), false),
    );

    // TCP (Landlock ABI 4) and other socket families (seccomp).
    report("bind-tcp-port", tcp(47113, true));
    let port: u16 = targets.require("TCP_PORT").parse().unwrap();
    report("connect-tcp-loopback", tcp(port, false));
    let udp_port: u16 = targets.require("UDP_PORT").parse().unwrap();
    report("udp-sendto-loopback", udp_sendto(udp_port));
    report("vsock-socket", vsock());
    report(
        "netlink-socket",
        with_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE, |_| 0),
    );
    report(
        "packet-socket",
        with_socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
            |_| 0,
        ),
    );
    report(
        "alg-socket",
        with_socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0, |_| 0),
    );

    // System calls (seccomp deny-list). Arguments are null or invalid: if a call got through,
    // it would fail on them rather than do anything.
    let launcher = sys(libc::SYS_getppid, [0; 6]);
    let attached = sys(
        libc::SYS_ptrace,
        [libc::PTRACE_ATTACH.into(), launcher, 0, 0, 0, 0],
    );
    report("ptrace-launcher", attached);
    if attached == 0 {
        // It worked (unconfined): let the launcher go again.
        sys(libc::SYS_wait4, [launcher, 0, libc::__WALL.into(), 0, 0, 0]);
        sys(
            libc::SYS_ptrace,
            [libc::PTRACE_DETACH.into(), launcher, 0, 0, 0, 0],
        );
    }
    report(
        "process-vm-readv",
        sys(libc::SYS_process_vm_readv, [launcher, 0, 0, 0, 0, 0]),
    );
    report(
        "open-launcher-mem",
        open(&format!("/proc/{launcher}/mem"), libc::O_RDONLY),
    );
    report("pidfd-getfd-launcher", pidfd_getfd_launcher(launcher));
    report("process-madvise", process_madvise_self());
    report(
        "load-kernel-module",
        sys(
            libc::SYS_finit_module,
            [-1, c"".as_ptr() as i64, 0, 0, 0, 0],
        ),
    );
    report("mount-tmpfs", mount_tmpfs(&runtime_dir));
    report(
        "bpf",
        sys(libc::SYS_bpf, [5 /* BPF_PROG_LOAD */, 0, 0, 0, 0, 0]),
    );
    println!("PROBE clone-new-user {}", clone_new_user(false));
    println!("PROBE clone3-new-user {}", clone_new_user(true));
    report("io-uring-setup", io_uring_setup());
    report("personality-change", personality_change());
    println!("PROBE tiocsti-console {}", tiocsti_console());
    report(
        "keyctl",
        sys(
            libc::SYS_keyctl,
            [0 /* KEYCTL_GET_KEYRING_ID */, -3, 0, 0, 0, 0],
        ),
    );
    report(
        "perf-event-open",
        sys(libc::SYS_perf_event_open, [0, 0, -1, -1, 0, 0]),
    );
    report("userfaultfd", sys(libc::SYS_userfaultfd, [0; 6]));
    report("kexec-load", sys(libc::SYS_kexec_load, [0; 6]));
    // Last: if it works, the probe is in a new user namespace from here on.
    report(
        "unshare-user-namespace",
        sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER.into(), 0, 0, 0, 0, 0],
        ),
    );

    // The gui plan: the display's socket, X authority file and font configuration are there,
    // and a private $HOME; the rest of /usr/share, /etc and /tmp/.X11-unix is not.
    if let Some(socket) = targets.get("X11_SOCKET") {
        control("connect-x11-socket", connect_unix(socket, false));
        control(
            "read-xauthority",
            open(targets.require("XAUTHORITY"), libc::O_RDONLY),
        );
        control(
            "read-fontconfig",
            open("/etc/fonts/fonts.conf", libc::O_RDONLY),
        );
        let home = std::env::var("HOME").unwrap_or_default();
        control(
            "write-private-home",
            open(&format!("{home}/probe"), libc::O_CREAT | libc::O_WRONLY),
        );
        report(
            "list-x11-socket-dir",
            open("/tmp/.X11-unix", libc::O_RDONLY | libc::O_DIRECTORY),
        );
        report(
            "read-usr-share-doc",
            open("/usr/share/doc", libc::O_RDONLY | libc::O_DIRECTORY),
        );
        report("read-etc-hostname", open("/etc/hostname", libc::O_RDONLY));
    }

    // What QEMU was given to start with.
    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    println!("PROBE environment [{}]", names.join(","));

    // How we are confined, as the kernel reports it.
    // SAFETY: prctl queries.
    let (nnp, seccomp) = unsafe {
        (
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0),
        )
    };
    println!("PROBE status no_new_privs={nnp} seccomp={seccomp}");
    println!("PROBE end");
    let _ = std::io::stdout().flush();
}
