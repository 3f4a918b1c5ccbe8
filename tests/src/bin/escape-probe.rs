//! Stands in for `qemu-system-x86_64` (the tests put it first in $PATH), so it runs with exactly
//! QEMU's confinement, and tries to break out. One line per attempt on stdout:
//! `PROBE <name> blocked <errno>` or `PROBE <name> ESCAPED`. Positive controls — things QEMU must
//! still be able to do — print `PROBE <name> ok` or `PROBE <name> FAILED <errno>`.
//! Targets come from the environment (PROBE_*), set by the test.
//!
//! Copied as `swtpm` (and `swtpm_setup`), it stands in for the TPM sidecar instead; see
//! `swtpm_main`.

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

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
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
    if from_argv == "swtpm" || from_argv == "swtpm_setup" {
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match invoked_as(&args).as_str() {
        // The state "exists": vmspawn goes on to start swtpm.
        "swtpm_setup" => return,
        "swtpm" => return swtpm_main(&args),
        _ => {}
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
        open(&env("PROBE_CANARY"), libc::O_RDONLY),
    );
    report(
        "write-outside-runtime-dir",
        open(
            &format!("{}/escaped", env("PROBE_WRITE_DIR")),
            libc::O_CREAT | libc::O_WRONLY,
        ),
    );
    report("read-etc-passwd", open("/etc/passwd", libc::O_RDONLY));
    report("open-dev-kvm", open("/dev/kvm", libc::O_RDWR));
    report("open-dev-net-tun", open("/dev/net/tun", libc::O_RDWR));

    // Executing anything but QEMU (Landlock Execute), in a child so we survive success.
    println!("PROBE exec-shell {}", exec_shell());

    // IPC scopes (Landlock ABI 6): abstract sockets and signals outside the domain.
    let name = env("PROBE_ABSTRACT");
    // SAFETY: plain socket calls on a sockaddr_un we fill in.
    let rc = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as u16;
        for (i, b) in name.bytes().enumerate() {
            addr.sun_path[i + 1] = b as libc::c_char;
        }
        let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as u32;
        libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) as i64
    };
    report("connect-host-abstract-socket", rc);
    let target: i32 = env("PROBE_SIGNAL_PID").parse().unwrap();
    // SAFETY: signal 0 only checks permission.
    report(
        "signal-process-outside-domain",
        unsafe { libc::kill(target, 0) } as i64,
    );
    // SAFETY: as above.
    report("signal-launcher", unsafe { libc::kill(libc::getppid(), 0) }
        as i64);

    // TCP (Landlock ABI 4).
    let tcp = |connect_port: Option<u16>, bind_port: Option<u16>| -> i64 {
        // SAFETY: plain socket calls on a sockaddr_in we fill in.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            addr.sin_port = bind_port.or(connect_port).unwrap_or(0).to_be();
            let ptr = (&addr as *const libc::sockaddr_in).cast();
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            let rc = if bind_port.is_some() {
                libc::bind(fd, ptr, len)
            } else {
                libc::connect(fd, ptr, len)
            };
            let saved = errno();
            libc::close(fd);
            *libc::__errno_location() = saved;
            rc as i64
        }
    };
    report("bind-tcp-port", tcp(None, Some(47113)));
    let port: u16 = env("PROBE_TCP_PORT").parse().unwrap();
    report("connect-tcp-loopback", tcp(Some(port), None));

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
        "load-kernel-module",
        sys(
            libc::SYS_finit_module,
            [-1, c"".as_ptr() as i64, 0, 0, 0, 0],
        ),
    );
    let (none, tmp, tmpfs) = (
        c"none".as_ptr() as i64,
        c"/tmp".as_ptr() as i64,
        c"tmpfs".as_ptr() as i64,
    );
    report(
        "mount-tmpfs",
        sys(libc::SYS_mount, [none, tmp, tmpfs, 0, 0, 0]),
    );
    report(
        "bpf",
        sys(libc::SYS_bpf, [5 /* BPF_PROG_LOAD */, 0, 0, 0, 0, 0]),
    );
    report(
        "unshare-user-namespace",
        sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER.into(), 0, 0, 0, 0, 0],
        ),
    );
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
