//! The helper confines itself once it is set up: a Landlock domain with only the device nodes
//! it opens, the policy and user databases it reads and sysfs (for quotas); and a seccomp
//! allow-list (default: kill) without execve, with ioctl limited to the TUN and interface
//! requests it makes.

use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    path_beneath_rules,
};
use vmspawn_seccomp::{
    BpfProgram, Entry, SeccompAction, SeccompCmpOp, cond, no_exec_prot, one_of, rule,
};

pub fn landlock(policy: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("failed to set up Landlock: {e}");
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let devices = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
    let mut readable = vec![
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/sys/class/net",
        "/sys/devices/virtual/net",
        // Callers' start times, for polkit.
        "/proc",
    ]
    .into_iter()
    .map(Path::new)
    .filter(|p| p.exists())
    .map(Path::to_path_buf)
    .collect::<Vec<_>>();
    readable.push(policy.parent().unwrap_or(policy).to_path_buf());
    readable.retain(|p| p.exists());
    let device_paths: Vec<_> = ["/dev/net/tun", "/dev/kvm", "/dev/vhost-vsock"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V6))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(&readable, read)))
        .and_then(|r| r.add_rules(path_beneath_rules(&device_paths, devices)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| fail(&e))?;
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
        ("fcntl", libc::SYS_fcntl, any()),
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
        // The D-Bus connection to polkit (zbus): its threads, event loop and authentication.
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
        ("epoll_create1", libc::SYS_epoll_create1, any()),
        ("epoll_ctl", libc::SYS_epoll_ctl, any()),
        ("epoll_pwait", libc::SYS_epoll_pwait, any()),
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

/// The seccomp filter, on every thread: the D-Bus connection to polkit has threads of its own,
/// started after Landlock (so they inherit that) and before this.
pub fn seccomp() -> Result<(), String> {
    let no_clone3 = vmspawn_seccomp::compile(
        vec![("clone3", libc::SYS_clone3, Vec::new())],
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
    .map_err(|e| format!("failed to build the clone3 filter: {e}"))?;
    seccompiler::apply_filter_all_threads(&no_clone3)
        .map_err(|e| format!("failed to install the seccomp filter: {e}"))?;
    let program = filter()?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| format!("failed to install the seccomp filter: {e}"))
}
