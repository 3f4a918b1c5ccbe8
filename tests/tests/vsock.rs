//! vsock where this host has no /dev/vhost-vsock: vhost-device-vsock as vmspawn's sidecar, the
//! guest's READY=1, STATUS= and EXIT_STATUS= over the `vmm.notify_socket` channel, the sidecar
//! confined and cleaned up, and bad input refused. (The kernel device and the helper's fd
//! cannot exist here: the golden files cover their plans.)

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);
/// The forky guest under TCG takes one to three minutes to its default target.
const SYSTEMD_BOOT: Duration = Duration::from_secs(420);
/// vmspawn booting the forky tree (systemd 262) through the busybox initrd's switch_root, with vsock.
fn systemd_vm(work: &Workdir, tree: &Path, extra: &[&str]) -> Command {
    let (uid, _) = tester_ids();
    let mut cmd = work.vmspawn();
    cmd.args(tcg())
        .arg(format!("--linux={}", image("vmlinuz").display()))
        .arg(format!(
            "--initrd={}",
            image("initrd-busybox.cpio.gz").display()
        ))
        .arg("-D")
        .arg(tree)
        .arg(format!("--private-users={uid}"))
        .args(["--tpm=no", "--vsock=yes", "--console=read-only"])
        .args(extra);
    cmd
}

/// A datagram socket standing in for a service manager's $NOTIFY_SOCKET, writable by the
/// test user; `messages` returns what arrived, with the time since it was made.
struct NotifyListener {
    path: PathBuf,
    socket: UnixDatagram,
    start: Instant,
    received: Vec<(Duration, String)>,
}

impl NotifyListener {
    fn new(work: &Workdir) -> NotifyListener {
        let path = work.file("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        socket.set_nonblocking(true).unwrap();
        NotifyListener {
            path,
            socket,
            start: Instant::now(),
            received: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.received.push((
                self.start.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }

    /// Waits until a message containing `needle` arrives.
    fn wait_for(&mut self, needle: &str, vm: &mut Background, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some((at, _)) = self.received.iter().find(|(_, m)| m.contains(needle)) {
                return *at;
            }
            if let Some(status) = vm.child.try_wait().unwrap() {
                panic!(
                    "vmspawn exited ({status}) before '{needle}' arrived; got {:?}\nstdout:\n{}\nstderr:\n{}",
                    self.received,
                    vm.stdout(),
                    vm.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no '{needle}' within {timeout:?}; got {:?}\nstdout:\n{}",
                self.received,
                vm.stdout()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn names(pids: &[u32]) -> Vec<(u32, String)> {
    pids.iter().map(|&p| (p, comm(p))).collect()
}

/// Nothing of vmspawn's is left: no file in $TMPDIR, no process naming the work directory.
fn assert_nothing_left(work: &Workdir, pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive: Vec<_> = pids
            .iter()
            .filter(|&&p| !wait_process_exit(p, Duration::ZERO))
            .map(|&p| (p, comm(p)))
            .collect();
        let running = processes_mentioning(&work.path.join(""));
        let tmp: Vec<_> = std::fs::read_dir(work.tmp())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if alive.is_empty() && running.is_empty() && tmp.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {alive:?} {running:?}, files in $TMPDIR {tmp:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The key and vhost-user socket from vmspawn's "SSH:" line.
fn ssh_line(stderr: &str) -> (PathBuf, PathBuf) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" SSH: ssh -i "))
        .unwrap_or_else(|| panic!("no SSH line in:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let key = words[words.iter().position(|w| *w == "-i").unwrap() + 1];
    let proxy = words
        .iter()
        .position(|w| w.ends_with("vmspawn-vsock-proxy"))
        .unwrap_or_else(|| panic!("no proxy in {line}"));
    (PathBuf::from(key), PathBuf::from(words[proxy + 1]))
}

/// ssh as the test user through the shipped ProxyCommand, with `key`; (exit code, output).
fn ssh(work: &Workdir, key: &Path, uds: &Path, command: &str) -> (Option<i32>, String) {
    let (uid, gid) = tester_ids();
    let proxy = vsock_proxy_bin();
    let out = Command::new("timeout")
        .arg("120")
        .arg("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-o")
        .arg(format!(
            "ProxyCommand={} {} 22",
            proxy.display(),
            uds.display()
        ))
        .arg("root@vm")
        .arg(command)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", work.path.join("home"))
        .uid(uid)
        .gid(gid)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One forky boot (they take minutes under TCG) for what needs a systemd guest: READY=1
/// after the guest's STATUS= lines, SSH with the ephemeral key over the shipped ProxyCommand
/// (and not with another key), the guest's journal forwarded to a directory, a clean power-off
/// on SIGTERM, and nothing left (no key file, socket or sidecar).
#[test]
fn guest_readiness_ssh_and_forwarded_journal() {
    let work = Workdir::new("vsock-ready", User::Tester);
    let tree = systemd_tree(&work, "tree");
    let journal = work.file("journal");
    let mut notify = NotifyListener::new(&work);
    // The guest stays up after its check unit: startup must finish for READY=1.
    let mut cmd = systemd_vm(
        &work,
        &tree,
        &[
            "--set-credential=vmtest:ready",
            &format!("--forward-journal={}", journal.display()),
        ],
    );
    // A forky guest's power-off under TCG may take longer than vmspawn's default wait.
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("VMSPAWN_SHUTDOWN_TIMEOUT_SEC", "300")
        .arg("vmtest.nopoweroff");
    let mut vm = Background::start(cmd);
    let started = notify.wait_for("STATUS=VM started.", &mut vm, BOOT);
    let ready = notify.wait_for("READY=1", &mut vm, SYSTEMD_BOOT);
    assert!(started < ready);
    // The guest's check unit ran before startup finished.
    assert!(
        vmtest_lines(&vm.stdout()).contains(&"cred vmtest=ready".to_string())
            || vm.stdout().contains("VMTEST: cred vmtest=ready"),
        "{}",
        vm.stdout()
    );
    let before_ready: Vec<&String> = notify
        .received
        .iter()
        .filter(|(at, m)| *at < ready && m.starts_with("STATUS=VM running: "))
        .map(|(_, m)| m)
        .collect();
    assert!(
        !before_ready.is_empty(),
        "no guest STATUS= line before READY=1: {:?}",
        notify.received
    );
    let ready_message = notify
        .received
        .iter()
        .find(|(_, m)| m.contains("READY=1"))
        .map(|(_, m)| m.clone())
        .unwrap();
    assert!(
        ready_message.starts_with("STATUS=VM running"),
        "{ready_message}"
    );
    let launcher = vm.child.id();
    let children = children_of(launcher);
    for comm in [VSOCK_COMM, JOURNAL_REMOTE_COMM] {
        assert_eq!(
            children_named(launcher, comm).len(),
            1,
            "{comm}: {:?}",
            names(&children)
        );
    }

    // SSH as root in the guest with the key vmspawn made, and a marker in the guest's journal.
    let (key, uds) = ssh_line(&vm.stderr());
    assert!(key.exists(), "{}", key.display());
    let marker = format!("vmtest-journal-{}", std::process::id());
    let (code, output) = ssh(
        &work,
        &key,
        &uds,
        &format!("id -u; cat /etc/hostname; logger -t vmtest {marker}; journalctl --sync"),
    );
    assert_eq!(
        code,
        Some(0),
        "ssh failed: {output}\nstdout:\n{}",
        vm.stdout()
    );
    assert!(output.lines().any(|l| l == "0"), "{output}");
    assert!(output.lines().any(|l| l == "vmtest"), "{output}");
    // Another key is refused.
    let (uid, gid) = tester_ids();
    let other = work.file("home/other-key");
    std::fs::create_dir_all(work.file("home")).unwrap();
    work.chown_all();
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .uid(uid)
        .gid(gid)
        .status()
        .unwrap();
    assert!(made.success());
    let (code, output) = ssh(&work, &other, &uds, "true");
    assert_eq!(code, Some(255), "{output}");
    assert!(output.contains("Permission denied"), "{output}");

    // A service manager's stop: the guest powers off (logind handles the power button). Its
    // shutdown under TCG took over 180 s in one run of the whole suite: as long as a boot.
    // This "manager" reads no more notifications: the guest's shutdown STATUS= lines fill its
    // queue (10 datagrams), which once blocked vmspawn's supervisor in sendto(2) for good.
    vm.signal(Signal::SIGTERM);
    let out = vm.finish(SYSTEMD_BOOT);
    out.assert_success();
    assert!(!key.exists(), "the key {} outlived the VM", key.display());
    assert_nothing_left(&work, &children);
    // The marker is in the forwarded journal, read as the user with the host's journalctl.
    let read = Command::new("journalctl")
        .arg("--directory")
        .arg(&journal)
        .args(["-o", "cat", "-t", "vmtest", "--no-pager"])
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        text.lines().any(|l| l == marker),
        "no '{marker}' in the forwarded journal ({}): {text}{}",
        read.status,
        String::from_utf8_lossy(&read.stderr)
    );
}

#[test]
fn guest_exit_status_becomes_vmspawns() {
    let work = Workdir::new("vsock-exit", User::Tester);
    let tree = systemd_tree(&work, "tree");
    let mut cmd = systemd_vm(&work, &tree, &[]);
    // Straight to the command's unit: the exit status needs no login, SSH or getty.
    cmd.args([
        "vmtest.nopoweroff",
        "systemd.run=\"systemctl exit 42\"",
        "systemd.unit=kernel-command-line.service",
    ]);
    let out = run(cmd, SYSTEMD_BOOT);
    assert_eq!(
        out.code(),
        Some(42),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains("Non-zero exit code received: 42"),
        "{}",
        out.stderr
    );
    assert_nothing_left(&work, &[]);
    // (A normal power-off exits 0: the readiness test ends that way.)
}

/// A busybox guest (no vsock driver) with --vsock=yes.
fn busybox_vm(work: &Workdir, mode: &str, extra: &[&str]) -> Command {
    let tree = work.file("root");
    std::fs::create_dir_all(&tree).unwrap();
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .arg("-D")
        .arg(&tree)
        .args(["--tpm=no", "--vsock=yes", "--console=read-only"])
        .args(extra)
        .arg(format!("test.mode={mode}"));
    cmd
}

#[test]
fn vhost_device_vsock_runs_confined_as_the_user_with_a_clean_environment() {
    let work = Workdir::new("vsock-sidecar", User::Tester);
    let mut cmd = busybox_vm(&work, "sleep=5", &["--forward-journal=vm.journal"]);
    cmd.env("VMSPAWN_TEST_MARKER", "must-not-reach-the-sidecar");
    let mut vm = Background::start(cmd);
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    let uid = tester_ids().0.to_string();
    for comm in [VSOCK_COMM, JOURNAL_REMOTE_COMM] {
        let found = children_named(launcher, comm);
        assert_eq!(found.len(), 1, "{comm}: {:?}", names(&children));
        let pid = found[0];
        for (field, want) in [
            ("Seccomp:", "2"),
            ("NoNewPrivs:", "1"),
            ("CapEff:", "0000000000000000"),
        ] {
            let threads = thread_status_field(pid, field);
            assert!(!threads.is_empty());
            for (tid, value) in threads {
                assert_eq!(value, want, "{field} of thread {tid} of {comm}");
            }
        }
        for (tid, value) in thread_status_field(pid, "Uid:") {
            assert_eq!(
                value.split_whitespace().collect::<Vec<_>>(),
                vec![uid.as_str(); 4],
                "thread {tid} of {comm}"
            );
        }
    }
    let sidecar = child_named(launcher, VSOCK_COMM).unwrap();
    assert!(
        environ_of(sidecar).is_empty(),
        "the sidecar's environment: {:?}",
        environ_of(sidecar)
    );
    // journal-remote: its log settings and the socket activation variables only, LISTEN_PID
    // its own.
    let journal_remote = child_named(launcher, JOURNAL_REMOTE_COMM).unwrap();
    let mut env = environ_of(journal_remote);
    env.sort();
    assert_eq!(
        env,
        [
            "LISTEN_FDNAMES=vmspawn-journal".to_string(),
            "LISTEN_FDS=1".into(),
            format!("LISTEN_PID={journal_remote}"),
            "SYSTEMD_LOG_LEVEL=warning".into(),
            "SYSTEMD_LOG_TARGET=console".into(),
        ]
    );
    // Its sockets are in the VM's private runtime directory.
    let args = cmdline_of(sidecar);
    let socket = args
        .iter()
        .position(|a| a == "--socket")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap();
    assert!(socket.starts_with(work.tmp()), "{args:?}");
    // journal-remote writes what arrives on its socket (the busybox guest has no journald: the
    // test sends an entry in the export format, as the guest's journald would) into the one
    // file --forward-journal= names, within its confinement.
    let uds = args
        .iter()
        .position(|a| a == "--uds-path")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap();
    let journal_socket = PathBuf::from(format!("{}_{}", uds.display(), 0x6a72_6e6c_u32));
    let marker = format!("vmtest-export-{}", std::process::id());
    let entry = format!(
        "__REALTIME_TIMESTAMP=1700000000000000\n__MONOTONIC_TIMESTAMP=1\n\
         _BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=vm\nSYSLOG_IDENTIFIER=vmtest\n\
         MESSAGE={marker}\n\n"
    );
    {
        use std::io::Write;
        let mut stream = std::os::unix::net::UnixStream::connect(&journal_socket).unwrap();
        stream.write_all(entry.as_bytes()).unwrap();
    }
    let out = vm.finish(BOOT);
    let read = Command::new("journalctl")
        .arg("--file")
        .arg(work.file("vm.journal"))
        .args(["-o", "cat", "-t", "vmtest", "--no-pager"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        marker,
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    out.assert_success();
    assert!(
        out.stdout
            .contains("io.systemd.credential:vmm.notify_socket=vsock-stream:2:"),
        "the guest got no notify socket credential:\n{}",
        out.stdout
    );
    assert_nothing_left(&work, &children);
}

/// Kills the sidecar with command name `comm` of a busybox VM; the VM must end with exit
/// status 1 and a message naming it (`words`).
fn sidecar_death_ends_the_vm(name: &str, comm: &str, words: &[&str]) {
    let work = Workdir::new(name, User::Tester);
    let mut vm = Background::start(busybox_vm(
        &work,
        "sleep=120",
        &["--forward-journal=journal"],
    ));
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    let sidecar =
        child_named(launcher, comm).unwrap_or_else(|| panic!("no {comm}: {:?}", names(&children)));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sidecar as i32), Signal::SIGKILL).unwrap();
    let out = vm.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)) && l.contains("killed by SIGKILL")),
        "{}",
        out.stderr
    );
    assert_nothing_left(&work, &children);
}

#[test]
fn a_dying_vhost_device_vsock_ends_the_vm_with_an_error_naming_it() {
    sidecar_death_ends_the_vm(
        "vsock-sidecar-killed",
        VSOCK_COMM,
        &["vhost-device-vsock", "vsock device"],
    );
}

#[test]
fn a_dying_journal_remote_ends_the_vm_with_an_error_naming_it() {
    sidecar_death_ends_the_vm(
        "journal-remote-killed",
        JOURNAL_REMOTE_COMM,
        &["systemd-journal-remote", "forwarded journal"],
    );
}

#[test]
fn nothing_outlives_a_killed_launcher() {
    let work = Workdir::new("vsock-launcher-killed", User::Tester);
    let mut vm = Background::start(busybox_vm(
        &work,
        "sleep=120",
        &["--forward-journal=journal"],
    ));
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    for comm in [VSOCK_COMM, JOURNAL_REMOTE_COMM] {
        assert_eq!(
            children_named(launcher, comm).len(),
            1,
            "{comm}: {:?}",
            names(&children)
        );
    }
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    // QEMU, vhost-device-vsock, journal-remote, virtiofsd and the cleanup process, and the
    // sockets and key files in the runtime directory.
    assert_nothing_left(&work, &children);
}

#[test]
fn bad_vsock_input_gives_clear_errors_and_leaves_nothing() {
    let work = Workdir::new("vsock-bad-input", User::Tester);
    let cases: [(&[&str], Option<&str>, &str); 9] = [
        (
            &["--vsock-cid=0"],
            None,
            "Specified CID is not regular, refusing: 0",
        ),
        (
            &["--vsock-cid=1"],
            None,
            "Specified CID is not regular, refusing: 1",
        ),
        (
            &["--vsock-cid=2"],
            None,
            "Specified CID is not regular, refusing: 2",
        ),
        (
            &["--vsock-cid=4294967295"],
            None,
            "Specified CID is not regular, refusing: 4294967295",
        ),
        (
            &["--vsock-cid=ten"],
            None,
            "Failed to parse --vsock-cid: ten",
        ),
        // Without vhost-device-vsock in $PATH (and no device, no helper) there is no way.
        (
            &["--vsock=yes"],
            Some("/usr/bin:/bin"),
            "cargo install vhost-device-vsock",
        ),
        (
            &["--forward-journal=/sys/vmtest-journal"],
            None,
            "--forward-journal=/sys/vmtest-journal: '/sys' is not writable",
        ),
        (
            &["--forward-journal=/sys/vmtest.journal"],
            None,
            "--forward-journal=/sys/vmtest.journal: '/sys' is not writable",
        ),
        (
            &["--forward-journal=journal", "--vsock=no"],
            None,
            "--forward-journal= needs a vsock device",
        ),
    ];
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "99999999-2222-4333-8444-555555555555",
    );
    work.chown_all();
    for (args, path, message) in cases {
        let mut cmd = work.vmspawn();
        cmd.args(busybox_boot(false))
            .args(["-i", "guest.raw", "--console=read-only", "--tpm=no"])
            .args(args);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let out = run(cmd, BOOT);
        assert_eq!(out.code(), Some(1), "{args:?}: stderr:\n{}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{}",
            out.stderr
        );
        assert_nothing_left(&work, &[]);
    }
}

/// Socket activation (§5.3): root opens /dev/kvm, which the test user cannot, and passes it as
/// fd 3 named `kvm`; vmspawn, running as the user, hands that fd to QEMU. (The kernel's
/// vhost-vsock takes the same path; this host has no /dev/vhost-vsock, the golden files cover
/// it.) KVM guests do not run on this host, so the check is QEMU's fd table, then a kill.
#[test]
fn a_kvm_fd_passed_by_socket_activation_reaches_qemu() {
    let work = Workdir::new("socket-activated-kvm", User::Tester);
    let (uid, gid) = tester_ids();
    let tester_opens_kvm = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "sh",
            "-c",
            "exec 3<>/dev/kvm",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !tester_opens_kvm.success(),
        "the test user can open /dev/kvm itself: the test proves nothing"
    );
    let tree = work.file("root");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::create_dir_all(work.tmp()).unwrap();
    work.chown_all();
    // sh opens /dev/kvm as root, then execs (same pid, so LISTEN_PID=$$ names vmspawn) into
    // vmspawn as the test user.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "exec 3<>/dev/kvm && LISTEN_FDS=1 LISTEN_FDNAMES=kvm LISTEN_PID=$$ exec setpriv \
             --reuid={uid} --regid={gid} --clear-groups \"$@\""
        ))
        .arg("sh")
        .arg(vmspawn_bin())
        .args(busybox_boot(false))
        .args([
            "--kvm=yes",
            "--secure-boot=no",
            "--tpm=no",
            "--vsock=no",
            "--console=read-only",
            "-D",
        ])
        .arg(&tree)
        .arg("test.mode=sleep=120")
        .env_clear()
        // This host's KVM aborts QEMU's `-cpu max` (an MSR it cannot set) and has no SMM
        // (which Secure Boot firmware needs): a plain CPU model and firmware, stopped before
        // it runs (-S), keep QEMU up with its fds for the check.
        .env("SYSTEMD_VMSPAWN_QEMU_EXTRA", "-cpu qemu64 -S")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", work.file("home"))
        .env("TMPDIR", work.tmp())
        .current_dir(&work.path)
        .stdin(std::process::Stdio::null());
    // busybox_boot asks for TCG; the last --kvm= wins.
    let mut vm = Background::start(cmd);
    let launcher = vm.child.id();
    let deadline = Instant::now() + BOOT;
    let qemu = loop {
        if let Some(q) = child_named(launcher, "qemu-system") {
            break q;
        }
        if let Some(status) = vm.child.try_wait().unwrap() {
            panic!("vmspawn exited ({status}):\n{}", vm.stderr());
        }
        assert!(Instant::now() < deadline, "no QEMU: {}", vm.stderr());
        std::thread::sleep(Duration::from_millis(100));
    };
    let children = children_of(launcher);
    let uid_line = thread_status_field(qemu, "Uid:");
    assert!(
        uid_line
            .iter()
            .all(|(_, v)| v.split_whitespace().all(|u| u == uid.to_string())),
        "{uid_line:?}"
    );
    let kvm_fds: Vec<_> = std::fs::read_dir(format!("/proc/{qemu}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new("/dev/kvm")))
        .collect();
    assert!(!kvm_fds.is_empty(), "QEMU has no /dev/kvm fd");
    let args = cmdline_of(qemu);
    assert!(
        args.iter().any(|a| a.ends_with("opaque=/dev/kvm")),
        "{args:?}"
    );
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    assert_nothing_left(&work, &children);
}
