//! The lifecycle of a VM: carries out a `Plan` as a sequence of steps — materialise the
//! runtime directory, run the setup steps, start the sidecars and wait until each is ready,
//! start QEMU, register it, confine the launcher, supervise, stop everything in reverse order
//! and clean up. Every started process is a `ChildGuard` and the runtime directory a
//! `RuntimeDir`, so each exit path stops and removes what was started and created.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::acquire::Resources;
use crate::config::Background;
use crate::console::{self, RawMode, Tinter};
use crate::error::{Error, Result};
use crate::notify::Notifier;
use crate::plan::{ConsolePlan, Plan};
use crate::process::{FdName, Lifetime, ProcessPlan, Readiness, Role, Stop};
use crate::qmp::Qmp;
use crate::register;
use crate::runtime::{self, RuntimeDir};
use crate::sandbox;
use crate::spawn::{self, ChildGuard, FdStore};
use crate::supervise::{ConsoleIo, Ending, GuestChannel, Supervisor};
use crate::sys;

/// How the runner reads the environment and how long it waits for a guest to power off.
pub struct RunEnv<'a> {
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
    pub shutdown_timeout: Duration,
    /// Debug logging ($SYSTEMD_LOG_LEVEL=debug).
    pub debug: bool,
}

/// How long a setup step (swtpm_setup) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a sidecar may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// swtpm's control channel: CMD_GET_CAPABILITY, answered with an 8-byte capability mask.
const SWTPM_CMD_GET_CAPABILITY: u32 = 1;
const SWTPM_CAPABILITY_REPLY: usize = 8;

fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false)
}

/// Asks the terminal for its background colour (OSC 11) and derives the tint from it.
fn query_tint(var: &dyn Fn(&str) -> Option<OsString>) -> Option<String> {
    if var("TERM").is_some_and(|t| t == "linux") {
        return Some(console::tint_from_background(0.0, 0.0, 0.0));
    }
    let _raw = RawMode::enter(sys::stdin()).ok()?;
    let mut out = std::io::stdout();
    out.write_all(b"\x1b]11;?\x1b\\").ok()?;
    out.flush().ok()?;
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut reply = Vec::new();
    while reply.len() < 128 {
        if Instant::now() >= deadline {
            break;
        }
        let mut fds = [PollFd::new(sys::stdin(), PollFlags::POLLIN)];
        if poll(&mut fds, spawn::timeout_until(deadline)).unwrap_or(0) <= 0 {
            break;
        }
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(sys::stdin().as_raw_fd(), &mut buf).ok()?;
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

/// Registers the VM led by QEMU (`leader`) as the plan says; a failure is fatal only with
/// `--register=yes`. Returns whether it is registered; the connection stays open either way
/// (a connection to the helper may be the session its TAP lives for; the caller decides).
fn register_vm(
    plan: &Plan,
    env: &RunEnv,
    connection: &mut Option<register::Connection>,
    leader: u32,
    in_own_scope: bool,
) -> Result<bool> {
    let (Some(registration), Some(connection)) = (&plan.registration, connection.as_mut()) else {
        return Ok(false);
    };
    // In the scope vmspawn allocated, machined takes the leader's unit (that scope) instead of
    // making one of its own.
    let mut request = registration.request.clone();
    request.allocate_unit &= !in_own_scope;
    match connection.register(&request, leader) {
        Ok(()) => {
            if env.debug {
                eprintln!(
                    "Registered machine '{}' with {}.",
                    registration.request.machine,
                    connection.describe()
                );
            }
            Ok(true)
        }
        Err(e) if registration.required => Err(e),
        Err(e) => {
            if env.debug {
                eprintln!(
                    "Not registered with {} (--register= is unset, so the VM runs anyway): {e}",
                    connection.describe()
                );
            }
            Ok(false)
        }
    }
}

fn unregister_vm(plan: &Plan, env: &RunEnv, connection: Option<&mut register::Connection>) {
    let Some(connection) = connection else {
        return;
    };
    // As in 259, a failure to unregister is not an error of the VM.
    if let Err(e) = connection.unregister(&plan.machine) {
        if env.debug {
            eprintln!("{e}");
        }
    }
}

/// Runs a one-shot step to completion (with its fallback arguments if the first try fails).
/// Its output is shown only when it fails.
fn run_setup(
    process: &ProcessPlan,
    fallback_args: Option<&Vec<OsString>>,
    fds: &mut FdStore,
    env: &RunEnv,
    runtime_dir: &RuntimeDir,
) -> Result<()> {
    let attempt = |process: &ProcessPlan, fds: &mut FdStore| -> Result<Option<String>> {
        let mut child = spawn::spawn(process, fds, None, env.var)?;
        // Its own process group: whatever it starts goes with it if vmspawn dies.
        if process.own_process_group {
            runtime_dir.watch_group(Some(child.id()))?;
        }
        let output = read_bounded(child.take_stderr(), SETUP_TIMEOUT);
        let status = child.wait_timeout(SETUP_TIMEOUT);
        if process.own_process_group {
            if status.is_none() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    Signal::SIGKILL,
                );
            }
            runtime_dir.watch_group(None)?;
        }
        match status {
            Some(status) if status.success() => Ok(None),
            Some(status) => Ok(Some(format!(
                "{} {}{}",
                process.name,
                spawn::describe_status(status),
                quoted_output(&output)
            ))),
            None => Ok(Some(format!(
                "{} did not finish within {} s{}",
                process.name,
                SETUP_TIMEOUT.as_secs(),
                quoted_output(&output)
            ))),
        }
    };
    let Some(mut failure) = attempt(process, fds)? else {
        return Ok(());
    };
    if let Some(args) = fallback_args {
        let mut retry = process.clone();
        retry.args = args.clone();
        match attempt(&retry, fds)? {
            None => return Ok(()),
            Some(second) => failure = second,
        }
    }
    Err(Error::new(failure))
}

fn quoted_output(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        String::new()
    } else {
        format!(":\n{output}")
    }
}

/// Reads a child's captured stderr until EOF or `timeout` (at most 64 KiB).
fn read_bounded(stderr: Option<std::process::ChildStderr>, timeout: Duration) -> String {
    let Some(stderr) = stderr else {
        return String::new();
    };
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < 64 * 1024 {
        let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLIN)];
        if Instant::now() >= deadline
            || poll(&mut fds, spawn::timeout_until(deadline)).unwrap_or(0) <= 0
        {
            break;
        }
        match nix::unistd::read(stderr.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until a sidecar is ready, as its plan says.
fn wait_ready(child: &mut ChildGuard, readiness: &Readiness, fds: &mut FdStore) -> Result<()> {
    let (socket, connection) = match readiness {
        Readiness::Started => return Ok(()),
        Readiness::Connect { socket, connection } => {
            let stream = connect_when_accepting(child, socket)?;
            fds.insert(*connection, OwnedFd::from(stream));
            return Ok(());
        }
        Readiness::SwtpmControl { socket, connection } => (socket, connection),
    };
    let what = child.name().to_string();
    let exited_early = |child: &mut ChildGuard, why: String| -> Error {
        match child.wait_timeout(Duration::from_secs(1)) {
            Some(status) => Error::new(format!(
                "{what} {} before it was ready.",
                spawn::describe_status(status)
            )),
            None => Error::new(why),
        }
    };
    let stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => {
            return Err(exited_early(
                child,
                format!(
                    "Failed to connect to the control socket of {what} at '{}': {e}",
                    socket.display()
                ),
            ));
        }
    };
    let mut stream_ref = &stream;
    if let Err(e) = stream_ref.write_all(&SWTPM_CMD_GET_CAPABILITY.to_be_bytes()) {
        return Err(exited_early(
            child,
            format!("Failed to talk to {what} on its control socket: {e}"),
        ));
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut reply = Vec::with_capacity(SWTPM_CAPABILITY_REPLY);
    while reply.len() < SWTPM_CAPABILITY_REPLY {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(format!(
                "{what} did not answer on its control socket within {} s.",
                READY_TIMEOUT.as_secs()
            )));
        }
        let mut pfds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(child.pidfd(), PollFlags::POLLIN),
        ];
        match poll(&mut pfds, spawn::timeout_until(deadline)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io("Failed to poll", e)),
        }
        let readable = pfds[0].revents().is_some_and(|r| !r.is_empty());
        let exited = pfds[1].revents().is_some_and(|r| !r.is_empty());
        if readable {
            // Exactly the reply's length, so QEMU later reads only its own answers.
            let mut buf = [0u8; SWTPM_CAPABILITY_REPLY];
            match nix::unistd::read(
                stream.as_raw_fd(),
                &mut buf[..SWTPM_CAPABILITY_REPLY - reply.len()],
            ) {
                Ok(0) | Err(_) => {
                    return Err(exited_early(
                        child,
                        format!("{what} closed its control socket before it was ready."),
                    ));
                }
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        } else if exited {
            return Err(exited_early(
                child,
                format!("{what} exited before it was ready."),
            ));
        }
    }
    fds.insert(*connection, OwnedFd::from(stream));
    Ok(())
}

/// Connects to `socket` as soon as it accepts connections: at once when vmspawn bound it (the
/// connection waits in the backlog until `child` accepts it), else once `child` has bound it.
fn connect_when_accepting(child: &mut ChildGuard, socket: &std::path::Path) -> Result<UnixStream> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "Failed to connect to the socket of {} at '{}'",
                        child.name(),
                        socket.display()
                    ),
                    e,
                ));
            }
        }
        if let Some(status) = child.try_wait() {
            return Err(Error::new(format!(
                "{} {} before it was ready.",
                child.name(),
                spawn::describe_status(status)
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "{} did not accept connections on '{}' within {} s.",
                child.name(),
                socket.display(),
                READY_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Carries out the plan; returns the process exit status.
pub fn run(plan: &Plan, env: &RunEnv, resources: Resources) -> Result<i32> {
    // Signals become events on a signalfd, blocked before any child exists (the cleanup
    // process keeps them blocked, so a Ctrl-C on the terminal does not end it). SIGRTMIN+4 is
    // systemd's shutdown request; 259 treats it like SIGTERM.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    crate::sys::add_raw_signal(&mut mask, crate::sys::sigrtmin_plus_4());
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| Error::io("Failed to block signals", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::io("Failed to create signalfd", e))?;

    if plan.launcher_jail.is_none() {
        eprintln!(
            "Warning: VMSPAWN_UNCONFINED is set: QEMU, its sidecars and vmspawn run without Landlock \
             and seccomp confinement. Use this only to debug."
        );
    }
    for warning in &plan.warnings {
        eprintln!("Warning: {warning}");
    }
    if env.debug {
        for note in &plan.notes {
            eprintln!("{note}");
        }
    }

    // The scope unit first (vmspawn moves into it), so every process started below is in it.
    let mut scope = match &plan.scope {
        Some(scope) => crate::scope::allocate(scope, std::process::id(), env.var, env.debug)?,
        None => None,
    };

    // Materialise: the runtime directory (and its cleanup process), files, state, sockets.
    let runtime_dir = RuntimeDir::create(
        &plan.runtime_dir,
        plan.runtime_dir_managed,
        plan.launcher_jail.as_ref(),
        plan.ephemeral_copy.as_ref(),
    )?;
    if let Some(copy) = &plan.ephemeral_copy {
        let warnings = crate::ephemeral_dir::fill(copy)?;
        if !plan.quiet {
            for warning in warnings {
                eprintln!("Warning: {warning}");
            }
        }
    }
    runtime::materialise(plan)?;
    let Resources {
        mut fds,
        mut registration,
        helper,
    } = resources;
    runtime::bind_sockets(plan, &mut fds)?;
    if let Some(overlay) = &plan.ephemeral_overlay {
        let (read_write, read_only) = crate::overlay::create(overlay)?;
        fds.insert(FdName::EphemeralOverlay, read_write);
        fds.insert(FdName::EphemeralOverlayReadOnly, read_only);
    }
    for line in &plan.banner {
        eprintln!("{line}");
    }

    // The console.
    let stdin_tty = is_tty(sys::stdin());
    let stdout_tty = is_tty(sys::stdout());
    let mut tinter = None;
    let mut pty = None;
    let mut read_input = false;
    let mut raw_mode = None;
    if let ConsolePlan::Forwarded {
        read_only,
        background,
    } = &plan.console
    {
        let (master, slave) = console::open_pty()?;
        if stdout_tty {
            console::copy_window_size(sys::stdout(), master.as_fd());
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
            raw_mode = Some(RawMode::enter(sys::stdin())?);
        }
        console::set_nonblocking(master.as_fd());
        pty = Some((master, slave));
    }

    let (qmp_parent, qmp_child) =
        UnixStream::pair().map_err(|e| Error::io("Failed to create QMP socket pair", e))?;
    fds.insert(FdName::Qmp, OwnedFd::from(qmp_child));

    // Start the processes in order: setup steps run to completion, each sidecar must be ready
    // before the next process starts, QEMU comes last.
    let mut running: Vec<ChildGuard> = Vec::new();
    for process in &plan.processes {
        match &process.lifetime {
            Lifetime::Setup { fallback_args } => {
                run_setup(process, fallback_args.as_ref(), &mut fds, env, &runtime_dir)?
            }
            Lifetime::Vm { readiness, .. } => {
                if process.role == Role::Qemu {
                    runtime::write_credentials_from_files(plan)?;
                }
                let mut child =
                    spawn::spawn(process, &mut fds, pty.as_ref().map(|(_, s)| s), env.var)?;
                wait_ready(&mut child, readiness, &mut fds)?;
                running.push(child);
            }
        }
    }
    let master = pty.map(|(master, _slave)| master);
    let Some(mut qemu) = running.pop().filter(|c| c.role() == Role::Qemu) else {
        return Err(Error::new("internal error: the plan has no QEMU process"));
    };

    // Register once QEMU runs (it is the leader), before the launcher confines itself.
    let registered = register_vm(plan, env, &mut registration, qemu.id(), scope.is_some())?;
    // An unregistered connection stays open only as the session of a TAP from the helper.
    let tap_from_helper = plan
        .qemu()
        .is_some_and(|q| q.fds.iter().any(|f| f.name == FdName::Tap));
    if !registered && !tap_from_helper {
        registration = None;
    }
    let qmp = Qmp::new(qmp_parent).ok();
    let notifier = Notifier::new((env.var)("NOTIFY_SOCKET").as_deref());
    notifier.send(&format!(
        "STATUS=VM started.\nX_VMSPAWN_LEADER_PID={}",
        qemu.id()
    ));
    if plan.ready_at_start {
        notifier.send("READY=1");
    }
    let mut guest = match plan.guest_notifications {
        true => Some(GuestChannel::new(
            fds.take(FdName::NotifyListener).ok_or_else(|| {
                Error::new("internal error: no listener for the guest's notifications")
            })?,
            &notifier,
            plan.vsock_uds
                .is_some()
                .then_some(crate::supervise::NOTIFY_IDLE_END),
            env.debug,
        )?),
        false => None,
    };

    // From here on the launcher only supervises: confine it as well.
    if let Some(rules) = &plan.launcher_jail {
        confine_launcher(plan, rules, env)?;
    }

    let mut supervisor = Supervisor::new(
        &mut qemu,
        &mut running,
        qmp,
        env.shutdown_timeout,
        plan.quiet,
    );
    supervisor.raw = raw_mode.is_some();
    supervisor.scope = scope.as_mut();
    let console_io = master.as_ref().map(|master| ConsoleIo {
        master,
        read_input,
        tinter,
        raw: raw_mode.is_some(),
    });
    let ending = supervisor.run(&signals, &notifier, console_io, guest.as_mut());
    notifier.flush();
    let guest_exit_status = guest.as_ref().and_then(|g| g.exit_status);
    drop(guest);

    // Stop in reverse start order: QEMU has ended (or is killed by its guard), then sidecars.
    drop(qemu);
    for sidecar in running.iter_mut().rev() {
        let process = plan.processes.iter().find(|p| p.name == sidecar.name());
        if let Some(Lifetime::Vm {
            stop: Stop::Signal { signal, grace },
            ..
        }) = process.map(|p| &p.lifetime)
        {
            let signal = Signal::try_from(*signal).unwrap_or(Signal::SIGTERM);
            sidecar.stop(signal, *grace);
        }
    }
    drop(running);
    // Restore the terminal before we print our verdict.
    drop(raw_mode);
    drop(runtime_dir);
    if registered {
        unregister_vm(plan, env, registration.as_mut());
    }
    // The helper's session (its TAP) ends with the VM.
    drop(registration);
    drop(helper);
    Ok(verdict(plan, ending?, guest_exit_status))
}

/// Confines the launcher for the rest of its life: Landlock (its runtime directory only) and
/// the seccomp allow-list.
fn confine_launcher(plan: &Plan, rules: &sandbox::SandboxRules, env: &RunEnv) -> Result<()> {
    let filter = sandbox::launcher_filter()?;
    // Ask the kernel about Landlock now: the filter below does not allow it later.
    let summary = sandbox::landlock_summary();
    let status = sandbox::restrict_self(rules)?;
    sandbox::apply_filter(&filter)
        .map_err(|e| Error::io("Failed to install the seccomp filter", e))?;
    if env.debug {
        eprintln!(
            "Confinement: {summary}; Landlock ruleset {status:?}; seccomp: launcher allow-list of {} calls.",
            sandbox::launcher_allowed_syscalls().len()
        );
        for process in &plan.processes {
            if let Some(jail) = &process.jail {
                eprintln!(
                    "{} runs under the seccomp table '{}' ({} calls denied)",
                    process.name,
                    jail.seccomp.name(),
                    jail.seccomp.denied().len()
                );
                for rule in jail.landlock.describe() {
                    eprintln!("{} may access: {rule}", process.name);
                }
            }
        }
    } else if status != landlock::RulesetStatus::FullyEnforced && !plan.quiet {
        eprintln!("Warning: {summary}");
    }
    Ok(())
}

/// vmspawn's exit status for how the VM ended, with the message that explains it.
fn verdict(plan: &Plan, ending: Ending, guest_exit_status: Option<u8>) -> i32 {
    // A guest's EXIT_STATUS= is the verdict of a VM that ended normally; it never masks a
    // failure of QEMU or of a sidecar.
    let guest = || match guest_exit_status {
        Some(code) => {
            if code != 0 {
                eprintln!("Non-zero exit code received: {code}");
            }
            i32::from(code)
        }
        None => 0,
    };
    match ending {
        Ending::Escaped => guest(),
        Ending::Qemu { forced: true, .. } => {
            eprintln!("The VM was stopped forcibly (QEMU killed) because it did not power off.");
            1
        }
        Ending::Qemu { status, .. } if status.success() => guest(),
        Ending::Qemu { status, .. } => {
            if let Some(code) = status.code() {
                eprintln!(
                    "QEMU exited with status {code}; the VM did not shut down cleanly (see QEMU's messages above)."
                );
                if let Some(jail) = plan.qemu().and_then(|q| q.jail.as_ref()) {
                    eprintln!(
                        "QEMU runs confined (Landlock and seccomp). If it could not open a file or device, that \
                         may be why: it may access only what this VM needs ({}). Set VMSPAWN_UNCONFINED=1 to \
                         check whether confinement is the cause.",
                        jail.landlock.describe().join("; ")
                    );
                }
            } else {
                eprintln!("QEMU {}.", spawn::describe_status(status));
            }
            1
        }
        Ending::Sidecar { name, pid, status } => {
            eprintln!(
                "The VM was stopped: {name}, pid {pid}, {}.",
                spawn::describe_status(status)
            );
            1
        }
    }
}
