//! Lifecycle: graceful power-off on SIGTERM, a second signal stops at once, QEMU failures and
//! crashes give a non-zero exit with a message, and nothing is left behind.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);

fn busybox(work: &Workdir, mode: &str, options: &[&str]) -> std::process::Command {
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "22222222-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only"])
        .args(options)
        .arg(format!("test.mode={mode}"));
    cmd
}

#[test]
fn sigterm_powers_the_guest_off_gracefully() {
    let work = Workdir::new("sigterm", User::Tester);
    let mut vm = Background::start(busybox(&work, "powerbutton", &[]));
    vm.wait_for_line("waiting-for-powerbutton", BOOT);
    vm.signal(Signal::SIGTERM);
    let out = vm.finish(Duration::from_secs(60));
    out.assert_success();
    assert!(out.has("powerbutton-pressed"), "{:?}", out.vmtest());
    assert!(
        out.stderr.contains("Asked the guest to power off"),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}

#[test]
fn second_signal_stops_the_vm_at_once() {
    let work = Workdir::new("sigterm-twice", User::Tester);
    let mut cmd = busybox(&work, "ignore-powerbutton", &[]);
    // As a unit's service, the VM generation ID follows the invocation ID (systemd's
    // app-specific derivation; the value is what systemd computes for this ID).
    cmd.env("INVOCATION_ID", "3d1219c7c4c5404aaa1f6d2a48adfda4");
    let mut vm = Background::start(cmd);
    vm.wait_for_line("ignoring-powerbutton", BOOT);
    let launcher = vm.child.id();
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(qemu.len(), 1, "{:?}", children_of(launcher));
    let qemu_argv = std::fs::read(format!("/proc/{}/cmdline", qemu[0])).unwrap();
    assert!(
        String::from_utf8_lossy(&qemu_argv)
            .contains("vmgenid,guid=e2c3b604-575f-439c-af7d-bac49ad3d471"),
        "{}",
        String::from_utf8_lossy(&qemu_argv)
    );
    // Every child: QEMU, swtpm and the cleanup process.
    let children = children_of(launcher);
    // SIGRTMIN+4 (systemd's shutdown request) is a first signal like SIGINT and SIGTERM.
    vm.signal_raw(libc::SIGRTMIN() + 4);
    // The first signal has been handled once vmspawn says so; the second one comes after.
    vm.wait_for_stderr("Asked the guest to power off", Duration::from_secs(10));
    vm.signal(Signal::SIGTERM);
    let out = vm.finish(Duration::from_secs(15));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("Stopping the VM at once."),
        "{}",
        out.stderr
    );
    let left = survivors(&children, Duration::from_secs(10));
    assert!(left.is_empty(), "survived vmspawn: {left:?}");
    work.assert_no_leftovers();
}

#[test]
fn qemu_killed_by_a_signal_is_an_error() {
    let work = Workdir::new("qemu-killed", User::Tester);
    let mut vm = Background::start(busybox(&work, "sleep=120", &[]));
    vm.wait_for_line("boot", BOOT);
    let qemu = children_named(vm.child.id(), QEMU_COMM);
    assert_eq!(
        qemu.len(),
        1,
        "{qemu:?} of {:?}",
        children_of(vm.child.id())
    );
    let children = children_of(vm.child.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu[0] as i32), Signal::SIGKILL).unwrap();
    let out = vm.finish(Duration::from_secs(15));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("QEMU was killed by SIGKILL."),
        "{}",
        out.stderr
    );
    let left = survivors(&children, Duration::from_secs(10));
    assert!(left.is_empty(), "survived vmspawn: {left:?}");
    work.assert_no_leftovers();
}

#[test]
fn guest_making_qemu_fail_is_an_error() {
    let work = Workdir::new("qemu-fails", User::Tester);
    let mut cmd = busybox(&work, "exit-code=3", &[]);
    cmd.env(
        "SYSTEMD_VMSPAWN_QEMU_EXTRA",
        "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
    );
    let out = run(cmd, BOOT);
    assert!(out.has("exit-code-requested"), "{:?}", out.vmtest());
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("QEMU exited with status 7"),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}

#[test]
fn qemu_does_not_outlive_a_killed_launcher() {
    let work = Workdir::new("launcher-killed", User::Tester);
    let mut vm = Background::start(busybox(&work, "sleep=120", &[]));
    vm.wait_for_line("boot", BOOT);
    let qemu = children_named(vm.child.id(), QEMU_COMM);
    assert_eq!(
        qemu.len(),
        1,
        "{qemu:?} of {:?}",
        children_of(vm.child.id())
    );
    // Every child: QEMU, swtpm and the cleanup process.
    let children = children_of(vm.child.id());
    assert!(
        std::fs::read_dir(work.tmp()).unwrap().next().is_some(),
        "no runtime directory in $TMPDIR during the boot"
    );
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    let left = survivors(&children, Duration::from_secs(15));
    assert!(
        left.is_empty(),
        "kept running after vmspawn was killed: {left:?}"
    );
    // The cleanup process removed the runtime directory.
    work.assert_no_leftovers();
}

#[test]
fn notifies_the_service_manager() {
    let work = Workdir::new("notify", User::Tester);
    let socket_path = work.file("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    std::fs::set_permissions(
        &socket_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut cmd = busybox(&work, "", &["--notify-ready=no"]);
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let out = run(cmd, BOOT);
    out.assert_success();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        first.starts_with("STATUS=VM started.\nX_VMSPAWN_LEADER_PID="),
        "{first}"
    );
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
}
