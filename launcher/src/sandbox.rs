//! Confinement of QEMU and of the launcher itself: Landlock rulesets and seccomp filters.
//!
//! The planner decides *what* each process may touch (`SandboxRules`, pure data); this module
//! turns that into kernel objects and applies them:
//! - QEMU: its own Landlock domain and a seccomp deny-list (EPERM), both installed in the forked
//!   child right before exec, so every QEMU thread inherits them; QEMU's `-sandbox` comes on top.
//! - Sidecars (swtpm, swtpm_setup): the same, with a Landlock domain of their own files and a
//!   seccomp table of their own role.
//! - The launcher: after the VM runs, a Landlock domain limited to the runtime directory and a
//!   seccomp allow-list whose default action kills the process. The launcher never creates
//!   threads, so both cover all of it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use vmspawn_seccomp::{
    BpfProgram, Entry, SeccompAction, SeccompCmpOp, SeccompRule, cond, cond32, no_exec_prot,
    one_of, rule,
};

use crate::error::{Error, Result};

/// The newest Landlock ABI whose features we use (IoctlDev is V5, scopes are V6).
const ABI_USED: ABI = ABI::V6;
const ABI_USED_NUMBER: i32 = 6;

/// What one process may access, as Landlock rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxRules {
    /// Read and execute (binaries, libraries).
    pub exec: Vec<PathBuf>,
    /// Read only.
    pub read: Vec<PathBuf>,
    /// Everything beneath (read, write, create, remove).
    pub write: Vec<PathBuf>,
    /// Device nodes opened read-write with ioctls (e.g. /dev/kvm).
    pub devices: Vec<PathBuf>,
    /// Directories in which empty subdirectories may be removed.
    pub remove_dir: Vec<PathBuf>,
    /// Directories in which regular files may be created, read, written and removed (no
    /// subdirectories, links, devices or execution).
    pub scratch_files: Vec<PathBuf>,
    pub allow_tcp_connect: bool,
    pub allow_tcp_bind: bool,
    pub scope_abstract_unix: bool,
    pub scope_signal: bool,
}

impl SandboxRules {
    /// One line per rule, for logs and for error hints.
    pub fn describe(&self) -> Vec<String> {
        let list = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        for (what, paths) in [
            ("read+execute", &self.exec),
            ("read-only", &self.read),
            ("read-write", &self.write),
            ("device read-write", &self.devices),
            ("remove empty directories", &self.remove_dir),
            ("create and remove files in", &self.scratch_files),
        ] {
            if !paths.is_empty() {
                out.push(format!("{what}: {}", list(paths)));
            }
        }
        out.push(format!(
            "TCP connect {}, TCP bind {}",
            if self.allow_tcp_connect {
                "allowed"
            } else {
                "denied"
            },
            if self.allow_tcp_bind {
                "allowed"
            } else {
                "denied"
            }
        ));
        out
    }

    /// Whether a path is covered by a rule that allows at least reading it.
    pub fn allows_read(&self, path: &Path) -> bool {
        self.exec
            .iter()
            .chain(&self.read)
            .chain(&self.write)
            .chain(&self.devices)
            .any(|p| path.starts_with(p))
    }
}

/// The kernel's Landlock ABI version, 0 when Landlock is unavailable.
pub fn landlock_abi() -> i32 {
    crate::sys::landlock_abi()
}

/// A human summary of what Landlock enforces on this kernel.
pub fn landlock_summary() -> String {
    match landlock_abi() {
        0 => "Landlock: not available on this kernel (no filesystem or network confinement)".into(),
        abi if abi >= ABI_USED_NUMBER => {
            format!("Landlock: ABI {abi}, fully enforced (filesystem, TCP, IPC scopes)")
        }
        abi => format!(
            "Landlock: ABI {abi}, partially enforced (this kernel lacks {})",
            match abi {
                1..=2 => "truncate, TCP, device ioctl and IPC scope restrictions",
                3 => "TCP, device ioctl and IPC scope restrictions",
                4 => "device ioctl and IPC scope restrictions",
                _ => "IPC scope restrictions",
            }
        ),
    }
}

fn landlock_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::new(format!(
        "Failed to set up Landlock confinement ({context}): {e}"
    ))
}

/// Builds a Landlock ruleset from the rules. Paths that do not exist are skipped.
pub fn build_ruleset(rules: &SandboxRules) -> Result<RulesetCreated> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))
        .map_err(|e| landlock_error("filesystem rights", e))?;
    let mut net: BitFlags<AccessNet> = BitFlags::empty();
    if !rules.allow_tcp_bind {
        net |= AccessNet::BindTcp;
    }
    if !rules.allow_tcp_connect {
        net |= AccessNet::ConnectTcp;
    }
    if !net.is_empty() {
        ruleset = ruleset
            .handle_access(net)
            .map_err(|e| landlock_error("network rights", e))?;
    }
    let mut scopes: BitFlags<Scope> = BitFlags::empty();
    if rules.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    if rules.scope_signal {
        scopes |= Scope::Signal;
    }
    if !scopes.is_empty() {
        ruleset = ruleset
            .scope(scopes)
            .map_err(|e| landlock_error("scopes", e))?;
    }
    let mut created = ruleset.create().map_err(|e| landlock_error("create", e))?;
    let existing = |paths: &[PathBuf]| {
        paths
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect::<Vec<_>>()
    };
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let sets: [(&[PathBuf], BitFlags<AccessFs>); 6] = [
        (&rules.exec, read | AccessFs::Execute),
        (&rules.read, read),
        (&rules.write, AccessFs::from_all(ABI_USED)),
        (
            &rules.devices,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        ),
        (&rules.remove_dir, AccessFs::RemoveDir.into()),
        (
            &rules.scratch_files,
            AccessFs::ReadFile
                | AccessFs::WriteFile
                | AccessFs::MakeReg
                | AccessFs::RemoveFile
                | AccessFs::Truncate,
        ),
    ];
    for (paths, access) in sets {
        created = created
            .add_rules(path_beneath_rules(existing(paths), access))
            .map_err(|e| landlock_error("rules", e))?;
    }
    Ok(created)
}

/// Confines the calling process with `rules`; returns whether Landlock fully enforced them.
pub fn restrict_self(rules: &SandboxRules) -> Result<RulesetStatus> {
    let status = build_ruleset(rules)?
        .restrict_self()
        .map_err(|e| landlock_error("restrict", e))?;
    Ok(status.ruleset)
}

/// The ruleset as an fd, for `landlock_restrict_self` in a forked child before exec
/// (None when the kernel has no Landlock).
pub fn ruleset_fd(rules: &SandboxRules) -> Result<Option<OwnedFd>> {
    Ok(build_ruleset(rules)?.into())
}

fn compile_error(e: vmspawn_seccomp::BackendError) -> Error {
    Error::new(format!("Failed to build seccomp filter: {e}"))
}

/// System calls none of the VM's processes needs; they fail with EPERM. For QEMU this sits on
/// top of its own `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`.
pub fn common_denied_syscalls() -> Vec<(&'static str, i64)> {
    let mut list = vec![
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("reboot", libc::SYS_reboot),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("sethostname", libc::SYS_sethostname),
        ("setdomainname", libc::SYS_setdomainname),
        ("vhangup", libc::SYS_vhangup),
        ("syslog", libc::SYS_syslog),
        ("kcmp", libc::SYS_kcmp),
        ("fanotify_init", libc::SYS_fanotify_init),
        // Taking fds from, or advising the memory of, another process (the launcher).
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("process_madvise", libc::SYS_process_madvise),
        // io_uring performs operations beyond the reach of seccomp.
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
    ]);
    list
}

/// The address families QEMU may create sockets of. Everything else it needs (QMP, the
/// console, the TPM's control connection, a TAP) vmspawn creates and passes as an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuSockets {
    /// AF_INET and AF_INET6: `--network-user-mode` (QEMU's user-mode network stack).
    pub inet: bool,
    /// AF_UNIX: `--console=gui`, to reach the display server (the one documented exception).
    pub unix: bool,
}

/// The seccomp policy of a process, keyed by its role (one table per kind of process, as
/// crosvm keeps one policy per device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompTable {
    /// QEMU: the common deny-list and sockets only of the families the plan needs, on top of
    /// QEMU's own `-sandbox`.
    Qemu(QemuSockets),
    /// swtpm: the common deny-list plus making sockets of its own (it serves only the control
    /// socket vmspawn bound and passed to it), on top of swtpm's own `--seccomp action=kill`
    /// where it has one.
    Swtpm,
    /// swtpm_setup: the common deny-list (it starts swtpm, so exec stays allowed).
    SwtpmSetup,
    /// virtiofsd: the common deny-list, except that `unshare(CLONE_FS)` stays allowed (each of
    /// its threads makes its working directory its own) while new namespaces do not, and no
    /// sockets of its own (it serves the vhost-user socket vmspawn bound and passed to it); on
    /// top of virtiofsd's own seccomp allow-list (`--seccomp=kill`, its default).
    Virtiofsd,
    /// vhost-device-vsock: the common deny-list and Unix sockets only (its vhost-user socket,
    /// the host side of the vsock device and the guest's ports' sockets).
    VhostUserVsock,
    /// ssh-keygen: the common deny-list and no sockets (it only writes two files).
    SshKeygen,
    /// systemd-journal-remote: the common deny-list and no sockets of its own (it accepts on
    /// the listener vmspawn bound and passed to it).
    JournalRemote,
}

/// Making, connecting and binding sockets, for processes that only use the sockets vmspawn
/// passes them.
fn no_sockets() -> [Entry; 5] {
    [
        ("socket", libc::SYS_socket, Vec::new()),
        ("socketpair", libc::SYS_socketpair, Vec::new()),
        ("connect", libc::SYS_connect, Vec::new()),
        ("bind", libc::SYS_bind, Vec::new()),
        ("listen", libc::SYS_listen, Vec::new()),
    ]
}

/// Rules that match when any of `flags` is set in argument `arg`.
fn any_flag(arg: u8, flags: &[u64]) -> Vec<SeccompRule> {
    flags
        .iter()
        .map(|&f| rule(vec![cond(arg, SeccompCmpOp::MaskedEq(f), f)]))
        .collect()
}

const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, /* CLONE_NEWTIME */
];

impl SeccompTable {
    pub fn name(self) -> &'static str {
        match self {
            SeccompTable::Qemu(QemuSockets {
                inet: false,
                unix: false,
            }) => "qemu",
            SeccompTable::Qemu(QemuSockets {
                inet: true,
                unix: false,
            }) => "qemu+inet",
            SeccompTable::Qemu(QemuSockets {
                inet: false,
                unix: true,
            }) => "qemu+unix",
            SeccompTable::Qemu(QemuSockets {
                inet: true,
                unix: true,
            }) => "qemu+inet+unix",
            SeccompTable::Swtpm => "swtpm",
            SeccompTable::SwtpmSetup => "swtpm_setup",
            SeccompTable::Virtiofsd => "virtiofsd",
            SeccompTable::VhostUserVsock => "vhost-device-vsock",
            SeccompTable::SshKeygen => "ssh-keygen",
            SeccompTable::JournalRemote => "systemd-journal-remote",
        }
    }

    /// The calls this table refuses with EPERM (with the argument rules that make a call
    /// match; none: always); everything else is allowed.
    pub fn denied(self) -> Vec<Entry> {
        let always = Vec::new;
        let mut list: Vec<Entry> = common_denied_syscalls()
            .into_iter()
            .map(|(name, nr)| (name, nr, always()))
            .collect();
        // New namespaces only through clone(2), whose flags a filter can see (clone3 gets
        // ENOSYS from a filter of its own, see `filters`).
        list.push(("clone", libc::SYS_clone, any_flag(0, &NAMESPACE_FLAGS)));
        // Typing into the terminal: the console is the user's. The kernel takes the request
        // as 32 bits, so the filter compares 32 bits.
        list.push((
            "ioctl",
            libc::SYS_ioctl,
            [libc::TIOCSTI, libc::TIOCLINUX]
                .into_iter()
                .map(|r| rule(vec![cond32(1, SeccompCmpOp::Eq, r)]))
                .collect(),
        ));
        // Only the query (0xffffffff) and the default (PER_LINUX).
        list.push((
            "personality",
            libc::SYS_personality,
            vec![rule(vec![
                cond32(0, SeccompCmpOp::Ne, 0xffff_ffff),
                cond32(0, SeccompCmpOp::Ne, 0),
            ])],
        ));
        match self {
            SeccompTable::Qemu(sockets) => {
                let mut allowed = Vec::new();
                if sockets.inet {
                    allowed.extend([libc::AF_INET as u64, libc::AF_INET6 as u64]);
                }
                if sockets.unix {
                    allowed.push(libc::AF_UNIX as u64);
                }
                let families = if allowed.is_empty() {
                    always()
                } else {
                    vec![rule(
                        allowed
                            .into_iter()
                            .map(|f| cond32(0, SeccompCmpOp::Ne, f))
                            .collect(),
                    )]
                };
                list.push(("socket", libc::SYS_socket, families));
            }
            SeccompTable::Swtpm => list.extend(no_sockets()),
            SeccompTable::SwtpmSetup => {}
            SeccompTable::VhostUserVsock => list.push((
                "socket",
                libc::SYS_socket,
                vec![rule(vec![cond32(
                    0,
                    SeccompCmpOp::Ne,
                    libc::AF_UNIX as u64,
                )])],
            )),
            SeccompTable::Virtiofsd => {
                list.retain(|(name, _, _)| *name != "unshare");
                list.push(("unshare", libc::SYS_unshare, any_flag(0, &NAMESPACE_FLAGS)));
                list.extend(no_sockets());
            }
            SeccompTable::SshKeygen | SeccompTable::JournalRemote => list.extend(no_sockets()),
        }
        list
    }

    /// The compiled filters: the deny-list (EPERM), and clone3 answered with ENOSYS so that
    /// the C library falls back to clone(2), whose flags the deny-list checks.
    pub fn filters(self) -> Result<Vec<BpfProgram>> {
        let deny = vmspawn_seccomp::compile(
            self.denied(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
        )
        .map_err(compile_error)?;
        let no_clone3 = vmspawn_seccomp::compile(
            vec![("clone3", libc::SYS_clone3, Vec::new())],
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
        )
        .map_err(compile_error)?;
        Ok(vec![deny, no_clone3])
    }
}

/// The launcher's allow-list once QEMU runs: console forwarding, QMP, the guest's
/// notifications, waiting for QEMU, signalling it, removing the runtime directory. Any other call kills the launcher.
/// Each entry: (name, number, argument rules — empty means any arguments).
pub fn launcher_allowed_syscalls() -> Vec<Entry> {
    let any = Vec::new;
    // openat only to read (directories while removing the runtime directory): no write access
    // mode, no O_CREAT/O_TRUNC.
    let read_only_open = vec![rule(vec![cond32(
        2,
        SeccompCmpOp::MaskedEq(
            (libc::O_ACCMODE
                | libc::O_CREAT
                | libc::O_TRUNC
                | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u64,
        ),
        libc::O_RDONLY as u64,
    )])];
    let mut list = vec![
        ("read", libc::SYS_read, any()),
        ("write", libc::SYS_write, any()),
        ("readv", libc::SYS_readv, any()),
        ("writev", libc::SYS_writev, any()),
        ("recvfrom", libc::SYS_recvfrom, any()),
        ("sendto", libc::SYS_sendto, any()),
        // Unregistering through the helper at the end (a frame, and its answer).
        ("sendmsg", libc::SYS_sendmsg, any()),
        ("recvmsg", libc::SYS_recvmsg, any()),
        // The guest's notification connections, on the listener vmspawn made before.
        ("accept4", libc::SYS_accept4, any()),
        ("shutdown", libc::SYS_shutdown, any()),
        ("ppoll", libc::SYS_ppoll, any()),
        ("close", libc::SYS_close, any()),
        ("wait4", libc::SYS_wait4, any()),
        ("waitid", libc::SYS_waitid, any()),
        // Only to stop the VM's processes, through the pidfds of its own children: no kill(2),
        // so no other process of the user can be signalled.
        (
            "pidfd_send_signal",
            libc::SYS_pidfd_send_signal,
            one_of(1, &[libc::SIGKILL as u64, libc::SIGTERM as u64]),
        ),
        // Only for abort() on a fatal error.
        (
            "tgkill",
            libc::SYS_tgkill,
            one_of(2, &[libc::SIGABRT as u64]),
        ),
        ("getpid", libc::SYS_getpid, any()),
        ("gettid", libc::SYS_gettid, any()),
        ("rt_sigprocmask", libc::SYS_rt_sigprocmask, any()),
        ("rt_sigaction", libc::SYS_rt_sigaction, any()),
        ("rt_sigreturn", libc::SYS_rt_sigreturn, any()),
        ("sigaltstack", libc::SYS_sigaltstack, any()),
        ("brk", libc::SYS_brk, any()),
        ("mmap", libc::SYS_mmap, no_exec_prot()),
        ("mprotect", libc::SYS_mprotect, no_exec_prot()),
        ("munmap", libc::SYS_munmap, any()),
        ("mremap", libc::SYS_mremap, any()),
        ("madvise", libc::SYS_madvise, any()),
        ("futex", libc::SYS_futex, any()),
        ("getrandom", libc::SYS_getrandom, any()),
        ("clock_gettime", libc::SYS_clock_gettime, any()),
        ("clock_nanosleep", libc::SYS_clock_nanosleep, any()),
        ("restart_syscall", libc::SYS_restart_syscall, any()),
        ("exit", libc::SYS_exit, any()),
        ("exit_group", libc::SYS_exit_group, any()),
        // Terminal state and window size of the console.
        (
            "ioctl",
            libc::SYS_ioctl,
            one_of(
                1,
                &[
                    libc::TCGETS,
                    libc::TCSETS,
                    libc::TCSETSW,
                    libc::TCSETSF,
                    libc::TIOCGWINSZ,
                    libc::TIOCSWINSZ,
                ],
            ),
        ),
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
                ],
            ),
        ),
        // QMP read timeouts.
        (
            "setsockopt",
            libc::SYS_setsockopt,
            vec![
                rule(vec![
                    cond32(1, SeccompCmpOp::Eq, libc::SOL_SOCKET as u64),
                    cond32(2, SeccompCmpOp::Eq, libc::SO_RCVTIMEO as u64),
                ]),
                rule(vec![
                    cond32(1, SeccompCmpOp::Eq, libc::SOL_SOCKET as u64),
                    cond32(2, SeccompCmpOp::Eq, libc::SO_SNDTIMEO as u64),
                ]),
            ],
        ),
        // Removing the runtime directory.
        ("openat", libc::SYS_openat, read_only_open),
        ("newfstatat", libc::SYS_newfstatat, any()),
        ("fstat", libc::SYS_fstat, any()),
        ("statx", libc::SYS_statx, any()),
        ("lseek", libc::SYS_lseek, any()),
        ("getdents64", libc::SYS_getdents64, any()),
        ("unlinkat", libc::SYS_unlinkat, any()),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([("poll", libc::SYS_poll, any())]);
    list
}

/// The cleanup process's allow-list: the launcher's, and SIGKILL to a process group (a setup
/// step's, when vmspawn died while it ran).
pub fn cleanup_filter() -> Result<BpfProgram> {
    let mut list = launcher_allowed_syscalls();
    // An --ephemeral copy's directories that the VM made unwritable are made writable again
    // to remove them.
    list.push(("fchmodat", libc::SYS_fchmodat, Vec::new()));
    list.push((
        "kill",
        libc::SYS_kill,
        vec![rule(vec![
            cond32(0, SeccompCmpOp::MaskedEq(0x8000_0000), 0x8000_0000),
            cond32(1, SeccompCmpOp::Eq, libc::SIGKILL as u64),
        ])],
    ));
    vmspawn_seccomp::allow_list(list).map_err(compile_error)
}

/// The launcher's allow-list filter (default action: kill the process).
pub fn launcher_filter() -> Result<BpfProgram> {
    vmspawn_seccomp::allow_list(launcher_allowed_syscalls()).map_err(compile_error)
}

/// Installs a compiled filter on the calling thread (sets no_new_privs). Async-signal-safe.
pub fn apply_filter(program: &BpfProgram) -> std::io::Result<()> {
    seccompiler::apply_filter(program).map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
#[allow(unsafe_code)] // forks and raw system calls to exercise the filters
mod tests {
    //! Firecracker-style filter tests: for each argument rule, a call with allowed arguments
    //! succeeds and a perturbed call is killed (launcher) or refused (QEMU), in a forked child.

    use super::*;

    /// Runs `body` in a forked child after installing `program`; returns how the child ended.
    fn in_child(program: &BpfProgram, body: impl FnOnce() -> i32) -> nix::sys::wait::WaitStatus {
        // SAFETY: the child only makes raw system calls and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = if apply_filter(program).is_ok() {
                    body()
                } else {
                    99
                };
                // SAFETY: _exit is async-signal-safe and never returns.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap()
            }
        }
    }

    fn killed(status: nix::sys::wait::WaitStatus) -> bool {
        matches!(
            status,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        )
    }

    fn exited(status: nix::sys::wait::WaitStatus, code: i32) -> bool {
        status == nix::sys::wait::WaitStatus::Exited(status.pid().unwrap(), code)
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

    #[test]
    fn launcher_allow_list_rules() {
        let program = launcher_filter().unwrap();
        let nobody = i64::from(i32::MAX - 1);
        let rw = i64::from(libc::PROT_READ | libc::PROT_WRITE);
        let rx = i64::from(libc::PROT_READ | libc::PROT_EXEC);
        let anon = i64::from(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        let tv = Box::leak(Box::new(libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        })) as *mut libc::timeval as i64;
        let winsize = Box::leak(Box::new([0u16; 4])).as_mut_ptr() as i64;
        let root = c"/".as_ptr() as i64;
        let scratch = c"/tmp/vmspawn-seccomp-test".as_ptr() as i64;
        let read_dir = i64::from(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        let create = i64::from(libc::O_RDWR | libc::O_CREAT);
        let cwd = i64::from(libc::AT_FDCWD);
        let sol = i64::from(libc::SOL_SOCKET);
        let cases: Vec<(&str, Call, Call)> = vec![
            (
                "pidfd_send_signal",
                call(
                    libc::SYS_pidfd_send_signal,
                    [-1, libc::SIGTERM.into(), 0, 0, 0, 0],
                ),
                call(
                    libc::SYS_pidfd_send_signal,
                    [-1, libc::SIGHUP.into(), 0, 0, 0, 0],
                ),
            ),
            (
                "kill",
                succeeds(libc::SYS_getpid, [0; 6]),
                call(libc::SYS_kill, [nobody, libc::SIGKILL.into(), 0, 0, 0, 0]),
            ),
            (
                "ioctl",
                call(
                    libc::SYS_ioctl,
                    [0, libc::TIOCGWINSZ as i64, winsize, 0, 0, 0],
                ),
                call(libc::SYS_ioctl, [0, libc::TIOCSTI as i64, root, 0, 0, 0]),
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
                "openat",
                succeeds(libc::SYS_openat, [cwd, root, read_dir, 0, 0, 0]),
                call(libc::SYS_openat, [cwd, scratch, create, 0o600, 0, 0]),
            ),
            (
                "fcntl",
                succeeds(libc::SYS_fcntl, [0, libc::F_GETFD.into(), 0, 0, 0, 0]),
                call(libc::SYS_fcntl, [0, libc::F_DUPFD.into(), 10, 0, 0, 0]),
            ),
            (
                "setsockopt",
                call(
                    libc::SYS_setsockopt,
                    [-1, sol, libc::SO_RCVTIMEO.into(), tv, 16, 0],
                ),
                call(
                    libc::SYS_setsockopt,
                    [-1, sol, libc::SO_REUSEADDR.into(), tv, 4, 0],
                ),
            ),
            (
                "tgkill",
                call(
                    libc::SYS_tgkill,
                    [nobody, nobody, libc::SIGABRT.into(), 0, 0, 0],
                ),
                call(
                    libc::SYS_tgkill,
                    [nobody, nobody, libc::SIGKILL.into(), 0, 0, 0],
                ),
            ),
            (
                "not listed",
                succeeds(libc::SYS_getpid, [0; 6]),
                call(
                    libc::SYS_socket,
                    [libc::AF_INET.into(), libc::SOCK_STREAM.into(), 0, 0, 0, 0],
                ),
            ),
        ];
        for (name, allowed, perturbed) in cases {
            let status = in_child(&program, allowed);
            assert!(
                exited(status, 0),
                "{name}: allowed call did not succeed: {status:?}"
            );
            let status = in_child(&program, perturbed);
            assert!(
                killed(status),
                "{name}: perturbed call was not killed: {status:?}"
            );
        }
    }

    const NO_SOCKETS: SeccompTable = SeccompTable::Qemu(QemuSockets {
        inet: false,
        unix: false,
    });

    fn tables() -> Vec<SeccompTable> {
        vec![
            NO_SOCKETS,
            SeccompTable::Qemu(QemuSockets {
                inet: true,
                unix: true,
            }),
            SeccompTable::Swtpm,
            SeccompTable::SwtpmSetup,
        ]
    }

    /// Runs `call` in a forked child under all of `table`'s filters; the child exits 0 when
    /// the call failed with `errno`, 1 when it failed otherwise or succeeded.
    fn fails_with(table: SeccompTable, errno: i32, call: impl FnOnce() -> i64) -> bool {
        let filters = table.filters().unwrap();
        // SAFETY: the child only makes raw system calls and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = if filters.iter().all(|f| apply_filter(f).is_ok()) {
                    let rc = call();
                    let got = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    i32::from(!(rc == -1 && got == errno))
                } else {
                    99
                };
                // SAFETY: _exit is async-signal-safe and never returns.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                exited(status, 0)
            }
        }
    }

    #[test]
    fn deny_lists_refuse_with_eperm_and_allow_the_rest() {
        for table in tables() {
            for (name, nr, rules) in table.denied() {
                if !rules.is_empty() {
                    continue; // the argument rules have a test of their own
                }
                // Null pointers and an invalid fd: the filter must answer EPERM before the
                // kernel looks at them.
                assert!(
                    fails_with(table, libc::EPERM, || sys(nr, [-1, 0, 0, 0, 0, 0])),
                    "{}: {name} was not refused with EPERM",
                    table.name()
                );
            }
            // Calls the processes need still work.
            let status = in_child(&table.filters().unwrap()[0], || {
                i32::from(!(sys(libc::SYS_getpid, [0; 6]) > 0 && sys(libc::SYS_dup, [0; 6]) >= 0))
            });
            assert!(exited(status, 0), "{}: {status:?}", table.name());
        }
    }

    #[test]
    fn argument_rules_refuse_exactly_what_they_name() {
        let sock = |family: i32| {
            move || {
                let fd = sys(
                    libc::SYS_socket,
                    [family.into(), libc::SOCK_STREAM.into(), 0, 0, 0, 0],
                );
                if fd >= 0 {
                    sys(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
                    0
                } else {
                    -1
                }
            }
        };
        let inet_and_unix = SeccompTable::Qemu(QemuSockets {
            inet: true,
            unix: true,
        });
        for table in tables() {
            let name = table.name();
            // Namespaces through clone(2): refused; a plain fork-like clone is not.
            assert!(
                fails_with(table, libc::EPERM, || {
                    let flags = i64::from(libc::CLONE_NEWUSER | libc::SIGCHLD);
                    let rc = sys(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]);
                    if rc == 0 {
                        // SAFETY: the clone's child leaves at once.
                        unsafe { libc::_exit(0) }
                    }
                    rc
                }),
                "{name}: clone(CLONE_NEWUSER)"
            );
            assert!(
                !fails_with(table, libc::EPERM, || {
                    let rc = sys(libc::SYS_clone, [libc::SIGCHLD.into(), 0, 0, 0, 0, 0]);
                    if rc == 0 {
                        // SAFETY: the clone's child leaves at once.
                        unsafe { libc::_exit(0) }
                    }
                    -1 // "failed with EPERM" only if errno says so
                }),
                "{name}: plain clone refused"
            );
            assert!(
                fails_with(table, libc::ENOSYS, || sys(libc::SYS_clone3, [0; 6])),
                "{name}: clone3 is not ENOSYS"
            );
            // TIOCSTI, also with high bits the kernel ignores; TIOCGWINSZ passes the filter.
            let winsize = Box::leak(Box::new([0u16; 4])).as_mut_ptr() as i64;
            let byte = c"x".as_ptr() as i64;
            for request in [libc::TIOCSTI as i64, (1i64 << 32) | libc::TIOCSTI as i64] {
                assert!(
                    fails_with(table, libc::EPERM, || sys(
                        libc::SYS_ioctl,
                        [0, request, byte, 0, 0, 0]
                    )),
                    "{name}: TIOCSTI {request:#x}"
                );
            }
            assert!(
                !fails_with(table, libc::EPERM, || sys(
                    libc::SYS_ioctl,
                    [0, libc::TIOCGWINSZ as i64, winsize, 0, 0, 0]
                )),
                "{name}: TIOCGWINSZ refused"
            );
            // personality: the query passes, a change does not.
            assert!(
                fails_with(table, libc::EPERM, || sys(
                    libc::SYS_personality,
                    [0x0008 /* PER_LINUX32 */, 0, 0, 0, 0, 0]
                )),
                "{name}: personality change"
            );
            assert!(
                !fails_with(table, libc::EPERM, || sys(
                    libc::SYS_personality,
                    [0xffff_ffff, 0, 0, 0, 0, 0]
                )),
                "{name}: personality query refused"
            );
        }
        // Sockets: QEMU only of the families its plan needs; swtpm none at all.
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_PACKET,
            libc::AF_VSOCK,
            libc::AF_ALG,
        ] {
            assert!(
                fails_with(NO_SOCKETS, libc::EPERM, sock(family)),
                "qemu: socket({family}) allowed"
            );
            assert!(
                fails_with(SeccompTable::Swtpm, libc::EPERM, sock(family)),
                "swtpm: socket({family}) allowed"
            );
            let allowed = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6].contains(&family);
            assert_eq!(
                fails_with(inet_and_unix, libc::EPERM, sock(family)),
                !allowed,
                "qemu+inet+unix: socket({family})"
            );
        }
        // socketpair stays (QEMU's TPM emulator makes one for the data channel).
        assert!(!fails_with(NO_SOCKETS, libc::EPERM, || {
            let mut pair = [0i32; 2];
            sys(
                libc::SYS_socketpair,
                [
                    libc::AF_UNIX.into(),
                    libc::SOCK_STREAM.into(),
                    0,
                    pair.as_mut_ptr() as i64,
                    0,
                    0,
                ],
            )
        }));
    }

    #[test]
    fn describe_and_coverage() {
        let rules = SandboxRules {
            exec: vec!["/usr/bin/qemu".into()],
            read: vec!["/boot/vmlinuz".into()],
            write: vec!["/run/user/1/vm".into()],
            ..SandboxRules::default()
        };
        assert!(rules.allows_read(Path::new("/run/user/1/vm/creds/x")));
        assert!(!rules.allows_read(Path::new("/home/u/secret")));
        assert_eq!(rules.describe()[0], "read+execute: /usr/bin/qemu");
    }
}
