//! The helper confines itself once it is set up: a Landlock domain with only the device nodes
//! it opens, the policy and user databases it reads and sysfs (for quotas); and a seccomp
//! allow-list (default: kill) without execve, with ioctl limited to the TUN and interface
//! requests it makes.

use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, LandlockStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use vmspawn_seccomp::{
    BpfProgram, Entry, SeccompAction, SeccompCmpOp, cond, no_exec_prot, one_of, rule,
};

/// Whether the helper may go on after asking for its Landlock domain: only where the kernel
/// enforces all of it, unless the administrator set `[limits] allow-unconfined = true` (then
/// with a warning, returned). The error names what is missing and the key.
pub fn landlock_verdict(
    ruleset: &RulesetStatus,
    landlock: LandlockStatus,
    allow_unconfined: bool,
    policy: &Path,
) -> Result<Option<String>, String> {
    let missing = match (ruleset, landlock) {
        (RulesetStatus::FullyEnforced, _) => return Ok(None),
        (_, LandlockStatus::NotImplemented) => {
            "this kernel has no Landlock (it is not built in)".to_string()
        }
        (_, LandlockStatus::NotEnabled) => {
            "Landlock is not enabled on this kernel (add landlock to the lsm= boot parameter)"
                .to_string()
        }
        // An older kernel's Landlock still confines file access (Debian 12's 6.1 has ABI 2):
        // run, and say what it does not enforce.
        (RulesetStatus::PartiallyEnforced, LandlockStatus::Available { effective_abi, .. }) => {
            return Ok(Some(format!(
                "warning: this kernel's Landlock (ABI {}) enforces the helper's file rules but not \
                 all it asks for (ABI 6 adds TCP, abstract socket and signal scoping)",
                effective_abi as i32
            )));
        }
        (_, LandlockStatus::Available { .. }) => {
            "Landlock did not enforce the helper's domain".into()
        }
    };
    let fix = format!(
        "set allow-unconfined = true under [limits] in {} to run it anyway",
        policy.display()
    );
    if allow_unconfined {
        Ok(Some(format!(
            "warning: {missing}; running without full confinement because {} allows it",
            policy.display()
        )))
    } else {
        Err(format!(
            "refusing to start: {missing}, so the helper cannot confine itself; upgrade the \
             kernel or enable Landlock, or {fix}"
        ))
    }
}

/// Paths the helper reads after confinement besides the policy: the user, group and
/// subordinate-uid databases (systemd's included: see `identity::USERDB_DIRS`), sysfs, /proc.
fn readable_paths(policy: &Path) -> Vec<std::path::PathBuf> {
    let mut readable = vec![
        "/etc/passwd",
        "/etc/group",
        crate::identity::NSSWITCH,
        crate::identity::SUBUID,
        "/sys/class/net",
        "/sys/devices/virtual/net",
        // Callers' start times, for polkit.
        "/proc",
    ];
    readable.extend(crate::identity::USERDB_DIRS);
    let mut readable: Vec<_> = readable
        .into_iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .map(Path::to_path_buf)
        .collect();
    readable.push(policy.parent().unwrap_or(policy).to_path_buf());
    readable.retain(|p| p.exists());
    readable
}

pub fn landlock(policy: &Path, allow_unconfined: bool) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("failed to set up Landlock: {e}");
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let devices = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
    let readable = readable_paths(policy);
    let device_paths: Vec<_> = ["/dev/net/tun", "/dev/kvm", "/dev/vhost-vsock"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V6))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(&readable, read)))
        .and_then(|r| r.add_rules(path_beneath_rules(&device_paths, devices)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| fail(&e))?;
    if let Some(warning) =
        landlock_verdict(&status.ruleset, status.landlock, allow_unconfined, policy)?
    {
        eprintln!("vmspawn-privhelper: {warning}");
    }
    Ok(())
}

/// The system calls the helper makes after set-up; anything else kills it.
pub fn allowed_syscalls() -> Vec<Entry> {
    let any = Vec::new;
    let mut list = vec![
        ("read", libc::SYS_read, any()),
        ("write", libc::SYS_write, any()),
        ("recvmsg", libc::SYS_recvmsg, any()),
        ("sendmsg", libc::SYS_sendmsg, any()),
        ("accept4", libc::SYS_accept4, any()),
        ("ppoll", libc::SYS_ppoll, any()),
        ("close", libc::SYS_close, any()),
        ("openat", libc::SYS_openat, any()),
        ("newfstatat", libc::SYS_newfstatat, any()),
        ("fstat", libc::SYS_fstat, any()),
        ("statx", libc::SYS_statx, any()),
        ("lseek", libc::SYS_lseek, any()),
        ("getdents64", libc::SYS_getdents64, any()),
        ("readlinkat", libc::SYS_readlinkat, any()),
        // Whether a leader fd is a pidfd (/proc/self/fd/N).
        ("readlink", libc::SYS_readlink, any()),
        // Descriptor flags and non-blocking mode, and dup to a free fd;
        // never F_SETOWN/F_SETSIG (signals to other processes), leases or notifications.
        (
            "fcntl",
            libc::SYS_fcntl,
            one_of(
                1,
                &[
                    libc::F_GETFD as u64,
                    libc::F_SETFD as u64,
                    libc::F_GETFL as u64,
                    libc::F_SETFL as u64,
                    libc::F_DUPFD_CLOEXEC as u64,
                ],
            ),
        ),
        ("getsockopt", libc::SYS_getsockopt, any()),
        // The control socket for interface ioctls, NSS's local sockets, and rtnetlink (only
        // NETLINK_ROUTE) to delete TAP devices whose session ended.
        (
            "socket",
            libc::SYS_socket,
            vec![
                rule(vec![cond(0, SeccompCmpOp::Eq, libc::AF_INET as u64)]),
                rule(vec![cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)]),
                rule(vec![
                    cond(0, SeccompCmpOp::Eq, libc::AF_NETLINK as u64),
                    cond(2, SeccompCmpOp::Eq, libc::NETLINK_ROUTE as u64),
                ]),
            ],
        ),
        ("sendto", libc::SYS_sendto, any()),
        ("recvfrom", libc::SYS_recvfrom, any()),
        // The TAP records: locked, and read and written in place.
        ("flock", libc::SYS_flock, any()),
        ("pread64", libc::SYS_pread64, any()),
        ("pwrite64", libc::SYS_pwrite64, any()),
        ("connect", libc::SYS_connect, any()),
        (
            "ioctl",
            libc::SYS_ioctl,
            one_of(
                1,
                &[
                    libc::TUNSETIFF,
                    libc::TUNSETOWNER,
                    libc::TUNSETGROUP,
                    libc::SIOCGIFINDEX,
                    libc::SIOCGIFFLAGS,
                    libc::SIOCSIFFLAGS,
                    crate::sys::SIOCBRADDIF,
                    crate::sys::SIOCGIFNAME,
                    crate::sys::SIOCGIFMTU,
                    crate::sys::SIOCSIFMTU,
                    crate::sys::SIOCGIFHWADDR,
                    crate::sys::SIOCSIFHWADDR,
                    crate::sys::VHOST_VSOCK_SET_GUEST_CID,
                ],
            ),
        ),
        // Raising and dropping CAP_NET_ADMIN around the TAP step.
        ("capget", libc::SYS_capget, any()),
        ("capset", libc::SYS_capset, any()),
        ("brk", libc::SYS_brk, any()),
        ("mmap", libc::SYS_mmap, no_exec_prot()),
        ("mprotect", libc::SYS_mprotect, no_exec_prot()),
        ("munmap", libc::SYS_munmap, any()),
        ("mremap", libc::SYS_mremap, any()),
        ("madvise", libc::SYS_madvise, any()),
        ("futex", libc::SYS_futex, any()),
        ("getrandom", libc::SYS_getrandom, any()),
        ("clock_gettime", libc::SYS_clock_gettime, any()),
        ("rt_sigreturn", libc::SYS_rt_sigreturn, any()),
        // glibc's group lookups block signals around their locks.
        ("rt_sigprocmask", libc::SYS_rt_sigprocmask, any()),
        ("sigaltstack", libc::SYS_sigaltstack, any()),
        ("getpid", libc::SYS_getpid, any()),
        ("gettid", libc::SYS_gettid, any()),
        // The service's threads (one per connection, and the reconcile thread).
        (
            "clone",
            libc::SYS_clone,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                libc::CLONE_THREAD as u64,
            )])],
        ),
        // Allowed here but refused with ENOSYS by the first filter, so glibc uses clone, whose
        // flags can be checked.
        ("clone3", libc::SYS_clone3, any()),
        ("set_robust_list", libc::SYS_set_robust_list, any()),
        ("rseq", libc::SYS_rseq, any()),
        (
            "prctl",
            libc::SYS_prctl,
            one_of(0, &[libc::PR_SET_NAME as u64]),
        ),
        ("sched_getaffinity", libc::SYS_sched_getaffinity, any()),
        ("sched_yield", libc::SYS_sched_yield, any()),
        ("rt_sigaction", libc::SYS_rt_sigaction, any()),
        // NSS's systemd module (nss-systemd): its user database lookups run an sd-event loop
        // over varlink where systemd-userdbd is up (seen in a systemd container).
        ("epoll_create1", libc::SYS_epoll_create1, any()),
        ("epoll_ctl", libc::SYS_epoll_ctl, any()),
        ("epoll_pwait", libc::SYS_epoll_pwait, any()),
        ("epoll_pwait2", libc::SYS_epoll_pwait2, any()),
        ("eventfd2", libc::SYS_eventfd2, any()),
        ("timerfd_create", libc::SYS_timerfd_create, any()),
        ("timerfd_settime", libc::SYS_timerfd_settime, any()),
        ("clock_nanosleep", libc::SYS_clock_nanosleep, any()),
        ("getuid", libc::SYS_getuid, any()),
        ("geteuid", libc::SYS_geteuid, any()),
        ("exit", libc::SYS_exit, any()),
        ("exit_group", libc::SYS_exit_group, any()),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        ("poll", libc::SYS_poll, any()),
        ("epoll_wait", libc::SYS_epoll_wait, any()),
    ]);
    list
}

pub fn filter() -> Result<BpfProgram, String> {
    vmspawn_seccomp::allow_list(allowed_syscalls())
        .map_err(|e| format!("failed to build the seccomp filter: {e}"))
}

/// The two filters, in the order they are installed: clone3 answers ENOSYS (so the C library
/// falls back to clone, whose flags the allow-list checks), then the allow-list.
pub fn filters() -> Result<[BpfProgram; 2], String> {
    let no_clone3 = vmspawn_seccomp::compile(
        vec![("clone3", libc::SYS_clone3, Vec::new())],
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
    .map_err(|e| format!("failed to build the clone3 filter: {e}"))?;
    Ok([no_clone3, filter()?])
}

/// The seccomp filters, on every thread: the D-Bus connection to polkit has threads of its
/// own, started after Landlock (so they inherit that) and before this.
pub fn seccomp() -> Result<(), String> {
    for program in filters()? {
        seccompiler::apply_filter_all_threads(&program)
            .map_err(|e| format!("failed to install the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    //! Firecracker-style filter tests: for each argument-checked rule of the allow-list, a call
    //! with allowed arguments gets through and a perturbed call kills the process, each in a
    //! forked child that installed the helper's filters exactly as the helper does.

    use super::*;
    use nix::sys::wait::WaitStatus;

    /// Runs `body` in a forked child after installing the helper's filters as `seccomp()`
    /// does (built before the fork: the child only makes system calls); returns how the child
    /// ended.
    fn in_child(body: impl FnOnce() -> i32) -> WaitStatus {
        let programs = filters().unwrap();
        // SAFETY: the child only makes raw system calls and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let installed = programs
                    .iter()
                    .all(|p| seccompiler::apply_filter_all_threads(p).is_ok());
                let code = if installed { body() } else { 99 };
                // SAFETY: _exit is async-signal-safe and never returns.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap()
            }
        }
    }

    fn killed(status: WaitStatus) -> bool {
        matches!(
            status,
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        )
    }

    fn exited(status: WaitStatus, code: i32) -> bool {
        status == WaitStatus::Exited(status.pid().unwrap(), code)
    }

    /// A raw system call; the tests pass only pointers to live memory, or values the kernel
    /// rejects before dereferencing anything.
    fn sys(nr: i64, args: [i64; 6]) -> i64 {
        // SAFETY: see above: every pointer argument points to live memory of the right size.
        unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
    }

    type Call = Box<dyn FnOnce() -> i32>;

    /// A call whose result does not matter: only whether the filter lets it through.
    fn call(nr: i64, args: [i64; 6]) -> Call {
        Box::new(move || {
            sys(nr, args);
            0
        })
    }

    /// A call that must succeed (exit status 1 if it fails).
    fn succeeds(nr: i64, args: [i64; 6]) -> Call {
        Box::new(move || i32::from(sys(nr, args) < 0))
    }

    /// A call that must fail with `errno` (exit status 1 otherwise).
    fn fails_with(nr: i64, args: [i64; 6], errno: i32) -> Call {
        Box::new(move || {
            let rc = sys(nr, args);
            let got = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            i32::from(!(rc == -1 && got == errno))
        })
    }

    #[test]
    fn helper_allow_list_rules() {
        let ifreq = Box::leak(Box::new([0u8; 40])).as_mut_ptr() as i64;
        let name = Box::leak(Box::new(*b"vmspawn-test\0\0\0\0")).as_ptr() as i64;
        let rw = i64::from(libc::PROT_READ | libc::PROT_WRITE);
        let rx = i64::from(libc::PROT_READ | libc::PROT_EXEC);
        let anon = i64::from(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        let (unix, inet, inet6, netlink, packet) = (
            i64::from(libc::AF_UNIX),
            i64::from(libc::AF_INET),
            i64::from(libc::AF_INET6),
            i64::from(libc::AF_NETLINK),
            i64::from(libc::AF_PACKET),
        );
        let (stream, dgram, raw) = (
            i64::from(libc::SOCK_STREAM),
            i64::from(libc::SOCK_DGRAM),
            i64::from(libc::SOCK_RAW),
        );
        let cases: Vec<(&str, Call, Call)> = vec![
            (
                "socket AF_UNIX / AF_INET6",
                succeeds(libc::SYS_socket, [unix, stream, 0, 0, 0, 0]),
                call(libc::SYS_socket, [inet6, dgram, 0, 0, 0, 0]),
            ),
            (
                "socket AF_INET / AF_PACKET",
                succeeds(libc::SYS_socket, [inet, dgram, 0, 0, 0, 0]),
                call(libc::SYS_socket, [packet, raw, 0, 0, 0, 0]),
            ),
            (
                "socket NETLINK_ROUTE / NETLINK_AUDIT",
                succeeds(
                    libc::SYS_socket,
                    [netlink, raw, libc::NETLINK_ROUTE.into(), 0, 0, 0],
                ),
                call(
                    libc::SYS_socket,
                    [netlink, raw, libc::NETLINK_AUDIT.into(), 0, 0, 0],
                ),
            ),
            (
                "socket NETLINK_ROUTE / NETLINK_KOBJECT_UEVENT",
                succeeds(
                    libc::SYS_socket,
                    [netlink, dgram, libc::NETLINK_ROUTE.into(), 0, 0, 0],
                ),
                call(
                    libc::SYS_socket,
                    [netlink, dgram, libc::NETLINK_KOBJECT_UEVENT.into(), 0, 0, 0],
                ),
            ),
            (
                "ioctl SIOCGIFINDEX / TUNSETPERSIST",
                fails_with(
                    libc::SYS_ioctl,
                    [-1, libc::SIOCGIFINDEX as i64, ifreq, 0, 0, 0],
                    libc::EBADF,
                ),
                call(
                    libc::SYS_ioctl,
                    [-1, libc::TUNSETPERSIST as i64, 1, 0, 0, 0],
                ),
            ),
            (
                "ioctl TUNSETIFF / TIOCSTI",
                fails_with(
                    libc::SYS_ioctl,
                    [-1, libc::TUNSETIFF as i64, ifreq, 0, 0, 0],
                    libc::EBADF,
                ),
                call(libc::SYS_ioctl, [0, libc::TIOCSTI as i64, name, 0, 0, 0]),
            ),
            (
                "ioctl VHOST_VSOCK_SET_GUEST_CID / SIOCSIFNAME",
                fails_with(
                    libc::SYS_ioctl,
                    [
                        -1,
                        crate::sys::VHOST_VSOCK_SET_GUEST_CID as i64,
                        ifreq,
                        0,
                        0,
                        0,
                    ],
                    libc::EBADF,
                ),
                call(libc::SYS_ioctl, [-1, 0x8923, ifreq, 0, 0, 0]),
            ),
            (
                "ioctl SIOCBRADDIF / SIOCBRDELIF",
                fails_with(
                    libc::SYS_ioctl,
                    [-1, crate::sys::SIOCBRADDIF as i64, ifreq, 0, 0, 0],
                    libc::EBADF,
                ),
                call(libc::SYS_ioctl, [-1, 0x89a3, ifreq, 0, 0, 0]),
            ),
            (
                "mmap",
                succeeds(libc::SYS_mmap, [0, 4096, rw, anon, -1, 0]),
                call(libc::SYS_mmap, [0, 4096, rx, anon, -1, 0]),
            ),
            (
                "mprotect",
                call(libc::SYS_mprotect, [0, 4096, rw, 0, 0, 0]),
                call(libc::SYS_mprotect, [0, 4096, rx, 0, 0, 0]),
            ),
            (
                "fcntl F_GETFD / F_SETOWN",
                succeeds(libc::SYS_fcntl, [0, libc::F_GETFD.into(), 0, 0, 0, 0]),
                call(libc::SYS_fcntl, [0, libc::F_SETOWN.into(), 1, 0, 0, 0]),
            ),
            (
                "fcntl F_DUPFD_CLOEXEC / F_DUPFD",
                succeeds(
                    libc::SYS_fcntl,
                    [0, libc::F_DUPFD_CLOEXEC.into(), 10, 0, 0, 0],
                ),
                call(libc::SYS_fcntl, [0, libc::F_DUPFD.into(), 10, 0, 0, 0]),
            ),
            (
                "fcntl F_SETFL / F_SETLEASE",
                succeeds(
                    libc::SYS_fcntl,
                    [0, libc::F_SETFL.into(), libc::O_RDWR.into(), 0, 0, 0],
                ),
                call(libc::SYS_fcntl, [0, libc::F_SETLEASE.into(), 0, 0, 0, 0]),
            ),
            (
                // CLONE_THREAD without CLONE_SIGHAND: the kernel refuses it (EINVAL) after the
                // filter let it through; without CLONE_THREAD (a fork) the filter kills.
                "clone",
                fails_with(
                    libc::SYS_clone,
                    [libc::CLONE_THREAD.into(), 0, 0, 0, 0, 0],
                    libc::EINVAL,
                ),
                call(libc::SYS_clone, [libc::SIGCHLD.into(), 0, 0, 0, 0, 0]),
            ),
            (
                "clone3 answers ENOSYS (so the C library uses clone)",
                fails_with(libc::SYS_clone3, [0, 0, 0, 0, 0, 0], libc::ENOSYS),
                call(libc::SYS_fork, [0; 6]),
            ),
            (
                "prctl PR_SET_NAME / PR_SET_DUMPABLE",
                succeeds(
                    libc::SYS_prctl,
                    [libc::PR_SET_NAME.into(), name, 0, 0, 0, 0],
                ),
                call(
                    libc::SYS_prctl,
                    [libc::PR_SET_DUMPABLE.into(), 1, 0, 0, 0, 0],
                ),
            ),
            (
                "prctl PR_SET_NAME / PR_CAPBSET_DROP",
                succeeds(
                    libc::SYS_prctl,
                    [libc::PR_SET_NAME.into(), name, 0, 0, 0, 0],
                ),
                call(
                    libc::SYS_prctl,
                    [libc::PR_CAPBSET_DROP.into(), 0, 0, 0, 0, 0],
                ),
            ),
            (
                "not listed: execve",
                succeeds(libc::SYS_getpid, [0; 6]),
                call(libc::SYS_execve, [name, 0, 0, 0, 0, 0]),
            ),
            (
                "not listed: ptrace",
                succeeds(libc::SYS_gettid, [0; 6]),
                call(
                    libc::SYS_ptrace,
                    [libc::PTRACE_TRACEME as i64, 0, 0, 0, 0, 0],
                ),
            ),
        ];
        let mut failures = Vec::new();
        for (name, allowed, perturbed) in cases {
            let status = in_child(allowed);
            if !exited(status, 0) {
                failures.push(format!(
                    "{name}: allowed call did not get through: {status:?}"
                ));
            }
            let status = in_child(perturbed);
            if !killed(status) {
                failures.push(format!("{name}: perturbed call was not killed: {status:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn allow_list_size() {
        // The README gives this figure.
        let expected = if cfg!(target_arch = "x86_64") { 63 } else { 61 };
        assert_eq!(allowed_syscalls().len(), expected);
    }

    #[test]
    fn refuses_to_run_unconfined_unless_allowed() {
        let policy = Path::new("/etc/vmspawn/policy.toml");
        let available = LandlockStatus::Available {
            effective_abi: ABI::V6,
            kernel_abi: None,
        };
        let old = LandlockStatus::Available {
            effective_abi: ABI::V2,
            kernel_abi: None,
        };
        assert_eq!(
            landlock_verdict(&RulesetStatus::FullyEnforced, available, false, policy),
            Ok(None)
        );
        for (ruleset, status, text) in [
            (
                RulesetStatus::NotEnforced,
                LandlockStatus::NotImplemented,
                "no Landlock",
            ),
            (
                RulesetStatus::NotEnforced,
                LandlockStatus::NotEnabled,
                "lsm=",
            ),
            (RulesetStatus::NotEnforced, available, "did not enforce"),
        ] {
            let refusal = landlock_verdict(&ruleset, status, false, policy).unwrap_err();
            assert!(refusal.contains("refusing to start"), "{refusal}");
            assert!(refusal.contains(text), "{refusal}");
            assert!(
                refusal
                    .contains("allow-unconfined = true under [limits] in /etc/vmspawn/policy.toml"),
                "{refusal}"
            );
            let warning = landlock_verdict(&ruleset, status, true, policy)
                .unwrap()
                .unwrap();
            assert!(
                warning.contains(text) && warning.contains("allows it"),
                "{warning}"
            );
        }
        // An older kernel's partial Landlock runs, with a warning, whatever the policy says.
        for allow in [false, true] {
            let warning = landlock_verdict(&RulesetStatus::PartiallyEnforced, old, allow, policy)
                .unwrap()
                .unwrap();
            assert!(warning.contains("ABI 2"), "{warning}");
        }
    }
}
