//! Shared harness for the integration tests: the guest images, the unprivileged test user, a
//! private work directory per test, running vmspawn with a deadline (optionally on a real
//! pseudo-terminal), and reading the `VMTEST:` lines the test guests print.
//!
//! The tests must run as root (they create files for, and run vmspawn as, the user `tester`).

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The unprivileged account the harness runs vmspawn as (created by tests/setup-host.sh).
pub const TEST_USER: &str = "tester";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Directory with the guest artifacts built by tests/images/build.sh.
pub fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("VMSPAWN_TEST_IMAGES") {
            return PathBuf::from(dir);
        }
        let out = Command::new("bash")
            .arg(workspace_root().join("tests/images/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/images/build.sh");
        assert!(out.status.success(), "tests/images/build.sh failed");
        let text = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            text.lines()
                .last()
                .expect("build.sh printed no path")
                .trim(),
        )
    })
}

pub fn image(name: &str) -> PathBuf {
    let path = images().join(name);
    assert!(path.exists(), "missing test artifact {}", path.display());
    path
}

/// A binary of this workspace: `$VAR` if set, else the release build, else the debug build.
fn built_binary(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let release = workspace_root().join("target/release").join(name);
        if release.exists() {
            release
        } else {
            workspace_root().join("target/debug").join(name)
        }
    })
}

/// Waits until `path` exists; false on timeout.
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    path.exists()
}

/// The vmspawn binary, copied to a place every user can execute it from.
pub fn vmspawn_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let source = built_binary("VMSPAWN_BIN", "vmspawn");
        assert!(
            source.exists(),
            "vmspawn binary not found at {} (build it first)",
            source.display()
        );
        // Copies of earlier test processes that are gone are stale.
        for entry in std::fs::read_dir("/var/tmp")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("vmspawn-it-bin-")
                .and_then(|p| p.parse::<u32>().ok())
                && !process_exists(pid)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = PathBuf::from(format!("/var/tmp/vmspawn-it-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dest = dir.join("vmspawn");
        std::fs::copy(&source, &dest).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
        dest
    })
}

/// vmspawn-vsock-proxy (`$VMSPAWN_VSOCK_PROXY_BIN`, else the build's), copied next to the
/// test copy of vmspawn so the test user can run it.
pub fn vsock_proxy_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let source = built_binary("VMSPAWN_VSOCK_PROXY_BIN", "vmspawn-vsock-proxy");
        let dest = vmspawn_bin().with_file_name("vmspawn-vsock-proxy");
        std::fs::copy(&source, &dest)
            .unwrap_or_else(|e| panic!("copying {}: {e} (build it first)", source.display()));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
        dest
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    Root,
    Tester,
}

pub fn tester_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name(TEST_USER)
        .expect("look up the test user")
        .unwrap_or_else(|| panic!("user '{TEST_USER}' does not exist; run tests/setup-host.sh"));
    (user.uid.as_raw(), user.gid.as_raw())
}

/// A private directory for one test, owned by the user the test runs vmspawn as, with a `tmp/`
/// that serves as $TMPDIR (and so as vmspawn's runtime directory base); removed on drop.
pub struct Workdir {
    pub path: PathBuf,
    pub user: User,
}

impl Workdir {
    pub fn new(name: &str, user: User) -> Workdir {
        let path = PathBuf::from(format!("/var/tmp/vmspawn-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("tmp")).unwrap();
        std::fs::create_dir_all(path.join("home")).unwrap();
        let work = Workdir { path, user };
        work.chown_all();
        work
    }

    pub fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Gives everything in the work directory to the test user.
    pub fn chown_all(&self) {
        if self.user == User::Tester {
            let (uid, gid) = tester_ids();
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&self.path)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    /// Copies a test artifact into the work directory (sparse), owned by the test user.
    pub fn copy_image(&self, artifact: &str, name: &str) -> PathBuf {
        let dest = self.file(name);
        let status = Command::new("cp")
            .arg("--sparse=always")
            .arg(image(artifact))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(status.success(), "copy {artifact}");
        self.chown_all();
        dest
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, contents).unwrap();
        self.chown_all();
        path
    }

    /// Fails when vmspawn left anything behind in $TMPDIR (its runtime directory, temp files).
    pub fn assert_no_leftovers(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            left.is_empty(),
            "vmspawn left temporary files behind: {left:?}"
        );
    }

    /// A vmspawn command for this test: clean environment, run as the test's user.
    pub fn vmspawn(&self) -> Command {
        let mut cmd = Command::new(vmspawn_bin());
        self.clean_environment(&mut cmd);
        if self.user == User::Tester {
            let (uid, gid) = tester_ids();
            cmd.uid(uid).gid(gid);
        } else {
            // Root would use /run/systemd; keep its runtime directory inside the work directory.
            std::fs::create_dir_all(self.path.join("run")).unwrap();
            cmd.env("XDG_RUNTIME_DIR", self.path.join("run"));
        }
        cmd
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        // $VMSPAWN_TEST_KEEP keeps a failed test's files (the forwarded journal, logs) to read.
        if std::thread::panicking() && std::env::var_os("VMSPAWN_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Arguments every test boot uses: software emulation (KVM guests hang on the test machines).
pub fn tcg() -> Vec<OsString> {
    vec!["--kvm=no".into()]
}

/// Busybox direct kernel boot arguments.
pub fn busybox_boot(initrd_extra: bool) -> Vec<OsString> {
    let mut args = tcg();
    args.push(format!("--linux={}", image("vmlinuz").display()).into());
    args.push(format!("--initrd={}", image("initrd-busybox.cpio.gz").display()).into());
    if initrd_extra {
        args.push(format!("--initrd={}", image("initrd-extra.cpio").display()).into());
    }
    args
}

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn vmtest(&self) -> Vec<String> {
        vmtest_lines(&self.stdout)
    }

    pub fn has(&self, line: &str) -> bool {
        self.vmtest().iter().any(|l| l == line)
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails the test, showing everything vmspawn printed, unless it exited with status 0.
    pub fn assert_success(&self) {
        assert_eq!(
            self.code(),
            Some(0),
            "stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout
        );
    }
}

/// The `VMTEST: ...` lines of guest output, without the prefix and trailing CR.
pub fn vmtest_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            l.find("VMTEST: ").map(|i| {
                let line = l[i + 8..].trim_end_matches('\r');
                without_kernel_message(line).to_string()
            })
        })
        .collect()
}

/// A kernel message printed on the same console can land in the middle of a line
/// (`tpm=2[   16.309581] SVM: …`): the line ends where a `[ seconds.micros]` stamp begins.
fn without_kernel_message(line: &str) -> &str {
    let mut from = 0;
    while let Some(at) = line[from..].find('[').map(|i| from + i) {
        let rest = line[at + 1..].trim_start_matches(' ');
        let stamp = rest.split(']').next().unwrap_or("");
        let is_stamp = rest.contains(']')
            && stamp.split_once('.').is_some_and(|(secs, micros)| {
                !secs.is_empty()
                    && micros.len() == 6
                    && secs
                        .bytes()
                        .chain(micros.bytes())
                        .all(|b| b.is_ascii_digit())
            });
        if is_stamp {
            return &line[..at];
        }
        from = at + 1;
    }
    line
}

fn kill_group(child: &Child) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Runs to completion, killing the command (and its process group) at the deadline.
pub fn run(mut cmd: Command, timeout: Duration) -> Finished {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn vmspawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = wait_deadline(&mut child, timeout);
    let stdout = String::from_utf8_lossy(&out_thread.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned();
    let status = status.unwrap_or_else(|| {
        panic!("vmspawn did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Waits for the child until the deadline; kills its process group and returns None on timeout.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(child);
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A vmspawn started in the background with its output collected as it arrives.
pub struct Background {
    pub child: Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    errors: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

fn collect(mut reader: impl Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buffer
}

impl Background {
    pub fn start(mut cmd: Command) -> Background {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn vmspawn");
        let output = collect(child.stdout.take().unwrap());
        let errors = collect(child.stderr.take().unwrap());
        Background {
            child,
            output,
            errors,
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.errors.lock().unwrap()).into_owned()
    }

    /// Waits until a `VMTEST:` line equal to `line` shows up.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if vmtest_lines(&self.stdout()).iter().any(|l| l == line) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "vmspawn exited ({status}) before printing '{line}'\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_group(&self.child);
        panic!(
            "no '{line}' within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// A signal nix cannot name (real-time ones).
    pub fn signal_raw(&self, signal: i32) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        let sent = unsafe { libc::kill(pid.as_raw(), signal) };
        nix::errno::Errno::result(sent).unwrap();
    }

    pub fn finish(mut self, timeout: Duration) -> Finished {
        let status = wait_deadline(&mut self.child, timeout);
        // Give the reader threads a moment to drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        let (stdout, stderr) = (self.stdout(), self.stderr());
        let status = status.unwrap_or_else(|| {
            panic!(
                "vmspawn did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            )
        });
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

/// A test that fails while its VM runs must not leave the VM running (it would slow down every
/// later test): vmspawn is killed, and its own cleanup ends the rest.
impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_group(&self.child);
            let _ = self.child.wait();
        }
    }
}

/// A pidfd of `pid` (`flags`: 0, or PIDFD_THREAD for one thread).
pub fn pidfd_open(pid: u32, flags: u32) -> OwnedFd {
    // SAFETY: pidfd_open only reads its arguments; it returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) };
    assert!(
        raw >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the fd was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(raw as i32) }
}

/// The direct children of `pid` (e.g. the QEMU process vmspawn started).
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The command name of a process (`/proc/PID/comm`, at most 15 bytes, without the newline);
/// empty when it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

/// The command name prefix of QEMU (`qemu-system-x86_64` shows as `qemu-system-x86`).
pub const QEMU_COMM: &str = "qemu-system";
/// The command name of the virtual TPM sidecar.
pub const SWTPM_COMM: &str = "swtpm";
/// The command name of vmspawn's cleanup process (it removes the runtime directory when
/// vmspawn is killed).
pub const CLEANUP_COMM: &str = "vmspawn-cleanup";

/// The direct children of `pid` whose command name starts with `prefix`. vmspawn's children
/// during a boot are QEMU, the sidecars (swtpm) and its cleanup process.
pub fn children_named(pid: u32, prefix: &str) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|&child| comm(child).starts_with(prefix))
        .collect()
}

/// The first direct child of `pid` whose command name starts with `prefix`.
pub fn child_named(pid: u32, prefix: &str) -> Option<u32> {
    children_named(pid, prefix).into_iter().next()
}

/// Processes (other than this one) whose command line mentions `path`, as (pid, comm): e.g.
/// a QEMU or swtpm that outlived vmspawn, found by the work directory in their arguments.
pub fn processes_mentioning(path: &Path) -> Vec<(u32, String)> {
    let needle = path.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .map(|pid| (pid, comm(pid)))
        .collect()
}

pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` has exited (gone, or a zombie nobody reaped yet); false on timeout.
pub fn wait_process_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("");
        if stat.is_empty() || state == "Z" || state == "X" {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// vmspawn on a real pseudo-terminal: stdin, stdout and stderr are the pty's slave side and it
/// is the session's controlling terminal, as in an interactive shell.
pub struct PtySession {
    pub child: Child,
    master: std::fs::File,
    seen: Vec<u8>,
}

impl PtySession {
    pub fn start(mut cmd: Command) -> PtySession {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let master: OwnedFd = pty.master;
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe; they run in the child before exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let _ = slave_fd;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn vmspawn on a pty");
        drop(slave);
        // SAFETY: we own the master fd and hand it to File.
        let master =
            unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
        PtySession {
            child,
            master,
            seen: Vec::new(),
        }
    }

    fn pump(&mut self, wait: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, ms).unwrap_or(0) > 0 {
            let mut buf = [0u8; 4096];
            match nix::unistd::read(self.master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(wait),
            }
        }
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads until `needle` appears in the output.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return;
            }
            self.pump(Duration::from_millis(100));
        }
        kill_group(&self.child);
        panic!(
            "'{needle}' not seen within {timeout:?}; output:\n{}",
            self.output()
        );
    }

    /// Collects output for a while.
    pub fn settle(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.pump(Duration::from_millis(100));
        }
    }

    pub fn type_bytes(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    pub fn finish(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump(Duration::from_millis(50));
            if let Some(status) = self.child.try_wait().unwrap() {
                self.settle(Duration::from_millis(200));
                return status;
            }
            if Instant::now() >= deadline {
                kill_group(&self.child);
                panic!(
                    "vmspawn did not exit within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
        }
    }
}

/// Base64 decoding for credential checks (standard alphabet, padding optional).
pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The owner uid of a path.
pub fn owner(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().uid()
}

/// Makes a raw GPT disk image with one Discoverable Partitions root partition (x86-64) whose
/// partition UUID is `partuuid`.
pub fn make_gpt_image(path: &Path, size_mib: u64, partuuid: &str) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size_mib << 20).unwrap();
    drop(file);
    let script = format!(
        "label: gpt\nstart=2048, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid={partuuid}, name=root\n"
    );
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run sfdisk");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "sfdisk failed");
}

pub fn qemu_img(args: &[&str]) {
    let status = Command::new("qemu-img")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run qemu-img");
    assert!(status.success(), "qemu-img {args:?} failed");
}

/// Value of `key=` in a VMTEST line list, e.g. `field(&lines, "nproc")`.
pub fn field(lines: &[String], key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

impl PtySession {
    /// The master side, e.g. to inspect the terminal settings vmspawn left behind.
    pub fn master(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.master)
    }
}

/// A network namespace for one test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("vmsp-{}-{tag}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip")
            .success();
        assert!(ok, "ip netns add {name} failed");
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// Runs `ip -n <netns> ARGS` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The vmspawn TAP devices (`vt-*`) in the namespace.
    pub fn taps(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(':')
                    .nth(1)
                    .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            })
            .filter(|n| n.starts_with("vt-"))
            .collect()
    }

    /// Waits until a TAP shows up and returns its name.
    pub fn wait_for_tap(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(tap) = self.taps().into_iter().next() {
                return tap;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no TAP device appeared in {} within {timeout:?}", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The vmspawn-privhelper binary that was built with the tests.
pub fn privhelper_bin() -> PathBuf {
    built_binary("VMSPAWN_PRIVHELPER_BIN", "vmspawn-privhelper")
}

/// The helper running as a service (root, `--listen`) inside a network namespace, with its
/// own policy file, in a root-owned directory; stopped and removed on drop.
pub struct HelperService {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl HelperService {
    pub fn start(netns: &Netns, tag: &str, policy: &str) -> HelperService {
        Self::start_with_env(netns, tag, policy, &[])
    }

    pub fn start_with_env(
        netns: &Netns,
        tag: &str,
        policy: &str,
        env: &[(&str, &str)],
    ) -> HelperService {
        let dir = PathBuf::from(format!("/run/vmspawn-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy).unwrap();
        std::fs::set_permissions(&policy_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let socket = dir.join("privhelper.socket");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .arg(privhelper_bin())
            .arg("--listen")
            .arg(&socket)
            .arg("--policy")
            .arg(&policy_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("start vmspawn-privhelper");
        assert!(
            wait_for_path(&socket, Duration::from_secs(10)),
            "the helper did not create {}",
            socket.display()
        );
        HelperService { child, dir, socket }
    }

    /// `Name: value` lines of /proc/<helper>/status.
    pub fn status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

impl Drop for HelperService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Workdir {
    /// vmspawn as the test user inside a network namespace (via `ip netns exec` and setpriv).
    pub fn vmspawn_in_netns(&self, netns: &Netns) -> Command {
        assert_eq!(self.user, User::Tester);
        let (uid, gid) = tester_ids();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns.name, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .arg(vmspawn_bin());
        self.clean_environment(&mut cmd);
        cmd
    }

    /// The environment every vmspawn run of a test gets: nothing inherited, a private HOME and
    /// TMPDIR, no stdin.
    fn clean_environment(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.path.join("home"))
            .env("TMPDIR", self.tmp())
            .env("LANG", "C.UTF-8")
            .current_dir(&self.path)
            .stdin(Stdio::null());
    }
}

/// The helper installed setuid root in a temporary directory, and the fixed policy path.
pub struct SetuidHelper {
    dir: PathBuf,
    pub binary: PathBuf,
    saved_policy: Option<Vec<u8>>,
    created_policy_dir: bool,
}

pub const POLICY_PATH: &str = "/etc/vmspawn/policy.toml";

impl SetuidHelper {
    pub fn install(policy: &str) -> SetuidHelper {
        let dir = PathBuf::from(format!("/var/tmp/vmspawn-it-suid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let binary = dir.join("vmspawn-privhelper");
        std::fs::copy(privhelper_bin(), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let saved_policy = std::fs::read(POLICY_PATH).ok();
        let created_policy_dir = !Path::new("/etc/vmspawn").exists();
        std::fs::create_dir_all("/etc/vmspawn").unwrap();
        std::fs::write(POLICY_PATH, policy).unwrap();
        std::fs::set_permissions(POLICY_PATH, std::fs::Permissions::from_mode(0o644)).unwrap();
        SetuidHelper {
            dir,
            binary,
            saved_policy,
            created_policy_dir,
        }
    }
}

impl Drop for SetuidHelper {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        match &self.saved_policy {
            Some(old) => {
                let _ = std::fs::write(POLICY_PATH, old);
            }
            None => {
                let _ = std::fs::remove_file(POLICY_PATH);
            }
        }
        if self.created_policy_dir {
            let _ = std::fs::remove_dir("/etc/vmspawn");
        }
    }
}

impl Background {
    /// Waits until vmspawn's stderr contains `needle` (e.g. the message that shows it handled
    /// a signal); panics, showing the output, when it exits first or on timeout.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "vmspawn exited ({status}) before printing '{needle}'\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&self.child);
        panic!(
            "'{needle}' not on stderr within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }
}

/// Waits until every one of `pids` has exited; returns those still running at the deadline
/// (pid and command name). Fails the test when `pids` is empty: a check over no processes
/// would pass whatever happened.
pub fn survivors(pids: &[u32], timeout: Duration) -> Vec<(u32, String)> {
    assert!(
        !pids.is_empty(),
        "no processes to check (the list is empty)"
    );
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<(u32, String)> = pids
            .iter()
            .filter(|&&pid| !wait_process_exit(pid, Duration::ZERO))
            .map(|&pid| (pid, comm(pid)))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the clock the stub QEMU of `escape-probe` reports).
pub fn monotonic_ns() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec * 1_000_000_000 + now.tv_nsec
}

/// The partition UUID (lower case) of the GPT partition named `name` in a disk image.
pub fn gpt_partition_uuid(image: &Path, name: &str) -> String {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(image)
        .output()
        .expect("run sfdisk");
    assert!(
        out.status.success(),
        "sfdisk --json {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk JSON");
    table["partitiontable"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["uuid"].as_str())
        .unwrap_or_else(|| panic!("no partition named '{name}' in {}", image.display()))
        .to_ascii_lowercase()
}

/// A vmspawn command for any unprivileged account (`uid`:`gid`, groups cleared), with the
/// same clean environment as `Workdir::vmspawn` (HOME `dir/home`, TMPDIR `dir/tmp`, run in
/// `dir`), optionally inside a network namespace.
pub fn vmspawn_as(uid: u32, gid: u32, dir: &Path, netns: Option<&Netns>) -> Command {
    let mut cmd = match netns {
        Some(netns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &netns.name]);
            cmd
        }
        None => Command::new("setpriv"),
    };
    if netns.is_some() {
        cmd.arg("setpriv");
    }
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(vmspawn_bin())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", dir.join("home"))
        .env("TMPDIR", dir.join("tmp"))
        .env("LANG", "C.UTF-8")
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Temporary unprivileged accounts (for tests that need several users), removed on drop.
pub struct TempUsers {
    pub names: Vec<String>,
    created: Vec<String>,
}

impl TempUsers {
    /// Creates (or reuses, if a crashed run left them) the accounts `prefix1`..`prefixN`.
    pub fn create(prefix: &str, count: usize) -> TempUsers {
        let mut users = TempUsers {
            names: Vec::new(),
            created: Vec::new(),
        };
        for i in 1..=count {
            let name = format!("{prefix}{i}");
            if nix::unistd::User::from_name(&name).ok().flatten().is_none() {
                let status = Command::new("useradd")
                    .args(["--system", "--user-group", "--no-create-home"])
                    .args(["--shell", "/usr/sbin/nologin", "--home-dir", "/nonexistent"])
                    .arg(&name)
                    .status()
                    .expect("run useradd");
                assert!(status.success(), "useradd {name} failed");
                users.created.push(name.clone());
            }
            users.names.push(name);
        }
        users
    }

    /// uid and gid of an account.
    pub fn ids(name: &str) -> (u32, u32) {
        let user = nix::unistd::User::from_name(name)
            .expect("look up user")
            .unwrap_or_else(|| panic!("no user {name}"));
        (user.uid.as_raw(), user.gid.as_raw())
    }
}

impl Drop for TempUsers {
    fn drop(&mut self) {
        for name in &self.created {
            let _ = Command::new("userdel").arg(name).status();
        }
    }
}

/// A subordinate uid range of `user` added to /etc/subuid for a test; the file is put back as
/// it was on drop.
pub struct SubuidRange {
    saved: Option<Vec<u8>>,
    pub first: u32,
    pub count: u32,
}

pub const SUBUID_PATH: &str = "/etc/subuid";

impl SubuidRange {
    pub fn add(user: &str, first: u32, count: u32) -> SubuidRange {
        let saved = std::fs::read(SUBUID_PATH).ok();
        let mut text = saved.clone().unwrap_or_default();
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text.extend_from_slice(format!("{user}:{first}:{count}\n").as_bytes());
        std::fs::write(SUBUID_PATH, &text).unwrap();
        std::fs::set_permissions(SUBUID_PATH, std::fs::Permissions::from_mode(0o644)).unwrap();
        SubuidRange {
            saved,
            first,
            count,
        }
    }
}

impl Drop for SubuidRange {
    fn drop(&mut self) {
        match &self.saved {
            Some(old) => {
                let _ = std::fs::write(SUBUID_PATH, old);
            }
            None => {
                let _ = std::fs::remove_file(SUBUID_PATH);
            }
        }
    }
}

/// systemd's user database drop-in directory (`/run/userdb`), with a group and a user's
/// membership in it that only the `systemd` NSS source knows; removed on drop. Fails the test
/// if the directory exists already (it is not the test's to change).
pub struct UserdbGroup {
    pub dir: PathBuf,
}

impl UserdbGroup {
    pub fn create(group: &str, gid: u32, member: &str) -> UserdbGroup {
        let dir = PathBuf::from("/run/userdb");
        assert!(
            !dir.exists(),
            "{} exists; this test needs it for itself",
            dir.display()
        );
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let record = format!("{{\"groupName\":\"{group}\",\"gid\":{gid}}}\n");
        std::fs::write(dir.join(format!("{group}.group")), record).unwrap();
        std::os::unix::fs::symlink(format!("{group}.group"), dir.join(format!("{gid}.group")))
            .unwrap();
        std::fs::write(dir.join(format!("{member}:{group}.membership")), "{}\n").unwrap();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
        }
        UserdbGroup { dir }
    }
}

impl Drop for UserdbGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command name of virtiofsd (vmspawn's virtio-fs sidecar, one per shared directory).
pub const VIRTIOFSD_COMM: &str = "virtiofsd";

/// Unpacks a zstd-compressed tar of a directory tree (e.g. the test artifact
/// `systemd-tree.tar.zst`) into `dest`, which is created. Run as root: owners stay numeric
/// (the archive's, not looked up on this host), modes and extended attributes are kept.
pub fn extract_tree(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let status = Command::new("tar")
        .args(["--numeric-owner", "--same-permissions", "--xattrs"])
        .args(["--xattrs-include=*", "-I", "zstd", "-xf"])
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .status()
        .expect("run tar");
    assert!(
        status.success(),
        "unpacking {} into {} failed",
        archive.display(),
        dest.display()
    );
}

/// The Debian forky tree (systemd 262, the artifact `systemd-tree.tar.zst`) unpacked into the
/// work directory as `name` and given to the test user, who boots it with
/// `--private-users=<its uid>`: its files are the user's on the host and root's in the guest.
pub fn systemd_tree(work: &Workdir, name: &str) -> PathBuf {
    let tree = work.file(name);
    extract_tree(&image("systemd-tree.tar.zst"), &tree);
    // First-boot work that only slows a TCG boot down: with these stamps newer than /usr,
    // ConditionNeedsUpdate= is false, so ldconfig.service, the journal catalog update and
    // systemd-update-done.service are skipped.
    for stamp in ["etc/.updated", "var/.updated"] {
        std::fs::write(tree.join(stamp), "").unwrap();
    }
    work.chown_all();
    tree
}

/// The command name of vhost-device-vsock (the vsock sidecar where there is no
/// /dev/vhost-vsock; truncated to 15 bytes by the kernel).
pub const VSOCK_COMM: &str = "vhost-device-vs";
/// The command name of systemd-journal-remote (truncated to 15 bytes).
pub const JOURNAL_REMOTE_COMM: &str = "systemd-journal";

/// One field (`"Seccomp:"`, `"NoNewPrivs:"`, ...) of /proc/PID/task/TID/status for every
/// thread of `pid`, as (tid, value); empty when the process is gone.
pub fn thread_status_field(pid: u32, field: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(value) = status
            .lines()
            .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        {
            out.push((tid, value));
        }
    }
    out
}

/// The environment of a process (`/proc/PID/environ`), one `NAME=value` per entry.
pub fn environ_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The arguments of a process (`/proc/PID/cmdline`).
pub fn cmdline_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_messages_inside_a_line_are_cut_off() {
        let out = "VMTEST: tpm=2[   16.309581] SVM: kvm: Nested Paging enabled\nVMTEST: a[b]\n";
        assert_eq!(vmtest_lines(out), ["tpm=2", "a[b]"]);
        assert_eq!(without_kernel_message("x [1.5] y"), "x [1.5] y");
    }
}
