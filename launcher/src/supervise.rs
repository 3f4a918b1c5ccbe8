//! Supervision: one event loop over every source while the VM runs — signals, the console
//! (terminal ↔ pseudo-terminal), the guest's notifications over vsock, and the pidfds of QEMU
//! and of each sidecar. It ends when
//! QEMU has exited, or when a sidecar exits (then QEMU is stopped: like 259, any sidecar
//! exiting ends the VM).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::console::{self, EscapeDetector, Tinter};
use crate::error::{Error, Result};
use crate::notify::Notifier;
use crate::qmp::Qmp;
use crate::spawn::{self, ChildGuard};
use crate::sys;

/// After a sidecar exits, how long QEMU gets to finish by itself: swtpm exits when QEMU shuts
/// the TPM down during a normal power-off, a moment before QEMU exits.
const SIDECAR_EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long QEMU gets to exit after SIGTERM once a sidecar has died.
const QEMU_STOP_GRACE: Duration = Duration::from_secs(5);

/// How the VM ended.
pub enum Ending {
    /// QEMU exited. `forced`: vmspawn had to kill it (the guest did not power off in time, or
    /// a second signal asked for it).
    Qemu { status: ExitStatus, forced: bool },
    /// Ctrl-] three times: QEMU was killed on the user's request.
    Escaped,
    /// A sidecar exited while QEMU ran; QEMU was stopped.
    Sidecar {
        name: String,
        pid: u32,
        status: ExitStatus,
    },
}

/// The console as the supervisor forwards it.
pub struct ConsoleIo<'a> {
    /// The pseudo-terminal's master side (QEMU's stdio is the other side), non-blocking.
    pub master: &'a OwnedFd,
    /// Forward the user's input (interactive) or not (read-only).
    pub read_input: bool,
    pub tinter: Option<Tinter>,
    /// The terminal is in raw mode: line ends need "\r\n".
    pub raw: bool,
}

/// The guest → host notification channel (259's `vmm.notify_socket`): each connection on
/// the listener carries one batch, read to EOF. The guest's service manager half-closes its
/// end and waits for vmspawn to close; vhost-device-vsock does not pass a half-close on
/// (rust-vmm/vhost-device#874), so over vhost-user a batch also ends when no more data has
/// come for `idle_end`.
pub struct GuestChannel<'a> {
    pub listener: OwnedFd,
    /// vmspawn's own service manager, which gets the guest's READY=1 and STATUS=.
    pub notifier: &'a Notifier,
    pub debug: bool,
    pub idle_end: Option<Duration>,
    connections: Vec<Connection>,
    /// The last `EXIT_STATUS=` the guest sent.
    pub exit_status: Option<u8>,
}

struct Connection {
    fd: OwnedFd,
    batch: Vec<u8>,
    /// When data last arrived.
    last: Instant,
}

/// Over vhost-user vsock, a notification batch ends when no more data came for this long.
pub const NOTIFY_IDLE_END: Duration = Duration::from_millis(20);
/// At most this many notification connections are open at once.
const MAX_CONNECTIONS: usize = 64;

impl<'a> GuestChannel<'a> {
    pub fn new(
        listener: OwnedFd,
        notifier: &'a Notifier,
        idle_end: Option<Duration>,
        debug: bool,
    ) -> Result<Self> {
        // accept(2) must not block the loop once the pending connections are taken.
        nix::fcntl::fcntl(
            listener.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| Error::io("Failed to set up the guest's notification listener", e))?;
        Ok(GuestChannel {
            listener,
            notifier,
            debug,
            idle_end,
            connections: Vec::new(),
            exit_status: None,
        })
    }

    fn accept(&mut self) {
        // At most a few per wake-up, so a flooding guest cannot starve the console.
        for _ in 0..16 {
            if self.connections.len() >= MAX_CONNECTIONS {
                break;
            }
            match crate::sys::accept_nonblocking(self.listener.as_fd()) {
                Ok(fd) => self.connections.push(Connection {
                    fd,
                    batch: Vec::new(),
                    last: Instant::now(),
                }),
                Err(_) => break,
            }
        }
    }

    /// Reads what connection `index` has; at EOF its batch is handled and it is closed.
    fn read(&mut self, index: usize, buf: &mut [u8]) {
        let connection = &mut self.connections[index];
        match nix::unistd::read(connection.fd.as_raw_fd(), buf) {
            Ok(0) => self.finish(index),
            Ok(n) => {
                connection.batch.extend_from_slice(&buf[..n]);
                connection.last = Instant::now();
                if connection.batch.len() > crate::vsock::NOTIFY_MAX {
                    eprintln!("Received notify message exceeded maximum size.");
                    self.connections.swap_remove(index);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.finish(index),
        }
    }

    /// Handles connection `index`'s batch and closes it.
    fn finish(&mut self, index: usize) {
        let Connection { batch, .. } = self.connections.swap_remove(index);
        let notification = crate::vsock::parse_notification(&batch);
        if self.debug {
            eprintln!(
                "Received notification message with tags: {}",
                String::from_utf8_lossy(&batch)
                    .trim_end()
                    .replace('\n', ", ")
            );
        }
        for warning in &notification.warnings {
            eprintln!("{warning}");
        }
        for message in &notification.forward {
            self.notifier.send(message);
        }
        if notification.exit_status.is_some() {
            self.exit_status = notification.exit_status;
        }
    }

    /// Ends the batches that have been idle for `idle_end`.
    fn finish_idle(&mut self) {
        let Some(idle) = self.idle_end else {
            return;
        };
        for index in (0..self.connections.len()).rev() {
            let c = &self.connections[index];
            if !c.batch.is_empty() && c.last.elapsed() >= idle {
                self.finish(index);
            }
        }
    }

    /// When the next idle batch ends.
    fn next_idle_end(&self) -> Option<Instant> {
        let idle = self.idle_end?;
        self.connections
            .iter()
            .filter(|c| !c.batch.is_empty())
            .map(|c| c.last + idle)
            .min()
    }
}

pub struct Supervisor<'a> {
    pub qmp: Option<Qmp>,
    pub shutdown_timeout: Duration,
    pub quiet: bool,
    pub qemu: &'a mut ChildGuard,
    pub sidecars: &'a mut [ChildGuard],
    pub raw: bool,
    /// The scope unit vmspawn controls: its manager's RequestStop is a stop request.
    pub scope: Option<&'a mut crate::scope::Scope>,
    stop_requested: bool,
    forced: bool,
    escaped: bool,
    deadline: Option<Instant>,
}

impl<'a> Supervisor<'a> {
    pub fn new(
        qemu: &'a mut ChildGuard,
        sidecars: &'a mut [ChildGuard],
        qmp: Option<Qmp>,
        shutdown_timeout: Duration,
        quiet: bool,
    ) -> Self {
        Supervisor {
            qmp,
            shutdown_timeout,
            quiet,
            qemu,
            sidecars,
            raw: false,
            scope: None,
            stop_requested: false,
            forced: false,
            escaped: false,
            deadline: None,
        }
    }

    fn say(&self, message: &str) {
        let end = if self.raw { "\r\n" } else { "\n" };
        eprint!("{message}{end}");
    }

    fn kill_now(&mut self) {
        self.forced = true;
        self.qemu.signal(Signal::SIGKILL);
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
                self.deadline = Some(Instant::now() + self.shutdown_timeout);
                if !self.quiet {
                    self.say(&format!(
                        "Asked the guest to power off (ACPI power button); waiting up to {} s. Send the signal again to stop the VM at once.",
                        self.shutdown_timeout.as_secs()
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
            Some(deadline) => spawn::timeout_until(deadline),
        }
    }

    /// A sidecar exited. If it exited cleanly and QEMU finishes by itself right away, this was
    /// QEMU ending (swtpm exits when QEMU shuts the TPM down) and QEMU's status is the verdict.
    /// Otherwise the VM cannot go on without the sidecar: QEMU is stopped, and the sidecar's
    /// exit is the verdict.
    fn sidecar_exited(&mut self, index: usize, status: ExitStatus) -> Option<Ending> {
        if status.success() && self.qemu.wait_timeout(SIDECAR_EXIT_GRACE).is_some() {
            return None;
        }
        let sidecar = &self.sidecars[index];
        let ending = Ending::Sidecar {
            name: sidecar.name().to_string(),
            pid: sidecar.id(),
            status,
        };
        self.qemu.stop(Signal::SIGTERM, QEMU_STOP_GRACE);
        Some(ending)
    }

    /// A sidecar that has failed, as the VM's ending. (One that exited cleanly may just have
    /// seen QEMU go.)
    fn exited_sidecar(&mut self) -> Option<Ending> {
        self.sidecars.iter_mut().find_map(|sidecar| {
            sidecar
                .try_wait()
                .filter(|status| !status.success())
                .map(|status| Ending::Sidecar {
                    name: sidecar.name().to_string(),
                    pid: sidecar.id(),
                    status,
                })
        })
    }

    /// Runs until the VM ends.
    pub fn run(
        &mut self,
        signals: &SignalFd,
        notifier: &Notifier,
        mut console: Option<ConsoleIo>,
        mut guest: Option<&mut GuestChannel>,
    ) -> Result<Ending> {
        let mut escape = EscapeDetector::new();
        let mut to_guest: Vec<u8> = Vec::new();
        let mut master_open = console.is_some();
        let mut last_written: Option<u8> = None;
        let mut buf = vec![0u8; 16 * 1024];
        let stdin = sys::stdin();

        let ending = loop {
            notifier.flush();
            if let Some(status) = self.qemu.try_wait() {
                // QEMU failing right after a sidecar failed is that sidecar's doing: name it.
                if !status.success()
                    && !self.escaped
                    && !self.forced
                    && let Some(ending) = self.exited_sidecar()
                {
                    break ending;
                }
                break if self.escaped {
                    Ending::Escaped
                } else {
                    Ending::Qemu {
                        status,
                        forced: self.forced,
                    }
                };
            }
            let mut sidecar_ended = None;
            for (index, sidecar) in self.sidecars.iter_mut().enumerate() {
                if let Some(status) = sidecar.try_wait() {
                    sidecar_ended = Some((index, status));
                    break;
                }
            }
            if let Some((index, status)) = sidecar_ended {
                match self.sidecar_exited(index, status) {
                    Some(ending) => break ending,
                    None => continue,
                }
            }

            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.qemu.pidfd(), PollFlags::POLLIN),
            ];
            for sidecar in self.sidecars.iter() {
                fds.push(PollFd::new(sidecar.pidfd(), PollFlags::POLLIN));
            }
            let master_index = console.as_ref().filter(|_| master_open).map(|c| {
                let mut flags = PollFlags::POLLIN;
                if !to_guest.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.master.as_fd(), flags));
                fds.len() - 1
            });
            let stdin_index = console
                .as_ref()
                .filter(|c| c.read_input && master_open && to_guest.len() < 64 * 1024)
                .map(|_| {
                    fds.push(PollFd::new(stdin, PollFlags::POLLIN));
                    fds.len() - 1
                });
            let guest_index = guest.as_ref().map(|g| {
                // No new connections while the most are open (a guest that never closes them).
                let flags = if g.connections.len() < MAX_CONNECTIONS {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                };
                fds.push(PollFd::new(g.listener.as_fd(), flags));
                for connection in &g.connections {
                    fds.push(PollFd::new(connection.fd.as_fd(), PollFlags::POLLIN));
                }
                fds.len() - 1 - g.connections.len()
            });

            let scope_index = self.scope.as_ref().and_then(|s| s.fd()).map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });

            let retry = notifier
                .has_pending()
                .then(|| Instant::now() + crate::notify::RETRY_INTERVAL);
            let wake = [guest.as_ref().and_then(|g| g.next_idle_end()), retry]
                .into_iter()
                .flatten()
                .min();
            let timeout = match wake {
                Some(end) => {
                    let soon = spawn::timeout_until(end);
                    match self.poll_timeout() {
                        PollTimeout::NONE => soon,
                        other => soon.min(other),
                    }
                }
                None => self.poll_timeout(),
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::io("Failed to poll", e)),
            }
            let revents = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
            let signal_ready = !revents(0).is_empty();
            let scope_ready = scope_index.is_some_and(|i| !revents(i).is_empty());
            let master_events = master_index.map(revents).unwrap_or(PollFlags::empty());
            let stdin_events = stdin_index.map(revents).unwrap_or(PollFlags::empty());
            let guest_events: Vec<bool> = match (guest_index, guest.as_ref()) {
                (Some(first), Some(g)) => (0..=g.connections.len())
                    .map(|i| !revents(first + i).is_empty())
                    .collect(),
                _ => Vec::new(),
            };
            drop(fds);

            if let Some(g) = guest.as_deref_mut() {
                // Connections first, from the last, so indexes stay valid as they close.
                for index in (0..g.connections.len()).rev() {
                    if guest_events.get(index + 1).copied().unwrap_or(false) {
                        g.read(index, &mut buf);
                    }
                }
                if guest_events.first().copied().unwrap_or(false) {
                    g.accept();
                }
                g.finish_idle();
            }

            if let Some(deadline) = self.deadline
                && Instant::now() >= deadline
                && !self.forced
            {
                self.say(&format!(
                    "The guest did not power off within {} s; stopping the VM.",
                    self.shutdown_timeout.as_secs()
                ));
                self.kill_now();
                self.deadline = None;
            }

            if signal_ready {
                while let Ok(Some(info)) = signals.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGWINCH) => {
                            if let Some(c) = &console {
                                console::copy_window_size(sys::stdout(), c.master.as_fd());
                            }
                        }
                        Ok(Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP) => {
                            self.request_stop()
                        }
                        _ if info.ssi_signo as i32 == sys::sigrtmin_plus_4() => self.request_stop(),
                        _ => {}
                    }
                }
            }

            // `systemctl stop` on the scope: a stop request, as SIGTERM is.
            if scope_ready && self.scope.as_mut().is_some_and(|s| s.stop_requested()) {
                if !self.quiet {
                    self.say("The service manager asked vmspawn to stop the VM (RequestStop).");
                }
                self.request_stop();
            }

            if let Some(c) = console.as_mut() {
                if master_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
                    match nix::unistd::read(c.master.as_raw_fd(), &mut buf) {
                        Ok(0) | Err(Errno::EIO) => master_open = false,
                        Ok(n) => forward_output(&buf[..n], &mut c.tinter, &mut last_written),
                        Err(Errno::EAGAIN | Errno::EINTR) => {}
                        Err(e) => return Err(Error::io("Failed to read from the console", e)),
                    }
                }
                if master_events.contains(PollFlags::POLLOUT) && !to_guest.is_empty() {
                    match nix::unistd::write(c.master, &to_guest) {
                        Ok(n) => {
                            to_guest.drain(..n);
                        }
                        Err(Errno::EAGAIN | Errno::EINTR) => {}
                        Err(_) => to_guest.clear(),
                    }
                }
                if stdin_events
                    .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                {
                    match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                        Ok(0) | Err(_) => c.read_input = false,
                        Ok(n) => {
                            if escape.feed(&buf[..n], Instant::now()) {
                                self.escaped = true;
                                self.qemu.signal(Signal::SIGKILL);
                                c.read_input = false;
                            } else {
                                to_guest.extend_from_slice(&buf[..n]);
                            }
                        }
                    }
                }
            }
        };

        // Drain what QEMU wrote before it went away.
        if let Some(c) = console.as_mut() {
            if master_open {
                while let Ok(n) = nix::unistd::read(c.master.as_raw_fd(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                    forward_output(&buf[..n], &mut c.tinter, &mut last_written);
                }
            }
            if let Some(t) = c.tinter.as_ref() {
                let _ = std::io::stdout().write_all(t.finish());
            }
        }
        if last_written.is_some_and(|b| b != b'\n') {
            let stdout_tty = nix::unistd::isatty(libc::STDOUT_FILENO).unwrap_or(false);
            let plain_newline = !stdout_tty || last_written == Some(b'\r');
            let _ = std::io::stdout().write_all(if plain_newline { b"\n" } else { b"\r\n" });
        }
        let _ = std::io::stdout().flush();
        Ok(ending)
    }
}

fn forward_output(data: &[u8], tinter: &mut Option<Tinter>, last: &mut Option<u8>) {
    if data.is_empty() {
        return;
    }
    let mut out = Vec::with_capacity(data.len() + 32);
    match tinter {
        Some(t) => t.process(data, &mut out),
        None => out.extend_from_slice(data),
    }
    *last = data.last().copied();
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
}
