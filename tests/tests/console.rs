//! The console driven through a real pseudo-terminal: interactive input reaches the guest
//! shell, Ctrl-] three times ends the VM, read-only mode ignores input.

use std::time::Duration;

use nix::sys::termios::{LocalFlags, tcgetattr};
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);

#[test]
fn interactive_console_input_reaches_guest_and_escape_ends_vm() {
    let work = Workdir::new("console-interactive", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "11111111-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TERM", "xterm").args(busybox_boot(false)).args([
        "-i",
        "guest.raw",
        "--background=48;2;0;0;80",
        "test.mode=shell",
    ]);
    let mut session = PtySession::start(cmd);
    session.expect("Press Ctrl-] three times within 1s to kill VM.", BOOT);
    session.expect("VMTEST: shell-ready", BOOT);
    session.settle(Duration::from_millis(500));
    session.type_bytes(b"echo $((6*7))-marker\r");
    session.expect("42-marker", Duration::from_secs(30));
    // The background tint is applied to guest output.
    assert!(
        session.output().contains("\x1b[48;2;0;0;80m"),
        "no tint in output"
    );
    let vmspawn_pid = session.child.id();
    let qemu = children_of(vmspawn_pid);
    assert_eq!(qemu.len(), 1, "expected one QEMU child, got {qemu:?}");
    for _ in 0..3 {
        session.type_bytes(&[0x1d]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = session.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "output:\n{}", session.output());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !process_exists(qemu[0]),
        "QEMU still running after the escape"
    );
    // The terminal is back in canonical mode.
    let slave_side = tcgetattr(session.master()).unwrap();
    assert!(
        slave_side.local_flags.contains(LocalFlags::ICANON),
        "terminal left in raw mode"
    );
    work.assert_no_leftovers();
}

#[test]
fn read_only_console_ignores_input() {
    let work = Workdir::new("console-read-only", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "11111111-2222-4333-8444-555555555556",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TERM", "xterm")
        .env("VMSPAWN_SHUTDOWN_TIMEOUT_SEC", "3")
        .args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only", "test.mode=shell"]);
    let mut session = PtySession::start(cmd);
    session.expect("VMTEST: shell-ready", BOOT);
    session.settle(Duration::from_millis(500));
    session.type_bytes(b"echo $((6*7))-marker\r");
    session.settle(Duration::from_secs(4));
    assert!(
        !session.output().contains("42-marker"),
        "read-only console forwarded input:\n{}",
        session.output()
    );
    // The shell guest ignores the power button: a stop request times out and stops QEMU.
    session.signal(nix::sys::signal::Signal::SIGTERM);
    let status = session.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "output:\n{}", session.output());
    assert!(
        session.output().contains("did not power off within 3 s"),
        "{}",
        session.output()
    );
    work.assert_no_leftovers();
}
