//! Starting processes: one routine places the fds a process gets at the numbers its plan
//! chose and closes every other fd, resets signals, sets the parent-death signal and enters
//! the process's confinement — for QEMU, every sidecar and the setuid helper alike. A started
//! process is held by a `ChildGuard`, which stops and reaps it when dropped, so no exit path
//! needs cleanup code of its own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::process::{FdName, Jail, ProcessPlan, Role, StdioPlan};
use crate::sandbox;
use crate::sys;

/// The fds acquisition, materialisation and earlier processes produced, by name, until a
/// process takes them.
#[derive(Default)]
pub struct FdStore(BTreeMap<FdName, OwnedFd>);

impl FdStore {
    pub fn insert(&mut self, name: FdName, fd: OwnedFd) {
        self.0.insert(name, fd);
    }

    pub fn take(&mut self, name: FdName) -> Option<OwnedFd> {
        self.0.remove(&name)
    }
}

/// Fds are parked at or above this number before they are placed, so no placement overwrites
/// a source still to be placed.
const PARK_ABOVE: i32 = 100;

/// How a child is started, beyond its Command.
pub struct Launch {
    /// (fd, number in the child).
    pub fds: Vec<(OwnedFd, i32)>,
    pub own_process_group: bool,
    /// Sent to the child when vmspawn dies; 0 for none.
    pub death_signal: i32,
    /// A Landlock ruleset fd (None: the kernel has no Landlock) and seccomp filters.
    pub jail: Option<(Option<OwnedFd>, Vec<seccompiler::BpfProgram>)>,
    /// Socket activation: exec this (which sets LISTEN_PID) instead of the Command's program.
    pub exec: Option<sys::ListenPidExec>,
}

/// Starts `cmd` as `launch` says. Every fd of vmspawn except stdio and `launch.fds` is closed
/// in the child.
pub fn launch(cmd: &mut Command, mut launch: Launch) -> std::io::Result<Child> {
    let mut parked = Vec::new();
    let mut placements = Vec::new();
    for (fd, number) in &launch.fds {
        let high = sys::dup_at_least(fd.as_fd(), PARK_ABOVE)?;
        placements.push((high.as_raw_fd(), *number));
        parked.push(high);
    }
    let close_from = launch
        .fds
        .iter()
        .map(|(_, n)| n + 1)
        .max()
        .unwrap_or(3)
        .max(3);
    let (ruleset, filters) = match &launch.jail {
        Some((ruleset, filters)) => (ruleset.as_ref().map(AsRawFd::as_raw_fd), filters.clone()),
        None => (None, Vec::new()),
    };
    sys::set_child_setup(
        cmd,
        sys::ChildSetup {
            own_process_group: launch.own_process_group,
            death_signal: launch.death_signal,
            parent: std::process::id() as libc::pid_t,
            fds: placements,
            close_from,
            confined: launch.jail.is_some(),
            ruleset,
            filters,
            exec: launch.exec.take(),
        },
    );
    let child = cmd.spawn();
    // Our copies close here: each fd now lives in the child only.
    drop(parked);
    drop(launch);
    child
}

/// The Landlock ruleset (built now that the paths it names exist) and seccomp filters of a jail.
pub fn prepare_jail(jail: &Jail) -> Result<(Option<OwnedFd>, Vec<seccompiler::BpfProgram>)> {
    Ok((
        sandbox::ruleset_fd(&jail.landlock)?,
        jail.seccomp.filters()?,
    ))
}

/// A started process of the VM. Dropping it stops (SIGKILL) and reaps the process if that has
/// not happened yet.
pub struct ChildGuard {
    role: Role,
    name: String,
    child: Child,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn new(role: Role, name: String, child: Child) -> Result<Self> {
        // The child is not reaped yet, so its pid still names it.
        let pidfd = match sys::pidfd_open(child.id()) {
            Ok(fd) => fd,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io(format!("Failed to open a pidfd of {name}"), e));
            }
        };
        Ok(ChildGuard {
            role,
            name,
            child,
            pidfd,
            status: None,
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// How messages name the process.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Readable once the process has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The process's standard error, when the plan captures it.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), signal as i32);
        }
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, timeout_until(deadline));
        }
    }

    /// Sends `signal`, waits up to `grace`, then SIGKILL; returns how the process ended.
    pub fn stop(&mut self, signal: Signal, grace: Duration) -> ExitStatus {
        self.signal(signal);
        if let Some(status) = self.wait_timeout(grace) {
            return status;
        }
        self.kill()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        match self.child.wait() {
            Ok(status) => {
                self.status = Some(status);
                status
            }
            // Only if it was reaped already.
            Err(_) => self
                .status
                .unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL)),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// How a process ended, in words: "exited with status 3", "was killed by SIGKILL".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let signal = status.signal().unwrap_or(0);
    let name = Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"));
    let core = if status.core_dumped() {
        " and dumped core"
    } else {
        ""
    };
    format!("was killed by {name}{core}")
}

/// Starts a process of the plan. `fds` supplies the fds its table names; `console` is the
/// console pseudo-terminal for `StdioPlan::Console`.
pub fn spawn(
    process: &ProcessPlan,
    fds: &mut FdStore,
    console: Option<&OwnedFd>,
    var: &dyn Fn(&str) -> Option<OsString>,
) -> Result<ChildGuard> {
    let what = process.name.as_str();
    let mut cmd = Command::new(&process.binary);
    cmd.args(&process.args);
    cmd.env_clear();
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    for name in &process.env.pass {
        if let Some(value) = var(name) {
            env.push((name.into(), value));
        }
    }
    for (name, value) in &process.env.set {
        if !env.iter().any(|(n, _)| n == name.as_str()) {
            env.push((name.into(), value.into()));
        }
    }
    let listen = &process.env.listen_fds;
    if !listen.is_empty() {
        env.push(("LISTEN_FDS".into(), listen.len().to_string().into()));
        env.push(("LISTEN_FDNAMES".into(), listen.join(":").into()));
    }
    for (name, value) in &env {
        cmd.env(name, value);
    }
    // LISTEN_PID can only be set once the child's pid is known: the child execs itself.
    let exec = if listen.is_empty() {
        None
    } else {
        let entries: Vec<OsString> = env
            .iter()
            .map(|(n, v)| {
                let mut e = n.clone();
                e.push("=");
                e.push(v);
                e
            })
            .collect();
        let mut argv = vec![process.binary.as_os_str()];
        argv.extend(process.args.iter().map(OsString::as_os_str));
        Some(
            sys::ListenPidExec::new(process.binary.as_os_str(), &argv, &entries)
                .map_err(|e| Error::io(format!("Failed to prepare the start of {what}"), e))?,
        )
    };
    match process.stdio {
        StdioPlan::Console => {
            let pty = console
                .ok_or_else(|| Error::new(format!("internal error: no console for {what}")))?;
            let dup = || {
                pty.try_clone()
                    .map_err(|e| Error::io("Failed to set up the console", e))
            };
            cmd.stdin(Stdio::from(dup()?)).stdout(Stdio::from(dup()?));
        }
        StdioPlan::Terminal => {}
        StdioPlan::NoInput => {
            cmd.stdin(Stdio::null());
        }
        StdioPlan::Quiet => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
        }
    }
    let mut passed = Vec::new();
    for entry in &process.fds {
        let fd = fds.take(entry.name).ok_or_else(|| {
            Error::new(format!("internal error: no {:?} fd for {what}", entry.name))
        })?;
        passed.push((fd, entry.number));
    }
    let jail = process.jail.as_ref().map(prepare_jail).transpose()?;
    let child = launch(
        &mut cmd,
        Launch {
            fds: passed,
            own_process_group: process.own_process_group,
            death_signal: process.death_signal,
            jail,
            exec,
        },
    )
    .map_err(|e| {
        Error::io(
            format!("Failed to execute {what} '{}'", process.binary.display()),
            e,
        )
    })?;
    ChildGuard::new(process.role, process.name.clone(), child)
}

/// A poll(2) timeout for the time left until `deadline` (at most a minute: callers poll again
/// until their deadline).
pub fn timeout_until(deadline: Instant) -> PollTimeout {
    let ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .min(60_000) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::ZERO)
}
