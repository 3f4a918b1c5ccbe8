//! The runner: carries out a `Plan`. It creates the private runtime directory and the files the
//! plan lists, starts QEMU, forwards the console, turns signals into a graceful power-off, and
//! removes every temporary file on every exit path.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::config::Background;
use crate::console::{self, EscapeDetector, RawMode, Tinter};
use crate::error::{Error, Result};
use crate::host::Resources;
use crate::notify::notify;
use crate::plan::{ConsolePlan, GrowImage, KVM_FD, Plan, QMP_FD, TAP_FD};
use crate::qmp::Qmp;
use crate::register;
use crate::sandbox;

/// How the runner reads the environment and how long it waits for a guest to power off.
pub struct RunEnv<'a> {
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
    pub shutdown_timeout: Duration,
    /// Debug logging ($SYSTEMD_LOG_LEVEL=debug).
    pub debug: bool,
}

/// QEMU's confinement, prepared in the parent so the child only makes system calls.
struct QemuJail {
    ruleset: Option<OwnedFd>,
    filter: seccompiler::BpfProgram,
}

/// The private per-VM directory; removed with everything in it when dropped.
struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    fn create(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.is_dir()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| {
                    Error::io(
                        format!("Failed to create runtime directory '{}'", parent.display()),
                        e,
                    )
                })?;
        }
        DirBuilder::new().mode(0o700).create(path).map_err(|e| {
            Error::io(
                format!("Failed to create runtime directory '{}'", path.display()),
                e,
            )
        })?;
        Ok(RuntimeDir {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "Failed to remove runtime directory '{}': {e}",
                self.path.display()
            );
        }
    }
}

fn create_private_file(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent()
        && !parent.is_dir()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| {
                Error::io(
                    format!("Failed to create directory '{}'", parent.display()),
                    e,
                )
            })?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("Failed to create '{}'", path.display()), e))
}

fn write_files(plan: &Plan) -> Result<()> {
    for file in &plan.files {
        create_private_file(&file.path)?
            .write_all(&file.contents)
            .map_err(|e| Error::io(format!("Failed to write '{}'", file.path.display()), e))?;
    }
    let (template, copy) = &plan.nvram_copy;
    let mut source = File::open(template).map_err(|e| {
        Error::io(
            format!("Failed to open OVMF vars file {}", template.display()),
            e,
        )
    })?;
    let mut dest = create_private_file(copy)?;
    std::io::copy(&mut source, &mut dest).map_err(|e| {
        Error::io(
            format!(
                "Failed to copy bytes from {} to {}",
                template.display(),
                copy.display()
            ),
            e,
        )
    })?;
    if let Some((sources, merged)) = &plan.initrd_merge {
        merge_initrds(sources, merged)?;
    }
    Ok(())
}

/// Concatenates initrds, each starting at a 4-byte aligned offset (the kernel's cpio rule).
fn merge_initrds(sources: &[PathBuf], merged: &Path) -> Result<()> {
    let mut out = create_private_file(merged)?;
    let mut offset: u64 = 0;
    for source in sources {
        let padding = offset.next_multiple_of(4) - offset;
        out.write_all(&[0u8; 4][..padding as usize])
            .map_err(|e| Error::io(format!("Failed to write '{}'", merged.display()), e))?;
        offset += padding;
        let mut input = File::open(source)
            .map_err(|e| Error::io(format!("Failed to open initrd '{}'", source.display()), e))?;
        offset += std::io::copy(&mut input, &mut out).map_err(|e| {
            Error::io(
                format!(
                    "Failed to copy initrd '{}' into '{}'",
                    source.display(),
                    merged.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Human-readable size like systemd's FORMAT_BYTES: "2G", "1.5G", "512M".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (suffix, factor) in UNITS {
        if bytes >= factor {
            let whole = bytes / factor;
            let tenth = (bytes % factor) * 10 / factor;
            return if tenth == 0 {
                format!("{whole}{suffix}")
            } else {
                format!("{whole}.{tenth}{suffix}")
            };
        }
    }
    format!("{bytes}B")
}

fn grow_image(grow: &GrowImage, quiet: bool) -> Result<()> {
    let path = &grow.path;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("Failed to open image file '{}'", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("Failed to stat '{}'", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::new(format!(
            "Failed to open image file '{}': not a regular file",
            path.display()
        )));
    }
    if meta.len() >= grow.size {
        return Ok(());
    }
    let (from, to) = (format_bytes(meta.len()), format_bytes(grow.size));
    file.set_len(grow.size).map_err(|e| {
        Error::io(
            format!(
                "Failed to grow image file '{}' from {from} to {to}",
                path.display()
            ),
            e,
        )
    })?;
    file.sync_all().map_err(|e| {
        Error::io(
            format!(
                "Failed to sync image file '{}' after growing to {to}",
                path.display()
            ),
            e,
        )
    })?;
    if !quiet {
        eprintln!(
            "Image file '{}' successfully grown from {from} to {to}.",
            path.display()
        );
    }
    Ok(())
}

fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false)
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the whole life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

fn stdout_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 1 stays open for the whole life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) }
}

/// Asks the terminal for its background colour (OSC 11) and derives the tint from it.
fn query_tint(var: &dyn Fn(&str) -> Option<OsString>) -> Option<String> {
    if var("TERM").is_some_and(|t| t == "linux") {
        return Some(console::tint_from_background(0.0, 0.0, 0.0));
    }
    let _raw = RawMode::enter(stdin_fd()).ok()?;
    let mut out = std::io::stdout();
    out.write_all(b"\x1b]11;?\x1b\\").ok()?;
    out.flush().ok()?;
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut reply = Vec::new();
    while reply.len() < 128 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds = [PollFd::new(stdin_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(left.as_millis().min(1000) as i32).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, timeout).unwrap_or(0) <= 0 {
            break;
        }
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(stdin_fd().as_raw_fd(), &mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.ends_with(b"\x07") || reply.ends_with(b"\x1b\\") {
            let (r, g, b) = console::parse_osc11_reply(&reply)?;
            return Some(console::tint_from_background(r, g, b));
        }
    }
    None
}

struct Supervisor<'a> {
    plan: &'a Plan,
    env: &'a RunEnv<'a>,
    child: Child,
    qmp: Option<Qmp>,
    stop_requested: bool,
    forced: bool,
    escaped: bool,
    deadline: Option<Instant>,
    raw: bool,
}

impl Supervisor<'_> {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn say(&self, message: &str) {
        let end = if self.raw { "\r\n" } else { "\n" };
        eprint!("{message}{end}");
    }

    fn kill_now(&mut self) {
        self.forced = true;
        let _ = kill(self.pid(), Signal::SIGKILL);
    }

    fn request_stop(&mut self) {
        if self.stop_requested {
            self.say("Stopping the VM at once.");
            self.kill_now();
            return;
        }
        self.stop_requested = true;
        let result = match self.qmp.as_mut() {
            Some(qmp) => qmp.system_powerdown(Duration::from_secs(5)),
            None => Err(Error::new("no QMP connection")),
        };
        match result {
            Ok(()) => {
                self.deadline = Some(Instant::now() + self.env.shutdown_timeout);
                if !self.plan.quiet {
                    self.say(&format!(
                        "Asked the guest to power off (ACPI power button); waiting up to {} s. Send the signal again to stop the VM at once.",
                        self.env.shutdown_timeout.as_secs()
                    ));
                }
            }
            Err(e) => {
                self.say(&format!(
                    "Failed to ask the guest to power off ({e}); stopping the VM at once."
                ));
                self.kill_now();
            }
        }
    }

    fn poll_timeout(&self) -> PollTimeout {
        match self.deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::ZERO)
            }
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

fn spawn_qemu(
    plan: &Plan,
    env: &RunEnv,
    stdio: Option<&OwnedFd>,
    qmp_child: OwnedFd,
    jail: Option<QemuJail>,
    resources: Resources,
) -> Result<Child> {
    let mut cmd = Command::new(&plan.qemu_binary);
    cmd.args(&plan.qemu_args);
    if (env.var)("LANG").is_none() {
        cmd.env("LANG", "C.UTF-8");
    }
    if let Some(pty) = stdio {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::io("Failed to set up the console", e))
        };
        cmd.stdin(Stdio::from(dup(pty)?))
            .stdout(Stdio::from(dup(pty)?));
    }
    // QEMU gets its own process group unless it reads our terminal itself (native console), so
    // a Ctrl-C on the terminal reaches vmspawn, which turns it into a graceful power-off.
    let own_process_group = !matches!(plan.console, ConsolePlan::Native);
    let qmp_fd = qmp_child.as_raw_fd();
    // Helper fds go to fixed numbers in QEMU; park them high first, so no dup2 below overwrites
    // a source it still needs.
    let park = |fd: OwnedFd| -> Result<OwnedFd> {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
            // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
            .map(|raw| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
            .map_err(|e| Error::io("Failed to prepare an fd for QEMU", e))
    };
    let mut passed: Vec<(OwnedFd, i32)> = Vec::new();
    if let Some(fd) = resources.tap {
        passed.push((park(fd)?, TAP_FD));
    }
    if let Some(fd) = resources.kvm {
        passed.push((park(fd)?, KVM_FD));
    }
    let passed_raw: Vec<(i32, i32)> = passed
        .iter()
        .map(|(fd, target)| (fd.as_raw_fd(), *target))
        .collect();
    let ruleset_fd = jail
        .as_ref()
        .and_then(|j| j.ruleset.as_ref().map(AsRawFd::as_raw_fd));
    let filter = jail.as_ref().map(|j| j.filter.clone());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (sigprocmask, setpgid, prctl, dup2, fcntl, landlock, seccomp).
    unsafe {
        cmd.pre_exec(move || {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if own_process_group {
                libc::setpgid(0, 0);
            }
            // If vmspawn dies, QEMU must not outlive it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            if qmp_fd == QMP_FD {
                let flags = libc::fcntl(qmp_fd, libc::F_GETFD);
                libc::fcntl(qmp_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(qmp_fd, QMP_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &(source, target) in &passed_raw {
                if libc::dup2(source, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Confinement last, so nothing above needs to be allowed by it.
            if let Some(filter) = &filter {
                sandbox::enter_domain_in_child(ruleset_fd)?;
                sandbox::apply_filter(filter)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("Failed to execute QEMU '{}'", plan.qemu_binary.display()),
            e,
        )
    })?;
    drop(qmp_child);
    drop(jail);
    drop(passed);
    Ok(child)
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// Registers the VM led by QEMU (`leader`) as the plan says. Returns the connection to
/// unregister through later; a failure is fatal only with `--register=yes`.
fn register_vm(
    plan: &Plan,
    env: &RunEnv,
    connection: Option<register::Connection>,
    leader: u32,
) -> Result<Option<register::Connection>> {
    let (Some(registration), Some(mut connection)) = (&plan.registration, connection) else {
        return Ok(None);
    };
    match connection.register(&registration.request, leader) {
        Ok(()) => {
            if env.debug {
                eprintln!(
                    "Registered machine '{}' with {}.",
                    registration.request.machine,
                    connection.describe()
                );
            }
            Ok(Some(connection))
        }
        Err(e) if registration.required => Err(e),
        Err(e) => {
            if env.debug {
                eprintln!(
                    "Not registered with {} (--register= is unset, so the VM runs anyway): {e}",
                    connection.describe()
                );
            }
            Ok(None)
        }
    }
}

fn unregister_vm(plan: &Plan, env: &RunEnv, connection: Option<register::Connection>) {
    let Some(mut connection) = connection else {
        return;
    };
    // As in 259, a failure to unregister is not an error of the VM.
    if let Err(e) = connection.unregister(&plan.machine) {
        if env.debug {
            eprintln!("{e}");
        }
    }
}

/// Carries out the plan; returns the process exit status.
pub fn run(plan: &Plan, env: &RunEnv, resources: Resources) -> Result<i32> {
    // Signals become events on a signalfd, blocked before any child exists.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| Error::io("Failed to block signals", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::io("Failed to create signalfd", e))?;

    match &plan.confinement {
        None => eprintln!(
            "Warning: VMSPAWN_UNCONFINED is set: QEMU and vmspawn run without Landlock and seccomp \
             confinement. Use this only to debug."
        ),
        Some(c) => {
            for warning in &c.warnings {
                eprintln!("Warning: {warning}");
            }
        }
    }
    let runtime_dir = RuntimeDir::create(&plan.runtime_dir)?;
    write_files(plan)?;
    if let Some(grow) = &plan.grow_image {
        grow_image(grow, plan.quiet)?;
    }
    for line in &plan.banner {
        eprintln!("{line}");
    }

    // Rulesets are built once the paths they name exist (the runtime directory, its files).
    let jails = match &plan.confinement {
        Some(c) => Some((
            QemuJail {
                ruleset: sandbox::ruleset_fd(&c.qemu)?,
                filter: sandbox::qemu_filter()?,
            },
            sandbox::launcher_filter()?,
        )),
        None => None,
    };

    let (qmp_parent, qmp_child) =
        UnixStream::pair().map_err(|e| Error::io("Failed to create QMP socket pair", e))?;
    let qmp_child = OwnedFd::from(qmp_child);

    let stdin_tty = is_tty(stdin_fd());
    let stdout_tty = is_tty(stdout_fd());
    let mut tinter = None;
    let mut pty_master = None;
    let mut pty_slave = None;
    let mut read_input = false;
    let mut raw_mode = None;
    if let ConsolePlan::Forwarded {
        read_only,
        background,
    } = &plan.console
    {
        let (master, slave) = console::open_pty()?;
        if stdout_tty {
            console::copy_window_size(stdout_fd(), master.as_fd());
        }
        let dumb = console::is_dumb(stdout_tty, env.var);
        let sgr = match background {
            _ if dumb => None,
            Background::Off => None,
            Background::Sgr(s) => Some(s.clone()),
            Background::Auto if stdin_tty => query_tint(env.var),
            Background::Auto => None,
        };
        tinter = sgr.map(Tinter::new);
        read_input = !read_only;
        if read_input && stdin_tty {
            raw_mode = Some(RawMode::enter(stdin_fd())?);
        }
        set_nonblocking(master.as_fd());
        pty_master = Some(master);
        pty_slave = Some(slave);
    }

    let (qemu_jail, launcher_filter) = match jails {
        Some((q, l)) => (Some(q), Some(l)),
        None => (None, None),
    };
    let mut resources = resources;
    let registration = resources.registration.take();
    let child = spawn_qemu(
        plan,
        env,
        pty_slave.as_ref(),
        qmp_child,
        qemu_jail,
        resources,
    )?;
    drop(pty_slave);
    // Register once QEMU runs (it is the leader), before the launcher confines itself.
    let registered = match register_vm(plan, env, registration, child.id()) {
        Ok(registered) => registered,
        Err(e) => {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let mut child = child;
            let _ = child.wait();
            return Err(e);
        }
    };
    let qmp = Qmp::new(qmp_parent).ok();
    let notify_socket = (env.var)("NOTIFY_SOCKET");
    notify(
        notify_socket.as_deref(),
        &format!("STATUS=VM started.\nX_VMSPAWN_LEADER_PID={}", child.id()),
    );
    if plan.ready_at_start {
        notify(notify_socket.as_deref(), "READY=1");
    }

    // From here on the launcher only supervises: confine it as well.
    if let (Some(c), Some(filter)) = (&plan.confinement, &launcher_filter) {
        // Ask the kernel about Landlock now: the filter below does not allow it later.
        let summary = sandbox::landlock_summary();
        let confined = sandbox::restrict_self(&c.launcher).and_then(|status| {
            sandbox::apply_filter(filter)
                .map_err(|e| Error::io("Failed to install the seccomp filter", e))?;
            Ok(status)
        });
        match confined {
            Ok(status) => {
                if env.debug {
                    eprintln!(
                        "Confinement: {}; Landlock ruleset {status:?}; seccomp: QEMU deny-list of {} \
                         calls over -sandbox {}, launcher allow-list of {} calls.",
                        summary,
                        sandbox::qemu_denied_syscalls().len(),
                        crate::plan::QEMU_SANDBOX,
                        sandbox::launcher_allowed_syscalls().len()
                    );
                    for rule in c.qemu.describe() {
                        eprintln!("QEMU may access: {rule}");
                    }
                } else if status != landlock::RulesetStatus::FullyEnforced && !plan.quiet {
                    eprintln!("Warning: {summary}");
                }
            }
            Err(e) => {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let mut child = child;
                let _ = child.wait();
                return Err(e);
            }
        }
    }

    let mut sup = Supervisor {
        plan,
        env,
        child,
        qmp,
        stop_requested: false,
        forced: false,
        escaped: false,
        deadline: None,
        raw: raw_mode.is_some(),
    };
    let result = supervise(
        &mut sup,
        &signals,
        pty_master.as_ref(),
        read_input,
        &mut tinter,
    );
    if result.is_err() {
        let _ = kill(sup.pid(), Signal::SIGKILL);
    }
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            let _ = sup.child.wait();
            drop(raw_mode);
            drop(runtime_dir);
            unregister_vm(plan, env, registered);
            return Err(e);
        }
    };

    // Restore the terminal before we print our verdict.
    drop(raw_mode);
    drop(runtime_dir);
    unregister_vm(plan, env, registered);

    if sup.escaped {
        return Ok(0);
    }
    if sup.forced {
        eprintln!("The VM was stopped forcibly (QEMU killed) because it did not power off.");
        return Ok(1);
    }
    if let Some(code) = status.code() {
        if code != 0 {
            eprintln!(
                "QEMU exited with status {code}; the VM did not shut down cleanly (see QEMU's messages above)."
            );
            if let Some(c) = &plan.confinement {
                eprintln!(
                    "QEMU runs confined (Landlock and seccomp). If it could not open a file or device, that \
                     may be why: it may access only what this VM needs ({}). Set VMSPAWN_UNCONFINED=1 to \
                     check whether confinement is the cause.",
                    c.qemu.describe().join("; ")
                );
            }
            return Ok(1);
        }
        return Ok(0);
    }
    let signal = status.signal().unwrap_or(0);
    let core = if status.core_dumped() {
        " and dumped core"
    } else {
        ""
    };
    eprintln!("QEMU was killed by {}{core}.", signal_name(signal));
    Ok(1)
}

fn supervise(
    sup: &mut Supervisor,
    signals: &SignalFd,
    master: Option<&OwnedFd>,
    mut read_input: bool,
    tinter: &mut Option<Tinter>,
) -> Result<std::process::ExitStatus> {
    let mut escape = EscapeDetector::new();
    let mut to_guest: Vec<u8> = Vec::new();
    let mut master_open = master.is_some();
    let mut stdout = std::io::stdout();
    let mut last_written: Option<u8> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut exited = None;

    let mut forward_output = |data: &[u8], tinter: &mut Option<Tinter>, last: &mut Option<u8>| {
        if data.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(data.len() + 32);
        match tinter {
            Some(t) => t.process(data, &mut out),
            None => out.extend_from_slice(data),
        }
        *last = data.last().copied();
        let _ = stdout.write_all(&out);
        let _ = stdout.flush();
    };

    loop {
        if let Some(status) = exited {
            // Drain what QEMU wrote before it went away.
            if let Some(m) = master.filter(|_| master_open) {
                while let Ok(n) = nix::unistd::read(m.as_raw_fd(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                    forward_output(&buf[..n], tinter, &mut last_written);
                }
            }
            if let Some(t) = tinter.as_ref() {
                let _ = std::io::stdout().write_all(t.finish());
            }
            if last_written.is_some_and(|b| b != b'\n') {
                let plain_newline = !is_tty(stdout_fd()) || last_written == Some(b'\r');
                let _ = std::io::stdout().write_all(if plain_newline { b"\n" } else { b"\r\n" });
            }
            let _ = std::io::stdout().flush();
            return Ok(status);
        }

        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let master_index = master.filter(|_| master_open).map(|m| {
            let mut flags = PollFlags::POLLIN;
            if !to_guest.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(m.as_fd(), flags));
            fds.len() - 1
        });
        let stdin_index = (read_input && master_open && to_guest.len() < 64 * 1024).then(|| {
            fds.push(PollFd::new(stdin_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });

        match poll(&mut fds, sup.poll_timeout()) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("Failed to poll", e)),
        }
        let revents = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let signal_ready = !revents(0).is_empty();
        let master_events = master_index.map(revents).unwrap_or(PollFlags::empty());
        let stdin_events = stdin_index.map(revents).unwrap_or(PollFlags::empty());
        drop(fds);

        if let Some(deadline) = sup.deadline
            && Instant::now() >= deadline
            && !sup.forced
        {
            sup.say(&format!(
                "The guest did not power off within {} s; stopping the VM.",
                sup.env.shutdown_timeout.as_secs()
            ));
            sup.kill_now();
            sup.deadline = None;
        }

        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {
                        if let Ok(Some(status)) = sup.child.try_wait() {
                            exited = Some(status);
                        }
                    }
                    Ok(Signal::SIGWINCH) => {
                        if let Some(m) = master {
                            console::copy_window_size(stdout_fd(), m.as_fd());
                        }
                    }
                    Ok(Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP) => sup.request_stop(),
                    _ => {}
                }
            }
        }

        if let Some(m) = master {
            if master_events.contains(PollFlags::POLLIN)
                || master_events.contains(PollFlags::POLLHUP)
            {
                match nix::unistd::read(m.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => master_open = false,
                    Ok(n) => forward_output(&buf[..n], tinter, &mut last_written),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Error::io("Failed to read from the console", e)),
                }
            }
            if master_events.contains(PollFlags::POLLOUT) && !to_guest.is_empty() {
                match nix::unistd::write(m, &to_guest) {
                    Ok(n) => {
                        to_guest.drain(..n);
                    }
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(_) => to_guest.clear(),
                }
            }
        }

        if stdin_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(stdin_fd().as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => read_input = false,
                Ok(n) => {
                    if escape.feed(&buf[..n], Instant::now()) {
                        sup.escaped = true;
                        let _ = kill(sup.pid(), Signal::SIGKILL);
                        read_input = false;
                    } else {
                        to_guest.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }

        // A SIGCHLD can be merged with another; check the child whenever we wake up.
        if exited.is_none()
            && let Ok(Some(status)) = sup.child.try_wait()
        {
            exited = Some(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_formatting() {
        assert_eq!(format_bytes(2 << 30), "2G");
        assert_eq!(format_bytes(3 << 29), "1.5G");
        assert_eq!(format_bytes(4096), "4K");
        assert_eq!(format_bytes(100), "100B");
    }

    #[test]
    fn initrd_merge_aligns_to_four_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"12345").unwrap();
        std::fs::write(&b, b"xy").unwrap();
        let merged = dir.path().join("m");
        merge_initrds(&[a, b], &merged).unwrap();
        assert_eq!(std::fs::read(&merged).unwrap(), b"12345\0\0\0xy");
    }

    #[test]
    fn grow_rounds_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, vec![0u8; 10000]).unwrap();
        grow_image(
            &GrowImage {
                path: img.clone(),
                size: 8192,
            },
            true,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 10000);
        grow_image(
            &GrowImage {
                path: img.clone(),
                size: 16384,
            },
            true,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 16384);
    }
}
