//! vsock where this host has no /dev/vhost-vsock: vhost-device-vsock as vmspawn's sidecar, the
//! guest's READY=1, STATUS= and EXIT_STATUS= over the `vmm.notify_socket` channel, the sidecar
//! confined and cleaned up, and bad input refused. (The kernel device and the helper's fd
//! cannot exist here: the golden files cover their plans.)

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);
/// The trixie guest under TCG takes one to three minutes to its default target.
const SYSTEMD_BOOT: Duration = Duration::from_secs(420);
/// vmspawn booting the trixie tree through the busybox initrd's switch_root, with vsock.
fn trixie_vm(work: &Workdir, tree: &Path, extra: &[&str]) -> Command {
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

#[test]
fn guest_readiness_reaches_the_service_manager_after_its_status_lines() {
    let work = Workdir::new("vsock-ready", User::Tester);
    let tree = trixie_tree(&work, "tree");
    let mut notify = NotifyListener::new(&work);
    // The guest stays up after its check unit: startup must finish for READY=1.
    let mut cmd = trixie_vm(&work, &tree, &["--set-credential=vmtest:ready"]);
    cmd.env("NOTIFY_SOCKET", &notify.path)
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
    assert_eq!(
        children_named(launcher, VSOCK_COMM).len(),
        1,
        "{:?}",
        names(&children)
    );
    // A service manager's stop: the guest powers off (logind handles the power button).
    vm.signal(Signal::SIGTERM);
    let out = vm.finish(Duration::from_secs(180));
    out.assert_success();
    assert_nothing_left(&work, &children);
}

#[test]
fn guest_exit_status_becomes_vmspawns() {
    let work = Workdir::new("vsock-exit", User::Tester);
    let tree = trixie_tree(&work, "tree");
    let mut cmd = trixie_vm(&work, &tree, &[]);
    cmd.args(["vmtest.nopoweroff", "systemd.run=\"systemctl exit 42\""]);
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
    let mut cmd = busybox_vm(&work, "sleep=5", &[]);
    cmd.env("VMSPAWN_TEST_MARKER", "must-not-reach-the-sidecar");
    let mut vm = Background::start(cmd);
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    let sidecar = children_named(launcher, VSOCK_COMM);
    assert_eq!(sidecar.len(), 1, "{:?}", names(&children));
    let sidecar = sidecar[0];
    let uid = tester_ids().0.to_string();
    for (field, want) in [("Seccomp:", "2"), ("NoNewPrivs:", "1")] {
        let threads = thread_status_field(sidecar, field);
        assert!(!threads.is_empty());
        for (tid, value) in threads {
            assert_eq!(value, want, "{field} of thread {tid} of vhost-device-vsock");
        }
    }
    for (tid, value) in thread_status_field(sidecar, "Uid:") {
        assert_eq!(
            value.split_whitespace().collect::<Vec<_>>(),
            vec![uid.as_str(); 4],
            "thread {tid}"
        );
    }
    assert!(
        environ_of(sidecar).is_empty(),
        "the sidecar's environment: {:?}",
        environ_of(sidecar)
    );
    // Its sockets are in the VM's private runtime directory.
    let args = cmdline_of(sidecar);
    let socket = args
        .iter()
        .position(|a| a == "--socket")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap();
    assert!(socket.starts_with(work.tmp()), "{args:?}");
    let out = vm.finish(BOOT);
    out.assert_success();
    assert!(
        out.stdout
            .contains("io.systemd.credential:vmm.notify_socket=vsock-stream:2:"),
        "the guest got no notify socket credential:\n{}",
        out.stdout
    );
    assert_nothing_left(&work, &children);
}

#[test]
fn a_dying_vhost_device_vsock_ends_the_vm_with_an_error_naming_it() {
    let work = Workdir::new("vsock-sidecar-killed", User::Tester);
    let mut vm = Background::start(busybox_vm(&work, "sleep=120", &[]));
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    let sidecar = child_named(launcher, VSOCK_COMM)
        .unwrap_or_else(|| panic!("no sidecar: {:?}", names(&children)));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sidecar as i32), Signal::SIGKILL).unwrap();
    let out = vm.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.lines().any(|l| l.contains("vhost-device-vsock")
            && l.contains("vsock device")
            && l.contains("killed by SIGKILL")),
        "{}",
        out.stderr
    );
    assert_nothing_left(&work, &children);
}

#[test]
fn nothing_outlives_a_killed_launcher() {
    let work = Workdir::new("vsock-launcher-killed", User::Tester);
    let mut vm = Background::start(busybox_vm(&work, "sleep=120", &[]));
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    assert_eq!(
        children_named(launcher, VSOCK_COMM).len(),
        1,
        "{:?}",
        names(&children)
    );
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    // QEMU, vhost-device-vsock, virtiofsd and the cleanup process, and the sockets in the
    // runtime directory.
    assert_nothing_left(&work, &children);
}

#[test]
fn bad_vsock_input_gives_clear_errors_and_leaves_nothing() {
    let work = Workdir::new("vsock-bad-input", User::Tester);
    let cases: [(&[&str], Option<&str>, &str); 6] = [
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
